"""The classifier arm's tasks (ablations/arms/tasks.py): split sizes, disjoint splits,
determinism by data_seed, label balance, a linear bag-of-tokens baseline, a tiny training
run per task, query-count unchanged bit for bit, and the option errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations.arms.classifier import ClassifierOptions, build_model, make_task, run
from ablations.arms.tasks import get_task, task_info, task_names
from ablations.config import ConfigError, RunSpec, _freeze, load_config

ROOT = Path(__file__).resolve().parents[1]

#: small but valid options of every registered task (a new task must add its case here)
CASES = {
    "query-count": dict(n_train=300, n_test=100, n_val=60),
    "parity": dict(dataset="parity", n_train=300, n_test=100, n_val=60),
    "retrieval": dict(dataset="retrieval", n_train=300, n_test=100, n_val=60),
    "digits": dict(dataset="digits", n_train=400, n_test=200, n_val=100),
}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.numpy()}


def test_every_registered_task_is_tested_here():
    assert set(task_names()) == set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_split_sizes_token_range_and_labels(name):
    o = ClassifierOptions(**CASES[name])
    task, data = get_task(name), make_task(o)
    L = task.seq_len(o)
    sizes = {"train": o.n_train - o.n_val, "val": o.n_val, "test": o.n_test}
    for split, n in sizes.items():
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        assert x.dtype == y.dtype == torch.int64
        assert x.shape == (n, L) and y.shape == (n,)
        assert 1 <= int(x.min()) and int(x.max()) < task.vocab_size(o)  # PAD = 0 never drawn
        assert 0 <= int(y.min()) and int(y.max()) < task.n_classes(o)
    assert "x_val" not in make_task(ClassifierOptions(**{**CASES[name], "n_val": 0}))


@pytest.mark.parametrize("name", CASES)
def test_train_validation_and_test_share_no_example(name):
    data = make_task(ClassifierOptions(**CASES[name]))
    train, val, test = (_rows(data[f"x_{s}"]) for s in ("train", "val", "test"))
    assert not train & test and not val & test and not train & val


def test_digits_stay_distinct_images_at_every_allowed_quantisation():
    from ablations.arms.tasks import N_DIGITS, _digits, _pixel_tokens

    distinct = lambda levels: len(np.unique(_pixel_tokens(_digits()[0], levels), axis=0))
    assert all(distinct(levels) == N_DIGITS for levels in range(4, 18))
    assert distinct(3) < N_DIGITS  # why 4 is the least


@pytest.mark.parametrize("name", CASES)
def test_the_data_are_a_function_of_data_seed_alone(name):
    a, b = (make_task(ClassifierOptions(**CASES[name])) for _ in range(2))
    c = make_task(ClassifierOptions(**CASES[name], data_seed=99))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["x_train"], c["x_train"])
    # validation is carved from the training draw: more of it moves rows, draws nothing new
    d = make_task(ClassifierOptions(**{**CASES[name], "n_val": 120}))
    assert torch.equal(torch.cat([d["x_train"], d["x_val"]]),
                       torch.cat([a["x_train"], a["x_val"]]))


@pytest.mark.parametrize("name", CASES)
def test_labels_are_balanced(name):
    o = ClassifierOptions(**{**CASES[name], "n_train": 1200 if name != "digits" else 1297,
                             "n_test": 500, "n_val": 0})
    y = make_task(o)["y_train"].numpy()
    share = np.bincount(y, minlength=get_task(name).n_classes(o)) / len(y)
    k = len(share)
    assert np.all(np.abs(share - 1 / k) < 0.05), share


def _bag_of_tokens_accuracy(o) -> float:
    """Test accuracy of logistic regression on the token histogram (no positions)."""
    from sklearn.linear_model import LogisticRegression

    data, V = make_task(o), get_task(o.dataset).vocab_size(o)
    hist = lambda x: np.stack([np.bincount(r, minlength=V) for r in x.numpy()])
    fit = LogisticRegression(C=10.0, max_iter=2000).fit(hist(data["x_train"]),
                                                       data["y_train"].numpy())
    return float(fit.score(hist(data["x_test"]), data["y_test"].numpy()))


@pytest.mark.parametrize("name, bound", [
    ("query-count", 0.58),  # the label is histogram[query] >= threshold: no linear function
    ("retrieval", 0.56),    # every sequence holds P/2 values of each class: chance exactly
    # parity: a threshold on the count is the best linear rule, (1 + 1/m)/2 of the clean
    # labels with m counts of each parity (m = 2 at the default max_count = 3: 0.75)
    ("parity", 0.78),
])
def test_a_linear_bag_of_tokens_model_cannot_solve_the_synthetic_tasks(name, bound):
    o = ClassifierOptions(**{**CASES[name], "n_train": 2000, "n_test": 1000, "n_val": 0,
                             "label_noise": 0.0})
    assert _bag_of_tokens_accuracy(o) < bound


def test_the_parity_bound_is_the_best_threshold_on_the_count():
    # the docstring's bound (1 + 1/m)/2, m = 2 counts of each parity at max_count = 3: a
    # linear rule on the bag of tokens is a threshold on the count c of the marked symbol
    o = ClassifierOptions(dataset="parity", label_noise=0.0, n_train=10, n_test=4000)
    data = make_task(o)
    c, y = (data["x_test"] == 1).sum(1).numpy(), data["y_test"].numpy()
    best = max(max(np.mean((c >= t) == y), np.mean((c < t) == y)) for t in range(5))
    assert abs(best - 0.75) < 0.02


TINY_MODEL = dict(epochs=2, batch_size=50, d_model=8, n_heads=1, n_layers=1, d_ff=16)


@pytest.mark.parametrize("name", CASES)
def test_a_tiny_training_run_of_every_task(name):
    cfg = {**CASES[name], **TINY_MODEL}
    record = run(RunSpec("classifier", "adamw", "classical", 0, 3e-3, _freeze(cfg)))
    m, curve = record["metrics"], record["curve"]
    assert len(curve) == 2 and m["steps"] == 2 * -(-(cfg["n_train"] - cfg["n_val"]) // 50)
    assert 0.0 <= m["final_val_acc"] <= 1.0 and 0.0 <= m["final_test_acc"] <= 1.0
    assert np.isfinite(m["mean_train_loss"]) and not m["diverged"]
    o = ClassifierOptions(**cfg)
    assert build_model(o, "classical").head.out_features == get_task(name).n_classes(o)


# ------------------------------------------------------------------ query-count unchanged
def _digest(data: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(data):
        a = data[k].numpy()
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


@pytest.mark.parametrize("options, digest", [
    # computed with the arm's code before the task registry (commit b87a195)
    ({}, "57e208ad21289a4da3171c194fad0d7d"),
    ({"n_val": 500}, "9959c62b8d540de29bb8a5807a0602d6"),
    ({"seq_len": 10, "n_symbols": 5, "threshold": 2, "span": 2, "label_noise": 0.1,
      "n_train": 200, "n_test": 60, "n_val": 50, "data_seed": 7},
     "71b275ce02e2f5fb9bdb1a6f0785805c"),
])
def test_the_default_task_makes_exactly_the_tensors_it_made_before(options, digest):
    assert _digest(make_task(ClassifierOptions(**options))) == digest


def test_the_default_task_builds_the_model_it_built_before():
    from qsgd.models import TransformerClassifier

    o = ClassifierOptions(n_symbols=5, seq_len=12)
    torch.manual_seed(3)
    new = build_model(o, "classical")
    torch.manual_seed(3)
    old = TransformerClassifier(vocab_size=2 * 5 + 1, n_classes=2, max_len=12, d_model=32,
                                n_heads=2, n_layers=2, d_ff=64, attention="classical",
                                pad_id=0, n_qubits=2, depth=2, dropout=0.0)
    a, b = new.state_dict(), old.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stored_runs_keep_their_keys_and_read_as_query_count():
    # the options are hashed as written: a grid that does not write `dataset` keeps its keys
    line = (ROOT / "results" / "calibration" / "runs.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    spec = RunSpec(rec["arm"], rec["variant"], rec["attention"], rec["seed"], rec["lr"],
                   _freeze(rec["config"]), rec.get("numerics", 0), rec.get("task", ""))
    assert spec.key == rec["key"] and "dataset" not in rec["config"]
    assert ClassifierOptions(**rec["config"]).dataset == "query-count"


# ------------------------------------------------------------------ info and errors
def test_task_info_lists_every_task_with_its_sizes_ceiling_and_source():
    rows = {r["name"]: r for r in task_info()}
    assert list(rows) == task_names()
    assert (rows["query-count"]["vocab_size"], rows["query-count"]["seq_len"]) == (17, 16)
    assert rows["retrieval"]["seq_len"] == ClassifierOptions().n_pairs + 1
    assert (rows["digits"]["n_classes"], rows["digits"]["seq_len"]) == (10, 64)
    assert rows["digits"]["ceiling"] == 1.0 and rows["parity"]["ceiling"] == 0.95
    assert "UCI" in rows["digits"]["source"] and "CC BY 4.0" in rows["digits"]["licence"]
    assert all(r["summary"] for r in rows.values())


def _grid(tmp_path, options: str, cell_options: str = "") -> Path:
    cell = ('task = "other"\noptions = { ' + cell_options + ' }\n') if cell_options else ""
    path = tmp_path / "grid.toml"
    path.write_text(f'[grid]\narm = "classifier"\nresults = "{tmp_path / "res"}"\n\n'
                    f'[classifier]\n{options}\n\n[[cells]]\n{cell}variants = ["adamw"]\n')
    return path


@pytest.mark.parametrize("options, message", [
    ('dataset = "nope"', r"\[classifier\]\.dataset must be one of query-count, parity, "
                         r"retrieval, digits, got 'nope'"),
    ("dataset = 5", r"\[classifier\]\.dataset must be str, got 5"),
    ('dataset = "digits"', r"\[classifier\]\.n_train must be <= 1797 - n_test = 797 "
                           r"\(dataset 'digits' has 1797 images"),
    ('dataset = "digits"\nn_train = 1000\nn_test = 500\nmax_count = 5',
     r"\[classifier\]\.max_count is not read by dataset 'digits' \(it reads pixel_levels, "),
    ('dataset = "digits"\nn_train = 1000\nn_test = 500\npixel_levels = 2',
     r"\[classifier\]\.pixel_levels must be in \[4, 17\]"),
    ("n_pairs = 8", r"\[classifier\]\.n_pairs is not read by dataset 'query-count'"),
    ('dataset = "parity"\nmax_count = 20', r"\[classifier\]\.max_count must be in "
                                           r"\[1, seq_len = 16\], got 20"),
    ('dataset = "parity"\nthreshold = 2', r"\[classifier\]\.threshold is not read by dataset "
                                          r"'parity'"),
    ('dataset = "retrieval"\nn_pairs = 3', r"\[classifier\]\.n_pairs must be even and >= 2"),
    ('dataset = "retrieval"\nn_keys = 4', r"\[classifier\]\.n_keys must be >= n_pairs = 6"),
    ('dataset = "retrieval"\nn_values = 3', r"\[classifier\]\.n_values must be even and >= 2"),
    ('dataset = "retrieval"\nseq_len = 9', r"\[classifier\]\.seq_len is not read by dataset "
                                           r"'retrieval'"),
])
def test_task_options_are_checked_when_the_config_loads(tmp_path, options, message):
    with pytest.raises(ConfigError, match=r"grid\.toml: " + message):
        load_config(_grid(tmp_path, options))


def test_a_cell_may_run_another_dataset_over_the_grids_options(tmp_path):
    # the grid's table writes query-count's keys at their defaults, as the committed grids do
    grid = "seq_len = 16\nn_symbols = 8\nlabel_noise = 0.05\nn_train = 3000\nn_test = 1000"
    cfg = load_config(_grid(tmp_path, grid, 'dataset = "digits", n_train = 1297, '
                                            'n_test = 500, n_val = 300'))
    (spec,) = cfg.specs
    o = ClassifierOptions(**spec.config)
    assert spec.task == "other" and o.dataset == "digits" and o.n_train == 1297
    with pytest.raises(ConfigError, match=r"grid\.toml: cells\[0\]: options: \[classifier\]"
                                          r"\.threshold is not read by dataset 'parity'"):
        load_config(_grid(tmp_path, grid + "\nthreshold = 2", 'dataset = "parity"'))


def test_a_task_too_small_for_its_sets_says_so():
    # 2 keys in 2 orders, classes and values then fixed by the label: 4 distinct sequences
    with pytest.raises(ValueError, match=r"cannot draw 5 test sequences disjoint from 50 "
                                         r"training ones \(n_pairs 2, n_keys 2\)"):
        make_task(ClassifierOptions(dataset="retrieval", n_pairs=2, n_keys=2, n_train=50,
                                    n_test=5))


def test_the_report_names_the_task_of_the_grid(tmp_path):
    cfg = load_config(_grid(tmp_path, 'dataset = "digits"\nn_train = 1297\nn_test = 500'))
    text = cfg.arm_obj.describe(cfg, None)
    assert text.startswith("Task: digits (`ablations/arms/tasks.py`): 8x8 handwritten digit")
    assert "64 tokens, 10 classes" in text
    assert "Splits: 1297 train / 500 test examples, no validation split" in text
    default = load_config(_grid(tmp_path, ""))
    assert default.arm_obj.describe(default, None).startswith(
        "Task: query count (`ablations/arms/tasks.py`), sequences of 16 tokens, 8 symbols, "
        "label: the query's symbol occurs at least 1 times among the content tokens (counts "
        "drawn within 2 of that threshold), label noise 0.05 (accuracy ceiling 0.95). Splits: "
        "3000 train / 1000 test examples, no validation split")
