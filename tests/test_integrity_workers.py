"""Issue 17, round two: a killed --jobs worker, empty selections, noise on stderr. Each is
tested the way it fails: a worker killed for real, the CLI in a fresh process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS, REPO, assert_quiet, run_process

QUICK = ("--runtimes", "onnxruntime-cpu", "--cases", "3x17")

# Loaded by every interpreter the CLI starts (PYTHONPATH), the fork server included, so its
# workers inherit it: the worker given the artifact or spec named by RNNEXPORT_TEST_KILL kills
# itself with SIGKILL. Nothing in rnnexport knows of it.
_KILLER = '''
import os

import rnnexport.export
import rnnexport.validate

_validate, _export = rnnexport.validate._validate_in_worker, rnnexport.export._export_or_failure


def _die_for(name):
    if name == os.environ["RNNEXPORT_TEST_KILL"]:
        os.kill(os.getpid(), 9)


def validate_or_die(item):
    _die_for(item[0].name)
    return _validate(item)


def export_or_die(item):
    _die_for(item[0].name)
    return _export(item)


rnnexport.validate._validate_in_worker, rnnexport.export._export_or_failure = validate_or_die, export_or_die
'''


def killing(tmp_path: Path, victim: str) -> dict[str, str]:
    """The environment of a CLI run whose worker for `victim` is killed (`_KILLER`)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_KILLER)
    path = [str(hooks), str(REPO), os.environ.get("PYTHONPATH")]  # the hook imports rnnexport before `-m` runs
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "RNNEXPORT_TEST_KILL": victim}


def death_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The lines about a dead worker, after checking the run failed (1) without a traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    return [line for line in (done.stdout + done.stderr).splitlines() if "worker process died" in line]


def run_script(script: Path) -> subprocess.CompletedProcess:
    """Run a Python file with this checkout's rnnexport (its own folder comes first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)


# -- 1. a killed --jobs worker -------------------------------------------------------------------

def test_validate_reports_the_artifact_whose_worker_was_killed_and_keeps_the_others(tmp_path, artifact_copy):
    for name in ("deep", "single_layer", "seq_first"):
        artifact_copy(name)
    done = run_process("validate", tmp_path / "models", *QUICK, "--jobs", "2", env=killing(tmp_path, "deep"))
    [line] = death_lines(done)
    assert line.strip() == ("ERROR deep | * | *: its worker process died (killed by signal 9, SIGKILL) before "
                            "returning a result: SIGKILL often means the out-of-memory killer; try fewer --jobs")
    verdicts = [line.split()[0] + " " + line.split()[-1] for line in done.stdout.splitlines()
                if line.endswith((")  PASS", ")  FAIL"))]
    assert verdicts == ["deep FAIL", "seq_first PASS", "single_layer PASS"]
    assert "2 of 3 artifact(s) passed, 1 failed" in done.stdout


def test_export_names_the_spec_whose_worker_was_killed_and_installs_the_others(tmp_path):
    out = tmp_path / "D"
    done = run_process("export", "deep", "single_layer", "seq_first", "--out", out, "--no-validate", "--jobs", "2",
                       env=killing(tmp_path, "deep"))
    [line] = death_lines(done)
    assert line.startswith("rnnexport: deep: its worker process died (killed by signal 9, SIGKILL)"), line
    assert sorted(line for line in done.stderr.splitlines() if line.startswith("wrote")) == [
        f"wrote {out / 'seq_first'} (exporter legacy)", f"wrote {out / 'single_layer'} (exporter legacy)"]
    assert (out / "single_layer" / "manifest.json").is_file() and (out / "seq_first" / "manifest.json").is_file()
    assert not (out / "deep").exists()


def test_a_dead_worker_costs_no_other_item_its_result(tmp_path):
    """Items queued behind the killed one still run; only the killed one is blamed."""
    script = tmp_path / "work.py"
    script.write_text(
        "import os\n"
        "from rnnexport.workers import map_in_processes\n"
        "def work(n):\n"
        "    if n == 1:\n"
        "        os.kill(os.getpid(), 9)\n"
        "    if n == 4:\n"
        "        os._exit(3)\n"
        "    return n * 10\n"
        "if __name__ == '__main__':\n"
        "    for result in map_in_processes(work, list(range(6)), 2):\n"
        "        print(type(result).__name__, result)\n")
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "int 0",
        "WorkerDied 1: its worker process died (killed by signal 9, SIGKILL) before returning a result: "
        "SIGKILL often means the out-of-memory killer; try fewer --jobs",
        "int 20", "int 30",
        "WorkerDied 4: its worker process died (exit status 3) before returning a result",
        "int 50"]


def test_an_error_in_a_worker_is_raised_with_its_remote_traceback(tmp_path):
    script = tmp_path / "work.py"
    script.write_text(
        "from rnnexport.workers import map_in_processes\n"
        "def work(n):\n"
        "    if n == 1:\n"
        "        raise KeyError(n)\n"
        "    return n\n"
        "if __name__ == '__main__':\n"
        "    map_in_processes(work, [0, 1, 2], 2)\n")
    done = run_script(script)
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith("KeyError: 1")
    assert "in the worker process:" in done.stderr and 'raise KeyError(n)' in done.stderr


# -- 2. an empty selection is not a pass -----------------------------------------------------------

def test_a_shard_that_selects_no_artifact_is_an_error_naming_the_shards_that_hold_some(cli):
    from rnnexport.artifacts import discover_artifacts
    from rnnexport.validate import select_shard

    code, out, err = cli("validate", MODELS, "--shard", "1/100000")
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"rnnexport: error: shard 1/100000 selects none of the 8 artifacts under {MODELS} ")
    held = [int(k) for k in line.split("the shards of 100000 that hold one: ")[1].split("; ")[0].split(", ")]
    folders = discover_artifacts([MODELS])
    assert sorted(f for k in held for f in select_shard(folders, k, 100000)) == sorted(folders)


@pytest.mark.parametrize(("command", "option", "value"), [
    ("validate", "--cases", ""), ("validate", "--cases", " , "), ("bench", "--shapes", "")],
    ids=["cases-empty", "cases-commas", "bench-shapes-empty"])
def test_no_case_at_all_is_an_error(cli, command, option, value):
    code, out, err = cli(command, MODELS / "deep", option, value)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"rnnexport: error: {option} {value!r}: no case given; valid: comma-separated BxS or "
                                f"bBxsS-h0zero|random (e.g. 3x17,b1xs1-h0zero; one size per dim, e.g. 4 or "
                                f"2x50-h0zero), or leave {option} out for the default ones"]


@pytest.mark.parametrize("cases", [[], ""], ids=["list", "string"])
def test_plugin_fails_a_check_given_no_case(rnnexport_check, cases):
    with pytest.raises(pytest.fail.Exception, match=rf"^rnnexport: cases {re.escape(repr(cases))}: no case given; "):
        rnnexport_check(MODELS / "deep", cases=cases, runtimes=["onnxruntime-cpu"])


# -- 3. stderr holds rnnexport's own lines only ------------------------------------------------------

def test_the_fork_server_preload_starts_no_thread_or_process():
    """OpenVINO's import sent telemetry from a thread through a forked process: in the --jobs
    fork server (which imports it ahead of the workers) that process was reaped as an
    unexpected child, with "UserWarning: forkserver: waitpid returned unexpected pid"."""
    from rnnexport.export import export_imports

    script = ("import importlib, multiprocessing, sys, threading\n"
              "for name in sys.argv[1:]:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except ImportError:\n"
              "        pass\n"
              "print([t.name for t in threading.enumerate()], multiprocessing.active_children())\n")
    done = subprocess.run([sys.executable, "-c", script, *export_imports(None)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread'] []"


def test_export_and_validate_print_only_their_own_lines(tmp_path):
    """In the exporting process and in validation workers (--jobs 2), with variants' trials:
    stderr holds rnnexport's lines only (the worker export path: test_cli's `export --all
    --jobs 2`; validation in process: its quick-exit test). What torch prints meanwhile is
    recorded in the manifest instead: the C++ warning on prim::PackPadded (written to the stderr
    file descriptor) in full, without its time stamp, and oneDNN's on LSTM projections."""
    out = tmp_path / "D"
    (tmp_path / "v.toml").write_text('name = "v"\ncell = "gru"\ninput_size = 3\nhidden_size = 4\n'
                                     'variable_length = true\n')
    (tmp_path / "proj.toml").write_text('name = "proj"\ncell = "lstm"\ninput_size = 3\nhidden_size = 4\n'
                                        'proj_size = 2\n')
    done = run_process("export", tmp_path / "v.toml", tmp_path / "proj.toml", "--out", out, "--jobs", "1")
    assert_quiet(done, own=("wrote ", "note: "))
    assert f"wrote {out / 'v'} (exporter legacy)" in done.stderr.splitlines()
    warnings = json.loads((out / "v" / "manifest.json").read_text())["export_warnings"]["onnx"]
    assert any(w.startswith("stderr: Warning: The shape inference of prim::PackPadded type is missing") for w in warnings)
    assert not any("[W" in w for w in warnings)
    assert any("https://docs.pytorch.org/docs/stable/onnx_export.html" in w for w in warnings)  # not cut short
    warnings = json.loads((out / "proj" / "manifest.json").read_text())["export_warnings"]["golden"]
    assert any("LSTM with projections is not supported with oneDNN" in w for w in warnings), warnings
    shutil.copytree(MODELS / "text_classifier", out / "text_classifier")  # with its variants
    assert_quiet(run_process("validate", out, "--jobs", "2", "--cases", "3x17"))
