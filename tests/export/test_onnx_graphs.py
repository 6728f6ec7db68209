"""Both ONNX exporters over a configuration matrix: graph structure, dynamic axes, numbers.

Each row is exported directly (no TorchScript, no artifact folder) and run in ONNX Runtime at
sequence lengths other than the example's, against eager PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rnnexport.builder import build_module
from rnnexport.compare import Tolerance, compare_arrays, passed
from rnnexport.export.onnx_dynamo import export_onnx_dynamo, export_program
from rnnexport.export.onnx_legacy import export_onnx_legacy
from rnnexport.inputs import Case, make_inputs
from rnnexport.spec import RNNSpec

# Every value of every axis appears at least once; input_size != hidden_size throughout.
MATRIX = [
    RNNSpec("m_tanh_1", input_size=3, hidden_size=4, batch_size=2, seq_len=5),
    RNNSpec("m_relu_3_bi_bf", input_size=6, hidden_size=4, num_layers=3, bidirectional=True,
            batch_first=True, nonlinearity="relu", batch_size=2, seq_len=5),
    RNNSpec("m_tanh_3_nobias", input_size=2, hidden_size=5, num_layers=3, bias=False, batch_size=4, seq_len=3),
    RNNSpec("m_relu_1_bi_nobias", input_size=7, hidden_size=3, bidirectional=True, nonlinearity="relu",
            bias=False, batch_size=3, seq_len=2),
    RNNSpec("m_tanh_2_bf_dropout", input_size=5, hidden_size=6, num_layers=2, batch_first=True,
            dropout=0.2, batch_size=2, seq_len=4, seed=3),
]
CASES = [Case.rnn(1, 1, "zero"), Case.rnn(3, 17, "random"), Case.rnn(2, 1000, "random")]
FORBIDDEN = {"MatMul", "Gemm", "Tanh", "Relu", "Loop", "Scan", "Add", "Mul"}


def export(exporter: str, spec: RNNSpec, path: Path) -> None:
    module = build_module(spec)
    if exporter == "legacy":
        export_onnx_legacy(module, spec, path, opset=18)
    else:
        program, _ = export_program(module, spec)
        export_onnx_dynamo(program, spec, path, opset=18)


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("spec", MATRIX, ids=lambda s: s.name)
def test_native_rnn_graph_dynamic_and_exact(tmp_path, exporter, spec):
    path = tmp_path / "model.onnx"
    export(exporter, spec, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    ops = [n.op_type for n in model.graph.node]
    assert ops.count("RNN") == spec.num_layers, ops
    assert not FORBIDDEN & set(ops), f"per-step arithmetic in the graph: {ops}"
    for node in (n for n in model.graph.node if n.op_type == "RNN"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["hidden_size"] == spec.hidden_size
        assert attrs.get("direction", b"forward") == (b"bidirectional" if spec.bidirectional else b"forward")

    seq_dims = ["batch", "seq"] if spec.batch_first else ["seq", "batch"]
    io = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    assert [v.name for v in model.graph.input] == ["input", "h_0"]
    assert [v.name for v in model.graph.output] == ["output", "h_n"]
    assert dims(io["input"]) == [*seq_dims, spec.input_size]
    assert dims(io["output"]) == [*seq_dims, spec.num_directions * spec.hidden_size]
    assert dims(io["h_0"]) == [spec.num_layers * spec.num_directions, "batch", spec.hidden_size]
    assert dims(io["h_n"]) == [spec.num_layers * spec.num_directions, "batch", spec.hidden_size]

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = build_module(spec)
    for case in CASES:
        feeds = make_inputs(spec, case)
        got = dict(zip(["output", "h_n"], session.run(["output", "h_n"], dict(feeds))))
        with torch.no_grad():
            want = module(*(torch.from_numpy(feeds[n].copy()) for n in ("input", "h_0")))
        for name, expected in zip(["output", "h_n"], want):
            record = compare_arrays(got[name], expected.numpy(), tolerance=Tolerance(), artifact=spec.name,
                                    runtime=exporter, case=case.id, output=name, against="torch")
            assert passed(record), record


def test_dynamo_initializers_are_named_by_layer(tmp_path):
    spec = MATRIX[1]
    export("dynamo", spec, tmp_path / "m.onnx")
    names = {i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert {f"{p}_l{k}" for p in "WRB" for k in range(3)} <= names
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(n.metadata_props for n in model.graph.node) and not model.metadata_props


def test_dynamo_weight_layout_matches_pytorch(tmp_path):
    """W_l0 is [D, H, I] = stack(weight_ih_l0, weight_ih_l0_reverse), B = concat(b_ih, b_hh)."""
    from onnx import numpy_helper

    spec = MATRIX[1]
    export("dynamo", spec, tmp_path / "m.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    sd = {k: v.numpy() for k, v in build_module(spec).state_dict().items()}
    np.testing.assert_array_equal(inits["W_l1"], np.stack([sd["weight_ih_l1"], sd["weight_ih_l1_reverse"]]))
    np.testing.assert_array_equal(inits["R_l2"], np.stack([sd["weight_hh_l2"], sd["weight_hh_l2_reverse"]]))
    np.testing.assert_array_equal(inits["B_l0"][1], np.concatenate([sd["bias_ih_l0_reverse"], sd["bias_hh_l0_reverse"]]))
