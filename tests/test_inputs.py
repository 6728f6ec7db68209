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


def test_an_rnn_configuration_produces_its_calling_contract():
    """`RNNSpec.inputs`: the shapes of `RNNSpec.shapes` over the dims batch and seq, and the
    same generator as a model spec's (`rnnexport.contract`)."""
    from rnnexport.contract import TensorSpec

    spec = get_spec("seq_first").replace(cell="lstm", variable_length=True)
    assert [d.name for d in spec.dims] == ["batch", "seq"] and spec.stream_dim == "seq"
    assert spec.inputs == (TensorSpec("input", "float32", ("seq", "batch", 5)),
                           TensorSpec("h_0", "float32", (1, "batch", 8)), TensorSpec("c_0", "float32", (1, "batch", 8)),
                           TensorSpec("lengths", "int64", ("batch",), (1, "seq")))
    assert spec.state == (("h_0", "h_n"), ("c_0", "c_n"))
    feeds = make_inputs(spec, Case.rnn(3, 17, "random"))
    assert {n: v.shape for n, v in feeds.items()} == {n: spec.shapes(3, 17)[n] for n in spec.input_names}
    assert feeds["lengths"].min() >= 1 and feeds["lengths"].max() <= 17


@pytest.mark.parametrize("name", ["deep", "deep_bidirectional", "seq_first", "single_layer"])
def test_the_committed_golden_inputs_are_the_generated_ones(name):
    """The one generator gives the inputs stored with the committed artifacts bit for bit (inputs
    are drawn, not computed: no CPU differs in them)."""
    from rnnexport.artifacts import open_artifact
    from tests.conftest import MODELS

    artifact = open_artifact(MODELS / name)
    for case, arrays in artifact.golden().items():
        for input_name, value in make_inputs(artifact.spec, case).items():
            assert value.tobytes() == arrays[input_name].tobytes(), (case.id, input_name)
