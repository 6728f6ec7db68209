"""Model spec data -> `ModelSpec`: reading a model spec TOML (or a manifest's dict), checked by
the shipped ``model-spec`` schema (`rnnexport.schema`: keys, types, values) and then for what a
schema cannot state (every dim used is declared and every declared dim used, ranges that name
dims, derived dims, state pairs, weights_key with its file, criteria with their labels); one
`SpecError` line naming the key, the value and what is valid (docs/specs.md, "Model spec").
The data model and its behaviour are `rnnexport.modelspec`'s.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

from rnnexport.dimexpr import DerivedDim, parse_derived
from rnnexport.errors import SpecError
from rnnexport.formats import parse_formats
from rnnexport.variants import parse_variants
from rnnexport.criteria import parse_criteria
from rnnexport.evaldata import parse_evaluation
from rnnexport.contract import DimSpec, TensorSpec
from rnnexport.modelspec import RANDOM_WEIGHTS, ModelSpec
from rnnexport.schema import check

__all__ = ["ORDERS", "is_model_spec_data", "load_model_spec", "model_spec_from_dict", "spec_dict"]

ORDERS = ("descending", "ascending")  # `sorted`: e.g. lengths for pack_padded_sequence(enforce_sorted=True)
_MODULE_RE = re.compile(r"(?P<target>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)")


def is_model_spec_data(data: Any) -> bool:
    """A model spec has a ``module`` key (an RNN spec has ``cell``)."""
    return isinstance(data, dict) and "module" in data


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
    data = {**data, **{key: _named_tables(data[key], key, source) for key in ("inputs", "dims") if key in data}}
    check("model-spec", data, source, SpecError)  # keys, types and values: the shipped schema's
    if "name" not in data:  # a TOML file's stem by default (`load_model_spec`)
        raise SpecError(f"{source}: missing required key 'name'")
    name = data["name"]
    module = _target(data["module"], "module", base, source)
    inputs_fn = None if data.get("inputs_fn") is None else _target(data["inputs_fn"], "inputs_fn", base, source)
    module_args = data.get("module_args", {})
    weights = data.get("weights")
    if weights is not None and weights != RANDOM_WEIGHTS:
        path = Path(weights)
        weights = str((base / path).resolve() if base is not None and not path.is_absolute() else path)
    weights_key = _weights_key(data.get("weights_key"), weights, source)
    seed = data.get("seed", 0)

    dims, expressions = [], {}
    for dim_name, entry in data["dims"].items():
        where = f"{source}: [dims.{dim_name}]"
        if isinstance(entry["size"], str):
            if "sweep" in entry:
                raise SpecError(f"{where}: a dim given by an expression has no 'sweep' (its root's sweep sizes it)")
            expressions[dim_name] = (entry["size"], where)
            continue
        size, values, low = entry["size"], tuple(entry.get("sweep", [])), entry.get("min", 1)
        below = [v for v in (size, *values) if v < low]
        if below:
            raise SpecError(f"{where}: size and sweep must be at least min = {low}, got {below[0]}")
        dims.append(DimSpec(dim_name, size, values, low))
    derived = _derived_dims(expressions, dims)
    declared = {d.name for d in dims} | set(expressions)

    inputs_data = data["inputs"]
    inputs, used = [], set()
    for input_name, entry in inputs_data.items():
        where = f"{source}: [inputs.{input_name}]"
        dtype, shape = entry.get("dtype", "float32"), entry["shape"]
        for d in shape:
            if isinstance(d, str):
                if d not in declared:
                    raise SpecError(f"{where}: dim {d!r} is used in 'shape' but not declared; declared dims: "
                                    f"{', '.join(sorted(declared))} (add a [dims.{d}] table)")
                used.add(d)
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
        if order is not None and (dtype not in ("int64", "int32") or len(shape) != 1):
            raise SpecError(f"{where}: 'sorted' = {order!r}: valid for a 1-D integer input only, as "
                            f"{' | '.join(map(repr, ORDERS))} (e.g. lengths a module packs with enforce_sorted=True)")
        reaches_max = entry.get("reaches_max", False)
        if reaches_max and (value_range is None or len(shape) != 1 or not isinstance(value_range[1], str)):
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
    names = outputs_data["names"]
    clash = sorted(set(names) & {t.name for t in inputs})
    if clash:
        raise SpecError(f"{source}: {clash[0]!r} is both an input and an output; ONNX names must be distinct")
    state_data = outputs_data.get("state", {})
    state = []
    for state_in, state_out in state_data.items():
        if state_in not in inputs_data:
            raise SpecError(f"{source}: [outputs] state: {state_in!r} is not an input; inputs: {', '.join(inputs_data)}")
        if state_out not in names:
            raise SpecError(f"{source}: [outputs] state: {state_out!r} is not an output; outputs: {', '.join(names)}")
        state.append((state_in, state_out))
    stream_dim = outputs_data.get("stream_dim")
    if state and stream_dim is None:
        raise SpecError(f"{source}: [outputs] state needs 'stream_dim', the dim the streaming check chunks")
    if stream_dim is not None and stream_dim not in declared:
        raise SpecError(f"{source}: [outputs] stream_dim {stream_dim!r} is not a declared dim; declared: "
                        f"{', '.join(sorted(declared))}")
    tied = {n for d in derived for n in (d.name, d.root)}
    if stream_dim in tied:
        raise SpecError(f"{source}: [outputs] stream_dim {stream_dim!r} is tied to another dim by an expression; "
                        "chunks along it would not line up")

    tolerance = data.get("tolerance", {})
    _check_tolerance(tolerance, names, source)
    torchscript = data.get("torchscript")
    criteria = data.get("criteria", {})
    parse_criteria(criteria, tuple(names), tuple(o for _, o in state), source, SpecError)
    evaluation = parse_evaluation(data.get("evaluation"), base, source, {t.name for t in inputs} | set(names))
    for c in parse_criteria(criteria, tuple(names), (), source, SpecError):
        if c.labels is not None and (evaluation is None or c.labels not in evaluation["labels"]):
            raise SpecError(f"{source}: criteria.{c.output}.{c.measure}: labels {c.labels!r} must be one of the "
                            "[evaluation] labels (the evaluation data's arrays of true classes)")
    return ModelSpec(name=name, module=module, inputs=tuple(inputs), dims=tuple(dims), outputs=tuple(names),
                     module_args=dict(module_args), weights=weights, weights_key=weights_key, seed=seed,
                     state=tuple(state), stream_dim=stream_dim, tolerance=tolerance, torchscript=torchscript,
                     formats=None if data.get("formats") is None else parse_formats(data["formats"], f"{source}: 'formats'",
                                                                                    SpecError),
                     derived=derived, inputs_fn=inputs_fn,
                     variants=None if data.get("variants") is None else parse_variants(
                         data["variants"], f"{source}: 'variants'", SpecError),
                     criteria=criteria, evaluation=evaluation)


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
    if dtype == "bool":
        raise SpecError(f"{where}: 'range' does not apply to a bool input")
    integer = dtype in ("int64", "int32")
    for v in value_range:
        if isinstance(v, str):
            if not integer:
                raise SpecError(f"{where}: a range end that names a dim ({v!r}) needs an integer dtype")
            if v not in declared:
                raise SpecError(f"{where}: range end {v!r} is not a declared dim; declared: {', '.join(sorted(declared))}")
        elif integer and not isinstance(v, int):
            raise SpecError(f"{where}: range ends must be {'integers or dim names' if integer else 'numbers'}, "
                            f"got {v!r}")
    low, high = value_range
    if not isinstance(low, str) and not isinstance(high, str) and low > high:
        raise SpecError(f"{where}: 'range' {value_range!r} is inverted; expected [low, high] with low <= high")
    if not integer and not all(math.isfinite(v) for v in value_range):
        raise SpecError(f"{where}: 'range' ends must be finite, got {value_range!r}")
    return tuple(value_range)


def _check_tolerance(tolerance: dict[str, Any], names: list[str], source: str) -> None:
    """Per-output tolerances name outputs (their numbers are the schema's)."""
    for name in tolerance.get("outputs", {}):
        if name not in names:
            raise SpecError(f"{source}: [tolerance]: {name!r} is not an output; outputs: {', '.join(names)}")


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


def spec_dict(spec: ModelSpec) -> dict[str, Any]:
    """`ModelSpec.to_dict`: the TOML keys (paths absolute), as stored in the manifest."""
    return spec.to_dict()
