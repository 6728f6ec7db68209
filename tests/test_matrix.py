"""The configuration matrix: RNN-tanh, RNN-relu, LSTM, GRU x layers {1, 3} x bidirectional x
initial state {none (zeros), given} x variable length x batch_first x dropout {0, 0.2 in eval}.

Every spec is exported through every path (TorchScript, ONNX legacy, ONNX via torch.export with
native ops, and the torch.export program itself) and each result is compared with eager PyTorch
on both initial states, at sequence lengths other than the example's (up to 1000). Each ONNX file
is checked as a graph too: valid under strict shape inference, one native RNN/LSTM/GRU op per
layer with the spec's hidden size and direction, no per-step arithmetic, the documented input and
output names with named dynamic dims. CI runs `COVERING` (every value of every axis at least
once, most pairs); the full 128-spec matrix runs with ``-m slow``. This is the suite's one export
matrix; `tests/export/test_cells.py` targets single properties (gate order, packed sequences).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from rnnexport.builder import build_module, call_model, example_args, wrap
from rnnexport.compare import Tolerance, compare_arrays, failures
from rnnexport.export.onnx_dynamo import export_onnx_dynamo
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.export.onnx_legacy import export_onnx_legacy
from rnnexport.export.torchscript import compile_and_save
from rnnexport.inputs import Case, make_inputs
from rnnexport.spec import RNNSpec

CELLS = {"rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu"), "lstm": ("lstm", "tanh"), "gru": ("gru", "tanh")}
CASES = [Case.rnn(3, 7, "zero"), Case.rnn(2, 13, "random"), Case.rnn(1, 1, "random"), Case.rnn(2, 1000, "random")]
FORBIDDEN = {"MatMul", "Gemm", "Tanh", "Relu", "Sigmoid", "Loop", "Scan"}  # per-step arithmetic: an unrolled cell


def make_spec(cell: str, layers: int, bidirectional: bool, variable_length: bool, batch_first: bool,
              dropout: float, bias: bool = True) -> RNNSpec:
    kind, nonlinearity = CELLS[cell]
    name = f"{cell}-l{layers}{'-bi' if bidirectional else ''}{'-var' if variable_length else ''}" \
           f"{'-bf' if batch_first else ''}{'-drop' if dropout else ''}{'' if bias else '-nobias'}"
    return RNNSpec(name, cell=kind, nonlinearity=nonlinearity, input_size=3, hidden_size=4, num_layers=layers,
                   bidirectional=bidirectional, variable_length=variable_length, batch_first=batch_first,
                   dropout=dropout, bias=bias, batch_size=2, seq_len=5, seed=layers)


FULL = [make_spec(*row) for row in itertools.product(CELLS, (1, 3), (False, True), (False, True), (False, True),
                                                     (0.0, 0.2))]
COVERING = [
    make_spec("rnn-tanh", 1, False, False, False, 0.0),
    make_spec("rnn-relu", 3, True, True, True, 0.2),
    make_spec("lstm", 3, False, True, False, 0.0),
    make_spec("lstm", 1, True, False, True, 0.2),
    make_spec("gru", 1, True, True, False, 0.2),
    make_spec("gru", 3, False, False, True, 0.0),
    make_spec("rnn-tanh", 3, True, True, True, 0.0, bias=False),
    make_spec("lstm", 3, True, True, True, 0.2, bias=False),
    make_spec("gru", 3, True, False, False, 0.0, bias=False),
]


def _check(spec: RNNSpec, runtime: str, run, records: list) -> None:
    reference = wrap(build_module(spec), spec)
    for case in CASES:
        feeds = make_inputs(spec, case)
        got, want = run(feeds), call_model(reference, spec, feeds)
        for name, expected in want.items():
            records.append(compare_arrays(got[name], expected, tolerance=Tolerance(), artifact=spec.name,
                                          runtime=runtime, case=case.id, output=name, against="torch"))


def check_every_path(spec: RNNSpec, tmp: Path) -> list:
    module = build_module(spec)
    records: list = []
    compile_and_save(module, spec, tmp / "model.pt")
    scripted = torch.jit.load(str(tmp / "model.pt"))
    _check(spec, "torchscript", lambda feeds: call_model(scripted, spec, feeds), records)
    program, _ = native_program(RNNExporting(spec, module))
    exported = program.module()
    _check(spec, "torch-export", lambda feeds: call_model(exported, spec, feeds), records)
    export_onnx_legacy(wrap(module, spec), example_args(spec), spec, tmp / "legacy.onnx", opset=18)
    export_onnx_dynamo(program, spec, tmp / "dynamo.onnx", opset=18)
    for label in ("legacy", "dynamo"):
        check_graph(spec, tmp / f"{label}.onnx")
        session = ort.InferenceSession(str(tmp / f"{label}.onnx"), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        _check(spec, f"onnx-{label}", lambda feeds, s=session: dict(zip(names, s.run(names, dict(feeds)))), records)
    return records


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_graph(spec: RNNSpec, path: Path) -> None:
    """The graph of `path`, as the module docstring says."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    ops = [n.op_type for n in model.graph.node]
    native = [n for n in model.graph.node if n.op_type == spec.cell.upper()]
    assert len(native) == spec.num_layers, ops
    assert not FORBIDDEN & set(ops), f"per-step arithmetic in the graph: {ops}"
    for node in native:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["hidden_size"] == spec.hidden_size
        assert attrs.get("direction", b"forward") == (b"bidirectional" if spec.bidirectional else b"forward")
    io = {v.name: _dims(v) for v in [*model.graph.input, *model.graph.output]}
    assert [v.name for v in model.graph.input] == list(spec.input_names)
    assert [v.name for v in model.graph.output] == list(spec.output_names)
    for name, shape in spec.shapes("batch", "seq").items():  # named dims where the spec has them
        assert io[name] == list(shape), (name, io[name])


def test_a_graph_with_an_unrolled_cell_or_fixed_dims_is_refused(tmp_path):
    """`check_graph` can fail: a per-step op, a pinned batch."""
    import onnx

    spec = COVERING[0]
    export_onnx_legacy(wrap(build_module(spec), spec), example_args(spec), spec, tmp_path / "m.onnx", opset=18)
    model = onnx.load(str(tmp_path / "m.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2  # batch pinned
    onnx.save(model, str(tmp_path / "pinned.onnx"))
    with pytest.raises(AssertionError, match="input"):
        check_graph(spec, tmp_path / "pinned.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    model.graph.node.append(onnx.helper.make_node("Tanh", ["output"], ["tanh_out"]))
    onnx.save(model, str(tmp_path / "unrolled.onnx"))
    with pytest.raises(AssertionError, match="per-step arithmetic"):
        check_graph(spec, tmp_path / "unrolled.onnx")


def test_covering_rows_cover_every_value_of_every_axis():
    axes = [
        {s.cell + ("-" + s.nonlinearity if s.cell == "rnn" else "") for s in COVERING},
        {s.num_layers for s in COVERING}, {s.bidirectional for s in COVERING},
        {s.variable_length for s in COVERING}, {s.batch_first for s in COVERING}, {s.dropout for s in COVERING},
        {s.bias for s in COVERING},
    ]
    assert axes == [{"rnn-tanh", "rnn-relu", "lstm", "gru"}, {1, 3}, {False, True}, {False, True}, {False, True},
                    {0.0, 0.2}, {False, True}]
    assert {c.initial_state for c in CASES} == {"zero", "random"}
    assert len(FULL) == 128 and len({s.name for s in FULL}) == 128


@pytest.mark.parametrize("spec", COVERING, ids=lambda s: s.name)
def test_matrix_covering(tmp_path, spec):
    bad = failures(check_every_path(spec, tmp_path))
    assert not bad, [f"{c.runtime} {c.case} {c.output}: {c.max_abs_error}" for c in bad]


@pytest.mark.slow
@pytest.mark.parametrize("spec", FULL, ids=lambda s: s.name)
def test_matrix_full(tmp_path, spec):
    bad = failures(check_every_path(spec, tmp_path))
    assert not bad, [f"{c.runtime} {c.case} {c.output}: {c.max_abs_error}" for c in bad]
