"""The measuring scripts (``scripts/``) say what they measured: issue 20, item 8."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("before", "after", "words"), [
    (22.49, 16.15, "1.39x faster"),
    (14.2, 16.15, "1.14x slower"),  # measured under load: 0.88x, once printed as "0.88x faster"
    (10.0, 10.02, "as fast"),
    (10.0, 5.0, "2.00x faster"),
    (5.0, 10.0, "2.00x slower"),
], ids=["faster", "slower-under-load", "within-half-a-percent", "twice-as-fast", "twice-as-slow"])
def test_bench_cli_words_a_ratio_below_one_as_slower(before, after, words):
    assert _script("bench_cli").speed_change(before, after) == words


def test_bench_cli_refuses_times_that_are_not_positive():
    with pytest.raises(ValueError, match="times must be > 0 seconds"):
        _script("bench_cli").speed_change(0.0, 1.0)
