"""What every report shows of a validation (`ArtifactReport`): its rows (runtime x case), the
grid cells (`grid_cells`: worst error, state), the notes a grid cannot show (`report_notes`), and the
one-line descriptions of a failure, a localization and the versions (`describe_failure`,
`describe_localization`, `versions_line`). The terminal table (`rnnexport.report`), JUnit XML
(`rnnexport.report_junit`) and HTML (`rnnexport.report_html`) are drawn from these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rnnexport.criteria import MEASURES, CriterionResult
from rnnexport.compare import Comparison, passed
from rnnexport.results import ArtifactReport

__all__ = [
    "GridCell", "checked_against", "describe_failure", "describe_localization", "grid_cells", "report_notes",
    "report_rows", "versions_line",
]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def describe_failure(c: Comparison) -> str:
    """One line naming artifact, runtime, case, output and the error."""
    where = f"{c.artifact} | {c.runtime} | {c.case} | {c.output} vs {c.against}"
    if not c.shape_ok:
        return f"{where}: shape {list(c.actual_shape)}, expected {list(c.expected_shape)}"
    detail = f"max abs error {_fmt(c.max_abs_error)}, max rel error {_fmt(c.max_rel_error)}"
    if c.worst_index is not None:
        detail += f", worst at {list(c.worst_index)}"
    if c.nonfinite_mismatches:
        detail += f", {c.nonfinite_mismatches} NaN/Inf mismatches"
    return f"{where}: {c.mismatched}/{c.total} elements outside atol={c.atol:g} rtol={c.rtol:g} ({detail})"


def describe_localization(artifact: str, loc: dict[str, Any]) -> str:
    return (f"{artifact} | {loc['runtime']} | {loc['case']}: first divergence at layer {loc['layer']} "
            f"{loc['direction']} (h_n[{loc['h_n_index']}], max abs error {_fmt(loc['max_abs_error'])})")


def versions_line(report: ArtifactReport) -> str:
    """Which versions produced the golden data, and which are running now."""
    keys = ("torch", "onnxruntime", "onnx", "numpy", "rnnexport")

    def pick(versions: dict[str, str]) -> str:
        return ", ".join(f"{k} {versions[k]}" for k in keys if k in versions) or "unknown"

    golden, now = pick(report.golden_versions), pick(report.current_versions)
    if golden == now:
        return f"golden data made with the running versions ({now})"
    return f"golden data made with {golden}; running {now}"


def report_rows(report: ArtifactReport) -> list[tuple[str, str, list[Comparison], list[str]]]:
    """(runtime, case, records, errors) of each runtime x case pair that has records or errors."""
    rows = []
    for runtime in report.runtimes:
        for case in report.cases:
            records = [c for c in report.comparisons if c.runtime == runtime and c.case == case]
            errors = [e.message for e in report.errors if e.runtime == runtime and e.case in (case, None)]
            if records or errors:
                rows.append((runtime, case, records, errors))
    return rows


@dataclass(frozen=True)
class GridCell:
    """One runtime on one case, as both the terminal grid and the HTML heatmap show it."""

    state: str  # "error", "fail" or "ok"
    worst: float | None  # worst max abs error against torch, golden data and streaming
    atol: float
    spread: str = ""  # the worst record's mean, median and p99 abs error, for the HTML tooltip
    judged: bool = True  # False: a variant's errors, judged by its acceptance criteria instead


def grid_cells(report: ArtifactReport) -> dict[tuple[str, str], GridCell]:
    """Cells by (runtime, case); a pair without records or errors has no cell (left out)."""
    cells = {}
    for runtime, case, records, errors in report_rows(report):
        compared = [c for c in records if c.against != "invariant" and c.max_abs_error is not None]
        state = "error" if errors else ("fail" if any(not passed(c) for c in records) else "ok")
        worst = max(compared, key=lambda c: c.max_abs_error, default=None)
        cells[(runtime, case)] = GridCell(state, worst.max_abs_error if worst else None,
                                       min((c.atol for c in records), default=1e-5), _spread(worst),
                                       all(c.judged for c in records))
    # The eager reference has records only where something checks it (golden data; an RNN's
    # invariants); wherever another runtime was compared with it, it ran as the reference: "ref".
    if "torch" in report.runtimes:
        for case in report.cases:
            if ("torch", case) not in cells and any(c.case == case and c.against == "torch" for c in report.comparisons):
                cells[("torch", case)] = GridCell("ok", None, 1e-5)
    return cells


def _spread(record: Comparison | None) -> str:
    """``mean 1.2e-08, median 9.0e-09, p99 6.1e-08`` of a record (worst output of a cell)."""
    if record is None or record.mean_abs_error is None:
        return ""
    return (f"{record.output} vs {record.against}: mean {record.mean_abs_error:.1e}, median "
            f"{record.median_abs_error:.1e}, p99 {record.p99_abs_error:.1e}, max {record.max_abs_error:.1e}")


def _unchecked(report: ArtifactReport, cells: dict[tuple[str, str], GridCell]) -> list[str]:
    """A note per runtime whose column shows '-' where no left-out reason or error says why."""
    notes = []
    for runtime in report.runtimes:
        left_out = {x["case"] for x in report.left_out if x["runtime"] == runtime}
        missing = [case for case in report.cases if (runtime, case) not in cells and case not in left_out]
        if not missing:
            continue
        if runtime == "torch":
            why = ("the eager reference is checked against the golden data, stored for the golden cases only, "
                   "and no other runtime ran these cases against it")
        else:
            why = "no reference output and no golden data for these cases: nothing to compare with"
        notes.append(f"{runtime}: {len(missing)} case(s) not checked ('-'): {why}")
    return notes


def checked_against(reports: Sequence[ArtifactReport]) -> str:
    """What the cells' errors were measured against: streaming only where a streaming check ran."""
    if any(c.against == "streaming" for report in reports for c in report.comparisons):
        return "torch, golden data and chunked streaming"
    return "torch and golden data"


def criteria_grid(report: ArtifactReport) -> tuple[list[str], list[tuple[str, list[CriterionResult | None]]]]:
    """The acceptance criteria as a table: one column per output criterion (``logits argmax
    >= 0.99``), one row per runtime row that has figures (fp32 rows for comparison, variants
    judged)."""
    keys = list(dict.fromkeys((c.output, c.criterion) for c in report.criteria))
    found = {(c.runtime, c.output, c.criterion): c for c in report.criteria}
    columns = []
    for output, kind in keys:
        sample = next(c for c in report.criteria if (c.output, c.criterion) == (output, kind))
        label = MEASURES[kind].label or kind
        columns.append(f"{output} {label} {'>=' if sample.at_least else '<='} {sample.threshold:g}")
    rows = [(runtime, [found.get((runtime, o, k)) for o, k in keys])
            for runtime in report.runtimes if any((runtime, o, k) in found for o, k in keys)]
    return columns, rows


def report_notes(report: ArtifactReport) -> list[str]:
    """What the grid cannot show: the report's notes (e.g. no eager reference), skipped runtimes,
    left-out and unchecked cases ('-'), errors, failures and where they start, one line each, in
    that order."""
    notes = [*report.notes, *(f"skipped {runtime}: {reason}" for runtime, reason in report.skipped.items())]
    for runtime in dict.fromkeys(x["runtime"] for x in report.left_out):
        mine = [x for x in report.left_out if x["runtime"] == runtime]
        notes.append(f"{runtime}: {len(mine)} case(s) left out ('-'): {mine[0]['reason']}")
    notes += _unchecked(report, grid_cells(report))
    notes += [f"ERROR {e.artifact} | {e.runtime} | {e.case or 'load'}: {e.message}" for e in report.errors]
    notes += [f"FAIL {describe_failure(c)}" for c in report.failures]
    notes += [f"FAIL {c.artifact} | {c.runtime} | {c.output}: {c.describe()} over {c.cases} case(s)"
              for c in report.criteria_failures]
    notes += [f"LOCATED {describe_localization(report.artifact, loc)}" for loc in report.localizations]
    return notes
