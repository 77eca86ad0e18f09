"""A third arm, defined here only, runs a grid, its statistics, a report section and a ledger row
without any other file changing: config, runner, stats, report and ledger know arms and claims
only through their registries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from ablations.arms import Arm, ArmError, Metric, arm_names, get_arm, register_arm
from ablations.claims import Claim, Evidence, claims, get_claim, judge_paired, register_claim
from ablations.config import ConfigError, load_config
from ablations.report import render_arm, render_ledger
from ablations.runner import run_grid


@dataclass(frozen=True)
class ToyOptions:
    """A least-squares problem: n points in d dimensions, steps of the optimizer."""

    n: int = 32
    d: int = 4
    steps: int = 30
    noise: float = 0.1

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@register_arm
class Toy(Arm):
    name = "toy"
    options = ToyOptions
    metrics = (Metric("final_loss", "lower", "final loss", margin=0.05),
               Metric("perturbation_ratio", "none", "ratio", compared=False),
               Metric("seconds", "lower", "seconds", timing=True, compared=False))
    curve_x = "step"

    def run(self, spec):
        import time

        from qsgd import SuperpositionalAdamW, parse_variant

        o = self.parse_options(spec.config)
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(1000 + spec.seed)
        x = torch.randn(o.n, o.d, generator=g, dtype=torch.float64)
        y = x @ torch.ones(o.d, dtype=torch.float64) + o.noise * torch.randn(
            o.n, generator=g, dtype=torch.float64)
        w = torch.zeros(o.d, dtype=torch.float64, requires_grad=True)
        opt = SuperpositionalAdamW([w], lr=spec.lr, seed=spec.seed, track_ratio=True,
                                   **parse_variant(spec.variant).optimizer_kwargs())
        curve = []
        for step in range(1, o.steps + 1):
            loss = ((x @ w - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append({"step": step, "train_loss": float(loss)})
        return {"metrics": {"final_loss": curve[-1]["train_loss"],
                            "perturbation_ratio": opt.perturbation_ratio(),
                            "seconds": time.perf_counter() - t0},
                "curve": curve}


CONFIG = """
[grid]
arm = "toy"
name = "toy"
baseline_lr = 0.1

[toy]
steps = {steps}

[[cells]]
variants = ["adamw", "sin-l0.5", "gauss-l0.5"]
seeds = 4
"""


@pytest.fixture
def toy_claim():
    claim = register_claim(Claim(
        "X1", "a toy claim: the sine lowers the final loss", "none (toy)", "toy", judge_paired,
        title="final loss", metric="final_loss", variant="sin-l0.5", baseline="adamw",
        claimed=-0.1, exhibits=("comparisons", "paired")))
    yield claim
    from ablations import claims as registry

    registry._CLAIMS.pop("X1")


def test_toy_arm_grid_stats_report_and_ledger(tmp_path, toy_claim):
    path = tmp_path / "toy.toml"
    path.write_text(CONFIG.format(steps=30))
    cfg = load_config(path, results=tmp_path / "results" / "toy")
    assert cfg.arm_options == ToyOptions(steps=30) and len(cfg.specs) == 12
    assert {s.attention for s in cfg.specs} == {"none"}
    # the default executor: spawned workers import this module, so the toy arm registers there
    counts = run_grid(cfg, progress=False)
    assert counts["ran"] == 12
    text = render_arm(cfg).read_text()
    assert "## X1: final loss" in text and "Verdict: **" in text
    assert "![paired_final_loss](figures/paired_final_loss.png)" in text
    assert "## Learning curves" in text
    out = tmp_path / "results" / "toy"
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["metric"]) == {"final_loss"}
    assert set(stats["variant"]) == {"sin-l0.5", "gauss-l0.5", "adamw"}
    assert (stats["tost_margin"] == 0.05).all()
    row = stats[(stats["variant"] == "sin-l0.5") & (stats["baseline"] == "adamw")].iloc[0]
    assert row["n"] == 4 and math.isfinite(row["diff"])
    stored = json.loads((out / "claims.json").read_text())
    assert stored["arm"] == "toy" and stored["grid"] == "toy" and stored["protocol"] == "earlier"
    stored = stored["claims"]
    again = get_claim("X1").verdict(Evidence(stats=stats, lr=0.1)).verdict
    assert set(stored) == {"X1"} and stored["X1"]["verdict"] == again
    for png in ("paired_final_loss.png", "learning_curves.png"):
        assert (out / "figures" / png).stat().st_size > 1000
    ledger = render_ledger(tmp_path / "results").read_text()
    toy_rows = [line for line in ledger.splitlines() if line.startswith("| X1 |")]
    assert len(toy_rows) == 1 and stored["X1"]["verdict"] in toy_rows[0]
    assert "the classifier arm has not run yet" in ledger
    assert "`toy/report.md` (X1)" in ledger


def test_toy_arm_options_are_validated_when_the_config_loads(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(CONFIG.format(steps=0))
    with pytest.raises(ConfigError, match=r"toy\.toml: \[toy\]: steps must be >= 1, got 0"):
        load_config(path)
    path.write_text(CONFIG.format(steps='"many"'))
    with pytest.raises(ConfigError, match=r"\[toy\]\.steps must be int, got 'many'"):
        load_config(path)
    path.write_text(CONFIG.format(steps=3).replace('variants = ["adamw"', 'attention = '
                                                   '"quantum"\nvariants = ["adamw"'))
    with pytest.raises(ConfigError, match=r"attention 'quantum' is not one of none \(arm toy\)"):
        load_config(path)


def test_registry_lists_and_rejects():
    assert {"classifier", "llm", "toy"} <= set(arm_names())
    assert get_arm("toy").metric("final_loss").higher_is_better is False
    # every registered arm is named, in order (other test modules register arms of their own)
    with pytest.raises(ArmError, match=r"unknown arm 'nope' \(valid: classifier, (\w+, )*llm"):
        get_arm("nope")
    with pytest.raises(ArmError, match="direction must be one of higher, lower, none"):
        Metric("x", "up")
    assert [c.id for c in claims()][:7] == [f"C{i}" for i in range(1, 8)]
