"""The LLM arm under the paper's protocol (PAPER.md, Table III) on a CPU: batch 1 (example
batching), both per-step losses against a direct recomputation, bucketing, fp16 loss scaling
with SuperpositionalAdamW, the linear schedule, option messages, unchanged run keys of the
stored grids, the bench's per-epoch cost, and a tiny paper-protocol grid through the report
and the ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablations import llm
from ablations.llm.examples import bucket_length, example_batches, example_losses
from ablations.llm.precision import Fp16Llama, LossScaling
from qsgd import SuperpositionalAdamW
from tests import test_llm

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "ablations" / "configs"

# the LLM arm's fixtures: a generated GSM8K of 24 training and 6 test examples; one thread
data_dir, _one_thread = test_llm.data_dir, test_llm._one_thread

#: the paper's [llm] table at a CPU's scale: batch 1, all tokens, linear decay to 0
PAPER_TINY = dict(model="random:tiny", max_len=256, batching="example", bucket=64,
                  loss_tokens="all", lr=1e-3, schedule="linear", min_lr_ratio=0.0, warmup=4,
                  weight_decay=0.01, clip_grad=1.0, compile=False, eval_questions=2,
                  max_new_tokens=8, eval_batch=2, curve_every=5, ratio_every=8, device="cpu")


def _spec(data_dir, variant="adamw", seed=0, **over):
    return SimpleNamespace(variant=variant, seed=seed, lr=1e-3,
                           config={**PAPER_TINY, "data_dir": str(data_dir), **over})


def _model(seed=0, fp16=False):
    base = llm.load_base("random:tiny", init_seed=seed)
    m = Fp16Llama(base.shape, base.inv_freq) if fp16 else \
        llm.CompactLlama(base.shape, base.inv_freq, amp=False)
    m.load_state_dict({k: v * (3.0 if v.dim() > 1 else 1.0) for k, v in base.state.items()},
                      strict=False)
    return m


def _examples(seed=0, sizes=((9, 3), (30, 11), (17, 6))):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 259, (n,), generator=g).tolist(), a, n - 1) for n, a in sizes]


# ------------------------------------------------------------------------ options, schedule


@pytest.mark.parametrize("table, message", [
    ({"batching": "rows"}, r"\[llm\].batching must be one of packed, example, got 'rows'"),
    ({"precision": "fp8"}, r"\[llm\].precision must be one of auto, bf16, fp16, fp32, got 'fp8'"),
    ({"loss_tokens": "prompt"}, r"\[llm\].loss_tokens must be one of answer, all"),
    ({"loss_tokens": "all"}, r"\[llm\].loss_tokens = 'all' needs batching = 'example'"),
    ({"amp": False, "precision": "fp16"}, r"\[llm\].precision = 'fp16' is mixed precision, but "
                                          r"\[llm\].amp = false"),
    ({"bucket": -1}, r"\[llm\].bucket must lie in \[0, max_len = 2048\], got -1"),
    ({"batching": "example", "attn_impl": "flex"}, r"\[llm\].attn_impl = 'flex' applies to "
                                                   "packed rows"),
    ({"bucket": "64"}, r"\[llm\].bucket must be int, got '64'"),
    ({"max_len": 1000, "tokens_per_batch": 2500}, "multiple of max_len"),  # packed only
    ({"compile_mode": "graphs"}, r"\[llm\].compile_mode must be one of default, "
                                 "reduce-overhead, max-autotune, max-autotune-no-cudagraphs"),
    ({"batching": "example", "bucket": 0, "compile_mode": "reduce-overhead"},
     r"\[llm\].compile_mode = 'reduce-overhead' needs \[llm\].bucket > 0 with batching = "
     "'example'"),
    ({"compile": False, "compile_mode": "reduce-overhead"},
     r"\[llm\].compile_mode = 'reduce-overhead' needs \[llm\].compile = true"),
    ({"compile_scope": "block"}, r"\[llm\].compile_scope must be one of model, layer, got "
                                 "'block'"),
    ({"compile_scope": "layer"}, r"\[llm\].compile_scope = 'layer' needs \[llm\].compile = "
                                 "true and batching = 'example'"),
    ({"batching": "example", "compile": False, "compile_scope": "layer"},
     r"\[llm\].compile_scope = 'layer' needs \[llm\].compile = true"),
])
def test_paper_options_are_validated(table, message):
    with pytest.raises(ValueError, match=message):
        llm.LLMOptions.from_dict(table)


def test_precision_follows_amp_unless_given():
    O = llm.LLMOptions
    assert O().effective_precision == "bf16" and O(amp=False).effective_precision == "fp32"
    assert O(precision="fp16").effective_precision == "fp16"
    assert O(amp=False, precision="fp32").effective_precision == "fp32"
    assert O(precision="fp32").effective_precision == "fp32"  # explicit wins over amp = true
    # tokens_per_batch (8192) must be a multiple of max_len for packed rows only
    with pytest.raises(ValueError, match=r"must be a positive multiple of max_len \(3000\)"):
        O(batching="packed", max_len=3000)
    O(batching="example", max_len=3000)  # one example a step: tokens_per_batch unused


def test_stored_grids_keep_their_run_keys():
    """The new options left at their defaults change no key: every stored record of the LLM
    grids is a spec of its config as it loads now."""
    from ablations.config import load_config
    from ablations.records import load_records

    for name in ("llm-lr", "llm-calibrated"):  # (the earlier llm grid's records are gone)
        cfg = load_config(CONFIGS / f"{name}.toml")
        keys = {s.key for s in cfg.specs}
        stored = load_records(ROOT / "results" / name / "runs.jsonl")
        assert stored and {r["key"] for r in stored} <= keys, name
        o = cfg.arm_options
        assert (o.batching, o.effective_precision, o.loss_tokens) == ("packed", "bf16", "answer")


def test_reports_say_which_split_every_number_comes_from():
    """The LLM reports' setup names the split of each metric and what the choices read: the
    paper grid held nothing out and chose nothing; the calibrated grid names the lrs selected
    on val_loss; the selection grid, which measures no exact match, says it."""
    import pandas as pd

    from ablations.config import load_config

    text = {}
    for name in ("llm-paper", "llm-calibrated", "llm-lr"):
        cfg = load_config(CONFIGS / f"{name}.toml")
        text[name] = cfg.arm_obj.describe(cfg, pd.DataFrame({"device": ["NVIDIA H200"]}))
    for t in text.values():
        assert "Splits: the training losses" in t and "read for final metrics only" in t
    assert "none held out" in text["llm-paper"] and "the paper's own" in text["llm-paper"]
    assert "selected on `val_loss` (adamw 0.0004, sin-l0.5 0.0004)" in text["llm-calibrated"]
    assert "less the last 373, held out" in text["llm-calibrated"]
    assert "no exact match" in text["llm-lr"] and "reads its `val_loss` only" in text["llm-lr"]


def test_layer_scope_compiles_one_layer_for_all_and_trains_as_eager(data_dir, monkeypatch):
    """[llm].compile_scope = "layer" (real torch.compile, CPU Inductor): the one function
    compiled is the decoder layer's, every layer runs it, it is compiled once per shape (not
    once per layer), and the run follows the uncompiled run to float rounding."""
    from torch._dynamo.utils import counters

    from ablations.llm import session

    compiled, real_compile = [], torch.compile

    def spy(fn, **kw):
        compiled.append(fn.__name__)
        return real_compile(fn, **kw)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    counters.clear()
    session._SESSIONS.clear()
    over = dict(eval_questions=0, train_examples=8)
    lay = llm.run(_spec(data_dir, "sin-l0.5", compile=True, compile_scope="layer", **over))
    sess = session._SESSIONS["current"]
    shapes = len(set(sess.train_cache[next(iter(sess.train_cache))].lengths))
    graphs = counters["stats"]["unique_graphs"]
    session._SESSIONS.clear()
    ref = llm.run(_spec(data_dir, "sin-l0.5", **over))
    untrained = _spec(data_dir, "sin-l0.5", **over)
    untrained.lr = 1e-12  # the run's lr (the grid's): too small to move the base weights
    base_loss = llm.run(untrained)["metrics"]["test_loss"]
    session._SESSIONS.clear()
    n_layers = llm.load_base("random:tiny", init_seed=0).shape.num_layers
    assert n_layers > 1 and shapes > 1
    assert compiled == ["causal_layer"]
    assert graphs == shapes, (graphs, shapes)  # one per shape, shared by the layers
    a, b = lay["metrics"], ref["metrics"]
    assert a["steps"] == b["steps"]
    assert a["mean_train_loss"] == pytest.approx(b["mean_train_loss"], rel=1e-5)
    # the held-out loss comes after all 8 steps: Adam's first steps turn rounding-sized
    # gradient differences of near-zero entries into full-sized updates, so the two runs part
    # by more there (2.9e-5 relative on the CI machine, less on others); a layer skipped or
    # run twice moves it by orders of magnitude more
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=2e-4)
    assert abs(a["test_loss"] - b["test_loss"]) < 0.01 * abs(b["test_loss"] - base_loss)


def test_compile_mode_reaches_torch_compile_and_cuda_graphs_mark_each_step(data_dir,
                                                                          monkeypatch):
    """[llm].compile_mode is torch.compile's mode for the step (packed and per example); with
    CUDA graphs ("reduce-overhead") every step's forward first begins a new step of the graph
    pool, so that no step reads outputs the next replay overwrites; the default marks none.
    (torch.compile is replaced by a recorder: its compilation is not what is tested.)"""
    modes, marks = [], []

    def fake_compile(fn, **kw):
        modes.append(kw.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    from ablations.llm import session

    out = {}
    for mode in ("default", "reduce-overhead"):
        session._SESSIONS.clear()
        modes.clear(), marks.clear()
        out[mode] = llm.run(_spec(data_dir, "sin-l0.5", compile=True, compile_mode=mode,
                                  eval_questions=0))["metrics"]
        assert modes and set(modes) == {mode}, (mode, modes)
        steps = out[mode]["steps"]
        assert (len(marks) >= steps) if mode == "reduce-overhead" else not marks, len(marks)
    session._SESSIONS.clear()
    assert out["default"]["mean_train_loss"] == out["reduce-overhead"]["mean_train_loss"]


def test_linear_schedule_of_the_paper():
    """500 warm-up steps to the peak, then linear decay to exactly 0 at the last of the
    epoch's 7,473 steps (ablations.schedules.lr_at)."""
    o = llm.LLMOptions(schedule="linear", warmup=500, min_lr_ratio=0.0, lr=2e-5)
    S, lr = 7473, 2e-5
    lrs = np.array([llm.lr_at(s, S, o, lr) for s in range(S)])
    np.testing.assert_allclose(lrs[:500], lr * np.arange(1, 501) / 500, rtol=1e-15)
    assert lrs[499] == lr and lrs[500] == lr and lrs[-1] == 0.0
    span = S - 1 - 500
    np.testing.assert_allclose(lrs[500:], lr * (1 - np.arange(span + 1) / span), rtol=1e-12,
                               atol=1e-22)
    assert (np.diff(lrs[500:]) < 0).all()


def test_a_bare_cuda_device_names_the_current_gpu(monkeypatch):
    """[llm].device = "cuda" (no index) becomes the current GPU's index, which
    torch.cuda.set_device needs (it raised "Expected a torch.device with a specified index"
    on an H200); "auto" and an explicit index are kept."""
    from ablations.llm.session import Dist, _pick_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    pick = [_pick_device(llm.LLMOptions(device=d), Dist()) for d in ("cuda", "cuda:1", "auto")]
    assert pick == [torch.device("cuda", 3), torch.device("cuda", 1), torch.device("cuda", 0)]
    assert _pick_device(llm.LLMOptions(device="cuda"), Dist(world=2, local_rank=1)) == \
        torch.device("cuda", 1)


# ------------------------------------------------------------------------ batches and losses


def test_bucket_length():
    assert [bucket_length(n, 64, 256) for n in (1, 64, 65, 200, 256)] == [64, 64, 128, 256, 256]
    assert bucket_length(250, 64, 250) == 250 and bucket_length(37, 0, 256) == 37


def test_example_batches_hold_each_example_with_its_targets():
    ex = _examples()
    b = example_batches(ex, [2, 0, 1], max_len=24, bucket=8, pad_id=258,
                        device=torch.device("cpu"))
    assert b.steps == 3 and b.lengths == [24, 16, 24] and b.truncated == 1
    assert b.shapes == [24, 16] and b.slots == 64
    for s, i in enumerate([2, 0, 1]):
        x, a, end = ex[i]
        n = min(len(x), 24)
        end = min(end, 24)
        ids, tgt, ans = b.ids[s][0].tolist(), b.tgt[s].tolist(), b.ans[s].tolist()
        assert ids == x[:n] + [258] * (b.lengths[s] - n)
        assert tgt == x[1:n] + [llm.IGNORE] * (b.lengths[s] - n + 1)
        assert [j for j, v in enumerate(ans) if v] == list(range(a - 1, end - 1))
        assert (b.n_real[s], b.n_all[s], b.n_answer[s]) == (n, n - 1, end - a)
    assert b.attn_pairs == sum(n * (n + 1) / 2 for n in (17, 9, 24))


@pytest.mark.parametrize("train_all", [True, False])
def test_both_losses_equal_a_direct_recomputation(train_all):
    """All-token loss: mean cross-entropy of tokens 1…n−1 given their prefixes; answer loss:
    of the answer tokens x[a:b] only. One forward gives both; the trained one has the
    gradient of its direct recomputation."""
    m = _model()
    ex = _examples(seed=1)
    b = example_batches(ex, range(3), 64, 16, 258, torch.device("cpu"))
    for s, (x, a, end) in enumerate(ex):
        loss, both = example_losses(m, b.ids[s], b.tgt[s], b.ans[s], train_all)
        ids = torch.tensor([x])
        logits = m.logits(m.hidden(ids, torch.arange(len(x))[None], _causal))[0]
        ref_all = F.cross_entropy(logits[:-1], ids[0, 1:])
        ref_ans = F.cross_entropy(logits[a - 1:end - 1], ids[0, a:end])
        torch.testing.assert_close(both, torch.stack([ref_all, ref_ans]).detach(), rtol=1e-5,
                                   atol=1e-6)
        ref = ref_all if train_all else ref_ans
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
        w = m.model.layers[0].mlp.up_proj.weight
        g, = torch.autograd.grad(loss, w)
        g_ref, = torch.autograd.grad(ref, w)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
        assert not both.requires_grad


def _causal(q, k, v, i):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def test_bucketing_does_not_change_the_losses_or_gradients():
    m = _model(seed=2)
    ex = _examples(seed=2, sizes=((13, 4), (40, 9)))
    w = m.model.layers[1].self_attn.q_proj.weight
    out = {}
    for bucket in (0, 16, 64):
        b = example_batches(ex, [0, 1], 64, bucket, 258, torch.device("cpu"))
        rows = []
        for s in range(2):
            loss, both = example_losses(m, b.ids[s], b.tgt[s], b.ans[s], True)
            rows.append((both, torch.autograd.grad(loss, w)[0]))
        out[bucket] = rows
    assert [t.shape[1] for t in example_batches(ex, [0, 1], 64, 16, 258, "cpu").ids] == [16, 48]
    for bucket in (16, 64):
        for (both, g), (both0, g0) in zip(out[bucket], out[0]):
            torch.testing.assert_close(both, both0, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(g, g0, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------ fp16 loss scaling


def _optimizer_step(scaling: LossScaling, model, loss_scale: float = 1.0):
    opt = SuperpositionalAdamW(model.parameters(), lr=1e-2, weight_decay=0.01,
                               nonfinite="off", perturbation="sin", quantum_weight=0.5)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    scaling.backward(model(x).pow(2).mean() * loss_scale)
    scaling.clip(opt, list(model.parameters()), 1.0)
    scaling.step(opt)
    return opt


def test_loss_scaling_with_superpositional_adamw():
    """GradScaler's fp16 step on float32 weights equals the unscaled step (the scale is a
    power of two); an inf gradient skips the step: weights, moments and step count stay,
    the skip is counted and the scale halves."""
    torch.manual_seed(0)
    plain, scaled = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    scaled.load_state_dict(plain.state_dict())
    _optimizer_step(LossScaling("fp32", torch.device("cpu")), plain)
    scaling = LossScaling("fp16", torch.device("cpu"))
    assert scaling.scale == 2.0 ** 16
    opt = _optimizer_step(scaling, scaled)
    for p, q in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert scaling.skipped_steps == 0 and opt.state[scaled.weight]["step"] == 1

    before = [p.detach().clone() for p in scaled.parameters()]
    state = {k: v.clone() for k, v in opt.state[scaled.weight].items() if torch.is_tensor(v)}
    x = torch.randn(8, 4)
    scaling.backward(scaled(x).sum() * float("inf"))
    scaling.clip(opt, list(scaled.parameters()), 1.0)
    scaling.step(opt)
    assert scaling.skipped_steps == 1 and scaling.scale == 2.0 ** 15
    assert opt.state[scaled.weight]["step"] == 1
    assert all(torch.equal(p, q) for p, q in zip(scaled.parameters(), before))
    assert all(torch.equal(opt.state[scaled.weight][k], v) for k, v in state.items())


def test_fp16_model_runs_its_products_in_float16():
    m32, m16 = _model(seed=3), _model(seed=3, fp16=True)
    seen = []
    hook = m16.model.layers[0].self_attn.o_proj.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    b = example_batches(_examples(seed=3), [1], 64, 16, 258, torch.device("cpu"))
    l32 = example_losses(m32, b.ids[0], b.tgt[0], b.ans[0], True)[1]
    l16 = example_losses(m16, b.ids[0], b.tgt[0], b.ans[0], True)[1]
    hook.remove()
    assert seen == [torch.float16] and l16.dtype == torch.float32
    torch.testing.assert_close(l16, l32, rtol=1e-2, atol=1e-2)
    assert not torch.equal(l16, l32)


# ------------------------------------------------------------------------ end to end


def test_paper_protocol_end_to_end_fp16(data_dir):
    """One epoch of the paper's protocol, fp16 with CPU loss scaling: one step per training
    example (minus the validation hold-out), both mean losses recorded, the trained-on one
    being mean_train_loss and the curve's mean; held-out metrics as the packed arm's."""
    out = llm.run(_spec(data_dir, "sin-l0.5", precision="fp16", val_examples=4))
    m = out["metrics"]
    assert m["steps"] == 20 and m["skipped_steps"] == 0
    assert m["mean_train_loss"] == m["mean_train_loss_all"] != m["mean_train_loss_answer"]
    for key in ("mean_train_loss_answer", "test_loss", "test_loss_all", "val_loss",
                "tokens_per_s", "final_train_loss"):
        assert math.isfinite(m[key]) and m[key] > 0, key
    assert 0 <= m["test_exact_match"] <= 1 and 0 < m["perturbation_ratio"] < 1
    curve = out["curve"]
    assert [c["step"] for c in curve] == [5, 10, 15, 20]
    weights = np.diff([0] + [c["step"] for c in curve])
    for name, key in (("train_loss", "mean_train_loss"), ("train_loss_answer",
                                                          "mean_train_loss_answer")):
        mean = np.average([c[name] for c in curve], weights=weights)
        assert mean == pytest.approx(m[key], rel=1e-12)
    assert m["final_train_loss"] < m["mean_train_loss"]
    json.dumps(out)


def test_training_on_answer_tokens_records_the_same_pair(data_dir):
    """loss_tokens picks the trained-on loss; the other is recorded alongside. The first step
    precedes any update: its pair is the same whichever loss is trained."""
    from ablations.llm.session import epoch_batches, open_session
    from ablations.llm.train import train_epoch
    from qsgd import parse_variant

    res = {}
    for tokens in ("all", "answer"):
        o = llm.LLMOptions.from_dict({**PAPER_TINY, "data_dir": str(data_dir), "amp": False,
                                      "loss_tokens": tokens})
        sess = open_session(o, 0)
        b = epoch_batches(sess, 1)
        res[tokens] = train_epoch(sess, b, parse_variant("adamw"), 1e-3, 0, o, max_steps=6)
    a, n = res["all"], res["answer"]
    assert a["steps"] == n["steps"] == 6
    np.testing.assert_array_equal(a["losses"], a["recorded"]["all"])
    np.testing.assert_array_equal(n["losses"], n["recorded"]["answer"])
    assert a["recorded"]["all"][0] == n["recorded"]["all"][0]
    assert a["recorded"]["answer"][0] == n["recorded"]["answer"][0]
    assert not np.array_equal(a["recorded"]["all"][1:], n["recorded"]["all"][1:])


def test_held_out_losses_agree_with_the_packed_arm(data_dir):
    """The test loss (token-weighted, answer tokens) is the same number whether the test set
    is packed into rows or taken one example at a time; the all-token one is its own."""
    from ablations.llm.session import open_session
    from ablations.llm.train import evaluate_losses, reset_weights

    out = {}
    for batching in ("packed", "example"):
        o = llm.LLMOptions.from_dict({**test_llm.TINY, "data_dir": str(data_dir), "amp": False,
                                      "batching": batching})
        sess = open_session(o, 0)
        reset_weights(sess)
        out[batching] = evaluate_losses(sess, 0 if batching == "example" else 512)
    assert set(out["packed"]) == {"answer"} and set(out["example"]) == {"answer", "all"}
    assert out["example"]["answer"] == pytest.approx(out["packed"]["answer"], rel=1e-5)
    assert out["example"]["all"] != pytest.approx(out["example"]["answer"], rel=1e-3)


def test_bench_measures_the_per_epoch_cost_of_batch_1(data_dir, tmp_path, capsys):
    from ablations.llm.cli import main

    sets = [f"--set={k}={v}" for k, v in {**PAPER_TINY, "data_dir": str(data_dir),
                                          "amp": False, "eval_questions": 0}.items()]
    out = tmp_path / "bench"
    assert main(["bench", *sets, "--variants", "adamw,sin-l0.5", "--steps", "4",
                 "--rounds", "2", "--baseline-steps", "0", "--out", str(out)]) == 0
    import csv

    with open(out / "throughput_bench.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["variant"]]
    assert [r["variant"] for r in rows] == ["adamw", "sin-l0.5"]
    assert "one example a step (bucket 64" in rows[0]["config"]
    assert "first 2 steps, median of 2 rounds" in rows[0]["config"]
    for r in rows:  # 2 rounds of 2 of 24 steps: the epoch's seconds are 12 times the median's
        assert float(r["epoch_s"]) == pytest.approx(24 * float(r["step_ms"]) / 1e3, abs=0.01)
    assert rows[0]["cost_vs_adamw"] == "+0.00%" and rows[1]["cost_vs_adamw"].endswith("%")
    # the compiled HF peer trains on packed rows: no peer, no ratio to it, at batch 1
    assert all(r["ratio_to_peer"] == "" for r in rows)
    assert "epoch_s" in (out / "throughput_bench.md").read_text()
    assert main(["bench", *sets, "--steps", "-1", "--out", str(out)]) == 2
    assert "--steps must be >= 0" in capsys.readouterr().err


def test_hf_baseline_at_batch_1(data_dir):
    pytest.importorskip("transformers")
    from ablations.llm.bench import _hf_baseline
    from ablations.llm.session import open_session

    o = llm.LLMOptions.from_dict({**PAPER_TINY, "data_dir": str(data_dir), "amp": False})
    res = _hf_baseline(open_session(o, 0), o, steps=2, warmup=1)
    assert res["batch"] == 1 and res["tokens_per_s"] > 0


def _toml(tables: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    out = []
    for name, table in tables.items():
        for t in (table if isinstance(table, list) else [table]):
            out.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            out += [f"{k} = {value(v)}" for k, v in t.items()]
    return "\n".join(out) + "\n"


def test_paper_grid_renders_a_report_and_the_ledger(data_dir, tmp_path):
    """configs/llm-paper.toml at a CPU's scale (one cell, adamw against sin-l0.5, 3 seeds):
    its runs make a report with C6 read as a relative change and a ledger row under the
    paper protocol, with the note that the model stands in."""
    from ablations.config import load_config, read_toml
    from ablations.report import render_arm, render_ledger
    from ablations.runner import load_records, run_grid

    paper = read_toml(CONFIGS / "llm-paper.toml")
    assert paper["grid"]["protocol"] == "paper"
    assert {k: paper["llm"][k] for k in ("batching", "loss_tokens", "lr", "schedule",
                                         "min_lr_ratio", "warmup", "weight_decay",
                                         "clip_grad", "precision", "max_len")} == dict(
        batching="example", loss_tokens="all", lr=2e-5, schedule="linear", min_lr_ratio=0.0,
        warmup=500, weight_decay=0.01, clip_grad=1.0, precision="fp16", max_len=2048)
    assert paper["cells"][0]["variants"] == ["adamw", "sin-l0.1", "sin-l0.5", "moment-l0.5",
                                             "sin-l0.5-first4", "gauss-l0.5", "gauss-l0.001"]
    assert paper["claims"]["C6"]["margin"] == 0.005  # pre-registered (ablations/design.py)
    tiny = {**paper["llm"], **PAPER_TINY, "data_dir": str(data_dir), "amp": False,
            "eval_questions": 0, "precision": "fp32", "train_examples": 8}
    cells = [{"name": "c6-paper", "variants": ["adamw", "sin-l0.5"], "seeds": 3}]
    path = tmp_path / "paper.toml"
    path.write_text(_toml({"grid": {**paper["grid"], "results": str(tmp_path / "res")},
                           "llm": tiny, "cells": cells}))
    cfg = load_config(path)
    assert run_grid(cfg, test_llm._SerialExecutor(), progress=False)["ran"] == 6
    recs = load_records(tmp_path / "res" / "runs.jsonl")
    assert {r["protocol"] for r in recs} == {"paper"}
    assert all("mean_train_loss_answer" in r["metrics"] for r in recs)
    report = render_arm(cfg).read_text()
    assert "## C6: mean training loss over the epoch" in report
    claims = json.loads((tmp_path / "res" / "claims.json").read_text())
    c6 = claims["claims"]["C6"]
    assert c6["verdict"] and "of adamw's mean" in c6["ci"] and "the paper's -4.16%" in c6["ci"]
    assert c6["rel_low"] <= c6["rel"] <= c6["rel_high"]
    assert "`random:tiny` stands in for the paper's Llama-3.2-1B-Instruct" in claims["note"]
    ledger = render_ledger(tmp_path).read_text()
    row = next(line for line in ledger.splitlines() if line.startswith("| C6 |"))
    assert "| paper |" in row and "of adamw's mean" in row
    assert "Setting of C6 in `res`: `random:tiny` stands in" in ledger


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_paper_protocol_on_cuda_compiled_fp16(data_dir):
    """The GPU path: compiled per-bucket graphs, fp16 autocast with GradScaler, the fused
    optimizer; its losses match the eager run's to fp16 precision and nothing is skipped
    after the first steps' scale search."""
    over = dict(device="cuda", precision="fp16", eval_questions=2)
    eager = llm.run(_spec(data_dir, "sin-l0.5", **over))["metrics"]
    compiled = llm.run(_spec(data_dir, "sin-l0.5", compile=True, **over))["metrics"]
    for key in ("mean_train_loss_all", "mean_train_loss_answer", "test_loss"):
        assert compiled[key] == pytest.approx(eager[key], rel=2e-2), key
    assert compiled["skipped_steps"] <= 2 and compiled["steps"] == 24


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("batching", ["example", "packed"])
def test_cuda_graphs_replay_the_compiled_step(data_dir, batching):
    """compile_mode = "reduce-overhead" (CUDA graphs per static shape) replays the kernels of
    the default compiled step: the same losses, step by step, to float rounding (fp16
    batch 1, bf16 packed), and as many skipped steps."""
    over = dict(device="cuda", compile=True, eval_questions=0)
    if batching == "example":
        over.update(precision="fp16")
    else:
        over.update(batching="packed", loss_tokens="answer", precision="bf16",
                    tokens_per_batch=512)
    runs = {mode: llm.run(_spec(data_dir, "sin-l0.5", compile_mode=mode, **over))
            for mode in ("default", "reduce-overhead")}
    a, b = (runs[m]["metrics"] for m in ("default", "reduce-overhead"))
    for key in ("mean_train_loss", "final_train_loss", "test_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert a.get("skipped_steps") == b.get("skipped_steps")
    ca, cb = (runs[m]["curve"] for m in ("default", "reduce-overhead"))
    assert [p["step"] for p in ca] == [p["step"] for p in cb]
    for p, q in zip(ca, cb, strict=True):
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=1e-5), p["step"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_layer_scope_on_cuda_follows_the_whole_step(data_dir, mode):
    """compile_scope = "layer" on CUDA, fp16 batch 1, with and without CUDA graphs (one graph
    per layer call and shape): the losses of the whole-step compile to fp16 precision, as
    many steps, no more skipped ones after the scale search."""
    over = dict(device="cuda", compile=True, precision="fp16", eval_questions=0,
                compile_mode=mode)
    whole = llm.run(_spec(data_dir, "sin-l0.5", **over))["metrics"]
    layer = llm.run(_spec(data_dir, "sin-l0.5", compile_scope="layer", **over))["metrics"]
    for key in ("mean_train_loss_all", "mean_train_loss_answer", "test_loss"):
        assert layer[key] == pytest.approx(whole[key], rel=2e-2), key
    assert layer["steps"] == whole["steps"] and layer["skipped_steps"] <= 2
