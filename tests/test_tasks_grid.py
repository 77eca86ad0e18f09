"""The grid of several tasks: configs/classifier-tasks.toml's design (four tasks, three data
seeds, validation splits, the calibrated model, the null control), and the whole path on a
tiny grid of the same shape (two tasks × two data seeds × two run seeds): runs → report with
its "Across tasks" section, figures, no claims judged, the ledger untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablations.arms.classifier import ClassifierOptions
from ablations.arms.tasks import get_task
from ablations.config import load_config, read_toml
from ablations.report import render_arm, render_ledger
from ablations.runner import run_grid
from tests.test_runner import SerialExecutor

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "ablations" / "configs"


def test_the_tasks_grid_has_four_tasks_on_three_data_seeds_each_with_validation_data():
    cfg = load_config(CONFIGS / "classifier-tasks.toml")
    assert cfg.protocol == "calibrated" and not cfg.selection
    per_task: dict[str, set[int]] = {}
    for spec in cfg.specs:
        o = ClassifierOptions(**spec.config)
        per_task.setdefault(o.dataset, set()).add(o.data_seed)
        assert o.n_val > 0  # validation carved from the training draw
        task = get_task(o.dataset)
        assert 0 < o.target_acc < task.ceiling(o)  # a target below the ceiling
    assert set(per_task) >= {"query-count", "parity", "retrieval", "digits"}
    assert all(len(seeds) >= 3 for seeds in per_task.values())
    variants = {s.variant for s in cfg.specs}
    assert {"adamw", "sin-l0.5", "sinnorm-l0.5", "gauss-l0.5", "gauss-l0.001"} <= variants
    # the calibrated model and training, as the lr selection's grid runs them
    lr_grid = read_toml(CONFIGS / "classifier-lr.toml")["classifier"]
    mine = read_toml(CONFIGS / "classifier-tasks.toml")["classifier"]
    for key in ("d_model", "n_heads", "n_layers", "d_ff", "attn_qubits", "attn_depth",
                "epochs", "batch_size", "weight_decay", "clip_grad", "schedule", "dropout"):
        assert mine[key] == lr_grid[key], key
    # every (task, data seed, variant) has the same run seeds: they pair
    seeds = {}
    for s in cfg.specs:
        seeds.setdefault((s.task, s.variant), set()).add(s.seed)
    assert len({frozenset(v) for v in seeds.values()}) == 1


TINY = """
[grid]
arm = "classifier"
name = "tiny-tasks"
protocol = "calibrated"
baseline_lr = 8e-3

[classifier]
n_train = 160
n_val = 40
n_test = 60
epochs = 2
batch_size = 40
d_model = 16
n_heads = 2
n_layers = 1
d_ff = 16
attn_qubits = 1
attn_depth = 1
target_acc = 0.5
{cells}
"""
CELL = """
[[cells]]
task = "{name}-d{d}"
options = {{ dataset = "{name}", data_seed = {d}{extra} }}
variants = ["adamw", "sin-l0.5", "gauss-l0.001"]
seeds = 2
"""


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    import ablations.task_exhibits as T

    saved, T.N_BOOT = T.N_BOOT, 200  # the section's bootstraps, smaller for a test
    tmp = tmp_path_factory.mktemp("tasks")
    cells = "".join(CELL.format(name=n, d=d, extra=extra) for n, extra in
                    (("parity", ", seq_len = 8"), ("retrieval", ", n_pairs = 4, n_keys = 8"))
                    for d in (1, 2))
    path = tmp / "tiny.toml"
    path.write_text(TINY.format(cells=cells))
    cfg = load_config(path, results=tmp / "tiny")
    assert len(cfg.specs) == 2 * 2 * 3 * 2
    assert run_grid(cfg, SerialExecutor(), progress=False)["ran"] == len(cfg.specs)
    try:
        text = render_arm(cfg).read_text()
    finally:
        T.N_BOOT = saved
    return cfg, text, tmp


def test_the_tiny_grid_renders_the_across_tasks_section(tiny_report):
    cfg, text, tmp = tiny_report
    section = text[text.index("## Across tasks"):]
    for part in ("### Per task: each variant against adamw", "### Across tasks: IQM",
                 "### Time to target: performance profiles", "Headroom on validation data",
                 "null control `gauss-l0.001`", "data seeds resampled", "Data seeds 1, 2",
                 "Licence: none needed"):
        assert part in section, part
    figs = {p.name for p in (cfg.results / "figures").glob("*.png")}
    assert {"task_parity.png", "task_retrieval.png", "across_tasks.png",
            "performance_profiles.png"} <= figs
    assert all(f"(figures/{name})" in text for name in figs)
    # one row per task and variant in the per-task table; both tasks in the IQM
    per_task = section[section.index("### Per task"):section.index("### Across tasks")]
    assert per_task.count("| parity | sin-l0.5 |") == 1
    assert per_task.count("| retrieval | gauss-l0.001 |") == 1


def test_a_grid_of_several_tasks_judges_no_claim_and_leaves_the_ledger_alone(tiny_report):
    cfg, text, tmp = tiny_report
    assert "No claim is judged by this grid" in text and "## C1" not in text
    assert "Tasks: every cell runs a task of its own" in text  # not the table's own task
    claims = json.loads((cfg.results / "claims.json").read_text())
    assert claims["claims"] == {}
    ledger = render_ledger(tmp).read_text()
    assert "tiny" not in ledger.split("Details:")[1].split("\n")[0]


def test_the_report_names_every_source_and_the_digits_licence():
    from ablations.arms.tasks import Digits

    assert "UCI" in Digits.source and "CC BY 4.0" in Digits.licence
    assert "unconfirmed" in Digits.licence


def test_the_task_figures_are_figures_and_name_missing_columns():
    import pandas as pd
    from matplotlib.figure import Figure

    from ablations.task_plots import plot_across_tasks, plot_performance_profiles, plot_task

    runs = pd.DataFrame({"variant": ["adamw", "sin"] * 4, "data_seed": [1, 1, 2, 2] * 2,
                         "final_test_acc": [0.8, 0.81, 0.7, 0.72, 0.79, 0.8, 0.71, 0.7]})
    diffs = pd.DataFrame({"variant": ["sin", "sin"], "data_seed": [1, 2], "diff": [0.01, 0.0]})
    eff = pd.DataFrame({"variant": ["sin"], "diff": [0.005], "ci_low": [-0.05],
                        "ci_high": [0.06], "naive_ci_low": [-0.01], "naive_ci_high": [0.02]})
    assert isinstance(plot_task(runs, diffs, eff, value="final_test_acc", ceiling=0.95,
                                chance=0.5), Figure)
    iqm = pd.DataFrame({"variant": ["adamw", "sin"], "iqm": [0.6, 0.62], "ci_low": [0.5, 0.5],
                        "ci_high": [0.7, 0.7]})
    poi = pd.DataFrame({"variant": ["sin"], "poi": [0.55], "ci_low": [0.4], "ci_high": [0.7]})
    assert isinstance(plot_across_tasks(iqm, poi), Figure)
    prof = pd.DataFrame({"variant": ["adamw", "adamw", "sin"], "tau": [1.0, 2.0, 1.0],
                         "rho": [0.5, 1.0, 0.5]})
    assert isinstance(plot_performance_profiles(prof), Figure)
    with pytest.raises(ValueError, match="'rho'"):
        plot_performance_profiles(prof.drop(columns="rho"))
    with pytest.raises(ValueError, match="'iqm'"):
        plot_across_tasks(iqm.drop(columns="iqm"), poi)


def test_cells_of_one_data_set_at_several_settings_are_no_benchmark_of_tasks(tmp_path):
    import pandas as pd

    from ablations.claims import Evidence
    from ablations.exhibits import EXHIBITS, Context

    cells = "".join(CELL.format(name="parity", d=1, extra=f", seq_len = {n}").replace(
        "parity-d1", f"parity-l{n}") for n in (8, 12))
    path = tmp_path / "levels.toml"
    path.write_text(TINY.format(cells=cells))
    cfg = load_config(path, results=tmp_path / "levels")
    runs = pd.DataFrame({"task": ["parity-l8", "parity-l12"], "variant": "adamw", "seed": 0,
                         "attention": "quantum", "lr": 8e-3, "final_test_acc": 0.6})
    ctx = Context(cfg=cfg, arm=cfg.arm_obj, runs=runs, curves=pd.DataFrame(),
                  stats=pd.DataFrame(), records=[], evidence=Evidence())
    assert EXHIBITS["across_tasks"](ctx, None) == []
