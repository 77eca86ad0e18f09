"""The report's "Across tasks" section: a grid whose cells run several tasks (data sets), each
on several data seeds, compared within a task and aggregated across tasks as rliable and
AlgoPerf do (:mod:`ablations.stats.across` computes, :mod:`ablations.task_plots` draws).

Registered as the exhibit ``across_tasks`` (an arm lists it in ``Arm.analyses``); it shows
nothing for a grid of fewer than two data sets. It reads the arm's task registry through the
options of each cell: ``dataset`` (the task), ``data_seed`` (the random effect), the task's
chance level (1 / classes: every task's labels are balanced) and ceiling (``Task.ceiling``),
and ``target_acc`` (the time to target's threshold, per task).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .exhibits import Context, exhibit, figure_link, md_table
from .fmt import num
from .selection import task_options

__all__ = ["across_tasks", "task_table"]

#: the run seeds' paired metric, the time to target and whether it was reached (test split),
#: and the validation metric the difficulty was chosen on
SCORE, TIME, EVENT, VALIDATION = "final_test_acc", "epochs_to_90", "reached_90", "final_val_acc"
#: AlgoPerf's largest performance ratio of the profiles (r_max = 4)
TAU_MAX = 4.0
N_BOOT = 2000


def task_table(ctx: Context) -> pd.DataFrame:
    """One row per task of the grid's cells (a cell's ``task`` name): dataset, data_seed,
    chance, ceiling, target and ``family`` (the dataset, or the dataset and its options when
    one dataset runs at several settings besides its data seed), source and licence. Empty
    when the arm's options have no ``dataset``."""
    from .arms.tasks import get_task

    rows = []
    for name, opts in task_options(ctx.cfg).items():
        if "dataset" not in opts or "data_seed" not in opts:
            return pd.DataFrame()
        o = ctx.arm.parse_options(opts)
        task = get_task(o.dataset)
        rest = {k: v for k, v in opts.items() if k in task.reads and k != "data_seed"}
        rows.append({"task": name, "dataset": o.dataset, "data_seed": o.data_seed,
                     "chance": 1.0 / task.n_classes(o), "ceiling": task.ceiling(o),
                     "target": float(getattr(o, "target_acc", np.nan)),
                     "setting": json.dumps(rest, sort_keys=True), "source": task.source,
                     "licence": task.licence, "summary": task.summary,
                     "describe": task.describe(o)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    several = table.groupby("dataset")["setting"].transform("nunique") > 1
    table["family"] = np.where(several, table["dataset"] + " " + table["setting"],
                               table["dataset"])
    return table


def _main_cell(ctx: Context) -> pd.DataFrame:
    """The runs of the arm's main attention at the reference lr (when those columns vary)."""
    runs = ctx.runs
    if "attention" in runs.columns and runs["attention"].nunique() > 1:
        runs = runs[runs["attention"] == ctx.arm.attentions[0]]
    if "lr" in runs.columns and runs["lr"].nunique() > 1:
        runs = runs[np.isclose(runs["lr"], ctx.lr)]
    return runs


@exhibit("across_tasks")
def across_tasks(ctx: Context, claim=None) -> list[str]:
    """Per task and across tasks: see the module docstring."""
    from . import stats
    from .stats import across as A
    from .task_plots import plot_across_tasks, plot_task

    tasks = task_table(ctx)
    # several data sets: cells that vary one data set's other options (difficulty levels,
    # a dose) are not a benchmark of tasks
    if tasks.empty or tasks["dataset"].nunique() < 2 or SCORE not in ctx.runs.columns:
        return []
    runs = _main_cell(ctx).merge(tasks[["task", "family", "data_seed", "chance", "ceiling"]],
                                 on="task", how="inner")
    base = ctx.arm.baselines[0]
    if runs.empty or base not in set(runs["variant"]):
        return ["## Across tasks\n", f"_Not run yet: no runs of {base} in the task cells._\n"]
    metric = ctx.arm.metric(SCORE)
    scale, unit = metric.scale, metric.unit
    runs = runs.assign(score=stats.across.normalized_scores(runs[SCORE], runs["chance"],
                                                            runs["ceiling"]))
    variants = sorted(set(runs["variant"]), key=lambda v: (v != base, v))
    others = variants[1:]
    keys = dict(task="family", cluster="data_seed", seed="seed", variant="variant")
    out = ["## Across tasks\n", _intro(tasks, runs, base)]
    out += _headroom(tasks, runs, base)

    # per task: paired differences with the data seed as a random effect
    effects, seed_diffs = [], []
    for v in others:
        e = A.per_task_effects(runs, SCORE, v, base, **keys)
        effects.append(e.assign(variant=v))
        seed_diffs.append(A.data_seed_differences(runs, SCORE, v, base, **keys).assign(variant=v))
    order = {v: i for i, v in enumerate(others)}
    effects = (pd.concat(effects, ignore_index=True)
               .sort_values(["family", "variant"], key=lambda c: c.map(order)
                            if c.name == "variant" else c, kind="stable")
               if effects else pd.DataFrame())
    if len(effects):  # Holm over every per-task comparison of the section
        ok = np.isfinite(effects["p_value"].to_numpy(float))
        p_holm = np.full(len(effects), np.nan)
        p_holm[ok] = stats.holm(effects["p_value"].to_numpy(float)[ok])
        effects = effects.assign(p_holm=p_holm)
    seed_diffs = pd.concat(seed_diffs, ignore_index=True) if seed_diffs else pd.DataFrame()
    out.append(f"### Per task: each variant against {base}\n")
    out.append(
        f"{ctx.label(SCORE).capitalize()}, variant − {base} in{unit}, runs paired by run seed "
        "within a data seed. The data seed is a random effect: the paired differences are "
        "averaged within each data seed, then over the data seeds (each data set weighs the "
        "same); the 95% t interval and p value have data seeds − 1 degrees of freedom (equal to "
        "the REML fit of `diff ~ 1 + (1 | data seed)` on a balanced design); p_holm: Holm over "
        "every row of the table. sd between / "
        "within: the spread of the data seeds' mean differences beyond what the run seeds "
        "explain, and of the run seeds within a data seed (ANOVA estimates). *CI, pairs "
        "independent*: the interval that ignores the data seed, for contrast.\n")
    if len(effects):
        shown = effects.assign(**{c: effects[c] * scale for c in (
            "diff", "se", "ci_low", "ci_high", "sd_between", "sd_within", "naive_ci_low",
            "naive_ci_high")})
        shown = shown.rename(columns={"family": "task", "naive_ci_low": "CI low, pairs indep.",
                                      "naive_ci_high": "CI high, pairs indep."})
        cols = ["task", "variant", "n_data_seeds", "n_pairs", "diff", "ci_low", "ci_high",
                "p_value", "p_holm", "sd_between", "sd_within", "CI low, pairs indep.",
                "CI high, pairs indep."]
        out.append(md_table(shown, cols, 3))
        out.append(_null_note(effects, scale, unit))
    for family, sub in runs.groupby("family", sort=True):
        t = tasks[tasks["family"] == family].iloc[0]
        fig = plot_task(sub, seed_diffs[seed_diffs["family"] == family] if len(seed_diffs)
                        else seed_diffs,
                        effects[effects["family"] == family] if len(effects) else effects,
                        value=SCORE, baseline=base, value_label=ctx.label(SCORE),
                        ceiling=float(t["ceiling"]), chance=float(t["chance"]),
                        title=f"{family}: {ctx.label(SCORE)} ({sub['data_seed'].nunique()} "
                              f"data seeds)")
        out.append(figure_link(ctx, f"task_{_slug(family)}.png", fig))

    # across tasks: IQM and probability of improvement, stratified by task
    iqm = A.iqm_across_tasks(runs, "score", variants=variants, n_boot=N_BOOT, **keys)
    iqm_d = A.iqm_across_tasks(runs, "score", variants=variants, n_boot=N_BOOT, clusters=True,
                               **keys)
    iqm = iqm.assign(ci_low_data=iqm_d["ci_low"].to_numpy(),
                     ci_high_data=iqm_d["ci_high"].to_numpy())
    poi_rows = []
    for v in others:
        p = A.poi_across_tasks(runs, "score", v, base, n_boot=N_BOOT, **keys)
        pd_ = A.poi_across_tasks(runs, "score", v, base, n_boot=N_BOOT, clusters=True, **keys)
        poi_rows.append({"variant": v, "n_tasks": p["n_tasks"], "poi": p["poi"],
                         "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                         "ci_low_data": pd_["ci_low"], "ci_high_data": pd_["ci_high"],
                         **{f"P in {k}": x for k, x in p["per_task"].items()}})
    poi = pd.DataFrame(poi_rows)
    n_tasks = runs["family"].nunique()
    out.append("### Across tasks: IQM and probability of improvement\n")
    out.append(
        f"Normalised score: ({ctx.label(SCORE)} − chance) / (ceiling − chance) per task, 0 at "
        "chance and 1 at the task's ceiling (rliable's normalisation). IQM: the 25% trimmed "
        f"mean of all runs of all {n_tasks} tasks; probability of improvement: P(variant > "
        f"{base}) + ½ P(tie) over all pairs of runs within a data seed, averaged over the "
        "task's data seeds, then over tasks (Agarwal et al. 2021). 95% CIs: stratified "
        f"percentile bootstrap ({N_BOOT} replicates, strata = tasks), run seeds resampled "
        "within each data seed, jointly for all variants (*CI*); and two-stage, the task's "
        "data seeds resampled first (*CI, data seeds*: the interval that also covers another "
        "draw of the data sets).\n")
    out.append(md_table(iqm.rename(columns={"ci_low_data": "CI low, data seeds",
                                            "ci_high_data": "CI high, data seeds"}), None, 3))
    if len(poi):
        out.append(md_table(poi.rename(columns={"poi": f"P(variant > {base})",
                                                "ci_low_data": "CI low, data seeds",
                                                "ci_high_data": "CI high, data seeds"}),
                            None, 3))
    fig = plot_across_tasks(iqm, poi, baseline=base, n_tasks=n_tasks)
    out.append(figure_link(ctx, "across_tasks.png", fig))
    out += _profiles(ctx, runs, tasks, base)
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name)).strip("-")


def _intro(tasks: pd.DataFrame, runs: pd.DataFrame, base: str) -> str:
    fams = []
    for family, sub in tasks.groupby("family", sort=False):
        t = sub.iloc[0]
        n = runs[runs["family"] == family]
        seeds = ", ".join(str(s) for s in sorted(sub["data_seed"].unique()))
        fams.append(f"- **{family}**: {t['describe'].strip()} Data seeds {seeds}; "
                    f"{n['seed'].nunique()} run seeds per data seed and variant (so far). "
                    f"Source: {t['source']}. Licence: {t['licence']}.")
    return ("Each task runs on several data seeds (each a new draw of the generated data, or a "
            "new split of the real images): the data seed is a random effect, and runs pair "
            "by run seed within one data seed. Chance: 1 / classes (balanced labels); "
            "ceiling: 1 − label noise (the real data set: the nominal 1).\n\n"
            + "\n".join(fams) + "\n")


def _headroom(tasks: pd.DataFrame, runs: pd.DataFrame, base: str) -> list[str]:
    """The baseline's validation accuracy per task against its chance and ceiling: the
    headroom the difficulty was chosen for (validation split only)."""
    if VALIDATION not in runs.columns:
        return []
    b = runs[runs["variant"] == base]
    rows = []
    for family, sub in b.groupby("family", sort=True):
        t = tasks[tasks["family"] == family].iloc[0]
        val = pd.to_numeric(sub[VALIDATION], errors="coerce")
        norm = (val - t["chance"]) / (t["ceiling"] - t["chance"])
        rows.append({"task": family, "chance": t["chance"], "ceiling": t["ceiling"],
                     "target": t["target"], f"{base} mean val acc": val.mean(),
                     f"{base} normalised val": norm.mean(),
                     f"{base} min / max normalised val": f"{num(norm.min(), 2)} / "
                                                         f"{num(norm.max(), 2)}"})
    return ["Headroom on validation data (what each task's difficulty was chosen on; the "
            f"normalised score of {base}'s final validation accuracy, 1 = ceiling):\n",
            md_table(pd.DataFrame(rows), None, 3)]


def _null_note(effects: pd.DataFrame, scale: float, unit: str) -> str:
    """The null control's differences, beside which every other variant's read."""
    null = effects[effects["variant"] == "gauss-l0.001"]
    if null.empty:
        return ""
    parts = [f"{r['family']} {r['diff'] * scale:+.2f}{unit} [{r['ci_low'] * scale:+.2f}, "
             f"{r['ci_high'] * scale:+.2f}], sd within {r['sd_within'] * scale:.2f}{unit}"
             for _, r in null.iterrows()]
    return ("The null control `gauss-l0.001` (a negligible random perturbation) measures the "
            "chaotic divergence of two runs that differ by a nudge: " + "; ".join(parts)
            + ". A variant whose difference and spread look like these differs from AdamW no "
            "more than a nudge does.\n")


def _profiles(ctx: Context, runs: pd.DataFrame, tasks: pd.DataFrame, base: str) -> list[str]:
    """Performance profiles of epochs to each task's target (test split)."""
    from .stats import across as A
    from .task_plots import plot_performance_profiles

    if TIME not in runs.columns or EVENT not in runs.columns:
        return []
    problem = ["family", "data_seed"]
    times = A.time_to_target(runs, TIME, EVENT, problem=problem)
    prof = A.performance_profiles(times, problem=problem, tau_max=TAU_MAX, weight_by="family")
    scores = A.profile_score_ci(runs, TIME, EVENT, problem=problem, tau_max=TAU_MAX,
                                weight_by="family", n_boot=1000)
    targets = "; ".join(f"{f} {num(t, 2)}" for f, t in
                        tasks.groupby("family", sort=True)["target"].first().items())
    wide = times.assign(time=times["time"].where(np.isfinite(times["time"]))).pivot_table(
        index=problem, columns="variant", values="time", aggfunc="first", dropna=False)
    wide = wide.reset_index().rename(columns={"family": "task"})
    fig = plot_performance_profiles(prof, tau_max=TAU_MAX, baseline=base,
                                    time_label="epochs to target", scores=scores)
    return ["### Time to target: performance profiles\n",
            f"Epochs until a run's test accuracy first reaches its task's target (targets: "
            f"{targets}). A problem is one data seed of one task; a variant's time on it is "
            "the median over its run seeds, a run that never reached the target counting as "
            "never (∞: so the median is ∞ when half or more never did, the way AlgoPerf needs "
            "most trials to reach a target). Performance ratio: the time over the fastest "
            "variant's on that problem; profile ρ(τ): the share of problems with ratio ≤ τ, "
            "each task weighing the same (its data seeds share its weight); score: the area "
            f"under ρ on [1, {TAU_MAX:g}] over {TAU_MAX - 1:g} (AlgoPerf's benchmark score: "
            f"1 = fastest everywhere). Score CIs: percentile bootstrap, run seeds resampled "
            "within each problem (1000 replicates); the fastest variant's median in a "
            "replicate is the least of several noisy medians, so the replicates sit below the "
            "point estimate: read the interval as the score's spread, not as centred on it. "
            "Dahl et al. 2023; Dolan & Moré 2002.\n",
            md_table(scores, None, 3),
            "<details><summary>Median epochs to target per problem (– : not reached by half "
            "the runs)</summary>\n\n" + md_table(wide, None, 1) + "\n</details>\n",
            figure_link(ctx, "performance_profiles.png", fig)]

