from __future__ import annotations

import numpy as np
import pytest

from rnnexport.compare import Tolerance, compare_arrays, failures, passed

LABELS = dict(artifact="a", runtime="r", case="c", output="output", against="torch")


def cmp(actual, expected, tolerance=Tolerance()):
    return compare_arrays(np.asarray(actual, np.float32), np.asarray(expected, np.float32),
                          tolerance=tolerance, **LABELS)


def test_identical_passes():
    c = cmp([1.0, 2.0], [1.0, 2.0])
    assert passed(c) and c.max_abs_error == 0.0 and c.mismatched == 0


def test_boundary_is_atol_plus_rtol_times_reference():
    tol = Tolerance(atol=1e-3, rtol=1e-2)
    # |a-b| <= atol + rtol*|b|: with b = 10, the bound is 0.101.
    assert passed(cmp([10.1], [10.0], tol))
    c = cmp([10.2], [10.0], tol)
    assert not passed(c) and c.mismatched == 1 and c.worst_index == (0,)
    # Asymmetric: the reference is b.
    assert not passed(cmp([10.0], [10.2], Tolerance(atol=0.0, rtol=0.0099)))


def test_worst_index_and_errors():
    expected = np.zeros((2, 3), np.float32)
    actual = expected.copy()
    actual[1, 2] = 0.5
    c = cmp(actual, expected)
    assert c.worst_index == (1, 2)
    assert c.max_abs_error == pytest.approx(0.5)
    assert c.to_json()["worst_index"] == [1, 2] and c.to_json()["passed"] is False


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        ([np.nan, 1.0], [np.nan, 1.0], True),
        ([np.nan, 1.0], [0.0, 1.0], False),
        ([0.0, 1.0], [np.nan, 1.0], False),
        ([np.inf], [np.inf], True),
        ([np.inf], [-np.inf], False),
        ([np.inf], [1e30], False),
    ],
    ids=["nan-both", "nan-actual-only", "nan-expected-only", "inf-both", "inf-sign", "inf-vs-finite"],
)
def test_nonfinite_positions_must_match(actual, expected, ok):
    c = cmp(actual, expected)
    assert passed(c) is ok
    if not ok:
        assert c.nonfinite_mismatches == 1 and c.worst_index == (0,)


def test_shape_mismatch_fails_without_values():
    c = cmp(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not passed(c) and c.max_abs_error is None and not c.shape_ok
    assert failures([c, cmp([1.0], [1.0])]) == [c]


def test_per_output_override():
    tol = Tolerance(per_output={"h_n": (1.0, 0.0)})
    loose = compare_arrays(np.ones(1, np.float32), np.zeros(1, np.float32), tolerance=tol, **{**LABELS, "output": "h_n"})
    strict = cmp(np.ones(1), np.zeros(1), tol)
    assert passed(loose) and not passed(strict)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_tolerance(bad):
    with pytest.raises(ValueError, match="atol"):
        Tolerance(atol=bad)


def test_error_statistics_describe_the_spread_over_finite_positions():
    expected = np.zeros(101, np.float32)
    actual = np.arange(101, dtype=np.float32) * 1e-7  # |a - b| = 0, 1e-7, ..., 1e-5
    actual[50], expected[50] = np.nan, np.nan  # same place on both sides: not part of the spread
    record = cmp(actual, expected)
    finite = np.delete(np.arange(101) * 1e-7, 50)
    assert record.mean_abs_error == pytest.approx(finite.mean(), rel=1e-5)
    assert record.median_abs_error == pytest.approx(np.median(finite), rel=1e-5)
    assert record.p99_abs_error == pytest.approx(np.percentile(finite, 99), rel=1e-5)
    assert record.max_abs_error == pytest.approx(1e-5, rel=1e-5)
    one_bad = cmp(np.r_[np.zeros(99, np.float32), 1.0], np.zeros(100, np.float32))
    assert one_bad.max_abs_error == 1.0 and one_bad.median_abs_error == 0.0 and one_bad.p99_abs_error < 0.02
    assert {"mean_abs_error", "median_abs_error", "p99_abs_error"} <= set(record.to_json())
    assert cmp([1.0, 2.0], [1.0]).mean_abs_error is None  # shapes differ: no spread
