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

from rnnexport.errors import did_you_mean

__all__ = ["DEFAULT", "KINDS", "MEASURES", "Criterion", "CriterionResult", "Measure", "Tally", "check_axes",
           "criteria_json", "parse_criteria"]

def _classes(c: Criterion, values: np.ndarray) -> np.ndarray:
    return np.argmax(values, axis=c.axis)


def _cosine(c: Criterion, a: np.ndarray, b: np.ndarray, labels) -> tuple[float, ...]:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return (1.0 if float(np.linalg.norm(a - b)) == 0.0 else float(np.vdot(a, b)) / norm if norm else 0.0,)


def _p99(c: Criterion, a: np.ndarray, b: np.ndarray, labels) -> tuple[float, ...]:
    return (float(np.percentile(np.abs(a - b), 99)) if a.size else 0.0,)


def _argmax(c: Criterion, a: np.ndarray, b: np.ndarray, labels) -> tuple[float, ...]:
    want = _classes(c, b)
    return float(np.count_nonzero(_classes(c, a) == want)), float(want.size)


def _topk(c: Criterion, a: np.ndarray, b: np.ndarray, labels) -> tuple[float, ...]:
    top = np.argsort(-a, axis=c.axis, kind="stable").take(range(min(c.k, a.shape[c.axis])), c.axis)
    hit = (top == np.expand_dims(_classes(c, b), c.axis)).any(axis=c.axis)
    return float(np.count_nonzero(hit)), float(hit.size)


def _accuracy(c: Criterion, a: np.ndarray, b: np.ndarray, labels) -> tuple[float, ...] | None:
    if labels is None:
        return None
    return (float(np.count_nonzero(_classes(c, a) == labels)), float(np.count_nonzero(_classes(c, b) == labels)),
            float(labels.size))


def _worst_low(parts: list[tuple[float, ...]]) -> tuple[float, dict[str, Any]]:
    return min(p[0] for p in parts), {}


def _worst_high(parts: list[tuple[float, ...]]) -> tuple[float, dict[str, Any]]:
    return max(p[0] for p in parts), {}


def _share(parts: list[tuple[float, ...]]) -> tuple[float, dict[str, Any]]:
    hits, total = np.sum(np.array(parts, dtype=np.float64), axis=0)
    return float(hits / total), {"positions": int(total)}


def _drop(parts: list[tuple[float, ...]]) -> tuple[float, dict[str, Any]]:
    mine, reference, total = np.sum(np.array(parts, dtype=np.float64), axis=0)
    return float((reference - mine) / total), {"accuracy": float(mine / total),
                                               "reference_accuracy": float(reference / total), "examples": int(total)}


@dataclass(frozen=True)
class Measure:
    """One kind of criterion: its parameters with defaults, its threshold key (``min`` when the
    value must be at least it), what one case contributes (`partial`: None when nothing) and
    how the cases' contributions make the value (`combine`, with figures worth showing)."""

    defaults: dict[str, Any]
    key: str
    partial: Any
    combine: Any
    width: int  # numbers one case contributes
    classes: bool = False  # needs a class axis: not for state outputs
    label: str = ""  # what reports call its value, when not the criterion's name

    @property
    def at_least(self) -> bool:
        return self.key == "min"


MEASURES: dict[str, Measure] = {
    "argmax": Measure({"axis": -1}, "min", _argmax, _share, 2, classes=True),
    "topk": Measure({"axis": -1, "k": 3}, "min", _topk, _share, 2, classes=True),
    "cosine": Measure({}, "min", _cosine, _worst_low, 1),
    "p99_abs_error": Measure({}, "max", _p99, _worst_high, 1),
    "accuracy": Measure({"axis": -1, "labels": None}, "max_drop", _accuracy, _drop, 3, classes=True,
                        label="accuracy drop"),
}
KINDS = MEASURES  # the criterion names, in the order the docs list them


@dataclass(frozen=True)
class Criterion:
    """One criterion on one output: its measure (`MEASURES`), threshold and parameters."""

    output: str
    measure: str
    threshold: float
    axis: int = -1
    k: int = 3
    labels: str | None = None

    @property
    def at_least(self) -> bool:
        return MEASURES[self.measure].at_least

    def describe(self) -> str:
        return f"{self.measure} {'>=' if self.at_least else '<='} {self.threshold:g}"

    def to_json(self) -> dict[str, Any]:
        m = MEASURES[self.measure]
        return {m.key: self.threshold, **{p: getattr(self, p) for p in m.defaults}}

    def partial(self, actual: np.ndarray, expected: np.ndarray, labels: np.ndarray | None) -> tuple[float, ...] | None:
        """This case's contribution (counts for shares, the value for per-case figures); None
        when the case has nothing to count (no labels for an accuracy)."""
        a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
        if a.shape != b.shape:  # never a pass
            return (np.nan,) * MEASURES[self.measure].width
        return MEASURES[self.measure].partial(self, a, b, labels)

    def value(self, partials: list[tuple[float, ...]]) -> tuple[float, dict[str, Any]]:
        """The criterion's value over every case's `partial`, and figures worth showing with it."""
        return MEASURES[self.measure].combine(partials)

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
        raise error(f"{where}: criteria for unknown output {unknown[0]!r}{did_you_mean(unknown[0], outputs)}; "
                    f"outputs are {', '.join(outputs)}")
    return tuple(found)


def _criterion(output: str, kind: str, params: Any, state_outputs: tuple[str, ...], where: str,
               error: type[Exception]) -> Criterion:
    if kind not in MEASURES:
        raise error(f"{where}: unknown criterion {kind!r}{did_you_mean(kind, MEASURES)}; valid: {', '.join(MEASURES)}")
    defaults, key = MEASURES[kind].defaults, MEASURES[kind].key
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
    if MEASURES[kind].classes and output in state_outputs:
        raise error(f"{where}.{kind}: {output!r} is a state output (fed back as the next chunk's state): it has "
                    "no classes; judge it by cosine or p99_abs_error")
    values = {**defaults, **{k: v for k, v in params.items() if k != key}}
    if type(values.get("axis", 0)) is not int or not (type(values.get("k", 1)) is int and values.get("k", 1) >= 1):
        raise error(f"{where}.{kind}: axis must be an integer, k an integer >= 1")
    if "labels" in values and not isinstance(values["labels"], str):
        raise error(f"{where}.{kind}: 'labels' must name an array of the evaluation data")
    return Criterion(output, kind, float(threshold), **values)


def check_axes(criteria: tuple[Criterion, ...], ranks: dict[str, int], where: str, error: type[Exception]) -> None:
    """Each class criterion's axis exists in its output (ranks known once the module ran)."""
    for c in criteria:
        if MEASURES[c.measure].classes and not -ranks[c.output] <= c.axis < ranks[c.output]:
            raise error(f"{where}: criteria.{c.output}.{c.measure}: axis {c.axis} is out of range for {c.output!r}, "
                        f"which has {ranks[c.output]} axes")


def criteria_json(criteria: tuple[Criterion, ...]) -> dict[str, dict[str, Any]]:
    """The manifest's ``criteria``: ``{output: {kind: params}}``."""
    table: dict[str, dict[str, Any]] = {}
    for c in criteria:
        table.setdefault(c.output, {})[c.measure] = c.to_json()
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
            found.append(CriterionResult(self.artifact, runtime, c.output, c.measure, value, c.threshold, c.at_least,
                                         c.passes(value), runtime in judged, len(partials), details))
        return found
