"""Dims given by an expression of another dim: ``[dims.samples] size = "(frames - 4) * 275"``.

Some modules take inputs whose sizes are tied: a vocoder's waveform has ``(frames - k + 1) * hop``
samples for ``frames`` spectrogram frames. Such a dim is not swept on its own; each case computes
it from its root dim. The expression is integer arithmetic (``+ - *``, parentheses) on integer
constants and exactly one other dim, which is what torch.export can keep dynamic (a derived
``Dim``: ``torch.export.Dim`` supports the same operators).
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any

__all__ = ["DerivedDim", "parse_derived"]

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
MAX_ROOT = 1 << 20


@dataclass(frozen=True)
class DerivedDim:
    """A dim computed from its `root` dim by `expr` (the text as written)."""

    name: str
    expr: str
    root: str

    def value(self, root_value: Any) -> Any:
        """The expression at `root_value`: an int, or a torch.export ``Dim`` (a derived Dim)."""
        return _evaluate(ast.parse(self.expr, mode="eval").body, {self.root: root_value})

    def min_root(self) -> int:
        """The smallest root size for which this dim is at least 1 (its expression is linear)."""
        for root in range(1, MAX_ROOT):
            if self.value(root) >= 1:
                return root
        raise ValueError(f"{self.name} = {self.expr} is below 1 for every {self.root} up to {MAX_ROOT}")


def parse_derived(name: str, expr: str, declared: set[str], where: str, error: type[Exception]) -> DerivedDim:
    """Check `expr` (integer ``+ - *`` on constants and one dim of `declared`).

    Raises:
        `error`: naming `where`, the expression and what is valid.
    """
    valid = (f"valid: integer arithmetic (+, -, *, parentheses) on one other declared dim, "
             f"e.g. \"(frames - 4) * 275\"; declared: {', '.join(sorted(declared))}")
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise error(f"{where}: size {expr!r} is not an expression; {valid}") from None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif not isinstance(node, (ast.BinOp, ast.Load, *_OPS)) and not (
                isinstance(node, ast.Constant) and type(node.value) is int):
            raise error(f"{where}: size {expr!r}: {type(node).__name__} is not allowed; {valid}")
    unknown = sorted(names - declared)
    if unknown or len(names) != 1:
        raise error(f"{where}: size {expr!r} " + (f"uses {unknown[0]!r}, which is not a declared dim with a size"
                                                  if unknown else "must use exactly one other dim") + f"; {valid}")
    derived = DerivedDim(name, expr, names.pop())
    if derived.value(2) <= derived.value(1):
        raise error(f"{where}: size {expr!r} must grow with {derived.root!r}; {valid}")
    try:
        derived.min_root()
    except ValueError as exc:
        raise error(f"{where}: {exc}") from None
    return derived


def _evaluate(node: ast.AST, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    assert isinstance(node, ast.BinOp)  # parse_derived admitted nothing else
    return _OPS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
