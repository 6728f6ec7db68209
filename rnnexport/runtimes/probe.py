"""Variants are tried in a child process before a runtime loads them here.

A runtime may not run a variant at all: onnx.reference has no kernels for ONNX Runtime's
``com.microsoft`` ops, and ONNX Runtime 1.31 on the CPU crashes the whole process (SIGSEGV)
creating a session for some fp16 graphs (a Conv1d front-end, measured). Each variant row is
loaded and run once, on the smallest golden case (read once here), in a worker process; one that raises or
dies is skipped with that reason (a variant runs where a runtime can run it), and only those
that ran there are loaded in this process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexport.errors import WorkerDied, first_line

__all__ = ["probe_variants", "start_probing"]


def start_probing(references: bool = False) -> None:
    """Start the fork server the trials' workers fork from, now, so that it imports what they
    need (`rnnexport.runtimes.registry.trial_imports`) while this process does other work
    (opening artifacts, exporting); with `references`, also what a model's eager reference needs
    (the ``torch`` runtime's imports; `rnnexport.runtimes.isolated`: it forks from the same
    server, whose first start decides)."""
    from rnnexport.workers import start_workers

    start_workers(_server_imports(references))


def _server_imports(references: bool) -> list[str]:
    from rnnexport.runtimes.registry import runtime_imports, trial_imports

    return [*trial_imports(), *(runtime_imports(["torch"]) if references else [])]  # the reference: torch's runner


def probe_variants(artifact, rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Why each of `rows` (``RUNTIME:VARIANT`` -> runner options) cannot run its variant; rows
    that can are left out."""
    if not rows:
        return {}
    from rnnexport.workers import map_in_processes
    from rnnexport.runtimes.registry import split_row

    case = min(artifact.golden_cases(), key=artifact.spec.case_steps)  # read once, for every row
    feeds = {n: artifact.golden()[case][n] for n in artifact.spec.input_names}
    items = [(artifact, row, options, feeds) for row, options in rows.items()]
    # The fork server, if none runs yet (an API call): what the trials and this artifact's reference need
    preload = _server_imports(artifact.spec.reference_forks)
    outcomes = map_in_processes(_probe, items, 1, preload=preload, label=lambda item: item[1], forks=False)
    reasons = {}
    for row, outcome in zip(rows, outcomes):
        if isinstance(outcome, WorkerDied):
            runtime, variant = split_row(row)
            outcome = f"{runtime} crashed running the {variant} variant ({outcome.reason})"
        if outcome:
            reasons[row] = outcome
    return reasons


def _probe(item: tuple[Any, str, dict[str, Any], dict[str, np.ndarray]]) -> str | None:
    artifact, row, options, feeds = item
    from rnnexport.runtimes.registry import make_runner, split_row

    runner = make_runner(row, artifact, **options)
    if runner.unsupported_reason():
        return None  # reported by the caller, which asks the same runner
    try:
        with runner:
            runner.infer(feeds)
    except Exception as exc:
        runtime, variant = split_row(row)
        return f"{runtime} cannot run the {variant} variant: {type(exc).__name__}: {first_line(exc)}"
    return None
