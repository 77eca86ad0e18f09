"""Bad configs fail when they load, with one line naming the file and key, before any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablations.config import ConfigError, load_config, read_toml
from qsgd.variants import canonical_id

GRID = """
[grid]
arm = "{arm}"
results = "{results}"
{grid_extra}

[{arm}]
{options}

[[cells]]
{cell}
"""
CELL = 'variants = ["adamw", "sin-l0.5"]\nseeds = 2'


def write(tmp_path, options="", cell=CELL, arm="classifier", grid_extra=""):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(arm=arm, results=tmp_path / "res", options=options, cell=cell,
                                grid_extra=grid_extra))
    return path


@pytest.mark.parametrize("options, message", [
    ('epochs = "two"', r"\[classifier\]\.epochs must be int, got 'two'"),
    ("epochs = 0", r"\[classifier\]\.epochs must be >= 1, got 0"),
    ("epochs = 2.5", r"\[classifier\]\.epochs must be int, got 2\.5"),
    ("batch_size = 0", r"\[classifier\]\.batch_size must be >= 1, got 0"),
    ("n_train = 0", r"\[classifier\]\.n_train must be >= 1, got 0"),
    ("label_noise = 1.5", r"\[classifier\]\.label_noise must be in \[0, 0\.5\], got 1\.5"),
    ("d_model = 30\nn_heads = 4", r"\[classifier\]\.n_heads must be a divisor of d_model"),
    ("weight_decay = inf", r"\[classifier\]\.weight_decay must be finite and >= 0, got inf"),
    ("threshold = 40", r"\[classifier\]\.threshold must be <= seq_len - 1 = 15"),
    ('schedule = "step"', r"\[classifier\]\.schedule must be cosine or constant"),
    ("bias_correction = 1", r"\[classifier\]\.bias_correction must be bool, got 1"),
])
def test_classifier_options_are_checked_when_the_config_loads(tmp_path, options, message):
    with pytest.raises(ConfigError, match=r"grid\.toml: " + message):
        load_config(write(tmp_path, options))


@pytest.mark.parametrize("cell, message", [
    ('attention = "none"\n' + CELL, r"attention 'none' is not one of quantum, classical"),
    ("lr = inf\n" + CELL, r"cells\[0\]: lr must be a finite number > 0, got inf"),
    ('lr = "1e-3"\n' + CELL, r"cells\[0\]: lr must be a number, got '1e-3'"),
    ("lr = -1e-3\n" + CELL, r"lr must be a finite number > 0, got -0\.001"),
    ("lr = []\n" + CELL, r"lr is empty"),
    ('variants = ["adamw"]\nseeds = [-1]', r"seeds must be >= 0, got \[-1\]"),
    ('variants = ["adamw"]\nseeds = [true]', r"seeds must be a positive count or a non-empty "),
    ('variants = ["adamw"]\nseeds = []', r"seeds must be a positive count"),
    ('variants = ["adamw"]\nseeds = 0', r"seeds must be >= 1, got 0"),
    ("variants = []\nseeds = 2", r"cells\[0\]: variants is empty: a cell needs at least one"),
    ('variants = ["sin-l0.5", "sin-l0.50"]', r"variants list one optimizer twice: 'sin-l0\.50' "
                                             r"is 'sin-l0\.5'"),
    ('variants = ["adamw", "none"]', r"variants list one optimizer twice: 'none' is 'adamw'"),
    ("variants = [0.5]", r"variants must be strings, got 0\.5"),
])
def test_cells_are_checked_when_the_config_loads(tmp_path, cell, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, cell=cell))


def test_variant_ids_are_canonical_so_one_optimizer_is_one_run(tmp_path):
    # the same optimizer spelled two ways in two cells is one spec, under its canonical id
    cells = 'variants = ["sin-l0.50", "none"]\nseeds = 1\n\n[[cells]]\nvariants = ["sin-l0.5"]'
    cfg = load_config(write(tmp_path, cell=cells))
    assert sorted(s.variant for s in cfg.specs) == ["adamw", "sin-l0.5"]
    assert [canonical_id(v) for v in ("sin-l1", "sin-l1.0", "anneal-l1.0", "adamw-first4",
                                      "gauss-l0.00001")] == [
        "sin-l1.0", "sin-l1.0", "anneal", "adamw", "gauss-l0.00001"]
    # ids of the stored grids are already canonical: their run keys do not change
    root = Path(__file__).resolve().parent.parent / "ablations" / "configs"
    for name in ("classifier", "llm"):
        text = read_toml(root / f"{name}.toml")
        for cell in text["cells"]:
            assert all(canonical_id(v) == v for v in cell["variants"])


def test_a_cell_accepts_every_registered_perturbation_by_id(tmp_path):
    """The grids pick variants up by name: every registry entry's ``<name>-l0.5`` (sinnorm and
    moment included) loads in a cell, as its own canonical id, with its optimizer settings."""
    from qsgd.perturbations import available
    from qsgd.variants import parse_variant

    ids = [f"{n}-l0.5" for n in available() if n not in ("none", "anneal")]
    assert {"sinnorm-l0.5", "moment-l0.5"} <= set(ids)
    cell = f"variants = {['adamw', 'anneal', *ids]!r}\nseeds = 1".replace("'", '"')
    cfg = load_config(write(tmp_path, cell=cell))
    assert sorted(s.variant for s in cfg.specs) == sorted(["adamw", "anneal", *ids])
    assert parse_variant("moment-l0.5").optimizer_kwargs() == dict(
        perturbation="moment", quantum_weight=0.5, scope="all", n_qubits=4)


def test_llm_arm_rejects_an_attention_it_does_not_have(tmp_path):
    cell = 'attention = "quantum"\nvariants = ["adamw"]'
    with pytest.raises(ConfigError, match=r"attention 'quantum' is not one of none \(arm llm\)"):
        load_config(write(tmp_path, options='model = "random:tiny"', cell=cell, arm="llm"))


def test_grid_table_types(tmp_path):
    with pytest.raises(ConfigError, match=r"\[grid\]\.baseline_lr must be a number, got 'x'"):
        load_config(write(tmp_path, grid_extra='baseline_lr = "x"'))
    with pytest.raises(ConfigError, match=r"\[grid\]\.name must be a string, got 3"):
        load_config(write(tmp_path, grid_extra="name = 3"))
    path = tmp_path / "cells.toml"
    path.write_text('[grid]\narm = "classifier"\ncells = [1]\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[grid\]: cells"):
        load_config(path)


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[grid]\narm = "classifier"\nname = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text \(byte \d+"):
        load_config(path)


def test_classifier_validation_split_is_carved_from_the_training_data():
    from ablations.arms.classifier import ClassifierOptions, make_task

    base = dict(seq_len=10, n_train=200, n_test=60)
    whole, carved = (make_task(ClassifierOptions(**base, n_val=v)) for v in (0, 50))
    assert carved["x_train"].shape[0] == 150 and carved["x_val"].shape[0] == 50
    # the same draw: train + validation are the old training set, the test set is unchanged
    assert (carved["x_train"] == whole["x_train"][:150]).all()
    assert (carved["x_val"] == whole["x_train"][150:]).all()
    assert (carved["x_test"] == whole["x_test"]).all() and "x_val" not in whole
    seen = {tuple(r.tolist()) for r in whole["x_train"]}
    assert not any(tuple(r.tolist()) in seen for r in carved["x_test"])
    with pytest.raises(ValueError, match=r"\[classifier\]\.n_val must be in \[0, n_train = 200"):
        ClassifierOptions(**base, n_val=200)


def test_a_cell_may_run_its_own_task_and_the_grid_names_its_protocol(tmp_path):
    cells = (CELL + '\n\n[[cells]]\ntask = "long"\noptions = { seq_len = 24 }\n'
             'variants = ["adamw"]\nseeds = 2')
    cfg = load_config(write(tmp_path, options="seq_len = 12", cell=cells,
                            grid_extra='protocol = "paper"'))
    assert cfg.protocol == "paper"
    long = [s for s in cfg.specs if s.task == "long"]
    assert len(long) == 2 and all(s.config["seq_len"] == 24 for s in long)
    assert all(s.config["seq_len"] == 12 for s in cfg.specs if not s.task)
    assert all(s.run_id.startswith("classifier-long-") for s in long)
    # the task's name and options are part of the key; a grid without tasks keeps its keys
    plain = next(s for s in cfg.specs if not s.task and s.variant == "adamw" and s.seed == 0)
    assert "task" not in plain.as_dict() and long[0].as_dict()["task"] == "long"
    with pytest.raises(ConfigError, match=r"cells\[1\]: options: \[classifier\]\.seq_len must "
                                          r"be int, got 'x'"):
        load_config(write(tmp_path, cell=cells.replace("seq_len = 24", 'seq_len = "x"')))
    with pytest.raises(ConfigError, match=r"a cell that changes options needs a task name"):
        load_config(write(tmp_path, cell=cells.replace('task = "long"\n', "")))
    with pytest.raises(ConfigError, match=r"\[grid\]\.protocol must be one of paper, "
                                          r"calibrated, got 'mine'"):
        load_config(write(tmp_path, grid_extra='protocol = "mine"'))


def test_learning_rates_selected_on_another_grids_validation_runs(tmp_path):
    """lr = "selected" runs each variant at its best validation lr of the sweep grid, and
    "selected:adamw" at AdamW's; before the sweep has finished the grid does not load."""
    from ablations.config import SelectionPending
    from ablations.runner import run_grid
    from tests.test_runner import SerialExecutor

    tiny = ('seq_len = 10\nn_train = 150\nn_val = 50\nn_test = 60\nepochs = 2\n'
            'batch_size = 50\nd_model = 16\nd_ff = 16')
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(GRID.format(arm="classifier", results=tmp_path / "sweep", options=tiny,
                                 grid_extra='protocol = "calibrated"',
                                 cell='attention = "classical"\nvariants = ["adamw", '
                                      '"sin-l0.5"]\nlr = [1e-3, 3e-2]\nseeds = 2'))
    final = tmp_path / "final.toml"
    final.write_text(GRID.format(
        arm="classifier", results=tmp_path / "final", options=tiny,
        grid_extra='protocol = "calibrated"\nselect_lr = "sweep.toml"\n'
                   'baseline_lr = "selected:adamw"',
        cell='attention = "classical"\nvariants = ["adamw", "sin-l0.5"]\nlr = "selected"\n\n'
             '[[cells]]\nattention = "classical"\nvariants = ["sin-l0.5"]\n'
             'lr = "selected:adamw"'))
    with pytest.raises(SelectionPending, match=r"select_lr: sweep\.toml has 0 of its 8 runs"):
        load_config(final)
    run_grid(load_config(sweep), SerialExecutor(), progress=False)
    cfg = load_config(final)
    from ablations.records import load_records
    from ablations.stats import lr_selection
    from ablations.tables import runs_table

    table = lr_selection(runs_table(load_records(tmp_path / "sweep" / "runs.jsonl")),
                         "final_val_acc", higher_is_better=True)
    best = table[table["selected"]].set_index("variant")["lr"].to_dict()
    assert cfg.baseline_lr == best["adamw"]
    got = {(s.variant, s.lr) for s in cfg.specs}
    assert got == {("adamw", best["adamw"]), ("sin-l0.5", best["sin-l0.5"]),
                   ("sin-l0.5", best["adamw"])}
    bad = final.read_text().replace('"selected:adamw"\n\n', '"selected:cos-l0.5"\n\n', 1)
    final.write_text(bad.replace('baseline_lr = "selected:adamw"',
                                 'baseline_lr = "selected:cos-l0.5"'))
    with pytest.raises(ConfigError, match=r"chose no lr for 'cos-l0\.5' \(it chose for adamw, "
                                          r"sin-l0\.5\)"):
        load_config(final)


def test_a_config_extends_another_and_states_only_what_differs(tmp_path):
    base = write(tmp_path, options="epochs = 3\nbatch_size = 16")
    child = tmp_path / "child.toml"
    child.write_text(f'[grid]\nextends = "{base.name}"\nname = "child"\n'
                     f'results = "{tmp_path / "other"}"\n\n[classifier]\nepochs = 5\n')
    parent, cfg = load_config(base), load_config(child)
    assert cfg.name == "child" and cfg.results == tmp_path / "other"
    assert cfg.options == {"epochs": 5, "batch_size": 16}  # table by table, the child wins
    assert [s.variant for s in cfg.specs] == [s.variant for s in parent.specs]  # cells kept
    assert {s.key for s in cfg.specs}.isdisjoint({s.key for s in parent.specs})
    # cells given in the child replace the base's whole
    child.write_text(child.read_text() + '\n[[cells]]\nvariants = ["cos-l0.5"]\nseeds = 1\n')
    assert [s.variant for s in load_config(child).specs] == ["cos-l0.5"]
    grandchild = tmp_path / "grandchild.toml"
    grandchild.write_text('[grid]\nextends = "child.toml"\nname = "g"\n')
    assert load_config(grandchild).options["batch_size"] == 16  # a chain is followed


@pytest.mark.parametrize("extends, message", [
    ('"grid.toml"', r"extends = 'grid\.toml' makes a cycle: grid\.toml -> grid\.toml"),
    ('"missing.toml"', r"grid\.toml: \[grid\]\.extends = 'missing\.toml': config file not "
                       r"found: .*missing\.toml"),
    ("3", r"grid\.toml: \[grid\]\.extends must name a config file, got 3"),
])
def test_a_bad_extends_names_the_file(tmp_path, extends, message):
    path = write(tmp_path, grid_extra=f"extends = {extends}")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_an_extended_configs_file_references_stay_beside_it(tmp_path):
    base = write(tmp_path, grid_extra='replicates = "twin.toml"')
    (tmp_path / "twin.toml").write_text(base.read_text().replace('replicates = "twin.toml"', ""))
    sub = tmp_path / "sub"
    sub.mkdir()
    child = sub / "child.toml"
    child.write_text('[grid]\nextends = "../grid.toml"\nname = "child"\n')
    assert load_config(child).replicates.resolve() == (tmp_path / "twin.toml").resolve()
