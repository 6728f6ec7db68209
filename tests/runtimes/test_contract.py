"""Every registered runtime honours the runner contract and catches a wrong model.

`WRONG_MODELS` says, per runtime, how to make an artifact that is consistent (sha256 match) but
computes something else *for that runtime*; the validator must flag that runtime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexport.artifacts import open_artifact
from rnnexport.inputs import Case, make_inputs
from rnnexport.runtimes import RUNTIMES, unavailable_reason, make_runner
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS, perturb_weight, restamp

CASES = [Case.rnn(3, 17, "random"), Case.rnn(40, 10, "random")]


def perturb_onnx(folder: Path, tmp_path: Path) -> None:
    perturb_weight(folder, 0, "B", (1, 3), -0.1)  # the reverse direction's bias


def other_seed_file(filename: str):
    def apply(folder: Path, tmp_path: Path) -> None:
        from rnnexport.export import export_spec

        other = export_spec(open_artifact(folder).spec.replace(seed=11), tmp_path / "other", validate=False).path
        shutil.copyfile(other / filename, folder / filename)
        restamp(folder, filename)

    return apply


def perturb_weights(folder: Path, tmp_path: Path) -> None:
    import torch

    state = torch.load(folder / "weights.pt", weights_only=True)
    state["weight_hh_l1_reverse"][0, 0] += 0.1
    torch.save(state, folder / "weights.pt")
    restamp(folder, "weights.pt")


WRONG_MODELS = {
    "torch": perturb_weights,  # the reference itself is wrong: the golden data catches it
    "torchscript": other_seed_file("model.pt"),
    "torch-export": other_seed_file("model.pt2"),
    "onnxruntime-cpu": perturb_onnx,
    "onnxruntime-cuda": perturb_onnx,
    "onnx-reference": perturb_onnx,
    "openvino": perturb_onnx,
    "libtorch-cpp": other_seed_file("model.pt"),
    "onnxruntime-node": perturb_onnx,
}


def test_every_registered_runtime_is_covered():
    assert set(WRONG_MODELS) == set(RUNTIMES)
    # DESIGN.md's runtime names, all implemented.
    assert set(RUNTIMES) == {"torch", "torchscript", "onnxruntime-cpu", "onnxruntime-cuda", "torch-export",
                             "onnx-reference", "openvino", "libtorch-cpp", "onnxruntime-node"}


def _require(name: str) -> None:
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} is not available here: {reason}")


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runner_contract(name):
    _require(name)
    artifact = open_artifact(MODELS / "deep_bidirectional")
    spec = artifact.spec
    with make_runner(name, artifact) as runner:
        assert runner.name == name
        for case in CASES:
            feeds = make_inputs(spec, case)
            outputs = runner.infer(feeds)
            assert set(outputs) == {"output", "h_n"}
            expected = spec.shapes(case.size("batch"), case.size("seq"))
            for key, value in outputs.items():
                assert value.shape == expected[key] and value.dtype == np.float32
            assert not feeds["input"].flags.writeable  # feeds are shared and read-only


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runner_catches_its_wrong_model(name, artifact_copy, tmp_path):
    _require(name)
    folder = artifact_copy("deep_bidirectional")
    WRONG_MODELS[name](folder, tmp_path)
    report = validate_artifact(folder, runtimes=[name], cases=CASES)
    flagged = {c.runtime for c in report.failures} | {e.runtime for e in report.errors}
    assert name in flagged, f"{name} did not catch its wrong model"
    if name != "torch":
        assert report.runtime_summary()["torch"]["status"] == "passed"
