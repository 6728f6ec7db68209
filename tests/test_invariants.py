from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnexport.builder import build_module
from rnnexport.compare import Tolerance, failures
from rnnexport.inputs import Case, make_inputs
from rnnexport.invariants import check_invariants
from rnnexport.spec import get_spec


def outputs_of(name: str, case: Case) -> tuple:
    spec = get_spec(name)
    feeds = make_inputs(spec, case)
    with torch.no_grad():
        output, h_n = build_module(spec)(torch.from_numpy(feeds["input"].copy()), torch.from_numpy(feeds["h_0"].copy()))
    return spec, {"output": output.numpy(), "h_n": h_n.numpy()}


def check(spec, outputs, case):
    return check_invariants(spec, outputs, batch=case.batch, seq=case.seq, tolerance=Tolerance(),
                            artifact=spec.name, runtime="torch", case=case.id)


@pytest.mark.parametrize("name", ["single_layer", "deep", "deep_bidirectional", "seq_first"])
def test_eager_outputs_satisfy_invariants(name):
    case = Case(3, 17, "random")
    spec, outputs = outputs_of(name, case)
    records = check(spec, outputs, case)
    assert not failures(records)
    assert len(records) == (4 if spec.bidirectional else 3)


def test_swapped_directions_are_caught():
    case = Case(3, 17, "random")
    spec, outputs = outputs_of("deep_bidirectional", case)
    H = spec.hidden_size
    out = outputs["output"]
    outputs["output"] = np.concatenate([out[..., H:], out[..., :H]], axis=-1)
    bad = failures(check(spec, outputs, case))
    assert {c.output for c in bad} == {"h_n[-2]==output[t=-1,:H]", "h_n[-1]==output[t=0,H:]"}


def test_wrong_time_layout_is_caught():
    # A seq-first output read as batch-first: same shape (3x3 case), wrong step.
    case = Case(3, 3, "random")
    spec, outputs = outputs_of("single_layer", case)
    outputs["output"] = np.ascontiguousarray(outputs["output"].transpose(1, 0, 2))
    assert [c.output for c in failures(check(spec, outputs, case))] == ["h_n[-1]==output[t=-1]"]


def test_wrong_shape_is_caught():
    case = Case(3, 17, "random")
    spec, outputs = outputs_of("deep", case)
    outputs["h_n"] = outputs["h_n"][:1]
    assert [c.output for c in failures(check(spec, outputs, case))] == ["shape(h_n)"]
