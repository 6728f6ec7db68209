"""Orchestration: runners x cases -> comparison records -> one report per artifact.

Every runtime is compared with the eager reference (``torch``, rebuilt from the stored weights)
on the whole shape sweep, with the stored golden outputs on the golden cases, and checked for
the RNN invariants. Nothing here judges: `ArtifactReport.passed` applies `compare.passed`.
Nothing here writes into the artifact folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact, discover_artifacts, open_artifact
from rnnexport.compare import Comparison, Tolerance, compare_arrays, failures
from rnnexport.errors import RuntimeUnavailableError, UsageError, WorkerDied
from rnnexport.formats import FORMATS, missing_formats
from rnnexport.inputs import Case, check_feeds, default_sweep, make_inputs
from rnnexport.invariants import check_invariants
from rnnexport.manifest import versions
from rnnexport.modelspec import RANDOM_WEIGHTS
from rnnexport.runtimes import RUNTIMES, loaded_runners, make_runner, resolve_runtimes, runtime_imports
from rnnexport.spec import RNNSpec

__all__ = ["ArtifactReport", "RunError", "applied_tolerance", "describe_tolerance", "planned_steps", "select_shard",
           "validate_artifact", "validate_imports",
           "validate_paths"]


@dataclass(frozen=True)
class RunError:
    """A runtime that raised while loading or running a case (a failure, not a skip)."""

    artifact: str
    runtime: str
    case: str | None
    message: str


@dataclass
class ArtifactReport:
    """Everything one validation of one artifact found."""

    artifact: str
    path: str
    runtimes: list[str]
    skipped: dict[str, str]
    cases: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    errors: list[RunError] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)
    golden_versions: dict[str, str] = field(default_factory=dict)
    current_versions: dict[str, str] = field(default_factory=dict)
    localizations: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, dict[str, str]] = field(default_factory=dict)
    streaming: dict[str, Any] = field(default_factory=dict)
    error_over_time: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Comparison]:
        return failures(self.comparisons)

    @property
    def passed(self) -> bool:
        return not self.errors and not self.failures

    def runtime_summary(self) -> dict[str, dict[str, Any]]:
        """Per runtime: status, cases run, worst error against the reference (for manifests)."""
        summary: dict[str, dict[str, Any]] = {}
        for runtime in self.runtimes:
            mine = [c for c in self.comparisons if c.runtime == runtime]
            errors = [e for e in self.errors if e.runtime == runtime]
            vs_torch = [c.max_abs_error for c in mine if c.against == "torch" and c.max_abs_error is not None]
            summary[runtime] = {
                "status": "failed" if errors or failures(mine) else "passed",
                "cases": len({c.case for c in mine}),
                "max_abs_error_vs_torch": max(vs_torch) if vs_torch else None,
                **({"details": self.details[runtime]} if self.details.get(runtime) else {}),
            }
        for runtime, reason in self.skipped.items():
            summary[runtime] = {"status": "skipped", "reason": reason}
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "path": self.path,
            "passed": self.passed,
            "runtimes": self.runtime_summary(),
            "cases": self.cases,
            "golden_versions": self.golden_versions,
            "current_versions": self.current_versions,
            "errors": [e.__dict__ for e in self.errors],
            "left_out": self.left_out,
            "streaming": self.streaming,
            "localizations": self.localizations,
            "error_over_time": self.error_over_time,
            "notes": self.notes,
            "tolerance": self.tolerance,
            "comparisons": [c.to_json() for c in self.comparisons],
        }


def _cases_for(artifact: Artifact, cases: list[Case] | None, reference: bool = True) -> list[Case]:
    if not reference:  # no eager reference: the golden data is what every runtime is checked against
        return artifact.golden_cases()
    if cases is not None and artifact.spec.kind == "model":
        cases = None  # BxS cases name an RNN's batch and seq; a model spec sweeps its own dims
    chosen = default_sweep(artifact.spec) if cases is None else list(cases)
    return list(dict.fromkeys([*chosen, *artifact.golden_cases()]))


def inputs_unavailable(artifact: Artifact, trusted: bool) -> str | None:
    """Why a model spec's ``inputs_fn`` cannot make new cases' inputs, or None (no such
    function, or it is recorded and unchanged: `rnnexport.userinputs.recorded_inputs`)."""
    spec = artifact.spec
    if spec.kind != "model" or spec.inputs_fn is None:
        return None
    if not trusted:
        return f"inputs_fn {spec.inputs_fn} is Python code; not run on untrusted artifacts (--untrusted)"
    from rnnexport.userinputs import recorded_inputs

    return recorded_inputs(spec, artifact.manifest.get("inputs_source"), artifact.path)[1]


@contextlib.contextmanager
def _input_maker(artifact: Artifact, in_process: bool, unavailable: str | None):
    """What makes a case's inputs: the seeded generator; a model spec's ``inputs_fn`` in this
    process during its export (`in_process`: the export runs the user's code anyway), else in
    a child process (`rnnexport.runtimes.isolated`); None where `unavailable`."""
    spec = artifact.spec
    if spec.kind != "model" or spec.inputs_fn is None:
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
    """Why the eager reference cannot run for `artifact`, or None. Only a model spec's can be
    missing: its module is the user's Python code (not run on untrusted artifacts), imported only
    as recorded at export and unchanged since (`rnnexport.usermodel.recorded_module`)."""
    spec = artifact.spec
    if spec.kind != "model":
        return None
    if not trusted:
        return (f"the eager reference imports the module's Python code ({spec.module}); not run on untrusted "
                "artifacts (--untrusted)")
    from rnnexport.usermodel import recorded_module

    return recorded_module(spec, artifact.manifest.get("module_source"), artifact.path)[1]


def manifest_tolerance(artifact: Artifact) -> Tolerance:
    """The tolerance stored in the manifest (model and per output), defaults where absent.

    Raises:
        ArtifactError: a value that is not a finite number >= 0 (NaN would pass everything),
            or an entry that is not a table.
    """
    from rnnexport.errors import ArtifactError

    stored, default = artifact.manifest.get("tolerance"), Tolerance()
    if stored is None:
        return default

    def value(table: Any, key: str, fallback: float, where: str) -> float:
        if not isinstance(table, dict):
            raise ArtifactError(f"{artifact.path}: manifest 'tolerance{where}' must be a table, got {table!r:.60}")
        found = table.get(key, fallback)
        if type(found) not in (int, float) or not np.isfinite(found) or found < 0:
            raise ArtifactError(f"{artifact.path}: manifest 'tolerance{where}.{key}' is {found!r:.40}; valid: a finite "
                                "number >= 0")
        return float(found)

    atol, rtol = value(stored, "atol", default.atol, ""), value(stored, "rtol", default.rtol, "")
    outputs = stored.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise ArtifactError(f"{artifact.path}: manifest 'tolerance.outputs' must be a table, got {outputs!r:.60}")
    per_output = {name: (value(t, "atol", atol, f".outputs.{name}"), value(t, "rtol", rtol, f".outputs.{name}"))
                  for name, t in outputs.items()}
    return Tolerance(atol=atol, rtol=rtol, per_output=per_output)


def applied_tolerance(artifact: Artifact, given: Tolerance | None, *, use_manifest: bool = False
                      ) -> tuple[Tolerance, list[str]]:
    """The tolerance a validation applies, and notes on where it came from.

    The tolerance is the validating user's policy (`given`: ``--atol/--rtol``, the pytest
    ini, the API; else the defaults), not the artifact's: a manifest can be edited along with
    the files it hashes. The manifest's tolerance may only tighten it (the smaller atol and rtol
    of the two, per output), unless `use_manifest` (``--manifest-tolerance``: the user trusts
    the manifest's, e.g. per-output tolerances of their own model spec).

    Raises:
        UsageError: both `given` and `use_manifest`.
        ArtifactError: a malformed manifest tolerance.
    """
    stored = manifest_tolerance(artifact)
    if use_manifest:
        if given is not None:
            raise UsageError("--manifest-tolerance applies the manifest's tolerance; --atol/--rtol give your own: "
                             "choose one")
        return stored, [f"tolerance {describe_tolerance(stored)} (the manifest's)"]
    policy = given or Tolerance()
    names = dict.fromkeys([*artifact.spec.output_names, *policy.per_output, *stored.per_output])

    def tighter(name: str | None) -> tuple[float, float]:
        mine = (policy.atol, policy.rtol) if name is None else policy.for_output(name)
        theirs = (stored.atol, stored.rtol) if name is None else stored.for_output(name)
        return min(mine[0], theirs[0]), min(mine[1], theirs[1])

    atol, rtol = tighter(None)
    per_output = {n: tighter(n) for n in names if tighter(n) != (atol, rtol)}
    applied = Tolerance(atol=atol, rtol=rtol, per_output=per_output)
    looser = [n for n in names if any(t > a for t, a in zip(stored.for_output(n), applied.for_output(n)))]
    notes = [f"tolerance {describe_tolerance(applied)} ({'yours' if given else 'defaults'}"
             f"{', tightened by the manifest' if applied != policy else ''})"]
    if looser:
        notes.append(f"the manifest asks for a looser tolerance on {', '.join(looser)} ({describe_tolerance(stored)}); "
                     "not applied: a manifest only tightens yours (--manifest-tolerance applies it)")
    return applied, notes


def describe_tolerance(tolerance: Tolerance) -> str:
    """``atol 1e-05, rtol 0.0001`` and each output's own, for reports."""
    own = "".join(f"; {name}: atol {a:g}, rtol {r:g}" for name, (a, r) in tolerance.per_output.items()
                  if (a, r) != (tolerance.atol, tolerance.rtol))
    return f"atol {tolerance.atol:g}, rtol {tolerance.rtol:g}{own}"


def _runnable(runner, case_list: list[Case], stream_cases) -> list[str]:
    """The steps `runner` will run: its cases, then its streaming cases (progress labels)."""
    steps = [case.id for case in case_list if not runner.skip_reason(case)]
    return steps + [f"{case.id} (streaming)" for case, _ in stream_cases if not runner.skip_reason(case)]


def planned_steps(
    artifact: Artifact, *, runtimes: list[str] | None = None, cases: list[Case] | None = None, trusted: bool = True
) -> int:
    """How many (runtime, case) steps `validate_artifact` will report to its `on_step`; cheap:
    nothing is loaded. A progress bar sized by it ends exactly at its total."""
    chosen, _ = resolve_runtimes(runtimes, trusted=trusted)
    missing_reference = reference_unavailable(artifact, trusted)
    golden_only = missing_reference or inputs_unavailable(artifact, trusted)
    case_list = _cases_for(artifact, cases, not golden_only)
    stream_cases = [] if golden_only else streaming_cases(artifact.spec)
    total = 0
    for name in chosen:
        if name == "torch" and missing_reference:
            continue
        runner = make_runner(name, artifact)
        if not runner.unsupported_reason():
            total += len(_runnable(runner, case_list, stream_cases))
    return total


def validate_artifact(
    artifact: Artifact | str | Path,
    *,
    runtimes: list[str] | None = None,
    tolerance: Tolerance | None = None,
    cases: list[Case] | None = None,
    runner_options: dict[str, dict[str, Any]] | None = None,
    on_step: Callable[[str, str, str], None] | None = None,
    trusted: bool = True,
    max_memory: int | None = None,
    skip_unsupported: bool = False,
    manifest_tolerance: bool = False,
) -> ArtifactReport:
    """Run `artifact` on every chosen runtime over the sweep; return the records.

    Args:
        artifact: An opened artifact or the path of one (verified on opening).
        runtimes: Runtime names; None (default) means every runtime available here.
        tolerance: Yours; defaults to `Tolerance()` (atol 1e-5, rtol 1e-4). The manifest's
            may only tighten it (`applied_tolerance`); the report says what was applied.
        cases: Input cases; defaults to `default_sweep`. The golden cases always run too.
        runner_options: Extra constructor arguments per runtime name. Every runtime runs on one
            thread unless given ``threads`` here: the results do not depend on the machine's
            core count, and a runtime's idle threads do not spin on the cores the next one
            needs (LibTorch ran 2.4x slower after OpenVINO on 2 cores). `bench` keeps its own.
        on_step: Called with (artifact, runtime, case id) before each case runs (progress).
        trusted: False loads only data formats (ONNX, weights-only state dicts, npz): the
            runtimes that load ``model.pt``/``model.pt2`` are skipped with that reason.
            Default True (your own artifacts; see docs/validation.md, "Trust").
        max_memory: Bytes one case may need (`rnnexport.limits`); default half of the
            memory available now.
        skip_unsupported: A runtime named in `runtimes` that cannot run this artifact (no
            ONNX file, a known limitation) is skipped with the reason instead of raising
            (`validate_paths` sets it when the runtime runs some of its artifacts).
        manifest_tolerance: Apply the manifest's tolerance as stored, even where it is looser
            than the defaults (default False; not with `tolerance`).

    Raises:
        ArtifactError: the artifact is missing, tampered or unreadable.
        UsageError / RuntimeUnavailableError: an unknown or unavailable runtime was asked for,
            or a case needs more than `max_memory`.
    """
    if not isinstance(artifact, Artifact):
        artifact = open_artifact(artifact, max_memory=max_memory)
    options = {name: {"threads": 1, **(runner_options or {}).get(name, {})} for name in RUNTIMES}
    plan = _plan(artifact, runtimes, applied_tolerance(artifact, tolerance, use_manifest=manifest_tolerance), cases,
                 options, trusted, max_memory)
    report = _new_report(artifact, plan, given_cases=cases is not None)
    if plan.missing_reference:  # nothing else reads the stored weights: check them as data
        from rnnexport.weightcheck import check_stored_weights

        problems, notes = check_stored_weights(artifact)
        report.errors.extend(RunError(artifact.name, "weights", None, problem) for problem in problems)
        report.notes.extend(notes)
    step = on_step or (lambda *_: None)
    streamed = {case for case, _ in plan.stream_cases}
    full_runs: dict[Any, dict[str, dict[str, np.ndarray]]] = {}  # a streaming case's full run, by case and runtime
    with loaded_runners(artifact, plan.runtimes, options) as (runners, unsupported, failed):
        _admit_runners(artifact, plan, runners, unsupported, failed, report, runtimes, skip_unsupported, step)
        for case in plan.cases:
            outputs = _run_case(artifact, runners, case, plan.feeds[case], report, step)  # run
            report.comparisons.extend(_compare_runs(artifact, plan, case, outputs, report))  # compare
            if case in streamed:
                full_runs[case] = outputs
        for case, chunks in plan.stream_cases:
            _run_streaming(artifact, runners, case, chunks, plan, report, step, full_runs.get(case, {}))
    return report  # judged by report.passed (compare.failures over the records)


@dataclass
class _Plan:
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
    longest: Any  # the case whose error per time step is plotted (RNN specs)
    missing_inputs: str | None = None  # why a model spec's inputs_fn could not run (golden cases only)


def _plan(artifact: Artifact, runtimes, tolerance: tuple[Tolerance, list[str]], cases, options, trusted: bool,
          max_memory) -> _Plan:
    """Runtimes, cases, feeds (golden inputs where stored) and streaming cases, every case
    checked against the memory limit and every feed against the spec before anything runs."""
    from rnnexport.errors import ArtifactError
    from rnnexport.limits import check_memory, check_steps

    spec = artifact.spec
    chosen, skipped = resolve_runtimes(runtimes, trusted=trusted)
    missing_reference = None if options.get("torch", {}).get("module") is not None else reference_unavailable(
        artifact, trusted)
    if missing_reference:
        chosen = [name for name in chosen if name != "torch"]
        skipped = {**skipped, "torch": missing_reference}
    in_process = options.get("torch", {}).get("module") is not None
    missing_inputs = None if in_process else inputs_unavailable(artifact, trusted)
    golden_only = missing_reference or missing_inputs
    case_list = _cases_for(artifact, cases, not golden_only)
    try:  # every runtime's outputs of a case are held at once (`_run_case`)
        outputs = spec.output_tensors(artifact.manifest.get("io")) if spec.kind == "model" else ()
    except ValueError as exc:
        raise ArtifactError(f"{artifact.path}: manifest {exc}") from None
    for case in case_list:
        check_memory(f"{artifact.name}: case {case.id}", spec.case_bytes(case, outputs, len(chosen)), max_memory)
        check_steps(f"{artifact.name}: case {case.id}", spec.case_steps(case))
    golden = artifact.golden()
    stream_cases = [] if golden_only else streaming_cases(spec)
    with _input_maker(artifact, in_process, missing_inputs) as inputs:
        feeds = {case: ({n: golden[case][n] for n in spec.input_names} if case in golden else inputs(case))
                 for case in case_list}
        for case, _ in stream_cases:
            feeds.setdefault(case, inputs(case))
    for case_feeds in feeds.values():
        check_feeds(spec, case_feeds)
    longest = max(case_list, key=lambda c: (c.seq, c.batch) if spec.kind == "rnn" else (c.steps,))
    return _Plan(*tolerance, chosen, skipped, case_list, feeds, golden, stream_cases,
                 missing_reference, longest, missing_inputs)


def _new_report(artifact: Artifact, plan: _Plan, *, given_cases: bool) -> ArtifactReport:
    spec = artifact.spec
    report = ArtifactReport(
        artifact=artifact.name, path=str(artifact.path), runtimes=list(plan.runtimes), skipped=dict(plan.skipped),
        cases=[c.id for c in plan.cases], golden_versions=dict(artifact.manifest.get("versions", {})),
        current_versions=versions(), tolerance=plan.tolerance.to_json(),
    )
    report.notes.extend(plan.tolerance_notes)
    report.notes.extend(f"not in this artifact: {FORMATS[fmt]} ({fmt}), which its export could not make: {reason}"
                        for fmt, reason in missing_formats(artifact.manifest).items())
    if given_cases and spec.kind == "model":
        report.notes.append("the given cases (BxS) apply to RNN specs; this model spec ran its own dims' sweep")
    if spec.kind == "model" and spec.weights == RANDOM_WEIGHTS:
        report.notes.append(f"weights: the module's seeded initialization (seed {spec.seed}), not trained weights")
    if plan.missing_inputs and not plan.missing_reference:
        report.notes.append(f"new cases need the spec's inputs_fn, unavailable ({plan.missing_inputs}): only the "
                            "stored golden cases ran")
    if plan.missing_reference:
        report.notes.append(f"eager reference unavailable ({plan.missing_reference}): every runtime was checked "
                            "against the stored golden data only, on its cases")
    report.streaming = (
        {"cases": [c.id for c, _ in plan.stream_cases], "chunks": {c.id: list(ch) for c, ch in plan.stream_cases}}
        if plan.stream_cases else {"not_applicable": streaming_not_applicable(spec) or (
            "it runs new cases, which need the eager reference and the inputs (unavailable)")}
    )
    return report


def _admit_runners(artifact, plan: _Plan, runners: dict, unsupported: dict[str, str], failed: dict[str, Exception],
                   report: ArtifactReport, runtimes, skip_unsupported: bool, step) -> None:
    """Sort the runners into those that run and those reported as skipped (cannot run this
    artifact) or as errors (failed to load, or loaded a model whose I/O names differ from the
    manifest's). Removes the latter from `runners`.

    Raises:
        RuntimeUnavailableError: a runtime named in `runtimes` cannot run this artifact.
        RNNExportError: the eager reference failed to load.
    """
    for name, limitation in unsupported.items():
        if runtimes is not None and name in runtimes and not skip_unsupported:
            raise RuntimeUnavailableError(f"runtime {name!r} was asked for but cannot run {artifact.name}: {limitation}")
        report.runtimes.remove(name)
        report.skipped[name] = limitation
    if "torch" in failed:
        raise failed["torch"]
    for name in list(plan.runtimes):
        if name in unsupported:
            continue
        runner = runners.get(name)
        problem = str(failed[name]) if name in failed else _io_mismatch(artifact.spec, runner)
        if problem:
            report.errors.append(RunError(artifact.name, name, None, problem))
            made = runner or make_runner(name, artifact)
            for label in _runnable(made, plan.cases, plan.stream_cases):  # not run, but done with
                step(artifact.name, name, label)
            runners.pop(name, None)
        else:
            report.details[name] = runner.describe()


def _run_case(artifact: Artifact, runners: dict, case, feeds: dict[str, np.ndarray], report: ArtifactReport,
              step) -> dict[str, dict[str, np.ndarray]]:
    """Every runner on one case: outputs by runtime. A runtime that crashes or misses an
    output is an error for that case, never the end of the run."""
    spec = artifact.spec
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name, runner in runners.items():
        reason = runner.skip_reason(case)
        if reason:
            report.left_out.append({"runtime": name, "case": case.id, "reason": reason})
            continue
        step(artifact.name, name, case.id)
        try:
            result = runner.infer(feeds)
        except Exception as exc:
            report.errors.append(RunError(artifact.name, name, case.id, f"{type(exc).__name__}: {exc}"))
            continue
        missing = [n for n in spec.output_names if n not in result]
        if missing:
            report.errors.append(RunError(artifact.name, name, case.id, (
                f"output {missing[0]!r} is missing: the runtime returned {sorted(result)}, the manifest "
                f"names {list(spec.output_names)}")))
            continue
        outputs[name] = result
    return outputs


def _compare_runs(artifact: Artifact, plan: _Plan, case, outputs: dict[str, dict[str, np.ndarray]],
                  report: ArtifactReport) -> list[Comparison]:
    """Each runtime's outputs against torch and the golden data (and the RNN invariants); for
    an RNN spec also where a failure starts and the error per time step on the longest case."""
    spec = artifact.spec
    reference = outputs.get("torch")
    records: list[Comparison] = []
    for name, result in outputs.items():
        mine = _compare_case(artifact, name, case, plan.feeds[case], result, reference, plan.golden.get(case),
                             plan.tolerance)
        records.extend(mine)
        if reference is None or name == "torch" or spec.kind != "rnn":
            continue
        if case == plan.longest:
            report.error_over_time[name] = _error_over_time(spec, case, result, reference)
        if failures(mine):
            located = localize(spec, result["h_n"], reference["h_n"], plan.tolerance)
            if located is not None:
                report.localizations.append({"runtime": name, "case": case.id, **located})
    return records


def _run_streaming(artifact: Artifact, runners: dict, case, chunks: tuple[int, ...], plan: _Plan,
                   report: ArtifactReport, step, full_runs: dict[str, dict[str, np.ndarray]]) -> None:
    """The streaming check of one case on every runner, each against its own full run: the
    one the sweep made of the same feeds (`full_runs`, by runtime), else run now."""
    for name, runner in runners.items():
        if runner.skip_reason(case):
            continue
        step(artifact.name, name, f"{case.id} (streaming)")
        try:
            report.comparisons.extend(_streaming_records(artifact, runner, case, chunks, plan.feeds[case],
                                                         plan.tolerance, full_runs.get(name)))
        except Exception as exc:
            report.errors.append(RunError(artifact.name, name, f"{case.id} (streaming)", f"{type(exc).__name__}: {exc}"))


def _error_over_time(spec: RNNSpec, case: Case, outputs: dict[str, np.ndarray],
                     reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max abs error of ``output`` against torch at each time step: does error accumulate
    along the sequence? (Padding steps of variable-length batches are 0 on both sides.)"""
    got, want = np.asarray(outputs["output"], np.float64), np.asarray(reference["output"], np.float64)
    if got.shape != want.shape:
        return {"case": case.id, "errors": []}
    time_axis = 1 if spec.batch_first else 0
    diff = np.moveaxis(np.abs(got - want), time_axis, 0).reshape(got.shape[time_axis], -1)
    return {"case": case.id, "errors": [float(x) for x in np.nan_to_num(diff, nan=np.inf).max(axis=1)]}


def _io_mismatch(spec: RNNSpec, runner) -> str | None:
    """Why the loaded model's input/output names differ from the manifest's, or None."""
    names = runner.io_names()
    if names is None:
        return None
    inputs, outputs = names
    for kind, found, expected in (("input", inputs, spec.input_names), ("output", outputs, spec.output_names)):
        missing = [n for n in expected if n not in found]
        unexpected = [n for n in found if n not in expected]
        if missing or unexpected:
            what = f"{kind} {missing[0]!r} is missing" if missing else f"unexpected {kind} {unexpected[0]!r}"
            return (f"{runner.requires}: {what}: the loaded model's {kind}s are {list(found)}, the manifest names "
                    f"{list(expected)}")
    return None


def _compare_case(
    artifact: Artifact,
    runtime: str,
    case: Case,
    feeds: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray] | None,
    golden: dict[str, np.ndarray] | None,
    tolerance: Tolerance,
) -> list[Comparison]:
    spec = artifact.spec
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runtime, case=case.id)
    records = []
    for output in spec.output_names:
        if runtime != "torch" and reference is not None:
            records.append(compare_arrays(outputs[output], reference[output], output=output, against="torch", **labels))
        if golden is not None:
            records.append(compare_arrays(outputs[output], golden[output], output=output, against="golden", **labels))
    if spec.kind == "rnn":
        records.extend(check_invariants(spec, outputs, batch=case.batch, seq=case.seq, lengths=feeds.get("lengths"),
                                        **labels))
    return records


def streaming_not_applicable(spec: RNNSpec) -> str | None:
    """Why the streaming check does not apply to `spec`, or None if it does."""
    if spec.kind == "model":
        return spec.streaming_not_applicable()
    if spec.bidirectional:
        return "bidirectional: the reverse direction needs the whole sequence"
    if spec.variable_length:
        return "variable-length: padded batches end at different steps, so chunks do not line up"
    return None


def streaming_cases(spec: RNNSpec) -> list[tuple[Case, tuple[int, ...]]]:
    """Cases run in chunks for the streaming check, with their chunk lengths (see
    `streaming_not_applicable` for the models it does not apply to)."""
    if spec.kind == "model":
        return spec.streaming_cases()
    if streaming_not_applicable(spec):
        return []
    documented = spec.seq_len
    cases = [(Case(3, 17, "zero"), (5, 1, 11))]
    if documented >= 3:
        third = documented // 3
        cases.append((Case(spec.batch_size, documented, "random"), (third, 1, documented - third - 1)))
    return cases


def _streaming_records(
    artifact: Artifact, runner, case: Case, chunks: tuple[int, ...], feeds: dict[str, np.ndarray], tolerance: Tolerance,
    full: dict[str, np.ndarray] | None = None,
) -> list[Comparison]:
    """Run `case` in chunks, feeding each chunk's ``h_n`` back as the next ``h_0``; compare the
    joined output and the last ``h_n`` with one full run on the same runtime (`full`, run here
    when not given).

    This is how RNNs are deployed for streaming: a state-layout bug (layers of ``h_0`` read in
    the wrong order, batch and layer axes swapped) shows here even when every full run passes.
    """
    spec = artifact.spec
    if spec.kind == "model":
        return _model_streaming_records(artifact, runner, case, chunks, feeds, tolerance, full)
    time_axis = 1 if spec.batch_first else 0
    full = full if full is not None else runner.infer(feeds)
    state = {f"{s}_0": feeds[f"{s}_0"] for s in spec.state_names}
    pieces, start = [], 0
    for length in chunks:
        index = [slice(None)] * 3
        index[time_axis] = slice(start, start + length)
        out = runner.infer({"input": np.ascontiguousarray(feeds["input"][tuple(index)]), **state})
        pieces.append(out["output"])
        state = {f"{s}_0": out[f"{s}_n"] for s in spec.state_names}
        start += length
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runner.name, case=case.id, against="streaming")
    return [
        compare_arrays(np.concatenate(pieces, axis=time_axis), full["output"], output="output", **labels),
        *(compare_arrays(state[f"{s}_0"], full[f"{s}_n"], output=f"{s}_n", **labels) for s in spec.state_names),
    ]


def _model_streaming_records(
    artifact: Artifact, runner, case, chunks: tuple[int, ...], feeds: dict[str, np.ndarray], tolerance: Tolerance,
    full: dict[str, np.ndarray] | None = None,
) -> list[Comparison]:
    """The streaming check of a model spec: every input with `stream_dim` in its shape is cut
    into `chunks` along it; each state input is fed the previous chunk's state output. Outputs
    with the chunk length on some axis are joined along it; state outputs are compared at the
    end; both against one full run on the same runtime (`full`, run here when not given)."""
    spec = artifact.spec
    full = full if full is not None else runner.infer(feeds)
    state_out = dict(spec.state)
    state = {name: feeds[name] for name in spec.state_inputs}
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in spec.output_names if name not in state_out.values()}
    start = 0
    for length in chunks:
        chunk = {}
        for t in spec.inputs:
            if t.name in state:
                chunk[t.name] = state[t.name]
            elif spec.stream_dim in t.shape:
                axis = t.shape.index(spec.stream_dim)
                chunk[t.name] = np.ascontiguousarray(np.take(feeds[t.name], range(start, start + length), axis=axis))
            else:
                chunk[t.name] = feeds[t.name]
        out = runner.infer(chunk)
        for name in pieces:
            pieces[name].append((out[name], length))
        state = {i: out[o] for i, o in spec.state}
        start += length
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runner.name, case=case.id, against="streaming")
    records = [compare_arrays(state[i], full[o], output=o, **labels) for i, o in spec.state]
    for name, parts in pieces.items():
        axis = _stream_axis(parts, full[name], sum(chunks))
        if axis is not None:
            joined = np.concatenate([p for p, _ in parts], axis=axis)
            records.append(compare_arrays(joined, full[name], output=name, **labels))
    return records


def _stream_axis(parts: list[tuple[np.ndarray, int]], full: np.ndarray, total: int) -> int | None:
    """The axis along which an output grows with the stream (each piece has its chunk's length
    there, the full run the total), or None for outputs that do not (pooled, per-sequence)."""
    for axis in range(full.ndim):
        if full.shape[axis] == total and all(p.ndim == full.ndim and p.shape[axis] == n for p, n in parts):
            return axis
    return None


def localize(spec: RNNSpec, h_n: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> dict[str, Any] | None:
    """The first layer and direction whose final hidden state diverges from the reference.

    ``h_n[layer * D + direction]`` is that layer's state; a wrong weight in one layer shows in
    its own slice first and only propagates to the layers above it, so the first failing slice
    in (layer, direction) order names where the mismatch starts. None if no slice fails (or the
    shapes differ).
    """
    if np.shape(h_n) != np.shape(expected):
        return None
    for layer in range(spec.num_layers):
        for direction in range(spec.num_directions):
            index = layer * spec.num_directions + direction
            record = compare_arrays(h_n[index], expected[index], tolerance=tolerance, artifact="", runtime="",
                                    case="", output="h_n", against="torch")
            if record.mismatched:
                return {"layer": layer, "direction": "reverse" if direction else "forward",
                        "h_n_index": index, "max_abs_error": record.max_abs_error}
    return None


def validate_paths(
    paths: list[str | Path],
    *,
    runtimes: list[str] | None = None,
    tolerance: Tolerance | None = None,
    cases: list[Case] | None = None,
    on_step: Callable[[str, str, str], None] | None = None,
    trusted: bool = True,
    max_memory: int | None = None,
    require_runnable: bool = True,
    on_plan: Callable[[int], None] | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    manifest_tolerance: bool = False,
) -> list[ArtifactReport]:
    """Validate every artifact folder found under `paths` (folders, or folders of folders).

    All folders are opened and verified before anything runs, so a tampered artifact stops
    the run before minutes of work. A runtime named in `runtimes` that cannot run some of the
    artifacts (an LSTM projection has no ONNX file) is skipped for those, with the reason; it
    is an error only when it can run none of them (unless `require_runnable` is False: the
    pytest plugin's session-wide runtimes meet one artifact per test). `trusted` and
    `max_memory`, `manifest_tolerance`: see `validate_artifact`. `on_plan` is called once, before anything runs, with
    the number of steps `on_step` will then see (a progress bar's total).

    Args:
        jobs: Artifacts validated at once, each in its own worker process (default 1: in this
            process). Reports come back in the order of the artifacts either way. An artifact
            whose worker process dies (killed, crashed) gets a failed report saying so.
        shard: ``(k, n)``: validate only the k-th of n stable shards (1-based), chosen by a hash
            of each folder's name, so a CI matrix of n machines covers every artifact once.

    Raises:
        RuntimeUnavailableError: a runtime that was asked for can run none of the artifacts.
        UsageError: bad `jobs` or `shard`.
    """
    from rnnexport.options import require_int

    require_int("jobs", jobs, 1)
    folders = discover_artifacts(list(paths))
    if shard is not None:
        folders = select_shard(folders, *shard)
    preload = validate_imports(runtimes)
    if jobs > 1 and len(folders) > 1:
        from rnnexport._workers import start_workers

        start_workers(preload)  # the workers' imports, while the artifacts are opened and verified here
    artifacts = [open_artifact(path, max_memory=max_memory) for path in folders]
    if runtimes is not None:
        resolve_runtimes(runtimes, trusted=trusted)  # unknown or unavailable: before the scan below
        for name in dict.fromkeys(runtimes if require_runnable else []):
            reasons = {a.name: make_runner(name, a).unsupported_reason() for a in artifacts}
            if artifacts and all(reasons.values()):
                artifact, reason = next(iter(reasons.items()))
                raise RuntimeUnavailableError(f"runtime {name!r} was asked for but cannot run any of the artifacts "
                                              f"(e.g. {artifact}: {reason})")
    parallel = jobs > 1 and len(artifacts) > 1
    plans = ([planned_steps(a, runtimes=runtimes, cases=cases, trusted=trusted) for a in artifacts]
             if on_plan is not None or (parallel and on_step is not None) else [])
    if on_plan is not None:
        on_plan(sum(plans))
    options = dict(runtimes=runtimes, tolerance=tolerance, cases=cases, trusted=trusted, max_memory=max_memory,
                   manifest_tolerance=manifest_tolerance,
                   skip_unsupported=True)
    if not parallel:
        return [validate_artifact(a, on_step=on_step, **options) for a in artifacts]
    from rnnexport._workers import map_in_processes

    # Longest first (by the bytes its cases move), so that no worker starts a long artifact
    # when the others are about to finish; the reports come back in the artifacts' order.
    order = sorted(range(len(artifacts)), key=lambda i: -_estimated_work(artifacts[i], cases))

    def done(position: int) -> None:  # progress advances by the artifact's planned steps when it is done
        index = order[position]
        for _ in range(plans[index] if on_step is not None else 0):
            on_step(artifacts[index].name, "*", "done")

    reports = map_in_processes(_validate_in_worker, [(artifacts[i], options) for i in order], jobs, on_done=done,
                               preload=preload, label=lambda item: item[0].name)
    by_index = dict(zip(order, reports))
    return [_died_report(artifacts[i], by_index[i]) if isinstance(by_index[i], WorkerDied) else by_index[i]
            for i in range(len(artifacts))]


def _died_report(artifact: Artifact, died: WorkerDied) -> ArtifactReport:
    """The report of an artifact whose worker died: failed, with nothing run, and one error
    saying how it ended, so that the summary counts it and the exit code is 1."""
    return ArtifactReport(artifact=artifact.name, path=str(artifact.path), runtimes=[], skipped={}, cases=[],
                          errors=[RunError(artifact.name, "*", "*", died.reason)],
                          golden_versions=dict(artifact.manifest.get("versions", {})), current_versions=versions())


def validate_imports(runtimes: list[str] | None = None) -> list[str]:
    """The modules validating on `runtimes` (None: all; the eager reference always) imports:
    the ``--jobs`` workers' fork server imports them once."""
    return ["rnnexport.validate", *runtime_imports(None if runtimes is None else ["torch", *runtimes])]


def _estimated_work(artifact: Artifact, cases: list[Case] | None) -> int:
    """A rough measure of how long validating `artifact` takes: the bytes of its cases."""
    return sum(artifact.spec.case_bytes(case) for case in _cases_for(artifact, cases))


def select_shard(folders: list[Path], k: int, n: int) -> list[Path]:
    """The folders of shard `k` of `n` (1-based): those whose name's sha256 is ``k - 1`` modulo
    `n`. Stable: adding or removing an artifact moves no other one to another shard.

    Raises:
        UsageError: unless ``1 <= k <= n``; or the shard holds none of `folders`: a CI machine
            that validates nothing must not pass.
    """
    import hashlib

    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
        raise UsageError(f"shard {k}/{n}: expected K/N with 1 <= K <= N")
    shards = {f: int(hashlib.sha256(Path(f).name.encode()).hexdigest(), 16) % n + 1 for f in folders}
    chosen = [f for f in folders if shards[f] == k]
    if folders and not chosen:
        held = sorted(set(shards.values()))
        roots = ", ".join(dict.fromkeys(str(Path(f).parent) for f in folders))
        raise UsageError(f"shard {k}/{n} selects none of the {len(folders)} artifacts under {roots} (shard K of N "
                         f"holds the folders whose name's sha256 is K-1 modulo N); the shards of {n} that hold one: "
                         f"{', '.join(map(str, held[:10]))}{', ...' if len(held) > 10 else ''}; or use fewer shards")
    return chosen


def _validate_in_worker(item: tuple[Artifact, dict[str, Any]]) -> ArtifactReport:
    # The artifact was opened and verified by the parent.
    artifact, options = item
    return validate_artifact(artifact, **options)
