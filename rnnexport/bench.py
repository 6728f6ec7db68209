"""Latency of every runtime on an artifact, side by side in one run.

Each runtime runs the same seeded feeds with the same thread count; after `warmup` unmeasured
runs, the median of `repeat` timed runs is reported in milliseconds, with its ratio to torch
eager measured in the same run (below 1 is faster than torch). Out-of-process clients time
inside the client, so file and pipe transfers are not counted. The ONNX Runtime *floor* is the
median of a session running an identity model on inputs of the same size: no runtime can be
faster than the overhead of one call.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact, discover_artifacts, open_artifact
from rnnexport.errors import UsageError
from rnnexport.inputs import Case, make_inputs
from rnnexport.plan import fitting_cases, spec_dims
from rnnexport.runtimes import loaded_runners, resolve_runtimes, variant_rows
from rnnexport.variant_table import format_variant_table, variant_table
from rnnexport.runtimes.base import median_ms

__all__ = ["FLOOR", "BenchReport", "BenchResult", "bench_artifact", "bench_targets", "default_bench_cases",
           "format_bench"]

FLOOR = "onnxruntime-identity-floor"


@dataclass(frozen=True)
class BenchResult:
    """One runtime on one shape: median, p90 and p99 milliseconds, runs per second at the
    median, and the median's ratio to torch eager."""

    runtime: str
    shape: str
    median_ms: float
    ratio_to_torch: float | None
    p90_ms: float | None = None
    p99_ms: float | None = None

    @property
    def throughput(self) -> float:
        """Runs per second at the median latency."""
        return 1e3 / self.median_ms if self.median_ms > 0 else float("inf")


@dataclass
class BenchReport:
    artifact: str
    threads: int
    warmup: int
    repeat: int
    results: list[BenchResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    left_out: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)  # `rnnexport.variant_table`

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "results"},
                "results": [{**asdict(r), "throughput_per_s": r.throughput} for r in self.results]}


@contextlib.contextmanager
def bench_targets(targets: list[str]) -> Iterator[list[Artifact]]:
    """The artifacts `targets` name: artifact folders (or folders of them), built-in names whose
    artifact is in ``models/``, or other names and spec files, which are exported (unvalidated)
    into a temporary folder, removed afterwards.

    Raises:
        UsageError: a target that is neither a folder nor a known name or spec file.
    """
    from rnnexport.spec import catalog, get_spec

    with tempfile.TemporaryDirectory(prefix="rnnexport-bench-") as scratch:
        folders: list[str | Path] = []
        for target in targets:
            if Path(target).is_dir():
                folders.append(target)
            elif target in catalog() and (Path("models") / target).is_dir():
                folders.append(Path("models") / target)  # the default --out of `rnnexport export`
            elif target in catalog() or target.endswith(".toml") or Path(target).is_file():
                from rnnexport.export import export_spec

                folders.append(export_spec(get_spec(target), scratch, validate=False).path)
            else:
                raise UsageError(f"{target}: no such artifact folder, built-in name or spec file; names: "
                                 f"{', '.join(catalog())}")
        yield [open_artifact(path) for path in discover_artifacts(folders)]


def default_bench_cases(artifact: Artifact) -> list:
    """The spec's bench cases: an RNN's documented shape, 1 x 1000 and 64 x 200; a model spec's
    documented sizes and the all-largest combination of its sweep (random initial state)."""
    return artifact.spec.bench_cases()


def shape_label(case) -> str:
    """``BxS`` for an RNN case, ``batch=8,seq=24`` for a model spec's (its id without the state)."""
    return case.label if case.compact else ",".join(f"{k}={v}" for k, v in case.sizes)


def _floor_ms(feeds: dict[str, np.ndarray], threads: int, warmup: int, repeat: int) -> float:
    """Median ms of ONNX Runtime running Identity on every input: the per-call overhead."""
    import onnxruntime as ort

    from rnnexport.runtimes.onnx_runners import identity_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(identity_model(feeds), options, providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, feeds), warmup=warmup, repeat=repeat)


def bench_artifact(
    artifact: Artifact,
    *,
    runtimes: list[str] | None = None,
    cases: list[Case] | None = None,
    threads: int = 1,
    warmup: int = 3,
    repeat: int = 10,
) -> BenchReport:
    """Median latency per runtime and shape; see the module docstring.

    Args:
        artifact: A verified artifact.
        runtimes: Default every available runtime (torch always, as the ratio's base).
        cases: Default `default_bench_cases`.
        threads: Threads per runtime, equal for all (default 1: reproducible on a shared machine).
        warmup / repeat: Unmeasured and measured runs per runtime and shape.
    """
    from rnnexport.options import require_int

    for label, value, least in (("threads", threads, 1), ("warmup", warmup, 0), ("repeat", repeat, 1)):
        require_int(label, value, least)
    chosen, skipped = resolve_runtimes(runtimes)
    chosen += variant_rows(artifact, chosen)
    fitted = fitting_cases(artifact.spec, cases)
    report = BenchReport(artifact=artifact.name, threads=threads, warmup=warmup, repeat=repeat, skipped=skipped)
    if cases is not None and fitted is None:  # one --shapes over artifacts with other dims
        report.left_out.extend({"runtime": "*", "shape": getattr(c, "id", str(c)), "reason": "does not fit the "
                                f"spec's dims ({spec_dims(artifact.spec)}); its own shapes were measured"}
                               for c in cases if artifact.spec.case_of(c) is None)
    cases = fitted or default_bench_cases(artifact)
    torch_ms: dict[str, float] = {}
    options = {name: {"threads": threads} for name in chosen}
    with loaded_runners(artifact, chosen, options) as (runners, unsupported, failed):
        report.skipped.update(unsupported)
        report.errors.extend({"runtime": name, "message": f"{type(exc).__name__}: {exc}"} for name, exc in failed.items())
        for name, runner in runners.items():
            try:
                for case in cases:
                    shape = shape_label(case)
                    reason = runner.skip_reason(case)
                    if reason:
                        report.left_out.append({"runtime": name, "shape": shape, "reason": reason})
                        continue
                    times = runner.bench_times(make_inputs(artifact.spec, case), warmup=warmup, repeat=repeat)
                    ms = float(np.median(times))
                    if name == "torch":
                        torch_ms[shape] = ms
                    base = torch_ms.get(shape)
                    report.results.append(BenchResult(name, shape, ms, ms / base if base else None,
                                                      float(np.percentile(times, 90)), float(np.percentile(times, 99))))
            except Exception as exc:  # one runtime failing must not end the benchmark
                report.errors.append({"runtime": name, "message": f"{type(exc).__name__}: {exc}"})
    for case in cases:
        shape = shape_label(case)
        ms = _floor_ms(make_inputs(artifact.spec, case), threads, warmup, repeat)
        base = torch_ms.get(shape)
        report.results.append(BenchResult(FLOOR, shape, ms, ms / base if base else None))
    report.variants = variant_table(artifact, report.results, shape_label(cases[0]))
    return report


def format_bench(reports: list[BenchReport]) -> str:
    """Per artifact: runtime x shape, ``median ms (ratio to torch)``, then what was not measured,
    then the variants side by side (`rnnexport.variant_table`) where the artifact has some."""
    from rnnexport.report import plain_table, render

    lines = []
    for report in reports:
        shapes = list(dict.fromkeys(r.shape for r in report.results))
        runtimes = list(dict.fromkeys(r.runtime for r in report.results))
        lines.append(f"{report.artifact}: median ms of {report.repeat} runs after {report.warmup} warm-up, "
                     f"{report.threads} thread(s); (x) = ratio to torch eager, lower is faster; p90 ms "
                     "(p99 and throughput in --json)")
        table = plain_table("runtime", shapes)
        cells = {(r.runtime, r.shape): r for r in report.results}
        for runtime in runtimes:
            row = []
            for shape in shapes:
                r = cells.get((runtime, shape))
                row.append("-" if r is None else f"{r.median_ms:.3f}" + (f" ({r.ratio_to_torch:.2f}x)" if r.ratio_to_torch else "")
                           + (f" p90 {r.p90_ms:.3f}" if r.p90_ms is not None else ""))
            table.add_row(runtime, *row)
        lines.extend("  " + line for line in render(table).splitlines())
        for name, reason in report.skipped.items():
            lines.append(f"  not measured {name}: {reason}")
        for entry in report.left_out:
            lines.append(f"  - {entry['runtime']} at {entry['shape']} not measured: {entry['reason']}")
        for error in report.errors:
            lines.append(f"  ERROR {error['runtime']}: {error['message']}")
        if report.variants:
            lines.extend("  " + line for line in format_variant_table(report.variants).splitlines())
        lines.append("")
    return "\n".join(lines).rstrip()
