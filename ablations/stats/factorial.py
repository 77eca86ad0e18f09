"""Two-way repeated-measures analysis of a 2 × 2 design (attention × optimizer), on
statsmodels: a mixed model with a random intercept per seed (``MixedLM``) and the classical
repeated-measures ANOVA with seed as a fixed block (``ols`` + ``anova_lm``).

References
----------
- Laird, N. M. & Ware, J. H. (1982). Random-effects models for longitudinal data.
  *Biometrics* 38 (the mixed model).
- Maxwell, S. E. & Delaney, H. D. (2004). *Designing Experiments and Analyzing Data*, 2nd
  ed., ch. 11–12 (repeated-measures ANOVA with additive subjects).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._common import as_float, select_cell

__all__ = ["factorial_2x2"]


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
    df = select_cell(runs, cell)
    df = df[df[factor_a].isin(levels_a) & df[factor_b].isin(levels_b)]
    df = pd.DataFrame({"a": df[factor_a].to_numpy(), "b": df[factor_b].to_numpy(),
                       "seed": df["seed"].to_numpy(), "y": as_float(df[metric])})
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
