"""ONNX Runtime on a real GPU. Skips, stating why, where there is none."""

from __future__ import annotations

import pytest

from rnnexport.runtimes import unavailable_reason
from tests.conftest import MODELS

CUDA_REASON = unavailable_reason("onnxruntime-cuda")
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=f"no real CUDA GPU for ONNX Runtime: {CUDA_REASON}")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["single_layer", "deep", "deep_bidirectional", "seq_first"])
def test_committed_artifacts_pass_on_cuda(name):
    from rnnexport.validate import validate_artifact

    report = validate_artifact(MODELS / name, runtimes=["onnxruntime-cuda"])
    assert report.passed, [str(c) for c in report.failures]


@pytest.mark.cuda
@needs_cuda
def test_cuda_session_really_runs_on_cuda():
    from rnnexport.artifacts import open_artifact
    from rnnexport.runtimes.onnx_runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(open_artifact(MODELS / "deep"), "onnxruntime-cuda", provider="CUDAExecutionProvider") as runner:
        assert runner._session.get_providers()[0] == "CUDAExecutionProvider"


def test_provider_probe_agrees_with_a_session_of_its_own():
    """Runs everywhere: the probe's answer agrees with what a session made here, independently
    of the probe, really runs on (onnxruntime-gpu lists CUDA even without a GPU)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from rnnexport.runtimes.onnx_runners import cuda_provider_status

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model, options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        session.run(None, {"x": np.zeros(1, np.float32)})
    except Exception:
        on_cuda = False
    assert (cuda_provider_status() is None) is on_cuda, cuda_provider_status()
