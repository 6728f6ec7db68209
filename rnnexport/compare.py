"""Tolerance semantics and comparison records. Records are data; `failures` judges them.

An element passes when ``|a - b| <= atol + rtol * |b|`` (``b`` = the reference). NaN and ±Inf
must sit at the same positions on both sides (and Inf with the same sign): a NaN on one side
only is a mismatch, never a silent pass (``max(abs(diff))`` of a NaN is NaN, and
``nan > tol`` is False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["Comparison", "Tolerance", "compare_arrays", "compare_shapes", "failures", "judged_by_tolerance", "passed",
           "split_row"]


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance; defaults are float32's: atol 1e-5, rtol 1e-4.

    `per_output` overrides both for named outputs, e.g. ``{"h_n": (1e-6, 1e-5)}``.
    """

    atol: float = 1e-5
    rtol: float = 1e-4
    per_output: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")

    def for_output(self, output: str) -> tuple[float, float]:
        base = output.split("[")[0]
        return self.per_output.get(output, self.per_output.get(base, (self.atol, self.rtol)))

    def to_json(self) -> dict[str, Any]:
        """``{"atol", "rtol", "outputs": {name: {"atol", "rtol"}}}``, as manifests and reports
        record it (`rnnexport.tolerance_policy.manifest_tolerance` reads it back)."""
        return {"atol": self.atol, "rtol": self.rtol,
                "outputs": {name: {"atol": a, "rtol": r} for name, (a, r) in self.per_output.items()}}


@dataclass(frozen=True)
class Comparison:
    """How one output of one runtime compares with its expected value, for one case.

    Attributes:
        artifact: Artifact name.
        runtime: Runtime that produced `actual`.
        case: Case id, e.g. ``b3xs17-h0zero``.
        output: Output name (``output``, ``h_n``) or an invariant's expression.
        against: What was expected: ``torch`` (eager reference), ``golden`` (stored data) or
            ``invariant``.
        expected_shape / actual_shape: Shapes of both sides.
        max_abs_error / max_rel_error: Over positions finite on both sides (None if shapes
            differ). Relative error divides by ``|expected|`` where it is non-zero.
        worst_index: Index of the element furthest outside (or closest to) the tolerance, or of
            the first non-finite mismatch.
        mismatched: Elements outside the tolerance, non-finite mismatches included.
        nonfinite_mismatches: Positions where NaN/Inf differ between the sides.
        total: Elements compared.
        atol / rtol: Tolerance applied.
        mean_abs_error / median_abs_error / p99_abs_error: The distribution of ``|a - b|`` over
            positions finite on both sides (None if shapes differ or none is): a max alone
            cannot tell one bad element from an output that drifted everywhere.
        judged: False for a variant's values (int8, fp16): measured and shown, but judged by
            the acceptance criteria (`rnnexport.criteria`); its shape is still judged.
    """

    artifact: str
    runtime: str
    case: str
    output: str
    against: str
    expected_shape: tuple[int, ...]
    actual_shape: tuple[int, ...]
    max_abs_error: float | None
    max_rel_error: float | None
    worst_index: tuple[int, ...] | None
    mismatched: int
    nonfinite_mismatches: int
    total: int
    atol: float
    rtol: float
    mean_abs_error: float | None = None
    median_abs_error: float | None = None
    p99_abs_error: float | None = None
    judged: bool = True

    @property
    def shape_ok(self) -> bool:
        return self.expected_shape == self.actual_shape

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("expected_shape", "actual_shape", "worst_index"):
            if data[key] is not None:
                data[key] = list(data[key])
        data["passed"] = passed(self)
        return data


def compare_arrays(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    tolerance: Tolerance,
    artifact: str,
    runtime: str,
    case: str,
    output: str,
    against: str,
    judged: bool = True,
) -> Comparison:
    """Compare element-wise with NaN/Inf awareness; returns a record, never raises on mismatch."""
    atol, rtol = tolerance.for_output(output)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    labels = dict(artifact=artifact, runtime=runtime, case=case, output=output, against=against,
                  expected_shape=tuple(expected.shape), actual_shape=tuple(actual.shape),
                  atol=atol, rtol=rtol, judged=judged)
    if actual.shape != expected.shape:
        return Comparison(**labels, max_abs_error=None, max_rel_error=None, worst_index=None,
                          mismatched=max(actual.size, expected.size), nonfinite_mismatches=0,
                          total=expected.size)
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    if finite.all():  # the usual case: nothing to mask, no copies
        finite, nonfinite_bad, nonfinite_count = None, None, 0
    else:
        # Same non-finite pattern: NaN where NaN, +Inf where +Inf, -Inf where -Inf.
        nonfinite_bad = ~finite & ~((np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b)))
        a, b = np.where(finite, a, 0.0), np.where(finite, b, 0.0)  # masked positions count as equal
        nonfinite_count = int(nonfinite_bad.sum())
    diff = np.abs(a - b)
    magnitude = np.abs(b)
    allowed = atol + rtol * magnitude
    if a.size == 0:
        worst = None
    elif nonfinite_count:
        worst = tuple(int(i) for i in np.argwhere(nonfinite_bad)[0])
    else:  # furthest outside the tolerance, relative to it; where none is allowed, any difference
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = diff / allowed if atol > 0 else np.where(allowed > 0, diff / allowed, np.where(diff > 0, np.inf, 0.0))
        worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), a.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / magnitude  # inf or nan where the expected value is 0: left out below
    nonzero = magnitude != 0
    spread = diff.ravel() if finite is None else diff[finite]
    if spread.size:
        median, p99 = np.percentile(spread, [50, 99])
        stats = {"mean_abs_error": float(spread.mean()), "median_abs_error": float(median), "p99_abs_error": float(p99)}
    else:
        stats = {}
    return Comparison(
        **labels,
        **stats,
        max_abs_error=float(diff.max()) if a.size else 0.0,
        max_rel_error=float(rel.max(initial=0.0, where=nonzero)) if a.size else 0.0,
        worst_index=worst,
        mismatched=int(np.count_nonzero(diff > allowed)) + nonfinite_count,
        nonfinite_mismatches=nonfinite_count,
        total=int(a.size),
    )


def compare_shapes(
    actual_shape: tuple[int, ...],
    expected_shape: tuple[int, ...],
    *,
    tolerance: Tolerance,
    artifact: str,
    runtime: str,
    case: str,
    output: str,
    against: str,
) -> Comparison:
    """A record of a shape check alone (no values compared)."""
    atol, rtol = tolerance.for_output(output)
    same = tuple(actual_shape) == tuple(expected_shape)
    return Comparison(
        artifact=artifact, runtime=runtime, case=case, output=output, against=against,
        expected_shape=tuple(expected_shape), actual_shape=tuple(actual_shape),
        max_abs_error=0.0 if same else None, max_rel_error=0.0 if same else None, worst_index=None,
        mismatched=0 if same else 1, nonfinite_mismatches=0, total=0, atol=atol, rtol=rtol,
    )


def split_row(name: str) -> tuple[str, str | None]:
    """A report row's runtime and variant: ``onnxruntime-cpu:int8`` -> (``onnxruntime-cpu``,
    ``int8``); a runtime's own row -> (name, None). Variants' rows are named by
    `rnnexport.runtimes.registry.variant_rows`."""
    runtime, _, variant = name.partition(":")
    return runtime, variant or None


def judged_by_tolerance(runtime: str) -> bool:
    """False for a variant's row (``onnxruntime-cpu:int8``): its values are judged by the
    acceptance criteria (`rnnexport.criteria`), its shapes still here."""
    return split_row(runtime)[1] is None


def passed(comparison: Comparison) -> bool:
    """The verdict on one record: same shape and no element outside the tolerance (a record not
    `judged` by its values: same shape)."""
    return comparison.shape_ok and (comparison.mismatched == 0 or not comparison.judged)


def failures(comparisons: list[Comparison]) -> list[Comparison]:
    """The records that fail, in their original order."""
    return [c for c in comparisons if not passed(c)]
