"""The plan of one validation, before anything runs: the runtimes, the cases (`cases_for`) with
their feeds (stored golden inputs, the seeded generator or a model spec's ``inputs_fn``:
`input_maker`), the streaming cases, and why the eager reference or new cases' inputs are
unavailable (`reference_unavailable`, `inputs_unavailable`); every case checked against the
memory limit and every feed against the spec (`make_plan`). `planned_steps` counts the steps
for progress bars; `estimated_work` orders parallel artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact
from rnnexport.compare import Tolerance
from rnnexport.inputs import Case, check_feeds, default_sweep, make_inputs
from rnnexport.runtimes import make_runner, resolve_runtimes, variant_rows
from rnnexport.streaming import streaming_cases

__all__ = ["Plan", "cases_for", "estimated_work", "fitting_cases", "spec_dims", "input_maker", "inputs_unavailable", "make_plan", "planned_steps",
           "reference_unavailable", "runnable_steps"]


def cases_for(artifact: Artifact, cases: list | None, reference: bool = True) -> list:
    """The cases a validation runs: the given ones (`fitting_cases`), else the spec's sweep; the
    stored golden cases always. Without an eager reference only the golden cases."""
    if not reference:  # no eager reference: the golden data is what every runtime is checked against
        return artifact.golden_cases()
    chosen = fitting_cases(artifact.spec, cases)
    chosen = default_sweep(artifact.spec) if chosen is None else chosen
    return list(dict.fromkeys([*chosen, *artifact.golden_cases()]))


def fitting_cases(spec, cases: list | None) -> list | None:
    """`cases` (``3x17``: one size per dim of the spec, in its order; ids; case objects) as cases
    of `spec`, or None when none are given or one does not fit its dims (its sweep runs instead,
    with a note: one ``--cases`` over artifacts with other dims)."""
    if cases is None:
        return None
    fitted = [spec.case_of(c) for c in cases]
    return None if any(c is None for c in fitted) else fitted


def spec_dims(spec) -> str:
    """``batch, seq``: the dims a spec's cases give sizes for, in order."""
    return ", ".join(k for k, _ in spec.golden_cases()[0].sizes)


def inputs_unavailable(artifact: Artifact, trusted: bool) -> str | None:
    """Why a model spec's ``inputs_fn`` cannot make new cases' inputs, or None (no such
    function, or it is recorded and unchanged: `rnnexport.userinputs.recorded_inputs`)."""
    spec = artifact.spec
    if spec.inputs_fn is None:
        return None
    if not trusted:
        return f"inputs_fn {spec.inputs_fn} is Python code; not run on untrusted artifacts (--untrusted)"
    from rnnexport.userinputs import recorded_inputs

    return recorded_inputs(spec, artifact.manifest.get("inputs_source"), artifact.path)[1]


@contextlib.contextmanager
def input_maker(artifact: Artifact, in_process: bool, unavailable: str | None):
    """What makes a case's inputs: the seeded generator; a model spec's ``inputs_fn`` in this
    process during its export (`in_process`: the export runs the user's code anyway), else in
    a child process (`rnnexport.runtimes.isolated`); None where `unavailable`."""
    spec = artifact.spec
    if spec.inputs_fn is None:
        yield lambda case: make_inputs(spec, case)
    elif in_process:
        from rnnexport.userinputs import case_inputs

        yield lambda case: case_inputs(spec, case)
    elif unavailable:
        yield None
    else:
        from rnnexport.runtimes.isolated import IsolatedReference
        from rnnexport.userinputs import recorded_inputs

        resolved, _ = recorded_inputs(spec, artifact.manifest.get("inputs_source"), artifact.path)
        child = IsolatedReference(dataclasses.replace(artifact, spec=resolved), None, threads=1)
        try:
            child.load_inputs(artifact.manifest["inputs_source"].get("sha256"))
            yield child.inputs
        finally:
            child.close()


def reference_unavailable(artifact: Artifact, trusted: bool) -> str | None:
    """Why the eager reference cannot run for `artifact`, or None: only a model spec's can be
    missing (its module is the user's Python code: `rnnexport.model_behaviour`)."""
    return artifact.spec.reference_unavailable(artifact.manifest, artifact.path, trusted)


def runnable_steps(runner, case_list: list[Case], stream_cases) -> list[str]:
    """The steps `runner` will run: its cases, then its streaming cases (progress labels)."""
    steps = [case.id for case in case_list if not runner.skip_reason(case)]
    streamed = [] if runner.variant else stream_cases  # a variant is judged by its criteria, not streamed
    return steps + [f"{case.id} (streaming)" for case, _ in streamed if not runner.skip_reason(case)]


def planned_steps(
    artifact: Artifact, *, runtimes: list[str] | None = None, cases: list[Case] | None = None, trusted: bool = True
) -> int:
    """How many (runtime, case) steps `validate_artifact` will report to its `on_step`; cheap:
    nothing is loaded. A progress bar sized by it ends exactly at its total."""
    chosen, _ = resolve_runtimes(runtimes, trusted=trusted)
    chosen += variant_rows(artifact, chosen)
    missing_reference = reference_unavailable(artifact, trusted)
    golden_only = missing_reference or inputs_unavailable(artifact, trusted)
    case_list = cases_for(artifact, cases, not golden_only)
    stream_cases = streaming_cases(artifact.spec, case_list if golden_only else None)
    total = 0
    for name in chosen:
        if name == "torch" and missing_reference:
            continue
        runner = make_runner(name, artifact)
        if not runner.unsupported_reason():
            total += len(runnable_steps(runner, case_list, stream_cases))
    return total


@dataclass
class Plan:
    """What one validation will run: runtimes, cases with their feeds, streaming cases."""

    tolerance: Tolerance
    tolerance_notes: list[str]
    runtimes: list[str]
    skipped: dict[str, str]
    cases: list[Case]
    feeds: dict[Any, dict[str, np.ndarray]]
    golden: dict[Any, dict[str, np.ndarray]]
    stream_cases: list[tuple[Any, tuple[int, ...]]]
    missing_reference: str | None
    longest: Any  # the case whose error per time step is plotted (the longest along the stream)
    missing_inputs: str | None = None  # why a model spec's inputs_fn could not run (golden cases only)


def make_plan(artifact: Artifact, runtimes, tolerance: tuple[Tolerance, list[str]], cases, options, trusted: bool,
              max_memory) -> Plan:
    """Runtimes, cases, feeds (golden inputs where stored) and streaming cases, every case
    checked against the memory limit and every feed against the spec before anything runs."""
    from rnnexport.errors import ArtifactError
    from rnnexport.limits import check_memory, check_steps

    spec = artifact.spec
    chosen, skipped = resolve_runtimes(runtimes, trusted=trusted)
    chosen += variant_rows(artifact, chosen)
    missing_reference = None if options.get("torch", {}).get("module") is not None else reference_unavailable(
        artifact, trusted)
    if missing_reference:
        chosen = [name for name in chosen if name != "torch"]
        skipped = {**skipped, "torch": missing_reference}
    in_process = options.get("torch", {}).get("module") is not None
    missing_inputs = None if in_process else inputs_unavailable(artifact, trusted)
    golden_only = missing_reference or missing_inputs
    case_list = cases_for(artifact, cases, not golden_only)
    try:  # every runtime's outputs of a case are held at once (`run_case`)
        outputs = spec.output_tensors(artifact.manifest.get("io"))
    except ValueError as exc:
        raise ArtifactError(f"{artifact.path}: manifest {exc}") from None
    for case in case_list:
        check_memory(f"{artifact.name}: case {case.id}", spec.case_bytes(case, outputs, len(chosen)), max_memory)
        check_steps(f"{artifact.name}: case {case.id}", spec.case_steps(case))
    golden = artifact.golden()
    stream_cases = streaming_cases(spec, case_list if golden_only else None)  # golden-only: the stored cases
    with input_maker(artifact, in_process, missing_inputs) as inputs:
        feeds = {case: ({n: golden[case][n] for n in spec.input_names} if case in golden else inputs(case))
                 for case in case_list}
        for case, _ in stream_cases:
            feeds.setdefault(case, inputs(case))
    for case_feeds in feeds.values():
        check_feeds(spec, case_feeds)
    longest = max(case_list, key=lambda c: (spec.case_length(c), c.steps))  # the longest along the stream
    return Plan(*tolerance, chosen, skipped, case_list, feeds, golden, stream_cases,
                missing_reference, longest, missing_inputs)


def estimated_work(artifact: Artifact, cases: list[Case] | None) -> int:
    """A rough measure of how long validating `artifact` takes: the bytes of its cases."""
    return sum(artifact.spec.case_bytes(case) for case in cases_for(artifact, cases))
