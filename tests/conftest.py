"""Shared fixtures: copies of the committed artifacts, and helpers that build wrong artifacts.

A "wrong artifact" is consistent (its manifest lists the new sha256), so only the numerical
checks can catch it: that is what the validator must prove it does.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rnnexport.artifacts import MANIFEST, file_entry, write_json
from rnnexport.cli import main

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DOCUMENTED = ("deep", "deep_bidirectional", "seq_first", "single_layer")


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copy a committed artifact folder into a temporary folder and return its path."""

    def copy(name: str) -> Path:
        target = tmp_path / "models" / name
        shutil.copytree(MODELS / name, target)
        return target

    return copy


def restamp(artifact: Path, filename: str) -> None:
    """Record a changed file's sha256 in the manifest (a consistent but wrong artifact)."""
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"][filename] = file_entry(artifact / filename)
    write_json(artifact / MANIFEST, manifest)


def mutate_onnx(artifact: Path, change: Callable) -> None:
    """Apply `change(model_proto)` to ``model.onnx`` and restamp the manifest."""
    import onnx

    model = onnx.load(str(artifact / "model.onnx"))
    change(model)
    onnx.save(model, str(artifact / "model.onnx"))
    restamp(artifact, "model.onnx")


def rnn_weights(model, layer: int) -> dict[str, object]:
    """The W, R, B initializers (TensorProto) feeding the layer-th ONNX RNN node."""
    node = [n for n in model.graph.node if n.op_type in ("RNN", "GRU", "LSTM")][layer]
    inits = {i.name: i for i in model.graph.initializer}
    return {slot: inits[node.input[i]] for i, slot in ((1, "W"), (2, "R"), (3, "B")) if node.input[i] in inits}


def perturb_weight(artifact: Path, layer: int, slot: str, index: tuple, delta: float) -> None:
    """Add `delta` to one element of the `slot` (W, R or B) of the layer-th recurrent ONNX node."""
    from onnx import numpy_helper

    def change(model):
        tensor = rnn_weights(model, layer)[slot]
        array = numpy_helper.to_array(tensor).copy()
        array[index] += delta
        set_array(tensor, array)

    mutate_onnx(artifact, change)


def set_array(tensor, array) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(array.astype("float32"), tensor.name))


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_process(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run ``python -m rnnexport`` in a fresh process (for exit codes and tracebacks)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "rnnexport", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_quiet(done, own: tuple[str, ...] = (), code: int = 0) -> None:
    """A run that exited with `code` (a pass by default) whose stderr holds only rnnexport's
    lines starting with `own`."""
    assert done.returncode == code, (done.stdout[-3000:], done.stderr[-3000:])
    for text in (done.stdout, done.stderr):
        assert "Warning" not in text and "\x1b" not in text and "[W:onnxruntime" not in text, text[-3000:]
    assert [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(own)] == []
