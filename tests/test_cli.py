"""The CLI contract: commands, exit codes (0 pass, 1 mismatch, 2 bad input), one clear message."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DOCUMENTED, MODELS, REPO, assert_quiet, perturb_weight, run_process


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, without hidden entries (export locks, staging)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def test_list(cli):
    code, out, _ = cli("list")
    assert code == 0
    assert "deep_bidirectional" in out and "[40, 10, 16]" in out and "[6, 40, 8]" in out
    code, out, _ = cli("list", "--json")
    data = json.loads(out)
    assert data["seq_first"]["shapes"]["input"] == [10, 40, 5]


def test_validate_a_folder_of_artifacts_with_reports(cli, tmp_path):
    """Every artifact found in a folder (an RNN configuration's and a model spec's, with its
    variants), reported as JSON and JUnit. The committed models are validated in full by the
    plugin's regression test (tests/test_models_regression.py)."""
    committed = ["deep_bidirectional", "text_classifier"]
    for name in committed:
        shutil.copytree(MODELS / name, tmp_path / "models" / name)
    code, out, err = cli("validate", tmp_path / "models", "--json", tmp_path / "r.json", "--junit",
                         tmp_path / "r.xml", "--cases", "40x10,b1xs1-h0zero")
    assert code == 0, out + err
    assert f"{len(committed)} of {len(committed)} artifact(s) passed" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "rnnexport.validation/1" and report["passed"] is True
    assert [a["artifact"] for a in report["artifacts"]] == committed
    assert set(DOCUMENTED) < {p.name for p in MODELS.iterdir() if p.is_dir()}  # each committed, validated in full
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert root.tag == "testsuites" and len(root.findall("testsuite")) == len(committed)
    cases = root.findall("testsuite/testcase")
    assert cases and not root.findall("testsuite/testcase/failure")
    assert all(c.get("classname").startswith("rnnexport.") for c in cases)


def test_mismatch_exits_1_naming_runtime_output_and_error(cli, artifact_copy, tmp_path):
    folder = artifact_copy("deep_bidirectional")
    perturb_weight(folder, 2, "R", (1, 0, 0), 0.1)
    code, out, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu", "--cases", "3x17",
                         "--junit", tmp_path / "r.xml")
    assert code == 1
    assert "FAIL deep_bidirectional | onnxruntime-cpu | b3xs17-h0random | output vs torch" in out
    assert "max abs error" in out and "worst at [" in out
    assert ET.parse(tmp_path / "r.xml").getroot().findall("testsuite/testcase/failure")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["export", "nope"], "unknown configuration 'nope'.*Valid names: deep, deep_bidirectional"),
        (["export"], "name a configuration, use --all, or define one with --cell"),
        (["export", "deep", "--opset", "9"], "opset 9 is not supported; valid: 14..20"),
        (["validate", "{tmp}/nothing"], "no such file or directory"),
        (["validate", "{models}", "--runtimes", "tensorrt"], "unknown runtime 'tensorrt'; valid runtimes: torch,"),
        (["validate", "{models}", "--atol", "-1"], "expected a finite number >= 0"),
        (["validate", "{models}", "--cases", "3y17"], "--cases: bad case '3y17'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
    ids=["unknown-name", "no-name", "bad-opset", "missing-dir", "unknown-runtime",
         "bad-atol", "bad-case", "unknown-command"],
)
def test_bad_usage_exits_2_with_one_message(cli, tmp_path, args, match):
    import re

    args = [a.format(tmp=tmp_path, models=MODELS) for a in args]
    code, out, err = cli(*args)
    assert code == 2
    assert re.search(match, err), err
    assert err.count("rnnexport: error:") == 1 and "Traceback" not in err


def test_unavailable_cuda_is_an_error_when_asked_for(cli):
    from rnnexport.runtimes import unavailable_reason

    reason = unavailable_reason("onnxruntime-cuda")
    if reason is None:
        pytest.skip("a real CUDA GPU is present here: onnxruntime-cuda is available")
    code, _, err = cli("validate", MODELS / "deep", "--runtimes", "onnxruntime-cuda")
    assert code == 2 and "onnxruntime-cuda" in err and reason in err


def test_invalid_spec_file_exits_2(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('input_size = 5\nhidden_size = 8\nnonlinearity = "gelu"\n')
    code, _, err = cli("export", bad, "--out", tmp_path / "out")
    assert code == 2 and "'nonlinearity': 'gelu'" in err
    bad.write_text("input_size = [")
    code, _, err = cli("export", bad, "--out", tmp_path / "out")
    assert code == 2 and "not valid TOML" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete", "manifest"])
def test_damaged_artifact_exits_2(cli, artifact_copy, damage):
    folder = artifact_copy("single_layer")
    onnx_file = folder / "model.onnx"
    if damage == "tamper":
        data = bytearray(onnx_file.read_bytes())
        data[-10] ^= 1
        onnx_file.write_bytes(bytes(data))
    elif damage == "truncate":
        onnx_file.write_bytes(onnx_file.read_bytes()[:100])
    elif damage == "delete":
        onnx_file.unlink()
    else:
        (folder / "manifest.json").unlink()
    code, _, err = cli("validate", folder)
    assert code == 2 and "Traceback" not in err
    assert ("model.onnx" in err) if damage != "manifest" else ("no manifest.json" in err)


def test_unwritable_output_folder_exits_2(cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code, _, err = cli("export", "single_layer", "--out", blocker / "models", "--no-validate")
    assert code == 2 and "cannot be written" in err and str(blocker) in err


def test_bad_report_path_keeps_printed_results(cli, tmp_path):
    code, out, err = cli("validate", MODELS / "deep", "--cases", "3x17", "--json", tmp_path / "no" / "dir" / "r.json")
    assert code == 2
    assert "1 of 1 artifact(s) passed" in out
    assert "cannot write report" in err and "printed above" in err


def test_process_exit_codes_and_no_traceback(tmp_path):
    done = run_process("validate", tmp_path / "missing")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0  # one line
    done = run_process("--help")
    assert done.returncode == 0 and "export" in done.stdout


def test_quick_exit_keeps_the_output_the_exit_code_and_the_cleanup(artifact_copy, tmp_path):
    """After torch was imported the CLI ends without the interpreter's teardown (about a
    second): the exit handlers still run (client processes ended, temporary files removed),
    the whole output is written, the exit code is the verdict's. Validating in process
    (--jobs 1), variants' trials included, prints nothing but rnnexport's own lines. Under a
    TMPDIR too long for a fork server's socket below it (it failed with a traceback)."""
    import os

    folder = artifact_copy("deep")
    perturb_weight(folder, 0, "W", (0, 1, 1), 0.05)
    scratch = tmp_path / ("tmp" + "-long" * 20)
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = run_process("validate", folder, MODELS / "text_classifier", "--cases", "3x17", "--jobs", "1", env=env)
    assert_quiet(done, code=1)
    assert done.stdout.rstrip().endswith("1 of 2 artifact(s) passed, 1 failed (cells: worst max abs error against torch, "
                                          "golden data and chunked streaming)")
    assert "Traceback" not in done.stderr
    # (torch and its compiler leave files of their own in TMPDIR, with or without the quick exit)
    assert [p.name for p in scratch.iterdir() if p.name.startswith(("rnnexport", "tmp"))] == []


MODEL_FILES = ("model.onnx", "model.pt", "model.pt2", "weights.pt", "model.int8.onnx", "model.fp16.onnx")


def _committed_models() -> dict[str, bytes]:
    """The files of ``models/`` as committed (HEAD), by path below ``models/``: the working
    tree's copy is what the README Quickstart's first command (``export --all``) has just
    rewritten, so a test against it would compare the export with itself.

    Skips (with the reason) outside a git checkout, or where git is missing.
    """
    def git(*args: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(["git", *args], cwd=MODELS, input=stdin, capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"the committed models/ cannot be read (git {args[0]}: "
                        f"{done.stderr.decode(errors='replace').strip()[:200]}): this test compares a fresh "
                        "export with the files committed at HEAD, not with the working tree's")
        return done.stdout

    if shutil.which("git") is None:
        pytest.skip("no git: this test compares a fresh export with the files committed at HEAD")
    git("rev-parse", "--verify", "HEAD")
    entries = [line.split(b"\t", 1) for line in git("ls-tree", "-r", "-z", "HEAD", ".").split(b"\0") if line]
    blobs = {path.decode(): meta.split()[2].decode() for meta, path in entries if meta.split()[1] == b"blob"}
    blobs = {path: sha for path, sha in blobs.items() if not any(part.startswith(".") for part in path.split("/"))}
    assert blobs, "HEAD has no models/"
    out, files = git("cat-file", "--batch", stdin="".join(f"{sha}\n" for sha in blobs.values()).encode()), {}
    for path, sha in blobs.items():  # each: "<sha> blob <size>\n<content>\n", in the order asked
        header, out = out.split(b"\n", 1)
        assert header.split()[0].decode() == sha, header
        size = int(header.split()[2])
        files[path], out = out[:size], out[size + 1:]
    return files


def test_export_all_reproduces_models_byte_for_byte(tmp_path):
    """Against the models/ committed at HEAD (not the working tree's, which the README
    Quickstart's first command rewrites), on any CPU, with --jobs 2 as with --jobs 1 (the other
    tests' in-process exports): the model files are byte-identical; the
    golden outputs (computed by torch on this CPU) equal the committed ones within tolerance (the
    last bits differ between AVX2 and AVX-512 kernels); the manifests agree in every field but
    the golden file's hash and size and the validation block (which runtimes ran here, and the
    power of ten that bounds their errors on this CPU)."""
    import io

    committed = _committed_models()
    manifest = json.loads(committed["deep/manifest.json"])
    from rnnexport.artifacts import versions

    if manifest["versions"] != versions():
        pytest.skip(f"installed versions {versions()} differ from those that made models/ "
                    f"({manifest['versions']}): byte identity is only promised for the same versions")
    # From another working directory, with the default --out resolved there; in two worker
    # processes, each compiling TorchScript in a compile server forked from itself; their
    # stderr holds rnnexport's own lines only.
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert_quiet(run_process("export", "--all", "--jobs", "2", cwd=work), own=("wrote ", "note: "))
    made = digest(work / "models")
    assert set(made) == set(committed)
    for name in sorted({path.split("/")[0] for path in committed}):
        for file in [f for f in (*MODEL_FILES, "weights.safetensors") if f"{name}/{f}" in committed]:
            assert made[f"{name}/{file}"] == hashlib.sha256(committed[f"{name}/{file}"]).hexdigest(), \
                f"{name}/{file} differs from the committed one"
        new, old = np.load(work / "models" / name / "golden.npz"), np.load(io.BytesIO(committed[f"{name}/golden.npz"]))
        assert sorted(new.files) == sorted(old.files)
        for key in old.files:
            np.testing.assert_allclose(new[key], old[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")
        new_manifest = json.loads((work / "models" / name / "manifest.json").read_text())
        old_manifest = json.loads(committed[f"{name}/manifest.json"])
        for m in (new_manifest, old_manifest):
            del m["files"]["golden.npz"]
            assert m.pop("validation")["passed"] is True
        assert new_manifest == old_manifest, f"{name}/manifest.json differs from the committed one"


def test_export_killed_midway_leaves_previous_folder_valid(tmp_path, cli):
    out = tmp_path / "models"
    shutil.copytree(MODELS / "single_layer", out / "single_layer")
    before = digest(out / "single_layer")
    # The child dies by SIGKILL (no cleanup runs) right after it wrote model.onnx into staging.
    script = textwrap.dedent(f"""
        import os, signal, sys
        import rnnexport.export.pipeline as ex
        real = ex.check_onnx
        def die(path, name):
            real(path, name)
            os.kill(os.getpid(), signal.SIGKILL)
        ex.check_onnx = die
        from rnnexport.cli import main
        sys.exit(main(["export", "single_layer", "--seed", "5", "--out", {str(out)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL
    assert digest(out / "single_layer") == before
    assert any(p.name.startswith(".single_layer.staging-") for p in out.iterdir())
    code, stdout, _ = cli("validate", out, "--cases", "3x17")
    assert code == 0, stdout
    # The next export of the same name clears the stale staging folder.
    code, _, _ = cli("export", "single_layer", "--out", out, "--no-validate")
    assert code == 0 and sorted(p.name for p in out.iterdir()) == [".single_layer.lock", "single_layer"]


def test_failing_export_is_not_installed(cli, tmp_path, monkeypatch):
    import rnnexport.export as ex
    from rnnexport.export import onnx_legacy

    out = tmp_path / "models"
    shutil.copytree(MODELS / "deep", out / "deep")
    before = digest(out / "deep")
    real = onnx_legacy.export_onnx_legacy

    def wrong_export(module, args, spec, path, *, opset):
        import torch

        with torch.no_grad():
            module.rnn.bias_hh_l1.add_(0.5)  # the ONNX file gets other weights than weights.pt
        try:
            return real(module, args, spec, path, opset=opset)
        finally:
            with torch.no_grad():
                module.rnn.bias_hh_l1.sub_(0.5)

    monkeypatch.setattr(onnx_legacy, "export_onnx_legacy", wrong_export)
    monkeypatch.setattr(ex, "export_onnx_legacy", wrong_export, raising=False)
    code, out_text, err = cli("export", "deep", "--out", out, "--runtimes", "onnxruntime-cpu")
    assert code == 1
    assert "does not match PyTorch; it was not installed" in err
    assert "FAIL deep | onnxruntime-cpu" in out_text
    assert digest(out / "deep") == before
    assert (out / ".deep.rejected" / "model.onnx").exists()


def test_python_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "rnnexport", "list"], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ})
    assert done.returncode == 0 and "single_layer" in done.stdout


def test_the_command_collects_garbage_less_often_and_only_the_command():
    """The CLI's process is its own: it collects less often (`collect_less`: importing torch
    made CPython's default walk millions of objects again and again). Importing rnnexport, as
    the API and the pytest plugin do, leaves the caller's process as it was."""
    code = ("import gc, rnnexport.cli as cli, rnnexport.export, rnnexport.validate; imported = gc.get_threshold()[0]; "
            "cli.main = lambda: print(imported, gc.get_threshold()[0]) or 0; cli.console_main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["700", "10000"]  # CPython's default, then the command's


def test_export_help_offers_no_cases_and_no_validate_refuses_report_files(cli, tmp_path):
    done = run_process("export", "--help")
    assert done.returncode == 0 and "--cases" not in done.stdout and "--max-memory" in done.stdout
    for flag in ("--json", "--junit", "--html"):
        code, _, err = cli("export", "deep", "--out", tmp_path, "--no-validate", flag, tmp_path / "r")
        assert code == 2 and f"{flag} reports on validation, which --no-validate turns off" in err
    assert not (tmp_path / "deep").exists()


def test_list_json_and_runtimes(cli):
    code, out, _ = cli("list", "--json")
    assert code == 0
    assert json.loads(out)["deep_bidirectional"]["module"] == "nn.RNN(5, 8, num_layers=3, batch_first=True, bidirectional=True)"
    code, out, _ = cli("list", "--runtimes", "--json")
    rows = json.loads(out)
    from rnnexport.runtimes import RUNTIMES

    assert list(rows) == list(RUNTIMES)
    assert rows["torchscript"]["loads_code"] and not rows["onnxruntime-cpu"]["loads_code"]
    assert rows["onnxruntime-cuda"]["available"] is (rows["onnxruntime-cuda"]["reason"] is None)
    code, out, _ = cli("list", "--runtimes")
    assert code == 0 and "torchscript" in out and "(loads model.pt, code)" in out


def test_spec_built_directly_is_validated():
    from rnnexport.errors import SpecError
    from rnnexport.spec import RNNSpec

    with pytest.raises(SpecError, match="invalid value for 'name'"):
        RNNSpec(name="x y", input_size=5, hidden_size=8)
    with pytest.raises(SpecError, match="invalid value for 'cell'"):
        RNNSpec(name="x", input_size=5, hidden_size=8, cell="banana")
    with pytest.raises(SpecError, match="invalid value for 'input_size'"):
        RNNSpec(name="x", input_size=-1, hidden_size=8)
    with pytest.raises(SpecError, match="expected int, got bool"):
        RNNSpec(name="x", input_size=True, hidden_size=8)


def test_spec_from_flags_names_what_it_builds():
    from rnnexport.spec import spec_from_flags

    spec = spec_from_flags(cell="lstm", input_size=5, hidden_size=8, num_layers=2, bidirectional=True, proj_size=3,
                           bias=False)
    assert spec.name == "lstm_i5_h8_l2_bi_p3_nobias"
    assert spec.module_description() == "nn.LSTM(5, 8, num_layers=2, bias=False, bidirectional=True, proj_size=3)"
    from rnnexport.errors import UsageError

    with pytest.raises(UsageError, match="needs hidden_size"):
        spec_from_flags(cell="gru", input_size=5, hidden_size=None)


def test_cli_import_and_help_stay_light():
    """`import rnnexport.cli` (and so `rnnexport --help`) loads neither torch nor the report
    libraries: rich, numpy and onnx are imported when a command needs them."""
    code = ("import sys, rnnexport.cli; heavy = [m for m in ('torch', 'rich', 'numpy', 'onnx', 'onnxruntime') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
