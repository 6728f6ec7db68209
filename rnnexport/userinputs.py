"""A model spec's own input maker: ``inputs_fn = "FILE.py:make_inputs"``.

Seeded random inputs cannot meet every contract (a vocoder's conditioning, a tokenizer's ids, a
mask that must match lengths). The spec may name a function of the user's that makes the inputs
of a case: ``make_inputs(sizes, seed) -> {input name: array or tensor}``, with `sizes` one size per
dim (derived dims included) and the spec's `seed`. It must be deterministic: the export calls it
twice on the documented case and refuses it otherwise. Its output is checked like any feed
(names, dtypes, shapes over the dims, ranges); state inputs of a zero-state case are zeroed by
rnnexport.

It is the user's code, so it is trusted as the module is: the manifest records it
(``inputs_source``: file relative to the artifact, sha256), and a later validation imports it only
while recorded and unchanged, in the eager reference's child process (`rnnexport.runtimes.isolated`).
Otherwise the stored golden cases (their inputs are in ``golden.npz``) are what runs.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnnexport.errors import SpecError, UsageError
from rnnexport.inputs import Case

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["case_inputs", "check_deterministic", "inputs_source", "inputs_target", "load_inputs_fn", "recorded_inputs"]


def inputs_target(spec: ModelSpec) -> ModelSpec:
    """`spec` with ``inputs_fn`` as its module: the import and the record work as for the module."""
    return dataclasses.replace(spec, module=spec.inputs_fn)


@functools.lru_cache(maxsize=8)
def load_inputs_fn(spec: ModelSpec, sha256: str | None = None):
    """Import the spec's ``inputs_fn`` (checked against `sha256` when given)."""
    from rnnexport.userimport import import_module

    fn = import_module(inputs_target(spec), sha256)
    if isinstance(fn, type):
        raise SpecError(f"{spec.name}: inputs_fn {spec.inputs_fn!r} is a class; it must be a function "
                        "make_inputs(sizes, seed) -> {input name: array}")
    return fn


def case_inputs(spec: ModelSpec, case: Case, fn=None) -> dict[str, np.ndarray]:
    """The inputs of `case`: from ``inputs_fn`` (`fn`, else imported here) when the spec names
    one, else the seeded ones (`ModelSpec.make_inputs`).

    Raises:
        SpecError: the function fails, or returns anything but the spec's inputs.
    """
    if case.data:
        from rnnexport.evaldata import evaluation_data

        return dict(evaluation_data(spec)[1])
    if spec.inputs_fn is None:
        return spec.make_inputs(case)
    fn = fn or load_inputs_fn(spec)
    sizes = spec.sizes_of(dict(case.sizes))
    where = f"{spec.name}: inputs_fn {spec.inputs_fn.rsplit('/', 1)[-1]}({sizes}, seed={spec.seed})"
    try:
        made = fn(dict(sizes), spec.seed)
    except Exception as exc:
        raise SpecError(f"{where} failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}") from None
    if not isinstance(made, dict):
        raise SpecError(f"{where} returned a {type(made).__name__}; expected a dict of input name -> array")
    feeds = {}
    for name, value in made.items():
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if name in spec.state_inputs and case.initial_state == "zero":
            value = np.zeros_like(value)
        feeds[name] = np.ascontiguousarray(value)
    try:
        spec.check_feeds(feeds)
    except UsageError as exc:
        raise SpecError(f"{where} returned inputs that do not fit the spec: {exc}") from None
    return feeds


def check_deterministic(spec: ModelSpec) -> None:
    """Call ``inputs_fn`` twice on the documented case: golden data and every runtime must get the
    same inputs.

    Raises:
        SpecError: the two calls differ.
    """
    if spec.inputs_fn is None:
        return
    case = spec.case(spec.documented, "random")
    first, second = case_inputs(spec, case), case_inputs(spec, case)
    changed = [n for n in first if first[n].tobytes() != second[n].tobytes()]
    if changed:
        raise SpecError(f"{spec.name}: inputs_fn {spec.inputs_fn!r} gave different {changed[0]!r} on two calls with "
                        "the same sizes and seed; make it deterministic (seed a generator from `seed` and the sizes)")


def inputs_source(spec: ModelSpec, artifact_folder: Path) -> dict[str, Any]:
    """The manifest's ``inputs_source``, recorded like ``module_source``."""
    from rnnexport.userimport import module_source

    return module_source(inputs_target(spec), artifact_folder, rebuildable=True)


def recorded_inputs(spec: ModelSpec, source: Any, folder: Path) -> tuple[ModelSpec | None, str | None]:
    """The spec whose ``inputs_fn`` a validation may import (resolved as recorded at export), or
    None and why not (`rnnexport.userimport.recorded_module`'s rules)."""
    from rnnexport.userimport import recorded_module

    resolved, reason = recorded_module(inputs_target(spec), source, folder)
    if resolved is None:
        return None, f"inputs_fn: {reason}"
    return dataclasses.replace(spec, inputs_fn=resolved.module), None
