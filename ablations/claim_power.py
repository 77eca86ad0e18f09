"""The power, design and null-control texts of the claims' verdicts (:mod:`ablations.claims`).

Pure functions of a claim (its scale, unit and the paper's effect), its pre-registered
:class:`~ablations.design.Design` and rows of the ``stats.csv`` table, returning the words
the report and the ledger print: the achieved power of each test against the design's
target, the design beside what the runs achieved, the Holm family, and the null control's
spread beside the claim's. The claims look the rows up; nothing here reads a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .design import Design
from .fmt import finite, num, pval

if TYPE_CHECKING:  # the claims import this module
    from .claims import Claim

__all__ = ["family_holm", "power_text", "design_text", "null_text", "logrank_power_text"]


def family_holm(family: Sequence[str], rows: Sequence[Mapping | None],
                baseline: str) -> tuple[pd.DataFrame | None, str]:
    """Holm over a pre-registered family: ``rows`` are the stats rows of ``family``'s
    variants against ``baseline`` (None where one has not run); returns the rows that exist
    with ``p_holm`` recomputed over the whole family, a member without a row counting as
    p = 1 (so a partial grid is never less strict), and the family in words ("over …").
    (None, words) for an empty family: the stats table's own ``p_holm`` stands."""
    from .stats import holm

    if not family:
        return None, f"over every comparison with {baseline} on the metric"
    p = [r["p_ttest"] if r is not None and finite(r.get("p_ttest")) else 1.0 for r in rows]
    adjusted = holm(p)
    kept = [{**r, "p_holm": float(q)} for r, q in zip(rows, adjusted) if r is not None]
    missing = sum(r is None for r in rows)
    words = (f"over {len(rows)} pre-registered comparisons with {baseline}: "
             f"{', '.join(family)}"
             + (f"; {missing} not run yet, counted p = 1" if missing else ""))
    return pd.DataFrame(kept) if kept else pd.DataFrame(), words


def power_text(claim: Claim, row: Mapping, design: Design) -> str:
    """The achieved power of a paired claim, in words: the TOST's at its margin (were the
    true difference 0) against the design's target, with the seeds run and pre-registered;
    and the t test's to detect the paper's effect."""
    s, u = claim.scale, claim.unit
    parts = []
    tp, m = row.get("tost_power"), row.get("tost_margin")
    if finite(tp) and finite(m):
        n = f"n = {int(row['n'])}" + (f" of {design.seeds} pre-registered"
                                     if design.seeds is not None else "")
        flag = "; under-powered" if tp < design.power else ""
        parts.append(f"TOST ±{m * s:g}{u}: {tp:.2f} ({n}{flag})")
    if finite(row.get("power")) and claim.claimed is not None and not claim.relative:
        parts.append(f"t test for the paper's {claim.claimed * s:+.3g}{u}: {row['power']:.2f}")
    return "; ".join(parts) or "–"


def design_text(claim: Claim, row: Mapping | None, design: Design) -> str:
    """The pre-registered design beside what the runs achieved, one sentence ("" when the
    grid pre-registers nothing for the claim)."""
    s, u = claim.scale, claim.unit
    text = design.text(s, u)
    if not text:
        return ""
    text = "Design: " + text
    if row is not None and finite(row.get("sd_diff")) and finite(row.get("tost_margin")):
        m = row["tost_margin"]
        need = design.seeds_needed(row["sd_diff"], margin=m)
        text += (f". Achieved: n = {int(row['n'])}, sd of the paired differences "
                 f"{row['sd_diff'] * s:.3g}{u}, TOST power {num(row.get('tost_power'), 2)} at "
                 f"±{m * s:g}{u} (at this sd {design.power:.0%} needs {num(need, 0)} seeds)")
    return text + "."


def null_text(claim: Claim, null: str, base: Mapping | None, vs: Mapping | None,
              row: Mapping) -> tuple[str, dict[str, Any]]:
    """The null control beside a paired claim: the nudge's paired difference to the baseline
    (its stats row ``base``) with its 95% CI and the sd of its paired differences (the
    spread chaotic divergence alone produces), the claim's spread (its ``row``) as a multiple
    of it, and the claim's variant against the nudge (``vs``, None without it). Returns the
    text and the numbers."""
    if base is None:
        return f"– ({null} not run in the claim's cell)", {}
    s, u = claim.scale, claim.unit
    ratio = (row["sd_diff"] / base["sd_diff"] if finite(row.get("sd_diff"))
             and finite(base.get("sd_diff")) and base["sd_diff"] > 0 else float("nan"))
    text = (f"{null} − {claim.baseline}: {base['diff'] * s:+.3g} "
            f"[{base['ci_low'] * s:+.3g}, {base['ci_high'] * s:+.3g}]{u}, sd of the paired "
            f"differences {base.get('sd_diff', float('nan')) * s:.3g}{u} (n={int(base['n'])});"
            f" {claim.variant}'s sd is {num(ratio, 2)}× the nudge's")
    values = {"null": null, "null_diff": base["diff"], "null_ci_low": base["ci_low"],
              "null_ci_high": base["ci_high"], "null_sd": base.get("sd_diff"),
              "null_n": base["n"], "spread_ratio": ratio}
    if vs is not None:
        text += (f"; {claim.variant} − {null}: {vs['diff'] * s:+.3g} "
                 f"[{vs['ci_low'] * s:+.3g}, {vs['ci_high'] * s:+.3g}]{u}, Holm p="
                 f"{pval(vs['p_holm'])}")
        values.update(diff_vs_null=vs["diff"], p_holm_vs_null=vs["p_holm"])
    return text, values


def logrank_power_text(claim: Claim, tt: Mapping, design: Design) -> str:
    """The log-rank test's power to detect the paper's hazard ratio with the events seen
    (Schoenfeld's approximation, :func:`ablations.stats.logrank_power`), in words."""
    from .stats import logrank_power

    hr = claim.claimed_hazard_ratio
    events = tt["events_variant"] + tt["events_baseline"]
    if hr is None:
        return claim.power_note
    n = f"n = {tt['n_variant']} + {tt['n_baseline']}" + (
        f", {design.seeds} each pre-registered" if design.seeds is not None else "")
    return (f"log-rank for the paper's hazard ratio {hr:.2f}: "
            f"{num(logrank_power(hr, events), 2)} ({events} events, {n}; Schoenfeld)")
