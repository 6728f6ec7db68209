"""Formats are independent: one that cannot be made does not block the others, and no model
file is installed that its own runtime cannot load (validated or not)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from rnnexport.errors import ExportError, SpecError, UsageError
from rnnexport.export.loadable import check_onnx
from rnnexport.formats import FormatPlan, parse_formats
from rnnexport.modelspec_load import load_model_spec

UNSCRIPTABLE = '''
import torch

class NoTorchScript(torch.nn.Module):
    """Neither scripting (a set) nor torch.jit.trace (it refuses to be traced) can compile it;
    the ONNX exporters can (the legacy one traces too, but for ONNX)."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        if torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            raise RuntimeError("this module cannot be traced")
        out, _ = self.gru(x)
        return out * len({1, 2})


class ExportedMethod(torch.nn.Module):
    """forward cannot be scripted; an @torch.jit.export method cannot be compiled either."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        out, _ = self.gru(x)
        return out * len({1, 2})

    @torch.jit.export
    def infer(self, x):
        return {1, 2}
'''

SPEC = '''
module = "nots.py:{cls}"
{extra}
[inputs.x]
shape = ["batch", "seq", 3]
[dims.batch]
size = 2
sweep = [1, 4]
[dims.seq]
size = 5
sweep = [1, 19]
[outputs]
names = ["y"]
'''


def _spec(tmp_path: Path, cls: str = "NoTorchScript", extra: str = "") -> Path:
    (tmp_path / "nots.py").write_text(UNSCRIPTABLE)
    path = tmp_path / f"{cls.lower()}.toml"
    path.write_text(SPEC.format(cls=cls, extra=extra))
    return path


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_module_without_torchscript_still_gets_validated_onnx_and_pt2(tmp_path, cli, exporter) -> None:
    spec = _spec(tmp_path)
    code, out, err = cli("export", spec, "--out", tmp_path / "out", "--exporter", exporter)
    assert code == 1, err
    assert "installed WITHOUT model.pt (torchscript)" in err and "cannot be traced" in err
    assert "--formats onnx,pt2 exports only what can be made" in err
    folder = tmp_path / "out" / "notorchscript"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.pt2", "weights.safetensors", "golden.npz"}
    assert "cannot be traced" in manifest["formats_missing"]["torchscript"]
    assert manifest["validation"]["passed"] is True
    assert {"onnxruntime-cpu", "torch-export"} <= set(manifest["validation"]["runtimes"])
    # Validating it later passes on what it has, and says what it lacks and why.
    code, out, _ = cli("validate", folder)
    assert code == 0, out
    assert "not in this artifact: model.pt (torchscript)" in out
    assert "artifact has no model.pt (not made:" in out


def test_formats_chosen_explicitly_are_required(tmp_path, cli) -> None:
    spec = _spec(tmp_path)
    code, _, err = cli("export", spec, "--out", tmp_path / "out", "--formats", "onnx,pt2")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "notorchscript" / "manifest.json").read_text())
    assert manifest["formats"] == ["onnx", "pt2"] and "formats_missing" not in manifest
    # Asked for, and impossible: an error, nothing installed.
    code, _, err = cli("export", spec, "--out", tmp_path / "other", "--formats", "torchscript")
    assert code == 2 and "torch.jit.trace failed: RuntimeError: this module cannot be traced" in err
    assert not (tmp_path / "other" / "notorchscript").exists()


def test_formats_in_the_spec_and_the_api(tmp_path) -> None:
    from rnnexport.export import export_spec

    spec = load_model_spec(_spec(tmp_path, extra='formats = ["onnx"]'))
    assert spec.formats == ("onnx",)
    result = export_spec(spec, tmp_path / "out", runtimes=["onnxruntime-cpu"])
    assert sorted(p.name for p in result.path.iterdir()) == ["golden.npz", "manifest.json", "model.onnx",
                                                              "weights.safetensors"]
    assert result.missing is None
    result = export_spec(spec, tmp_path / "api", formats=["pt2"], runtimes=["torch-export"])
    assert "model.pt2" in {p.name for p in result.path.iterdir()} and not (result.path / "model.onnx").exists()


@pytest.mark.parametrize("value, message", [
    ("onxx", "unknown format 'onxx' (did you mean 'onnx'?); valid: onnx, torchscript, pt2"),
    ("onnx,onnx", "formats repeat a name"),
    ("", "unknown format ''"),
])
def test_bad_formats_are_exit_2_naming_the_valid_ones(tmp_path, cli, value, message) -> None:
    code, _, err = cli("export", "single_layer", "--out", tmp_path, "--formats", value)
    assert code == 2 and message in err
    assert not any(tmp_path.iterdir())
    with pytest.raises(SpecError, match=r"invalid value for 'formats.0': 'pt3' \(did you mean 'pt2'\?\); valid: 'onnx' \| 'torchscript' \| 'pt2'"):
        load_model_spec(_spec(tmp_path, extra='formats = ["pt3"]'))


def test_tracing_records_forward_when_an_exported_method_cannot_compile(tmp_path) -> None:
    from rnnexport.export import export_spec

    result = export_spec(load_model_spec(_spec(tmp_path, "ExportedMethod")), tmp_path / "out",
                         runtimes=["torchscript"])
    assert json.loads((result.path / "manifest.json").read_text())["torchscript_method"] == "trace"
    assert any("@torch.jit.export methods (infer)" in note for note in result.notes)
    assert any("torch.jit.script failed (UnsupportedNodeError: Set" in note and "nots.py:" in note
               for note in result.notes)


def test_format_plan_records_only_when_not_chosen() -> None:
    plan = FormatPlan.of("m", None)

    def fail() -> None:
        raise ExportError("no")

    assert plan.attempt("torchscript", fail) is None and plan.missing == {"torchscript": "no"}
    assert plan.files() == ["model.onnx", "model.pt2"]
    assert plan.manifest_fields() == {"formats_missing": {"torchscript": "no"}}
    with pytest.raises(ExportError, match="no"):
        FormatPlan.of("m", "torchscript").attempt("torchscript", fail)
    assert parse_formats(["pt2", "onnx"], "x", UsageError) == ("onnx", "pt2")


def _int8_add(path: Path) -> Path:
    """A graph onnx.checker accepts and ONNX Runtime refuses to load (no int8 Add kernel)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT8, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, ["n"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_an_onnx_file_onnx_runtime_cannot_load_is_refused(tmp_path) -> None:
    path = _int8_add(tmp_path / "model.onnx")
    onnx.checker.check_model(str(path), full_check=True)  # what the checker alone let through
    with pytest.raises(ExportError, match=r"^art: ONNX Runtime cannot load the exported model.onnx: .*not installed"):
        check_onnx(path, "art")


def test_an_unloadable_onnx_is_never_installed_even_without_validation(tmp_path, cli, monkeypatch) -> None:
    from rnnexport.export import onnx_legacy

    def broken(module, args, spec, path, opset):
        _int8_add(path)
        return []

    monkeypatch.setattr(onnx_legacy, "export_onnx_legacy", broken)
    code, _, err = cli("export", "single_layer", "--out", tmp_path, "--no-validate", "--formats", "onnx")
    assert code == 1 and "single_layer: ONNX Runtime cannot load the exported model.onnx" in err
    assert not (tmp_path / "single_layer").exists()
