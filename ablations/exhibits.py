"""Report exhibits: the tables and figures a report section shows, by name.

A claim lists the exhibits of its section (``Claim.exhibits``) and an arm the analyses after
the claims (``Arm.analyses``); each name maps to one function here, which reads the report's
:class:`Context` (tables computed once per grid), calls :mod:`ablations.stats` to compute and
:mod:`ablations.plots` to draw, and returns markdown blocks. Figures go into
``ctx.figures`` (file name → Figure); the report saves them (it alone does I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .claims import Claim, ClaimResult, Evidence
from .fmt import num, pct, pval

__all__ = ["Context", "EXHIBITS", "exhibit", "md_table", "figure_link"]


@dataclass
class Context:
    """Everything one arm's report reads, computed once.

    cfg: the grid config; arm: its :class:`ablations.arms.Arm`; runs, curves: the runs table
    and the long curve table of the current records; stats: the ``stats.csv`` table;
    evidence: what the claims' verdicts read; results: claim id → ClaimResult; figures:
    file name → Figure, saved by the report; sweep: the runs table of the selection grid of
    ``[grid].select_lr`` (``cfg.selected_from``), None without one.
    """

    cfg: Any
    arm: Any
    runs: pd.DataFrame
    curves: pd.DataFrame
    stats: pd.DataFrame
    records: list[dict]
    evidence: Evidence
    results: dict[str, ClaimResult] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    sweep: pd.DataFrame | None = None

    @property
    def lr(self) -> float:
        return self.cfg.baseline_lr

    def label(self, metric: str) -> str:
        try:
            return self.arm.metric(metric).display
        except KeyError:
            return metric.replace("_", " ")

    def in_cell(self, cell: dict) -> pd.Series:
        mask = pd.Series(True, index=self.runs.index)
        for k, v in cell.items():
            if k in self.runs.columns:
                mask &= np.isclose(self.runs[k], v) if isinstance(v, float) else (
                    self.runs[k] == v)
        return mask


Exhibit = Callable[[Context, "Claim | None"], list[str]]
EXHIBITS: dict[str, Exhibit] = {}


def exhibit(name: str) -> Callable[[Exhibit], Exhibit]:
    """Decorator: register an exhibit function under ``name``."""

    def wrap(fn: Exhibit) -> Exhibit:
        EXHIBITS[name] = fn
        return fn

    return wrap


def md_table(df: pd.DataFrame | None, cols: list[str] | None = None, digits: int = 3) -> str:
    """A markdown table; p-value columns (``p_*``) formatted as p values."""
    if df is None or df.empty:
        return "_(no rows)_\n"
    cols = cols or list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df[cols].iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(pval(v) if c.startswith("p_") else (num(v, digits) if not isinstance(
                v, str) else v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def figure_link(ctx: Context, name: str, fig) -> str:
    """Register ``fig`` to be saved as ``figures/<name>`` and return its markdown link."""
    ctx.figures[name] = fig
    stem = name.rsplit(".", 1)[0]
    return f"![{stem}](figures/{name})\n"


def _cell(ctx: Context, claim: Claim | None) -> dict:
    return claim.cell_of(ctx.evidence) if claim is not None else {"lr": ctx.lr}


_STATS_COLS = ["variant", "attention", "lr", "n", "mean_variant", "mean_baseline", "diff",
               "ci_low", "ci_high", "p_ttest", "p_holm", "d_z", "p_tost", "tost_power", "power",
               "verdict"]


def _cols(df: pd.DataFrame, cols: list[str]) -> list[str]:
    return [c for c in cols if c in df.columns]


# ----------------------------------------------------------------------------- claim exhibits
@exhibit("comparisons")
def comparisons(ctx: Context, claim: Claim) -> list[str]:
    """Every variant against the claim's baseline on the claim's metric."""
    t = ctx.stats
    sub = t[(t["metric"] == claim.metric) & (t["baseline"] == claim.baseline)]
    return [f"All variants against {claim.baseline} ({ctx.label(claim.metric)}):\n",
            md_table(sub, _cols(sub, _STATS_COLS), 4)]


@exhibit("comparisons_all")
def comparisons_all(ctx: Context, claim: Claim) -> list[str]:
    """Every compared metric: every variant against the claim's baseline."""
    out = []
    for m in ctx.arm.compared_metrics:
        sub = ctx.stats[(ctx.stats["metric"] == m.name) & (ctx.stats["baseline"] ==
                                                          claim.baseline)]
        if not sub.empty:
            out.append(f"### {m.name} against {claim.baseline}\n")
            out.append(md_table(sub, _cols(sub, [c for c in _STATS_COLS
                                                 if c not in ("attention", "lr")]), 4))
    return out


@exhibit("null")
def null_control(ctx: Context, claim: Claim) -> list[str]:
    """Every variant's effect against the claim's baseline beside the null control's
    (:func:`ablations.stats.null_control`): a table and a figure; nothing when the grid has
    not run the null control."""
    from .null_plots import plot_null_control

    null = ctx.evidence.null
    if not null or claim.baseline == null:
        return []
    cell = {k: v for k, v in _cell(ctx, claim).items() if k in ctx.stats.columns}
    table = stats.null_control(ctx.stats, claim.metric, null, claim.baseline, cell=cell,
                               alpha=ctx.evidence.alpha)
    if table.empty:
        return []
    s, u = claim.scale, claim.unit

    def ci(r, suffix=""):
        d, lo, hi = (r[f"{k}{suffix}"] for k in ("diff", "ci_low", "ci_high"))
        if not np.isfinite(d):
            return "–"
        return f"{d * s:+.3g} [{lo * s:+.3g}, {hi * s:+.3g}]"

    shown = pd.DataFrame([{
        "variant": r["variant"], "n": int(r["n"]),
        f"diff vs {claim.baseline}{u} [95% CI]": ci(r),
        "p_holm": r["p_holm"], f"sd of paired diffs{u}": num(r["sd_diff"] * s, 3),
        "× nudge's sd": num(r["spread_ratio"], 2),
        f"diff vs {null}{u} [95% CI]": ci(r, "_vs_null"),
        "p_holm_vs_null": r["p_holm_vs_null"], "reading": r["reading"]}
        for _, r in table.iterrows()])
    ref = table.iloc[0]
    fig = plot_null_control(table, null=null, baseline=claim.baseline, scale=s, unit=u,
                            metric_label=ctx.label(claim.metric))
    return [f"### Against a nudge: the null control {null}\n",
            f"{null} adds a negligible random perturbation (λ = 0.001, DESIGN.md): its paired "
            f"difference to {claim.baseline} is {ci(ref)}{u} and the sd of its paired "
            f"differences {num(ref['null_sd'] * s, 3)}{u} (n = {int(ref['n'])}), the spread "
            "that chaotic divergence alone produces. Each variant's effect beside it: the sd "
            "of its paired differences as a multiple of the nudge's, and its paired difference "
            f"to the nudge (Holm over every variant against {null}); *differs from "
            f"{claim.baseline}, not from the nudge* marks an effect a nudge would match.\n",
            md_table(shown, None, 3), figure_link(ctx, f"null_control_{claim.metric}.png", fig)]


@exhibit("summary")
def summary(ctx: Context, claim: Claim) -> list[str]:
    summ = stats.summarize(ctx.runs, claim.metric, "variant")
    return [f"### {ctx.label(claim.metric).capitalize()} per variant\n", md_table(summ, None, 4)]


@exhibit("paired")
def paired(ctx: Context, claim: Claim) -> list[str]:
    from . import plots

    cell = _cell(ctx, claim)
    if claim.source == ctx.arm.name and "attention" not in cell and len(ctx.runs):
        cell["attention"] = ctx.runs["attention"].iloc[0]
    fig = plots.plot_paired_seeds(ctx.runs, claim.metric, baseline=claim.baseline, cell=cell,
                                  cell_keys=ctx.arm.cell_keys, stats_table=ctx.stats,
                                  metric_label=ctx.label(claim.metric))
    return [figure_link(ctx, f"paired_{claim.metric}.png", fig)]


@exhibit("forest")
def forest(ctx: Context, claim: Claim | None) -> list[str]:
    from . import plots

    baseline = claim.baseline if claim is not None else "adamw"
    metrics = [m.name for m in ctx.arm.compared_metrics if not m.timing]
    sub = ctx.stats[ctx.stats["baseline"] == baseline]
    fig = plots.plot_forest(sub, metrics=metrics, cell_keys=ctx.arm.cell_keys,
                            metric_labels={m: ctx.label(m) for m in metrics})
    return [figure_link(ctx, f"forest_vs_{baseline}.png", fig)]


@exhibit("aggregate")
def aggregate(ctx: Context, claim: Claim) -> list[str]:
    cell = _cell(ctx, claim)
    agg = stats.aggregate_metrics(ctx.runs[ctx.in_cell(cell)], claim.metric, group="variant",
                                  n_boot=2000)
    return [f"Aggregate {ctx.label(claim.metric)} per variant ({_cell_text(cell)}): mean and IQM "
            "with stratified-bootstrap 95% CIs.\n", md_table(agg, None, 4)]


def _cell_text(cell: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in cell.items())


@exhibit("poi")
def poi(ctx: Context, claim: Claim) -> list[str]:
    cell = _cell(ctx, claim)
    sub = ctx.runs[ctx.in_cell(cell)]
    higher = ctx.arm.metric(claim.metric).higher_is_better is not False
    base = sub[sub["variant"] == claim.baseline].set_index("seed")[claim.metric]
    rows = []
    for v in sorted(set(sub["variant"]) - {claim.baseline}):
        x = sub[sub["variant"] == v].set_index("seed")[claim.metric]
        common = x.index.intersection(base.index)
        if len(common) >= 2:
            p, lo, hi = stats.probability_of_improvement(
                x[common].to_numpy(), base[common].to_numpy(), higher_is_better=higher,
                n_boot=2000)
            rows.append({"variant": v, "n": len(common), f"P(variant > {claim.baseline})": p,
                         "ci_low": lo, "ci_high": hi})
    return [f"Probability of improvement over {claim.baseline} ({ctx.label(claim.metric)}, "
            "paired bootstrap CI):\n", md_table(pd.DataFrame(rows), None, 3)]


@exhibit("time_to_target")
def time_to_target(ctx: Context, claim: Claim) -> list[str]:
    from . import plots

    cell = _cell(ctx, claim)
    horizon = ctx.evidence.horizon
    sub = ctx.runs[ctx.in_cell(cell)]
    rows, medians = [], {}
    for v in sorted(set(sub["variant"]) - {claim.baseline}):
        r = stats.time_to_target(ctx.runs, v, claim.baseline, horizon=horizon, cell=cell)
        rows.append({k: r[k] for k in ["variant", "n_variant", "events_variant",
                                       "median_variant", "median_variant_low",
                                       "median_variant_high", "median_baseline",
                                       "logrank_chi2", "p_logrank", "reached_mean_variant",
                                       "reached_mean_baseline"]})
        medians[v], medians[claim.baseline] = r["median_variant"], r["median_baseline"]
    km = stats.kaplan_meier_by_group(sub, horizon=horizon)
    fig = plots.plot_kaplan_meier(km, horizon=horizon, baseline=claim.baseline, medians=medians,
                                  time_label="epoch")
    return [f"Kaplan–Meier {stats.KM_MEDIAN_RULE}; runs that never reached the target are "
            f"censored at {horizon:g} epochs; the paper's style (mean among runs that reached "
            "it) beside them.\n",
            md_table(pd.DataFrame(rows), None, 2), figure_link(ctx, "kaplan_meier.png", fig)]


@exhibit("lambda")
def lambda_sweep(ctx: Context, claim: Claim) -> list[str]:
    from .sweep_plots import plot_lambda_sweep

    cell = _cell(ctx, claim)
    sweep = stats.lambda_sweep(ctx.runs[ctx.in_cell(cell)], claim.metric, families=["sin"])
    fig = plot_lambda_sweep(sweep, metric_label=ctx.label(claim.metric))
    return [md_table(sweep, None, 4), figure_link(ctx, "lambda_sweep.png", fig)]


@exhibit("cost")
def cost(ctx: Context, claim: Claim) -> list[str]:
    """Other variants' cost per epoch, and the circuit attention's own cost."""
    cell = _cell(ctx, claim)
    lines = []
    for v in ("circuit-l0.5", "gauss-l0.5"):
        r = _row(ctx, claim.metric, v, claim.baseline, cell)
        if r is not None:
            lines.append(f"{v}: {pct(r['diff'] / r['mean_baseline'])} per epoch.")
    runs = ctx.runs
    if "attention" in runs.columns and {"quantum", "classical"} <= set(runs["attention"]):
        lr = np.isclose(runs["lr"], ctx.lr)
        base = runs["variant"] == claim.baseline
        a_q = runs[lr & base & (runs["attention"] == "quantum")][claim.metric].mean()
        a_c = runs[lr & base & (runs["attention"] == "classical")][claim.metric].mean()
        if np.isfinite(a_c) and a_c > 0:
            lines.append(f"Quantum attention itself costs {pct(a_q / a_c - 1)} per epoch "
                         f"against classical attention ({claim.baseline}, {a_q:.3f} vs "
                         f"{a_c:.3f} s).")
    return [" ".join(lines) + "\n"] if lines else []


def _row(ctx: Context, metric: str, variant: str, baseline: str, cell: dict) -> dict | None:
    from .claims import stats_row

    return stats_row(ctx.stats, metric, variant, baseline, **cell)


# ----------------------------------------------------------------------------- arm analyses
@exhibit("factorial")
def factorial(ctx: Context, claim: Claim | None) -> list[str]:
    metric = ctx.arm.metrics[0].name
    out = ["## Circuit or sinusoid? The 2×2 factorial\n"]
    try:
        fac = stats.factorial_2x2(ctx.runs[np.isclose(ctx.runs["lr"], ctx.lr)], metric)
        out.append(f"{ctx.label(metric).capitalize()}, attention (classical/quantum) × "
                   "optimizer (adamw/sin-l0.5), seed as random effect (mixed model) and "
                   "repeated-measures ANOVA:\n")
        out.append(md_table(fac, _cols(fac, ["term", "method", "estimate", "ci_low", "ci_high",
                                             "p_value", "n_seeds"]), 4))
    except Exception as err:  # a degenerate design is reported, not fatal
        out.append(f"_Factorial analysis not available: {err}_\n")
    return out


@exhibit("lr_check")
def lr_check(ctx: Context, claim: Claim | None) -> list[str]:
    metric = ctx.arm.metrics[0].name
    base, variant = ctx.arm.baselines[:2]  # the arm's headline pair
    attention = ctx.arm.attentions[0]
    runs = ctx.runs
    sel = (runs["attention"] == attention) & runs["variant"].isin([base, variant])
    if runs[sel]["lr"].nunique() < 2:  # one lr: the claims' sections show it already
        return []
    rows = []
    for lr in sorted(runs[sel]["lr"].unique()):
        r = _row(ctx, metric, variant, base, {"attention": attention, "lr": float(lr)})
        if r is not None:
            rows.append({"lr": lr, "n": r["n"], base: r["mean_baseline"],
                         variant: r["mean_variant"], "diff": r["diff"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "p_holm": r["p_holm"], "verdict": r["verdict"]})
    return ["## Learning-rate check\n",
            f"{variant} against {base} at each learning rate ({attention} attention, "
            f"{ctx.label(metric)}):\n", md_table(pd.DataFrame(rows), None, 4)]


@exhibit("perturbation")
def perturbation(ctx: Context, claim: Claim | None) -> list[str]:
    from . import plots

    if "perturbation_ratio" not in ctx.runs.columns:
        return []
    runs = ctx.runs[ctx.runs["variant"] != "adamw"]
    main = runs[ctx.in_cell({"attention": ctx.arm.attentions[0], "lr": ctx.lr})[runs.index]]
    ratio = stats.summarize(main, "perturbation_ratio", "variant")
    hue = "attention" if runs["attention"].nunique() > 1 else None
    fig = plots.plot_perturbation_ratio(runs, hue=hue,
                                        metric_label=ctx.label("perturbation_ratio"))
    return ["## How large is the perturbation?\n",
            "‖λ·Q‖ / ‖Adam direction‖ averaged over the sampled steps of each run:\n",
            md_table(ratio, None, 4), figure_link(ctx, "perturbation_ratio.png", fig)]


@exhibit("curves")
def curves(ctx: Context, claim: Claim | None) -> list[str]:
    from . import plots

    arm, cur = ctx.arm, ctx.curves
    if cur.empty or arm.curve_x not in cur.columns or arm.curve_value not in cur.columns:
        return []
    if "lr" in cur.columns:
        cur = cur[np.isclose(cur["lr"], ctx.lr)]
    out = ["## Learning curves\n"]
    target = getattr(ctx.cfg.arm_options, "target_acc", None) if arm.curve_value == \
        "test_acc" else None
    facet = "attention" if "attention" in cur.columns and cur["attention"].nunique() > 1 \
        else None
    base = [b for b in arm.baselines if b in set(cur["variant"])]
    if facet and base:  # the baselines under every level of the attention factor
        summ = stats.curve_summary(cur[cur["variant"].isin(base)], arm.curve_value,
                                   by=("variant", "attention"), x=arm.curve_x)
        fig = plots.plot_learning_curves(summ, value_label=arm.curve_label, x=arm.curve_x,
                                         facet=facet, baseline=None, target=target)
        out.append(figure_link(ctx, "learning_curves_baselines.png", fig))
    main = cur
    if "attention" in cur.columns:  # the arm's main attention, else the one that has run
        level = next((a for a in arm.attentions if (cur["attention"] == a).any()), None)
        main = cur[cur["attention"] == level]
    summ = stats.curve_summary(main, arm.curve_value, by=("variant", "attention"), x=arm.curve_x)
    fig = plots.plot_learning_curves(summ, value_label=arm.curve_label, x=arm.curve_x,
                                     facet=None, baseline=arm.baselines[0], target=target)
    out.append(figure_link(ctx, "learning_curves.png", fig))
    return out


@exhibit("throughput")
def throughput(ctx: Context, claim: Claim | None) -> list[str]:
    if "tokens_per_s" not in ctx.runs.columns:
        return []
    tp = stats.summarize(ctx.runs, "tokens_per_s", "variant")
    return ["### Throughput (tokens/s) per variant\n", md_table(tp, None, 0)]


# ----------------------------------------------------------------------------- setup
#: the classifier task's calibration targets (the arm's brief): Kaplan–Meier median epochs to
#: 90% in 3..10, mean final accuracy in 90..97%
CALIBRATION_TARGETS = {"median_epochs": (3.0, 10.0), "final_acc": (0.90, 0.97)}


@exhibit("calibration")
def calibration(ctx: Context, claim: Claim | None) -> list[str]:
    """One line per learning rate of the AdamW runs with classical attention: does the task
    sit inside its calibration targets? Grids of the earlier protocol only (no
    ``[grid].protocol``), whose batch and lr were chosen that way, on test accuracy: a grid of
    the paper or calibrated protocol chooses on validation data, in its selection grids'
    reports (:func:`difficulty`, :func:`lr_sensitivity`)."""
    runs = ctx.runs
    if "attention" not in runs.columns or ctx.cfg.protocol:
        return []
    cal_all = runs[(runs["attention"] == "classical") & (runs["variant"] == "adamw")]
    lrs = sorted(cal_all["lr"].unique())
    (m_lo, m_hi), (a_lo, a_hi) = (CALIBRATION_TARGETS["median_epochs"],
                                  CALIBRATION_TARGETS["final_acc"])
    out = []
    for lr in lrs:
        cal = cal_all[np.isclose(cal_all["lr"], lr)]
        t, e = stats.time_to_event(cal, horizon=ctx.evidence.horizon)
        med = stats.km_median(t, e)[0]
        acc = float(cal["final_test_acc"].mean())
        ok = (m_lo <= med <= m_hi if np.isfinite(med) else False) and a_lo <= acc <= a_hi
        tag = " (the reference)" if len(lrs) > 1 and np.isclose(lr, ctx.lr) else ""
        out.append(
            f"Calibration (AdamW, classical attention, lr {lr:g}{tag}, {len(cal)} seeds; test "
            f"split): Kaplan–Meier median epochs to 90% = {num(med, 1)}, mean final accuracy "
            f"{100 * acc:.2f}% — {'inside' if ok else 'OUTSIDE'} the targets (median "
            f"{m_lo:g}–{m_hi:g} epochs, final {100 * a_lo:g}–{100 * a_hi:g}%).\n")
    return out


# ----------------------------------------------------------------------------- tuning
@exhibit("lr_sensitivity")
def lr_sensitivity(ctx: Context, claim: Claim | None) -> list[str]:
    """The selection metric against the learning rate per variant, and each variant's
    selected lr: of this grid's runs (a grid that ran more than one lr), or, for a grid that
    takes its lrs from a selection grid (``[grid].select_lr``), of that grid's runs (its own
    task), which chose them."""
    from .sweep_plots import plot_lr_sensitivity
    from .tables import own_task

    metric = ctx.arm.selection_metric
    runs, source = ctx.runs, ""
    if ctx.sweep is not None:
        runs = own_task(ctx.sweep)
        source = (f" The curves are the runs of the selection grid `{ctx.cfg.selected_from.stem}`"
                  " (its report shows them in full); this grid runs at the lrs they chose.")
    if metric is None or metric not in runs.columns or runs["lr"].nunique() < 2:
        return []
    higher = ctx.arm.metric(metric).higher_is_better is not False
    table = stats.lr_selection(runs, metric, higher)
    chosen = table[table["selected"]]
    fig = plot_lr_sensitivity(table, metric_label=ctx.label(metric))
    picks = "; ".join(f"{r['variant']}" + (f" ({r['attention']})" if "attention" in r and
                                            runs["attention"].nunique() > 1 else "")
                      + f": lr {r['lr']:g} ({num(r['mean'], 4)})" for _, r in chosen.iterrows())
    return ["## Learning-rate sensitivity (validation)\n",
            f"Mean {ctx.label(metric)} over seeds at each learning rate, 95% t interval; each "
            f"variant's selected lr is its best mean ({'highest' if higher else 'lowest'}; ties: "
            f"the smaller lr). The test set plays no part in it. Selected: {picks}.{source}\n",
            md_table(table, None, 4), figure_link(ctx, "lr_sensitivity.png", fig)]


@exhibit("tuned_lr")
def tuned_lr(ctx: Context, claim: Claim | None) -> list[str]:
    """Both comparisons of a grid whose lrs were selected on validation (``[grid].select_lr``):
    every variant with a selected lr against the arm's first baseline at the shared lr (the
    baseline's selected lr, ``stats.csv``), and each at its own selected lr against the
    baseline at its own (pairs by seed across the two lrs; Holm over these comparisons).
    Final test metrics: the arm's first metric (paired t, TOST at its margin) and, for an arm
    with a time to target, the Kaplan–Meier medians and the log-rank test."""
    from .tables import own_task

    selected = ctx.cfg.selected_lr
    if not selected or ctx.runs.empty:
        return []
    base, metric = ctx.arm.baselines[0], ctx.arm.metrics[0]
    runs = own_task(ctx.runs)  # the selection is for the grid's own task
    cell: dict[str, Any] = {}
    if "attention" in runs.columns:
        cell["attention"] = ctx.arm.attentions[0]
        runs = runs[runs["attention"] == cell["attention"]]
    tuned = stats.at_selected_lr(runs, selected)
    names = [v for v in sorted(selected, key=lambda v: (v != base, v)) if v != base
             and v in set(tuned["variant"])]
    head = ["## Shared and tuned learning rates\n"]
    lrs = ", ".join(f"{v} {lr:g}" for v, lr in sorted(selected.items()))
    if base not in set(tuned["variant"]) or not names:
        return head + [f"_Not run yet: no runs of {base} and another variant at their selected "
                       f"lrs ({lrs})._\n"]
    base_mean = float(pd.to_numeric(tuned.loc[tuned["variant"] == base, metric.name],
                                    errors="coerce").mean())
    margin = metric.tost_margin(base_mean)
    keys = [k for k in ("task", *ctx.arm.cell_keys) if k != "lr" and k in tuned.columns]
    comp = stats.compare_all(tuned, [metric.name], baselines=[base], variants=[base, *names],
                             tost_margins={metric.name: margin},
                             higher_is_better=ctx.arm.directions(), cell_keys=keys,
                             n_boot=4000)
    time = _time_metric(ctx)
    rows = []
    for v in names:
        shared = _row(ctx, metric.name, v, base, {**cell, "lr": ctx.lr})
        own = comp[comp["variant"] == v]
        for label, r, sub, lr_v, lr_b in (
                ("shared lr", shared, runs[np.isclose(runs["lr"], ctx.lr)], ctx.lr, ctx.lr),
                ("own lr", own.iloc[0].to_dict() if len(own) else None, tuned, selected[v],
                 selected[base])):
            if r is None:
                continue
            row = {"variant": v, "comparison": label, "lr": lr_v, f"{base} lr": lr_b,
                   **{k: r[k] for k in ("n", "mean_variant", "mean_baseline", "diff",
                                        "ci_low", "ci_high", "p_holm", "p_tost", "verdict")}}
            if time is not None:  # as the time-to-target claim reads it (C2)
                tt = stats.time_to_target(sub, v, base, horizon=ctx.evidence.horizon,
                                          time_col=time)
                row.update(median_variant=tt["median_variant"],
                           median_baseline=tt["median_baseline"], p_logrank=tt["p_logrank"])
            rows.append(row)
    text = (f"Selected on validation ({ctx.label(ctx.arm.selection_metric or '')}) by the grid "
            f"`{ctx.cfg.selected_from.stem}`: {lrs}. Each variant against {base} on "
            f"{ctx.label(metric.name)} (test split), paired by seed: at the shared lr (the "
            f"lr {base} selected; Holm over every comparison of `stats.csv`), and each at its "
            f"own selected lr against {base} at its own (Holm over these {len(names)} "
            f"comparison{'s' if len(names) > 1 else ''}); TOST "
            f"±{margin * metric.scale:g}{metric.unit}.")
    if time is not None:
        text += (f" Medians: Kaplan–Meier median {ctx.label(time)} (test split; censored "
                 f"at {num(ctx.evidence.horizon, 0)}), log-rank p.")
    return head + [text + "\n", md_table(pd.DataFrame(rows), None, 4)]


def _time_metric(ctx: Context) -> str | None:
    """The time-to-target metric of the arm's time-to-target claim (C2's ``epochs_to_90``),
    when the runs have it and the grid a horizon; else None."""
    from .claims import claims_for, judge_time_to_target

    if ctx.evidence.horizon is None:
        return None
    return next((c.metric for c in claims_for(ctx.arm.name) if c.judge is judge_time_to_target
                 and c.metric in ctx.runs.columns), None)


@exhibit("difficulty")
def difficulty(ctx: Context, claim: Claim | None) -> list[str]:
    """The difficulty selection of a grid whose cells are difficulty levels (one task each):
    per level and attention, the Kaplan–Meier median of the arm's validation time to target
    (:attr:`ablations.arms.Arm.difficulty`) of its first baseline's runs, censored at each
    level's training length, and the level chosen: among the arm's main attention, the median
    nearest the target (:func:`ablations.stats.difficulty_selection`; ties: the higher mean
    selection metric, then the level listed first). A level run at several learning rates is
    read at its own selected one (:func:`ablations.stats.lr_selection` of the selection
    metric over that level's runs): the difficulty is then the one the tuned baseline meets.
    Validation metrics only."""
    from .selection import difficulty_choice
    from .sweep_plots import plot_difficulty

    choice = difficulty_choice(ctx.cfg, ctx.runs)
    if choice is None:
        return []
    target, table = ctx.arm.difficulty, choice.table
    base, selector, main = ctx.arm.baselines[0], ctx.arm.selection_metric, ctx.arm.attentions[0]
    tuned = (f" Levels run at several learning rates are read at each one's own: the lr "
             f"of {base}'s highest mean {ctx.label(selector)} on that level (column lr)."
             if choice.tuned else "")
    chosen = table[table["selected"]]
    pick = (f"**{chosen['task'].iloc[0]}** (median {num(chosen['median'].iloc[0], 1)})"
            if len(chosen) else f"none yet (no level of {main} attention has a median)")
    fig = plot_difficulty(table, target=target.target, time_label=ctx.label(target.time),
                          horizon=choice.horizon)
    selector = ctx.label(selector or "")
    text = (f"Each level is a task of this grid. Per level: the Kaplan–Meier median of "
            f"{ctx.label(target.time)} over {base}'s runs (runs that never reached it censored "
            f"at their level's {target.horizon}; {stats.KM_MEDIAN_RULE}). The target: "
            f"{target.target:g} ({target.source}). Rule: among the levels run with {main} "
            "attention, the median nearest the target; a level where fewer than half the runs "
            f"reached it is never chosen; ties: the higher mean {selector}, then the level "
            "listed first. Levels run with other attentions narrowed the range only. "
            f"Validation split only: the test set plays no part.{tuned} Chosen: {pick}.\n")
    return ["## Difficulty selection (validation)\n", text,
            md_table(table, None, 4), figure_link(ctx, "difficulty.png", fig)]


# the exhibits of other modules register into EXHIBITS when this one loads (they import it):
# the dose-response study's and "across_tasks" (a grid of several tasks)
from . import exhibits_dose, task_exhibits  # noqa: E402,F401
