"""Figures of the ablation results; plotting only.

Every function takes tables (the runs table, or tables computed by :mod:`ablations.stats`),
draws one figure, writes it as a PNG to ``path`` (parent folders are created) and returns
``path`` as a :class:`pathlib.Path`. No statistics are computed here beyond what display
needs (choosing rows, a median tick): intervals, Kaplan–Meier curves and the like arrive
precomputed (DESIGN.md: statistics compute, plots draw, the report does the I/O).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never
through ``pyplot``: no global figure registry, no backend switching, nothing left open, and
it works on a headless machine.

Colours are stable across figures: :func:`variant_colors` maps variant ids to colours
(AdamW is always dark grey), so a variant has one colour in every figure of a report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import stats

__all__ = [
    "STYLE",
    "VERDICT_COLORS",
    "variant_colors",
    "plot_learning_curves",
    "plot_paired_seeds",
    "plot_lambda_sweep",
    "plot_kaplan_meier",
    "plot_perturbation_ratio",
    "plot_forest",
]

#: rcParams applied (locally, through ``rc_context``) to every figure.
STYLE: dict = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "savefig.facecolor": "white",
}

#: Colour of each verdict family in forest plots (matched by prefix).
VERDICT_COLORS: dict[str, str] = {
    "better": "#1a9850",
    "worse": "#d73027",
    "equivalent": "#4575b4",
    "higher": "#762a83",
    "lower": "#762a83",
    "no detectable difference": "#7f7f7f",
}

_BASELINE_COLOR = "#404040"
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5",
]
_LABELS = {
    "final_test_acc": "final test accuracy",
    "epochs_to_90": "epochs to 90 % accuracy",
    "reached_90": "reached 90 % accuracy",
    "mean_train_loss": "mean training loss",
    "final_train_loss": "final training loss",
    "sec_per_epoch": "seconds per epoch",
    "sec_to_target": "seconds to 90 % accuracy",
    "perturbation_ratio": "‖λ·Q‖ / ‖Adam step‖",
    "test_loss": "test loss",
    "test_exact_match": "test exact match",
    "tokens_per_s": "tokens per second",
    "optimizer_share": "optimizer share of step time",
    "test_acc": "test accuracy",
    "train_loss": "training loss",
}


def _label(metric: str, label: str | None = None) -> str:
    return label if label is not None else _LABELS.get(metric, metric.replace("_", " "))


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """A stable colour per variant id: AdamW dark grey, the rest from a fixed palette.

    Colours are assigned in sorted order of the ids, so the same set of variants always gets
    the same colours whatever order the rows come in.
    """
    out: dict[str, str] = {}
    others = sorted({str(v) for v in variants if str(v) != "adamw"})
    for i, v in enumerate(others):
        out[v] = _PALETTE[i % len(_PALETTE)]
    if "adamw" in {str(v) for v in variants}:
        out["adamw"] = _BASELINE_COLOR
    return out


def _figure(nrows: int, ncols: int, width: float, height: float, **kw):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _save(fig: Figure, path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _facets(df: pd.DataFrame, facet: str | None) -> list[tuple[object, pd.DataFrame]]:
    """Split ``df`` by ``facet`` (one panel per level), or one panel when absent."""
    if facet is None or facet not in df.columns or df[facet].isna().all():
        return [(None, df)]
    return [(k, sub) for k, sub in df.groupby(facet, sort=True, dropna=False)]


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _hide_unused(axes, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _cell_label(row: Mapping, keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = row.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else str(v))
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------


def plot_learning_curves(summary: pd.DataFrame, path, *, value_label: str = "test accuracy",
                         x: str = "epoch", group: str = "variant",
                         facet: str | None = "attention", target: float | None = None,
                         title: str | None = None, dpi: int = 150) -> Path:
    """Mean learning curve per variant with its confidence band, one panel per facet.

    Args:
        summary: output of :func:`ablations.stats.curve_summary` (columns ``group``, ``x``,
            mean, ci_low, ci_high, optionally n and the facet column).
        path: PNG file to write.
        value_label: y-axis label.
        x: the x column (epoch or step).
        group: the column giving one line per level (variant).
        facet: column giving one panel per level (attention); ignored when absent.
        target: draw a dotted horizontal line here (e.g. 0.9 for the 90 % target).
        title: figure title.
        dpi: resolution.
    """
    colors = variant_colors(summary[group].dropna().unique())
    panels = _facets(summary, facet)
    with mpl.rc_context(STYLE):
        nrows, ncols = _grid_shape(len(panels))
        fig, axes = _figure(nrows, ncols, 4.6 * ncols, 3.4 * nrows + 0.4, sharey=True)
        for ax, (level, sub) in zip(axes.flat, panels, strict=False):
            for name, g in sub.groupby(group, sort=True):
                g = g.sort_values(x)
                c = colors[str(name)]
                ax.plot(g[x], g["mean"], color=c, lw=1.6, label=str(name),
                        zorder=3 if name == "adamw" else 2)
                ax.fill_between(g[x].to_numpy(float), g["ci_low"].to_numpy(float),
                                g["ci_high"].to_numpy(float), color=c, alpha=0.18, lw=0)
            if target is not None:
                ax.axhline(target, color="black", ls=":", lw=1)
            ax.set_xlabel(x)
            ax.set_title(f"{facet}: {level}" if level is not None else value_label)
        for row in axes:
            row[0].set_ylabel(value_label)
        _hide_unused(axes, len(panels))
        axes.flat[0].legend(loc="best", frameon=False, ncols=1 + len(colors) // 8)
        fig.suptitle(title or f"{value_label}: mean over seeds with 95 % CI")
        return _save(fig, path, dpi)


def plot_paired_seeds(runs: pd.DataFrame, metric: str, path, *, baseline: str = "adamw",
                      variants: Sequence[str] | None = None, cell: Mapping | None = None,
                      cell_keys: Sequence[str] = ("attention", "lr"),
                      stats_table: pd.DataFrame | None = None,
                      metric_label: str | None = None, title: str | None = None,
                      dpi: int = 150) -> Path:
    """Per-seed values of each variant next to the baseline, paired seeds joined by lines.

    One panel per variant: the baseline's runs on the left, the variant's on the right, a
    grey line joining the two runs of each seed (pairs from
    :func:`ablations.stats.paired_differences`), and a black bar at each side's mean. With a
    ``stats_table`` (:func:`ablations.stats.compare_all`) each panel title gives the paired
    difference, its CI, p_holm and the verdict.

    Args:
        runs: the runs table.
        metric: metric column.
        path: PNG file to write.
        baseline: the baseline variant id.
        variants: variants to show (default: all others in ``runs``).
        cell: optional ``{column: value}`` restricting to one cell (e.g. quantum attention).
        cell_keys: columns defining a cell (pairs never cross cells).
        stats_table: optional comparison table for the annotations.
        metric_label, title, dpi: labels and resolution.
    """
    if variants is None:
        variants = sorted(v for v in runs["variant"].dropna().unique() if v != baseline)
    variants = [v for v in variants if v != baseline]
    if not variants:
        raise ValueError(f"no variant to compare with {baseline!r}")
    colors = variant_colors([baseline, *variants])
    ylabel = _label(metric, metric_label)
    keys = [k for k in cell_keys if k in runs.columns]
    with mpl.rc_context(STYLE):
        nrows, ncols = _grid_shape(len(variants), 4)
        fig, axes = _figure(nrows, ncols, 2.9 * ncols, 3.3 * nrows + 0.4, sharey=True)
        for ax, name in zip(axes.flat, variants, strict=False):
            pairs = stats.paired_differences(runs, metric, name, baseline, cell_keys=keys,
                                             cell=cell)
            xb = pairs["baseline_value"].to_numpy(float)
            xv = pairs["variant_value"].to_numpy(float)
            for b, v in zip(xb, xv, strict=True):
                ax.plot([0, 1], [b, v], color="0.6", lw=0.8, alpha=0.7, zorder=1)
            ax.scatter(np.zeros_like(xb), xb, s=18, color=colors[baseline], zorder=2)
            ax.scatter(np.ones_like(xv), xv, s=18, color=colors[name], zorder=2)
            for xpos, vals in ((0, xb), (1, xv)):
                if vals.size:
                    ax.hlines(vals.mean(), xpos - 0.18, xpos + 0.18, color="black", lw=2,
                              zorder=3)
            ax.set_xticks([0, 1], [baseline, name])
            ax.set_xlim(-0.5, 1.5)
            ax.grid(axis="x", visible=False)
            head = f"{name} (n = {len(pairs)})"
            if stats_table is not None and len(stats_table):
                sel = stats_table[(stats_table["metric"] == metric)
                                  & (stats_table["variant"] == name)
                                  & (stats_table["baseline"] == baseline)]
                for k, v in (cell or {}).items():
                    if k in sel.columns:
                        sel = sel[sel[k] == v]
                if len(sel) == 1:
                    r = sel.iloc[0]
                    head += (f"\nΔ = {r['diff']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
                             f"\np_holm = {r['p_holm']:.2g}, {r['verdict']}")
            ax.set_title(head, fontsize=9)
        for row in axes:
            row[0].set_ylabel(ylabel)
        _hide_unused(axes, len(variants))
        where = f" ({_cell_label(cell, list(cell))})" if cell else ""
        fig.suptitle(title or f"{ylabel} per seed, paired with {baseline}{where}")
        return _save(fig, path, dpi)


def plot_lambda_sweep(sweep: pd.DataFrame, path, *, metric_label: str = "final test accuracy",
                      facet: str | None = "attention", title: str | None = None,
                      dpi: int = 150) -> Path:
    """Metric against the quantum weight λ with CIs, one line per perturbation family.

    Args:
        sweep: output of :func:`ablations.stats.lambda_sweep` (family, lam, mean, ci_low,
            ci_high, optionally the facet column).
        path: PNG file to write.
        metric_label: y-axis label.
        facet: column giving one panel per level; ignored when absent.
        title, dpi: title and resolution.
    """
    families = sorted(sweep["family"].dropna().unique())
    colors = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(families)}
    panels = _facets(sweep, facet)
    lam = sweep["lam"].to_numpy(float)
    positive = lam[lam > 0]
    wide = positive.size > 0 and positive.max() / positive.min() > 50
    with mpl.rc_context(STYLE):
        nrows, ncols = _grid_shape(len(panels))
        fig, axes = _figure(nrows, ncols, 4.4 * ncols, 3.4 * nrows + 0.4, sharey=True)
        for ax, (level, sub) in zip(axes.flat, panels, strict=False):
            offsets = np.linspace(-0.01, 0.01, len(families)) if len(families) > 1 else [0.0]
            for off, fam in zip(offsets, families, strict=True):
                g = sub[sub["family"] == fam].sort_values("lam")
                if g.empty:
                    continue
                xs = g["lam"].to_numpy(float)
                # A small horizontal dodge keeps overlapping error bars readable.
                xs = xs * (1 + off) if wide else xs + off * (np.nanmax(lam) or 1.0)
                m = g["mean"].to_numpy(float)
                err = np.vstack([m - g["ci_low"].to_numpy(float),
                                 g["ci_high"].to_numpy(float) - m])
                ax.errorbar(xs, m, yerr=np.nan_to_num(err, nan=0.0), color=colors[fam],
                            marker="o", ms=4, lw=1.4, capsize=3, label=fam)
            if wide:
                ax.set_xscale("symlog", linthresh=positive.min())
            ax.set_xlabel("quantum weight λ (λ = 0: AdamW)")
            ax.set_title(f"{facet}: {level}" if level is not None else metric_label)
        for row in axes:
            row[0].set_ylabel(metric_label)
        _hide_unused(axes, len(panels))
        axes.flat[0].legend(loc="best", frameon=False)
        fig.suptitle(title or f"{metric_label} against λ (mean, 95 % CI)")
        return _save(fig, path, dpi)


def plot_kaplan_meier(km: pd.DataFrame, path, *, group: str = "variant",
                      facet: str | None = None, horizon: float | None = None,
                      medians: Mapping[str, float] | None = None,
                      xlabel: str = "epoch", title: str | None = None,
                      dpi: int = 150) -> Path:
    """Kaplan–Meier curves of time to target per variant, with log-log CI bands.

    The y axis is the fraction of runs that have not yet reached the target. Censored runs
    are marked with "+" on their curve; the curves are carried on to ``horizon``.

    Args:
        km: output of :func:`ablations.stats.kaplan_meier_by_group` (``group``, time,
            survival, ci_low, ci_high, n_censored; optionally the facet column).
        path: PNG file to write.
        group: column giving one curve per level.
        facet: optional column giving one panel per level.
        horizon: last time of the x axis (the training length).
        medians: optional ``{group level: median}`` drawn as dotted vertical lines (e.g. from
            :func:`ablations.stats.km_median`); NaN medians are skipped.
        xlabel, title, dpi: labels and resolution.
    """
    colors = variant_colors(km[group].dropna().unique())
    panels = _facets(km, facet)
    with mpl.rc_context(STYLE):
        nrows, ncols = _grid_shape(len(panels))
        fig, axes = _figure(nrows, ncols, 4.6 * ncols, 3.4 * nrows + 0.4, sharey=True)
        for ax, (level, sub) in zip(axes.flat, panels, strict=False):
            for name, g in sub.groupby(group, sort=True):
                g = g.sort_values("time")
                c = colors[str(name)]
                t = g["time"].to_numpy(float)
                s = g["survival"].to_numpy(float)
                lo = g["ci_low"].to_numpy(float)
                hi = g["ci_high"].to_numpy(float)
                if horizon is not None and t[-1] < horizon:
                    t, s = np.append(t, horizon), np.append(s, s[-1])
                    lo, hi = np.append(lo, lo[-1]), np.append(hi, hi[-1])
                ax.step(t, s, where="post", color=c, lw=1.6, label=str(name))
                ax.fill_between(t, lo, hi, step="post", color=c, alpha=0.15, lw=0)
                if "n_censored" in g.columns:
                    cens = g[g["n_censored"] > 0]
                    ax.scatter(cens["time"], cens["survival"], marker="+", s=40, color=c,
                               zorder=3)
                if medians is not None and np.isfinite(medians.get(str(name), np.nan)):
                    ax.axvline(medians[str(name)], color=c, ls=":", lw=1)
            ax.axhline(0.5, color="black", lw=0.6, ls="--", alpha=0.5)
            ax.set_ylim(-0.02, 1.02)
            if horizon is not None:
                ax.set_xlim(0, horizon)
            ax.set_xlabel(xlabel)
            if level is not None:
                ax.set_title(f"{facet}: {level}")
        for row in axes:
            row[0].set_ylabel("fraction not yet at target")
        _hide_unused(axes, len(panels))
        handles, labels = axes.flat[0].get_legend_handles_labels()
        handles.append(Line2D([], [], marker="+", ls="none", color="black"))
        labels.append("censored (never reached)")
        axes.flat[0].legend(handles, labels, loc="best", frameon=False)
        fig.suptitle(title or "Time to target: Kaplan–Meier estimate with 95 % CI")
        return _save(fig, path, dpi)


def plot_perturbation_ratio(runs: pd.DataFrame, path, *, metric: str = "perturbation_ratio",
                            group: str = "variant", hue: str | None = "attention",
                            title: str | None = None, dpi: int = 150) -> Path:
    """Size of the perturbation relative to the Adam step, per variant, on a log axis.

    One dot per run (deterministic horizontal jitter), a black tick at each variant's median.
    Runs with a non-positive ratio (AdamW: no perturbation) cannot sit on a log axis; they
    are left out and counted in the x label.

    Args:
        runs: the runs table (``group``, ``metric``, optionally ``hue``).
        path: PNG file to write.
        metric: the ratio column.
        group: one column of dots per level (variant).
        hue: optional column coloured by level (attention).
        title, dpi: title and resolution.
    """
    vals = pd.to_numeric(runs[metric], errors="coerce")
    ok = vals > 0
    dropped = int((vals.notna() & ~ok).sum())
    data = runs[ok].assign(_y=vals[ok])
    names = sorted(data[group].dropna().unique())
    if not names:
        raise ValueError(f"no run has a positive {metric}")
    use_hue = hue is not None and hue in data.columns and data[hue].notna().any()
    hue_levels = sorted(data[hue].dropna().unique()) if use_hue else [None]
    hue_colors = {h: _PALETTE[i % len(_PALETTE)] for i, h in enumerate(hue_levels)}
    rng = np.random.default_rng(0)
    with mpl.rc_context(STYLE):
        fig, axes = _figure(1, 1, max(4.0, 0.9 * len(names) + 2), 3.8)
        ax = axes[0, 0]
        width = 0.6 / len(hue_levels)
        for i, name in enumerate(names):
            sub = data[data[group] == name]
            for j, h in enumerate(hue_levels):
                part = sub if h is None else sub[sub[hue] == h]
                if part.empty:
                    continue
                center = i + (j - (len(hue_levels) - 1) / 2) * width
                xs = center + rng.uniform(-0.35, 0.35, len(part)) * width
                ax.scatter(xs, part["_y"], s=14, alpha=0.75,
                           color=hue_colors[h] if h is not None else _PALETTE[0],
                           label=str(h) if (h is not None and i == 0) else None)
                ax.hlines(np.median(part["_y"]), center - width / 2, center + width / 2,
                          color="black", lw=1.8, zorder=3)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(_label(metric))
        xl = group if dropped == 0 else f"{group} ({dropped} runs with ratio ≤ 0 not shown)"
        ax.set_xlabel(xl)
        if use_hue:
            handles = [Line2D([], [], marker="o", ls="none", color=hue_colors[h], label=str(h))
                       for h in hue_levels]
            handles.append(Line2D([], [], color="black", lw=1.8, label="median"))
            ax.legend(handles=handles, title=hue, frameon=False, loc="best")
        ax.set_title(title or "Perturbation size relative to the Adam step")
        return _save(fig, path, dpi)


def _verdict_color(v: str) -> str:
    v = str(v)
    for key, color in VERDICT_COLORS.items():
        if v.startswith(key):
            return color
    return VERDICT_COLORS["no detectable difference"]


def plot_forest(stats_table: pd.DataFrame, path, *, metrics: Sequence[str] | None = None,
                baseline: str | None = None, cell_keys: Sequence[str] = ("attention", "lr"),
                title: str | None = None, dpi: int = 150) -> Path:
    """Forest plot of paired differences with CIs, one panel per metric.

    Each row is one comparison of the stats table: a dot at ``diff`` and a bar from
    ``ci_low`` to ``ci_high``, coloured by the verdict; a vertical line at 0 and, where a
    TOST margin is set, a shaded ±margin band.

    Args:
        stats_table: output of :func:`ablations.stats.compare_all`.
        path: PNG file to write.
        metrics: metrics to show (default: all, in table order).
        baseline: show only comparisons against this baseline.
        cell_keys: columns added to the row labels when they vary.
        title, dpi: title and resolution.
    """
    df = stats_table
    if baseline is not None:
        df = df[df["baseline"] == baseline]
    if metrics is None:
        metrics = list(dict.fromkeys(df["metric"]))
    df = df[df["metric"].isin(metrics)]
    if df.empty:
        raise ValueError("no comparison to plot")
    keys = [k for k in cell_keys if k in df.columns and df[k].nunique(dropna=True) > 1]
    sizes = [int((df["metric"] == m).sum()) for m in metrics]
    heights = [max(1.2, 0.32 * s + 0.7) for s in sizes]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(7.0, sum(heights) + 0.8), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(metrics), 1, squeeze=False,
                            gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, metric in zip(axes, metrics, strict=True):
            sub = df[df["metric"] == metric].reset_index(drop=True)
            ys = np.arange(len(sub))[::-1]
            labels = []
            for y, (_, r) in zip(ys, sub.iterrows(), strict=True):
                c = _verdict_color(r["verdict"])
                lo, hi = r["ci_low"], r["ci_high"]
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.hlines(y, lo, hi, color=c, lw=2)
                ax.plot(r["diff"], y, "o", color=c, ms=5)
                where = _cell_label(r.to_dict(), keys)
                labels.append(f"{r['variant']} − {r['baseline']}"
                              + (f" [{where}]" if where else "") + f"  (n={int(r['n'])})")
            margins = pd.to_numeric(sub["tost_margin"], errors="coerce").dropna().unique()
            if margins.size == 1:
                ax.axvspan(-margins[0], margins[0], color=VERDICT_COLORS["equivalent"],
                           alpha=0.08, lw=0)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_yticks(ys, labels[::1])
            ax.set_ylim(-0.7, len(sub) - 0.3)
            ax.grid(axis="y", visible=False)
            ax.set_title(_label(metric), loc="left")
            ax.set_xlabel(f"difference in {_label(metric)} (variant − baseline), 95 % CI")
        handles = [Patch(color=VERDICT_COLORS[k], label=k)
                   for k in ("better", "worse", "equivalent", "no detectable difference")]
        if df["verdict"].astype(str).str.match(r"^(higher|lower)$").any():
            handles.append(Patch(color=VERDICT_COLORS["higher"], label="higher / lower"))
        handles.append(Patch(color=VERDICT_COLORS["equivalent"], alpha=0.15,
                             label="± equivalence margin"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle(title or "Paired differences against the baseline (Holm-corrected verdicts)")
        return _save(fig, path, dpi)
