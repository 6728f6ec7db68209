"""What a user with their own model meets (issue 20): a spec without weights says so, training
checkpoints with `weights_key`, dict outputs through every exporter and format, and one-line
errors for an integer input without a range, a spec file named without `.toml` and an option
written with `_`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rnnexport.errors import SpecError
from rnnexport.modelspec_load import load_model_spec, model_spec_from_dict
from tests.usermodels import TWO_RECURRENT

USERMODELS = Path(__file__).resolve().parent / "usermodels"

DICT_MODEL = '''
import torch
from torch import Tensor, nn


class Scorer(nn.Module):
    """Returns a dict, as much training code does."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out, h_n = self.gru(x)
        return {"logits": self.head(out), "h_n": h_n}
'''

DICT_SPEC = '''
module = "scorer.py:Scorer"
[inputs.x]
shape = ["batch", "seq", 3]
[dims.batch]
size = 2
sweep = [1, 3]
[dims.seq]
size = 5
sweep = [1, 9]
[outputs]
names = ["logits", "h_n"]
'''

RUNTIMES = "onnxruntime-cpu,torchscript,torch-export"


def _write(tmp_path: Path, text: str, name: str = "model") -> Path:
    shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _one_line_exit_2(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


# --- 2. a spec without weights ---------------------------------------------------------------

@pytest.mark.parametrize("weights_line,note", [("", True), ('weights = "random"\n', False)],
                         ids=["no-weights-key:note", "weights-random:no-note"])
def test_seeded_initialization_is_recorded_and_said_unless_chosen(tmp_path: Path, cli, weights_line, note) -> None:
    spec = _write(tmp_path, weights_line + "seed = 7\n" + TWO_RECURRENT, "two")
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--runtimes", "onnxruntime-cpu",
                       "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    said = ("note: two: no weights in the spec: the module's seeded initialization (seed 7) was exported; add "
            'weights = "FILE" (or weights = "random" to say this is intended)')
    assert (said in err) is note, err
    manifest = json.loads((tmp_path / "out" / "two" / "manifest.json").read_text())
    assert manifest["spec"]["weights"] == "random"
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert any(n.startswith("weights: the module's seeded initialization (seed 7)") for n in report["notes"]), report


def test_export_model_exports_the_modules_own_weights_without_a_note(tmp_path: Path) -> None:
    from rnnexport.export import export_model
    from tests.usermodels.features import TwoRecurrent

    result = export_model(TwoRecurrent(), name="two", out=tmp_path, inputs={"x": {"shape": ["batch", "seq", 3]}},
                          dims={"batch": {"size": 2}, "seq": {"size": 5}}, outputs=["z"], validate=False)
    assert not any("weights" in n for n in result.notes), result.notes
    assert "weights" not in json.loads((tmp_path / "two" / "manifest.json").read_text())["spec"]


def test_weights_random_is_not_a_file_name(tmp_path: Path) -> None:
    spec = load_model_spec(_write(tmp_path, 'weights = "random"\n' + TWO_RECURRENT))
    assert spec.weights == "random" and spec.to_dict()["weights"] == "random"
    assert load_model_spec(_write(tmp_path, TWO_RECURRENT)).weights is None


# --- 4. training checkpoints -----------------------------------------------------------------

def _checkpoint(tmp_path: Path, nested: bool = False):
    """A realistic checkpoint: the model, an Adam state after a step (weights_only must load
    it), the epoch."""
    import torch

    from tests.usermodels.features import TwoRecurrent

    torch.manual_seed(5)
    module = TwoRecurrent()
    optimizer = torch.optim.Adam(module.parameters())
    module(torch.randn(2, 4, 3)).sum().backward()
    optimizer.step()
    checkpoint = {"model": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    torch.save({"state": checkpoint, "epoch": 3} if nested else checkpoint, tmp_path / "last.pt")
    return module


@pytest.mark.parametrize("nested,key", [(False, "model"), (True, "state.model")], ids=["model", "dotted"])
def test_weights_key_loads_the_state_dict_inside_a_training_checkpoint(tmp_path: Path, cli, nested, key) -> None:
    from safetensors.torch import load_file

    module = _checkpoint(tmp_path, nested)
    spec = _write(tmp_path, f'weights = "last.pt"\nweights_key = "{key}"\n' + TWO_RECURRENT, "two")
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--no-validate")
    assert code == 0, err
    assert "no weights" not in err
    manifest = json.loads((tmp_path / "out" / "two" / "manifest.json").read_text())
    assert manifest["spec"]["weights"] == "last.pt" and manifest["spec"]["weights_key"] == key
    stored = load_file(tmp_path / "out" / "two" / "weights.safetensors")
    assert all(stored[k].equal(v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("nested,lines,message", [
    (False, "", r"are not a state dict of tensors \(found \['model', 'optimizer', 'epoch'\]\); the state dict is at "
                r"'model': try weights_key = 'model' in the spec"),
    (True, "", r"the state dict is at 'state.model': try weights_key = 'state.model'"),
    (False, 'weights_key = "modle"\n', r"no key 'modle' for weights_key 'modle' in the file \(its keys: model, "
                                        r"optimizer, epoch\); the state dicts are at 'model'"),
    (False, 'weights_key = "optimizer"\n', r"at weights_key 'optimizer' are not a state dict of tensors .*try "
                                            r"weights_key = 'model'"),
], ids=["no-key", "no-key-nested", "wrong-key", "optimizer-key"])
def test_a_checkpoint_without_the_right_weights_key_names_the_key(tmp_path: Path, cli, nested, lines, message) -> None:
    _checkpoint(tmp_path, nested)
    spec = _write(tmp_path, 'weights = "last.pt"\n' + lines + TWO_RECURRENT)
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--no-validate")
    _one_line_exit_2(code, err, message)


@pytest.mark.parametrize("lines,message", [
    ('weights_key = "model"\n', r"'weights_key' = 'model' needs 'weights' = \"FILE\".*'weights' is not given"),
    ('weights = "random"\nweights_key = "model"\n', r"needs 'weights' = \"FILE\".*'weights' is 'random'"),
    ('weights = "w.safetensors"\nweights_key = "model"\n', r"'w.safetensors' is a .safetensors file.*drop weights_key"),
    ('weights = "last.pt"\nweights_key = "model..x"\n', r"invalid value for 'weights_key': 'model..x'"),
    ('weights = "last.pt"\nweights_key = 3\n', r"key 'weights_key': expected str, got int 3"),
    ('weights = "last.pt"\nweight_key = "model"\n', r"unknown key 'weight_key' \(did you mean 'weights_key'\?\)"),
], ids=["without-weights", "with-random", "safetensors", "empty-part", "not-a-string", "misspelt"])
def test_weights_key_is_validated_like_the_other_keys(tmp_path: Path, lines, message) -> None:
    with pytest.raises(SpecError, match=message):
        load_model_spec(_write(tmp_path, lines + TWO_RECURRENT))


def test_weights_key_round_trips_through_the_manifest_form(tmp_path: Path) -> None:
    spec = load_model_spec(_write(tmp_path, 'weights = "last.pt"\nweights_key = "state.model"\n' + TWO_RECURRENT))
    assert spec.weights_key == "state.model"
    assert model_spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# --- 4. dict outputs -------------------------------------------------------------------------

def test_dict_outputs_flatten_in_their_order_depth_first() -> None:
    import torch

    from rnnexport.usermodel import flatten_outputs

    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    result = {"out": a, "state": {"h": b, "c": c}, "extra": (d,)}
    assert [float(t) for t in flatten_outputs(result)] == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(SpecError, match="tensors or \\(nested\\) tuples, lists or dicts of them"):
        flatten_outputs({"n": 3})
    from rnnexport.usermodel import _output_names

    assert _output_names(result) == ["out", "state_h", "state_c", "extra_0"]


@pytest.mark.parametrize("names,message", [
    ('["logits"]', r"forward\(\) returns a dict of 2 tensors, \[outputs\] names lists 1: \['logits'\]; name them in "
                   r"the dict's order: names = \[\"logits\", \"h_n\"\]"),
    ('["h_n", "logits"]', r"names \['h_n', 'logits'\] are forward\(\)'s dict keys in another order.*names = "
                          r"\[\"logits\", \"h_n\"\]"),
], ids=["count", "order"])
def test_dict_output_names_that_do_not_fit_list_the_keys(tmp_path: Path, cli, names, message) -> None:
    (tmp_path / "scorer.py").write_text(DICT_MODEL)
    spec = tmp_path / "scorer.toml"
    spec.write_text(DICT_SPEC.replace('["logits", "h_n"]', names))
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--no-validate")
    _one_line_exit_2(code, err, message)


@pytest.mark.parametrize("exporter,torchscript", [("legacy", "script"), ("dynamo", "trace")],
                         ids=["legacy-script", "dynamo-trace"])
def test_a_dict_returning_module_exports_and_validates_in_every_format(tmp_path: Path, cli, exporter,
                                                                       torchscript) -> None:
    import onnx

    (tmp_path / "scorer.py").write_text(DICT_MODEL)
    spec = tmp_path / "scorer.toml"
    spec.write_text(DICT_SPEC)
    code, out, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--exporter", exporter,
                         "--torchscript", torchscript, "--runtimes", RUNTIMES, "--json", str(tmp_path / "r.json"))
    assert code == 0, out + err
    folder = tmp_path / "out" / "scorer"
    assert json.loads((folder / "manifest.json").read_text())["torchscript_method"] == torchscript
    assert [o.name for o in onnx.load(str(folder / "model.onnx")).graph.output] == ["logits", "h_n"]
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert {name: entry["status"] for name, entry in report["runtimes"].items()} == {
        "torch": "passed", "onnxruntime-cpu": "passed", "torchscript": "passed", "torch-export": "passed"}


def test_the_libtorch_client_flattens_a_dict_output(tmp_path: Path, cli) -> None:
    """model.pt returns the dict in C++ too (a GenericDict): the client flattens it in order."""
    from rnnexport.runtimes import unavailable_reason

    if reason := unavailable_reason("libtorch-cpp"):
        pytest.skip(f"libtorch-cpp is not available here: {reason}")
    (tmp_path / "scorer.py").write_text(DICT_MODEL)
    spec = tmp_path / "scorer.toml"
    spec.write_text(DICT_SPEC)
    code, out, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--runtimes", "libtorch-cpp")
    assert code == 0, out + err


# --- 6. cryptic errors -----------------------------------------------------------------------

PACKED = '''
module = "features.py:PackedGRU"
[inputs.x]
shape = ["seq", "batch", 4]
[inputs.lengths]
dtype = "int64"
shape = ["batch"]
[inputs.h_0]
shape = [2, "batch", 6]
[dims.batch]
size = 4
[dims.seq]
size = 8
[outputs]
names = ["out", "h_n"]
'''


def test_an_integer_input_without_range_is_a_spec_error_naming_the_fix(tmp_path: Path, cli) -> None:
    spec = _write(tmp_path, PACKED)
    code, _, err = cli("export", str(spec), "--out", str(tmp_path / "out"), "--no-validate")
    _one_line_exit_2(code, err, r"\[inputs.lengths\]: an integer input needs 'range' \(inclusive\).*e.g. range = "
                                r"\[1, \"seq\"\] for lengths, range = \[0, VOCAB-1\] for token ids")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_spec_file_named_without_toml_is_suggested(tmp_path: Path, cli, monkeypatch) -> None:
    _write(tmp_path, TWO_RECURRENT, "sentiment")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("export", "sentiment", "--no-validate")
    _one_line_exit_2(code, err, r"unknown configuration 'sentiment'. Did you mean 'sentiment.toml' \(a spec file in "
                                r"this folder\)\?")


@pytest.mark.parametrize("args,message", [
    (["export", "--cell", "gru", "--input-size", "3", "--hidden_size", "8"],
     r"unrecognized arguments: --hidden_size.* \(did you mean '--hidden-size'\?\) \(see `rnnexport export --help`\)"),
    (["export", "--cell", "gru", "--input-size", "3", "--hidden_size=8"], r"did you mean '--hidden-size'\?"),
    (["validate", "models", "--untrsted"], r"unrecognized arguments: --untrsted \(did you mean '--untrusted'\?\)"),
    (["list", "--zzz"], r"unrecognized arguments: --zzz \(see `rnnexport list --help`\)$"),
], ids=["underscore", "underscore-equals", "typo-validate", "no-close-option"])
def test_an_unknown_option_gets_a_did_you_mean(cli, args, message) -> None:
    code, _, err = cli(*args)
    _one_line_exit_2(code, err, message)


def test_an_artifact_made_before_the_integer_range_rule_still_opens(tmp_path):
    """Manifests are read as recorded: the rule for new specs (an integer input needs a range)
    does not lock out an artifact exported before it."""
    import json
    import shutil

    from rnnexport.artifacts import MANIFEST, open_artifact, write_json
    from tests.conftest import MODELS

    folder = tmp_path / "text_classifier"
    shutil.copytree(MODELS / "text_classifier", folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    for entry in manifest["spec"]["inputs"]:
        entry.pop("range", None) if entry["name"] == "tokens" else None
    write_json(folder / MANIFEST, manifest)
    assert open_artifact(folder).spec.inputs[0].range is None
