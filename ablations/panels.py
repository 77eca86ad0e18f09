"""Panel layout for the figures of :mod:`ablations.plots` and :mod:`ablations.sweep_plots`:
facets and small multiples, titles, shared axes, legend handles, bands. Drawing helpers only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["neutral", "require", "Panel", "facet_levels", "make_panels", "panel_titles",
           "grid_shape", "share_axes", "cell_label", "line_handle", "group_handles", "band"]


def neutral(column: str) -> str:
    """The fallback label of a column: its name with underscores as spaces."""
    return str(column).replace("_", " ")


def require(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """ValueError naming the function and the missing columns, before any drawing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: column(s) {', '.join(map(repr, missing))} missing; "
                         f"columns: {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{where}: empty table, nothing to draw")


@dataclass
class Panel:
    facet: object  # the facet level, or None
    focus: str | None  # the variant compared with the baseline, or None (all in one)
    data: pd.DataFrame


def facet_levels(df: pd.DataFrame, facet: str | None) -> list[tuple[object, pd.DataFrame]]:
    """Split ``df`` by ``facet`` (one part per level), or one part when absent."""
    if facet is None or facet not in df.columns or df[facet].isna().all():
        return [(None, df)]
    return [(k, sub) for k, sub in df.groupby(facet, sort=True, dropna=False)]


def make_panels(df: pd.DataFrame, group: str, facet: str | None,
            baseline: str | None) -> list[Panel]:
    """One panel per facet level and, when ``baseline`` is among the groups, per other group
    (each with the baseline's rows as reference); otherwise one panel per facet level."""
    out = []
    for level, sub in facet_levels(df, facet):
        names = sorted(map(str, sub[group].dropna().unique()))
        others = [n for n in names if n != baseline]
        if baseline in names and others:
            for name in others:
                out.append(Panel(level, name, sub[sub[group].astype(str).isin([baseline,
                                                                               name])]))
        else:
            out.append(Panel(level, None, sub))
    return out


def panel_titles(panels: Sequence[Panel], facet: str | None,
                 fallback: str) -> tuple[list[str], str]:
    """Panel titles (the compared group, then the facet level) and a suffix for the figure
    title: a facet with one level is named once there instead of in every panel."""
    levels = {str(p.facet) for p in panels if p.facet is not None}
    single = len(levels) == 1 and all(p.facet is not None for p in panels)
    # one compared group in several panels: the legend names it (see group_handles)
    same_focus = len(panels) > 1 and len({p.focus for p in panels}) == 1
    out = []
    for p in panels:
        parts = [p.focus] if p.focus is not None and not same_focus else []
        if p.facet is not None and not single:
            parts.append(f"{facet}: {p.facet}")
        out.append(", ".join(parts) if parts else fallback)
    return out, (f" ({facet}: {levels.pop()})" if single else "")


def grid_shape(n: int, col_wrap: int) -> tuple[int, int]:
    ncols = max(1, min(n, col_wrap))
    return math.ceil(n / ncols), ncols


def share_axes(axes: np.ndarray, used: int, *, x: bool, y: bool) -> None:
    """Share x and/or y among the first ``used`` axes, hide the rest, and hide tick labels
    only where a visible neighbour repeats them (Figure.subplots(sharex=...) would also hide
    them above an empty slot of the last row)."""
    flat = list(axes.flat)
    ncols = axes.shape[1]
    for i, ax in enumerate(flat):
        if i >= used:
            ax.set_visible(False)
            continue
        if i:
            if x:
                ax.sharex(flat[0])
            if y:
                ax.sharey(flat[0])
        if x and i + ncols < used:  # a visible panel below carries the x ticks
            ax.tick_params(labelbottom=False)
            ax.set_xlabel("")
        if y and i % ncols:
            ax.tick_params(labelleft=False)
            ax.set_ylabel("")


def cell_label(row: Mapping, keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else str(v))
    return ", ".join(parts)


def line_handle(color: str, label: str, **kw):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, label=label, **kw)


def group_handles(colors: Mapping[str, str], baseline: str | None,
                   panels: Sequence[Panel]) -> list:
    """Legend lines of the groups: all of them without small multiples; with them the
    baseline, plus the compared groups when there are at most four (otherwise the panel
    titles, in each line's colour, name them)."""
    shown = {p.focus for p in panels if p.focus}
    names = sorted(colors, key=lambda n: (n != baseline, n))
    if shown:
        names = [n for n in names if n == baseline or (n in shown and len(shown) <= 4)]
    return [line_handle(colors[n], n, lw=2) for n in names]


def band(ax, x, lo, hi, color, *, step: str | None = None, alpha: float = 0.2) -> None:
    ax.fill_between(np.asarray(x, float), np.asarray(lo, float), np.asarray(hi, float),
                    color=color, alpha=alpha, lw=0, step=step)
