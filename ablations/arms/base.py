"""What an arm is: its options, its metrics, its resources and one pure ``run(spec) -> record``.

An arm is one task family on which variants are compared (DESIGN.md, principle 3). Config,
runner, statistics, plots and report know arms only through this interface and the registry
below: adding an arm is one module with one ``@register_arm`` class, and nothing else changes.

    @register_arm
    class Toy(Arm):
        name = "toy"
        options = ToyOptions                      # a frozen dataclass: the [toy] table
        metrics = (Metric("loss", "lower", label="final loss", margin=0.01),)

        def run(self, spec):                      # spec: ablations.config.RunSpec
            o = self.parse_options(spec.config)
            ...
            return {"metrics": {"loss": ...}, "curve": [...]}

The built-in arms (``classifier``, ``llm``) register when first asked for by name, so
``import ablations`` stays light.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Metric", "TimeTarget", "Arm", "ArmError", "register_arm", "get_arm", "arm_names",
           "DIRECTIONS", "options_from_table"]

DIRECTIONS = ("higher", "lower", "none")


class ArmError(ValueError):
    """An arm's options or name are invalid; the message names the key."""


@dataclass(frozen=True)
class Metric:
    """One scalar a run reports, and how comparisons read it.

    name: the key in a record's ``metrics`` and the column of ``runs.csv``.
    direction: ``"higher"`` or ``"lower"`` is better, or ``"none"`` (no preferred direction:
        verdicts then say "higher"/"lower" instead of "better"/"worse").
    label: axis label and prose name. unit: the unit as reports print it after ``scale``
        (e.g. ``" pp"`` with ``scale = 100`` for an accuracy stored in 0–1).
    margin: the equivalence margin of TOST, in the metric's own (stored) unit; or None, with
        ``relative_margin`` a fraction of the baseline's mean instead (timings).
    compared: whether ``stats.csv`` compares it between variants.
    timing: a wall-clock figure, which differs between equal runs (every other metric is
        bit-reproducible on a CPU).
    """

    name: str
    direction: str
    label: str = ""
    unit: str = ""
    scale: float = 1.0
    margin: float | None = None
    relative_margin: float | None = None
    compared: bool = True
    timing: bool = False

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ArmError(f"metric {self.name!r}: direction must be one of "
                           f"{', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.margin is not None and not (self.margin > 0 and math.isfinite(self.margin)):
            raise ArmError(f"metric {self.name!r}: margin must be a positive number")

    @property
    def higher_is_better(self) -> bool | None:
        return {"higher": True, "lower": False, "none": None}[self.direction]

    @property
    def display(self) -> str:
        """The prose label (the name when no label is given)."""
        return self.label or self.name

    def tost_margin(self, baseline_mean: float) -> float:
        """The absolute equivalence margin, given the baseline's mean for relative margins."""
        if self.margin is not None:
            return self.margin
        rel = 0.05 if self.relative_margin is None else self.relative_margin
        v = abs(baseline_mean)
        return float(rel * v) if math.isfinite(v) and v > 0 else 1e-12


@dataclass(frozen=True)
class TimeTarget:
    """What a difficulty selection aims at: the Kaplan–Meier median of a validation
    time-to-target metric should sit near ``target``.

    time, event: the run metrics holding the time to the target and whether it was reached
        (e.g. ``epochs_to_90_val``, ``reached_90_val``); a run that never reached it is
        censored at its training length, the arm option named ``horizon`` (e.g. ``epochs``).
    target: the median aimed at, in the time metric's unit; source: where that value comes
        from, as the report prints it.
    """

    time: str
    event: str
    horizon: str
    target: float
    source: str = ""


def options_from_table(cls: type, table: Mapping[str, Any] | None, section: str) -> Any:
    """An options dataclass ``cls`` from a TOML table: unknown keys and values of the wrong
    type raise ValueError naming ``[section].key`` (a TOML integer is accepted for a float
    field; a bool is never an int); then the dataclass's own ``__post_init__`` validates
    values (raising ValueError)."""
    table = dict(table or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        raise ValueError(f"unknown key(s) in [{section}]: {', '.join(sorted(unknown))} "
                         f"(valid: {', '.join(sorted(fields))})")
    values = {}
    for key, value in table.items():
        default = fields[key].default
        want = type(default) if default is not dataclasses.MISSING else None
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif want is not None and want is not type(None) and (
                not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise ValueError(f"[{section}].{key} must be {want.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


class Arm(abc.ABC):
    """Base class of an arm. Subclasses set the class attributes and implement :meth:`run`.

    name: the arm's id (``[grid].arm`` of a config, ``arm`` of a record).
    options: a frozen dataclass; the config's table named after the arm fills it.
    numerics: version of the arm's numerics, part of every run's key: bump it when a code
        change alters the metrics of an unchanged spec, so stored runs become stale.
    batched_numerics: the version of the arm's seed-batched runs (:meth:`run_batch`, for a
        grid with ``[grid].seed_batched = true``), a series apart from ``numerics`` so that a
        batched run and a one-run run never share a key; None: the arm has no such path.
    metrics: every metric a run reports that reports should know about.
    resources: ``"cpu"`` (one process per core) or ``"gpu"`` (one process per GPU), the
        default of :meth:`resources_of`, which a grid's options may change.
    attentions: the values a cell's ``attention`` may take; the first is the default.
    cell_keys: the columns that define a cell: comparisons pair seeds within a cell only.
    baselines: the variants every other variant is compared with in ``stats.csv``.
    null_control: the null control's variant id (DESIGN.md: a negligible random perturbation
        that measures chaotic divergence), or None. Where a grid runs it, ``stats.csv`` also
        compares every variant with it, and reports set each effect beside its spread.
    curve_x, curve_value, curve_label: the learning curve's x column, value column and label.
    setup_exhibits, analyses: names of report exhibits (``ablations.exhibits``) shown after
        the setup paragraph and after the claims' sections.
    selection_metric: the validation metric every choice (lr, difficulty) reads, or None.
    selection_exhibits: the exhibits of a selection grid's report (``[grid].selection``):
        what it chose, from validation metrics only.
    difficulty: the :class:`TimeTarget` a difficulty selection aims at (one task per level
        of a selection grid), or None.
    reference_grid: the grid (config stem under ablations/configs and folder under results/)
        whose runs and reference lr the theory suite reads for this arm ("": the arm's name).
    """

    name: ClassVar[str] = ""
    options: ClassVar[type] = type(None)
    numerics: ClassVar[int] = 0
    batched_numerics: ClassVar[int | None] = None
    metrics: ClassVar[tuple[Metric, ...]] = ()
    resources: ClassVar[str] = "cpu"
    attentions: ClassVar[tuple[str, ...]] = ("none",)
    cell_keys: ClassVar[tuple[str, ...]] = ("attention", "lr")
    baselines: ClassVar[tuple[str, ...]] = ("adamw", "sin-l0.5")
    null_control: ClassVar[str | None] = "gauss-l0.001"
    curve_x: ClassVar[str] = "epoch"
    curve_value: ClassVar[str] = "train_loss"
    curve_label: ClassVar[str] = "training loss"
    setup_exhibits: ClassVar[tuple[str, ...]] = ()
    analyses: ClassVar[tuple[str, ...]] = ("perturbation", "curves")
    selection_metric: ClassVar[str | None] = None
    selection_exhibits: ClassVar[tuple[str, ...]] = ("lr_sensitivity",)
    difficulty: ClassVar[TimeTarget | None] = None
    reference_grid: ClassVar[str] = ""

    # ------------------------------------------------------------------ options
    def check_spec(self, spec) -> None:
        """Refuse, with ``ValueError`` naming the option, a run whose options do not apply
        to its variant or attention (called for every run when the config loads, before any
        work starts). The default accepts every run."""
        return None

    def parse_options(self, table: Mapping[str, Any] | None) -> Any:
        """The options dataclass from a config table (:func:`options_from_table`), errors as
        :class:`ArmError` naming ``[arm].key``."""
        if not dataclasses.is_dataclass(self.options):
            if table:
                raise ArmError(f"[{self.name}] takes no options, got {', '.join(sorted(table))}")
            return None
        try:
            return options_from_table(self.options, table, self.name)
        except (TypeError, ValueError) as err:
            msg = str(err)
            raise ArmError(msg if msg.startswith(("unknown key", f"[{self.name}]"))
                           else f"[{self.name}]: {msg}") from None

    # ------------------------------------------------------------------ metrics
    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"arm {self.name!r} has no metric {name!r} "
                       f"(metrics: {', '.join(m.name for m in self.metrics)})")

    @property
    def compared_metrics(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.compared)

    @property
    def timing_metrics(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics if m.timing)

    def directions(self) -> dict[str, bool | None]:
        """metric → higher is better (True/False) or None."""
        return {m.name: m.higher_is_better for m in self.metrics}

    # ------------------------------------------------------------------ running
    @abc.abstractmethod
    def run(self, spec) -> dict[str, Any]:
        """Train and evaluate one spec; return ``{"metrics": {...}, "curve": [...]}`` and
        optionally ``"device"`` (a name for the provenance). Pure: everything it depends on is
        in ``spec`` (variant, attention, seed, lr, config)."""

    def seed_batched_by_default(self, options) -> bool:
        """Whether a grid of the parsed ``options`` that leaves ``[grid].seed_batched`` unset
        runs seed-batched: where this arm's batched path is measured faster and the default
        changes no stored record. The default: never (and never without ``batched_numerics``)."""
        return False

    def resources_of(self, options) -> str:
        """Where runs of the parsed ``options`` train, ``"cpu"`` or ``"gpu"`` (the runner's
        worker layout, :func:`ablations.runner.worker_layout`): this arm's :attr:`resources`,
        unless an arm's options choose its device (the classifier's ``device``)."""
        return self.resources

    def run_batch(self, specs) -> list:
        """Train ``specs``, the runs of one cell (they differ in their seeds only), at once;
        return per spec, in order, what :meth:`run` returns for it, or the exception that
        ended that run (the others go on). This default runs them one after another with
        :meth:`run`; an arm with a real seed-batched path (``batched_numerics``, the only
        arms a grid may batch) overrides it."""
        out: list = []
        for spec in specs:
            try:
                out.append(self.run(spec))
            except Exception as err:  # that run ended; the others go on
                out.append(err)
        return out

    # ------------------------------------------------------------------ reporting
    def describe(self, cfg, runs) -> str:
        """The report's setup paragraph, from the grid config (``cfg.arm_options`` parsed,
        ``cfg.options`` as written) and the runs table."""
        import json

        return (f"Arm `{self.name}`, reference lr {cfg.baseline_lr:g}, options "
                f"`{json.dumps(cfg.options, sort_keys=True)}`.\n")

    def ledger_note(self, cfg) -> str:
        """A sentence the claims ledger prints under its table for this grid's claims (how
        the grid's setting departs from the paper's, e.g. a model standing in for the
        paper's), or "" for none. Grids with the same note share one line."""
        return ""


    def __repr__(self) -> str:
        return f"<arm {self.name}>"


_REGISTRY: dict[str, Arm] = {}
#: built-in arms, imported when first asked for by name (their modules import torch)
_BUILTIN = {"classifier": "ablations.arms.classifier", "llm": "ablations.arms.llm"}


def register_arm(cls: type[Arm]) -> type[Arm]:
    """Class decorator: make an instance of ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ArmError(f"{cls.__name__} has no name")
    names = [m.name for m in cls.metrics]
    if len(set(names)) != len(names):
        raise ArmError(f"arm {cls.name!r} lists a metric twice: {names}")
    if not cls.attentions:
        raise ArmError(f"arm {cls.name!r} has no attentions")
    _REGISTRY[cls.name] = cls()
    return cls


def arm_names() -> list[str]:
    """Every arm's name, the built-in ones included."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def get_arm(name: str) -> Arm:
    """The registered arm of that name; an unknown name raises ArmError listing the valid."""
    if not isinstance(name, str):
        raise ArmError(f"arm must be a name, got {name!r} (valid: {', '.join(arm_names())})")
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ArmError(f"unknown arm {name!r} (valid: {', '.join(arm_names())})")
    return _REGISTRY[name]
