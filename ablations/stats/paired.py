"""Paired comparisons of variants within cells: the ``stats.csv`` table.

Variants are compared with a baseline inside one cell, paired by ``seed`` (the runner derives
data order, initialisation and noise streams from the seed, so the paired difference removes
that shared variation). The statistics are scipy's and statsmodels':

- paired t test and its interval: ``scipy.stats.ttest_rel(...).confidence_interval()``;
- Wilcoxon signed-rank test: ``scipy.stats.wilcoxon`` (for ties among at most 13 non-zero
  differences, the same exact sign-flip distribution through ``scipy.stats.permutation_test``
  with a vectorised statistic, which is what ``wilcoxon`` does internally, ~30× faster);
- TOST equivalence test: ``statsmodels.stats.weightstats.ttost_paired``;
- Holm's correction: ``statsmodels.stats.multitest.multipletests(method="holm")``;
- percentile bootstrap of the mean difference: ``scipy.stats.bootstrap``;
- power and sample size: :mod:`ablations.stats.power` (statsmodels ``TTestPower``).

Our conventions sit in thin adapters around those calls: missing values drop a pair, zero
differences are dropped by the Wilcoxon test (Wilcoxon's convention), and when all the
differences are equal (up to rounding) the t statistic is ±inf or 0/0, which the libraries
turn into NaN, so the p values follow the limits instead (see :func:`paired_comparison`).

References
----------
- Student's paired t test: e.g. Rice, *Mathematical Statistics and Data Analysis*, 3rd ed.,
  §11.3.
- Wilcoxon, F. (1945). Individual comparisons by ranking methods. *Biometrics Bulletin* 1(6).
- Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed. (d_z).
- Lakens, D. (2017). Equivalence tests: a practical primer for t tests, correlations, and
  meta-analyses. *Soc. Psychol. Personal. Sci.* 8(4) (TOST).
- Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scand. J. Stat.*
- Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap* (percentile CI).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._common import DEFAULT_CELL_KEYS, as_float, cell_keys_in, select_cell
from .power import min_detectable_effect, power_to_detect, seeds_needed, tost_power

__all__ = ["STATS_COLUMNS", "EXTRA_COLUMNS", "FAMILIES", "paired_differences",
           "paired_comparison", "compare_all", "holm", "verdict"]

#: The columns of ``results/<arm>/stats.csv``, in order (DESIGN.md, data contract).
STATS_COLUMNS: tuple[str, ...] = (
    "metric", "variant", "baseline", "n", "mean_variant", "mean_baseline", "diff",
    "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_holm", "d_z", "tost_margin", "p_tost",
    "power", "verdict",
)

#: Extra columns that :func:`compare_all` appends after :data:`STATS_COLUMNS`; the cell keys
#: (by default ``attention``, ``lr``) come between ``mde`` and ``claimed_effect``.
EXTRA_COLUMNS: tuple[str, ...] = (
    "boot_low", "boot_high", "n_for_claim", "mde", "claimed_effect", "sd_diff", "tost_power",
)

#: Accepted values of ``family`` in :func:`compare_all` (the sets of p values Holm adjusts).
FAMILIES: tuple[str, ...] = (
    "per metric and baseline",
    "per metric, baseline and cell",
    "per metric",
    "all",
)

# scipy.stats.wilcoxon enumerates the 2^n sign patterns exactly up to this many non-zero
# differences when they contain ties (above it, the normal approximation).
_WILCOXON_EXACT_MAX_N = 13


def paired_differences(runs: pd.DataFrame, metric: str, variant: str, baseline: str, *,
                       cell_keys: Sequence[str] = DEFAULT_CELL_KEYS,
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
    keys = cell_keys_in(runs, cell_keys)
    df = select_cell(runs, cell)
    cols = [*keys, "seed", metric]
    v = df.loc[df["variant"] == variant, cols].copy()
    b = df.loc[df["variant"] == baseline, cols].copy()
    for name, part in ((variant, v), (baseline, b)):
        dup = part.duplicated(subset=[*keys, "seed"], keep=False)
        if dup.any():
            first = part.loc[dup, [*keys, "seed"]].iloc[0].to_dict()
            raise ValueError(f"variant {name!r} has several runs for {first}; pairing by seed "
                             "needs one run per (cell, seed)")
    v["variant_value"] = as_float(v.pop(metric))
    b["baseline_value"] = as_float(b.pop(metric))
    merged = v.merge(b, on=[*keys, "seed"], how="inner")
    merged = merged[np.isfinite(merged["variant_value"]) & np.isfinite(merged["baseline_value"])]
    merged = merged.assign(diff=merged["variant_value"] - merged["baseline_value"])
    return merged.sort_values([*keys, "seed"], na_position="last").reset_index(drop=True)


def _signed_rank_sum(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wilcoxon's T+: the sum of the mid-ranks of |d| over the positive d (vectorised)."""
    ranks = sps.rankdata(np.abs(d), axis=axis)
    return np.sum(np.where(d > 0, ranks, 0.0), axis=axis)


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p value of paired differences ``d``, zeros dropped.

    ``scipy.stats.wilcoxon`` of the non-zero differences: exact without ties, the normal
    approximation (with continuity and tie corrections) for ties among more than 13. For ties
    among at most 13, scipy enumerates the 2^n sign flips with ``permutation_test``; we make
    the same call with a vectorised T+, which gives the identical p value without scipy's
    Python loop over the patterns (1.5 s → 0.04 s at n = 13).
    """
    nz = d[d != 0]
    ties = np.unique(np.abs(nz)).size < nz.size
    if ties and nz.size <= _WILCOXON_EXACT_MAX_N:
        return float(sps.permutation_test((nz,), _signed_rank_sum, permutation_type="samples",
                                          vectorized=True, n_resamples=np.inf).pvalue)
    return float(sps.wilcoxon(nz).pvalue)


def _paired_stats(xv: np.ndarray, xb: np.ndarray, *, tost_margin: float | None,
                  claimed_effect: float | None, alpha: float, power: float, n_boot: int,
                  rng_seed: int) -> dict:
    """Statistics of paired samples; see :func:`paired_comparison` for definitions."""
    d = xv - xb
    n = int(d.size)
    nan = math.nan
    out = dict(n=n, mean_variant=nan, mean_baseline=nan, diff=nan, sd_diff=nan, ci_low=nan,
               ci_high=nan, boot_low=nan, boot_high=nan, p_ttest=nan, p_wilcoxon=nan,
               d_z=nan, tost_margin=nan, p_tost=nan, power=nan, claimed_effect=nan,
               n_for_claim=nan, mde=nan, tost_power=nan)
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
    margin = out["tost_margin"]
    # Differences equal up to rounding (e.g. 0.6 − 0.5 vs 0.7 − 0.6) count as equal.
    tol = 64 * np.finfo(float).eps * float(max(np.max(np.abs(xv)), np.max(np.abs(xb))))
    if sd <= tol:
        # t = ±inf, or 0/0 when all differences are 0 (p = 1 by convention); the libraries
        # return NaN here, so take the limits: the interval collapses to the mean.
        sd = 0.0
        out.update(ci_low=mean, ci_high=mean, p_ttest=1.0 if abs(mean) <= tol else 0.0)
        if np.isfinite(margin):
            out["p_tost"] = 0.0 if abs(mean) < margin else 1.0
    else:
        res = sps.ttest_rel(xv, xb)
        ci = res.confidence_interval(confidence_level=1 - alpha)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_ttest=float(res.pvalue),
                   d_z=mean / sd)
        if np.isfinite(margin):
            # TOST (Lakens 2017): H0a diff ≤ −m against diff > −m, H0b diff ≥ m against
            # diff < m; the p value is the larger of the two one-sided ones.
            from statsmodels.stats.weightstats import ttost_paired

            out["p_tost"] = float(ttost_paired(xv, xb, -margin, margin)[0])
    out["sd_diff"] = sd
    # Wilcoxon signed-rank (zeros dropped, Wilcoxon 1945's convention); undefined when no
    # non-zero difference is left, and we also leave it out below two non-zero differences.
    if np.count_nonzero(d) >= 2:
        out["p_wilcoxon"] = _wilcoxon_p(d)
    if n_boot > 0:
        # Batches of at most ~2e6 indices bound the memory; the generator draws the same
        # stream whatever the batch size.
        boot = sps.bootstrap((d,), np.mean, n_resamples=n_boot, method="percentile",
                             confidence_level=1 - alpha, batch=max(1, 2_000_000 // n),
                             vectorized=True, rng=np.random.default_rng(rng_seed))
        out["boot_low"] = float(boot.confidence_interval.low)
        out["boot_high"] = float(boot.confidence_interval.high)
    out["n_for_claim"] = seeds_needed(out["claimed_effect"], sd, alpha, power)
    out["mde"] = min_detectable_effect(n, sd, alpha, power)
    out["power"] = power_to_detect(out["claimed_effect"], sd, n, alpha)
    if np.isfinite(margin):
        out["tost_power"] = tost_power(margin, sd, n, 0.0, alpha)
    return out


def paired_comparison(runs: pd.DataFrame, metric: str, variant: str, baseline: str, *,
                      tost_margin: float | None,
                      cell_keys: Sequence[str] = DEFAULT_CELL_KEYS,
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
    - ``ci_low``/``ci_high``: two-sided (1−alpha) Student t interval of the mean difference
      (``scipy.stats.ttest_rel(...).confidence_interval``).
    - ``boot_low``/``boot_high``: percentile bootstrap interval, resampling the n pairs
      ``n_boot`` times (``scipy.stats.bootstrap``, generator
      ``numpy.random.default_rng(rng_seed)``).
    - ``p_ttest``: two-sided paired t test of mean(d) = 0 (``scipy.stats.ttest_rel``). When
      all d_i are equal (up to 64 ulps of the data's magnitude, so that 0.6 − 0.5 and
      0.7 − 0.6 count as equal) the t statistic is ±inf (p = 0), or 0/0 when all are 0
      (p = 1 by convention); sd_diff is then 0 and the t interval collapses to the mean.
    - ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``; zero
      differences dropped; exact null distribution up to 13 non-zero differences, also with
      ties, normal approximation above with ties). NaN when fewer than two non-zero
      differences remain (all zero, or n too small for the test to say anything; note that
      it cannot reach p < 0.05 below 6 non-zero pairs).
    - ``d_z``: Cohen's d_z = mean(d) / sd(d); NaN when sd(d) = 0.
    - ``p_tost``: two one-sided paired t tests against ±``tost_margin`` (Lakens 2017;
      ``statsmodels.stats.weightstats.ttost_paired``); p_tost = max of the two one-sided p
      values, and the difference is declared equivalent within ±margin when p_tost < alpha
      (equivalently, the (1−2·alpha) CI lies inside ±margin). NaN when no margin is given;
      when all d_i are equal, 0 if |diff| < margin, else 1.
    - ``power``: power of the two-sided paired t test at ``alpha`` to detect
      ``claimed_effect`` with these n pairs at the observed sd(d)
      (:func:`~ablations.stats.power.power_to_detect`); NaN without a claim. (Not the
      ``power`` argument, which is the target power for ``n_for_claim`` and ``mde``.)
    - ``n_for_claim``: seeds needed for ``power`` at two-sided ``alpha`` to detect
      ``claimed_effect`` (the paper's effect in metric units) given the observed sd(d)
      (:func:`~ablations.stats.power.seeds_needed`); NaN without a claim.
    - ``mde``: minimum detectable |effect| at the current n with ``power``
      (:func:`~ablations.stats.power.min_detectable_effect`), metric units.
    - ``tost_power``: the achieved power of the TOST at ±``tost_margin`` with these n pairs
      at the observed sd(d), were the true difference 0
      (:func:`~ablations.stats.power.tost_power`): below the target power, a failure to show
      equivalence says little; NaN without a margin.

    Everything but n and the means is NaN below two pairs.

    Args:
        runs: the runs table.
        metric: metric column.
        variant, baseline: variant ids.
        tost_margin: equivalence margin in metric units, or None for no TOST.
        cell_keys: columns that define a cell.
        cell: optional ``{column: value}`` restricting to one cell.
        claimed_effect: the paper's claimed difference (metric units), or None.
        alpha: two-sided level of every test and interval.
        power: target power of ``n_for_claim`` and ``mde``.
        n_boot: bootstrap replicates (0: no bootstrap interval).
        rng_seed: seed of the bootstrap generator.

    Returns:
        dict with keys n, n_cells, mean_variant, mean_baseline, diff, sd_diff, ci_low, ci_high,
        boot_low, boot_high, p_ttest, p_wilcoxon, d_z, tost_margin, p_tost, power,
        claimed_effect, n_for_claim, mde, tost_power.
    """
    pairs = paired_differences(runs, metric, variant, baseline, cell_keys=cell_keys, cell=cell)
    keys = cell_keys_in(runs, cell_keys)
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

    ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` over the finite
    entries: with the m finite p values sorted ascending p_(1) ≤ … ≤ p_(m), the adjusted
    value is max_{j ≤ i} min(1, (m − j + 1)·p_(j)). Adapter: NaN entries are left NaN and do
    not count in m. Example: [0.01, 0.04, 0.03] → [0.03, 0.06, 0.06].

    Args:
        pvalues: p values of one family (any shape; NaN for "no test").
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    from statsmodels.stats.multitest import multipletests

    # multipletests(method="holm") ends with gc.collect() (statsmodels 0.15, multitest.py), a
    # full collection of every object of the process: ~0.2 s a call once torch and matplotlib
    # are loaded, seconds per report. Freezing the existing objects for the call confines
    # that collection to the call's own; gc.unfreeze() hands them back to the collector.
    gc.freeze()
    try:
        out[ok] = multipletests(p[ok], method="holm")[1]
    finally:
        gc.unfreeze()
    return out


def verdict(diff: float, p_holm: float, p_tost: float, tost_margin: float,
            higher_is_better: bool | None, alpha: float = 0.05) -> str:
    """The verdict of one comparison (see :func:`compare_all` for the rule).

    Args:
        diff: mean paired difference.
        p_holm: Holm-adjusted p value of the t test.
        p_tost: TOST p value (NaN without a margin).
        tost_margin: the equivalence margin, as printed in the verdict.
        higher_is_better: the metric's direction, or None for none.
        alpha: significance level.
    """
    if np.isfinite(p_holm) and p_holm < alpha and np.isfinite(diff) and diff != 0:
        higher = diff > 0
        if higher_is_better is None:
            return "higher" if higher else "lower"
        return "better" if higher == bool(higher_is_better) else "worse"
    if np.isfinite(p_tost) and p_tost < alpha:
        return f"equivalent within ±{tost_margin:g}"
    return "no detectable difference"


def _cells_of(rows: pd.DataFrame, keys: list[str]) -> list[dict]:
    """The distinct cells of ``rows`` as ``{key: value}``, sorted (missing values last)."""
    if not keys:
        return [{}]
    return [dict(zip(keys, c if isinstance(c, tuple) else (c,), strict=True))
            for c in rows[keys].drop_duplicates().sort_values(keys, na_position="last")
            .itertuples(index=False)]


def compare_all(runs: pd.DataFrame, metrics: Sequence[str],
                baselines: Sequence[str] = ("adamw", "sin-l0.5"),
                claimed_effects: Mapping[str, float] | None = None,
                tost_margins: Mapping[str, float] | None = None,
                family: str = "per metric and baseline", *,
                variants: Sequence[str] | None = None,
                cell_keys: Sequence[str] = DEFAULT_CELL_KEYS,
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
       direction in ``higher_is_better`` (an arm's ``Arm.directions()``). For metrics
       without a direction (None, or absent from the mapping) the verdict is ``"higher"``
       or ``"lower"``.
    2. else p_tost < alpha: ``"equivalent within ±<margin>"`` (margin from ``tost_margins``,
       formatted with ``:g``, e.g. ``"equivalent within ±0.01"``).
    3. else ``"no detectable difference"``.

    Args:
        runs: the runs table (one row per run).
        metrics: metric columns to compare.
        baselines: baseline variant ids; absent ones are skipped.
        claimed_effects: metric → the paper's claimed difference (metric units), for
            ``power`` and ``n_for_claim``; metrics without an entry get NaN.
        tost_margins: metric → equivalence margin (metric units); without an entry p_tost is
            NaN and no equivalence can be declared.
        family: Holm family, one of :data:`FAMILIES`.
        variants: variant ids to compare (default: all in ``runs``).
        cell_keys: columns that define a cell.
        higher_is_better: metric → True (higher is better), False (lower is better) or None
            (no direction); the caller's knowledge of its metrics, e.g.
            ``get_arm(cfg.arm).directions()``. Default: no metric has a direction.
        alpha, power, n_boot, rng_seed: passed to :func:`paired_comparison`.

    Returns:
        DataFrame with exactly :data:`STATS_COLUMNS` first, then ``boot_low, boot_high,
        n_for_claim, mde``, the cell keys present in ``runs``, ``claimed_effect, sd_diff,
        tost_power``.
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
    direction = dict(higher_is_better or {})
    keys = cell_keys_in(runs, cell_keys)
    wanted = None if variants is None else set(variants)

    rows: list[dict] = []
    for metric in metrics:
        for baseline in baselines:
            base_rows = runs[runs["variant"] == baseline]
            if base_rows.empty:
                continue
            for cell in _cells_of(base_rows, keys):
                in_cell = select_cell(runs, cell)
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
