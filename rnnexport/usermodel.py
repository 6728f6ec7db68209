"""A model spec's module: import it, build it, load its weights, check it against the spec,
and call it on named feeds (``m(*inputs) -> outputs``, nested tuples flattened in order).

Importing a user's module runs its code: validation does it only for trusted artifacts.
Weights are data: ``.safetensors``, or a ``torch.save`` state dict loaded with
``weights_only=True``; never unpickled otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnexport.errors import SpecError
from rnnexport.modelspec import RANDOM_WEIGHTS, ModelSpec
from rnnexport.substitution import RECURRENT_MODULES

__all__ = ["build_user_module", "call_user_model", "check_state_dict", "example_args", "exits_refused",
           "flatten_outputs", "import_module", "load_weights", "module_source", "recorded_module", "recurrent_layers",
           "user_args"]


def import_module(spec: ModelSpec, sha256: str | None) -> Any:
    """Import the module of `spec` now (checked against `sha256`, see `_import_target`), so
    that building it later uses exactly this import. Returns its ``ATTR``."""
    return _import_target(spec, sha256)


def _import_target(spec: ModelSpec, sha256: str | None = None):
    """The ``ATTR`` of ``spec.module``, imported. With `sha256`, a ``FILE.py`` module is run
    from bytes read once and checked against it (what was checked is what runs).

    Raises:
        SpecError: a script's class, a missing file or attribute, a failing import, a
            standard-library module, or an ``ATTR`` that is neither an nn.Module class nor a
            Python function (a factory).
    """
    target, attr = spec.module.rsplit(":", 1)
    if target == "__main__":
        raise SpecError(f"{spec.name}: {_script_reason(attr)}")
    if _standard_library(target):
        raise SpecError(f"{spec.name}: module {target!r} is part of Python's standard library, not a model module "
                        "(module = 'FILE.py:ATTR' or 'package.module:ATTR')")
    if target.endswith(".py"):
        module = _import_file(spec, Path(target), sha256)
    else:
        try:
            with exits_refused():
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
    is_module_class = isinstance(value, type) and issubclass(value, torch.nn.Module)
    if not is_module_class and not (inspect.isfunction(value) and not _standard_library(value.__module__)):
        raise SpecError(f"{spec.name}: {spec.module} is a {type(value).__name__}, not an nn.Module class or a Python "
                        "function returning one")
    return value


@contextlib.contextmanager
def exits_refused() -> Iterator[None]:
    """While a user's module runs in this process (imported, built, exported), ``os._exit``
    called from the main thread raises `SpecError` instead of ending the process on the spot:
    an export would otherwise exit 0 having written nothing. Other threads (rnnexport's own
    watchers) still exit. Validation runs the module in a child process instead
    (`rnnexport.runtimes.isolated`), which catches any way out."""
    import threading

    real = os._exit

    def refuse(code: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            real(code)
        raise SpecError(f"the module called os._exit({code})")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def _script_reason(attr: str) -> str:
    return (f"{attr} was defined in a script (__main__) when it was exported; importing the script again would run "
            "it, so it is not rebuilt")


def _standard_library(target: str) -> bool:
    """Whether module `target` (``a.b``; never ``FILE.py``) is one of Python's own."""
    return not target.endswith(".py") and target.split(".")[0] in sys.stdlib_module_names


def _import_file(spec: ModelSpec, path: Path, sha256: str | None):
    if not path.is_file():
        raise SpecError(f"{spec.name}: module file {str(path)!r} does not exist (module = {spec.module!r})")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"rnnexport_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{spec.name}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if sha256 is not None and hashlib.sha256(source).hexdigest() != sha256:
        raise SpecError(f"{spec.name}: {str(path)!r} changed since it was checked; not imported")
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # TorchScript finds source through sys.modules
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        with exits_refused():
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 (the user's module, checked)
    except BaseException as exc:
        del sys.modules[name]
        raise SpecError(f"{spec.name}: cannot import {str(path)!r}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def module_source(spec: ModelSpec, artifact_folder: Path, *, rebuildable: bool) -> dict[str, Any]:
    """What the manifest records of where the module came from: ``module``, its source
    ``file`` relative to the artifact folder (it moves with the project) and that file's
    ``sha256``, which validation requires before it imports anything (`recorded_module`)."""
    path = _source_file(spec.module.rsplit(":", 1)[0])
    recorded: dict[str, Any] = {"module": spec.module, "rebuildable": rebuildable,
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None}
    if path is not None and spec.module_file is not None:
        recorded["file"] = os.path.relpath(path.resolve(), artifact_folder.resolve())
    return recorded


def _source_file(target: str) -> Path | None:
    """The source file of ``FILE.py`` or of module ``a.b``, found as ``import`` would find it
    (every finder on ``sys.meta_path``, editable installs included) without running anything:
    ``importlib.util.find_spec`` would import the parent packages. None where there is none."""
    if target.endswith(".py"):
        return Path(target) if Path(target).is_file() else None
    parts, locations, found = target.split("."), None, None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        found = next((spec for finder in sys.meta_path if hasattr(finder, "find_spec")
                      for spec in [_quiet_find(finder, name, locations)] if spec is not None), None)
        if found is None:
            return None
        locations = found.submodule_search_locations
    origin = found.origin if found is not None else None
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _quiet_find(finder, name: str, locations):
    try:
        return finder.find_spec(name, locations)
    except (ImportError, ValueError, AttributeError, TypeError):
        return None


def recorded_module(spec: ModelSpec, source: Any, folder: Path) -> tuple[ModelSpec | None, str | None]:
    """The spec whose module a validation may import, with the file it imports, or None and
    why not (the artifact is then checked against its golden data only).

    Only the module the export recorded (``module_source``), only while its file's sha256 is
    the recorded one, never a standard-library module: a manifest is easy to edit, and
    importing runs code. A ``FILE.py`` module is looked for relative to the artifact folder
    first (recorded so at export: the project may have moved), then at its absolute path; a
    relative path is never resolved against the current folder. rnnexport's own examples go
    the same way: a manifest naming another of rnnexport's functions must not get it called.
    """
    target, attr = spec.module.rsplit(":", 1)
    if target == "__main__":
        return None, _script_reason(attr)
    if _standard_library(target):
        return None, f"the manifest names {spec.module!r}, a standard-library module, not a model module; not imported"
    if not isinstance(source, dict) or source.get("module") != spec.module:
        return None, (f"the export did not record importing {spec.module!r} (manifest module_source); the module "
                      "is not imported")
    if target.endswith(".py"):
        candidates = [folder / source["file"]] if isinstance(source.get("file"), str) else []
        candidates += [Path(target)] if Path(target).is_absolute() else []
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None, f"module file not found ({', '.join(map(str, candidates)) or target}); not imported"
    else:
        path = _source_file(target)
        if path is None:
            return None, f"module {target!r} is not installed here (no source file found); not imported"
    recorded = source.get("sha256")
    if not isinstance(recorded, str):
        return None, (f"the export recorded no sha256 of {path} (an older rnnexport): not imported; re-export "
                      "to validate against the eager reference")
    current = hashlib.sha256(path.read_bytes()).hexdigest()
    if current != recorded:
        return None, (f"the module's source file {path} changed since the export (sha256 {recorded[:12]}... then, "
                      f"{current[:12]}... now): not imported")
    resolved = f"{path.resolve()}:{attr}" if target.endswith(".py") else spec.module
    return dataclasses.replace(spec, module=resolved), None


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


def build_user_module(spec: ModelSpec, state: Mapping[str, Tensor] | None = None) -> torch.nn.Module:
    """The module of `spec` in eval mode: built from ``module``/``module_args`` under a forked
    RNG seeded with ``spec.seed``, then loaded with `state` (default: ``spec.weights`` at
    ``spec.weights_key``; none where ``spec.weights`` is None or ``"random"``), strict.

    Raises:
        SpecError: the module does not import, ATTR is missing or does not give an nn.Module,
            the weights do not fit (missing/unexpected keys, a shape, a dtype) or hold NaN or
            Inf, or forward() does not match the spec's inputs.
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
    if state is None and spec.weights and spec.weights != RANDOM_WEIGHTS:
        state = load_weights(spec.weights, spec.weights_key)
        source = repr(spec.weights)
    else:
        source = "stored in the artifact"
    if state is not None:
        check_state_dict(spec.name, module, state, source)
        module.load_state_dict(dict(state), strict=True)
    check_forward(spec, module)
    return module.eval()


def check_forward(spec: ModelSpec, module: torch.nn.Module) -> None:
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
    """Tensors of a forward() result in order: tuples, lists and dicts (a dict's values in its
    own order) flatten, depth first."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flatten_outputs(item)]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in flatten_outputs(item)]
    raise SpecError(f"forward() returned a {type(value).__name__}; outputs must be tensors or (nested) tuples, lists "
                    "or dicts of them")


def _output_names(value: Any, prefix: str = "") -> list[str]:
    """Names for the tensors of a forward() result in `flatten_outputs`'s order: a dict's keys,
    nested ones joined by ``_`` (``state_h``), a tuple's items by position (``state_0``)."""
    if isinstance(value, Mapping):
        items = [(re.sub(r"\W", "_", str(k)), v) for k, v in value.items()]
    elif isinstance(value, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return [prefix or "output"]
    return [n for k, v in items for n in _output_names(v, f"{prefix}_{k}" if prefix else k)]


def call_user_model(model, spec: ModelSpec, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call `model` (eager, TorchScript or torch.export) on named feeds; outputs by name.

    Raises:
        SpecError: the number of outputs differs from ``[outputs] names`` (for a dict, the
            message lists its keys as the names to write), or the names are a dict's keys in
            another order (outputs are named by position).
    """
    with torch.no_grad():
        result = model(*user_args(spec, feeds))
    tensors = flatten_outputs(result)
    if isinstance(result, Mapping):
        keys, names = _output_names(result), list(spec.output_names)
        if len(tensors) != len(names):
            raise SpecError(f"{spec.name}: forward() returns a dict of {len(tensors)} tensors, [outputs] names lists "
                            f"{len(names)}: {names}; name them in the dict's order: names = {json.dumps(keys)}")
        if sorted(keys) == sorted(names) and keys != names:
            raise SpecError(f"{spec.name}: [outputs] names {names} are forward()'s dict keys in another order; outputs "
                            f"are named by position in the dict's order: names = {json.dumps(keys)}")
    if len(tensors) != len(spec.output_names):
        raise SpecError(f"{spec.name}: forward() returns {len(tensors)} tensors, [outputs] names lists "
                        f"{len(spec.output_names)}: {list(spec.output_names)}")
    return {name: t.detach().numpy() for name, t in zip(spec.output_names, tensors)}


def example_args(spec: ModelSpec) -> tuple[Tensor, ...]:
    """Arguments for tracing/exporting: the documented sizes, each dim at least 2 (tracers and
    torch.export treat sizes 0 and 1 as constants)."""
    from rnnexport.userinputs import case_inputs

    sizes = {d.name: max(d.size, 2) for d in spec.dims}
    feeds = case_inputs(spec, spec.case(sizes, "random"))
    return tuple(torch.from_numpy(feeds[n].copy()) for n in spec.input_names)


def recurrent_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.RNNBase]]:
    """Every nn.RNN/LSTM/GRU inside `module` (any depth), by qualified name."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, RECURRENT_MODULES)]
