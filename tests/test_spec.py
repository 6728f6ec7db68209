from __future__ import annotations

from pathlib import Path

import pytest

from rnnexport.errors import SpecError, UsageError
from rnnexport.spec import RNNSpec, catalog, get_spec, load_spec, spec_from_dict

# DESIGN.md, "The documented configurations": name -> (input, output, h_n).
DOCUMENTED_SHAPES = {
    "single_layer": ((40, 10, 5), (40, 10, 8), (1, 40, 8)),
    "deep": ((40, 10, 5), (40, 10, 8), (3, 40, 8)),
    "deep_bidirectional": ((40, 10, 5), (40, 10, 16), (6, 40, 8)),
    "seq_first": ((10, 40, 5), (10, 40, 8), (1, 40, 8)),
}


def test_catalog_holds_exactly_the_documented_configurations_and_the_examples():
    assert sorted(catalog("rnn")) == sorted(DOCUMENTED_SHAPES)
    assert sorted(catalog("model")) == ["keyword_spotter", "seq2seq_decoder", "seq2seq_encoder", "text_classifier"]
    assert sorted(catalog()) == sorted([*DOCUMENTED_SHAPES, *catalog("model")])


@pytest.mark.parametrize("name", sorted(DOCUMENTED_SHAPES))
def test_documented_shapes(name):
    shapes = get_spec(name).shapes()
    assert (shapes["input"], shapes["output"], shapes["h_n"]) == DOCUMENTED_SHAPES[name]
    assert shapes["h_0"] == shapes["h_n"]


def test_toml_round_trip(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text('input_size = 3\nhidden_size = 4\nnum_layers = 2\nnonlinearity = "relu"\nbatch_first = true\n')
    spec = load_spec(path)
    assert spec == RNNSpec(name="mine", input_size=3, hidden_size=4, num_layers=2, nonlinearity="relu", batch_first=True)
    assert get_spec(str(path)) == spec


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"input_size": 0}, r"'input_size': 0"),
        ({"hidden_size": -3}, r"'hidden_size': -3"),
        ({"num_layers": 0}, r"'num_layers': 0"),
        ({"batch_size": 0}, r"'batch_size'"),
        ({"seq_len": 0}, r"'seq_len'"),
        ({"nonlinearity": "sigmoid"}, r"'nonlinearity': 'sigmoid'.*'tanh' \| 'relu'"),
        ({"cell": "transformer"}, r"'cell': 'transformer'"),
        ({"dropout": 1.0}, r"'dropout': 1.0"),
        ({"hidden_size": "8"}, r"'hidden_size': expected int, got str '8'"),
        ({"num_layers": True}, r"'num_layers': expected int, got bool"),
        ({"bidirectional": 1}, r"'bidirectional': expected bool, got int"),
        ({"hiden_size": 8}, r"unknown key 'hiden_size' \(did you mean 'hidden_size'\?\)"),
        ({"name": "../escape"}, r"'name': '../escape'"),
        ({"seed": -1}, r"'seed': -1"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_invalid_spec_names_key_and_value(data, match):
    base = {"name": "x", "input_size": 5, "hidden_size": 8}
    with pytest.raises(SpecError, match=match):
        spec_from_dict({**base, **data})


def test_missing_required_key():
    with pytest.raises(SpecError, match="missing required key 'hidden_size'"):
        spec_from_dict({"name": "x", "input_size": 5})


def test_malformed_toml(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("input_size = = 5\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(path)


def test_unknown_configuration_lists_valid_names():
    with pytest.raises(UsageError, match=r"unknown configuration 'deeep'. Did you mean 'deep'\?.*single_layer"):
        get_spec("deeep")


def test_replace_validates():
    with pytest.raises(SpecError, match="'seed'"):
        get_spec("deep").replace(seed=-5)
    assert get_spec("deep").replace(seed=7).seed == 7
