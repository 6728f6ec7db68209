"""Reports for people and CI: terminal table, JSON (schema ``rnnexport.validation/1``), JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnexport.compare import Comparison, passed
from rnnexport.validate import ArtifactReport

__all__ = ["JSON_SCHEMA", "describe_failure", "format_table", "report_json", "write_json_report", "write_junit"]

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


def _rows(report: ArtifactReport) -> list[tuple[str, str, list[Comparison], list[str]]]:
    rows = []
    for runtime in report.runtimes:
        for case in report.cases:
            records = [c for c in report.comparisons if c.runtime == runtime and c.case == case]
            errors = [e.message for e in report.errors if e.runtime == runtime and e.case in (case, None)]
            if records or errors:
                rows.append((runtime, case, records, errors))
    return rows


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
        cells = {(runtime, case): (records, errors) for runtime, case, records, errors in _rows(report)}
        width = max(12, *(len(r) + 2 for r in report.runtimes))
        lines.append(f"  {'case':<20}" + "".join(f"{r:>{width}}" for r in report.runtimes))
        for case in report.cases:
            row = f"  {case:<20}"
            for runtime in report.runtimes:
                records, errors = cells.get((runtime, case), ([], []))
                values = [c.max_abs_error for c in records if c.against != "invariant" and c.max_abs_error is not None]
                if errors:
                    text, code = "ERROR", _RED
                elif any(not passed(c) for c in records):
                    text, code = "FAIL", _RED
                elif not records:
                    text, code = "-", _DIM
                else:
                    text, code = (f"{max(values):.1e}" if values else "ref"), _GREEN
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
        lines.append("")
    total = len(reports)
    bad = sum(not r.passed for r in reports)
    lines.append(f"{total - bad} of {total} artifact(s) passed" + (f", {bad} failed" if bad else "")
                 + " (cells: worst max abs error against torch and golden data)")
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
