"""Fails loudly when torch changes the private internals that rnnexport patches for speed."""

from __future__ import annotations

import hashlib
import io

from rnnexport.builder import build_module
from rnnexport.export.torch_internals import reused_torchlib_registry
from rnnexport.export.onnx_dynamo import export_onnx_dynamo
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.spec import get_spec


def test_registry_patch_applies():
    from torch.onnx._internal.exporter import _registration

    with reused_torchlib_registry() as applied:
        assert applied, "torch.onnx's ONNXRegistry.from_torchlib changed: update rnnexport/export/torch_internals.py"
        first = _registration.ONNXRegistry.from_torchlib(18)
        second = _registration.ONNXRegistry.from_torchlib(18)
        assert first is not second and first.functions == second.functions
        assert first.functions and all(a is not b for a, b in zip(first.functions.values(), second.functions.values()))
    assert not getattr(_registration.ONNXRegistry.from_torchlib, "__wrapped__", None)


def test_patched_export_is_identical_to_unpatched(tmp_path, monkeypatch):
    import rnnexport.export.torch_internals as internals

    spec = get_spec("deep")
    program, _ = native_program(RNNExporting(spec, build_module(spec)))
    export_onnx_dynamo(program, spec, tmp_path / "patched.onnx", opset=18)
    monkeypatch.setattr(internals, "_registry_class", lambda: None)
    export_onnx_dynamo(program, spec, tmp_path / "plain.onnx", opset=18)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("patched.onnx", "plain.onnx")]
    assert digest[0] == digest[1]


def test_torchscript_debug_records_are_stripped_and_the_module_still_loads(tmp_path):
    import torch

    from rnnexport.export.torchscript import export_torchscript

    spec = get_spec("deep_bidirectional")
    module = build_module(spec)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    export_torchscript(spec, tmp_path / "weights.pt", tmp_path / "model.pt")
    records = torch._C.PyTorchFileReader(str(tmp_path / "model.pt")).get_all_records()
    assert records and not [r for r in records if r.endswith(".debug_pkl")], \
        "torch's archive reader/writer changed: update rnnexport/export/torch_internals.py"
    assert b"site-packages" not in (tmp_path / "model.pt").read_bytes()
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    x, h = torch.randn(2, 7, 5), torch.randn(6, 2, 8)
    assert torch.equal(loaded(x, h)[0], module(x, h)[0])


def test_flat_weight_names_match_torchs_private_order():
    """rnnexport names the flat weights from PyTorch's documented naming; this canary fails if
    that order ever departs from RNNBase's private ``_flat_weights_names``."""
    import torch

    from rnnexport.ops import flat_weight_names

    modules = [torch.nn.RNN(3, 4, 2, bidirectional=True), torch.nn.GRU(3, 4, bias=False),
               torch.nn.LSTM(3, 4, 3, proj_size=2, bidirectional=True)]
    for module in modules:
        assert flat_weight_names(module) == module._flat_weights_names


def test_torchscript_onnx_exporter_presence_is_detected(monkeypatch):
    import importlib.util

    import torch

    from rnnexport.export import default_exporter
    from rnnexport.export.torch_internals import torchscript_onnx_exporter_present

    # Against an independent fact: dynamo=False works in this torch exactly when it is detected.
    try:
        torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), io.BytesIO(), dynamo=False)
        works = True
    except Exception:
        works = False
    assert torchscript_onnx_exporter_present() is works
    # A torch without it is detected as such, and the default exporter becomes dynamo.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch.onnx._internal.torchscript_exporter" else real(name, *a))
    assert torchscript_onnx_exporter_present() is False
    from rnnexport.export.onnx_legacy import legacy_exporter_available

    legacy_exporter_available.cache_clear()  # looked up once per process
    try:
        assert default_exporter()[0] == "dynamo"
    finally:
        monkeypatch.undo()
        legacy_exporter_available.cache_clear()
