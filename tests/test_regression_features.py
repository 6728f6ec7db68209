"""Regression-testing features: streaming check, mismatch localization, reports, progress."""

from __future__ import annotations

import io
import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rnnexport.inputs import Case
from rnnexport.report import Progress, format_table, versions_line, write_html
from rnnexport.validate import localize, streaming_cases, validate_artifact
from tests.conftest import MODELS, mutate_onnx, perturb_weight, rnn_weights, set_array

ZERO_ONLY = [Case.rnn(3, 17, "zero")]


def reverse_h0_layers(model) -> None:
    """Feed h_0's layers in reverse order to the RNN nodes (a state-layout bug)."""
    graph = model.graph
    reversed_name = "h_0_layers_reversed"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "rev_starts"),
        numpy_helper.from_array(np.array([-(2**62)], np.int64), "rev_ends"),
        numpy_helper.from_array(np.array([0], np.int64), "rev_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "rev_steps"),
    ])
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "h_0":
                node.input[i] = reversed_name
    graph.node.insert(0, helper.make_node("Slice", ["h_0", "rev_starts", "rev_ends", "rev_axes", "rev_steps"],
                                          [reversed_name]))


def test_streaming_check_catches_wrong_state_layout(artifact_copy):
    folder = artifact_copy("deep")
    mutate_onnx(folder, reverse_h0_layers)
    onnx.checker.check_model(onnx.load(str(folder / "model.onnx")), full_check=True)
    # With a zero h_0 every full run is right: only the streaming check can see the bug.
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=ZERO_ONLY)
    full_run_failures = [c for c in report.failures if c.case == "b3xs17-h0zero" and c.against != "streaming"]
    assert not full_run_failures
    streaming = [c for c in report.failures if c.against == "streaming"]
    assert {(c.runtime, c.case, c.output) for c in streaming} >= {("onnxruntime-cpu", "b3xs17-h0zero", "output"),
                                                                  ("onnxruntime-cpu", "b3xs17-h0zero", "h_n")}


def test_streaming_passes_on_every_runtime_for_unidirectional_models():
    report = validate_artifact(MODELS / "seq_first", cases=ZERO_ONLY)
    assert report.passed
    runs = {c.runtime for c in report.comparisons if c.against == "streaming"}
    assert runs == set(report.runtimes)
    assert report.streaming["chunks"]["b3xs17-h0zero"] == [5, 1, 11]


def test_streaming_not_applicable_to_bidirectional():
    from rnnexport.spec import get_spec

    assert streaming_cases(get_spec("deep_bidirectional")) == []
    report = validate_artifact(MODELS / "deep_bidirectional", runtimes=["onnxruntime-cpu"], cases=ZERO_ONLY)
    assert "not_applicable" in report.streaming
    assert "streaming check not applicable" in format_table([report])


@pytest.mark.parametrize(("layer", "slot", "direction"), [(0, "W", 1), (1, "R", 0), (2, "B", 1), (1, "W", 1)])
def test_localization_names_the_perturbed_layer_and_direction(artifact_copy, layer, slot, direction):
    folder = artifact_copy("deep_bidirectional")
    perturb_weight(folder, layer, slot, (direction, 0) if slot == "B" else (direction, 0, 0), 0.2)
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=[Case.rnn(3, 17, "random")])
    located = {(loc["case"], loc["layer"], loc["direction"]) for loc in report.localizations}
    name = "reverse" if direction else "forward"
    assert ("b3xs17-h0random", layer, name) in located
    assert all((loc["layer"], loc["direction"]) == (layer, name) for loc in report.localizations)
    assert f"first divergence at layer {layer} {name}" in format_table([report])


def test_localize_returns_none_when_states_agree():
    from rnnexport.compare import Tolerance
    from rnnexport.spec import get_spec

    h = np.random.default_rng(0).standard_normal((6, 3, 8)).astype(np.float32)
    assert localize(get_spec("deep_bidirectional"), h, h.copy(), Tolerance()) is None


def test_html_report_is_self_contained(tmp_path, artifact_copy):
    folder = artifact_copy("deep")
    mutate_onnx(folder, lambda m: set_array(rnn_weights(m, 0)["W"], numpy_helper.to_array(rnn_weights(m, 0)["W"]) * 1.1))
    reports = [validate_artifact(MODELS / "seq_first", cases=ZERO_ONLY),
               validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=ZERO_ONLY)]
    write_html(reports, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", page), "external resource in the page"
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "seq_first" in page and "FAIL deep | onnxruntime-cpu" in page
    for tag in ("table", "tr", "ul", "h2", "svg"):
        assert page.count(f"<{tag}") == page.count(f"</{tag}>"), tag
    # Colours by the ratio to the tolerance, the legend before the first table, notes for '-'.
    assert "class='ok'" in page and "class='bad'" in page and page.index("class='legend'") < page.index("<table")
    assert page.count("golden data made with") == 1
    assert "streaming check: b3xs17-h0zero in chunks [5, 1, 11]" in page
    # One error-over-time plot per artifact, each runtime compared with torch on one line (runtimes
    # with equal errors at every step share a line, titled with all their names).
    titles = re.findall(r"<polyline [^>]*><title>([^<]*)</title>", page)
    assert page.count("<svg") == 2 and sorted(name for title in titles for name in title.split(", ")) == sorted(
        [*reports[0].error_over_time, *reports[1].error_over_time])


def test_html_notes_explain_left_out_cells(tmp_path):
    report = validate_artifact(MODELS / "deep", runtimes=["onnx-reference"], cases=[Case.rnn(2, 1000, "zero")])
    write_html([report], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<td class='skip'" in page and "onnx-reference: 1 case(s) left out" in page
    # torch on a case without golden data is the reference itself: "ref", not an error of 0.
    assert "<td class='l'>b2xs1000-h0zero</td><td class='ref' title='the reference'>ref</td>" in page


def test_error_over_time_is_per_step_on_the_longest_case():
    report = validate_artifact(MODELS / "seq_first", runtimes=["onnxruntime-cpu"],
                               cases=[Case.rnn(3, 17, "zero"), Case.rnn(2, 40, "random")])
    entry = report.error_over_time["onnxruntime-cpu"]
    assert entry["case"] == "b2xs40-h0random" and len(entry["errors"]) == 40
    assert 0 < max(entry["errors"]) < 1e-5


def test_cli_html_and_versions(cli, tmp_path):
    code, out, _ = cli("validate", MODELS / "single_layer", "--cases", "3x17", "--html", tmp_path / "r.html")
    assert code == 0 and (tmp_path / "r.html").exists()
    assert "golden data made with" in out


def test_versions_line_states_both_when_they_differ():
    report = validate_artifact(MODELS / "single_layer", runtimes=["onnxruntime-cpu"], cases=ZERO_ONLY)
    report.golden_versions = {**report.golden_versions, "torch": "2.12.0"}
    line = versions_line(report)
    assert "golden data made with torch 2.12.0" in line and f"running torch {report.current_versions['torch']}" in line


def test_progress_is_quiet_off_a_terminal_and_draws_on_one():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet, loud = io.StringIO(), Tty()
    for stream in (quiet, loud):
        progress = Progress(stream=stream)
        progress.plan(4)
        for i in range(4):
            progress("deep", "onnxruntime-cpu", f"case{i}")
        progress.close()
    assert quiet.getvalue() == ""
    assert "4/4" in loud.getvalue() and "━" in loud.getvalue()


@pytest.mark.parametrize("case_args", [[], ["--cases", "3x17,2x2000"]], ids=["sweep", "left-out-cases"])
def test_progress_total_is_exactly_the_steps_run(case_args, artifact_copy):
    """The bar's total comes from `planned_steps`: left-out cases (onnx-reference's size limit),
    runtimes that cannot run the artifact and runtimes that fail to load all end at the total."""
    from rnnexport.validate import validate_paths

    folder = artifact_copy("deep")
    (folder / "model.pt").write_bytes(b"not torchscript")  # torchscript and libtorch-cpp fail to load
    from tests.conftest import restamp

    restamp(folder, "model.pt")
    seen: list[tuple[str, str, str]] = []
    planned: list[int] = []
    cases = None if not case_args else [Case.parse(c) for c in case_args[1].split(",")]
    validate_paths([folder, MODELS / "seq_first"], cases=cases, on_step=lambda *s: seen.append(s),
                   on_plan=planned.append)
    assert planned == [len(seen)] and len(seen) > 0
