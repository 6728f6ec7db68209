"""Variants are tried in a child process before a runtime loads them here.

A runtime may not run a variant at all: onnx.reference has no kernels for ONNX Runtime's
``com.microsoft`` ops, and ONNX Runtime 1.31 on the CPU crashes the whole process (SIGSEGV)
creating a session for some fp16 graphs (a Conv1d front-end, measured). Each variant row is
loaded and run once, on the smallest golden case, in a worker process; one that raises or
dies is skipped with that reason (a variant runs where a runtime can run it), and only those
that ran there are loaded in this process.
"""

from __future__ import annotations

from typing import Any

from rnnexport.errors import WorkerDied

__all__ = ["probe_variants"]


def probe_variants(artifact, rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Why each of `rows` (``RUNTIME:VARIANT`` -> runner options) cannot run its variant; rows
    that can are left out."""
    if not rows:
        return {}
    from rnnexport._workers import map_in_processes
    from rnnexport.runtimes.registry import runtime_imports

    items = [(artifact, row, options) for row, options in rows.items()]
    preload = runtime_imports([row.partition(":")[0] for row in rows])
    outcomes = map_in_processes(_probe, items, 1, preload=preload, label=lambda item: item[1])
    reasons = {}
    for (_, row, _), outcome in zip(items, outcomes):
        if isinstance(outcome, WorkerDied):
            outcome = f"{row.partition(':')[0]} crashed running the {row.partition(':')[2]} variant ({outcome.reason})"
        if outcome:
            reasons[row] = outcome
    return reasons


def _probe(item: tuple[Any, str, dict[str, Any]]) -> str | None:
    artifact, row, options = item
    from rnnexport.runtimes.registry import make_runner

    runner = make_runner(row, artifact, **options)
    if runner.unsupported_reason():
        return None  # reported by the caller, which asks the same runner
    base, _, variant = row.partition(":")
    try:
        with runner:
            case = min(artifact.golden_cases(), key=artifact.spec.case_steps)
            feeds = artifact.golden()[case]
            runner.infer({n: feeds[n] for n in artifact.spec.input_names})
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return f"{base} cannot run the {variant} variant: {type(exc).__name__}: {first}"
    return None
