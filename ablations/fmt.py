"""Number formatting shared by reports and claim texts (one place, so every table and ledger
row prints a number the same way)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["num", "pval", "pct", "pct_digits", "finite", "write_csv", "dict_table"]


def finite(x: Any) -> bool:
    """True for a finite real number (not None, NaN, inf, or a non-number)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x: Any, digits: int = 3) -> str:
    """A number for prose and tables: "–" when missing; integers as integers; scientific
    notation below 1e-3 and from 1e5; else ``digits`` decimals."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    ax = abs(float(x))
    if ax != 0 and (ax < 1e-3 or ax >= 1e5):
        return f"{float(x):.2e}"
    return f"{float(x):.{digits}f}"


def pval(x: Any) -> str:
    """A p value: two significant digits, scientific below 1e-4, "–" when missing."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def pct(x: float, digits: int = 1) -> str:
    """A relative change as a signed percentage with ``digits`` decimals (default one)."""
    return "–" if not np.isfinite(x) else f"{100 * x:+.{digits}f}%"


def pct_digits(*xs: float, sig: int = 2, least: int = 2) -> int:
    """Decimals for printing the relative changes ``xs`` with :func:`pct` side by side: at
    least ``least``, and enough that the largest |x| shows ``sig`` significant digits (a CI of
    ±0.003% prints as such, not as "−0.00%, +0.00%"). Non-finite and zero values are ignored."""
    ax = [abs(100 * float(x)) for x in xs if finite(x) and x != 0]
    if not ax:
        return least
    return max(least, sig - 1 - math.floor(math.log10(max(ax))))


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """``rows`` as a CSV at ``path`` with these columns, a missing key an empty cell."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


def dict_table(rows: Iterable[dict], columns: Sequence[str]) -> list[str]:
    """The lines of a markdown table of ``rows`` (dicts of printed values) in these columns,
    a missing key an empty cell."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
