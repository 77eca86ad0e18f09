"""Grid configs: a TOML file in, frozen run specs out.

A config has one ``[grid]`` table, one table of arm options named after the arm, and one or more
``[[cells]]``. Each cell crosses its variants, seeds and learning rates::

    [grid]
    arm = "classifier"            # a registered arm (ablations.arms): classifier, llm, ...
    results = "results/classifier"
    baseline_lr = 3e-3            # the reference learning rate of the comparisons

    [classifier]                  # arm options, passed to the arm as spec.config
    epochs = 12

    [[cells]]
    name = "factorial"
    attention = ["quantum", "classical"]
    variants = ["adamw", "sin-l0.5"]
    seeds = 20                    # seeds 0..19, or an explicit list
    lr = [3e-3]                   # optional; default [grid].baseline_lr

    [[cells]]                     # a cell may run its own task: arm options changed for it
    task = "long"                 # its name: runs are compared within a task only
    options = { seq_len = 24 }
    variants = ["adamw", "sin-l0.5"]

``[grid].protocol`` names the protocol the grid follows (``paper``: the paper's tables, nothing
tuned; ``calibrated``: every choice made on validation data); records and reports carry it.

Learning rates chosen on validation data, never copied by hand: ``[grid].select_lr`` names
another grid's config (a learning-rate sweep), and a cell's ``lr = "selected"`` runs each
variant at its own selected lr, ``lr = "selected:adamw"`` every variant at AdamW's (the shared
lr; ``baseline_lr`` may say the same). The selection is each variant's best mean of the arm's
validation metric in that grid (:func:`ablations.stats.lr_selection`); a sweep that has not
finished is an error naming it. ``[grid].selection = true`` marks such a sweep: its report
shows the selection and judges no claim (its runs chose the settings; they do not also test).

``[claims.<id>]`` pre-registers how the grid judges a claim: its TOST margin, Holm family,
paired seeds, target power and the pilot spread the seeds were computed from
(:mod:`ablations.design`); the cells must run those seeds, and the seeds must reach the power.

``[grid].exhibits`` (a list of report exhibit names, :mod:`ablations.exhibits`) marks a
*study* grid: its report shows those exhibits instead of the claims' sections, and it judges no
claim (e.g. the dose-response grid, whose runs map an effect against a dose, not test a claim).

``[grid].runs_per_gpu`` (default 1; a GPU arm's setting) packs that many worker processes on
each GPU: small-batch runs are launch-bound, and several per device use it better. It decides
where runs go, not what they compute, so it is part of no run's key.

``[grid].seed_batched = true`` (an arm with a seed-batched path: ``Arm.batched_numerics``) runs
the grid seed-batched (unset: ``Arm.seed_batched_by_default``, true for the classifier on CUDA
only): the runner hands the seeds of a cell to the arm as one job
(``Arm.run_batch``), which trains them at once, each run still its own record. Its specs carry
the arm's ``batched_numerics`` instead of ``numerics``, so a grid is batched or not, never
both: a batched run and a one-run run never share a key (nor a report). ``[grid].seeds_per_job``
(default 16) caps the seeds of one job (a cell's are split into near-equal jobs); a run's result
does not depend on its job's other seeds, so this decides where runs go, not what they compute.

Typos fail loudly: an unknown key or variant id names the file (and the line, for TOML syntax).
The arm's table is parsed into its options dataclass when the config loads
(:meth:`ablations.arms.Arm.parse_options`), so a wrong option fails before any run starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsgd.variants import canonical_id

from .arms import Arm, ArmError, get_arm
from .seeds import derived_seeds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "RunSpec", "GridConfig", "load_config", "read_toml", "expand",
           "derived_seeds"]

_GRID_KEYS = {"arm", "name", "results", "baseline_lr", "description", "protocol", "select_lr",
              "select_task", "selection", "runs_per_gpu", "exhibits", "seed_batched",
              "seeds_per_job", "extends", "replicates"}
#: [grid] keys that name another config file, relative to the config's own folder
_GRID_FILE_KEYS = ("select_lr", "select_task", "replicates")
_CELL_KEYS = {"name", "attention", "variants", "seeds", "lr", "task", "options"}
#: the protocols a grid may follow (DESIGN.md: the paper's tables, or ours on validation data)
PROTOCOLS = ("paper", "calibrated")


class ConfigError(ValueError):
    """A config file is malformed; the message names the file and what is wrong."""


class SelectionPending(ConfigError):
    """A config selects its learning rates from a grid that has not finished."""


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple) and all(isinstance(x, tuple) and len(x) == 2
                                        and isinstance(x[0], str) for x in value) and value:
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run. Equal specs give equal (non-timing) metrics."""

    arm: str
    variant: str
    attention: str
    seed: int
    lr: float
    options: tuple = field(default=(), repr=False)  # frozen arm options
    #: the arm's NUMERICS version (module constant, bumped when a code change alters the
    #: metrics of an unchanged spec): part of the key, so such runs count as stale
    numerics: int = 0
    #: the cell's task name ("" for the grid's own options): runs pair within a task only
    task: str = ""

    @property
    def config(self) -> dict[str, Any]:
        """The arm options as a plain dict."""
        return _thaw(self.options) if self.options else {}

    def as_dict(self) -> dict[str, Any]:
        d = dict(arm=self.arm, variant=self.variant, attention=self.attention,
                 seed=self.seed, lr=self.lr, config=self.config)
        if self.numerics:  # absent at 0, so arms without a version keep their old keys
            d["numerics"] = self.numerics
        if self.task:  # absent for the grid's own task, so older grids keep their keys
            d["task"] = self.task
        return d

    @property
    def key(self) -> str:
        """Hash of the whole spec: a changed option gives a new key, so runs never mix."""
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        task = f"{self.task}-" if self.task else ""
        return (f"{self.arm}-{task}{self.attention}-{self.variant}-lr{self.lr:g}-s{self.seed}"
                f"-{self.key[:8]}")


@dataclass(frozen=True)
class GridConfig:
    """A loaded grid: ``options`` is the arm's table as written, ``arm_options`` the parsed
    options dataclass; ``specs`` every run of every cell, deduplicated by key."""

    path: Path
    arm: str
    name: str
    results: Path
    baseline_lr: float
    options: dict[str, Any]
    specs: tuple[RunSpec, ...]
    cells: tuple[dict[str, Any], ...]
    arm_options: Any = None
    protocol: str = ""
    #: a grid that selects hyperparameters (an lr sweep): its runs judge no claim
    selection: bool = False
    #: worker processes sharing each GPU (a GPU arm's runs are launch-bound at small batch:
    #: several per device use it better); not part of any run's key
    runs_per_gpu: int = 1
    #: variant → its lr selected on validation by the grid of ``[grid].select_lr`` (empty
    #: without one): what ``lr = "selected"`` resolves to, and what reports compare at
    selected_lr: dict[str, float] = field(default_factory=dict)
    #: the config of that selection grid (None without one), and that grid, as loaded
    selected_from: Path | None = None
    selected_grid: GridConfig | None = None
    #: the level (task of the selection grid of ``[grid].select_task``) whose options this
    #: grid's arm table takes, chosen on validation ("" without one), those options, and the
    #: config of that grid (None without one)
    selected_task: str = ""
    selected_task_options: dict[str, Any] = field(default_factory=dict)
    selected_task_from: Path | None = None
    #: claim id → its pre-registered :class:`ablations.design.Design` (``[claims.<id>]``):
    #: margin, Holm family, seeds, target power, pilot spread; {} without the table
    designs: dict[str, Any] = field(default_factory=dict)
    #: a study grid's report exhibits (``[grid].exhibits``; empty: the claims' report)
    exhibits: tuple[str, ...] = ()
    #: the grid runs seed-batched (``[grid].seed_batched``): a cell's seeds in one job each
    #: (its specs carry the arm's ``batched_numerics``)
    seed_batched: bool = False
    #: the most seeds in one seed-batched job (``[grid].seeds_per_job``); part of no run's key
    seeds_per_job: int = 16
    #: another grid whose runs this one repeats by other code paths (``[grid].replicates``,
    #: a config file): the report pairs each run with its twin there, variant and seed
    replicates: Path | None = None

    @property
    def arm_obj(self) -> Arm:
        return get_arm(self.arm)

    @property
    def resources(self) -> str:
        """Where the grid's runs train, ``"cpu"`` or ``"gpu"``
        (:meth:`ablations.arms.Arm.resources_of` of its options): the runner's worker layout."""
        return self.arm_obj.resources_of(self.arm_options)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _seeds(value: Any, where: str) -> list[int]:
    if _is_int(value):
        if value < 1:
            raise ConfigError(f"{where}: seeds must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(_is_int(s) for s in value):
        if any(s < 0 for s in value):
            raise ConfigError(f"{where}: seeds must be >= 0, got {value}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: seeds list has duplicates: {value}")
        return value
    raise ConfigError(f"{where}: seeds must be a positive count or a non-empty list of "
                      f"non-negative integers, got {value!r}")


def _lr(value: Any, where: str) -> float:
    """A learning rate: a TOML number (not a string, not a bool), finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{where} must be a finite number > 0, got {value!r}")
    return float(value)


def _strings(value: Any, where: str, what: str) -> list[str]:
    items = _as_list(value)
    if not items:
        raise ConfigError(f"{where}: {what} is empty: a cell needs at least one")
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise ConfigError(f"{where}: {what} must be strings, got {bad[0]!r}")
    return items


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file or a syntax error raises ConfigError naming the
    file (and the line, for syntax)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); TOML "
                          "files are UTF-8") from None


def read_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A grid config's tables, with ``[grid].extends`` resolved: ``extends = "other.toml"``
    (relative to this file) starts from that config's tables and lays this file's over them,
    table by table (a key given here wins; ``[[cells]]`` given here replace the base's cells
    whole), so a variant of a grid states only what differs. The base's references to other
    configs (``select_lr``, ``select_task``, ``replicates``) keep naming the files beside the
    base. Chains are followed; a cycle, a missing base or one that is not a string raises
    ConfigError naming the file."""
    path = Path(path)
    raw = read_toml(path)
    grid = raw.get("grid")
    if not isinstance(grid, dict) or "extends" not in grid:
        return raw
    ref = grid["extends"]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{path}: [grid].extends must name a config file, got {ref!r}")
    base_path = path.parent / ref
    seen = (*_seen, path.resolve())
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: [grid].extends = {ref!r} makes a cycle: "
                          f"{' -> '.join(p.name for p in (*seen, base_path))}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: [grid].extends = {ref!r}: config file not found: "
                          f"{base_path}")
    merged = read_config(base_path, seen)
    # the base's own file references name files beside the base: keep them pointing there
    for key in _GRID_FILE_KEYS:
        ref_value = merged.get("grid", {}).get(key)
        if isinstance(ref_value, str):
            merged["grid"][key] = os.path.relpath(base_path.parent / ref_value, path.parent)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    del merged["grid"]["extends"]
    return merged


def load_config(path: str | Path, results: str | Path | None = None) -> GridConfig:
    """Parse and validate a grid config (``[grid].extends`` resolved, :func:`read_config`);
    ``results`` overrides ``[grid].results``."""
    path = Path(path)
    raw = read_config(path)
    grid = raw.get("grid")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: missing [grid] table")
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [grid]: {', '.join(sorted(unknown))} "
                          f"(valid: {', '.join(sorted(_GRID_KEYS))})")
    arm = grid.get("arm")
    try:
        arm_obj = get_arm(arm)
    except ArmError as err:
        raise ConfigError(f"{path}: [grid].arm: {err}") from None
    top_unknown = set(raw) - {"grid", "cells", arm, "claims"}
    if top_unknown:
        raise ConfigError(f"{path}: unknown table(s): {', '.join(sorted(top_unknown))} "
                          f"(valid: grid, cells, claims, {arm})")
    options = raw.get(arm, {})
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: [{arm}] must be a table")
    level, level_options = (_task_selection(path, grid, arm_obj, options)
                            if "select_task" in grid else ("", {}))
    options = {**options, **level_options}
    try:
        arm_options = arm_obj.parse_options(options)
    except ArmError as err:
        raise ConfigError(f"{path}: {err}") from None
    for key in ("name", "results", "description", "protocol"):
        if key in grid and not isinstance(grid[key], str):
            raise ConfigError(f"{path}: [grid].{key} must be a string, got {grid[key]!r}")
    protocol = grid.get("protocol", "")
    selection = grid.get("selection", False)
    if not isinstance(selection, bool):
        raise ConfigError(f"{path}: [grid].selection must be true or false, got {selection!r}")
    runs_per_gpu = grid.get("runs_per_gpu", 1)
    if not _is_int(runs_per_gpu) or runs_per_gpu < 1:
        raise ConfigError(f"{path}: [grid].runs_per_gpu must be an integer >= 1, got "
                          f"{runs_per_gpu!r}")
    if protocol and protocol not in PROTOCOLS:
        raise ConfigError(f"{path}: [grid].protocol must be one of {', '.join(PROTOCOLS)}, "
                          f"got {protocol!r}")
    exhibits = _exhibits(path, grid)
    replicates = grid.get("replicates")
    if replicates is not None:
        if not isinstance(replicates, str) or not (path.parent / replicates).is_file():
            raise ConfigError(f"{path}: [grid].replicates must name a config file next to it, "
                              f"got {replicates!r}")
        replicates = path.parent / replicates
    seed_batched, seeds_per_job = _seed_batching(path, grid, arm_obj, arm_options)
    selected, lr_grid = (_selection(path, grid, arm_obj) if "select_lr" in grid
                         else (None, None))
    if "baseline_lr" in grid:
        baseline_lr = _lr_or_selected(grid["baseline_lr"], f"{path}: [grid].baseline_lr",
                                      selected, None)[0]
    else:  # an arm whose options carry the lr (validated with them)
        baseline_lr = float(getattr(arm_options, "lr", 1e-3))
    cells = raw.get("cells")
    if not isinstance(cells, list) or not cells:
        raise ConfigError(f"{path}: at least one [[cells]] table is required")
    frozen_opts = _freeze(options)
    numerics = int(arm_obj.batched_numerics if seed_batched else arm_obj.numerics)
    specs: dict[str, RunSpec] = {}
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise ConfigError(f"{path}: cells[{i}] must be a table ([[cells]]), got {cell!r}")
        where = f"{path}: cells[{i}]" + (f" ({cell['name']})" if "name" in cell else "")
        unknown = set(cell) - _CELL_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))} "
                              f"(valid: {', '.join(sorted(_CELL_KEYS))})")
        if "variants" not in cell:
            raise ConfigError(f"{where}: 'variants' is required")
        variants = []
        for vid in _strings(cell["variants"], where, "variants"):
            try:
                canon = canonical_id(vid)  # sin-l0.50 and sin-l0.5 are one optimizer
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
            if canon in variants:
                raise ConfigError(f"{where}: variants list one optimizer twice: {vid!r} is "
                                  f"{canon!r}")
            variants.append(canon)
        attentions = _strings(cell.get("attention", arm_obj.attentions[0]), where, "attention")
        for a in attentions:
            if a not in arm_obj.attentions:
                raise ConfigError(f"{where}: attention {a!r} is not one of "
                                  f"{', '.join(arm_obj.attentions)} (arm {arm})")
        lr_values = _as_list(cell.get("lr", baseline_lr))
        if not lr_values:
            raise ConfigError(f"{where}: lr is empty: a cell needs at least one")
        seeds = _seeds(cell.get("seeds", 1), where)
        task, cell_opts = _task(cell, where, options, arm_obj)
        for a in attentions:
            for vid in variants:
                lrs = [y for x in lr_values
                       for y in _lr_or_selected(x, f"{where}: lr", selected, vid)]
                for lr in lrs:
                    for seed in seeds:
                        spec = RunSpec(arm, vid, a, seed, lr, cell_opts or frozen_opts,
                                       numerics, task)
                        specs.setdefault(spec.key, spec)
                if lrs:  # the check reads the options, variant and attention: one run of each
                    try:
                        arm_obj.check_spec(spec)
                    except ValueError as err:
                        raise ConfigError(f"{where}: {err}") from None
    designs = _claim_designs(path, raw.get("claims"), arm, specs.values(), baseline_lr)
    res = (Path(results) if results is not None
           else Path(grid.get("results", f"results/{arm}"))).expanduser()
    return GridConfig(path=path, arm=arm, name=str(grid.get("name", arm)), results=res,
                      baseline_lr=baseline_lr, options=options, specs=tuple(specs.values()),
                      cells=tuple(cells), arm_options=arm_options, protocol=protocol,
                      selection=selection, runs_per_gpu=runs_per_gpu,
                      selected_lr=dict(selected or {}),
                      selected_from=None if selected is None else path.parent / grid["select_lr"],
                      selected_grid=lr_grid,
                      selected_task=level, selected_task_options=level_options,
                      selected_task_from=(path.parent / grid["select_task"] if level else None),
                      designs=designs, exhibits=exhibits, seed_batched=seed_batched,
                      seeds_per_job=seeds_per_job, replicates=replicates)


def _seed_batching(path: Path, grid: dict, arm_obj: Arm, arm_options) -> tuple[bool, int]:
    """``[grid].seed_batched`` (true or false; true needs an arm with a seed-batched path;
    unset: the arm's :meth:`~ablations.arms.Arm.seed_batched_by_default`, e.g. true for the
    classifier on CUDA) and ``[grid].seeds_per_job`` (an integer >= 1, only for a seed-batched
    grid)."""
    default = (arm_obj.batched_numerics is not None
               and bool(arm_obj.seed_batched_by_default(arm_options)))
    batched = grid.get("seed_batched", default)
    if not isinstance(batched, bool):
        raise ConfigError(f"{path}: [grid].seed_batched must be true or false, got {batched!r}")
    if batched and arm_obj.batched_numerics is None:
        raise ConfigError(f"{path}: [grid].seed_batched: arm {arm_obj.name} has no "
                          "seed-batched path")
    per_job = grid.get("seeds_per_job", GridConfig.seeds_per_job)
    if "seeds_per_job" in grid and not batched:
        raise ConfigError(f"{path}: [grid].seeds_per_job applies to a seed-batched grid only "
                          "(set [grid].seed_batched = true)")
    if not _is_int(per_job) or per_job < 1:
        raise ConfigError(f"{path}: [grid].seeds_per_job must be an integer >= 1, got "
                          f"{per_job!r}")
    return batched, per_job


def _claim_designs(path: Path, table: Any, arm: str, specs: Iterable[RunSpec],
                   lr: float) -> dict[str, Any]:
    """The pre-registered designs of ``[claims.<id>]`` (:mod:`ablations.design`), validated
    against the grid's specs; {} without the table."""
    if table is None:
        return {}
    from .design import claim_designs

    try:
        return claim_designs(path, table, arm, specs, lr)
    except ValueError as err:
        raise ConfigError(str(err)) from None



def _exhibits(path: Path, grid: dict) -> tuple[str, ...]:
    """``[grid].exhibits``: a non-empty list of registered report exhibits, not together with
    ``selection`` (a grid either selects settings or studies an effect)."""
    if "exhibits" not in grid:
        return ()
    value = grid["exhibits"]
    if (not isinstance(value, list) or not value
            or not all(isinstance(x, str) for x in value)):
        raise ConfigError(f"{path}: [grid].exhibits must be a non-empty list of exhibit names, "
                          f"got {value!r}")
    from .exhibits import EXHIBITS  # the report's registry (imported only for such a grid)

    unknown = [x for x in value if x not in EXHIBITS]
    if unknown:
        raise ConfigError(f"{path}: [grid].exhibits: unknown exhibit(s) {', '.join(unknown)} "
                          f"(valid: {', '.join(sorted(EXHIBITS))})")
    if grid.get("selection", False):
        raise ConfigError(f"{path}: [grid].exhibits and [grid].selection exclude each other "
                          "(a study grid judges no claim and selects nothing)")
    return tuple(value)


def _lr_or_selected(value: Any, where: str, selected: dict[str, float] | None,
                    variant: str | None) -> list[float]:
    """A learning rate as written, or the lr selected for ``variant`` ("selected") or for a
    named one ("selected:<id>") from the grid of ``[grid].select_lr``."""
    if not (isinstance(value, str) and value.split(":")[0] == "selected"):
        return [_lr(value, where)]
    if selected is None:
        raise ConfigError(f"{where} = {value!r} needs [grid].select_lr (the grid whose "
                          "validation runs select the learning rates)")
    name = value.partition(":")[2] or variant
    if name is None:
        raise ConfigError(f"{where} = 'selected' names no variant: use 'selected:<variant>'")
    try:
        name = canonical_id(name)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if name not in selected:
        raise ConfigError(f"{where}: the selection grid chose no lr for {name!r} (it chose "
                          f"for {', '.join(sorted(selected)) or 'nothing'}); use "
                          "'selected:<variant>'")
    return [selected[name]]


def _selection_grid(path: Path, ref: str, where: str, arm_obj: Arm) -> GridConfig:
    """The selection grid ``ref`` (a config path relative to ``path``), of this grid's arm."""
    sweep = load_config(path.parent / ref)
    if sweep.arm != arm_obj.name:
        raise ConfigError(f"{where}: {ref} is a grid of arm {sweep.arm}, not {arm_obj.name}")
    return sweep


def selection_runs(sweep: GridConfig, where: str | None = None):
    """The runs table of the selection grid ``sweep`` (its current records); with ``where``
    (the key that reads it), SelectionPending until every run of it is stored."""
    from .records import RUNS_FILE, load_records
    from .tables import current_records, runs_table

    records, _ = current_records(load_records(sweep.results / RUNS_FILE),
                                 {s.key for s in sweep.specs})
    if where is not None and len(records) < len(sweep.specs):
        raise SelectionPending(f"{where}: {sweep.path.name} has {len(records)} of its "
                               f"{len(sweep.specs)} runs in {sweep.results}; run it first")
    return runs_table(records, sweep.protocol)


def _selection(path: Path, grid: dict, arm_obj: Arm) -> tuple[dict[str, float], GridConfig]:
    """(variant → its selected lr, the selection grid): the best mean of the arm's validation
    metric among the finished runs of the grid ``[grid].select_lr`` names (a path relative to
    this config)."""
    ref = grid["select_lr"]
    if not isinstance(ref, str):
        raise ConfigError(f"{path}: [grid].select_lr must be a config path, got {ref!r}")
    metric = arm_obj.selection_metric
    if metric is None:
        raise ConfigError(f"{path}: [grid].select_lr: arm {arm_obj.name} has no validation "
                          "metric to select with")
    from .stats import lr_selection
    from .tables import own_task

    sweep = _selection_grid(path, ref, f"{path}: [grid].select_lr", arm_obj)
    runs = selection_runs(sweep, f"{path}: [grid].select_lr")
    if metric not in runs.columns:
        raise ConfigError(f"{path}: [grid].select_lr: the runs of {ref} have no {metric!r} "
                          "(no validation split)")
    higher = arm_obj.metric(metric).higher_is_better is not False
    table = lr_selection(own_task(runs), metric, higher)
    chosen = table[table["selected"]]
    if "attention" in chosen.columns and chosen["attention"].nunique() > 1:
        chosen = chosen[chosen["attention"] == arm_obj.attentions[0]]
    return {str(r["variant"]): float(r["lr"]) for _, r in chosen.iterrows()}, sweep


def _task_selection(path: Path, grid: dict, arm_obj: Arm,
                    options: dict) -> tuple[str, dict[str, Any]]:
    """(level, its options): the level the difficulty-selection grid ``[grid].select_task``
    names (a path relative to this config) chooses on validation
    (:func:`ablations.selection.difficulty_choice`), and the options that make it a level,
    which this grid's arm table must leave to it."""
    ref = grid["select_task"]
    where = f"{path}: [grid].select_task"
    if not isinstance(ref, str):
        raise ConfigError(f"{where} must be a config path, got {ref!r}")
    from .selection import difficulty_choice, level_keys

    sweep = _selection_grid(path, ref, where, arm_obj)
    varying = level_keys(sweep)
    if arm_obj.difficulty is None or not varying:
        raise ConfigError(f"{where}: {ref} is no difficulty selection (it needs two levels or "
                          f"more{'' if arm_obj.difficulty else ' and an arm with a target'})")
    taken = sorted(set(varying) & set(options))
    if taken:
        raise ConfigError(f"{path}: [{arm_obj.name}].{taken[0]} is chosen by [grid].select_task "
                          f"({ref}); remove it from the table")
    choice = difficulty_choice(sweep, selection_runs(sweep, where))
    if choice is None or choice.task is None:
        raise ConfigError(f"{where}: {ref} chose no level: no level of "
                          f"{arm_obj.attentions[0]} attention met its rule (see its report)")
    return choice.task, choice.level_options


def _task(cell: dict, where: str, options: dict, arm_obj: Arm) -> tuple[str, tuple]:
    """A cell's task name and, when it changes arm options, its frozen merged options
    (validated like the grid's); ("", ()) for a cell of the grid's own task."""
    task, extra = cell.get("task", ""), cell.get("options", {})
    if not isinstance(task, str):
        raise ConfigError(f"{where}: task must be a string, got {task!r}")
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: options must be a table, got {extra!r}")
    if extra and not task:
        raise ConfigError(f"{where}: a cell that changes options needs a task name "
                          "(runs are compared within a task only)")
    if not extra:
        return task, ()
    merged = {**options, **extra}
    try:
        parsed = arm_obj.parse_options(merged)
        grid_resources = arm_obj.resources_of(arm_obj.parse_options(options))
    except ArmError as err:
        raise ConfigError(f"{where}: options: {err}") from None
    if arm_obj.resources_of(parsed) != grid_resources:
        raise ConfigError(f"{where}: options: a cell trains where its grid does "
                          f"({grid_resources}); set the device in the arm's table, not a cell's "
                          f"(got {extra!r})")
    return task, _freeze(merged)


def expand(specs: Iterable[RunSpec]) -> list[RunSpec]:
    """Specs in a stable execution order (slow cells spread out by seed first)."""
    return sorted(specs, key=lambda s: (s.seed, s.attention, s.variant, s.lr))
