"""The calling contract as data, and what every spec does with it.

A spec's inputs are `TensorSpec`s (dtype, shape over named dims, range) over `DimSpec`s (the
documented size, the sweep). A model spec reads them from its TOML (`rnnexport.modelspec_load`);
an RNN configuration produces them from its fields (`rnnexport.spec.RNNSpec.inputs`: ``input``,
``h_0`` (``c_0``), ``lengths`` over ``batch`` and ``seq``). `Contract`, mixed into both, is
written once over them: the cases by dim, the seeded inputs (one cache), and the feed check.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexport.errors import UsageError
from rnnexport.inputs import INITIAL_STATES, Case, Sizes

__all__ = ["Contract", "DTYPES", "DimSpec", "TensorSpec"]

DTYPES = ("float32", "float16", "int64", "int32", "bool")


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


class Contract:
    """The tensor-level behaviour of a spec with ``name``, ``seed``, ``inputs``, ``dims``,
    ``derived``, ``state`` and ``stream_dim`` (see the module docstring)."""

    compact_case_ids = False  # `Case.compact`: ``b3xs17-h0zero`` instead of ``batch=3,seq=17,state=zero``

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

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

    def input_shapes(self, sizes: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
        sizes = self.sizes_of(self.documented if sizes is None else sizes)
        return {t.name: t.resolve(sizes) for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The named dims of every input, by axis."""
        return {t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}

    def case_steps(self, case: Case) -> int:
        """How much work a case is: the product of its dims, a derived dim standing for its root
        (``samples`` for ``frames`` where samples = (frames - 4) * 275)."""
        sizes = self.sizes_of(dict(case.sizes))
        scale = math.prod(max(1, sizes[d.name] // max(1, sizes[d.root])) for d in self.derived)
        return case.steps * scale

    def case_length(self, case: Case) -> int:
        """How far a case reaches along the stream dim (all dims without one)."""
        return case.size(self.stream_dim) if self.stream_dim else case.steps

    # --- cases -------------------------------------------------------------------------------

    def _states(self) -> tuple[str, ...]:
        return INITIAL_STATES if self.state else ("random",)

    def case(self, sizes: dict[str, int], initial_state: str = "random") -> Case:
        """The case of `sizes` (one per dim), spelled as this spec spells its ids."""
        return Case(tuple((d.name, sizes[d.name]) for d in self.dims), initial_state, bool(self.state),
                    compact=self.compact_case_ids)

    def case_of(self, item: Case | Sizes) -> Case | None:
        """`item` as a case of this spec: a case of its dims; sizes alone (``--cases 8x24``, an
        RNN id) one per dim, in the spec's order. None when it does not fit."""
        names = [d.name for d in self.dims]
        if isinstance(item, Case) and not item.compact:
            return self.case(dict(item.sizes), item.initial_state) if [k for k, _ in item.sizes] == names else None
        sizes = [v for _, v in item.sizes] if isinstance(item, Case) else item.sizes
        if len(sizes) != len(names) or item.initial_state not in self._states():
            return None
        return self.case(dict(zip(names, sizes)), item.initial_state)

    def parse_case(self, text: str) -> Case:
        """A case id of this spec (`Case.parse`): of its dims, with a state when it has state
        inputs (``batch=3,seq=17,state=random`` as older manifests spell it without).

        Raises:
            ValueError: not an id of this spec.
        """
        case = Case.parse(text)
        if [k for k, _ in case.sizes] != [d.name for d in self.dims]:
            raise ValueError(f"bad case {text!r}: dims must be {', '.join(d.name for d in self.dims)}")
        if case.initial_state not in self._states() or (self.state and not case.state_in_id):
            raise ValueError(f"bad case {text!r}: " + ("the spec has state inputs: end with state=zero|random"
                                                       if self.state else "the spec has no state inputs"))
        return case

    # --- inputs ------------------------------------------------------------------------------

    def make_inputs(self, case: Case) -> dict[str, np.ndarray]:
        """Graph inputs of `case`: seeded by (seed, sizes, state), C-contiguous, read-only."""
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
            if spec.range is not None and spec.dtype in ("int64", "int32"):
                _check_range(self.name, spec, np.asarray(feeds[spec.name]), sizes)


def _check_range(name: str, spec: TensorSpec, value: np.ndarray, sizes: dict[str, int]) -> None:
    low, high = (sizes[v] if isinstance(v, str) else v for v in spec.range)
    bad = value[(value < low) | (value > high)]
    if bad.size:
        raise UsageError(f"{name}: {spec.name!r} must be in [{low}, {high}], got {bad[:5].tolist()}")
    if spec.reaches_max and value.size and value.max() != high:
        raise UsageError(f"{name}: {spec.name!r} must reach {high} (the spec says reaches_max: one sequence fills "
                         f"the padded length), got at most {value.max()}")
    steps = np.diff(value.astype(np.int64)) if spec.sorted else np.zeros(0)
    if (steps > 0).any() if spec.sorted == "descending" else (steps < 0).any():
        raise UsageError(f"{name}: {spec.name!r} must be sorted {spec.sorted} (the spec says so), got "
                         f"{value[:8].tolist()}")


@functools.lru_cache(maxsize=64)
def _cached_inputs(spec: Contract, case: Case) -> tuple[tuple[str, np.ndarray], ...]:
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
                # One length fills the padded length (pad_packed_sequence without total_length).
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
