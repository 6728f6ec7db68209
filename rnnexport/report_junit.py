"""JUnit XML reports: one testsuite per artifact, one testcase per runtime x case."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from rnnexport.compare import passed
from rnnexport.report_grid import describe_failure, report_rows
from rnnexport.results import ArtifactReport

__all__ = ["write_junit"]


def write_junit(reports: Sequence[ArtifactReport], path: str | Path) -> None:
    """JUnit XML: one testsuite per artifact, one testcase per runtime x case."""
    suites = ET.Element("testsuites", name="rnnexport")
    for report in reports:
        rows = report_rows(report)
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
