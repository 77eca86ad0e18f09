"""Difficulty selection: which level (task) of a selection grid its rule chooses.

One function computes the choice, so the grid that reads it (``[grid].select_task`` in
:mod:`ablations.config`) and the selection grid's own report (the "Difficulty selection"
section of :mod:`ablations.exhibits`) cannot disagree. The rule, stated in the selection
grids' configs: per level, the Kaplan–Meier median of the arm's validation time to target
(:attr:`ablations.arms.Arm.difficulty`) over its first baseline's runs, censored at each
level's own training length; a level run at several learning rates is read at its own
selected one (the baseline's best mean selection metric on that level); the level chosen is,
among the arm's main attention, the one whose median is nearest the target
(:func:`ablations.stats.difficulty_selection`: a level where fewer than half the runs reach
the target is never chosen; ties: the higher mean selection metric, then the level listed
first). Validation metrics only: the test set plays no part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import stats

__all__ = ["DifficultyChoice", "task_options", "level_keys", "difficulty_choice"]


@dataclass(frozen=True)
class DifficultyChoice:
    """The selection table (one row per level and attention, ``selected`` marks the choice),
    the level chosen (None: none meets the rule yet), the values at the chosen level of the
    options that differ between levels, whether levels were read at tuned lrs, and the
    longest level's horizon (the censoring time of its time to target)."""

    table: pd.DataFrame
    task: str | None
    level_options: dict[str, Any]
    tuned: bool
    horizon: float


def task_options(cfg: Any) -> dict[str, dict[str, Any]]:
    """task → its arm options (every field, defaults filled in), in the config's order."""
    out: dict[str, dict[str, Any]] = {}
    for cell in cfg.cells:
        task = cell.get("task", "")
        if task not in out:
            parsed = cfg.arm_obj.parse_options({**cfg.options, **cell.get("options", {})})
            out[task] = dataclasses.asdict(parsed)
    return out


def _varying(options: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    if not options:
        return ()
    first = next(iter(options.values()))
    return tuple(k for k in first if len({repr(o[k]) for o in options.values()}) > 1)


def level_keys(cfg: Any) -> tuple[str, ...]:
    """The option keys whose values differ between the levels (tasks) of the grid ``cfg``:
    what a level *is*, and what a grid that takes its choice leaves to it."""
    return _varying(task_options(cfg))


def difficulty_choice(cfg: Any, runs: pd.DataFrame) -> DifficultyChoice | None:
    """Apply the rule of the module docstring to ``runs`` (the runs table of the selection
    grid ``cfg``); None when the grid is no difficulty selection (its arm has no target, or
    it has fewer than two levels)."""
    arm = cfg.arm_obj
    target = arm.difficulty
    if target is None or "task" not in runs.columns or runs["task"].nunique() < 2:
        return None
    base, selector = arm.baselines[0], arm.selection_metric
    options = task_options(cfg)
    horizon = {t: float(o[target.horizon]) for t, o in options.items()}
    sub = runs[runs["variant"] == base]
    sub = sub.assign(horizon=sub["task"].map(horizon))
    tuned = bool(sub["lr"].nunique() > 1 and selector in sub.columns)
    if tuned:
        lrs = stats.lr_selection(sub, selector, arm.metric(selector).higher_is_better
                                 is not False)
        keys = [k for k in ("task", "attention", "lr") if k in lrs.columns]
        sub = sub.merge(lrs.loc[lrs["selected"], keys], on=keys)
    main = arm.attentions[0]
    table = stats.difficulty_selection(
        sub, target=target.target, horizon="horizon", by=("attention", "lr"),
        time_col=target.time, event_col=target.event, tiebreak=selector,
        choose_among={"attention": main} if "attention" in sub.columns else None,
        order=list(options))
    varying = _varying(options)
    for i, k in enumerate(varying):
        table.insert(1 + i, k, table["task"].map(lambda t, k=k: options.get(t, {}).get(k)))
    chosen = table[table["selected"]]
    task = str(chosen["task"].iloc[0]) if len(chosen) else None
    level = {k: options[task][k] for k in varying} if task is not None else {}
    return DifficultyChoice(table, task, level, tuned, max(horizon.values()))
