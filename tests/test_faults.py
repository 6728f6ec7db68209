"""Reliability tested the way it fails: concurrent and killed exports, links, duplicate names,
a full disk, absurd sizes, runtime edges. Every run ends in exit 0, 1 or 2 with one line on
stderr, and the previous artifact is never lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnexport.artifacts import export_lock, open_artifact
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS, REPO, run_process
from tests.test_cli import digest

QUICK = ("--runtimes", "onnxruntime-cpu", "--cases", "3x17")


def one_line_error(done, code: int = 2) -> str:
    """The single stderr line of a run that exited with `code` (and printed no traceback): a
    finished process, or the `cli` fixture's ``(code, stdout, stderr)``."""
    returncode, stdout, stderr = (done.returncode, done.stdout, done.stderr) if hasattr(done, "returncode") else done
    assert returncode == code, (returncode, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# -- concurrent and interrupted exports --------------------------------------------------------

def test_two_exports_of_one_name_at_once_both_succeed(tmp_path):
    """The second starts while the first is inside its staging folder, both making variants:
    the export lock makes them take turns; both exit 0, the installed artifact is whole (its
    files the committed ones, verified on opening, and it validates) and nothing of either is
    left beside it."""
    out = tmp_path / "D"
    command = [sys.executable, "-m", "rnnexport", "export", "keyword_spotter", "--variant", "int8,fp16",
               "--out", str(out), "--no-validate"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # until the first one is inside its staging folder
    while time.monotonic() < deadline and first.poll() is None and not any(
            p.name.startswith(".keyword_spotter.staging-") for p in (out.iterdir() if out.exists() else [])):
        time.sleep(0.02)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=600) + (p.returncode,) for p in (first, second)]
    for stdout, stderr, code in results:
        assert code == 0 and "Traceback" not in stdout + stderr, stderr[-2000:]
    for file in ("model.onnx", "model.pt", "model.pt2", "weights.safetensors", "model.int8.onnx"):
        assert (out / "keyword_spotter" / file).read_bytes() == (MODELS / "keyword_spotter" / file).read_bytes(), file
    assert sorted(p.name for p in out.iterdir()) == [".keyword_spotter.lock", "keyword_spotter"]
    assert set(open_artifact(out / "keyword_spotter").manifest["variants"]) == {"int8", "fp16"}
    assert validate_artifact(out / "keyword_spotter", runtimes=["onnxruntime-cpu"]).passed


def test_export_waits_for_the_lock_then_gives_up_naming_the_holder(tmp_path):
    out = tmp_path / "D"
    out.mkdir()
    with export_lock(out / "deep"):
        done = run_process("export", "deep", "--out", out, "--no-validate", "--lock-timeout", "1")
    line = one_line_error(done)
    assert f"another export of 'deep' into '{out}' is running (held by pid {os.getpid()})" in line
    assert not (out / "deep").exists()


def test_staging_match_is_exact(tmp_path, cli):
    out = tmp_path / "D"
    for name in (".a.staging-x.rejected", ".a.staging-x.previous", ".a.staging-abcdefgh.rejected"):
        (out / name).mkdir(parents=True)
    code, _, err = cli("export", "--cell", "rnn", "--input-size", "2", "--hidden-size", "3", "--name", "a",
                       "--out", out, "--no-validate")
    assert code == 0, err
    for name in (".a.staging-x.rejected", ".a.staging-x.previous", ".a.staging-abcdefgh.rejected"):
        assert (out / name).is_dir(), name


def test_symlinked_artifact_folder_is_followed_and_kept(tmp_path, cli):
    out, shared = tmp_path / "D", tmp_path / "shared"
    out.mkdir()
    shutil.copytree(MODELS / "deep", shared / "deep-v1")
    (out / "deep").symlink_to(shared / "deep-v1")
    for _ in range(2):  # the second export used to fail with "Cannot call rmtree on a symbolic link"
        code, _, err = cli("export", "deep", "--out", out, "--seed", "3", "--no-validate")
        assert code == 0, err
        assert (out / "deep").is_symlink() and (out / "deep").resolve() == (shared / "deep-v1").resolve()
    assert not any(p.name.endswith(".previous") for p in [*out.iterdir(), *shared.iterdir()])
    assert '"seed": 3' in (shared / "deep-v1" / "manifest.json").read_text()
    code, _, _ = cli("validate", out / "deep", *QUICK)
    assert code == 0


def test_dangling_symlink_is_refused(tmp_path, cli):
    out = tmp_path / "D"
    out.mkdir()
    (out / "deep").symlink_to(tmp_path / "nowhere")
    line = one_line_error(cli("export", "deep", "--out", out, "--no-validate"))
    assert "symbolic link" in line and "does not exist" in line


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the compiling child")
def test_killed_export_takes_its_torchscript_compiler_with_it(tmp_path):
    out = tmp_path / "D"
    shutil.copytree(MODELS / "deep", out / "deep")
    before = digest(out / "deep")
    parent = subprocess.Popen([sys.executable, "-m", "rnnexport", "export", "deep", "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    children: list[int] = []
    # The compile server (a child) forks the compiler (a grandchild): wait for both.
    while len(children) < 2 and time.monotonic() < deadline and parent.poll() is None:
        children = _children(parent.pid)
        children += [g for c in children for g in _children(c)]
        time.sleep(0.02)
    assert len(children) >= 2, "the export never started its TorchScript compiler"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(c) for c in children)
    stale = [p for p in out.iterdir() if p.name.startswith(".deep.staging-")]
    assert all(not (p / "model.pt").exists() for p in stale)
    assert digest(out / "deep") == before


def test_duplicate_names_in_one_call_are_refused(tmp_path):
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.toml").write_text('name = "dup"\ninput_size = 2\nhidden_size = 3\n')
    out = tmp_path / "D"
    line = one_line_error(run_process("export", tmp_path / "a.toml", tmp_path / "b.toml", "--out", out))
    assert "a.toml" in line and "b.toml" in line and "'dup'" in line
    assert not out.exists()


def test_name_with_a_trailing_newline_is_refused(tmp_path):
    (tmp_path / "x.toml").write_text('name = "deep\\n"\ninput_size = 2\nhidden_size = 3\n')
    out = tmp_path / "D"
    line = one_line_error(run_process("export", tmp_path / "x.toml", "--out", out))
    assert "invalid value for 'name'" in line
    assert not out.exists()


# -- a full disk -------------------------------------------------------------------------------

def test_enospc_while_writing_is_one_line_and_keeps_the_previous_artifact(tmp_path, cli, monkeypatch):
    import rnnexport.export.pipeline as ex  # the one export pipeline

    out = tmp_path / "D"
    shutil.copytree(MODELS / "deep", out / "deep")
    before = digest(out / "deep")

    def full(path, arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ex, "write_npz", full)
    code, _, err = cli("export", "deep", "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert "no space left on device while writing golden.npz" in err
    assert digest(out / "deep") == before
    assert sorted(p.name for p in out.iterdir()) == [".deep.lock", "deep"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MiB tmpfs (needs root and mount; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


EXPORTS_ONTO_A_FILLED_FILESYSTEM = """
import contextlib, io, json, sys
from pathlib import Path
from rnnexport.cli import main
from tests.test_cli import digest
from tests.test_faults import _fill
mount, out = Path(sys.argv[1]), Path(sys.argv[2])
for leave, args in json.loads(sys.argv[3]):
    if leave is not None:
        _fill(mount, leave)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    (mount / "filler").unlink(missing_ok=True)
    print(json.dumps({"leave": leave, "code": code, "stderr": err.getvalue(),
                      "left": sorted(p.name for p in out.iterdir()),
                      "digests": {p.name: digest(p) for p in out.iterdir() if p.is_dir()}}), flush=True)
"""


def exports_onto_a_filled_filesystem(mount: Path, out: Path, runs: list[tuple[int | None, list[str]]]) -> list[dict]:
    """Each export of `runs` (CLI arguments) with the filesystem at `mount` filled to leave
    that many bytes free (None: not filled), in turn in one fresh process: its exit code,
    stderr, what `out` holds after and the digest of each folder in it. A write that ends the
    process (torch's C++ writer aborts it on a full disk: exit 134) fails here."""
    done = subprocess.run([sys.executable, "-c", EXPORTS_ONTO_A_FILLED_FILESYSTEM, str(mount), str(out),
                           json.dumps([(leave, [str(a) for a in args]) for leave, args in runs])],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-2000:])
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["leave"] for r in results] == [leave for leave, _ in runs]
    return results


def assert_refused_for_space(result: dict, artifact: str, before: dict[str, str]) -> None:
    """Exit 2, one line naming the full disk, the installed `artifact` as it was `before`,
    no staging folder left."""
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1 and "no space left on device while writing" in lines[0], result
    assert result["digests"][artifact] == before, result["leave"]
    assert not [name for name in result["left"] if ".staging-" in name], result


def test_export_onto_a_full_filesystem_then_one_that_fits(small_tmpfs):
    """Full, then nearly full (200 KB free): refused, the installed artifact kept; then with
    the space back, an export fits in the 3 MiB (nothing of the failed ones held space)."""
    out = small_tmpfs / "D"
    shutil.copytree(MODELS / "deep", out / "deep")
    before = digest(out / "deep")
    deep = ["export", "deep", "--out", out]
    fits = ["export", "single_layer", "--out", out, "--runtimes", "onnxruntime-cpu"]
    full, nearly, fitted = exports_onto_a_filled_filesystem(small_tmpfs, out, [(0, deep), (200_000, deep), (None, fits)])
    for result in (full, nearly):
        assert_refused_for_space(result, "deep", before)
    assert fitted["code"] == 0, fitted["stderr"]
    assert {"deep", "single_layer"} <= set(fitted["left"])


# -- absurd sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("hidden_size", 10_000_000, "the weights would need an estimated"),
        ("seq_len", 1_000_000_000, "would need an estimated"),
        ("num_layers", 1_000_000, "invalid value for 'num_layers'"),
        ("input_size", 2**40, "invalid value for 'input_size'"),
    ],
)
def test_oversize_specs_are_refused_up_front(tmp_path, cli, key, value, match):
    spec = {"input_size": 5, "hidden_size": 8, key: value}
    (tmp_path / "big.toml").write_text("".join(f"{k} = {v}\n" for k, v in spec.items()))
    start = time.monotonic()
    line = one_line_error(cli("export", tmp_path / "big.toml", "--out", tmp_path / "D"))
    assert match in line
    assert time.monotonic() - start < 60
    assert not (tmp_path / "D" / "big").exists()


def test_oversize_validation_case_is_refused(cli):
    code, _, err = cli("validate", MODELS / "deep", "--cases", "100000x100000")
    assert code == 2 and "case b100000xs100000-h0random would need an estimated" in err and "GiB" in err


def test_max_memory_option(cli):
    code, _, err = cli("validate", MODELS / "deep", "--cases", "64x200", "--max-memory", "1M")
    assert code == 2 and "over the memory limit of 1.0 MiB" in err
    code, _, err = cli("validate", MODELS / "deep", "--max-memory", "lots")
    assert code == 2 and "is not a size" in err


# -- runtime edges -----------------------------------------------------------------------------

def test_bench_variable_length_artifact(tmp_path, cli):
    code, _, err = cli("export", "--cell", "gru", "--input-size", "3", "--hidden-size", "4", "--variable-length",
                       "--name", "var", "--out", tmp_path, "--no-validate")
    assert code == 0, err
    code, out, err = cli("bench", tmp_path / "var", "--runtimes", "onnxruntime-cpu", "--shapes", "2x5",
                         "--warmup", "0", "--repeat", "2")
    assert code == 0, err
    assert "onnxruntime-identity-floor" in out and "ERROR" not in out


def test_explicit_runtime_is_skipped_per_artifact_and_refused_when_it_runs_none(tmp_path, cli):
    shutil.copytree(MODELS / "deep", tmp_path / "deep")
    code, _, err = cli("export", "--cell", "lstm", "--input-size", "3", "--hidden-size", "4", "--proj-size", "2",
                       "--name", "proj", "--out", tmp_path, "--no-validate")
    assert code == 0, err
    code, out, err = cli("validate", tmp_path, *QUICK)
    assert code == 0, out + err
    assert "artifact has no model.onnx" in out
    code, _, err = cli("validate", tmp_path / "proj", *QUICK)
    assert code == 2 and "cannot run any of the artifacts" in err


def test_libtorch_client_cache_is_keyed_by_the_libtorch_it_links(tmp_path, monkeypatch):
    import torch

    from rnnexport.runtimes import clients

    real = clients._libtorch_identity()
    fake = tmp_path / "venv2" / "torch"
    (fake / "lib").mkdir(parents=True)
    (fake / "lib" / "libc10.so").write_bytes(b"one")
    monkeypatch.setattr(torch, "__file__", str(fake / "__init__.py"))
    other = clients._libtorch_identity()
    assert other != real and str(fake / "lib") in other
    (fake / "lib" / "libc10.so").write_bytes(b"rebuilt")
    assert clients._libtorch_identity() != other
