"""Issue 17, "Integrity, round two": memory limits that cover a model's outputs and golden data,
a full disk during a model-spec export, weights that would export wrong without a word.

Each fault is reproduced as it was found (a crafted manifest or golden member, a filled tmpfs,
a checkpoint with NaN or float64 tensors), and each ends in exit 2 with one line on stderr,
before anything large is allocated or anything is installed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rnnexport.artifacts import MANIFEST, write_json
from rnnexport.errors import SpecError
from rnnexport.export import export_model
from rnnexport.limits import MAX_CASE_STEPS
from rnnexport.contract import TensorSpec
from rnnexport.modelspec_load import model_spec_from_dict
from tests.conftest import MODELS, restamp
from tests.test_cli import digest
from tests.test_faults import small_tmpfs  # noqa: F401 (a fixture)
from tests.test_faults import assert_refused_for_space, exports_onto_a_filled_filesystem, one_line_error
from tests.usermodels import TWO_RECURRENT
from tests.usermodels.features import TwoRecurrent

USERMODELS = Path(__file__).resolve().parent / "usermodels"
DOCUMENTED = "batch=8,seq=24"  # text_classifier's documented golden case


def _artifact(tmp_path: Path, change=None) -> Path:
    """A copy of the text_classifier artifact, its manifest passed through `change` first."""
    folder = tmp_path / "text_classifier"
    shutil.copytree(MODELS / "text_classifier", folder)
    if change is not None:
        manifest = json.loads((folder / MANIFEST).read_text())
        change(manifest)
        write_json(folder / MANIFEST, manifest)
    return folder


def _spec_file(tmp_path: Path, text: str, **keys: str) -> Path:
    """A model spec TOML next to a copy of tests/usermodels/features.py; `keys` go on top."""
    shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
    path = tmp_path / "spec.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()) + text)
    return path


# -- 1. memory limits cover outputs and golden data ----------------------------------------------

WIDE = '''
from torch import nn


class Wide(nn.Module):
    """Returns [batch, seq, 100000] from [batch, seq, 3]: outputs 33000 times its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(4, 100000)

    def forward(self, x):
        return self.head(self.gru(x)[0])
'''

WIDE_SPEC = '''
module = "wide.py:Wide"
[inputs.x]
shape = ["batch", "seq", 3]
[dims.batch]
size = 2
sweep = [1, 3]
[dims.seq]
size = 4
sweep = [1, 8]
[outputs]
names = ["y"]
'''


def test_case_estimate_counts_the_outputs_of_every_runtime() -> None:
    spec = model_spec_from_dict({"name": "wide", "module": "wide.py:Wide",
                                 "inputs": {"x": {"shape": ["batch", "seq", 3]}},
                                 "dims": {"batch": {"size": 2}, "seq": {"size": 4}}, "outputs": {"names": ["y"]}})
    io = {"outputs": [{"name": "y", "dtype": "float32", "shape": [2, 4, 100000],
                       "dynamic_axes": {"0": "batch", "1": "seq"}}]}
    outputs = spec.output_tensors(io)
    assert outputs == (TensorSpec("y", "float32", ("batch", "seq", 100000)),)
    case = spec.case({"batch": 3, "seq": 8})
    held = 3 * 8 * 100000 * 4
    assert spec.case_bytes(case, outputs, 7) - spec.case_bytes(case, outputs, 1) == 6 * held
    assert spec.case_bytes(case, outputs) > spec.case_bytes(case) + 2 * held
    with pytest.raises(ValueError, match="io.outputs lacks a valid entry for 'y'"):
        spec.output_tensors({"outputs": [{**io["outputs"][0], "dynamic_axes": {"0": "time"}}]})


def test_export_counts_outputs_before_golden_data_and_validation(tmp_path: Path, cli) -> None:
    (tmp_path / "wide.py").write_text(WIDE)
    (tmp_path / "wide.toml").write_text(WIDE_SPEC)
    out = tmp_path / "D"
    line = one_line_error(cli("export", tmp_path / "wide.toml", "--out", out, "--max-memory", "64M",
                              "--runtimes", "onnxruntime-cpu"))
    assert line.startswith("rnnexport: error: wide: case batch=")
    assert "would need an estimated" in line and "over the memory limit of 64.0 MiB" in line
    assert not out.exists()


def test_validation_counts_the_outputs_the_manifest_records(tmp_path: Path, cli) -> None:
    def wide_logits(manifest):
        manifest["io"]["outputs"][0]["shape"] = [8, 1_000_000]  # [batch, 1000000] floats

    folder = _artifact(tmp_path, wide_logits)
    code, _, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu", "--max-memory", "256M")
    assert code == 2 and err.count("\n") == 1, err
    assert f"text_classifier: case {DOCUMENTED} would need an estimated" in err
    assert "over the memory limit of 256.0 MiB" in err


def test_malformed_output_entry_is_refused(tmp_path: Path, cli) -> None:
    def no_shape(manifest):
        manifest["io"]["outputs"][0]["shape"] = "big"

    code, _, err = cli("validate", _artifact(tmp_path, no_shape), "--runtimes", "onnxruntime-cpu")
    assert code == 2 and "manifest io.outputs lacks a valid entry for 'logits'" in err


def test_declared_golden_arrays_are_checked_before_anything_is_read(tmp_path: Path, cli, monkeypatch) -> None:
    import rnnexport.artifacts

    def huge(manifest):
        manifest["golden"]["arrays"][f"{DOCUMENTED}/logits"]["shape"] = [768, 1 << 20]

    folder = _artifact(tmp_path, huge)
    monkeypatch.setattr(rnnexport.artifacts, "read_golden", lambda *_: pytest.fail("golden data was read"))
    code, _, err = cli("validate", folder, "--untrusted", "--max-memory", "512M")
    assert code == 2 and err.count("\n") == 1, err
    assert (f"{folder}: the golden data (as its manifest declares it) would need an estimated 3.0 GiB, over the memory "
            "limit of 512.0 MiB") in err


def _replace_member(npz: Path, key: str, content: bytes) -> None:
    with zipfile.ZipFile(npz) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[f"{key}.npy"] = content
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("shape", "descr", "found"),
    [((1 << 20, 1 << 20), "<f4", "shape [1048576, 1048576], expected [8, 5]"),
     ((8, 5), "<f8", "dtype float64, expected float32")],
    ids=["4 TiB shape", "float64"],
)
def test_golden_member_header_is_read_before_its_data(tmp_path: Path, cli, shape, descr: str, found: str) -> None:
    folder = _artifact(tmp_path)
    _replace_member(folder / "golden.npz", f"{DOCUMENTED}/logits", _npy_header(shape, descr) + b"\0" * 160)
    restamp(folder, "golden.npz")
    code, _, err = cli("validate", folder, "--untrusted")
    assert code == 2 and err.count("\n") == 1, err
    assert f"golden '{DOCUMENTED}/logits' has {found} (its .npy header; not read)" in err


def test_manifest_sweep_is_bounded(tmp_path: Path, cli) -> None:
    def long_sweep(manifest):
        for dim in manifest["spec"]["dims"]:
            dim["sweep"] = [1, 1048576] if dim["name"] == "seq" else [1, 2]

    folder = _artifact(tmp_path, long_sweep)
    start = time.monotonic()
    code, _, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu")
    assert code == 2 and err.count("\n") == 1, err
    assert "text_classifier: case batch=8,seq=1048576 has 8,388,608 elements" in err
    assert f"over the {MAX_CASE_STEPS:,} rnnexport runs in one case" in err
    assert time.monotonic() - start < 60


def test_spec_sweep_is_bounded_before_export(tmp_path: Path, cli) -> None:
    spec = _spec_file(tmp_path, TWO_RECURRENT.replace("sweep = [1, 25]", "sweep = [1, 1048576]"), name="two")
    code, _, err = cli("export", spec, "--out", tmp_path / "D", "--runtimes", "onnxruntime-cpu")
    assert code == 2 and err.count("\n") == 1, err
    assert "two: case batch=4,seq=1048576 has 4,194,304 elements" in err
    assert not (tmp_path / "D").exists()


# -- 2. a full disk during a model-spec export ---------------------------------------------------

# Fill levels at which the export fails at one write or another, from the weights to the manifest.
LEAVE = {"full": 0, "4K": 4 << 10, "12K": 12 << 10, "24K": 24 << 10, "40K": 40 << 10, "200K": 200 << 10,
         "1M+16K": (1 << 20) + (16 << 10), "1M+40K": (1 << 20) + (40 << 10), "1M+80K": (1 << 20) + (80 << 10)}


def test_model_spec_export_onto_a_full_filesystem(small_tmpfs, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, TWO_RECURRENT, name="keyword_spotter")
    out = small_tmpfs / "D"
    shutil.copytree(MODELS / "keyword_spotter", out / "keyword_spotter")
    before = digest(out / "keyword_spotter")
    export = ["export", spec, "--out", out, "--runtimes", "onnxruntime-cpu"]
    results = exports_onto_a_filled_filesystem(small_tmpfs, out, [(leave, export) for leave in LEAVE.values()])
    for result in results:
        assert_refused_for_space(result, "keyword_spotter", before)
    # Which write a level reaches varies a little (TorchScript compiles beside the export):
    # the first and the last are always among them.
    failed_writing = {re.search(r"while writing (\S+)", r["stderr"])[1] for r in results}
    assert {"weights.safetensors", "manifest.json"} <= failed_writing and len(failed_writing) >= 3, failed_writing


# -- 3. weights ----------------------------------------------------------------------------------

def _weights(tmp_path: Path, change) -> Path:
    """TwoRecurrent's weights, saved after `change(state)`, with a spec that loads them."""
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in TwoRecurrent().state_dict().items()}
    change(state)
    save_file(state, str(tmp_path / "w.safetensors"))
    return _spec_file(tmp_path, TWO_RECURRENT, name="two", weights="w.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["NaN", "Inf"])
def test_non_finite_weights_from_a_file_are_refused(tmp_path: Path, cli, value: float) -> None:
    def poison(state):
        state["second.weight_hh_l1"][1, 2] = value

    code, _, err = cli("export", _weights(tmp_path, poison), "--out", tmp_path / "D", "--no-validate")
    assert code == 2 and err.count("\n") == 1, err
    what = "NaN" if value != value else "Inf"
    assert f"two: weights '{tmp_path / 'w.safetensors'}': 'second.weight_hh_l1' holds {what} (1 of 16 values)" in err
    assert not (tmp_path / "D" / "two").exists()


def test_non_finite_weights_of_a_module_in_memory_are_refused(tmp_path: Path) -> None:
    module = TwoRecurrent()
    with torch.no_grad():
        module.first.bias_ih_l0[0] = float("nan")
    with pytest.raises(SpecError, match=r"two: weights of the module: 'first.bias_ih_l0' holds NaN \(1 of 15 values\)"):
        export_model(module, name="two", out=tmp_path, validate=False, inputs={"x": {"shape": ["batch", "seq", 3]}},
                     dims={"batch": {"size": 2}, "seq": {"size": 5}}, outputs=["z"])
    assert not (tmp_path / "two").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int64], ids=str)
def test_weights_of_another_dtype_are_refused(tmp_path: Path, cli, dtype: torch.dtype) -> None:
    def convert(state):
        state["first.weight_ih_l0"] = state["first.weight_ih_l0"].to(dtype)

    code, _, err = cli("export", _weights(tmp_path, convert), "--out", tmp_path / "D", "--no-validate")
    name = str(dtype).removeprefix("torch.")
    assert code == 2 and err.count("\n") == 1, err
    assert f"'first.weight_ih_l0' is {name}, the module's is float32 (loading would cast it silently)" in err
    assert "convert the checkpoint's tensors to the module's dtypes" in err


def test_weights_file_has_the_mode_of_the_other_files(tmp_path: Path, cli) -> None:
    code, _, err = cli("export", _spec_file(tmp_path, TWO_RECURRENT, name="two"), "--out", tmp_path / "D",
                       "--no-validate")
    assert code == 0, err
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "D" / "two").iterdir()}
    assert modes["weights.safetensors"] == 0o666 & ~mask
    assert set(modes.values()) == {0o666 & ~mask}, modes
