"""The terminal table and the HTML page say what each cell means (issue 20, item 7): a '-' always
has a note, the footer names streaming only when a streaming check ran, and the error plot keeps
every runtime's line, its label and the tolerance apart."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from rnnexport.report import format_table, write_html
from rnnexport.report_html import _svg_error_over_time
from rnnexport.validate import ArtifactReport, validate_artifact
from tests.conftest import MODELS

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def text_classifier():
    """A model spec without state: the eager reference has golden data on 2 of its 9 cases."""
    return validate_artifact(MODELS / "text_classifier", runtimes=["onnxruntime-cpu"])


def _grid(table: str, report: ArtifactReport) -> dict[tuple[str, str], str]:
    """The cells of the terminal grid, by (runtime, case)."""
    rows = [line.split() for line in table.splitlines()]
    return {(runtime, row[0]): cell for row in rows if row and row[0] in report.cases
            for runtime, cell in zip(report.runtimes, row[1:], strict=True)}


def _unexplained(table: str, report: ArtifactReport) -> list[str]:
    """Runtimes whose column shows '-' without a note naming them and the '-'."""
    dashes = {runtime for (runtime, _), cell in _grid(table, report).items() if cell == "-"}
    return sorted(r for r in dashes if not re.search(rf"^  {re.escape(r)}: .*\('-'\)", table, re.MULTILINE))


def test_the_reference_column_says_ref_where_it_ran_and_why_not_elsewhere(text_classifier):
    """7a: torch ran every case (onnxruntime-cpu was compared with it) but has golden data on
    three: 'ref' on the others, not an unexplained '-'."""
    table = format_table([text_classifier])
    cells = _grid(table, text_classifier)
    golden = {c.case for c in text_classifier.comparisons if c.against == "golden"}
    assert len(golden) == 3 and len(text_classifier.cases) == 10  # the held-out data is a golden case
    assert {cells[("torch", case)] for case in text_classifier.cases if case not in golden} == {"ref"}
    assert _unexplained(table, text_classifier) == []

    alone = validate_artifact(MODELS / "text_classifier", runtimes=["torch"])  # nothing compared with torch
    table = format_table([alone])
    assert list(_grid(table, alone).values()).count("-") == 7
    assert _unexplained(table, alone) == []
    assert "torch: 7 case(s) not checked ('-'): the eager reference is checked against the golden data" in table


def test_the_footer_and_legend_name_streaming_only_when_it_ran(text_classifier, tmp_path):
    """7c: 'chunked streaming' in the footer and the HTML legend only where a streaming check ran."""
    from rnnexport.inputs import Case

    assert "not_applicable" in text_classifier.streaming
    assert format_table([text_classifier]).endswith("(cells: worst max abs error against torch and golden data)")
    write_html([text_classifier], tmp_path / "r.html")
    legend = re.search(r"<p class='legend'>(.*?)</p>", (tmp_path / "r.html").read_text()).group(1)
    assert "against torch and golden data." in legend and "streaming" not in legend

    streamed = validate_artifact(MODELS / "seq_first", cases=[Case.rnn(3, 17, "zero")], runtimes=["onnxruntime-cpu"])
    assert any(c.against == "streaming" for c in streamed.comparisons)
    assert format_table([streamed, text_classifier]).endswith(
        "(cells: worst max abs error against torch, golden data and chunked streaming)")
    write_html([streamed], tmp_path / "s.html")
    assert "against torch, golden data and chunked streaming." in (tmp_path / "s.html").read_text()


def _plot(error_over_time: dict, atol: float) -> ET.Element:
    report = ArtifactReport(artifact="a", path="a", runtimes=["torch", *error_over_time], skipped={}, cases=["b2xs5-h0random"],
                            error_over_time={k: {"case": "b2xs5-h0random", "errors": v} for k, v in error_over_time.items()})
    return ET.fromstring(_svg_error_over_time(report, atol))


def test_error_plot_lines_are_told_apart_and_labelled():
    """7e: equal series share one line and say so (exact ones: 'identical to torch'), no line is
    the atol line's red or another line's colour and dash, the axes and the tolerance are labelled."""
    ort = [2e-7, 3e-7, 1e-7, 0.0, 2.5e-7]
    svg = _plot({"torchscript": [0.0] * 5, "torch-export": [0.0] * 5, "onnxruntime-cpu": ort,
                           "onnxruntime-node": list(ort), "onnx-reference": [1e-7, 2e-7, 2e-7, 1e-7, 1e-7]}, 2e-7)
    texts = ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]
    legend = [t for t in texts if "torch" in t or "onnx" in t]
    assert legend == ["max abs error vs torch", "torchscript, torch-export: 0 at every step (identical to torch)",
                      "onnxruntime-cpu (identical: onnxruntime-node)", "onnx-reference"]
    assert any(t.startswith("time step") for t in texts) and "atol 2e-07" in texts
    atol = next(line.get("stroke") for line in svg.iter(f"{SVG}line") if line.get("stroke-dasharray") == "4 3")
    lines = [(p.get("stroke"), p.get("stroke-dasharray")) for p in svg.iter(f"{SVG}polyline")]
    assert len(lines) == 3 and len(set(lines)) == 3 and len({stroke for stroke, _ in lines}) == 3
    assert atol not in {stroke for stroke, _ in lines}
    reds = [s for s, _ in lines if int(s[1:3], 16) > 0xA0 and int(s[3:5], 16) < 0x60 and int(s[5:7], 16) < 0x60]
    assert reds == [], "a runtime's line is red, the atol line's colour"


def test_each_heatmap_cell_gives_the_spread_of_its_worst_output(text_classifier, tmp_path):
    write_html([text_classifier], tmp_path / "r.html")
    heatmap = (tmp_path / "r.html").read_text().split("<h3>Acceptance criteria")[0]  # the int8 variant's table after it
    titles = re.findall(r"<td class='(?:ok|near|bad)' title='([^']*)'", heatmap)
    assert titles and all(re.search(r"vs \w+: mean \S+, median \S+, p99 \S+, max \S+$", t) for t in titles), titles[:3]
