"""Independent pieces of work in worker processes (``--jobs``), results in their order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["map_in_processes", "start_workers"]


def start_workers(preload: Sequence[str] = ()):
    """The context workers are started in: the fork server, started now (a no-op when it runs
    already), importing `preload`, so that it imports while the caller does other work (opening
    artifacts) before `map_in_processes` needs it; ``spawn`` where there is no fork server.

    The fork server runs with ``PYTHONHASHSEED=0``, as the TorchScript compile server does:
    a worker forks its compile server from itself (`rnnexport.export.torchscript`) instead of
    starting one that imports torch again, and TorchScript's output depends on the hash seed.
    """
    import multiprocessing
    import os

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))  # applies when the fork server starts: the first time
    saved = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # read by the fork server's interpreter when it starts
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = saved
    return context


def map_in_processes(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int,
    on_done: Callable[[int], None] | None = None,
    preload: Sequence[str] = (),
    initializer: Callable[[], None] | None = None,
) -> list[Any]:
    """``function(item)`` for every item, `jobs` at once, each in a worker process.

    Workers are forked from a fork server (``forkserver``; ``spawn`` where there is none) that
    has imported `preload` (module names; one that fails to import is left out) and run
    nothing else: torch's thread pools do not survive a fork, but a process that only imported
    torch forks safely, and each worker starts with torch, ONNX Runtime and the rest imported
    once instead of importing them itself (seconds each). Results come back in the order of
    `items`; `on_done(index)` is called as each item succeeds. When one fails, the items not
    started yet are cancelled, and the first error in item order is raised (the items run in
    order, so a cancelled one always comes after it). `initializer` runs first in each worker.

    A worker ends when this process dies (killed mid-run): it is a child of the fork server,
    which outlives it, and the pool's queues never tell it; left alone it would finish its item
    (an export would still install its artifact) and then wait forever.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=start_workers(preload),
                             initializer=_worker_start, initargs=(os.getpid(), initializer)) as pool:
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


def _worker_start(owner: int, initializer: Callable[[], None] | None) -> None:
    """In a worker: run `initializer` (before any thread starts: it may fork), then watch the
    process that owns the pool and end this one as soon as the owner is gone."""
    import os
    import threading
    import time

    if initializer is not None:
        initializer()

    def watch() -> None:
        while not _gone(owner):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="rnnexport-owner-watch", daemon=True).start()


def _gone(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, a process of another user now holding
    its number, or (Linux) a zombie its parent has not reaped yet."""
    import os

    try:
        os.kill(pid, 0)  # signal 0: only asks whether it is there
    except (ProcessLookupError, PermissionError):
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
