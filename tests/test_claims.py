"""Every branch of every claim's verdict (C1–C7), on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablations.claims import Evidence, claims, get_claim

LR = 0.006
Q = {"attention": "quantum", "lr": LR}


def stats_rows(*rows: dict) -> pd.DataFrame:
    """A stats.csv-shaped table; each row overrides neutral defaults."""
    base = dict(metric="final_test_acc", variant="sin-l0.5", baseline="adamw", n=20,
                mean_variant=0.92, mean_baseline=0.92, diff=0.0, ci_low=-0.01, ci_high=0.01,
                p_ttest=0.5, p_wilcoxon=0.5, p_holm=0.9, d_z=0.0, tost_margin=0.01,
                p_tost=0.3, power=0.5, verdict="-", n_for_claim=10.0, mde=0.01,
                attention="quantum", lr=LR)
    return pd.DataFrame([{**base, **r} for r in rows])


def verdict(claim_id: str, **evidence) -> str:
    ev = Evidence(lr=evidence.pop("lr", LR), **evidence)
    return get_claim(claim_id).verdict(ev).verdict


# ----------------------------------------------------------------------------- C1 and C6
@pytest.mark.parametrize("row, expected", [
    (dict(p_holm=0.01, diff=0.02), "supported"),
    (dict(p_holm=0.01, diff=-0.02), "contradicted"),
    (dict(p_holm=0.5, diff=0.002, p_tost=0.01),
     "equivalent within ±1 pp (excludes the paper's +2.3 pp)"),
    (dict(p_holm=0.5, diff=0.002, p_tost=0.01, tost_margin=0.03), "equivalent within ±3 pp"),
    (dict(p_holm=0.5, diff=0.002, p_tost=0.2), "no detectable difference"),
    (dict(p_holm=0.01, diff=0.0, p_tost=0.2), "no detectable difference"),  # no direction
])
def test_c1_every_branch(row, expected):
    assert verdict("C1", stats=stats_rows(row)) == expected


def test_c1_reads_its_own_cell_only():
    other_cell = stats_rows(dict(p_holm=0.01, diff=0.02, attention="classical"))
    assert verdict("C1", stats=other_cell) == "not run yet"
    other_lr = stats_rows(dict(p_holm=0.01, diff=0.02, lr=0.003))
    assert verdict("C1", stats=other_lr) == "not run yet"
    assert verdict("C1", stats=pd.DataFrame()) == "not run yet"


def test_c1_texts_carry_the_numbers():
    res = get_claim("C1").verdict(Evidence(stats=stats_rows(dict(
        p_holm=0.01, diff=0.023, mean_variant=0.938, mean_baseline=0.915, ci_low=0.01,
        ci_high=0.036)), lr=LR))
    assert res.measured == "93.80% vs 91.50% (diff +2.30 pp, n=20 seeds)"
    assert res.ci == "[+1, +3.6] pp"
    assert "TOST ±1 pp" in res.test and res.values["n_for_claim"] == 10.0


LLM = dict(metric="mean_train_loss", attention="none", lr=3e-4, mean_baseline=0.22,
           tost_margin=0.005)


@pytest.mark.parametrize("row, expected", [
    (dict(p_holm=0.001, diff=-0.009), "supported"),  # lower loss: the paper's direction
    (dict(p_holm=0.001, diff=0.009), "contradicted"),
    (dict(p_tost=0.001, diff=0.0001),
     "equivalent within ±0.005 (excludes the paper's -0.0091)"),
    (dict(p_tost=0.2, diff=0.0001), "no detectable difference"),
])
def test_c6_every_branch(row, expected):
    runs = pd.DataFrame({"attention": ["none"], "variant": ["adamw"]})
    assert verdict("C6", stats=stats_rows({**LLM, **row}), runs=runs, lr=3e-4) == expected


def test_c6_not_run():
    assert verdict("C6", stats=pd.DataFrame(), lr=3e-4) == "not run yet"


# ----------------------------------------------------------------------------- C2
def tte_runs(variant_epochs, baseline_epochs, horizon=12) -> pd.DataFrame:
    rows = []
    for name, epochs in (("sin-l0.5", variant_epochs), ("adamw", baseline_epochs)):
        for seed, e in enumerate(epochs):
            reached = e is not None
            rows.append(dict(variant=name, seed=seed, attention="quantum", lr=LR,
                             epochs_to_90=float(e) if reached else math.nan,
                             reached_90=reached))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("variant, baseline, expected", [
    ([2] * 10, [8] * 10, "supported"),
    ([8] * 10, [2] * 10, "contradicted"),
    ([5, 6] * 5, [6, 5] * 5, "no detectable difference"),
    ([None] * 10, [3] * 10, "contradicted"),  # never reached: censored, slower
])
def test_c2_every_branch(variant, baseline, expected):
    assert verdict("C2", runs=tte_runs(variant, baseline), horizon=12.0) == expected


def test_c2_not_run():
    runs = tte_runs([2] * 3, [3] * 3)
    assert verdict("C2", runs=runs[runs["variant"] == "adamw"], horizon=12.0) == "not run yet"
    assert verdict("C2", runs=runs, horizon=12.0, lr=0.1) == "not run yet"
    assert verdict("C2", runs=pd.DataFrame(), horizon=12.0) == "not run yet"


# ----------------------------------------------------------------------------- C3
def sweep_runs(means: dict[str, float], n=4) -> pd.DataFrame:
    return pd.DataFrame([dict(variant=v, seed=s, attention="quantum", lr=LR,
                              final_test_acc=m + 0.001 * s)
                         for v, m in means.items() for s in range(n)])


C3_RUNS = sweep_runs({"adamw": 0.92, "sin-l0.1": 0.91, "sin-l0.3": 0.93, "sin-l0.5": 0.92})


def vs05(*rows):
    return stats_rows(*[{"baseline": "sin-l0.5", **r} for r in rows])


@pytest.mark.parametrize("rows, expected", [
    ([dict(variant="sin-l0.1", diff=-0.01), dict(variant="sin-l0.3", p_holm=0.01, diff=0.01)],
     "contradicted"),
    ([dict(variant="sin-l0.1", p_holm=0.01, diff=-0.01), dict(variant="sin-l0.3", diff=0.01)],
     "supported"),
    ([dict(variant="sin-l0.1", diff=-0.01), dict(variant="sin-l0.3", diff=0.01)],
     "no detectable difference"),
    # a scoped or other-family variant beating λ = 0.5 is not a λ of the sweep
    ([dict(variant="sin-l0.1", diff=-0.01),
      dict(variant="sin-l0.5-first4", p_holm=0.01, diff=0.01),
      dict(variant="cos-l0.5", p_holm=0.01, diff=0.01)], "no detectable difference"),
])
def test_c3_every_branch(rows, expected):
    ev = dict(runs=C3_RUNS, stats=vs05(*rows), directions={"final_test_acc": True})
    assert verdict("C3", **ev) == expected


def test_c3_names_the_best_weight_and_the_family():
    res = get_claim("C3").verdict(Evidence(runs=C3_RUNS, stats=vs05(
        dict(variant="sin-l0.1", diff=-0.01, p_holm=0.2, p_ttest=0.03)), lr=LR))
    assert res.measured.startswith("best mean at λ=0.3 (93.")
    assert "Holm over all 1 comparisons with sin-l0.5" in res.test
    assert "unadjusted 0.03" in res.test


def test_c3_not_run():
    assert verdict("C3", runs=C3_RUNS, stats=vs05(dict(variant="sin-l0.3"))) == "not run yet"
    assert verdict("C3", runs=pd.DataFrame(), stats=pd.DataFrame()) == "not run yet"


# ----------------------------------------------------------------------------- C4
def cost_row(diff, lo, hi, base=1.0):
    return stats_rows(dict(metric="sec_per_epoch", mean_baseline=base, mean_variant=base + diff,
                           diff=diff, ci_low=lo, ci_high=hi))


@pytest.mark.parametrize("diff, lo, hi, expected", [
    (0.30, 0.20, 0.40, "supported"),         # +35% inside the interval
    (0.001, -0.05, 0.05, "contradicted"),    # far below
    (0.80, 0.75, 0.85, "contradicted"),      # far above: the old rule called this supported
    (0.35, 0.35, 0.35, "supported"),         # edge: the interval is the figure itself
])
def test_c4_every_branch(diff, lo, hi, expected):
    assert verdict("C4", stats=cost_row(diff, lo, hi)) == expected


def test_c4_texts_and_not_run():
    res = get_claim("C4").verdict(Evidence(stats=cost_row(0.001, -0.055, 0.056), lr=LR))
    assert res.measured.startswith("+0.1% per epoch") and res.ci == "[-5.5%, +5.6%]"
    assert verdict("C4", stats=pd.DataFrame()) == "not run yet"


# ----------------------------------------------------------------------------- C5
def sec_runs(variant_secs, baseline_secs, total=100.0) -> pd.DataFrame:
    rows = []
    for name, secs in (("sin-l0.5", variant_secs), ("adamw", baseline_secs)):
        for seed, t in enumerate(secs):
            rows.append(dict(variant=name, seed=seed, attention="quantum", lr=LR,
                             sec_to_target=math.nan if t is None else float(t),
                             reached_90=t is not None, sec_total=total))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("variant, baseline, expected", [
    ([10.0 + i for i in range(10)], [60.0 + i for i in range(10)], "supported"),
    ([60.0 + i for i in range(10)], [10.0 + i for i in range(10)], "contradicted"),
    ([30.0, 31.0] * 5, [31.0, 30.0] * 5, "no detectable difference"),
    ([10.0] * 4, [None] * 4, "no detectable difference"),  # no AdamW run reached the target
])
def test_c5_every_branch(variant, baseline, expected):
    assert verdict("C5", runs=sec_runs(variant, baseline)) == expected


def test_c5_no_baseline_reached_says_so_and_not_run():
    res = get_claim("C5").verdict(Evidence(runs=sec_runs([10.0] * 3, [None] * 3), lr=LR))
    assert res.measured == "no AdamW run reached the target"
    assert verdict("C5", runs=pd.DataFrame()) == "not run yet"


# ----------------------------------------------------------------------------- C7
def escape_rows(sin_rates, p_values, n=400) -> pd.DataFrame:
    rows = []
    for i, (rate, p) in enumerate(zip(sin_rates, p_values)):
        land = f"landscape {i}"
        for variant, r, pm in (("adamw", 0.3, math.nan), ("sin-l0.5", rate, p),
                               ("gauss-l0.5", 0.5, 0.01)):
            rows.append(dict(landscape=land, condition="noisy", variant=variant, n=n,
                             escape_rate=r, escaped=int(r * n), ci_low=r - 0.05,
                             ci_high=r + 0.05, p_mcnemar_vs_adamw=pm))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rates, ps, expected", [
    ([0.5, 0.3], [1e-6, 0.9], "supported"),
    ([0.5, 0.1], [1e-6, 1e-6], "contradicted"),    # less on any landscape
    ([0.31, 0.29], [0.5, 0.6], "no detectable difference"),
    ([0.5, 0.3], [0.03, 0.9], "no detectable difference"),  # not after Holm (0.06)
])
def test_c7_every_branch(rates, ps, expected):
    assert verdict("C7", tables={"escape": escape_rows(rates, ps)}) == expected


def test_c7_not_run():
    assert verdict("C7", tables={}) == "not run yet"
    rows = escape_rows([0.5], [1e-6])
    assert verdict("C7", tables={"escape": rows[rows["variant"] != "adamw"]}) == "not run yet"


def test_every_claim_is_registered_once_with_a_source():
    ids = [c.id for c in claims()]
    assert ids[:7] == [f"C{i}" for i in range(1, 8)] and len(set(ids)) == len(ids)
    assert {c.source for c in claims()} >= {"classifier", "llm", "theory"}
    assert all(np.isfinite(c.claimed) for c in claims() if c.claimed is not None)
