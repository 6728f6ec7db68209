"""The project's own regression suite: the committed models/ re-checked on the installed
torch/onnxruntime through rnnexport's pytest plugin (``rnnexport_artifacts`` in pyproject)."""

from __future__ import annotations


def test_committed_artifact(rnnexport_artifact, rnnexport_check):
    (report,) = rnnexport_check(rnnexport_artifact)
    assert report.passed and len(report.cases) == 10
    assert {"torch", "torchscript", "torch-export", "onnxruntime-cpu"} <= set(report.runtimes)
