from __future__ import annotations

import numpy as np
import pytest

from rnnexport.inputs import Case, default_sweep, golden_cases, make_inputs
from rnnexport.spec import get_spec


def test_sweep_covers_the_required_shapes():
    spec = get_spec("deep")
    shapes = {(c.size("batch"), c.size("seq")) for c in default_sweep(spec)}
    assert shapes == {(40, 10), (1, 1), (3, 17), (64, 200), (1, 1000)}
    for batch, seq in shapes:
        assert {c.initial_state for c in default_sweep(spec) if c.sizes == (("batch", batch), ("seq", seq))} == {"zero", "random"}
    assert set(golden_cases(spec)) <= set(default_sweep(spec))


def test_inputs_are_seeded_shaped_and_read_only():
    spec = get_spec("seq_first")
    a = make_inputs(spec, Case.rnn(3, 17, "random"))
    assert a["input"].shape == (17, 3, 5) and a["h_0"].shape == (1, 3, 8)
    assert a["input"].dtype == np.float32 and not a["input"].flags.writeable
    with pytest.raises(ValueError):
        a["input"][0, 0, 0] = 1.0
    # Same key, same bytes (the cache is not what makes it equal: a new spec object is used).
    again = make_inputs(get_spec("seq_first").replace(name="other"), Case.rnn(3, 17, "random"))
    assert a["input"].tobytes() == again["input"].tobytes()
    assert not np.array_equal(a["input"], make_inputs(spec.replace(seed=1), Case.rnn(3, 17, "random"))["input"])


def test_zero_initial_state():
    feeds = make_inputs(get_spec("deep"), Case.rnn(2, 4, "zero"))
    assert not feeds["h_0"].any() and feeds["input"].any()


@pytest.mark.parametrize("text", ["0x3", "b3xs17-h0maybe", "nonsense"])
def test_bad_case_ids(text):
    with pytest.raises(ValueError, match="bad case"):
        Case.parse(text)


def test_case_id_round_trip():
    case = Case.rnn(64, 200, "zero")
    assert Case.parse(case.id) == case
    assert Case.parse("3x17") == Case.rnn(3, 17, "random")
