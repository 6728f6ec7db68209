"""Fuzzing the CLI with corrupted manifests, golden data and spec files (hypothesis).

Whatever the corruption, every run exits 0, 1 or 2, raises nothing but rnnexport's own errors
(in-process, any other exception fails the test with hypothesis's minimal example), prints at
most one line on stderr for exit 2, and writes nothing outside its output folder.
``RNNEXPORT_FUZZ_EXAMPLES=N`` runs more examples (CI: 20 per target, derandomized);
``RNNEXPORT_FUZZ_RANDOM=1`` draws new ones each run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnexport.artifacts import MANIFEST, file_entry, read_npz, write_json, write_npz
from rnnexport.cli import main
from tests.conftest import MODELS

EXAMPLES = int(os.environ.get("RNNEXPORT_FUZZ_EXAMPLES", "20"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize="RNNEXPORT_FUZZ_RANDOM" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
QUICK = ["--runtimes", "onnxruntime-cpu", "--cases", "1x1"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


def _run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """The CLI in-process, from `cwd`, with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(previous)
    assert code in (0, 1, 2), (code, err.getvalue())
    if code == 2:
        assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    return code, out.getvalue(), err.getvalue()


def _validate_untouched(root: Path, folder: Path) -> int:
    """Validate `folder` from an empty working folder; nothing under `root` may change."""
    work = root / "cwd"
    work.mkdir()
    before = _tree(root)
    code, _, _ = _run(["validate", str(folder), *QUICK], work)
    assert _tree(root) == before
    return code


@contextlib.contextmanager
def _artifact_copy():
    """(a temporary root, a copy of single_layer inside it), removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "art" / "single_layer"
        shutil.copytree(MODELS / "single_layer", folder)
        yield root, folder


@st.composite
def manifest_edits(draw):
    manifest = json.loads((MODELS / "single_layer" / MANIFEST).read_text())
    paths = [p for p in _paths(manifest) if p]
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        edits.append((path, draw(st.just("delete") | json_values)))
    return edits


@SETTINGS
@given(edits=manifest_edits(), restamp_golden=st.booleans())
def test_fuzz_manifest(edits, restamp_golden):
    with _artifact_copy() as (root, folder):
        manifest = json.loads((folder / MANIFEST).read_text())
        edited = copy.deepcopy(manifest)
        for path, value in edits:
            target = edited
            try:
                for key in path[:-1]:
                    target = target[key]
                if value == "delete":
                    del target[path[-1]]
                else:
                    target[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit removed or replaced this path
        if restamp_golden and isinstance(edited.get("files"), dict):
            edited["files"]["golden.npz"] = file_entry(folder / "golden.npz")
        (folder / MANIFEST).write_text(json.dumps(edited, allow_nan=True))
        code = _validate_untouched(root, folder)
        if edited == manifest:
            assert code == 0


@st.composite
def golden_corruptions(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "arrays"]))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=5))
    if kind == "truncate":
        return kind, draw(st.floats(0, 1))
    shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
    dtypes = st.sampled_from(["float32", "float64", "int64", "int8", "bool", "complex64"])
    return kind, draw(st.dictionaries(st.sampled_from(["keep", "reshape", "retype", "drop", "add"]),
                                      st.tuples(shapes, dtypes), min_size=1, max_size=3))


@SETTINGS
@given(corruption=golden_corruptions(), restamp=st.booleans())
def test_fuzz_golden_data(corruption, restamp):
    import numpy as np

    with _artifact_copy() as (root, folder):
        path = folder / "golden.npz"
        kind, how = corruption
        data = bytearray(path.read_bytes())
        if kind == "flip":
            for position, xor in how:
                data[position % len(data)] ^= xor
            path.write_bytes(bytes(data))
        elif kind == "truncate":
            path.write_bytes(bytes(data[: int(len(data) * how)]))
        else:
            arrays = read_npz(path)
            key = sorted(arrays)[0]
            for change, (shape, dtype) in how.items():
                if key not in arrays and change in ("reshape", "retype"):
                    continue
                if change == "reshape":
                    arrays[key] = np.zeros(shape, dtype=arrays[key].dtype)
                elif change == "retype":
                    arrays[key] = arrays[key].astype(dtype)
                elif change == "drop":
                    arrays.pop(key, None)
                elif change == "add":
                    arrays["extra/input"] = np.zeros(shape, dtype=dtype)
            write_npz(path, arrays)
        if restamp:
            manifest = json.loads((folder / MANIFEST).read_text())
            manifest["files"]["golden.npz"] = file_entry(path)
            write_json(folder / MANIFEST, manifest)
        _validate_untouched(root, folder)


spec_keys = st.sampled_from(["name", "cell", "input_size", "hidden_size", "num_layers", "bidirectional",
                             "batch_first", "nonlinearity", "bias", "dropout", "proj_size", "variable_length",
                             "batch_size", "seq_len", "seed", "colour"])
toml_values = (st.integers(-(2**63), 2**63 - 1) | st.integers(0, 40) | st.floats(allow_nan=False)
               | st.booleans() | st.text(max_size=10) | st.sampled_from(["rnn", "lstm", "gru", "relu", "tanh"]))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


@SETTINGS
@given(spec=st.dictionaries(spec_keys, toml_values, max_size=6), raw=st.none() | st.binary(max_size=64))
def test_fuzz_spec_files(spec, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "cwd"
        work.mkdir()
        spec_file = root / "fuzz.toml"
        if raw is not None:
            spec_file.write_bytes(raw)
        else:
            spec_file.write_text("".join(f"{key} = {_toml(value)}\n" for key, value in spec.items()))
        out = root / "out"
        _run(["export", str(spec_file), "--out", str(out), "--no-validate", "--max-memory", "256M"], work)
        assert sorted(p.name for p in root.iterdir()) in (["cwd", "fuzz.toml"], ["cwd", "fuzz.toml", "out"])
        assert not any(work.iterdir())


# -- model specs: any TOML value anywhere is a SpecError (exit 2) or a valid spec ----------------

_TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_MODEL_SPEC = {
    "name": "fuzzed", "module": "features.py:TwoRecurrent",
    "inputs": {"x": {"dtype": "float32", "shape": ["batch", "seq", 3], "range": [-1.0, 1.0]},
               "n": {"dtype": "int64", "shape": ["batch"], "range": [1, "seq"]}},
    "dims": {"batch": {"size": 2, "sweep": [1, 4]}, "seq": {"size": 7, "sweep": [1, 25]}},
    "outputs": {"names": ["z"], "state": {}, "stream_dim": "seq"},
    "tolerance": {"atol": 1e-5, "outputs": {"z": {"rtol": 1e-3}}},
}


@SETTINGS
@given(st.data())
def test_fuzzed_model_specs_are_valid_or_one_spec_error(data):
    from rnnexport.errors import SpecError
    from rnnexport.modelspec_load import model_spec_from_dict

    spec = copy.deepcopy(_MODEL_SPEC)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(spec) if p]))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(_TOML_VALUES)
        else:
            parent.pop(path[-1])
    try:
        model = model_spec_from_dict(spec)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return
    for case in model.sweep()[:2]:  # a spec that passes gives inputs its own check accepts
        model.check_feeds(model.make_inputs(case))
