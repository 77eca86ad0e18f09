"""The null control beside every variant (ablations.stats.null_control, issue 16): readings on
a hand-made stats table, and from compare_all with the null among the baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablations import stats as S

NULL = "gauss-l0.001"


def row(variant, baseline="adamw", *, diff=0.0, p_holm=0.9, sd=0.02, n=20, lo=None, hi=None,
        attention="quantum"):
    return dict(metric="final_test_acc", variant=variant, baseline=baseline, n=n, diff=diff,
                ci_low=diff - 0.01 if lo is None else lo, ci_high=diff + 0.01 if hi is None
                else hi, p_holm=p_holm, sd_diff=sd, attention=attention, lr=1e-3)


TABLE = pd.DataFrame([
    row("sin-l0.5", diff=0.03, p_holm=0.001, sd=0.03),           # differs from both
    row(NULL, diff=-0.001, sd=0.02),                              # the nudge
    row("cos-l0.5", diff=0.02, p_holm=0.01, sd=0.02),             # adamw only
    row("taylor-l0.5", diff=0.0, sd=0.04),                        # neither
    row("unif-l0.5", diff=-0.004),                                # the nudge only
    row("anti-l0.5", diff=0.05, p_holm=0.001),                    # no row against the nudge
    row("sin-l0.5", NULL, diff=0.031, p_holm=0.002),
    row("cos-l0.5", NULL, diff=0.021, p_holm=0.3),
    row("taylor-l0.5", NULL, diff=0.001, p_holm=0.9),
    row("unif-l0.5", NULL, diff=-0.003, p_holm=0.04),
    row("sin-l0.5", attention="classical", diff=0.2, p_holm=0.001),  # another cell
])


def test_every_reading_on_a_hand_made_table():
    t = S.null_control(TABLE, "final_test_acc", NULL, cell={"attention": "quantum"})
    assert list(t["variant"]) == [NULL, "sin-l0.5", "cos-l0.5", "taylor-l0.5", "unif-l0.5",
                                  "anti-l0.5"]
    reading = dict(zip(t["variant"], t["reading"]))
    assert reading == {
        NULL: "the null control",
        "sin-l0.5": "differs from adamw and from the nudge",
        "cos-l0.5": "differs from adamw, not from the nudge",
        "taylor-l0.5": "differs from neither",
        "unif-l0.5": "differs from the nudge, not from adamw",
        "anti-l0.5": "differs from adamw (the nudge not compared)"}
    by = t.set_index("variant")
    assert by.loc["sin-l0.5", "spread_ratio"] == pytest.approx(1.5)
    assert by.loc["taylor-l0.5", "spread_ratio"] == pytest.approx(2.0)
    assert (t["null_diff"] == -0.001).all() and (t["null_sd"] == 0.02).all()
    assert by.loc["cos-l0.5", "p_holm_vs_null"] == 0.3
    assert by.loc["sin-l0.5", "diff"] == 0.03  # the quantum cell's, not the classical one's
    assert math.isnan(by.loc["anti-l0.5", "diff_vs_null"])
    assert S.NULL_READINGS[True, False].format(b="adamw") == by.loc["cos-l0.5", "reading"]


def test_no_null_row_gives_an_empty_table_with_the_columns():
    t = S.null_control(TABLE[TABLE["variant"] != NULL], "final_test_acc", NULL)
    assert t.empty and "reading" in t.columns
    no_diff = TABLE.assign(variant=TABLE["variant"].replace({"anti-l0.5": "anneal"}))
    t = S.null_control(no_diff[no_diff["variant"] != "sin-l0.5"], "final_test_acc", NULL,
                       cell={"attention": "quantum"})
    assert "anneal" in set(t["variant"])


def test_from_compare_all_with_the_null_as_a_baseline():
    rng = np.random.default_rng(3)
    n = 30
    adamw = 0.9 + rng.normal(0, 0.01, n)
    values = {"adamw": adamw, NULL: adamw + rng.normal(0, 0.01, n),
              "sin-l0.5": adamw + rng.normal(0, 0.01, n),
              "cos-l0.5": adamw + 0.03 + rng.normal(0, 0.01, n)}
    runs = pd.DataFrame([dict(variant=v, attention="quantum", lr=1e-3, seed=s, final_test_acc=x)
                         for v, xs in values.items() for s, x in enumerate(xs)])
    table = S.compare_all(runs, ["final_test_acc"], baselines=["adamw", NULL],
                          tost_margins={"final_test_acc": 0.01}, n_boot=0)
    t = S.null_control(table, "final_test_acc", NULL).set_index("variant")
    assert t.loc["cos-l0.5", "reading"] == "differs from adamw and from the nudge"
    assert t.loc["sin-l0.5", "reading"] == "differs from neither"
    assert t.loc["sin-l0.5", "spread_ratio"] == pytest.approx(1.0, abs=0.5)
    null_row = table[(table.variant == NULL) & (table.baseline == "adamw")].iloc[0]
    assert t.loc[NULL, "null_sd"] == null_row["sd_diff"]


def test_the_null_figure_draws():
    from ablations.null_plots import plot_null_control

    t = S.null_control(TABLE, "final_test_acc", NULL, cell={"attention": "quantum"})
    fig = plot_null_control(t, null=NULL, scale=100, unit=" pp",
                            metric_label="final test accuracy")
    ax, ax_sd = fig.axes[:2]
    assert len(ax.get_yticklabels()) == len(t)
    assert fig.get_suptitle() == f"Effects against adamw beside the null control {NULL}"
    with pytest.raises(ValueError, match="plot_null_control: column"):
        plot_null_control(t.drop(columns="reading"), null=NULL)
