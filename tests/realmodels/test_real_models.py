"""Recurrent models from public PyPI packages, used exactly as their authors wrote them, exported
by rnnexport with both exporters and checked against eager at shapes no spec sweep uses.

The package source is fetched at test time (`tests.realmodels.fetch`), never committed. Each
model is built with ``torch.manual_seed(0)`` (its seeded initialization is the exported weights).
`MODELS` (the records below) also feeds ``scripts/realmodels_table.py``, the README's table.
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

from tests.realmodels.fetch import PLATFORM_WHEEL, fetch, load_file, stub_modules, synthetic_package

pytestmark = pytest.mark.realmodels

RUNTIMES = ["torch", "torchscript", "torch-export", "onnxruntime-cpu"]
EXPORTERS = ("legacy", "dynamo")
RECURRENT = ("RNN", "GRU", "LSTM")
ATOL, RTOL = 1e-4, 1e-3
# Format -> (its file, the runtime that loads it): a format an export leaves out is not validated.
FORMAT_FILES = {"onnx": ("model.onnx", "onnxruntime-cpu"), "torchscript": ("model.pt", "torchscript"),
                "pt2": ("model.pt2", "torch-export")}


@dataclasses.dataclass(frozen=True)
class RealModel:
    id: str
    package: str  # "name==version" on PyPI
    file: str  # the source file inside the package
    field: str  # what the model is for (README table)
    pattern: str  # what it shows an exporter (README table)
    needed: str  # what rnnexport needed beyond inputs/dims/outputs (README table)
    build: Callable[[], torch.nn.Module]  # seeded, eval mode
    inputs: dict  # export_model's inputs table
    dims: dict  # export_model's dims table
    outputs: list[str]
    unseen: Callable[[], tuple]  # forward() args at sizes outside every size and sweep above
    example: Callable[[], tuple]  # forward() args at the documented sizes (default-exporter test)
    torchscript: str = "script"  # the manifest's torchscript_method
    torchscript_note: str | None = None  # text a note must contain (why it traced, what it left out)
    # exporter -> (format, text in its reason): left out under the default formats, the rest validated.
    expect_missing: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def runtimes(self, exporter: str) -> list[str]:
        """RUNTIMES less the one whose file this exporter leaves out."""
        missing = self.expect_missing.get(exporter)
        return [r for r in RUNTIMES if not missing or r != FORMAT_FILES[missing[0]][1]]

    def files(self, exporter: str) -> list[str]:
        missing = self.expect_missing.get(exporter)
        return [file for fmt, (file, _) in FORMAT_FILES.items() if not missing or fmt != missing[0]]


# ---------------------------------------------------------------------------------------------
# 1. torchaudio DeepSpeech: a bidirectional ReLU nn.RNN.


def build_deepspeech() -> torch.nn.Module:
    src = fetch("torchaudio", "2.5.1", PLATFORM_WHEEL)
    mod = load_file(src / "torchaudio/models/deepspeech.py", "rnnexport_realmodels_torchaudio_deepspeech")
    torch.manual_seed(0)
    return mod.DeepSpeech(n_feature=8, n_hidden=16, n_class=5).eval()


DEEPSPEECH = RealModel(
    id="torchaudio-deepspeech",
    package="torchaudio==2.5.1", file="torchaudio/models/deepspeech.py",
    field="speech recognition",
    pattern="bidirectional ReLU nn.RNN (seq-first inside)",
    needed="nothing",
    build=build_deepspeech,
    inputs={"x": {"shape": ["batch", 1, "time", 8]}},  # [batch, 1, time, n_feature]
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "time": {"size": 6, "sweep": [1, 23]}},
    outputs=["log_probs"],  # [batch, time, n_class]
    unseen=lambda: (torch.randn(5, 1, 31, 8),),
    example=lambda: (torch.randn(2, 1, 6, 8),),
    torchscript="trace",  # hardtanh(x, 0, self.relu_max_clip): ints where the schema wants floats
    torchscript_note="torch.jit.script failed",
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
    package="easyocr==1.7.2", file="easyocr/model/model.py + modules.py",
    field="OCR",
    pattern="flatten_parameters() in forward inside a bare try/except; AdaptiveAvgPool2d((None, 1))",
    needed="min = 8 on width",
    build=build_easyocr,
    # forward(input, text): `text` is unused by the CTC model but is part of its signature.
    inputs={"input": {"shape": ["batch", 1, 32, "width"]},  # the image; forward()'s own argument names
            "text": {"dtype": "int64", "shape": ["batch", 1], "range": [0, 9]}},
    # The ResNet needs width >= 8 (torch.export's guards `4 <= width`, `width // 4 != 1`): without
    # `min` the program's width would start at 1 and torch.export refuses it. The output's time
    # axis is width // 4 + 1: derived, so it stays a dynamic axis of its own; the sweep checks it.
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "width": {"size": 40, "sweep": [16, 57, 72], "min": 8}},
    outputs=["logits"],  # [batch, width // 4 + 1, num_class]
    unseen=lambda: (torch.randn(5, 1, 32, 101), torch.zeros(5, 1, dtype=torch.long)),
    example=lambda: (torch.randn(2, 1, 32, 40), torch.zeros(2, 1, dtype=torch.long)),
    torchscript="trace",  # adaptive_avg_pool2d((None, 1)): not an int[2] for the script compiler
    torchscript_note="torch.jit.script failed",
    # torch's limitation, not rnnexport's: the TorchScript-based exporter refuses
    # AdaptiveAvgPool2d((None, 1)) once width is dynamic ("Unsupported: ONNX export of operator
    # adaptive pooling, since output_size is not constant"). model.pt and model.pt2 are made.
    expect_missing={"legacy": ("onnx", "adaptive pooling")},
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
    package="pytorch-forecasting==1.1.1", file="pytorch_forecasting/models/nn/rnn.py",
    field="time series",
    pattern="nn.LSTM subclass whose forward calls super().forward",
    needed="used without lengths (data-dependent branches)",
    build=build_forecasting_lstm,
    inputs={"x": {"shape": ["batch", "time", 4]}},
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "time": {"size": 6, "sweep": [1, 23]}},
    outputs=["output", "h_n", "c_n"],  # forward -> (output, (h_n, c_n)), flattened
    unseen=lambda: (torch.randn(5, 31, 4),),
    example=lambda: (torch.randn(2, 6, 4),),
    torchscript="trace",  # super().forward: 'Tensor' object has no attribute or method 'forward'
    torchscript_note="torch.jit.script failed",
)


# ---------------------------------------------------------------------------------------------
# 4. torchaudio WaveRNN (vocoder): two nn.GRU whose h0 is built from self.n_rnn, an upsampling
#    network whose convolution (kernel_size 5) shortens the spectrogram by 4 frames, and an
#    @torch.jit.export `infer` (the autoregressive sampler, a GRU step at a time). The waveform's
#    length is tied to the spectrogram's: samples = (frames - kernel_size + 1) * hop_length.

WAVERNN_KWARGS = dict(upsample_scales=[2, 2], n_classes=16, hop_length=4, n_res_block=1, n_rnn=16, n_fc=16,
                      kernel_size=5, n_freq=8, n_hidden=8, n_output=8)  # hop_length == prod(upsample_scales)


def build_wavernn() -> torch.nn.Module:
    src = fetch("torchaudio", "2.5.1", PLATFORM_WHEEL)
    mod = load_file(src / "torchaudio/models/wavernn.py", "rnnexport_realmodels_torchaudio_wavernn")
    torch.manual_seed(0)
    return mod.WaveRNN(**WAVERNN_KWARGS).eval()


def wavernn_args(batch: int, frames: int) -> tuple:
    return torch.randn(batch, 1, (frames - 4) * 4), torch.randn(batch, 1, 8, frames)


WAVERNN = RealModel(
    id="torchaudio-wavernn",
    package="torchaudio==2.5.1", file="torchaudio/models/wavernn.py",
    field="vocoder",
    pattern="two nn.GRU, h0 from self.n_rnn; @torch.jit.export infer; waveform length tied to frames",
    needed="derived dim samples = (frames - 4) * 4",
    build=build_wavernn,
    inputs={"waveform": {"shape": ["batch", 1, "samples"]}, "specgram": {"shape": ["batch", 1, 8, "frames"]}},
    # frames - 4 >= 2 in every case (at 1 torch.export would specialize the upsampled length).
    dims={"batch": {"size": 2, "sweep": [1, 3]}, "frames": {"size": 8, "sweep": [6, 13]},
          "samples": {"size": "(frames - 4) * 4"}},
    outputs=["logits"],  # [batch, 1, samples, n_classes]
    unseen=lambda: wavernn_args(5, 11),
    example=lambda: wavernn_args(2, 8),
    torchscript="script",  # scripted whole: model.pt keeps `infer` too
    # torch's limitation, not rnnexport's: the TorchScript-based exporter writes this forward with
    # an Unsqueeze whose axis is out of range (3 on a rank-2 tensor), static shapes or dynamic
    # alike: onnx.checker and ONNX Runtime refuse the file, so rnnexport installs no model.onnx.
    expect_missing={"legacy": ("onnx", "Unexpected axis value")},
)


# ---------------------------------------------------------------------------------------------
# 5. stanza PackedLSTM (pad=True): pack_padded_sequence(input, lengths) with enforce_sorted=True
#    (the default: lengths must be sorted descending), a bidirectional 2-layer nn.LSTM on the
#    PackedSequence, and pad_packed_sequence without total_length (the output's seq is the
#    longest length: the spec says one length always equals seq).


def build_stanza() -> torch.nn.Module:
    src = fetch("stanza", "1.9.2")
    mod = load_file(src / "stanza/models/common/packed_lstm.py", "rnnexport_realmodels_stanza_packed_lstm")
    torch.manual_seed(0)
    return mod.PackedLSTM(input_size=4, hidden_size=8, num_layers=2, batch_first=True, bidirectional=True,
                          pad=True).eval()


STANZA = RealModel(
    id="stanza-packed-lstm",
    package="stanza==1.9.2", file="stanza/models/common/packed_lstm.py",
    field="NLP tagging",
    pattern="pack_padded_sequence(enforce_sorted=True) + pad_packed_sequence without total_length",
    needed="sorted + reaches_max on lengths",
    build=build_stanza,
    inputs={"input": {"shape": ["batch", "seq", 4]},
            "lengths": {"dtype": "int64", "shape": ["batch"], "range": [1, "seq"], "sorted": "descending",
                        "reaches_max": True}},
    dims={"batch": {"size": 3, "sweep": [1, 4]}, "seq": {"size": 5, "sweep": [1, 9]}},
    outputs=["output", "h_n", "c_n"],  # forward -> (padded output, (h_n, c_n)), flattened
    unseen=lambda: (torch.randn(5, 12, 4), torch.tensor([12, 9, 7, 3, 1])),
    example=lambda: (torch.randn(3, 5, 4), torch.tensor([5, 4, 2])),
    torchscript="trace",  # pack_padded_sequence(input, lengths, ...) with untyped arguments
    torchscript_note="torch.jit.script failed",
)

MODELS = [DEEPSPEECH, EASYOCR, FORECASTING, WAVERNN, STANZA]
EXPORT_CASES = [pytest.param(m, exporter, id=f"{m.id}-{exporter}") for m in MODELS for exporter in EXPORTERS]
INT8_MODELS = (EASYOCR, FORECASTING, STANZA)  # their LSTMs quantize


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


def run_files(real: RealModel, folder: Path, args: tuple) -> dict[str, list[np.ndarray]]:
    """`args` through every model file in `folder`: file -> flattened outputs."""
    got = {}
    if (folder / "model.onnx").exists():
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        by_name = dict(zip(real.inputs, (a.numpy() for a in args)))
        got["model.onnx"] = session.run(None, {i.name: by_name[i.name] for i in session.get_inputs()})
    with torch.no_grad():
        if (folder / "model.pt").exists():
            got["model.pt"] = flat(torch.jit.load(str(folder / "model.pt"))(*args))
        if (folder / "model.pt2").exists():
            got["model.pt2"] = flat(torch.export.load(str(folder / "model.pt2")).module()(*args))
    return got


@pytest.mark.parametrize(("real", "exporter"), EXPORT_CASES)
def test_export_matches_eager_at_unseen_shapes(real: RealModel, exporter: str, tmp_path: Path):
    """Exported as its authors wrote it and validated on every runtime, the files match eager
    at shapes no validation case used; the LSTM models' dynamo exports with an int8 variant
    (`assert_int8_meets_the_default_criterion`)."""
    from rnnexport.export import export_model

    module = real.build()
    name = real.id.replace("-", "_")
    int8 = exporter == "dynamo" and any(real is m for m in INT8_MODELS)  # easyocr's adaptive pooling has no legacy ONNX
    start = time.perf_counter()
    try:
        result = export_model(
            module, name=name, out=tmp_path, exporter=exporter, inputs=real.inputs, dims=real.dims,
            outputs=real.outputs, runtimes=real.runtimes(exporter), variants="int8" if int8 else None)
    finally:
        print(f"\n[realmodels] {real.id} exporter={exporter}: export_model took {time.perf_counter() - start:.1f} s")

    assert result.report is not None and result.report.passed, [c.describe() for c in result.report.criteria_failures]
    assert set(real.runtimes(exporter)) <= set(result.report.runtimes)
    manifest = json.loads((result.path / "manifest.json").read_text())
    files = real.files(exporter)
    assert sorted(p.name for p in result.path.glob("model.*")) == sorted([*files, *["model.int8.onnx"] * int8])
    if int8:
        assert_int8_meets_the_default_criterion(real, result, manifest)
    if exporter in real.expect_missing:  # left out with its reason; the rest made and validated
        fmt, text = real.expect_missing[exporter]
        assert result.missing and FORMAT_FILES[fmt][0] in result.missing and text in result.missing, result.missing
        assert list(manifest.get("formats_missing", {})) == [fmt], manifest.get("formats_missing")
        assert text in manifest["formats_missing"][fmt]
    else:
        assert result.missing is None, result.missing
        assert "formats_missing" not in manifest

    layers = recurrent_layers(module)
    if "model.onnx" in files:  # native recurrent ops, one per layer; nothing unrolled into a Loop/Scan
        nodes = onnx_nodes(result.path / "model.onnx")
        native = [n for n in nodes if n.op_type in RECURRENT and n.domain in ("", "ai.onnx")]
        assert len(native) == layers, [n.op_type for n in nodes]
        assert not [n.op_type for n in nodes if n.op_type in ("Loop", "Scan")]
        assert len(manifest["recurrent_ops"]) == layers, manifest["recurrent_ops"]
    assert manifest["torchscript_method"] == real.torchscript
    if real.torchscript_note:
        assert any(real.torchscript_note in note for note in result.notes), result.notes

    # Independent check at a batch and length (width) that no size or sweep above uses.
    args = real.unseen()
    with torch.no_grad():
        expected = flat(module(*args))
    got = run_files(real, result.path, args)
    assert sorted(got) == sorted(files)
    for file, outputs in got.items():
        assert len(outputs) == len(expected), file
        for want, out, out_name in zip(expected, outputs, real.outputs):
            np.testing.assert_allclose(out, want, atol=ATOL, rtol=RTOL, err_msg=f"{file} {out_name}")


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
    except Exception as exc:  # every case calling this is documented to export
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


def test_default_exporter_keeps_wavernn_grus_native_with_dims_pinned(tmp_path):
    """Both GRUs native, but batch, frames and the waveform's length fixed at the example's."""
    module, args, model, ops = default_export(WAVERNN, tmp_path)
    assert ops.count("GRU") == recurrent_layers(module) == 2
    assert pinned(model.graph.input) == [[2, 1, 16], [2, 1, 8, 8]]
    assert pinned(model.graph.output) == [[2, 1, 16, 16]]
    assert_rejects_unseen_shapes(WAVERNN, tmp_path / "default.onnx")


def test_default_exporter_fails_on_stanza_packed_sequence(tmp_path):
    """torch.export cannot run nn.LSTM on a PackedSequence: its h0 is sized from the
    data-dependent batch_sizes[0] (torch/nn/modules/rnn.py), a FakeTensor under export."""
    module, args = STANZA.build(), STANZA.example()
    with pytest.raises(Exception) as info, torch.no_grad():
        torch.onnx.export(module, args, str(tmp_path / "default.onnx"), dynamo=True)
    text = str(info.value)
    assert "zeros(): argument 'size'" in text and "FakeTensor" in text, text[:2000]


def assert_int8_meets_the_default_criterion(real: RealModel, result, manifest: dict) -> None:
    """The LSTMs became ONNX Runtime's integer op and the int8 variant meets the default
    criterion (cosine >= 0.99) on the seeded sweep, beside the fp32 file's tolerances."""
    assert "com.microsoft.DynamicQuantizeLSTM" in manifest["variants"]["int8"]["ops"]
    judged = [c for c in result.report.criteria if c.runtime == "onnxruntime-cpu:int8"]
    assert judged and all(c.judged and c.criterion == "cosine" and c.value >= 0.99 for c in judged)
    print(f"\n[realmodels] {real.id} int8: {manifest['files']['model.int8.onnx']['bytes']} bytes against "
          f"{manifest['files']['model.onnx']['bytes']}; cosine {min(c.value for c in judged):.5f}")
