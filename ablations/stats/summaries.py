"""Descriptive summaries for tables and plots: t intervals of means, Wilson intervals of
proportions, learning curves across seeds and the λ sweep (claim C3).

References
----------
- Student's t interval of a mean: e.g. Rice, *Mathematical Statistics and Data Analysis*,
  3rd ed., §7.3 (``scipy.stats.ttest_1samp(...).confidence_interval``).
- Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
  inference. *JASA* 22; Brown, L. D., Cai, T. T. & DasGupta, A. (2001). Interval estimation
  for a binomial proportion. *Statist. Sci.* 16 (``statsmodels.stats.proportion
  .proportion_confint(method="wilson")``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._common import finite, iter_groups

__all__ = ["t_interval", "wilson", "summarize", "curve_summary", "parse_lambda",
           "lambda_sweep", "lr_selection", "at_selected_lr"]


def t_interval(x, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean of ``x`` (NaNs dropped) and its two-sided (1−alpha) Student t interval.

    mean ± t_{1−alpha/2, n−1}·sd/√n, from ``scipy.stats.ttest_1samp(x, 0)
    .confidence_interval(1 − alpha)``.

    Args:
        x: values (anything :func:`pandas.to_numeric` reads; NaNs are dropped).
        alpha: two-sided level.

    Returns:
        ``(mean, low, high)``; the interval is NaN for fewer than two values and collapses to
        the mean when all values are equal.
    """
    x = finite(x)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size < 2:
        return (m, math.nan, math.nan)
    if np.all(x == x[0]):
        # sd = 0: scipy's t statistic is 0/0 and it warns of "catastrophic cancellation";
        # the interval is the point.
        return (m, m, m)
    ci = sps.ttest_1samp(x, 0.0).confidence_interval(confidence_level=1 - alpha)
    return (m, float(ci.low), float(ci.high))


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n at level 1 − alpha.

    With p̂ = k/n and z = Φ⁻¹(1 − alpha/2): (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) /
    (1 + z²/n) (Wilson 1927), from ``statsmodels.stats.proportion.proportion_confint(k, n,
    alpha, method="wilson")``, clipped to [0, 1] (rounding can put the limit for k = 0 a
    hair below 0). Example: k = 0, n = 10 → (0, 0.2775); k = 5, n = 10 → (0.2366, 0.7634).

    Args:
        k: successes, 0 ≤ k ≤ n.
        n: trials.
        alpha: two-sided level.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for n = 0.

    Raises:
        ValueError: k outside [0, n] or n negative.
    """
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson needs 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return (max(0.0, float(low)), min(1.0, float(high)))


def summarize(df: pd.DataFrame, value: str, by: str | Sequence[str],
              alpha: float = 0.05) -> pd.DataFrame:
    """Mean and (1−alpha) t interval (:func:`t_interval`) of ``value`` per group of ``by``.

    Args:
        df: a table with the ``value`` and ``by`` columns.
        value: the column summarised.
        by: grouping column(s); missing values form their own group.
        alpha: two-sided level.

    Returns:
        DataFrame with the ``by`` columns, n, mean, sd, ci_low, ci_high.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, sub in iter_groups(df, by):
        x = finite(sub[value])
        m, lo, hi = t_interval(x, alpha)
        rows.append({**key, "n": int(x.size), "mean": m,
                     "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "sd", "ci_low", "ci_high"])


def curve_summary(curves: pd.DataFrame, value: str = "test_acc", *,
                  by: Sequence[str] = ("variant", "attention"), x: str = "epoch",
                  alpha: float = 0.05) -> pd.DataFrame:
    """Learning curves across seeds: mean and t CI of ``value`` per group and ``x``.

    Input is the long curve table (one row per run and epoch). Group columns absent from
    ``curves`` are ignored.

    Args:
        curves: the long curve table.
        value: the curve column (``test_acc``, ``train_loss``, ...).
        by: grouping columns.
        x: the step column (``epoch``, ``step``).
        alpha: two-sided level.

    Returns:
        DataFrame with the group columns, ``x``, n, mean, sd, ci_low, ci_high.
    """
    by = [b for b in by if b in curves.columns]
    return summarize(curves, value, [*by, x], alpha)


def parse_lambda(variant: str) -> tuple[str, float]:
    """Split a canonical variant id into (family, λ), from :func:`qsgd.parse_variant`.

    The family is the perturbation (``adamw`` for none) with its scope suffix; λ is the
    explicit weight of the id: ``sin-l0.5`` → ("sin", 0.5), ``sin-l0.1-first4`` →
    ("sin-first4", 0.1), ``adamw`` → ("adamw", 0.0); ids without an explicit weight (e.g.
    ``anneal``, whose implicit weight is no point of a λ sweep) give λ = NaN.

    Args:
        variant: a canonical variant id (DESIGN.md).

    Raises:
        ValueError: not a valid variant id (qsgd's message lists the valid forms).
    """
    from qsgd.variants import parse_variant

    v = parse_variant(str(variant))
    none = v.perturbation == "none"
    family = "adamw" if none else v.perturbation
    if v.scope == "first_n":
        family += f"-first{v.n_qubits}"  # first<n> is stored as n_qubits = n
    if none:
        return (family, 0.0)
    # An id without "-l<λ>" is exactly its family name (e.g. "anneal").
    return (family, math.nan if v.id == family else float(v.quantum_weight))


def lambda_sweep(runs: pd.DataFrame, metric: str, *, families: Sequence[str] | None = None,
                 by: Sequence[str] = ("attention",), include_adamw: bool = True,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Metric against the quantum weight λ, per perturbation family (claim C3).

    Each variant ``<family>-l<λ>`` contributes a point (mean and t CI over its runs). With
    ``include_adamw`` the AdamW runs are added to every family at λ = 0 (λ = 0 ≡ AdamW for
    every variant, DESIGN.md).

    Args:
        runs: the runs table.
        metric: metric column.
        families: the families to sweep (default: every family with an explicit λ).
        by: further grouping columns (those absent from ``runs`` are ignored).
        include_adamw: add AdamW at λ = 0 to every family.
        alpha: two-sided level.

    Returns:
        DataFrame with family, lam, the ``by`` columns present in ``runs``, n, mean, sd,
        ci_low, ci_high, sorted by family, group and λ.
    """
    parsed = {v: parse_lambda(v) for v in runs["variant"].unique()}
    fam = runs["variant"].map(lambda v: parsed[v][0])
    lam = runs["variant"].map(lambda v: parsed[v][1]).astype(float)
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


def lr_selection(runs: pd.DataFrame, metric: str, higher_is_better: bool) -> pd.DataFrame:
    """Per variant (and attention), the mean and t interval of a validation metric at every
    learning rate, and the selected lr: the best mean (ties: the smaller lr).

    Returns the :func:`ablations.stats.summarize` table with ``lr`` and a bool ``selected``.
    """
    keys = [k for k in ("task", "attention") if k in runs.columns
            and not (k == "task" and (runs[k] == "").all())]
    summ = summarize(runs, metric, [*keys, "variant", "lr"])
    summ["selected"] = False
    for _, grp in summ.groupby([*keys, "variant"], dropna=False):
        ok = grp.dropna(subset=["mean"])
        if ok.empty:
            continue
        best = ok.sort_values(["mean", "lr"], ascending=[not higher_is_better, True]).index[0]
        summ.loc[best, "selected"] = True
    return summ


def at_selected_lr(runs: pd.DataFrame, selected: Mapping[str, float],
                   rtol: float = 1e-9) -> pd.DataFrame:
    """The runs of each variant of ``selected`` at its own selected learning rate, the ``lr``
    column dropped: comparisons of the result pair seeds across learning rates (each
    optimizer tuned for itself), not within one.

    Args:
        runs: the runs table (``variant`` and ``lr`` columns).
        selected: variant → its selected lr (``GridConfig.selected_lr``).
        rtol: relative tolerance of the lr match (a TOML float against a stored one).

    Returns:
        The matching rows, without ``lr``; empty when none match.
    """
    if runs.empty or not selected:
        return runs.drop(columns=["lr"], errors="ignore").iloc[0:0]
    lr_of = runs["variant"].map(lambda v: selected.get(v, math.nan)).to_numpy(float)
    keep = np.isclose(runs["lr"].to_numpy(float), lr_of, rtol=rtol, atol=0.0)
    return runs[keep].drop(columns=["lr"]).reset_index(drop=True)
