"""The HTML report (`write_html`): a self-contained page with a heatmap per artifact and an
inline SVG plot of the error per time step."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from rnnexport.report_grid import GridCell, checked_against, criteria_grid, grid_cells, report_notes, versions_line
from rnnexport.results import ArtifactReport

__all__ = ["write_html"]

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


def _html_cell(cell: GridCell | None) -> str:
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
    if not cell.judged:
        spread = f"; {html.escape(cell.spread)}" if cell.spread else ""
        return f"<td class='ref' title='a variant: judged by its acceptance criteria{spread}'>{cell.worst:.1e}</td>"
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


def _criteria_html(report: ArtifactReport) -> str:
    """The acceptance criteria per runtime row: variants judged, fp32 rows for comparison."""
    esc = html.escape
    columns, rows = criteria_grid(report)
    parts = ["<h3>Acceptance criteria</h3><table><tr><th class='l'>runtime</th>"
             + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"]
    for runtime, results in rows:
        cells = []
        for r in results:
            if r is None:
                cells.append("<td class='skip'>-</td>")
                continue
            css = "bad" if r.failed else ("ok" if r.judged else "ref")
            detail = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.details.items())
            title = esc(f"{r.describe()} over {r.cases} case(s)" + (f"; {detail}" if detail else ""))
            cells.append(f"<td class='{css}' title='{title}'>{r.value:.4g}{' FAIL' if r.failed else ''}</td>")
        parts.append(f"<tr><td class='l'>{esc(runtime)}</td>{''.join(cells)}</tr>")
    return "".join(parts) + "</table>"


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
                 f"{esc(checked_against(reports))}. <span class='ok'>within {_NEAR:g} x atol</span>"
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
        cells = grid_cells(report)
        atol = min((c.atol for c in report.comparisons), default=1e-5)
        parts.append(f"<h2 id='{esc(report.artifact)}'>{esc(report.artifact)}</h2><p class='skip'>{esc(report.path)}</p>")
        parts.append("<table><tr><th class='l'>case</th>" + "".join(f"<th>{esc(r)}</th>" for r in report.runtimes) + "</tr>")
        for case in report.cases:
            row = "".join(_html_cell(cells.get((runtime, case))) for runtime in report.runtimes)
            parts.append(f"<tr><td class='l'>{esc(case)}</td>{row}</tr>")
        parts.append("</table>")
        if report.criteria:
            parts.append(_criteria_html(report))
        notes = report_notes(report)
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
