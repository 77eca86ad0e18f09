"""Figures of the ablation results; drawing only.

Every function takes tables (the runs table, or tables computed by :mod:`ablations.stats`),
draws one figure with seaborn on explicit axes and returns it as a
:class:`matplotlib.figure.Figure`; none writes a file (the report saves figures:
``ablations.report.save_figure``). No statistics are computed here beyond what display needs
(choosing rows, a median tick): intervals, Kaplan–Meier curves and the like arrive
precomputed (DESIGN.md principle 9: statistics compute, plots draw, the report does the I/O).

Figures are built by :func:`ablations.style.new_figure` (Agg canvas, never ``pyplot``: no
global figure registry, nothing left open, works headless) under the project theme
(:func:`ablations.style.themed`); a variant has one colour in every figure
(:func:`ablations.style.variant_color`, AdamW dark grey).

Labels come from the caller (an arm's ``Metric.display``); without one, a column name is
shown with its underscores as spaces.

Comparisons with a baseline are drawn as small multiples: with ``baseline`` present, each
other variant gets its own panel with the baseline repeated in it as the reference, so
fifteen variants do not pile onto one axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import stats
from .panels import (
    band,
    cell_label,
    grid_shape,
    group_handles,
    line_handle,
    make_panels,
    neutral,
    panel_titles,
    require,
    share_axes,
)
from .style import (
    REFERENCE_COLOR,
    VERDICT_COLORS,
    level_colors,
    new_figure,
    themed,
    variant_colors,
    verdict_color,
)

__all__ = [
    "plot_learning_curves",
    "plot_paired_seeds",
    "plot_kaplan_meier",
    "plot_perturbation_ratio",
    "plot_forest",
]


# --------------------------------------------------------------------------------------------


@themed
def plot_learning_curves(summary: pd.DataFrame, *, value_label: str | None = None,
                         x: str = "epoch", x_label: str | None = None, group: str = "variant",
                         facet: str | None = "attention", baseline: str | None = "adamw",
                         target: float | None = None, complete_only: bool = True,
                         col_wrap: int = 5, title: str | None = None) -> Figure:
    """Mean learning curve per variant with its confidence band; small multiples.

    With ``baseline`` among the groups, one panel per other group and facet level, the
    baseline drawn in each as the reference; otherwise one panel per facet level with every
    group. Panels share both axes.

    Args:
        summary: output of :func:`ablations.stats.curve_summary` (columns ``group``, ``x``,
            mean, ci_low, ci_high, optionally n and the facet column).
        value_label: y-axis label (default: "mean").
        x: the x column (epoch or step); x_label its label (default: the column name).
        group: the column giving one line per level (variant).
        facet: column giving panels per level (attention); ignored when absent.
        baseline: the reference group repeated in every panel, or None for one panel per facet.
        target: draw a dotted horizontal line here (e.g. 0.9 for the 90 % target).
        complete_only: drop the x values where a line averages fewer runs than at its other
            x values (a ragged last logging step mixes different runs and jumps).
        col_wrap: panels per row.
        title: figure title.

    Raises:
        ValueError: a needed column is missing, or no row has a finite mean.
    """
    import seaborn as sns

    require(summary, [group, x, "mean", "ci_low", "ci_high"], "plot_learning_curves")
    data = summary[np.isfinite(pd.to_numeric(summary["mean"], errors="coerce"))]
    if complete_only and "n" in data.columns and not data.empty:
        keys = [group] + ([facet] if facet in data.columns else [])
        full = data.groupby(keys, dropna=False)["n"].transform("max")
        data = data[data["n"] >= full]
    if data.empty:
        raise ValueError("plot_learning_curves: no row with a finite mean")
    ylabel = value_label or "mean"
    xlabel = x_label or neutral(x)
    panels = make_panels(data, group, facet, baseline)
    colors = variant_colors(data[group].dropna().unique())
    nrows, ncols = grid_shape(len(panels), col_wrap)
    small = len(panels) > 2
    w, h = (2.9, 2.3) if small else (4.6, 3.4)
    fig, axes = new_figure(nrows, ncols, w * ncols + 0.3, h * nrows + 0.9)
    titles, where = panel_titles(panels, facet, ylabel)
    for ax, p, head in zip(axes.flat, panels, titles, strict=False):
        # baseline first, so the compared variant is drawn on top of it
        names = sorted(map(str, p.data[group].unique()), key=lambda n: (n != baseline, n))
        for name in names:
            g = p.data[p.data[group].astype(str) == name].sort_values(x)
            c = colors[name]
            sns.lineplot(data=g, x=x, y="mean", color=c, estimator=None, sort=False,
                         lw=1.5 if small else 1.7, ax=ax, legend=False)
            band(ax, g[x], g["ci_low"], g["ci_high"], c)
        if target is not None:
            ax.axhline(target, color="black", ls=":", lw=1)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_title(head, color=colors[p.focus] if p.focus else "black")
    share_axes(axes, len(panels), x=True, y=True)
    from matplotlib.patches import Patch

    handles = group_handles(colors, baseline, panels)
    handles.append(Patch(color=REFERENCE_COLOR, alpha=0.35, label="95 % CI over seeds"))
    if target is not None:
        handles.append(line_handle("black", f"target {target:g}", ls=":", lw=1))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    fig.suptitle(title or f"{ylabel}: mean over seeds with 95 % CI{where}")
    return fig


@themed
def plot_paired_seeds(runs: pd.DataFrame, metric: str, *, baseline: str = "adamw",
                      variants: Sequence[str] | None = None, cell: Mapping | None = None,
                      cell_keys: Sequence[str] = ("attention", "lr"),
                      stats_table: pd.DataFrame | None = None,
                      metric_label: str | None = None, sharey: bool = False,
                      col_wrap: int = 5, title: str | None = None) -> Figure:
    """Per-seed values of each variant next to the baseline, paired seeds joined by lines.

    One panel per variant: the baseline's runs on the left, the variant's on the right, a
    grey line joining the two runs of each seed (pairs from
    :func:`ablations.stats.paired_differences`), and a black bar at each side's mean. With a
    ``stats_table`` (:func:`ablations.stats.compare_all`) each panel title gives the paired
    difference Δ, its CI, p_holm and the verdict.

    Args:
        runs: the runs table.
        metric: metric column.
        baseline: the baseline variant id.
        variants: variants to show (default: all others in ``runs``).
        cell: optional ``{column: value}`` restricting to one cell (e.g. quantum attention).
        cell_keys: columns defining a cell (pairs never cross cells).
        stats_table: optional comparison table for the annotations.
        metric_label: y-axis label (default: ``metric`` with spaces).
        sharey: one y scale for all panels; off by default, since one far-off variant would
            flatten every other panel (the titles give the differences).
        col_wrap: panels per row.
        title: figure title.

    Raises:
        ValueError: ``metric`` or ``variant`` is missing, there is no variant besides the
            baseline, or the baseline has no run (in ``cell``).
    """
    import seaborn as sns

    require(runs, [metric, "variant", "seed"], "plot_paired_seeds")
    if variants is None:
        variants = sorted(v for v in runs["variant"].dropna().unique() if v != baseline)
    variants = [v for v in variants if v != baseline]
    if not variants:
        raise ValueError(f"plot_paired_seeds: no variant to compare with {baseline!r}")
    if not (runs["variant"] == baseline).any():
        raise ValueError(f"plot_paired_seeds: the baseline {baseline!r} has no run")
    colors = variant_colors([baseline, *variants])
    ylabel = metric_label or neutral(metric)
    keys = [k for k in cell_keys if k in runs.columns]
    nrows, ncols = grid_shape(len(variants), col_wrap)
    fig, axes = new_figure(nrows, ncols, 2.8 * ncols + 0.3, 2.9 * nrows + 0.5)
    for ax, name in zip(axes.flat, variants, strict=False):
        pairs = stats.paired_differences(runs, metric, name, baseline, cell_keys=keys,
                                         cell=cell).reset_index(drop=True)
        long = pd.concat([
            pd.DataFrame({"pair": pairs.index, "side": 0.0, "value": pairs["baseline_value"],
                          "who": baseline}),
            pd.DataFrame({"pair": pairs.index, "side": 1.0, "value": pairs["variant_value"],
                          "who": name})], ignore_index=True)
        if len(pairs):
            sns.lineplot(data=long, x="side", y="value", units="pair", estimator=None,
                         color=REFERENCE_COLOR, lw=0.8, alpha=0.7, ax=ax, legend=False)
            sns.scatterplot(data=long, x="side", y="value", hue="who",
                            palette={baseline: colors[baseline], name: colors[name]}, s=22,
                            linewidth=0, zorder=3, ax=ax, legend=False)
            for xpos, vals in ((0, pairs["baseline_value"]), (1, pairs["variant_value"])):
                ax.hlines(vals.mean(), xpos - 0.2, xpos + 0.2, color="black", lw=2, zorder=4)
        else:
            ax.text(0.5, 0.5, "no paired seeds", transform=ax.transAxes, ha="center",
                    va="center", color=REFERENCE_COLOR)
        ax.set_xticks([0, 1], [baseline, name])
        ax.set_xlim(-0.5, 1.5)
        ax.grid(axis="x", visible=False)
        ax.set(xlabel="", ylabel=ylabel)
        ax.set_title(f"{name} (n = {len(pairs)})" + _paired_stats(stats_table, metric, name,
                                                                   baseline, cell),
                     fontsize=8.5)
    share_axes(axes, len(variants), x=False, y=sharey)
    if not sharey:
        for i, ax in enumerate(axes.flat[:len(variants)]):
            if i % ncols:
                ax.set_ylabel("")
    where = f" ({cell_label(cell, list(cell))})" if cell else ""
    fig.suptitle(title or f"{ylabel} per seed, paired with {baseline}{where}")
    return fig


def _paired_stats(table: pd.DataFrame | None, metric: str, variant: str, baseline: str,
                  cell: Mapping | None) -> str:
    """The title lines of one paired panel from its row of the stats table ("" if none)."""
    if table is None or table.empty:
        return ""
    sel = table[(table["metric"] == metric) & (table["variant"] == variant)
                & (table["baseline"] == baseline)]
    for k, v in (cell or {}).items():
        if k in sel.columns:
            sel = sel[sel[k] == v]
    if len(sel) != 1:
        return ""
    r = sel.iloc[0]
    return (f"\nΔ = {r['diff']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
            f"\np_holm = {r['p_holm']:.2g}, {r['verdict']}")


@themed
def plot_kaplan_meier(km: pd.DataFrame, *, group: str = "variant", facet: str | None = None,
                      baseline: str | None = "adamw", horizon: float | None = None,
                      medians: Mapping[str, float] | None = None, time_label: str = "epoch",
                      target_label: str = "target", col_wrap: int = 5,
                      title: str | None = None) -> Figure:
    """Kaplan–Meier curves of time to target per variant with their CI bands; small multiples.

    The y axis is the fraction of runs that have not yet reached the target. Censored runs
    are marked with "+" on their curve; curves are carried on to ``horizon``. With
    ``baseline`` among the groups, one panel per other group (and facet level) with the
    baseline as reference; otherwise one panel per facet level with every group.

    Args:
        km: output of :func:`ablations.stats.kaplan_meier_by_group` (``group``, time,
            survival, ci_low, ci_high, optionally n_censored and the facet column).
        group: column giving one curve per level.
        facet: optional column giving panels per level.
        baseline: the reference group repeated in every panel, or None.
        horizon: last time of the x axis (the training length).
        medians: optional ``{group level: median}`` drawn as dotted vertical lines (e.g. from
            :func:`ablations.stats.km_median`); NaN medians are skipped.
        time_label: x-axis label; target_label: what the target is ("fraction not yet at …").
        col_wrap: panels per row.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or the table is empty.
    """
    import seaborn as sns

    require(km, [group, "time", "survival", "ci_low", "ci_high"], "plot_kaplan_meier")
    colors = variant_colors(km[group].dropna().unique())
    panels = make_panels(km, group, facet, baseline)
    nrows, ncols = grid_shape(len(panels), col_wrap)
    small = len(panels) > 2
    w, h = (2.9, 2.3) if small else (4.6, 3.4)
    fig, axes = new_figure(nrows, ncols, w * ncols + 0.3, h * nrows + 0.9)
    titles, where = panel_titles(panels, facet, "")
    for ax, p, head in zip(axes.flat, panels, titles, strict=False):
        names = sorted(map(str, p.data[group].unique()), key=lambda n: (n != baseline, n))
        for name in names:
            g = p.data[p.data[group].astype(str) == name].sort_values("time")
            c = colors[name]
            t, s = g["time"].to_numpy(float), g["survival"].to_numpy(float)
            lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
            if horizon is not None and t.size and t[-1] < horizon:
                t, s = np.append(t, horizon), np.append(s, s[-1])
                lo, hi = np.append(lo, lo[-1]), np.append(hi, hi[-1])
            sns.lineplot(x=t, y=s, color=c, drawstyle="steps-post", estimator=None, sort=False,
                         lw=1.6, ax=ax, legend=False)
            band(ax, t, lo, hi, c, step="post", alpha=0.15)
            if "n_censored" in g.columns:
                cens = g[g["n_censored"] > 0]
                if len(cens):
                    sns.scatterplot(x=cens["time"].to_numpy(float),
                                    y=cens["survival"].to_numpy(float), marker="+", s=45,
                                    color=c, linewidth=1.3, zorder=3, ax=ax, legend=False)
            med = (medians or {}).get(name, np.nan)
            if med is not None and np.isfinite(med):
                ax.axvline(med, color=c, ls=":", lw=1.2)
        ax.axhline(0.5, color="black", lw=0.6, ls="--", alpha=0.5)
        ax.set_ylim(-0.02, 1.02)
        if horizon is not None:  # a little room so the "+" of runs censored there shows
            ax.set_xlim(0, horizon * 1.03)
        ax.set(xlabel=time_label, ylabel=f"fraction not yet at {target_label}")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_title(head, color=colors[p.focus] if p.focus else "black")
    share_axes(axes, len(panels), x=True, y=True)
    handles = group_handles(colors, baseline, panels)
    handles.append(line_handle("black", "censored (never reached)", marker="+", ms=8,
                                ls="none"))
    if medians:
        handles.append(line_handle("black", "median", ls=":", lw=1.2))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    fig.suptitle(title or f"Time to target: Kaplan–Meier estimate with 95 % CI{where}")
    return fig


@themed
def plot_perturbation_ratio(runs: pd.DataFrame, *, metric: str = "perturbation_ratio",
                            metric_label: str | None = None, group: str = "variant",
                            hue: str | None = "attention", title: str | None = None) -> Figure:
    """Size of the perturbation relative to the Adam step, per variant, on a log axis.

    One dot per run (a beeswarm, deterministic), a black bar at each median. Runs with a
    non-positive ratio (AdamW: no perturbation) cannot sit on a log axis; they are left out
    and counted in the x label.

    Args:
        runs: the runs table (``group``, ``metric``, optionally ``hue``).
        metric: the ratio column; metric_label its axis label (default: the name with spaces).
        group: one column of dots per level (variant).
        hue: optional column coloured by level (attention); without it dots take the
            variant's colour.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or no run has a positive ratio.
    """
    import seaborn as sns

    require(runs, [group, metric], "plot_perturbation_ratio")
    vals = pd.to_numeric(runs[metric], errors="coerce")
    ok = vals > 0
    dropped = int((vals.notna() & ~ok).sum())
    data = runs[ok].assign(_y=vals[ok])
    data = data[data[group].notna()].assign(**{group: lambda d: d[group].astype(str)})
    names = sorted(data[group].unique())
    if not names:
        raise ValueError(f"plot_perturbation_ratio: no run has a positive {metric}")
    use_hue = hue is not None and hue in data.columns and data[hue].notna().any()
    if use_hue:
        data = data.assign(**{hue: data[hue].astype(str)})
        levels = sorted(data[hue].unique())
        palette, hue_col = level_colors(levels), hue
    else:
        levels, palette, hue_col = names, variant_colors(names), group
    dodge = use_hue and len(levels) > 1
    fig, axes = new_figure(1, 1, max(4.5, 0.9 * len(names) + 2.0), 4.2)
    ax = axes[0, 0]
    common = dict(data=data, x=group, y="_y", order=names, hue=hue_col, hue_order=levels,
                  dodge=dodge, log_scale=True, ax=ax, legend=False)
    dense = int(data.groupby(group).size().max()) > 20  # a swarm of 60 needs small dots
    sns.swarmplot(**common, palette=palette, size=2.8 if dense else 4.0, alpha=0.9, zorder=3)
    # A box plot reduced to its median line sits exactly on seaborn's dodge positions.
    with warnings.catch_warnings():
        # seaborn 0.13.2 passes vert= to Axes.bxp, deprecated since Matplotlib 3.11
        warnings.filterwarnings("ignore", message=".*vert: bool", category=DeprecationWarning)
        sns.boxplot(**common, showbox=False, showcaps=False, showfliers=False, whis=0,
                    whiskerprops={"visible": False}, medianprops={"color": "black", "lw": 1.8},
                    width=0.5, zorder=2, fill=False)
    ax.tick_params(axis="x", rotation=30)
    for lab in ax.get_xticklabels():
        lab.set_ha("right")
        lab.set_rotation_mode("anchor")
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(metric_label or neutral(metric))
    ax.set_xlabel(group if dropped == 0 else f"{group} ({dropped} runs with ratio ≤ 0 not shown)")
    if use_hue:
        handles = [line_handle(palette[h], h, marker="o", ls="none") for h in levels]
        handles.append(line_handle("black", "median", lw=1.8))
        ax.legend(handles=handles, title=hue, loc="best")
    else:
        ax.legend(handles=[line_handle("black", "median", lw=1.8)], loc="best")
    ax.set_title(title or "Perturbation size relative to the Adam step")
    return fig


def _core_limits(lo: np.ndarray, hi: np.ndarray, diff: np.ndarray,
                 margin: float | None) -> tuple[float, float] | None:
    """x limits of a forest panel that leave out far-off rows, or None to keep them all.

    A row is far off when its extent (largest |value| of diff and CI) exceeds 4× the next
    largest; such rows are peeled one at a time, at most a quarter of the rows, and never
    below two rows kept. The kept rows, 0 and ±margin fix the limits.
    """
    vals = np.column_stack([lo, hi, diff]).astype(float)
    ext = np.where(np.isfinite(vals), np.abs(vals), np.nan)
    ext = np.nanmax(np.where(np.isnan(ext), -np.inf, ext), axis=1)
    order = list(np.argsort(-ext))
    order = [i for i in order if np.isfinite(ext[i])]
    peeled = 0
    while (len(order) - peeled > 2 and peeled < len(order) // 4
           and ext[order[peeled]] > 4 * ext[order[peeled + 1]]):
        peeled += 1
    if not peeled:
        return None
    kept = vals[order[peeled:]]
    kept = kept[np.isfinite(kept)]
    pts = np.concatenate([kept, [0.0]] + ([[-margin, margin]] if margin else []))
    a, b = float(pts.min()), float(pts.max())
    pad = 0.08 * (b - a or 1.0)
    return a - pad, b + pad


@themed
def plot_forest(stats_table: pd.DataFrame, *, metrics: Sequence[str] | None = None,
                metric_labels: Mapping[str, str] | None = None, baseline: str | None = None,
                cell_keys: Sequence[str] = ("attention", "lr"), title: str | None = None) -> Figure:
    """Forest plot of paired differences with CIs, one panel per metric.

    Each row is one comparison of the stats table: a dot at ``diff`` and a bar from
    ``ci_low`` to ``ci_high``, coloured by the verdict; a vertical line at 0 and, where a
    TOST margin is set, a shaded ±margin band. A row far off the others (an extent over 4×
    the next, :func:`_core_limits`) would squeeze every other row to a point: the axis then
    covers the other rows and the far row is marked by an arrow at the edge with its value.

    Args:
        stats_table: output of :func:`ablations.stats.compare_all`.
        metrics: metrics to show (default: all, in table order).
        metric_labels: ``{metric: label}`` for panel titles and x labels (default: the name
            with spaces).
        baseline: show only comparisons against this baseline.
        cell_keys: columns added to the row labels when they vary.
        title: figure title.

    Raises:
        ValueError: a needed column is missing or no comparison is left to plot.
    """
    import seaborn as sns
    from matplotlib.patches import Patch

    require(stats_table, ["metric", "variant", "baseline", "n", "diff", "ci_low", "ci_high",
                           "verdict"], "plot_forest")
    df = stats_table
    if baseline is not None:
        df = df[df["baseline"] == baseline]
    if metrics is None:
        metrics = list(dict.fromkeys(df["metric"]))
    metrics = [m for m in metrics if (df["metric"] == m).any()]
    df = df[df["metric"].isin(metrics)]
    if df.empty:
        raise ValueError("plot_forest: no comparison to plot")
    labels_of = dict(metric_labels or {})
    keys = [k for k in cell_keys if k in df.columns and df[k].nunique(dropna=True) > 1]
    sizes = [int((df["metric"] == m).sum()) for m in metrics]
    heights = [max(1.3, 0.3 * s + 0.8) for s in sizes]
    fig, axes = new_figure(len(metrics), 1, 9.0, sum(heights) + 1.0,
                           gridspec_kw={"height_ratios": heights})
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        label = labels_of.get(metric) or neutral(metric)
        sub = df[df["metric"] == metric].reset_index(drop=True)
        sub = sub.assign(_y=np.arange(len(sub))[::-1],
                         _color=[verdict_color(v) for v in sub["verdict"]])
        lo, hi, d = (sub[c].to_numpy(float) for c in ("ci_low", "ci_high", "diff"))
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.hlines(sub["_y"][ok], lo[ok], hi[ok], colors=sub["_color"][ok], lw=2)
        sns.scatterplot(data=sub[np.isfinite(d)], x="diff", y="_y", hue="_color",
                        palette={c: c for c in sub["_color"]}, s=32, linewidth=0, zorder=3,
                        ax=ax, legend=False)
        margin = None
        if "tost_margin" in sub.columns:
            margins = pd.to_numeric(sub["tost_margin"], errors="coerce").dropna().unique()
            if margins.size == 1:
                margin = float(margins[0])
                ax.axvspan(-margin, margin, color=VERDICT_COLORS["equivalent"], alpha=0.08,
                           lw=0)
        ax.axvline(0, color="black", lw=0.8)
        limits = _core_limits(lo, hi, d, margin)
        if limits is not None:
            ax.set_xlim(*limits)
            for y, v, a, b, c in zip(sub["_y"], d, lo, hi, sub["_color"], strict=True):
                if np.isfinite(v) and not limits[0] <= v <= limits[1]:
                    right = v > limits[1]
                    edge = limits[1] if right else limits[0]
                    ax.plot(edge, y, marker=">" if right else "<", color=c, ms=7,
                            clip_on=False, zorder=4)
                    ax.annotate(f"off scale: {v:.3g} [{a:.3g}, {b:.3g}]", (edge, y),
                                xytext=(-9 if right else 9, 0), textcoords="offset points",
                                ha="right" if right else "left", va="center", fontsize=8,
                                color=c)
        rows = [f"{r['variant']} − {r['baseline']}"
                + (f" [{cell_label(r.to_dict(), keys)}]" if keys else "")
                + f"  (n={int(r['n'])})" for _, r in sub.iterrows()]
        ax.set_yticks(sub["_y"], rows)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
        ax.set_title(label, loc="left", fontweight="bold")
        ax.set(xlabel=f"difference in {label} (variant − baseline), 95 % CI", ylabel="")
    handles = [Patch(color=VERDICT_COLORS[k], label=k)
               for k in ("better", "worse", "equivalent", "no detectable difference")]
    if df["verdict"].astype(str).str.match(r"^(higher|lower)$").any():
        handles.append(Patch(color=VERDICT_COLORS["higher"], label="higher / lower"))
    handles.append(Patch(color=VERDICT_COLORS["equivalent"], alpha=0.15,
                         label="± equivalence margin"))
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    fig.suptitle(title or "Paired differences against the baseline (Holm-corrected verdicts)")
    return fig
