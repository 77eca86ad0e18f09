"""FlexAttention's mask block and kernel tiles on the LLM arm's packed rows: what is fastest.

    python -m ablations.llm.bench_flex                 # writes results/llm/flex_blocks.{csv,md}
    python -m ablations.llm.bench_flex --shapes 135m --steps 2 --reps 2 --out /tmp/f  # smoke

What it times: the FlexAttention forward and backward of one decoder layer, at the heads of
each model shape (``135m``: 9 query and 3 key-value heads, ``1b``: 32 and 8; head dim 64; 4
rows of 2048 tokens, bf16, ``enable_gqa``), over the document-causal block masks of the first
``--steps`` training steps of the epoch (the rows the LLM bench times: GSM8K's training split
packed in the order of seed 0, tokenised by SmolLM2's tokenizer; the test set is not read), for
every candidate of :data:`CANDIDATES`: a mask block (``[llm].flex_block``) and kernel options
(``[llm].flex_kernel``), called as the arm's compiled loss calls it (``torch.compile`` of
``flex_attention`` with ``kernel_options``; with a block below 128 the unset tiles are the
block, :func:`ablations.llm.options.flex_kernel_options`). Queries, keys, values and the
output's gradient are normal random numbers (the kernels' time does not depend on them).

A candidate is compiled and run once over the steps (untimed), then run ``--reps`` passes
over the steps under ``torch.profiler``: its figure is the GPU time of its kernels (every
CUDA kernel of the passes but the copies of the example ids) a call: ms a layer's forward +
backward, and × the shape's layers, ms a training step (``wall_ms_layer``, the median pass by
CUDA events over ``--reps`` more passes, is reported beside it: one call at a time from
Python, it is mostly the call's own overhead, which the arm's loop, with CUDA graphs or a
whole compiled step, does not pay per layer). ``vs_default``: the default's GPU time over
the candidate's (the first candidate, torch's own block and tiles). A block below 128 is
compiled with :func:`qsgd.models.llama.set_flex_block` as the arm does. Agreement with the
default: the largest absolute difference of the output and of the three gradients over the
default's largest absolute value (bf16 rounding, since a tile changes the summation order).
``visited``: the query-key pairs of the blocks the kernels visit (partial and full) over the
pairs the mask allows, over the timed steps (1.0 would be no masked pair computed).

The fastest candidate of each shape is written to ``flex_best_<shape>.txt`` as ``--set``
arguments of ``python -m ablations.llm bench`` (one a line), which the bench can be given.

Columns of flex_blocks.csv: shape, candidate, flex_block, flex_kernel, ms_layer (GPU),
ms_step, wall_ms_layer, vs_default, max_rel_out, max_rel_grad, visited, error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from ..fmt import write_csv
from .options import flex_call_options

__all__ = ["CANDIDATES", "SHAPES", "CSV_COLUMNS", "candidate_options", "visited_fraction",
           "packed_docs", "bench", "write_outputs", "main"]

#: (name, flex_block, flex_kernel): torch's own choice first (the reference of every row)
CANDIDATES = (
    ("torch default", 128, ""),
    ("128, forward 64x64", 128, "fwd_BLOCK_M=64,fwd_BLOCK_N=64"),
    ("128, forward 128x64", 128, "fwd_BLOCK_M=128,fwd_BLOCK_N=64"),
    ("128, 4 warps", 128, "fwd_num_warps=4,bwd_num_warps=4"),
    ("128, backward 64", 128, "bwd_BLOCK_M1=64,bwd_BLOCK_N1=64,bwd_BLOCK_M2=64,bwd_BLOCK_N2=64"),
    ("128, backward 32/64", 128,
     "bwd_BLOCK_M1=32,bwd_BLOCK_N1=64,bwd_BLOCK_M2=64,bwd_BLOCK_N2=32"),
    ("64", 64, ""),
    ("64, backward 32/64", 64, "bwd_BLOCK_M1=32,bwd_BLOCK_N1=64,bwd_BLOCK_M2=64,bwd_BLOCK_N2=32"),
    ("64, forward 64x32, backward 32/64", 64,
     "fwd_BLOCK_N=32,bwd_BLOCK_M1=32,bwd_BLOCK_N1=64,bwd_BLOCK_M2=64,bwd_BLOCK_N2=32"),
    ("64, 4 warps", 64, "fwd_num_warps=4,bwd_num_warps=4"),
    ("32", 32, ""),
    ("32, backward 16/32", 32, "bwd_BLOCK_M1=16,bwd_BLOCK_N1=32,bwd_BLOCK_M2=32,bwd_BLOCK_N2=16"),
)
#: shape name → (query heads, key-value heads, head dim, layers) of its model preset
SHAPES = {"135m": (9, 3, 64, 30), "1b": (32, 8, 64, 16)}
CSV_COLUMNS = ["shape", "candidate", "flex_block", "flex_kernel", "ms_layer", "ms_step",
               "wall_ms_layer", "vs_default", "max_rel_out", "max_rel_grad", "visited", "error"]


#: the kernel options of a (flex_block, flex_kernel) pair, as the arm calls FlexAttention
candidate_options = flex_call_options


def visited_fraction(doc, block: int) -> float:
    """Query-key pairs in the ``block``-sized blocks that hold at least one pair the arm's
    document-causal mask of the example ids ``doc`` [..., L] allows (equal ids, key not after
    query; the padding's id -1 too, as :class:`ablations.llm.packing.FlexMasks` builds it),
    over the allowed pairs: the work of a block-sparse kernel over the work the mask needs
    (numpy)."""
    import numpy as np

    doc = np.asarray(doc)
    rows = doc.reshape(-1, doc.shape[-1])
    L = rows.shape[1]
    if L % block:
        raise ValueError(f"row length {L} is not a multiple of the block {block}")
    q, nb = np.arange(L), L // block
    visited = allowed = 0
    for d in rows:
        ok = (d[:, None] == d[None, :]) & (q[:, None] >= q[None, :])
        visited += int(ok.reshape(nb, block, nb, block).any(axis=(1, 3)).sum()) * block * block
        allowed += int(ok.sum())
    return visited / allowed if allowed else float("nan")


def packed_docs(steps: int, max_len: int = 2048, tokens_per_batch: int = 8192):
    """The example ids [steps, rows, max_len] of the first ``steps`` packed training steps of
    the epoch of order seed 0, as the LLM arm packs GSM8K's training split (SmolLM2's
    tokenizer; ``$QSGD_GSM8K_DIR`` or the hub)."""

    from .data import get_task
    from .loading import _tokenizer_of
    from .options import DEFAULT_MODEL, LLMOptions
    from .packing import pack
    from .session import epoch_order

    o = LLMOptions(max_len=max_len, tokens_per_batch=tokens_per_batch, device="cpu")
    tok = _tokenizer_of(DEFAULT_MODEL)
    train = list(get_task(o.task).from_options(o).train_examples())
    enc = tok.encode_examples([e.question for e in train], [e.answer for e in train])
    p = pack(enc, epoch_order(len(enc), 0), max_len, tokens_per_batch // max_len, tok.pad_id)
    return p.doc[:steps]


def _time_candidate(fn, q, k, v, gout, masks, buf, docs, opts, reps: int):
    """(GPU ms a call, wall ms a call, the last output, its gradients) of one candidate."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    def one_pass():
        out = grads = None
        for s, bm in enumerate(masks):
            buf.copy_(docs[s])
            out = fn(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts)
            grads = torch.autograd.grad(out, (q, k, v), gout)
        return out, grads

    out, grads = one_pass()  # compiles
    torch.cuda.synchronize()
    wall = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        one_pass()
        b.record()
        torch.cuda.synchronize()
        wall.append(a.elapsed_time(b) / len(masks))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            one_pass()
        torch.cuda.synchronize()
    us = sum(getattr(e, "self_device_time_total", None) or e.self_cuda_time_total
             for e in prof.key_averages()
             if e.device_type == DeviceType.CUDA and not e.key.startswith("Memcpy"))
    return us / 1e3 / (reps * len(masks)), statistics.median(wall), out, grads


def _rel_diff(x, ref) -> float:
    """max |x − ref| / max |ref|."""
    return (x.float() - ref).abs().max().item() / ref.abs().max().item()


def bench(shapes: list[str], steps: int, reps: int, log=print) -> list[dict]:
    """Every candidate at every shape (module docstring): the rows of flex_blocks.csv."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    from qsgd.models.llama import set_flex_block

    from .packing import FlexMasks

    # one compiled flex_attention, recompiled per candidate and block: lift the limits so
    # that none falls back to the (slow) eager path unnoticed
    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
        torch._dynamo.config.accumulated_recompile_limit = 1024
    fn = torch.compile(flex_attention, dynamic=False)
    device = torch.device("cuda")
    docs_np = packed_docs(steps)
    R, L = docs_np.shape[1:]
    docs = torch.from_numpy(docs_np).to(device, torch.int32)
    # the arm's own masks: one FlexMasks per block, whose mask_mod reads the step's ids from
    # its buffer (copied there before each call, as the arm's step does)
    masks, visited = {}, {}
    for block in sorted({c[1] for c in CANDIDATES}):
        fm = FlexMasks(R, L, device, block)
        masks[block] = (fm.buf, [fm(docs[s]) for s in range(steps)])
        visited[block] = visited_fraction(docs_np, block)
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for shape in shapes:
        H, Hkv, d, layers = SHAPES[shape]

        def rnd(*size):
            return torch.randn(*size, device=device, dtype=torch.bfloat16, generator=gen)

        q = rnd(R, H, L, d).requires_grad_()
        k, v = rnd(R, Hkv, L, d).requires_grad_(), rnd(R, Hkv, L, d).requires_grad_()
        gout = rnd(R, H, L, d)
        ref = None
        for name, block, kernel in CANDIDATES:
            row = dict(shape=shape, candidate=name, flex_block=block, flex_kernel=kernel,
                       visited=round(visited[block], 3))
            try:
                set_flex_block(block)
                buf, block_masks = masks[block]
                ms, wall, out, grads = _time_candidate(fn, q, k, v, gout, block_masks, buf,
                                                       docs, flex_call_options(block, kernel),
                                                       reps)
            except Exception as err:  # a candidate the kernels reject is a row, not a stop
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                log(f"[flex] {shape} {name}: {row['error']}")
                rows.append(row)
                continue
            if ref is None:
                ref = (ms, out.detach().float(), [g.float() for g in grads])
            d_out = _rel_diff(out, ref[1])
            d_grad = max(_rel_diff(g, r) for g, r in zip(grads, ref[2]))
            row |= dict(ms_layer=round(ms, 4), ms_step=round(ms * layers, 3),
                        wall_ms_layer=round(wall, 4),
                        vs_default=round(ref[0] / ms, 3), max_rel_out=f"{d_out:.2e}",
                        max_rel_grad=f"{d_grad:.2e}")
            log(f"[flex] {shape} {name}: {ms:.4f} ms a layer on the GPU ({wall:.4f} wall), "
                f"{ms * layers:.2f} ms a step, {row['vs_default']}x the default", flush=True)
            rows.append(row)
    set_flex_block(None)
    return rows


def best(rows: list[dict], shape: str) -> dict | None:
    """The fastest candidate of ``shape`` that ran."""
    ok = [r for r in rows if r["shape"] == shape and not r.get("error")]
    return min(ok, key=lambda r: r["ms_layer"]) if ok else None


def write_outputs(rows: list[dict], info: dict[str, str], out: Path, steps: int,
                  reps: int) -> None:
    """flex_blocks.csv, flex_blocks.md and flex_best_<shape>.txt under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "flex_blocks.csv", CSV_COLUMNS, rows)
    lines = ["# FlexAttention: mask block and kernel tiles on the arm's packed rows\n",
             "Generated by `python -m ablations.llm.bench_flex` (method in its docstring): one "
             f"layer's FlexAttention forward + backward over the block masks of the first "
             f"{steps} training steps (GSM8K's training split packed as the LLM bench packs "
             f"it, 4 rows of 2048 tokens), bf16, the GPU time of its kernels over {reps} passes "
             "(wall: the median pass by CUDA events, mostly each call's overhead); ms_step = "
             "ms_layer × "
             "the shape's layers; vs_default = the default's time over the row's; visited = "
             "the pairs of the blocks the kernels visit over the pairs the mask allows.\n",
             "| shape | candidate | flex_block | flex_kernel | GPU ms a layer | GPU ms a step | "
             "wall ms a layer | vs default | max rel. diff out | max rel. diff grads | visited "
             "| error |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in CSV_COLUMNS) + " |")
    lines.append("")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        b = best(rows, shape)
        if b is None:
            continue
        sets = [f"flex_block={b['flex_block']}"] + (
            [f"flex_kernel={b['flex_kernel']}"] if b["flex_kernel"] else [])
        (out / f"flex_best_{shape}.txt").write_text("\n".join(sets) + "\n")
        lines.append(f"Fastest at {shape}: **{b['candidate']}** ({b['ms_step']} GPU ms a step, "
                     f"{b['vs_default']}× the default): `--set {' --set '.join(sets)}`.\n")
    lines += ["## Machine\n"] + [f"- {k}: {v}" for k, v in info.items()]
    (out / "flex_blocks.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablations.llm.bench_flex",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="135m,1b",
                    help=f"comma list of {', '.join(SHAPES)} (default: both)")
    ap.add_argument("--steps", type=int, default=8, help="training steps' masks (default 8)")
    ap.add_argument("--reps", type=int, default=10, help="timed passes (default 10)")
    ap.add_argument("--out", type=Path, default=Path("results/llm"))
    args = ap.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad or not shapes:
        ap.error(f"--shapes: unknown {', '.join(bad) or '(none)'}; valid: {', '.join(SHAPES)}")
    if args.steps < 1 or args.reps < 1:
        ap.error("--steps and --reps must be >= 1")
    import torch

    if not torch.cuda.is_available():
        print("[flex] no CUDA device: FlexAttention's kernels are timed on a GPU only; "
              "nothing written", file=sys.stderr)
        return 0
    from ..provenance import machine_info

    rows = bench(shapes, args.steps, args.reps)
    info = machine_info(gpu=torch.cuda.get_device_name(0))
    write_outputs(rows, info, args.out, args.steps, args.reps)
    print(f"[flex] wrote {args.out / 'flex_blocks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
