"""Time to target (claims C2 and C5): Kaplan–Meier curves and medians, log-rank test, and
the paper's mean among runs that reached the target — on statsmodels and scipy.

Runs that never reach the target are right-censored, not dropped (:func:`time_to_event`).
The Kaplan–Meier estimate and its Greenwood standard error are statsmodels'
``SurvfuncRight``; the log-rank statistic is ``statsmodels.duration.survfunc.survdiff``;
Welch's test is ``scipy.stats.ttest_ind(equal_var=False)``. Our conventions sit on top:

- the pointwise log-log ("log(−log)") band of R's ``survfit(conf.type="log-log")``
  (statsmodels offers only simultaneous bands);
- the median rule :data:`KM_MEDIAN_RULE` (R's, where statsmodels' ``quantile`` follows SAS:
  the first time S < ½ strictly, no midpoint);
- the log-rank p value as the χ² survival function (``survdiff`` returns 1 − CDF, which
  loses the relative precision of small p values).

References
----------
- Kaplan, E. L. & Meier, P. (1958). Nonparametric estimation from incomplete observations.
  *JASA* 53; Greenwood, M. (1926); Kalbfleisch, J. D. & Prentice, R. L. (2002), *The
  Statistical Analysis of Failure Time Data*, 2nd ed. (log-log interval).
- Brookmeyer, R. & Crowley, J. (1982). A confidence interval for the median survival time.
  *Biometrics* 38.
- Mantel, N. (1966). Evaluation of survival data and two new rank order statistics arising
  in its consideration. *Cancer Chemother. Rep.* 50 (log-rank test).
- Welch, B. L. (1947). The generalization of "Student's" problem when several different
  population variances are involved. *Biometrika* 34.
- Freireich, E. J. et al. (1963). The effect of 6-mercaptopurine on the duration of
  steroid-induced remissions in acute leukemia. *Blood* 21 (the test data set).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ._common import as_bool, as_float, iter_groups, select_cell

__all__ = ["KM_MEDIAN_RULE", "time_to_event", "kaplan_meier", "km_median", "logrank_test",
           "mean_time_among_reached", "time_to_target", "kaplan_meier_by_group",
           "difficulty_selection"]

#: The median rule of :func:`km_median` in one sentence (printed by the reports).
KM_MEDIAN_RULE = ("median time to target: the first time the Kaplan–Meier curve is at or "
                  "below ½, or the midpoint of the interval where it equals ½ exactly (as R's "
                  "survfit), with a Brookmeyer–Crowley CI from the log-log band")

_KM_COLUMNS = ["time", "survival", "ci_low", "ci_high", "std_err", "n_at_risk", "n_events",
               "n_censored"]

# S(t) within this of ½ counts as ½ (products of fractions such as (1 − 1/4)(1 − 1/3) are
# not exact in floating point).
_HALF_TOL = 1e-12


def time_to_event(runs: pd.DataFrame, *, time_col: str = "epochs_to_90",
                  event_col: str | None = "reached_90",
                  horizon: float | str) -> tuple[np.ndarray, np.ndarray]:
    """Times and event indicators for survival analysis, runs that never reached kept.

    A run with the event (``event_col`` true, or, when ``event_col`` is None or absent, a
    finite ``time_col``) contributes its time; a run without it is right-censored at
    ``horizon``: a number (e.g. the number of epochs every run trained for) or the name of a
    column holding each run's own censoring time (e.g. the run's total seconds, for
    ``sec_to_target``).

    Args:
        runs: the runs table (rows of one group).
        time_col: time-to-target column (missing when never reached).
        event_col: reached column; None (or absent) to treat a finite time as the event.
        horizon: censoring time, a number or a column name.

    Returns:
        ``(times, events)`` as float and bool arrays.

    Raises:
        ValueError: an event without a finite time, an event after a scalar horizon, or a
            missing censoring time.
    """
    if time_col not in runs.columns:
        raise KeyError(f"column {time_col!r} missing from runs")
    t = as_float(runs[time_col])
    if event_col is not None and event_col in runs.columns:
        e = as_bool(runs[event_col])
    else:
        e = np.isfinite(t)
    if np.any(e & ~np.isfinite(t)):
        raise ValueError(f"runs with {event_col}=True but no finite {time_col}")
    if isinstance(horizon, str):
        c = as_float(runs[horizon])
    else:
        c = np.full(len(t), float(horizon))
        if np.any(e & (t > float(horizon))):
            raise ValueError(f"an event time exceeds the horizon {horizon}")
    times = np.where(e, t, c)
    if not np.all(np.isfinite(times)):
        raise ValueError("a censored run has no finite censoring time (horizon)")
    return times, e


def _times_events(times, events) -> tuple[np.ndarray, np.ndarray]:
    """Validated float times and bool events of one sample."""
    t = as_float(times)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape:
        raise ValueError(f"times and events differ in length: {t.shape} vs {e.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite (censor non-reaching runs at the horizon)")
    if np.any(t < 0):
        raise ValueError("times must be non-negative")
    return t, e


def kaplan_meier(times, events, *, alpha: float = 0.05) -> pd.DataFrame:
    """Kaplan–Meier estimate of the survival function with a log-log confidence band.

    Here "survival" is the fraction of runs that have *not yet* reached the target. At each
    distinct time t (event or censoring) with n_t runs at risk (time ≥ t) and d_t events,
    S(t) = Π_{s ≤ t} (1 − d_s / n_s). A run censored at t counts as at risk at t. S and its
    Greenwood standard error S·√Var[log S], Var[log S(t)] = Σ_{s ≤ t} d_s / (n_s (n_s − d_s)),
    are statsmodels' ``SurvfuncRight`` (which computes S as exp Σ log(1 − d/n)), carried
    forward from each event time over the censoring times after it.

    The log-log interval (Kalbfleisch & Prentice; R ``survfit(conf.type="log-log")``) is
    S(t)^{exp(±z·σ(t))} with σ(t) = √Var[log S(t)] / |log S(t)|; it stays in [0, 1]. The band
    is [1, 1] before the first event and NaN once S(t) = 0.

    Args:
        times: event or censoring times (finite, ≥ 0).
        events: True for an event, False for censoring.
        alpha: two-sided level, 0.05 for a 95 % band.

    Returns:
        DataFrame with columns time, survival, ci_low, ci_high, then std_err (Greenwood SE of
        S), n_at_risk, n_events, n_censored; the first row is time 0 with survival 1 (or the
        estimate at 0 when events happen at time 0).
    """
    t, e = _times_events(times, events)
    z = float(sps.norm.ppf(1 - alpha / 2))
    uniq, where = np.unique(t, return_inverse=True)
    n_events = np.bincount(where, weights=e, minlength=uniq.size).astype(int)
    n_censored = np.bincount(where, minlength=uniq.size) - n_events
    n_at_risk = t.size - np.searchsorted(np.sort(t), uniq, side="left")
    if e.any():
        from statsmodels.duration.survfunc import SurvfuncRight

        fit = SurvfuncRight(t, e.astype(float))
        ev_time, ev_s, ev_se = fit.surv_times, fit.surv_prob, fit.surv_prob_se
    else:
        ev_time = ev_s = ev_se = np.empty(0)
    # The step function at every distinct time: the estimate of the last event time ≤ t.
    last = np.searchsorted(ev_time, uniq, side="right") - 1
    before_first = last < 0
    s = np.where(before_first, 1.0, ev_s[np.maximum(last, 0)] if ev_s.size else 1.0)
    se = np.where(before_first, 0.0, ev_se[np.maximum(last, 0)] if ev_se.size else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = se / (s * np.abs(np.log(s)))
        lo, hi = s ** np.exp(z * sigma), s ** np.exp(-z * sigma)
    flat = se == 0.0  # no event yet: no uncertainty
    lo, hi = np.where(flat, s, lo), np.where(flat, s, hi)
    gone = s <= 0.0  # every run reached: the band is undefined
    lo, hi, se = (np.where(gone, np.nan, a) for a in (lo, hi, se))
    table = pd.DataFrame(dict(time=uniq, survival=s, ci_low=lo, ci_high=hi, std_err=se,
                              n_at_risk=n_at_risk, n_events=n_events, n_censored=n_censored),
                         columns=_KM_COLUMNS)
    if uniq.size == 0 or uniq[0] > 0.0:
        start = pd.DataFrame([dict(time=0.0, survival=1.0, ci_low=1.0, ci_high=1.0,
                                   std_err=0.0, n_at_risk=int(t.size), n_events=0,
                                   n_censored=0)], columns=_KM_COLUMNS)
        table = pd.concat([start, table], ignore_index=True) if uniq.size else start
    return table


def _first_time_below(time: np.ndarray, curve: np.ndarray, level: float = 0.5) -> float:
    """Smallest time at which the step curve is ≤ level (within the tolerance), else NaN."""
    hit = np.flatnonzero(np.isfinite(curve) & (curve <= level + _HALF_TOL))
    return float(time[hit[0]]) if hit.size else math.nan


def km_median(times, events, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Median time to target from the Kaplan–Meier curve, with a (1−alpha) CI.

    The rule (:data:`KM_MEDIAN_RULE`): the median is the smallest time with S(t) ≤ ½; when S
    equals ½ exactly on an interval it is the midpoint of that interval (up to the next
    event time), as in R's ``survfit``. (statsmodels' ``SurvfuncRight.quantile(0.5)`` takes
    the first time with S < ½, as SAS; the two agree unless S hits ½ exactly.) The interval
    follows Brookmeyer & Crowley (1982) by inverting the log-log band of
    :func:`kaplan_meier`: the lower limit is the first time the band's lower curve reaches
    ≤ ½, the upper limit the first time its upper curve does. This is
    ``SurvfuncRight.quantile_ci(0.5, method="cloglog")`` with two conventions of R's: an
    upper limit the data never reach is NaN (statsmodels: inf), and where S drops to 0 the
    band counts as crossed (statsmodels: no interval). Any of the three is NaN when the curve
    (or band) never reaches ½ — e.g. fewer than half the runs reached the target.

    Args:
        times, events: as for :func:`kaplan_meier`.
        alpha: the CI has level 1 − alpha.

    Returns:
        ``(median, ci_low, ci_high)``.
    """
    km = kaplan_meier(times, events, alpha=alpha)
    tt = km["time"].to_numpy()
    sv = km["survival"].to_numpy()
    med = _first_time_below(tt, sv)
    if np.isfinite(med):
        i = int(np.flatnonzero(tt == med)[0])
        if abs(sv[i] - 0.5) < _HALF_TOL:
            later = np.flatnonzero((tt > med) & (km["n_events"].to_numpy() > 0))
            if later.size:
                med = 0.5 * (med + float(tt[later[0]]))
    lo_curve = km["ci_low"].to_numpy().copy()
    hi_curve = km["ci_high"].to_numpy().copy()
    # Once S = 0 the band is undefined but has certainly crossed ½.
    lo_curve[sv <= 0] = 0.0
    hi_curve[sv <= 0] = 0.0
    return (med, _first_time_below(tt, lo_curve), _first_time_below(tt, hi_curve))


def logrank_test(times_a, events_a, times_b, events_b) -> tuple[float, float]:
    """Two-sample log-rank (Mantel–Haenszel) test of equal time-to-target distributions.

    At each distinct event time of the pooled sample, with n_j at risk, d_j events, n_aj and
    d_aj of them in group a: O − E = Σ (d_aj − d_j n_aj / n_j) and
    V = Σ d_j (n_aj / n_j)(1 − n_aj / n_j)(n_j − d_j)/(n_j − 1). The statistic (O − E)² / V
    (``statsmodels.duration.survfunc.survdiff``, as R ``survdiff``) is χ² with 1 df under H0;
    the p value is ``scipy.stats.chi2.sf`` of it.

    Args:
        times_a, events_a: times and event indicators of group a (see :func:`kaplan_meier`).
        times_b, events_b: the same for group b.

    Returns:
        ``(chi2, p)``; ``(nan, nan)`` when a group is empty or V = 0 (no event at all, or
        none while both groups are at risk).
    """
    ta, ea = as_float(times_a), np.asarray(events_a, dtype=bool)
    tb, eb = as_float(times_b), np.asarray(events_b, dtype=bool)
    if ta.size == 0 or tb.size == 0 or not (ea.any() or eb.any()):
        return (math.nan, math.nan)
    from statsmodels.duration.survfunc import survdiff

    t = np.concatenate([ta, tb])
    e = np.concatenate([ea, eb]).astype(float)
    g = np.concatenate([np.zeros(ta.size, int), np.ones(tb.size, int)])
    try:
        chi2 = float(survdiff(t, e, g)[0])
    except np.linalg.LinAlgError:  # V = 0: a singular 1 × 1 variance
        return (math.nan, math.nan)
    if not np.isfinite(chi2):
        return (math.nan, math.nan)
    return (chi2, float(sps.chi2.sf(chi2, 1)))


def mean_time_among_reached(times_a, events_a, times_b, events_b, *,
                            alpha: float = 0.05) -> dict:
    """The paper's style of comparison: mean time to target among runs that reached it.

    This is how the paper reports C2 (4.6 vs 7.4 epochs). It conditions on reaching the
    target, which is biased when the groups reach it at different rates, so report it next
    to the Kaplan–Meier medians and the log-rank test. The two groups are different subsets
    of seeds, so the comparison is unpaired: Welch's t test and interval
    (``scipy.stats.ttest_ind(equal_var=False)``). Adapter: when both groups are constant
    the standard error is 0 and the interval collapses to the difference (p = 1 for equal
    means, else 0), where scipy returns NaN.

    Args:
        times_a, events_a, times_b, events_b: as for :func:`logrank_test`; only the times of
            runs with an event count.
        alpha: the Welch interval has level 1 − alpha.

    Returns:
        dict with n_a, n_b (all runs), reached_a, reached_b (counts), mean_a, mean_b,
        diff (a − b), rel_change (mean_a / mean_b − 1), ci_low, ci_high (Welch),
        p_welch. Statistics that need two reached runs per group are NaN otherwise.
    """
    ta, ea = as_float(times_a), np.asarray(events_a, dtype=bool)
    tb, eb = as_float(times_b), np.asarray(events_b, dtype=bool)
    xa, xb = ta[ea & np.isfinite(ta)], tb[eb & np.isfinite(tb)]
    nan = math.nan
    out = dict(n_a=int(ta.size), n_b=int(tb.size), reached_a=int(xa.size),
               reached_b=int(xb.size), mean_a=float(xa.mean()) if xa.size else nan,
               mean_b=float(xb.mean()) if xb.size else nan, diff=nan, rel_change=nan,
               ci_low=nan, ci_high=nan, p_welch=nan)
    if xa.size and xb.size:
        out["diff"] = out["mean_a"] - out["mean_b"]
        out["rel_change"] = out["mean_a"] / out["mean_b"] - 1 if out["mean_b"] else nan
    if xa.size >= 2 and xb.size >= 2:
        if xa.var(ddof=1) + xb.var(ddof=1) > 0:
            with warnings.catch_warnings():
                # One constant group (e.g. every run at 7 epochs) has an exact variance 0,
                # which scipy flags as "catastrophic cancellation"; nothing is lost.
                warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
                res = sps.ttest_ind(xa, xb, equal_var=False)
                ci = res.confidence_interval(confidence_level=1 - alpha)
            out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_welch=float(res.pvalue))
        else:
            out["ci_low"] = out["ci_high"] = out["diff"]
            out["p_welch"] = 1.0 if out["diff"] == 0 else 0.0
    return out


def time_to_target(runs: pd.DataFrame, variant: str, baseline: str, *,
                   horizon: float | str, time_col: str = "epochs_to_90",
                   event_col: str | None = "reached_90", cell: Mapping | None = None,
                   alpha: float = 0.05) -> dict:
    """Time-to-target comparison of ``variant`` against ``baseline`` (claims C2, C5).

    Censored runs are kept (:func:`time_to_event`): Kaplan–Meier medians with
    Brookmeyer–Crowley CIs per group, a log-rank test, and the paper-style mean among runs
    that reached the target (:func:`mean_time_among_reached`, prefixed ``reached_``).

    Args:
        runs: the runs table.
        variant, baseline: variant ids.
        horizon: censoring time of runs that never reached the target, a number or a column
            name (:func:`time_to_event`).
        time_col, event_col: time-to-target and reached columns.
        cell: optional ``{column: value}`` restricting to one cell.
        alpha: level of the median CIs and of the Welch interval.

    Returns:
        dict with variant, baseline, n_variant, n_baseline, events_variant, events_baseline,
        median_variant, median_variant_low, median_variant_high, median_baseline (+ _low,
        _high), logrank_chi2, p_logrank, and reached_mean_variant, reached_mean_baseline,
        reached_diff, reached_rel_change, reached_ci_low, reached_ci_high, reached_p_welch.
    """
    df = select_cell(runs, cell)
    tv, ev = time_to_event(df[df["variant"] == variant], time_col=time_col,
                           event_col=event_col, horizon=horizon)
    tb, eb = time_to_event(df[df["variant"] == baseline], time_col=time_col,
                           event_col=event_col, horizon=horizon)
    out: dict = dict(variant=variant, baseline=baseline, n_variant=int(tv.size),
                     n_baseline=int(tb.size), events_variant=int(ev.sum()),
                     events_baseline=int(eb.sum()))
    for name, (t, e) in (("variant", (tv, ev)), ("baseline", (tb, eb))):
        med = km_median(t, e, alpha=alpha) if t.size else (math.nan,) * 3
        out[f"median_{name}"], out[f"median_{name}_low"], out[f"median_{name}_high"] = med
    chi2, p = logrank_test(tv, ev, tb, eb) if (tv.size and tb.size) else (math.nan, math.nan)
    out["logrank_chi2"], out["p_logrank"] = chi2, p
    m = mean_time_among_reached(tv, ev, tb, eb, alpha=alpha)
    out.update(reached_mean_variant=m["mean_a"], reached_mean_baseline=m["mean_b"],
               reached_diff=m["diff"], reached_rel_change=m["rel_change"],
               reached_ci_low=m["ci_low"], reached_ci_high=m["ci_high"],
               reached_p_welch=m["p_welch"])
    return out


def kaplan_meier_by_group(runs: pd.DataFrame, *, horizon: float | str,
                          group: str | Sequence[str] = "variant",
                          time_col: str = "epochs_to_90", event_col: str | None = "reached_90",
                          alpha: float = 0.05) -> pd.DataFrame:
    """:func:`kaplan_meier` per group, stacked in long form (input of ``plot_kaplan_meier``).

    Args:
        runs: the runs table.
        horizon: censoring time (number or column name), see :func:`time_to_event`.
        group: column(s) defining the groups (one curve each).
        time_col, event_col: time-to-target and reached columns.
        alpha: level of the log-log band.

    Returns:
        DataFrame with the group column(s) then the columns of :func:`kaplan_meier`.
    """
    group = [group] if isinstance(group, str) else list(group)
    parts = []
    for key, sub in iter_groups(runs, group):
        t, e = time_to_event(sub, time_col=time_col, event_col=event_col, horizon=horizon)
        km = kaplan_meier(t, e, alpha=alpha)
        for i, col in enumerate(group):
            km.insert(i, col, key[col])
        parts.append(km)
    if not parts:
        return pd.DataFrame(columns=[*group, *_KM_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def difficulty_selection(runs: pd.DataFrame, *, target: float, horizon: float | str,
                         level: str = "task", by: Sequence[str] = ("attention",),
                         time_col: str = "epochs_to_90_val",
                         event_col: str | None = "reached_90_val",
                         tiebreak: str | None = None, tiebreak_higher: bool = True,
                         choose_among: Mapping | None = None,
                         order: Sequence | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Which difficulty level puts the Kaplan–Meier median time to target nearest ``target``.

    Per level (the ``level`` column, e.g. the task of a cell) and group of ``by``: the
    runs' median time to target (:func:`km_median`, censored runs kept at ``horizon``) and
    its CI, and |median − target|. The selected level, among the rows matching
    ``choose_among`` (e.g. ``{"attention": "quantum"}``; all rows when None), is the one with
    the smallest distance; a level whose median does not exist (fewer than half its runs
    reached the target) is never selected; ties (distances equal to 1e-9) go to the higher
    mean of ``tiebreak`` (lower when ``tiebreak_higher`` is False), then to the level first
    in ``order`` (default: sorted order).

    Args:
        runs: the runs table of one variant (the caller selects it), with ``level``, ``by``,
            ``time_col`` (and ``event_col``) columns.
        target: the median aimed at (time units).
        horizon: censoring time: a number, or a column of each run's own (its training
            length, when levels train for different lengths).
        level, by: the level column and the grouping columns beside it.
        time_col, event_col: time-to-target and reached columns (:func:`time_to_event`).
        tiebreak: a column whose mean breaks ties, shown as ``mean_<tiebreak>``; None: none.
        tiebreak_higher: whether a higher mean of ``tiebreak`` wins a tie.
        choose_among: ``{column: value}`` the selected row must match.
        order: levels in the order of the last tie-break.
        alpha: level of the median CIs.

    Returns:
        DataFrame with ``level``, the ``by`` columns, n, events, median, median_low,
        median_high, distance, ``mean_<tiebreak>`` (when given) and a bool ``selected``
        (at most one True).
    """
    by = [b for b in by if b in runs.columns]
    rank = {v: i for i, v in enumerate(order)} if order is not None else None
    rows = []
    for key, sub in iter_groups(runs, [level, *by]):
        t, e = time_to_event(sub, time_col=time_col, event_col=event_col, horizon=horizon)
        med, lo, hi = km_median(t, e, alpha=alpha) if t.size else (math.nan,) * 3
        row = {**key, "n": int(t.size), "events": int(e.sum()), "median": med,
               "median_low": lo, "median_high": hi, "distance": abs(med - target)}
        if tiebreak is not None:
            x = as_float(sub[tiebreak])
            row[f"mean_{tiebreak}"] = float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
        rows.append(row)
    cols = [level, *by, "n", "events", "median", "median_low", "median_high", "distance"]
    cols += [f"mean_{tiebreak}"] if tiebreak is not None else []
    table = pd.DataFrame(rows, columns=cols)
    if rank is not None:
        table = table.sort_values(level, key=lambda s: s.map(lambda v: rank.get(v, len(rank))),
                                  kind="stable").reset_index(drop=True)
    table["selected"] = False
    ok = table[np.isfinite(table["distance"].to_numpy(float))]
    for k, v in (choose_among or {}).items():
        ok = ok[ok[k] == v]
    if not ok.empty:
        best = ok["distance"].min()
        tied = ok[ok["distance"] <= best + 1e-9]
        if tiebreak is not None and len(tied) > 1:
            score = tied[f"mean_{tiebreak}"].fillna(-math.inf if tiebreak_higher else math.inf)
            top = score.max() if tiebreak_higher else score.min()
            tied = tied[score == top]
        table.loc[tied.index[0], "selected"] = True
    return table
