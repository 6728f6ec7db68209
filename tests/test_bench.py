from __future__ import annotations

import json

import pytest

from rnnexport.artifacts import open_artifact
from rnnexport.bench import FLOOR, bench_artifact, format_bench
from rnnexport.inputs import Case
from tests.conftest import MODELS


def test_bench_measures_every_runtime_with_ratios_from_one_run():
    report = bench_artifact(open_artifact(MODELS / "single_layer"), runtimes=["onnxruntime-cpu", "torchscript"],
                            cases=[Case.rnn(3, 17), Case.rnn(1, 50)], warmup=1, repeat=3)
    by = {(r.runtime, r.shape): r for r in report.results}
    assert set(by) == {(rt, s) for rt in ("torch", "onnxruntime-cpu", "torchscript", FLOOR) for s in ("3x17", "1x50")}
    for (runtime, shape), result in by.items():
        assert result.median_ms > 0
        assert result.ratio_to_torch == result.median_ms / by[("torch", shape)].median_ms
    text = format_bench([report])
    assert "(1.00x)" in text and FLOOR in text and "1 thread(s)" in text


def test_bench_cli_json(cli, tmp_path):
    code, out, err = cli("bench", MODELS / "seq_first", "--runtimes", "onnxruntime-cpu", "--shapes", "2x9",
                         "--repeat", "2", "--warmup", "0", "--json", tmp_path / "b.json")
    assert code == 0, err
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["schema"] == "rnnexport.bench/1"
    results = data["artifacts"][0]["results"]
    assert {r["runtime"] for r in results} == {"torch", "onnxruntime-cpu", FLOOR}
    assert "onnxruntime-cpu" in out and "x)" in out


def test_bench_bad_arguments(cli):
    code, _, err = cli("bench", MODELS / "deep", "--repeat", "0")
    assert code == 2 and "repeat must be an integer >= 1, got 0" in err
    code, _, err = cli("bench", "no_such_artifact")
    assert code == 2 and "no such artifact folder, built-in name or spec file" in err


def test_bench_api_checks_its_arguments():
    from rnnexport.errors import UsageError

    for kwargs in ({"repeat": 0}, {"warmup": -1}, {"threads": 0}, {"repeat": 2.5}):
        with pytest.raises(UsageError, match="must be an integer"):
            bench_artifact(open_artifact(MODELS / "deep"), **kwargs)


def test_bench_a_name_outside_the_repository_exports_it(tmp_path, monkeypatch, cli):
    """`rnnexport bench deep` from a folder without models/: exported to a temporary folder."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("bench", "single_layer", "--runtimes", "onnxruntime-cpu,onnx-reference",
                         "--shapes", "2x5,2x1000", "--repeat", "2", "--warmup", "0")
    assert code == 0, err
    assert "single_layer: median ms" in out
    assert "- onnx-reference at 2x1000 not measured: onnx-reference runs cases up to batch*seq=1000" in out
    assert "not measured onnx-reference" not in out  # it was measured at 2x5
    assert list(tmp_path.iterdir()) == []


def test_bench_skips_runtimes_whose_file_the_artifact_lacks(tmp_path):
    from rnnexport.export import export_spec
    from rnnexport.spec import RNNSpec

    spec = RNNSpec("proj", cell="lstm", input_size=3, hidden_size=6, proj_size=2)
    artifact = open_artifact(export_spec(spec, tmp_path, validate=False).path)  # no model.onnx
    report = bench_artifact(artifact, cases=[Case.rnn(2, 5)], warmup=0, repeat=2)
    assert not report.errors
    assert report.skipped["onnxruntime-cpu"].startswith("artifact has no model.onnx (not made: proj: no model.onnx")
    assert {r.runtime for r in report.results} >= {"torch", "torchscript"}


def test_bench_times_variants_side_by_side(cli, tmp_path):
    """text_classifier ships an int8 variant: it is timed as its own row, and the side-by-side
    table gives its size, latency against the same runtime's fp32 and the criteria validated at
    export; --json adds p90, p99 and throughput; --html writes the table."""
    code, out, err = cli("bench", MODELS / "text_classifier", "--runtimes", "onnxruntime-cpu", "--repeat", "5",
                         "--warmup", "1", "--json", tmp_path / "b.json", "--html", tmp_path / "b.html")
    assert code == 0, err
    artifact = json.loads((tmp_path / "b.json").read_text())["artifacts"][0]
    rows = {r["runtime"] for r in artifact["results"]}
    assert {"onnxruntime-cpu", "onnxruntime-cpu:int8"} <= rows
    for r in artifact["results"]:
        if r["runtime"] != FLOOR:
            assert r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_per_s"] == 1e3 / r["median_ms"]
    fp32, int8 = artifact["variants"]
    manifest = json.loads((MODELS / "text_classifier" / "manifest.json").read_text())
    assert (fp32["variant"], int8["variant"]) == ("fp32", "int8")
    assert int8["bytes"] == manifest["files"]["model.int8.onnx"]["bytes"]
    assert int8["size_ratio"] == manifest["files"]["model.int8.onnx"]["bytes"] / manifest["files"]["model.onnx"]["bytes"]
    cpu = int8["latency"]["onnxruntime-cpu"]
    assert cpu["ratio_to_fp32"] == cpu["median_ms"] / fp32["latency"]["onnxruntime-cpu"]["median_ms"]
    assert int8["criteria"] == manifest["validation"]["runtimes"]["onnxruntime-cpu:int8"]["criteria"]
    assert "variants at batch=8,seq=24" in out and "model.int8.onnx" in out and "logits.argmax" in out
    page = (tmp_path / "b.html").read_text()
    assert "Variants side by side" in page and "model.int8.onnx" in page


def test_bench_has_no_variant_table_without_variants():
    report = bench_artifact(open_artifact(MODELS / "single_layer"), runtimes=["onnxruntime-cpu"],
                            cases=[Case.rnn(2, 3)], warmup=0, repeat=2)
    assert report.variants == [] and "variants at" not in format_bench([report])
