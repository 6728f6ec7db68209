"""Parsers for the options the CLI and the pytest plugin share: comma lists, cases, tolerances.

Each raises `UsageError` naming the option, what was given and what is valid, so both front
ends report bad values the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rnnexport.errors import UsageError

if TYPE_CHECKING:
    from rnnexport.compare import Tolerance
    from rnnexport.inputs import Case

__all__ = ["comma_list", "nonnegative_float", "parse_cases", "parse_tolerance", "require_int"]


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


def parse_cases(cases: str | Sequence[str | Case] | None, option: str = "--cases") -> list[Case] | None:
    """Cases from ``"3x17,b1xs1-h0zero"`` or a sequence of ids and `Case` objects.

    Raises:
        UsageError: an id that is not ``BxS`` or ``bBxsS-h0zero|random``, or no case at all
            (``""``, ``[]``): an empty selection would check nothing and pass.
    """
    from rnnexport.inputs import Case

    if cases is None:
        return None
    items = comma_list(cases) if isinstance(cases, str) else list(cases)
    if not items:
        raise UsageError(f"{option} {cases!r}: no case given; valid: comma-separated BxS or bBxsS-h0zero|random "
                         f"(e.g. 3x17,b1xs1-h0zero), or leave {option} out for the default ones")
    parsed = []
    for item in items:
        if isinstance(item, Case):
            parsed.append(item)
            continue
        try:
            parsed.append(Case.parse(str(item).strip()))
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
