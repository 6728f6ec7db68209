"""The option parsers the CLI and the pytest plugin share."""

from __future__ import annotations

import pytest

from rnnexport.errors import UsageError
from rnnexport.inputs import Case, Sizes
from rnnexport.options import comma_list, nonnegative_float, parse_cases, parse_tolerance


def test_comma_list():
    assert comma_list(" a, b,,c ") == ["a", "b", "c"]
    assert comma_list(["a ", " ", "b"]) == ["a", "b"]
    assert comma_list(None) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("3x17", [Sizes((3, 17))]), ("b1xs1-h0zero, 2x5", [Case.rnn(1, 1, "zero"), Sizes((2, 5))]),
     (["3x17", Case.rnn(2, 2, "zero")], [Sizes((3, 17)), Case.rnn(2, 2, "zero")]), (None, None)],
)
def test_parse_cases(given, expected):
    assert parse_cases(given) == expected


@pytest.mark.parametrize("bad", ["3x", "0x5", "b3xs17-h0maybe", "banana"])
def test_parse_cases_names_the_option(bad):
    with pytest.raises(UsageError, match=r"^--shapes: bad case"):
        parse_cases(bad, "--shapes")


def test_tolerance_defaults_and_checks():
    assert parse_tolerance() is None  # the manifest's tolerances apply
    assert (parse_tolerance(None, "1e-4").atol, parse_tolerance("1e-5", None).rtol) == (1e-5, 1e-4)
    assert parse_tolerance("0.5", None).atol == 0.5
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(UsageError, match="--rtol"):
            parse_tolerance(None, bad)
    assert nonnegative_float(0) == 0.0
