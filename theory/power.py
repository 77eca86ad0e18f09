"""T8: how many seeds each claimed effect needs for 80% power, from the measured seed spread,
against the single-run comparisons the paper reports; and whether one run per arm, as in the
paper, has 80% power for C1's effect, with an expected outcome derived from the grid's null
control (:func:`t8_power`).

The claims C1, C2 (classifier arm) and C6 (llm arm) come from the claims registry
(:mod:`ablations.claims`: arm, metric, variant, baseline, cell, the paper's effect); their
arms' runs tables and reference learning rates from the check's ``inputs``
(:class:`theory.inputs.TheoryInputs`). The statistics are :mod:`ablations.stats`' (paired t
test power, exact in n).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import Check, compare, register
from .inputs import TheoryInputs

if TYPE_CHECKING:
    from ablations.claims import Claim

__all__ = ["POWER_CLAIMS", "POWER_TARGET", "single_run_power", "expected_outcome", "t8_power"]

#: the claims whose seed requirements T8 reports, in this order (the first is the tested one)
POWER_CLAIMS = ("C1", "C2", "C6")
Z95 = 1.959963984540054
MIN_PAIRS = 5  # fewer paired seeds give no usable estimate of the spread
#: the power a design must reach: T8 passes when a single run reaches it for C1's effect
POWER_TARGET = 0.8
#: the paper's own "± 0.7" pp read as the seed sd of one run; independent runs: sd_diff √2·0.7
SD_PAPER = math.sqrt(2) * 0.007


def single_run_power(effect: float, sd_diff: float, alpha: float = 0.05) -> float:
    """Power of one paired run (one seed per arm) to detect ``effect`` with a two-sided z test
    whose standard deviation is *known* to be ``sd_diff`` — the most favourable reading of a
    single-run comparison (with the sd estimated, one pair allows no test at all)."""
    from scipy import stats

    if not (math.isfinite(effect) and math.isfinite(sd_diff)) or sd_diff <= 0:
        return math.nan
    z = stats.norm.ppf(1 - alpha / 2)
    d = abs(effect) / sd_diff
    return float(stats.norm.cdf(d - z) + stats.norm.cdf(-d - z))


def expected_outcome(power_at_expectation: float) -> str:
    """T8's rule for its expected outcome: ``"pass"`` when one run per arm at the spread that
    sets the expectation (the null control's, else the paper's ±0.7 pp: :func:`t8_power`)
    has at least :data:`POWER_TARGET` power for C1's effect, else ``"fail"`` (NaN: fail)."""
    return "pass" if math.isfinite(power_at_expectation) and \
        power_at_expectation >= POWER_TARGET else "fail"


def _unit(claim: Claim) -> str:
    """The unit of a claim's stored figures (the claim prints them ×scale in its unit)."""
    unit = claim.unit.strip()
    return unit if claim.scale == 1 else f"{unit} after ×{claim.scale:g}"


def _in_cell(runs, claim: Claim):
    """The runs of the claim's cell (its keys that the table has)."""
    for k, v in claim.cell:
        if k in runs.columns:
            runs = runs[runs[k] == v]
    return runs


def _pairs(runs, claim: Claim, ref_lr: float):
    """Paired differences variant − baseline (sin-l0.5 − adamw) of the claim's metric in its
    cell, at the learning rate with the most pairs (ties: the arm's reference rate
    ``ref_lr``)."""
    from ablations import stats

    pairs = stats.paired_differences(_in_cell(runs, claim), claim.metric, claim.variant,
                                     claim.baseline)
    if pairs.empty or "lr" not in pairs.columns:
        return pairs, None
    counts = pairs.groupby("lr").size()
    # the most pairs; among equals, the arm's reference learning rate (its config)
    lr = float(min(counts.index, key=lambda v: (-int(counts[v]), abs(math.log(v / ref_lr)))))
    return pairs[pairs["lr"] == lr], lr


def _null_control(arm: str) -> str | None:
    """The arm's null-control variant (``Arm.null_control``), or None (none, or no such arm)."""
    from ablations.arms import ArmError, get_arm

    try:
        return get_arm(arm).null_control
    except ArmError:
        return None


def _null_pairs(runs, claim: Claim, lr: float | None, null: str | None):
    """Paired differences null control − baseline (gauss-l0.001 − adamw) of the claim's
    metric in its cell at learning rate ``lr`` (the one the claim's pairs were taken at);
    None without a null control, its runs or ``lr``."""
    from ablations import stats

    if null is None or lr is None or claim.metric not in runs.columns:
        return None
    df = _in_cell(runs, claim)
    if "lr" in df.columns:
        df = df[df["lr"] == lr]
    return stats.paired_differences(df, claim.metric, null, claim.baseline)


@register("T8", expected_outcome="derived")
def t8_power(size: str, inputs: TheoryInputs) -> Check:
    """T8: seeds needed for 80% power for C1, C2 and C6 from the arms' measured seed spread.

    What it tests: whether one run per arm, as the paper reports, has 80% power
    (:data:`POWER_TARGET`, known-σ z test, :func:`single_run_power`) for C1's claimed +2.3 pp
    at the classifier arm's measured spread of paired differences sin-l0.5 − adamw. It passes
    when it has.

    Its expected outcome is derived from the data by a rule that does not read the tested
    pair (:func:`expected_outcome`): T3 predicts the sine term to be ~10⁻³ of Adam's step, so
    sin-l0.5's runs should differ from AdamW's by the grid's chaotic seed divergence, which the
    arm's null control measures (gauss-l0.001 − adamw, same cell and learning rate). T8 is
    expected to pass when a single run at the null control's spread (at least
    :data:`MIN_PAIRS` pairs) has 80% power for C1's effect, and to fail otherwise; a grid
    without null-control pairs takes the paper's own ±0.7 pp as the seed sd (power 0.64:
    fail expected). T8 misses its expectation when the sine's spread and the null control's
    lie on different sides of 80% power: when the sine moves the spread across that line,
    which T3 says it is too small to do.

    What changed, and why: T8 used to be registered to fail (``expected_outcome="fail"``),
    making the point that the paper's single run has no 80% power. On the earlier grid
    (results/classifier: d_model 32, 2 qubits, lr 6e-3, batch 75, chosen on test accuracy) the
    sd of paired differences was 2.17 pp over 20 seeds, single-run power 0.18, and T8 failed as
    designed. On the paper-protocol grid (results/classifier-paper: Table II's model, lr 1e-3,
    batch 32), the reference grid since, the sd was 0.59 pp over 32 seeds at the switch and
    one run had power 0.97: T8 passed. The fixed "fail" encoded one grid's spread, not a
    derivation, so the expectation now comes from the grid (there its null control: sd 0.34 pp
    over 33 seeds, power 1.00, so pass expected) instead of being re-registered by hand.

    Reads from ``inputs`` the claims :data:`POWER_CLAIMS`, their arms' runs tables and
    reference learning rates; an arm without runs gives its claims a "not run yet" row.
    ``size`` does not matter (the check only computes statistics of stored runs).
    """
    import numpy as np

    from ablations import stats

    rows, curves = [], {}
    have = {}
    null_row = None  # the null control's row, where it sets the expected outcome
    for cid in POWER_CLAIMS:
        claim = inputs.claim(cid)
        arm, metric, effect = claim.source, claim.metric, claim.claimed
        row = {"claim": cid, "metric": metric, "claimed_effect": effect,
               "paper": claim.paper, "unit": _unit(claim)}
        arm_runs = inputs.runs_of(arm)
        if arm_runs is None:
            row["status"] = f"{arm} arm not run yet"
            rows.append(row)
            continue
        runs, source = arm_runs.table, arm_runs.source
        row["source"] = source
        if metric not in runs.columns:
            row["status"] = f"{arm} arm: no {metric} column yet"
            rows.append(row)
            continue
        pairs, lr = _pairs(runs, claim, inputs.reference_lr(arm))
        n = len(pairs)
        if n < MIN_PAIRS:
            row["status"] = (f"{arm} arm: {n} seeds paired {claim.variant}/{claim.baseline} "
                             f"with {metric} so far, fewer than {MIN_PAIRS}")
            rows.append(row)
            continue
        d = pairs["diff"].to_numpy(dtype=float)
        sd = float(np.std(d, ddof=1))
        need = stats.seeds_needed(effect, sd)
        mde = stats.min_detectable_effect(n, sd)
        p1 = single_run_power(effect, sd)
        z_null = abs(effect) / sd if sd > 0 else math.inf
        from scipy import stats as sps

        done = "ran" if arm_runs.complete else "ran on an incomplete grid (runs.jsonl)"
        row.update({"status": done, "lr": lr, "n_pairs": n, "mean_diff": float(d.mean()),
                    "sd_diff": sd, "seeds_needed_80": need, "mde_at_n": mde,
                    "single_run_power": p1,
                    "p_single_run_this_large_by_chance": float(2 * sps.norm.sf(z_null)),
                    "d_z_claimed": abs(effect) / sd if sd > 0 else math.inf})
        have[cid] = row
        rows.append(row)
        if cid == POWER_CLAIMS[0]:
            null_row = _null_row(runs, claim, lr, source, _null_control(arm), _unit(claim))
        ns = list(range(2, 61))
        curves[cid] = {"n": ns, "power": [stats.paired_t_power(abs(effect) / sd, k)
                                          if sd > 0 else 1.0 for k in ns]}
    # the paper's own "± 0.7" read as the seed sd of one run (independent runs: sd_diff √2·0.7)
    c1_claim = inputs.claim("C1")
    c1_effect = c1_claim.claimed
    sd_paper = SD_PAPER
    paper_row = {"claim": "C1 (paper's ±0.7 pp as seed sd)", "metric": c1_claim.metric,
                 "claimed_effect": c1_effect, "paper": "93.8% ± 0.7 vs 91.5%",
                 "unit": _unit(c1_claim), "status": "scenario", "sd_diff": sd_paper,
                 "seeds_needed_80": stats.seeds_needed(c1_effect, sd_paper),
                 "single_run_power": single_run_power(c1_effect, sd_paper),
                 "d_z_claimed": c1_effect / sd_paper}
    # the expected outcome: from the null control's spread where it has enough pairs, else
    # from the paper's own ±0.7 pp (the rule of the docstring)
    if null_row is not None and null_row["status"] == "ran":
        basis = null_row
        expect_from = (f"the null control's spread ({_null_control(c1_claim.source)} − "
                       f"{c1_claim.baseline}: sd {null_row['sd_diff']:.3g} over "
                       f"{null_row['n_pairs']} seeds)")
    else:
        basis = paper_row
        why = f"; {null_row['status']}" if null_row is not None else ""
        expect_from = f"the paper's own ±0.7 pp read as the seed sd (no null-control pairs{why})"
    basis["sets_expected_outcome"] = True
    outcome = expected_outcome(basis["single_run_power"])
    expectation = (f"expected to {outcome}: a single run at {expect_from} has power "
                   f"{basis['single_run_power']:.2f} "
                   f"{'≥' if outcome == 'pass' else '<'} {POWER_TARGET:g} for C1's effect")
    if null_row is not None:
        rows.append(null_row)
    rows.append(paper_row)
    if "C1" not in have:
        c1_status = next(x["status"] for x in rows if x["claim"] == "C1")
        measured, passed = math.nan, None
        status = ("classifier arm not run yet" if "not run yet" in c1_status
                  else f"classifier arm not run yet ({c1_status})")
        summary = (f"{status}: not run. "
                   f"Scenario from the paper's own ±0.7 pp read as the seed sd: "
                   f"{paper_row['seeds_needed_80']:.0f} seeds for 80% power, single-run power "
                   f"{paper_row['single_run_power']:.2f}")
        if "C6" in have:
            r = have["C6"]
            summary += (f"; C6: sd of paired differences {r['sd_diff']:.4g} over "
                        f"{r['n_pairs']} seeds, {r['seeds_needed_80']:.0f} seeds needed")
    else:
        c1 = have["C1"]
        measured, status = c1["single_run_power"], c1["status"]
        passed = compare(measured, 0.8, 0.0, ">=")
        parts = []
        for cid in POWER_CLAIMS:
            if cid in have:
                r = have[cid]
                parts.append(f"{cid}: sd of paired differences {r['sd_diff']:.4g} "
                             f"({r['n_pairs']} seeds) → {r['seeds_needed_80']:.0f} seeds for "
                             f"80% power (single run: power {r['single_run_power']:.2f}; MDE at "
                             f"n = {r['n_pairs']}: {r['mde_at_n']:.3g})")
            else:
                parts.append(f"{cid}: {next(x['status'] for x in rows if x['claim'] == cid)}")
        summary = "; ".join(parts)
    summary += f"; {expectation}"
    derivation = """\
**Power of a paired comparison.** With per-seed differences D_s = metric(sin-l0.5, s) −
metric(adamw, s) (same data order, initialization and noise streams per seed), mean μ and
standard deviation σ_D, the paired t test on n seeds has power
P(|T'| > t_(0.975, n−1)) with T' noncentral t, noncentrality (μ/σ_D)·√n (Cohen 1988). The
seeds needed for 80% power at α = 0.05 are the smallest such n (`ablations.stats.seeds_needed`,
exact over integers); the minimum detectable effect at the grid's n is the μ that reaches
80% (`min_detectable_effect`). σ_D is the arm's measured spread of paired differences
(at least 5 pairs), taken in the quantum-attention cell at the learning rate with the most
pairs, the arm's reference rate among equals (C1, C2), and in the LLM arm (C6); for C2
only seeds where both runs reached 90% are paired.

**A single run.** The paper reports one comparison per claim. One pair allows no t test
(σ_D cannot be estimated); even granting a known σ_D, a z test on one pair has power
Φ(μ/σ_D − 1.96) + Φ(−μ/σ_D − 1.96), which reaches 80% only when the claimed effect is at
least 2.8·σ_D. The check passes if the paper's single-run design has 80% power for C1.

**Expected outcome (derived from the grid).** T3 finds the sine term about 10⁻³ of Adam's
step, too small to act except by making otherwise identical runs diverge; so the spread of
sin-l0.5 − adamw should be that of the grid's null control, gauss-l0.001 − adamw (a negligible
random perturbation that measures this divergence), in the same cell at the same learning
rate. T8 is expected to pass when a single run at the null control's spread has 80% power for
C1's effect and to fail otherwise (a grid with fewer than 5 null-control pairs: the paper's
own ±0.7 pp read as the seed sd, power 0.64, so fail). T8 misses its expectation when the two
spreads lie on different sides of the 80% line. Until the reference grid became the paper
protocol's (results/classifier-paper), T8 was registered to fail: on the earlier grid
(results/classifier) one run had power 0.18 and T8 failed as designed; at the paper grid's
lower spread it passes, which a fixed expectation could not anticipate."""
    if passed is None:
        survives = ("Not decided yet: the classifier arm's runs are needed for the seed spread. "
                    "On the paper's own numbers, reading its ±0.7 pp as the seed-to-seed sd "
                    f"of one run, C1 would need {paper_row['seeds_needed_80']:.0f} paired seeds "
                    f"for 80% power; one run has power {paper_row['single_run_power']:.2f}.")
    else:
        c1 = have["C1"]
        survives = (
            ("Yes for C1: " if passed else "No: ")
            + f"with the measured spread of paired differences (sd {c1['sd_diff']:.3g}), one run "
            f"per arm detects +2.3 pp with power {c1['single_run_power']:.2f}"
            + (" (the paper's design could detect an effect of that size; whether there is one "
               f"is C1's question: mean difference here {c1['mean_diff']:+.3g})" if passed
               else "")
            + "; 80% needs "
            f"{c1['seeds_needed_80']:.0f} paired seeds, and a single-run difference at least "
            f"as large as the paper's arises by chance with probability "
            f"{c1['p_single_run_this_large_by_chance']:.2g}. "
            + " ".join(f"{cid}: {have[cid]['seeds_needed_80']:.0f} seeds needed, single-run "
                       f"power {have[cid]['single_run_power']:.2f}, chance of the paper's "
                       f"difference under no effect "
                       f"{have[cid]['p_single_run_this_large_by_chance']:.2g}."
                       for cid in POWER_CLAIMS[1:] if cid in have)
            + " (C6's sd comes from SmolLM2-135M, not the paper's Llama-3.2-1B.)" * ("C6" in have)
            + (f" Provisional: {c1['n_pairs']} pairs from a grid still running; re-run with "
               "`python -m theory run --only T8` when it is done." if "incomplete" in status
               else "")
            + f" T8 was {expectation}.")
    return Check(
        id="T8", claim="seeds each claimed effect (C1 +2.3 pp, C2 −2.8 epochs, C6 −0.0091 loss) "
        "needs for 80% power, against the paper's single-run comparisons", measured=measured,
        expected=0.8, tolerance=0.0, passed=passed, relation=">=", status=status,
        quantity="power of a single paired run (known-σ z test) for C1's +2.3 pp",
        summary=summary, derivation=derivation, survives=survives, tables={"power": rows},
        data={"curves": curves}, expected_outcome=outcome)


def _null_row(runs, claim: Claim, lr: float | None, source: str, null: str | None,
              unit: str) -> dict | None:
    """The power table's row of the arm's null control against the claim's baseline (it sets
    T8's expected outcome when it has at least :data:`MIN_PAIRS` pairs); None without one."""
    import numpy as np

    from ablations import stats

    if null is None:
        return None
    row = {"claim": f"{claim.id} null control ({null} − {claim.baseline})",
           "metric": claim.metric, "claimed_effect": claim.claimed, "paper": "",
           "unit": unit, "source": source}
    pairs = _null_pairs(runs, claim, lr, null)
    n = 0 if pairs is None else len(pairs)
    if n < MIN_PAIRS:
        row["status"] = (f"{n} seeds paired {null}/{claim.baseline} with {claim.metric} at "
                         f"lr {lr:g}, fewer than {MIN_PAIRS}" if lr is not None else
                         f"no {null}/{claim.baseline} pairs")
        return row
    d = pairs["diff"].to_numpy(dtype=float)
    sd = float(np.std(d, ddof=1))
    row.update({"status": "ran", "lr": lr, "n_pairs": n, "mean_diff": float(d.mean()),
                "sd_diff": sd, "seeds_needed_80": stats.seeds_needed(claim.claimed, sd),
                "single_run_power": single_run_power(claim.claimed, sd),
                "d_z_claimed": abs(claim.claimed) / sd if sd > 0 else math.inf})
    return row
