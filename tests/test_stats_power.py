"""Power by design: the TOST's exact power and sample size, the log-rank's power, and the
achieved TOST power column of ``stats.csv`` (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from ablations import stats as S


def _quad_tost_power(margin, sd, n, delta=0.0, alpha=0.05):
    """The same integral by scipy's adaptive quadrature (an independent reference for
    moderate n, where quad finds the chi density's peak)."""
    df = n - 1
    t = sps.t.ppf(1 - alpha, df)
    r = math.sqrt(n) / sd
    s_max = margin * r * math.sqrt(df) / t

    def f(s):
        c = t * s / math.sqrt(df)
        inside = sps.norm.cdf((margin - delta) * r - c) - sps.norm.cdf(c - (margin + delta) * r)
        return sps.chi.pdf(s, df) * max(0.0, inside)

    return integrate.quad(f, 0, s_max, limit=400, epsabs=1e-13,
                          points=[min(math.sqrt(df), s_max / 2)])[0]


def test_tost_power_is_the_issue_figure_at_the_pilot_spread():
    # issue 16: at sd 0.0217 and ±1 pp, 20 paired seeds give power 0.28; about 45 give 0.8
    assert S.tost_power(0.01, 0.0217, 20) == pytest.approx(0.2794, abs=1e-4)
    assert S.tost_seeds_needed(0.01, 0.0217) == 42.0
    assert S.tost_power(0.01, 0.0217, 41) < 0.8 <= S.tost_power(0.01, 0.0217, 42)
    assert S.tost_power(0.01, 0.0217, 45) == pytest.approx(0.838, abs=1e-3)


@pytest.mark.parametrize("n", [2, 3, 5, 12, 20, 42, 100])
@pytest.mark.parametrize("sd, delta", [(0.01, 0.0), (0.0217, 0.0), (0.01, 0.004),
                                       (0.005, -0.008), (0.05, 0.002)])
def test_tost_power_equals_adaptive_quadrature(n, sd, delta):
    assert S.tost_power(0.01, sd, n, delta) == pytest.approx(
        _quad_tost_power(0.01, sd, n, delta), abs=1e-9)


def test_tost_power_agrees_with_monte_carlo_of_statsmodels_ttost():
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(7)
    n, reps, hits = 12, 3000, 0
    for _ in range(reps):
        d = rng.normal(0.004, 0.01, n)
        hits += ttost_paired(d, np.zeros(n), -0.01, 0.01)[0] < 0.05
    want = S.tost_power(0.01, 0.01, n, 0.004)
    assert abs(hits / reps - want) < 4 * math.sqrt(want * (1 - want) / reps)


def test_tost_power_edges_and_monotonicity():
    assert math.isnan(S.tost_power(0.01, 0.02, 1))
    assert math.isnan(S.tost_power(0.01, math.nan, 10))
    assert S.tost_power(0.01, 0.0, 5) == 1.0 and S.tost_power(0.01, 0.0, 5, 0.02) == 0.0
    with pytest.raises(ValueError, match="margin must be positive"):
        S.tost_power(0.0, 0.01, 10)
    powers = [S.tost_power(0.01, 0.02, n) for n in (5, 10, 20, 40, 80, 5000)]
    assert powers == sorted(powers) and powers[-1] == pytest.approx(1.0, abs=1e-9)
    # symmetric in the sign of the true difference; falls as it nears the margin
    assert S.tost_power(0.01, 0.01, 30, 0.003) == pytest.approx(
        S.tost_power(0.01, 0.01, 30, -0.003), abs=1e-12)
    assert S.tost_power(0.01, 0.01, 30, 0.006) < S.tost_power(0.01, 0.01, 30, 0.003)


def test_tost_seeds_needed_is_the_smallest_integer_and_its_edges():
    for sd, power, delta in ((0.0217, 0.9, 0.0), (0.01, 0.8, 0.004), (0.000373, 0.8, 0.0)):
        n = int(S.tost_seeds_needed(0.01, sd, power, delta))
        assert S.tost_power(0.01, sd, n, delta) >= power
        assert n == 2 or S.tost_power(0.01, sd, n - 1, delta) < power
    assert S.tost_seeds_needed(0.01, 0.01, true_diff=0.01) == math.inf
    assert S.tost_seeds_needed(0.01, 0.0) == 2.0
    assert math.isnan(S.tost_seeds_needed(0.01, math.nan))


def test_logrank_power_is_schoenfelds_formula():
    # 4·(z_0.975 + z_0.8)² / log(2)² ≈ 65.3 events detect a hazard ratio of 2 at 80%
    events = 4 * (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) ** 2 / math.log(2) ** 2
    assert S.logrank_power(2.0, events) == pytest.approx(0.8, abs=1e-12)
    assert S.logrank_power(0.5, events) == pytest.approx(0.8, abs=1e-12)
    assert S.logrank_power(1.0, 100) == pytest.approx(0.025)
    assert math.isnan(S.logrank_power(math.nan, 10)) and math.isnan(S.logrank_power(2.0, -1))


def test_stats_table_carries_the_achieved_tost_power():
    rng = np.random.default_rng(0)
    base = 0.9 + rng.normal(0, 0.01, 20)
    rows = [dict(variant=v, attention="quantum", lr=1e-3, seed=s, final_test_acc=x,
                 epochs_to_90=5.0 + s % 3)
            for v, vals in (("adamw", base), ("sin-l0.5", base + rng.normal(0, 0.02, 20)))
            for s, x in enumerate(vals)]
    import pandas as pd

    table = S.compare_all(pd.DataFrame(rows), ["final_test_acc", "epochs_to_90"],
                          baselines=["adamw"], tost_margins={"final_test_acc": 0.01},
                          n_boot=0)
    acc = table[table.metric == "final_test_acc"].iloc[0]
    assert acc["tost_power"] == pytest.approx(S.tost_power(0.01, acc["sd_diff"], 20), abs=1e-12)
    assert table[table.metric == "epochs_to_90"]["tost_power"].isna().all()  # no margin
