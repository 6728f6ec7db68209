"""Out-of-process and optional runtimes: LibTorch C++, ONNX Runtime for Node.js, OpenVINO.

Where a toolchain is missing the tests that need it skip with the reason; the tests of what
happens when it is missing or broken run everywhere.
"""

from __future__ import annotations

import shutil
import sys

import pytest

from rnnexport.errors import RuntimeUnavailableError
from rnnexport.inputs import Case
from rnnexport.runtimes import unavailable_reason, clients, resolve_runtimes
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS


def require(name: str) -> None:
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"{name} is not available here: {reason}")


@pytest.mark.parametrize("runtime", ["libtorch-cpp", "onnxruntime-node", "openvino"])
@pytest.mark.parametrize("name", ["deep_bidirectional", "seq_first"])
def test_client_reproduces_golden_outputs(runtime, name):
    require(runtime)
    report = validate_artifact(MODELS / name, runtimes=[runtime])
    assert report.passed, [str(c) for c in report.failures] + [e.message for e in report.errors]
    golden = [c for c in report.comparisons if c.runtime == runtime and c.against == "golden"]
    assert len(golden) == 4 and all(c.max_abs_error < 1e-5 for c in golden)


def test_openvino_precision_is_f32_and_recorded():
    require("openvino")
    report = validate_artifact(MODELS / "deep", runtimes=["openvino"], cases=[Case.rnn(3, 17)])
    assert report.runtime_summary()["openvino"]["details"] == {"device": "CPU", "inference_precision": "f32"}


@pytest.fixture
def fresh_client_checks(monkeypatch, tmp_path):
    """Empty caches and forget earlier unavailable_reason answers."""
    monkeypatch.setenv("RNNEXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RNNEXPORT_NODE_PREFIX", str(tmp_path / "node"))
    caches = (clients._libtorch_plan, clients._libtorch_build, clients.node_status)
    for cache in caches:
        cache.cache_clear()
    yield tmp_path
    for cache in caches:
        cache.cache_clear()


def test_missing_cmake_makes_libtorch_unavailable(fresh_client_checks, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(clients.shutil, "which", lambda tool: None if tool == "cmake" else real_which(tool))
    assert unavailable_reason("libtorch-cpp") == "cmake not found on PATH"


def test_asking_whether_libtorch_is_available_builds_nothing(fresh_client_checks):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found on PATH: the client would not be buildable either way")
    assert unavailable_reason("libtorch-cpp") is None  # buildable here
    assert not (fresh_client_checks / "cache").exists(), "the status check started a build"


def test_failing_build_skips_libtorch_with_the_reason(fresh_client_checks, monkeypatch):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found on PATH: cannot show a failing build")
    broken = fresh_client_checks / "broken"
    shutil.copytree(clients._client_source("libtorch_cpp"), broken)
    (broken / "main.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(clients, "_client_source", lambda name: broken)
    # Unavailable, not a crash: the build runs on first use; the default set skips it with the
    # reason and the rest runs.
    assert "libtorch-cpp" in resolve_runtimes(None)[0]  # buildable, as far as anyone can tell without building
    report = validate_artifact(MODELS / "deep", cases=[Case.rnn(3, 17)])
    assert report.passed and report.skipped["libtorch-cpp"].startswith("libtorch-cpp: LibTorch client build failed")
    assert "onnxruntime-cpu" in report.runtimes
    with pytest.raises(RuntimeUnavailableError, match="'libtorch-cpp' was asked for but cannot run deep: libtorch-cpp: "
                                                      "LibTorch client build failed"):
        validate_artifact(MODELS / "deep", cases=[Case.rnn(3, 17)], runtimes=["libtorch-cpp"])


def test_missing_node_package_is_explained(fresh_client_checks, cli):
    if shutil.which("node") is None:
        assert unavailable_reason("onnxruntime-node") == "node not found on PATH"
        return
    reason = unavailable_reason("onnxruntime-node")
    assert "npm package onnxruntime-node is not installed" in reason and "--ignore-scripts" in reason
    code, _, err = cli("validate", MODELS / "deep", "--runtimes", "onnxruntime-node")
    assert code == 2 and "npm install --prefix" in err


def test_missing_node_binary(fresh_client_checks, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(clients.shutil, "which", lambda tool: None if tool == "node" else real_which(tool))
    assert unavailable_reason("onnxruntime-node") == "node not found on PATH"


def test_client_errors_are_reported_per_case(monkeypatch):
    require("onnxruntime-node")
    from rnnexport.runtimes.clients import NodeRunner

    real = NodeRunner._write_inputs

    def corrupt(self, feeds):
        folder = real(self, feeds)
        (folder / "input.bin").write_bytes(b"\0" * 8)  # fewer bytes than the shape needs
        return folder

    monkeypatch.setattr(NodeRunner, "_write_inputs", corrupt)
    report = validate_artifact(MODELS / "deep", runtimes=["onnxruntime-node"], cases=[Case.rnn(3, 17)])
    assert not report.passed and {e.runtime for e in report.errors} == {"onnxruntime-node"}
    assert report.runtime_summary()["torch"]["status"] == "passed"


def test_onnxruntime_session_is_created_once_per_artifact(monkeypatch):
    import onnxruntime as ort

    created = []
    real = ort.InferenceSession

    def counting(*args, **kwargs):
        created.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    validate_artifact(MODELS / "deep", runtimes=["onnxruntime-cpu"])
    assert len([p for p in created if str(p).endswith("model.onnx")]) == 1


@pytest.fixture(scope="module")
def lstm_variable_length(tmp_path_factory):
    from rnnexport.export import export_spec
    from rnnexport.spec import RNNSpec

    spec = RNNSpec("lstm_var", cell="lstm", input_size=4, hidden_size=6, num_layers=2, bidirectional=True,
                   batch_first=True, variable_length=True, batch_size=3, seq_len=7)
    return export_spec(spec, tmp_path_factory.mktemp("lstm"), validate=False).path


@pytest.mark.parametrize("runtime", ["libtorch-cpp", "onnxruntime-node"])
def test_clients_take_lstm_state_tuples_and_int64_lengths(lstm_variable_length, runtime):
    require(runtime)
    report = validate_artifact(lstm_variable_length, runtimes=[runtime])
    assert report.passed, [str(c) for c in report.failures] + [e.message for e in report.errors]
    outputs = {c.output for c in report.comparisons if c.runtime == runtime and c.against == "torch"}
    assert outputs == {"output", "h_n", "c_n"}


def test_known_runtime_limitations_are_skips_with_reasons(lstm_variable_length):
    report = validate_artifact(lstm_variable_length)
    assert "sequence_lens" in report.skipped["onnx-reference"]
    if unavailable_reason("openvino") is None:
        assert "OpenVINO" in report.skipped["openvino"]
        with pytest.raises(RuntimeUnavailableError, match="cannot run lstm_var: OpenVINO"):
            validate_artifact(lstm_variable_length, runtimes=["openvino"])


def test_openvino_variable_length_is_still_wrong(lstm_variable_length):
    """Keeps the OpenVINO limitation honest: when OpenVINO fixes sequence_lens, this fails and
    the runner's `unsupported_reason` can go."""
    require("openvino")
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    from rnnexport.artifacts import open_artifact

    spec = open_artifact(lstm_variable_length).spec
    from rnnexport.inputs import make_inputs

    feeds = dict(make_inputs(spec, Case.rnn(4, 9, "random")))
    path = str(lstm_variable_length / "model.onnx")
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["output"], feeds)[0]
    compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.array(compiled(feeds)[compiled.output("output")])
    assert np.abs(got - expected).max() > 1e-3


def test_onnx_reference_still_ignores_sequence_lens(lstm_variable_length):
    """Keeps the onnx-reference limitation honest: when onnx.reference honours sequence_lens,
    this fails and `OnnxReferenceRunner.unsupported_reason` can stop skipping variable lengths."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from rnnexport.artifacts import open_artifact
    from rnnexport.inputs import make_inputs

    spec = open_artifact(lstm_variable_length).spec
    feeds = dict(make_inputs(spec, Case.rnn(4, 9, "random")))
    assert len(set(feeds["lengths"].tolist())) > 1  # lengths really vary
    path = str(lstm_variable_length / "model.onnx")
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["output"], feeds)[0]
    got = ReferenceEvaluator(onnx.load(path)).run(["output"], feeds)[0]
    assert np.abs(got - expected).max() > 1e-3


@pytest.mark.parametrize("runtime", ["libtorch-cpp", "onnxruntime-node"])
def test_one_client_process_serves_artifact_after_artifact(runtime, artifact_copy):
    """A client is started once and told each artifact with LOAD: the second artifact runs in
    the same process, a model it cannot load is an error of that artifact only (the process
    goes on serving), and a client that died meanwhile is replaced."""
    require(runtime)
    from rnnexport.artifacts import open_artifact
    from rnnexport.runtimes import make_runner
    from tests.conftest import restamp

    clients.stop_idle_clients()
    pids = []
    for name in ("deep", "seq_first"):
        report = validate_artifact(MODELS / name, runtimes=[runtime], cases=[Case.rnn(3, 17)])
        assert report.passed, [e.message for e in report.errors]
        (idle,) = clients._IDLE[next(iter(clients._IDLE))]
        pids.append(idle.process.pid)
    assert pids[0] == pids[1]

    broken = artifact_copy("single_layer")
    model = "model.pt" if runtime == "libtorch-cpp" else "model.onnx"
    (broken / model).write_bytes(b"not a model")
    restamp(broken, model)
    report = validate_artifact(broken, runtimes=[runtime], cases=[Case.rnn(3, 17)])
    (error,) = [e for e in report.errors if e.runtime == runtime]
    assert "the client cannot load the model" in error.message and model in error.message
    report = validate_artifact(MODELS / "deep", runtimes=[runtime], cases=[Case.rnn(3, 17)])
    assert report.passed
    (idle,) = clients._IDLE[next(iter(clients._IDLE))]
    assert idle.process.pid == pids[0]

    idle.process.kill()
    idle.process.wait()
    runner = make_runner(runtime, open_artifact(MODELS / "deep"))
    with runner:
        assert runner._client.process.pid != pids[0]
    clients.stop_idle_clients()
    assert not clients._IDLE


def test_a_client_that_cannot_start_says_why(monkeypatch):
    from rnnexport.artifacts import open_artifact
    from rnnexport.errors import ArtifactError
    from rnnexport.runtimes.clients import NodeRunner

    monkeypatch.setattr(NodeRunner, "_command", lambda self: ([sys.executable, "-c", "print('error no such client')"], None))
    with pytest.raises(ArtifactError, match="onnxruntime-node: the client does not start: no such client"):
        NodeRunner(open_artifact(MODELS / "deep"), "onnxruntime-node").load()
