"""Every variant's effect next to the null control's: "differs from AdamW" or "from a nudge".

The null control (``gauss-l0.001``, DESIGN.md) adds a negligible random perturbation to
AdamW: it changes nothing systematically, but a training run is chaotic, so its outcome
diverges from AdamW's run of the same seed. Its paired differences to AdamW are the spread
that divergence alone produces; a variant whose paired differences spread as much, and whose
mean does not differ from the nudge's, has shown nothing that a nudge would not.

:func:`null_control` reads the ``stats.csv`` table (:func:`ablations.stats.compare_all` with
the null control among the baselines) and returns, per variant of one cell, its comparison
with the baseline, the null's, the ratio of their spreads and its comparison with the null.
Pure computation on the table: no runs, no files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._common import select_cell

__all__ = ["null_control", "NULL_READINGS"]

#: the readings of :func:`null_control`, by (differs from the baseline, from the null)
NULL_READINGS = {
    (True, True): "differs from {b} and from the nudge",
    (True, False): "differs from {b}, not from the nudge",
    (False, True): "differs from the nudge, not from {b}",
    (False, False): "differs from neither",
}


def _rows(table: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    sub = table[(table["metric"] == metric) & (table["baseline"] == baseline)]
    return sub.set_index("variant")


def _significant(p: float, diff: float, alpha: float) -> bool:
    return bool(np.isfinite(p) and p < alpha and np.isfinite(diff) and diff != 0)


def null_control(table: pd.DataFrame, metric: str, null: str, baseline: str = "adamw",
                 cell: Mapping | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Each variant's paired effect against ``baseline`` beside the null control's.

    Columns: ``variant``; ``n, diff, ci_low, ci_high, p_holm, sd_diff`` of the variant
    against the baseline; ``null_diff, null_ci_low, null_ci_high, null_sd`` of the null
    against the baseline (the same in every row); ``spread_ratio`` = sd_diff / null_sd (1:
    the variant spreads outcomes as much as a nudge does); ``diff_vs_null, ci_low_vs_null,
    ci_high_vs_null, p_holm_vs_null`` of the variant against the null (its own Holm family:
    every variant against the null on the metric); ``differs_from_baseline`` and
    ``differs_from_null`` (Holm p < alpha and a non-zero mean difference); ``reading``, one of
    :data:`NULL_READINGS` (without a row against the null: ``differs from <baseline>`` or
    ``no detectable difference from <baseline>``, the nudge not compared). The null's own
    row comes first (``reading``: ``the null control``). Rows follow the table's order.

    Args:
        table: the stats table (``stats.csv``), holding rows against ``baseline`` and, for
            the comparison with the nudge, against ``null``.
        metric: the metric.
        null: the null control's variant id.
        baseline: the baseline the effects are of.
        cell: ``{cell key: value}`` of the cell to read (every key must be a column).
        alpha: the significance level.

    Returns:
        The table; empty (with the columns) when the null has no row against the baseline.
    """
    cols = ["variant", "n", "diff", "ci_low", "ci_high", "p_holm", "sd_diff", "null_diff",
            "null_ci_low", "null_ci_high", "null_sd", "spread_ratio", "diff_vs_null",
            "ci_low_vs_null", "ci_high_vs_null", "p_holm_vs_null", "differs_from_baseline",
            "differs_from_null", "reading"]
    t = select_cell(table, cell)
    vs_base, vs_null = _rows(t, metric, baseline), _rows(t, metric, null)
    if null not in vs_base.index:
        return pd.DataFrame(columns=cols)
    ref = vs_base.loc[null]
    null_sd = float(ref["sd_diff"])
    out = []
    for variant, r in vs_base.iterrows():
        differs = _significant(r["p_holm"], r["diff"], alpha)
        row = {"variant": variant, **{k: r[k] for k in ("n", "diff", "ci_low", "ci_high",
                                                         "p_holm", "sd_diff")},
               "null_diff": ref["diff"], "null_ci_low": ref["ci_low"],
               "null_ci_high": ref["ci_high"], "null_sd": null_sd,
               "spread_ratio": (float(r["sd_diff"]) / null_sd if null_sd > 0
                                and np.isfinite(r["sd_diff"]) else math.nan),
               "differs_from_baseline": differs}
        if variant == null:
            row.update(differs_from_null=math.nan, reading="the null control")
        elif variant in vs_null.index:
            v = vs_null.loc[variant]
            from_null = _significant(v["p_holm"], v["diff"], alpha)
            row.update(diff_vs_null=v["diff"], ci_low_vs_null=v["ci_low"],
                       ci_high_vs_null=v["ci_high"], p_holm_vs_null=v["p_holm"],
                       differs_from_null=from_null,
                       reading=NULL_READINGS[differs, from_null].format(b=baseline))
        else:
            row.update(differs_from_null=math.nan,
                       reading=(f"differs from {baseline}" if differs else
                                f"no detectable difference from {baseline}")
                       + " (the nudge not compared)")
        out.append(row)
    df = pd.DataFrame(out).reindex(columns=cols)
    first = df["variant"] == null
    return pd.concat([df[first], df[~first]], ignore_index=True)
