"""The runtimes: the registry (`rnnexport.runtimes.registry`: every backend by its contract name,
README "CLI") and the runner lifecycle validate and bench share (`loaded_runners`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rnnexport.errors import RNNExportError, RuntimeUnavailableError
from rnnexport.runtimes.base import Runner
from rnnexport.runtimes.registry import (RUNTIMES, UNTRUSTED_REASON, RuntimeInfo, make_runner, resolve_runtimes,
                                         runtime_imports, split_row, unavailable_reason, validation_imports,
                                         variant_rows)

__all__ = ["RUNTIMES", "UNTRUSTED_REASON", "RuntimeInfo", "loaded_runners", "make_runner", "resolve_runtimes",
           "runtime_imports", "split_row", "unavailable_reason", "validation_imports", "variant_rows"]


@contextlib.contextmanager
def loaded_runners(
    artifact, names: list[str], options: dict[str, dict] | None = None
) -> Iterator[tuple[dict[str, Runner], dict[str, str], dict[str, Exception]]]:
    """The runner lifecycle shared by validate and bench: make a runner per name (with its
    `options`), leave out those that cannot run `artifact` (with the reason), load the others
    (a load failure is recorded, not raised); every loaded runner is closed on exit.

    Yields:
        ``(runners, unsupported, failed)``: loaded runners by name in the order of `names`,
        reasons by name, load errors by name.
    """
    runners: dict[str, Runner] = {}
    unsupported: dict[str, str] = {}
    failed: dict[str, Exception] = {}
    options = options or {}
    chosen = {name: options.get(name, options.get(split_row(name)[0], {})) for name in names}
    from concurrent.futures import ThreadPoolExecutor

    from rnnexport.runtimes.probe import probe_variants

    variants = [name for name in names if split_row(name)[1]]
    with ThreadPoolExecutor(1) as pool, contextlib.ExitStack() as stack:
        # The variants are tried in a worker process (seconds: it starts and imports the runtimes)
        # while this one loads the other rows; they are loaded once the trial says they run.
        probing = pool.submit(probe_variants, artifact, {name: chosen[name] for name in variants})
        probed: dict[str, str] = {}
        for name in [*(n for n in names if n not in variants), *variants]:
            if name == next(iter(variants), None):
                probed = probing.result()
            runner = make_runner(name, artifact, **chosen[name])
            if reason := runner.unsupported_reason() or probed.get(name):
                unsupported[name] = reason
                continue
            stack.callback(runner.close)
            try:
                runner.load()
            except RuntimeUnavailableError as exc:  # found only when loading (a client that does not build)
                unsupported[name] = str(exc)
                continue
            except RNNExportError as exc:
                failed[name] = exc
                continue
            runners[name] = runner
        yield {name: runners[name] for name in names if name in runners}, unsupported, failed
