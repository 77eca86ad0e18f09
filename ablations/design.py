"""Pre-registered claim designs: the ``[claims.<id>]`` tables of a grid config.

A grid that judges a claim states, before its runs, how it will be judged: the equivalence
margin of the TOST, the Holm family the claim's p value is adjusted over, the paired seeds it
runs, the power they are meant to have and the pilot spread they were computed from::

    [claims.C1]
    margin = 0.01                  # TOST margin, the metric's stored unit (here ±1 pp)
    family = ["sin-l0.5", "sin-l0.1", "moment-l0.5"]  # Holm over these against the baseline
    seeds = 45                     # paired seeds of the claim's variant and baseline
    power = 0.8                    # the TOST power the seeds are for (true difference 0)
    pilot_sd = 0.0217              # sd of the paired differences in the pilot
    pilot = "results/classifier, earlier protocol, 20 seeds"   # where pilot_sd comes from

Every key is optional; a claim reads only the keys its verdict uses
(:attr:`ablations.claims.Claim.design_keys`: the paired claims all of them, C3 ``family`` and
``seeds``, the time-to-target and cost claims ``seeds``). The table is validated when the
config loads (:func:`claim_designs`), with one line naming the file and key: the claim must
be one of the grid's arm; the family's variants must run in the claim's cell; the cells
must run at least ``seeds`` common seeds of the claim's variant and baseline; and ``seeds``
must reach the power that ``pilot_sd`` asks for (:func:`ablations.stats.tost_seeds_needed`),
so a grid cannot be under-powered by design without saying so. The report prints the design
beside what the runs achieved (:meth:`Design.text`).

A grid without a table for a claim judges it as before: the metric's own margin (the arm's),
Holm over every comparison with the baseline in ``stats.csv``, no pre-registered seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Design", "DESIGN_KEYS", "claim_designs"]

#: every key a ``[claims.<id>]`` table may hold (a claim accepts a subset)
DESIGN_KEYS = ("margin", "family", "seeds", "power", "pilot_sd", "pilot")


@dataclass(frozen=True)
class Design:
    """One claim's pre-registered design (``[claims.<id>]``); see the module docstring.

    margin: the TOST margin (metric's stored unit), or None (the metric's own).
    family: the variants whose comparisons with the claim's baseline, in the claim's cell and
        on its metric, form the Holm family of the claim's p value; () for the stats table's
        family (every comparison with the baseline on the metric).
    seeds: the pre-registered number of paired seeds, or None.
    power: the target power: a TOST whose achieved power is below it is under-powered.
    pilot_sd: the sd of the paired differences that ``seeds`` was computed from, or None.
    pilot: where ``pilot_sd`` was measured (free text, printed in the report).
    """

    claim: str
    margin: float | None = None
    family: tuple[str, ...] = ()
    seeds: int | None = None
    power: float = 0.8
    pilot_sd: float | None = None
    pilot: str = ""

    def seeds_needed(self, sd: float, margin: float | None = None) -> float:
        """The paired seeds that paired differences of sd ``sd`` need for ``power`` in a TOST
        at ±``margin`` (default: this design's margin; true difference 0)
        (:func:`ablations.stats.tost_seeds_needed`); NaN without a margin."""
        margin = self.margin if margin is None else margin
        if margin is None:
            return math.nan
        from .stats import tost_seeds_needed

        return tost_seeds_needed(margin, sd, self.power)

    @property
    def pilot_seeds(self) -> float:
        """The paired seeds that ``pilot_sd`` needs for ``power`` in a TOST at ±margin (true
        difference 0); NaN without a pilot."""
        if self.pilot_sd is None:
            return math.nan
        return self.seeds_needed(self.pilot_sd)

    def text(self, scale: float = 1.0, unit: str = "") -> str:
        """The design in one clause, e.g. "pre-registered n = 45 from pilot sd 0.0217
        (results/classifier, 20 seeds) at ±1 pp, 80% TOST power (the pilot needs 42)"; ""
        when nothing is pre-registered."""
        parts = []
        if self.seeds is not None:
            parts.append(f"pre-registered n = {self.seeds}")
        if self.pilot_sd is not None:
            where = f" ({self.pilot})" if self.pilot else ""
            parts.append(f"from pilot sd {self.pilot_sd * scale:.3g}{unit}{where}")
        if self.margin is not None:
            parts.append(f"at ±{self.margin * scale:g}{unit}, {self.power:.0%} TOST power")
        need = self.pilot_seeds
        if math.isfinite(need):
            parts.append(f"(the pilot needs {int(need)})")
        if self.family:
            parts.append(f"; Holm family: {', '.join(self.family)}")
        return " ".join(parts).replace(" ;", ";")


def _number(value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if not lo < value < hi:
        bounds = f"> {lo:g}" if hi == math.inf else f"in ({lo:g}, {hi:g})"
        raise ValueError(f"{where} must be {bounds}, got {value!r}")
    return float(value)


def _family(value: Any, where: str, claim) -> tuple[str, ...]:
    from qsgd.variants import canonical_id

    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a non-empty list of variant ids, got {value!r}")
    out: list[str] = []
    for vid in value:
        try:
            canon = canonical_id(vid)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if canon in out:
            raise ValueError(f"{where} lists {canon!r} twice")
        out.append(canon)
    if claim.variant not in out:
        raise ValueError(f"{where} must contain the claim's own variant {claim.variant!r}")
    if claim.baseline in out:
        raise ValueError(f"{where} holds the claim's baseline {claim.baseline!r}: the family "
                         "is of comparisons with it")
    return tuple(out)


def _seeds_in_cell(specs: Iterable, claim, lr: float) -> dict[str, dict[str, set[int]]]:
    """task → variant → the seeds run in the claim's cell (its fixed keys and the lr)."""
    fixed = dict(claim.cell)
    out: dict[str, dict[str, set[int]]] = {}
    for s in specs:
        if "attention" in fixed and s.attention != fixed["attention"]:
            continue
        if not math.isclose(s.lr, lr, rel_tol=1e-9):
            continue
        out.setdefault(s.task, {}).setdefault(s.variant, set()).add(s.seed)
    return out


def _cell_text(claim, lr: float) -> str:
    return ", ".join([f"{k} {v}" for k, v in claim.cell] + [f"lr {lr:g}"])


def _design(claim, table: Mapping[str, Any], where: str, seeds_of: dict, lr: float) -> Design:
    unknown = set(table) - set(claim.design_keys)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (valid for "
                         f"{claim.id}: {', '.join(claim.design_keys) or 'none'})")
    values: dict[str, Any] = {}
    if "margin" in table:
        values["margin"] = _number(table["margin"], f"{where}.margin")
    if "power" in table:
        values["power"] = _number(table["power"], f"{where}.power", hi=1.0)
    if "pilot_sd" in table:
        values["pilot_sd"] = _number(table["pilot_sd"], f"{where}.pilot_sd")
    if "pilot" in table:
        if not isinstance(table["pilot"], str):
            raise ValueError(f"{where}.pilot must be a string, got {table['pilot']!r}")
        values["pilot"] = table["pilot"]
    section = f"[claims.{claim.id}]"  # the second key a message names, without the file
    for key in ("power", "pilot_sd"):
        if key in values and "margin" not in values:
            raise ValueError(f"{where}.{key} needs {section}.margin (the TOST it is the power "
                             "of)")
    if "pilot" in values and "pilot_sd" not in values:
        raise ValueError(f"{where}.pilot names a pilot but {section}.pilot_sd gives no spread")
    if "family" in table:
        values["family"] = _family(table["family"], f"{where}.family", claim)
        for vid in values["family"]:
            if not any(vid in by_variant for by_variant in seeds_of.values()):
                raise ValueError(f"{where}.family: {vid!r} has no runs in the claim's cell "
                                 f"({_cell_text(claim, lr)})")
    if "seeds" in table:
        n = table["seeds"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"{where}.seeds must be an integer >= 2, got {n!r}")
        common = max((len(v.get(claim.variant, set()) & v.get(claim.baseline, set()))
                      for v in seeds_of.values()), default=0)
        if common < n:
            raise ValueError(f"{where}.seeds = {n}, but the cells run {claim.variant} and "
                             f"{claim.baseline} on {common} common seeds in the claim's cell "
                             f"({_cell_text(claim, lr)})")
        values["seeds"] = n
    design = Design(claim.id, **values)
    need = design.pilot_seeds
    if "pilot_sd" in values and "seeds" not in values:
        raise ValueError(f"{where}.pilot_sd needs {section}.seeds (the seeds it was computed "
                         "for)")
    if math.isfinite(need) and design.seeds is not None and design.seeds < need:
        raise ValueError(f"{where}.seeds = {design.seeds} is below the {int(need)} paired "
                         f"seeds that pilot_sd {design.pilot_sd:g} needs for "
                         f"{design.power:.0%} TOST power at ±{design.margin:g}")
    return design


def claim_designs(path: Path, table: Any, arm: str, specs: Iterable,
                  lr: float) -> dict[str, Design]:
    """The ``[claims]`` table of a config as claim id → :class:`Design`, validated against
    the registered claims of ``arm`` and the grid's run specs at its reference ``lr``;
    ``{}`` without a table. Raises ValueError with one line naming ``path`` and the key
    (the config loader turns it into a ConfigError)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [claims] must be a table of [claims.<id>] tables")
    from .claims import claims_for

    mine = {c.id: c for c in claims_for(arm)}
    specs = list(specs)
    out: dict[str, Design] = {}
    for cid, sub in table.items():
        where = f"{path}: [claims.{cid}]"
        if cid not in mine:
            raise ValueError(f"{where}: no claim {cid!r} of arm {arm} (its claims: "
                             f"{', '.join(mine) or 'none'})")
        if not isinstance(sub, dict):
            raise ValueError(f"{where} must be a table, got {sub!r}")
        claim = mine[cid]
        out[cid] = _design(claim, sub, where, _seeds_in_cell(specs, claim, lr), lr)
    margins: dict[str, tuple[str, float]] = {}  # stats.csv holds one margin per metric
    for cid, d in out.items():
        metric = mine[cid].metric
        if d.margin is None:
            continue
        other = margins.setdefault(metric, (cid, d.margin))
        if other[1] != d.margin:
            raise ValueError(f"{path}: [claims.{cid}].margin = {d.margin:g} differs from "
                             f"[claims.{other[0]}].margin = {other[1]:g} on the same metric "
                             f"{metric}")
    return out
