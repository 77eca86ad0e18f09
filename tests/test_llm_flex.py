"""FlexAttention's mask block and kernel options for the LLM arm (``[llm].flex_block``,
``[llm].flex_kernel``): the options' checks, the tiles the kernels are called with, the block
masks and the loss they give against the dense-mask reference on any packing (CPU forward),
the options reaching every FlexAttention call, and the kernel bench's CPU parts (the visited
fraction, its outputs and its fastest row); on a GPU the loss and gradients of a finer block
and other tiles against torch's default, compiled."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ablations import llm
from ablations.llm import bench_flex
from ablations.llm.options import flex_kernel_options, parse_flex_kernel
from ablations.llm.packing import FlexMasks
from qsgd.models import llama as L

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="compiled FlexAttention kernels need CUDA")


@pytest.mark.parametrize("opts, message", [
    ({"flex_block": 48}, r"\[llm\].flex_block must be 16, 32, 64 or 128, got 48"),
    ({"flex_block": 256}, r"\[llm\].flex_block must be 16, 32, 64 or 128"),
    ({"flex_kernel": "BLOCK_M=64"}, r"\[llm\].flex_kernel: unknown key 'BLOCK_M' in 'BLOCK_M=64'"),
    ({"flex_kernel": "fwd_BLOCK_M"}, r"'fwd_BLOCK_M' needs a positive integer value"),
    ({"flex_kernel": "fwd_BLOCK_M=-64"}, r"'fwd_BLOCK_M=-64' needs a positive integer value"),
    ({"flex_kernel": "fwd_BLOCK_M=64,fwd_BLOCK_M=32"}, r"'fwd_BLOCK_M' is given twice"),
    ({"flex_kernel": "fwd_BLOCK_N=48"}, r"fwd_BLOCK_N = 48 must be a power of two from 16 "
                                        r"that divides flex_block = 128"),
    ({"flex_kernel": "fwd_BLOCK_N=8"}, r"fwd_BLOCK_N = 8 must be a power of two from 16"),
    ({"flex_block": 64, "flex_kernel": "fwd_BLOCK_M=128"},
     r"fwd_BLOCK_M = 128 must be a power of two from 16 that divides flex_block = 64"),
    ({"flex_kernel": "bwd_BLOCK_M1=64,bwd_BLOCK_N1=32"},
     r"bwd_BLOCK_N1 = 32 must be a multiple of bwd_BLOCK_M1 = 64"),
    ({"flex_block": 64, "flex_kernel": "bwd_BLOCK_N2=32,bwd_BLOCK_M2=16"},
     r"bwd_BLOCK_M2 = 16 must be a multiple of bwd_BLOCK_N2 = 32"),
    # with block 64 the unset M1 is 64, over the given N1 = 32
    ({"flex_block": 64, "flex_kernel": "bwd_BLOCK_N1=32"},
     r"bwd_BLOCK_N1 = 32 must be a multiple of bwd_BLOCK_M1 = 64"),
    ({"flex_block": 64, "attn_impl": "sdpa"}, r"apply to FlexAttention over packed rows .* not "
                                              r"to attn_impl = 'sdpa'"),
    ({"flex_kernel": "fwd_num_warps=4", "attn_impl": "varlen"}, r"not to attn_impl = 'varlen'"),
    ({"flex_block": 32, "batching": "example"}, r"with batching = 'example'"),
    ({"flex_kernel": 64}, r"\[llm\]\.flex_kernel"),
])
def test_bad_flex_options_name_the_key(opts, message):
    with pytest.raises(ValueError, match=message):
        llm.LLMOptions.from_dict(opts)


def test_flex_options_parse_and_fill_the_tiles():
    o = llm.LLMOptions.from_dict({"flex_block": 64, "flex_kernel": " bwd_BLOCK_M1=32 , "
                                  "bwd_BLOCK_N2=32,fwd_num_warps=8,"})
    given_ = parse_flex_kernel(o.flex_kernel, o.flex_block)
    assert given_ == {"bwd_BLOCK_M1": 32, "bwd_BLOCK_N2": 32, "fwd_num_warps": 8}
    assert flex_kernel_options(given_, 64) == {
        "bwd_BLOCK_M1": 32, "bwd_BLOCK_N2": 32, "fwd_num_warps": 8, "fwd_BLOCK_M": 64,
        "fwd_BLOCK_N": 64, "bwd_BLOCK_N1": 64, "bwd_BLOCK_M2": 64}
    # block 128: nothing filled in, torch chooses (None reaches flex_attention)
    assert flex_kernel_options({}, 128) == {}
    assert bench_flex.candidate_options(128, "") is None
    assert bench_flex.candidate_options(32, "") == {k: 32 for k in (
        "fwd_BLOCK_M", "fwd_BLOCK_N", "bwd_BLOCK_M1", "bwd_BLOCK_N1", "bwd_BLOCK_M2",
        "bwd_BLOCK_N2")}
    # the defaults keep a run's options (and so its key) as before the options existed
    assert llm.LLMOptions().flex_block == 128 and llm.LLMOptions().flex_kernel == ""


def test_every_bench_candidate_is_a_valid_option_pair():
    assert bench_flex.CANDIDATES[0][1:] == (128, "")  # torch's own: the reference
    names = [c[0] for c in bench_flex.CANDIDATES]
    assert len(set(names)) == len(names)
    for _, block, kernel in bench_flex.CANDIDATES:
        llm.LLMOptions.from_dict({"flex_block": block, "flex_kernel": kernel})


def test_visited_fraction_counts_the_blocks_the_kernels_visit():
    doc = np.array([[0, 0, 1, 1]])
    # allowed: 3 pairs in each example; blocks of 2: the two diagonal blocks (8 pairs)
    assert bench_flex.visited_fraction(doc, 2) == pytest.approx(8 / 6)
    assert bench_flex.visited_fraction(doc, 4) == pytest.approx(16 / 6)
    assert bench_flex.visited_fraction(doc, 1) == pytest.approx(1.0)
    # padding (-1) attends to padding, as FlexMasks' mask_mod has it
    assert bench_flex.visited_fraction(np.array([[0, 0, -1, -1]]), 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="row length 4 is not a multiple of the block 3"):
        bench_flex.visited_fraction(doc, 3)


def _packing(specs, rows, length, rnd):
    ex = []
    for n, cut in specs:
        ids = [rnd.randrange(3, 300) for _ in range(n)]
        ex.append((ids, min(max(1, cut), n - 1), n))
    return llm.pack(ex, list(range(len(ex))), length, rows, pad_id=1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 70), st.integers(0, 60)), min_size=1, max_size=12),
       st.sampled_from([16, 32, 64, 128]), st.randoms(use_true_random=False))
def test_a_finer_block_mask_gives_the_dense_reference_loss(specs, block, rnd):
    """FlexMasks at any block: the mask's blocks and the (CPU, unfused) FlexAttention loss
    equal the dense document-causal SDPA reference's, and the visited fraction its count."""
    length = 128
    p = _packing(specs, 1, length, rnd)
    b = llm.to_device(p, torch.device("cpu"))
    shape = L.PRESETS["tiny"]
    m = L.CompactLlama(shape, L.default_inv_freq(shape), amp=False)
    m.load_state_dict(L.random_state(shape, 0), strict=False)
    masks = FlexMasks(1, length, torch.device("cpu"), block)
    s = 0
    bm = masks(b.doc[s])
    assert bm.BLOCK_SIZE == (block, block)
    nb = length // block
    visited = int(bm.kv_num_blocks.sum() + (bm.full_kv_num_blocks.sum()
                                            if bm.full_kv_num_blocks is not None else 0))
    d = p.doc[s]
    q = np.arange(length)
    allowed = ((d[0][:, None] == d[0][None, :]) & (q[:, None] >= q[None, :])).sum()
    assert visited <= nb * nb
    assert visited * block * block / allowed == pytest.approx(
        bench_flex.visited_fraction(d, block))
    args = (b.ids[s], b.pos[s], b.doc[s], b.loss_idx[s], b.loss_tgt[s], b.n_loss[s])
    with torch.no_grad():
        dense = m.loss(*args)
        flex = m.loss(*args, block_mask=bm)
    assert torch.allclose(flex, dense, rtol=1e-5, atol=1e-6)


def test_the_kernel_options_reach_every_flex_attention_call(monkeypatch):
    rnd = __import__("random").Random(3)
    p = _packing([(30, 10), (50, 20), (40, 5)], 1, 128, rnd)
    b = llm.to_device(p, torch.device("cpu"))
    shape = L.PRESETS["tiny"]
    m = L.CompactLlama(shape, L.default_inv_freq(shape), amp=False)
    m.load_state_dict(L.random_state(shape, 0), strict=False)
    seen = []
    real = L.flex_attention

    def spy(*a, **kw):
        seen.append(kw.get("kernel_options"))
        return real(*a, **kw)

    monkeypatch.setattr(L, "flex_attention", spy)
    bm = FlexMasks(1, 128, torch.device("cpu"), 64)(b.doc[0])
    args = (b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0], b.n_loss[0])
    with torch.no_grad():
        base = m.loss(*args, block_mask=bm)
        m.flex_kernel_options = bench_flex.candidate_options(64, "bwd_BLOCK_M1=32")
        tuned = m.loss(*args, block_mask=bm)
    assert seen[:shape.num_layers] == [None] * shape.num_layers
    assert seen[shape.num_layers:] == [m.flex_kernel_options] * shape.num_layers
    assert m.flex_kernel_options["bwd_BLOCK_M1"] == 32
    assert torch.equal(base, tuned)  # the CPU's unfused path ignores the tiles


def test_bench_outputs_name_the_fastest_candidate(tmp_path):
    rows = [
        dict(shape="135m", candidate="torch default", flex_block=128, flex_kernel="",
             ms_layer=0.2, ms_step=6.0, vs_default=1.0, visited=2.59),
        dict(shape="135m", candidate="64", flex_block=64, flex_kernel="", ms_layer=0.15,
             ms_step=4.5, vs_default=1.333, visited=1.77),
        dict(shape="135m", candidate="32", flex_block=32, flex_kernel="", visited=1.38,
             error="ValueError: rejected"),
        dict(shape="1b", candidate="torch default", flex_block=128, flex_kernel="",
             ms_layer=0.5, ms_step=8.0, vs_default=1.0, visited=2.59),
        dict(shape="1b", candidate="128, forward 64x64", flex_block=128,
             flex_kernel="fwd_BLOCK_M=64,fwd_BLOCK_N=64", ms_layer=0.4, ms_step=6.4,
             vs_default=1.25, visited=2.59),
    ]
    bench_flex.write_outputs(rows, {"commit": "abc"}, tmp_path, steps=2, reps=3)
    assert (tmp_path / "flex_best_135m.txt").read_text() == "flex_block=64\n"
    assert (tmp_path / "flex_best_1b.txt").read_text() == (
        "flex_block=128\nflex_kernel=fwd_BLOCK_M=64,fwd_BLOCK_N=64\n")
    md = (tmp_path / "flex_blocks.md").read_text()
    assert "Fastest at 135m: **64** (4.5 GPU ms a step, 1.333× the default)" in md
    assert "ValueError: rejected" in md and "- commit: abc" in md
    csv = (tmp_path / "flex_blocks.csv").read_text().splitlines()
    assert csv[0] == ",".join(bench_flex.CSV_COLUMNS) and len(csv) == 6
    # the --set lines are what the bench's options accept
    for shape in ("135m", "1b"):
        kv = dict(x.split("=", 1) for x in
                  (tmp_path / f"flex_best_{shape}.txt").read_text().split())
        llm.LLMOptions.from_dict({"flex_block": int(kv["flex_block"]),
                                  "flex_kernel": kv.get("flex_kernel", "")})


@dataclasses.dataclass
class _Fwd:
    block_m: int
    block_n: int
    num_stages: int
    num_warps: int


@dataclasses.dataclass
class _Bwd:
    block_m1: int
    block_n1: int
    block_m2: int
    block_n2: int
    num_stages: int
    num_warps: int


def test_inductor_tiles_are_clipped_to_a_finer_block(monkeypatch):
    from torch._inductor.choices import InductorChoices

    fwd = [_Fwd(128, 128, 3, 4), _Fwd(128, 64, 3, 4), _Fwd(64, 128, 2, 8)]
    bwd = [_Bwd(64, 128, 128, 64, 3, 8), _Bwd(32, 64, 64, 32, 3, 4)]
    assert L._clip_flex_tiles(fwd, 64) == [_Fwd(64, 64, 3, 4), _Fwd(64, 64, 2, 8)]
    assert L._clip_flex_tiles(bwd, 32) == [_Bwd(32, 32, 32, 32, 3, 8), _Bwd(32, 32, 32, 32, 3, 4)]
    assert L._clip_flex_tiles(bwd, None) is bwd
    for b in (16, 32, 64):  # the kernels' constraints hold after clipping
        for c in L._clip_flex_tiles(bwd, b):
            assert c.block_n1 % c.block_m1 == 0 and c.block_m2 % c.block_n2 == 0
    # set_flex_block wraps Inductor's class methods (every thread's handler sees them)
    monkeypatch.setattr(InductorChoices, "get_flex_attention_fwd_configs",
                        lambda self, *a, **k: list(fwd))
    monkeypatch.setattr(InductorChoices, "get_flex_attention_bwd_configs",
                        lambda self, *a, **k: list(bwd))
    monkeypatch.setitem(L._FLEX_BLOCK, "block", None)
    ch = InductorChoices()
    L.set_flex_block(128)  # nothing to clip: Inductor's own methods stay
    assert not getattr(InductorChoices.get_flex_attention_bwd_configs, "_qsgd_clipped", False)
    L.set_flex_block(64)
    L.set_flex_block(32)  # wrapped once, clipped to the latest block
    assert ch.get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda") == [
        _Bwd(32, 32, 32, 32, 3, 8), _Bwd(32, 32, 32, 32, 3, 4)]
    assert ch.get_flex_attention_fwd_configs(64, torch.bfloat16, "cuda") == [
        _Fwd(32, 32, 3, 4), _Fwd(32, 32, 2, 8)]
    L.set_flex_block(None)
    assert ch.get_flex_attention_bwd_configs(64, torch.bfloat16, "cuda") == bwd


def test_bench_main_checks_its_arguments_and_needs_a_gpu(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench_flex.main(["--shapes", "135m,7b", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--shapes: unknown 7b" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_flex.main(["--steps", "0", "--out", str(tmp_path)])
    if not CUDA:
        assert bench_flex.main(["--out", str(tmp_path)]) == 0
        assert "no CUDA device" in capsys.readouterr().err
        assert not list(tmp_path.iterdir())


@needs_cuda
@pytest.mark.parametrize("block, kernel", [(64, ""), (32, ""), (128, "fwd_BLOCK_M=64,"
                                                                "fwd_BLOCK_N=64"),
                                           (64, "bwd_BLOCK_M1=32,bwd_BLOCK_N2=32")])
def test_compiled_finer_blocks_agree_with_torch_default_on_a_gpu(block, kernel):
    rnd = __import__("random").Random(5)
    p = _packing([(int(rnd.randrange(10, 200)), 5) for _ in range(30)], 2, 512, rnd)
    dev = torch.device("cuda")
    b = llm.to_device(p, dev)
    shape = L.PRESETS["tiny"]

    def run(blk, opts):
        torch.manual_seed(0)
        m = L.CompactLlama(shape, L.default_inv_freq(shape), amp=True)
        m.load_state_dict(L.random_state(shape, 0), strict=False)
        m = m.to(dev)
        m.flex_kernel_options = opts
        bm = FlexMasks(2, 512, dev, blk)(b.doc[0])
        L.set_flex_block(blk)  # as the session does (a block of 32 does not compile without)
        try:
            loss = torch.compile(m.loss, dynamic=False)(b.ids[0], b.pos[0], b.doc[0],
                                                        b.loss_idx[0], b.loss_tgt[0],
                                                        b.n_loss[0], block_mask=bm)
            loss.backward()
        finally:
            L.set_flex_block(None)
        return loss.detach(), [q.grad.float() for q in m.parameters()]

    ref, gref = run(128, None)
    got, g = run(block, bench_flex.candidate_options(block, kernel))
    assert torch.allclose(got, ref, rtol=2e-3)
    for a, r in zip(g, gref):
        assert (a - r).norm() <= 2e-2 * r.norm() + 1e-6
