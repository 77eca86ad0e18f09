"""The LLM arm's throughput benchmark (``python -m ablations.llm bench``) and the check of
the CUDA-graph decoding (``decode-check``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qsgd import parse_variant
from qsgd.models.llama import IGNORE

from ..seeds import derived_seeds
from .generate import greedy_generate
from .options import LLMOptions
from .precision import LossScaling
from .session import Session, device_name, epoch_batches, open_session, peak_flops, sync
from .train import (
    epoch_figures,
    evaluate_exact_match,
    evaluate_loss,
    reset_weights,
    train_epoch,
    warm_up,
)

__all__ = ["benchmark", "decode_check"]


def _hf_baseline(sess: Session, o: LLMOptions, steps: int, warmup: int = 5) -> dict[str, Any]:
    """The plain loop the arm replaces: transformers' LlamaForCausalLM (SDPA attention), torch
    AdamW (fused on CUDA), the run's precision (fp16 with GradScaler) and clipping. Packed
    options: one padded batch of 16 examples a step, the answer tokens scored; example
    batching: one example a step (the paper's batch 1), the tokens of ``loss_tokens``
    scored. ``warmup`` untimed steps first; examples in the seed-0 order, cycled."""
    from transformers import LlamaConfig, LlamaForCausalLM

    s, dev = sess.base.shape, sess.device
    cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                      num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                      head_dim=s.head_dim, rms_norm_eps=s.rms_eps, rope_theta=s.rope_theta,
                      tie_word_embeddings=s.tie_embeddings, attn_implementation="sdpa")
    hf = LlamaForCausalLM(cfg)
    hf.load_state_dict({k: v for k, v in sess.model.state_dict().items()}, strict=False)
    hf.to(dev).train()
    params = list(hf.parameters())
    opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay,
                            fused=dev.type == "cuda")
    precision = o.effective_precision
    scaling = LossScaling(precision, dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    batch = 1 if o.per_example else 16
    score_all = o.loss_tokens == "all"
    ex = sess.train_examples
    order = np.random.default_rng(0).permutation(len(ex))
    pad = sess.base.tokenizer.pad_id

    def make(i):
        idx = [order[(i * batch + r) % len(ex)] for r in range(batch)]
        n = max(min(len(ex[j][0]), o.max_len) for j in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        lab = torch.full((len(idx), n), IGNORE, dtype=torch.long)
        att = torch.zeros((len(idx), n), dtype=torch.long)
        for r, j in enumerate(idx):
            x, a, b = ex[j]
            x = torch.tensor(x[:n])
            ids[r, :len(x)] = x
            att[r, :len(x)] = 1
            if score_all:  # the model shifts: every token after the first is scored
                lab[r, :len(x)] = x
            else:
                lab[r, a:b] = x[a:b]
        return ids.to(dev), att.to(dev), lab.to(dev), int(att.sum())

    tokens, t0 = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(dev)
            t0, tokens = time.perf_counter(), 0
        ids, att, lab, n = make(i)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = hf(input_ids=ids, attention_mask=att, labels=lab).loss
        scaling.backward(loss)
        scaling.clip(opt, params, o.clip_grad)
        scaling.step(opt)
        opt.zero_grad(set_to_none=True)
        tokens += n
    sync(dev)
    sec = time.perf_counter() - t0
    del hf, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"tokens_per_s": tokens / sec, "step_ms": 1e3 * sec / steps, "batch": batch}


def benchmark(o: LLMOptions, variants: Sequence[str], baseline_steps: int,
              out_dir: Path, lrs: Sequence[float] = (), max_steps: int = 0
              ) -> list[dict[str, Any]]:
    """Measure the arm's throughput; write ``throughput_bench.csv`` and ``throughput_bench.md``.

    Rows: the plain HF loop (:func:`_hf_baseline`, ``baseline_steps`` steps after 5 warm-up
    steps; CUDA only); then one epoch of the arm's loop per variant (seed 0 data order, no
    evaluation), each with its tokens/s, ratio to adamw, seconds per epoch and their relative
    cost against adamw's (C4), optimizer share and MFU; then the greedy decoding of
    ``eval_questions`` test questions and the test loss (seconds). On CUDA the compiled flex
    path is checked against the dense-mask SDPA reference on one batch first (packed). ``lrs``:
    extra adamw epochs at these learning rates (mean training loss and test loss: the lr
    check). ``max_steps``: time only the first N steps of each epoch (0: all) and extrapolate
    the epoch's seconds as seconds / N × steps, e.g. for the paper's batch-1 protocol at the
    Llama-3.2-1B shape, whose 7,473 steps would take long::

        python -m ablations.llm bench --config ablations/configs/llm-paper.toml \\
            --set model=random:1b --set tokenizer=smollm2-135m-instruct \\
            --variants adamw,sin-l0.5 --steps 500 --baseline-steps 50

    (``random:1b``: the Llama-3.2-1B shape with random weights; SmolLM2's tokenizer gives
    GSM8K examples of realistic token lengths, the byte tokenizer about four times longer.)
    Compilation is outside the timed loop, in ``warmup_s``: one static graph per length
    bucket (8 with ``bucket = 64``); ``--set bucket=0`` compiles one dynamic-shape graph
    instead, ``--set bucket=256`` three static ones, so the two can be compared.
    """
    import csv

    seeds = derived_seeds(0)
    sess = open_session(o, seeds["init"])
    dev = sess.device
    b = epoch_batches(sess, seeds["order"])
    fig = epoch_figures(b, o)
    S = int(fig["steps"])
    capacity = getattr(b, "capacity", 0)
    per_example = o.per_example
    step_text = (f"one example a step (bucket {o.bucket}, {len(b.shapes)} shapes)" if per_example
                 else f"{o.tokens_per_batch} tokens a step")
    peak = peak_flops(dev)
    rows: list[dict[str, Any]] = []
    name = device_name(dev)
    print(f"[bench] {name}: {o.model}, {S} steps, {step_text}, {o.effective_precision}, "
          f"{fig['real']:.0f} real tokens ({fig['real'] / fig['slots']:.1%} of the slots), "
          f"{fig['scored']:.0f} scored", flush=True)
    if not per_example and b.block_masks is not None:
        reset_weights(sess)
        with torch.no_grad():
            sess.flex.buf.copy_(b.doc[0])
            args = (b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0], b.n_loss[0])
            ref = float(sess.model.loss(*args, None))
            flex = float(sess.loss_fn(*args, b.block_masks[0]))
        print(f"[bench] loss of batch 0: flex (compiled) {flex:.5f}, dense SDPA {ref:.5f}",
              flush=True)
        rows.append(dict(config="check: flex vs dense-mask SDPA loss, batch 0",
                         value=f"{flex:.5f} vs {ref:.5f}", device=name))
    if baseline_steps and dev.type == "cuda":
        base = _hf_baseline(sess, o, baseline_steps)
        what = "batch 1" if base["batch"] == 1 else f"padded batches of {base['batch']}"
        rows.append(dict(config=f"HF LlamaForCausalLM, {what}, SDPA, AdamW, "
                                f"{o.effective_precision}",
                         variant="adamw", tokens_per_s=round(base["tokens_per_s"]),
                         step_ms=round(base["step_ms"], 2), device=name))
        print(f"[bench] HF baseline: {base['tokens_per_s']:.0f} tokens/s", flush=True)
    ref_tps = ref_epoch = None
    loop = (f"arm loop ({sess.attn_impl}, compile={o.compile}, {step_text}, {o.effective_precision}"
            + (f", first {max_steps} steps" if max_steps and max_steps < S else ""))
    jobs = [(vid, o.lr) for vid in variants] + [("adamw", lr) for lr in lrs]
    for k, (vid, lr) in enumerate(jobs):
        variant = parse_variant(vid)
        t_warm = time.perf_counter()
        warm_up(sess, b, variant, o)
        warm = time.perf_counter() - t_warm
        res = train_epoch(sess, b, variant, lr, seeds["noise"], o, max_steps=max_steps)
        share = res["steps"] / S  # the timed part of the epoch's tokens, by steps
        epoch_s = res["seconds"] / share
        tps = fig["real"] / epoch_s
        if ref_tps is None and vid == "adamw":
            ref_tps, ref_epoch = tps, epoch_s
        lr_check = k >= len(variants)
        flops = sess.base.shape.train_flops(fig["real"], fig["head"], fig["attn_pairs"])
        row = dict(config=(f"lr check, lr {lr:g}" if lr_check else f"{loop}, lr {lr:g})"),
                   variant=vid, tokens_per_s=round(tps),
                   step_ms=round(1e3 * res["seconds"] / res["steps"], 2),
                   epoch_s=round(epoch_s, 2),
                   ratio_to_adamw=round(tps / ref_tps, 4) if ref_tps else "",
                   cost_vs_adamw=f"{epoch_s / ref_epoch - 1:+.2%}" if ref_epoch else "",
                   optimizer_share=round(res["optimizer_share"], 4),
                   mfu=round(flops / epoch_s / peak, 4) if peak else "",
                   mean_train_loss=round(float(np.mean(res["losses"])), 5),
                   skipped_steps=res["skipped_steps"], warmup_s=round(warm, 1), device=name)
        if lr_check:
            row["value"] = f"test loss {evaluate_loss(sess, capacity):.5f}"
        rows.append(row)
        print(f"[bench] {vid} lr {lr:g}: {tps:.0f} tokens/s, {epoch_s:.1f} s an epoch "
              f"({row['cost_vs_adamw'] or 'reference'}), optimizer share "
              f"{res['optimizer_share']:.3f}, mean loss {row['mean_train_loss']}, "
              f"ratio {res['perturbation_ratio']:.3g} {row.get('value', '')}", flush=True)
    t = time.perf_counter()
    tl = evaluate_loss(sess, capacity)
    rows.append(dict(config=f"test loss, {len(sess.test_examples)} examples",
                     value=round(tl, 5), seconds=round(time.perf_counter() - t, 2), device=name))
    t = time.perf_counter()
    em = evaluate_exact_match(sess, o)
    rows.append(dict(config=f"greedy decoding, {o.eval_questions} questions, "
                            f"max_new_tokens {o.max_new_tokens}, batch {o.eval_batch}",
                     value=round(em, 4), seconds=round(time.perf_counter() - t, 2), device=name))
    print(f"[bench] eval: test loss {tl:.4f}, exact match {em:.4f}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["config", "variant", "tokens_per_s", "step_ms", "epoch_s", "ratio_to_adamw",
            "cost_vs_adamw", "optimizer_share", "mfu", "mean_train_loss", "skipped_steps",
            "warmup_s", "value", "seconds", "device"]
    with open(out_dir / "throughput_bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    lines = ["| " + " | ".join(cols[:-1]) + " |", "|" + "---|" * (len(cols) - 1)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols[:-1]) + " |" for r in rows]
    (out_dir / "throughput_bench.md").write_text(
        f"# LLM arm throughput benchmark\n\nDevice: {name}. Model: {o.model} "
        f"({sess.base.shape.n_params() / 1e6:.1f}M parameters), {o.effective_precision}. One "
        f"epoch = {fig['real']:.0f} non-padding tokens in {S} steps, {step_text}"
        + (f"; the first {max_steps} steps of each epoch timed, the epoch's seconds "
           "extrapolated by steps" if max_steps and max_steps < S else "")
        + ". tokens_per_s counts non-padding tokens over the "
        f"timed loop (compilation excluded); epoch_s: seconds per epoch, cost_vs_adamw their "
        f"relative difference to adamw's; MFU = model FLOPs (6·N per token for the decoder, "
        f"the LM head on the tokens it runs on, causal attention) over time and the dense bf16 "
        f"peak ({peak or 'unknown'} FLOP/s).\n\n" + "\n".join(lines) + "\n")
    return rows


def decode_check(o: LLMOptions, n: int = 64) -> dict[str, Any]:
    """Greedy decoding of the first ``n`` test questions with the CUDA-graph step and with the
    eager step (same tokens expected), then of ``eval_questions`` questions with the graph;
    prints and returns the timings. The base model, untrained."""
    sess = open_session(o, derived_seeds(0)["init"])
    tok = sess.base.tokenizer
    prompts = tok.encode_prompts([e.question for e in sess.test_data[:n]])
    res: dict[str, Any] = {}
    for graph in ((True, False) if sess.device.type == "cuda" else (False,)):
        sync(sess.device)
        t = time.perf_counter()
        out = greedy_generate(sess.model, prompts, o.max_new_tokens, tok.eos_id, tok.pad_id,
                              o.eval_batch, cuda_graph=graph)
        sync(sess.device)
        res["graph" if graph else "eager"] = (out, time.perf_counter() - t)
    res.setdefault("graph", res["eager"])
    same = sum(a == b for a, b in zip(res["graph"][0], res["eager"][0]))
    t = time.perf_counter()
    em = evaluate_exact_match(sess, o)
    full = time.perf_counter() - t
    summary = dict(n=n, identical=same, graph_s=round(res["graph"][1], 2),
                   eager_s=round(res["eager"][1], 2), eval_questions=o.eval_questions,
                   eval_s=round(full, 2), exact_match_base_model=em)
    print(f"[decode-check] {json.dumps(summary)}", flush=True)
    return summary
