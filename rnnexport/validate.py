"""Orchestration: runners x cases -> comparison records -> one report per artifact.

Every runtime is compared with the eager reference (``torch``, rebuilt from the stored weights)
on the whole shape sweep, with the stored golden outputs on the golden cases, and checked for
the RNN invariants. Nothing here judges: `ArtifactReport.passed` applies `compare.passed`.
Nothing here writes into the artifact folder.

This module composes the others: `rnnexport.plan` (what runs), `rnnexport.runloop` (running and
comparing), `rnnexport.streaming`, `rnnexport.tolerance_policy`, `rnnexport.results` (the
records).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact, discover_artifacts, open_artifact
from rnnexport.compare import Tolerance, judged_by_tolerance
from rnnexport.criteria import Tally, parse_criteria
from rnnexport.errors import RuntimeUnavailableError, UsageError, WorkerDied
from rnnexport.formats import FORMATS, missing_formats
from rnnexport.inputs import Case
from rnnexport.manifest import versions
from rnnexport.modelspec import RANDOM_WEIGHTS
from rnnexport.plan import Plan, estimated_work, fitting_cases, make_plan, planned_steps, spec_dims
from rnnexport.results import ArtifactReport, RunError
from rnnexport.runloop import admit_runners, compare_runs, run_case, run_streaming
from rnnexport.runtimes import RUNTIMES, loaded_runners, make_runner, resolve_runtimes, split_row, validation_imports
from rnnexport.streaming import streaming_not_applicable
from rnnexport.tolerance_policy import applied_tolerance, describe_tolerance

# Imported from here before the split into the modules above: `from rnnexport.validate import X` keeps working.
from rnnexport.plan import inputs_unavailable, reference_unavailable  # noqa: F401
from rnnexport.runloop import localize  # noqa: F401
from rnnexport.streaming import streaming_cases  # noqa: F401
from rnnexport.tolerance_policy import manifest_tolerance  # noqa: F401

__all__ = ["ArtifactReport", "RunError", "applied_tolerance", "describe_tolerance", "planned_steps", "select_shard",
           "validate_artifact",
           "validate_paths"]


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
    plan = make_plan(artifact, runtimes, applied_tolerance(artifact, tolerance, use_manifest=manifest_tolerance),
                     cases, options, trusted, max_memory)
    report = _new_report(artifact, plan, given_cases=cases)
    if plan.missing_reference:  # nothing else reads the stored weights: check them as data
        from rnnexport.weightcheck import check_stored_weights

        problems, notes = check_stored_weights(artifact)
        report.errors.extend(RunError(artifact.name, "weights", None, problem) for problem in problems)
        report.notes.extend(notes)
    step = on_step or (lambda *_: None)
    streamed = {case for case, _ in plan.stream_cases}
    full_runs: dict[Any, dict[str, dict[str, np.ndarray]]] = {}  # a streaming case's full run, by case and runtime
    rows = [name for name in plan.runtimes if not judged_by_tolerance(name)]  # the variants' rows
    tally = Tally(artifact.name, spec_criteria(artifact, trust_manifest=manifest_tolerance)) if rows else None
    with loaded_runners(artifact, plan.runtimes, options) as (runners, unsupported, failed):
        admit_runners(artifact, plan, runners, unsupported, failed, report, runtimes, skip_unsupported, step)
        for case in plan.cases:
            outputs = run_case(artifact, runners, case, plan.feeds[case], report, step)  # run
            report.comparisons.extend(compare_runs(artifact, plan, case, outputs, report, tally))  # compare
            if case in streamed:
                full_runs[case] = outputs
        for case, chunks in plan.stream_cases:
            run_streaming(artifact, runners, case, chunks, plan, report, step, full_runs.get(case, {}))
    if tally is not None:
        report.criteria = tally.results(judged=set(rows))
        made = list(dict.fromkeys(split_row(row)[1] for row in rows))
        report.notes.append(f"variants ({', '.join(made)}) are judged by their acceptance "
                            "criteria, not by the tolerances; their streaming check is not run")
    return report  # judged by report.passed (compare.failures over the records)


def spec_criteria(artifact: Artifact, *, trust_manifest: bool = False) -> tuple:
    """The acceptance criteria a validation applies: those recorded in the manifest
    (``criteria``; else the spec's), and, unless `trust_manifest` (the export that wrote it,
    ``--manifest-tolerance``), the default one on every output that lacks it: like its
    tolerance, an artifact's manifest never loosens its own check."""
    from rnnexport.criteria import DEFAULT
    from rnnexport.errors import ArtifactError

    spec = artifact.spec
    recorded = artifact.manifest.get("criteria")
    if recorded is None:
        return spec.acceptance_criteria()
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{artifact.path} manifest: 'criteria' must be a table of output -> criteria")
    table = recorded if trust_manifest else {
        output: {**DEFAULT, **recorded.get(output, {})} for output in spec.output_names}
    state = tuple(o for _, o in spec.state)
    return parse_criteria(table, spec.output_names, state, f"{artifact.path} manifest", ArtifactError)


def _new_report(artifact: Artifact, plan: Plan, *, given_cases: list | None) -> ArtifactReport:
    spec = artifact.spec
    report = ArtifactReport(
        artifact=artifact.name, path=str(artifact.path), runtimes=list(plan.runtimes), skipped=dict(plan.skipped),
        cases=[c.id for c in plan.cases], golden_versions=dict(artifact.manifest.get("versions", {})),
        current_versions=versions(), tolerance=plan.tolerance.to_json(),
    )
    report.notes.extend(plan.tolerance_notes)
    report.notes.extend(f"not in this artifact: {FORMATS[fmt]} ({fmt}), which its export could not make: {reason}"
                        for fmt, reason in missing_formats(artifact.manifest).items())
    if given_cases is not None and fitting_cases(spec, given_cases) is None:
        unfit = next(c for c in given_cases if spec.case_of(c) is None)
        report.notes.append(f"the given case {getattr(unfit, 'id', unfit)} does not fit this spec's dims "
                            f"({spec_dims(spec)}): its own sweep ran (give one size per dim, e.g. --cases "
                            f"{spec.golden_cases()[0].label})")
    if spec.weights == RANDOM_WEIGHTS:
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
            "no stored golden case is 3 steps long along the stream (new cases need the eager reference and the "
            "inputs, unavailable)")}
    )
    return report


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
    preload = validation_imports(runtimes)
    parallel = jobs > 1 and len(folders) > 1
    if parallel:
        from rnnexport.workers import start_workers

        start_workers(preload)  # the workers' imports, while the artifacts are opened and verified here
    artifacts = [open_artifact(path, max_memory=max_memory) for path in folders]
    references = trusted and any(a.spec.reference_forks for a in artifacts)
    if not parallel and any(a.manifest.get("variants") for a in artifacts):
        from rnnexport.runtimes.probe import start_probing

        start_probing(references)  # the variants' trials fork from it (`rnnexport.runtimes.probe`): importing meanwhile
    elif not parallel and references:
        from rnnexport.runtimes.isolated import IsolatedReference

        IsolatedReference.start_server()  # a model's eager reference forks from it: importing meanwhile
    if runtimes is not None:
        resolve_runtimes(runtimes, trusted=trusted)  # unknown or unavailable: before the scan below
        for name in dict.fromkeys(runtimes if require_runnable else []):
            reasons = {a.name: make_runner(name, a).unsupported_reason() for a in artifacts}
            if artifacts and all(reasons.values()):
                artifact, reason = next(iter(reasons.items()))
                raise RuntimeUnavailableError(f"runtime {name!r} was asked for but cannot run any of the artifacts "
                                              f"(e.g. {artifact}: {reason})")
    plans = ([planned_steps(a, runtimes=runtimes, cases=cases, trusted=trusted) for a in artifacts]
             if on_plan is not None or (parallel and on_step is not None) else [])
    if on_plan is not None:
        on_plan(sum(plans))
    options = dict(runtimes=runtimes, tolerance=tolerance, cases=cases, trusted=trusted, max_memory=max_memory,
                   manifest_tolerance=manifest_tolerance,
                   skip_unsupported=True)
    if not parallel:
        return [validate_artifact(a, on_step=on_step, **options) for a in artifacts]
    from rnnexport.workers import map_in_processes

    # Longest first (by the bytes its cases move), so that no worker starts a long artifact
    # when the others are about to finish; the reports come back in the artifacts' order.
    order = sorted(range(len(artifacts)), key=lambda i: -estimated_work(artifacts[i], cases))

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
