"""ModelSpec: a user's own module as data (docs/specs.md, "Model spec").

A model spec names a module (``FILE.py:ATTR`` or ``package.module:ATTR``), its arguments and
weights, and its I/O signature: one table per ``forward()`` argument (dtype, shape over named
dims, value range), the named dims with their documented size and sweep, the output names and the
state pairs (input fed from an output) that enable the streaming check. Everything here is data
and torch-free; `rnnexport.usermodel` builds and calls the module.

Cases of a model spec are `ShapeCase`: one size per dim and how the state inputs are filled.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.dimexpr import DerivedDim, parse_derived
from rnnexport.errors import SpecError, UsageError
from rnnexport.formats import parse_formats

__all__ = ["DTYPES", "RANDOM_WEIGHTS", "DimSpec", "ModelSpec", "ShapeCase", "TensorSpec", "did_you_mean",
           "is_model_spec_data", "load_model_spec", "model_spec_from_dict"]

DTYPES = ("float32", "float16", "int64", "int32", "bool")
INITIAL_STATES = ("zero", "random")
RANDOM_WEIGHTS = "random"  # `weights = "random"`: the module's seeded initialization, on purpose
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MODULE_RE = re.compile(r"(?P<target>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)")
_TOP_KEYS = ("name", "module", "module_args", "weights", "weights_key", "seed", "inputs", "dims", "outputs",
             "tolerance", "torchscript", "formats", "inputs_fn")
_INPUT_KEYS = ("dtype", "shape", "range", "sorted", "reaches_max")
ORDERS = ("descending", "ascending")  # `sorted`: e.g. lengths for pack_padded_sequence(enforce_sorted=True)
_DIM_KEYS = ("size", "sweep", "min")
_OUTPUT_KEYS = ("names", "state", "stream_dim")
_TOLERANCE_KEYS = ("atol", "rtol", "outputs")
MAX_DIM = 1 << 20


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


@dataclass(frozen=True, order=True)
class ShapeCase:
    """One input case of a model spec: a size per dim, and how state inputs are filled.

    `state_in_id` is False for a spec without state inputs (there is no state to name: the id
    is ``batch=3,seq=17``). Artifacts exported before wrote ``state=random`` for those too: a
    parsed id keeps its spelling (it keys the golden data), and equals the case spelled either way.
    """

    sizes: tuple[tuple[str, int], ...]
    initial_state: str = "random"
    state_in_id: bool = dataclasses.field(default=True, compare=False)

    @property
    def id(self) -> str:
        """Readable id, e.g. ``batch=3,seq=17,state=zero``, or ``batch=3,seq=17`` without state."""
        return ",".join([*(f"{k}={v}" for k, v in self.sizes),
                         *([f"state={self.initial_state}"] if self.state_in_id else [])])

    @property
    def steps(self) -> int:
        """Product of the dim sizes (how much work the case is)."""
        return math.prod(v for _, v in self.sizes)

    def size(self, dim: str) -> int:
        return dict(self.sizes)[dim]

    @classmethod
    def parse(cls, text: str) -> ShapeCase:
        try:
            parts = dict(part.split("=", 1) for part in text.split(","))
            state = parts.pop("state", None)
            if state not in (*INITIAL_STATES, None) or not parts:
                raise ValueError(state)
            sizes = tuple((k, int(v)) for k, v in parts.items())
            if any(not _IDENT_RE.fullmatch(k) or v < 1 for k, v in sizes):
                raise ValueError(text)
            return cls(sizes, state or "random", state is not None)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad case {text!r}: expected dim=N,...[,state=zero|random] ({exc})") from None


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec:
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

    kind = "model"

    def __hash__(self) -> int:
        return hash((self.name, self.module, _freeze(self.module_args), self.weights, self.weights_key, self.seed,
                     self.inputs, self.dims, self.outputs, self.state, self.stream_dim, self.derived, self.inputs_fn))

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
        """The outputs as a manifest's ``io`` records them (the shape, the dtype and the axes that
        follow a dim), each such axis named after its dim: `case_bytes` sizes them for any case
        before anything runs. The shape gives an axis that follows a dim by the dim's name, as the
        inputs' do, or (manifests written before) by its documented size.

        Raises:
            ValueError: an output without a well-formed entry.
        """
        entries = io.get("outputs") if isinstance(io, dict) else None
        found = {e.get("name"): e for e in entries if isinstance(e, dict)} if isinstance(entries, list) else {}
        declared = {d.name for d in self.dims} | {d.name for d in self.derived}
        tensors = []
        for name in self.output_names:
            entry = found.get(name, {})
            shape, axes = entry.get("shape"), entry.get("dynamic_axes")
            if (not isinstance(shape, list) or not isinstance(axes, dict)
                    or not all(type(d) is int and 0 <= d < 2**31 or isinstance(d, str) and axes.get(str(i)) == d
                               for i, d in enumerate(shape))
                    or entry.get("dtype") not in (*DTYPES, "float64")
                    or not all(d in declared and a.isdigit() and int(a) < len(shape) for a, d in axes.items())):
                raise ValueError(f"io.outputs lacks a valid entry for {name!r} ({{\"shape\": [...], \"dtype\": ..., "
                                 "\"dynamic_axes\": {axis: dim}})")
            tensors.append(TensorSpec(name, entry["dtype"], tuple(axes.get(str(a), d) for a, d in enumerate(shape))))
        return tuple(tensors)

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

    def to_dict(self) -> dict[str, Any]:
        """The TOML keys (paths absolute), as stored in the manifest."""
        data: dict[str, Any] = {"name": self.name, "module": self.module, "module_args": dict(self.module_args),
                                "seed": self.seed}
        if self.weights:
            data["weights"] = self.weights
        if self.weights_key:
            data["weights_key"] = self.weights_key
        # Lists of named tables: JSON writers sort keys, and the order of inputs is forward()'s.
        data["inputs"] = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                           **({"range": list(t.range)} if t.range is not None else {}),
                           **({"sorted": t.sorted} if t.sorted else {}),
                           **({"reaches_max": True} if t.reaches_max else {})} for t in self.inputs]
        data["dims"] = [*({"name": d.name, "size": d.size, "sweep": list(d.sweep), **({"min": d.min} if d.min != 1 else {})}
                          for d in self.dims),
                        *({"name": d.name, "size": d.expr} for d in self.derived)]
        data["outputs"] = {"names": list(self.outputs)}
        if self.state:
            data["outputs"]["state"] = dict(self.state)
            data["outputs"]["stream_dim"] = self.stream_dim
        if self.tolerance:
            data["tolerance"] = json.loads(json.dumps(self.tolerance))
        if self.torchscript:
            data["torchscript"] = self.torchscript
        if self.formats:
            data["formats"] = list(self.formats)
        if self.inputs_fn:
            data["inputs_fn"] = self.inputs_fn
        return data

    def replace(self, **changes: Any) -> ModelSpec:
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


def is_model_spec_data(data: Any) -> bool:
    """A model spec has a ``module`` key (an RNN spec has ``cell``)."""
    return isinstance(data, dict) and "module" in data


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest of `valid` to `name`, or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(keys, valid, where: str) -> None:
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], valid)}; valid keys: "
                        f"{', '.join(valid)}")


def _int(value: Any, where: str, low: int = 1, high: int = MAX_DIM) -> int:
    if type(value) is not int or not low <= value <= high:
        raise SpecError(f"{where}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def model_spec_from_dict(data: dict[str, Any], *, source: str = "model spec", base: Path | None = None,
                         recorded: bool = False) -> ModelSpec:
    """Validate the keys of a model spec (docs/specs.md) and build a `ModelSpec`; relative paths
    (`module` ``FILE.py``, `weights`) resolve against `base` (the TOML's folder). `recorded`: a
    manifest's spec, exported already: the rules for new specs only (an integer input needs a
    range) are not applied, so an artifact made before them still opens.

    Raises:
        SpecError: one line naming the key, the value and what is valid.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a table of model spec keys, got {type(data).__name__}")
    _unknown(data, _TOP_KEYS, source)
    data = {**data, **{key: _named_tables(data[key], key, source) for key in ("inputs", "dims") if key in data}}
    for key in ("name", "module", "inputs", "dims", "outputs"):
        if key not in data:
            raise SpecError(f"{source}: missing required key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SpecError(f"{source}: invalid value for 'name': {name!r}; valid: 1-64 letters, digits, '_', '.', '-'")
    module = _target(data["module"], "module", base, source)
    inputs_fn = None if data.get("inputs_fn") is None else _target(data["inputs_fn"], "inputs_fn", base, source)
    module_args = data.get("module_args", {})
    if not isinstance(module_args, dict):
        raise SpecError(f"{source}: 'module_args' must be a table of keyword arguments, got {module_args!r}")
    weights = data.get("weights")
    if weights is not None and weights != RANDOM_WEIGHTS:
        if not isinstance(weights, str) or not weights:
            raise SpecError(f"{source}: 'weights' must be a file path or \"{RANDOM_WEIGHTS}\" (the module's seeded "
                            f"initialization), got {weights!r}")
        path = Path(weights)
        weights = str((base / path).resolve() if base is not None and not path.is_absolute() else path)
    weights_key = _weights_key(data.get("weights_key"), weights, source)
    seed = data.get("seed", 0)
    if type(seed) is not int or not 0 <= seed < 2**63:
        raise SpecError(f"{source}: invalid value for 'seed': {seed!r}; valid: an integer in [0, 2**63)")

    dims_data = data["dims"]
    if not isinstance(dims_data, dict) or not dims_data:
        raise SpecError(f"{source}: 'dims' must be a table with one [dims.NAME] table per dim name")
    dims, expressions = [], {}
    for dim_name, entry in dims_data.items():
        where = f"{source}: [dims.{dim_name}]"
        if not _IDENT_RE.fullmatch(dim_name):
            raise SpecError(f"{where}: a dim name is an identifier (letters, digits, '_')")
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: expected a table with 'size' and optional 'sweep'")
        _unknown(entry, _DIM_KEYS, where)
        if "size" not in entry:
            raise SpecError(f"{where}: missing 'size' (the documented example size)")
        if isinstance(entry["size"], str):
            if "sweep" in entry:
                raise SpecError(f"{where}: a dim given by an expression has no 'sweep' (its root's sweep sizes it)")
            expressions[dim_name] = (entry["size"], where)
            continue
        size = _int(entry["size"], f"{where} size")
        sweep = entry.get("sweep", [])
        if not isinstance(sweep, list):
            raise SpecError(f"{where} sweep: expected a list of integers >= 1, got {sweep!r}")
        low = _int(entry.get("min", 1), f"{where} min")
        values = tuple(_int(v, f"{where} sweep value") for v in sweep)
        below = [v for v in (size, *values) if v < low]
        if below:
            raise SpecError(f"{where}: size and sweep must be at least min = {low}, got {below[0]}")
        dims.append(DimSpec(dim_name, size, values, low))
    derived = _derived_dims(expressions, dims)
    declared = {d.name for d in dims} | set(expressions)

    inputs_data = data["inputs"]
    if not isinstance(inputs_data, dict) or not inputs_data:
        raise SpecError(f"{source}: 'inputs' must have one [inputs.NAME] table per forward() argument")
    inputs, used = [], set()
    for input_name, entry in inputs_data.items():
        where = f"{source}: [inputs.{input_name}]"
        if not _IDENT_RE.fullmatch(input_name):
            raise SpecError(f"{where}: an input name is an identifier (a forward() argument)")
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: expected a table with 'dtype', 'shape' and optional 'range'")
        _unknown(entry, _INPUT_KEYS, where)
        dtype = entry.get("dtype", "float32")
        if dtype not in DTYPES:
            raise SpecError(f"{where}: invalid dtype {dtype!r}; valid: {' | '.join(DTYPES)}")
        shape = entry.get("shape")
        if not isinstance(shape, list):
            raise SpecError(f"{where}: 'shape' must be a list of integers and dim names, got {shape!r}")
        for d in shape:
            if isinstance(d, str):
                if d not in declared:
                    raise SpecError(f"{where}: dim {d!r} is used in 'shape' but not declared; declared dims: "
                                    f"{', '.join(sorted(declared))} (add a [dims.{d}] table)")
                used.add(d)
            else:
                _int(d, f"{where} shape entry")
        value_range = entry.get("range")
        if value_range is None and dtype in ("int64", "int32") and not recorded:
            # Integer inputs index or slice inside the module (embeddings, lengths): values drawn
            # from a default range fail there with an error that names neither input nor fix.
            ends = [d.name for d in dims if d.name not in shape] or ["seq"]
            raise SpecError(f"{where}: an integer input needs 'range' (inclusive): the values the module accepts; "
                            f"e.g. range = [1, \"{ends[0]}\"] for lengths, range = [0, VOCAB-1] for token ids")
        if value_range is not None:
            value_range = _check_range(value_range, dtype, declared, where)
            used.update(v for v in value_range if isinstance(v, str))
        order = entry.get("sorted")
        if order is not None and (order not in ORDERS or dtype not in ("int64", "int32") or len(shape) != 1):
            raise SpecError(f"{where}: 'sorted' = {order!r}: valid for a 1-D integer input only, as "
                            f"{' | '.join(map(repr, ORDERS))} (e.g. lengths a module packs with enforce_sorted=True)")
        reaches_max = entry.get("reaches_max", False)
        if reaches_max is not False and (reaches_max is not True or value_range is None or len(shape) != 1
                                         or not isinstance(value_range[1], str)):
            raise SpecError(f"{where}: 'reaches_max' = {reaches_max!r}: valid: true, for a 1-D integer input whose "
                            "range ends at a dim (range = [1, \"seq\"]): one sequence fills the padded length")
        inputs.append(TensorSpec(input_name, dtype, tuple(shape), value_range, order, reaches_max))
    in_shapes = {d for t in inputs for d in t.shape if isinstance(d, str)}
    unused = sorted(declared - used)
    if unused:
        raise SpecError(f"{source}: dim {unused[0]!r} is declared but no input shape or range uses it")
    only_ranges = sorted(used - in_shapes)
    if only_ranges:
        raise SpecError(f"{source}: dim {only_ranges[0]!r} ends a range but no input shape has it (its size comes "
                        "from the inputs' shapes)")

    outputs_data = data["outputs"]
    if not isinstance(outputs_data, dict):
        raise SpecError(f"{source}: [outputs] must be a table with 'names'")
    _unknown(outputs_data, _OUTPUT_KEYS, f"{source}: [outputs]")
    names = outputs_data.get("names")
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) and _IDENT_RE.fullmatch(n) for n in names)
            or len(set(names)) != len(names)):
        raise SpecError(f"{source}: [outputs] names must be a non-empty list of distinct identifiers, got {names!r}")
    clash = sorted(set(names) & {t.name for t in inputs})
    if clash:
        raise SpecError(f"{source}: {clash[0]!r} is both an input and an output; ONNX names must be distinct")
    state_data = outputs_data.get("state", {})
    if not isinstance(state_data, dict):
        raise SpecError(f"{source}: [outputs] state must be a table input = \"output\", got {state_data!r}")
    state = []
    for state_in, state_out in state_data.items():
        if state_in not in inputs_data:
            raise SpecError(f"{source}: [outputs] state: {state_in!r} is not an input; inputs: {', '.join(inputs_data)}")
        if not isinstance(state_out, str) or state_out not in names:
            raise SpecError(f"{source}: [outputs] state: {state_out!r} is not an output; outputs: {', '.join(names)}")
        state.append((state_in, state_out))
    stream_dim = outputs_data.get("stream_dim")
    if state and stream_dim is None:
        raise SpecError(f"{source}: [outputs] state needs 'stream_dim', the dim the streaming check chunks")
    if stream_dim is not None and (not isinstance(stream_dim, str) or stream_dim not in declared):
        raise SpecError(f"{source}: [outputs] stream_dim {stream_dim!r} is not a declared dim; declared: "
                        f"{', '.join(sorted(declared))}")
    tied = {n for d in derived for n in (d.name, d.root)}
    if stream_dim in tied:
        raise SpecError(f"{source}: [outputs] stream_dim {stream_dim!r} is tied to another dim by an expression; "
                        "chunks along it would not line up")

    tolerance = data.get("tolerance", {})
    _check_tolerance(tolerance, names, source)
    torchscript = data.get("torchscript")
    if torchscript not in (None, "script", "trace"):
        raise SpecError(f"{source}: invalid value for 'torchscript': {torchscript!r}; valid: 'script' | 'trace'")
    return ModelSpec(name=name, module=module, inputs=tuple(inputs), dims=tuple(dims), outputs=tuple(names),
                     module_args=dict(module_args), weights=weights, weights_key=weights_key, seed=seed,
                     state=tuple(state), stream_dim=stream_dim, tolerance=tolerance, torchscript=torchscript,
                     formats=None if data.get("formats") is None else parse_formats(data["formats"], f"{source}: 'formats'",
                                                                                    SpecError),
                     derived=derived, inputs_fn=inputs_fn)


def _target(value: Any, key: str, base: Path | None, source: str) -> str:
    """``FILE.py:ATTR`` (a relative FILE resolved against `base`) or ``package.module:ATTR``."""
    match = _MODULE_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise SpecError(f"{source}: invalid value for {key!r}: {value!r}; valid: 'FILE.py:ATTR' or "
                        "'package.module:ATTR'")
    target = match["target"]
    if target.endswith(".py") and base is not None and not Path(target).is_absolute():
        return f"{(base / target).resolve()}:{match['attr']}"
    return value


def _derived_dims(expressions: dict[str, tuple[Any, str]], dims: list[DimSpec]) -> tuple[DerivedDim, ...]:
    """The dims given by an expression of another dim, checked against that dim's sizes."""
    free = {d.name: d for d in dims}
    derived = []
    for name, (expr, where) in expressions.items():
        d = parse_derived(name, expr, set(free), where, SpecError)
        root = free[d.root]
        low = min((root.size, *root.sweep))
        if low < d.min_root():
            raise SpecError(f"{where}: {name} = {expr} is {d.value(low)} at {d.root} = {low}; every size of "
                            f"{d.root!r} (size and sweep) must be at least {d.min_root()}")
        derived.append(d)
    return tuple(derived)


def _named_tables(value: Any, key: str, source: str) -> Any:
    """``[[inputs]]`` (a list of tables with ``name``, as manifests store them: order kept) ->
    the ``[inputs.NAME]`` form; a table is returned as it is."""
    if not isinstance(value, list):
        return value
    tables = {}
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or entry["name"] in tables:
            raise SpecError(f"{source}: [[{key}]] entries must be tables with a distinct 'name', got {entry!r:.80}")
        tables[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
    return tables


def _weights_key(key: Any, weights: str | None, source: str) -> str | None:
    """`weights_key` (``"model"``, dotted ``"state.model"``): only with a ``torch.save`` file."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise SpecError(f"{source}: invalid value for 'weights_key': {key!r}; valid: the key of the state dict inside "
                        "a training checkpoint, dotted for nesting (e.g. \"model\" or \"state.model\")")
    if weights is None or weights == RANDOM_WEIGHTS:
        raise SpecError(f"{source}: 'weights_key' = {key!r} needs 'weights' = \"FILE\" (the checkpoint it points "
                        f"into); 'weights' is {'not given' if weights is None else repr(weights)}")
    if weights.endswith(".safetensors"):
        raise SpecError(f"{source}: 'weights_key' = {key!r} applies to a torch.save checkpoint; "
                        f"{Path(weights).name!r} is a .safetensors file, which holds one flat state dict: drop "
                        "weights_key")
    return key


def _check_range(value_range: Any, dtype: str, declared: set[str], where: str) -> tuple[Any, Any]:
    if not isinstance(value_range, list) or len(value_range) != 2:
        raise SpecError(f"{where}: 'range' must be [low, high] (inclusive), got {value_range!r}")
    if dtype == "bool":
        raise SpecError(f"{where}: 'range' does not apply to a bool input")
    integer = dtype in ("int64", "int32")
    for v in value_range:
        if isinstance(v, str):
            if not integer:
                raise SpecError(f"{where}: a range end that names a dim ({v!r}) needs an integer dtype")
            if v not in declared:
                raise SpecError(f"{where}: range end {v!r} is not a declared dim; declared: {', '.join(sorted(declared))}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise SpecError(f"{where}: range ends must be {'integers or dim names' if integer else 'numbers'}, "
                            f"got {v!r}")
    low, high = value_range
    if not isinstance(low, str) and not isinstance(high, str) and low > high:
        raise SpecError(f"{where}: 'range' {value_range!r} is inverted; expected [low, high] with low <= high")
    if not integer and not all(math.isfinite(v) for v in value_range):
        raise SpecError(f"{where}: 'range' ends must be finite, got {value_range!r}")
    return tuple(value_range)


def _check_tolerance(tolerance: Any, names: list[str], source: str) -> None:
    where = f"{source}: [tolerance]"
    if not isinstance(tolerance, dict):
        raise SpecError(f"{where}: expected a table with atol, rtol and outputs")
    _unknown(tolerance, _TOLERANCE_KEYS, where)

    def check(table: dict[str, Any], label: str) -> None:
        _unknown(table, ("atol", "rtol"), label)
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
                raise SpecError(f"{label}: {key} must be a finite number >= 0, got {value!r}")

    check({k: v for k, v in tolerance.items() if k != "outputs"}, where)
    outputs = tolerance.get("outputs", {})
    if not isinstance(outputs, dict):
        raise SpecError(f"{where}: 'outputs' must be a table output = {{ atol = ..., rtol = ... }}")
    for name, table in outputs.items():
        if name not in names:
            raise SpecError(f"{where}: {name!r} is not an output; outputs: {', '.join(names)}")
        if not isinstance(table, dict):
            raise SpecError(f"{where}.outputs.{name}: expected {{ atol = ..., rtol = ... }}, got {table!r}")
        check(table, f"{where}.outputs.{name}")


def load_model_spec(path: str | Path, data: dict[str, Any] | None = None) -> ModelSpec:
    """Load and validate a model spec TOML; the name defaults to the file's stem.

    Raises:
        SpecError: unreadable file, not TOML, or an invalid model spec.
    """
    path = Path(path)
    if data is None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(f"cannot read model spec {str(path)!r}: {exc}") from None
    data = {"name": path.stem, **data}
    return model_spec_from_dict(data, source=f"model spec {str(path)!r}", base=path.resolve().parent)
