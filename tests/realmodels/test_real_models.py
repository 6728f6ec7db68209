"""Recurrent models from public PyPI packages, used exactly as their authors wrote them, exported
by rnnexport with both exporters and checked against eager at shapes no spec sweep uses.

The package source is fetched at test time (`tests.realmodels.fetch`), never committed. Each
model is built with ``torch.manual_seed(0)`` (its seeded initialization is the exported weights).
"""

from __future__ import annotations

import dataclasses
import json
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnexport.errors import RuntimeUnavailableError
from tests.realmodels.fetch import PLATFORM_WHEEL, fetch, load_file, stub_modules, synthetic_package

pytestmark = pytest.mark.realmodels

RUNTIMES = ["torch", "torchscript", "torch-export", "onnxruntime-cpu"]
RECURRENT = ("RNN", "GRU", "LSTM")
ATOL, RTOL = 1e-4, 1e-3


@dataclasses.dataclass(frozen=True)
class RealModel:
    id: str
    build: Callable[[], torch.nn.Module]  # seeded, eval mode
    inputs: dict  # export_model's inputs table
    dims: dict  # export_model's dims table
    outputs: list[str]
    unseen: Callable[[], tuple]  # forward() args at sizes outside every size and sweep above
    example: Callable[[], tuple]  # forward() args at the documented sizes (default-exporter test)


# ---------------------------------------------------------------------------------------------
# 1. torchaudio DeepSpeech: a bidirectional ReLU nn.RNN.


def build_deepspeech() -> torch.nn.Module:
    src = fetch("torchaudio", "2.5.1", PLATFORM_WHEEL)
    mod = load_file(src / "torchaudio/models/deepspeech.py", "rnnexport_realmodels_torchaudio_deepspeech")
    torch.manual_seed(0)
    return mod.DeepSpeech(n_feature=8, n_hidden=16, n_class=5).eval()


DEEPSPEECH = RealModel(
    id="torchaudio-deepspeech",
    build=build_deepspeech,
    inputs={"x": {"shape": ["batch", 1, "time", 8]}},  # [batch, 1, time, n_feature]
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "time": {"size": 6, "sweep": [1, 23]}},
    outputs=["log_probs"],  # [batch, time, n_class]
    unseen=lambda: (torch.randn(5, 1, 31, 8),),
    example=lambda: (torch.randn(2, 1, 6, 8),),
)


# ---------------------------------------------------------------------------------------------
# 2. easyocr CRNN recognizer: ResNet features -> two BidirectionalLSTM whose forward calls
#    self.rnn.flatten_parameters() inside a bare try/except.
#
# model.py imports `.modules` relatively, so both files load into a synthetic package (the real
# easyocr/__init__.py imports cv2, PIL, scipy, ... and never runs). modules.py imports torchvision
# (and `from torchvision import models`) at top level; they are used only by `vgg16_bn` (the CRAFT
# text *detector*'s backbone: models.vgg16_bn). `Model` builds ResNet_FeatureExtractor and
# BidirectionalLSTM, which are plain torch.nn (so is VGG_FeatureExtractor, which Model does not use
# either). torchvision is not a dependency of rnnexport, so an empty stub stands in for it ONLY
# while modules.py executes; nothing the test runs touches it.


def build_easyocr() -> torch.nn.Module:
    directory = fetch("easyocr", "1.7.2") / "easyocr" / "model"
    package = "rnnexport_realmodels_easyocr_model"
    torchvision = types.ModuleType("torchvision")
    torchvision.__version__ = "0.0.0"
    torchvision.models = types.ModuleType("torchvision.models")
    stubs = {"torchvision": torchvision, "torchvision.models": torchvision.models}
    try:
        import packaging.version  # noqa: F401  (modules.py: `from packaging import version`, vgg16_bn only)
    except ImportError:  # pragma: no cover - packaging ships with pip's environments
        packaging = types.ModuleType("packaging")
        packaging.version = types.ModuleType("packaging.version")
        stubs.update({"packaging": packaging, "packaging.version": packaging.version})
    synthetic_package(package, directory)
    with stub_modules(stubs):
        load_file(directory / "modules.py", f"{package}.modules")
        mod = load_file(directory / "model.py", f"{package}.model")
    torch.manual_seed(0)
    return mod.Model(input_channel=1, output_channel=32, hidden_size=16, num_class=10).eval()


EASYOCR = RealModel(
    id="easyocr-crnn",
    build=build_easyocr,
    # forward(input, text): `text` is unused by the CTC model but is part of its signature.
    inputs={"input": {"shape": ["batch", 1, 32, "width"]},  # the image; forward()'s own argument names
            "text": {"dtype": "int64", "shape": ["batch", 1], "range": [0, 9]}},
    # The output's time axis is width // 4 + 1: derived, so rnnexport cannot name it after `width`
    # (it stays a dynamic axis of its own); the sweep still checks it at several widths.
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "width": {"size": 40, "sweep": [16, 57, 72]}},
    outputs=["logits"],  # [batch, width // 4 + 1, num_class]
    unseen=lambda: (torch.randn(5, 1, 32, 101), torch.zeros(5, 1, dtype=torch.long)),
    example=lambda: (torch.randn(2, 1, 32, 40), torch.zeros(2, 1, dtype=torch.long)),
)


# ---------------------------------------------------------------------------------------------
# 3. pytorch-forecasting LSTM: a subclass of nn.LSTM whose forward calls super().forward.
#    torch.jit.script fails on that super() call, so rnnexport traces (and says so in a note).
#    Used without `lengths`: that path packs the sequence after data-dependent Python branches
#    (`assert min_length >= 0`, `if max_length == 0`, ...) that torch.export cannot trace
#    (GuardOnDataDependentSymNode), so only the plain super().forward path is exported.


def build_forecasting_lstm() -> torch.nn.Module:
    src = fetch("pytorch-forecasting", "1.1.1")
    mod = load_file(src / "pytorch_forecasting/models/nn/rnn.py", "rnnexport_realmodels_pytorch_forecasting_rnn")
    torch.manual_seed(0)
    return mod.LSTM(input_size=4, hidden_size=8, num_layers=2, batch_first=True).eval()


FORECASTING = RealModel(
    id="pytorch-forecasting-lstm",
    build=build_forecasting_lstm,
    inputs={"x": {"shape": ["batch", "time", 4]}},
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "time": {"size": 6, "sweep": [1, 23]}},
    outputs=["output", "h_n", "c_n"],  # forward -> (output, (h_n, c_n)), flattened
    unseen=lambda: (torch.randn(5, 31, 4),),
    example=lambda: (torch.randn(2, 6, 4),),
)

MODELS = [DEEPSPEECH, EASYOCR, FORECASTING]

# rnnexport gives every dim of the torch.export program min=1 (`_dynamic_shapes` in
# rnnexport/export/model.py; a dims table has no `min` key), but the CRNN's ResNet needs
# width >= 8: torch.export's guards `4 <= width` and `width // 4 != 1` do not hold on [1, inf], so
# no model.pt2 is made (the dynamo ONNX, made from that program, neither) and validating on
# torch-export then fails. torch.export itself keeps width dynamic with Dim("width", min=8).
EASYOCR_NO_PT2 = pytest.mark.xfail(
    strict=True, raises=RuntimeUnavailableError,
    reason="rnnexport limitation: torch.export Dims always min=1, the CRNN needs width >= 8: "
           "RuntimeUnavailableError: runtime 'torch-export' was asked for but cannot run easyocr_crnn: artifact has "
           "no model.pt2 (not made: easyocr_crnn: torch.export cannot export the module: UserError: Constraints "
           "violated (width)!)")
# With legacy, a second loss hides behind the first (torch's limitation, not rnnexport's): the
# TorchScript-based exporter refuses AdaptiveAvgPool2d((None, 1)) once width is dynamic, so no
# model.onnx either ("SymbolicValueError: Unsupported: ONNX export of operator adaptive pooling,
# since output_size is not constant").
EXPORT_CASES = [pytest.param(m, exporter, marks=[EASYOCR_NO_PT2] if m is EASYOCR else [], id=f"{m.id}-{exporter}")
                for m in MODELS for exporter in ("legacy", "dynamo")]


# ---------------------------------------------------------------------------------------------


def recurrent_layers(module: torch.nn.Module) -> int:
    return sum(m.num_layers for m in module.modules() if isinstance(m, torch.nn.RNNBase))


def flat(outputs) -> list[np.ndarray]:
    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().numpy()]
    return [array for item in outputs for array in flat(item)]


def onnx_nodes(path: Path) -> list:
    import onnx

    model = onnx.load(str(path))
    return [*model.graph.node, *(n for f in model.functions for n in f.node)]


def pinned(values) -> list[list]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


@pytest.mark.parametrize(("real", "exporter"), EXPORT_CASES)
def test_export_matches_eager_at_unseen_shapes(real: RealModel, exporter: str, tmp_path: Path):
    import onnxruntime as ort

    from rnnexport.export import export_model

    module = real.build()
    name = real.id.replace("-", "_")
    start = time.perf_counter()
    try:
        result = export_model(
            module, name=name, out=tmp_path, exporter=exporter, inputs=real.inputs, dims=real.dims,
            outputs=real.outputs, runtimes=RUNTIMES)
    finally:
        elapsed = time.perf_counter() - start
        print(f"\n[realmodels] {real.id} exporter={exporter}: export_model took {elapsed:.1f} s")

    assert result.report is not None and result.report.passed
    assert set(RUNTIMES) <= set(result.report.runtimes)

    # Native recurrent ops, one per layer; nothing unrolled into a Loop/Scan.
    nodes = onnx_nodes(result.path / "model.onnx")
    native = [n for n in nodes if n.op_type in RECURRENT and n.domain in ("", "ai.onnx")]
    assert len(native) == recurrent_layers(module), [n.op_type for n in nodes]
    assert not [n.op_type for n in nodes if n.op_type in ("Loop", "Scan")]

    manifest = json.loads((result.path / "manifest.json").read_text())
    assert len(manifest["recurrent_ops"]) == recurrent_layers(module), manifest["recurrent_ops"]
    if real is FORECASTING:
        assert manifest["torchscript_method"] == "trace"
        assert any("torch.jit.script" in note and "fail" in note for note in result.notes), result.notes

    # Independent check at a batch and length (width) that no size or sweep above uses.
    args = real.unseen()
    with torch.no_grad():
        expected = flat(module(*args))
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    by_name = dict(zip(real.inputs, (a.numpy() for a in args)))
    feed = {i.name: by_name[i.name] for i in session.get_inputs()}  # an unused input may be dropped
    got_onnx = session.run(None, feed)
    scripted = torch.jit.load(str(result.path / "model.pt"))
    with torch.no_grad():
        got_ts = flat(scripted(*args))
    assert len(got_onnx) == len(got_ts) == len(expected)
    for want, onnx_out, ts_out, out_name in zip(expected, got_onnx, got_ts, real.outputs):
        np.testing.assert_allclose(onnx_out, want, atol=ATOL, rtol=RTOL, err_msg=f"onnxruntime {out_name}")
        np.testing.assert_allclose(ts_out, want, atol=ATOL, rtol=RTOL, err_msg=f"torchscript {out_name}")


# ---------------------------------------------------------------------------------------------
# torch's default exporter on the same modules (torch.onnx.export(..., dynamo=True), no
# dynamic_shapes): what it does to each model, as verified with torch 2.13.


def default_export(real: RealModel, tmp_path: Path):
    import onnx

    module, args = real.build(), real.example()
    path = tmp_path / "default.onnx"
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), dynamo=True)
    except Exception as exc:  # every case below is documented to export
        pytest.fail(f"{real.id}: torch.onnx.export(dynamo=True) failed: {type(exc).__name__}: {exc}")
    model = onnx.load(str(path))
    nodes = onnx_nodes(path)
    return module, args, model, [n.op_type for n in nodes]


def assert_rejects_unseen_shapes(real: RealModel, path: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), real.unseen())}
    with pytest.raises(Exception, match="invalid dimensions"):
        session.run(None, feed)


def test_default_exporter_unrolls_deepspeech_relu_rnn(tmp_path):
    """It succeeds, but the bidirectional ReLU nn.RNN becomes per-step MatMul/Relu (no RNN op,
    no Loop/Scan either): unrolled over the example's 6 steps, every dim pinned."""
    module, args, model, ops = default_export(DEEPSPEECH, tmp_path)
    assert recurrent_layers(module) == 1
    assert not [op for op in ops if op in (*RECURRENT, "Loop", "Scan")], ops
    assert ops.count("Relu") >= 2 * 6  # both directions, every step (plus the clipped ReLUs)
    assert pinned(model.graph.input) == [[2, 1, 6, 8]]
    assert pinned(model.graph.output) == [[2, 6, 5]]
    assert_rejects_unseen_shapes(DEEPSPEECH, tmp_path / "default.onnx")


def test_default_exporter_keeps_easyocr_lstms_but_pins_the_width(tmp_path):
    """Native LSTM ops (one per BidirectionalLSTM), but the output's time axis is fixed at the
    example's 40 // 4 + 1 = 11 and the inputs at [2, 1, 32, 40]."""
    module, args, model, ops = default_export(EASYOCR, tmp_path)
    assert ops.count("LSTM") == recurrent_layers(module) == 2
    assert pinned(model.graph.input) == [[2, 1, 32, 40], [2, 1]]
    assert pinned(model.graph.output) == [[2, 11, 10]]
    assert_rejects_unseen_shapes(EASYOCR, tmp_path / "default.onnx")


def test_default_exporter_keeps_forecasting_lstm_native_with_dims_pinned(tmp_path):
    """super().forward is no obstacle to torch.export: one native LSTM op per layer, but batch and
    time are fixed at the example's."""
    module, args, model, ops = default_export(FORECASTING, tmp_path)
    assert ops.count("LSTM") == recurrent_layers(module) == 2
    assert pinned(model.graph.input) == [[2, 6, 4]]
    assert pinned(model.graph.output) == [[2, 6, 8], [2, 2, 8], [2, 2, 8]]
    assert_rejects_unseen_shapes(FORECASTING, tmp_path / "default.onnx")
