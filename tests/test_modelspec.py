"""Model specs (DESIGN.md, "Your own model"): every bad input is exit 2 with one line naming
what was wrong, and nothing is written; the signature gives the documented cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexport.errors import SpecError, UsageError
from rnnexport.inputs import Case
from rnnexport.modelspec_load import load_model_spec, model_spec_from_dict
from tests.usermodels import TWO_RECURRENT

USERMODELS = Path(__file__).resolve().parent / "usermodels"

BASE = TWO_RECURRENT


def _write(tmp_path: Path, text: str, name: str = "model") -> Path:
    shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


# (id, edit of BASE, message fragment): spec-level errors found before torch is touched.
SPEC_ERRORS = [
    ("undeclared-dim", lambda t: t.replace('shape = ["batch", "seq", 3]', 'shape = ["batch", "time", 3]'),
     r"dim 'time' is used in 'shape' but not declared"),
    ("sweep-below-1", lambda t: t.replace("sweep = [1, 4]", "sweep = [0, 4]"), r"invalid value for 'dims.batch.sweep.0': 0; valid: an integer in \[1"),
    ("inverted-float-range", lambda t: t.replace('shape = ["batch", "seq", 3]', 'shape = ["batch", "seq", 3]\nrange = [2.0, -1.0]'),
     r"'range' \[2.0, -1.0\] is inverted"),
    ("unknown-key", lambda t: "modul_args = {}\n" + t, r"unknown key 'modul_args' \(did you mean 'module_args'\?\)"),
    ("bad-dtype", lambda t: t.replace('[inputs.x]', '[inputs.x]\ndtype = "float64"'), r"invalid value for 'inputs.x.dtype': 'float64' \(did you mean 'float16'\?\); valid: 'float32'"),
    ("state-not-output", lambda t: t + 'state = { x = "h" }\nstream_dim = "seq"\n', r"state: 'h' is not an output"),
    ("tolerance-unknown-output", lambda t: t + '[tolerance]\noutputs = { y = { atol = 1.0 } }\n', r"'y' is not an output"),
    ("module-syntax", lambda t: t.replace('"features.py:TwoRecurrent"', '"features.py"'), r"valid: 'FILE.py:ATTR'"),
]

# Errors found when the module is imported and built (exit 2 as well).
MODULE_ERRORS = [
    ("missing-file", lambda t: t.replace("features.py:", "nowhere.py:"), r"module file '.*nowhere.py' does not exist"),
    ("import-fails", lambda t: t.replace("features.py:", "broken.py:"), r"cannot import '.*broken.py': ZeroDivisionError"),
    ("missing-attr", lambda t: t.replace("TwoRecurrent", "ThreeRecurrent"), r"has no attribute 'ThreeRecurrent'; its nn.Module classes: .*TwoRecurrent"),
    ("attr-not-module", lambda t: t.replace("TwoRecurrent", "not_a_module"), r"returned int, not an nn.Module"),
    ("no-such-package", lambda t: t.replace('"features.py:TwoRecurrent"', '"nopkg_xyz.mod:Thing"'), r"cannot import module 'nopkg_xyz.mod'"),
    ("input-not-in-forward", lambda t: t.replace("[inputs.x]", "[inputs.y]"), r"\[inputs.y\] is not an argument of TwoRecurrent.forward\(x\)"),
    ("forward-arg-without-table", lambda t: t.replace("TwoRecurrent", "StatefulLSTM").replace('shape = ["batch", "seq", 3]', 'shape = ["seq", "batch", 4]'),
     r"forward\(\) argument 'h_0' has no \[inputs.h_0\] table"),
    ("output-count", lambda t: t.replace('names = ["z"]', 'names = ["z", "extra"]'), r"forward\(\) returns 1 tensors, \[outputs\] names lists 2"),
    ("dtype-rejected", lambda t: t.replace('[inputs.x]', '[inputs.x]\ndtype = "int64"\nrange = [0, 3]'),
     r"the module rejects the spec's example inputs"),
    ("weights-missing-keys", lambda t: 'weights = "w.safetensors"\n' + t, r"missing keys \['first.weight_ih_l0'"),
    ("weights-shape", lambda t: 'weights = "shape.safetensors"\n' + t, r"'first.weight_ih_l0' has shape \[15, 2\], the module's is \[15, 3\]"),
    ("weights-pickle", lambda t: 'weights = "evil.pt"\n' + t, r"cannot load weights .* as data"),
]


@pytest.mark.parametrize("edit,message", [(e, m) for _, e, m in SPEC_ERRORS + MODULE_ERRORS],
                         ids=[i for i, _, _ in SPEC_ERRORS + MODULE_ERRORS])
def test_bad_model_spec_is_exit_2_one_line_nothing_written(tmp_path: Path, cli, edit, message) -> None:
    import torch
    from safetensors.torch import save_file

    from tests.usermodels.features import TwoRecurrent

    (tmp_path / "broken.py").write_text("1 / 0\n")
    good = TwoRecurrent().state_dict()
    save_file({k: v for k, v in good.items() if not k.startswith("first.weight_ih")}, str(tmp_path / "w.safetensors"))
    save_file({**good, "first.weight_ih_l0": torch.zeros(15, 2)}, str(tmp_path / "shape.safetensors"))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    spec = _write(tmp_path, edit(BASE))
    code, out, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--no-validate")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err
    assert "pwned" not in out + err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_sweep_cases_documented_each_sweep_value_and_all_largest(tmp_path: Path) -> None:
    spec = load_model_spec(_write(tmp_path, BASE))
    sizes = [dict(c.sizes) for c in spec.sweep()]
    assert sizes[0] == {"batch": 2, "seq": 7}
    assert {"batch": 1, "seq": 7} in sizes and {"batch": 4, "seq": 7} in sizes
    assert {"batch": 2, "seq": 1} in sizes and {"batch": 2, "seq": 25} in sizes
    assert sizes[-1] == {"batch": 4, "seq": 25}
    assert {c.initial_state for c in spec.sweep()} == {"random"}  # no state inputs: no zero-state duplicates


def test_inputs_are_seeded_in_range_and_lengths_follow_their_dim(tmp_path: Path) -> None:
    text = BASE.replace("[dims.batch]", '[inputs.lengths]\ndtype = "int64"\nshape = ["batch"]\nrange = [1, "seq"]\n[dims.batch]')
    spec = load_model_spec(_write(tmp_path, text))
    case = spec.case({"batch": 64, "seq": 5})
    feeds = spec.make_inputs(case)
    assert feeds["lengths"].dtype == np.int64 and feeds["lengths"].min() >= 1 and feeds["lengths"].max() <= 5
    assert np.array_equal(feeds["x"], spec.make_inputs(case)["x"])  # same case, same bytes
    with pytest.raises(UsageError, match=r"'lengths' must be in \[1, 5\]"):
        spec.check_feeds({**feeds, "lengths": np.full(64, 9, np.int64)})
    with pytest.raises(UsageError, match=r"'lengths' axis 0 is 'batch' = 64, but another input has 'batch' = 3"):
        spec.check_feeds({**feeds, "x": np.zeros((3, 5, 3), np.float32)})


def test_case_ids_round_trip() -> None:
    case = Case((("batch", 3), ("seq", 17)), "zero")
    assert Case.parse(case.id) == case
    with pytest.raises(ValueError, match="bad case"):
        Case.parse("batch=3,seq=x,state=zero")


def test_a_spec_written_to_a_manifest_reads_back_with_its_order(tmp_path: Path) -> None:
    text = BASE.replace("[dims.batch]", '[inputs.a_second]\nshape = ["batch"]\n[dims.batch]')
    spec = load_model_spec(_write(tmp_path, text))
    import json

    again = model_spec_from_dict(json.loads(json.dumps(spec.to_dict(), sort_keys=True)))
    assert again.input_names == ("x", "a_second") and again == spec


def test_rnn_specs_and_model_specs_are_told_apart_by_their_keys(tmp_path: Path) -> None:
    from rnnexport.spec import load_spec

    assert load_spec(_write(tmp_path, BASE)).kind == "model"
    path = tmp_path / "rnn.toml"
    path.write_text('cell = "gru"\ninput_size = 3\nhidden_size = 4\n')
    assert load_spec(path).kind == "rnn"
    with pytest.raises(SpecError, match="missing required key 'outputs'"):
        model_spec_from_dict({"name": "x", "module": "a.py:B", "inputs": {"x": {"shape": [1]}}, "dims": {}})


def test_huge_dims_are_refused_before_anything_runs(tmp_path: Path, cli) -> None:
    spec = _write(tmp_path, BASE.replace("size = 7", "size = 1048576").replace("size = 2", "size = 1048576"))
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2 and "would need" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_case_ids_name_the_state_only_where_the_spec_has_state_inputs(tmp_path: Path) -> None:
    """Issue 20, item 7b: ``batch=2,seq=7``, not ``...,state=random``, for a spec without state
    inputs; ids as artifacts exported before spell them still parse, and equal the new ones."""
    import json

    from tests.conftest import MODELS

    spec = load_model_spec(_write(tmp_path, BASE))  # no state inputs
    assert [c.id for c in spec.golden_cases()] == ["batch=2,seq=7", "batch=1,seq=1"]
    assert not [c.id for c in spec.sweep() if "state" in c.id]
    old = spec.parse_case("batch=2,seq=7,state=random")
    assert old == spec.golden_cases()[0] and hash(old) == hash(spec.golden_cases()[0])
    assert old.id == "batch=2,seq=7,state=random"  # the spelling keys the old golden data
    assert spec.parse_case("batch=2,seq=7").id == "batch=2,seq=7"
    with pytest.raises(ValueError, match="the spec has no state inputs"):
        spec.parse_case("batch=2,seq=7,state=zero")

    manifest = json.loads((MODELS / "keyword_spotter" / "manifest.json").read_text())
    stateful = model_spec_from_dict(manifest["spec"])
    assert [c.id for c in stateful.golden_cases()] == ["batch=2,time=50,state=random", "batch=1,time=1,state=zero"]
    assert Case.parse("batch=2,time=50").id == "batch=2,time=50"
    with pytest.raises(ValueError, match=r"state inputs: end with state=zero\|random"):
        stateful.parse_case("batch=2,time=50")


def _old_case_ids(folder: Path) -> None:
    """Rewrite a model-spec artifact as exported before ids left out the state: every case id
    of a spec without state inputs ends in ``state=random`` (golden keys, manifest, validation)."""
    import json
    import zipfile

    from rnnexport.artifacts import MANIFEST, write_json
    from tests.conftest import restamp

    def old(case_id: str) -> str:
        return case_id if "state=" in case_id else f"{case_id},state=random"

    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["golden"]["cases"] = [old(c) for c in manifest["golden"]["cases"]]
    manifest["golden"]["arrays"] = {f"{old(k.split('/')[0])}/{k.split('/')[1]}": v
                                    for k, v in manifest["golden"]["arrays"].items()}
    manifest["validation"]["cases"] = [old(c) for c in manifest["validation"]["cases"]]
    write_json(folder / MANIFEST, manifest)
    with zipfile.ZipFile(folder / "golden.npz") as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(folder / "golden.npz", "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{old(name.split('/')[0])}/{name.split('/')[1]}", data)
    restamp(folder, "golden.npz")


@pytest.mark.parametrize("name", ["text_classifier", "seq2seq_decoder"])
def test_artifacts_with_case_ids_that_end_in_state_random_still_validate(tmp_path: Path, name: str) -> None:
    """Manifests committed before item 7b (``batch=8,seq=24,state=random`` for a spec without
    state) open and validate: their golden cases are found and compared, and the documented case
    runs once, not once per spelling."""
    from rnnexport.artifacts import open_artifact
    from rnnexport.validate import validate_artifact
    from tests.conftest import MODELS

    folder = tmp_path / name
    shutil.copytree(MODELS / name, folder)
    _old_case_ids(folder)
    artifact = open_artifact(folder)
    assert not artifact.spec.state and all(c.id.endswith(",state=random") for c in artifact.golden_cases())
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"])
    assert report.passed, report.failures or report.errors
    golden = {(c.runtime, c.case) for c in report.comparisons if c.against == "golden" and ":" not in c.runtime}
    stored = len(artifact.golden_cases())  # text_classifier's held-out data is one of them
    assert {runtime for runtime, _ in golden} == {"torch", "onnxruntime-cpu"} and len(golden) == 2 * stored
    documented = artifact.spec.golden_cases()[0].id
    assert documented in report.cases and f"{documented},state=random" not in report.cases


def test_output_shapes_name_the_dims_they_follow_and_sizes_still_read() -> None:
    """Issue 20, item 7d: a manifest's io.outputs shape names the dims its axes follow, as
    io.inputs does (``["batch", "time", 4]``); the documented sizes that manifests written before
    hold (``[2, 50, 4]``) read the same, and a name that contradicts dynamic_axes is refused."""
    import json

    from tests.conftest import MODELS

    manifest = json.loads((MODELS / "keyword_spotter" / "manifest.json").read_text())
    spec, io = model_spec_from_dict(manifest["spec"]), manifest["io"]
    assert [e["shape"] for e in io["outputs"]] == [["batch", "time", 4], [1, "batch", 24]]
    named = spec.output_tensors(io)
    assert [t.shape for t in named] == [("batch", "time", 4), (1, "batch", 24)]
    sizes = spec.documented
    numbers = {"outputs": [{**e, "shape": [sizes[d] if isinstance(d, str) else d for d in e["shape"]]}
                           for e in io["outputs"]]}
    assert numbers["outputs"][0]["shape"] == [2, 50, 4] and spec.output_tensors(numbers) == named
    case = spec.case({"batch": 3, "time": 9})
    assert spec.case_bytes(case, named) == spec.case_bytes(case, spec.output_tensors(numbers))
    for shape in (["time", "batch", 4], ["batch", "time", "four"]):
        wrong = {"outputs": [{**io["outputs"][0], "shape": shape}, io["outputs"][1]]}
        with pytest.raises(ValueError, match="io.outputs lacks a valid entry for 'logits'"):
            spec.output_tensors(wrong)
