"""The JSON Schemas rnnexport ships (``rnnexport/schemas/*.schema.json``: RNN configurations,
model specs, manifests; `rnnexport schema KIND` prints one) and the one check every reader runs
against them (`check`): the structure is declared there, once, and the first error becomes one
line naming the key, the value found and what is valid, with did-you-mean for an unknown key.

What a schema cannot say (a dim used but not declared, ``proj_size`` for an LSTM only, a file
listed in ``files``) stays with the loader that knows it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from rnnexport.errors import did_you_mean

__all__ = ["KINDS", "check", "prepare_validators", "schema_text"]

KINDS = ("rnn-config", "model-spec", "manifest")
_PYTHON_TYPES = {"integer": "int", "boolean": "bool", "string": "str", "number": "float", "object": "table",
                 "array": "list", "null": "null"}


def schema_text(kind: str) -> str:
    """The schema `kind` (one of `KINDS`) as shipped."""
    return resources.files("rnnexport.schemas").joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema  # ~0.2 s: only once a spec or manifest is read

    return jsonschema.Draft202012Validator(json.loads(schema_text(kind)))


def prepare_validators() -> None:
    """Import jsonschema and build every kind's validator now, not at the first check: a
    process that forks a child per spec it reads (the compile server) does it once for all."""
    for kind in KINDS:
        _validator(kind)


def check(kind: str, data: Any, where: str, error: type[Exception]) -> None:
    """Check `data` against the schema `kind`.

    Raises:
        error: the first problem as one line: an unknown key first, then a missing one, then
            the first key (in the data's order) whose type or value is wrong.
    """
    errors = list(_validator(kind).iter_errors(data))
    if errors:
        raise error(f"{where}: {_describe(min(errors, key=lambda e: _rank(e, data)))}")


def _rank(error, data: Any) -> tuple:
    """The top level's unknown and missing keys first, then by the data's key order, the
    shallower first, an unknown key before a missing one before a wrong value."""
    kind = {"additionalProperties": 0, "required": 1}.get(error.validator, 2)
    path = list(error.absolute_path)
    keys = list(data) if isinstance(data, dict) else []
    first = -1 if not path else keys.index(path[0]) if path[0] in keys else len(keys)
    return first, len(path), kind


def _key(path: list) -> str:
    return ".".join(str(p) for p in path)


def _describe(error) -> str:
    path, value, schema = list(error.absolute_path), error.instance, error.schema
    inside = f" in {_key(path)!r}" if path else ""
    if error.validator == "additionalProperties":
        valid = list(schema.get("properties", {}))
        key = sorted(k for k in value if k not in valid)[0]
        return f"unknown key {key!r}{inside}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
    if error.validator == "required":
        key = next(k for k in error.validator_value if k not in value)
        return f"missing required key {key!r}{inside}"
    if "propertyNames" in error.absolute_schema_path:  # a key of a table, checked as a value
        return f"invalid key {value!r:.80}{inside}; valid: {_valid(schema)}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        found = "null" if value is None else f"{type(value).__name__} {value!r:.80}"
        return f"key {_key(path)!r}: expected {' or '.join(_PYTHON_TYPES[t] for t in wanted)}, got {found}"
    hint = did_you_mean(value, [v for v in schema["enum"] if isinstance(v, str)]) \
        if "enum" in schema and isinstance(value, str) else ""
    return f"invalid value for {_key(path)!r}: {value!r:.80}{hint}; valid: {_valid(schema)}"


def _valid(schema: dict[str, Any]) -> str:
    """What a property's schema admits, in words."""
    if "description" in schema:
        return schema["description"]
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    kind = "an integer" if schema.get("type") == "integer" else "a number"
    low, high = schema.get("minimum"), schema.get("maximum", schema.get("exclusiveMaximum"))
    close = ")" if "exclusiveMaximum" in schema else "]"
    if low is not None and high is not None:
        return f"{kind} in [{low}, {high}{close}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} {'<' if close == ')' else '<='} {high}"
    return json.dumps({k: v for k, v in schema.items() if k != "description"})[:120]
