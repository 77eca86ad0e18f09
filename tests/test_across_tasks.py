"""Aggregation across tasks (ablations/stats/across.py) on hand-made tables: each statistic
against a brute-force reference written out in loops here, and its invariants under
Hypothesis (permutations, shifts, scalings, symmetry, bounds)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from ablations.stats import across as A


def runs_of(values: dict[tuple[str, int, str], list[float]], metric: str = "score"
            ) -> pd.DataFrame:
    """Runs table from {(task, data seed, variant): per-run-seed values}."""
    rows = [dict(task=t, data_seed=d, variant=v, seed=s, **{metric: x})
            for (t, d, v), xs in values.items() for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


# a design: tasks × data seeds × run seeds, two variants
_value = st.floats(0, 1, allow_nan=False, width=32)


@st.composite
def designs(draw, variants=("adamw", "sin")):
    values = {}
    for t in range(draw(st.integers(1, 3))):
        for d in range(draw(st.integers(1, 3))):
            n = draw(st.integers(1, 4))
            for v in variants:
                values[(f"t{t}", d, v)] = draw(st.lists(_value, min_size=n, max_size=n))
    return runs_of(values)


# ----------------------------------------------------------------------------- references
def reference_bootstrap(runs, stat, variants, clusters, n_boot, rng_seed):
    """The two-stage stratified bootstrap in plain loops, drawing in the documented order:
    per replicate, per task (sorted), the data seeds (when clusters), then per drawn data
    seed its run seeds; ``stat(list of (task, data seed index, {variant: value}) rows)``."""
    rng = np.random.default_rng(rng_seed)
    layout = {}
    for t in sorted(runs["task"].unique()):
        cells = []
        for d in sorted(runs.loc[runs["task"] == t, "data_seed"].unique()):
            sub = runs[(runs["task"] == t) & (runs["data_seed"] == d)]
            seeds = sorted(sub["seed"].unique())
            cells.append([{v: float(sub[(sub["seed"] == s) & (sub["variant"] == v)]["score"]
                                    .iloc[0]) for v in variants} for s in seeds])
        layout[t] = cells
    reps = []
    for _ in range(n_boot):
        rows = []
        for t, cells in layout.items():
            picks = rng.integers(0, len(cells), len(cells)) if clusters else range(len(cells))
            for ci, i in enumerate(picks):
                draw = rng.integers(0, len(cells[i]), len(cells[i]))
                rows += [(t, ci, cells[i][j]) for j in draw]
        reps.append(stat(rows))
    return np.array(reps)


def reference_poi(rows, a, b, sign=1.0):
    """rliable's probability of improvement within each (task, data seed), averaged over the
    data seeds of a task, then over tasks, by enumerating every pair."""
    tasks = {}
    for t, d, vals in rows:
        tasks.setdefault(t, {}).setdefault(d, []).append(vals)
    per_task = []
    for cells in tasks.values():
        within = []
        for runs_ in cells.values():
            wins = 0.0
            for x, y in itertools.product(runs_, runs_):
                dx, dy = sign * x[a], sign * y[b]
                wins += 1.0 if dx > dy else 0.5 if dx == dy else 0.0
            within.append(wins / len(runs_) ** 2)
        per_task.append(np.mean(within))
    return float(np.mean(per_task))


# ----------------------------------------------------------------------------- scores
def test_normalized_scores_put_chance_at_0_and_the_ceiling_at_1():
    got = A.normalized_scores([0.5, 0.95, 0.725, 0.1, 1.0], [0.5, 0.5, 0.5, 0.1, 0.1],
                              [0.95, 0.95, 0.95, 1.0, 1.0])
    assert np.allclose(got, [0.0, 1.0, 0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="ceiling must exceed"):
        A.normalized_scores([0.5], 0.5, 0.5)


# ----------------------------------------------------------------------------- IQM
HAND = runs_of({("a", 0, "adamw"): [0.1, 0.2, 0.3, 0.4], ("a", 1, "adamw"): [0.5, 0.6],
                ("b", 0, "adamw"): [0.7, 0.8, 0.9, 1.0],
                ("a", 0, "sin"): [0.2, 0.2, 0.2, 0.2], ("a", 1, "sin"): [0.4, 0.4],
                ("b", 0, "sin"): [0.6, 0.7, 0.8, 0.9]})


def test_iqm_is_the_trimmed_mean_of_every_run_of_every_task():
    t = A.iqm_across_tasks(HAND, "score", n_boot=0).set_index("variant")
    for v in ("adamw", "sin"):
        pooled = HAND.loc[HAND["variant"] == v, "score"]
        assert t.loc[v, "iqm"] == pytest.approx(sps.trim_mean(pooled, 0.25))
        assert t.loc[v, "mean"] == pytest.approx(pooled.mean())
        assert t.loc[v, "n_runs"] == 10 and t.loc[v, "n_tasks"] == 2


@settings(max_examples=60)
@given(st.lists(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=3, max_size=3),
                min_size=1, max_size=25))
def test_the_columnwise_iqm_is_scipys_trimmed_mean_of_the_finite_values(rows):
    x = np.array([[math.nan if v is None else v for v in r] for r in rows], float)
    got = A._trim_mean_columns(x)
    for j in range(3):
        col = x[:, j][np.isfinite(x[:, j])]
        want = sps.trim_mean(col, 0.25) if col.size else math.nan
        assert got[j] == pytest.approx(want, abs=1e-9, nan_ok=True)


@pytest.mark.parametrize("clusters", [False, True])
def test_iqm_interval_equals_the_brute_force_stratified_bootstrap(clusters):
    variants = ["adamw", "sin"]
    got = A.iqm_across_tasks(HAND, "score", variants=variants, clusters=clusters, n_boot=300,
                             rng_seed=7).set_index("variant")
    for v in variants:
        reps = reference_bootstrap(
            HAND, lambda rows, v=v: sps.trim_mean([r[2][v] for r in rows], 0.25), variants,
            clusters, 300, 7)
        lo, hi = np.quantile(reps, [0.025, 0.975])
        assert got.loc[v, "ci_low"] == pytest.approx(lo)
        assert got.loc[v, "ci_high"] == pytest.approx(hi)


def test_resampling_data_seeds_widens_the_interval_when_data_seeds_differ():
    # three data seeds far apart, run seeds within each almost equal
    r = runs_of({("a", d, "adamw"): [0.2 * d + 0.01 * s for s in range(5)] for d in range(3)})
    fixed = A.iqm_across_tasks(r, "score", n_boot=500).iloc[0]
    random = A.iqm_across_tasks(r, "score", n_boot=500, clusters=True).iloc[0]
    assert random["ci_high"] - random["ci_low"] > 5 * (fixed["ci_high"] - fixed["ci_low"])


@settings(max_examples=15)
@given(designs(), st.floats(0.1, 10), st.floats(-5, 5), st.booleans())
def test_iqm_is_affine_equivariant_and_its_interval_ordered(runs, a, b, clusters):
    t0 = A.iqm_across_tasks(runs, "score", n_boot=40, clusters=clusters)
    t1 = A.iqm_across_tasks(runs.assign(score=a * runs["score"] + b), "score", n_boot=40,
                            clusters=clusters)
    for col in ("iqm", "ci_low", "ci_high", "mean"):
        assert np.allclose(t1[col], a * t0[col] + b, atol=1e-9)
    assert (t0["ci_low"] <= t0["ci_high"] + 1e-12).all()
    # the order of the rows plays no part
    t2 = A.iqm_across_tasks(runs.sample(frac=1, random_state=1), "score", n_boot=40,
                            clusters=clusters)
    assert np.allclose(t2[["iqm", "ci_low", "ci_high"]], t0[["iqm", "ci_low", "ci_high"]])


def test_iqm_of_equal_runs_has_a_point_interval():
    r = runs_of({(t, d, "adamw"): [0.4] * 3 for t in "ab" for d in range(2)})
    row = A.iqm_across_tasks(r, "score", n_boot=50, clusters=True).iloc[0]
    assert row["iqm"] == row["ci_low"] == row["ci_high"] == pytest.approx(0.4)


def test_iqm_needs_its_columns_and_some_values():
    with pytest.raises(KeyError, match="data_seed"):
        A.iqm_across_tasks(HAND.drop(columns="data_seed"), "score")
    with pytest.raises(ValueError, match="no finite values"):
        A.iqm_across_tasks(HAND.assign(score=math.nan), "score")
    twice = pd.concat([HAND, HAND.head(1)])  # one run seed twice: two cells mixed up
    for call in (lambda: A.iqm_across_tasks(twice, "score"),
                 lambda: A.poi_across_tasks(twice, "score", "sin", "adamw"),
                 lambda: A.per_task_effects(twice, "score", "sin", "adamw")):
        with pytest.raises(ValueError, match="2 runs share task, data_seed, seed, variant"):
            call()


# ----------------------------------------------------------------------------- POI
def test_poi_equals_the_pairwise_enumeration_and_its_bootstrap():
    got = A.poi_across_tasks(HAND, "score", "sin", "adamw", n_boot=200, rng_seed=3)
    layout = [(t, d, {"sin": s, "adamw": a}) for (t, d), g in HAND.groupby(["task", "data_seed"])
              for s, a in zip(g[g["variant"] == "sin"]["score"], g[g["variant"] == "adamw"]
                              ["score"], strict=True)]
    assert got["poi"] == pytest.approx(reference_poi(layout, "sin", "adamw"))
    # by hand: task a, data seed 0: each 0.2 against [.1 .2 .3 .4] wins 1 + ½ of 4 pairs,
    # 0.375; data seed 1: 0.4 against [.5 .6], 0; task a 0.1875. Task b: [.6 .7 .8 .9]
    # against [.7 .8 .9 1.], (0 + .5 + 1.5 + 2.5)/16 = 0.28125
    assert got["per_task"] == pytest.approx({"a": 0.1875, "b": 0.28125})
    assert got["poi"] == pytest.approx((0.1875 + 0.28125) / 2)
    reps = reference_bootstrap(HAND, lambda r: reference_poi(r, "sin", "adamw"),
                               ["sin", "adamw"], False, 200, 3)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(np.quantile(reps,
                                                                              [0.025, 0.975])))


def test_poi_compares_runs_within_a_data_seed():
    # the data seeds move both variants alike; within each one sin beats adamw on every pair
    vals = {}
    for d in range(3):
        vals[("a", d, "adamw")] = [0.3 * d + 0.01 * s for s in range(4)]
        vals[("a", d, "sin")] = [0.3 * d + 0.05 + 0.01 * s for s in range(4)]
    r = runs_of(vals)
    assert A.poi_across_tasks(r, "score", "sin", "adamw", n_boot=0)["poi"] == 1.0
    pooled = A._mann_whitney(r[r["variant"] == "sin"]["score"].to_numpy(),
                             r[r["variant"] == "adamw"]["score"].to_numpy())
    assert pooled < 0.7  # pooling the data seeds would hide it


@settings(max_examples=30)
@given(designs(), st.booleans())
def test_poi_is_antisymmetric_bounded_and_follows_the_direction(runs, clusters):
    ab = A.poi_across_tasks(runs, "score", "sin", "adamw", n_boot=30, clusters=clusters)
    ba = A.poi_across_tasks(runs, "score", "adamw", "sin", n_boot=0)
    low = A.poi_across_tasks(runs, "score", "sin", "adamw", higher_is_better=False, n_boot=0)
    assert ab["poi"] + ba["poi"] == pytest.approx(1.0)
    assert low["poi"] == pytest.approx(ba["poi"])
    assert 0.0 <= ab["ci_low"] <= ab["ci_high"] <= 1.0
    better = runs.assign(score=np.where(runs["variant"] == "sin", runs["score"] + 2.0,
                                        runs["score"]))
    assert A.poi_across_tasks(better, "score", "sin", "adamw", n_boot=0)["poi"] == 1.0


# ----------------------------------------------------------------------------- per task
def _two_stage(diffs_by_seed: list[list[float]]) -> tuple[float, float, float, float]:
    means = [sum(d) / len(d) for d in diffs_by_seed]
    k = len(means)
    est = sum(means) / k
    se = math.sqrt(sum((m - est) ** 2 for m in means) / (k - 1)) / math.sqrt(k)
    q = sps.t.ppf(0.975, k - 1)
    return est, se, est - q * se, est + q * se


BALANCED = runs_of({
    **{("a", d, "adamw"): [0.50 + 0.1 * d, 0.52 + 0.1 * d, 0.49 + 0.1 * d, 0.51 + 0.1 * d]
       for d in range(3)},
    ("a", 0, "sin"): [0.53, 0.54, 0.50, 0.54],  # diffs .03 .02 .01 .03: mean .0225
    ("a", 1, "sin"): [0.58, 0.61, 0.58, 0.60],  # -.02 -.01 -.01 -.01: -.0125
    ("a", 2, "sin"): [0.76, 0.77, 0.74, 0.76],  # .06 .05 .05 .05: .0525
})


def test_per_task_effect_averages_paired_differences_within_each_data_seed():
    row = A.per_task_effects(BALANCED, "score", "sin", "adamw").iloc[0]
    est, se, lo, hi = _two_stage([[.03, .02, .01, .03], [-.02, -.01, -.01, -.01],
                                  [.06, .05, .05, .05]])
    assert (row["diff"], row["se"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (est, se, lo, hi))
    assert row["p_value"] == pytest.approx(2 * sps.t.sf(abs(est / se), 2))
    assert row["n_data_seeds"] == 3 and row["n_pairs"] == 12
    # ignoring the data seed claims a much narrower interval
    assert row["naive_ci_high"] - row["naive_ci_low"] < 0.3 * (hi - lo)
    assert row["sd_between"] > 2 * row["sd_within"]


def test_per_task_effect_equals_the_reml_mixed_model_on_a_balanced_design():
    row = A.per_task_effects(BALANCED, "score", "sin", "adamw").iloc[0]
    fit = A.mixed_model_effect(BALANCED, "score", "sin", "adamw")
    assert fit["diff"] == pytest.approx(row["diff"], abs=1e-9)
    assert fit["se"] == pytest.approx(row["se"], rel=1e-3)  # REML to its tolerance
    assert fit["sd_between"] == pytest.approx(row["sd_between"], rel=1e-3)


def test_variance_components_match_the_anova_estimator_by_hand():
    groups = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0]), np.array([5.0, 5.0, 8.0, 6.0])]
    sizes = np.array([3, 2, 4])
    grand = np.concatenate(groups).mean()
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    ssb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    n0 = (9 - (sizes ** 2).sum() / 9) / 2
    sd_b, sd_w = A._variance_components(groups)
    assert sd_w == pytest.approx(math.sqrt(ssw / 6))
    assert sd_b == pytest.approx(math.sqrt((ssb / 2 - ssw / 6) / n0))


@settings(max_examples=30)
@given(designs(), st.floats(-0.5, 0.5), st.lists(st.floats(-3, 3), min_size=3, max_size=3))
def test_per_task_effect_is_paired_and_shift_equivariant(runs, c, offsets):
    t0 = A.per_task_effects(runs, "score", "sin", "adamw")
    # an offset per data seed, to both variants alike, changes nothing (the pairing)
    moved = runs.assign(score=runs["score"] + runs["data_seed"].map(dict(enumerate(offsets))))
    t1 = A.per_task_effects(moved, "score", "sin", "adamw")
    cols = ["diff", "ci_low", "ci_high", "sd_between", "sd_within"]
    assert np.allclose(t1[cols], t0[cols], atol=1e-9, equal_nan=True)
    shifted = runs.assign(score=np.where(runs["variant"] == "sin", runs["score"] + c,
                                         runs["score"]))
    t2 = A.per_task_effects(shifted, "score", "sin", "adamw")
    for col in ("diff", "ci_low", "ci_high", "naive_ci_low", "naive_ci_high"):
        assert np.allclose(t2[col], t0[col] + c, atol=1e-9, equal_nan=True)
    assert (t0["n_pairs"] >= t0["n_data_seeds"]).all()


# ----------------------------------------------------------------------------- profiles
def tte_runs(times: dict[tuple[str, int, str], list[float | None]]) -> pd.DataFrame:
    """Runs with epochs to target (None: never reached)."""
    rows = [dict(task=t, data_seed=d, variant=v, seed=s,
                 epochs=math.nan if x is None else x, reached=x is not None)
            for (t, d, v), xs in times.items() for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


def test_time_to_target_is_the_median_with_never_reached_as_infinite():
    r = tte_runs({("a", 0, "adamw"): [3, 5, 4], ("a", 0, "sin"): [2, None, None],
                  ("a", 0, "cos"): [6, None, 2, 4]})
    t = A.time_to_target(r, "epochs", "reached").set_index("variant")
    assert t.loc["adamw", "time"] == 4 and t.loc["adamw", "n_reached"] == 3
    assert math.isinf(t.loc["sin", "time"])
    assert t.loc["cos", "time"] == 5  # median of 2, 4, 6, ∞


def reference_profile(times: pd.DataFrame, taus, weight_by_task=True):
    """ρ_s(τ) by its definition: each problem's ratio and weight, in loops, then the
    weighted share of problems with ratio ≤ τ at every τ."""
    problems = sorted(times.groupby(["task", "data_seed"]).groups)
    n_tasks = times["task"].nunique()
    out = {}
    for v in times["variant"].unique():
        ratios, weights = [], []
        for (t, d) in problems:
            here = times[(times["task"] == t) & (times["data_seed"] == d)]
            best = here["time"].min()
            mine = here[here["variant"] == v]["time"].iloc[0]
            ratios.append(mine / best if math.isfinite(mine) and math.isfinite(best)
                          else math.inf)
            weights.append(1 / (n_tasks * times[times["task"] == t]["data_seed"].nunique())
                           if weight_by_task else 1 / len(problems))
        r, w = np.array(ratios), np.array(weights)
        out[v] = (w[None, :] * (r[None, :] <= np.asarray(taus)[:, None])).sum(axis=1)
    return out


_time = st.one_of(st.none(), st.integers(1, 12))


@st.composite
def time_designs(draw):
    vals = {}
    for t in range(draw(st.integers(1, 3))):
        for d in range(draw(st.integers(1, 3))):
            for v in ("adamw", "sin", "cos"):
                vals[(f"t{t}", d, v)] = draw(st.lists(_time, min_size=3, max_size=3))
    return tte_runs(vals)


@settings(max_examples=20)
@given(time_designs(), st.booleans())
def test_performance_profile_and_score_equal_their_definitions(runs, by_task):
    times = A.time_to_target(runs, "epochs", "reached")
    w = "task" if by_task else None
    prof = A.performance_profiles(times, weight_by=w)
    taus = np.linspace(1, 4, 601)
    ref = reference_profile(times, taus, by_task)
    for v, sub in prof.groupby("variant"):
        sub = sub.sort_values("tau")
        # the step table, read right-continuously, is ρ at every τ
        idx = np.searchsorted(sub["tau"].to_numpy(), taus, side="right") - 1
        assert np.allclose(sub["rho"].to_numpy()[idx], ref[v])
        assert np.all(np.diff(sub["rho"].to_numpy()) >= -1e-12) and sub["rho"].max() <= 1 + 1e-9
    scores = A.profile_scores(times, weight_by=w).set_index("variant")
    for v in ref:  # the exact area against a fine Riemann sum of the definition
        fine = np.linspace(1, 4, 30001)
        area = reference_profile(times, fine, by_task)[v].mean()
        assert scores.loc[v, "score"] == pytest.approx(area, abs=2e-3)
        assert 0.0 <= scores.loc[v, "fastest"] <= scores.loc[v, "solved"] <= 1.0 + 1e-12


def test_profile_scores_by_hand():
    # two tasks, task a with two data seeds (weight 1/4 each), task b with one (1/2)
    r = tte_runs({("a", 0, "adamw"): [4], ("a", 0, "sin"): [2],
                  ("a", 1, "adamw"): [3], ("a", 1, "sin"): [6],
                  ("b", 0, "adamw"): [5], ("b", 0, "sin"): [None]})
    s = A.profile_scores(A.time_to_target(r, "epochs", "reached")).set_index("variant")
    # adamw ratios 2, 1, 1 → (¼·2 + ¼·3 + ½·3)/3; sin ratios 1, 2, ∞ → (¼·3 + ¼·2)/3
    assert s.loc["adamw", "score"] == pytest.approx((0.25 * 2 + 0.25 * 3 + 0.5 * 3) / 3)
    assert s.loc["sin", "score"] == pytest.approx((0.25 * 3 + 0.25 * 2) / 3)
    assert s.loc["sin", "solved"] == 0.5 and s.loc["adamw", "fastest"] == 0.75


@settings(max_examples=25)
@given(time_designs(), st.integers(2, 5))
def test_profiles_are_invariant_to_the_unit_of_time(runs, c):
    a = A.profile_scores(A.time_to_target(runs, "epochs", "reached"))
    b = A.profile_scores(A.time_to_target(runs.assign(epochs=c * runs["epochs"]), "epochs",
                                          "reached"))
    assert np.allclose(a[["score", "solved", "fastest"]], b[["score", "solved", "fastest"]])


@settings(max_examples=60)
@given(st.lists(st.lists(st.sampled_from([1.0, 2.0, 3.0, 7.0, math.inf, math.nan]), min_size=2,
                         max_size=2), min_size=1, max_size=9))
def test_the_columnwise_median_is_numpys_nanmedian(rows):
    import warnings

    x = np.array(rows, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(x, axis=0)
    assert np.array_equal(A._median_columns(x), want, equal_nan=True)


def test_profile_score_interval_brackets_the_score_and_collapses_without_spread():
    r = tte_runs({("a", d, v): [t] * 4 for d in range(2)
                  for v, t in (("adamw", 4), ("sin", 6))})
    ci = A.profile_score_ci(r, "epochs", "reached", n_boot=50).set_index("variant")
    assert ci.loc["adamw", "score"] == ci.loc["adamw", "ci_low"] == 1.0
    assert ci.loc["sin", "ci_low"] == ci.loc["sin", "ci_high"] == pytest.approx(
        (4 - 1.5) / 3)
    noisy = tte_runs({("a", d, v): [t + s for s in range(4)] for d in range(2)
                      for v, t in (("adamw", 3), ("sin", 4))})
    ci = A.profile_score_ci(noisy, "epochs", "reached", n_boot=200).set_index("variant")
    assert (ci["ci_low"] <= ci["score"] + 1e-12).all()
    assert (ci["score"] <= ci["ci_high"] + 1e-12).all()
