"""The project's own regression suite: the committed models/ re-checked on the installed
torch/onnxruntime through rnnexport's pytest plugin (``rnnexport_artifacts`` in pyproject)."""

from __future__ import annotations


def test_committed_artifact(rnnexport_artifact, rnnexport_check):
    from rnnexport.artifacts import open_artifact
    from rnnexport.inputs import default_sweep

    (report,) = rnnexport_check(rnnexport_artifact)
    artifact = open_artifact(rnnexport_artifact)
    expected = {c.id for c in [*default_sweep(artifact.spec), *artifact.golden_cases()]}
    assert report.passed and set(report.cases) == expected
    assert {"torch", "torchscript", "torch-export", "onnxruntime-cpu"} <= set(report.runtimes)
