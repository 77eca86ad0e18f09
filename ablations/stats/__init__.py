"""Statistics for the ablation grids, on scipy.stats and statsmodels.

Pure computation: every function takes arrays or DataFrames and returns numbers or
DataFrames. Nothing here reads or writes files or draws (DESIGN.md, "Statistics compute,
plots draw, the report does the I/O"). statsmodels is imported lazily, inside the functions
that need it, so ``import ablations.stats`` only pulls in numpy, pandas and scipy.

One module per concern, every name re-exported here (``from ablations import stats as S;
S.compare_all(...)``):

- :mod:`.paired`: paired differences, paired comparisons, :func:`compare_all` (the
  ``stats.csv`` table), Holm's correction, the verdict rule;
- :mod:`.power`: power, sample size and detectable effect of the paired t test, power and
  sample size of the TOST equivalence test, power of the log-rank test;
- :mod:`.survival`: time to target — Kaplan–Meier, its median (:data:`KM_MEDIAN_RULE`),
  log-rank, the paper's mean among runs that reached the target, the difficulty selection
  (the level whose median time to target is nearest a target);
- :mod:`.aggregate`: IQM, stratified bootstrap, probability of improvement (rliable-style);
- :mod:`.across`: a grid of several tasks, each on several data seeds: normalised scores,
  IQM and probability of improvement across tasks (strata = tasks, the data seed resampled
  or not), per-task effects with the data seed as a random effect, AlgoPerf's performance
  profiles of time to target; used as ``stats.across.<name>`` (not re-exported: its
  ``time_to_target`` is per problem, unlike :func:`.survival.time_to_target`);
- :mod:`.factorial`: the 2 × 2 attention × optimizer analysis;
- :mod:`.null`: every variant's effect beside the null control's (a negligible nudge);
- :mod:`.summaries`: t and Wilson intervals, learning-curve summaries, the λ sweep, the
  learning-rate selection and the runs at each variant's selected lr;
- :mod:`.dose`: dose-response: each variant's effect against AdamW at its measured ratio
  ‖λQ‖/‖Adam step‖ (λ and loss-scale sweeps), and the ratio at which it first becomes
  detectable.

Inputs follow the data contract of ``results/`` (DESIGN.md):

- a *runs* table, one row per run, with identity columns ``run_id, arm, variant, attention,
  seed, lr`` and one column per scalar metric (``final_test_acc``, ``epochs_to_90``, ...);
- a *curves* table, long format, one row per (run, epoch): ``run_id, variant, attention,
  seed, epoch, test_acc, train_loss``.

A *cell* is one combination of the cell keys (by default ``attention`` and ``lr``). Variants
are only ever compared with a baseline inside the same cell, paired by ``seed``.
Which direction of a metric is better is the arm's knowledge (``Arm.directions()``), passed
to :func:`compare_all` by the caller.
"""

from __future__ import annotations

from . import across
from .aggregate import aggregate_metrics, iqm, probability_of_improvement, stratified_bootstrap_ci
from .dose import DETECTION_RULE, capped_time_to_target, dose_points, first_detectable
from .factorial import factorial_2x2
from .null import NULL_READINGS, null_control
from .paired import (
    EXTRA_COLUMNS,
    FAMILIES,
    STATS_COLUMNS,
    compare_all,
    holm,
    paired_comparison,
    paired_differences,
    verdict,
)
from .power import (
    logrank_power,
    min_detectable_effect,
    paired_t_power,
    power_to_detect,
    seeds_needed,
    tost_power,
    tost_seeds_needed,
)
from .summaries import (
    at_selected_lr,
    curve_summary,
    lambda_sweep,
    lr_selection,
    parse_lambda,
    summarize,
    t_interval,
    wilson,
)
from .survival import (
    KM_MEDIAN_RULE,
    difficulty_selection,
    kaplan_meier,
    kaplan_meier_by_group,
    km_median,
    logrank_test,
    mean_time_among_reached,
    time_to_event,
    time_to_target,
)

__all__ = [
    "across",
    "STATS_COLUMNS",
    "EXTRA_COLUMNS",
    "FAMILIES",
    "KM_MEDIAN_RULE",
    "paired_differences",
    "paired_comparison",
    "compare_all",
    "holm",
    "verdict",
    "factorial_2x2",
    "time_to_event",
    "kaplan_meier",
    "km_median",
    "logrank_test",
    "mean_time_among_reached",
    "time_to_target",
    "kaplan_meier_by_group",
    "difficulty_selection",
    "iqm",
    "stratified_bootstrap_ci",
    "probability_of_improvement",
    "aggregate_metrics",
    "seeds_needed",
    "min_detectable_effect",
    "paired_t_power",
    "power_to_detect",
    "tost_power",
    "tost_seeds_needed",
    "logrank_power",
    "null_control",
    "NULL_READINGS",
    "t_interval",
    "wilson",
    "summarize",
    "curve_summary",
    "parse_lambda",
    "lambda_sweep",
    "lr_selection",
    "at_selected_lr",
    "DETECTION_RULE",
    "capped_time_to_target",
    "dose_points",
    "first_detectable",
]
