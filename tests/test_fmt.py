"""Number formatting shared by reports and claim texts (ablations/fmt.py)."""

import math

import pytest

from ablations.fmt import num, pct, pct_digits, pval


def test_pct_digits_keeps_two_significant_digits_of_the_largest_change():
    # a CI of -0.0031% .. +0.0018% must not print as "-0.00%, +0.00%"
    d = pct_digits(-6.3e-6, -3.07e-5, 1.82e-5)
    assert d == 4
    assert pct(-3.07e-5, d) == "-0.0031%" and pct(1.82e-5, d) == "+0.0018%"


@pytest.mark.parametrize("xs, want", [
    ((-0.0010, 0.0003), 2),          # -0.10%: two decimals already show two digits
    ((0.041,), 2),                   # never fewer than `least`
    ((0.5, 1e-9), 2),                # the largest decides, not the smallest
    ((2.4e-7,), 6),                  # +0.000024%
    ((), 2), ((0.0, math.nan, math.inf), 2),  # nothing finite and non-zero: the default
])
def test_pct_digits_cases(xs, want):
    assert pct_digits(*xs) == want


def test_pct_digits_least_and_sig():
    assert pct_digits(0.2, least=0) == 0      # 20%
    assert pct_digits(2e-4, sig=3) == 4       # +0.0200%


def test_num_pval_pct_missing_values():
    assert num(None) == num(math.nan) == pval(None) == pct(math.nan) == "–"
    assert num(5) == "5" and num(2e-4) == "2.00e-04" and num(0.5) == "0.500"
    assert pval(0.0213) == "0.021" and pval(3e-7) == "3.0e-07"


def test_write_csv_and_dict_table_leave_missing_keys_empty(tmp_path):
    from ablations.fmt import dict_table, write_csv

    rows = [dict(a=1, b="x"), dict(a=2)]
    write_csv(tmp_path / "t.csv", ["a", "b"], rows)
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,x", "2,"]
    assert dict_table(rows, ["a", "b"]) == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 |  |"]
