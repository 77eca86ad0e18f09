"""Known-answer, library-equivalence and property tests of ablations.stats.

The oracle tests written against hand computations and textbook data sets (6-MP, Holm's
example, Cohen's sample sizes) stay as regression tests of the package that now computes
through scipy.stats and statsmodels; the adapters (NaN, zero differences, ties, all
differences equal, the Kaplan–Meier median rule) are tested on their own.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from ablations import stats as S

# --------------------------------------------------------------------------------------------
# fixtures and builders
# --------------------------------------------------------------------------------------------


def make_runs(values: dict[tuple[str, str], list[float]], metric: str = "final_test_acc",
              lr: float = 1e-3) -> pd.DataFrame:
    """Runs table from {(variant, attention): per-seed values}; seed i is the i-th value."""
    rows = []
    for (variant, attention), vals in values.items():
        for seed, v in enumerate(vals):
            rows.append(dict(run_id=f"{variant}-{attention}-{seed}", arm="classifier",
                             variant=variant, attention=attention, seed=seed, lr=lr,
                             **{metric: v}))
    return pd.DataFrame(rows)


# Metric directions as an arm declares them (Arm.directions()).
DIRECTIONS = {"final_test_acc": True, "epochs_to_90": False, "perturbation_ratio": None}

# The 6-MP arm of Freireich et al. (1963): remission times in weeks, 0 = censored.
MP_TIMES = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP_EVENTS = np.array([1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], bool)
PLACEBO_TIMES = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


# --------------------------------------------------------------------------------------------
# paired comparison
# --------------------------------------------------------------------------------------------


def test_paired_comparison_matches_scipy_and_hand_computation():
    base = [0.90, 0.91, 0.92, 0.905, 0.915, 0.895, 0.90, 0.925]
    var = [0.93, 0.92, 0.95, 0.91, 0.93, 0.92, 0.905, 0.94]
    runs = make_runs({("sin-l0.5", "quantum"): var, ("adamw", "quantum"): base})
    res = S.paired_comparison(runs, "final_test_acc", "sin-l0.5", "adamw", tost_margin=0.01,
                              n_boot=2000)
    d = np.array(var) - np.array(base)
    assert res["n"] == 8 and res["n_cells"] == 1
    assert res["diff"] == pytest.approx(d.mean())
    assert res["mean_variant"] - res["mean_baseline"] == pytest.approx(res["diff"])
    assert res["p_ttest"] == pytest.approx(sps.ttest_rel(var, base).pvalue, rel=1e-10)
    assert res["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-10)
    half = sps.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert res["ci_low"] == pytest.approx(d.mean() - half)
    assert res["ci_high"] == pytest.approx(d.mean() + half)
    assert res["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert res["boot_low"] < res["diff"] < res["boot_high"]
    # The bootstrap interval of a mean is close to the t interval for a moderate sample.
    assert res["boot_low"] == pytest.approx(res["ci_low"], abs=0.006)
    assert res["boot_high"] == pytest.approx(res["ci_high"], abs=0.006)
    assert res["mde"] == pytest.approx(S.min_detectable_effect(8, d.std(ddof=1)))


def test_wilcoxon_matches_scipy_with_ties_and_zeros():
    rng = np.random.default_rng(0)
    for _ in range(8):
        n = int(rng.integers(4, 11))
        d = rng.integers(-3, 4, n).astype(float)
        if np.count_nonzero(d) < 2:
            continue
        runs = make_runs({("v", "q"): d, ("b", "q"): np.zeros(n)})
        res = S.paired_comparison(runs, "final_test_acc", "v", "b", tost_margin=None,
                                  n_boot=0)
        assert res["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-9)
    big = rng.normal(0.2, 1, 30)
    runs = make_runs({("v", "q"): big, ("b", "q"): np.zeros(30)})
    res = S.paired_comparison(runs, "final_test_acc", "v", "b", tost_margin=None, n_boot=0)
    assert res["p_wilcoxon"] == pytest.approx(sps.wilcoxon(big).pvalue, rel=1e-9)


def test_d_z_of_a_constructed_sample():
    # Differences 1..5: mean 3, sd sqrt(2.5) -> d_z = 3 / 1.5811 = 1.8974.
    runs = make_runs({("v", "classical"): [1, 2, 3, 4, 5], ("b", "classical"): [0] * 5})
    res = S.paired_comparison(runs, "final_test_acc", "v", "b", tost_margin=None, n_boot=0)
    assert res["d_z"] == pytest.approx(3 / math.sqrt(2.5))
    assert res["sd_diff"] == pytest.approx(math.sqrt(2.5))
    assert math.isnan(res["p_tost"]) and math.isnan(res["tost_margin"])
    assert math.isnan(res["boot_low"])


def test_pairing_is_by_seed_within_cells_and_drops_missing():
    runs = make_runs({("v", "quantum"): [1.0, 2.0, 3.0, 4.0], ("b", "quantum"): [0.0, 0.0, 0.0],
                      ("v", "classical"): [10.0, 10.0], ("b", "classical"): [0.0, 0.0]},
                     metric="epochs_to_90")
    runs.loc[(runs.variant == "v") & (runs.attention == "quantum") & (runs.seed == 1),
             "epochs_to_90"] = np.nan
    pairs = S.paired_differences(runs, "epochs_to_90", "v", "b", cell={"attention": "quantum"})
    assert pairs["seed"].tolist() == [0, 2]  # seed 3 has no baseline, seed 1 is NaN
    assert pairs["diff"].tolist() == [1.0, 3.0]
    pooled = S.paired_comparison(runs, "epochs_to_90", "v", "b", tost_margin=1.0, n_boot=0)
    assert pooled["n"] == 4 and pooled["n_cells"] == 2
    assert pooled["diff"] == pytest.approx((1 + 3 + 10 + 10) / 4)


def test_duplicate_seed_in_a_cell_is_rejected():
    runs = make_runs({("v", "quantum"): [1.0, 2.0], ("b", "quantum"): [0.0, 0.0]})
    runs = pd.concat([runs, runs.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="several runs"):
        S.paired_comparison(runs, "final_test_acc", "v", "b", tost_margin=0.1)


def test_degenerate_differences():
    same = make_runs({("v", "q"): [0.5, 0.6, 0.7], ("b", "q"): [0.5, 0.6, 0.7]})
    res = S.paired_comparison(same, "final_test_acc", "v", "b", tost_margin=0.01, n_boot=100)
    assert res["diff"] == 0 and res["p_ttest"] == 1.0
    assert math.isnan(res["p_wilcoxon"]) and math.isnan(res["d_z"])
    assert res["p_tost"] == 0.0  # identical results are equivalent within any margin
    shifted = make_runs({("v", "q"): [0.6, 0.7, 0.8], ("b", "q"): [0.5, 0.6, 0.7]})
    res = S.paired_comparison(shifted, "final_test_acc", "v", "b", tost_margin=0.01, n_boot=0)
    assert res["p_ttest"] == 0.0 and res["p_tost"] == 1.0
    one = make_runs({("v", "q"): [0.6], ("b", "q"): [0.5]})
    res = S.paired_comparison(one, "final_test_acc", "v", "b", tost_margin=0.01)
    assert res["n"] == 1 and res["diff"] == pytest.approx(0.1) and math.isnan(res["p_ttest"])


def test_tost_declares_noisy_identical_equivalent_and_shifted_not():
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(1)
    base = 0.9 + rng.normal(0, 0.01, 30)
    noisy = base + rng.normal(0, 0.002, 30)
    shifted = base + 0.03 + rng.normal(0, 0.002, 30)
    runs = make_runs({("same", "q"): noisy, ("shift", "q"): shifted, ("adamw", "q"): base})
    eq = S.paired_comparison(runs, "final_test_acc", "same", "adamw", tost_margin=0.005,
                             n_boot=0)
    ne = S.paired_comparison(runs, "final_test_acc", "shift", "adamw", tost_margin=0.005,
                             n_boot=0)
    assert eq["p_tost"] < 0.05
    assert ne["p_tost"] > 0.05
    ref = ttost_paired(noisy, base, -0.005, 0.005)[0]
    assert eq["p_tost"] == pytest.approx(ref, rel=1e-8)
    table = S.compare_all(runs, ["final_test_acc"], baselines=("adamw",),
                          tost_margins={"final_test_acc": 0.005}, n_boot=0,
                          higher_is_better=DIRECTIONS)
    verdicts = dict(zip(table["variant"], table["verdict"], strict=True))
    assert verdicts == {"same": "equivalent within ±0.005", "shift": "better"}


def test_paired_intervals_are_scipys_at_the_requested_level():
    base = [0.90, 0.91, 0.92, 0.905, 0.915, 0.895, 0.90, 0.925]
    var = [0.93, 0.92, 0.95, 0.91, 0.93, 0.92, 0.905, 0.94]
    runs = make_runs({("sin-l0.5", "quantum"): var, ("adamw", "quantum"): base})
    res = S.paired_comparison(runs, "final_test_acc", "sin-l0.5", "adamw", tost_margin=None,
                              alpha=0.1, n_boot=500, rng_seed=7)
    ci = sps.ttest_rel(var, base).confidence_interval(confidence_level=0.9)
    assert res["ci_low"] == pytest.approx(ci.low, rel=1e-12)
    assert res["ci_high"] == pytest.approx(ci.high, rel=1e-12)
    # The percentile bootstrap by its definition: resample the 8 pairs with the seeded
    # generator, take the 5 % and 95 % quantiles of the resampled mean differences.
    d = np.array(var) - np.array(base)
    idx = np.random.default_rng(7).integers(0, 8, size=(500, 8))
    lo, hi = np.quantile(d[idx].mean(axis=1), [0.05, 0.95])
    assert res["boot_low"] == pytest.approx(lo, rel=1e-12)
    assert res["boot_high"] == pytest.approx(hi, rel=1e-12)


def test_wilcoxon_ties_above_the_exact_limit_use_scipys_normal_approximation():
    d = np.array([1, -1, 2, 2, 3, 1, 1, -2, 3, 4, 1, 2, 2, 1, 0, 3, 1, 2], float)
    runs = make_runs({("v", "q"): d, ("b", "q"): np.zeros(d.size)})
    res = S.paired_comparison(runs, "final_test_acc", "v", "b", tost_margin=None, n_boot=0)
    assert res["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d[d != 0]).pvalue, rel=1e-12)
    # one non-zero difference: no test
    one = make_runs({("v", "q"): [0.0, 0.0, 1.0], ("b", "q"): [0.0, 0.0, 0.0]})
    res = S.paired_comparison(one, "final_test_acc", "v", "b", tost_margin=None, n_boot=0)
    assert math.isnan(res["p_wilcoxon"]) and res["p_ttest"] == pytest.approx(
        sps.ttest_rel([0, 0, 1.0], [0, 0, 0.0]).pvalue)


def test_power_column_is_statsmodels_power_at_the_observed_spread():
    from statsmodels.stats.power import TTestPower

    runs = _grid()
    table = S.compare_all(runs, ["final_test_acc", "epochs_to_90"],
                          claimed_effects={"final_test_acc": 0.023}, n_boot=0)
    acc = table[table.metric == "final_test_acc"]
    for r in acc.itertuples(index=False):
        with np.errstate(all="ignore"):
            ref = TTestPower().power(effect_size=0.023 / r.sd_diff, nobs=r.n, alpha=0.05)
        # Far in the tail statsmodels' noncentral t gives NaN; the adapter integrates.
        assert r.power == pytest.approx(ref, rel=1e-12) if np.isfinite(ref) else r.power > 0.999
        # n_for_claim is where the power of the claim first reaches 80 %.
        assert S.power_to_detect(0.023, r.sd_diff, int(r.n_for_claim)) >= 0.8
        if r.n_for_claim > 2:
            assert S.power_to_detect(0.023, r.sd_diff, int(r.n_for_claim) - 1) < 0.8
    assert table[table.metric == "epochs_to_90"]["power"].isna().all()  # no claim
    assert math.isnan(S.power_to_detect(None, 1.0, 10))
    assert math.isnan(S.power_to_detect(0.5, 1.0, 1))
    assert S.power_to_detect(0.5, 0.0, 5) == 1.0  # all differences equal
    assert S.power_to_detect(0.0, 1.0, 5) == 0.05  # the size of the test
    assert S.power_to_detect(-0.5, 1.0, 34) == pytest.approx(S.paired_t_power(0.5, 34))


# --------------------------------------------------------------------------------------------
# compare_all, Holm, verdicts
# --------------------------------------------------------------------------------------------


def test_holm_known_values_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = [0.001, 0.2, 0.04, 0.5, 0.012, 0.3]
    assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    out = S.holm([0.01, np.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert S.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def _grid(rng_seed: int = 0, n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    base = 0.9 + rng.normal(0, 0.01, n)
    vals = {("adamw", "quantum"): base,
            ("sin-l0.5", "quantum"): base + 0.02 + rng.normal(0, 0.004, n),
            ("sin-l0.1", "quantum"): base - 0.02 + rng.normal(0, 0.004, n),
            ("gauss-l0.5", "quantum"): base + rng.normal(0, 0.004, n),
            ("adamw", "classical"): base + 0.01,
            ("sin-l0.5", "classical"): base + 0.01 + rng.normal(0, 0.004, n)}
    runs = make_runs(vals)
    runs["epochs_to_90"] = 10 - 100 * (runs["final_test_acc"] - 0.9)
    return runs


def test_compare_all_columns_rows_and_verdicts():
    runs = _grid()
    table = S.compare_all(runs, ["final_test_acc", "epochs_to_90"],
                          claimed_effects={"final_test_acc": 0.023, "epochs_to_90": -2.8},
                          tost_margins={"final_test_acc": 0.01}, n_boot=200,
                          higher_is_better=DIRECTIONS)
    assert list(table.columns[:17]) == list(S.STATS_COLUMNS)
    assert S.STATS_COLUMNS[14:17] == ("p_tost", "power", "verdict")
    assert list(table.columns[17:]) == ["boot_low", "boot_high", "n_for_claim", "mde",
                                        "attention", "lr", "claimed_effect", "sd_diff",
                                        "tost_power"]
    q = table[(table.baseline == "adamw") & (table.attention == "quantum")]
    acc = q[q.metric == "final_test_acc"].set_index("variant")
    ep = q[q.metric == "epochs_to_90"].set_index("variant")
    assert acc.loc["sin-l0.5", "verdict"] == "better"
    assert acc.loc["sin-l0.1", "verdict"] == "worse"
    # Fewer epochs is better: direction-aware.
    assert ep.loc["sin-l0.5", "verdict"] == "better" and ep.loc["sin-l0.5", "diff"] < 0
    assert ep.loc["sin-l0.1", "verdict"] == "worse"
    assert acc.loc["gauss-l0.5", "verdict"] in ("equivalent within ±0.01",
                                                "no detectable difference")
    # No margin for epochs: never "equivalent".
    assert not table[table.metric == "epochs_to_90"]["verdict"].str.startswith("equiv").any()
    assert (table["n"] == 12).all()
    assert table["n_for_claim"].notna().all() and (table["n_for_claim"] >= 2).all()
    # Comparisons stay inside cells: the classical cell has only sin-l0.5 vs adamw.
    c = table[(table.attention == "classical") & (table.baseline == "adamw")]
    assert sorted(c["variant"].unique()) == ["sin-l0.5"]
    # sin-l0.5 as the baseline: adamw, sin-l0.1, gauss in the quantum cell; adamw in classical.
    b = table[(table.baseline == "sin-l0.5") & (table.metric == "final_test_acc")]
    assert len(b) == 4 and acc.loc["sin-l0.5", "diff"] == pytest.approx(
        -b[(b.variant == "adamw") & (b.attention == "quantum")]["diff"].iloc[0])


def test_compare_all_holm_family():
    runs = _grid()
    table = S.compare_all(runs, ["final_test_acc"], baselines=("adamw",), n_boot=0)
    assert table["p_holm"].to_numpy() == pytest.approx(S.holm(table["p_ttest"]))
    per_cell = S.compare_all(runs, ["final_test_acc"], baselines=("adamw",), n_boot=0,
                             family="per metric, baseline and cell")
    q = per_cell[per_cell.attention == "quantum"]
    assert q["p_holm"].to_numpy() == pytest.approx(S.holm(q["p_ttest"]))
    both = S.compare_all(runs, ["final_test_acc", "epochs_to_90"], baselines=("adamw",),
                         n_boot=0, family="all")
    assert both["p_holm"].to_numpy() == pytest.approx(S.holm(both["p_ttest"]))
    with pytest.raises(ValueError, match="family"):
        S.compare_all(runs, ["final_test_acc"], family="per planet")
    with pytest.raises(KeyError, match="no_such_metric"):
        S.compare_all(runs, ["no_such_metric"])


def test_verdict_rule():
    assert S.verdict(0.1, 0.01, 0.9, 0.05, True) == "better"
    assert S.verdict(0.1, 0.01, 0.9, 0.05, False) == "worse"
    assert S.verdict(-0.1, 0.01, 0.9, 0.05, None) == "lower"
    assert S.verdict(0.001, 0.5, 0.01, 0.05, True) == "equivalent within ±0.05"
    assert S.verdict(0.001, 0.5, 0.2, 0.05, True) == "no detectable difference"
    assert S.verdict(0.001, np.nan, np.nan, np.nan, True) == "no detectable difference"


def test_compare_all_directions_come_from_the_caller():
    runs = _grid()
    kw = dict(baselines=("adamw",), n_boot=0)
    none = S.compare_all(runs, ["final_test_acc"], **kw)
    q = none[none.attention == "quantum"].set_index("variant")["verdict"]
    assert q["sin-l0.5"] == "higher" and q["sin-l0.1"] == "lower"  # no direction given
    lower = S.compare_all(runs, ["final_test_acc"], higher_is_better={"final_test_acc": False},
                          **kw)
    q = lower[lower.attention == "quantum"].set_index("variant")["verdict"]
    assert q["sin-l0.5"] == "worse" and q["sin-l0.1"] == "better"
    from ablations.arms import get_arm

    arm = S.compare_all(runs, ["final_test_acc"],
                        higher_is_better=get_arm("classifier").directions(), **kw)
    q = arm[arm.attention == "quantum"].set_index("variant")["verdict"]
    assert q["sin-l0.5"] == "better" and q["sin-l0.1"] == "worse"


def test_holm_leaves_the_garbage_collector_as_it_was():
    import gc

    frozen = gc.get_freeze_count()
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert gc.get_freeze_count() == frozen and gc.isenabled()
    assert S.holm([]).shape == (0,) and np.isnan(S.holm([np.nan, np.nan])).all()


# --------------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------------

# Multiples of 1/8 and integer shifts keep every difference exact in float64.
_vals = st.lists(st.integers(-800, 800).map(lambda k: k / 8), min_size=3, max_size=12)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(data=st.data())
def test_swapping_variant_and_baseline_flips_signs(data):
    a = data.draw(_vals)
    b = data.draw(st.lists(st.integers(-800, 800).map(lambda k: k / 8), min_size=len(a),
                           max_size=len(a)))
    runs = make_runs({("x", "q"): a, ("y", "q"): b})
    fwd = S.paired_comparison(runs, "final_test_acc", "x", "y", tost_margin=1.0, n_boot=50)
    rev = S.paired_comparison(runs, "final_test_acc", "y", "x", tost_margin=1.0, n_boot=50)
    assert rev["diff"] == pytest.approx(-fwd["diff"])
    if np.isfinite(fwd["ci_low"]):
        assert rev["ci_low"] == pytest.approx(-fwd["ci_high"])
        assert rev["ci_high"] == pytest.approx(-fwd["ci_low"])
    for key in ("p_ttest", "p_wilcoxon", "p_tost"):
        assert rev[key] == pytest.approx(fwd[key], nan_ok=True)
    if np.isfinite(fwd["d_z"]):
        assert rev["d_z"] == pytest.approx(-fwd["d_z"])


@settings(derandomize=True, max_examples=40, deadline=None)
@given(data=st.data(), shift=st.integers(-1000, 1000))
def test_adding_a_constant_to_both_leaves_tests_unchanged(data, shift):
    a = data.draw(_vals)
    b = data.draw(st.lists(st.integers(-800, 800).map(lambda k: k / 8), min_size=len(a),
                           max_size=len(a)))
    r0 = S.paired_comparison(make_runs({("x", "q"): a, ("y", "q"): b}), "final_test_acc",
                             "x", "y", tost_margin=1.0, n_boot=0)
    r1 = S.paired_comparison(make_runs({("x", "q"): [v + shift for v in a],
                                        ("y", "q"): [v + shift for v in b]}),
                             "final_test_acc", "x", "y", tost_margin=1.0, n_boot=0)
    for key in ("diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_tost", "d_z"):
        assert r1[key] == pytest.approx(r0[key], nan_ok=True)
    assert r1["mean_variant"] == pytest.approx(r0["mean_variant"] + shift)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40))
def test_holm_properties(p):
    adj = S.holm(p)
    assert np.all(adj >= np.asarray(p) - 1e-15) and np.all(adj <= 1)
    order = np.argsort(p, kind="mergesort")
    assert np.all(np.diff(adj[order]) >= -1e-15)


# --------------------------------------------------------------------------------------------
# power
# --------------------------------------------------------------------------------------------


def test_seeds_needed_known_value_and_statsmodels():
    from statsmodels.stats.power import TTestPower

    assert S.seeds_needed(0.5, 1.0) == 34
    assert S.seeds_needed(-0.023, 0.046) == 34  # sign and units do not matter, d = 0.5
    solver = TTestPower()
    for d in (0.3, 0.8, 1.2, 2.5):
        n = solver.solve_power(effect_size=d, alpha=0.05, power=0.8)
        assert S.seeds_needed(d, 1.0) == max(2, math.ceil(n - 1e-9))
    assert S.seeds_needed(0.0, 1.0) == math.inf
    assert math.isnan(S.seeds_needed(np.nan, 1.0))
    assert S.seeds_needed(0.1, 0.0) == 2


def test_min_detectable_effect_matches_statsmodels():
    from statsmodels.stats.power import TTestPower

    for n in (5, 10, 34):
        d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert S.min_detectable_effect(n, 2.0) == pytest.approx(2.0 * d, rel=1e-4)
        assert S.paired_t_power(d, n) == pytest.approx(0.8, abs=1e-5)
    assert S.seeds_needed(S.min_detectable_effect(20, 1.0) * 1.0001, 1.0) <= 20
    assert math.isnan(S.min_detectable_effect(1, 1.0))
    with pytest.raises(ValueError, match="alpha and power"):
        S.min_detectable_effect(10, 1.0, power=1.5)


def test_power_is_finite_and_monotone_where_scipy_nct_fails():
    # scipy's nct gives NaN in the far tails (e.g. n = 2, d = 8); the fallback integrates.
    for n in (2, 3, 7):
        p = [S.paired_t_power(d, n) for d in (0.5, 1, 2, 4, 8, 16, 64)]
        assert all(np.isfinite(p)) and np.all(np.diff(p) >= -1e-12)
        assert p[-1] == pytest.approx(1.0, abs=1e-9)
    d2 = S.min_detectable_effect(2, 1.0)
    assert np.isfinite(d2) and S.paired_t_power(d2, 2) == pytest.approx(0.8, abs=1e-6)


def test_paired_t_power_is_statsmodels_ttest_power():
    from statsmodels.stats.power import TTestPower

    for n in (2, 5, 20, 100):
        for d in (0.0, 0.2, 0.5, 1.3, -0.7):
            ref = TTestPower().power(effect_size=abs(d), nobs=n, alpha=0.05)
            assert S.paired_t_power(d, n) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert S.paired_t_power(0.0, 10) == pytest.approx(0.05)  # the size of the test
    assert math.isnan(S.paired_t_power(np.nan, 10)) and math.isnan(S.paired_t_power(1.0, 1))


# --------------------------------------------------------------------------------------------
# factorial 2 x 2
# --------------------------------------------------------------------------------------------


def _factorial_runs(interaction: float, rng_seed: int, n_seeds: int = 16) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(n_seeds):
        u = rng.normal(0, 1.0)  # seed random effect
        for att in ("classical", "quantum"):
            for var in ("adamw", "sin-l0.5"):
                xa = 0.5 if att == "quantum" else -0.5
                xb = 0.5 if var == "sin-l0.5" else -0.5
                y = 10 + 1.0 * xa + 2.0 * xb + interaction * xa * xb + u + rng.normal(0, 0.3)
                rows.append(dict(seed=seed, attention=att, variant=var, lr=1e-3,
                                 final_test_acc=y))
    return pd.DataFrame(rows)


def test_factorial_recovers_planted_interaction():
    out = S.factorial_2x2(_factorial_runs(1.5, rng_seed=3), "final_test_acc")
    assert list(out.columns[:6]) == ["term", "estimate", "ci_low", "ci_high", "p_value",
                                     "method"]
    assert set(out["method"]) == {"mixedlm", "rm-anova"}
    for method in ("mixedlm", "rm-anova"):
        m = out[out.method == method].set_index("term")
        assert m.loc["attention:variant", "estimate"] == pytest.approx(1.5, abs=0.35)
        assert m.loc["attention:variant", "p_value"] < 1e-4
        assert m.loc["attention", "estimate"] == pytest.approx(1.0, abs=0.25)
        assert m.loc["variant", "estimate"] == pytest.approx(2.0, abs=0.25)
        assert (m["ci_low"] < m["estimate"]).all() and (m["estimate"] < m["ci_high"]).all()
    # Balanced data: the two methods agree on the fixed effects.
    mx = out[out.method == "mixedlm"]["estimate"].to_numpy()
    aov = out[out.method == "rm-anova"]["estimate"].to_numpy()
    assert mx == pytest.approx(aov, abs=1e-6)


def test_factorial_finds_no_interaction_where_none_planted():
    out = S.factorial_2x2(_factorial_runs(0.0, rng_seed=5), "final_test_acc")
    for method in ("mixedlm", "rm-anova"):
        row = out[(out.method == method) & (out.term == "attention:variant")].iloc[0]
        assert row["ci_low"] < 0 < row["ci_high"]
        assert row["p_value"] > 0.05


def test_factorial_needs_complete_seeds():
    runs = _factorial_runs(0.0, rng_seed=0, n_seeds=3)
    runs = runs[~((runs.seed > 0) & (runs.variant == "adamw") & (runs.attention == "quantum"))]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        S.factorial_2x2(runs, "final_test_acc")


# --------------------------------------------------------------------------------------------
# Kaplan-Meier, log-rank, time to target
# --------------------------------------------------------------------------------------------


def test_kaplan_meier_6mp_textbook_values():
    km = S.kaplan_meier(MP_TIMES, MP_EVENTS).set_index("time")
    expected = {6: 0.857, 7: 0.807, 10: 0.753, 13: 0.690, 16: 0.627, 22: 0.538, 23: 0.448}
    for t, s in expected.items():
        assert km.loc[t, "survival"] == pytest.approx(s, abs=5e-4)
    # Greenwood standard errors (Kleinbaum & Klein; R survfit).
    greenwood = {6: 0.0764, 7: 0.0869, 10: 0.0963, 13: 0.1068, 16: 0.1141, 22: 0.1282,
                 23: 0.1346}
    for t, se in greenwood.items():
        assert km.loc[t, "std_err"] == pytest.approx(se, abs=5e-4)
    # log-log band at t = 6 (R: 0.620, 0.952) and t = 23 (0.188, 0.680).
    assert km.loc[6, "ci_low"] == pytest.approx(0.620, abs=5e-4)
    assert km.loc[6, "ci_high"] == pytest.approx(0.952, abs=5e-4)
    assert km.loc[23, "ci_low"] == pytest.approx(0.188, abs=5e-4)
    assert km.loc[23, "ci_high"] == pytest.approx(0.680, abs=5e-4)
    # The band from the formula, by hand at t = 7.
    s = 18 / 21 * 16 / 17
    var_log = 3 / (21 * 18) + 1 / (17 * 16)
    sig = math.sqrt(var_log) / abs(math.log(s))
    assert km.loc[7, "ci_low"] == pytest.approx(s ** math.exp(1.959964 * sig), rel=1e-6)
    assert km.loc[0, "survival"] == 1.0 and km.loc[35, "survival"] == km.loc[23, "survival"]
    assert km.loc[6, "n_at_risk"] == 21 and km.loc[6, "n_events"] == 3
    assert km.loc[6, "n_censored"] == 1


def test_km_median_6mp():
    med, lo, hi = S.km_median(MP_TIMES, MP_EVENTS)
    assert med == 23 and lo == 13 and math.isnan(hi)  # R: 23 (13, NA)
    med, lo, hi = S.km_median(PLACEBO_TIMES, np.ones(21, bool))
    # Median 8; log-log band crosses 1/2 at 4 (lower: 0.426) and 11 (upper: 0.482), by hand
    # from Greenwood's formula without censoring, Var log S = 1/n_t - 1/21. (R's default
    # "log" band gives (4, 12) instead.)
    assert med == 8 and lo == 4 and hi == 11


def test_km_median_exact_half_and_undefined():
    # S drops to exactly 0.5 at t = 2 and to 0.25 at t = 3: R takes the midpoint 2.5.
    assert S.km_median([1, 2, 3, 4], np.ones(4, bool))[0] == 2.5
    # Fewer than half reach the target: the median is undefined.
    med, lo, hi = S.km_median([1, 5, 5, 5], np.array([1, 0, 0, 0], bool))
    assert math.isnan(med) and math.isnan(hi)


def test_logrank_6mp_vs_placebo():
    chi2, p = S.logrank_test(MP_TIMES, MP_EVENTS, PLACEBO_TIMES, np.ones(21, bool))
    assert chi2 == pytest.approx(16.79, abs=0.01)
    assert p == pytest.approx(4.17e-5, rel=0.01)
    chi2_rev, p_rev = S.logrank_test(PLACEBO_TIMES, np.ones(21, bool), MP_TIMES, MP_EVENTS)
    assert chi2_rev == pytest.approx(chi2) and p_rev == pytest.approx(p)
    assert all(math.isnan(v) for v in S.logrank_test([1, 2], [False, False], [3], [False]))


def test_time_to_event_censors_at_horizon():
    runs = pd.DataFrame(dict(variant="v", seed=range(4), epochs_to_90=[3, np.nan, 5, np.nan],
                             reached_90=[True, False, True, False]))
    t, e = S.time_to_event(runs, horizon=10)
    assert t.tolist() == [3, 10, 5, 10] and e.tolist() == [True, False, True, False]
    runs["total_epochs"] = [10, 8, 10, 12]
    t, _ = S.time_to_event(runs, horizon="total_epochs")
    assert t.tolist() == [3, 8, 5, 12]
    with pytest.raises(ValueError, match="exceeds the horizon"):
        S.time_to_event(runs, horizon=4)
    # Without an event column, a finite time is an event.
    t, e = S.time_to_event(runs, event_col=None, horizon=10)
    assert e.tolist() == [True, False, True, False]


def test_time_to_target_and_paper_style_means():
    rows = []
    for seed in range(10):
        rows.append(dict(variant="sin-l0.5", seed=seed, epochs_to_90=4 + seed % 3,
                         reached_90=True))
        reached = seed < 8
        rows.append(dict(variant="adamw", seed=seed,
                         epochs_to_90=(7 + seed % 4) if reached else np.nan, reached_90=reached))
    runs = pd.DataFrame(rows)
    res = S.time_to_target(runs, "sin-l0.5", "adamw", horizon=20)
    assert res["events_variant"] == 10 and res["events_baseline"] == 8
    assert res["median_variant"] < res["median_baseline"]
    assert res["p_logrank"] < 0.01
    xv = runs[runs.variant == "sin-l0.5"]["epochs_to_90"].to_numpy(float)
    xb = runs[(runs.variant == "adamw") & runs.reached_90]["epochs_to_90"].to_numpy(float)
    assert res["reached_diff"] == pytest.approx(xv.mean() - xb.mean())
    assert res["reached_rel_change"] == pytest.approx(xv.mean() / xb.mean() - 1)
    assert res["reached_p_welch"] == pytest.approx(
        sps.ttest_ind(xv, xb, equal_var=False).pvalue, rel=1e-8)
    km = S.kaplan_meier_by_group(runs, horizon=20)
    assert set(km["variant"]) == {"sin-l0.5", "adamw"}
    assert km.groupby("variant")["survival"].min().to_dict() == pytest.approx(
        {"sin-l0.5": 0.0, "adamw": 0.2})


def test_kaplan_meier_is_statsmodels_survfunc_carried_over_censoring_times():
    from statsmodels.duration.survfunc import SurvfuncRight

    km = S.kaplan_meier(MP_TIMES, MP_EVENTS).set_index("time")
    fit = SurvfuncRight(np.array(MP_TIMES, float), MP_EVENTS.astype(float))
    for t, s, se in zip(fit.surv_times, fit.surv_prob, fit.surv_prob_se, strict=True):
        assert km.loc[t, "survival"] == s and km.loc[t, "std_err"] == se
    # 9 and 11 are censoring times only: the curve is flat there.
    assert km.loc[9, "survival"] == km.loc[7, "survival"]
    assert km.loc[11, "ci_low"] == km.loc[10, "ci_low"]
    assert km.loc[11, "n_at_risk"] == 13 and km.loc[11, "n_events"] == 0
    assert km.loc[11, "n_censored"] == 1
    # no event at all: a flat curve at 1 with a degenerate band
    flat = S.kaplan_meier([3, 5], [False, False])
    assert flat["survival"].tolist() == [1.0, 1.0, 1.0]
    assert flat["ci_low"].tolist() == [1.0, 1.0, 1.0] and flat["time"].tolist() == [0, 3, 5]
    # events at time 0 replace the starting row
    zero = S.kaplan_meier([0, 0, 2, 3], [True, False, True, True])
    assert zero["time"].tolist() == [0, 2, 3] and zero["survival"].iloc[0] == 0.75
    with pytest.raises(ValueError, match="non-negative"):
        S.kaplan_meier([-1, 2], [True, True])


_km_samples = st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=3, max_size=30)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(_km_samples)
def test_km_median_agrees_with_statsmodels_outside_its_conventions(sample):
    from statsmodels.duration.survfunc import SurvfuncRight

    t = np.array([x for x, _ in sample], float)
    e = np.array([y for _, y in sample], bool)
    if not e.any():
        return
    fit = SurvfuncRight(t, e.astype(float))
    med, lo, hi = S.km_median(t, e)
    if not np.any(np.abs(fit.surv_prob - 0.5) < 1e-9):  # else our midpoint rule applies
        ref = fit.quantile(0.5)
        assert med == ref or (math.isnan(med) and math.isnan(ref))
    if np.all(fit.surv_prob > 0):  # else our "S = 0 has crossed" convention applies
        with np.errstate(all="ignore"):
            ref_lo, ref_hi = fit.quantile_ci(0.5, method="cloglog")
        ref_hi = math.nan if np.isinf(ref_hi) else ref_hi
        assert lo == ref_lo or (math.isnan(lo) and math.isnan(ref_lo))
        assert hi == ref_hi or (math.isnan(hi) and math.isnan(ref_hi))


def test_km_median_rule_is_one_stated_sentence():
    rule = S.KM_MEDIAN_RULE
    assert isinstance(rule, str) and "\n" not in rule and ". " not in rule
    assert "midpoint" in rule and "½" in rule and "survfit" in rule
    assert "midpoint" in S.km_median.__doc__ and "KM_MEDIAN_RULE" in S.km_median.__doc__
    # S reaches 0 at the only event: the band has crossed there (statsmodels: no interval).
    assert S.km_median([1, 4, 8], np.array([0, 0, 1], bool)) == (8.0, 8.0, 8.0)


def test_logrank_is_survdiff_with_an_exact_tail():
    from statsmodels.duration.survfunc import survdiff

    t = np.array(MP_TIMES + PLACEBO_TIMES, float)
    e = np.concatenate([MP_EVENTS, np.ones(21, bool)]).astype(float)
    g = np.repeat([0, 1], 21)
    chi2, p = S.logrank_test(MP_TIMES, MP_EVENTS, PLACEBO_TIMES, np.ones(21, bool))
    assert chi2 == pytest.approx(survdiff(t, e, g)[0], rel=1e-12)
    assert p == pytest.approx(sps.chi2.sf(chi2, 1), rel=1e-12)
    # by hand: a = {1, 2} reached, b = {3} censored: O − E = 5/6, V = 17/36
    assert S.logrank_test([1, 2], [True, True], [3], [False])[0] == pytest.approx(25 / 17)
    # V = 0 (only one group at risk at the event) or an empty group: no test
    assert all(math.isnan(v) for v in S.logrank_test([1], [True], [0.5], [False]))
    assert all(math.isnan(v) for v in S.logrank_test([1, 2], [True, True], [], []))


def test_welch_among_reached_is_scipys_and_constant_groups_collapse():
    xa, xb = [4.0, 5.0, 6.0, 4.0], [7.0, 9.0, 8.0]
    res = S.mean_time_among_reached(xa, [True] * 4, xb + [20.0], [True] * 3 + [False])
    ref = sps.ttest_ind(xa, xb, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.95)
    assert res["p_welch"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert res["n_b"] == 4 and res["reached_b"] == 3
    const = S.mean_time_among_reached([4, 4], [True, True], [7, 7], [True, True])
    assert (const["ci_low"], const["ci_high"], const["p_welch"]) == (-3.0, -3.0, 0.0)


# --------------------------------------------------------------------------------------------
# rliable-style aggregates
# --------------------------------------------------------------------------------------------


def test_iqm_known_value():
    assert S.iqm(np.arange(1, 101)) == pytest.approx(50.5)
    assert S.iqm([1, 2, 3, 4, 1000]) == pytest.approx(sps.trim_mean([1, 2, 3, 4, 1000], 0.25))
    assert S.iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), axis=1) == pytest.approx([2.5, 6.5])


def test_stratified_bootstrap_ci():
    rng = np.random.default_rng(0)
    tasks = {"a": rng.normal(0, 1, 20), "b": rng.normal(5, 1, 20)}
    est, lo, hi = S.stratified_bootstrap_ci(tasks, np.mean, n_boot=2000, rng_seed=1)
    assert est == pytest.approx(np.concatenate(list(tasks.values())).mean())
    assert lo < est < hi
    # Stratification: the task means are not resampled across tasks, so the interval is
    # about as wide as the within-task spread allows (se ≈ sqrt(2·1/20)/2 ≈ 0.16).
    assert hi - lo < 1.0
    assert S.stratified_bootstrap_ci(tasks, np.mean, 2000, 1) == (est, lo, hi)
    # A non-vectorised statistic gives the same answer as the vectorised path.
    slow = S.stratified_bootstrap_ci(tasks, lambda x: float(np.mean(x)), 300, 2,
                                     vectorized=False)
    fast = S.stratified_bootstrap_ci(tasks, np.mean, 300, 2)
    assert slow == pytest.approx(fast)
    const = S.stratified_bootstrap_ci([np.full(5, 3.0)], S.iqm, 100, 0)
    assert const == pytest.approx((3.0, 3.0, 3.0))


def test_stratified_bootstrap_is_scipys_bootstrap_over_tasks_as_samples():
    # rliable's stratified bootstrap resamples each task's runs independently and pools them:
    # scipy.stats.bootstrap with the tasks as independent samples, same generator stream.
    rng = np.random.default_rng(4)
    tasks = [rng.normal(0, 1, 20), rng.normal(3, 2, 15)]

    def pooled_mean(*samples, axis=-1):
        return np.mean(np.concatenate(samples, axis=axis), axis=axis)

    est, lo, hi = S.stratified_bootstrap_ci(tasks, np.mean, n_boot=1000, rng_seed=3)
    ref = sps.bootstrap(tuple(tasks), pooled_mean, n_resamples=1000, method="percentile",
                        vectorized=True, paired=False, rng=np.random.default_rng(3))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low,
                                      ref.confidence_interval.high), rel=1e-9)
    # No run moves between tasks: constant tasks give a constant pooled mean.
    const = S.stratified_bootstrap_ci({"a": np.zeros(5), "b": np.full(5, 10.0)}, np.mean, 500)
    assert const == (5.0, 5.0, 5.0)


def test_probability_of_improvement():
    x = np.array([5.0, 6.0, 7.0, 8.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert S.probability_of_improvement(x, y, n_boot=200) == pytest.approx((1.0, 1.0, 1.0))
    assert S.probability_of_improvement(y, x, n_boot=0)[0] == 0.0
    assert S.probability_of_improvement(x, y, higher_is_better=False, n_boot=0)[0] == 0.0
    assert S.probability_of_improvement(x, x, n_boot=0)[0] == pytest.approx(0.5)
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1, 15), rng.normal(0, 1, 12)
    u = sps.mannwhitneyu(a, b).statistic
    poi, lo, hi = S.probability_of_improvement(a, b, paired=False, n_boot=500)
    assert poi == pytest.approx(u / (15 * 12))
    assert lo <= poi <= hi
    # Ties count one half.
    assert S.probability_of_improvement([1, 2], [1, 1], paired=True, n_boot=0)[0] == 0.75
    # Strata: the mean of the per-task probabilities.
    p = S.probability_of_improvement({"t1": x, "t2": y}, {"t1": y, "t2": x}, n_boot=0)[0]
    assert p == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seed-aligned"):
        S.probability_of_improvement([1, 2, 3], [1, 2], paired=True)


def test_aggregate_metrics():
    runs = _grid()
    agg = S.aggregate_metrics(runs, "final_test_acc", strata=("attention",), n_boot=200)
    assert list(agg.columns) == ["variant", "n", "mean", "mean_low", "mean_high", "iqm",
                                 "iqm_low", "iqm_high", "median"]
    row = agg.set_index("variant").loc["adamw"]
    assert row["n"] == 24
    assert row["mean"] == pytest.approx(runs[runs.variant == "adamw"]["final_test_acc"].mean())
    assert row["mean_low"] <= row["mean"] <= row["mean_high"]


# --------------------------------------------------------------------------------------------
# descriptive tables for the plots
# --------------------------------------------------------------------------------------------


def test_curve_summary_and_lambda_sweep():
    curves = pd.DataFrame([dict(run_id=f"r{s}", variant="adamw", attention="quantum", seed=s,
                                epoch=e, test_acc=0.5 + 0.1 * e + 0.01 * s, train_loss=1.0)
                           for s in range(3) for e in range(1, 4)])
    cs = S.curve_summary(curves, "test_acc")
    assert list(cs.columns) == ["variant", "attention", "epoch", "n", "mean", "sd", "ci_low",
                                "ci_high"]
    first = cs[cs.epoch == 1].iloc[0]
    assert first["n"] == 3 and first["mean"] == pytest.approx(0.61)
    half = sps.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert first["ci_high"] - first["mean"] == pytest.approx(half)

    assert S.parse_lambda("sin-l0.5") == ("sin", 0.5)
    assert S.parse_lambda("sin-l0.1-first4") == ("sin-first4", 0.1)
    assert S.parse_lambda("adamw") == ("adamw", 0.0)
    assert math.isnan(S.parse_lambda("anneal")[1])
    with pytest.raises(ValueError, match="malformed"):
        S.parse_lambda("Sin 0.5")
    sweep = S.lambda_sweep(_grid(), "final_test_acc")
    q = sweep[(sweep.family == "sin") & (sweep.attention == "quantum")]
    assert q["lam"].tolist() == [0.0, 0.1, 0.5]
    assert set(sweep["family"]) == {"sin", "gauss"}


def test_t_interval_is_scipys_and_degenerate_cases():
    x = [0.61, 0.63, 0.58, 0.66, np.nan]
    m, lo, hi = S.t_interval(x, alpha=0.1)
    ci = sps.ttest_1samp(x[:4], 0.0).confidence_interval(confidence_level=0.9)
    assert m == pytest.approx(np.mean(x[:4])) and (lo, hi) == pytest.approx((ci.low, ci.high))
    m, lo, hi = S.t_interval([0.1, 0.1, 0.1])  # sd 0: the interval collapses to the mean
    assert lo == m == hi == pytest.approx(0.1)
    one = S.t_interval([2.0])
    assert one[0] == 2.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in S.t_interval([np.nan]))


def test_wilson_known_values_and_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = S.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = S.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    # by hand (Wilson 1927) at 90 %
    k, n, z = 3, 17, sps.norm.ppf(0.95)
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert S.wilson(k, n, alpha=0.1) == pytest.approx((center - half, center + half))
    assert S.wilson(7, 9) == pytest.approx(proportion_confint(7, 9, method="wilson"))
    assert S.wilson(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in S.wilson(0, 0))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        S.wilson(11, 10)


def test_parse_lambda_follows_qsgd_variant_ids():
    assert S.parse_lambda("sin-l0.5-first4") == ("sin-first4", 0.5)
    assert S.parse_lambda("gauss-l0.001") == ("gauss", 0.001)
    assert S.parse_lambda("anneal-l0.3") == ("anneal", 0.3)  # an explicit weight
    for bad in ("sin", "foo-l0.5", "sin-l0.5-first0", "adamw-l0.5"):
        with pytest.raises(ValueError):
            S.parse_lambda(bad)


def test_import_is_light():
    import subprocess
    import sys

    code = ("import ablations.stats, sys; "
            "print('statsmodels' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == "False False"
