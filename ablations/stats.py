"""Statistics for the ablation grids: paired comparisons, factorial analysis, time to target,
aggregate metrics and power.

Pure computation: every function takes arrays or DataFrames and returns numbers or
DataFrames. Nothing here reads or writes files or draws (DESIGN.md, "Statistics compute,
plots draw, the report does the I/O"). statsmodels is imported lazily, inside the functions
that need it, so ``import ablations.stats`` only pulls in numpy, pandas and scipy.

Inputs follow the data contract of ``results/`` (DESIGN.md):

- a *runs* table, one row per run, with identity columns ``run_id, arm, variant, attention,
  seed, lr`` and one column per scalar metric (``final_test_acc``, ``epochs_to_90``, ...);
- a *curves* table, long format, one row per (run, epoch): ``run_id, variant, attention,
  seed, epoch, test_acc, train_loss``.

A *cell* is one combination of the cell keys (by default ``attention`` and ``lr``). Variants
are only ever compared with a baseline inside the same cell, paired by ``seed``: the runner
derives data order, initialisation and noise streams from the seed, so seed ``s`` of two
variants sees the same data and the same initial weights, and the paired difference removes
that shared variation.

References
----------
- Student's paired t test and its confidence interval: any text, e.g. Rice, *Mathematical
  Statistics and Data Analysis*, 3rd ed., §11.3.
- Wilcoxon, F. (1945). Individual comparisons by ranking methods. *Biometrics Bulletin* 1(6).
- Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed. (d_z).
- Lakens, D. (2017). Equivalence tests: a practical primer for t tests, correlations, and
  meta-analyses. *Soc. Psychol. Personal. Sci.* 8(4) (TOST).
- Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scand. J. Stat.*
- Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap* (percentile CI).
- Kaplan, E. L. & Meier, P. (1958). Nonparametric estimation from incomplete observations.
  *JASA* 53; Greenwood, M. (1926); Kalbfleisch, J. D. & Prentice, R. L. (2002), *The
  Statistical Analysis of Failure Time Data*, 2nd ed. (log-log interval).
- Brookmeyer, R. & Crowley, J. (1982). A confidence interval for the median survival time.
  *Biometrics* 38.
- Mantel, N. (1966). Evaluation of survival data and two new rank order statistics arising
  in its consideration. *Cancer Chemother. Rep.* 50 (log-rank test).
- Freireich, E. J. et al. (1963). The effect of 6-mercaptopurine on the duration of
  steroid-induced remissions in acute leukemia. *Blood* 21 (the test data set).
- Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep
  reinforcement learning at the edge of the statistical precipice. *NeurIPS* (IQM,
  stratified bootstrap, probability of improvement; the ``rliable`` library).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

__all__ = [
    "STATS_COLUMNS",
    "EXTRA_COLUMNS",
    "HIGHER_IS_BETTER",
    "FAMILIES",
    "paired_differences",
    "paired_comparison",
    "compare_all",
    "holm",
    "verdict",
    "factorial_2x2",
    "time_to_event",
    "kaplan_meier",
    "km_median",
    "logrank_test",
    "mean_time_among_reached",
    "time_to_target",
    "kaplan_meier_by_group",
    "iqm",
    "stratified_bootstrap_ci",
    "probability_of_improvement",
    "aggregate_metrics",
    "seeds_needed",
    "min_detectable_effect",
    "paired_t_power",
    "t_interval",
    "summarize",
    "curve_summary",
    "parse_lambda",
    "lambda_sweep",
]

#: The columns of ``results/<arm>/stats.csv``, in order (DESIGN.md, data contract).
STATS_COLUMNS: tuple[str, ...] = (
    "metric", "variant", "baseline", "n", "mean_variant", "mean_baseline", "diff",
    "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_holm", "d_z", "tost_margin", "p_tost",
    "verdict",
)

#: Extra columns that :func:`compare_all` appends after :data:`STATS_COLUMNS`; the cell keys
#: (by default ``attention``, ``lr``) come between ``mde`` and ``claimed_effect``.
EXTRA_COLUMNS: tuple[str, ...] = (
    "boot_low", "boot_high", "n_for_claim", "mde", "claimed_effect", "sd_diff",
)

#: Direction of improvement per metric. ``None``: no preferred direction (the verdict then
#: says "higher"/"lower" instead of "better"/"worse").
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "final_test_acc": True,
    "epochs_to_90": False,
    "reached_90": True,
    "mean_train_loss": False,
    "final_train_loss": False,
    "sec_per_epoch": False,
    "sec_to_target": False,
    "perturbation_ratio": None,
    "test_loss": False,
    "test_exact_match": True,
    "tokens_per_s": True,
    "optimizer_share": False,
    "test_acc": True,
    "train_loss": False,
}

#: Accepted values of ``family`` in :func:`compare_all` (the sets of p values Holm adjusts).
FAMILIES: tuple[str, ...] = (
    "per metric and baseline",
    "per metric, baseline and cell",
    "per metric",
    "all",
)

_DEFAULT_CELL_KEYS = ("attention", "lr")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _as_float(values) -> np.ndarray:
    """Metric values as float64 (booleans become 0/1, strings 'true'/'false' too)."""
    s = pd.Series(values)
    if s.dtype == object:
        lowered = s.astype(str).str.strip().str.lower()
        if lowered.isin(["true", "false", "1", "0", "nan", "none", ""]).all():
            s = lowered.map({"true": 1.0, "1": 1.0, "false": 0.0, "0": 0.0}).astype(float)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _as_bool(values) -> np.ndarray:
    """Event indicators as bool; accepts bools, 0/1 and the strings 'true'/'false'."""
    return np.nan_to_num(_as_float(values), nan=0.0) != 0.0


def _cell_keys_in(df: pd.DataFrame, cell_keys: Iterable[str]) -> list[str]:
    """The cell keys that exist as columns of ``df`` (an arm may lack one, e.g. lr)."""
    return [k for k in cell_keys if k in df.columns]


def _select_cell(df: pd.DataFrame, cell: Mapping | None) -> pd.DataFrame:
    """Rows of ``df`` in one cell, ``cell`` mapping column -> value (NaN matches NaN)."""
    if not cell:
        return df
    mask = np.ones(len(df), dtype=bool)
    for key, value in cell.items():
        if key not in df.columns:
            raise KeyError(f"cell key {key!r} is not a column; columns: {list(df.columns)}")
        col = df[key]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            mask &= col.isna().to_numpy()
        else:
            mask &= (col == value).to_numpy()
    return df[mask]


def t_interval(x, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of ``x`` (NaNs dropped) and its two-sided (1-alpha) Student t interval.

    Returns ``(mean, low, high)``; the interval is NaN for fewer than two values and collapses
    to the mean when all values are equal.
    """
    x = _as_float(x)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if n < 2:
        return (m, math.nan, math.nan)
    half = float(sps.t.ppf(1 - alpha / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return (m, m - half, m + half)


# --------------------------------------------------------------------------------------------
# power
# --------------------------------------------------------------------------------------------

def paired_t_power(effect_size: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t test at standardised effect ``effect_size``.

    ``effect_size`` is d_z = mean difference / sd of differences. Uses the noncentral t
    distribution with ``n - 1`` degrees of freedom and noncentrality ``d_z·√n``:
    power = P(T' > t_crit) + P(T' < −t_crit). This is what statsmodels' ``TTestPower``
    computes (Cohen 1988, ch. 2).
    """
    if n < 2:
        return math.nan
    df = n - 1
    tcrit = float(sps.t.ppf(1 - alpha / 2, df))
    nc = abs(effect_size) * math.sqrt(n)
    with np.errstate(all="ignore"):
        power = float(sps.nct.sf(tcrit, df, nc) + sps.nct.cdf(-tcrit, df, nc))
    if np.isfinite(power):
        return min(1.0, max(0.0, power))
    # scipy's noncentral t returns NaN far in the tails at large noncentrality; integrate
    # instead over S = sqrt(chi2_df), T' = (Z + nc) / (S / sqrt(df)).
    from scipy import integrate

    def integrand(s: float) -> float:
        c = tcrit * s / math.sqrt(df)
        return float(sps.chi.pdf(s, df) * (sps.norm.sf(c - nc) + sps.norm.cdf(-c - nc)))

    value, _ = integrate.quad(integrand, 0.0, np.inf, limit=200)
    return min(1.0, max(0.0, float(value)))


def seeds_needed(effect: float, sd_diff: float, alpha: float = 0.05,
                 power: float = 0.8, max_n: int = 10_000_000) -> float:
    """Smallest number of paired seeds giving ``power`` to detect ``effect`` (two-sided).

    Args:
        effect: the difference to detect, in metric units (its sign is ignored).
        sd_diff: standard deviation of the paired (per-seed) differences.
        alpha: two-sided significance level of the paired t test.
        power: target power, e.g. 0.8.
        max_n: search limit; beyond it ``inf`` is returned.

    Returns:
        An integer-valued float n ≥ 2 (so that NaN and inf fit in a table column): ``inf``
        when ``effect`` is 0 (or needs more than ``max_n`` seeds), NaN when ``effect`` or
        ``sd_diff`` is NaN, and 2 (the smallest n a t test allows) when ``sd_diff`` is 0.

    The search is exact over integers using :func:`paired_t_power`; statsmodels'
    ``TTestPower().solve_power`` returns the continuous solution, whose ceiling this equals
    (d = 0.5, α = 0.05, 80 % power: 33.4 → 34 seeds).
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1); got alpha={alpha}, power={power}")
    if effect is None or sd_diff is None or not np.isfinite(effect) or not np.isfinite(sd_diff):
        return math.nan
    if sd_diff < 0:
        raise ValueError(f"sd_diff must be non-negative; got {sd_diff}")
    if effect == 0:
        return math.inf
    if sd_diff == 0:
        return 2.0
    d = abs(effect) / sd_diff
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, int(math.ceil((z / d) ** 2)))
    if n > max_n:
        return math.inf
    # The normal approximation underestimates n slightly; walk to the exact integer.
    while n <= max_n and paired_t_power(d, n, alpha) < power:
        n += 1 if n < 1000 else max(1, n // 1000)
    if n > max_n:
        return math.inf
    while n > 2 and paired_t_power(d, n - 1, alpha) >= power:
        n -= 1
    return float(n)


def min_detectable_effect(n: int, sd_diff: float, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest |mean difference| that ``n`` paired seeds detect with ``power`` (two-sided).

    Solves :func:`paired_t_power` (d, n) = power for d and returns d·sd_diff, in metric units.
    NaN for n < 2 or a non-finite ``sd_diff``; 0 when ``sd_diff`` is 0.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1); got alpha={alpha}, power={power}")
    if n is None or not np.isfinite(n) or n < 2 or sd_diff is None or not np.isfinite(sd_diff):
        return math.nan
    n = int(n)
    if sd_diff == 0:
        return 0.0
    hi = 1.0
    while paired_t_power(hi, n, alpha) < power:
        hi *= 2.0
        if hi > 1e6:
            return math.inf
    d = optimize.brentq(lambda e: paired_t_power(e, n, alpha) - power, 0.0, hi, xtol=1e-10)
    return float(d * sd_diff)


# --------------------------------------------------------------------------------------------
# paired comparison of one variant against one baseline
# --------------------------------------------------------------------------------------------

def paired_differences(runs: pd.DataFrame, metric: str, variant: str, baseline: str, *,
                       cell_keys: Sequence[str] = _DEFAULT_CELL_KEYS,
                       cell: Mapping | None = None) -> pd.DataFrame:
    """Pair the runs of ``variant`` and ``baseline`` by seed within matching cells.

    An inner join on ``(*cell_keys, seed)`` of the two variants' rows (cell keys absent from
    ``runs`` are ignored). Pairs where either value of ``metric`` is missing (e.g.
    ``epochs_to_90`` of a run that never reached 90 %) are dropped.

    Args:
        runs: the runs table.
        metric: metric column.
        variant, baseline: variant ids.
        cell_keys: columns that define a cell; pairs never cross cells.
        cell: optional ``{column: value}`` restricting to one cell.

    Returns:
        DataFrame with the cell keys, ``seed``, ``variant_value``, ``baseline_value`` and
        ``diff`` (variant − baseline), sorted by cell and seed.

    Raises:
        KeyError: ``metric`` or ``seed`` missing.
        ValueError: a seed appears twice for one variant in one cell (pairing ambiguous).
    """
    for col in (metric, "seed", "variant"):
        if col not in runs.columns:
            raise KeyError(f"column {col!r} missing from runs; columns: {list(runs.columns)}")
    keys = _cell_keys_in(runs, cell_keys)
    df = _select_cell(runs, cell)
    cols = [*keys, "seed", metric]
    v = df.loc[df["variant"] == variant, cols].copy()
    b = df.loc[df["variant"] == baseline, cols].copy()
    for name, part in ((variant, v), (baseline, b)):
        dup = part.duplicated(subset=[*keys, "seed"], keep=False)
        if dup.any():
            first = part.loc[dup, [*keys, "seed"]].iloc[0].to_dict()
            raise ValueError(f"variant {name!r} has several runs for {first}; pairing by seed "
                             "needs one run per (cell, seed)")
    v["variant_value"] = _as_float(v.pop(metric))
    b["baseline_value"] = _as_float(b.pop(metric))
    merged = v.merge(b, on=[*keys, "seed"], how="inner")
    merged = merged[np.isfinite(merged["variant_value"]) & np.isfinite(merged["baseline_value"])]
    merged = merged.assign(diff=merged["variant_value"] - merged["baseline_value"])
    return merged.sort_values([*keys, "seed"], na_position="last").reset_index(drop=True)


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p value of paired differences ``d`` (zeros dropped).

    Up to 13 non-zero differences the null distribution of T+ (sum of the mid-ranks of
    |d| over positive d) is enumerated exactly over all 2^n sign patterns, which handles
    ties; the p value is min(1, 2·min(P(T ≥ t), P(T ≤ t))). This is what
    ``scipy.stats.wilcoxon`` computes by its (much slower) permutation method for tied
    samples of this size, and equals its exact method without ties. Above 13, scipy's
    default (exact without ties, normal approximation otherwise) is used.
    """
    nz = d[d != 0]
    n = nz.size
    if n > 13:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(sps.wilcoxon(nz).pvalue)
    ranks = sps.rankdata(np.abs(nz))
    t_plus = ranks[nz > 0].sum()
    signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(float)
    null = signs @ ranks
    tol = 1e-9 * max(1.0, t_plus)
    p = 2.0 * min(np.mean(null >= t_plus - tol), np.mean(null <= t_plus + tol))
    return float(min(1.0, p))


def _paired_stats(xv: np.ndarray, xb: np.ndarray, *, tost_margin: float | None,
                  claimed_effect: float | None, alpha: float, power: float, n_boot: int,
                  rng_seed: int) -> dict:
    """Statistics of paired samples; see :func:`paired_comparison` for definitions."""
    d = xv - xb
    n = int(d.size)
    nan = math.nan
    out = dict(n=n, mean_variant=nan, mean_baseline=nan, diff=nan, sd_diff=nan, ci_low=nan,
               ci_high=nan, boot_low=nan, boot_high=nan, p_ttest=nan, p_wilcoxon=nan,
               d_z=nan, tost_margin=nan, p_tost=nan, claimed_effect=nan, n_for_claim=nan,
               mde=nan)
    if tost_margin is not None and np.isfinite(tost_margin):
        if tost_margin <= 0:
            raise ValueError(f"tost_margin must be positive; got {tost_margin}")
        out["tost_margin"] = float(tost_margin)
    if claimed_effect is not None and np.isfinite(claimed_effect):
        out["claimed_effect"] = float(claimed_effect)
    if n == 0:
        return out
    mean = float(d.mean())
    out.update(mean_variant=float(xv.mean()), mean_baseline=float(xb.mean()), diff=mean)
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    out["sd_diff"] = sd
    tq = float(sps.t.ppf(1 - alpha / 2, df))
    out["ci_low"], out["ci_high"] = mean - tq * se, mean + tq * se
    # Differences equal up to rounding (e.g. 0.6 − 0.5 vs 0.7 − 0.6) count as equal.
    tol = 64 * np.finfo(float).eps * float(max(np.max(np.abs(xv)), np.max(np.abs(xb))))
    if sd <= tol:
        sd = se = 0.0
        out["sd_diff"] = 0.0
        out["ci_low"] = out["ci_high"] = mean
    if se > 0:
        t = mean / se
        out["p_ttest"] = float(2 * sps.t.sf(abs(t), df))
        out["d_z"] = mean / sd
    else:
        # All differences equal: t = ±inf unless they are all zero.
        out["p_ttest"] = 1.0 if abs(mean) <= tol else 0.0
    # Wilcoxon signed-rank (zeros dropped, Wilcox 1945's convention); undefined when no
    # non-zero difference is left, and we also leave it out below two non-zero differences.
    if np.count_nonzero(d) >= 2:
        out["p_wilcoxon"] = _wilcoxon_p(d)
    # TOST (Lakens 2017): H0a diff ≤ −m against diff > −m, H0b diff ≥ m against diff < m.
    m = out["tost_margin"]
    if np.isfinite(m):
        if se > 0:
            p_lower = float(sps.t.sf((mean + m) / se, df))
            p_upper = float(sps.t.cdf((mean - m) / se, df))
            out["p_tost"] = max(p_lower, p_upper)
        else:
            out["p_tost"] = 0.0 if abs(mean) < m else 1.0
    # Bootstrap percentile interval of the mean paired difference.
    if n_boot > 0:
        rng = np.random.default_rng(rng_seed)
        means = np.empty(n_boot)
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, n))
            means[start:stop] = d[idx].mean(axis=1)
        out["boot_low"], out["boot_high"] = (float(q) for q in
                                             np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    out["n_for_claim"] = seeds_needed(out["claimed_effect"], sd, alpha, power)
    out["mde"] = min_detectable_effect(n, sd, alpha, power)
    return out


def paired_comparison(runs: pd.DataFrame, metric: str, variant: str, baseline: str, *,
                      tost_margin: float | None,
                      cell_keys: Sequence[str] = _DEFAULT_CELL_KEYS,
                      cell: Mapping | None = None,
                      claimed_effect: float | None = None,
                      alpha: float = 0.05, power: float = 0.8, n_boot: int = 10_000,
                      rng_seed: int = 0) -> dict:
    """Compare ``variant`` with ``baseline`` on ``metric``, paired by seed.

    Pairs come from :func:`paired_differences` (inner join on ``(*cell_keys, seed)``). With
    ``cell=None`` the pairs of every cell where both variants ran are pooled; pass
    ``cell={"attention": "quantum", "lr": 1e-3}`` to compare inside one cell (what
    :func:`compare_all` does).

    With d_i = variant_i − baseline_i, i = 1..n:

    - ``diff`` = mean(d); ``mean_variant``/``mean_baseline`` are over the paired runs only,
      so ``diff = mean_variant − mean_baseline``. ``sd_diff`` = sd(d) (ddof 1).
    - ``ci_low``/``ci_high``: two-sided (1−alpha) Student t interval of the mean difference.
    - ``boot_low``/``boot_high``: percentile bootstrap interval, resampling the n pairs
      ``n_boot`` times (generator ``numpy.random.default_rng(rng_seed)``).
    - ``p_ttest``: two-sided paired t test of mean(d) = 0. When all d_i are equal (up to
      64 ulps of the data's magnitude, so that 0.6 − 0.5 and 0.7 − 0.6 count as equal) the
      t statistic is ±inf (p = 0), or 0/0 when all are 0 (p = 1 by convention); sd_diff is
      then 0 and the t interval collapses to the mean.
    - ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (scipy; zero differences dropped,
      exact null distribution for small untied samples, normal approximation otherwise).
      NaN when fewer than two non-zero differences remain (all zero, or n too small for the
      test to say anything; note that it cannot reach p < 0.05 below 6 non-zero pairs).
    - ``d_z``: Cohen's d_z = mean(d) / sd(d); NaN when sd(d) = 0.
    - ``p_tost``: two one-sided paired t tests against ±``tost_margin`` (Lakens 2017);
      p_tost = max of the two one-sided p values, and the difference is declared equivalent
      within ±margin when p_tost < alpha (equivalently, the (1−2·alpha) CI lies inside
      ±margin). NaN when no margin is given.
    - ``n_for_claim``: seeds needed for ``power`` at two-sided ``alpha`` to detect
      ``claimed_effect`` (the paper's effect in metric units) given the observed sd(d)
      (:func:`seeds_needed`); NaN without a claim.
    - ``mde``: minimum detectable |effect| at the current n with ``power``
      (:func:`min_detectable_effect`), metric units.

    Everything but n and the means is NaN below two pairs.

    Returns:
        dict with keys n, n_cells, mean_variant, mean_baseline, diff, sd_diff, ci_low, ci_high,
        boot_low, boot_high, p_ttest, p_wilcoxon, d_z, tost_margin, p_tost, claimed_effect,
        n_for_claim, mde.
    """
    pairs = paired_differences(runs, metric, variant, baseline, cell_keys=cell_keys, cell=cell)
    keys = _cell_keys_in(runs, cell_keys)
    out = _paired_stats(pairs["variant_value"].to_numpy(float),
                        pairs["baseline_value"].to_numpy(float), tost_margin=tost_margin,
                        claimed_effect=claimed_effect, alpha=alpha, power=power,
                        n_boot=n_boot, rng_seed=rng_seed)
    if keys and len(pairs):
        n_cells = int(pairs[keys].drop_duplicates().shape[0])
    else:
        n_cells = int(len(pairs) > 0)
    return {"n": out.pop("n"), "n_cells": n_cells, **out}


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p values (Holm 1979), in the input order.

    With the m finite p values sorted ascending p_(1) ≤ … ≤ p_(m), the adjusted value is
    max_{j ≤ i} min(1, (m − j + 1)·p_(j)). NaN entries are left NaN and do not count in m.
    Example: [0.01, 0.04, 0.03] → [0.03, 0.06, 0.06].
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    adj = np.minimum(1.0, (m - np.arange(m)) * pv[order])
    adj = np.maximum.accumulate(adj)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def verdict(diff: float, p_holm: float, p_tost: float, tost_margin: float,
            higher_is_better: bool | None, alpha: float = 0.05) -> str:
    """The verdict of one comparison (see :func:`compare_all` for the rule)."""
    if np.isfinite(p_holm) and p_holm < alpha and np.isfinite(diff) and diff != 0:
        higher = diff > 0
        if higher_is_better is None:
            return "higher" if higher else "lower"
        return "better" if higher == bool(higher_is_better) else "worse"
    if np.isfinite(p_tost) and p_tost < alpha:
        return f"equivalent within ±{tost_margin:g}"
    return "no detectable difference"


def compare_all(runs: pd.DataFrame, metrics: Sequence[str],
                baselines: Sequence[str] = ("adamw", "sin-l0.5"),
                claimed_effects: Mapping[str, float] | None = None,
                tost_margins: Mapping[str, float] | None = None,
                family: str = "per metric and baseline", *,
                variants: Sequence[str] | None = None,
                cell_keys: Sequence[str] = _DEFAULT_CELL_KEYS,
                higher_is_better: Mapping[str, bool | None] | None = None,
                alpha: float = 0.05, power: float = 0.8, n_boot: int = 10_000,
                rng_seed: int = 0) -> pd.DataFrame:
    """Every variant against every baseline on every metric: the ``stats.csv`` table.

    For each metric, baseline and cell (combination of ``cell_keys`` present in ``runs``)
    where the baseline ran, each other variant of that cell (restricted to ``variants`` when
    given) is compared with :func:`paired_comparison` inside the cell. Comparisons without a
    single shared seed are left out.

    Multiple comparisons: Holm's step-down correction (:func:`holm`) is applied within each
    family of p_ttest values. ``family`` is one of

    - ``"per metric and baseline"`` (default): all variants, in all cells, against one
      baseline on one metric — the set of claims "variant X beats baseline B on metric M";
    - ``"per metric, baseline and cell"``: as above, separately per cell;
    - ``"per metric"``: all variants against all baselines on one metric;
    - ``"all"``: every row of the table.

    Verdict rule, per row (``alpha`` = 0.05 by default):

    1. p_holm < alpha: ``"better"`` or ``"worse"`` by the sign of ``diff`` and the metric's
       direction in ``higher_is_better`` (default :data:`HIGHER_IS_BETTER`: accuracy,
       exact match and throughput higher; losses, epochs, seconds and optimizer share
       lower). For metrics without a direction (e.g. ``perturbation_ratio`` or any metric not
       in the map) the verdict is ``"higher"`` or ``"lower"``.
    2. else p_tost < alpha: ``"equivalent within ±<margin>"`` (margin from ``tost_margins``,
       formatted with ``:g``, e.g. ``"equivalent within ±0.01"``).
    3. else ``"no detectable difference"``.

    Args:
        runs: the runs table (one row per run).
        metrics: metric columns to compare.
        baselines: baseline variant ids; absent ones are skipped.
        claimed_effects: metric → the paper's claimed difference (metric units), for
            ``n_for_claim``; metrics without an entry get NaN.
        tost_margins: metric → equivalence margin (metric units); without an entry p_tost is
            NaN and no equivalence can be declared.
        family: Holm family, one of :data:`FAMILIES`.
        variants: variant ids to compare (default: all in ``runs``).
        cell_keys: columns that define a cell.
        higher_is_better: metric → direction; overrides :data:`HIGHER_IS_BETTER` entries.
        alpha, power, n_boot, rng_seed: passed to :func:`paired_comparison`.

    Returns:
        DataFrame with exactly :data:`STATS_COLUMNS` first, then ``boot_low, boot_high,
        n_for_claim, mde``, the cell keys present in ``runs``, ``claimed_effect, sd_diff``.
        Rows are ordered by metric (as given), baseline (as given), cell, then variant.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    for metric in metrics:
        if metric not in runs.columns:
            raise KeyError(f"metric {metric!r} is not a column of runs; "
                           f"columns: {list(runs.columns)}")
    claimed_effects = dict(claimed_effects or {})
    tost_margins = dict(tost_margins or {})
    direction = {**HIGHER_IS_BETTER, **dict(higher_is_better or {})}
    keys = _cell_keys_in(runs, cell_keys)
    wanted = None if variants is None else set(variants)

    rows: list[dict] = []
    for metric in metrics:
        for baseline in baselines:
            base_rows = runs[runs["variant"] == baseline]
            if base_rows.empty:
                continue
            if keys:
                cells = [dict(zip(keys, c if isinstance(c, tuple) else (c,), strict=True))
                         for c in base_rows[keys].drop_duplicates()
                         .sort_values(keys, na_position="last").itertuples(index=False)]
            else:
                cells = [{}]
            for cell in cells:
                in_cell = _select_cell(runs, cell)
                names = sorted(v for v in in_cell["variant"].dropna().unique()
                               if v != baseline and (wanted is None or v in wanted))
                for name in names:
                    res = paired_comparison(
                        in_cell, metric, name, baseline, tost_margin=tost_margins.get(metric),
                        cell_keys=keys, claimed_effect=claimed_effects.get(metric),
                        alpha=alpha, power=power, n_boot=n_boot, rng_seed=rng_seed)
                    if res["n"] == 0:
                        continue
                    rows.append({"metric": metric, "variant": name, "baseline": baseline,
                                 **res, **{k: cell[k] for k in keys}})

    columns = [*STATS_COLUMNS, *EXTRA_COLUMNS[:4], *keys, *EXTRA_COLUMNS[4:]]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    if family == "all":
        groups = [np.arange(len(table))]
    else:
        by = {"per metric and baseline": ["metric", "baseline"],
              "per metric, baseline and cell": ["metric", "baseline", *keys],
              "per metric": ["metric"]}[family]
        groups = [np.asarray(idx) for idx in
                  table.groupby(by, dropna=False, sort=False).indices.values()]
    p_holm = np.full(len(table), np.nan)
    for idx in groups:
        p_holm[idx] = holm(table["p_ttest"].to_numpy(float)[idx])
    table["p_holm"] = p_holm
    table["verdict"] = [
        verdict(r.diff, r.p_holm, r.p_tost, r.tost_margin, direction.get(r.metric), alpha)
        for r in table.itertuples(index=False)
    ]
    table["n"] = table["n"].astype(int)
    return table[columns].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# 2 × 2 factorial (attention × optimizer)
# --------------------------------------------------------------------------------------------

def factorial_2x2(runs: pd.DataFrame, metric: str, factor_a: str = "attention",
                  factor_b: str = "variant",
                  levels_a: Sequence = ("classical", "quantum"),
                  levels_b: Sequence = ("adamw", "sin-l0.5"), *,
                  cell: Mapping | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Two-way repeated-measures analysis of a 2 × 2 design, seed as the repeated unit.

    Each seed contributes one run to each of the four (a, b) cells (e.g. classical/quantum
    attention × AdamW/sin-l0.5). Only seeds complete in all four cells are used, so both
    methods see the same balanced data. The factors are coded ±½ (x_a = −½ for
    ``levels_a[0]``, +½ for ``levels_a[1]``; likewise x_b), which makes the coefficients
    directly interpretable:

    - main effect of a: mean over b of (a1 − a0), i.e. the difference of marginal means;
    - main effect of b: likewise;
    - interaction: (m11 − m10) − (m01 − m00), the difference of differences.

    Two fits of ``metric ~ x_a * x_b`` (the ``C(a)*C(b)`` model with sum-type ±½ coding):

    - ``method="mixedlm"``: statsmodels ``MixedLM`` with a random intercept per seed (REML);
      Wald z CIs and p values.
    - ``method="rm-anova"``: OLS with seed as a fixed block, ``metric ~ x_a*x_b + C(seed)``
      (the classical repeated-measures ANOVA with additive subjects); estimates and t CIs
      from the OLS fit, p values from ``anova_lm`` (type II F tests, 1 df each; identical to
      the t tests for this balanced design).

    A MixedLM fit that fails numerically (e.g. a singular design) yields NaN rows with the
    error in ``note``; boundary/convergence warnings (a seed variance of ~0) are recorded in
    ``note`` too.

    Args:
        runs: the runs table.
        metric: response column.
        factor_a, factor_b: the two factor columns.
        levels_a, levels_b: the two levels of each factor, reference level first.
        cell: optional ``{column: value}`` filter applied first (e.g. ``{"lr": 1e-3}``).
        alpha: CI level is 1 − alpha.

    Returns:
        DataFrame with columns term, estimate, ci_low, ci_high, p_value, method (then
        contrast, n_seeds, note): three rows (``factor_a``, ``factor_b``,
        ``factor_a:factor_b``) per method.

    Raises:
        ValueError: fewer than two complete seeds, or a seed with two runs in one cell.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    if len(levels_a) != 2 or len(levels_b) != 2:
        raise ValueError("factorial_2x2 needs exactly two levels per factor")
    for col in (metric, factor_a, factor_b, "seed"):
        if col not in runs.columns:
            raise KeyError(f"column {col!r} missing from runs; columns: {list(runs.columns)}")
    df = _select_cell(runs, cell)
    df = df[df[factor_a].isin(levels_a) & df[factor_b].isin(levels_b)]
    df = pd.DataFrame({"a": df[factor_a].to_numpy(), "b": df[factor_b].to_numpy(),
                       "seed": df["seed"].to_numpy(), "y": _as_float(df[metric])})
    df = df[np.isfinite(df["y"])]
    if df.duplicated(["a", "b", "seed"]).any():
        raise ValueError(f"several runs share a seed in one ({factor_a}, {factor_b}) cell; "
                         "restrict with `cell=` (e.g. one lr)")
    counts = df.groupby("seed")["y"].count()
    complete = counts.index[counts == 4]
    df = df[df["seed"].isin(complete)].copy()
    n_seeds = int(len(complete))
    if n_seeds < 2:
        raise ValueError(f"factorial_2x2 needs at least 2 seeds with all four cells of "
                         f"{factor_a} × {factor_b}; found {n_seeds}")
    df["xa"] = np.where(df["a"] == levels_a[1], 0.5, -0.5)
    df["xb"] = np.where(df["b"] == levels_b[1], 0.5, -0.5)
    df["seed"] = df["seed"].astype(str)

    terms = {"xa": factor_a, "xb": factor_b, "xa:xb": f"{factor_a}:{factor_b}"}
    contrasts = {
        "xa": f"{levels_a[1]} − {levels_a[0]}",
        "xb": f"{levels_b[1]} − {levels_b[0]}",
        "xa:xb": f"({levels_a[1]} − {levels_a[0]}) difference between "
                 f"{levels_b[1]} and {levels_b[0]}",
    }
    rows = []

    # Mixed model: random intercept per seed.
    note = ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = smf.mixedlm("y ~ xa * xb", df, groups=df["seed"]).fit(reml=True)
        msgs = sorted({str(w.message).splitlines()[0] for w in caught})
        note = "; ".join(msgs)
        ci = fit.conf_int(alpha=alpha)
        for name in terms:
            rows.append(dict(term=terms[name], estimate=float(fit.params[name]),
                             ci_low=float(ci.loc[name, 0]), ci_high=float(ci.loc[name, 1]),
                             p_value=float(fit.pvalues[name]), method="mixedlm",
                             contrast=contrasts[name], n_seeds=n_seeds, note=note))
    except (np.linalg.LinAlgError, ValueError) as err:
        for name in terms:
            rows.append(dict(term=terms[name], estimate=math.nan, ci_low=math.nan,
                             ci_high=math.nan, p_value=math.nan, method="mixedlm",
                             contrast=contrasts[name], n_seeds=n_seeds,
                             note=f"fit failed: {err}"))

    # Repeated-measures ANOVA: seed as a fixed block.
    ols = smf.ols("y ~ xa * xb + C(seed)", df).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(ols, typ=2)
    ci = ols.conf_int(alpha=alpha)
    for name in terms:
        rows.append(dict(term=terms[name], estimate=float(ols.params[name]),
                         ci_low=float(ci.loc[name, 0]), ci_high=float(ci.loc[name, 1]),
                         p_value=float(table.loc[name, "PR(>F)"]), method="rm-anova",
                         contrast=contrasts[name], n_seeds=n_seeds, note=""))
    return pd.DataFrame(rows, columns=["term", "estimate", "ci_low", "ci_high", "p_value",
                                       "method", "contrast", "n_seeds", "note"])


# --------------------------------------------------------------------------------------------
# time to target (claims C2 and C5): Kaplan–Meier, log-rank
# --------------------------------------------------------------------------------------------

def time_to_event(runs: pd.DataFrame, *, time_col: str = "epochs_to_90",
                  event_col: str | None = "reached_90",
                  horizon: float | str) -> tuple[np.ndarray, np.ndarray]:
    """Times and event indicators for survival analysis, runs that never reached kept.

    A run with the event (``event_col`` true, or, when ``event_col`` is None or absent, a
    finite ``time_col``) contributes its time; a run without it is right-censored at
    ``horizon``: a number (e.g. the number of epochs every run trained for) or the name of a
    column holding each run's own censoring time (e.g. the run's total seconds, for
    ``sec_to_target``).

    Returns:
        ``(times, events)`` as float and bool arrays.

    Raises:
        ValueError: an event without a finite time, an event after a scalar horizon, or a
            missing censoring time.
    """
    if time_col not in runs.columns:
        raise KeyError(f"column {time_col!r} missing from runs")
    t = _as_float(runs[time_col])
    if event_col is not None and event_col in runs.columns:
        e = _as_bool(runs[event_col])
    else:
        e = np.isfinite(t)
    if np.any(e & ~np.isfinite(t)):
        raise ValueError(f"runs with {event_col}=True but no finite {time_col}")
    if isinstance(horizon, str):
        c = _as_float(runs[horizon])
    else:
        c = np.full(len(t), float(horizon))
        if np.any(e & (t > float(horizon))):
            raise ValueError(f"an event time exceeds the horizon {horizon}")
    times = np.where(e, t, c)
    if not np.all(np.isfinite(times)):
        raise ValueError("a censored run has no finite censoring time (horizon)")
    return times, e


def kaplan_meier(times, events, *, alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan–Meier estimate of the survival function with a log-log confidence band.

    Here "survival" is the fraction of runs that have *not yet* reached the target. At each
    distinct time t (event or censoring) with n_t runs at risk (time ≥ t) and d_t events,
    S(t) = Π_{s ≤ t} (1 − d_s / n_s). A run censored at t counts as at risk at t.

    Greenwood's variance, Var[log S(t)] = Σ_{s ≤ t} d_s / (n_s (n_s − d_s)); the log-log
    (a.k.a. "log(−log)") interval (Kalbfleisch & Prentice; R ``survfit(conf.type="log-log")``)
    is S(t)^{exp(±z·σ(t))} with σ(t) = √Var[log S(t)] / |log S(t)|; it stays in [0, 1].
    The band is [1, 1] before the first event and NaN once S(t) = 0.

    Args:
        times: event or censoring times (finite, ≥ 0).
        events: True for an event, False for censoring.
        alpha: two-sided level, 0.05 for a 95 % band.

    Returns:
        DataFrame with columns time, survival, ci_low, ci_high, then std_err (Greenwood SE of
        S), n_at_risk, n_events, n_censored; the first row is time 0 with survival 1.
    """
    t = _as_float(times)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape:
        raise ValueError(f"times and events differ in length: {t.shape} vs {e.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite (censor non-reaching runs at the horizon)")
    if np.any(t < 0):
        raise ValueError("times must be non-negative")
    z = float(sps.norm.ppf(1 - alpha / 2))
    uniq = np.unique(t)
    rows = [dict(time=0.0, survival=1.0, ci_low=1.0, ci_high=1.0, std_err=0.0,
                 n_at_risk=int(t.size), n_events=0, n_censored=0)]
    s = 1.0
    gw = 0.0
    for ti in uniq:
        at = int(np.sum(t >= ti))
        d = int(np.sum((t == ti) & e))
        c = int(np.sum((t == ti) & ~e))
        if d > 0:
            s *= 1.0 - d / at
            gw = gw + d / (at * (at - d)) if at > d else math.inf
        if s <= 0.0:
            lo = hi = se = math.nan
        elif gw == 0.0:
            lo, hi, se = s, s, 0.0
        else:
            sigma = math.sqrt(gw) / abs(math.log(s))
            lo = s ** math.exp(z * sigma)
            hi = s ** math.exp(-z * sigma)
            se = s * math.sqrt(gw)
        if ti == 0.0:
            rows[0].update(survival=s, ci_low=lo, ci_high=hi, std_err=se, n_events=d,
                           n_censored=c)
            continue
        rows.append(dict(time=float(ti), survival=s, ci_low=lo, ci_high=hi, std_err=se,
                         n_at_risk=at, n_events=d, n_censored=c))
    return pd.DataFrame(rows, columns=["time", "survival", "ci_low", "ci_high", "std_err",
                                       "n_at_risk", "n_events", "n_censored"])


def _first_time_below(time: np.ndarray, curve: np.ndarray, level: float = 0.5) -> float:
    """Smallest time at which the step curve is ≤ level (with a 1e-12 tolerance), else NaN."""
    hit = np.flatnonzero(np.isfinite(curve) & (curve <= level + 1e-12))
    return float(time[hit[0]]) if hit.size else math.nan


def km_median(times, events, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Median time to target from the Kaplan–Meier curve, with a (1−alpha) CI.

    The median is the smallest time with S(t) ≤ ½; when S equals ½ exactly on an interval
    it is the midpoint of that interval (up to the next event time), as in R's ``survfit``.
    The interval follows Brookmeyer & Crowley (1982) by inverting the log-log band: the
    lower limit is the first time the band's lower curve reaches ≤ ½, the upper limit the
    first time its upper curve does. Any of the three is NaN when the curve (or band)
    never reaches ½ — e.g. fewer than half the runs reached the target.

    Returns:
        ``(median, ci_low, ci_high)``.
    """
    km = kaplan_meier(times, events, alpha=alpha)
    tt = km["time"].to_numpy()
    sv = km["survival"].to_numpy()
    med = _first_time_below(tt, sv)
    if np.isfinite(med):
        i = int(np.flatnonzero(tt == med)[0])
        if abs(sv[i] - 0.5) < 1e-12:
            later = np.flatnonzero((tt > med) & (km["n_events"].to_numpy() > 0))
            if later.size:
                med = 0.5 * (med + float(tt[later[0]]))
    lo_curve = km["ci_low"].to_numpy().copy()
    hi_curve = km["ci_high"].to_numpy().copy()
    # Once S = 0 the band is undefined but has certainly crossed ½.
    lo_curve[sv <= 0] = 0.0
    hi_curve[sv <= 0] = 0.0
    return (med, _first_time_below(tt, lo_curve), _first_time_below(tt, hi_curve))


def logrank_test(times_a, events_a, times_b, events_b) -> tuple[float, float]:
    """Two-sample log-rank (Mantel–Haenszel) test of equal time-to-target distributions.

    At each distinct event time of the pooled sample, with n_j at risk, d_j events, n_aj and
    d_aj of them in group a: O − E = Σ (d_aj − d_j n_aj / n_j) and
    V = Σ d_j (n_aj / n_j)(1 − n_aj / n_j)(n_j − d_j)/(n_j − 1). The statistic (O − E)² / V
    is χ² with 1 df under H0 (R ``survdiff``).

    Returns:
        ``(chi2, p)``; ``(nan, nan)`` when there is no event at all (V = 0).
    """
    ta, ea = _as_float(times_a), np.asarray(events_a, dtype=bool)
    tb, eb = _as_float(times_b), np.asarray(events_b, dtype=bool)
    t = np.concatenate([ta, tb])
    e = np.concatenate([ea, eb])
    g = np.concatenate([np.zeros(ta.size, bool), np.ones(tb.size, bool)])
    o_minus_e = 0.0
    var = 0.0
    for tj in np.unique(t[e]):
        risk = t >= tj
        n = int(risk.sum())
        na = int((risk & ~g).sum())
        d = int(((t == tj) & e).sum())
        da = int(((t == tj) & e & ~g).sum())
        o_minus_e += da - d * na / n
        if n > 1:
            var += d * (na / n) * (1 - na / n) * (n - d) / (n - 1)
    if var <= 0:
        return (math.nan, math.nan)
    chi2 = o_minus_e ** 2 / var
    return (float(chi2), float(sps.chi2.sf(chi2, 1)))


def mean_time_among_reached(times_a, events_a, times_b, events_b, *,
                            alpha: float = 0.05) -> dict:
    """The paper's style of comparison: mean time to target among runs that reached it.

    This is how the paper reports C2 (4.6 vs 7.4 epochs). It conditions on reaching the
    target, which is biased when the groups reach it at different rates, so report it next
    to the Kaplan–Meier medians and the log-rank test. The two groups are different subsets
    of seeds, so the comparison is unpaired (Welch's t test and interval).

    Returns:
        dict with n_a, n_b (all runs), reached_a, reached_b (counts), mean_a, mean_b,
        diff (a − b), rel_change (mean_a / mean_b − 1), ci_low, ci_high (Welch),
        p_welch. Statistics that need two reached runs per group are NaN otherwise.
    """
    ta, ea = _as_float(times_a), np.asarray(events_a, dtype=bool)
    tb, eb = _as_float(times_b), np.asarray(events_b, dtype=bool)
    xa, xb = ta[ea & np.isfinite(ta)], tb[eb & np.isfinite(tb)]
    nan = math.nan
    out = dict(n_a=int(ta.size), n_b=int(tb.size), reached_a=int(xa.size),
               reached_b=int(xb.size), mean_a=float(xa.mean()) if xa.size else nan,
               mean_b=float(xb.mean()) if xb.size else nan, diff=nan, rel_change=nan,
               ci_low=nan, ci_high=nan, p_welch=nan)
    if xa.size and xb.size:
        out["diff"] = out["mean_a"] - out["mean_b"]
        out["rel_change"] = out["mean_a"] / out["mean_b"] - 1 if out["mean_b"] else nan
    if xa.size >= 2 and xb.size >= 2:
        va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
        se = math.sqrt(va + vb)
        if se > 0:
            dof = (va + vb) ** 2 / (va ** 2 / (xa.size - 1) + vb ** 2 / (xb.size - 1))
            q = float(sps.t.ppf(1 - alpha / 2, dof))
            out["ci_low"], out["ci_high"] = out["diff"] - q * se, out["diff"] + q * se
            out["p_welch"] = float(2 * sps.t.sf(abs(out["diff"]) / se, dof))
        else:
            out["ci_low"] = out["ci_high"] = out["diff"]
            out["p_welch"] = 1.0 if out["diff"] == 0 else 0.0
    return out


def time_to_target(runs: pd.DataFrame, variant: str, baseline: str, *,
                   horizon: float | str, time_col: str = "epochs_to_90",
                   event_col: str | None = "reached_90", cell: Mapping | None = None,
                   alpha: float = 0.05) -> dict:
    """Time-to-target comparison of ``variant`` against ``baseline`` (claims C2, C5).

    Censored runs are kept (:func:`time_to_event`): Kaplan–Meier medians with
    Brookmeyer–Crowley CIs per group, a log-rank test, and the paper-style mean among runs
    that reached the target (:func:`mean_time_among_reached`, prefixed ``reached_``).

    Returns:
        dict with variant, baseline, n_variant, n_baseline, events_variant, events_baseline,
        median_variant, median_variant_low, median_variant_high, median_baseline (+ _low,
        _high), logrank_chi2, p_logrank, and reached_mean_variant, reached_mean_baseline,
        reached_diff, reached_rel_change, reached_ci_low, reached_ci_high, reached_p_welch.
    """
    df = _select_cell(runs, cell)
    tv, ev = time_to_event(df[df["variant"] == variant], time_col=time_col,
                           event_col=event_col, horizon=horizon)
    tb, eb = time_to_event(df[df["variant"] == baseline], time_col=time_col,
                           event_col=event_col, horizon=horizon)
    out: dict = dict(variant=variant, baseline=baseline, n_variant=int(tv.size),
                     n_baseline=int(tb.size), events_variant=int(ev.sum()),
                     events_baseline=int(eb.sum()))
    for name, (t, e) in (("variant", (tv, ev)), ("baseline", (tb, eb))):
        med = km_median(t, e, alpha=alpha) if t.size else (math.nan,) * 3
        out[f"median_{name}"], out[f"median_{name}_low"], out[f"median_{name}_high"] = med
    chi2, p = logrank_test(tv, ev, tb, eb) if (tv.size and tb.size) else (math.nan, math.nan)
    out["logrank_chi2"], out["p_logrank"] = chi2, p
    m = mean_time_among_reached(tv, ev, tb, eb, alpha=alpha)
    out.update(reached_mean_variant=m["mean_a"], reached_mean_baseline=m["mean_b"],
               reached_diff=m["diff"], reached_rel_change=m["rel_change"],
               reached_ci_low=m["ci_low"], reached_ci_high=m["ci_high"],
               reached_p_welch=m["p_welch"])
    return out


def kaplan_meier_by_group(runs: pd.DataFrame, *, horizon: float | str,
                          group: str | Sequence[str] = "variant",
                          time_col: str = "epochs_to_90", event_col: str | None = "reached_90",
                          alpha: float = 0.05) -> pd.DataFrame:
    """:func:`kaplan_meier` per group, stacked in long form (input of ``plot_kaplan_meier``).

    Returns:
        DataFrame with the group column(s) then the columns of :func:`kaplan_meier`.
    """
    group = [group] if isinstance(group, str) else list(group)
    parts = []
    for key, sub in runs.groupby(group, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        t, e = time_to_event(sub, time_col=time_col, event_col=event_col, horizon=horizon)
        km = kaplan_meier(t, e, alpha=alpha)
        for col, val in zip(group, key, strict=True):
            km.insert(0 if col == group[0] else group.index(col), col, val)
        parts.append(km)
    if not parts:
        return pd.DataFrame(columns=[*group, "time", "survival", "ci_low", "ci_high",
                                     "std_err", "n_at_risk", "n_events", "n_censored"])
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------
# aggregate metrics à la rliable (Agarwal et al. 2021)
# --------------------------------------------------------------------------------------------

def iqm(x, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50 % of the values (25 % trimmed mean).

    As in rliable, ``scipy.stats.trim_mean(x, 0.25)``; with ``axis=None`` the values are
    flattened. Example: the IQM of 1..100 is the mean of 26..75, 50.5.
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
        return [_as_float(v) for v in values.values()]
    if isinstance(values, (np.ndarray, pd.Series)) and np.ndim(values) == 1:
        return [_as_float(values)]
    seq = list(values)
    if not seq or np.ndim(seq[0]) == 0:
        return [_as_float(seq)]
    return [_as_float(v) for v in seq]


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

    Returns:
        DataFrame with the group column(s), n, mean, mean_low, mean_high, iqm, iqm_low,
        iqm_high, median.
    """
    group = [group] if isinstance(group, str) else list(group)
    strata = [s for s in strata if s in runs.columns]
    rows = []
    for key, sub in runs.groupby(group, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        vals = _as_float(sub[metric])
        row = dict(zip(group, key, strict=True))
        row["n"] = int(np.isfinite(vals).sum())
        if row["n"] == 0:
            rows.append({**row, **{k: math.nan for k in ("mean", "mean_low", "mean_high",
                                                          "iqm", "iqm_low", "iqm_high",
                                                          "median")}})
            continue
        if strata:
            by_task = {k: _as_float(s[metric]) for k, s in sub.groupby(strata, dropna=False)}
        else:
            by_task = {"all": vals}
        m, ml, mh = stratified_bootstrap_ci(by_task, np.mean, n_boot, rng_seed, alpha=alpha)
        q, ql, qh = stratified_bootstrap_ci(by_task, iqm, n_boot, rng_seed, alpha=alpha)
        rows.append({**row, "mean": m, "mean_low": ml, "mean_high": mh, "iqm": q,
                     "iqm_low": ql, "iqm_high": qh,
                     "median": float(np.median(vals[np.isfinite(vals)]))})
    return pd.DataFrame(rows, columns=[*group, "n", "mean", "mean_low", "mean_high", "iqm",
                                       "iqm_low", "iqm_high", "median"])


# --------------------------------------------------------------------------------------------
# descriptive summaries for the plots
# --------------------------------------------------------------------------------------------

def summarize(df: pd.DataFrame, value: str, by: str | Sequence[str],
              alpha: float = 0.05) -> pd.DataFrame:
    """Mean and (1−alpha) t interval of ``value`` per group of ``by``.

    Returns:
        DataFrame with the ``by`` columns, n, mean, sd, ci_low, ci_high.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, sub in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        x = _as_float(sub[value])
        x = x[np.isfinite(x)]
        m, lo, hi = t_interval(x, alpha)
        rows.append({**dict(zip(by, key, strict=True)), "n": int(x.size), "mean": m,
                     "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "sd", "ci_low", "ci_high"])


def curve_summary(curves: pd.DataFrame, value: str = "test_acc", *,
                  by: Sequence[str] = ("variant", "attention"), x: str = "epoch",
                  alpha: float = 0.05) -> pd.DataFrame:
    """Learning curves across seeds: mean and t CI of ``value`` per group and ``x``.

    Input is the long curve table (one row per run and epoch). Group columns absent from
    ``curves`` are ignored.

    Returns:
        DataFrame with the group columns, ``x``, n, mean, sd, ci_low, ci_high.
    """
    by = [b for b in by if b in curves.columns]
    return summarize(curves, value, [*by, x], alpha)


_LAMBDA_ID = re.compile(r"^(?P<name>[a-z]+)(?:-l(?P<lam>\d+(?:\.\d+)?))?(?P<suffix>-first\d+)?$")


def parse_lambda(variant: str) -> tuple[str, float]:
    """Split a canonical variant id into (family, λ): ``sin-l0.5`` → ("sin", 0.5),
    ``sin-l0.1-first4`` → ("sin-first4", 0.1), ``adamw`` → ("adamw", 0.0); ids without a
    weight (e.g. ``anneal``) give λ = NaN.
    """
    m = _LAMBDA_ID.match(str(variant))
    if m is None:
        raise ValueError(f"malformed variant id {variant!r}")
    name = m.group("name") + (m.group("suffix") or "")
    if m.group("lam") is not None:
        return (name, float(m.group("lam")))
    return (name, 0.0 if m.group("name") == "adamw" else math.nan)


def lambda_sweep(runs: pd.DataFrame, metric: str, *, families: Sequence[str] | None = None,
                 by: Sequence[str] = ("attention",), include_adamw: bool = True,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Metric against the quantum weight λ, per perturbation family (claim C3).

    Each variant ``<family>-l<λ>`` contributes a point (mean and t CI over its runs). With
    ``include_adamw`` the AdamW runs are added to every family at λ = 0 (λ = 0 ≡ AdamW for
    every variant, DESIGN.md).

    Returns:
        DataFrame with family, lam, the ``by`` columns present in ``runs``, n, mean, sd,
        ci_low, ci_high, sorted by family, group and λ.
    """
    parsed = runs["variant"].map(parse_lambda)
    fam = parsed.map(lambda p: p[0])
    lam = parsed.map(lambda p: p[1]).astype(float)
    df = runs.assign(family=fam.to_numpy(), lam=lam.to_numpy())
    swept = df[np.isfinite(df["lam"]) & (df["family"] != "adamw")]
    names = sorted(swept["family"].unique()) if families is None else list(families)
    parts = [swept[swept["family"].isin(names)]]
    if include_adamw:
        base = df[df["family"] == "adamw"]
        parts += [base.assign(family=name, lam=0.0) for name in names]
    data = pd.concat(parts, ignore_index=True)
    by = [b for b in by if b in runs.columns]
    cols = ["family", "lam", *by, "n", "mean", "sd", "ci_low", "ci_high"]
    if data.empty:
        return pd.DataFrame(columns=cols)
    out = summarize(data, metric, ["family", *by, "lam"], alpha)
    return out[cols].sort_values(["family", *by, "lam"]).reset_index(drop=True)
