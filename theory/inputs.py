"""What the theory checks read from outside the code, and the one function that reads it.

Every check is a function ``fn(size, inputs)`` (:mod:`theory.base`): ``inputs`` is a
:class:`TheoryInputs` holding everything it needs that is not code: the arms' runs tables, the
arms' reference learning rates and the paper's claims. :func:`load_inputs` is the only place
of the suite that reads files for them (``python -m theory run`` calls it once); no theory
module reads a file when imported or inside a check, so a check runs on hand-made inputs::

    inputs = TheoryInputs(runs={"classifier": runs_df}, lr={"classifier": 1e-3})
    t8_power("small", inputs)

What :func:`load_inputs` reads:

* ``<results_root>/<grid>/runs.csv`` of every registered arm (:func:`ablations.arms.arm_names`),
  ``<grid>`` its ``reference_grid`` (the classifier arm: ``classifier-paper``, the paper
  protocol's grid; the llm arm: ``llm-calibrated``) or else its name; else
  that grid's ``runs.jsonl`` (a grid still running: flattened with
  :func:`ablations.tables.runs_table`, the newest record of each run kept), else nothing;
* the arm's reference learning rate, ``baseline_lr`` of ``ablations/configs/<grid>.toml``
  (:func:`ablations.config.load_config`: for llm-calibrated, AdamW's lr selected on
  validation by llm-lr; none while that selection is pending);
* the claims registry (:mod:`ablations.claims`): the paper's effects, metrics, cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas and the claims registry load only when inputs are built
    import pandas as pd

    from ablations.claims import Claim

__all__ = ["ArmRuns", "TheoryInputs", "load_inputs", "load_arm_runs", "CONFIGS_DIR"]

#: where the arms' grid configs live (the reference learning rates are read from them)
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "ablations" / "configs"
#: the columns that identify a run of a grid (a newer record of the same run replaces it)
_RUN_KEYS = ("variant", "attention", "lr", "seed")


@dataclass(frozen=True)
class ArmRuns:
    """One arm's runs table and where it came from.

    table: one row a run (identity columns and metrics, as ``runs.csv``).
    source: where it was read from, as the reports print it.
    complete: True when read from ``runs.csv`` (a finished grid), False for a table
        flattened from the ``runs.jsonl`` of a grid that may still be running.
    """

    table: pd.DataFrame
    source: str = "given"
    complete: bool = True


def _registry_claims() -> dict[str, Claim]:
    from ablations.claims import claims

    return {c.id: c for c in claims()}


@dataclass(frozen=True)
class TheoryInputs:
    """Everything the checks read that is not code.

    runs: arm name → its runs (:class:`ArmRuns`, or a bare DataFrame, taken as a complete
        table), or None when the arm has not run; an arm that is absent has not run either.
    lr: arm name → the arm's reference learning rate (its config's ``baseline_lr``).
    claims: claim id → :class:`ablations.claims.Claim` (default: the whole registry).
    """

    runs: Mapping[str, ArmRuns | pd.DataFrame | None] = field(default_factory=dict)
    lr: Mapping[str, float] = field(default_factory=dict)
    claims: Mapping[str, Claim] = field(default_factory=_registry_claims)

    def __post_init__(self):
        import pandas as pd

        runs = {arm: ArmRuns(r) if isinstance(r, pd.DataFrame) else r
                for arm, r in dict(self.runs).items()}
        for arm, r in runs.items():
            if r is not None and not isinstance(r, ArmRuns):
                raise TypeError(f"TheoryInputs.runs[{arm!r}] must be ArmRuns, a DataFrame or "
                                f"None, got {type(r).__name__}")
        object.__setattr__(self, "runs", runs)  # frozen: normalised once, here

    def runs_of(self, arm: str) -> ArmRuns | None:
        """The arm's runs, or None when it has not run."""
        return self.runs.get(arm)

    def reference_lr(self, arm: str) -> float:
        """The arm's reference learning rate; a missing one raises KeyError naming the arm."""
        if arm not in self.lr:
            raise KeyError(f"TheoryInputs has no reference learning rate of arm {arm!r} "
                           f"(have: {', '.join(sorted(self.lr)) or 'none'}; load_inputs reads "
                           f"it from ablations/configs/{_grid(arm)}.toml)")
        return float(self.lr[arm])

    def claim(self, claim_id: str) -> Claim:
        """The claim of that id; a missing one raises KeyError naming it."""
        if claim_id not in self.claims:
            raise KeyError(f"TheoryInputs has no claim {claim_id!r} "
                           f"(have: {', '.join(self.claims) or 'none'})")
        return self.claims[claim_id]


def _grid(arm: str) -> str:
    """The grid the suite reads for ``arm``: its ``reference_grid``, else its name."""
    from ablations.arms import ArmError, get_arm

    try:
        return get_arm(arm).reference_grid or arm
    except ArmError:
        return arm


def load_arm_runs(results_root: str | Path, arm: str) -> ArmRuns | None:
    """``<results_root>/<grid>/runs.csv`` of the arm's reference grid (``Arm.reference_grid``,
    else the arm's name); else its ``runs.jsonl`` flattened (a grid still running: the newest
    record per run kept, torn lines skipped); else None."""
    import pandas as pd

    from ablations.records import RUNS_FILE, load_records
    from ablations.tables import runs_table

    root = Path(results_root)
    grid = _grid(arm)
    csv_path = root / grid / "runs.csv"
    if csv_path.is_file():
        return ArmRuns(pd.read_csv(csv_path), str(csv_path), complete=True)
    jl = root / grid / RUNS_FILE
    df = runs_table(load_records(jl))
    if df.empty:
        return None
    keys = [k for k in _RUN_KEYS if k in df.columns]
    df = df.drop_duplicates(subset=keys, keep="last")
    return ArmRuns(df, f"{jl} ({len(df)} runs; no runs.csv yet, the grid may be incomplete)",
                   complete=False)


def load_inputs(results_root: str | Path = "results",
                configs: str | Path = CONFIGS_DIR) -> TheoryInputs:
    """Read every input of the checks (module docstring): the runs of every registered arm
    under ``results_root``, each arm's reference learning rate from ``configs/<arm>.toml``
    (arms without a config there get none), and the claims registry. A malformed config
    raises :class:`ablations.config.ConfigError` naming the file."""
    from ablations.arms import arm_names
    from ablations.config import SelectionPending, load_config

    runs: dict[str, Any] = {}
    lr: dict[str, float] = {}
    for arm in arm_names():
        runs[arm] = load_arm_runs(results_root, arm)
        path = Path(configs) / f"{_grid(arm)}.toml"
        if path.is_file():
            try:
                lr[arm] = float(load_config(path).baseline_lr)
            except SelectionPending:  # its lr is chosen by a grid that has not finished
                pass
    return TheoryInputs(runs=runs, lr=lr, claims=_registry_claims())
