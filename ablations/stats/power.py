"""Power and sample size of the two-sided paired t test, on statsmodels' ``TTestPower``.

The paired t test of n seeds is the one-sample t test of the n paired differences, so its
power at standardised effect d_z = mean difference / sd of the differences is

    power(d_z, n) = P(T' > t_crit) + P(T' < −t_crit),   T' ~ noncentral t(n − 1, d_z·√n),

with t_crit the (1 − α/2) quantile of Student's t with n − 1 degrees of freedom (Cohen 1988,
ch. 2). :func:`paired_t_power` is ``statsmodels.stats.power.TTestPower().power``; the
sample size and the detectable effect invert it.

The power of the paired TOST equivalence test at margin ±m (Schuirmann 1987; Lakens 2017)
is exact as one integral over the sample sd (:func:`tost_power`); :func:`tost_seeds_needed`
inverts it over the integers. The log-rank test's power is Schoenfeld's (1981) normal
approximation in the number of events (:func:`logrank_power`).

References
----------
- Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.
- statsmodels: ``statsmodels.stats.power.TTestPower`` (``ttest_power``).
- Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the power
  approach for assessing the equivalence of average bioavailability. *J. Pharmacokinet.
  Biopharm.* 15(6).
- Lakens, D. (2017). Equivalence tests. *Soc. Psychol. Personal. Sci.* 8(4).
- Schoenfeld, D. (1981). The asymptotic properties of nonparametric tests for comparing
  survival distributions. *Biometrika* 68(1).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

__all__ = ["paired_t_power", "seeds_needed", "min_detectable_effect", "power_to_detect",
           "tost_power", "tost_seeds_needed", "logrank_power"]


def _check_levels(alpha: float, power: float) -> None:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1); got alpha={alpha}, power={power}")


def _power_by_integration(d: float, n: int, alpha: float) -> float:
    """The power as a one-dimensional integral, for where the noncentral t CDF gives NaN.

    With S = √χ²_{n−1} and T' = (Z + d√n)/(S/√(n−1)), condition on S:
    power = ∫ f_χ(s) [Φ̄(c(s) − d√n) + Φ(−c(s) − d√n)] ds with c(s) = t_crit·s/√(n−1).
    """
    from scipy import integrate

    df = n - 1
    tcrit = float(sps.t.ppf(1 - alpha / 2, df))
    nc = abs(d) * math.sqrt(n)

    def integrand(s: float) -> float:
        c = tcrit * s / math.sqrt(df)
        return float(sps.chi.pdf(s, df) * (sps.norm.sf(c - nc) + sps.norm.cdf(-c - nc)))

    value, _ = integrate.quad(integrand, 0.0, np.inf, limit=200)
    return float(value)


def paired_t_power(effect_size: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired (one-sample) t test at standardised effect ``effect_size``.

    ``statsmodels.stats.power.TTestPower().power(|d_z|, n, alpha)`` (module docstring for
    the formula), clipped to [0, 1]. Adapter: statsmodels' noncentral t CDF (``nctdtr``)
    returns NaN far in the tail (e.g. n = 3, d_z = 8.4, where the power is 0.99997); there
    the same probability is integrated numerically instead.

    Args:
        effect_size: d_z = mean difference / sd of the differences (its sign is ignored).
        n: number of pairs; NaN below 2.
        alpha: two-sided significance level.

    Returns:
        The power in [0, 1]; NaN for n < 2 or a non-finite ``effect_size``.
    """
    if n < 2 or effect_size is None or math.isnan(effect_size):
        return math.nan
    from statsmodels.stats.power import TTestPower

    with np.errstate(all="ignore"):
        power = float(TTestPower().power(effect_size=abs(effect_size), nobs=n, alpha=alpha))
    if not np.isfinite(power):
        power = _power_by_integration(effect_size, n, alpha)
    return min(1.0, max(0.0, power))


def seeds_needed(effect: float, sd_diff: float, alpha: float = 0.05,
                 power: float = 0.8, max_n: int = 10_000_000) -> float:
    """Smallest number of paired seeds giving ``power`` to detect ``effect`` (two-sided).

    The smallest integer n ≥ 2 with :func:`paired_t_power` (|effect|/sd_diff, n) ≥ power,
    searched exactly over the integers from the normal approximation n ≈ ((z_{1−α/2} +
    z_power)/d)². statsmodels' ``TTestPower().solve_power(nobs=None)`` returns the
    continuous root, whose ceiling this is (d = 0.5, α = 0.05, 80 %: 33.4 → 34 seeds); its
    root finder is only accurate to about 1e-6, which could put the ceiling on the wrong
    integer next to a whole number, hence the integer search on the power itself.

    Args:
        effect: the difference to detect, in metric units (its sign is ignored).
        sd_diff: standard deviation of the paired (per-seed) differences.
        alpha: two-sided significance level of the paired t test.
        power: target power, e.g. 0.8.
        max_n: search limit; beyond it ``inf`` is returned.

    Returns:
        An integer-valued float n ≥ 2 (so that NaN and inf fit in a table column): ``inf``
        when ``effect`` is 0 (or needs more than ``max_n`` seeds), NaN when ``effect`` or
        ``sd_diff`` is NaN, and 2 (the smallest n a t test allows) when ``sd_diff`` is 0.
    """
    _check_levels(alpha, power)
    if effect is None or sd_diff is None or not np.isfinite(effect) or not np.isfinite(sd_diff):
        return math.nan
    if sd_diff < 0:
        raise ValueError(f"sd_diff must be non-negative; got {sd_diff}")
    if effect == 0:
        return math.inf
    if sd_diff == 0:
        return 2.0
    d = abs(effect) / sd_diff
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, int(math.ceil((z / d) ** 2)))
    if n > max_n:
        return math.inf
    # The normal approximation underestimates n slightly; walk to the exact integer.
    while n <= max_n and paired_t_power(d, n, alpha) < power:
        n += 1 if n < 1000 else max(1, n // 1000)
    if n > max_n:
        return math.inf
    while n > 2 and paired_t_power(d, n - 1, alpha) >= power:
        n -= 1
    return float(n)


def min_detectable_effect(n: int, sd_diff: float, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest |mean difference| that ``n`` paired seeds detect with ``power`` (two-sided).

    Solves :func:`paired_t_power` (d, n) = power for d by Brent's method (``xtol`` 1e-10;
    ``TTestPower().solve_power(effect_size=None)`` does the same with a looser tolerance,
    about 1e-6 relative) and returns d·sd_diff, in metric units.

    Args:
        n: number of paired seeds.
        sd_diff: standard deviation of the paired differences.
        alpha: two-sided significance level.
        power: target power.

    Returns:
        NaN for n < 2 or a non-finite ``sd_diff``; 0 when ``sd_diff`` is 0; ``inf`` when no
        d below 1e6 reaches the power.
    """
    _check_levels(alpha, power)
    if n is None or not np.isfinite(n) or n < 2 or sd_diff is None or not np.isfinite(sd_diff):
        return math.nan
    if sd_diff == 0:
        return 0.0
    return float(_detectable_d(int(n), float(alpha), float(power)) * sd_diff)


@functools.lru_cache(maxsize=256)
def _detectable_d(n: int, alpha: float, power: float) -> float:
    """The standardised effect d_z that n pairs detect with ``power``: a function of n, α
    and the power alone, so one solve serves every comparison with that many seeds (a grid
    of many cells asks for the same few n hundreds of times)."""
    hi = 1.0
    while paired_t_power(hi, n, alpha) < power:
        hi *= 2.0
        if hi > 1e6:
            return math.inf
    return float(optimize.brentq(lambda e: paired_t_power(e, n, alpha) - power, 0.0, hi,
                                 xtol=1e-10))


def power_to_detect(effect: float | None, sd_diff: float, n: int,
                    alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test of ``n`` pairs to detect ``effect`` (metric
    units) when the paired differences have standard deviation ``sd_diff``.

    :func:`paired_t_power` at d_z = |effect|/sd_diff (the ``power`` column of
    ``stats.csv``: the paper's claimed effect at the observed spread). Conventions: NaN
    without an effect (None or NaN), with n < 2 or a non-finite ``sd_diff``; when
    ``sd_diff`` is 0 (all differences equal) the power is 1 for a non-zero effect; a zero
    effect has power alpha (the test's size).

    Args:
        effect: the difference to detect, metric units (sign ignored), or None.
        sd_diff: standard deviation of the paired differences.
        n: number of pairs.
        alpha: two-sided significance level.
    """
    if effect is None or not np.isfinite(effect) or n is None or n < 2 \
            or sd_diff is None or not np.isfinite(sd_diff):
        return math.nan
    if effect == 0:
        return float(alpha)
    if sd_diff == 0:
        return 1.0
    return paired_t_power(abs(effect) / sd_diff, int(n), alpha)


def tost_power(margin: float, sd_diff: float, n: int, true_diff: float = 0.0,
               alpha: float = 0.05) -> float:
    """Power of the paired TOST equivalence test at ±``margin`` (both one-sided tests at
    level ``alpha``, as :func:`ablations.stats.paired_comparison` runs it), exact.

    With n pairs of true mean difference δ and sd σ, equivalence is declared when the
    (1 − 2α) t interval d̄ ± t_{1−α, n−1}·s/√n lies inside (−m, m). The sample mean and sd are
    independent, s = σ·S/√(n − 1) with S ~ χ_{n−1}, so conditioning on S

        power = ∫ f_χ(S) · max(0, Φ(√n(m − δ)/σ − c) − Φ(−√n(m + δ)/σ + c)) dS,

    c = t_{1−α, n−1}·S/√(n − 1), over the S where the interval can fit (c < √n·m/σ). This is
    the exact power (Owen's Q in closed form; e.g. TOSTER's ``power_t_TOST``, PASS), not the
    usual normal approximation; Monte Carlo with ``ttost_paired`` agrees (tests).

    Args:
        margin: the equivalence margin m > 0, metric units.
        sd_diff: the sd σ of the paired differences.
        n: number of pairs.
        true_diff: the true mean difference δ at which the power is wanted (0: the power to
            show equivalence when there is no difference, the usual design value).
        alpha: level of each one-sided test.

    Returns:
        The power in [0, 1]; NaN for n < 2 or a non-finite input; when ``sd_diff`` is 0,
        1 if |δ| < m else 0.
    """
    values = (margin, sd_diff, true_diff)
    if n is None or not np.isfinite(n) or n < 2 or any(
            v is None or not np.isfinite(v) for v in values):
        return math.nan
    if margin <= 0:
        raise ValueError(f"margin must be positive; got {margin}")
    if sd_diff < 0:
        raise ValueError(f"sd_diff must be non-negative; got {sd_diff}")
    if sd_diff == 0:
        return 1.0 if abs(true_diff) < margin else 0.0
    from scipy import special

    n = int(n)
    df = n - 1
    tcrit = float(sps.t.ppf(1 - alpha, df))
    root = math.sqrt(n) / sd_diff
    upper, lower = (margin - true_diff) * root, (margin + true_diff) * root
    s_max = margin * root * math.sqrt(df) / tcrit  # beyond it the interval is wider than 2m
    # S ~ χ_df has its mass within ±10 of its mode √(df − 1) (sd below 0.75): Gauss–Legendre
    # on 16 panels of that range, cut at s_max; the integrand is smooth there (it reaches 0
    # at s_max itself), so this is exact to ~1e-12 (tests: against scipy's quad)
    mode = math.sqrt(max(df - 1, 0))
    lo, hi = max(0.0, mode - 10.0), min(s_max, mode + 10.0)
    if hi <= lo:
        return 0.0
    x, w = _GAUSS_LEGENDRE
    edges = np.linspace(lo, hi, 17)
    half = np.diff(edges)[:, None] / 2
    s = (edges[:-1, None] + half * (x + 1)).ravel()
    weights = (half * w).ravel()
    c = tcrit * s / math.sqrt(df)
    inside = np.maximum(0.0, special.ndtr(upper - c) - special.ndtr(c - lower))
    # the χ_df density, in logs: s^(df−1) e^(−s²/2) / (2^(df/2 − 1) Γ(df/2))
    with np.errstate(divide="ignore"):
        log_pdf = ((df - 1) * np.log(s) - s * s / 2 - (df / 2 - 1) * math.log(2)
                   - special.gammaln(df / 2))
    value = float(np.sum(weights * np.exp(log_pdf) * inside))
    return min(1.0, max(0.0, value))


#: 32-point Gauss–Legendre nodes and weights on [−1, 1] (:func:`tost_power`)
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(32)


def tost_seeds_needed(margin: float, sd_diff: float, power: float = 0.8,
                      true_diff: float = 0.0, alpha: float = 0.05,
                      max_n: int = 100_000) -> float:
    """Smallest number of paired seeds whose TOST at ±``margin`` has ``power``
    (:func:`tost_power` at ``true_diff``), by an integer search from the normal
    approximation n ≈ ((z_{1−α} + z_{1−β/2})·σ/m)² (δ = 0; Julious 2004).

    At the classifier's pilot spread (σ = 0.0217, m = 0.01, δ = 0, α = 0.05): 20 seeds give
    power 0.28 and 42 seeds 0.80.

    Returns:
        An integer-valued float ≥ 2; ``inf`` when |δ| ≥ m (no n suffices) or more than
        ``max_n`` are needed; NaN for a non-finite input; 2 when ``sd_diff`` is 0.
    """
    _check_levels(alpha, power)
    values = (margin, sd_diff, true_diff)
    if any(v is None or not np.isfinite(v) for v in values):
        return math.nan
    if abs(true_diff) >= margin:
        return math.inf
    if sd_diff == 0:
        return 2.0
    z = sps.norm.ppf(1 - alpha) + sps.norm.ppf(1 - (1 - power) / 2)
    n = max(2, int(math.ceil((z * sd_diff / (margin - abs(true_diff))) ** 2)) - 2)
    while n <= max_n and tost_power(margin, sd_diff, n, true_diff, alpha) < power:
        n += 1 if n < 1000 else max(1, n // 1000)
    if n > max_n:
        return math.inf
    while n > 2 and tost_power(margin, sd_diff, n - 1, true_diff, alpha) >= power:
        n -= 1
    return float(n)


def logrank_power(hazard_ratio: float, events: float, alpha: float = 0.05,
                  share: float = 0.5) -> float:
    """Power of the two-sided log-rank test to detect ``hazard_ratio`` with ``events``
    events in all (Schoenfeld 1981): Φ(√(events·p(1 − p))·|log HR| − z_{1−α/2}), p the
    share of subjects in one group (0.5: equal groups), ignoring the far tail.

    Returns:
        The power in [0, 1]; NaN for a non-finite or non-positive hazard ratio or a negative
        number of events; ``alpha / 2`` at a hazard ratio of 1 (the test's size on one side).
    """
    if hazard_ratio is None or events is None or not np.isfinite(hazard_ratio) \
            or not np.isfinite(events) or hazard_ratio <= 0 or events < 0:
        return math.nan
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1); got {share}")
    z = math.sqrt(events * share * (1 - share)) * abs(math.log(hazard_ratio))
    return float(sps.norm.cdf(z - sps.norm.ppf(1 - alpha / 2)))
