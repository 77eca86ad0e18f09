"""The dose-response study (issue 16, item 4): the classifier's ``loss_scale`` option, the
statistics (``ablations.stats.dose``) and the figure on hand-made tables, the ``[grid].exhibits``
key of a study grid, the report section end to end on fake runs, and the grid's config.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ablations import stats
from ablations.arms.classifier import ClassifierOptions
from ablations.config import ConfigError, SelectionPending, load_config, read_toml
from ablations.report import render_arm
from ablations.runner import run_grid
from ablations.sweep_plots import plot_dose_response
from qsgd.variants import parse_variant
from tests.test_protocols import _SMALL, CONFIGS, _copy, _fake_run, _lr_metrics
from tests.test_runner import SerialExecutor


# ----------------------------------------------------------------------------- loss_scale
def test_loss_scale_is_validated_and_defaults_to_one():
    assert ClassifierOptions().loss_scale == 1.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"\[classifier\]\.loss_scale must be finite and "
                                             r"> 0"):
            ClassifierOptions(loss_scale=bad)


def _tiny_run(variant: str, **extra):
    from ablations.arms.classifier import run
    from ablations.config import RunSpec

    opts = dict(n_train=80, n_val=20, n_test=20, epochs=1, batch_size=20, d_model=8,
                n_heads=1, d_ff=16, n_layers=1, ratio_every=1, **extra)
    return run(RunSpec("classifier", variant, "classical", 0, 4e-3,
                       tuple(sorted(opts.items())), 4))["metrics"]


def test_loss_scale_scales_the_gradients_only():
    """c = 1 is the run without the option, bit for bit; the recorded losses are unscaled, so
    AdamW at c = 2⁴ (an exact scaling, clipping threshold scaled with it) stays within ε of
    c = 1, while the sine's term in gradient units grows with c."""
    base = _tiny_run("adamw")
    same = _tiny_run("adamw", loss_scale=1.0)
    timing = {"sec_per_epoch", "sec_total", "sec_to_target"}
    assert json.dumps({k: v for k, v in same.items() if k not in timing}, sort_keys=True) == \
        json.dumps({k: v for k, v in base.items() if k not in timing}, sort_keys=True)
    one, scaled = _tiny_run("adamw", loss_scale=1.0), _tiny_run("adamw", loss_scale=16.0)
    for key in ("mean_train_loss", "final_train_loss"):
        assert one[key] == base[key]
        assert scaled[key] == pytest.approx(one[key], rel=1e-3)
    r1 = _tiny_run("sin-l0.5")["perturbation_ratio"]
    r16 = _tiny_run("sin-l0.5", loss_scale=16.0)["perturbation_ratio"]
    assert r16 > 8 * r1


# ----------------------------------------------------------------------------- statistics
def test_capped_time_to_target_is_exact_for_never_reached():
    got = stats.capped_time_to_target([3.0, np.nan, 12.0, None, 20.0], horizon=12)
    assert got.tolist() == [3.0, 13.0, 12.0, 13.0, 13.0]


def _runs(rows: list[tuple]) -> pd.DataFrame:
    """(variant, loss_scale, seed, final_val_acc, ratio) rows as a runs table."""
    df = pd.DataFrame(rows, columns=["variant", "loss_scale", "seed", "final_val_acc",
                                     "perturbation_ratio"])
    return df.assign(attention="quantum", lr=4e-3, diverged=False)


def _dose_table() -> pd.DataFrame:
    rows = []
    for s in range(6):
        noise = 0.001 * ((-1) ** s)
        rows += [("adamw", 1.0, s, 0.88 + 0.01 * s, 0.0),
                 ("sin-l0.5", 1.0, s, 0.88 + 0.01 * s + noise, 0.003),      # nothing
                 ("sin-l50.0", 1.0, s, 0.88 + 0.01 * s - 0.05 + noise, 0.28 + 0.01 * s),
                 ("sin-l5.0", 1.0, s, 0.88 + 0.01 * s + 2 * noise, 0.03),        # nothing
                 # loss x 10: adamw is another optimizer there (ε): 0.80, pairs with its own
                 ("adamw", 10.0, s, 0.80 + 0.01 * s, 0.0),
                 ("sin-l0.5", 10.0, s, 0.80 + 0.01 * s - 0.10 + noise, 0.03)]
    return _runs(rows)


def test_dose_points_pair_each_point_with_adamw_at_its_own_loss_scale():
    pts = stats.dose_points(_dose_table(), "final_val_acc", higher_is_better=True)
    assert list(pts.columns) == list(stats.dose.DOSE_COLUMNS)
    by = {(r["variant"], r["loss_scale"]): r for _, r in pts.iterrows()}
    assert set(by) == {("sin-l0.5", 1.0), ("sin-l5.0", 1.0), ("sin-l50.0", 1.0),
                       ("sin-l0.5", 10.0)}
    far = by[("sin-l0.5", 10.0)]
    assert far["diff"] == pytest.approx(-0.10) and far["mean_baseline"] == pytest.approx(0.825)
    assert far["sweeps"] == "loss scale" and far["n"] == 6 and far["n_diverged"] == 0
    assert by[("sin-l0.5", 1.0)]["sweeps"] == "λ+loss scale"
    assert by[("sin-l50.0", 1.0)]["sweeps"] == "λ"
    assert by[("sin-l50.0", 1.0)]["ratio"] == pytest.approx(0.305)  # median of 0.28..0.33
    assert by[("sin-l50.0", 1.0)]["ratio_low"] == pytest.approx(0.28)
    # Holm over the four points; the two large effects are detectable and worse
    assert pts["p_holm"].tolist() == pytest.approx(stats.holm(pts["p_ttest"]).tolist())
    assert by[("sin-l50.0", 1.0)]["detectable"] and far["detectable"]
    assert by[("sin-l50.0", 1.0)]["direction"] == "worse"
    assert not by[("sin-l0.5", 1.0)]["detectable"] and by[("sin-l0.5", 1.0)]["direction"] == ""
    assert pts["family"].unique().tolist() == ["sin"]
    # a lower-is-better metric turns the direction; no direction: higher/lower
    lower = stats.dose_points(_dose_table(), "final_val_acc", higher_is_better=False)
    assert set(lower.loc[lower["detectable"], "direction"]) == {"better"}
    none = stats.dose_points(_dose_table(), "final_val_acc", higher_is_better=None)
    assert set(none.loc[none["detectable"], "direction"]) == {"lower"}


def test_dose_points_edge_cases():
    assert stats.dose_points(pd.DataFrame(), "x", higher_is_better=True).empty
    only_adamw = _dose_table().query("variant == 'adamw'")
    assert stats.dose_points(only_adamw, "final_val_acc", higher_is_better=True).empty
    # no loss_scale column: every run at c = 1; a family filter
    t = _dose_table().query("loss_scale == 1").drop(columns="loss_scale")
    pts = stats.dose_points(t, "final_val_acc", higher_is_better=True, families=("cos",))
    assert pts.empty
    pts = stats.dose_points(t, "final_val_acc", higher_is_better=True)
    assert set(pts["loss_scale"]) == {1.0}
    # diverged variant runs are counted; their missing metric drops the pair
    t = _dose_table()
    sel = (t["variant"] == "sin-l50.0") & (t["seed"] < 2)
    t.loc[sel, "diverged"] = True
    t.loc[sel, "final_val_acc"] = np.nan
    row = stats.dose_points(t, "final_val_acc", higher_is_better=True).query(
        "variant == 'sin-l50.0'").iloc[0]
    assert (row["n"], row["n_diverged"]) == (4, 2)


def test_first_detectable_brackets_the_threshold():
    pts = stats.dose_points(_dose_table(), "final_val_acc", higher_is_better=True)
    first = stats.first_detectable(pts)
    lam = first[first["sweep"] == "λ"].iloc[0]
    assert lam["first_ratio"] == pytest.approx(0.305) and lam["lam"] == 50.0
    assert lam["below_ratio"] == pytest.approx(0.03)  # λ = 5 is not detectable
    assert lam["n_points"] == 3 and lam["ratio_range"] == "0.003–0.305"
    scale = first[first["sweep"] == "loss scale"].iloc[0]
    assert scale["first_ratio"] == pytest.approx(0.03) and scale["loss_scale"] == 10.0
    assert scale["below_ratio"] == pytest.approx(0.003)
    # nothing detectable: NaN, and the range run
    flat = pts.assign(detectable=False, direction="")
    none = stats.first_detectable(flat)
    assert none["first_ratio"].isna().all() and none["direction"].eq("").all()
    assert stats.first_detectable(pts.iloc[:0]).empty


def test_the_rule_is_stated():
    text = stats.DETECTION_RULE.format(alpha=0.05)
    assert "Holm" in text and "p < 0.05" in text and "smallest" in text


# ----------------------------------------------------------------------------- figure
def test_dose_response_figure():
    pts = stats.dose_points(_dose_table(), "final_val_acc", higher_is_better=True)
    extra = pts.assign(family="cos", variant=lambda d: d["variant"].str.replace("sin", "cos"))
    both = pd.concat([pts, extra], ignore_index=True)
    fig = plot_dose_response(both, metric_label="final validation accuracy",
                             first=stats.first_detectable(both))
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["cos", "sin"]
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert "variant − adamw" in axes[0].get_ylabel()
    with pytest.raises(ValueError):
        plot_dose_response(pts.iloc[:0])
    with pytest.raises(ValueError):
        plot_dose_response(pts.drop(columns="sweeps"))


# ----------------------------------------------------------------------------- grid key


def _study(tmp_path, grid_extra: str, cells: str) -> str:
    path = tmp_path / "study.toml"
    path.write_text('[grid]\narm = "classifier"\nname = "study"\nresults = "res/study"\n'
                    'baseline_lr = 4e-3\n' + grid_extra + '\n' + _SMALL + cells)
    return path


@pytest.mark.parametrize("extra, message", [
    ('exhibits = "dose_response"', r"\[grid\]\.exhibits must be a non-empty list"),
    ("exhibits = []", r"\[grid\]\.exhibits must be a non-empty list"),
    ('exhibits = ["dose"]', r"unknown exhibit\(s\) dose \(valid: .*dose_response"),
    ('exhibits = ["dose_response"]\nselection = true', r"exclude each other"),
])
def test_exhibits_key_is_validated(tmp_path, extra, message):
    path = _study(tmp_path, extra, '\n[[cells]]\nvariants = ["adamw"]\n')
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def _dose_metrics(spec):
    """Fake metrics: sin loses 10 pp of validation accuracy per unit of ratio, ± 0.3 pp by
    seed; the ratio is 0.006 λ c; validation accuracy 90% is never reached above ratio 0.2."""
    v = parse_variant(spec.variant)
    c = float(spec.config.get("loss_scale", 1.0))
    ratio = 0.006 * v.quantum_weight * c if v.perturbation != "none" else 0.0
    val = 0.88 + 0.002 * (spec.seed % 3) - 0.1 * ratio + 0.003 * (-1) ** spec.seed * (ratio > 0)
    e_val = 5.0 + spec.seed % 2 + (20 if ratio > 0.2 else 0)
    return val, val, e_val if e_val <= 6 else math.nan, 5.0


def _ratio_run(metrics_of):
    base = _fake_run(metrics_of)

    def run(spec):
        rec = base(spec)
        v = parse_variant(spec.variant)
        c = float(spec.config.get("loss_scale", 1.0))
        rec["metrics"]["perturbation_ratio"] = (0.006 * v.quantum_weight * c
                                                if v.perturbation != "none" else 0.0)
        return rec

    return run


def test_a_study_grid_reports_its_exhibits_and_judges_no_claim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cells = ('\n[[cells]]\nvariants = ["adamw", "sin-l0.5", "sin-l5.0", "sin-l50.0"]\n'
             'seeds = 4\n\n[[cells]]\ntask = "x100"\noptions = { loss_scale = 100.0 }\n'
             'variants = ["adamw", "sin-l0.5"]\nseeds = 4\n')
    cfg = load_config(_study(tmp_path, 'protocol = "calibrated"\nexhibits = ["dose_response"]',
                             cells))
    assert cfg.exhibits == ("dose_response",)
    assert run_grid(cfg, SerialExecutor(), progress=False,
                    run_fn=_ratio_run(_dose_metrics))["ran"] == 24
    text = render_arm(cfg).read_text()
    assert "## Dose-response: where does the term start to matter?" in text
    assert "## C1" not in text and "judges no claim" in text
    assert "c ∈ {1, 100}" in text and "capped at 7" in text
    assert "adamw at each loss scale" in text
    section = text[text.index("### Final validation accuracy"):]
    assert ("sin: λ sweep 0.300 (λ = 50, worse); loss scale sweep 0.300 (c = 100, worse)"
            in section)
    assert "sin: λ sweep none up to 0.3; loss scale sweep none up to 0.3" in section
    assert (tmp_path / "res/study/figures/dose_response_final-val-acc.png").is_file()
    assert (tmp_path / "res/study/figures/dose_response_epochs-to-90-val-capped.png").is_file()
    claims = read_json(tmp_path / "res/study/claims.json")
    assert claims["claims"] == {}


def read_json(path):
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the config
def test_the_dose_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = read_toml(CONFIGS / "classifier-dose.toml")
    # the calibrated model: classifier-lr's table, so its lr selection applies
    assert text["classifier"] == read_toml(CONFIGS / "classifier-lr.toml")["classifier"]
    path, lr_path = _copy(tmp_path, "classifier-dose"), _copy(tmp_path, "classifier-lr")
    levels = _copy(tmp_path, "classifier-calibrated-difficulty")
    with pytest.raises(SelectionPending, match=r"classifier-calibrated-difficulty\.toml has 0 "):
        load_config(path)
    # the level: sym8-t1 (90% validation accuracy at epoch 7 at every lr; the others never)
    run_grid(load_config(levels), SerialExecutor(), progress=False, run_fn=_fake_run(
        lambda s: (0.92, 0.5, 7.0 if s.task == "sym8-t1" else math.nan, 12.0)))
    with pytest.raises(SelectionPending, match=r"classifier-lr\.toml has 0 of"):
        load_config(path)
    lr = load_config(lr_path)
    run_grid(lr, SerialExecutor(), progress=False, run_fn=_fake_run(  # sinnorm as adamw
        lambda s: _lr_metrics(s if s.variant == "sin-l0.5" else replace(s, variant="adamw"))))
    cfg = load_config(path)
    assert cfg.exhibits == ("dose_response",) and cfg.protocol == "calibrated"
    assert cfg.selected_task == "sym8-t1" and {s.config["n_symbols"] for s in cfg.specs} == {8}
    assert {s.lr for s in cfg.specs} == {cfg.selected_lr["adamw"]}
    assert {s.seed for s in cfg.specs} == set(range(5)) and len(cfg.specs) == 240
    lam = {}
    for s in cfg.specs:
        v = parse_variant(s.variant)
        c = s.config.get("loss_scale", 1.0)
        lam.setdefault((v.perturbation, c), set()).add(v.quantum_weight)
    ladder = {0.1, 0.5, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0}
    for fam in ("sin", "gauss", "cos"):
        assert lam[(fam, 1.0)] == ladder
    assert lam[("sinnorm", 1.0)] == {0.1, 0.25, 0.5, 1.0, 2.5}
    for c in (10.0, 100.0, 1000.0):
        assert {k[0] for k in lam if k[1] == c} == {"none", "sin", "sinnorm", "gauss", "cos"}
        assert all(lam[(f, c)] == {0.5} for f in ("sin", "sinnorm", "gauss", "cos"))
