"""The pytest plugin, used the way a user would: a separate project run by pytest (a session
of its own, in this process: `run_pytest`; pytest-xdist's starts its own processes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import MODELS, mutate_onnx, rnn_weights, set_array


def make_project(tmp_path: Path, names=("deep", "seq_first")) -> Path:
    project = tmp_path / "userproject"
    for name in names:
        shutil.copytree(MODELS / name, project / "artifacts" / name)
    (project / "pytest.ini").write_text("[pytest]\nrnnexport_artifacts = artifacts\n")
    (project / "test_user.py").write_text(textwrap.dedent("""
        def test_each(rnnexport_artifact, rnnexport_check):
            rnnexport_check(rnnexport_artifact, cases=["3x17"])

        def test_folder(rnnexport_check):
            reports = rnnexport_check("artifacts", cases=["b1xs1-h0zero"])
            assert len(reports) == 2
    """))
    return project


def run_pytest(project: Path, *args: str, cwd: Path | None = None) -> Session:
    """A pytest session on `project` (from `cwd`, default the project), in this process:
    ``pytest.main`` with its own configuration and plugins, the user's test modules imported
    under names of their own (``--import-mode=importlib``)."""
    import contextlib
    import io
    import os

    import pytest

    out = io.StringIO()
    before, bytecode = Path.cwd(), sys.dont_write_bytecode
    os.chdir(cwd or project)
    sys.dont_write_bytecode = True  # a test file rewritten in the same second is read again
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=importlib", *args])
    finally:
        os.chdir(before)
        sys.dont_write_bytecode = bytecode
        for name, module in list(sys.modules.items()):  # the project's test modules, for the next session
            if str(getattr(module, "__file__", None) or "").startswith(str(project)):
                del sys.modules[name]
    return Session(int(code), out.getvalue())


@dataclass
class Session:
    """A pytest session's exit code and output (stdout and stderr together)."""

    returncode: int
    stdout: str

    @property
    def stderr(self) -> str:
        return self.stdout


def test_plugin_passes_and_parametrizes(tmp_path):
    project = make_project(tmp_path)
    done = run_pytest(project, "-vv", "--rnnexport-runtimes", "onnxruntime-cpu,torchscript")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "test_each[deep] PASSED" in done.stdout and "test_each[seq_first] PASSED" in done.stdout
    assert "3 passed" in done.stdout and "DeprecationWarning" not in done.stdout


def test_plugin_failure_shows_the_table(tmp_path):
    from onnx import numpy_helper

    project = make_project(tmp_path)
    folder = project / "artifacts" / "deep"

    def perturb(model):
        w = rnn_weights(model, 0)["R"]
        set_array(w, numpy_helper.to_array(w) + 0.05)

    mutate_onnx(folder, perturb)
    done = run_pytest(project, "--rnnexport-runtimes", "onnxruntime-cpu")
    assert done.returncode == 1
    assert "rnnexport validation failed" in done.stdout
    assert "FAIL deep | onnxruntime-cpu | b3xs17-h0random | output vs torch" in done.stdout
    assert "LOCATED deep | onnxruntime-cpu" in done.stdout
    assert "2 failed, 1 passed" in done.stdout


def test_plugin_without_configuration_is_a_usage_error(tmp_path):
    project = make_project(tmp_path)
    (project / "pytest.ini").write_text("[pytest]\n")
    done = run_pytest(project)
    assert done.returncode != 0
    assert "rnnexport_artifact fixture needs artifact folders" in done.stdout + done.stderr


def test_plugin_untrusted_switch_never_loads_code(tmp_path):
    from tests.test_trust import _malicious_torchscript

    project = make_project(tmp_path, names=("single_layer",))
    marker = tmp_path / "ran"
    _malicious_torchscript(project / "artifacts" / "single_layer", marker)
    (project / "test_user.py").write_text(textwrap.dedent("""
        def test_each(rnnexport_artifact, rnnexport_check):
            reports = rnnexport_check(rnnexport_artifact, cases=["3x17"])
            assert "torchscript" in reports[0].skipped and "torch-export" in reports[0].skipped
    """))
    done = run_pytest(project, "--rnnexport-untrusted")
    assert done.returncode == 0, done.stdout[-3000:]
    assert not marker.exists()
    (project / "pytest.ini").write_text("[pytest]\nrnnexport_artifacts = artifacts\nrnnexport_untrusted = true\n")
    done = run_pytest(project)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not marker.exists()


def test_plugin_explicit_runtime_skips_an_artifact_it_cannot_run(tmp_path):
    """An LSTM projection has no model.onnx: --rnnexport-runtimes onnxruntime-cpu skips it there
    (with the reason) and still checks the artifacts it can run."""
    from rnnexport.export import export_spec
    from rnnexport.spec import spec_from_dict

    project = make_project(tmp_path, names=("deep",))
    spec = spec_from_dict({"name": "proj", "cell": "lstm", "input_size": 3, "hidden_size": 4, "proj_size": 2})
    export_spec(spec, project / "artifacts", validate=False)
    (project / "test_user.py").write_text(textwrap.dedent("""
        def test_each(rnnexport_artifact, rnnexport_check):
            reports = rnnexport_check(rnnexport_artifact, cases=["3x17"])
            if reports[0].artifact == "proj":
                assert "artifact has no model.onnx" in reports[0].skipped["onnxruntime-cpu"]
            else:
                assert "onnxruntime-cpu" in reports[0].runtimes
    """))
    done = run_pytest(project, "-vv", "--rnnexport-runtimes", "onnxruntime-cpu")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout


def test_plugin_failure_is_reported_once_and_paths_are_the_ini_files(tmp_path):
    project = make_project(tmp_path, names=("deep",))
    (project / "tests").mkdir()
    (project / "tests" / "test_paths.py").write_text(textwrap.dedent("""
        def test_relative(rnnexport_check):
            rnnexport_check("artifacts/deep", cases=["3x17"], runtimes=["onnxruntime-cpu"])

        def test_missing(rnnexport_check):
            rnnexport_check("artifacts/nothing-here")
    """))
    # -rN: no short summary, whose line is cut to the terminal width (so it may or may not repeat it)
    done = run_pytest(project, "-rN", "test_paths.py", cwd=project / "tests")
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert done.stdout.count("nothing-here: no such file or directory") == 1
    assert f"{project / 'artifacts' / 'nothing-here'}: no such file" in done.stdout
    assert "During handling of the above exception" not in done.stdout


def test_plugin_under_pytest_xdist(tmp_path):
    """A large set of artifacts spread over processes with pytest-xdist (`-n 2`): each worker
    collects the same parametrization and validates its share."""
    import pytest

    pytest.importorskip("xdist", reason="pytest-xdist is not installed (pip install 'rnnexport[test]')")
    project = make_project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "--rnnexport-runtimes", "onnxruntime-cpu"], cwd=project, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 passed" in done.stdout
