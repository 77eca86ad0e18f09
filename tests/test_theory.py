"""The theory suite: every check at its small size, the closed forms it relies on, and the
files it writes (checks.csv, claims.json for the ledger, report.md)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from theory import CHECKS, Check, compare, run_checks
from theory.base import SIZES

ALL = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"]


@pytest.fixture(scope="module")
def small_checks(tmp_path_factory) -> dict[str, Check]:
    empty = tmp_path_factory.mktemp("no_results")  # no arm has run: T8 must say so
    return {c.id: c for c in run_checks(size="small", results_root=str(empty))}


def test_registry_has_every_check(small_checks):
    assert sorted(CHECKS) == ALL
    assert sorted(small_checks) == ALL
    assert SIZES == ("small", "full")


@pytest.mark.parametrize("cid", ALL[:7])
def test_analytic_checks_pass_at_small_size(small_checks, cid):
    c = small_checks[cid]
    assert c.id == cid and c.size == "small" and c.status == "ran"
    assert math.isfinite(c.measured) and math.isfinite(c.expected)
    assert c.passed is True, c.summary
    assert c.summary and c.derivation and c.survives and c.claim
    assert compare(c.measured, c.expected, c.tolerance, c.relation)


def test_t8_not_run_without_classifier_results(small_checks):
    c = small_checks["T8"]
    assert c.passed is None and math.isnan(c.measured)
    assert "classifier arm not run yet" in c.status
    assert "classifier arm not run yet" in c.summary


def test_t8_with_runs(tmp_path):
    import numpy as np
    import pandas as pd

    from theory.power import single_run_power, t8_power

    rng = np.random.default_rng(0)
    rows = []
    for v in ("adamw", "sin-l0.5"):
        for s in range(12):
            rows.append({"run_id": f"{v}-{s}", "arm": "classifier", "variant": v,
                         "attention": "quantum", "seed": s, "lr": 6e-3,
                         "final_test_acc": 0.92 + 0.01 * rng.standard_normal(),
                         "epochs_to_90": 6.0 + rng.standard_normal()})
    (tmp_path / "classifier").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "classifier" / "runs.csv", index=False)
    c = t8_power(size="small", results_root=str(tmp_path))
    assert c.status == "ran" and isinstance(c.passed, bool)
    c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
    assert c1["n_pairs"] == 12 and c1["seeds_needed_80"] >= 2
    assert c.measured == pytest.approx(single_run_power(0.023, c1["sd_diff"]))
    assert c.passed == (c.measured >= 0.8)
    # one run: 80% power needs the effect to be 2.8 standard deviations
    assert single_run_power(2.8016, 1.0) == pytest.approx(0.8, abs=1e-3)


def test_t1_adam_bound():
    from theory.bounds import adam_ratio_bound

    assert adam_ratio_bound(1, 0.9, 0.999) == pytest.approx(1.0)
    b = [adam_ratio_bound(t, 0.9, 0.999) for t in (1, 10, 100, 10**5)]
    assert b == sorted(b)
    gamma = 0.81 / 0.999
    assert b[-1] == pytest.approx(0.1 / math.sqrt(0.001) / math.sqrt(1 - gamma), rel=1e-6)


def test_t2_stationary_point_and_c7_entry(small_checks):
    c = small_checks["T2"]
    at = [r for r in c.tables["all cells"] if r["condition"] == "at"]
    for r in at:
        if r["variant"] != "anneal":
            assert r["max_displacement"] == 0.0 and r["escaped"] == 0, r
    assert any(r["max_displacement"] > 0 for r in at if r["variant"] == "anneal")
    c7 = c.claims["C7"]
    assert set(c7) == {"measured", "ci", "test", "verdict"}
    assert c7["verdict"] in ("supported", "contradicted", "no detectable difference")


def test_t2_statistics():
    from theory.escape import LANDSCAPES, mcnemar_exact, wilson

    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    a = torch.tensor([True, True, True, False])
    b = torch.tensor([False, False, False, False])
    assert mcnemar_exact(a, b) == (3, 0, 0.25)
    for land in LANDSCAPES:  # the starting minimum lies inside its basin, below a barrier
        lo_b, hi_b = land.basin()
        assert all(lo_ < x < hi_ for x, lo_, hi_ in zip(land.minimum(), lo_b, hi_b))
        assert land.barrier() > 0


def test_t5_closed_form():
    from qsgd.circuit import simulate
    from theory.circuits import closed_form, heisenberg_supports

    xs, zs = heisenberg_supports(4, 2)
    assert xs == [[0, 2], [1, 3], [2], [3]]
    assert zs == [[0], [1], [0, 2], [1, 3]]
    th = torch.rand(50, 4, dtype=torch.float64) * 4 - 2
    sim = simulate(math.pi * th, None, depth=2, entangle=True, hadamard=False, encoding="once",
                   readout="X")
    want = torch.sin(math.pi * th)
    want = torch.stack([want[:, 0] * want[:, 2], want[:, 1] * want[:, 3], want[:, 2],
                        want[:, 3]], dim=1)
    assert torch.allclose(sim, want, atol=1e-12)
    assert torch.allclose(closed_form(th, 2), want, atol=1e-14)


def test_t7_counts():
    from ablations.llm import PRESETS
    from theory.scale import LLAMA_32_1B, llama_tensor_numels, scope_fraction

    big = llama_tensor_numels(LLAMA_32_1B)
    assert len(big) == 146 and sum(k for _, k in big) == 1_235_814_400
    assert scope_fraction([k for _, k in big]) == (584, 1_235_814_400, 584 / 1_235_814_400)
    smol = llama_tensor_numels(PRESETS["135m"])
    assert len(smol) == 272 and sum(k for _, k in smol) == 134_515_008
    assert scope_fraction([3, 10, 1]) == (8, 14, 8 / 14)


def test_t4_and_t6_structure(small_checks):
    t4 = small_checks["T4"]
    assert all(r["agree"] == r["runs"] for r in t4.tables["summary per regime"])
    t6 = small_checks["T6"]
    for r in t6.tables["spectra"]:
        assert r["measured_max_freq"] <= r["predicted_max_freq"] + 1e-9
        assert r["measured_max_freq"] <= r["sharp_bound"] + 1e-9


def test_compare_relations():
    assert compare(1.0, 1.0, 0.0, "<=") and not compare(1.1, 1.0, 0.05, "<=")
    assert compare(0.0, 0.0, 0.0, "==") and compare(0.9, 1.0, 0.1, ">=")
    assert compare(2.0, 1.0, 2.0, "x") and not compare(2.1, 1.0, 2.0, "x")
    assert not compare(math.nan, 1.0, 1.0, "<=")
    with pytest.raises(ValueError, match="invalid relation"):
        compare(1.0, 1.0, 0.0, "<")
    with pytest.raises(ValueError, match="invalid size"):
        run_checks(["T5"], size="medium")
    with pytest.raises(ValueError, match="unknown check ids"):
        run_checks(["T9"], size="small")


def test_report_files(small_checks, tmp_path):
    from theory.report import load_checks, render, save_check

    for c in small_checks.values():
        save_check(c, tmp_path)
    assert [c.id for c in load_checks(tmp_path)] == ALL
    render(tmp_path)
    with open(tmp_path / "checks.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:6] == ["id", "claim", "measured", "expected", "tolerance", "passed"]
    assert [r[0] for r in rows[1:]] == ALL
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert set(claims) == {"C7"}
    md = (tmp_path / "report.md").read_text()
    for cid in ALL:
        assert f"## {cid}:" in md
    assert (tmp_path / "figures" / "t2_escape.png").is_file()


def test_cli_quick_only(tmp_path, capsys):
    from theory.__main__ import main

    assert main(["run", "--quick", "--only", "T5,T6", "--out", str(tmp_path),
                 "--results-root", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "[T5] pass" in out and "[T6] pass" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "checks.csv").is_file()
