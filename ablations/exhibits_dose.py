"""The dose-response exhibit (``dose_response``): where does the term start to matter, and in
which direction?

A study grid (``[grid].exhibits = ["dose_response"]``, configs/classifier-dose.toml) runs each
perturbation family at a ladder of quantum weights λ at the unscaled loss, and at one λ with
the training loss multiplied by c (cells of their own task, the arm option ``loss_scale``).
This section compares every point with AdamW at the same c, paired by seed
(:func:`ablations.stats.dose_points`), on the arm's validation metric and its validation time
to target (capped: :func:`ablations.stats.capped_time_to_target`), against the measured ratio
‖λQ‖/‖Adam step‖, and states the ratio at which a difference first becomes detectable under
the pre-stated rule :data:`ablations.stats.DETECTION_RULE`. Registered into
:data:`ablations.exhibits.EXHIBITS` when that module loads.
"""

from __future__ import annotations

import pandas as pd

from . import stats
from .exhibits import Context, exhibit, figure_link, md_table
from .fmt import num

__all__ = ["dose_response", "loss_scales"]

_FIRST_COLS = ["family", "sweep", "n_points", "ratio_range", "first_ratio", "below_ratio",
               "lam", "loss_scale", "diff", "ci_low", "ci_high", "p_holm", "direction"]
_POINT_COLS = ["family", "lam", "loss_scale", "n", "n_diverged", "ratio", "mean_variant",
               "mean_baseline", "diff", "ci_low", "ci_high", "p_holm", "direction"]


def loss_scales(cfg) -> dict[str, float]:
    """Task name → the loss scale c of its runs (the arm option ``loss_scale``; 1 for an arm
    without it): "" for the grid's own options, and each cell's task with its options."""
    default = float(getattr(cfg.arm_options, "loss_scale", 1.0))
    out = {"": float(cfg.options.get("loss_scale", default))}
    for cell in cfg.cells:
        if cell.get("task"):
            merged = {**cfg.options, **cell.get("options", {})}
            out[cell["task"]] = float(merged.get("loss_scale", default))
    return out


def _ratio_text(first: pd.DataFrame) -> str:
    """One clause per family: the first detectable ratio of each sweep, or none."""
    parts = []
    for fam, sub in first.groupby("family", sort=True):
        bits = []
        for _, r in sub.iterrows():
            if pd.notna(r["first_ratio"]):
                at = (f"λ = {r['lam']:g}" if r["sweep"] == "λ" else f"c = {r['loss_scale']:g}")
                bits.append(f"{r['sweep']} sweep {num(r['first_ratio'], 3)} ({at}, "
                            f"{r['direction']})")
            else:
                bits.append(f"{r['sweep']} sweep none up to {r['ratio_range'].split('–')[-1]}")
        parts.append(f"{fam}: " + "; ".join(bits))
    return "; ".join(parts)


@exhibit("dose_response")
def dose_response(ctx: Context, claim=None) -> list[str]:
    """The dose-response section: per metric, the first detectable ratio per family and
    sweep, a figure of every point's paired difference against its measured ratio, and the
    points themselves."""
    from .sweep_plots import plot_dose_response

    arm, runs = ctx.arm, ctx.runs
    base = arm.baselines[0]
    if "perturbation_ratio" not in runs.columns or base not in set(runs["variant"]):
        return ["## Dose-response\n", f"_Not run yet: no runs of {base} with a measured "
                                      "perturbation ratio._\n"]
    scales = loss_scales(ctx.cfg)
    runs = runs.assign(loss_scale=runs["task"].fillna("").map(scales).astype(float))
    metrics: list[tuple[str, str, bool]] = []  # (column, label, higher is better)
    acc = arm.selection_metric or arm.metrics[0].name
    if acc in runs.columns:
        metrics.append((acc, ctx.label(acc), arm.metric(acc).higher_is_better is not False))
    target = arm.difficulty
    horizon = getattr(ctx.cfg.arm_options, target.horizon, None) if target else None
    if target is not None and horizon is not None and target.time in runs.columns:
        col = f"{target.time}_capped"
        runs[col] = stats.capped_time_to_target(runs[target.time], float(horizon))
        metrics.append((col, f"{ctx.label(target.time)} (capped at {int(horizon) + 1})",
                        False))
    # the loss-scale sweep's λ: the weight of the points run at c ≠ 1 (0.5 without any)
    scaled = runs.loc[runs["loss_scale"] != 1.0, "variant"].map(
        lambda v: stats.parse_lambda(v)[1])
    scaled = scaled[scaled > 0]
    sweep_lambda = float(scaled.mode().iloc[0]) if len(scaled) else 0.5
    out = ["## Dose-response: where does the term start to matter?\n",
           f"Each variant at each quantum weight λ (loss × 1), and at λ = {sweep_lambda:g} with "
           f"the training loss multiplied by c ∈ "
           f"{{{', '.join(f'{c:g}' for c in sorted(set(scales.values())))}}} (the arm option "
           f"`loss_scale`; the clipping threshold scales with it, so {base} is invariant to c "
           f"up to ε), against {base} at the same c, paired by seed. Dose: the median over "
           "the point's runs of the measured ratio ‖λQ‖/‖Adam step‖ (each run's mean over "
           f"its sampled steps). Rule, stated before the runs: "
           f"{stats.DETECTION_RULE.format(alpha=ctx.evidence.alpha)}. Time to target is "
           f"capped at the horizon + 1 epochs: a run that never reaches the target within "
           f"{num(horizon, 0)} epochs needs at least {num((horizon or 0) + 1, 0)}, so the capped "
           "value is exact and every run has one. Runs that diverged (`n_diverged`) have no "
           "final accuracy and drop out of its pairs.\n"]
    if len(set(scales.values())) > 1:  # AdamW itself at each c (invariant only up to ε)
        adamw = runs[runs["variant"] == base]
        per_c = pd.concat([stats.summarize(adamw, col, "loss_scale").assign(metric=label)
                           for col, label, _ in metrics], ignore_index=True)
        out += [f"{base} at each loss scale (it is invariant to c only where its gradients "
                "are large against ε; the points compare with it at their own c):\n",
                md_table(per_c, ["metric", "loss_scale", "n", "mean", "ci_low", "ci_high"], 4)]
    for col, label, higher in metrics:
        points = stats.dose_points(runs, col, higher_is_better=higher, baseline=base,
                                   sweep_lambda=sweep_lambda, alpha=ctx.evidence.alpha)
        if points.empty:
            continue
        first = stats.first_detectable(points)
        name = col.replace("_", "-")
        fig = plot_dose_response(points, metric_label=label, first=first, baseline=base)
        out += [f"### {label.capitalize()}\n",
                f"First detectable ratio per family and sweep: {_ratio_text(first)}.\n",
                md_table(first, _FIRST_COLS, 4),
                figure_link(ctx, f"dose_response_{name}.png", fig),
                f"Every point ({label}, variant − {base}; Holm over these {len(points)} "
                "points):\n", md_table(points, _POINT_COLS, 4)]
    return out
