"""The project's own regression suite: the committed models/ re-checked on the installed
torch/onnxruntime through rnnexport's pytest plugin (``rnnexport_artifacts`` in pyproject): the
one full validation of each committed artifact in the suite."""

from __future__ import annotations


def test_committed_artifact(rnnexport_artifact, rnnexport_check):
    from rnnexport.artifacts import open_artifact
    from rnnexport.inputs import default_sweep

    (report,) = rnnexport_check(rnnexport_artifact)
    artifact = open_artifact(rnnexport_artifact)
    expected = {c.id for c in [*default_sweep(artifact.spec), *artifact.golden_cases()]}
    assert report.passed and set(report.cases) == expected, [str(c) for c in report.failures]
    assert {"torch", "torchscript", "torch-export", "onnxruntime-cpu"} <= set(report.runtimes)
    assert "onnxruntime-cuda" in report.runtimes or "onnxruntime-cuda" in report.skipped  # never left out silently
    # Golden data is checked on every runtime that ran.
    assert {c.runtime for c in report.comparisons if c.against == "golden"} == set(report.runtimes)
