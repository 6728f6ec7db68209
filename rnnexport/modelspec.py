"""ModelSpec: a user's own module as data (docs/specs.md, "Model spec").

A model spec names a module (``FILE.py:ATTR`` or ``package.module:ATTR``), its arguments and
weights, and its I/O signature: one table per ``forward()`` argument (dtype, shape over named
dims, value range), the named dims with their documented size and sweep, the output names and the
state pairs (input fed from an output) that enable the streaming check. Everything here is data
and torch-free; `rnnexport.usermodel` builds and calls the module.

This module owns the data model and its behaviour: `ModelSpec`, the sweep, the golden and
streaming cases, tolerances. The inputs as `TensorSpec`s over `DimSpec`s and what is done with
them (the seeded inputs, the feed check) are `rnnexport.contract`'s, shared with RNN
configurations; loading and checking spec data is `rnnexport.modelspec_load`'s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.dimexpr import DerivedDim
from rnnexport.contract import DTYPES, Contract, DimSpec, TensorSpec
from rnnexport.inputs import IDENT_RE, INITIAL_STATES, Case
from rnnexport.model_behaviour import ModelBehaviour

__all__ = ["DTYPES", "IDENT_RE", "INITIAL_STATES", "RANDOM_WEIGHTS", "DimSpec", "ModelSpec", "TensorSpec"]

RANDOM_WEIGHTS = "random"  # `weights = "random"`: the module's seeded initialization, on purpose


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec(Contract, ModelBehaviour):
    """A model spec (see the module docstring). Build with `model_spec_from_dict` or
    `load_model_spec`, which validate every key.

    Attributes:
        name: Artifact folder name.
        module: ``FILE.py:ATTR`` (absolute path once loaded) or ``package.module:ATTR``.
        module_args: Keyword arguments of ATTR.
        weights: Absolute path of a ``.safetensors`` file or a ``torch.save`` state dict;
            ``"random"``: the module's initialization under `seed`, on purpose; None: not given
            (the same initialization, which an export of the spec points out in a note).
        weights_key: Where the state dict is inside a ``torch.save`` training checkpoint
            (``"model"``; dotted for nesting, ``"state.model"``); None: the file is the state dict.
        seed: Seed of generated inputs (and of the initialization without `weights`).
        inputs: ``forward()``'s arguments, in order.
        dims: Every dim name used in a shape or a range.
        outputs: ``forward()``'s outputs, flattened in order.
        state: (input, output) pairs: the output feeds the input at the next chunk.
        stream_dim: The dim the streaming check chunks (required with `state`).
        tolerance: ``{"atol": x, "rtol": y, "outputs": {name: {"atol":..., "rtol":...}}}`` (all optional).
        torchscript: ``script`` or ``trace``; None: script, falling back to trace.
        formats: The formats to make (`rnnexport.formats.FORMATS`), each required; None: all,
            one that cannot be made left out with its reason.
        variants: Deployment variants to make beside the fp32 files (`rnnexport.variants`).
        criteria: ``{output: {kind: {threshold, params}}}``, what variants are judged by
            (`rnnexport.criteria`); outputs left out get the default.
        evaluation: ``{"file": absolute path, "labels": [names]}``: the user's own inputs
            (`rnnexport.evaldata`), run besides the seeded cases.
    """

    name: str
    module: str
    inputs: tuple[TensorSpec, ...]
    dims: tuple[DimSpec, ...]
    outputs: tuple[str, ...]
    module_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    weights_key: str | None = None
    seed: int = 0
    state: tuple[tuple[str, str], ...] = ()
    stream_dim: str | None = None
    tolerance: dict[str, Any] = dataclasses.field(default_factory=dict)
    torchscript: str | None = None
    formats: tuple[str, ...] | None = None
    derived: tuple[DerivedDim, ...] = ()
    inputs_fn: str | None = None
    variants: tuple[str, ...] | None = None
    criteria: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: dict[str, Any] | None = None

    kind = "model"

    def __hash__(self) -> int:
        return hash((self.name, self.module, _freeze(self.module_args), self.weights, self.weights_key, self.seed,
                     self.inputs, self.dims, self.outputs, self.state, self.stream_dim, self.derived, self.inputs_fn,
                     _freeze(self.criteria), _freeze(self.evaluation)))

    @property
    def seeded_weights(self) -> bool:
        """``weights = "random"``: the module's seeded initialization, on purpose."""
        return self.weights == RANDOM_WEIGHTS

    def acceptance_criteria(self) -> tuple:
        """The criteria variants are judged by (`rnnexport.criteria`): the spec's, the default
        for outputs it leaves out."""
        from rnnexport.criteria import parse_criteria

        return parse_criteria(self.criteria, self.outputs, (), self.name, ValueError)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.outputs

    def sweep(self) -> list[Case]:
        """The documented sizes; every sweep value of every dim (others at their documented
        size); the all-largest combination; each with zero and random state inputs."""
        documented = self.documented
        shapes = [documented]
        for dim in self.dims:
            shapes += [{**documented, dim.name: value} for value in dim.sweep]
        shapes.append({d.name: max((d.size, *d.sweep)) for d in self.dims})
        unique = list(dict.fromkeys(tuple(s.items()) for s in shapes))
        return [self.case(dict(sizes), state) for sizes in unique for state in self._states()]

    def golden_cases(self) -> list[Case]:
        """Stored with the artifact: the documented sizes (random state) and the smallest
        sizes (zero state, when there is state)."""
        smallest = {d.name: min((d.size, *d.sweep)) for d in self.dims}
        cases = [self.case(self.documented, "random"), self.case(smallest, self._states()[0])]
        return list(dict.fromkeys(cases))

    def streaming_not_applicable(self) -> str | None:
        if not self.state:
            return "no state declared ([outputs] state = { input = \"output\" })"
        if any(t.range is not None and self.stream_dim in t.range for t in self.inputs):
            return "variable lengths along the stream dim: chunks of padded sequences do not line up"
        return None

    def streaming_cases(self) -> list[tuple[Case, tuple[int, ...]]]:
        """The documented case (random state) in three chunks along `stream_dim`, and a zero-state
        one with length 17 in chunks 5, 1, 11."""
        if self.streaming_not_applicable():
            return []
        documented = self.documented
        cases = [(self.case({**documented, self.stream_dim: 17}, "zero"), (5, 1, 11))]
        length = documented[self.stream_dim]
        if length >= 3:
            third = length // 3
            cases.append((self.case(documented, "random"), (third, 1, length - third - 1)))
        return cases

    def case_bytes(self, case: Case, outputs: tuple[TensorSpec, ...] = (), runs: int = 1) -> int:
        """Rough bytes one case needs: its inputs times 64 (the module's activations); its
        `outputs` (`output_tensors`), held at once by each of the `runs` runtimes and the golden
        data; and 64 bytes per element of the largest one while it is compared (float64 copies,
        differences and ratios in `rnnexport.compare`)."""
        sizes = self.sizes_of(dict(case.sizes))
        elements = [math.prod(t.resolve(sizes)) for t in outputs]
        held = sum(n * np.dtype(t.dtype).itemsize for n, t in zip(elements, outputs))
        inputs = sum(math.prod(t.resolve(sizes)) * 4 for t in self.inputs)
        return 64 * inputs + (runs + 1) * held + 64 * max(elements, default=0)

    def tolerance_for(self, default_atol: float, default_rtol: float) -> tuple[float, float, dict[str, tuple[float, float]]]:
        atol = float(self.tolerance.get("atol", default_atol))
        rtol = float(self.tolerance.get("rtol", default_rtol))
        per_output = {name: (float(t.get("atol", atol)), float(t.get("rtol", rtol)))
                      for name, t in self.tolerance.get("outputs", {}).items()}
        return atol, rtol, per_output

    @property
    def module_file(self) -> Path | None:
        """The module's source file for ``FILE.py:ATTR``; None for ``package.module:ATTR``."""
        target = self.module.rsplit(":", 1)[0]
        return Path(target) if target.endswith(".py") else None

    def module_description(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.module_args.items())
        target, attr = self.module.rsplit(":", 1)
        return f"{Path(target).name if target.endswith('.py') else target}:{attr}({args})"
