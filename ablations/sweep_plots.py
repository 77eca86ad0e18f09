"""Figures of a metric against a swept setting: the quantum weight λ (claim C3), the
learning rate (the per-optimizer tuning on validation data), the task's difficulty level
(the difficulty selection) and the measured size of the term (the dose-response). Drawing
only, as :mod:`ablations.plots`; the tables arrive computed
(:func:`ablations.stats.lambda_sweep`, :func:`ablations.stats.lr_selection`,
:func:`ablations.stats.difficulty_selection`, :func:`ablations.stats.dose_points`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .panels import Panel, facet_levels, grid_shape, line_handle, panel_titles, require, share_axes
from .style import level_colors, new_figure, themed, variant_color

__all__ = ["plot_lambda_sweep", "plot_lr_sensitivity", "plot_difficulty", "plot_dose_response"]


@themed
def plot_lambda_sweep(sweep: pd.DataFrame, *, metric_label: str | None = None,
                      facet: str | None = "attention", title: str | None = None) -> Figure:
    """Metric against the quantum weight λ with CIs, one line per perturbation family.

    Args:
        sweep: output of :func:`ablations.stats.lambda_sweep` (family, lam, mean, ci_low,
            ci_high, optionally the facet column).
        metric_label: y-axis label (default: "mean").
        facet: column giving one panel per level; ignored when absent.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the sweep is empty.
    """
    import seaborn as sns

    require(sweep, ["family", "lam", "mean", "ci_low", "ci_high"], "plot_lambda_sweep")
    ylabel = metric_label or "mean"
    families = sorted(map(str, sweep["family"].dropna().unique()))
    colors = {f: variant_color(f) for f in families}
    panels = [Panel(level, None, sub) for level, sub in facet_levels(sweep, facet)]
    titles, where = panel_titles(panels, facet, "")
    lam = sweep["lam"].to_numpy(float)
    positive = lam[lam > 0]
    wide = positive.size > 0 and positive.max() / positive.min() > 50
    nrows, ncols = grid_shape(len(panels), 3)
    fig, axes = new_figure(nrows, ncols, max(5.6, 4.6 * ncols), 3.4 * nrows + 0.5)
    for ax, p, head in zip(axes.flat, panels, titles, strict=False):
        sub = p.data
        offsets = np.linspace(-0.01, 0.01, len(families)) if len(families) > 1 else [0.0]
        for off, fam in zip(offsets, families, strict=True):
            g = sub[sub["family"].astype(str) == fam].sort_values("lam")
            if g.empty:
                continue
            xs = g["lam"].to_numpy(float)
            # A small horizontal dodge keeps overlapping error bars readable.
            xs = xs * (1 + off) if wide else xs + off * (np.nanmax(lam) or 1.0)
            m = g["mean"].to_numpy(float)
            err = np.vstack([m - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - m])
            ax.errorbar(xs, m, yerr=np.nan_to_num(err, nan=0.0), fmt="none", ecolor=colors[fam],
                        elinewidth=1.2, capsize=3)
            sns.lineplot(x=xs, y=m, color=colors[fam], marker="o", markersize=5, lw=1.5,
                         estimator=None, sort=False, label=fam, ax=ax)
        if wide:
            ax.set_xscale("symlog", linthresh=positive.min())
        ax.set(xlabel="quantum weight λ (λ = 0: AdamW)", ylabel=ylabel)
        ax.set_title(head)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    share_axes(axes, len(panels), x=False, y=True)
    handles = [line_handle(colors[f], f"family {f}", marker="o", lw=1.5) for f in families]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle(title or f"{ylabel} against λ (mean, 95 % CI){where}")
    return fig


@themed
def plot_lr_sensitivity(table: pd.DataFrame, *, metric_label: str | None = None,
                        facet: str | None = "attention", title: str | None = None) -> Figure:
    """A validation metric against the learning rate (log axis), one line per variant with
    95% intervals, each variant's selected learning rate ringed.

    Args:
        table: output of :func:`ablations.stats.lr_selection` (variant, lr, mean, ci_low,
            ci_high, selected; optionally the facet column).
        metric_label: y-axis label (default: "mean").
        facet: column giving one panel per level; ignored when absent or constant.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the table is empty.
    """
    import seaborn as sns

    require(table, ["variant", "lr", "mean", "ci_low", "ci_high", "selected"],
            "plot_lr_sensitivity")
    ylabel = metric_label or "mean"
    if facet in table.columns and table[facet].nunique() < 2:
        facet = None
    variants = sorted(map(str, table["variant"].unique()))
    colors = {v: variant_color(v) for v in variants}
    panels = [Panel(level, None, sub) for level, sub in facet_levels(table, facet)]
    heads, where = panel_titles(panels, facet, "")
    nrows, ncols = grid_shape(len(panels), 3)
    fig, axes = new_figure(nrows, ncols, max(5.6, 4.6 * ncols), 3.4 * nrows + 0.5)
    for ax, p, head in zip(axes.flat, panels, heads, strict=False):
        for i, v in enumerate(variants):
            g = p.data[p.data["variant"].astype(str) == v].sort_values("lr")
            if g.empty:
                continue
            # dodge overlapping intervals by a few percent of a factor on the log axis
            xs = g["lr"].to_numpy(float) * (1 + 0.04 * (i - (len(variants) - 1) / 2))
            m = g["mean"].to_numpy(float)
            err = np.vstack([m - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - m])
            ax.errorbar(xs, m, yerr=np.nan_to_num(err, nan=0.0), fmt="none",
                        ecolor=colors[v], elinewidth=1.1, capsize=3)
            sns.lineplot(x=xs, y=m, color=colors[v], marker="o", markersize=5, lw=1.5,
                         estimator=None, sort=False, ax=ax)
            sel = g["selected"].to_numpy(bool)
            ax.scatter(xs[sel], m[sel], s=160, facecolors="none", edgecolors=colors[v],
                       linewidths=1.6, zorder=5)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel=ylabel)
        ax.set_title(head)
    share_axes(axes, len(panels), x=True, y=True)
    handles = [line_handle(colors[v], v, marker="o", lw=1.5) for v in variants]
    handles.append(line_handle("black", "selected lr", marker="o", lw=0, markersize=11,
                               markerfacecolor="none"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle(title or f"{ylabel} against the learning rate (mean, 95 % CI){where}")
    return fig


@themed
def plot_difficulty(table: pd.DataFrame, *, target: float, level: str = "task",
                    hue: str = "attention", time_label: str | None = None,
                    horizon: float | None = None, title: str | None = None) -> Figure:
    """Median time to target per difficulty level (x, in the table's order) with its CI, one
    colour per ``hue`` level, the target as a dotted line and the selected level ringed.

    Args:
        table: output of :func:`ablations.stats.difficulty_selection` (``level``, median,
            median_low, median_high, selected; optionally ``hue``).
        target: the median aimed at (a horizontal line).
        level, hue: the level column (x) and the colour column (ignored when absent).
        time_label: y-axis label (default: "median time to target").
        horizon: the training length: a median or CI limit that does not exist (fewer than
            half the runs reached the target) is drawn as an open marker or an arrow there.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the table is empty.
    """
    require(table, [level, "median", "median_low", "median_high", "selected"],
            "plot_difficulty")
    levels = list(dict.fromkeys(map(str, table[level])))
    x_of = {name: i for i, name in enumerate(levels)}
    hues = sorted(map(str, table[hue].unique())) if hue in table.columns else [""]
    colors = level_colors(hues)
    fig, axes = new_figure(1, 1, max(5.6, 0.9 * len(levels) + 2.5), 4.4)
    ax = axes.flat[0]
    top = horizon if horizon is not None else np.nanmax(
        table[["median", "median_high"]].to_numpy(float), initial=target)
    for i, h in enumerate(hues):
        g = table[table[hue].astype(str) == h] if hue in table.columns else table
        xs = np.array([x_of[str(v)] for v in g[level]], float)
        xs = xs + 0.12 * (i - (len(hues) - 1) / 2)
        m = g["median"].to_numpy(float)
        lo = g["median_low"].to_numpy(float)
        hi = g["median_high"].to_numpy(float)
        shown = np.where(np.isfinite(m), m, top)  # no median: drawn open at the horizon
        lo = np.where(np.isfinite(lo), lo, shown)
        hi = np.where(np.isfinite(hi), hi, top)
        ax.errorbar(xs, shown, yerr=np.vstack([shown - lo, hi - shown]), fmt="none",
                    ecolor=colors[h], elinewidth=1.1, capsize=3)
        ok = np.isfinite(m)
        ax.scatter(xs[ok], m[ok], color=colors[h], s=30, zorder=4)
        ax.scatter(xs[~ok], shown[~ok], facecolors="none", edgecolors=colors[h], s=30,
                   zorder=4)
        sel = g["selected"].to_numpy(bool)
        ax.scatter(xs[sel], shown[sel], s=180, facecolors="none", edgecolors=colors[h],
                   linewidths=1.6, zorder=5)
    ax.axhline(target, color="black", ls=":", lw=1)
    ax.set_xticks(range(len(levels)), levels, rotation=30, ha="right")
    ax.set(xlabel="difficulty level", ylabel=time_label or "median time to target")
    handles = [line_handle(colors[h], f"{hue} {h}" if h else "runs", marker="o", lw=0)
               for h in hues]
    handles.append(line_handle("black", "no median (fewer than half reached)", marker="o",
                               lw=0, markerfacecolor="none"))
    handles.append(line_handle("black", f"target {target:g}", ls=":", lw=1))
    handles.append(line_handle("black", "selected level", marker="o", lw=0, markersize=11,
                               markerfacecolor="none"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    fig.suptitle(title or "Kaplan–Meier median per level (95 % CI)")
    return fig


#: how the dose-response figure draws each sweep: (sweeps token, label, marker, line style)
_DOSE_SWEEPS = (("λ", "λ sweep (loss × 1)", "o", "-"),
                ("loss scale", "loss-scale sweep (λ fixed)", "s", "--"))


@themed
def plot_dose_response(points: pd.DataFrame, *, metric_label: str | None = None,
                       first: pd.DataFrame | None = None, baseline: str = "adamw",
                       title: str | None = None) -> Figure:
    """Effect against the measured size of the term: one panel per perturbation family, the
    paired difference from ``baseline`` (95% t interval) against the median measured ratio
    ‖λQ‖/‖Adam step‖ on a log axis, the λ sweep and the loss-scale sweep as two lines; a
    filled marker is detectable under the report's rule, an open one is not, and a dotted
    vertical line marks the first detectable ratio of a panel's λ sweep.

    Args:
        points: output of :func:`ablations.stats.dose_points` (family, ratio, diff, ci_low,
            ci_high, detectable, sweeps, lam, loss_scale).
        metric_label: the metric's name, for the y-axis ("<label>: variant − baseline").
        first: output of :func:`ablations.stats.first_detectable` (family, sweep,
            first_ratio), or None for no vertical lines.
        baseline: the compared baseline's name (labels).
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the table is empty.
    """
    require(points, ["family", "ratio", "diff", "ci_low", "ci_high", "detectable", "sweeps"],
            "plot_dose_response")
    data = points[np.isfinite(points["ratio"].to_numpy(float))
                  & (points["ratio"].to_numpy(float) > 0)]
    require(data, ["ratio"], "plot_dose_response (points with a positive ratio)")
    families = sorted(map(str, data["family"].unique()))
    nrows, ncols = grid_shape(len(families), 4)
    fig, axes = new_figure(nrows, ncols, max(5.6, 3.9 * ncols), 3.3 * nrows + 0.7)
    ylabel = f"{metric_label or 'metric'}: variant − {baseline}"
    for ax, fam in zip(axes.flat, families, strict=False):
        color = variant_color(fam)
        sub = data[data["family"].astype(str) == fam]
        ax.axhline(0.0, color="black", lw=0.8)
        for token, _, marker, ls in _DOSE_SWEEPS:
            g = sub[sub["sweeps"].astype(str).str.split("+").map(lambda s, t=token: t in s)]
            g = g.sort_values("ratio")
            if g.empty:
                continue
            xs, m = g["ratio"].to_numpy(float), g["diff"].to_numpy(float)
            err = np.vstack([m - g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float) - m])
            ax.errorbar(xs, m, yerr=np.nan_to_num(err, nan=0.0), fmt="none", ecolor=color,
                        elinewidth=1.0, capsize=2.5, alpha=0.8)
            ax.plot(xs, m, color=color, ls=ls, lw=1.2)
            hit = g["detectable"].to_numpy(bool)
            ax.scatter(xs[hit], m[hit], color=color, marker=marker, s=34, zorder=4)
            ax.scatter(xs[~hit], m[~hit], facecolors="white", edgecolors=color,
                       marker=marker, s=34, zorder=4)
        if first is not None and not first.empty:
            row = first[(first["family"].astype(str) == fam) & (first["sweep"] == "λ")]
            if len(row) and np.isfinite(float(row["first_ratio"].iloc[0])):
                ax.axvline(float(row["first_ratio"].iloc[0]), color=color, ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.set(xlabel="measured ‖λQ‖ / ‖Adam step‖", ylabel=ylabel)
        ax.set_title(fam)
    share_axes(axes, len(families), x=True, y=True)
    handles = [line_handle("black", label, marker=marker, ls=ls, lw=1.2)
               for _, label, marker, ls in _DOSE_SWEEPS]
    handles += [line_handle("black", "detectable (Holm p < 0.05)", marker="o", lw=0),
                line_handle("black", "not detectable", marker="o", lw=0,
                            markerfacecolor="white"),
                line_handle("black", "first detectable ratio (λ sweep)", ls=":", lw=1.2)]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    fig.suptitle(title or f"Dose-response: paired difference from {baseline} (95 % CI) "
                          "against the measured size of the term")
    return fig
