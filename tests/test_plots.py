"""Smoke tests of ablations.plots: every figure is written as a non-empty PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablations import plots as P
from ablations import stats as S

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 40  # small files, fast tests


def _runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for attention in ("classical", "quantum"):
        for variant, shift in (("adamw", 0.0), ("sin-l0.1", 0.005), ("sin-l0.5", 0.02),
                               ("gauss-l0.5", 0.0)):
            for seed in range(6):
                acc = float(np.clip(0.9 + shift + rng.normal(0, 0.01), 0, 1))
                reached = bool(rng.random() < 0.8)
                rows.append(dict(
                    run_id=f"{variant}-{attention}-{seed}", arm="classifier", variant=variant,
                    attention=attention, seed=seed, lr=1e-3, final_test_acc=acc,
                    epochs_to_90=float(rng.integers(3, 9)) if reached else np.nan,
                    reached_90=reached,
                    perturbation_ratio=0.0 if variant == "adamw" else float(
                        10 ** rng.normal(-2 if "0.1" in variant else -1, 0.2))))
    return pd.DataFrame(rows)


def _curves() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for attention in ("classical", "quantum"):
        for variant in ("adamw", "sin-l0.5"):
            for seed in range(4):
                for epoch in range(1, 11):
                    rows.append(dict(run_id=f"{variant}-{attention}-{seed}", variant=variant,
                                     attention=attention, seed=seed, epoch=epoch,
                                     test_acc=1 - 0.5 * np.exp(-epoch / 3) + rng.normal(0, .01),
                                     train_loss=np.exp(-epoch / 3)))
    return pd.DataFrame(rows)


def _check_png(path, expected) -> None:
    assert path == expected
    data = expected.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000


def test_learning_curves(tmp_path):
    summary = S.curve_summary(_curves(), "test_acc")
    out = tmp_path / "figs" / "curves.png"  # parent folder is created
    _check_png(P.plot_learning_curves(summary, out, target=0.9, dpi=DPI), out)
    # No facet column: one panel.
    single = summary[summary.attention == "quantum"].drop(columns="attention")
    out2 = tmp_path / "curves1.png"
    _check_png(P.plot_learning_curves(single, out2, dpi=DPI), out2)


def test_paired_seeds(tmp_path):
    runs = _runs()
    table = S.compare_all(runs, ["final_test_acc"], baselines=("adamw",),
                          tost_margins={"final_test_acc": 0.01}, n_boot=100)
    out = tmp_path / "paired.png"
    _check_png(P.plot_paired_seeds(runs, "final_test_acc", out, cell={"attention": "quantum"},
                                   stats_table=table, dpi=DPI), out)
    with pytest.raises(ValueError, match="no variant"):
        P.plot_paired_seeds(runs, "final_test_acc", out, variants=["adamw"])


def test_lambda_sweep(tmp_path):
    sweep = S.lambda_sweep(_runs(), "final_test_acc")
    out = tmp_path / "sweep.png"
    _check_png(P.plot_lambda_sweep(sweep, out, dpi=DPI), out)


def test_kaplan_meier(tmp_path):
    runs = _runs()
    km = S.kaplan_meier_by_group(runs[runs.attention == "quantum"], horizon=10)
    medians = {v: S.km_median(*S.time_to_event(g, horizon=10))[0]
               for v, g in runs[runs.attention == "quantum"].groupby("variant")}
    out = tmp_path / "km.png"
    _check_png(P.plot_kaplan_meier(km, out, horizon=10, medians=medians, dpi=DPI), out)
    km2 = S.kaplan_meier_by_group(runs, horizon=10, group=["attention", "variant"])
    out2 = tmp_path / "km2.png"
    _check_png(P.plot_kaplan_meier(km2, out2, facet="attention", horizon=10, dpi=DPI), out2)


def test_perturbation_ratio(tmp_path):
    out = tmp_path / "ratio.png"
    _check_png(P.plot_perturbation_ratio(_runs(), out, dpi=DPI), out)
    with pytest.raises(ValueError, match="positive"):
        P.plot_perturbation_ratio(_runs().assign(perturbation_ratio=0.0), out)


def test_forest(tmp_path):
    runs = _runs()
    table = S.compare_all(runs, ["final_test_acc", "epochs_to_90", "perturbation_ratio"],
                          tost_margins={"final_test_acc": 0.01}, n_boot=100)
    out = tmp_path / "forest.png"
    _check_png(P.plot_forest(table, out, dpi=DPI), out)
    out2 = tmp_path / "forest_adamw.png"
    _check_png(P.plot_forest(table, out2, baseline="adamw", metrics=["final_test_acc"],
                             dpi=DPI), out2)


def test_variant_colors_are_stable():
    a = P.variant_colors(["sin-l0.5", "adamw", "cos-l0.5"])
    b = P.variant_colors(["cos-l0.5", "sin-l0.5", "adamw"])
    assert a == b
    assert a["adamw"] == "#404040" and len(set(a.values())) == 3
