"""Golden data (``golden.npz``): deterministic ``.npz`` writing (`write_npz`), plain reading
(`read_npz`), the arrays each golden case must hold (`golden_arrays`), and the bounded read
that checks every member's size and ``.npy`` header before any data is decompressed
(`read_golden`).
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ArtifactError
from rnnexport.verify import regular_file

__all__ = ["golden_arrays", "label_names", "recorded_arrays", "read_golden", "read_npz", "write_npz"]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_NPY_HEADER_BYTES = 1 << 16  # the largest .npy header (format 2.0 allows 4 GiB, numpy writes < 64 KiB)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` readable by ``np.load``, byte-identical for identical arrays.

    ``np.savez`` stamps the current time into each zip member; here every member gets the zip
    epoch and the members are written in sorted order.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles). Raises `ArtifactError` if unreadable."""
    regular_file(path, "an .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArtifactError(f"{path}: unreadable golden data ({exc})") from None

def golden_arrays(spec, manifest: dict[str, Any], case) -> list[tuple[str, tuple, np.dtype]]:
    """(name, shape, dtype) of every golden tensor of `case`, as the spec gives them (an RNN
    configuration from its shapes; a model spec as its manifest records them: `recorded_arrays`)."""
    return spec.golden_arrays(manifest, case)


def recorded_arrays(spec, manifest: dict[str, Any], case) -> list[tuple[str, tuple, np.dtype]]:
    """A model spec's golden tensors: inputs from the spec, outputs (and an evaluation case's
    labels) as recorded at export, checked for shape here and compared with eager when validating."""
    names = (*spec.input_names, *spec.output_names)
    inputs = spec.input_shapes(dict(case.sizes))
    recorded = manifest["golden"].get("arrays", {})
    found = []
    for name in (*names, *label_names(spec, case)):
        entry = recorded.get(f"{case.id}/{name}")
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or not all(
                type(d) is int and 0 <= d < 2**31 for d in entry["shape"]) or entry.get("dtype") not in (
                "float32", "float16", "float64", "int64", "int32", "bool"):
            raise ArtifactError(f"{manifest.get('name')}: manifest golden.arrays lacks a valid entry for "
                                f"{case.id}/{name} ({{\"shape\": [...], \"dtype\": ...}})")
        shape = tuple(entry["shape"])
        if name in inputs and (shape != inputs[name] or entry["dtype"] != spec.dtype(name)):
            raise ArtifactError(f"{manifest.get('name')}: golden input {case.id}/{name} is {entry['dtype']}"
                                f"{list(shape)}, the spec gives {spec.dtype(name)}{list(inputs[name])}")
        found.append((name, shape, np.dtype(entry["dtype"])))
    return found


def label_names(spec, case) -> tuple[str, ...]:
    """The label arrays stored with an evaluation-data case (`rnnexport.evaldata`)."""
    return tuple(spec.evaluation.get("labels", [])) if spec.evaluation and case.data else ()


def read_golden(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """The arrays of a golden ``.npz``, each checked for presence, size, shape and dtype.

    Member sizes are checked before anything is decompressed, and each member's ``.npy`` header
    before its data, so a crafted archive cannot make validation allocate more than the arrays
    the spec implies.
    """
    regular_file(path, "golden data")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            unexpected = sorted(set(members) - {f"{key}.npy" for key in expected})
            if unexpected:
                raise ArtifactError(f"{path}: golden data holds unexpected member {unexpected[0]!r}")
            for key, (shape, dtype) in expected.items():
                info = members.get(f"{key}.npy")
                if info is None:
                    raise ArtifactError(f"{path}: golden data lacks {key!r}")
                if info.file_size > math.prod(shape) * dtype.itemsize + _NPY_HEADER_BYTES:
                    raise ArtifactError(f"{path}: golden {key!r} is {info.file_size} bytes, larger than a "
                                        f"{list(shape)} {dtype} array")
                # The header first: numpy allocates whatever shape it claims before reading any data.
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0)):
                        raise ArtifactError(f"{path}: golden {key!r} is .npy format {version}; rnnexport writes 1.0")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    found, _, found_dtype = read_header(member)
                if found != shape or found_dtype != dtype:
                    what = f"shape {list(found)}" if found != shape else f"dtype {found_dtype}"
                    raise ArtifactError(f"{path}: golden {key!r} has {what}, expected "
                                        f"{list(shape) if found != shape else dtype} (its .npy header; not read)")
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: unreadable golden data ({type(exc).__name__}: {exc})") from None
    return arrays
