"""The classifier arm's ``device`` option: its validation, the grid's resources, and the keyed
dropout of a run on CUDA, whose one-run and seed-batched paths draw the same masks per seed.

On a CPU the keyed path (what a CUDA run takes) is run by asking for it (``keyed_dropout``
patched): there each seed's batched record equals its one-run record bit for bit. The tests
marked ``gpu`` run both paths on CUDA, where they agree to float rounding."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ablations.arms import classifier as clf
from ablations.arms.classifier import (
    BATCHED_NUMERICS,
    NUMERICS,
    TIMING_METRICS,
    ClassifierOptions,
    dropout_generator,
    run,
)
from ablations.arms.seed_batch import run_batch
from ablations.config import ConfigError, RunSpec, _freeze, load_config
from ablations.runner import worker_layout
from qsgd.attention import keyed_dropout
from qsgd.models import TransformerClassifier
from qsgd.models.batched import SeedBatchedClassifier

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

TINY = dict(n_train=120, n_val=30, n_test=40, epochs=2, batch_size=25, seq_len=8, d_model=8,
            n_heads=2, d_ff=16, dropout=0.1, attn_qubits=2, ratio_every=2)
#: the four variants of the task's GPU check, each with options that move its paths
VARIANTS = [("adamw", {}), ("sin-l0.5", {}), ("gauss-l0.5", {"schedule": "constant"}),
            ("sin-l0.5-first4", {"clip_grad": 0.0})]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The CPU equalities are stated at one thread, as the runner's CPU workers run."""


def _comparable(out) -> str:
    metrics = {k: v for k, v in out["metrics"].items() if k not in TIMING_METRICS}
    curve = [{k: v for k, v in p.items() if k != "sec"} for p in out["curve"]]
    return json.dumps([metrics, curve], sort_keys=True)


def test_the_device_option_is_validated_when_the_config_loads():
    assert ClassifierOptions().device == "cpu"
    assert ClassifierOptions(device="cuda").device == "cuda"  # loads without a GPU
    with pytest.raises(ValueError, match=r"^\[classifier\]\.device must be one of cpu, cuda, "
                                         r"got 'gpu'$"):
        ClassifierOptions(device="gpu")


def test_cuda_without_a_gpu_fails_when_a_run_starts(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = RunSpec("classifier", "adamw", "quantum", 0, 1e-3,
                   _freeze({**TINY, "device": "cuda"}), NUMERICS)
    want = r"^\[classifier\]\.device = 'cuda', but torch sees no CUDA device"
    with pytest.raises(RuntimeError, match=want):
        run(spec)
    with pytest.raises(RuntimeError, match=want):
        run_batch([spec])


GRID = """
[grid]
arm = "classifier"
results = "{results}"
runs_per_gpu = 4
{grid}

[classifier]
n_train = 80
n_test = 30
epochs = 1
batch_size = 40
{device}

[[cells]]
attention = "classical"
variants = ["adamw"]
seeds = 2
{cell}
"""


def _config(tmp_path, name, device="", grid="", cell=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(results=tmp_path / name, device=device, grid=grid, cell=cell))
    return load_config(path)


def test_a_cuda_grid_has_keys_of_its_own_and_the_gpu_layout(tmp_path, monkeypatch):
    cpu = _config(tmp_path, "cpu")
    cuda = _config(tmp_path, "cuda", device='device = "cuda"')
    explicit = _config(tmp_path, "explicit", device='device = "cpu"')
    assert (cpu.resources, cuda.resources, explicit.resources) == ("cpu", "gpu", "cpu")
    assert not {s.key for s in cpu.specs} & {s.key for s in cuda.specs}
    assert all(s.config["device"] == "cuda" for s in cuda.specs)
    assert "device" not in cpu.specs[0].config  # existing grids keep their keys
    # on CUDA a grid is seed-batched unless it says otherwise; on the CPU one run a job
    assert cuda.seed_batched and not cpu.seed_batched and not explicit.seed_batched
    assert {s.numerics for s in cuda.specs} == {BATCHED_NUMERICS}
    assert {s.numerics for s in cpu.specs} == {NUMERICS}
    batched = _config(tmp_path, "b", device='device = "cuda"', grid="seed_batched = true")
    one_run = _config(tmp_path, "o", device='device = "cuda"', grid="seed_batched = false")
    assert {s.key for s in batched.specs} == {s.key for s in cuda.specs}
    assert {s.numerics for s in one_run.specs} == {NUMERICS}
    assert not {s.key for s in one_run.specs} & {s.key for s in cuda.specs}
    with pytest.raises(ConfigError, match=r"seeds_per_job applies to a seed-batched grid"):
        _config(tmp_path, "bad", device='device = "cuda"',
                grid="seed_batched = false\nseeds_per_job = 4")
    assert _config(tmp_path, "spj", device='device = "cuda"',
                   grid="seeds_per_job = 4").seeds_per_job == 4
    monkeypatch.setattr("ablations.runner._visible_gpus", lambda: 2)
    monkeypatch.setattr("ablations.runner.cpu_count", lambda: 16)
    assert worker_layout("classifier", None, cuda.runs_per_gpu, cuda.resources) == (
        8, 2, ["0", "1"])
    assert worker_layout("classifier", 2, cpu.runs_per_gpu, cpu.resources) == (2, 1, [])
    with pytest.raises(ConfigError, match=r"options: a cell trains where its grid does \(cpu\)"):
        _config(tmp_path, "mixed", cell='task = "t"\noptions = { device = "cuda" }')


def test_keyed_dropout_is_f_dropout_from_the_generator():
    x = torch.randn(3, 5, 7)
    torch.manual_seed(7)
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    want = F.dropout(x, 0.3, training=True)
    assert torch.equal(keyed_dropout(x, 0.3, gen), want)
    assert torch.equal(gen.get_state(), torch.get_rng_state())
    assert keyed_dropout(x, 0.0, gen) is x


def _keyed_models(attention, device, dropout=0.1, runs=3):
    models = []
    for s in range(runs):
        torch.manual_seed(s)
        models.append(TransformerClassifier(6, 3, 7, d_model=12, n_heads=2, d_ff=20,
                                            attention=attention, dropout=dropout))
    batched = SeedBatchedClassifier(models).to(device)
    batched.keyed_dropout = True
    return [m.to(device) for m in models], batched


def _keyed_forward_backward(attention, device, dropout=0.1):
    """Logits and gradients of each run's own keyed model and of the keyed batch."""
    models, batched = _keyed_models(attention, device, dropout)
    tokens = torch.randint(1, 6, (3, 4, 7), generator=torch.Generator().manual_seed(0))
    tokens[1, :, 5:] = 0  # run 1 pads, the others do not
    tokens[2, 0] = 0      # an all-padding row
    tokens = tokens.to(device)
    logits = batched(tokens, [dropout_generator(s, device) for s in range(3)])
    logits.sum().backward()
    outs = []
    for s, m in enumerate(models):
        m.set_dropout_generator(dropout_generator(s, device))
        out = m(tokens[s])
        out.sum().backward()
        outs.append((out.detach(), {n: p.grad for n, p in m.named_parameters()}))
    return logits.detach(), batched, outs


@pytest.mark.parametrize("attention", ["quantum", "classical"])
def test_keyed_batched_model_equals_its_keyed_models(attention):
    logits, batched, outs = _keyed_forward_backward(attention, "cpu")
    for s, (out, grads) in enumerate(outs):
        assert torch.equal(logits[s], out)
        for name, g in grads.items():
            assert torch.equal(batched.param(name).grad[s], g), name
    # the masks are the generator's: another seed's generator draws other masks
    models, _ = _keyed_models(attention, "cpu", runs=1)
    models[0].set_dropout_generator(dropout_generator(1, "cpu"))
    tokens = torch.randint(1, 6, (4, 7), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(models[0](tokens).detach(), outs[0][0])


@pytest.mark.parametrize("variant, extra", VARIANTS)
def test_keyed_seed_batched_records_equal_the_keyed_one_run_records(variant, extra,
                                                                    monkeypatch):
    opts = _freeze({**TINY, **extra})
    specs = [RunSpec("classifier", variant, "quantum", s, 3e-3, opts, BATCHED_NUMERICS)
             for s in (0, 1)]
    plain = run(specs[0])
    monkeypatch.setattr(clf, "keyed_dropout", lambda o: True)  # the CUDA rule, on the CPU
    outs = run_batch(specs)
    for spec, out in zip(specs, outs):
        assert _comparable(out) == _comparable(run(spec)), spec.run_id
    assert _comparable(run_batch(specs[1:])[0]) == _comparable(outs[1])
    assert _comparable(outs[0]) != _comparable(plain)  # other masks than the global stream's


@pytest.mark.parametrize("attention", ["quantum", "classical"])
def test_grouped_kernels_equal_the_per_run_kernels_to_rounding(attention, monkeypatch):
    from qsgd.models import batched as batched_module

    calls = []
    vmapped = batched_module._vmapped_chain
    monkeypatch.setattr(batched_module, "_vmapped_chain",
                        lambda *a: calls.append(1) or vmapped(*a))
    models, batched = _keyed_models(attention, "cpu")  # dropout on: not the fused kernel
    grouped = SeedBatchedClassifier(models)
    grouped.grouped = grouped.keyed_dropout = True
    tokens = torch.randint(1, 6, (3, 4, 7), generator=torch.Generator().manual_seed(0))
    tokens[1, :, 5:] = 0
    tokens[2, 0] = 0
    for m in (batched, grouped):
        m(tokens, [dropout_generator(s, "cpu") for s in range(3)]).pow(2).sum().backward()
    for name in batched.names:
        a, b = batched.param(name), grouped.param(name)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(grouped.param("tok.weight").grad[:, 0], torch.zeros(3, 12))  # pad row
    assert bool(calls) == (attention == "quantum")  # Φ of every run in one vmapped pass
    grouped.eval()
    batched.eval()
    with torch.no_grad():
        torch.testing.assert_close(grouped(tokens), batched(tokens), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant, extra", VARIANTS[1:3])
def test_grouped_seed_batched_records_equal_the_one_run_records_to_rounding(variant, extra,
                                                                            monkeypatch):
    opts = _freeze({**TINY, **extra})
    specs = [RunSpec("classifier", variant, "quantum", s, 3e-3, opts, BATCHED_NUMERICS)
             for s in (0, 1)]
    monkeypatch.setattr(clf, "keyed_dropout", lambda o: True)  # the CUDA rules, on the CPU
    monkeypatch.setattr(clf, "grouped_kernels", lambda o: True)
    for spec, out in zip(specs, run_batch(specs)):
        _close(out, run(spec), TINY["n_test"])


# ---------------------------------------------------------------------- on a CUDA device
def _close(a: dict, b: dict, n_test: int) -> None:
    """Two records of one run on CUDA agree to float rounding: losses to 1e-3 relative,
    accuracies to 2 test examples (a prediction on the boundary may flip)."""
    assert a["metrics"]["steps"] == b["metrics"]["steps"]
    assert len(a["curve"]) == len(b["curve"])
    for p, q in zip(a["curve"], b["curve"]):
        assert math.isclose(p["train_loss"], q["train_loss"], rel_tol=1e-3), (p, q)
        assert abs(p["test_acc"] - q["test_acc"]) <= 2 / n_test + 1e-12, (p, q)
    for k in ("mean_train_loss", "final_train_loss", "perturbation_ratio"):
        x, y = a["metrics"][k], b["metrics"][k]
        assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-3), k


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("attention", ["quantum", "classical"])
def test_gpu_keyed_batched_model_equals_its_keyed_models(attention, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # as a run sets it
    logits, batched, outs = _keyed_forward_backward(attention, "cuda", dropout=0.3)
    for s, (out, grads) in enumerate(outs):
        torch.testing.assert_close(logits[s], out, rtol=1e-5, atol=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(batched.param(name).grad[s], g, rtol=1e-4, atol=1e-6,
                                       msg=name)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant, extra", VARIANTS)
def test_gpu_seed_batched_records_equal_the_one_run_records(variant, extra):
    opts = _freeze({**TINY, **extra, "device": "cuda"})
    specs = [RunSpec("classifier", variant, "quantum", s, 3e-3, opts, BATCHED_NUMERICS)
             for s in (0, 1, 2)]
    outs = run_batch(specs)
    for spec, out in zip(specs, outs):
        one = run(spec)
        assert one["device"].startswith("cuda (") and out["device"] == one["device"]
        _close(out, one, TINY["n_test"])


def test_the_gpu_bench_writes_its_figures(tmp_path):
    from ablations import bench_batched as bench

    cfg = bench._grid(2, 1, True, tmp_path / "g", "cuda", 2)
    assert cfg.resources == "gpu" and cfg.runs_per_gpu == 2
    assert {s.config["device"] for s in cfg.specs} == {"cuda"} and len(cfg.specs) == 4
    curve = [{"train_loss": 0.5, "test_acc": 0.8}]
    one = [{"variant": "adamw", "seed": 0, "curve": curve}]
    near = [{"variant": "adamw", "seed": 0, "curve": [{"train_loss": 0.5005, "test_acc": 0.78}]},
            {"variant": "adamw", "seed": 9, "curve": [{"train_loss": 9.0, "test_acc": 0.0}]}]
    dloss, dacc = bench._differences(near, one)
    assert math.isclose(dloss, 1e-3) and math.isclose(dacc, 0.02)
    rows = [dict(mode="one-run", runs_per_gpu=1, seeds=8, epochs=1, runs=16, jobs=16,
                 wall_s=40.0, runs_per_hour=1440.0),
            dict(mode="one-run", runs_per_gpu=8, seeds=8, epochs=1, runs=16, jobs=16,
                 wall_s=10.0, runs_per_hour=5760.0),
            dict(mode="seed-batched", runs_per_gpu=2, seeds=32, epochs=1, runs=64, jobs=2,
                 wall_s=4.0, runs_per_hour=57600.0, max_dloss="1e-06", max_dacc="0")]
    bench.write_gpu_outputs(rows, {"gpu": "test"}, tmp_path)
    text = (tmp_path / "seed_batched_gpu.md").read_text()
    assert "the baseline: the best, 8 a GPU" in text
    assert "| one-run | 1 | 1 | 16 | 40.0 | 1,440 | 0.25× | – | – |" in text
    assert "| seed-batched | 2 | 32 | 64 | 4.0 | 57,600 | **10.00×** | 1e-06 | 0 |" in text
    header = (tmp_path / "seed_batched_gpu.csv").read_text().splitlines()[0]
    assert header.split(",") == bench.GPU_COLUMNS
