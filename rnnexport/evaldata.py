"""The user's own inputs: evaluation data named by a model spec (``[evaluation]``).

Seeded random inputs miss what real ones exercise (saturated gates, long silences, padding
patterns), and a quantized model is judged by whether it still does its job on inputs like the
real ones. The data is one ``.npz`` (no pickles) or ``.safetensors`` file with one array per
input (a state input left out starts at zero) and optional label arrays (true classes, for the
``accuracy`` criterion). Its arrays must fit the spec's inputs: dtype, shape over the named dims
(one size per dim across inputs; the sizes need not be in the sweep), integer ranges; float
inputs must be finite. It becomes one more golden case, ``data=<file stem>,batch=...``, stored
with its reference outputs and labels in ``golden.npz``, so every later validation runs it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import functools
import zipfile
import zlib
from pathlib import Path

import numpy as np

from rnnexport.errors import SpecError, UsageError, did_you_mean
from rnnexport.inputs import IDENT_RE, Case

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["evaluation_case", "evaluation_data", "parse_evaluation"]

MAX_BYTES = 1 << 30  # stored in golden.npz: a held-out set, not a training set


_EVALUATION_KEYS = ("file", "labels")


def parse_evaluation(value: Any, base: Path | None, source: str, names: set[str]) -> dict[str, Any] | None:
    """``[evaluation]``: ``file`` (``.npz``/``.safetensors``, relative to the spec) and
    ``labels`` (the file's arrays of true classes, not inputs). The file's contents are checked
    when an export reads it (`rnnexport.evaldata`)."""
    if value is None:
        return None
    where = f"{source}: [evaluation]"
    if not isinstance(value, dict) or not isinstance(value.get("file"), str):
        raise SpecError(f"{where} must be a table with 'file' (a .npz or .safetensors file, one array per input)")
    unknown = [k for k in value if k not in _EVALUATION_KEYS]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], _EVALUATION_KEYS)}; valid keys: "
                        f"{', '.join(_EVALUATION_KEYS)}")
    path = Path(value["file"])
    if path.suffix not in (".npz", ".safetensors"):
        raise SpecError(f"{where} file {value['file']!r}: expected a .npz or .safetensors file")
    if base is not None and not path.is_absolute():
        path = (base / path).resolve()
    labels = value.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(n, str) and IDENT_RE.fullmatch(n) for n in labels):
        raise SpecError(f"{where} labels must be a list of array names, got {labels!r}")
    clash = sorted(set(labels) & names)
    if clash:
        raise SpecError(f"{where} labels: {clash[0]!r} is an input or output name; name label arrays apart")
    return {"file": str(path), "labels": list(labels)}


def evaluation_data(spec: ModelSpec) -> tuple[Case, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The evaluation case of `spec`, its inputs and its labels, checked.

    Raises:
        UsageError: unreadable file, a pickle, unknown or missing arrays, wrong dtypes or shapes,
            out-of-range integers, NaN/Inf, labels that are not integer arrays.
    """
    return _load(spec, Path(spec.evaluation["file"]))


def evaluation_case(spec: ModelSpec) -> list[Case]:
    """``[case]`` when the spec names evaluation data, else ``[]``."""
    return [evaluation_data(spec)[0]] if spec.evaluation else []


@functools.lru_cache(maxsize=4)
def _load(spec: ModelSpec, path: Path) -> tuple[Case, dict[str, np.ndarray], dict[str, np.ndarray]]:
    where = f"{spec.name}: evaluation data {str(path)!r}"
    arrays = _read(path, where)
    labels_wanted = spec.evaluation.get("labels", [])
    known = [*spec.input_names, *labels_wanted]
    for name in arrays:
        if name not in known:
            raise UsageError(f"{where}: unexpected array {name!r}{did_you_mean(name, known)}; it holds one array per "
                             f"input ({', '.join(spec.input_names)})"
                             + (f" and the labels ({', '.join(labels_wanted)})" if labels_wanted else ""))
    missing = [n for n in (*spec.input_names, *labels_wanted) if n not in arrays and n not in spec.state_inputs]
    if missing:
        raise UsageError(f"{where}: no array {missing[0]!r}; it holds one array per input "
                         f"({', '.join(spec.input_names)}; a state input left out starts at zero)")
    feeds = {n: arrays[n] for n in spec.input_names if n in arrays}
    for name, value in feeds.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise UsageError(f"{where}: {name!r} holds NaN or Inf at {np.argwhere(~np.isfinite(value))[0].tolist()}")
    sizes = _sizes(spec, feeds, where)
    state = [n for n in spec.state_inputs if n not in feeds]
    for name in state:
        feeds[name] = np.zeros(spec.input(name).resolve(spec.sizes_of(sizes)), spec.dtype(name))
    try:
        spec.check_feeds(feeds)
    except UsageError as exc:
        raise UsageError(f"{where}: {str(exc).removeprefix(f'{spec.name}: ')}") from None
    labels = {n: arrays[n] for n in labels_wanted}
    for name, value in labels.items():
        if not np.issubdtype(value.dtype, np.integer):
            raise UsageError(f"{where}: labels {name!r} are {value.dtype}; expected integer classes")
    case = Case(tuple((d.name, sizes[d.name]) for d in spec.dims), "zero" if spec.state else "random",
                bool(spec.state), _case_name(path))
    frozen = {n: _read_only(v) for n, v in feeds.items()}
    return case, frozen, {n: _read_only(v.astype(np.int64)) for n, v in labels.items()}


def _case_name(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem) or "data"
    return stem if IDENT_RE.fullmatch(stem) else f"d{stem}"[:64]


def _read_only(value: np.ndarray) -> np.ndarray:
    value = np.ascontiguousarray(value)
    value.flags.writeable = False
    return value


def _sizes(spec: ModelSpec, feeds: dict[str, np.ndarray], where: str) -> dict[str, int]:
    """Each free dim's size, read from the first input that has it."""
    sizes: dict[str, int] = {}
    for t in spec.inputs:
        value = feeds.get(t.name)
        if value is None:
            continue
        if value.ndim != len(t.shape):
            raise UsageError(f"{where}: {t.name!r} has shape {list(value.shape)}, expected {len(t.shape)} dims "
                             f"{list(t.shape)}")
        for axis, dim in enumerate(t.shape):
            if isinstance(dim, str):
                sizes.setdefault(dim, value.shape[axis])
    for d in spec.dims:
        if d.name not in sizes:
            raise UsageError(f"{where}: no input gives the size of dim {d.name!r}")
        if sizes[d.name] < d.min:
            raise UsageError(f"{where}: dim {d.name!r} is {sizes[d.name]}, below its min {d.min}")
    return {d.name: sizes[d.name] for d in spec.dims}


def _read(path: Path, where: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz (``allow_pickle=False``: an object array is refused) or .safetensors."""
    import os
    import stat

    try:
        info = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{where}: not a regular file")
    if info.st_size > MAX_BYTES:
        raise UsageError(f"{where}: {info.st_size} bytes; evaluation data is stored with the artifact, at most "
                         f"{MAX_BYTES >> 20} MiB")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UsageError(f"{where}: holds a pickled (object) array; rnnexport reads data only, never "
                             "unpickles: save plain numeric arrays (np.savez)") from None
        raise UsageError(f"{where}: unreadable ({exc})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, Exception) as exc:
        raise UsageError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
