"""A model spec's module built and called: `build_user_module` (imported, seeded, its weights
loaded and checked, forward() checked against the spec's inputs), `call_user_model` on named
feeds (``m(*inputs) -> outputs``, nested tuples flattened in order), the example arguments of
tracing and exporting, its recurrent layers.

Importing the module (and what may be imported: trust) is `rnnexport.userimport`'s; its weights
are `rnnexport.userweights`'s. Their public names are re-exported here.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from rnnexport.errors import SpecError
from rnnexport.substitution import RECURRENT_MODULES
from rnnexport.userimport import exits_refused, import_module, import_target, module_source, recorded_module
from rnnexport.userweights import check_state_dict, load_weights

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["build_user_module", "call_user_model", "check_forward", "check_state_dict", "example_args",
           "exits_refused", "flatten_outputs", "import_module", "load_weights", "module_source", "recorded_module",
           "recurrent_layers", "user_args"]


def build_user_module(spec: ModelSpec, state: Mapping[str, Tensor] | None = None) -> torch.nn.Module:
    """The module of `spec` in eval mode: built from ``module``/``module_args`` under a forked
    RNG seeded with ``spec.seed``, then loaded with `state` (default: ``spec.weights`` at
    ``spec.weights_key``; none where ``spec.weights`` is None or ``"random"``), strict.

    Raises:
        SpecError: the module does not import, ATTR is missing or does not give an nn.Module,
            the weights do not fit (missing/unexpected keys, a shape, a dtype) or hold NaN or
            Inf, or forward() does not match the spec's inputs.
    """
    factory = import_target(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed % (2**63))
        try:
            module = factory(**spec.module_args)
        except Exception as exc:
            raise SpecError(f"{spec.name}: {spec.module}({', '.join(spec.module_args)}) failed: "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise SpecError(f"{spec.name}: {spec.module} returned {type(module).__name__}, not an nn.Module")
    if state is None and spec.weights and not spec.seeded_weights:
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
