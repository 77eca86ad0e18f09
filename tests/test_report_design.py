"""The report and the ledger with a pre-registered design and the null control (issue 16):
a small grid of fake runs (metrics a known function of the spec), rendered in full."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.config import load_config
from ablations.report import render_arm, render_ledger
from tests.test_protocols import _run

ROOT = Path(__file__).resolve().parent.parent
NULL = "gauss-l0.001"

CLAIMS = """
[claims.C1]
margin = 0.01
family = ["sin-l0.5", "gauss-l0.5"]
seeds = 12
power = 0.8
pilot_sd = 0.002
pilot = "a hand-made pilot"

[claims.C2]
seeds = 12
"""


def _grid(tmp_path: Path) -> Path:
    text = (ROOT / "ablations" / "configs" / "smoke.toml").read_text()
    text = text.replace("seeds = 3", "seeds = 12").replace(
        'variants = ["gauss-l0.5"]', f'variants = ["gauss-l0.5", "{NULL}"]')
    path = tmp_path / "grid.toml"
    path.write_text(text + CLAIMS)
    return path


def _metrics(spec):
    """Final test accuracy: a per-seed level, a per-(variant, seed) wobble (the chaos), and
    +3 pp for gauss-l0.5 (an effect a nudge does not have)."""
    rng = np.random.default_rng([spec.seed, sum(map(ord, spec.variant))])
    acc = 0.9 + 0.001 * spec.seed + rng.normal(0, 0.004) + 0.03 * (spec.variant == "gauss-l0.5")
    return acc, acc, 1.0 + spec.seed % 2, 1.0 + (spec.seed + 1) % 2  # within 2 epochs


def test_report_sets_the_design_power_and_null_beside_each_claim(tmp_path):
    cfg = load_config(_grid(tmp_path), results=tmp_path / "res")
    assert cfg.designs["C1"].seeds == 12
    _run(cfg, _metrics)
    text = render_arm(cfg).read_text()
    stats = pd.read_csv(tmp_path / "res" / "stats.csv")
    # every variant is also compared with the null control
    assert {"adamw", "sin-l0.5", NULL} <= set(stats["baseline"])
    assert "tost_power" in stats.columns
    acc = stats[(stats.metric == "final_test_acc") & (stats.baseline == "adamw")
                & (stats.attention == "quantum")].set_index("variant")
    assert acc.loc["sin-l0.5", "tost_margin"] == 0.01  # the pre-registered margin
    # the C1 section: the design, the achieved power and the null control
    c1 = text[text.index("## C1"):text.index("## C2")]
    assert ("Design: pre-registered n = 12 from pilot sd 0.2 pp (a hand-made pilot) at ±1 pp, "
            "80% TOST power (the pilot needs 3); Holm family: sin-l0.5, gauss-l0.5.") in c1
    assert "Achieved: n = 12, sd of the paired differences" in c1
    assert "Power: TOST ±1 pp: " in c1 and "(n = 12 of 12 pre-registered" in c1
    assert f"Null control: {NULL} − adamw: " in c1
    assert "(over 2 pre-registered comparisons with adamw: sin-l0.5, gauss-l0.5)" in c1
    assert f"### Against a nudge: the null control {NULL}" in c1
    assert "differs from adamw and from the nudge" in c1  # gauss-l0.5's +3 pp
    assert "(figures/null_control_final_test_acc.png)" in c1
    assert (tmp_path / "res" / "figures" / "null_control_final_test_acc.png").is_file()
    assert f"against `{NULL}` (`{NULL}` is the null control" in text
    assert "pre-registered in [claims.C1]" in text
    # claims.json carries the words of the power and the null; the ledger shows them
    claims = json.loads((tmp_path / "res" / "claims.json").read_text())["claims"]
    assert claims["C1"]["power"].startswith("TOST ±1 pp: ")
    assert claims["C1"]["null"].startswith(f"{NULL} − adamw: ")
    assert claims["C2"]["power"].startswith("log-rank for the paper's hazard ratio 1.61: ")
    assert claims["C4"]["power"] == "– (an interval estimate, no test)"
    ledger = render_ledger(tmp_path).read_text()
    assert "| power | null control | verdict |" in ledger
    c1_row = next(line for line in ledger.splitlines() if line.startswith("| C1 "))
    assert f"| {NULL} − adamw: " in c1_row and "| TOST ±1 pp: " in c1_row
    c7_row = next(line for line in ledger.splitlines() if line.startswith("| C7 "))
    assert "the paper gives no effect size" in c7_row


def test_without_a_design_or_null_the_report_is_as_before(tmp_path):
    cfg = load_config(ROOT / "ablations" / "configs" / "smoke.toml", results=tmp_path / "res")
    assert cfg.designs == {}
    _run(cfg, _metrics)
    text = render_arm(cfg).read_text()
    assert "Design:" not in text and "Null control:" not in text
    assert "Against a nudge" not in text
    stats = pd.read_csv(tmp_path / "res" / "stats.csv")
    assert set(stats["baseline"]) == {"adamw", "sin-l0.5"}
    assert (stats.loc[stats.metric == "final_test_acc", "tost_margin"] == 0.01).all()
    assert not math.isnan(stats.loc[stats.metric == "final_test_acc", "tost_power"].iloc[0])


def test_the_ledger_reads_a_numeric_power_of_older_claims_files(tmp_path):
    old = {"grid": "g", "arm": "classifier", "protocol": "paper",
           "claims": {"C1": {"measured": "m", "ci": "c", "test": "t", "power": 0.994,
                             "verdict": "equivalent within ±1 pp"}}}
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "claims.json").write_text(json.dumps(old))
    row = next(line for line in render_ledger(tmp_path).read_text().splitlines()
               if line.startswith("| C1 "))
    assert "| 0.99 | – | **equivalent within ±1 pp** |" in row
