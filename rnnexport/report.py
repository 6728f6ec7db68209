"""Reports for people and CI: terminal table, JSON (schema ``rnnexport.validation/1``), JUnit XML."""

from __future__ import annotations

import html
import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnexport.compare import Comparison, passed
from rnnexport.validate import ArtifactReport

__all__ = [
    "JSON_SCHEMA", "Progress", "describe_failure", "describe_localization", "format_table", "report_json",
    "versions_line", "write_html", "write_json_report", "write_junit",
]

JSON_SCHEMA = "rnnexport.validation/1"
_GREEN, _RED, _DIM, _RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"


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


def _rows(report: ArtifactReport) -> list[tuple[str, str, list[Comparison], list[str]]]:
    rows = []
    for runtime in report.runtimes:
        for case in report.cases:
            records = [c for c in report.comparisons if c.runtime == runtime and c.case == case]
            errors = [e.message for e in report.errors if e.runtime == runtime and e.case in (case, None)]
            if records or errors:
                rows.append((runtime, case, records, errors))
    return rows


@dataclass(frozen=True)
class _Cell:
    """One runtime on one case, as both the terminal grid and the HTML heatmap show it."""

    state: str  # "error", "fail" or "ok"
    worst: float | None  # worst max abs error against torch, golden data and streaming
    atol: float


def _grid(report: ArtifactReport) -> dict[tuple[str, str], _Cell]:
    """Cells by (runtime, case); a pair without records or errors has no cell (left out)."""
    cells = {}
    for runtime, case, records, errors in _rows(report):
        values = [c.max_abs_error for c in records if c.against != "invariant" and c.max_abs_error is not None]
        state = "error" if errors else ("fail" if any(not passed(c) for c in records) else "ok")
        cells[(runtime, case)] = _Cell(state, max(values) if values else None,
                                       min((c.atol for c in records), default=1e-5))
    return cells


def format_table(reports: Sequence[ArtifactReport], *, color: bool = False) -> str:
    """Per artifact, a case x runtime grid: each cell is the worst max abs error of that runtime
    on that case (against torch and golden data), ``FAIL`` when any check failed; then the
    skipped runtimes with their reasons and every failure on a line of its own.
    The ``torch`` column shows its error against the golden data (``ref`` when it has none)."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines: list[str] = []
    for report in reports:
        verdict = paint("PASS", _GREEN) if report.passed else paint("FAIL", _RED)
        lines.append(f"{report.artifact}  ({report.path})  {verdict}")
        lines.append(f"  {versions_line(report)}")
        if "not_applicable" in report.streaming:
            lines.append(paint(f"  streaming check not applicable: {report.streaming['not_applicable']}", _DIM))
        cells = _grid(report)
        width = max(12, *(len(r) + 2 for r in report.runtimes))
        lines.append(f"  {'case':<20}" + "".join(f"{r:>{width}}" for r in report.runtimes))
        for case in report.cases:
            row = f"  {case:<20}"
            for runtime in report.runtimes:
                cell = cells.get((runtime, case))
                if cell is None:
                    text, code = "-", _DIM
                elif cell.state == "error":
                    text, code = "ERROR", _RED
                elif cell.state == "fail":
                    text, code = "FAIL", _RED
                else:
                    text, code = (f"{cell.worst:.1e}" if cell.worst is not None else "ref"), _GREEN
                row += " " * (width - len(text)) + paint(text, code)
            lines.append(row)
        for runtime, reason in report.skipped.items():
            lines.append(paint(f"  skipped {runtime}: {reason}", _DIM))
        for runtime in dict.fromkeys(x["runtime"] for x in report.left_out):
            mine = [x for x in report.left_out if x["runtime"] == runtime]
            lines.append(paint(f"  {runtime}: {len(mine)} case(s) left out ('-'): {mine[0]['reason']}", _DIM))
        for error in report.errors:
            lines.append(paint(f"  ERROR {error.artifact} | {error.runtime} | {error.case or 'load'}: {error.message}", _RED))
        for c in report.failures:
            lines.append(paint(f"  FAIL {describe_failure(c)}", _RED))
        for loc in report.localizations:
            lines.append(paint(f"  LOCATED {describe_localization(report.artifact, loc)}", _RED))
        lines.append("")
    total = len(reports)
    bad = sum(not r.passed for r in reports)
    lines.append(f"{total - bad} of {total} artifact(s) passed" + (f", {bad} failed" if bad else "")
                 + " (cells: worst max abs error against torch, golden data and chunked streaming)")
    return "\n".join(lines)


def report_json(reports: Sequence[ArtifactReport]) -> dict[str, Any]:
    """The machine-readable report; its schema is documented in README.md."""
    return {
        "schema": JSON_SCHEMA,
        "passed": all(r.passed for r in reports),
        "artifacts": [r.to_json() for r in reports],
    }


def write_json_report(reports: Sequence[ArtifactReport], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report_json(reports), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_junit(reports: Sequence[ArtifactReport], path: str | Path) -> None:
    """JUnit XML: one testsuite per artifact, one testcase per runtime x case."""
    suites = ET.Element("testsuites", name="rnnexport")
    for report in reports:
        rows = _rows(report)
        suite = ET.SubElement(suites, "testsuite", name=report.artifact, tests=str(len(rows) + len(report.skipped)))
        failed = errored = skipped = 0
        for runtime, case, records, errors in rows:
            testcase = ET.SubElement(suite, "testcase", classname=f"rnnexport.{report.artifact}.{runtime}", name=case)
            bad = [describe_failure(c) for c in records if not passed(c)]
            if errors:
                ET.SubElement(testcase, "error", message=errors[0][:200]).text = "\n".join(errors)
                errored += 1
            elif bad:
                ET.SubElement(testcase, "failure", message=bad[0][:200]).text = "\n".join(bad)
                failed += 1
        for runtime, reason in report.skipped.items():
            testcase = ET.SubElement(suite, "testcase", classname=f"rnnexport.{report.artifact}.{runtime}", name="all")
            ET.SubElement(testcase, "skipped", message=reason)
            skipped += 1
        suite.set("failures", str(failed))
        suite.set("errors", str(errored))
        suite.set("skipped", str(skipped))
    ET.ElementTree(suites).write(str(path), encoding="utf-8", xml_declaration=True)


def write_html(reports: Sequence[ArtifactReport], path: str | Path) -> None:
    """A self-contained page (inline CSS, no scripts, no network): summary table, a heatmap of
    the worst error per runtime x case for each artifact, and every failure."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rnnexport validation</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}",
        "td.l,th.l{text-align:left}.pass{color:#106b10;font-weight:bold}.fail{color:#b00;font-weight:bold}",
        ".skip{color:#777}.err{background:#b00;color:#fff}li{margin:2px 0;font-family:monospace}",
        "</style></head><body><h1>rnnexport validation</h1>",
    ]
    total_bad = sum(not r.passed for r in reports)
    verdict = "<span class='pass'>all passed</span>" if not total_bad else f"<span class='fail'>{total_bad} failed</span>"
    parts.append(f"<p>{len(reports)} artifact(s): {verdict}</p>")
    parts.append("<table><tr><th class='l'>artifact</th><th class='l'>result</th>"
                 "<th class='l'>runtimes</th><th class='l'>versions</th></tr>")
    for report in reports:
        status = "<span class='pass'>PASS</span>" if report.passed else "<span class='fail'>FAIL</span>"
        runtimes = ", ".join(
            f"{esc(name)}: {esc(entry['status'])}" for name, entry in report.runtime_summary().items()
        )
        parts.append(f"<tr><td class='l'><a href='#{esc(report.artifact)}'>{esc(report.artifact)}</a></td>"
                     f"<td class='l'>{status}</td><td class='l'>{runtimes}</td>"
                     f"<td class='l'>{esc(versions_line(report))}</td></tr>")
    parts.append("</table>")
    for report in reports:
        cells = _grid(report)
        parts.append(f"<h2 id='{esc(report.artifact)}'>{esc(report.artifact)}</h2><p>{esc(report.path)}</p>")
        parts.append("<table><tr><th class='l'>case</th>" + "".join(f"<th>{esc(r)}</th>" for r in report.runtimes) + "</tr>")
        for case in report.cases:
            row = [f"<td class='l'>{esc(case)}</td>"]
            for runtime in report.runtimes:
                cell = cells.get((runtime, case))
                if cell is None:
                    row.append("<td class='skip'>-</td>")
                elif cell.state == "error":
                    row.append("<td class='err' title='runtime error'>ERROR</td>")
                else:
                    worst = cell.worst if cell.worst is not None else 0.0
                    color = _heat(worst, cell.atol, cell.state == "fail")
                    text = "FAIL " if cell.state == "fail" else ""
                    row.append(f"<td style='background:{color}'>{text}{worst:.1e}</td>")
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</table>")
        notes = [f"skipped {name}: {reason}" for name, reason in report.skipped.items()]
        notes += [f"ERROR {e.runtime} | {e.case or 'load'}: {e.message}" for e in report.errors]
        notes += [f"FAIL {describe_failure(c)}" for c in report.failures]
        notes += [f"LOCATED {describe_localization(report.artifact, loc)}" for loc in report.localizations]
        if notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("<p class='skip'>Cells: worst max abs error of the runtime on the case (against torch, golden "
                 "data and chunked streaming); colour from green (exact) through yellow to red (at or above atol).</p>")
    parts.append("</body></html>\n")
    Path(path).write_text("".join(parts), encoding="utf-8")


def _heat(error: float, atol: float, failed: bool) -> str:
    """Background colour: green at 0, yellow around atol/100, red at atol and for failures."""
    if failed:
        return "#f4a0a0"
    if error <= 0:
        return "#c8f0c8"
    position = min(1.0, max(0.0, (math.log10(error) - math.log10(atol) + 6) / 6))  # 1e-6*atol .. atol
    red = int(200 + 55 * position)
    green = int(240 - 60 * position)
    return f"#{red:02x}{green:02x}a0"


class Progress:
    """A progress bar (`rich`) on stderr while validating, on a terminal only; elsewhere silent.

    Its total is set by `plan` (`rnnexport.validate.validate_paths` calls it with the exact
    number of steps before anything runs), so the bar ends at its total. Use as ``on_plan`` and
    ``on_step``.
    """

    def __init__(self, total: int = 0, stream=None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = self._task = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            console = Console(file=self.stream, force_terminal=True)
            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True)
            self._task = self._bar.add_task("validating", total=total or None)
            self._bar.start()

    def plan(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=max(total, 1))

    def __call__(self, artifact: str, runtime: str, case: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{artifact} {runtime} {case}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.stop()
            self._bar = None
