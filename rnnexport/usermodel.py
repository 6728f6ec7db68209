"""A model spec's module: import it, build it, load its weights, check it against the spec,
and call it on named feeds (``m(*inputs) -> outputs``, nested tuples flattened in order).

Importing a user's module runs its code: validation does it only for trusted artifacts.
Weights are data: ``.safetensors``, or a ``torch.save`` state dict loaded with
``weights_only=True``; never unpickled otherwise.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnexport.errors import SpecError
from rnnexport.modelspec import ModelSpec
from rnnexport.ops import RECURRENT_MODULES

__all__ = ["build_user_module", "call_user_model", "example_args", "flatten_outputs", "import_reason",
           "load_weights", "module_sha256", "recurrent_layers", "user_args"]



def _import_target(spec: ModelSpec):
    target, attr = spec.module.rsplit(":", 1)
    if target == "__main__":
        raise SpecError(f"{spec.name}: {attr} was defined in a script (__main__) when it was exported; importing "
                        "the script again would run it, so it is not rebuilt")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"{spec.name}: module file {str(path)!r} does not exist (module = {spec.module!r})")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        name = f"rnnexport_user_{path.stem}_{digest}"
        if name not in sys.modules:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # TorchScript finds source through sys.modules
            sys.path.insert(0, str(path.parent))  # the file may import its neighbours
            try:
                loader_spec.loader.exec_module(module)
            except BaseException as exc:
                del sys.modules[name]
                raise SpecError(f"{spec.name}: cannot import {str(path)!r}: {type(exc).__name__}: {exc}") from None
            finally:
                sys.path.remove(str(path.parent))
        module = sys.modules[name]
    else:
        try:
            module = importlib.import_module(target)
        except BaseException as exc:
            raise SpecError(f"{spec.name}: cannot import module {target!r}: {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            found = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__)
            raise SpecError(f"{spec.name}: {target!r} has no attribute {attr!r}; its nn.Module classes: "
                            f"{', '.join(found) or '(none)'}")
        value = getattr(value, part)
    return value


def import_reason(spec: ModelSpec) -> str | None:
    """Why the module of `spec` cannot be imported here (moved, missing, failing), or None."""
    try:
        _import_target(spec)
    except SpecError as exc:
        return str(exc)
    return None


def module_sha256(spec: ModelSpec) -> str | None:
    """sha256 of the module's source file (``FILE.py:ATTR``), or None."""
    path = spec.module_file
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``).

    Raises:
        SpecError: unreadable, not a state dict (e.g. a training checkpoint around one), or
            refused by ``weights_only`` (it would need unpickling code).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            from rnnexport.artifacts import weights_only_loading

            with weights_only_loading():
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        import re

        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = (f"weights_only refused it: it would unpickle {found[1]}" if found
               else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}")
        raise SpecError(f"cannot load weights {str(path)!r} as data ({why}); use .safetensors or a "
                        "torch.save(state_dict) file") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        raise SpecError(f"weights {str(path)!r} are not a state dict of tensors (found {keys}); save "
                        "module.state_dict(), or the state dict inside a training checkpoint")
    return dict(state)


def _check_state_dict(name: str, module: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> None:
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


def build_user_module(spec: ModelSpec, state: Mapping[str, Tensor] | None = None) -> torch.nn.Module:
    """The module of `spec` in eval mode: built from ``module``/``module_args`` under a forked
    RNG seeded with ``spec.seed``, then loaded with `state` (default: ``spec.weights``), strict.

    Raises:
        SpecError: the module does not import, ATTR is missing or does not give an nn.Module,
            the weights do not fit (missing/unexpected keys, a shape), or forward() does not
            match the spec's inputs.
    """
    factory = _import_target(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed % (2**63))
        try:
            module = factory(**spec.module_args)
        except Exception as exc:
            raise SpecError(f"{spec.name}: {spec.module}({', '.join(spec.module_args)}) failed: "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise SpecError(f"{spec.name}: {spec.module} returned {type(module).__name__}, not an nn.Module")
    if state is None and spec.weights:
        state = load_weights(spec.weights)
        source = repr(spec.weights)
    else:
        source = "stored in the artifact"
    if state is not None:
        _check_state_dict(spec.name, module, state, source)
        module.load_state_dict(dict(state), strict=True)
    _check_forward(spec, module)
    return module.eval()


def _check_forward(spec: ModelSpec, module: torch.nn.Module) -> None:
    """forward()'s arguments are the spec's inputs, in order; trailing ones with a default
    may be left out (they keep their default in every export)."""
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params]
    for index, name in enumerate(spec.input_names):
        if name not in names:
            raise SpecError(f"{spec.name}: [inputs.{name}] is not an argument of {type(module).__name__}.forward"
                            f"({', '.join(names)})")
        if names.index(name) != index:
            raise SpecError(f"{spec.name}: the [inputs] tables must follow forward()'s order "
                            f"({', '.join(names)}); {name!r} is argument {names.index(name) + 1}")
    for param in params[len(spec.input_names):]:
        if param.default is inspect.Parameter.empty:
            raise SpecError(f"{spec.name}: forward() argument {param.name!r} has no [inputs.{param.name}] table "
                            "(and no default)")


def user_args(spec: ModelSpec, feeds: Mapping[str, np.ndarray | Tensor]) -> tuple[Tensor, ...]:
    """forward()'s positional arguments from named feeds."""
    return tuple(feeds[n] if isinstance(feeds[n], Tensor) else torch.from_numpy(np.array(feeds[n]))
                 for n in spec.input_names)


def flatten_outputs(value: Any) -> list[Tensor]:
    """Tensors of a forward() result in order: tuples and lists flatten, depth first."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flatten_outputs(item)]
    raise SpecError(f"forward() returned a {type(value).__name__}; outputs must be tensors or (nested) tuples of them")


def call_user_model(model, spec: ModelSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call `model` (eager, TorchScript or torch.export) on named feeds; outputs by name.

    Raises:
        SpecError: the number of outputs differs from ``[outputs] names``.
    """
    with torch.no_grad():
        tensors = flatten_outputs(model(*user_args(spec, feeds)))
    if len(tensors) != len(spec.output_names):
        raise SpecError(f"{spec.name}: forward() returns {len(tensors)} tensors, [outputs] names lists "
                        f"{len(spec.output_names)}: {list(spec.output_names)}")
    return {name: t.detach().numpy() for name, t in zip(spec.output_names, tensors)}


def example_args(spec: ModelSpec) -> tuple[Tensor, ...]:
    """Arguments for tracing/exporting: the documented sizes, each dim at least 2 (tracers and
    torch.export treat sizes 0 and 1 as constants)."""
    sizes = {d.name: max(d.size, 2) for d in spec.dims}
    feeds = spec.make_inputs(spec.case(sizes, "random"))
    return tuple(torch.from_numpy(feeds[n].copy()) for n in spec.input_names)


def recurrent_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.RNNBase]]:
    """Every nn.RNN/LSTM/GRU inside `module` (any depth), by qualified name."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, RECURRENT_MODULES)]
