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
from rnnexport.results import ArtifactReport

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
    spread: str = ""  # the worst record's mean, median and p99 abs error, for the HTML tooltip


def _grid(report: ArtifactReport) -> dict[tuple[str, str], _Cell]:
    """Cells by (runtime, case); a pair without records or errors has no cell (left out)."""
    cells = {}
    for runtime, case, records, errors in _rows(report):
        compared = [c for c in records if c.against != "invariant" and c.max_abs_error is not None]
        state = "error" if errors else ("fail" if any(not passed(c) for c in records) else "ok")
        worst = max(compared, key=lambda c: c.max_abs_error, default=None)
        cells[(runtime, case)] = _Cell(state, worst.max_abs_error if worst else None,
                                       min((c.atol for c in records), default=1e-5), _spread(worst))
    # The eager reference has records only where something checks it (golden data; an RNN's
    # invariants); wherever another runtime was compared with it, it ran as the reference: "ref".
    if "torch" in report.runtimes:
        for case in report.cases:
            if ("torch", case) not in cells and any(c.case == case and c.against == "torch" for c in report.comparisons):
                cells[("torch", case)] = _Cell("ok", None, 1e-5)
    return cells


def _spread(record: Comparison | None) -> str:
    """``mean 1.2e-08, median 9.0e-09, p99 6.1e-08`` of a record (worst output of a cell)."""
    if record is None or record.mean_abs_error is None:
        return ""
    return (f"{record.output} vs {record.against}: mean {record.mean_abs_error:.1e}, median "
            f"{record.median_abs_error:.1e}, p99 {record.p99_abs_error:.1e}, max {record.max_abs_error:.1e}")


def _unchecked(report: ArtifactReport, cells: dict[tuple[str, str], _Cell]) -> list[str]:
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


def render(renderable, *, color: bool = False) -> str:
    """A `rich` renderable (a table) as text, coloured with ANSI codes when `color`."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=1000, force_terminal=color, color_system="standard" if color else None,
                      highlight=False, emoji=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def plain_table(first: str, columns: Sequence[str]):
    """A borderless `rich` table: a left-aligned first column, then right-aligned `columns`."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    table.add_column(first, justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _cell_text(cell: _Cell | None) -> tuple[str, str]:
    """(text, rich style) of one grid cell; the torch column shows ``ref`` where it has no error."""
    if cell is None:
        return "-", "dim"
    if cell.state == "error":
        return "ERROR", "bold red"
    if cell.state == "fail":
        return "FAIL", "bold red"
    return (f"{cell.worst:.1e}" if cell.worst is not None else "ref"), "green"


def _grid_table(report: ArtifactReport):
    from rich.text import Text

    cells = _grid(report)
    table = plain_table("case", report.runtimes)
    for case in report.cases:
        table.add_row(case, *(Text(*_cell_text(cells.get((runtime, case)))) for runtime in report.runtimes))
    return table


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
        lines.extend("  " + line for line in render(_grid_table(report), color=color).splitlines())
        lines.extend(paint(f"  {note}", _RED if note.startswith(("ERROR", "FAIL", "LOCATED")) else _DIM)
                     for note in _notes(report))
        lines.append("")
    total = len(reports)
    bad = sum(not r.passed for r in reports)
    lines.append(f"{total - bad} of {total} artifact(s) passed" + (f", {bad} failed" if bad else "")
                 + f" (cells: worst max abs error against {_checked_against(reports)})")
    return "\n".join(lines)


def _checked_against(reports: Sequence[ArtifactReport]) -> str:
    """What the cells' errors were measured against: streaming only where a streaming check ran."""
    if any(c.against == "streaming" for report in reports for c in report.comparisons):
        return "torch, golden data and chunked streaming"
    return "torch and golden data"


def _notes(report: ArtifactReport) -> list[str]:
    """What the grid cannot show: the report's notes (e.g. no eager reference), skipped runtimes,
    left-out and unchecked cases ('-'), errors, failures and where they start, one line each, in
    that order."""
    notes = [*report.notes, *(f"skipped {runtime}: {reason}" for runtime, reason in report.skipped.items())]
    for runtime in dict.fromkeys(x["runtime"] for x in report.left_out):
        mine = [x for x in report.left_out if x["runtime"] == runtime]
        notes.append(f"{runtime}: {len(mine)} case(s) left out ('-'): {mine[0]['reason']}")
    notes += _unchecked(report, _grid(report))
    notes += [f"ERROR {e.artifact} | {e.runtime} | {e.case or 'load'}: {e.message}" for e in report.errors]
    notes += [f"FAIL {describe_failure(c)}" for c in report.failures]
    notes += [f"LOCATED {describe_localization(report.artifact, loc)}" for loc in report.localizations]
    return notes


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
        properties = ET.SubElement(suite, "properties")  # what was applied, and where it came from
        ET.SubElement(properties, "property", name="tolerance", value=json.dumps(report.tolerance, sort_keys=True))
        for note in (n for n in report.notes if n.startswith(("tolerance ", "the manifest asks"))):
            ET.SubElement(properties, "property", name="tolerance_note", value=note)
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
        for error in (e for e in report.errors if e.runtime not in report.runtimes):  # checks of no runtime
            testcase = ET.SubElement(suite, "testcase", classname=f"rnnexport.{report.artifact}.{error.runtime}",
                                     name=error.case or "all")
            ET.SubElement(testcase, "error", message=error.message[:200]).text = error.message
            errored += 1
        for runtime, reason in report.skipped.items():
            testcase = ET.SubElement(suite, "testcase", classname=f"rnnexport.{report.artifact}.{runtime}", name="all")
            ET.SubElement(testcase, "skipped", message=reason)
            skipped += 1
        suite.set("failures", str(failed))
        suite.set("errors", str(errored))
        suite.set("skipped", str(skipped))
    ET.ElementTree(suites).write(str(path), encoding="utf-8", xml_declaration=True)


_HTML_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#106b10;font-weight:bold}"
    ".fail{color:#b00;font-weight:bold}.skip{color:#777}.ok{background:#c6efce}.near{background:#ffeb9c}"
    ".bad{background:#f4a0a0}.err{background:#b00;color:#fff}.ref{color:#555}li{margin:2px 0;font-family:monospace}"
    ".legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #ccc}"
    "svg{background:#fff;border:1px solid #ddd}svg text{font:11px system-ui,sans-serif}"
)
# A passing error up to this fraction of the tolerance is "well within it" (green); above it,
# up to the tolerance, "close" (yellow); at or above the tolerance the check fails (red).
_NEAR = 0.1
# The error-per-step plot: the atol line is red; no runtime's line is (nor pink), and each also
# has its own dash pattern, so lines that run together stay apart.
_ATOL_COLOR = "#b00"
_PLOT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#7f7f7f", "#bcbd22")
_PLOT_DASHES = ("", "8 3", "2 3", "10 3 2 3", "4 4", "1 3", "12 4", "6 2 2 2")


def _html_cell(cell: _Cell | None) -> str:
    if cell is None:
        return "<td class='skip' title='left out: see the notes below'>-</td>"
    if cell.state == "error":
        return "<td class='err' title='runtime error: see the notes below'>ERROR</td>"
    if cell.state == "fail":
        text = "FAIL" + (f" {cell.worst:.1e}" if cell.worst is not None else "")
        spread = f"; {html.escape(cell.spread)}" if cell.spread else ""
        return f"<td class='bad' title='outside the tolerance{spread}'>{text}</td>"
    if cell.worst is None:
        return "<td class='ref' title='the reference'>ref</td>"
    css = "ok" if cell.worst <= _NEAR * cell.atol else "near"
    spread = f"; {html.escape(cell.spread)}" if cell.spread else ""
    return f"<td class='{css}' title='{cell.worst / cell.atol:.2g} x atol{spread}'>{cell.worst:.1e}</td>"


def _plot_groups(series: dict[str, list[float]]) -> list[tuple[list[str], list[float]]]:
    """Runtimes whose errors are equal at every step, as one line: (names, errors), in order."""
    groups: list[tuple[list[str], list[float]]] = []
    for name, errors in series.items():
        same = next((names for names, other in groups if other == errors), None)
        if same is None:
            groups.append(([name], errors))
        else:
            same.append(name)
    return groups


def _plot_label(names: list[str], errors: list[float]) -> str:
    if not any(errors):
        return f"{', '.join(names)}: 0 at every step (identical to torch)"
    return names[0] + (f" (identical: {', '.join(names[1:])})" if names[1:] else "")


def _svg_error_over_time(report: ArtifactReport, atol: float) -> str:
    """Inline SVG: max abs error of ``output`` against torch at each time step of the longest
    case, log scale, with atol drawn for scale; exact steps sit on the floor (1e-9). Runtimes
    with the same error at every step share one line and one legend entry, which says so; each
    line has its own colour (none the atol line's red) and dash pattern. The legend sits below
    the plot and the atol label alone in the right margin, so no text overlaps another."""
    series = {name: entry["errors"] for name, entry in report.error_over_time.items() if entry.get("errors")}
    if not series:
        return ""
    case = next(iter(report.error_over_time.values()))["case"]
    groups = _plot_groups(series)
    width, left, right, top, plot_height = 720, 78, 96, 16, 200
    bottom = top + plot_height  # the x axis
    height = bottom + 58 + 16 * len(groups)
    floor = 1e-9
    steps = max(len(v) for v in series.values())
    top_value = max([atol, 10 * floor, *(e for v in series.values() for e in v if math.isfinite(e))])
    low, high = math.log10(floor), math.ceil(math.log10(top_value))

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(steps - 1, 1))

    def y(value: float) -> float:
        value = min(max(value, floor), 10 ** high) if math.isfinite(value) else 10 ** high
        return top + plot_height * (high - math.log10(value)) / (high - low)

    esc = html.escape
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='max abs error vs torch per time step, {esc(case)}'>"]
    every = 1 if high - low <= 6 else 2  # a labelled line per decade, or per two: the top one and the floor
    for exponent in sorted({*range(int(high), int(low), -every), int(low)}):
        label = "\u22641e-9" if exponent == low else f"1e{exponent}"  # exact steps are drawn at the floor
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(10 ** exponent):.1f}' y2='{y(10 ** exponent):.1f}' "
                     "stroke='#eee'/>")
        parts.append(f"<text x='{left - 6}' y='{y(10 ** exponent) + 4:.1f}' text-anchor='end'>{label}</text>")
    parts.append(f"<text transform='rotate(-90)' x='{-(top + plot_height / 2):.1f}' y='14' text-anchor='middle'>"
                 "max abs error vs torch</text>")
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{bottom}' y2='{bottom}' stroke='#999'/>")
    for t, anchor in {0: "start", steps - 1: "end"}.items():  # inside the plot's width: clear of the atol label
        parts.append(f"<text x='{x(t):.1f}' y='{bottom + 14}' text-anchor='{anchor}'>{t}</text>")
    window = max(1, math.ceil(steps / 240))  # at most 240 points a line: each the max of its window
    binned = f", max over every {window} steps" if window > 1 else ""
    parts.append(f"<text x='{(left + width - right) / 2}' y='{bottom + 30}' text-anchor='middle'>time step "
                 f"(0..{steps - 1}) of {esc(case)}{binned}</text>")
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(atol):.1f}' y2='{y(atol):.1f}' stroke='{_ATOL_COLOR}' "
                 f"stroke-dasharray='4 3'/><text x='{width - right + 4}' y='{y(atol) + 4:.1f}' "
                 f"fill='{_ATOL_COLOR}'>atol {atol:g}</text>")
    for i, (names, errors) in enumerate(groups):
        color, dash = _PLOT_COLORS[i % len(_PLOT_COLORS)], _PLOT_DASHES[i % len(_PLOT_DASHES)]
        style = f"fill='none' stroke='{color}' stroke-width='2'" + (f" stroke-dasharray='{dash}'" if dash else "")
        points = " ".join(f"{x(t):.1f},{y(max(errors[t:t + window])):.1f}" for t in range(0, len(errors), window))
        parts.append(f"<polyline {style} points='{points}'><title>{esc(', '.join(names))}</title></polyline>")
        row = bottom + 54 + 16 * i
        parts.append(f"<line {style} x1='{left}' x2='{left + 28}' y1='{row - 4}' y2='{row - 4}'/>"
                     f"<text x='{left + 36}' y='{row}' class='series'>{esc(_plot_label(names, errors))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def write_html(reports: Sequence[ArtifactReport], path: str | Path) -> None:
    """A self-contained page (inline CSS and SVG, no scripts, nothing fetched): a legend, a
    summary table, and per artifact a heatmap of the worst error per case x runtime coloured by
    its ratio to the tolerance, the notes the heatmap cannot show, and a plot of the error per
    time step on the longest case."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rnnexport validation</title>",
             f"<style>{_HTML_STYLE}</style></head><body><h1>rnnexport validation</h1>"]
    total_bad = sum(not r.passed for r in reports)
    verdict = "<span class='pass'>all passed</span>" if not total_bad else f"<span class='fail'>{total_bad} failed</span>"
    parts.append(f"<p>{len(reports)} artifact(s): {verdict}</p>")
    parts.append("<p class='legend'>Cells: worst max abs error of the runtime on the case, against "
                 f"{esc(_checked_against(reports))}. <span class='ok'>within {_NEAR:g} x atol</span>"
                 "<span class='near'>close to atol</span><span class='bad'>FAIL: outside the tolerance</span>"
                 "<span class='err'>ERROR</span><span class='ref'>ref: the reference</span>"
                 "<span class='skip'>- left out (see notes)</span></p>")
    lines = dict.fromkeys(versions_line(r) for r in reports)
    for line in lines:
        parts.append(f"<p class='skip'>{esc(line)}</p>")
    parts.append("<table><tr><th class='l'>artifact</th><th class='l'>result</th><th class='l'>runtimes</th></tr>")
    for report in reports:
        status = "<span class='pass'>PASS</span>" if report.passed else "<span class='fail'>FAIL</span>"
        runtimes = ", ".join(f"{esc(name)}: {esc(entry['status'])}" for name, entry in report.runtime_summary().items())
        parts.append(f"<tr><td class='l'><a href='#{esc(report.artifact)}'>{esc(report.artifact)}</a></td>"
                     f"<td class='l'>{status}</td><td class='l'>{runtimes}</td></tr>")
    parts.append("</table>")
    for report in reports:
        cells = _grid(report)
        atol = min((c.atol for c in report.comparisons), default=1e-5)
        parts.append(f"<h2 id='{esc(report.artifact)}'>{esc(report.artifact)}</h2><p class='skip'>{esc(report.path)}</p>")
        parts.append("<table><tr><th class='l'>case</th>" + "".join(f"<th>{esc(r)}</th>" for r in report.runtimes) + "</tr>")
        for case in report.cases:
            row = "".join(_html_cell(cells.get((runtime, case))) for runtime in report.runtimes)
            parts.append(f"<tr><td class='l'>{esc(case)}</td>{row}</tr>")
        parts.append("</table>")
        notes = _notes(report)
        if "not_applicable" in report.streaming:
            notes.insert(0, f"streaming check not applicable: {report.streaming['not_applicable']}")
        elif report.streaming.get("chunks"):
            chunks = "; ".join(f"{case} in chunks {chunks}" for case, chunks in report.streaming["chunks"].items())
            notes.insert(0, f"streaming check: {chunks}")
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        plot = _svg_error_over_time(report, atol)
        if plot:
            parts.append("<h3>Error per time step</h3><p class='skip'>Does error accumulate along the sequence? Max "
                         "abs error of <code>output</code> against torch at each step of the longest case.</p>" + plot)
    parts.append("</body></html>\n")
    Path(path).write_text("".join(parts), encoding="utf-8")


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
