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


def test_provider_probe_is_consistent():
    """Runs everywhere: the probe's answer agrees with what a real session gets."""
    import onnxruntime as ort

    from rnnexport.runtimes.onnx_runners import cuda_provider_status

    assert cuda_provider_status() == CUDA_REASON
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert CUDA_REASON is None or "fell back" in CUDA_REASON or "failed" in CUDA_REASON
