"""The dynamo exporter's ONNX initializers: named by layer, laid out as PyTorch's weights. (The
graph structure, dynamic axes and numbers of both exporters over the configuration matrix are
`tests/test_matrix.py`'s.)"""

from __future__ import annotations

import numpy as np
import onnx

from rnnexport.builder import build_module
from rnnexport.export.onnx_dynamo import export_onnx_dynamo
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.spec import RNNSpec

SPEC = RNNSpec("m_relu_3_bi_bf", input_size=6, hidden_size=4, num_layers=3, bidirectional=True, batch_first=True,
               nonlinearity="relu", batch_size=2, seq_len=5)


def export(spec: RNNSpec, path) -> None:
    program, _ = native_program(RNNExporting(spec, build_module(spec)))
    export_onnx_dynamo(program, spec, path, opset=18)


def test_dynamo_initializers_are_named_by_layer(tmp_path):
    spec = SPEC
    export(spec, tmp_path / "m.onnx")
    names = {i.name for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert {f"{p}_l{k}" for p in "WRB" for k in range(3)} <= names
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(n.metadata_props for n in model.graph.node) and not model.metadata_props


def test_dynamo_weight_layout_matches_pytorch(tmp_path):
    """W_l0 is [D, H, I] = stack(weight_ih_l0, weight_ih_l0_reverse), B = concat(b_ih, b_hh)."""
    from onnx import numpy_helper

    spec = SPEC
    export(spec, tmp_path / "m.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    sd = {k: v.numpy() for k, v in build_module(spec).state_dict().items()}
    np.testing.assert_array_equal(inits["W_l1"], np.stack([sd["weight_ih_l1"], sd["weight_ih_l1_reverse"]]))
    np.testing.assert_array_equal(inits["R_l2"], np.stack([sd["weight_hh_l2"], sd["weight_hh_l2_reverse"]]))
    np.testing.assert_array_equal(inits["B_l0"][1], np.concatenate([sd["bias_ih_l0_reverse"], sd["bias_hh_l0_reverse"]]))
