"""The pre-registered claim designs of a config (``[claims.<id>]``, ablations/design.py): a bad
one fails when the config loads, with one line naming the file and the key; a good one
reaches the claims (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablations import claims as claims_module
from ablations.claims import Claim, judge_paired
from ablations.config import ConfigError, load_config, read_toml
from ablations.design import Design

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "ablations" / "configs"

GRID = """
[grid]
arm = "classifier"
results = "{results}"
baseline_lr = 1e-3

[[cells]]
attention = "quantum"
variants = ["adamw", "sin-l0.5", "sin-l0.1"]
seeds = 45

[[cells]]
attention = "classical"
variants = ["cos-l0.5"]
seeds = 45

{claims}
"""


def write(tmp_path, claims: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(results=tmp_path / "res", claims=claims))
    return path


def test_a_design_loads_and_is_canonical(tmp_path):
    cfg = load_config(write(tmp_path, """
[claims.C1]
margin = 0.01
family = ["sin-l0.50", "sin-l0.1"]
seeds = 45
power = 0.8
pilot_sd = 0.0217
pilot = "results/classifier"

[claims.C2]
seeds = 45
"""))
    assert cfg.designs == {
        "C1": Design("C1", margin=0.01, family=("sin-l0.5", "sin-l0.1"), seeds=45, power=0.8,
                     pilot_sd=0.0217, pilot="results/classifier"),
        "C2": Design("C2", seeds=45)}
    assert cfg.designs["C1"].pilot_seeds == 42.0
    assert load_config(write(tmp_path, "")).designs == {}


@pytest.mark.parametrize("claims, message", [
    ("[claims.C9]\nseeds = 2", r"\[claims\.C9\]: no claim 'C9' of arm classifier \(its claims: "
                               r"C1, C2, C3, C4, C5\)"),
    ("[claims.C6]\nseeds = 2", r"no claim 'C6' of arm classifier"),
    ("[claims]\nC1 = 3", r"\[claims\.C1\] must be a table, got 3"),
    ("[claims.C2]\nmargin = 1.0", r"\[claims\.C2\]: unknown key\(s\) margin \(valid for C2: "
                                  r"seeds\)"),
    ("[claims.C1]\nmargins = 0.01", r"unknown key\(s\) margins \(valid for C1: margin, family, "
                                    r"seeds, power, pilot_sd, pilot\)"),
    ('[claims.C1]\nmargin = "1pp"', r"\[claims\.C1\]\.margin must be a finite number, got '1pp'"),
    ("[claims.C1]\nmargin = -0.01", r"\[claims\.C1\]\.margin must be > 0, got -0\.01"),
    ("[claims.C1]\nmargin = inf", r"\[claims\.C1\]\.margin must be a finite number, got inf"),
    ("[claims.C1]\nmargin = 0.01\npower = 1.2",
     r"\[claims\.C1\]\.power must be in \(0, 1\), got 1\.2"),
    ("[claims.C1]\npower = 0.8", r"\[claims\.C1\]\.power needs \[claims\.C1\]\.margin"),
    ("[claims.C1]\npilot_sd = 0.02\nseeds = 45", r"\.pilot_sd needs \[claims\.C1\]\.margin"),
    ("[claims.C1]\nmargin = 0.01\npilot_sd = 0.02", r"\.pilot_sd needs \[claims\.C1\]\.seeds"),
    ('[claims.C1]\npilot = "x"', r"\[claims\.C1\]\.pilot names a pilot but \[claims\.C1\]\."
                                 r"pilot_sd gives no spread"),
    ("[claims.C1]\nmargin = 0.01\npilot_sd = 0.02\npilot = 3\nseeds = 45",
     r"\[claims\.C1\]\.pilot must be a string, got 3"),
    ('[claims.C1]\nfamily = "sin-l0.5"', r"\.family must be a non-empty list of variant ids"),
    ("[claims.C1]\nfamily = []", r"\.family must be a non-empty list of variant ids"),
    ('[claims.C1]\nfamily = ["sin-l0.5", "sine-l0.1"]', r"\[claims\.C1\]\.family: .*sine"),
    ('[claims.C1]\nfamily = ["sin-l0.5", "sin-l0.50"]', r"\.family lists 'sin-l0\.5' twice"),
    ('[claims.C1]\nfamily = ["sin-l0.1"]',
     r"\.family must contain the claim's own variant 'sin-l0\.5'"),
    ('[claims.C1]\nfamily = ["sin-l0.5", "adamw"]',
     r"\.family holds the claim's baseline 'adamw'"),
    ('[claims.C1]\nfamily = ["sin-l0.5", "cos-l0.5"]',
     r"\[claims\.C1\]\.family: 'cos-l0\.5' has no runs in the claim's cell \(attention "
     r"quantum, lr 0\.001\)"),
    ("[claims.C1]\nseeds = true", r"\[claims\.C1\]\.seeds must be an integer >= 2, got True"),
    ("[claims.C1]\nseeds = 1", r"\.seeds must be an integer >= 2, got 1"),
    ("[claims.C1]\nseeds = 50",
     r"grid\.toml: \[claims\.C1\]\.seeds = 50, but the cells run sin-l0\.5 and adamw on 45 "
     r"common seeds in the claim's cell \(attention quantum, lr 0\.001\)"),
    ("[claims.C3]\nseeds = 46", r"the cells run sin-l0\.1 and sin-l0\.5 on 45 common seeds"),
    ("[claims.C1]\nmargin = 0.01\npilot_sd = 0.0217\nseeds = 40",
     r"\[claims\.C1\]\.seeds = 40 is below the 42 paired seeds that pilot_sd 0\.0217 needs "
     r"for 80% TOST power at ±0\.01"),
    ("[tables.C1]\nseeds = 2", r"unknown table\(s\): tables \(valid: grid, cells, claims, "
                               r"classifier\)"),
])
def test_bad_designs_fail_when_the_config_loads(tmp_path, claims, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(write(tmp_path, claims))
    assert "\n" not in str(err.value)  # one line
    assert str(err.value).startswith(str(tmp_path / "grid.toml"))


def test_two_margins_on_one_metric_disagree(tmp_path, monkeypatch):
    twin = Claim("CX", "a second claim on C1's metric", "-", "classifier", judge_paired,
                 metric="final_test_acc", variant="sin-l0.1", baseline="adamw",
                 cell=(("attention", "quantum"),), design_keys=("margin",))
    monkeypatch.setitem(claims_module._CLAIMS, "CX", twin)
    with pytest.raises(ConfigError, match=r"\[claims\.CX\]\.margin = 0\.02 differs from "
                                          r"\[claims\.C1\]\.margin = 0\.01 on the same metric "
                                          r"final_test_acc"):
        load_config(write(tmp_path, "[claims.C1]\nmargin = 0.01\n[claims.CX]\nmargin = 0.02"))


def test_the_claim_grids_pre_register_power_and_run_the_null_control():
    """issue 16: the headline pairs at >= 45 seeds (80% TOST power at ±1 pp at the pilot
    spread), controls at >= 20, the null control gauss-l0.001 in every grid that judges a
    claim; the seeds extend 0..n-1, so the runs stored for 0..19 stay valid."""
    for name in ("classifier", "classifier-paper", "classifier-calibrated"):
        raw = read_toml(CONFIGS / f"{name}.toml")
        c1 = raw["claims"]["C1"]
        assert c1["margin"] == 0.01 and c1["seeds"] >= 45 and c1["power"] == 0.8, name
        seeds: dict[str, int] = {}
        for cell in raw["cells"]:
            lr, attention = cell.get("lr"), cell.get("attention", "quantum")
            if isinstance(lr, list) or lr == "selected":
                continue  # other lrs: the lr check; each variant at its own selected lr
            if "quantum" not in (attention if isinstance(attention, list) else [attention]):
                continue  # the claims' cell is quantum attention
            assert isinstance(cell["seeds"], int), name  # a count: seeds 0..n-1, extended
            for v in cell["variants"]:
                seeds[v] = max(seeds.get(v, 0), cell["seeds"])
        assert seeds["adamw"] >= 45 and seeds["sin-l0.5"] >= 45, name
        assert seeds["gauss-l0.001"] >= 45, name  # the null, paired with the headline
        assert min(seeds.values()) >= 20, (name, seeds)
    for name in ("llm-paper", "llm-calibrated"):
        raw = read_toml(CONFIGS / f"{name}.toml")
        assert any("gauss-l0.001" in c["variants"] for c in raw["cells"]), name
        assert raw["claims"]["C6"]["margin"] == 0.005, name
