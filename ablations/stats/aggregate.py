"""Aggregate metrics à la rliable (Agarwal et al. 2021): interquartile mean, stratified
percentile bootstrap and probability of improvement.

rliable itself is archived, so these are small functions of our own, written from the
paper's definitions and tested against them (the IQM is ``scipy.stats.trim_mean(x, 0.25)``;
the probability of improvement is the Mann–Whitney U divided by n·m; the stratified
bootstrap equals ``scipy.stats.bootstrap`` with the tasks as independent samples).

References
----------
- Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep
  reinforcement learning at the edge of the statistical precipice. *NeurIPS* (IQM,
  stratified bootstrap, probability of improvement; the ``rliable`` library).
- Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap* (percentile CI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._common import as_float, iter_groups

__all__ = ["iqm", "stratified_bootstrap_ci", "probability_of_improvement", "aggregate_metrics"]


def iqm(x, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50 % of the values (25 % trimmed mean).

    As in rliable, ``scipy.stats.trim_mean(x, 0.25)``; with ``axis=None`` the values are
    flattened. Example: the IQM of 1..100 is the mean of 26..75, 50.5.

    Args:
        x: values.
        axis: axis along which to trim and average, or None for all values.
    """
    a = np.asarray(x, dtype=float)
    if axis is None:
        return float(sps.trim_mean(a.ravel(), 0.25))
    return sps.trim_mean(a, 0.25, axis=axis)


def _task_list(values) -> list[np.ndarray]:
    """Values as a list of 1-D float arrays, one per task (stratum).

    Accepts a mapping task → values (in key order), a sequence of 1-D arrays, or a single
    1-D array/Series/list of numbers (one stratum).
    """
    if isinstance(values, Mapping):
        return [as_float(v) for v in values.values()]
    if isinstance(values, (np.ndarray, pd.Series)) and np.ndim(values) == 1:
        return [as_float(values)]
    seq = list(values)
    if not seq or np.ndim(seq[0]) == 0:
        return [as_float(seq)]
    return [as_float(v) for v in seq]


def _strata(values_by_task) -> list[np.ndarray]:
    """:func:`_task_list` with NaNs and empty tasks dropped."""
    parts = [p[np.isfinite(p)] for p in _task_list(values_by_task)]
    parts = [p for p in parts if p.size]
    if not parts:
        raise ValueError("no finite values to bootstrap")
    return parts


def stratified_bootstrap_ci(values_by_task, stat: Callable = iqm, n_boot: int = 2000,
                            rng_seed: int = 0, *, alpha: float = 0.05,
                            vectorized: bool | None = None) -> tuple[float, float, float]:
    """Point estimate and stratified percentile-bootstrap CI of an aggregate statistic.

    Following rliable (Agarwal et al. 2021): the runs of each task (stratum; here a cell
    such as (attention, lr), or a single stratum) are resampled with replacement
    independently, the resampled tasks are pooled, and ``stat`` is computed on the pooled
    values; the interval is the (alpha/2, 1 − alpha/2) percentile of the ``n_boot``
    replicates.

    Args:
        values_by_task: mapping task → 1-D values, a sequence of 1-D arrays, or one 1-D array.
            NaNs are dropped.
        stat: function of a 1-D array returning a float (default :func:`iqm`).
        n_boot: bootstrap replicates.
        rng_seed: seed of ``numpy.random.default_rng``.
        alpha: two-sided level.
        vectorized: whether ``stat(matrix, axis=1)`` works row-wise (default: True for
            :func:`iqm`, ``np.mean``, ``np.median``); saves a Python loop.

    Returns:
        ``(estimate, ci_low, ci_high)``.
    """
    parts = _strata(values_by_task)
    pooled = np.concatenate(parts)
    estimate = float(stat(pooled))
    if vectorized is None:
        vectorized = stat in (iqm, np.mean, np.median, np.nanmean, np.nanmedian)
    rng = np.random.default_rng(rng_seed)
    reps = np.empty(n_boot)
    chunk = max(1, 2_000_000 // pooled.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        m = stop - start
        sample = np.concatenate([p[rng.integers(0, p.size, size=(m, p.size))] for p in parts],
                                axis=1)
        if vectorized:
            reps[start:stop] = np.asarray(stat(sample, axis=1), dtype=float)
        else:
            reps[start:stop] = [float(stat(row)) for row in sample]
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return (estimate, float(lo), float(hi))


def _poi_point(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + ½ P(X = Y) over all pairs, i.e. the Mann–Whitney U / (n·m)."""
    gt = (x[:, None] > y[None, :]).mean()
    eq = (x[:, None] == y[None, :]).mean()
    return float(gt + 0.5 * eq)


def _poi_batch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise :func:`_poi_point` for (B, n) and (B, m) resamples."""
    gt = (x[:, :, None] > y[:, None, :]).mean(axis=(1, 2))
    eq = (x[:, :, None] == y[:, None, :]).mean(axis=(1, 2))
    return gt + 0.5 * eq


def probability_of_improvement(x_variant, x_baseline, *, higher_is_better: bool = True,
                               paired: bool = True, n_boot: int = 2000, rng_seed: int = 0,
                               alpha: float = 0.05) -> tuple[float, float, float]:
    """Probability that a run of the variant beats a run of the baseline, with a bootstrap CI.

    P(X > Y) + ½ P(X = Y) for X a variant run and Y a baseline run, estimated over all n·m
    pairs of runs (the Mann–Whitney U statistic divided by n·m; rliable's "probability of
    improvement", Agarwal et al. 2021). With ``higher_is_better=False`` (losses, epochs) it
    is P(X < Y) + ½ P(X = Y). Given strata (mappings task → values with the same keys, or
    sequences of arrays), the estimate is the average over tasks, as in rliable.

    The bootstrap resamples within each task. With ``paired=True`` the variant's and the
    baseline's arrays must be aligned by seed (same length, entry i from seed i) and seeds
    are resampled jointly, keeping the seed pairing; otherwise the two samples are resampled
    independently. Non-finite values are dropped (pairwise when paired).

    Args:
        x_variant, x_baseline: 1-D values, or per-task mappings/sequences with the same tasks.
        higher_is_better: direction of the metric.
        paired: resample seeds jointly (arrays aligned by seed) or the samples independently.
        n_boot: bootstrap replicates (0: no interval).
        rng_seed: seed of ``numpy.random.default_rng``.
        alpha: two-sided level of the interval.

    Returns:
        ``(poi, ci_low, ci_high)``; 1.0 when every variant run beats every baseline run.
    """
    if isinstance(x_variant, Mapping) != isinstance(x_baseline, Mapping):
        raise TypeError("x_variant and x_baseline must both be mappings or both be arrays")
    if isinstance(x_variant, Mapping):
        if set(x_variant) != set(x_baseline):
            raise ValueError("x_variant and x_baseline must have the same tasks")
        x_baseline = {k: x_baseline[k] for k in x_variant}
    xv, xb = _task_list(x_variant), _task_list(x_baseline)
    if len(xv) != len(xb):
        raise ValueError("x_variant and x_baseline must have the same number of tasks")
    tasks = list(zip(xv, xb, strict=True))
    clean = []
    for a, b in tasks:
        if paired:
            if a.size != b.size:
                raise ValueError(f"paired=True needs seed-aligned arrays of equal length; got "
                                 f"{a.size} and {b.size}")
            ok = np.isfinite(a) & np.isfinite(b)
            a, b = a[ok], b[ok]
        else:
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size and b.size:
            if not higher_is_better:
                a, b = -a, -b
            clean.append((a, b))
    if not clean:
        return (math.nan, math.nan, math.nan)
    point = float(np.mean([_poi_point(a, b) for a, b in clean]))
    if n_boot <= 0:
        return (point, math.nan, math.nan)
    rng = np.random.default_rng(rng_seed)
    reps = np.zeros(n_boot)
    biggest = max(a.size * b.size for a, b in clean)
    chunk = max(1, 4_000_000 // biggest)
    for start in range(0, n_boot, chunk):
        m = min(n_boot, start + chunk) - start
        acc = np.zeros(m)
        for a, b in clean:
            ia = rng.integers(0, a.size, size=(m, a.size))
            ib = ia if paired else rng.integers(0, b.size, size=(m, b.size))
            acc += _poi_batch(a[ia], b[ib])
        reps[start:start + m] = acc / len(clean)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return (point, float(lo), float(hi))


def aggregate_metrics(runs: pd.DataFrame, metric: str, *, group: str | Sequence[str] = "variant",
                      strata: Sequence[str] = (), n_boot: int = 2000, rng_seed: int = 0,
                      alpha: float = 0.05) -> pd.DataFrame:
    """Per-group mean and IQM with stratified bootstrap CIs (rliable-style summary).

    Args:
        runs: the runs table.
        metric: metric column.
        group: column(s) whose groups are summarised (default ``variant``).
        strata: columns defining the bootstrap strata (e.g. ``("attention", "lr")``); empty
            for one stratum.
        n_boot, rng_seed, alpha: passed to :func:`stratified_bootstrap_ci`.

    Returns:
        DataFrame with the group column(s), n, mean, mean_low, mean_high, iqm, iqm_low,
        iqm_high, median.
    """
    group = [group] if isinstance(group, str) else list(group)
    strata = [s for s in strata if s in runs.columns]
    summary_cols = ("mean", "mean_low", "mean_high", "iqm", "iqm_low", "iqm_high", "median")
    rows = []
    for key, sub in iter_groups(runs, group):
        vals = as_float(sub[metric])
        row = dict(key)
        row["n"] = int(np.isfinite(vals).sum())
        if row["n"] == 0:
            rows.append({**row, **dict.fromkeys(summary_cols, math.nan)})
            continue
        if strata:
            by_task = {tuple(k.values()): as_float(s[metric])
                       for k, s in iter_groups(sub, strata)}
        else:
            by_task = {"all": vals}
        m, ml, mh = stratified_bootstrap_ci(by_task, np.mean, n_boot, rng_seed, alpha=alpha)
        q, ql, qh = stratified_bootstrap_ci(by_task, iqm, n_boot, rng_seed, alpha=alpha)
        rows.append({**row, "mean": m, "mean_low": ml, "mean_high": mh, "iqm": q,
                     "iqm_low": ql, "iqm_high": qh,
                     "median": float(np.median(vals[np.isfinite(vals)]))})
    return pd.DataFrame(rows, columns=[*group, "n", *summary_cols])

