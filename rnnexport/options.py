"""Parsers for the options the CLI and the pytest plugin share: comma lists, cases, tolerances.

Each raises `UsageError` naming the option, what was given and what is valid, so both front
ends report bad values the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rnnexport.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from rnnexport.compare import Tolerance

__all__ = ["comma_list", "nonnegative_float", "parse_cases", "parse_names", "parse_tolerance", "require_int"]


def comma_list(text: str | Sequence[str] | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a sequence is cleaned the same way; None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    return [item.strip() for item in items if item.strip()]


def nonnegative_float(text: str | float, option: str = "value") -> float:
    """A finite number >= 0.

    Raises:
        UsageError: anything else, naming `option`.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{option}: expected a finite number >= 0, got {text!r}")
    return value


def require_int(label: str, value: object, least: int) -> int:
    """`value` when it is an integer (not a bool) of at least `least`.

    Raises:
        UsageError: anything else, naming `label`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{label} must be an integer >= {least}, got {value!r}")
    return value


def parse_cases(cases, option: str = "--cases") -> list | None:
    """Cases from ``"3x17,b1xs1-h0zero,4,2x50-h0zero"`` (one size per dim of a spec, in its
    order: `rnnexport.inputs.Sizes`; an RNN's ``BxS`` and its ids: `Case`) or a sequence of those
    and case objects. Each artifact makes them cases of its own (`case_of`).

    Raises:
        UsageError: text that is no case, or no case at all (``""``, ``[]``): an empty selection
            would check nothing and pass.
    """
    from rnnexport.inputs import Sizes

    if cases is None:
        return None
    items = comma_list(cases) if isinstance(cases, str) else list(cases)
    if not items:
        raise UsageError(f"{option} {cases!r}: no case given; valid: comma-separated BxS or bBxsS-h0zero|random "
                         f"(e.g. 3x17,b1xs1-h0zero; one size per dim, e.g. 4 or 2x50-h0zero), or leave {option} out "
                         "for the default ones")
    parsed = []
    for item in items:
        if not isinstance(item, str):
            parsed.append(item)
            continue
        try:
            parsed.append(Sizes.parse(item.strip()))
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
    return parsed


def parse_tolerance(atol: str | float | None = None, rtol: str | float | None = None) -> Tolerance | None:
    """`Tolerance` with the defaults (atol 1e-5, rtol 1e-4) where one value is None; None when
    both are: each artifact is then judged by the tolerances its manifest stores (a model
    spec's per-output ones; the defaults for RNN specs)."""
    from rnnexport.compare import Tolerance

    if atol is None and rtol is None:
        return None
    default = Tolerance()
    return Tolerance(atol=default.atol if atol is None else nonnegative_float(atol, "--atol"),
                     rtol=default.rtol if rtol is None else nonnegative_float(rtol, "--rtol"))


def parse_names(value, valid, noun: str, where: str, error: type[Exception]) -> tuple[str, ...]:
    """A list (or comma-separated string) of names from `valid` (``formats``, ``variants``):
    known, not repeated, at least one; returned in the order of `valid`.

    Raises:
        `error`: naming `where`, the bad value, the valid names and the closest one.
    """
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise error(f"{where}: {noun}s must be a non-empty list of {', '.join(valid)}; got {value!r}")
    names = [n.strip() for n in names]
    for name in names:
        if name not in valid:
            raise error(f"{where}: unknown {noun} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise error(f"{where}: {noun}s repeat a name: {', '.join(names)}")
    return tuple(v for v in valid if v in names)
