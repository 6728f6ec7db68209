"""Deployment variants (int8, fp16) judged by acceptance criteria, on the user's own evaluation
data: the committed text_classifier ships an int8 variant validated on its held-out set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexport.artifacts import MANIFEST, open_artifact
from rnnexport.criteria import Criterion, parse_criteria
from rnnexport.errors import SpecError
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS, restamp

CATALOG = Path(__file__).resolve().parents[1] / "rnnexport" / "catalog"
HELD_OUT = "data=text_classifier_heldout,batch=400,seq=24"


def test_committed_text_classifier_ships_int8_judged_on_held_out_data():
    manifest = json.loads((MODELS / "text_classifier" / MANIFEST).read_text())
    assert manifest["variants"]["int8"]["file"] == "model.int8.onnx"
    assert "com.microsoft.DynamicQuantizeLSTM" in manifest["variants"]["int8"]["ops"]
    assert manifest["files"]["model.int8.onnx"]["bytes"] < manifest["files"]["model.onnx"]["bytes"] / 2
    assert HELD_OUT in manifest["golden"]["cases"]
    report = validate_artifact(MODELS / "text_classifier", runtimes=["onnxruntime-cpu"])
    assert report.passed, report.to_json()["criteria"]
    assert HELD_OUT in report.cases and "onnxruntime-cpu:int8" in report.runtimes
    judged = {(c.output, c.criterion): c for c in report.criteria if c.runtime == "onnxruntime-cpu:int8"}
    # The spec's two, and the default a later validation adds (the manifest cannot drop it).
    assert all(c.judged for c in judged.values())
    assert set(judged) == {("logits", "argmax"), ("logits", "accuracy"), ("logits", "cosine")}
    accuracy = judged[("logits", "accuracy")]
    assert accuracy.details["examples"] == 400 and accuracy.details["reference_accuracy"] > 0.95
    # The fp32 row gets the same figures for comparison, not judged.
    assert all(not c.judged for c in report.criteria if c.runtime == "onnxruntime-cpu")


def _break_int8_weight(folder: Path) -> None:
    """Negate the largest quantized weight tensor of model.int8.onnx and re-hash it: a
    consistent artifact whose variant no longer does its job."""
    import onnx
    from onnx import numpy_helper

    path = folder / "model.int8.onnx"
    model = onnx.load(str(path))
    tensor = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8),
                 key=lambda t: np.prod(t.dims))
    array = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array((-array.astype(np.int16)).clip(-127, 127).astype(np.int8), tensor.name))
    onnx.save(model, str(path))
    restamp(folder, "model.int8.onnx")


def test_a_broken_int8_variant_fails_on_its_criterion(artifact_copy, cli):
    folder = artifact_copy("text_classifier")
    _break_int8_weight(folder)
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"])
    assert not report.passed and not report.errors and not report.failures  # the values alone: criteria judge them
    missed = {(c.runtime, c.criterion) for c in report.criteria_failures}
    assert ("onnxruntime-cpu:int8", "argmax") in missed
    # The fp32 rows still pass: only the variant is wrong.
    assert report.runtime_summary()["onnxruntime-cpu"]["status"] == "passed"
    code, out, _ = cli("validate", folder, "--runtimes", "onnxruntime-cpu")
    assert code == 1
    assert "FAIL text_classifier | onnxruntime-cpu:int8 | logits: argmax = " in out and "short" in out


def test_an_unhashed_change_to_a_variant_is_tampering(artifact_copy, cli):
    folder = artifact_copy("text_classifier")
    with open(folder / "model.int8.onnx", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    code, _, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu")
    assert code == 2 and "model.int8.onnx" in err


def test_a_manifest_without_the_variant_file_listed_is_refused(artifact_copy, cli):
    folder = artifact_copy("text_classifier")
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["model.int8.onnx"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    code, _, err = cli("validate", folder)
    assert code == 2 and "model.int8.onnx" in err and "not listed in 'files'" in err


@pytest.fixture(scope="module")
def spotter_variants(tmp_path_factory) -> Path:
    """keyword_spotter (Conv1d -> GRU with state -> Linear) with both variants, unvalidated."""
    from rnnexport.export import export_spec
    from rnnexport.spec import get_spec

    out = tmp_path_factory.mktemp("variants")
    return export_spec(get_spec("keyword_spotter"), out, variants="int8,fp16", validate=False).path


def test_variants_are_deterministic_and_hashed(spotter_variants, tmp_path):
    from rnnexport.export import export_spec
    from rnnexport.spec import get_spec

    again = export_spec(get_spec("keyword_spotter"), tmp_path, variants=["fp16", "int8"], validate=False).path
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        assert (again / name).read_bytes() == (spotter_variants / name).read_bytes(), name
    manifest = open_artifact(spotter_variants).manifest
    assert set(manifest["variants"]) == {"int8", "fp16"}
    assert manifest["criteria"]["h_n"] == {"cosine": {"min": 0.999}}
    # GRU has no integer kernel: it stays float32, the Conv and MatMul around it are quantized.
    assert "GRU" in manifest["variants"]["int8"]["ops"] and "ConvInteger" in manifest["variants"]["int8"]["ops"]


def test_int8_weights_use_7_bits_so_no_cpu_saturates_them(spotter_variants):
    """Full-range int8 weights times uint8 activations are summed in 16 bits by ONNX Runtime on
    x86 CPUs without VNNI (VPMADDUBSW), which saturates: the same file lost accuracy there
    (scripts/int8_saturation.py). Every signed quantized weight must lie in 7 bits."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(spotter_variants / "model.int8.onnx"))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(w.size for w in weights) > 100  # the Conv and the MatMul
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_each_runtime_runs_a_variant_or_says_why_not(spotter_variants):
    report = validate_artifact(spotter_variants, runtimes=["onnxruntime-cpu", "onnx-reference"])
    assert report.passed, [c.describe() for c in report.criteria_failures] + [e.message for e in report.errors]
    for row in ("onnxruntime-cpu:int8", "onnxruntime-cpu:fp16", "onnx-reference:int8", "onnx-reference:fp16"):
        ran = row in report.runtimes and any(c.runtime == row for c in report.criteria)
        skipped = report.skipped.get(row, "")
        assert ran != bool(skipped), (row, skipped)  # exactly one: it ran and was judged, or a reason
        if "crashed" in skipped:  # ONNX Runtime 1.31 CPU dies creating this fp16 session (SIGSEGV, measured)
            assert "SIGSEGV" in skipped or "signal" in skipped
    # The streaming check runs on the fp32 rows only.
    assert not any(c.against == "streaming" and ":" in c.runtime for c in report.comparisons)


@pytest.mark.parametrize("references", [False, True])
def test_the_trials_fork_server_imports_torch_only_for_a_models_reference(tmp_path, references):
    """The variants' trials run ONNX runtimes only: their fork server imports those (0.7 s), not
    torch and torch.export (4.7 s), unless a model spec's eager reference will fork from it too.
    It collects garbage as rnnexport's own processes do (`collect_less`), from before its imports."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    script = tmp_path / "trials.py"
    script.write_text(
        "import gc, sys\n"
        "from rnnexport.runtimes.probe import start_probing\n"
        "from rnnexport.workers import start_workers\n"
        "def report(queue):\n"
        "    queue.put((sorted(m for m in ('torch', 'onnxruntime', 'onnx.reference') if m in sys.modules),\n"
        "               gc.get_threshold()[0]))\n"
        "if __name__ == '__main__':\n"
        f"    start_probing({references})\n"
        "    context = start_workers()\n"
        "    queue = context.SimpleQueue()\n"
        "    process = context.Process(target=report, args=(queue,))\n"
        "    process.start()\n"
        "    print(queue.get())\n"
        "    process.join()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    expected = ["onnx.reference", "onnxruntime", "torch"] if references else ["onnx.reference", "onnxruntime"]
    assert done.stdout.strip() == repr((expected, 10_000))


def test_rnn_int8_says_nothing_was_quantized(tmp_path):
    from rnnexport.export import export_spec
    from rnnexport.spec import get_spec

    result = export_spec(get_spec("single_layer"), tmp_path, variants="int8", runtimes=["onnxruntime-cpu"])
    assert result.report.passed
    assert any("int8: no op was quantized" in note for note in result.notes)


@pytest.mark.parametrize("value, message", [
    ("int4", "unknown variant 'int4' (did you mean 'int8'?)"),
    ("int8,int8", "variants repeat a name"),
])
def test_bad_variant_names_are_exit_2(cli, tmp_path, value, message):
    code, _, err = cli("export", "single_layer", "--variant", value, "--out", tmp_path)
    assert code == 2 and message in err and not list(tmp_path.iterdir())


# --- criteria -------------------------------------------------------------------------------


def _criterion(kind: str, threshold: float, **params) -> Criterion:
    return parse_criteria({"y": {kind: {("max" if kind == "p99_abs_error" else "max_drop" if kind == "accuracy"
                                          else "min"): threshold, **params}}}, ("y",), (), "t", ValueError)[0]


def test_criteria_values():
    reference = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    actual = np.array([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.45, 0.3, 0.25]])  # rows 1 and 3 flip
    argmax = _criterion("argmax", 0.9)
    value, details = argmax.value([argmax.partial(actual, reference, None)])
    assert value == 0.5 and details == {"positions": 4} and not argmax.passes(value)
    top2 = _criterion("topk", 0.9, k=2)
    assert top2.value([top2.partial(actual, reference, None)])[0] == 0.75  # row 1: class 0 is second; row 3: third
    cosine = _criterion("cosine", 0.99)
    expected = float(np.dot(actual.ravel(), reference.ravel()) / np.linalg.norm(actual) / np.linalg.norm(reference))
    parts = [cosine.partial(actual, reference, None), cosine.partial(reference, reference, None)]
    assert cosine.value(parts)[0] == pytest.approx(expected) and expected < 0.99  # the worst case counts
    p99 = _criterion("p99_abs_error", 0.1)
    assert p99.value([p99.partial(actual, reference, None)])[0] == pytest.approx(np.percentile(np.abs(actual - reference), 99))
    accuracy = _criterion("accuracy", 0.1, labels="labels")
    labels = np.array([1, 0, 2, 2])
    drop, details = accuracy.value([accuracy.partial(actual, reference, labels)])
    assert (drop, details["accuracy"], details["reference_accuracy"]) == (0.5, 0.5, 1.0) and not accuracy.passes(drop)
    nan = actual.copy()
    nan[0, 0] = np.nan
    assert not cosine.passes(cosine.value([cosine.partial(nan, reference, None)])[0])  # NaN never passes


def test_class_criterion_on_a_state_output_is_exit_2(cli, tmp_path):
    spec = (CATALOG / "keyword_spotter.toml").read_text().replace("[criteria.h_n]\ncosine", "[criteria.h_n]\nargmax")
    (tmp_path / "ks.toml").write_text(spec.replace('"random"', '"random"', 1))
    code, _, err = cli("export", tmp_path / "ks.toml", "--out", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()
    assert "criteria.h_n.argmax: 'h_n' is a state output" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("table, message", [
    ({"logits": {"argmaks": {"min": 0.9}}}, "unknown criterion 'argmaks' (did you mean 'argmax'?)"),
    ({"logit": {"argmax": {"min": 0.9}}}, "criteria for unknown output 'logit' (did you mean 'logits'?)"),
    ({"logits": {"argmax": {"min": 1.5}}}, "criteria.logits.argmax.min: expected a number in [0, 1]"),
    ({"logits": {"cosine": {"max": 0.9}}}, "must be a table with 'min'"),
])
def test_bad_criteria_are_one_line(table, message):
    with pytest.raises(SpecError, match=None) as caught:
        parse_criteria(table, ("logits", "h_n"), ("h_n",), "spec", SpecError)
    assert message in str(caught.value)


def test_axis_out_of_range_is_exit_2_before_anything_is_written(cli, tmp_path):
    spec = (CATALOG / "text_classifier.toml").read_text().replace("argmax = { axis = -1", "argmax = { axis = 2")
    _copy_catalog_spec(tmp_path, spec)
    code, _, err = cli("export", tmp_path / "tc.toml", "--out", tmp_path / "out")
    assert code == 2 and "axis 2 is out of range for 'logits', which has 2 axes" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --- evaluation data ------------------------------------------------------------------------


def _copy_catalog_spec(folder: Path, text: str) -> None:
    for name in ("text_classifier.safetensors", "text_classifier_heldout.npz"):
        shutil.copy(CATALOG / name, folder / name)
    (folder / "tc.toml").write_text(text)


def _held_out() -> dict[str, np.ndarray]:
    with np.load(CATALOG / "text_classifier_heldout.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("change, message", [
    (lambda d: {**d, "token": d.pop("tokens")}, "unexpected array 'token' (did you mean 'tokens'?)"),
    (lambda d: {k: v for k, v in d.items() if k != "lengths"}, "no array 'lengths'"),
    (lambda d: {**d, "tokens": d["tokens"].astype(np.int32)}, "'tokens' is int32, expected int64"),
    (lambda d: {**d, "lengths": d["lengths"][:10]}, "'lengths' axis 0 is 'batch' = 10, but another input has"),
    (lambda d: {**d, "tokens": d["tokens"] + 100}, "'tokens' must be in [0, 39]"),
    (lambda d: {**d, "labels": d["labels"].astype(np.float32)}, "labels 'labels' are float32; expected integer"),
])
def test_bad_evaluation_data_is_exit_2_and_writes_nothing(cli, tmp_path, change, message):
    _copy_catalog_spec(tmp_path, (CATALOG / "text_classifier.toml").read_text())
    np.savez(tmp_path / "text_classifier_heldout.npz", **change(_held_out()))
    code, _, err = cli("export", tmp_path / "tc.toml", "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_nan_and_pickles_in_evaluation_data_are_refused(tmp_path, cli):
    spec_text = (CATALOG / "keyword_spotter.toml").read_text().replace(
        "[outputs]", "[evaluation]\nfile = \"speech.npz\"\n\n[outputs]")
    (tmp_path / "ks.toml").write_text(spec_text)
    features = np.random.default_rng(0).standard_normal((3, 13, 40)).astype(np.float32)
    features[1, 2, 3] = np.nan
    np.savez(tmp_path / "speech.npz", features=features)
    code, _, err = cli("export", tmp_path / "ks.toml", "--out", tmp_path / "out")
    assert code == 2 and "'features' holds NaN or Inf at [1, 2, 3]" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    np.savez(tmp_path / "speech.npz", features=np.array([{"evil": 1}], dtype=object))
    code, _, err = cli("export", tmp_path / "ks.toml", "--out", tmp_path / "out")
    assert code == 2 and "pickled (object) array" in err and "never unpickles" in err


def test_evaluation_data_runs_as_a_golden_case_with_zero_state(tmp_path):
    """A state input left out of the data starts at zero; the case is stored with the artifact,
    so a later validation without the data file runs it too."""
    from rnnexport.export import export_spec
    from rnnexport.spec import load_spec

    spec_text = (CATALOG / "keyword_spotter.toml").read_text().replace(
        "[outputs]", "[evaluation]\nfile = \"speech.safetensors\"\n\n[outputs]")
    (tmp_path / "ks.toml").write_text(spec_text)
    from safetensors.numpy import save_file

    save_file({"features": np.random.default_rng(1).standard_normal((5, 13, 33)).astype(np.float32)},
              str(tmp_path / "speech.safetensors"))
    result = export_spec(load_spec(tmp_path / "ks.toml"), tmp_path / "out", runtimes=["onnxruntime-cpu"],
                         variants=[])
    case = "data=speech,batch=5,time=33,state=zero"
    assert case in result.report.cases and result.report.passed
    (tmp_path / "speech.safetensors").unlink()
    again = validate_artifact(result.path, runtimes=["onnxruntime-cpu"])
    assert case in again.cases and again.passed
    golden = open_artifact(result.path).golden()
    stored = next(v for k, v in golden.items() if k.id == case)
    assert not stored["h_0"].any() and stored["h_0"].shape == (1, 5, 24)


def test_reports_show_each_criterion_and_by_how_much_it_missed(artifact_copy, tmp_path):
    from rnnexport.report import format_table, report_json, write_html

    folder = artifact_copy("text_classifier")
    _break_int8_weight(folder)
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"])
    text = format_table([report])
    table = text[text.index("acceptance criteria"):]
    int8_line = next(line for line in table.splitlines() if line.strip().startswith("onnxruntime-cpu:int8"))
    fp32_line = next(line for line in table.splitlines() if line.strip().startswith("onnxruntime-cpu "))
    assert "FAIL" in int8_line and "FAIL" not in fp32_line
    write_html([report], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    section = page[page.index("Acceptance criteria"):]
    assert re.search(r"<td class='bad' title='argmax = [0-9.]+ \(needs &gt;= 0.99: [0-9.e-]+ short\)", section)
    data = report_json([report])["artifacts"][0]
    assert any(c["runtime"] == "onnxruntime-cpu:int8" and not c["passed"] for c in data["criteria"])
    variant_values = [c for c in data["comparisons"] if c["runtime"] == "onnxruntime-cpu:int8" and c["against"] == "torch"]
    assert variant_values and all(c["judged"] is False and c["p99_abs_error"] is not None for c in variant_values)
    assert data["runtimes"]["onnxruntime-cpu:int8"]["status"] == "failed"


def test_variants_need_onnx_among_the_formats(cli, tmp_path):
    code, _, err = cli("export", "single_layer", "--variant", "int8", "--formats", "torchscript", "--out", tmp_path)
    assert code == 2 and "made from model.onnx, which the formats (torchscript) leave out" in err
    assert not list(tmp_path.iterdir())
    # The spec's own variants give way to formats chosen without ONNX, with a note.
    code, _, err = cli("export", "text_classifier", "--formats", "pt2", "--no-validate", "--out", tmp_path)
    assert code == 0 and "the spec's variants (int8) are not made" in err
    assert not (tmp_path / "text_classifier" / "model.int8.onnx").exists()


def test_a_manifest_cannot_loosen_its_variants_criteria(artifact_copy):
    """Criteria recorded in the manifest apply; the default (cosine >= 0.99) is added to every
    output unless the manifest is trusted (--manifest-tolerance), as with tolerances."""
    folder = artifact_copy("text_classifier")
    _break_int8_weight(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["criteria"] = {"logits": {"argmax": {"axis": -1, "min": 0.0}}}  # "anything goes"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"])
    missed = {(c.runtime, c.criterion) for c in report.criteria_failures}
    assert ("onnxruntime-cpu:int8", "cosine") in missed and not report.passed
    trusted = validate_artifact(folder, runtimes=["onnxruntime-cpu"], manifest_tolerance=True)
    assert {c.criterion for c in trusted.criteria} == {"argmax"} and trusted.passed


def test_variant_none_leaves_out_the_specs_own(cli, tmp_path):
    code, _, err = cli("export", "text_classifier", "--variant", "none", "--no-validate", "--out", tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "text_classifier" / MANIFEST).read_text())
    assert "variants" not in manifest and not (tmp_path / "text_classifier" / "model.int8.onnx").exists()


def test_the_shipped_held_out_set_is_what_its_script_writes(tmp_path):
    """scripts/write_heldout.py is deterministic and made the committed file."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(CATALOG.parents[1] / "scripts" / "write_heldout.py"), "--out",
                           str(tmp_path / "h.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h.npz").read_bytes() == (CATALOG / "text_classifier_heldout.npz").read_bytes()


def test_an_export_killed_while_writing_a_variant_leaves_the_previous_artifact(tmp_path):
    """SIGKILL (no cleanup runs) right after the int8 file was written into the staging folder:
    the installed text_classifier (with its own variant) is untouched and still validates."""
    import signal
    import subprocess
    import sys
    import textwrap

    from tests.test_cli import digest as digest_folder

    out = tmp_path / "models"
    shutil.copytree(MODELS / "text_classifier", out / "text_classifier")
    before = digest_folder(out / "text_classifier")
    script = textwrap.dedent(f"""
        import os, signal, sys
        import rnnexport.variants as v
        real = v._int8
        def die(source, target):
            real(source, target)
            os.kill(os.getpid(), signal.SIGKILL)
        v.VARIANTS["int8"] = v.Variant("int8", "model.int8.onnx", die, v.VARIANTS["int8"].method)
        from rnnexport.cli import main
        sys.exit(main(["export", "text_classifier", "--seed", "5", "--out", {str(out)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert digest_folder(out / "text_classifier") == before
    assert validate_artifact(out / "text_classifier", runtimes=["onnxruntime-cpu"]).passed
