"""Power by design and the null control in the claims' verdicts (issue 16): every branch on
hand-made tables, as tests/test_claims.py does for the verdicts themselves."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from ablations.claims import ClaimResult, Evidence, get_claim
from ablations.design import Design
from ablations.stats import logrank_power
from tests.test_claims import LLM, LR, sec_runs, stats_rows, sweep_runs, tte_runs, vs05

NULL = "gauss-l0.001"
C1 = Design("C1", margin=0.01, family=("sin-l0.5", "sin-l0.1", "moment-l0.5"), seeds=45,
            pilot_sd=0.0217, pilot="results/classifier, 20 seeds")


def result(claim_id: str, *rows: dict, designs=None, null=None, **evidence) -> ClaimResult:
    ev = Evidence(stats=stats_rows(*rows), lr=evidence.pop("lr", LR), designs=designs or {},
                  null=null, **evidence)
    return get_claim(claim_id).verdict(ev)


# ----------------------------------------------------------------------------- power in verdicts
@pytest.mark.parametrize("row, expected", [
    # equivalent and powered: as before
    (dict(p_tost=0.01, tost_power=0.9),
     "equivalent within ±1 pp (excludes the paper's +2.3 pp)"),
    # equivalent but under-powered: says so
    (dict(p_tost=0.01, tost_power=0.62),
     "equivalent within ±1 pp (excludes the paper's +2.3 pp; power 0.62: under-powered)"),
    (dict(p_tost=0.01, tost_power=0.62, tost_margin=0.03),
     "equivalent within ±3 pp (power 0.62: under-powered)"),
    # not shown equivalent: under-powered, or powered
    (dict(p_tost=0.2, tost_power=0.28),
     "no detectable difference; not shown equivalent within ±1 pp: under-powered "
     "(power 0.28)"),
    (dict(p_tost=0.2, tost_power=0.85),
     "no detectable difference; not shown equivalent within ±1 pp (power 0.85)"),
    # no power known (an older table) or no margin: the plain words
    (dict(p_tost=0.2), "no detectable difference"),
    (dict(p_tost=math.nan, tost_margin=math.nan, tost_power=math.nan),
     "no detectable difference"),
    # a significant result is judged on its direction whatever the TOST's power
    (dict(p_holm=0.01, diff=0.02, tost_power=0.1), "supported"),
    (dict(p_holm=0.01, diff=-0.02, tost_power=0.1), "contradicted"),
])
def test_c1_verdict_states_whether_the_equivalence_test_was_powered(row, expected):
    res = result("C1", row)
    assert res.verdict == expected
    assert res.kind in ("equivalent", "no detectable difference", "supported", "contradicted")


def test_the_target_power_is_the_designs():
    row = dict(p_tost=0.01, tost_power=0.85)
    strict = {"C1": Design("C1", margin=0.01, power=0.9)}
    assert result("C1", row, designs=strict).verdict.endswith("power 0.85: under-powered)")
    assert "under-powered" not in result("C1", row).verdict  # default target 0.8


def test_c6_under_powered_branch_in_its_units():
    runs = pd.DataFrame({"attention": ["none"], "variant": ["adamw"]})
    res = result("C6", {**LLM, "p_tost": 0.2, "diff": 0.0001, "tost_power": 0.4}, runs=runs,
                 lr=3e-4)
    assert res.verdict == ("no detectable difference; not shown equivalent within ±0.005: "
                           "under-powered (power 0.40)")


# ----------------------------------------------------------------------------- power texts
def test_power_text_names_tost_and_t_power_and_the_seeds():
    res = result("C1", dict(n=20, p_tost=0.2, tost_power=0.28, power=0.99),
                 designs={"C1": C1})
    assert res.power == ("TOST ±1 pp: 0.28 (n = 20 of 45 pre-registered; under-powered); "
                         "t test for the paper's +2.3 pp: 0.99")
    assert res.values["tost_power"] == 0.28 and res.values["t_power"] == 0.99
    assert res.as_dict()["power"] == res.power  # the ledger's column
    assert result("C1", dict(tost_power=0.9, power=0.5)).power == (
        "TOST ±1 pp: 0.90 (n = 20); t test for the paper's +2.3 pp: 0.50")
    plain = result("C1", dict(tost_power=math.nan, power=math.nan)).power
    assert plain == "–"


def test_design_text_sets_the_pilot_beside_what_was_achieved():
    res = result("C1", dict(n=20, sd_diff=0.0231, tost_power=0.25), designs={"C1": C1})
    assert res.values["design"] == (
        "Design: pre-registered n = 45 from pilot sd 2.17 pp (results/classifier, 20 seeds) "
        "at ±1 pp, 80% TOST power (the pilot needs 42); Holm family: sin-l0.5, sin-l0.1, "
        "moment-l0.5. Achieved: n = 20, sd of the paired differences 2.31 pp, TOST power 0.25 "
        "at ±1 pp (at this sd 80% needs 48 seeds).")
    assert result("C1", {}).values["design"] == ""  # nothing pre-registered


@pytest.mark.parametrize("claim_id, runs, hr", [
    ("C2", tte_runs([3] * 10, [5] * 10), 7.4 / 4.6),
    ("C5", sec_runs([10.0 + i for i in range(10)], [20.0 + i for i in range(10)]), 1 / 0.84),
])
def test_time_to_target_claims_state_the_log_rank_power(claim_id, runs, hr):
    design = Design(claim_id, seeds=45)
    res = get_claim(claim_id).verdict(Evidence(runs=runs, lr=LR, horizon=12.0,
                                               designs={claim_id: design}))
    want = f"{logrank_power(hr, 20):.2f}"
    assert res.power == (f"log-rank for the paper's hazard ratio {hr:.2f}: {want} (20 events, "
                         "n = 10 + 10, 45 each pre-registered; Schoenfeld)")
    assert res.values["design"] == "Design: pre-registered n = 45."


def test_claims_without_a_power_say_why():
    c3 = get_claim("C3").verdict(Evidence(runs=sweep_runs({"sin-l0.1": 0.91, "sin-l0.5": 0.92}),
                                          stats=vs05(dict(variant="sin-l0.1")), lr=LR))
    assert c3.power.startswith("– (the paper gives no effect size")
    c4 = result("C4", dict(metric="sec_per_epoch", mean_baseline=1.0))
    assert c4.power == "– (an interval estimate, no test)"


# ----------------------------------------------------------------------------- the Holm family
def test_c1_holm_runs_over_the_pre_registered_family_only():
    rows = [dict(variant="sin-l0.5", p_ttest=0.01, p_holm=0.9, diff=0.02),
            dict(variant="sin-l0.1", p_ttest=0.04, p_holm=0.9),
            dict(variant="moment-l0.5", p_ttest=0.03, p_holm=0.9),
            dict(variant="cos-l0.5", p_ttest=0.001, p_holm=0.9)]  # not in the family
    res = result("C1", *rows, designs={"C1": C1})
    want = multipletests([0.01, 0.04, 0.03], method="holm")[1][0]
    assert res.values["p_holm"] == pytest.approx(want) and res.verdict == "supported"
    assert ("Holm p=0.03 (over 3 pre-registered comparisons with adamw: sin-l0.5, "
            "sin-l0.1, moment-l0.5)") in res.test
    # the stats table's own p_holm without a pre-registered family
    assert result("C1", *rows).values["p_holm"] == 0.9
    assert "(over every comparison with adamw on the metric)" in result("C1", *rows).test


def test_a_family_member_not_run_counts_as_p_one():
    res = result("C1", dict(p_ttest=0.02, diff=0.02), designs={"C1": C1})
    assert res.values["p_holm"] == pytest.approx(0.06)  # 3 × 0.02: never less strict
    assert "2 not run yet, counted p = 1" in res.test and res.verdict.startswith("no detect")


def test_c3_reads_its_pre_registered_family():
    runs = sweep_runs({"adamw": 0.92, "sin-l0.1": 0.90, "sin-l0.3": 0.93, "sin-l0.5": 0.92})
    stats = vs05(dict(variant="sin-l0.1", p_ttest=0.01, diff=-0.01),
                 dict(variant="sin-l0.3", p_ttest=0.001, p_holm=0.001, diff=0.01))
    # the stats table's family: sin-l0.3 beats 0.5 after Holm
    ev = dict(runs=runs, stats=stats, lr=LR, directions={"final_test_acc": True})
    assert get_claim("C3").verdict(Evidence(**ev)).verdict == "contradicted"
    # pre-registered to sin-l0.1 only: Holm over one comparison, 0.1 is worse
    designs = {"C3": Design("C3", family=("sin-l0.1",))}
    res = get_claim("C3").verdict(Evidence(**ev, designs=designs))
    assert res.verdict == "supported"
    assert "Holm over 1 pre-registered comparisons with sin-l0.5: sin-l0.1" in res.test


# ----------------------------------------------------------------------------- the null control
def null_rows(*, vs_base: dict, vs_null: dict | None, claim: dict | None = None):
    rows = [dict(variant="sin-l0.5", sd_diff=0.022, **(claim or {})),
            dict(variant=NULL, diff=-0.0005, ci_low=-0.007, ci_high=0.006, sd_diff=0.02,
                 n=45, **vs_base)]
    if vs_null is not None:
        rows.append({"variant": "sin-l0.5", "baseline": NULL, "diff": 0.001, "ci_low": -0.006,
                     "ci_high": 0.008, **vs_null})
    return rows


def test_the_null_control_stands_beside_the_claim():
    res = result("C1", *null_rows(vs_base={}, vs_null=dict(p_holm=0.7)), null=NULL)
    assert res.null == ("gauss-l0.001 − adamw: -0.05 [-0.7, +0.6] pp, sd of the paired "
                        "differences 2 pp (n=45); sin-l0.5's sd is 1.10× the nudge's; "
                        "sin-l0.5 − gauss-l0.001: +0.1 [-0.6, +0.8] pp, Holm p=0.7")
    assert res.values["spread_ratio"] == pytest.approx(1.1)
    assert res.values["null_sd"] == 0.02 and res.values["p_holm_vs_null"] == 0.7
    assert res.as_dict()["null"] == res.null
    # not run in the cell, or no null control in the grid
    assert result("C1", {}, null=NULL).null == "– (gauss-l0.001 not run in the claim's cell)"
    assert result("C1", {}).null == "–"


@pytest.mark.parametrize("vs_null, expected", [
    # differs from AdamW and from the nudge
    (dict(p_holm=0.01, diff=0.02), "supported"),
    # differs from AdamW, but a nudge differs as much
    (dict(p_holm=0.4, diff=0.002), "supported against adamw, but not told apart from the null "
                                   "nudge gauss-l0.001 (Holm p=0.4)"),
    # no comparison with the nudge: the verdict against AdamW alone
    (None, "supported"),
])
def test_a_significant_claim_is_told_apart_from_the_nudge(vs_null, expected):
    rows = null_rows(vs_base={}, vs_null=vs_null, claim=dict(p_holm=0.01, diff=0.02))
    assert result("C1", *rows, null=NULL).verdict == expected


def test_contradicted_but_not_apart_from_the_nudge():
    rows = null_rows(vs_base={}, vs_null=dict(p_holm=0.5),
                     claim=dict(p_holm=0.01, diff=-0.02))
    res = result("C1", *rows, null=NULL)
    assert res.verdict.startswith("contradicted against adamw, but not told apart")
    assert res.kind == "contradicted"
