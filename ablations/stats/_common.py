"""Conversions and cell selection shared by the statistics modules (private).

The runs table of ``results/<grid>/runs.csv`` holds metrics as numbers, booleans or the
strings ``true``/``false`` (a CSV round trip), and empty cells for missing values; these
helpers turn such columns into float64 arrays with NaN for missing, select one cell of the
grid and iterate over groups, so that every statistic sees the same conventions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

#: Columns that define a cell of a grid unless a caller says otherwise.
DEFAULT_CELL_KEYS: tuple[str, ...] = ("attention", "lr")


def as_float(values) -> np.ndarray:
    """Metric values as float64 (booleans become 0/1, strings 'true'/'false' too; anything
    else that is not a number becomes NaN)."""
    s = pd.Series(values)
    if s.dtype == object:
        lowered = s.astype(str).str.strip().str.lower()
        if lowered.isin(["true", "false", "1", "0", "nan", "none", ""]).all():
            s = lowered.map({"true": 1.0, "1": 1.0, "false": 0.0, "0": 0.0}).astype(float)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def as_bool(values) -> np.ndarray:
    """Event indicators as bool; accepts bools, 0/1 and the strings 'true'/'false' (missing
    counts as False)."""
    return np.nan_to_num(as_float(values), nan=0.0) != 0.0


def finite(values) -> np.ndarray:
    """:func:`as_float` with the NaNs (missing values) dropped."""
    x = as_float(values)
    return x[np.isfinite(x)]


def cell_keys_in(df: pd.DataFrame, cell_keys: Iterable[str]) -> list[str]:
    """The cell keys that exist as columns of ``df`` (an arm may lack one, e.g. lr)."""
    return [k for k in cell_keys if k in df.columns]


def select_cell(df: pd.DataFrame, cell: Mapping | None) -> pd.DataFrame:
    """Rows of ``df`` in one cell, ``cell`` mapping column -> value (NaN or None matches a
    missing value). Raises KeyError naming a key that is not a column."""
    if not cell:
        return df
    mask = np.ones(len(df), dtype=bool)
    for key, value in cell.items():
        if key not in df.columns:
            raise KeyError(f"cell key {key!r} is not a column; columns: {list(df.columns)}")
        col = df[key]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            mask &= col.isna().to_numpy()
        else:
            mask &= (col == value).to_numpy()
    return df[mask]


def iter_groups(df: pd.DataFrame, by: str | Sequence[str]
                ) -> Iterator[tuple[dict, pd.DataFrame]]:
    """``(key, rows)`` per group of ``by`` in sorted order, missing values forming their own
    group; ``key`` maps each ``by`` column to the group's value."""
    by = [by] if isinstance(by, str) else list(by)
    for key, sub in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield dict(zip(by, key, strict=True)), sub
