"""The null-control figure: every variant's effect beside the spread a negligible nudge
produces. Drawing only, as :mod:`ablations.plots`; the table arrives computed
(:func:`ablations.stats.null_control`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .panels import line_handle, require
from .style import BASELINE_COLOR, REFERENCE_COLOR, new_figure, themed, variant_color

__all__ = ["plot_null_control"]

#: the colours of the readings by (differs from the baseline, differs from the nudge), as
#: :data:`ablations.stats.NULL_READINGS`: from both, from the baseline only (a nudge would do
#: as much), from the nudge only, from neither
_READING_COLORS = {(True, True): "#1a9850", (True, False): "#de8f05",
                   (False, True): "#762a83", (False, False): "#7f7f7f"}


def _row_color(from_baseline, from_null) -> str:
    """The colour of a row of :func:`ablations.stats.null_control` from its boolean columns;
    the reference colour where the nudge was not compared (the null's own row included)."""
    if not isinstance(from_null, (bool, np.bool_)):  # NaN: not compared with the nudge
        return REFERENCE_COLOR
    return _READING_COLORS[bool(from_baseline), bool(from_null)]


@themed
def plot_null_control(table: pd.DataFrame, *, null: str, baseline: str = "adamw",
                      scale: float = 1.0, unit: str = "", metric_label: str | None = None,
                      title: str | None = None) -> Figure:
    """Left: each variant's mean paired difference to ``baseline`` with its 95% CI, over two
    bands of the null control: its own 95% CI (dark) and its mean ± 1.96 sd of its paired
    differences (light: where a single seed's nudge lands). Right: the sd of each variant's
    paired differences as a multiple of the nudge's (1: it spreads outcomes no more than a
    nudge). Dots are coloured by the reading (:data:`ablations.stats.NULL_READINGS`), read
    from the columns ``differs_from_baseline`` and ``differs_from_null``.

    Args:
        table: output of :func:`ablations.stats.null_control` (the null's row first).
        null: the null control's variant id; baseline: the baseline's.
        scale, unit: how the metric prints (100, " pp" for an accuracy in 0–1).
        metric_label: the metric's name in the axis label.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the table is empty.
    """
    require(table, ["variant", "n", "diff", "ci_low", "ci_high", "null_diff", "null_ci_low",
                    "null_ci_high", "null_sd", "spread_ratio", "differs_from_baseline",
                    "differs_from_null", "reading"], "plot_null_control")
    df = table.reset_index(drop=True)
    y = np.arange(len(df))[::-1]
    height = 0.32 * len(df) + 1.6
    fig, axes = new_figure(1, 2, 10.0, height, gridspec_kw={"width_ratios": [2.4, 1]},
                           sharey=True)
    ax, ax_sd = axes[0]
    ref = df.iloc[0]
    mid, sd = float(ref["null_diff"]) * scale, float(ref["null_sd"]) * scale
    ax.axvspan(mid - 1.96 * sd, mid + 1.96 * sd, color=variant_color(null), alpha=0.14, lw=0,
               label=f"{null}: mean ± 1.96 sd of its paired differences")
    ax.axvspan(float(ref["null_ci_low"]) * scale, float(ref["null_ci_high"]) * scale,
               color=variant_color(null), alpha=0.30, lw=0, label=f"{null}: 95% CI of its mean")
    ax.axvline(0, color=BASELINE_COLOR, lw=0.8)
    colors = [_row_color(b, n) for b, n in zip(df["differs_from_baseline"],
                                               df["differs_from_null"])]
    lo, hi, d = (df[c].to_numpy(float) * scale for c in ("ci_low", "ci_high", "diff"))
    ok = np.isfinite(lo) & np.isfinite(hi)
    ax.hlines(y[ok], lo[ok], hi[ok], colors=np.array(colors)[ok], lw=2)
    ax.scatter(d, y, c=colors, s=30, zorder=3)
    ax.set_yticks(y, [f"{v} (n={int(n)})" for v, n in zip(df["variant"], df["n"])])
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.grid(axis="y", visible=False)
    label = metric_label or "the metric"
    ax.set(xlabel=f"difference in {label} (variant − {baseline}{',' + unit if unit else ''}), "
                  "95% CI", ylabel="")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, ncols=1)
    ratio = df["spread_ratio"].to_numpy(float)
    ax_sd.axvline(1.0, color=variant_color(null), lw=1.2)
    ax_sd.scatter(ratio, y, c=colors, s=30, zorder=3)
    ax_sd.hlines(y, 1.0, np.nan_to_num(ratio, nan=1.0), colors=colors, lw=1, alpha=0.6)
    ax_sd.set(xlabel=f"sd of paired differences / {null}'s", ylabel="")
    ax_sd.grid(axis="y", visible=False)
    readings = dict.fromkeys((r, c) for r, c in zip(df["reading"], colors)
                             if r != "the null control")
    handles = [line_handle(c, r, marker="o", lw=2) for r, c in readings]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    fig.suptitle(title or f"Effects against {baseline} beside the null control {null}")
    return fig
