"""Figures of a grid of several tasks: one per task (each variant's runs by data seed, and its
paired difference from the baseline with the data seed as a random effect), one across tasks
(IQM of normalised scores and probability of improvement, rliable style) and the performance
profiles of time to target (AlgoPerf style). Drawing only, as :mod:`ablations.plots`: the
tables arrive computed by :mod:`ablations.stats.across`; every function returns a Figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .panels import line_handle, require
from .style import REFERENCE_COLOR, level_colors, new_figure, themed, variant_color

__all__ = ["plot_task", "plot_across_tasks", "plot_performance_profiles"]


def _variant_order(variants, baseline: str | None) -> list[str]:
    return sorted(map(str, set(variants)), key=lambda v: (v != baseline, v))


@themed
def plot_task(runs: pd.DataFrame, seed_diffs: pd.DataFrame, effects: pd.DataFrame, *,
              value: str, baseline: str = "adamw", cluster: str = "data_seed",
              value_label: str | None = None, ceiling: float | None = None,
              chance: float | None = None, title: str | None = None) -> Figure:
    """One task: left, every run's ``value`` per variant, coloured by data seed (the data
    seeds side by side, a bar at each one's mean), the task's chance level and ceiling as
    dotted lines; right, each variant's paired difference from ``baseline``: a dot per data
    seed (its mean over the paired run seeds), the estimate with its 95 % interval when the
    data seed is a random effect (black), and the interval that treats every pair as
    independent (grey, thin).

    Args:
        runs: the task's runs (``variant``, ``cluster``, ``value``).
        seed_diffs: :func:`ablations.stats.across.data_seed_differences` for every variant
            against the baseline, with a ``variant`` column.
        effects: :func:`ablations.stats.across.per_task_effects` likewise (diff, ci_low,
            ci_high, naive_ci_low, naive_ci_high, variant).

    Raises:
        ValueError: a needed column is missing or a table is empty.
    """
    require(runs, ["variant", cluster, value], "plot_task")
    label = value_label or value.replace("_", " ")
    order = _variant_order(runs["variant"], baseline)
    seeds = sorted(runs[cluster].dropna().unique())
    colors = level_colors(seeds)
    others = [v for v in order if v != baseline]
    fig, axes = new_figure(1, 2, 4.2 + 1.1 * len(order), 3.9,
                           gridspec_kw={"width_ratios": [len(order), max(1, len(others))]})
    ax = axes[0, 0]
    width = 0.7 / max(1, len(seeds))
    for i, v in enumerate(order):
        for j, s in enumerate(seeds):
            x = i - 0.35 + width * (j + 0.5)
            vals = pd.to_numeric(runs.loc[(runs["variant"] == v) & (runs[cluster] == s),
                                          value], errors="coerce").dropna().to_numpy(float)
            if not vals.size:
                continue
            jitter = np.linspace(-0.25, 0.25, vals.size) * width if vals.size > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), vals, s=12, color=colors[str(s)], lw=0,
                       zorder=3, alpha=0.85)
            ax.hlines(vals.mean(), x - width / 2, x + width / 2, color=colors[str(s)], lw=2)
    for level, name in ((ceiling, "ceiling"), (chance, "chance")):
        if level is not None:
            ax.axhline(level, color=REFERENCE_COLOR, ls=":", lw=1)
            ax.annotate(name, (len(order) - 0.5, level), xytext=(2, 2),
                        textcoords="offset points", ha="right", fontsize=8,
                        color=REFERENCE_COLOR)
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax.grid(axis="x", visible=False)
    ax.set(xlabel="", ylabel=label, title=f"{label} per run, by data seed")
    ax = axes[0, 1]
    for i, v in enumerate(others):
        d = seed_diffs[seed_diffs["variant"] == v] if "variant" in seed_diffs.columns else \
            seed_diffs.iloc[:0]
        for j, s in enumerate(seeds):
            pt = d[d[cluster] == s]["diff"].to_numpy(float)
            if pt.size:
                ax.scatter(i - 0.15 + 0.3 * j / max(1, len(seeds) - 1), pt[0], s=22,
                           color=colors[str(s)], lw=0, zorder=3)
        e = effects[effects["variant"] == v] if "variant" in effects.columns else \
            effects.iloc[:0]
        if len(e):
            r = e.iloc[0]
            ax.vlines(i + 0.28, r["naive_ci_low"], r["naive_ci_high"], color=REFERENCE_COLOR,
                      lw=1)
            ax.vlines(i + 0.22, r["ci_low"], r["ci_high"], color="black", lw=2)
            ax.scatter(i + 0.22, r["diff"], color=variant_color(v), s=30, zorder=4,
                       edgecolor="black", lw=0.6)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(others)), others, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(others) - 0.4)
    ax.grid(axis="x", visible=False)
    ax.set(xlabel="", ylabel=f"{label}: variant − {baseline}",
           title=f"paired difference from {baseline}")
    handles = [line_handle(colors[str(s)], f"data seed {s}", marker="o", ls="none")
               for s in seeds]
    handles += [line_handle("black", "95 % CI, data seed random", lw=2),
                line_handle(REFERENCE_COLOR, "95 % CI, pairs independent", lw=1)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle(title or label)
    return fig


def _intervals(ax, table: pd.DataFrame, est: str, order: Sequence[str], *,
               wide: tuple[str, str] | None = None) -> None:
    """Horizontal intervals, one row per variant (top: the first of ``order``): a thick bar
    ci_low..ci_high and, with ``wide``, a thin one for the wider interval of those columns."""
    t = table.set_index("variant")
    for i, v in enumerate(order):
        if v not in t.index:
            continue
        y = len(order) - 1 - i
        r = t.loc[v]
        c = variant_color(v)
        if wide is not None and np.isfinite([r[wide[0]], r[wide[1]]]).all():
            ax.hlines(y, r[wide[0]], r[wide[1]], color=c, lw=1, alpha=0.8)
        ax.hlines(y, r["ci_low"], r["ci_high"], color=c, lw=5, alpha=0.55)
        ax.scatter(r[est], y, color=c, s=36, zorder=3, edgecolor="black", lw=0.5)
    ax.set_yticks(range(len(order)), list(reversed(order)))
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.grid(axis="y", visible=False)


@themed
def plot_across_tasks(iqm: pd.DataFrame, poi: pd.DataFrame, *, baseline: str = "adamw",
                      n_tasks: int | None = None, title: str | None = None) -> Figure:
    """Across tasks: left, each variant's IQM of normalised scores (0 chance, 1 ceiling) with
    its stratified-bootstrap 95 % CI (thick: runs resampled within tasks, as rliable; thin:
    data seeds resampled too); right, the probability of improvement over ``baseline``
    likewise, a dotted line at ½ (no difference).

    Args:
        iqm: variant, iqm, ci_low, ci_high and optionally ci_low_data, ci_high_data.
        poi: variant, poi, ci_low, ci_high (same optional columns); the baseline has no row.
    """
    require(iqm, ["variant", "iqm", "ci_low", "ci_high"], "plot_across_tasks")
    order = _variant_order(iqm["variant"], baseline)
    fig, axes = new_figure(1, 2, 10.0, 0.45 * len(order) + 2.0)
    wide = ("ci_low_data", "ci_high_data")
    _intervals(axes[0, 0], iqm, "iqm", order, wide=wide if wide[0] in iqm.columns else None)
    axes[0, 0].set(xlabel="IQM of normalised score (0: chance, 1: ceiling)",
                   title="interquartile mean, all runs of all tasks")
    others = [v for v in order if v != baseline]
    if len(poi):
        _intervals(axes[0, 1], poi, "poi", others,
                   wide=wide if wide[0] in poi.columns else None)
    axes[0, 1].axvline(0.5, color="black", ls=":", lw=1)
    axes[0, 1].set(xlabel=f"P(variant > {baseline})",
                   title=f"probability of improvement over {baseline}")
    handles = [line_handle("black", "95 % CI, runs resampled within tasks", lw=5, alpha=0.55),
               line_handle("black", "95 % CI, data seeds resampled too", lw=1)]
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    where = f" ({n_tasks} tasks)" if n_tasks else ""
    fig.suptitle(title or f"Across tasks{where}: stratified bootstrap, strata = tasks")
    return fig


@themed
def plot_performance_profiles(profiles: pd.DataFrame, *, tau_max: float = 4.0,
                              baseline: str = "adamw", time_label: str = "epochs to target",
                              scores: pd.DataFrame | None = None,
                              title: str | None = None) -> Figure:
    """Performance profiles: per variant, the share of problems (weighted) whose time to
    target is within a factor τ of the fastest variant's, against τ from 1 to ``tau_max``
    (a step function; a variant that never reached the target on a problem never counts it).

    Args:
        profiles: :func:`ablations.stats.across.performance_profiles` (variant, tau, rho).
        scores: optional :func:`ablations.stats.across.profile_scores` (variant, score) for
            the legend.
    """
    require(profiles, ["variant", "tau", "rho"], "plot_performance_profiles")
    order = _variant_order(profiles["variant"], baseline)
    score = {} if scores is None else dict(zip(scores["variant"], scores["score"],
                                               strict=True))
    fig, axes = new_figure(1, 1, 6.4, 4.2)
    ax = axes[0, 0]
    offsets = np.linspace(-0.004, 0.004, len(order)) if len(order) > 1 else [0.0]
    for off, v in zip(offsets, order, strict=True):
        g = profiles[profiles["variant"] == v].sort_values("tau")
        tau = np.append(g["tau"].to_numpy(float), tau_max)
        rho = np.append(g["rho"].to_numpy(float), g["rho"].to_numpy(float)[-1])
        name = v + (f" (score {score[v]:.2f})" if v in score else "")
        ax.step(tau, rho + off, where="post", color=variant_color(v), lw=1.8, label=name)
    ax.set(xlim=(1, tau_max), ylim=(-0.03, 1.03),
           xlabel=f"τ: {time_label} ÷ the fastest variant's",
           ylabel="share of problems within τ")
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title or "Performance profiles of time to target")
    return fig
