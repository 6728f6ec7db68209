from __future__ import annotations

import numpy as np
import pytest

from rnnexport.builder import build_module, call_model, wrap
from rnnexport.compare import Tolerance, failures
from rnnexport.inputs import Case, make_inputs
from rnnexport.invariants import check_invariants
from rnnexport.spec import get_spec


def outputs_of(name: str, case: Case, **changes) -> tuple:
    spec = get_spec(name).replace(**changes)
    feeds = make_inputs(spec, case)
    return spec, call_model(wrap(build_module(spec), spec), spec, feeds)


def check(spec, outputs, case, lengths=None):
    return check_invariants(spec, outputs, batch=case.size("batch"), seq=case.size("seq"), tolerance=Tolerance(),
                            artifact=spec.name, runtime="torch", case=case.id, lengths=lengths)


@pytest.mark.parametrize("name", ["single_layer", "deep", "deep_bidirectional", "seq_first"])
def test_eager_outputs_satisfy_invariants(name):
    case = Case.rnn(3, 17, "random")
    spec, outputs = outputs_of(name, case)
    records = check(spec, outputs, case)
    assert not failures(records)
    assert len(records) == (4 if spec.bidirectional else 3)


def test_swapped_directions_are_caught():
    case = Case.rnn(3, 17, "random")
    spec, outputs = outputs_of("deep_bidirectional", case)
    H = spec.hidden_size
    out = outputs["output"]
    outputs["output"] = np.concatenate([out[..., H:], out[..., :H]], axis=-1)
    bad = failures(check(spec, outputs, case))
    assert {c.output for c in bad} == {"h_n[-2]==output[t=last,:P]", "h_n[-1]==output[t=0,P:]"}


def test_wrong_time_layout_is_caught():
    # A seq-first output read as batch-first: same shape (3x3 case), wrong step.
    case = Case.rnn(3, 3, "random")
    spec, outputs = outputs_of("single_layer", case)
    outputs["output"] = np.ascontiguousarray(outputs["output"].transpose(1, 0, 2))
    assert [c.output for c in failures(check(spec, outputs, case))] == ["h_n[-1]==output[t=last]"]


def test_wrong_shape_is_caught():
    case = Case.rnn(3, 17, "random")
    spec, outputs = outputs_of("deep", case)
    outputs["h_n"] = outputs["h_n"][:1]
    assert [c.output for c in failures(check(spec, outputs, case))] == ["shape(h_n)"]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_variable_length_invariants(cell, bidirectional):
    case = Case.rnn(4, 9, "random")
    spec, outputs = outputs_of("deep", case, cell=cell, bidirectional=bidirectional, variable_length=True)
    lengths = make_inputs(spec, case)["lengths"]
    assert sorted(lengths.tolist()) != lengths.tolist() or len(set(lengths.tolist())) == 1  # unsorted
    records = check(spec, outputs, case, lengths)
    assert not failures(records)
    assert "output[t>=lengths]==0" in {c.output for c in records}
    # h_n taken at the full last step instead of each example's last valid step: caught.
    wrong = check(spec, outputs, case, np.full_like(lengths, case.size("seq")))
    assert failures(wrong)
    # Padding that is not zero: caught.
    outputs["output"] = outputs["output"] + 1e-3
    assert "output[t>=lengths]==0" in {c.output for c in failures(check(spec, outputs, case, lengths))}


def test_lstm_projection_invariant_uses_projected_size():
    case = Case.rnn(3, 5, "random")
    spec, outputs = outputs_of("deep_bidirectional", case, cell="lstm", proj_size=3)
    assert outputs["output"].shape == (3, 5, 6) and outputs["h_n"].shape == (6, 3, 3) and outputs["c_n"].shape == (6, 3, 8)
    assert not failures(check(spec, outputs, case))
