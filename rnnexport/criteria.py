"""Acceptance criteria: is a variant (int8, fp16) still fit for what the model is for?

Elementwise tolerances are the wrong question for a quantized model; these are the right ones,
declared per output in a model spec (``[criteria.<output>]``) and recorded in the manifest:

- ``argmax = { axis = -1, min = 0.99 }``: the share of positions whose class along `axis`
  (classes, tokens) is the reference's;
- ``topk = { k = 3, axis = -1, min = 0.99 }``: the share whose reference class is among the k
  highest;
- ``cosine = { min = 0.999 }``: cosine similarity of the whole output with the reference, per
  case; the worst case counts;
- ``p99_abs_error = { max = 0.05 }``: the 99th percentile of ``|a - b|`` per case; the worst counts;
- ``accuracy = { labels = "NAME", axis = -1, max_drop = 0.01 }``: accuracy on the labels of the
  spec's evaluation data, at most `max_drop` below the reference's.

Shares and accuracies pool every case a runtime ran (the seeded sweep and the evaluation data):
one flipped sample of a batch of 1 is one position among thousands, not a failed case. An output
without criteria gets `DEFAULT` (cosine >= 0.99). The reference is eager PyTorch, or the golden
data where it cannot run. Criteria judge the variants' rows only; the fp32 rows (judged by the
tolerances) get the same figures, for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["CLASS_KINDS", "DEFAULT", "KINDS", "Criterion", "CriterionResult", "Tally", "parse_criteria"]

# kind -> (its parameters with defaults, the threshold key, True when the value must be >= it)
KINDS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "argmax": ({"axis": -1}, "min", True),
    "topk": ({"axis": -1, "k": 3}, "min", True),
    "cosine": ({}, "min", True),
    "p99_abs_error": ({}, "max", False),
    "accuracy": ({"axis": -1, "labels": None}, "max_drop", False),
}
CLASS_KINDS = ("argmax", "topk", "accuracy")  # need a class axis: not for state outputs


@dataclass(frozen=True)
class Criterion:
    """One criterion on one output: its kind, threshold and parameters."""

    output: str
    kind: str
    threshold: float
    axis: int = -1
    k: int = 3
    labels: str | None = None

    @property
    def at_least(self) -> bool:
        return KINDS[self.kind][2]

    def describe(self) -> str:
        return f"{self.kind} {'>=' if self.at_least else '<='} {self.threshold:g}"

    def to_json(self) -> dict[str, Any]:
        params, key, _ = KINDS[self.kind]
        return {key: self.threshold, **{p: getattr(self, p) for p in params}}

    def partial(self, actual: np.ndarray, expected: np.ndarray, labels: np.ndarray | None) -> tuple[float, ...] | None:
        """This case's contribution: counts for shares, the value for per-case figures; None
        when the case has nothing to count (no labels for an accuracy)."""
        a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
        if a.shape != b.shape:
            return (np.nan, 1.0)
        if self.kind == "cosine":
            norm = float(np.linalg.norm(a) * np.linalg.norm(b))
            same = float(np.linalg.norm(a - b)) == 0.0
            return (1.0 if same else float(np.vdot(a, b)) / norm if norm else 0.0,)
        if self.kind == "p99_abs_error":
            return (float(np.percentile(np.abs(a - b), 99)) if a.size else 0.0,)
        want = np.argmax(b, axis=self.axis)
        if self.kind == "argmax":
            return (float(np.count_nonzero(np.argmax(a, axis=self.axis) == want)), float(want.size))
        if self.kind == "topk":
            top = np.argsort(-a, axis=self.axis, kind="stable").take(range(min(self.k, a.shape[self.axis])), self.axis)
            hit = (top == np.expand_dims(want, self.axis)).any(axis=self.axis)
            return (float(np.count_nonzero(hit)), float(hit.size))
        if labels is None:
            return None
        return (float(np.count_nonzero(np.argmax(a, axis=self.axis) == labels)),
                float(np.count_nonzero(want == labels)), float(labels.size))

    def value(self, partials: list[tuple[float, ...]]) -> tuple[float, dict[str, float]]:
        """The criterion's value over every case's `partial`, and figures worth showing with it."""
        if self.kind == "cosine":
            return min(p[0] for p in partials), {}
        if self.kind == "p99_abs_error":
            return max(p[0] for p in partials), {}
        totals = np.sum(np.array(partials, dtype=np.float64), axis=0)
        if self.kind == "accuracy":
            mine, reference = totals[0] / totals[2], totals[1] / totals[2]
            return float(reference - mine), {"accuracy": float(mine), "reference_accuracy": float(reference),
                                             "examples": int(totals[2])}
        return float(totals[0] / totals[1]), {"positions": int(totals[1])}

    def passes(self, value: float) -> bool:
        return bool(value >= self.threshold if self.at_least else value <= self.threshold)  # NaN fails


DEFAULT = {"cosine": {"min": 0.99}}


def parse_criteria(data: Any, outputs: tuple[str, ...], state_outputs: tuple[str, ...], where: str,
                   error: type[Exception]) -> tuple[Criterion, ...]:
    """``{output: {kind: {params}}}`` (a spec's ``[criteria]``, a manifest's ``criteria``), checked:
    known outputs and kinds, numeric thresholds, no class criterion on a state output. Outputs
    left out get `DEFAULT`.

    Raises:
        `error`: one line naming the output, the key and what is valid.
    """
    import difflib

    if not isinstance(data, dict):
        raise error(f"{where}: criteria must be a table of output -> {{criterion = {{...}}}}")
    found = []
    for output in outputs:
        table = data.get(output, DEFAULT)
        if not isinstance(table, dict) or not table:
            raise error(f"{where}: criteria.{output} must be a table of criteria ({', '.join(KINDS)})")
        for kind, params in table.items():
            found.append(_criterion(output, kind, params, state_outputs, f"{where}: criteria.{output}", error))
    unknown = [name for name in data if name not in outputs]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(outputs), n=1)
        raise error(f"{where}: criteria for unknown output {unknown[0]!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else "") + f"; outputs are {', '.join(outputs)}")
    return tuple(found)


def _criterion(output: str, kind: str, params: Any, state_outputs: tuple[str, ...], where: str,
               error: type[Exception]) -> Criterion:
    import difflib

    if kind not in KINDS:
        close = difflib.get_close_matches(kind, list(KINDS), n=1)
        raise error(f"{where}: unknown criterion {kind!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; valid: {', '.join(KINDS)}")
    defaults, key, _ = KINDS[kind]
    if not isinstance(params, dict) or key not in params:
        raise error(f"{where}.{kind} must be a table with {key!r} (e.g. {kind} = {{ {key} = 0.99 }})")
    extra = sorted(set(params) - {key, *defaults})
    if extra:
        raise error(f"{where}.{kind}: unknown key {extra[0]!r}; valid: {', '.join([key, *defaults])}")
    threshold = params[key]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold) or (
            threshold < 0 or (key == "min" and threshold > 1)):
        raise error(f"{where}.{kind}.{key}: expected a number " + ("in [0, 1]" if key == "min" else ">= 0")
                    + f", got {threshold!r}")
    if kind in CLASS_KINDS and output in state_outputs:
        raise error(f"{where}.{kind}: {output!r} is a state output (fed back as the next chunk's state): it has "
                    "no classes; judge it by cosine or p99_abs_error")
    values = {**defaults, **{k: v for k, v in params.items() if k != key}}
    if type(values.get("axis", 0)) is not int or (kind == "topk" and not (type(values["k"]) is int and values["k"] >= 1)):
        raise error(f"{where}.{kind}: axis must be an integer" + (" and k an integer >= 1" if kind == "topk" else ""))
    if kind == "accuracy" and not isinstance(values["labels"], str):
        raise error(f"{where}.accuracy: 'labels' must name an array of the evaluation data")
    return Criterion(output, kind, float(threshold), **values)


def check_axes(criteria: tuple[Criterion, ...], ranks: dict[str, int], where: str, error: type[Exception]) -> None:
    """Each class criterion's axis exists in its output (ranks known once the module ran)."""
    for c in criteria:
        if c.kind in CLASS_KINDS and not -ranks[c.output] <= c.axis < ranks[c.output]:
            raise error(f"{where}: criteria.{c.output}.{c.kind}: axis {c.axis} is out of range for {c.output!r}, "
                        f"which has {ranks[c.output]} axes")


def criteria_json(criteria: tuple[Criterion, ...]) -> dict[str, dict[str, Any]]:
    """The manifest's ``criteria``: ``{output: {kind: params}}``."""
    table: dict[str, dict[str, Any]] = {}
    for c in criteria:
        table.setdefault(c.output, {})[c.kind] = c.to_json()
    return table


@dataclass(frozen=True)
class CriterionResult:
    """One criterion of one runtime row over the cases it ran. `judged`: a variant's row (the
    fp32 rows get the figures for comparison, judged by the tolerances instead)."""

    artifact: str
    runtime: str
    output: str
    criterion: str
    value: float
    threshold: float
    at_least: bool
    passed: bool
    judged: bool
    cases: int
    details: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.judged and not self.passed

    def describe(self) -> str:
        """``int8 argmax = 0.962 (needs >= 0.99: 0.028 short)``."""
        need = f"{'>=' if self.at_least else '<='} {self.threshold:g}"
        if self.passed:
            return f"{self.criterion} = {self.value:.4g} ({need})"
        gap = abs(self.value - self.threshold)
        return f"{self.criterion} = {self.value:.4g} (needs {need}: {gap:.3g} {'short' if self.at_least else 'over'})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Tally:
    """Criteria partials per (runtime, output, criterion), added case by case."""

    def __init__(self, artifact: str, criteria: tuple[Criterion, ...]) -> None:
        self.artifact = artifact
        self.criteria = criteria
        self._partials: dict[tuple[str, int], list[tuple[float, ...]]] = {}

    def add(self, runtime: str, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
            labels: dict[str, np.ndarray]) -> None:
        for index, c in enumerate(self.criteria):
            if c.output in outputs and c.output in reference:
                part = c.partial(outputs[c.output], reference[c.output], labels.get(c.labels or ""))
                if part is not None:
                    self._partials.setdefault((runtime, index), []).append(part)

    def results(self, judged: set[str]) -> list[CriterionResult]:
        found = []
        for (runtime, index), partials in self._partials.items():
            c = self.criteria[index]
            value, details = c.value(partials)
            found.append(CriterionResult(self.artifact, runtime, c.output, c.kind, value, c.threshold, c.at_least,
                                         c.passes(value), runtime in judged, len(partials), details))
        return found
