"""Dose-response: how a variant's effect against AdamW grows with the size of its term.

The dose is the *measured* ratio ‖λ·Q‖/‖Adam step‖ of a run (the classifier arm's
``perturbation_ratio``, a mean over sampled steps), reached two ways: by the quantum weight λ
at the unscaled loss (the *λ sweep*), and by the gradient scale c (the training loss times c,
which AdamW is invariant to; the *loss-scale sweep*, at one λ). Each point (variant, c) is
compared with AdamW at the same c, paired by seed, so the comparison removes the seed's data
order, init and noise, and AdamW's own (ε-level) dependence on c.

Pre-stated rule (:data:`DETECTION_RULE`): per metric, every point of every variant and both
sweeps is one Holm family of paired t tests against AdamW at its loss scale; a point is
*detectable* when its Holm-adjusted p < α (0.05); the ratio at which a difference from AdamW
first becomes detectable is, per perturbation family and sweep, the smallest median measured
ratio among its detectable points (none: not detectable at any dose run).

Time to target enters as the *capped* epochs to target: min(T, H + 1), with T the first epoch
at the target and H the training length. A run that never reaches the target has T ≥ H + 1
(epochs are whole), so the capped value H + 1 is exact, not imputed: every run has one, and
the paired t test applies to it (it is the restricted mean time to target, horizon H + 1,
observed run by run).

Pure computation: tables in, tables out (:mod:`ablations.stats`). Paired statistics are
:func:`ablations.stats.paired_comparison`'s; Holm's correction :func:`ablations.stats.holm`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._common import as_float
from .paired import holm, paired_comparison
from .summaries import parse_lambda

__all__ = ["DETECTION_RULE", "DOSE_COLUMNS", "capped_time_to_target", "dose_points",
           "first_detectable"]

#: the rule, as the report states it (module docstring)
DETECTION_RULE = (
    "every point (variant, λ, loss scale c) against AdamW at the same c, paired by seed; a "
    "paired t test per point and metric, Holm over all points of all variants and both sweeps "
    "on that metric; a point is detectable when its Holm-adjusted p < {alpha:g}; the ratio at "
    "which a difference first becomes detectable is, per family and sweep, the smallest "
    "median measured ‖λQ‖/‖Adam step‖ among its detectable points")

#: the columns of :func:`dose_points`, in order
DOSE_COLUMNS = ("family", "lam", "loss_scale", "variant", "sweeps", "n", "n_diverged",
                "ratio", "ratio_low", "ratio_high", "mean_variant", "mean_baseline", "diff",
                "ci_low", "ci_high", "p_ttest", "p_holm", "detectable", "direction")


def capped_time_to_target(times, horizon: float) -> np.ndarray:
    """min(T, H + 1) per run: T the epochs to target (NaN or missing: never reached within
    the H epochs trained, so T ≥ H + 1), H ``horizon``. Exact for whole-epoch times."""
    t = as_float(times)
    return np.where(np.isfinite(t), np.minimum(t, horizon + 1.0), horizon + 1.0)


def _sweeps(lam: float, loss_scale: float, sweep_lambda: float) -> str:
    """Which sweeps a point belongs to: "λ" (loss scale 1), "loss scale" (λ = the loss-scale
    sweep's weight), or both (the shared point, λ at c = 1)."""
    parts = []
    if math.isclose(loss_scale, 1.0):
        parts.append("λ")
    if math.isclose(lam, sweep_lambda):
        parts.append("loss scale")
    return "+".join(parts)


def dose_points(runs: pd.DataFrame, metric: str, *, higher_is_better: bool | None,
                baseline: str = "adamw", scale_col: str = "loss_scale",
                ratio_col: str = "perturbation_ratio", sweep_lambda: float = 0.5,
                cell_keys: tuple[str, ...] = ("attention", "lr"),
                families: tuple[str, ...] | None = None,
                alpha: float = 0.05) -> pd.DataFrame:
    """One row per dose point: a variant at one loss scale, against ``baseline`` at the same.

    Args:
        runs: the runs table with ``variant``, ``seed``, ``metric``, ``ratio_col`` and
            ``scale_col`` (the run's loss scale c; absent: every run at c = 1) columns, and
            optionally ``diverged`` and the ``cell_keys``.
        metric: the compared metric (e.g. ``final_val_acc``, or a capped time to target from
            :func:`capped_time_to_target`).
        higher_is_better: the metric's direction (None: none), for ``direction``.
        baseline: the variant every point is compared with at its own loss scale.
        scale_col, ratio_col: the loss-scale and measured-ratio columns.
        sweep_lambda: the λ of the loss-scale sweep (which points it holds: ``sweeps``).
        cell_keys: further columns a pair must share (those absent are ignored).
        families: the perturbation families kept (default: all with an explicit λ).
        alpha: level of the tests and intervals.

    Returns:
        :data:`DOSE_COLUMNS`: family and λ (:func:`ablations.stats.parse_lambda`), loss_scale,
        variant, sweeps ("λ", "loss scale" or "λ+loss scale"), n pairs, n_diverged (variant
        runs flagged diverged: their metric may be missing, and such pairs drop out), ratio
        (median measured ratio of the variant's paired runs) with its min and max, the paired
        means, diff (variant − baseline), the t interval, p_ttest, p_holm (Holm over every
        row), detectable (p_holm < alpha), direction ("better", "worse", "higher", "lower" or
        "" when not detectable). Sorted by family, loss scale, then ratio.
    """
    if runs.empty:
        return pd.DataFrame(columns=list(DOSE_COLUMNS))
    df = runs.copy()
    if scale_col not in df.columns:
        df[scale_col] = 1.0
    df[scale_col] = as_float(df[scale_col])
    keys = tuple(k for k in (*cell_keys, scale_col) if k in df.columns)
    rows = []
    for (variant, scale), sub in df.groupby(["variant", scale_col], sort=True):
        if variant == baseline:
            continue
        family, lam = parse_lambda(variant)
        if not np.isfinite(lam) or (families is not None and family not in families):
            continue
        base = df[(df["variant"] == baseline) & np.isclose(df[scale_col], scale)]
        pair = pd.concat([sub, base])
        res = paired_comparison(pair, metric, variant, baseline, tost_margin=None,
                                cell_keys=keys, n_boot=0, alpha=alpha)
        paired_seeds = set(base["seed"]) & set(sub["seed"])
        mine = sub[sub["seed"].isin(paired_seeds)]
        ratio = as_float(mine[ratio_col]) if ratio_col in mine.columns else np.array([])
        ratio = ratio[np.isfinite(ratio)]
        n_div = int(np.nansum(as_float(mine["diverged"]))) if "diverged" in mine.columns else 0
        rows.append(dict(
            family=family, lam=lam, loss_scale=float(scale), variant=variant,
            sweeps=_sweeps(lam, float(scale), sweep_lambda), n=res["n"], n_diverged=n_div,
            ratio=float(np.median(ratio)) if ratio.size else math.nan,
            ratio_low=float(ratio.min()) if ratio.size else math.nan,
            ratio_high=float(ratio.max()) if ratio.size else math.nan,
            mean_variant=res["mean_variant"], mean_baseline=res["mean_baseline"],
            diff=res["diff"], ci_low=res["ci_low"], ci_high=res["ci_high"],
            p_ttest=res["p_ttest"]))
    out = pd.DataFrame(rows, columns=[c for c in DOSE_COLUMNS
                                      if c not in ("p_holm", "detectable", "direction")])
    if out.empty:
        return pd.DataFrame(columns=list(DOSE_COLUMNS))
    out["p_holm"] = holm(out["p_ttest"].to_numpy(float))
    out["detectable"] = (out["p_holm"] < alpha) & np.isfinite(out["diff"]) & (out["diff"] != 0)

    def direction(r) -> str:
        if not r["detectable"]:
            return ""
        up = r["diff"] > 0
        if higher_is_better is None:
            return "higher" if up else "lower"
        return "better" if up == bool(higher_is_better) else "worse"

    out["direction"] = out.apply(direction, axis=1)
    out = out.sort_values(["family", "loss_scale", "ratio", "lam"], na_position="last")
    return out[list(DOSE_COLUMNS)].reset_index(drop=True)


def first_detectable(points: pd.DataFrame,
                     sweeps: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per family and sweep, the smallest measured ratio at which a difference from AdamW is
    detectable (the pre-stated rule, :data:`DETECTION_RULE`), from :func:`dose_points`.

    Args:
        points: the table of :func:`dose_points`.
        sweeps: sweep name → the token of the ``sweeps`` column its points carry (default
            ``{"λ": "λ", "loss scale": "loss scale"}``).

    Returns:
        One row per (family, sweep) with points: family, sweep, n_points, ratio_range
        (smallest and largest median ratio run, as "a–b"), first_ratio (NaN: none
        detectable), and at that point lam, loss_scale, diff, ci_low, ci_high, p_holm,
        direction, plus below_ratio: the largest ratio under first_ratio whose point is not
        detectable (NaN if none; the bracket of the threshold).
    """
    sweeps = dict(sweeps or {"λ": "λ", "loss scale": "loss scale"})
    cols = ["family", "sweep", "n_points", "ratio_range", "first_ratio", "below_ratio", "lam",
            "loss_scale", "diff", "ci_low", "ci_high", "p_holm", "direction"]
    rows = []
    if points.empty:
        return pd.DataFrame(columns=cols)
    for family in sorted(points["family"].unique()):
        fam = points[points["family"] == family]
        for sweep, token in sweeps.items():
            sub = fam[fam["sweeps"].str.split("+").map(lambda s, t=token: t in s)]
            sub = sub[np.isfinite(sub["ratio"].to_numpy(float))].sort_values("ratio")
            if sub.empty:
                continue
            hit = sub[sub["detectable"].astype(bool)]
            row = dict(family=family, sweep=sweep, n_points=len(sub),
                       ratio_range=f"{sub['ratio'].min():.3g}–{sub['ratio'].max():.3g}",
                       first_ratio=math.nan, below_ratio=math.nan, lam=math.nan,
                       loss_scale=math.nan, diff=math.nan, ci_low=math.nan, ci_high=math.nan,
                       p_holm=math.nan, direction="")
            if not hit.empty:
                first = hit.iloc[0]
                row.update({k: first[k] for k in ("lam", "loss_scale", "diff", "ci_low",
                                                  "ci_high", "p_holm", "direction")})
                row["first_ratio"] = float(first["ratio"])
                under = sub[(sub["ratio"] < first["ratio"]) & ~sub["detectable"].astype(bool)]
                if not under.empty:
                    row["below_ratio"] = float(under["ratio"].max())
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)
