"""The whole smoke path: grid -> runs.jsonl -> runs.csv, stats.csv -> figures -> report, ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ablations.config import load_config
from ablations.report import render_arm, render_ledger
from ablations.runner import run_grid
from ablations.stats import STATS_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_grid_to_report_and_ledger(tmp_path):
    cfg = load_config(ROOT / "ablations" / "configs" / "smoke.toml",
                      results=tmp_path / "classifier")
    counts = run_grid(cfg, progress=False)
    assert counts["ran"] == len(cfg.specs) == 15
    report = render_arm(cfg)
    text = report.read_text()
    for heading in ("## C1", "## C2", "## C3", "## C4", "## C5", "2×2 factorial"):
        assert heading in text
    runs = pd.read_csv(tmp_path / "classifier" / "runs.csv")
    for col in ["run_id", "arm", "variant", "attention", "seed", "lr", "final_test_acc",
                "epochs_to_90", "reached_90", "mean_train_loss", "final_train_loss",
                "sec_per_epoch", "sec_to_target", "perturbation_ratio"]:
        assert col in runs.columns
    assert len(runs) == 15
    stats = pd.read_csv(tmp_path / "classifier" / "stats.csv")
    assert list(stats.columns[: len(STATS_COLUMNS)]) == list(STATS_COLUMNS)
    assert set(stats["baseline"]) == {"adamw", "sin-l0.5"}
    figs = sorted(p.name for p in (tmp_path / "classifier" / "figures").glob("*.png"))
    assert "kaplan_meier.png" in figs and "paired_final_test_acc.png" in figs
    assert all(f"(figures/{name})" in text for name in figs)  # every figure is linked
    claims = json.loads((tmp_path / "classifier" / "claims.json").read_text())["claims"]
    assert set(claims) == {"C1", "C2", "C3", "C4", "C5"}
    ledger = render_ledger(tmp_path).read_text()
    assert ledger.count("\n| C") == 7  # one row per claim: one protocol
    assert "the llm arm has not run yet" in ledger
    # re-rendering from stored runs is idempotent for the tables
    render_arm(cfg)
    assert pd.read_csv(tmp_path / "classifier" / "stats.csv").equals(stats)


def test_a_grid_of_the_baseline_alone_reports_its_calibration(tmp_path):
    # configs/calibration.toml's shape (AdamW, classical attention, two learning rates), tiny
    text = (ROOT / "ablations" / "configs" / "smoke.toml").read_text()
    text = text[: text.index("[[cells]]")] + (
        '[[cells]]\nname = "calibration"\nattention = "classical"\nvariants = ["adamw"]\n'
        "lr = [6e-3, 8e-3]\nseeds = 2\n")
    path = tmp_path / "cal.toml"
    path.write_text(text)
    cfg = load_config(path, results=tmp_path / "cal")
    assert run_grid(cfg, progress=False)["ran"] == 4
    report = render_arm(cfg).read_text()
    assert report.count("Calibration (AdamW, classical attention, lr ") == 2
    assert "lr 0.006 (the reference), 2 seeds" in report
    assert "No comparisons" in report
    assert json.loads((tmp_path / "cal" / "claims.json").read_text())["claims"] == {}


def test_committed_reports_regenerate_from_the_stored_runs(tmp_path):
    """Every committed stats.csv and claims.json of the grids that judge claims (the
    classifier's paper, calibrated and earlier grids, llm-calibrated) comes out of their stored
    runs.jsonl again (numbers to 1e-12 relative, claim texts exactly): nothing in results/ is
    edited by hand or left behind by older code."""
    import shutil

    import numpy as np

    # the bench tables a verdict reads (C4: results/bench/c4_like_with_like.csv) sit beside
    shutil.copytree(ROOT / "results" / "bench", tmp_path / "bench")
    # and the QPU projection the C4 row quotes (results/quantum/qpu_cost.csv), when it exists
    if (ROOT / "results" / "quantum" / "qpu_cost.csv").is_file():
        (tmp_path / "quantum").mkdir()
        shutil.copy(ROOT / "results" / "quantum" / "qpu_cost.csv", tmp_path / "quantum")
    for name in ("classifier-paper", "classifier-calibrated", "classifier", "llm-calibrated"):
        cfg = load_config(ROOT / "ablations" / "configs" / f"{name}.toml",
                          results=tmp_path / name)
        (tmp_path / name).mkdir()
        stored = ROOT / "results" / name
        (tmp_path / name / "runs.jsonl").write_bytes((stored / "runs.jsonl").read_bytes())
        render_arm(cfg)
        new = pd.read_csv(tmp_path / name / "stats.csv")
        old = pd.read_csv(stored / "stats.csv")
        assert list(new.columns) == list(old.columns) and len(new) == len(old)
        for col in old.columns:
            if pd.api.types.is_numeric_dtype(old[col]):
                np.testing.assert_allclose(new[col], old[col], rtol=1e-12, atol=0,
                                           equal_nan=True, err_msg=f"{name}: {col}")
            else:
                assert new[col].fillna("").equals(old[col].fillna("")), (name, col)
        new_claims = json.loads((tmp_path / name / "claims.json").read_text())["claims"]
        old_claims = json.loads((stored / "claims.json").read_text())["claims"]
        assert new_claims.keys() == old_claims.keys()
        for cid, claim in old_claims.items():
            for key in ("measured", "ci", "test", "verdict"):
                assert new_claims[cid][key] == claim[key], (name, cid, key)


SMALL_GRIDS = {
    # name: (cells, limit); the smoke grid's [classifier] table, tiny runs
    "partial": (None, 2),
    "classical only": ('[[cells]]\nattention = "classical"\nvariants = ["adamw", "sin-l0.5"]\n'
                       "seeds = 2\n", None),
    "no adamw": ('[[cells]]\nvariants = ["sin-l0.5", "gauss-l0.5"]\nseeds = 2\n', None),
    "one seed": ('[[cells]]\nvariants = ["adamw", "sin-l0.5"]\nseeds = 1\n', None),
}


@pytest.mark.parametrize("name", list(SMALL_GRIDS))
def test_partial_and_small_grids_render_what_exists(tmp_path, name):
    from tests.test_runner import SerialExecutor

    cells, limit = SMALL_GRIDS[name]
    text = (ROOT / "ablations" / "configs" / "smoke.toml").read_text()
    if cells is not None:
        text = text[: text.index("[[cells]]")] + cells
    path = tmp_path / "grid.toml"
    path.write_text(text)
    cfg = load_config(path, results=tmp_path / "res")
    run_grid(cfg, SerialExecutor(), progress=False, limit=limit)
    report = render_arm(cfg).read_text()  # must not raise
    assert report.count("## ") >= 2 and "Traceback" not in report
    if limit is not None:
        assert f"**Partial grid: {len(cfg.specs) - limit} of {len(cfg.specs)} runs" in report
    if name == "no adamw":  # nothing to compare with AdamW: the claims say so
        assert "this grid has no runs of sin-l0.5 against adamw, attention quantum" in report
    claims = json.loads((tmp_path / "res" / "claims.json").read_text())["claims"]
    assert all(c["verdict"] for c in claims.values())


def test_ledger_shows_each_protocol_of_a_claim_and_its_power(tmp_path):
    def grid(folder, protocol, verdict, power):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "claims.json").write_text(json.dumps({
            "grid": folder, "arm": "classifier", "protocol": protocol,
            "claims": {"C1": {"measured": f"{folder} numbers", "ci": "[x]", "test": "t",
                              "verdict": verdict, "power": power}}}))

    grid("classifier-paper", "paper", "no detectable difference", 0.31)
    grid("classifier-calibrated", "calibrated", "equivalent within ±1 pp", 0.83)
    grid("calibration", "calibrated", "not run yet", None)  # adds nothing: another grid ran it
    ledger = render_ledger(tmp_path).read_text()
    rows = [line for line in ledger.splitlines() if line.startswith("| C1 |")]
    assert len(rows) == 2
    assert "| paper | classifier-paper numbers |" in rows[1] and "| 0.31 |" in rows[1]
    assert "| calibrated | classifier-calibrated numbers |" in rows[0] and "| 0.83 |" in rows[0]
    assert ledger.count("\n| C2 |") == 1 and "the classifier arm has not run yet" in ledger


def test_waves_group_runs_that_overlapped_in_time():
    """Runs whose [utc - wall, utc] intervals overlap form one wave; the next starts after
    all of them ended; records without timings are left out."""
    from ablations.report import waves_table

    def rec(end, wall, train=None, commit="abcdef1234"):
        return {"provenance": {"utc": end, "wall_seconds": wall, "commit": commit},
                "metrics": {} if train is None else {"train_seconds": train}}

    records = [rec("2026-01-01T00:10:00+00:00", 600, 300),     # 00:00-00:10
               rec("2026-01-01T00:12:00+00:00", 660, 340),     # 00:01-00:12: overlaps
               rec("2026-01-01T00:30:00+00:00", 300, None, "0123456789"),  # 00:25-00:30
               {"provenance": {}}]
    t = waves_table(records)
    assert list(t["runs"]) == [2, 1]
    assert t["wall (min)"].tolist() == pytest.approx([12.0, 5.0])
    assert t["wave wall per run (s)"].tolist() == pytest.approx([360.0, 300.0])
    assert t["run training, median (s)"].iloc[0] == pytest.approx(320.0)
    assert math.isnan(t["run training, median (s)"].iloc[1])
    assert list(t["commit"]) == ["abcdef1", "0123456"]
    assert list(t["started (UTC)"]) == ["2026-01-01T00:00", "2026-01-01T00:25"]
    assert waves_table([]).empty


def test_a_replicating_grid_pairs_its_runs_with_their_twins(tmp_path, monkeypatch):
    """llm-paper-graphs repeats llm-paper's runs with other kernels ([grid].replicates): its
    report's last section pairs each stored run with its twin, and the committed
    replication.csv comes out of the two grids' stored runs again."""
    import numpy as np

    monkeypatch.chdir(ROOT)  # the twin's [grid].results is relative to the repository
    name = "llm-paper-graphs"
    cfg = load_config(ROOT / "ablations" / "configs" / f"{name}.toml", results=tmp_path / name)
    assert cfg.replicates == ROOT / "ablations" / "configs" / "llm-paper.toml"
    (tmp_path / name).mkdir()
    stored = ROOT / "results" / name
    (tmp_path / name / "runs.jsonl").write_bytes((stored / "runs.jsonl").read_bytes())
    text = render_arm(cfg).read_text()
    assert "## Against `results/llm-paper`: the same runs by other code paths" in text
    new = pd.read_csv(tmp_path / name / "replication.csv")
    old = pd.read_csv(stored / "replication.csv")
    assert list(new.columns) == list(old.columns) and len(new) == len(old)
    assert set(new["pairs"]) == {5} and set(new["variant"]) == {
        "adamw", "sin-l0.1", "sin-l0.5", "moment-l0.5", "sin-l0.5-first4", "gauss-l0.5"}
    for col in old.columns:
        if pd.api.types.is_numeric_dtype(old[col]):
            np.testing.assert_allclose(new[col], old[col], rtol=1e-12, equal_nan=True)
        else:
            assert new[col].equals(old[col]), col
