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
from torch import Tensor

from qsgd import parse_variant
from qsgd.models.llama import IGNORE

from ..seeds import derived_seeds
from .generate import greedy_generate
from .options import LLMOptions, lr_at
from .packing import DeviceBatches
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

__all__ = ["benchmark", "decode_check", "PEER", "BENCH_COLUMNS"]

#: the peer row's config prefix (the summary keeps rows starting "HF ")
PEER = "HF peer: LlamaForCausalLM"
#: columns of throughput_bench.csv (the markdown table: all but the device)
BENCH_COLUMNS = ["config", "variant", "tokens_per_s", "ratio_to_peer", "step_ms", "epoch_s",
                 "ratio_to_adamw", "cost_vs_adamw", "optimizer_share", "mfu", "peak_mem_mib",
                 "mean_train_loss", "skipped_steps", "warmup_s", "value", "seconds", "device"]


def _hf_model(sess: Session):
    """transformers' ``LlamaForCausalLM`` (SDPA attention, no KV cache) of the session's shape
    with its base weights and RoPE frequencies, float32, on the session's device, in train
    mode. ``use_cache=False``: with a cache (the config's default) transformers ignores the
    restarting ``position_ids`` of packed rows and attends across examples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    s = sess.base.shape
    cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                      num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                      head_dim=s.head_dim, rms_norm_eps=s.rms_eps, rope_theta=s.rope_theta,
                      tie_word_embeddings=s.tie_embeddings, attn_implementation="sdpa",
                      use_cache=False)
    hf = LlamaForCausalLM(cfg)
    missing, _ = hf.load_state_dict(_base_state(sess), strict=False)
    if set(missing) - ({"lm_head.weight"} if s.tie_embeddings else set()):
        raise ValueError(f"HF peer: weights missing for {sorted(missing)[:5]}")
    rot = hf.model.rotary_emb
    with torch.no_grad():  # the base model's own frequencies (a loaded model may differ)
        for name in ("inv_freq", "original_inv_freq"):
            getattr(rot, name).copy_(sess.base.inv_freq)
    return hf.to(sess.device).train()


def _base_state(sess: Session) -> dict[str, Tensor]:
    # the weights every run starts from, by the HF names of the arm's parameters
    names = [n for n, _ in sess.model.named_parameters()]
    return dict(zip(names, sess.base_params))


def _peer_labels(b: DeviceBatches, dev: torch.device) -> Tensor:
    """HF labels [S, R, L] of the packed steps: the token at position j + 1 where the arm
    scores position j (transformers shifts labels by one inside its loss), IGNORE (−100)
    elsewhere, so that both compute one loss over the same scored tokens."""
    tgt = torch.from_numpy(b.packed.tgt)
    lab = torch.full_like(tgt, IGNORE)
    lab[..., 1:] = tgt[..., :-1]  # an example's last position is never scored: no spill-over
    return lab.to(dev)


def _hf_peer(sess: Session, o: LLMOptions, b: DeviceBatches, max_steps: int = 0,
             warmup: int = 3) -> dict[str, Any]:
    """The compiled Hugging Face loop a user would write instead of the arm, on the arm's own
    packed steps.

    transformers' ``LlamaForCausalLM`` (:func:`_hf_model`: SDPA attention, the arm's shape and
    base weights), ``torch.compile`` of the whole model (``[llm].compile``), the run's precision
    (autocast over float32 weights; fp16 with GradScaler), ``torch.optim.AdamW`` (fused on
    CUDA) with the arm's lr schedule, weight decay and clipping. Each step feeds the step's
    packed rows ``b.ids[s]`` [R, L] with ``position_ids = b.pos[s]`` (restarting at 0 for each
    example, 0 on the padding) and no attention mask: transformers then masks attention
    document-causally (each example attends to itself only, as the arm's mask), through a
    dense boolean mask for SDPA; labels from :func:`_peer_labels`; the loss is HF's mean
    cross-entropy over the scored tokens, computed from logits at every position.

    ``warmup`` untimed steps first (compilation), then the weights and optimizer start afresh
    and the first ``max_steps`` steps of the epoch (0: all) are timed, with the device
    synchronised at both ends. Returns ``seconds``, ``steps`` (timed), ``losses`` (float64, per
    timed step; the first is the loss of step 0 from the base weights), ``peak_mem_mib`` (the
    peak allocated memory of the timed steps above what the session held before the peer was
    built: the arm's model, its base copy and the batches are not the peer's; None on a CPU)
    and ``warmup_s``."""
    dev = sess.device
    if sess.dist.world > 1:
        raise ValueError("the HF peer runs in one process; run the bench without torchrun")
    cuda = dev.type == "cuda"
    held = torch.cuda.memory_allocated(dev) if cuda else 0  # the session's: not the peer's
    hf = _hf_model(sess)
    fwd = torch.compile(hf) if o.compile else hf
    params = list(hf.parameters())
    precision = o.effective_precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    labels = _peer_labels(b, dev)
    S = b.steps
    run_steps = min(S, max_steps) if max_steps else S

    def step(s, opt, scaling):
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = fwd(input_ids=b.ids[s], position_ids=b.pos[s], labels=labels[s]).loss
        scaling.backward(loss)
        scaling.clip(opt, params, o.clip_grad)
        scaling.step(opt)
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def fresh():
        hf.load_state_dict(_base_state(sess), strict=False)
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay,
                                fused=cuda)
        return opt, LossScaling(precision, dev)

    t_warm = time.perf_counter()
    opt, scaling = fresh()
    for i in range(warmup):
        step(i % S, opt, scaling)
    sync(dev)
    warm = time.perf_counter() - t_warm
    opt, scaling = fresh()
    losses = torch.zeros(run_steps, dtype=torch.float32, device=dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    for s in range(run_steps):
        opt.param_groups[0]["lr"] = lr_at(s, S, o, o.lr)
        losses[s] = step(s, opt, scaling)
    sync(dev)
    sec = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(dev) - held) / 2**20 if cuda else None
    return dict(seconds=sec, steps=run_steps, losses=losses.cpu().double().numpy(),
                peak_mem_mib=peak, warmup_s=warm)


def _hf_baseline(sess: Session, o: LLMOptions, steps: int, warmup: int = 5) -> dict[str, Any]:
    """The plain eager loop: transformers' LlamaForCausalLM (:func:`_hf_model`), torch AdamW
    (fused on CUDA), the run's precision (fp16 with GradScaler) and clipping. Example
    batching (what the bench runs it for): one example a step (the paper's batch 1), the
    tokens of ``loss_tokens`` scored; packed options: one padded batch of 16 examples a step,
    the answer tokens scored (no longer benchmarked: :func:`_hf_peer` trains on the arm's own
    packed rows). ``warmup`` untimed steps first; examples in the seed-0 order, cycled."""
    dev = sess.device
    hf = _hf_model(sess)
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


def _peak_mib(dev: torch.device) -> float | str:
    # peak allocated memory since the last reset, MiB ("" on a CPU)
    return round(torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else ""


def benchmark(o: LLMOptions, variants: Sequence[str], baseline_steps: int,
              out_dir: Path, lrs: Sequence[float] = (), max_steps: int = 0,
              peer: bool = True) -> list[dict[str, Any]]:
    """Measure the arm's throughput; write ``throughput_bench.csv`` and ``throughput_bench.md``.

    Rows: with packed batching and ``peer``, the compiled Hugging Face peer (:func:`_hf_peer`)
    on the arm's own packed steps, timed over the same steps as the arm's loop, and the check
    that it and the arm compute the same loss of step 0 from the base weights; with example
    batching, the plain HF loop at batch 1 (:func:`_hf_baseline`, ``baseline_steps`` steps
    after 5 warm-up steps; CUDA only); then one epoch of the arm's loop per variant (seed 0
    data order, no evaluation), each with its tokens/s, ratio to adamw, ratio to the peer
    (``ratio_to_peer``: tokens/s over the peer's, same run, same rows), seconds per epoch and
    their relative cost against adamw's (C4), optimizer share, MFU and peak memory; then the
    greedy decoding of ``eval_questions`` test questions and the test loss (seconds). On CUDA
    the compiled flex path is checked against the dense-mask SDPA reference on one batch
    first (packed). ``lrs``: extra adamw epochs at these learning rates (mean training loss
    and test loss: the lr check). ``max_steps``: time only the first N steps of each epoch
    (0: all) and extrapolate the epoch's seconds as seconds / N × steps, e.g. for the paper's
    batch-1 protocol at the Llama-3.2-1B shape, whose 7,473 steps would take long::

        python -m ablations.llm bench --config ablations/configs/llm-paper.toml \\
            --set model=random:1b --set tokenizer=smollm2-135m-instruct \\
            --variants adamw,sin-l0.5 --steps 500 --baseline-steps 50

    (``random:1b``: the Llama-3.2-1B shape with random weights; SmolLM2's tokenizer gives
    GSM8K examples of realistic token lengths, the byte tokenizer about four times longer.)
    Compilation is outside the timed loop, in ``warmup_s``: one static graph per length
    bucket (8 with ``bucket = 64``); ``--set bucket=0`` compiles one dynamic-shape graph
    instead, ``--set bucket=256`` three static ones, so the two can be compared.

    One FLOP count serves every row's MFU: :meth:`qsgd.models.llama.LlamaShape.train_flops`
    of the epoch (the decoder on every real token, the LM head on the scored tokens,
    document-causal attention), whatever a loop computes beyond it (the peer's LM head runs on
    every position, its SDPA over the dense mask), so MFU ratios equal tokens/s ratios.
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
    flops = sess.base.shape.train_flops(fig["real"], fig["head"], fig["attn_pairs"])
    rows: list[dict[str, Any]] = []
    name = device_name(dev)
    timed = (f", first {max_steps} steps" if max_steps and max_steps < S else "")
    print(f"[bench] {name}: {o.model}, {S} steps, {step_text}, {o.effective_precision}, "
          f"{fig['real']:.0f} real tokens ({fig['real'] / fig['slots']:.1%} of the slots), "
          f"{fig['scored']:.0f} scored", flush=True)
    arm0 = None
    if not per_example:
        reset_weights(sess)
        with torch.no_grad():
            args = (b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0], b.n_loss[0])
            if b.block_masks is not None:
                sess.flex.buf.copy_(b.doc[0])
                ref = float(sess.model.loss(*args, None))
                arm0 = float(sess.loss_fn(*args, b.block_masks[0]))
                print(f"[bench] loss of batch 0: flex (compiled) {arm0:.5f}, dense SDPA "
                      f"{ref:.5f}", flush=True)
                rows.append(dict(config="check: flex vs dense-mask SDPA loss, batch 0",
                                 value=f"{arm0:.5f} vs {ref:.5f}", device=name))
            else:
                arm0 = float(sess.loss_fn(*args, None))

    def timing(seconds: float, steps: int) -> dict[str, Any]:
        # the figures every timed row shares; the epoch's seconds extrapolated by steps
        epoch_s = seconds * S / steps
        return dict(tokens_per_s=round(fig["real"] / epoch_s), epoch_s=round(epoch_s, 2),
                    step_ms=round(1e3 * seconds / steps, 2),
                    mfu=round(flops / epoch_s / peak, 4) if peak else "")

    peer_tps = None
    if peer and not per_example:
        res = _hf_peer(sess, o, b, max_steps=max_steps)
        if dev.type == "cuda":  # the peer's model and optimizer state are gone
            import gc

            gc.collect()
            torch.cuda.empty_cache()
            print(f"[bench] after the peer: {torch.cuda.memory_allocated(dev) / 2**20:.0f} MiB "
                  "allocated (the session's)", flush=True)
        t = timing(res["seconds"], res["steps"])
        peer_tps = fig["real"] * res["steps"] / S / res["seconds"]
        mode = "torch.compile" if o.compile else "eager"
        rows.append(dict(config="check: HF peer vs arm loss, batch 0, base weights",
                         value=f"{res['losses'][0]:.5f} vs {arm0:.5f}", device=name))
        rows.append(dict(config=f"{PEER}, SDPA (document mask from position_ids), {mode}, "
                                f"{step_text}, {o.effective_precision}, torch AdamW"
                                f"{' (fused)' if dev.type == 'cuda' else ''}{timed}",
                         variant="adamw", **t, ratio_to_peer=1.0,
                         mean_train_loss=round(float(np.mean(res["losses"])), 5),
                         peak_mem_mib=round(res["peak_mem_mib"]) if res["peak_mem_mib"]
                         else "", warmup_s=round(res["warmup_s"], 1), device=name))
        print(f"[bench] HF peer ({mode}): {peer_tps:.0f} tokens/s, step "
              f"{t['step_ms']} ms, loss of batch 0 {res['losses'][0]:.5f} (arm "
              f"{arm0:.5f})", flush=True)
    if baseline_steps and per_example and dev.type == "cuda":
        base = _hf_baseline(sess, o, baseline_steps)
        rows.append(dict(config=f"HF LlamaForCausalLM, batch 1, SDPA, eager, AdamW, "
                                f"{o.effective_precision}",
                         variant="adamw", tokens_per_s=round(base["tokens_per_s"]),
                         step_ms=round(base["step_ms"], 2), device=name))
        print(f"[bench] HF baseline: {base['tokens_per_s']:.0f} tokens/s", flush=True)
    ref_tps = ref_epoch = None
    loop = f"arm loop ({sess.attn_impl}, compile={o.compile}, {step_text}, " \
           f"{o.effective_precision}{timed}"
    jobs = [(vid, o.lr) for vid in variants] + [("adamw", lr) for lr in lrs]
    for k, (vid, lr) in enumerate(jobs):
        variant = parse_variant(vid)
        t_warm = time.perf_counter()
        warm_up(sess, b, variant, o)
        warm = time.perf_counter() - t_warm
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        res = train_epoch(sess, b, variant, lr, seeds["noise"], o, max_steps=max_steps)
        mem = _peak_mib(dev)
        t = timing(res["seconds"], res["steps"])
        epoch_s = res["seconds"] * S / res["steps"]
        tps = fig["real"] / epoch_s
        if ref_tps is None and vid == "adamw":
            ref_tps, ref_epoch = tps, epoch_s
        lr_check = k >= len(variants)
        row = dict(config=(f"lr check, lr {lr:g}" if lr_check else f"{loop}, lr {lr:g})"),
                   variant=vid, **t,
                   ratio_to_adamw=round(tps / ref_tps, 4) if ref_tps else "",
                   ratio_to_peer=round(tps / peer_tps, 4) if peer_tps else "",
                   cost_vs_adamw=f"{epoch_s / ref_epoch - 1:+.2%}" if ref_epoch else "",
                   optimizer_share=round(res["optimizer_share"], 4),
                   mean_train_loss=round(float(np.mean(res["losses"])), 5),
                   skipped_steps=res["skipped_steps"], peak_mem_mib=mem,
                   warmup_s=round(warm, 1), device=name)
        if lr_check:
            row["value"] = f"test loss {evaluate_loss(sess, capacity):.5f}"
        rows.append(row)
        print(f"[bench] {vid} lr {lr:g}: {tps:.0f} tokens/s, {epoch_s:.1f} s an epoch "
              f"({row['cost_vs_adamw'] or 'reference'}), ratio to the peer "
              f"{row['ratio_to_peer'] or '-'}, optimizer share "
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
    with open(out_dir / "throughput_bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=BENCH_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in BENCH_COLUMNS})
    cols = BENCH_COLUMNS[:-1]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    peer_text = (
        " The peer (the `HF peer` row) is the loop a user would write instead: transformers' "
        "LlamaForCausalLM with SDPA attention, the same shape and base weights, "
        + ("torch.compile, " if o.compile else "eager, ")
        + (f"{o.effective_precision} autocast over float32 weights"
           if o.effective_precision != "fp32" else "float32 without autocast")
        + ", torch AdamW"
        + (" (fused)" if dev.type == "cuda" else "")
        + " with the arm's lr schedule, weight decay and clipping, on the arm's own packed "
        "rows (position_ids restarting per example and no attention mask, from which "
        "transformers builds the same document-causal mask), labels −100 outside the "
        "answer tokens the arm scores, so both compute one loss (the check row: step 0 "
        "from the base weights); ratio_to_peer = tokens/s over the peer's. The padded "
        "batches of 16 that this bench timed before are not run: eager and two thirds "
        "padding, they were no peer a reader would compare with."
        if peer_tps else "")
    (out_dir / "throughput_bench.md").write_text(
        f"# LLM arm throughput benchmark\n\nDevice: {name}. Model: {o.model} "
        f"({sess.base.shape.n_params() / 1e6:.1f}M parameters), {o.effective_precision}. One "
        f"epoch = {fig['real']:.0f} non-padding tokens in {S} steps, {step_text}"
        + (f"; the first {max_steps} steps of each epoch timed, the epoch's seconds "
           "extrapolated by steps" if max_steps and max_steps < S else "")
        + ". tokens_per_s counts non-padding tokens over the "
        f"timed loop (compilation excluded, in warmup_s); epoch_s: seconds per epoch, "
        f"cost_vs_adamw their relative difference to adamw's; peak_mem_mib: "
        f"torch.cuda.max_memory_allocated over the timed loop (the peer's: above the memory "
        f"the session held before it, the arm's model and base copy); MFU = one FLOP count "
        f"for every row, {flops:.4g} FLOPs an epoch (forward + backward: 6·N per token for "
        f"the decoder's matrices, the LM head on the {fig['head']:.0f} scored tokens only, "
        f"document-causal attention on {fig['attn_pairs']:.4g} query-key pairs; work a loop "
        f"does beyond it is not counted) over time and the dense bf16 peak "
        f"({peak or 'unknown'} FLOP/s)."
        + peer_text + "\n\n" + "\n".join(lines) + "\n")
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
