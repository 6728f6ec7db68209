"""The configuration matrix: RNN-tanh, RNN-relu, LSTM, GRU x layers {1, 3} x bidirectional x
initial state {none (zeros), given} x variable length x batch_first x dropout {0, 0.2 in eval}.

Every spec is exported through every path (TorchScript, ONNX legacy, ONNX via torch.export with
native ops, and the torch.export program itself) and each result is compared with eager PyTorch
on both initial states, at sequence lengths other than the example's. CI runs `COVERING` (every
value of every axis at least once, most pairs); the full 128-spec matrix runs with ``-m slow``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from rnnexport.builder import build_module, call_model, wrap
from rnnexport.compare import Tolerance, compare_arrays, failures
from rnnexport.export.onnx_dynamo import export_onnx_dynamo, export_program
from rnnexport.export.onnx_legacy import export_onnx_legacy
from rnnexport.export.torchscript import compile_and_save
from rnnexport.inputs import Case, make_inputs
from rnnexport.spec import RNNSpec

CELLS = {"rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu"), "lstm": ("lstm", "tanh"), "gru": ("gru", "tanh")}
CASES = [Case.rnn(3, 7, "zero"), Case.rnn(2, 13, "random"), Case.rnn(1, 1, "random")]


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
    program, _ = export_program(module, spec)
    exported = program.module()
    _check(spec, "torch-export", lambda feeds: call_model(exported, spec, feeds), records)
    export_onnx_legacy(module, spec, tmp / "legacy.onnx", opset=18)
    export_onnx_dynamo(program, spec, tmp / "dynamo.onnx", opset=18)
    for label in ("legacy", "dynamo"):
        session = ort.InferenceSession(str(tmp / f"{label}.onnx"), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        _check(spec, f"onnx-{label}", lambda feeds, s=session: dict(zip(names, s.run(names, dict(feeds)))), records)
    return records


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
