"""A model spec's own input maker (``inputs_fn``): used at export and by later validations while
it is the recorded, unchanged code; the golden cases otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexport.errors import SpecError
from rnnexport.export import export_spec
from rnnexport.modelspec_load import load_model_spec
from rnnexport.validate import validate_artifact

USERMODELS = Path(__file__).resolve().parents[1] / "usermodels"

SPEC = '''
module = "features.py:MaskedGRU"
inputs_fn = "features.py:{fn}"
[inputs.x]
shape = ["batch", "seq", 3]
[inputs.lengths]
dtype = "int64"
shape = ["batch"]
range = [1, "seq"]
[inputs.mask]
shape = ["batch", "seq"]
[dims.batch]
size = 3
sweep = [1, 5]
[dims.seq]
size = 6
sweep = [2, 21]
[outputs]
names = ["pooled"]
'''


def _spec(tmp_path: Path, fn: str = "masked_inputs", extra: str = "") -> Path:
    shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
    (tmp_path / "features.py").write_text((tmp_path / "features.py").read_text() + extra)
    path = tmp_path / "masked.toml"
    path.write_text(SPEC.format(fn=fn))
    return path


def _mask_agrees(feeds: dict[str, np.ndarray]) -> bool:
    steps = np.arange(feeds["mask"].shape[1])[None, :]
    return bool((feeds["mask"] == (steps < feeds["lengths"][:, None])).all())


def test_inputs_fn_makes_every_case_at_export_and_later(tmp_path: Path) -> None:
    result = export_spec(load_model_spec(_spec(tmp_path)), tmp_path / "out",
                         runtimes=["torch", "onnxruntime-cpu", "torchscript"])
    assert result.report.passed
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["inputs_source"]["file"] == "../../features.py" and manifest["spec"]["inputs_fn"]
    with np.load(result.path / "golden.npz") as golden:
        cases = {key.split("/")[0] for key in golden.files}
        assert all(_mask_agrees({n: golden[f"{c}/{n}"] for n in ("mask", "lengths")}) for c in cases)
    # Later, in a fresh validation: the recorded function makes the sweep's inputs (in a child).
    report = validate_artifact(result.path, runtimes=["torch", "onnxruntime-cpu"])
    assert report.passed and len(report.cases) > len(cases), report.cases
    assert not any("inputs_fn" in note for note in report.notes)
    # Changed since the export: never imported; the golden cases run, and the report says why.
    features = tmp_path / "features.py"
    features.write_text(features.read_text().replace("def masked_inputs", "def masked_inputs_renamed"))
    report = validate_artifact(result.path, runtimes=["onnxruntime-cpu"])
    assert report.passed and set(report.cases) == cases
    assert any("changed since the export" in note for note in report.notes), report.notes


NOT_DETERMINISTIC = '''

def drifting_inputs(sizes, seed):
    import numpy as np
    made = masked_inputs(sizes, seed)
    made["x"] = np.random.default_rng().standard_normal(made["x"].shape).astype(np.float32)
    return made


def wrong_dtype(sizes, seed):
    made = masked_inputs(sizes, seed)
    made["lengths"] = made["lengths"].astype("int32")
    return made
'''


@pytest.mark.parametrize("fn, message", [
    ("drifting_inputs", "gave different 'x' on two calls with the same sizes and seed; make it deterministic"),
    ("wrong_dtype", "returned inputs that do not fit the spec: masked: 'lengths' is int32, expected int64"),
    ("missing_fn", "has no attribute 'missing_fn'"),
])
def test_a_bad_inputs_fn_is_one_line_exit_2_nothing_written(tmp_path: Path, cli, fn: str, message: str) -> None:
    code, _, err = cli("export", _spec(tmp_path, fn, NOT_DETERMINISTIC), "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "masked").exists()
    with pytest.raises(SpecError, match="inputs_fn"):
        load_model_spec(_spec(tmp_path, "x:y:z"))
