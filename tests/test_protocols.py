"""The classifier's protocol grids (issue 15): the paper protocol with its task difficulty
chosen on validation, the calibrated protocol with its lrs chosen on validation, and the
reports' selection sections (difficulty selection; shared against tuned learning rates).

Reports are rendered from hand-made records (a fake run function: metrics as a function of
the spec), so every expected number is known and the tests take a second or two.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablations import stats
from ablations.config import ConfigError, SelectionPending, load_config, read_config, read_toml
from ablations.provenance import provenance
from ablations.report import render_arm
from ablations.runner import run_grid
from qsgd.variants import canonical_id
from tests.test_runner import SerialExecutor

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "ablations" / "configs"


def _copy(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "ablations" / "configs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((CONFIGS / f"{name}.toml").read_text())
    return path


# ----------------------------------------------------------------------------- fake runs
def _fake_run(metrics_of):
    """A run function for run_grid: the record of a spec whose metrics ``metrics_of(spec)``
    gives (final_val_acc, final_test_acc, epochs_to_90_val, epochs_to_90: NaN = never)."""

    def run(spec):
        val, test, e_val, e_test = metrics_of(spec)
        epochs = spec.config.get("epochs", 12)
        m = dict(final_val_acc=val, final_test_acc=test, epochs_to_90_val=e_val,
                 reached_90_val=bool(np.isfinite(e_val)), epochs_to_90=e_test,
                 reached_90=bool(np.isfinite(e_test)), mean_train_loss=1 - test,
                 final_train_loss=1 - test, sec_per_epoch=1.0,
                 sec_to_target=e_test if np.isfinite(e_test) else math.nan,
                 sec_total=float(epochs), perturbation_ratio=0.0, steps=10, diverged=False)
        curve = [{"epoch": e, "test_acc": test * e / epochs, "val_acc": val * e / epochs,
                  "train_loss": 1 - test * e / epochs, "sec": float(e)}
                 for e in range(1, epochs + 1)]
        rec = dict(run_id=spec.run_id, key=spec.key, arm=spec.arm, variant=spec.variant,
                   attention=spec.attention, seed=spec.seed, lr=spec.lr, config=spec.config,
                   metrics=m, curve=curve, provenance=provenance(1.0, "cpu (test)"),
                   numerics=spec.numerics)
        if spec.task:
            rec["task"] = spec.task
        return rec

    return run


def _run(cfg, metrics_of):
    return run_grid(cfg, SerialExecutor(), progress=False, run_fn=_fake_run(metrics_of))


# ----------------------------------------------------------------------------- the configs
def test_the_protocol_configs_load_with_validation_splits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no results/ here: no selection has run
    grids = {"classifier-difficulty": ("paper", True),
             "classifier-calibrated-difficulty": ("calibrated", True)}
    for name, (protocol, selection) in grids.items():
        text = read_toml(CONFIGS / f"{name}.toml")
        cfg = load_config(_copy(tmp_path, name))
        assert (cfg.protocol, cfg.selection) == (protocol, selection), name
        for spec in cfg.specs:  # every run holds out validation data from its training draws
            assert 0 < spec.config["n_val"] < spec.config["n_train"], (name, spec.task)
        listed = {canonical_id(v) for c in text["cells"] for v in c["variants"]}
        assert {spec.variant for spec in cfg.specs} == listed, name  # every variant runs
    # the grids that read a difficulty selection's validation runs: not there yet, they say so
    for name, ref in (("classifier-paper", "classifier-difficulty"),
                      ("classifier-lr", "classifier-calibrated-difficulty"),
                      ("classifier-calibrated", "classifier-calibrated-difficulty")):
        _copy(tmp_path, ref)
        with pytest.raises(SelectionPending, match=rf"select_task: {ref}\.toml has 0 of "):
            load_config(_copy(tmp_path, name))
    # the calibrated grid runs the lr grid's task, model and training: its selections apply
    assert read_toml(CONFIGS / "classifier-calibrated.toml")["classifier"] == \
        read_toml(CONFIGS / "classifier-lr.toml")["classifier"]
    for name in ("classifier-lr", "classifier-calibrated"):
        assert read_toml(CONFIGS / f"{name}.toml")["grid"]["select_task"] == \
            "classifier-calibrated-difficulty.toml"


def test_a_grid_takes_the_level_its_difficulty_selection_chose(tmp_path):
    sel = tmp_path / "levels.toml"
    sel.write_text(
        '[grid]\narm = "classifier"\nname = "levels"\nprotocol = "paper"\nselection = true\n'
        f'results = "{(tmp_path / "levels").as_posix()}"\n'
        'baseline_lr = 1e-3\n\n[classifier]\nn_train = 300\nn_val = 100\nn_test = 100\n'
        "epochs = 12\n\n"
        '[[cells]]\ntask = "b"\noptions = { n_symbols = 12 }\nvariants = ["adamw"]\n'
        'seeds = 3\n\n'
        '[[cells]]\ntask = "c"\noptions = { n_symbols = 16, threshold = 2 }\n'
        'variants = ["adamw"]\nseeds = 3\n')
    grid = tmp_path / "test.toml"
    body = ('[grid]\narm = "classifier"\nname = "t"\nprotocol = "paper"\n'
            'select_task = "levels.toml"\nbaseline_lr = 1e-3\n\n[classifier]\n'
            'n_val = 100\nn_test = 100\n{extra}\n[[cells]]\nvariants = ["adamw"]\nseeds = 2\n')
    grid.write_text(body.format(extra=""))
    with pytest.raises(SelectionPending, match=r"select_task: levels\.toml has 0 of its 6 runs"):
        load_config(grid)
    assert _run(load_config(sel), _difficulty_metrics)["ran"] == 6
    cfg = load_config(grid, results=tmp_path / "t")
    # b (quantum: epochs 8, 9, 8, median 8) is nearest 7.4; c never reaches 90%
    assert cfg.selected_task == "b" and cfg.selected_task_from == sel
    # a level is every option the levels differ in: here n_symbols and threshold
    assert cfg.selected_task_options == {"n_symbols": 12, "threshold": 1}
    assert {(s.config["n_symbols"], s.config["threshold"], s.task) for s in cfg.specs} == \
        {(12, 1, "")}
    _run(cfg, lambda spec: (0.9, 0.9, 5.0, 5.0))
    assert "Task: level **b** (n_symbols = 12, threshold = 1) of the difficulty selection " \
        in render_arm(cfg).read_text()
    # the grid's table may not set what the selection chooses
    grid.write_text(body.format(extra="threshold = 2\n"))
    with pytest.raises(ConfigError, match=r"\[classifier\]\.threshold is chosen by "
                                          r"\[grid\]\.select_task \(levels\.toml\); remove"):
        load_config(grid)
    # a grid of one level selects nothing
    sel.write_text(sel.read_text().split("[[cells]]")[0] + "[[cells]]\ntask = \"b\"\n"
                   'variants = ["adamw"]\nseeds = 1\n')
    grid.write_text(body.format(extra=""))
    with pytest.raises(ConfigError, match=r"levels\.toml is no difficulty selection"):
        load_config(grid)


def test_the_paper_grid_follows_table_ii():
    raw = read_toml(CONFIGS / "classifier-paper.toml")
    o = raw["classifier"]
    assert raw["grid"]["baseline_lr"] == 1e-3 and raw["grid"]["protocol"] == "paper"
    assert {k: o[k] for k in ("d_model", "n_heads", "d_ff", "n_layers", "dropout",
                              "attn_qubits", "attn_depth", "batch_size", "weight_decay",
                              "schedule")} == dict(
        d_model=64, n_heads=4, d_ff=128, n_layers=2, dropout=0.1, attn_qubits=4, attn_depth=2,
        batch_size=32, weight_decay=0.0, schedule="constant")
    # the difficulty is the level classifier-difficulty.toml chooses on validation
    assert raw["grid"]["select_task"] == "classifier-difficulty.toml"
    seeds: dict[tuple[str, str], int] = {}
    for cell in raw["cells"]:
        n = cell["seeds"] if isinstance(cell["seeds"], int) else len(cell["seeds"])
        atts = cell.get("attention", "quantum")
        for a in atts if isinstance(atts, list) else [atts]:
            for v in cell["variants"]:
                seeds[(a, v)] = max(seeds.get((a, v), 0), n)
    assert seeds[("quantum", "adamw")] >= 20 and seeds[("quantum", "sin-l0.5")] >= 20
    assert min(seeds.values()) >= 10
    assert {("quantum", v) for v in ("adamw", "moment-l0.5", "sin-l0.1", "sin-l0.5",
                                     "cos-l0.5", "gauss-l0.5", "circuit-l0.5",
                                     "sin-l0.5-first4")} | {("classical", "adamw"),
                                                            ("classical", "sin-l0.5")} \
        <= set(seeds)


def test_the_lr_grid_spans_a_log_range_for_each_variant():
    raw = read_toml(CONFIGS / "classifier-lr.toml")
    (cell,) = raw["cells"]
    lrs = sorted(cell["lr"])
    assert len(lrs) >= 7 and math.log10(lrs[-1] / lrs[0]) >= 1.5
    assert np.allclose(np.diff(np.log(lrs)), np.log(lrs[1] / lrs[0]))  # a log grid
    assert cell["variants"][:1] == ["adamw"] and set(cell["variants"]) == {
        "adamw", "sin-l0.5", "sinnorm-l0.5"}
    assert len(cell["seeds"]) >= 3


# ----------------------------------------------------------------------------- difficulty
def test_difficulty_selection_rule():
    def runs(rows):
        return pd.DataFrame(rows, columns=["task", "attention", "seed", "epochs_to_90_val",
                                           "reached_90_val", "final_val_acc"])

    nan = math.nan
    table = runs([
        ("easy", "quantum", 0, 3, True, 0.93), ("easy", "quantum", 1, 4, True, 0.93),
        ("mid", "quantum", 0, 7, True, 0.92), ("mid", "quantum", 1, 8, True, 0.92),
        ("mid2", "quantum", 0, 7, True, 0.94), ("mid2", "quantum", 1, 8, True, 0.94),
        ("hard", "quantum", 0, nan, False, 0.6), ("hard", "quantum", 1, nan, False, 0.6),
        ("near", "classical", 0, 7, True, 0.99), ("near", "classical", 1, 7, True, 0.99)])
    out = stats.difficulty_selection(table, target=7.4, horizon=12, tiebreak="final_val_acc",
                                     choose_among={"attention": "quantum"},
                                     order=["hard", "mid", "mid2", "easy", "near"])
    assert list(out["task"]) == ["hard", "mid", "mid2", "easy", "near"]  # the given order
    assert out.loc[out["task"] == "mid", "median"].item() == 7.5  # S = 1/2 on [7, 8): midpoint
    assert math.isnan(out.loc[out["task"] == "hard", "median"].item())  # never a median
    # mid and mid2 tie at 0.1 from the target: the higher validation accuracy wins; the
    # classical level at 0.4 is not among the choices whatever its distance
    assert list(out.loc[out["selected"], "task"]) == ["mid2"]
    flat = table.assign(final_val_acc=0.9)
    out = stats.difficulty_selection(flat, target=7.4, horizon=12, tiebreak="final_val_acc",
                                     choose_among={"attention": "quantum"},
                                     order=["mid2", "mid"])
    assert list(out.loc[out["selected"], "task"]) == ["mid2"]  # then the order given
    none = stats.difficulty_selection(table[table["task"] == "hard"], target=7.4, horizon=12)
    assert not none["selected"].any()


def _difficulty_metrics(spec):
    # per level and attention: the epoch at which validation accuracy reaches 90%
    e = {("a", "classical"): 3, ("b", "classical"): 6, ("c", "classical"): 10,
         ("b", "quantum"): 8 + (spec.seed % 2), ("c", "quantum"): math.nan}[(spec.task,
                                                                             spec.attention)]
    return 0.93, 0.5, float(e), 12.0  # the test metrics are 0.5 / 12: nothing reads them


def test_the_difficulty_section_chooses_on_validation(tmp_path):
    path = tmp_path / "difficulty.toml"
    path.write_text(
        '[grid]\narm = "classifier"\nname = "d"\nprotocol = "paper"\nselection = true\n'
        'baseline_lr = 1e-3\n\n[classifier]\nn_train = 300\nn_val = 100\nn_test = 100\n'
        "epochs = 12\n\n"
        '[[cells]]\ntask = "a"\nattention = "classical"\nvariants = ["adamw"]\nseeds = 3\n\n'
        '[[cells]]\ntask = "b"\noptions = { n_symbols = 12 }\nattention = ["classical", '
        '"quantum"]\nvariants = ["adamw"]\nseeds = 3\n\n'
        '[[cells]]\ntask = "c"\noptions = { n_symbols = 16, threshold = 2 }\n'
        'attention = ["classical", "quantum"]\nvariants = ["adamw"]\nseeds = 3\n')
    cfg = load_config(path, results=tmp_path / "d")
    assert _run(cfg, _difficulty_metrics)["ran"] == 15
    text = render_arm(cfg).read_text()
    section = text[text.index("## Difficulty selection (validation)"):]
    # quantum b: epochs 8, 9, 8 -> median 8; quantum c never reaches 90%; classical a (3) and
    # b (6) narrowed the range only
    assert "Chosen: **b** (median 8.0)" in section
    assert "7.4 (the paper's Adam: 7.4 epochs to 90% accuracy" in section
    rows = [r for r in section.splitlines() if r.startswith("| ") and "quantum" in r]
    assert [r.split(" | ")[0] for r in rows] == ["| b", "| c"]
    assert " | 12 | 1 |" in rows[0] and " | 16 | 2 |" in rows[1]  # the levels' options
    assert (tmp_path / "d" / "figures" / "difficulty.png").is_file()
    assert "test accuracy" not in section.lower() and "## C1" not in text


def test_levels_run_at_several_lrs_are_read_at_their_selected_lr(tmp_path):
    # level a: the best validation accuracy at lr 1e-3 (90% at epoch 7; at 2e-3: epoch 4);
    # level b: at 2e-3 (epoch 11; at 1e-3: epoch 8). Each level is read at its own lr.
    table = {("a", 1e-3): (0.93, 7.0), ("a", 2e-3): (0.90, 4.0), ("b", 1e-3): (0.90, 8.0),
             ("b", 2e-3): (0.94, 11.0)}

    def metrics(spec):
        val, e = table[(spec.task, spec.lr)]
        return val, 0.5, e, 12.0

    path = tmp_path / "levels.toml"
    path.write_text(
        '[grid]\narm = "classifier"\nname = "levels"\nprotocol = "calibrated"\n'
        'selection = true\nbaseline_lr = 1e-3\n\n' + _SMALL.replace("epochs = 6", "epochs = 12")
        + '\n[[cells]]\ntask = "a"\nvariants = ["adamw"]\nlr = [1e-3, 2e-3]\nseeds = 3\n\n'
        '[[cells]]\ntask = "b"\noptions = { n_symbols = 6 }\nvariants = ["adamw"]\n'
        'lr = [1e-3, 2e-3]\nseeds = 3\n')
    cfg = load_config(path, results=tmp_path / "levels")
    assert _run(cfg, metrics)["ran"] == 12
    text = render_arm(cfg).read_text()
    section = text[text.index("## Difficulty selection"):text.index("## Learning-rate")]
    assert "read at each one's own: the lr of adamw's highest mean final validation" in section
    rows = [r.split(" | ") for r in section.splitlines() if r.startswith(("| a ", "| b "))]
    assert [(r[0], float(r[3]), float(r[6])) for r in rows] == [("| a", 1e-3, 7.0),
                                                               ("| b", 2e-3, 11.0)]
    assert "Chosen: **a** (median 7.0)" in section
    assert "Tasks of the cells (compared within a task only), with the options they change: " \
        "`a` none; `b` n_symbols = 6." in text


# ----------------------------------------------------------------------------- shared vs tuned
_SMALL = ('[classifier]\nn_train = 300\nn_val = 100\nn_test = 100\nepochs = 6\n'
          'd_model = 16\nd_ff = 32\n')


def _lr_metrics(spec):
    # validation accuracy peaks at lr 2e-3 for adamw, at 4e-3 for sin-l0.5; test accuracy:
    # sin-l0.5 at its own lr beats adamw at its own by 0.02, at the shared lr loses by 0.01
    best = {"adamw": 2e-3, "sin-l0.5": 4e-3}[spec.variant]
    val = 0.9 - abs(math.log2(spec.lr / best)) * 0.01 + 0.001 * (spec.seed % 100)
    test = {("adamw", 2e-3): 0.90, ("sin-l0.5", 2e-3): 0.89,
            ("sin-l0.5", 4e-3): 0.92}.get((spec.variant, spec.lr), 0.8) + 0.002 * spec.seed
    return val, test, 3.0, float(3 + (spec.variant == "adamw") + spec.seed % 2)


def test_shared_and_tuned_comparisons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "lr.toml"
    sweep.write_text(
        '[grid]\narm = "classifier"\nname = "lr"\nprotocol = "calibrated"\nselection = true\n'
        'results = "res/lr"\nbaseline_lr = 2e-3\n\n' + _SMALL +
        '\n[[cells]]\nvariants = ["adamw", "sin-l0.5"]\nlr = [1e-3, 2e-3, 4e-3, 8e-3]\n'
        'seeds = [100, 101, 102]\n')
    path = tmp_path / "cal.toml"
    path.write_text(
        '[grid]\narm = "classifier"\nname = "cal"\nprotocol = "calibrated"\n'
        'results = "res/cal"\nselect_lr = "lr.toml"\nbaseline_lr = "selected:adamw"\n\n'
        + _SMALL + '\n[[cells]]\nname = "shared"\nvariants = ["adamw", "sin-l0.5"]\n'
        'lr = "selected:adamw"\nseeds = 4\n\n[[cells]]\nname = "tuned-lr"\n'
        'variants = ["adamw", "sin-l0.5"]\nlr = "selected"\nseeds = 4\n')
    with pytest.raises(SelectionPending):
        load_config(path)
    _run(load_config(sweep), _lr_metrics)
    sweep_text = render_arm(load_config(sweep)).read_text()
    assert "Selected: adamw: lr 0.002 (0.9010); sin-l0.5: lr 0.004 (0.9010)" in sweep_text
    cfg = load_config(path)
    assert cfg.selected_lr == {"adamw": 2e-3, "sin-l0.5": 4e-3} and cfg.baseline_lr == 2e-3
    assert sorted({(s.variant, s.lr) for s in cfg.specs}) == [
        ("adamw", 2e-3), ("sin-l0.5", 2e-3), ("sin-l0.5", 4e-3)]  # adamw's tuned = shared
    assert _run(cfg, _lr_metrics)["ran"] == 12
    text = render_arm(cfg).read_text()
    # this grid's report draws the selecting grid's lr curves too
    assert "The curves are the runs of the selection grid `lr`" in text
    section = text[text.index("## Shared and tuned learning rates"):].split("\n## ")[0]
    rows = {r.split(" | ")[1]: r.split(" | ") for r in section.splitlines()
            if r.startswith("| sin-l0.5")}
    cols = [c.strip() for c in section.splitlines()[4].strip("|").split("|")]
    shared = dict(zip(cols, [c.strip(" |") for c in rows["shared lr"]], strict=True))
    own = dict(zip(cols, [c.strip(" |") for c in rows["own lr"]], strict=True))
    assert [float(x) for x in (shared["lr"], shared["adamw lr"], own["lr"],
                               own["adamw lr"])] == [2e-3, 2e-3, 4e-3, 2e-3]
    assert float(shared["diff"]) == pytest.approx(-0.01) and shared["verdict"] == "worse"
    assert float(own["diff"]) == pytest.approx(0.02) and own["verdict"] == "better"
    # epochs to 90% test accuracy: sin-l0.5 3,4,3,4 against adamw 4,5,4,5 at either lr
    assert (float(own["median_variant"]), float(own["median_baseline"])) == (3.5, 4.5)
    assert "final test accuracy (test split)" in section


def test_runs_at_the_selected_lr():
    runs = pd.DataFrame({"variant": ["adamw", "adamw", "sin-l0.5", "sin-l0.5", "gauss-l0.5"],
                         "lr": [1e-3, 2e-3, 1e-3, 4e-3, 2e-3], "seed": 0})
    got = stats.at_selected_lr(runs, {"adamw": 2e-3, "sin-l0.5": 0.004})
    assert got.to_dict("list") == {"variant": ["adamw", "sin-l0.5"], "seed": [0, 0]}
    assert stats.at_selected_lr(runs, {}).empty


def test_a_selected_lr_for_a_variant_the_sweep_did_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr.toml").write_text(
        '[grid]\narm = "classifier"\nselection = true\nresults = "res/lr"\n'
        'baseline_lr = 1e-3\n\n' + _SMALL + '\n[[cells]]\nvariants = ["adamw"]\n'
        "lr = [1e-3, 2e-3]\nseeds = 1\n")
    _run(load_config(tmp_path / "lr.toml"), lambda s: (0.9, 0.9, 3.0, 3.0))
    path = tmp_path / "cal.toml"
    path.write_text('[grid]\narm = "classifier"\nselect_lr = "lr.toml"\nbaseline_lr = 1e-3\n\n'
                    '[[cells]]\nvariants = ["cos-l0.5"]\nlr = "selected"\n')
    with pytest.raises(ConfigError, match=r"chose no lr for 'cos-l0.5' \(it chose for adamw\)"):
        load_config(path)


def test_the_lr_sensitivity_figure_draws_three_variants():
    from matplotlib.collections import PathCollection

    from ablations.sweep_plots import plot_lr_sensitivity

    rows = [{"variant": v, "lr": lr, "mean": 0.9 - abs(np.log2(lr / best)) / 100, "ci_low": 0.8,
             "ci_high": 0.95, "selected": lr == best}
            for v, best in (("adamw", 2e-3), ("sin-l0.5", 2e-3), ("sinnorm-l0.5", 4e-3))
            for lr in (1e-3, 2e-3, 4e-3, 8e-3)]
    fig = plot_lr_sensitivity(pd.DataFrame(rows), metric_label="final validation accuracy")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]  # not the error bars
    assert len(lines) == 3 and len({ln.get_color() for ln in lines}) == 3
    # each variant's selected lr is ringed, at its own lr (dodged by a few percent)
    rings = [x for c in ax.collections if isinstance(c, PathCollection)
             for x, _ in c.get_offsets()]
    assert sorted(rings) == pytest.approx([1.92e-3, 2e-3, 4.16e-3], rel=1e-9)


def test_nox_runs_every_classifier_grid_after_the_selections_it_reads():
    import ast

    tree = ast.parse((ROOT / "noxfile.py").read_text())
    grids = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "CLASSIFIER_GRIDS")
    configs = {p.stem for p in CONFIGS.glob("*.toml")
               if read_config(p)["grid"]["arm"] == "classifier"} - {"smoke"}
    assert set(grids) == configs and len(grids) == len(configs)
    for i, name in enumerate(grids):
        grid = read_toml(CONFIGS / f"{name}.toml")["grid"]
        for key in ("select_task", "select_lr"):
            if key in grid:
                assert grids.index(Path(grid[key]).stem) < i, (name, key)
