"""Running a plan (`rnnexport.plan`): the runners admitted or reported (`admit_runners`), every
runner on one case (`run_case`), its outputs compared with the eager reference and the golden
data, the RNN invariants, where a failure starts (`localize`) and the error per time step
(`compare_runs`), and the streaming check on every runner (`run_streaming`). Each adds to the
`ArtifactReport`; a runtime that fails is an error there, never the end of the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact
from rnnexport.compare import Comparison, Tolerance, compare_arrays, failures, judged_by_tolerance
from rnnexport.criteria import Tally
from rnnexport.errors import RuntimeUnavailableError
from rnnexport.plan import Plan, runnable_steps
from rnnexport.results import ArtifactReport, RunError
from rnnexport.runtimes import make_runner
from rnnexport.streaming import streaming_records

__all__ = ["admit_runners", "compare_runs", "localize", "run_case", "run_streaming"]


def admit_runners(artifact, plan: Plan, runners: dict, unsupported: dict[str, str], failed: dict[str, Exception],
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
        probed = make_runner(name, artifact)
        if probed.variant and not probed.unsupported_reason():  # counted by `planned_steps`: done with
            for label in runnable_steps(probed, plan.cases, plan.stream_cases):
                step(artifact.name, name, label)
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
            for label in runnable_steps(made, plan.cases, plan.stream_cases):  # not run, but done with
                step(artifact.name, name, label)
            runners.pop(name, None)
        else:
            report.details[name] = runner.describe()


def run_case(artifact: Artifact, runners: dict, case, feeds: dict[str, np.ndarray], report: ArtifactReport,
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


def compare_runs(artifact: Artifact, plan: Plan, case, outputs: dict[str, dict[str, np.ndarray]],
                 report: ArtifactReport, tally: Tally | None = None) -> list[Comparison]:
    """Each runtime's outputs against torch and the golden data (and the checks the spec
    carries: an RNN's invariants), added to the acceptance criteria's `tally`; where a failure
    starts (`locate`: an RNN's layer and direction) and, on the longest case, the error per step
    along the spec's stream."""
    spec = artifact.spec
    reference = outputs.get("torch")
    golden = plan.golden.get(case)
    expected = reference if reference is not None else golden
    records: list[Comparison] = []
    for name, result in outputs.items():
        mine = _compare_case(artifact, name, case, plan.feeds[case], result, reference, golden, plan.tolerance)
        records.extend(mine)
        if tally is not None and name != "torch" and expected is not None:
            tally.add(name, result, expected, golden or {})
        if reference is None or name == "torch":
            continue
        if case == plan.longest and (stream := spec.stream_output(artifact.manifest.get("io"))) is not None:
            report.error_over_time[name] = _error_over_time(case, *stream, result, reference)
        if failures(mine):
            located = spec.locate(result, reference, plan.tolerance)
            if located is not None:
                report.localizations.append({"runtime": name, "case": case.id, **located})
    return records


def run_streaming(artifact: Artifact, runners: dict, case, chunks: tuple[int, ...], plan: Plan,
                  report: ArtifactReport, step, full_runs: dict[str, dict[str, np.ndarray]]) -> None:
    """The streaming check of one case on every runner, each against its own full run: the
    one the sweep made of the same feeds (`full_runs`, by runtime), else run now."""
    for name, runner in runners.items():
        if runner.skip_reason(case) or runner.variant:
            continue
        step(artifact.name, name, f"{case.id} (streaming)")
        try:
            report.comparisons.extend(streaming_records(artifact, runner, case, chunks, plan.feeds[case],
                                                        plan.tolerance, full_runs.get(name)))
        except Exception as exc:
            report.errors.append(RunError(artifact.name, name, f"{case.id} (streaming)", f"{type(exc).__name__}: {exc}"))


def _error_over_time(case, output: str, time_axis: int, outputs: dict[str, np.ndarray],
                     reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max abs error of `output` against torch at each step along its `time_axis` (the spec's
    stream axis): does error accumulate along the sequence? (Padding steps of variable-length
    batches are 0 on both sides.)"""
    got, want = np.asarray(outputs[output], np.float64), np.asarray(reference[output], np.float64)
    if got.shape != want.shape or got.ndim <= time_axis:
        return {"case": case.id, "output": output, "errors": []}
    diff = np.moveaxis(np.abs(got - want), time_axis, 0).reshape(got.shape[time_axis], -1)
    return {"case": case.id, "output": output,
            "errors": [float(x) for x in np.nan_to_num(diff, nan=np.inf).max(axis=1)]}


def _io_mismatch(spec, runner) -> str | None:
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
    case,
    feeds: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray] | None,
    golden: dict[str, np.ndarray] | None,
    tolerance: Tolerance,
) -> list[Comparison]:
    spec = artifact.spec
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runtime, case=case.id)
    judged = judged_by_tolerance(runtime)
    records = []
    for output in spec.output_names:
        if runtime != "torch" and reference is not None:
            records.append(compare_arrays(outputs[output], reference[output], output=output, against="torch",
                                          judged=judged, **labels))
        if golden is not None:
            records.append(compare_arrays(outputs[output], golden[output], output=output, against="golden",
                                          judged=judged, **labels))
    records.extend(spec.output_checks(outputs, case, feeds, labels))  # an RNN's invariants
    return records


def localize(spec, h_n: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> dict[str, Any] | None:
    """The first layer and direction whose final hidden state diverges from the reference
    (`rnnexport.rnn_behaviour.RNNBehaviour.locate`)."""
    return spec.locate({"h_n": h_n}, {"h_n": expected}, tolerance)
