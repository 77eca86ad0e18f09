"""Seed-batched training against its reference, the one-run path: the optimizer, the model, the
classifier arm's records (bit for bit on a CPU at one thread), and the grid around them."""

from __future__ import annotations

import json

import pytest
import torch

from ablations.arms.classifier import BATCHED_NUMERICS, NUMERICS, TIMING_METRICS, run
from ablations.arms.seed_batch import run_batch
from ablations.config import ConfigError, RunSpec, _freeze, load_config
from ablations.records import load_records
from ablations.runner import RUNS_FILE, run_grid, seed_jobs
from qsgd import SuperpositionalAdamW
from qsgd.batched import SeedBatchedAdamW, SeedNonFiniteError
from qsgd.models import TransformerClassifier
from qsgd.models.batched import SeedBatchedClassifier, dropout_generators
from qsgd.perturbations import available
from tests.test_runner import SerialExecutor

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), ()]
SEEDS = [11, 5]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The equalities are stated at one thread, as the runner's CPU workers run."""


def _tensors(run: int, step: int | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 * run + (0 if step is None else 1 + step))
    return [torch.randn(s, generator=g) for s in SHAPES]


@pytest.mark.filterwarnings("ignore:the perturbation term dominates")
@pytest.mark.parametrize("scope", ["all", "first_n"])
@pytest.mark.parametrize("perturbation", available())
def test_batched_optimizer_equals_one_optimizer_per_run(perturbation, scope):
    kw = dict(lr=1e-2, weight_decay=0.1, perturbation=perturbation, scope=scope, n_qubits=3,
              quantum_weight=0.0 if perturbation == "none" else 0.5)
    single = [[t.clone().requires_grad_() for t in _tensors(r)] for r in range(len(SEEDS))]
    opts = [SuperpositionalAdamW(ps, seed=s, **kw) for ps, s in zip(single, SEEDS)]
    stacked = [torch.stack(ts).requires_grad_() for ts in zip(*(_tensors(r)
                                                                for r in range(len(SEEDS))))]
    batched = SeedBatchedAdamW(stacked, SEEDS, **kw)
    for step in range(4):
        grads = [_tensors(r, step) for r in range(len(SEEDS))]
        for o, ps, gs in zip(opts, single, grads):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            o.track_ratio = step != 1
            o.step()
        for p, gs in zip(stacked, zip(*grads)):
            p.grad = torch.stack(gs)
        batched.track_ratio = step != 1
        batched.step()
    for r, o in enumerate(opts):
        for k, p in enumerate(single[r]):
            assert torch.equal(stacked[k][r], p)
            assert torch.equal(batched._block(batched.exp_avg, k)[r], o.state[p]["exp_avg"]
                               .reshape(-1))
    assert json.dumps(batched.perturbation_ratio()) == json.dumps(
        [o.perturbation_ratio() for o in opts])


def test_a_non_finite_gradient_names_its_run_and_changes_nothing():
    stacked = [torch.stack(ts).requires_grad_() for ts in zip(_tensors(0), _tensors(1))]
    opt = SeedBatchedAdamW(stacked, SEEDS, perturbation="sin")
    for p in stacked:
        p.grad = torch.ones_like(p)
    stacked[2].grad[1, 0, 0, 1] = float("nan")
    before = [p.detach().clone() for p in stacked]
    with pytest.raises(SeedNonFiniteError, match=r"run\(s\) 1 of the batch: non-finite "
                       r"gradient \(NaN or inf\) in param_groups\[0\]\['params'\]\[2\] "
                       r"\(shape \(3, 4, 2\)\)"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, stacked)) and opt.step_count == 0
    stacked[2].grad[1] = 3e38  # finite, but its sum overflows: the exact check lets it pass
    opt.step()
    assert opt.step_count == 1
    with pytest.raises(ValueError, match="not stacked on a leading axis of the 2 seeds"):
        SeedBatchedAdamW([torch.zeros(3, 2)], SEEDS)


def test_dropout_masks_are_torchs_own_draws_and_leave_its_state():
    from qsgd.models.batched import _fast_bernoulli_ok, bernoulli_

    for seed, skip, n, p in [(0, 0, 5, 0.9), (1, 1, 623, 0.37), (2, 3, 1249, 1.0),
                             (3, 1, 20_000, 0.0)]:
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        torch.rand(skip, generator=a)  # an odd offset in the stream: a pair across blocks
        torch.rand(skip, generator=b)
        want = torch.empty(n).bernoulli_(p, generator=a)
        assert torch.equal(bernoulli_(torch.empty(n), p, b), want)
        assert torch.equal(a.get_state(), b.get_state())
    from qsgd import _native

    assert _fast_bernoulli_ok() == (_native.library() is not None)


@pytest.mark.parametrize("attention", ["quantum", "classical"])
def test_batched_model_equals_its_models_with_padding_and_dropout(attention):
    models, states = [], []
    for s in range(3):
        torch.manual_seed(s)
        models.append(TransformerClassifier(6, 3, 7, d_model=12, n_heads=2, d_ff=20,
                                            attention=attention, dropout=0.1))
        states.append(torch.get_rng_state())
    batched = SeedBatchedClassifier(models)
    tokens = torch.randint(1, 6, (3, 4, 7), generator=torch.Generator().manual_seed(0))
    tokens[1, :, 5:] = 0  # run 1 pads, the others do not
    tokens[2, 0] = 0      # an all-padding row
    logits = batched(tokens, dropout_generators(states))
    logits.sum().backward()
    for s, m in enumerate(models):
        torch.set_rng_state(states[s])  # the run's dropout stream, as after its init
        out = m(tokens[s])
        out.sum().backward()
        assert torch.equal(logits[s].detach(), out.detach())
        for name, p in m.named_parameters():
            assert torch.equal(batched.param(name).grad[s], p.grad), name
    batched.eval()
    for m in models:
        m.eval()
    shared = tokens[1]
    with torch.no_grad():
        assert all(torch.equal(batched(shared)[s], m(shared)) for s, m in enumerate(models))
    with pytest.raises(ValueError, match="differs from models\\[0\\] in its architecture"):
        SeedBatchedClassifier([models[0], TransformerClassifier(6, 3, 7, d_model=12, n_heads=2,
                                                                d_ff=20, attention=attention)])


TINY = dict(n_train=120, n_val=30, n_test=40, epochs=2, batch_size=25, seq_len=8, d_model=8,
            n_heads=2, d_ff=16, dropout=0.1, attn_qubits=2, ratio_every=2)


def _comparable(out) -> str:
    """A run's metrics and curve without its timings, as text (NaN compares equal)."""
    metrics = {k: v for k, v in out["metrics"].items() if k not in TIMING_METRICS}
    curve = [{k: v for k, v in p.items() if k != "sec"} for p in out["curve"]]
    return json.dumps([metrics, curve], sort_keys=True)


@pytest.mark.parametrize("variant, attention, extra", [
    ("adamw", "quantum", {}),
    ("sin-l0.5", "quantum", {}),
    ("gauss-l0.5", "quantum", {"schedule": "constant", "loss_scale": 4.0}),
    ("sin-l0.5-first4", "quantum", {"clip_grad": 0.0}),
    ("sinnorm-l0.5", "quantum", {"weight_decay": 0.0}),
    ("sin-l0.5", "classical", {}),
    ("gauss-l0.5", "classical", {"dropout": 0.0}),
])
def test_seed_batched_records_equal_the_one_run_records(variant, attention, extra):
    opts = _freeze({**TINY, **extra})
    specs = [RunSpec("classifier", variant, attention, s, 3e-3, opts, BATCHED_NUMERICS)
             for s in (0, 1)]
    outs = run_batch(specs)
    for spec, out in zip(specs, outs):
        assert _comparable(out) == _comparable(run(spec)), spec.run_id
    # a seed's result does not depend on the seeds that share its job
    assert _comparable(run_batch(specs[1:])[0]) == _comparable(outs[1])
    assert outs[0]["metrics"]["sec_total"] > 0


GRID = """
[grid]
arm = "classifier"
results = "{results}"
{grid}

[classifier]
n_train = 80
n_test = 30
epochs = 1
batch_size = 40
seq_len = 8
d_model = 8
d_ff = 16

[[cells]]
attention = "classical"
variants = ["adamw", "sin-l0.5"]
seeds = 3
"""


def _grid(tmp_path, grid: str = "seed_batched = true", name: str = "g") -> object:
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(results=tmp_path / name, grid=grid))
    return path


def test_a_batched_grid_has_keys_of_its_own_and_is_validated(tmp_path):
    batched, plain = load_config(_grid(tmp_path)), load_config(_grid(tmp_path, "", "p"))
    assert batched.seed_batched and not plain.seed_batched and batched.seeds_per_job == 16
    assert {s.numerics for s in batched.specs} == {BATCHED_NUMERICS} != {NUMERICS}
    assert not {s.key for s in batched.specs} & {s.key for s in plain.specs}
    arm = batched.arm_obj
    assert "Seed-batched" in arm.describe(batched, None)
    assert "Seed-batched" not in arm.describe(plain, None)
    for bad, msg in [("seed_batched = 1", r"seed_batched must be true or false, got 1"),
                     ("seeds_per_job = 4", r"seeds_per_job applies to a seed-batched grid"),
                     ("seed_batched = true\nseeds_per_job = 0", r"seeds_per_job must be an "
                      r"integer >= 1, got 0")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(_grid(tmp_path, bad, "bad"))
    from ablations.__main__ import main

    with pytest.raises(SystemExit):  # refused before anything runs: exit status 2
        main(["run", str(_grid(tmp_path, "", "p")), "--seeds-per-job", "0"])
    assert main(["run", str(_grid(tmp_path, "", "p")), "--seeds-per-job", "2"]) == 2
    assert not (tmp_path / "p").exists()
    jobs = seed_jobs(batched.specs, 2)
    assert sorted(len(j) for j in jobs) == [1, 1, 2, 2]  # 3 seeds: jobs of 2 and 1 per cell
    assert all(len({(s.variant, s.seed) for s in j}) == len(j) and len({s.variant for s in j})
               == 1 for j in jobs)


def test_a_batched_grid_resumes_per_record_and_equals_the_one_run_grid(tmp_path):
    batched, plain = load_config(_grid(tmp_path)), load_config(_grid(tmp_path, "", "p"))
    first = run_grid(batched, SerialExecutor(), progress=False, limit=2)
    assert first["ran"] == 2  # 2 of one cell's 3 seeds: one job of 2
    rest = run_grid(batched, SerialExecutor(), progress=False)
    assert rest["done_before"] == 2 and rest["ran"] == 4 and rest["stored"] == 6
    run_grid(plain, SerialExecutor(), progress=False)
    got = {(r["variant"], r["seed"]): r for r in load_records(batched.results / RUNS_FILE)}
    want = {(r["variant"], r["seed"]): r for r in load_records(plain.results / RUNS_FILE)}
    assert set(got) == set(want) and len(got) == 6
    for k, r in got.items():
        assert r["numerics"] == BATCHED_NUMERICS and r["provenance"]["seed_batch"] in (1, 2, 3)
        assert _comparable(r) == _comparable(want[k])
        assert set(r) == set(want[k]) and set(r["metrics"]) == set(want[k]["metrics"])


def test_a_run_that_fails_in_its_job_is_retried_then_logged_alone(tmp_path):
    from ablations.failures import load_failures
    from ablations.runner import run_batch_one

    calls = []

    def flaky(specs):
        calls.append([s.seed for s in specs])
        out = run_batch_one(specs)
        return [FloatingPointError("seed 1 diverges") if s.seed == 1 else r
                for s, r in zip(specs, out)]

    cfg = load_config(_grid(tmp_path))
    counts = run_grid(cfg, SerialExecutor(), progress=False, batch_fn=flaky)
    assert counts["ran"] == 4 and counts["failed"] == 2
    assert sorted(calls) == [[0, 1, 2], [0, 1, 2], [1], [1]]  # each cell's job, then seed 1
    failures = load_failures(cfg.results)
    assert [f["error"] for f in failures] == ["FloatingPointError: seed 1 diverges"] * 2
    assert all(f["attempts"] == 2 and f["spec"]["seed"] == 1 for f in failures)


def test_the_bench_writes_its_figures(tmp_path):
    from ablations import bench_batched as bench

    rows = []
    for rnd in (1, 2):
        for mode, wall, jobs in (("one-run", 60.0 + rnd, 16), ("seed-batched", 40.0, 2)):
            rows.append(dict(section="grid", mode=mode, round=rnd, workers=2, seeds=8, epochs=2,
                             runs=16, jobs=jobs, wall_s=wall, runs_per_hour=3600 * 16 / wall,
                             cpu_s=wall * 2, runs_per_cpu_hour=1800 * 16 / wall, run_s=wall * 2,
                             equal=True))
    for mode, seeds in (("one-run", 1), ("seed-batched", 8)):
        for cat in [*bench.PER_RUN, "rest", "step (wall)"]:
            rows.append(dict(section="profile", mode=mode, seeds=seeds, category=cat,
                             ms_per_run_step=2.0 if cat != "rest" else (8.0 if seeds == 1
                                                                        else 2.0)))
    bench.write_outputs(rows, {"cpu": "test"}, tmp_path)
    text = (tmp_path / "seed_batched.md").read_text()
    assert "| seed-batched | 32 | 2 | 1,440 | **1.54×** | 720 | **1.54×** |" in text
    assert "| 2 |  | 62.0 | 40.0 | 1.55× | 124.0 | 80.0 | 1.55× |" in text
    assert "1.54× over all rounds (by round: 1.52–1.55×)" in text and "**yes**" in text
    assert "the per-run kernels take 8.0 of 16.0 ms of CPU time (50%)" in text
    assert "bounded by 2.0×" in text and "batched it still takes 2.0 ms" in text
    header = (tmp_path / "seed_batched.csv").read_text().splitlines()[0]
    assert header.split(",") == bench.CSV_COLUMNS
