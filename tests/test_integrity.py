"""Integrity, round two: what an export may replace, whose tolerance applies, which module a
validation may import, and that what was verified is what is loaded.

Each test reproduces a hole found by an adversarial probe of the CLI (exit code, one line, the
user's files intact).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnexport.artifacts import MANIFEST, write_json
from tests.conftest import MODELS, restamp

QUICK = ["--runtimes", "onnxruntime-cpu", "--cases", "3x17"]


def tree(folder: Path) -> dict[str, str]:
    """Every entry below `folder` (hidden ones too) with the sha256 of each file."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- 1. export replaces only what rnnexport made -------------------------------------------------

def _users_folder(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "data.csv").write_text("1,2\n")


def _not_an_artifact(out: Path) -> None:
    _users_folder(out / "deep")


def _link_to_a_users_folder(out: Path) -> None:
    _users_folder(out.parent / "mine")
    out.mkdir()
    (out / "deep").symlink_to(out.parent / "mine")


def _files_of_yours_in_an_artifact(out: Path) -> None:
    shutil.copytree(MODELS / "deep", out / "deep")
    (out / "deep" / "notes.txt").write_text("mine\n")
    (out / "deep" / "sub").mkdir()


def _a_users_folder_where_the_backup_goes(out: Path) -> None:
    shutil.copytree(MODELS / "deep", out / "deep")
    _users_folder(out / ".deep.previous")


@pytest.mark.parametrize(("setup", "message"), [
    (_not_an_artifact, "is not an rnnexport artifact"),
    (_link_to_a_users_folder, "is not an rnnexport artifact"),
    (_files_of_yours_in_an_artifact, "only the files it lists"),
    (_a_users_folder_where_the_backup_goes, ".deep.previous is in the way"),
], ids=["not-an-artifact", "link-to-a-users-folder", "files-of-yours-inside", "users-previous"])
def test_export_never_replaces_or_moves_what_is_not_rnnexports(tmp_path, cli, setup, message):
    out = tmp_path / "OUT"
    setup(out)
    before = tree(tmp_path)
    code, _, err = cli("export", "deep", "--out", out, "--no-validate")
    assert code == 2 and message in one_line(err)
    assert {k: v for k, v in tree(tmp_path).items() if not k.endswith(".lock")} == before


def test_export_of_a_model_spec_never_replaces_the_users_source_package(tmp_path, cli):
    project = tmp_path / "project"
    (project / "tagger").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "usermodels" / "features.py", project / "tagger" / "model.py")
    (project / "tagger" / "train.py").write_text("print('training')\n")
    spec = (Path(__file__).parent / "usermodels" / "tagger.toml").read_text()
    (project / "tagger.toml").write_text(spec.replace('"features.py:make_tagger"', '"tagger/model.py:make_tagger"'))
    before = tree(project)
    code, _, err = cli("export", project / "tagger.toml", "--out", project, "--no-validate")
    assert code == 2 and "is not an rnnexport artifact" in one_line(err)
    assert tree(project) == before


def test_export_replaces_an_artifact_and_an_empty_folder(tmp_path, cli):
    out = tmp_path / "OUT"
    (out / "single_layer").mkdir(parents=True)
    shutil.copytree(MODELS / "deep", out / "deep")
    for name in ("single_layer", "deep"):
        code, _, err = cli("export", name, "--out", out, "--no-validate", "--seed", "5")
        assert code == 0, err
        assert json.loads((out / name / MANIFEST).read_text())["spec"]["seed"] == 5


def test_users_hidden_folders_beside_an_artifact_are_never_removed(tmp_path, cli):
    """Stale staging, backup and rejected folders are cleared only when rnnexport made them."""
    out = tmp_path / "OUT"
    shutil.copytree(MODELS / "deep", out / "deep")
    for name in (".deep.staging-abcdefgh", ".deep.rejected"):  # .deep.previous: the next test
        _users_folder(out / name)
    ours = out / ".deep.staging-zzzzzzzz"
    ours.mkdir()
    (ours / "model.onnx").write_bytes(b"half")  # what a killed export leaves
    users = {name: tree(out / name) for name in (".deep.staging-abcdefgh", ".deep.rejected")}
    # A failing validation would keep its artifact in .deep.rejected: here it must not.
    code, _, err = cli("export", "deep", "--out", out, "--runtimes", "onnxruntime-cpu", "--atol", "0", "--rtol", "0")
    assert code == 1 and "not kept" in err, err
    assert not ours.exists()
    for name, before in users.items():
        assert tree(out / name) == before, name


def test_a_rejected_artifact_is_not_kept_over_a_users_folder(tmp_path):
    from rnnexport.artifacts import keep_rejected

    stage, target = tmp_path / "stage", tmp_path / "deep"
    shutil.copytree(MODELS / "deep", stage)
    _users_folder(tmp_path / ".deep.rejected")
    before = tree(tmp_path / ".deep.rejected")
    assert keep_rejected(stage, target) is None
    assert tree(tmp_path / ".deep.rejected") == before
    shutil.rmtree(tmp_path / ".deep.rejected")
    assert keep_rejected(stage, target) == tmp_path / ".deep.rejected"
    assert keep_rejected(stage, target) == tmp_path / ".deep.rejected"  # its own earlier copy is replaced


# -- 2. a manifest cannot loosen the validating user's tolerance ----------------------------------

def _tampered_with_loose_tolerance(folder: Path, tolerance: dict) -> None:
    from tests.conftest import perturb_weight

    perturb_weight(folder, 0, "W", (0, 0, 0), 0.5)  # re-hashed: only the numbers can tell
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["tolerance"] = tolerance
    write_json(folder / MANIFEST, manifest)


LOOSE = [{"atol": 1e9, "rtol": 1e9}, {"atol": 1e-5, "rtol": 1e-4, "outputs": {"output": {"atol": 1e9},
                                                                              "h_n": {"atol": 1e9}}}]


@pytest.mark.parametrize("tolerance", LOOSE, ids=["model", "per-output"])
@pytest.mark.parametrize("trust", [[], ["--untrusted"]], ids=["trusted", "untrusted"])
def test_a_manifest_cannot_loosen_the_tolerance(artifact_copy, cli, tolerance, trust):
    folder = artifact_copy("deep")
    _tampered_with_loose_tolerance(folder, tolerance)
    code, out, err = cli("validate", folder, *QUICK, *trust)
    assert code == 1, out + err
    assert "tolerance atol 1e-05, rtol 0.0001 (defaults)" in out
    assert "the manifest asks for a looser tolerance" in out
    # The user can say they trust the manifest's tolerance, and the report says it was applied.
    code, out, err = cli("validate", folder, *QUICK, *trust, "--manifest-tolerance")
    assert code == 0 and "(the manifest's)" in out, out + err


def test_a_manifest_may_tighten_the_tolerance(artifact_copy, cli, tmp_path):
    folder = artifact_copy("deep")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["tolerance"] = {"atol": 0.0, "rtol": 0.0}
    write_json(folder / MANIFEST, manifest)
    code, out, _ = cli("validate", folder, *QUICK, "--json", tmp_path / "r.json")
    assert code == 1 and "tightened by the manifest" in out
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert report["tolerance"] == {"atol": 0.0, "rtol": 0.0, "outputs": {}}


def test_manifest_tolerance_and_atol_together_are_refused(artifact_copy, cli):
    code, _, err = cli("validate", artifact_copy("deep"), *QUICK, "--manifest-tolerance", "--atol", "1")
    assert code == 2 and "choose one" in one_line(err)


def test_the_pytest_plugin_applies_the_users_tolerance(artifact_copy, pytester_like):
    folder = artifact_copy("deep")
    _tampered_with_loose_tolerance(folder, LOOSE[0])
    assert pytester_like(folder, ini="") == 1
    assert pytester_like(folder, ini="rnnexport_manifest_tolerance = true\n") == 0
    assert pytester_like(folder, ini="rnnexport_atol = 1e9\nrnnexport_rtol = 1e9\n") == 0


@pytest.fixture
def pytester_like(tmp_path):
    """Run a pytest session (`tests.test_pytest_plugin.run_pytest`) whose test checks `folder`
    with the plugin under the ini lines `ini`; returns its exit code."""
    from tests.test_pytest_plugin import run_pytest

    def run(folder: Path, ini: str) -> int:
        project = tmp_path / f"project{len(list(tmp_path.iterdir()))}"
        project.mkdir()
        (project / "pytest.ini").write_text(f"[pytest]\n{ini}")
        (project / "test_it.py").write_text(
            "def test_it(rnnexport_check):\n"
            f"    rnnexport_check({str(folder)!r}, runtimes='onnxruntime-cpu', cases=['3x17'])\n")
        return run_pytest(project).returncode

    return run


# -- 4. what was verified is what is loaded -----------------------------------------------------------

def test_files_swapped_after_the_check_are_not_what_is_loaded(artifact_copy, tmp_path):
    """All files of the second artifact are replaced (renamed over) while the first one is
    validated: the runtimes load the bytes that were verified, never the swapped ones."""
    from rnnexport.options import parse_cases
    from rnnexport.validate import validate_paths
    from tests.conftest import perturb_weight

    first, second = artifact_copy("deep"), artifact_copy("single_layer")  # validated in this order
    evil = tmp_path / "evil"
    shutil.copytree(second, evil)
    perturb_weight(evil, 0, "W", (0, 0, 0), 0.5)
    swapped = []

    def swap(artifact: str, runtime: str, case: str) -> None:
        if artifact == "deep" and not swapped:
            for file in evil.iterdir():
                if file.name != MANIFEST:
                    shutil.copy(file, second / f".{file.name}.new")
                    (second / f".{file.name}.new").replace(second / file.name)
            swapped.append(True)

    reports = validate_paths([first.parent], runtimes=["onnxruntime-cpu", "torchscript"],
                             cases=parse_cases("3x17"), on_step=swap)
    assert swapped
    assert all(r.passed for r in reports), [r.failures[:1] for r in reports]
    # The swapped file is really different: validated afresh, it fails its sha256.
    from rnnexport.artifacts import open_artifact
    from rnnexport.errors import ArtifactError

    with pytest.raises(ArtifactError, match="differs from the manifest"):
        open_artifact(second)


def test_the_private_copy_goes_with_the_artifact(artifact_copy):
    import gc

    from rnnexport.artifacts import open_artifact

    artifact = open_artifact(artifact_copy("deep"))
    copy = artifact.verified
    assert copy is not None and sorted(p.name for p in copy.iterdir()) == sorted(artifact.manifest["files"])
    assert artifact.file("model.onnx") == copy / "model.onnx"
    del artifact
    gc.collect()
    assert not copy.exists()


# -- 3. trusted validation imports only the module the export recorded, unchanged, in a child -------

def _exported_user_model(tmp_path: Path, *, epilogue: str = "") -> Path:
    """A small user model (features.py:TwoRecurrent) exported into tmp_path/out; `epilogue`
    is appended to its module file before the export."""
    from tests.usermodels import TWO_RECURRENT

    source = Path(__file__).parent / "usermodels" / "features.py"
    (tmp_path / "features.py").write_text(source.read_text() + epilogue)
    (tmp_path / "two.toml").write_text(TWO_RECURRENT)
    from rnnexport.export import export_spec
    from rnnexport.modelspec_load import load_model_spec

    return export_spec(load_model_spec(tmp_path / "two.toml"), tmp_path / "out", runtimes=["onnxruntime-cpu"]).path


def _rewrite_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    write_json(folder / MANIFEST, manifest)


def test_a_manifest_naming_a_standard_library_function_runs_nothing(tmp_path, cli):
    folder = _exported_user_model(tmp_path)
    marker = tmp_path / "ran"

    def evil(manifest):
        manifest["spec"]["module"] = "os:system"
        manifest["spec"]["module_args"] = {"command": f"touch {marker}"}
        manifest["module_source"]["module"] = "os:system"

    _rewrite_manifest(folder, evil)
    code, out, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu")
    assert not marker.exists()
    assert code == 0 and "standard-library module" in out and "eager reference unavailable" in out, out + err


def test_a_relative_module_path_is_never_imported_from_the_current_folder(tmp_path, cli, monkeypatch):
    folder = _exported_user_model(tmp_path)
    elsewhere, marker = tmp_path / "cwd", tmp_path / "ran"
    elsewhere.mkdir()
    (elsewhere / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass TwoRecurrent: pass\n")
    digest = hashlib.sha256((elsewhere / "evil.py").read_bytes()).hexdigest()

    def evil(manifest):
        manifest["spec"]["module"] = "evil.py:TwoRecurrent"
        manifest["module_source"] = {"module": "evil.py:TwoRecurrent", "sha256": digest, "rebuildable": True}

    _rewrite_manifest(folder, evil)
    monkeypatch.chdir(elsewhere)
    code, out, err = cli("validate", folder, "--runtimes", "onnxruntime-cpu")
    assert not marker.exists()
    assert code == 0 and "module file not found" in out, out + err


@pytest.mark.parametrize(("how", "message"), [
    ("os._exit(0)", "called os._exit(0)"),
    ("os.kill(os.getpid(), 9)", "its process ended (killed by signal 9, SIGKILL)"),
], ids=["os._exit", "SIGKILL"])
def test_a_module_that_ends_its_process_fails_the_validation(tmp_path, how, message):
    """A module (unchanged since the export) that ends its process when imported for
    validation: the validating process goes on and fails, never a silent exit 0."""
    import os

    from tests.conftest import run_process

    folder = _exported_user_model(tmp_path, epilogue=(
        f"\nimport os\nif os.environ.get('RNNEXPORT_TEST_END_AT_IMPORT'):\n    {how}\n"))
    env = {**os.environ, "RNNEXPORT_TEST_END_AT_IMPORT": "1"}
    done = run_process("validate", folder, "--runtimes", "onnxruntime-cpu", env=env)
    assert done.returncode == 2 and "PASS" not in done.stdout, done.stdout + done.stderr
    assert message in one_line(done.stderr)


def test_a_module_cannot_patch_the_validating_process(tmp_path):
    """A module that patches rnnexport's judging and changes its own output when imported for
    validation changes only its child process: the changed output is caught."""
    import os

    from tests.conftest import run_process

    folder = _exported_user_model(tmp_path, epilogue=(
        "\nimport os\nif os.environ.get('RNNEXPORT_TEST_HIJACK'):\n"
        "    import rnnexport.compare, rnnexport.results, rnnexport.runloop\n"
        "    rnnexport.compare.failures = rnnexport.results.failures = rnnexport.runloop.failures = lambda records: []\n"
        "    _forward = TwoRecurrent.forward\n"
        "    TwoRecurrent.forward = lambda self, x: _forward(self, x) * 2\n"))
    env = {**os.environ, "RNNEXPORT_TEST_HIJACK": "1"}
    done = run_process("validate", folder, "--runtimes", "onnxruntime-cpu", env=env)
    assert done.returncode == 1 and "FAIL" in done.stdout, done.stdout + done.stderr


def test_the_module_recorded_relative_to_the_artifact_validates_from_a_moved_project(tmp_path):
    """The module is recorded relative to the artifact folder with its sha256: a moved copy of
    the whole project still validates against the eager reference."""
    from rnnexport.validate import validate_artifact

    (tmp_path / "project").mkdir()
    folder = _exported_user_model(tmp_path / "project")
    assert json.loads((folder / MANIFEST).read_text())["module_source"]["file"] == "../../features.py"
    shutil.move(tmp_path / "project", tmp_path / "moved")
    report = validate_artifact(tmp_path / "moved" / "out" / folder.name, runtimes=["onnxruntime-cpu"])
    assert report.passed and "torch" in report.runtimes, report.notes


# -- 5. without an eager reference, weights.safetensors is still checked, as data ---------------------

def _edit_safetensors(folder: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(folder / "weights.safetensors")
    change(weights)
    save_file(weights, folder / "weights.safetensors")
    restamp(folder, "weights.safetensors")


def _pickle_instead(folder: Path) -> None:
    import pickle

    (folder / "weights.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    restamp(folder, "weights.safetensors")


def _scaled(weights) -> None:
    weights["gru.weight_hh_l0"] = weights["gru.weight_hh_l0"] * 1.5


BAD_WEIGHTS = {
    "a pickle": (_pickle_instead, "is not a safetensors file"),
    "extra tensor": (lambda f: _edit_safetensors(f, lambda w: w.update(extra=np.full((3,), 7.25, np.float32))),
                     "extra"),
    "changed weight": (lambda f: _edit_safetensors(f, _scaled), "gru.weight_hh_l0 differ from model.onnx"),
    "float64 copy": (lambda f: _edit_safetensors(f, lambda w: w.update({k: v.astype(np.float64) for k, v in w.items()})),
                     "changed dtype or shape since the export (float32["),
}


@pytest.mark.parametrize("name", list(BAD_WEIGHTS))
def test_untrusted_validation_checks_the_stored_weights_as_data(artifact_copy, cli, name):
    folder = artifact_copy("keyword_spotter")
    code, out, _ = cli("validate", folder, "--untrusted", "--runtimes", "onnxruntime-cpu")
    assert code == 0 and "8 of 8 tensors equal model.onnx's initializers" in out
    spoil, message = BAD_WEIGHTS[name]
    spoil(folder)
    code, out, err = cli("validate", folder, "--untrusted", "--runtimes", "onnxruntime-cpu")
    assert code == 1 and message in out, out + err


def test_the_export_records_which_weights_untrusted_validation_can_check(tmp_path, cli):
    folder = _exported_user_model(tmp_path)
    record = json.loads((folder / MANIFEST).read_text())["weights_check"]
    assert len(record["in_onnx"]) == 16 and record["not_in_onnx"] == []
    _edit_safetensors(folder, lambda w: w.update(extra=np.zeros((2,), np.float32)))
    code, out, _ = cli("validate", folder, "--untrusted", "--runtimes", "onnxruntime-cpu")
    assert code == 1 and "tensors the export did not write: extra" in out


@pytest.mark.parametrize("where", ["import", "__init__", "forward"])
def test_an_export_whose_module_ends_the_process_is_an_error_not_exit_0(tmp_path, where):
    from tests.conftest import run_process
    from tests.usermodels import TWO_RECURRENT

    source = (Path(__file__).parent / "usermodels" / "features.py").read_text()
    if where == "import":
        source += "\nimport os\nos._exit(0)\n"
    else:  # at the top of TwoRecurrent's __init__ or forward
        head = "class TwoRecurrent(nn.Module):"
        cls = source[source.index(head):]
        method = cls.index(f"def {where}(")
        body = cls.index("\n", cls.index(":", cls.index(")", method))) + 1
        cls = cls[:body] + "        __import__('os')._exit(0)\n" + cls[body:]
        source = source[:source.index(head)] + cls
    (tmp_path / "features.py").write_text(source)
    (tmp_path / "two.toml").write_text(TWO_RECURRENT)
    done = run_process("export", tmp_path / "two.toml", "--out", tmp_path / "out")
    assert done.returncode == 2 and "called os._exit(0)" in one_line(done.stderr)
    assert not (tmp_path / "out").exists()


def test_an_empty_runtime_selection_is_not_a_pass(artifact_copy, cli):
    code, _, err = cli("validate", artifact_copy("deep"), "--runtimes", "", "--cases", "3x17")
    assert code == 2 and "no runtime given" in one_line(err)


def test_weights_of_a_manifest_without_the_record_are_all_checked(artifact_copy, cli):
    """Manifests written before ``weights_check``: every tensor must be found in model.onnx."""
    folder = artifact_copy("keyword_spotter")
    _rewrite_manifest(folder, lambda manifest: manifest.pop("weights_check"))
    code, out, _ = cli("validate", folder, "--untrusted", "--runtimes", "onnxruntime-cpu")
    assert code == 0 and "8 of 8 tensors equal model.onnx's initializers" in out
    _edit_safetensors(folder, _scaled)
    code, out, _ = cli("validate", folder, "--untrusted", "--runtimes", "onnxruntime-cpu")
    assert code == 1 and "gru.weight_hh_l0 differ from model.onnx" in out


def test_a_killed_compile_server_is_that_artifacts_failure_and_the_next_export_goes_on(tmp_path):
    import os
    import signal

    from rnnexport.errors import WorkerDied
    from rnnexport.export import export_specs
    from rnnexport.export import compile_server, torchscript
    from rnnexport.spec import get_spec

    spec = get_spec("single_layer")
    weights = tmp_path / "weights.pt"
    import torch

    from rnnexport.builder import build_module

    torch.save(build_module(spec).state_dict(), weights)
    job = torchscript.start_torchscript(spec, weights, tmp_path / "model.pt")
    os.kill(compile_server._SERVER.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match=r"single_layer: its TorchScript compile (server|ing process) died \(killed"):
        with job:
            job.result()
    results = export_specs([get_spec("deep")], tmp_path / "out", validate=False)
    assert results[0].path == tmp_path / "out" / "deep"


@pytest.mark.parametrize("tolerance", [
    {"atol": 1e-5, "rtol": 1e-4, "outputs": {"output": {"atol": float("nan")}}},
    {"atol": 1e-5, "rtol": 1e-4, "outputs": {"h_n": {"rtol": float("-inf")}}},
    {"atol": "1e9"},
    {"atol": True},
    {"outputs": ["output"]},
], ids=["nan", "minus-inf", "string", "bool", "not-a-table"])
def test_a_malformed_manifest_tolerance_is_refused_even_when_applied(artifact_copy, cli, tolerance):
    folder = artifact_copy("deep")
    _rewrite_manifest(folder, lambda manifest: manifest.update(tolerance=tolerance))
    for flags in ([], ["--manifest-tolerance"]):
        code, _, err = cli("validate", folder, *QUICK, *flags)
        assert code == 2 and "manifest 'tolerance" in one_line(err), err


def test_the_junit_report_states_the_tolerance_applied(artifact_copy, cli, tmp_path):
    import xml.etree.ElementTree as ET

    folder = artifact_copy("deep")
    _rewrite_manifest(folder, lambda manifest: manifest.update(tolerance={"atol": 1e9, "rtol": 1e9}))
    code, _, _ = cli("validate", folder, *QUICK, "--manifest-tolerance", "--junit", tmp_path / "r.xml")
    properties = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").getroot().iter("property")}
    assert code == 0 and json.loads(properties["tolerance"])["atol"] == 1e9
    assert "(the manifest's)" in properties["tolerance_note"]


SAVE_ON_A_FULL_DISK = """
import sys
from pathlib import Path

from rnnexport.builder import build_module
from rnnexport.export.onnx_dynamo import save_program
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.spec import get_spec

spec = get_spec("single_layer")
program, _ = native_program(RNNExporting(spec, build_module(spec)))
target = Path(sys.argv[1])
with open(target.parent / "filler", "wb", buffering=0) as f:  # fill the disk, as another process would
    try:
        while True:
            f.write(b"\\0" * 4096)
    except OSError:
        pass
try:
    save_program(program, target)
except OSError as exc:
    print(f"OSError {exc.errno}")
    sys.exit(3)
"""


def test_a_disk_filled_by_another_process_is_an_oserror_not_an_abort(tmp_path):
    """torch's C++ zip writer aborts the process (exit 134) when the disk fills under it; the
    program is serialized in memory and written by Python instead."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        run = subprocess.run([sys.executable, "-c", SAVE_ON_A_FULL_DISK, str(mount / "model.pt2")],
                             capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert run.returncode == 3 and "OSError 28" in run.stdout, (run.returncode, run.stderr[-500:])
