"""Aggregation across tasks, as rliable and AlgoPerf do it, with the data set as a random effect.

A grid of several tasks (data sets) runs every variant on each task, on several *data seeds*
per task (one data-set instance each: the same generator or the same images, drawn or split
anew), and on several run seeds per data seed. Runs pair by run seed within one (task, data
seed). The functions here take the runs table with one column naming the task, one the data
seed (the *cluster*) and one the run seed, and return numbers or DataFrames; none reads a
file or draws.

- :func:`normalized_scores`: a task's metric on a common scale, 0 at chance and 1 at the
  task's ceiling (rliable's normalised score, with chance and ceiling for "random" and
  "human").
- :func:`iqm_across_tasks`: the interquartile mean of the normalised scores of all runs of
  all tasks, with a stratified-bootstrap CI (strata = tasks; Agarwal et al. 2021), the
  rliable resampling (runs within each task) or a two-stage one (data seeds within each task,
  then run seeds within each data seed: the data seed as a random effect).
- :func:`poi_across_tasks`: the probability of improvement P(X > Y) of a variant over a
  baseline, the average over tasks of the Mann–Whitney probability within a task (here within
  each data seed, averaged over the task's data seeds, so that the spread between data sets
  is not mistaken for a difference between optimizers), with a CI from the same bootstrap,
  run seeds resampled jointly for both (they pair).
- :func:`per_task_effects`: per task, the paired difference variant − baseline with the data
  seed as a random effect: paired differences averaged within each data seed, then over the
  data seeds; its t interval has (data seeds − 1) degrees of freedom. For a balanced design
  this is the REML estimate and standard error of the one-way random-effects model
  ``diff ~ 1 + (1 | data seed)`` whenever its between-seed variance is positive
  (:func:`mixed_model_effect` fits that model with statsmodels; the tests check the two
  agree).
- :func:`time_to_target`, :func:`performance_profiles`, :func:`profile_scores`: AlgoPerf's
  performance profiles of time to target (Dahl et al. 2023; Dolan & Moré 2002). A problem
  (a task's data seed) is solved by a variant at the median of its runs' times to target
  (∞ when fewer than half of them reach it, the way AlgoPerf needs most trials to reach a
  target); its performance ratio is that time over the best variant's; the profile
  ρ(τ) is the (weighted) share of problems with ratio ≤ τ, and the score is its area on
  [1, τ_max] over τ_max − 1 (1: fastest everywhere; 0: never within τ_max of the fastest).

References
----------
- Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep
  reinforcement learning at the edge of the statistical precipice. *NeurIPS*.
- Dahl, G. E. et al. (2023). Benchmarking neural network training algorithms.
  arXiv:2306.07179 (AlgoPerf: time to target, performance profiles, the benchmark score).
- Dolan, E. D. & Moré, J. J. (2002). Benchmarking optimization software with performance
  profiles. *Mathematical Programming* 91, 201–213.
- Davison, A. C. & Hinkley, D. V. (1997). *Bootstrap Methods and their Application*, §3.8
  (two-stage resampling of clustered data).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._common import as_float

__all__ = ["normalized_scores", "iqm_across_tasks", "poi_across_tasks", "per_task_effects",
           "data_seed_differences",
           "mixed_model_effect", "time_to_target", "performance_profiles", "profile_scores",
           "profile_score_ci"]


# ----------------------------------------------------------------------------- scores
def normalized_scores(values, low, high) -> np.ndarray:
    """``(x − low) / (high − low)``: 0 at ``low`` (chance), 1 at ``high`` (the ceiling).

    ``low`` and ``high`` are scalars or arrays broadcasting with ``values`` (one pair per row,
    the row's task). Raises ValueError where ``high <= low``.
    """
    x, lo, hi = as_float(values), np.asarray(low, float), np.asarray(high, float)
    if np.any(hi <= lo):
        raise ValueError("normalized_scores: every ceiling must exceed its chance level")
    return (x - lo) / (hi - lo)


# ----------------------------------------------------------------------------- the design
def _one_run_each(runs: pd.DataFrame, keys: Sequence[str]) -> None:
    """ValueError when two runs share ``keys`` (a table of several cells, lrs or attentions
    say, must be cut to one before runs pair by seed)."""
    dup = runs.duplicated(list(keys), keep=False)
    if dup.any():
        first = runs.loc[dup, list(keys)].iloc[0].to_dict()
        raise ValueError(f"{int(dup.sum())} runs share {', '.join(keys)} (e.g. {first}): "
                         "select one cell (attention, lr) first")


class _Design:
    """The runs of one metric as a nested design: task → data seed → a matrix of run seeds ×
    variants (NaN where a variant has no run of that seed), rows aligned by run seed."""

    def __init__(self, runs: pd.DataFrame, value: str, variants: Sequence[str], *, task: str,
                 cluster: str, seed: str, variant: str):
        for col in (value, task, cluster, seed, variant):
            if col not in runs.columns:
                raise KeyError(f"column {col!r} is missing; columns: {list(runs.columns)}")
        self.variants = list(variants)
        sub = runs[runs[variant].isin(self.variants)]
        _one_run_each(sub, [task, cluster, seed, variant])
        wide = (sub.assign(_v=as_float(sub[value]))
                .pivot_table(index=[task, cluster, seed], columns=variant, values="_v",
                             aggfunc="first")
                .reindex(columns=self.variants))
        self.tasks: list = []
        self.cells: list[list[np.ndarray]] = []  # per task, per data seed: [seeds, variants]
        for t, by_task in wide.groupby(level=0, sort=True):
            mats = [g.to_numpy(float) for _, g in by_task.groupby(level=1, sort=True)]
            mats = [m[np.isfinite(m).any(axis=1)] for m in mats]
            mats = [m for m in mats if len(m)]
            if mats:
                self.tasks.append(t)
                self.cells.append(mats)
        if not self.tasks:
            raise ValueError(f"no finite values of {value!r} for {', '.join(self.variants)}")

    def resample(self, rng: np.random.Generator, clusters: bool) -> list[list[np.ndarray]]:
        """One stratified bootstrap replicate: within every task (stratum), its data seeds
        drawn with replacement when ``clusters`` (else each kept once), then within each
        drawn data seed its run seeds with replacement (rows: all variants together)."""
        out = []
        for mats in self.cells:
            pick = rng.integers(0, len(mats), len(mats)) if clusters else range(len(mats))
            out.append([mats[i][rng.integers(0, len(mats[i]), len(mats[i]))] for i in pick])
        return out


def _trim_mean_columns(x: np.ndarray) -> np.ndarray:
    """The IQM of each column's finite values (NaN for a column without any): with n finite
    values, the mean of the sorted values ⌊n/4⌋ … n − ⌊n/4⌋ − 1, as ``scipy.stats.trim_mean``
    (x, 0.25) cuts them, computed for all columns at once."""
    x = np.where(np.isfinite(x), x, np.nan)
    n = np.isfinite(x).sum(axis=0)
    cut = (n * 0.25).astype(int)  # trim_mean's int(proportion · n)
    s = np.sort(x, axis=0)  # NaN last
    cs = np.vstack([np.zeros(x.shape[1]), np.nancumsum(s, axis=0)])
    cols = np.arange(x.shape[1])
    kept = n - 2 * cut
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (cs[n - cut, cols] - cs[cut, cols]) / kept
    return np.where(n > 0, out, math.nan)


def _median_columns(x: np.ndarray) -> np.ndarray:
    """The median of each column's non-NaN values (∞ counts as a value; NaN for a column
    without any), as ``numpy.nanmedian`` gives it, for all columns at once."""
    n = (~np.isnan(x)).sum(axis=0)
    s = np.sort(x, axis=0)  # NaN last, after ∞
    cols = np.arange(x.shape[1])
    lo, hi = np.maximum(n - 1, 0) // 2, np.maximum(n, 1) // 2
    with np.errstate(invalid="ignore"):
        med = np.where(s[lo, cols] == s[hi, cols], s[lo, cols],
                       (s[lo, cols] + s[hi, cols]) / 2)
    return np.where(n > 0, med, math.nan)


def _percentile_ci(reps: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column, over the finite replicates."""
    lo = np.full(reps.shape[1], math.nan)
    hi = np.full(reps.shape[1], math.nan)
    for j in range(reps.shape[1]):
        r = reps[:, j][np.isfinite(reps[:, j])]
        if r.size:
            lo[j], hi[j] = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return lo, hi


# ----------------------------------------------------------------------------- IQM
def iqm_across_tasks(runs: pd.DataFrame, value: str, *, variants: Sequence[str] | None = None,
                     task: str = "task", cluster: str = "data_seed", seed: str = "seed",
                     variant: str = "variant", clusters: bool = False, n_boot: int = 2000,
                     rng_seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """IQM (25 % trimmed mean) of ``value`` over all runs of all tasks, per variant, with a
    stratified percentile-bootstrap CI.

    The point estimate pools every finite run of the variant (rliable's aggregate IQM of the
    run × task score matrix). Each bootstrap replicate resamples within every task
    separately (strata = tasks, so each task keeps its number of runs): with
    ``clusters=False`` the run seeds within each data seed (rliable's resampling, the data
    sets held fixed); with ``clusters=True`` first the data seeds of the task, then the run
    seeds within each drawn data seed (the data seed as a random effect: the interval also
    covers another draw of the data sets). Runs are resampled by seed for all variants at
    once, so the replicates of different variants are paired.

    Args:
        runs: one row per run, with the columns named by ``value``, ``task``, ``cluster``,
            ``seed`` and ``variant`` (normalised scores: :func:`normalized_scores`).
        variants: which variants (default: all, sorted).
        clusters: resample data seeds too (two-stage bootstrap).
        n_boot, rng_seed, alpha: replicates, seed of ``numpy.random.default_rng``, level.

    Returns:
        DataFrame: variant, n_tasks, n_runs, iqm, ci_low, ci_high, mean.
    """
    variants = sorted(runs[variant].dropna().unique()) if variants is None else list(variants)
    d = _Design(runs, value, variants, task=task, cluster=cluster, seed=seed, variant=variant)
    pooled = np.concatenate([m for mats in d.cells for m in mats])
    point = _trim_mean_columns(pooled)
    rng = np.random.default_rng(rng_seed)
    reps = np.array([_trim_mean_columns(np.concatenate([m for mats in d.resample(rng, clusters)
                                                        for m in mats]))
                     for _ in range(n_boot)]) if n_boot > 0 else np.full((1, len(variants)),
                                                                          math.nan)
    lo, hi = _percentile_ci(reps, alpha)
    rows = []
    for j, v in enumerate(variants):
        col = pooled[:, j]
        n_tasks = sum(bool(np.isfinite(np.concatenate(mats)[:, j]).any()) for mats in d.cells)
        rows.append({"variant": v, "n_tasks": n_tasks, "n_runs": int(np.isfinite(col).sum()),
                     "iqm": point[j], "ci_low": lo[j], "ci_high": hi[j],
                     "mean": float(np.nanmean(col)) if np.isfinite(col).any() else math.nan})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- POI
def _mann_whitney(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + ½ P(X = Y) over all pairs of finite values (NaN when either is empty)."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not (x.size and y.size):
        return math.nan
    return float((x[:, None] > y[None, :]).mean() + 0.5 * (x[:, None] == y[None, :]).mean())


def _poi_of(cells: list[list[np.ndarray]], sign: float) -> tuple[float, list[float]]:
    """(average over tasks, per task) of the within-data-seed Mann–Whitney probability of
    column 0 over column 1, averaged over each task's data seeds."""
    per_task = []
    for mats in cells:
        within = [_mann_whitney(sign * m[:, 0], sign * m[:, 1]) for m in mats]
        within = [w for w in within if np.isfinite(w)]
        per_task.append(float(np.mean(within)) if within else math.nan)
    finite = [p for p in per_task if np.isfinite(p)]
    return (float(np.mean(finite)) if finite else math.nan), per_task


def poi_across_tasks(runs: pd.DataFrame, value: str, variant_name: str, baseline: str, *,
                     higher_is_better: bool = True, task: str = "task",
                     cluster: str = "data_seed", seed: str = "seed", variant: str = "variant",
                     clusters: bool = False, n_boot: int = 2000, rng_seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Probability of improvement of ``variant_name`` over ``baseline`` across tasks.

    Within one data seed of one task, P(X > Y) + ½ P(X = Y) over all pairs of a variant run X
    and a baseline run Y (the Mann–Whitney U over n·m, rliable's probability of improvement);
    a task's value is the mean over its data seeds, the estimate the mean over tasks
    (rliable's average over tasks). With ``higher_is_better=False`` it is P(X < Y) + ½ P(X = Y).
    Comparing runs within a data seed keeps the spread between data sets out of it (a run on
    an easy data seed would beat one on a hard seed whatever the optimizers). The interval:
    the stratified bootstrap of :func:`iqm_across_tasks` (``clusters`` likewise), run seeds
    drawn jointly for both (the pairing kept).

    Returns:
        dict: poi, ci_low, ci_high, per_task (task → poi), n_tasks.
    """
    d = _Design(runs, value, [variant_name, baseline], task=task, cluster=cluster, seed=seed,
                variant=variant)
    sign = 1.0 if higher_is_better else -1.0
    point, per_task = _poi_of(d.cells, sign)
    lo = hi = math.nan
    if n_boot > 0:
        rng = np.random.default_rng(rng_seed)
        reps = np.array([_poi_of(d.resample(rng, clusters), sign)[0] for _ in range(n_boot)])
        reps = reps[np.isfinite(reps)]
        if reps.size:
            lo, hi = (float(q) for q in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
    return {"poi": point, "ci_low": lo, "ci_high": hi,
            "per_task": dict(zip(d.tasks, per_task, strict=True)),
            "n_tasks": sum(np.isfinite(p) for p in per_task)}


# ----------------------------------------------------------------------------- per task
def _cluster_diffs(runs: pd.DataFrame, value: str, variant_name: str, baseline: str, *,
                   task: str, cluster: str, seed: str, variant: str) -> pd.DataFrame:
    """Paired differences variant − baseline: one row per (task, data seed, run seed) where
    both ran (finite values), column ``diff``."""
    sub = runs[runs[variant].isin([variant_name, baseline])]
    _one_run_each(sub, [task, cluster, seed, variant])
    wide = sub.assign(_v=as_float(sub[value])).pivot_table(
        index=[task, cluster, seed], columns=variant, values="_v", aggfunc="first")
    if variant_name not in wide.columns or baseline not in wide.columns:
        return pd.DataFrame(columns=[task, cluster, seed, "diff"])
    diff = (wide[variant_name] - wide[baseline]).rename("diff").reset_index()
    return diff[np.isfinite(diff["diff"])]


def data_seed_differences(runs: pd.DataFrame, value: str, variant_name: str, baseline: str, *,
                          task: str = "task", cluster: str = "data_seed", seed: str = "seed",
                          variant: str = "variant") -> pd.DataFrame:
    """The mean paired difference variant − baseline within each data seed of each task
    (runs paired by run seed; the first stage of :func:`per_task_effects`).

    Returns:
        DataFrame: task, data seed (the ``cluster`` column), n_pairs, diff.
    """
    diffs = _cluster_diffs(runs, value, variant_name, baseline, task=task, cluster=cluster,
                           seed=seed, variant=variant)
    out = diffs.groupby([task, cluster], sort=True)["diff"].agg(["size", "mean"]).reset_index()
    return out.rename(columns={"size": "n_pairs", "mean": "diff"})


def per_task_effects(runs: pd.DataFrame, value: str, variant_name: str, baseline: str, *,
                     task: str = "task", cluster: str = "data_seed", seed: str = "seed",
                     variant: str = "variant", alpha: float = 0.05) -> pd.DataFrame:
    """Per task, the paired difference variant − baseline with the data seed as a random
    effect.

    Within each data seed, the mean of the paired differences (runs paired by run seed);
    the task's estimate is the mean of those data-seed means (each data set weighs the same),
    its standard error their standard deviation over √k (k data seeds), the interval
    ``estimate ± t_{k−1, 1−α/2}·SE`` and the p value a one-sample t test of the k means
    (two-sample designs with one data seed get no interval). Beside it, the variance
    components of the one-way random-effects model by the method of moments (the ANOVA
    estimator, balanced or not): ``sd_between`` (between data seeds, truncated at 0) and
    ``sd_within`` (run seeds within a data seed), and ``naive_ci_low``/``naive_ci_high``, the
    t interval that treats every pair as independent (what ignoring the data seed would
    claim).

    Returns:
        DataFrame, one row per task: task, n_data_seeds, n_pairs, diff, se, ci_low, ci_high,
        p_value, sd_between, sd_within, naive_ci_low, naive_ci_high.
    """
    diffs = _cluster_diffs(runs, value, variant_name, baseline, task=task, cluster=cluster,
                           seed=seed, variant=variant)
    rows = []
    for t, sub in diffs.groupby(task, sort=True):
        groups = [g["diff"].to_numpy(float) for _, g in sub.groupby(cluster, sort=True)]
        means = np.array([g.mean() for g in groups])
        k, n = len(groups), int(sum(len(g) for g in groups))
        est = float(means.mean())
        se = float(means.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan
        q = sps.t.ppf(1 - alpha / 2, k - 1) if k > 1 else math.nan
        if k > 1 and se > 0:
            p = float(2 * sps.t.sf(abs(est) / se, k - 1))
        elif k > 1:
            p = 1.0 if est == 0 else 0.0
        else:
            p = math.nan
        sd_b, sd_w = _variance_components(groups)
        allx = np.concatenate(groups)
        naive_se = allx.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        naive_q = sps.t.ppf(1 - alpha / 2, n - 1) if n > 1 else math.nan
        rows.append({task: t, "n_data_seeds": k, "n_pairs": n, "diff": est, "se": se,
                     "ci_low": est - q * se, "ci_high": est + q * se, "p_value": p,
                     "sd_between": sd_b, "sd_within": sd_w,
                     "naive_ci_low": float(allx.mean() - naive_q * naive_se),
                     "naive_ci_high": float(allx.mean() + naive_q * naive_se)})
    cols = [task, "n_data_seeds", "n_pairs", "diff", "se", "ci_low", "ci_high", "p_value",
            "sd_between", "sd_within", "naive_ci_low", "naive_ci_high"]
    return pd.DataFrame(rows, columns=cols)


def _variance_components(groups: list[np.ndarray]) -> tuple[float, float]:
    """(σ_between, σ_within) of a one-way random-effects layout by the ANOVA method of
    moments (Searle, Casella & McCulloch 1992, §3.5: n₀ for unbalanced groups); σ_between is
    truncated at 0, NaN where a component has no degrees of freedom."""
    k = len(groups)
    sizes = np.array([len(g) for g in groups], float)
    n = sizes.sum()
    if n - k <= 0:
        return math.nan, math.nan
    grand = np.concatenate(groups).mean()
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - k)
    if k < 2:
        return math.nan, float(math.sqrt(msw))
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (k - 1)
    n0 = (n - (sizes ** 2).sum() / n) / (k - 1)
    return float(math.sqrt(max(0.0, (msb - msw) / n0))), float(math.sqrt(msw))


def mixed_model_effect(runs: pd.DataFrame, value: str, variant_name: str, baseline: str, *,
                       cluster: str = "data_seed", seed: str = "seed",
                       variant: str = "variant") -> dict:
    """REML fit of ``diff ~ 1 + (1 | data seed)`` on the paired differences of one task
    (statsmodels ``MixedLM``): the fixed intercept, its standard error and the between-seed
    standard deviation. The cross-check of :func:`per_task_effects` (equal estimate and
    standard error on a balanced design whose between-seed variance is positive).

    Returns:
        dict: diff, se, sd_between, converged.
    """
    import statsmodels.formula.api as smf

    diffs = _cluster_diffs(runs.assign(_task=0), value, variant_name, baseline, task="_task",
                           cluster=cluster, seed=seed, variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("diff ~ 1", diffs, groups=diffs[cluster]).fit(reml=True)
    return {"diff": float(fit.fe_params.iloc[0]), "se": float(fit.bse_fe.iloc[0]),
            "sd_between": float(math.sqrt(max(0.0, float(fit.cov_re.iloc[0, 0])))),
            "converged": bool(fit.converged)}


# ----------------------------------------------------------------------------- profiles
def time_to_target(runs: pd.DataFrame, time: str, event: str, *,
                   problem: Sequence[str] = ("task", "data_seed"),
                   variant: str = "variant") -> pd.DataFrame:
    """Each variant's time to target on each problem: the median over its runs of the time
    at which a run reached the target, a run that never did counting as ∞ (so the median is
    ∞ when half of the runs or more never reached it). AlgoPerf likewise scores a workload
    only when most of its trials reach the target.

    Args:
        runs: one row per run: the problem columns, ``variant``, the time (``time``: epochs
            or seconds, missing for runs that never reached the target) and ``event``
            (whether it reached it).
        problem: the columns naming one problem (a task's data seed).

    Returns:
        DataFrame: the problem columns, variant, n_runs, n_reached, time (∞ where not
        reached).
    """
    problem = list(problem)
    t = as_float(runs[time])
    reached = np.nan_to_num(as_float(runs[event]), nan=0.0) != 0
    t = np.where(reached & np.isfinite(t), t, math.inf)
    frame = runs[problem + [variant]].assign(_t=t, _r=reached)
    rows = []
    for key, sub in frame.groupby(problem + [variant], sort=True, dropna=False):
        rows.append({**dict(zip(problem + [variant], key, strict=True)), "n_runs": len(sub),
                     "n_reached": int(sub["_r"].sum()),
                     "time": float(np.median(sub["_t"].to_numpy(float)))})
    return pd.DataFrame(rows, columns=problem + [variant, "n_runs", "n_reached", "time"])


def _ratios(times: pd.DataFrame, problem: list[str], variant: str) -> pd.DataFrame:
    """times with the performance ratio: time over the best time on the problem (∞ when the
    variant never reached the target, or when no variant did)."""
    best = times.groupby(problem, dropna=False)["time"].transform("min")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(times["time"]) & np.isfinite(best),
                         times["time"] / best, math.inf)
    return times.assign(ratio=ratio)


def _weights(times: pd.DataFrame, problem: list[str], weight_by: str | None) -> pd.Series:
    """Each row's problem weight: equal per problem, or with ``weight_by`` (the task column)
    equal per task, shared by the task's problems; the weights of one variant sum to 1."""
    keys = times[problem].drop_duplicates()
    if weight_by is None:
        keys = keys.assign(_w=1.0 / len(keys))
    else:
        per_task = keys.groupby(weight_by)[weight_by].transform("size")
        keys = keys.assign(_w=1.0 / (keys[weight_by].nunique() * per_task))
    return times.merge(keys, on=problem, how="left")["_w"]


def performance_profiles(times: pd.DataFrame, *, problem: Sequence[str] = ("task", "data_seed"),
                         variant: str = "variant", tau_max: float = 4.0,
                         weight_by: str | None = "task") -> pd.DataFrame:
    """Performance profiles (Dolan & Moré 2002; AlgoPerf's, Dahl et al. 2023): for each
    variant s, ρ_s(τ) = Σ_p w_p · 1[r_{s,p} ≤ τ], with r_{s,p} = t_{s,p} / min_{s'} t_{s',p}
    the performance ratio on problem p and w_p the problem's weight (each task weighs the
    same by default, ``weight_by="task"``; ``None``: each problem). ρ is a step function; the
    table holds its value at τ = 1 and at every ratio up to ``tau_max`` where it steps, and
    at ``tau_max``.

    Args:
        times: output of :func:`time_to_target` (problem columns, variant, time).

    Returns:
        DataFrame: variant, tau, rho (ρ just after each step, right-continuous).
    """
    problem = list(problem)
    r = _ratios(times, problem, variant).assign(_w=_weights(times, problem, weight_by).values)
    rows = []
    for v, sub in r.groupby(variant, sort=True):
        ratio, w = sub["ratio"].to_numpy(float), sub["_w"].to_numpy(float)
        steps = np.unique(np.concatenate([[1.0, tau_max],
                                          ratio[(ratio >= 1) & (ratio <= tau_max)]]))
        for tau in steps:
            rows.append({variant: v, "tau": float(tau), "rho": float(w[ratio <= tau].sum())})
    return pd.DataFrame(rows, columns=[variant, "tau", "rho"])


def _score(ratio: np.ndarray, w: np.ndarray, tau_max: float) -> float:
    """∫_1^{τ_max} ρ(τ) dτ / (τ_max − 1) of a step profile, exactly: a problem of ratio
    r ≤ τ_max adds w·(τ_max − r)."""
    return float((w * np.clip(tau_max - ratio, 0.0, None)).sum() / (tau_max - 1.0))


def profile_scores(times: pd.DataFrame, *, problem: Sequence[str] = ("task", "data_seed"),
                   variant: str = "variant", tau_max: float = 4.0,
                   weight_by: str | None = "task") -> pd.DataFrame:
    """AlgoPerf's benchmark score of each variant: the area under its performance profile on
    [1, τ_max], over τ_max − 1 (1: the fastest on every problem; 0: never within τ_max times
    the fastest), and the weighted share of problems it solved at all.

    Returns:
        DataFrame: variant, score, solved, fastest (weighted share with ratio 1).
    """
    problem = list(problem)
    r = _ratios(times, problem, variant).assign(_w=_weights(times, problem, weight_by).values)
    rows = []
    for v, sub in r.groupby(variant, sort=True):
        ratio, w = sub["ratio"].to_numpy(float), sub["_w"].to_numpy(float)
        rows.append({variant: v, "score": _score(ratio, w, tau_max),
                     "solved": float(w[np.isfinite(ratio)].sum()),
                     "fastest": float(w[ratio == 1.0].sum())})
    return pd.DataFrame(rows, columns=[variant, "score", "solved", "fastest"])


def profile_score_ci(runs: pd.DataFrame, time: str, event: str, *,
                     problem: Sequence[str] = ("task", "data_seed"), seed: str = "seed",
                     variant: str = "variant", tau_max: float = 4.0,
                     weight_by: str | None = "task", n_boot: int = 1000, rng_seed: int = 0,
                     alpha: float = 0.05) -> pd.DataFrame:
    """:func:`profile_scores` with percentile-bootstrap CIs: each replicate draws, within
    every problem, its run seeds with replacement (for all variants together: they pair),
    recomputes the median times, the ratios and the scores.

    Returns:
        DataFrame: variant, score, ci_low, ci_high, solved, fastest.
    """
    problem = list(problem)
    times = time_to_target(runs, time, event, problem=problem, variant=variant)
    point = profile_scores(times, problem=problem, variant=variant, tau_max=tau_max,
                           weight_by=weight_by)
    variants = list(point[variant])
    _one_run_each(runs, problem + [seed, variant])
    t = as_float(runs[time])
    reached = np.nan_to_num(as_float(runs[event]), nan=0.0) != 0
    frame = runs[problem + [seed, variant]].assign(_t=np.where(reached & np.isfinite(t), t,
                                                               math.inf))
    wide = frame.pivot_table(index=problem + [seed], columns=variant, values="_t",
                             aggfunc="first").reindex(columns=variants)
    blocks = [(key, g.to_numpy(float)) for key, g in wide.groupby(level=list(range(len(problem))),
                                                                  sort=True)]
    keys = pd.DataFrame([k if isinstance(k, tuple) else (k,) for k, _ in blocks],
                        columns=problem)
    w = _weights(keys.assign(time=0.0), problem, weight_by).to_numpy(float)
    rng = np.random.default_rng(rng_seed)
    reps = np.empty((n_boot, len(variants)))
    for b in range(n_boot):
        med = np.array([_median_columns(m[rng.integers(0, len(m), len(m))])
                        for _, m in blocks])  # problems × variants
        best = med.min(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(np.isfinite(med) & np.isfinite(best), med / best, math.inf)
        reps[b] = [_score(ratio[:, j], w, tau_max) for j in range(len(variants))]
    lo, hi = _percentile_ci(reps, alpha) if n_boot > 0 else (
        np.full(len(variants), math.nan), np.full(len(variants), math.nan))
    return point.assign(ci_low=lo, ci_high=hi)[[variant, "score", "ci_low", "ci_high",
                                                 "solved", "fastest"]]

