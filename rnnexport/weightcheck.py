"""Stored weights checked as data: ``weights.safetensors`` against the ``model.onnx`` it was
exported with, without running any code.

A model spec's eager reference loads ``weights.safetensors`` into the user's module; where that
reference does not run (``--untrusted``, a module that is gone or changed) nothing else reads the
file, so a pickle in its place, extra tensors or changed weights would pass unseen. Here the
file must parse as safetensors (data only), and each tensor the export found among the ONNX
initializers (``weights_check`` in the manifest) must still be there: by name and value where
ONNX kept the name, else by value (ONNX stores recurrent weights re-laid out: gates reordered,
directions stacked, biases joined, so the values are there but not the shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["check_stored_weights", "weights_record"]


def _onnx_floats(onnx_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The float initializers of an ONNX file by name, and all their values as (unique, counts)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = [*model.graph.initializer, *(i for f in model.functions for i in getattr(f, "initializer", []))]
    arrays = {i.name: numpy_helper.to_array(i) for i in inits}
    floats = {k: v for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}
    pool = np.concatenate([v.astype(np.float64).ravel() for v in floats.values()]) if floats else np.zeros(0)
    unique, counts = np.unique(pool, return_counts=True)
    return floats, unique, counts


def _found(name: str, tensor: np.ndarray, floats: dict[str, np.ndarray], unique: np.ndarray,
           counts: np.ndarray) -> bool:
    """Whether `tensor` is in the ONNX initializers: the one of its name (as is, or transposed),
    else its values, each as often as it occurs, among all of them."""
    if name in floats:
        stored = floats[name]
        return any(candidate.shape == tensor.shape and np.array_equal(candidate, tensor, equal_nan=True)
                   for candidate in (stored, stored.T))
    if tensor.dtype.kind != "f":
        return False
    values, needed = np.unique(tensor.astype(np.float64).ravel(), return_counts=True)
    at = np.searchsorted(unique, values)
    if np.any(at >= len(unique)):
        return False
    return bool(np.all(unique[at] == values) and np.all(counts[at] >= needed))


def check_stored_weights(artifact) -> tuple[list[str], list[str]]:
    """(problems, notes) of the artifact's ``weights.safetensors`` checked as data against its
    ``model.onnx``; both empty where the artifact has no such pair."""
    weights_file, onnx_file = artifact.file("weights.safetensors"), artifact.file("model.onnx")
    if weights_file is None or onnx_file is None:
        return [], []
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        weights = load(weights_file.read_bytes())
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        return [f"weights.safetensors is not a safetensors file ({type(exc).__name__}: {str(exc)[:120]}); "
                "it is read as data only, never unpickled"], []
    recorded = artifact.manifest.get("weights_check")
    if isinstance(recorded, dict) and all(isinstance(recorded.get(k), list) for k in ("in_onnx", "not_in_onnx")):
        expected, unchecked = set(recorded["in_onnx"]), set(recorded["not_in_onnx"])
    else:  # a manifest from before the record: every tensor must be there
        expected, unchecked = set(weights), set()
    floats, unique, counts = _onnx_floats(onnx_file)
    missing = sorted((expected | unchecked) - set(weights))
    layout = recorded.get("tensors") if isinstance(recorded, dict) and isinstance(recorded.get("tensors"), dict) else {}
    relaid = sorted(n for n, t in weights.items() if n in layout and layout[n] != _layout(t))
    changed = sorted(n for n in expected & set(weights)
                     if n not in relaid and not _found(n, weights[n], floats, unique, counts))
    extra = sorted(set(weights) - expected - unchecked)
    problems = []
    if missing:
        problems.append(f"weights.safetensors lacks {', '.join(missing[:5])}, which the export wrote")
    if relaid:
        name = relaid[0]
        problems.append(f"weights.safetensors: {', '.join(relaid[:5])} changed dtype or shape since the export "
                        f"({layout[name]['dtype']}{layout[name]['shape']} then, {_layout(weights[name])['dtype']}"
                        f"{_layout(weights[name])['shape']} now)")
    if changed:
        problems.append(f"weights.safetensors: {', '.join(changed[:5])} differ from model.onnx's initializers: "
                        "the weights are not the ones model.onnx was exported with")
    if extra:
        problems.append(f"weights.safetensors holds tensors the export did not write: {', '.join(extra[:5])}")
    checked = len(expected & set(weights)) - len(changed) - len(set(relaid) & expected)
    notes = [f"weights.safetensors checked as data (no eager reference ran): {checked} of {len(weights)} tensors "
             "equal model.onnx's initializers" + (f"; not checked (not in model.onnx at export): "
                                                  f"{', '.join(sorted(unchecked)[:5])}" if unchecked else "")]
    return problems, notes


def weights_record(weights: dict[str, np.ndarray], onnx_path: Path | None) -> dict[str, list[str]]:
    """The manifest's ``weights_check``: which tensors of ``weights.safetensors`` the export
    found in ``model.onnx`` (checked later), which not (a tensor the graph does not use, or
    folds into another constant: listed, not checked), and each tensor's dtype and shape.
    Without a ``model.onnx`` (`onnx_path` None) none is found."""
    found = []
    if onnx_path is not None:
        floats, unique, counts = _onnx_floats(onnx_path)
        found = sorted(name for name, tensor in weights.items() if _found(name, tensor, floats, unique, counts))
    return {"in_onnx": found, "not_in_onnx": sorted(set(weights) - set(found)),
            "tensors": {name: _layout(tensor) for name, tensor in sorted(weights.items())}}


def _layout(tensor: np.ndarray) -> dict[str, object]:
    """A tensor's dtype and shape as the manifest records them (values alone would let a
    float64 copy of the weights pass)."""
    return {"dtype": str(tensor.dtype), "shape": list(tensor.shape)}
