"""ablations.plots draws and returns figures: what each figure holds (panels, lines, bands,
titles with the paired statistics, labels from the arguments), that nothing is written and no
pyplot figure is left open, and clear errors on degenerate input. Also the shared style
(ablations.style), the report's save_figure and the theory figures' use of the theme."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure

from ablations import plots as P
from ablations import stats as S
from ablations import style
from ablations import sweep_plots as SP


@pytest.fixture(autouse=True)
def _headless_and_writes_nothing(tmp_path, monkeypatch):
    """Every test runs in an empty working directory that must stay empty, and must leave
    no pyplot figure open (plots never touch pyplot's global state)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = dict(mpl.rcParams)
    yield
    assert list(cwd.iterdir()) == [], "a plotting function wrote a file"
    assert plt.get_fignums() == [], "a pyplot figure was left open"
    assert dict(mpl.rcParams) == before, "the theme leaked into the global rcParams"


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


def _curves(variants=("adamw", "sin-l0.5"), seeds=4, epochs=10) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for attention in ("classical", "quantum"):
        for variant in variants:
            for seed in range(seeds):
                for epoch in range(1, epochs + 1):
                    rows.append(dict(run_id=f"{variant}-{attention}-{seed}", variant=variant,
                                     attention=attention, seed=seed, epoch=epoch,
                                     test_acc=1 - 0.5 * np.exp(-epoch / 3) + rng.normal(0, .01),
                                     train_loss=np.exp(-epoch / 3)))
    return pd.DataFrame(rows)


def _visible(fig: Figure):
    return [ax for ax in fig.axes if ax.get_visible()]


def _lines(ax, color=None):
    out = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    if color is not None:
        out = [ln for ln in out if mpl.colors.to_hex(ln.get_color()) == color]
    return out


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _legend_texts(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def _table():
    runs = _runs()
    return runs, S.compare_all(runs, ["final_test_acc"], baselines=("adamw",),
                               tost_margins={"final_test_acc": 0.01}, n_boot=100)


# ------------------------------------------------------------------- learning curves
def test_learning_curves_panels_bands_target_and_labels():
    summary = S.curve_summary(_curves(), "test_acc")
    fig = P.plot_learning_curves(summary, value_label="my accuracy", x_label="my epoch",
                                 target=0.9)
    assert isinstance(fig, Figure)
    axes = _visible(fig)
    # baseline mode: one panel per attention level, sin-l0.5 against adamw in each
    assert [ax.get_title() for ax in axes] == ["attention: classical", "attention: quantum"]
    for ax in axes:
        assert len(_lines(ax, style.BASELINE_COLOR)) == 1
        assert len(_lines(ax, style.variant_color("sin-l0.5"))) == 1
        assert len(_bands(ax)) == 2
        targets = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [0.9, 0.9]]
        assert len(targets) == 1
    assert axes[0].get_ylabel() == "my accuracy" and axes[0].get_xlabel() == "my epoch"
    assert {"adamw", "sin-l0.5", "target 0.9"} <= set(_legend_texts(fig))
    assert fig.get_suptitle().startswith("my accuracy")


def test_learning_curves_small_multiples_and_single_facet():
    summary = S.curve_summary(_curves(("adamw", "cos-l0.5", "sin-l0.5", "taylor-l0.5")),
                              "test_acc")
    quantum = summary[summary.attention == "quantum"]
    fig = P.plot_learning_curves(quantum)
    axes = _visible(fig)
    # one panel per compared variant; the one facet level is named once, in the suptitle
    assert [ax.get_title() for ax in axes] == ["cos-l0.5", "sin-l0.5", "taylor-l0.5"]
    assert "(attention: quantum)" in fig.get_suptitle()
    assert all(len(_lines(ax, style.BASELINE_COLOR)) == 1 for ax in axes)
    assert axes[0].get_ylabel() == "mean"  # neutral fallback without value_label
    # baseline=None: every variant in one panel per facet level
    fig = P.plot_learning_curves(summary, baseline=None)
    axes = _visible(fig)
    assert len(axes) == 2 and all(len(_bands(ax)) == 4 for ax in axes)


def test_learning_curves_degenerate_inputs():
    summary = S.curve_summary(_curves(), "test_acc")
    # one variant only, no baseline among the groups, no facet column
    only = summary[summary.variant == "adamw"]
    assert len(_visible(P.plot_learning_curves(only))) == 2
    nobase = summary[summary.variant != "adamw"].drop(columns="attention")
    fig = P.plot_learning_curves(nobase)
    assert len(_visible(fig)) == 1 and len(_bands(_visible(fig)[0])) == 1
    with pytest.raises(ValueError, match="empty"):
        P.plot_learning_curves(summary.iloc[:0])
    with pytest.raises(ValueError, match="'ci_low'"):
        P.plot_learning_curves(summary.drop(columns="ci_low"))
    with pytest.raises(ValueError, match="finite mean"):
        P.plot_learning_curves(summary.assign(mean=np.nan))


def test_learning_curves_drop_ragged_last_step():
    curves = _curves(seeds=3, epochs=5)
    extra = curves[(curves.seed == 0) & (curves.epoch == 5)].assign(epoch=6, test_acc=0.1)
    summary = S.curve_summary(pd.concat([curves, extra]), "test_acc")
    ends = {max(ln.get_xdata()) for ax in _visible(P.plot_learning_curves(summary))
            for ln in _lines(ax) if len(ln.get_xdata()) > 2}
    assert ends == {5}
    ends = {max(ln.get_xdata()) for ax in _visible(P.plot_learning_curves(
        summary, complete_only=False)) for ln in _lines(ax) if len(ln.get_xdata()) > 2}
    assert ends == {6}


# ------------------------------------------------------------------- paired seeds
def test_paired_seeds_lines_points_and_stats_in_titles():
    runs, table = _table()
    fig = P.plot_paired_seeds(runs, "final_test_acc", cell={"attention": "quantum"},
                              stats_table=table, metric_label="final accuracy (label)")
    axes = _visible(fig)
    assert len(axes) == 3  # gauss-l0.5, sin-l0.1, sin-l0.5
    for ax, name in zip(axes, ["gauss-l0.5", "sin-l0.1", "sin-l0.5"], strict=True):
        r = table[(table.variant == name) & (table.attention == "quantum")].iloc[0]
        title = ax.get_title()
        assert title.startswith(f"{name} (n = 6)")
        assert f"Δ = {r['diff']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]" in title
        assert f"p_holm = {r['p_holm']:.2g}, {r['verdict']}" in title
        assert len(_lines(ax, style.REFERENCE_COLOR)) == 6  # one join per seed
        dots = sum(len(c.get_offsets()) for c in ax.collections
                   if isinstance(c, PathCollection))
        assert dots == 12
        assert sum(isinstance(c, LineCollection) for c in ax.collections) == 2  # the means
        assert [t.get_text() for t in ax.get_xticklabels()] == ["adamw", name]
    assert axes[0].get_ylabel() == "final accuracy (label)"
    assert "(quantum)" in fig.get_suptitle()


def test_paired_seeds_fallback_label_and_degenerate_inputs():
    runs, _ = _table()
    fig = P.plot_paired_seeds(runs, "final_test_acc", variants=["sin-l0.5"])
    assert _visible(fig)[0].get_ylabel() == "final test acc"
    with pytest.raises(ValueError, match="no variant"):
        P.plot_paired_seeds(runs, "final_test_acc", variants=["adamw"])
    with pytest.raises(ValueError, match="baseline 'adamw' has no run"):
        P.plot_paired_seeds(runs[runs.variant != "adamw"], "final_test_acc")
    with pytest.raises(ValueError, match="'nope'"):
        P.plot_paired_seeds(runs, "nope")
    # a variant whose seeds never meet the baseline's: an annotated empty panel
    odd = runs.assign(seed=np.where(runs.variant == "sin-l0.1", runs.seed + 100, runs.seed))
    fig = P.plot_paired_seeds(odd, "final_test_acc", variants=["sin-l0.1"])
    ax = _visible(fig)[0]
    assert ax.get_title().startswith("sin-l0.1 (n = 0)")
    assert any(t.get_text() == "no paired seeds" for t in ax.texts)


# ------------------------------------------------------------------- lambda sweep
def test_lambda_sweep_lines_errorbars_and_labels():
    sweep = S.lambda_sweep(_runs(), "final_test_acc")
    fig = SP.plot_lambda_sweep(sweep, metric_label="accuracy label")
    axes = _visible(fig)
    assert [ax.get_title() for ax in axes] == ["attention: classical", "attention: quantum"]
    for ax in axes:
        fams = sweep["family"].unique()
        assert len(ax.containers) == len(fams)  # one error bar set per family
        line = _lines(ax, style.variant_color("sin"))[0]
        assert sorted(np.round(line.get_xdata(), 1)) == [0.0, 0.1, 0.5]  # dodged by ±0.005
    assert axes[0].get_ylabel() == "accuracy label"
    assert "family sin" in _legend_texts(fig)
    # one λ per family with NaN intervals (a single run) still draws
    one = sweep[sweep.lam == 0.5].assign(ci_low=np.nan, ci_high=np.nan)
    assert isinstance(SP.plot_lambda_sweep(one, facet=None), Figure)
    with pytest.raises(ValueError, match="empty"):
        SP.plot_lambda_sweep(sweep.iloc[:0])


# ------------------------------------------------------------------- Kaplan-Meier
def test_kaplan_meier_steps_bands_censoring_and_medians():
    runs = _runs()
    q = runs[runs.attention == "quantum"]
    km = S.kaplan_meier_by_group(q, horizon=10)
    medians = {v: S.km_median(*S.time_to_event(g, horizon=10))[0]
               for v, g in q.groupby("variant")}
    medians["sin-l0.1"] = math.nan  # never reached half-way: no line, no crash
    fig = P.plot_kaplan_meier(km, horizon=10, medians=medians, time_label="epochs")
    axes = _visible(fig)
    assert [ax.get_title() for ax in axes] == ["gauss-l0.5", "sin-l0.1", "sin-l0.5"]
    for ax in axes:
        steps = [ln for ln in _lines(ax) if ln.get_drawstyle() == "steps-post"]
        assert len(steps) == 2 and all(ln.get_xdata()[-1] == 10 for ln in steps)
        assert len(_bands(ax)) == 2
        assert ax.get_xlabel() == "epochs"
        assert ax.get_ylabel() in ("fraction not yet at target", "")
    vlines = {ax.get_title(): [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
              for ax in axes}
    assert len(vlines["sin-l0.1"]) == int(np.isfinite(medians["adamw"]))
    assert len(vlines["sin-l0.5"]) == int(np.isfinite(medians["adamw"])) + int(
        np.isfinite(medians["sin-l0.5"]))
    assert "censored (never reached)" in _legend_texts(fig)


def test_kaplan_meier_facets_and_degenerate_inputs():
    runs = _runs()
    km2 = S.kaplan_meier_by_group(runs, horizon=10, group=["attention", "variant"])
    fig = P.plot_kaplan_meier(km2, facet="attention", horizon=10, baseline=None)
    assert [ax.get_title() for ax in _visible(fig)] == ["attention: classical",
                                                        "attention: quantum"]
    one = S.kaplan_meier_by_group(runs[runs.variant == "adamw"], horizon=10)
    assert len(_visible(P.plot_kaplan_meier(one, horizon=10))) == 1
    with pytest.raises(ValueError, match="empty"):
        P.plot_kaplan_meier(S.kaplan_meier_by_group(runs.iloc[:0], horizon=10))


# ------------------------------------------------------------------- perturbation ratio
def test_perturbation_ratio_one_dot_per_positive_run():
    runs = _runs()
    fig = P.plot_perturbation_ratio(runs, metric_label="ratio label")
    ax = _visible(fig)[0]
    dots = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert dots == int((runs.perturbation_ratio > 0).sum())
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "ratio label"
    assert "12 runs with ratio ≤ 0 not shown" in ax.get_xlabel()  # AdamW's
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gauss-l0.5", "sin-l0.1",
                                                            "sin-l0.5"]
    assert {"classical", "quantum", "median"} <= set(_legend_texts(fig))
    fig = P.plot_perturbation_ratio(runs[runs.attention == "quantum"], hue=None)
    assert _visible(fig)[0].get_ylabel() == "perturbation ratio"
    with pytest.raises(ValueError, match="positive"):
        P.plot_perturbation_ratio(runs.assign(perturbation_ratio=0.0))


# ------------------------------------------------------------------- forest
def test_forest_rows_colours_and_labels():
    runs = _runs()
    table = S.compare_all(runs, ["final_test_acc", "epochs_to_90"],
                          tost_margins={"final_test_acc": 0.01}, n_boot=100)
    fig = P.plot_forest(table, baseline="adamw",
                        metric_labels={"final_test_acc": "accuracy label"})
    axes = _visible(fig)
    assert [ax.get_title(loc="left") for ax in axes] == ["accuracy label", "epochs to 90"]
    for ax, metric in zip(axes, ["final_test_acc", "epochs_to_90"], strict=True):
        sub = table[(table.metric == metric) & (table.baseline == "adamw")]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert len(labels) == len(sub)
        assert all("− adamw [" in lab and "(n=" in lab for lab in labels)
        bars = next(c for c in ax.collections if isinstance(c, LineCollection))
        ok = np.isfinite(sub["ci_low"]) & np.isfinite(sub["ci_high"])  # NaN CI: dot only
        assert 0 < ok.sum()
        want = np.array([mpl.colors.to_rgba(style.verdict_color(v))
                         for v in sub["verdict"][ok]])
        # one colour for all rows is stored once
        got = np.broadcast_to(bars.get_colors(), want.shape)
        np.testing.assert_allclose(got, want)
    assert "difference in accuracy label" in axes[0].get_xlabel()
    with pytest.raises(ValueError, match="no comparison"):
        P.plot_forest(table, baseline="nobody")


def test_forest_marks_a_far_off_row_at_the_edge():
    rows = [dict(metric="m", variant=f"v{i}", baseline="adamw", n=5, diff=d, ci_low=d - 0.01,
                 ci_high=d + 0.01, verdict="no detectable difference", tost_margin=0.005)
            for i, d in enumerate([0.0, 0.01, -0.01, 0.002, 1.0])]
    fig = P.plot_forest(pd.DataFrame(rows))
    ax = _visible(fig)[0]
    lo, hi = ax.get_xlim()
    assert hi < 0.1 and lo < -0.005  # the 1.0 row does not set the scale; the margin does
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["off scale: 1 [0.99, 1.01]"]
    # without a far-off row every row is on the scale
    fig = P.plot_forest(pd.DataFrame(rows[:4]))
    assert len(_visible(fig)[0].texts) == 0


# ------------------------------------------------------------------- style and I/O
def test_variant_colors_depend_on_the_id_alone():
    a = style.variant_colors(["sin-l0.5", "adamw"])
    b = style.variant_colors(["cos-l0.5", "sin-l0.5", "adamw", "sin-l0.1", "anneal"])
    assert a["sin-l0.5"] == b["sin-l0.5"] and a["adamw"] == b["adamw"] == style.BASELINE_COLOR
    assert len(set(b.values())) == 5
    # one hue per family, shaded by λ; an unknown family still gets a fixed colour
    assert style.variant_color("sin-l0.5") == style.variant_color("sin")
    assert style.variant_color("sin-l0.1") != style.variant_color("sin-l0.5")
    assert style.variant_color("newfam-l0.5") == style.variant_color("newfam-l0.5")
    assert style.verdict_color("equivalent within ±0.01") == style.VERDICT_COLORS["equivalent"]
    assert style.verdict_color("???") == style.VERDICT_COLORS["no detectable difference"]


def test_figures_use_the_theme():
    fig = P.plot_kaplan_meier(S.kaplan_meier_by_group(_runs(), horizon=10), horizon=10)
    ax = _visible(fig)[0]
    assert not ax.spines["top"].get_visible()  # the theme's, not matplotlib's default
    assert ax.title.get_fontsize() == pytest.approx(style.theme()["axes.titlesize"])


def test_save_figure_writes_a_png(tmp_path):
    from ablations.report import save_figure

    fig = SP.plot_lambda_sweep(S.lambda_sweep(_runs(), "final_test_acc"))
    out = save_figure(fig, tmp_path / "figs" / "sweep.png", dpi=40)
    assert out == tmp_path / "figs" / "sweep.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_theory_figures_are_themed_figures():
    from theory import plots as T

    check = SimpleNamespace(id="T8", data={"curves": {"C1": {"n": [2, 4, 8],
                                                             "power": [0.1, 0.5, 0.9]}}})
    [(name, fig)] = T.figures_for(check)
    assert name == "t8_power.png" and isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2  # the curve and the 80 % line
    assert not ax.spines["top"].get_visible()
    assert T.figures_for(SimpleNamespace(id="T8", data={})) == []


def test_lr_sensitivity_marks_each_variants_selected_lr():
    from ablations.stats import lr_selection

    rows = [dict(variant=v, seed=s, attention="quantum", lr=lr,
                 final_val_acc=0.9 - abs(np.log10(lr) - np.log10(best)) * 0.1 + 0.001 * s)
            for v, best in (("adamw", 1e-3), ("sin-l0.5", 3e-3))
            for lr in (3e-4, 1e-3, 3e-3, 1e-2) for s in range(3)]
    table = lr_selection(pd.DataFrame(rows), "final_val_acc", higher_is_better=True)
    chosen = table[table["selected"]].set_index("variant")["lr"].to_dict()
    assert chosen == {"adamw": 1e-3, "sin-l0.5": 3e-3}
    fig = SP.plot_lr_sensitivity(table, metric_label="val acc label")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "val acc label"
    rings = [c for c in ax.collections if list(getattr(c, "get_sizes", lambda: [])()) == [160]]
    assert sum(c.get_offsets().shape[0] for c in rings) == 2  # one ring per variant
    with pytest.raises(ValueError, match="plot_lr_sensitivity: column"):
        SP.plot_lr_sensitivity(table.drop(columns="selected"))
