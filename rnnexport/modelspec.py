"""ModelSpec: a user's own module as data (docs/specs.md, "Model spec").

A model spec names a module (``FILE.py:ATTR`` or ``package.module:ATTR``), its arguments and
weights, and its I/O signature: one table per ``forward()`` argument (dtype, shape over named
dims, value range), the named dims with their documented size and sweep, the output names and the
state pairs (input fed from an output) that enable the streaming check. Everything here is data
and torch-free; `rnnexport.usermodel` builds and calls the module.

This module owns the data model and its behaviour: `ModelSpec`, `TensorSpec`, `DimSpec`, the
cases (`ShapeCase`: a size per dim and how state inputs are filled), the sweep, the seeded
inputs, feed checks, tolerances. Loading and checking spec data is `rnnexport.modelspec_load`'s
(its public names are re-exported here lazily, by module ``__getattr__``: it imports this module).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.dimexpr import DerivedDim
from rnnexport.inputs import IDENT_RE, INITIAL_STATES, ShapeCase
from rnnexport.model_behaviour import ModelBehaviour
from rnnexport.errors import UsageError

__all__ = ["DTYPES", "IDENT_RE", "INITIAL_STATES", "RANDOM_WEIGHTS", "DimSpec", "ModelSpec", "ShapeCase", "TensorSpec",
           "did_you_mean", "is_model_spec_data", "load_model_spec", "model_spec_from_dict"]

DTYPES = ("float32", "float16", "int64", "int32", "bool")
RANDOM_WEIGHTS = "random"  # `weights = "random"`: the module's seeded initialization, on purpose


@dataclass(frozen=True)
class DimSpec:
    """A named dim: its documented (example) size and the further sizes every validation runs."""

    name: str
    size: int
    sweep: tuple[int, ...] = ()
    min: int = 1  # the smallest size the module accepts: the exported dim's lower bound


@dataclass(frozen=True)
class TensorSpec:
    """One ``forward()`` argument: dtype, shape (ints and dim names), optional inclusive range."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    range: tuple[Any, Any] | None = None
    sorted: str | None = None
    reaches_max: bool = False  # the range's upper end occurs in every case (batches padded to their longest)

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec(ModelBehaviour):
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

    # The signature, as the pipeline reads it (the same names as RNNSpec's).
    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.outputs

    @property
    def state_inputs(self) -> tuple[str, ...]:
        return tuple(i for i, _ in self.state)

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def dtype(self, name: str) -> str:
        """Element type of an input (outputs: float32 unless the golden data says otherwise)."""
        return self.input(name).dtype if name in self.input_names else "float32"

    def dim(self, name: str) -> DimSpec:
        return next(d for d in self.dims if d.name == name)

    @property
    def documented(self) -> dict[str, int]:
        return {d.name: d.size for d in self.dims}

    def sizes_of(self, sizes: dict[str, int]) -> dict[str, int]:
        """`sizes` (one per dim) with the derived dims' sizes added."""
        return {**sizes, **{d.name: d.value(sizes[d.root]) for d in self.derived}}

    def case_steps(self, case: ShapeCase) -> int:
        """How much work a case is: the product of its dims, a derived dim standing for its root
        (``samples`` for ``frames`` where samples = (frames - 4) * 275)."""
        sizes = self.sizes_of(dict(case.sizes))
        scale = math.prod(max(1, sizes[d.name] // max(1, sizes[d.root])) for d in self.derived)
        return case.steps * scale

    def input_shapes(self, sizes: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
        sizes = self.sizes_of(self.documented if sizes is None else sizes)
        return {t.name: t.resolve(sizes) for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The named dims of every input, by axis (outputs' axes come from the exported graph)."""
        return {t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}

    def case(self, sizes: dict[str, int], initial_state: str = "random") -> ShapeCase:
        return ShapeCase(tuple((d.name, sizes[d.name]) for d in self.dims), initial_state, bool(self.state))

    def parse_case(self, text: str) -> ShapeCase:
        """A case id of this spec: ``batch=3,seq=17,state=zero``; without state inputs
        ``batch=3,seq=17``, or ``batch=3,seq=17,state=random`` as older manifests spell it."""
        case = ShapeCase.parse(text)
        if [k for k, _ in case.sizes] != [d.name for d in self.dims]:
            raise ValueError(f"bad case {text!r}: dims must be {', '.join(d.name for d in self.dims)}")
        if case.initial_state not in self._states() or (self.state and not case.state_in_id):
            raise ValueError(f"bad case {text!r}: " + ("the spec has state inputs: end with state=zero|random"
                                                       if self.state else "the spec has no state inputs"))
        return case

    def _states(self) -> tuple[str, ...]:
        return INITIAL_STATES if self.state else ("random",)

    def sweep(self) -> list[ShapeCase]:
        """The documented sizes; every sweep value of every dim (others at their documented
        size); the all-largest combination; each with zero and random state inputs."""
        documented = self.documented
        shapes = [documented]
        for dim in self.dims:
            shapes += [{**documented, dim.name: value} for value in dim.sweep]
        shapes.append({d.name: max((d.size, *d.sweep)) for d in self.dims})
        unique = list(dict.fromkeys(tuple(s.items()) for s in shapes))
        return [ShapeCase(sizes, state, bool(self.state)) for sizes in unique for state in self._states()]

    def golden_cases(self) -> list[ShapeCase]:
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

    def streaming_cases(self) -> list[tuple[ShapeCase, tuple[int, ...]]]:
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

    def make_inputs(self, case: ShapeCase) -> dict[str, np.ndarray]:
        return dict(_cached_inputs(self, case))

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Names, dtypes, shapes (one size per dim across inputs) and integer ranges.

        Raises:
            UsageError: naming the input, what was found and what is valid.
        """
        unexpected = sorted(set(feeds) - set(self.input_names))
        if unexpected:
            raise UsageError(f"{self.name}: unexpected input {unexpected[0]!r}; inputs are {', '.join(self.input_names)}")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise UsageError(f"{self.name}: missing input {spec.name!r}; inputs are {', '.join(self.input_names)}")
            value = np.asarray(feeds[spec.name])
            if value.dtype != np.dtype(spec.dtype):
                raise UsageError(f"{self.name}: {spec.name!r} is {value.dtype}, expected {spec.dtype}")
            if value.ndim != len(spec.shape):
                raise UsageError(f"{self.name}: {spec.name!r} has shape {list(value.shape)}, expected "
                                 f"{len(spec.shape)} dims {list(spec.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
                if isinstance(want, str):
                    if sizes.setdefault(want, got) != got:
                        raise UsageError(f"{self.name}: {spec.name!r} axis {axis} is {want!r} = {got}, but another "
                                         f"input has {want!r} = {sizes[want]}")
                elif want != got:
                    raise UsageError(f"{self.name}: {spec.name!r} has shape {list(value.shape)}, expected "
                                     f"{list(spec.shape)}")
        for d in self.derived:
            if d.name in sizes and d.root in sizes and sizes[d.name] != d.value(sizes[d.root]):
                raise UsageError(f"{self.name}: {d.name!r} = {sizes[d.name]}, but the spec gives {d.name} = {d.expr} = "
                                 f"{d.value(sizes[d.root])} for {d.root} = {sizes[d.root]}")
        for spec in self.inputs:
            if spec.range is None or spec.dtype not in ("int64", "int32"):
                continue
            low, high = (sizes[v] if isinstance(v, str) else v for v in spec.range)
            value = np.asarray(feeds[spec.name])
            bad = value[(value < low) | (value > high)]
            if bad.size:
                raise UsageError(f"{self.name}: {spec.name!r} must be in [{low}, {high}], got {bad[:5].tolist()}")
            if spec.reaches_max and value.size and value.max() != high:
                raise UsageError(f"{self.name}: {spec.name!r} must reach {high} (the spec says reaches_max: one "
                                 f"sequence fills the padded length), got at most {value.max()}")
            steps = np.diff(value.astype(np.int64)) if spec.sorted else np.zeros(0)
            if (steps > 0).any() if spec.sorted == "descending" else (steps < 0).any():
                raise UsageError(f"{self.name}: {spec.name!r} must be sorted {spec.sorted} (the spec says so), got "
                                 f"{value[:8].tolist()}")

    def case_bytes(self, case: ShapeCase, outputs: tuple[TensorSpec, ...] = (), runs: int = 1) -> int:
        """Rough bytes one case needs: its inputs times 64 (the module's activations); its
        `outputs` (`output_tensors`), held at once by each of the `runs` runtimes and the golden
        data; and 64 bytes per element of the largest one while it is compared (float64 copies,
        differences and ratios in `rnnexport.compare`)."""
        sizes = self.sizes_of(dict(case.sizes))
        elements = [math.prod(t.resolve(sizes)) for t in outputs]
        held = sum(n * np.dtype(t.dtype).itemsize for n, t in zip(elements, outputs))
        inputs = sum(math.prod(t.resolve(sizes)) * 4 for t in self.inputs)
        return 64 * inputs + (runs + 1) * held + 64 * max(elements, default=0)

    def output_tensors(self, io: Any) -> tuple[TensorSpec, ...]:
        """The outputs as a manifest's ``io`` records them, each axis that follows a dim named
        after it (`rnnexport.modelspec_load.output_tensors`).

        Raises:
            ValueError: an output without a well-formed entry.
        """
        from rnnexport.modelspec_load import output_tensors

        return output_tensors(self, io)

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

    def replace(self, **changes: Any) -> ModelSpec:
        from rnnexport.modelspec_load import model_spec_from_dict

        return model_spec_from_dict({**self.to_dict(), **changes})


@functools.lru_cache(maxsize=64)
def _cached_inputs(spec: ModelSpec, case: ShapeCase) -> tuple[tuple[str, np.ndarray], ...]:
    sizes = spec.sizes_of(dict(case.sizes))
    rng = np.random.default_rng([spec.seed, *sizes.values(), 0 if case.initial_state == "zero" else 1])
    arrays = []
    for t in spec.inputs:
        shape = t.resolve(sizes)
        if t.name in spec.state_inputs and case.initial_state == "zero":
            value = np.zeros(shape, dtype=t.dtype)
        elif t.dtype == "bool":
            value = rng.integers(0, 2, size=shape).astype(bool)
        elif t.dtype in ("int64", "int32"):
            low, high = (0, 1 << 15) if t.range is None else (sizes[v] if isinstance(v, str) else v for v in t.range)
            value = rng.integers(low, high + 1, size=shape, dtype=t.dtype)
            if t.sorted:
                value = np.sort(value)[::-1] if t.sorted == "descending" else np.sort(value)
            if t.reaches_max and value.size:
                value = np.array(value)
                value[{"descending": 0, "ascending": -1}.get(t.sorted, int(rng.integers(value.size)))] = high
        elif t.range is not None:
            value = rng.uniform(t.range[0], t.range[1], size=shape).astype(t.dtype)
        else:
            value = rng.standard_normal(shape, dtype=np.float32).astype(t.dtype)
        value = np.array(value, dtype=t.dtype, order="C")  # 0-d stays 0-d (ascontiguousarray makes it 1-d)
        value.setflags(write=False)
        arrays.append((t.name, value))
    return tuple(arrays)


# rnnexport.modelspec_load imports this module: its names are re-exported on first use.
_LOADER_NAMES = ("MAX_DIM", "ORDERS", "did_you_mean", "is_model_spec_data", "load_model_spec", "model_spec_from_dict")


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from rnnexport import modelspec_load

        return getattr(modelspec_load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LOADER_NAMES})
