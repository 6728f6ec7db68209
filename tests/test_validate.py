"""The validator must catch wrong models; each wrong artifact here is internally consistent
(its manifest matches the changed file), so only the numerical checks can find it."""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import numpy_helper

from rnnexport.compare import Tolerance
from rnnexport.errors import UsageError
from rnnexport.inputs import Case
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS, REPO, mutate_onnx, perturb_weight, restamp, rnn_weights, set_array

QUICK = [Case.rnn(40, 10, "random"), Case.rnn(3, 17, "zero"), Case.rnn(3, 17, "random")]


def failing(report) -> set[tuple[str, str, str]]:
    return {(c.runtime, c.output, c.against) for c in report.failures}


def test_perturbed_onnx_weight_is_caught(artifact_copy):
    folder = artifact_copy("deep")
    perturb_weight(folder, 1, "W", (0, 3, 2), 0.05)
    report = validate_artifact(folder, cases=QUICK)
    assert not report.passed
    from rnnexport.runtimes import RUNTIMES

    onnx_runtimes = {r for r in report.runtimes if RUNTIMES[r].requires == "model.onnx"}
    assert {"onnxruntime-cpu", "onnx-reference"} <= onnx_runtimes
    assert {r for r, _, _ in failing(report)} == onnx_runtimes
    assert ("onnxruntime-cpu", "output", "torch") in failing(report)
    assert ("onnxruntime-cpu", "h_n", "golden") in failing(report)


def test_swapped_directions_are_caught(artifact_copy):
    folder = artifact_copy("deep_bidirectional")

    def swap(model):
        for tensor in rnn_weights(model, 0).values():
            array = numpy_helper.to_array(tensor)
            set_array(tensor, array[::-1].copy())  # [D, ...]: forward <-> reverse

    mutate_onnx(folder, swap)
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=QUICK)
    assert ("onnxruntime-cpu", "output", "torch") in failing(report)
    worst = max((c for c in report.failures if c.output == "output"), key=lambda c: c.max_abs_error)
    assert worst.max_abs_error > 1e-2 and worst.worst_index is not None


def test_dropped_bias_is_caught(artifact_copy):
    folder = artifact_copy("single_layer")

    def drop_bias(model):
        node = next(n for n in model.graph.node if n.op_type == "RNN")
        node.input[3] = ""

    mutate_onnx(folder, drop_bias)
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=QUICK)
    assert {("onnxruntime-cpu", "output", "torch"), ("onnxruntime-cpu", "h_n", "torch")} <= failing(report)


def test_torchscript_from_another_seed_is_caught(tmp_path, artifact_copy):
    from rnnexport.export import export_spec
    from rnnexport.spec import get_spec

    folder = artifact_copy("deep")
    other = export_spec(get_spec("deep").replace(seed=1), tmp_path / "other", validate=False).path
    shutil.copyfile(other / "model.pt", folder / "model.pt")
    restamp(folder, "model.pt")
    report = validate_artifact(folder, runtimes=["torchscript"], cases=QUICK)
    assert {r for r, _, _ in failing(report)} == {"torchscript"}
    assert ("torchscript", "output", "torch") in failing(report)


def test_wrong_layout_is_caught(artifact_copy):
    # seq_first and single_layer share weights (same seed and sizes) but not the layout.
    folder = artifact_copy("single_layer")
    shutil.copyfile(MODELS / "seq_first" / "model.onnx", folder / "model.onnx")
    restamp(folder, "model.onnx")
    report = validate_artifact(folder, runtimes=["onnxruntime-cpu"], cases=QUICK)
    assert not report.passed
    # ORT rejects h_0 of the wrong batch, or computes on the wrong axis: either is a failure.
    assert report.errors or ("onnxruntime-cpu", "output", "torch") in failing(report)


def test_altered_golden_is_caught_with_location(artifact_copy):
    from rnnexport.artifacts import read_npz, write_npz

    folder = artifact_copy("deep")
    arrays = read_npz(folder / "golden.npz")
    arrays["b3xs17-h0zero/output"] = arrays["b3xs17-h0zero/output"].copy()
    arrays["b3xs17-h0zero/output"][2, 16, 5] += 1e-3
    write_npz(folder / "golden.npz", arrays)
    restamp(folder, "golden.npz")
    report = validate_artifact(folder, cases=QUICK)
    bad = report.failures
    assert bad and all(c.against == "golden" and c.case == "b3xs17-h0zero" and c.output == "output" for c in bad)
    assert {c.worst_index for c in bad} == {(2, 16, 5)}
    assert {c.runtime for c in bad} == set(report.runtimes)


def test_tolerance_is_applied():
    # ORT differs from eager by ~1e-7: a zero tolerance must fail it, the default must not.
    strict = validate_artifact(MODELS / "single_layer", runtimes=["onnxruntime-cpu"], cases=QUICK,
                               tolerance=Tolerance(atol=0.0, rtol=0.0))
    assert ("onnxruntime-cpu", "output", "torch") in failing(strict)


def test_runtime_crash_is_a_failure_not_an_abort(artifact_copy, monkeypatch):
    from rnnexport.runtimes.onnx_runners import OnnxRuntimeRunner

    def boom(self, feeds):
        raise RuntimeError("simulated runtime crash")

    monkeypatch.setattr(OnnxRuntimeRunner, "_infer", boom)
    report = validate_artifact(MODELS / "deep", runtimes=["onnxruntime-cpu", "torchscript"], cases=QUICK)
    assert not report.passed
    assert {e.runtime for e in report.errors} == {"onnxruntime-cpu"}
    assert "simulated runtime crash" in report.errors[0].message
    assert report.runtime_summary()["torchscript"]["status"] == "passed"


def test_nan_in_runtime_output_is_caught(monkeypatch):
    from rnnexport.runtimes.onnx_runners import OnnxRuntimeRunner

    real = OnnxRuntimeRunner._infer

    def with_nan(self, feeds):
        outputs = real(self, feeds)
        outputs["h_n"] = outputs["h_n"].copy()
        outputs["h_n"].flat[0] = np.nan
        return outputs

    monkeypatch.setattr(OnnxRuntimeRunner, "_infer", with_nan)
    report = validate_artifact(MODELS / "deep", runtimes=["onnxruntime-cpu"], cases=QUICK)
    nan_failures = [c for c in report.failures if c.output == "h_n" and c.against == "torch"]
    assert nan_failures and all(c.nonfinite_mismatches == 1 for c in nan_failures)


def test_jobs_keep_the_order_and_the_verdicts(artifact_copy, cli):
    """--jobs 2 validates in worker processes; the reports come back in the artifacts' order
    with the same verdicts and exit code as in one process."""
    folder = artifact_copy("deep")
    perturb_weight(folder, 0, "W", (0, 1, 1), 0.05)
    shutil.copytree(MODELS / "seq_first", folder.parent / "seq_first")
    shutil.copytree(MODELS / "single_layer", folder.parent / "single_layer")
    outputs = {}
    for jobs in ("1", "2"):
        code, out, _ = cli("validate", folder.parent, "--runtimes", "onnxruntime-cpu", "--cases", "3x17", "--jobs", jobs)
        outputs[jobs] = (code, [line for line in out.splitlines() if line.endswith((")  PASS", ")  FAIL"))])
    assert outputs["1"] == outputs["2"]
    assert outputs["2"][0] == 1 and [line.split()[0] for line in outputs["2"][1]] == ["deep", "seq_first", "single_layer"]


def test_shards_cover_every_artifact_once_and_stay_put(tmp_path):
    from rnnexport.validate import select_shard

    folders = [tmp_path / f"artifact_{i}" for i in range(40)]
    shards = [select_shard(folders, k, 4) for k in range(1, 5)]
    assert sorted(sum(shards, [])) == sorted(folders)
    assert all(shards)  # 40 names over 4 shards: none empty
    assert set(shards[1]) <= set(select_shard([*folders, tmp_path / "new"], 2, 4))  # adding one moves no other
    with pytest.raises(UsageError, match="1 <= K <= N"):
        select_shard(folders, 5, 4)


def test_shard_option(cli):
    seen = set()
    for k in (1, 2):
        code, out, _ = cli("validate", MODELS, "--shard", f"{k}/2", "--runtimes", "onnxruntime-cpu", "--cases", "1x1",
                           "--jobs", "1")
        assert code == 0
        seen |= {line.split()[0] for line in out.splitlines() if line.endswith(")  PASS")}
    assert seen == {p.name for p in MODELS.iterdir() if p.is_dir()}
    code, _, err = cli("validate", MODELS, "--shard", "3/2")
    assert code == 2 and "1 <= K <= N" in err


def test_validation_failed_survives_a_worker_process():
    import pickle

    from rnnexport.errors import ValidationFailed

    failure = pickle.loads(pickle.dumps(ValidationFailed("deep: does not match", {"report": 1})))
    assert str(failure) == "deep: does not match" and failure.report == {"report": 1}


def test_runtimes_run_on_one_thread_and_torch_threads_are_restored():
    """Validation runs each runtime on one thread (results independent of the core count, no
    spinning thread pools between runtimes) unless told otherwise; torch's process-wide
    thread count is what it was before."""
    import torch

    before = torch.get_num_threads()
    report = validate_artifact(MODELS / "deep", runtimes=["torchscript", "onnxruntime-cpu"], cases=QUICK)
    assert report.passed and torch.get_num_threads() == before
    assert report.details["onnxruntime-cpu"]["intra_op_num_threads"] == "1"
    report = validate_artifact(MODELS / "deep", runtimes=["onnxruntime-cpu"], cases=QUICK,
                               runner_options={"onnxruntime-cpu": {"threads": 2}})
    assert report.details["onnxruntime-cpu"]["intra_op_num_threads"] == "2"
    assert torch.get_num_threads() == before


def test_workers_start_with_the_preloaded_modules(tmp_path):
    """--jobs workers are forked from a fork server that imported what they need once, with
    PYTHONHASHSEED=0 (so an export worker can fork its TorchScript compile server from itself)."""
    script = tmp_path / "preload.py"
    script.write_text(
        "import sys\n"
        "from rnnexport.workers import map_in_processes\n"
        "def loaded(name):\n"
        "    return name in sys.modules, sys.flags.hash_randomization\n"
        "if __name__ == '__main__':\n"
        "    print(map_in_processes(loaded, ['rnnexport.compare', 'rnnexport.bench'], 2, preload=['rnnexport.compare']))\n")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(True, 0), (False, 0)]"


def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path):
    """A --jobs worker is a child of the fork server, not of the process it works for: killed
    mid-run, that process must not leave workers running (an export worker would go on and
    install its artifact, then wait forever)."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from rnnexport.workers import map_in_processes\n"
        "from multiprocessing import forkserver\n"
        "def work(path):\n"
        "    Path(path).write_text(f'{os.getpid()} {forkserver._forkserver._forkserver_pid}')\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    map_in_processes(work, [sys.argv[1] + '/a', sys.argv[1] + '/b'], 2)\n")
    owner = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / n).exists() and (tmp_path / n).read_text() for n in "ab"):
            assert time.monotonic() < deadline and owner.poll() is None, "the workers did not start"
            time.sleep(0.1)
        workers = [int(pid) for n in "ab" for pid in (tmp_path / n).read_text().split()]  # and their fork servers
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 10
        from rnnexport.workers import _gone

        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers and their fork servers {workers} still run 10 s after " \
                                                "their owner was killed"
            time.sleep(0.1)
    finally:
        owner.kill()
        for pid in [int(pid) for n in "ab" if (tmp_path / n).exists() for pid in (tmp_path / n).read_text().split()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _own_fork_server(_) -> int | None:
    from multiprocessing import forkserver

    return forkserver._forkserver._forkserver_pid


@pytest.mark.parametrize("forks", [True, False])
def test_a_worker_forks_a_fork_server_of_its_own_only_where_it_may_start_processes(forks):
    """A variant's trial starts no process: its worker does not fork a fork server it would
    never use (a fork and an exit of a process holding torch, ~0.1 s of CPU each)."""
    from rnnexport.workers import map_in_processes

    [server] = map_in_processes(_own_fork_server, [0], 1, forks=forks)
    assert (server is not None) == forks, server


def test_a_worker_forks_from_a_fork_server_forked_from_it_not_a_fresh_interpreter(tmp_path):
    """A worker that starts processes (a model spec's eager reference, the variants' trials)
    gets them from a fork of itself made at its start, with what it preloaded: CPython would
    start a fresh interpreter importing torch again in every such worker. The servers end with
    their workers. Workers and what they start leave what they imported out of their garbage
    collections (``gc.freeze``): no full collection walks (and copies) the inherited heap."""
    script = tmp_path / "nested.py"
    script.write_text(
        "import gc, os, sys\n"
        "from rnnexport.workers import map_in_processes, start_workers\n"
        "def ppid(queue):\n"
        "    queue.put((os.getppid(), 'rnnexport.compare' in sys.modules, gc.get_freeze_count()))\n"
        "def child_of(_):\n"
        "    frozen = gc.get_freeze_count()\n"
        "    context = start_workers()\n"
        "    queue = context.SimpleQueue()\n"
        "    process = context.Process(target=ppid, args=(queue,))\n"
        "    process.start()\n"
        "    server, preloaded, child_frozen = queue.get()\n"
        "    process.join()\n"
        "    with open(f'/proc/{server}/stat') as stat:\n"
        "        server_parent = int(stat.read().rsplit(')', 1)[1].split()[1])\n"
        "    with open(f'/proc/{server}/cmdline', 'rb') as a, open('/proc/self/cmdline', 'rb') as b:\n"
        "        forked = a.read() == b.read()\n"
        "    return os.getpid(), server, server_parent, forked, preloaded, frozen, child_frozen\n"
        "if __name__ == '__main__':\n"
        "    print(map_in_processes(child_of, [1, 2], 2, preload=['rnnexport.compare']))\n")
    scratch = tmp_path / ("tmp" + "-long" * 20)  # too long a folder for a socket below it: see test_cli's quick exit
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(scratch)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    results = ast.literal_eval(done.stdout.strip())
    assert len({worker for worker, *_ in results}) == 2
    for worker, server, server_parent, forked, preloaded, frozen, child_frozen in results:
        assert server_parent == worker and forked and preloaded, results
        assert frozen > 10_000 and child_frozen > 10_000, results  # numpy alone is tens of thousands of objects
    from rnnexport.workers import _gone

    deadline = time.monotonic() + 10
    while not all(_gone(server) for _, server, *_ in results):
        assert time.monotonic() < deadline, f"fork servers {results} outlived their workers by 10 s"
        time.sleep(0.1)
