"""Independent pieces of work in worker processes (``--jobs``), results in their order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["map_in_processes"]


def map_in_processes(
    function: Callable[[Any], Any], items: Sequence[Any], jobs: int, on_done: Callable[[int], None] | None = None
) -> list[Any]:
    """``function(item)`` for every item, `jobs` at once, each in a worker process.

    Workers are started with ``spawn``: torch's thread pools do not survive a fork. Results come
    back in the order of `items`; `on_done(index)` is called as each item succeeds. When one
    fails, the items not started yet are cancelled, and the first error in item order is raised
    (the items run in order, so a cancelled one always comes after it).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=context) as pool:
        futures = {pool.submit(function, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    break
                if on_done is not None:
                    on_done(futures[future])
            return [future.result() for future in sorted(futures, key=futures.get)]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
