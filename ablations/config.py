"""Grid configs: a TOML file in, frozen run specs out.

A config has one ``[grid]`` table, one table of arm options named after the arm, and one or more
``[[cells]]``. Each cell crosses its variants, seeds and learning rates::

    [grid]
    arm = "classifier"            # or "llm"
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

Typos fail loudly: an unknown key or variant id names the file (and the line, for TOML syntax).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsgd.perturbations import noise_key
from qsgd.variants import parse_variant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "RunSpec", "GridConfig", "load_config", "expand", "derived_seeds"]

ARMS = ("classifier", "llm")
ATTENTIONS = ("quantum", "classical", "none")
_GRID_KEYS = {"arm", "name", "results", "baseline_lr", "description"}
_CELL_KEYS = {"name", "attention", "variants", "seeds", "lr"}


class ConfigError(ValueError):
    """A config file is malformed; the message names the file and what is wrong."""


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

    @property
    def config(self) -> dict[str, Any]:
        """The arm options as a plain dict."""
        return _thaw(self.options) if self.options else {}

    def as_dict(self) -> dict[str, Any]:
        d = dict(arm=self.arm, variant=self.variant, attention=self.attention,
                 seed=self.seed, lr=self.lr, config=self.config)
        if self.numerics:  # absent at 0, so arms without a version keep their old keys
            d["numerics"] = self.numerics
        return d

    @property
    def key(self) -> str:
        """Hash of the whole spec: a changed option gives a new key, so runs never mix."""
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return (f"{self.arm}-{self.attention}-{self.variant}-lr{self.lr:g}-s{self.seed}"
                f"-{self.key[:8]}")


@dataclass(frozen=True)
class GridConfig:
    path: Path
    arm: str
    name: str
    results: Path
    baseline_lr: float
    options: dict[str, Any]
    specs: tuple[RunSpec, ...]
    cells: tuple[dict[str, Any], ...]


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{where}: seeds must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and all(isinstance(s, int) for s in value) and value:
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: seeds list has duplicates: {value}")
        return value
    raise ConfigError(f"{where}: seeds must be a positive count or a list of ints, got {value!r}")


def load_config(path: str | Path, results: str | Path | None = None) -> GridConfig:
    """Parse and validate a grid config; ``results`` overrides ``[grid].results``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None
    grid = raw.get("grid")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: missing [grid] table")
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [grid]: {', '.join(sorted(unknown))} "
                          f"(valid: {', '.join(sorted(_GRID_KEYS))})")
    arm = grid.get("arm")
    if arm not in ARMS:
        raise ConfigError(f"{path}: [grid].arm must be one of {', '.join(ARMS)}, got {arm!r}")
    top_unknown = set(raw) - {"grid", "cells", arm}
    if top_unknown:
        raise ConfigError(f"{path}: unknown table(s): {', '.join(sorted(top_unknown))} "
                          f"(valid: grid, cells, {arm})")
    options = raw.get(arm, {})
    _check_arm_options(arm, options, path)
    baseline_lr = float(grid.get("baseline_lr", options.get("lr", 1e-3)))
    cells = raw.get("cells")
    if not isinstance(cells, list) or not cells:
        raise ConfigError(f"{path}: at least one [[cells]] table is required")
    frozen_opts = _freeze(options)
    numerics = int(getattr(importlib.import_module(f"ablations.{arm}"), "NUMERICS", 0))
    specs: dict[str, RunSpec] = {}
    for i, cell in enumerate(cells):
        where = f"{path}: cells[{i}]" + (f" ({cell['name']})" if "name" in cell else "")
        unknown = set(cell) - _CELL_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))} "
                              f"(valid: {', '.join(sorted(_CELL_KEYS))})")
        if "variants" not in cell:
            raise ConfigError(f"{where}: 'variants' is required")
        for vid in _as_list(cell["variants"]):
            try:
                parse_variant(vid)
            except ValueError as err:
                raise ConfigError(f"{where}: {err}") from None
        attentions = _as_list(cell.get("attention", "none" if arm == "llm" else "quantum"))
        for a in attentions:
            if a not in ATTENTIONS:
                raise ConfigError(f"{where}: attention {a!r} is not one of "
                                  f"{', '.join(ATTENTIONS)}")
        lrs = [float(x) for x in _as_list(cell.get("lr", baseline_lr))]
        for lr in lrs:
            if not lr > 0:
                raise ConfigError(f"{where}: lr must be > 0, got {lr}")
        for a in attentions:
            for vid in _as_list(cell["variants"]):
                for lr in lrs:
                    for seed in _seeds(cell.get("seeds", 1), where):
                        spec = RunSpec(arm, vid, a, seed, lr, frozen_opts, numerics)
                        specs.setdefault(spec.key, spec)
    res = Path(results) if results is not None else Path(grid.get("results", f"results/{arm}"))
    return GridConfig(path=path, arm=arm, name=str(grid.get("name", arm)), results=res,
                      baseline_lr=baseline_lr, options=options, specs=tuple(specs.values()),
                      cells=tuple(cells))


def _check_arm_options(arm: str, options: Any, path: Path) -> None:
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: [{arm}] must be a table")
    module = importlib.import_module(f"ablations.{arm}")
    opts = getattr(module, f"{arm.upper() if arm == 'llm' else arm.capitalize()}Options", None)
    if opts is None:
        return
    valid = set(opts.__dataclass_fields__)
    unknown = set(options) - valid
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [{arm}]: {', '.join(sorted(unknown))} "
                          f"(valid: {', '.join(sorted(valid))})")


def derived_seeds(seed: int) -> dict[str, int]:
    """Independent streams of one run seed, shared by every arm: data order, init, noise."""
    return {name: noise_key(seed, 0, 0, stream) % (2**31 - 1)
            for stream, name in enumerate(("order", "init", "noise"), start=1)}


def expand(specs: Iterable[RunSpec]) -> list[RunSpec]:
    """Specs in a stable execution order (slow cells spread out by seed first)."""
    return sorted(specs, key=lambda s: (s.seed, s.attention, s.variant, s.lr))
