"""A new user's walk through the README's "Your own model" with a model of their own: a GRU
sensor model with a state input and output, variable lengths (packed sequences), a training
checkpoint (model, optimizer, epoch) and a dict output; exported with the README's command, then
validated from a moved copy of the project, against the eager reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

MODEL = '''
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Sensor(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, h_0: torch.Tensor) -> dict[str, torch.Tensor]:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed, h_0)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return {"scores": self.head(self.dropout(out)), "h_n": h_n}
'''

SPEC = '''
module = "sensor/model.py:Sensor"
weights = "checkpoints/last.pt"
weights_key = "model"

[inputs.x]
shape = ["batch", "seq", 4]
[inputs.lengths]
dtype = "int64"
shape = ["batch"]
range = [1, "seq"]
[inputs.h_0]
shape = [2, "batch", 8]

[dims.batch]
size = 3
sweep = [1, 6]
[dims.seq]
size = 9
sweep = [1, 30]

[outputs]
names = ["scores", "h_n"]
state = { h_0 = "h_n" }
stream_dim = "seq"
'''


def _project(root: Path) -> None:
    import sys

    import torch

    (root / "sensor").mkdir(parents=True)
    (root / "sensor" / "model.py").write_text(MODEL)
    (root / "sensor.toml").write_text(SPEC)
    sys.path.insert(0, str(root / "sensor"))
    try:
        from model import Sensor  # noqa: the user's own file
    finally:
        sys.path.remove(str(root / "sensor"))
        sys.modules.pop("model", None)
    torch.manual_seed(3)
    module = Sensor()
    optimizer = torch.optim.Adam(module.parameters())
    module(torch.randn(2, 5, 4), torch.tensor([5, 3]), torch.zeros(2, 2, 8))["scores"].sum().backward()
    optimizer.step()  # a real optimizer state, as a training checkpoint has
    (root / "checkpoints").mkdir()
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3},
               root / "checkpoints" / "last.pt")


def test_own_model_walkthrough_validates_from_a_moved_project(tmp_path, cli, monkeypatch):
    project = tmp_path / "project"
    _project(project)
    monkeypatch.chdir(project)
    code, _, err = cli("export", "sensor.toml", "--out", "models", "--runtimes", "onnxruntime-cpu")
    assert code == 0, err
    manifest = json.loads((project / "models" / "sensor" / "manifest.json").read_text())
    assert manifest["spec"]["weights_key"] == "model" and manifest["module_source"]["file"] == "../../sensor/model.py"
    assert [op["op"] for op in manifest["recurrent_ops"]] == ["GRU", "GRU"]

    moved = tmp_path / "colleague" / "clone"
    moved.parent.mkdir()
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)  # neither the old path nor the project's folder
    code, out, err = cli("validate", moved / "models" / "sensor", "--runtimes", "onnxruntime-cpu",
                         "--json", tmp_path / "r.json")
    assert code == 0, out + err
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert report["runtimes"]["torch"]["status"] == "passed"  # the eager reference ran, not golden-only
    assert report["streaming"].get("not_applicable", "").startswith("variable lengths")
