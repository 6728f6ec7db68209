"""A model spec's weights: a state dict loaded as data (`load_weights`: ``.safetensors``, or a
``torch.save`` file with ``weights_only=True``, never unpickled otherwise; a training
checkpoint's entry by ``weights_key``) and checked against the module (`check_state_dict`:
keys, shapes, dtypes, finite values)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnexport.errors import SpecError

__all__ = ["check_state_dict", "load_weights"]


def load_weights(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    Args:
        path: The file.
        key: Where the state dict is inside a training checkpoint (``"model"``; dotted for
            nesting, ``"state.model"``: a dotted key of the checkpoint itself is found first).
            Default None: the file is the state dict.

    Raises:
        SpecError: unreadable, refused by ``weights_only`` (it would need unpickling code), no
            such `key`, or not a state dict (a training checkpoint without `key`: the message
            names the keys that hold state dicts).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            from rnnexport.pt2check import weights_only_loading

            with weights_only_loading():
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = (f"weights_only refused it: it would unpickle {found[1]}" if found
               else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}")
        raise SpecError(f"cannot load weights {str(path)!r} as data ({why}); use .safetensors or a "
                        "torch.save(state_dict) file") from None
    checkpoint = state
    if key is not None:
        state = _checkpoint_entry(checkpoint, key, path)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        where = f" at weights_key {key!r}" if key is not None else ""
        found = _state_dict_keys(checkpoint)
        if found:
            hint = (f"; the state dict{'s are' if len(found) > 1 else ' is'} at {', '.join(map(repr, found))}: try "
                    f"weights_key = {found[0]!r} in the spec")
        else:
            hint = "; save module.state_dict(), or name the state dict inside a training checkpoint with weights_key"
        raise SpecError(f"weights {str(path)!r}{where} are not a state dict of tensors (found {keys}){hint}")
    return dict(state)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def _checkpoint_entry(checkpoint: Any, key: str, path: Path) -> Any:
    """``checkpoint[key]``, dotted `key` walking nested dicts (the longest key found at each
    level first: a checkpoint's own keys may hold dots)."""
    value, rest, walked = checkpoint, key.split("."), []
    while rest:
        if not isinstance(value, Mapping):
            raise SpecError(f"weights {str(path)!r}: weights_key {key!r}: {'.'.join(walked) or 'the file'} is "
                            f"{type(value).__name__}, not a dict")
        n = next((n for n in range(len(rest), 0, -1) if ".".join(rest[:n]) in value), 0)
        if not n:
            found = _state_dict_keys(checkpoint)
            hint = f"; the state dicts are at {', '.join(map(repr, found))}" if found else ""
            raise SpecError(f"weights {str(path)!r}: no key {rest[0]!r} for weights_key {key!r} in "
                            f"{'.'.join(walked) or 'the file'} (its keys: {', '.join(map(str, list(value)[:8]))}){hint}")
        value, walked, rest = value[".".join(rest[:n])], [*walked, ".".join(rest[:n])], rest[n:]
    return value


def _state_dict_keys(value: Any, prefix: str = "", depth: int = 3) -> list[str]:
    """The (dotted) keys of the state dicts nested in a checkpoint, up to `depth` levels:
    ``['model']`` for ``{'model': ..., 'optimizer': ..., 'epoch': 3}`` (an optimizer's
    per-parameter states sit under integer keys and are left out)."""
    if not isinstance(value, Mapping) or depth == 0 or _is_state_dict(value):
        return []
    found = []
    for k, v in value.items():
        if isinstance(k, str):
            found += [f"{prefix}{k}"] if _is_state_dict(v) else _state_dict_keys(v, f"{prefix}{k}.", depth - 1)
    return found


def check_state_dict(name: str, module: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """`state` fits `module` exactly: keys, shapes and dtypes (``load_state_dict`` would cast
    float64 or int64 weights silently), and its floats are finite (NaN weights export, and every
    runtime then agrees on NaN outputs)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {missing[:5]}"] if missing else []) + (
            [f"unexpected keys {unexpected[:5]}"] if unexpected else [])
        raise SpecError(f"{name}: weights {source} do not fit the module: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise SpecError(f"{name}: weights {source}: {key!r} has shape {list(state[key].shape)}, the module's is "
                            f"{list(value.shape)}")
        found, wanted = (str(t.dtype).removeprefix("torch.") for t in (state[key], value))
        if found != wanted:
            raise SpecError(f"{name}: weights {source}: {key!r} is {found}, the module's is {wanted} (loading would "
                            "cast it silently); convert the checkpoint's tensors to the module's dtypes (here "
                            f"tensor.to(torch.{wanted})) and save it again")
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            counts = {what: int(test(state[key]).sum()) for what, test in (("NaN", torch.isnan), ("Inf", torch.isinf))}
            holds = " and ".join(f"{what} ({count} of {state[key].numel()} values)" for what, count in counts.items()
                                 if count)
            raise SpecError(f"{name}: weights {source}: {key!r} holds {holds}; every runtime would compute the same "
                            "non-finite outputs, so no check could catch it: fix the checkpoint (a diverged training "
                            "run?)")
