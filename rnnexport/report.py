"""Reports for people and CI: the terminal table and progress bar, JSON (schema
``rnnexport.validation/1``). JUnit XML (`rnnexport.report_junit`) and HTML
(`rnnexport.report_html`) have modules of their own, their names re-exported here, as are the
one-line descriptions of `rnnexport.report_grid`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnexport.report_grid import (GridCell, criteria_grid, checked_against, describe_failure, describe_localization, grid_cells,
                                   report_notes, versions_line)
from rnnexport.report_html import write_html
from rnnexport.report_junit import write_junit
from rnnexport.results import ArtifactReport

__all__ = [
    "JSON_SCHEMA", "Progress", "describe_failure", "describe_localization", "format_table", "plain_table", "render",
    "report_json", "versions_line", "write_html", "write_json_report", "write_junit",
]

JSON_SCHEMA = "rnnexport.validation/1"
_GREEN, _RED, _DIM, _RESET = "\033[32m", "\033[31m", "\033[2m", "\033[0m"


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


def _cell_text(cell: GridCell | None) -> tuple[str, str]:
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

    cells = grid_cells(report)
    table = plain_table("case", report.runtimes)
    for case in report.cases:
        table.add_row(case, *(Text(*_cell_text(cells.get((runtime, case)))) for runtime in report.runtimes))
    return table


def _criteria_table(report: ArtifactReport):
    from rich.text import Text

    columns, rows = criteria_grid(report)
    table = plain_table("acceptance criteria", columns)
    for runtime, results in rows:
        table.add_row(runtime, *(Text("-", "dim") if r is None else
                                 Text(f"{r.value:.4g}" + ("" if r.passed else " FAIL"),
                                      "bold red" if r.failed else ("green" if r.judged else "dim"))
                                 for r in results))
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
        if report.criteria:
            lines.extend("  " + line for line in render(_criteria_table(report), color=color).splitlines())
        lines.extend(paint(f"  {note}", _RED if note.startswith(("ERROR", "FAIL", "LOCATED")) else _DIM)
                     for note in report_notes(report))
        lines.append("")
    total = len(reports)
    bad = sum(not r.passed for r in reports)
    lines.append(f"{total - bad} of {total} artifact(s) passed" + (f", {bad} failed" if bad else "")
                 + f" (cells: worst max abs error against {checked_against(reports)})")
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
