"""The LLM arm's throughput benchmark (``python -m ablations.llm bench``) and the check of
the CUDA-graph decoding (``decode-check``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qsgd import parse_variant
from qsgd.models.llama import IGNORE

from ..fmt import dict_table, write_csv
from ..seeds import derived_seeds
from .generate import greedy_generate
from .options import LLMOptions, lr_at
from .packing import DeviceBatches
from .precision import LossScaling
from .session import Session, device_name, epoch_batches, open_session, peak_flops, sync
from .train import (
    attention_args,
    epoch_figures,
    evaluate_exact_match,
    evaluate_loss,
    reset_weights,
    train_epoch,
    warm_up,
)

__all__ = ["benchmark", "decode_check", "HFPeer", "PEER", "BENCH_COLUMNS", "matmul_floor"]

#: the peer row's config prefix (the summary keeps rows starting "HF ")
PEER = "HF peer: LlamaForCausalLM"
#: columns of throughput_bench.csv (the markdown table: all but the device)
BENCH_COLUMNS = ["config", "variant", "tokens_per_s", "ratio_to_peer", "step_ms", "spread",
                 "epoch_s", "ratio_to_adamw", "paired_ratio", "paired_range", "cost_vs_adamw",
                 "optimizer_share", "mfu",
                 "peak_mem_mib", "mean_train_loss", "skipped_steps", "warmup_s", "value",
                 "seconds", "device"]


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


class HFPeer:
    """The compiled Hugging Face loop a user would write instead of the arm, on the arm's own
    packed steps; built, compiled and warmed up once, then timed as often as wanted.

    transformers' ``LlamaForCausalLM`` (:func:`_hf_model`: SDPA attention, the arm's shape and
    base weights), ``torch.compile`` of the whole model (``[llm].compile``), the run's precision
    (autocast over float32 weights; fp16 with GradScaler), ``torch.optim.AdamW`` (fused on
    CUDA) with the arm's lr schedule, weight decay and clipping. Each step feeds the step's
    packed rows ``b.ids[s]`` [R, L] with ``position_ids = b.pos[s]`` (restarting at 0 for each
    example, 0 on the padding) and no attention mask: transformers then masks attention
    document-causally (each example attends to itself only, as the arm's mask), through a
    dense boolean mask for SDPA; labels from :func:`_peer_labels`; the loss is HF's mean
    cross-entropy over the scored tokens, computed from logits at every position.

    Args:
        sess: the session (one process: the peer is not data-parallel).
        o: the options (compile, precision, lr schedule, weight decay, clipping).
        b: the epoch's packed steps.
        warmup: untimed steps run once at construction (compilation), in ``warmup_s``.

    Attributes: ``warmup_s``; ``held`` (bytes allocated on the device before the peer was
    built: the session's, the arm's model, its base copy and the batches; 0 on a CPU);
    ``resident_mib`` (the peer's own memory between timings, allocated after the build and
    the warm-up minus ``held``: its model and labels; None on a CPU)."""

    def __init__(self, sess: Session, o: LLMOptions, b: DeviceBatches, warmup: int = 3):
        dev = sess.device
        if sess.dist.world > 1:
            raise ValueError("the HF peer runs in one process; run the bench without torchrun")
        self.sess, self.o, self.b = sess, o, b
        self.cuda = dev.type == "cuda"
        self.held = torch.cuda.memory_allocated(dev) if self.cuda else 0
        self.hf = _hf_model(sess)
        self.fwd = torch.compile(self.hf) if o.compile else self.hf
        self.params = list(self.hf.parameters())
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(o.effective_precision)
        self.labels = _peer_labels(b, dev)
        t_warm = time.perf_counter()
        opt, scaling = self._fresh()
        for i in range(warmup):
            self._step(i % b.steps, opt, scaling)
        sync(dev)
        self.warmup_s = time.perf_counter() - t_warm
        del opt, scaling
        self.resident_mib = None
        if self.cuda:
            import gc

            gc.collect()
            self.resident_mib = (torch.cuda.memory_allocated(dev) - self.held) / 2**20

    def _fresh(self):
        # the base weights and a new optimizer and loss scaling: every timing starts alike
        self.hf.load_state_dict(_base_state(self.sess), strict=False)
        opt = torch.optim.AdamW(self.params, lr=self.o.lr, weight_decay=self.o.weight_decay,
                                fused=self.cuda)
        return opt, LossScaling(self.o.effective_precision, self.sess.device)

    def _step(self, s: int, opt, scaling) -> Tensor:
        dt = self.dtype
        with torch.autocast(self.sess.device.type, dtype=dt or torch.float32,
                            enabled=dt is not None):
            loss = self.fwd(input_ids=self.b.ids[s], position_ids=self.b.pos[s],
                            labels=self.labels[s]).loss
        scaling.backward(loss)
        scaling.clip(opt, self.params, self.o.clip_grad)
        scaling.step(opt)
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def time(self, steps: int = 0) -> dict[str, Any]:
        """Time the first ``steps`` steps of the epoch (0: all) from the base weights with a
        fresh AdamW and loss scaling, the device synchronised at both ends. Returns
        ``seconds``, ``steps`` (timed), ``losses`` (float64, per timed step; the first is the
        loss of step 0 from the base weights) and ``peak_mem_mib`` (the peak allocated memory
        of the timed steps above ``held``; None on a CPU)."""
        dev, o, S = self.sess.device, self.o, self.b.steps
        run_steps = min(S, steps) if steps else S
        opt, scaling = self._fresh()
        losses = torch.zeros(run_steps, dtype=torch.float32, device=dev)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        sync(dev)
        t0 = time.perf_counter()
        for s in range(run_steps):
            opt.param_groups[0]["lr"] = lr_at(s, S, o, o.lr)
            losses[s] = self._step(s, opt, scaling)
        sync(dev)
        sec = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(dev) - self.held) / 2**20 if self.cuda else None
        return dict(seconds=sec, steps=run_steps, losses=losses.cpu().double().numpy(),
                    peak_mem_mib=peak)


def _hf_baseline(sess: Session, o: LLMOptions, steps: int, warmup: int = 5) -> dict[str, Any]:
    """The plain eager loop: transformers' LlamaForCausalLM (:func:`_hf_model`), torch AdamW
    (fused on CUDA), the run's precision (fp16 with GradScaler) and clipping. Example
    batching (what the bench runs it for): one example a step (the paper's batch 1), the
    tokens of ``loss_tokens`` scored; packed options: one padded batch of 16 examples a step,
    the answer tokens scored (no longer benchmarked: :class:`HFPeer` trains on the arm's own
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


def matmul_floor(shape, slots: float, scored: float, device: torch.device,
                 dtype: torch.dtype = torch.bfloat16, reps: int = 10) -> dict[str, float]:
    """Seconds a training step spends in its matrix products alone: each linear layer of the
    decoder at ``slots`` token rows (the packed step's slots, padding included: what a loop on
    packed rows multiplies), the LM head at ``scored`` rows (the step's mean scored tokens),
    each as its forward product and the two of its backward (input and weight gradients),
    ``torch.mm`` on random ``dtype`` operands of those shapes on ``device``, the median of
    ``reps`` timings per shape (CUDA events on a GPU), summed over the layers.

    No attention, norms, activations, optimizer step or launch gaps are counted, so no loop
    that runs these products with these kernels steps faster: ``real tokens per step /
    seconds`` bounds its tokens/s from above. Returns ``seconds``, ``flops`` (of the products
    counted: equals :meth:`LlamaShape.train_flops` without attention, at these rows) and
    ``tflops`` (their rate)."""
    s = shape
    D, q = s.hidden_size, s.num_heads * s.head_dim
    qkv = q + 2 * s.num_kv_heads * s.head_dim
    M, Mh = max(1, round(slots)), max(1, round(scored))
    layer = [(M, D, qkv), (M, q, D), (M, D, 2 * s.intermediate_size), (M, s.intermediate_size, D)]
    cuda = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)

    def one(m: int, k: int, n: int) -> float:
        x = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
        w = torch.randn(n, k, device=device, dtype=dtype, generator=gen)
        g = torch.randn(m, n, device=device, dtype=dtype, generator=gen)

        def products():
            x @ w.t()   # forward
            g @ w       # input gradient
            g.t() @ x   # weight gradient

        products()
        times = []
        for _ in range(reps):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                products()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                products()
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    sec = s.num_layers * sum(one(*mkn) for mkn in layer) + one(Mh, D, s.vocab_size)
    flops = 6.0 * (s.num_layers * sum(m * k * n for m, k, n in layer) + Mh * D * s.vocab_size)
    return dict(seconds=sec, flops=flops, tflops=flops / sec / 1e12)


def _peak_mib(dev: torch.device) -> float | str:
    # peak allocated memory since the last reset, MiB ("" on a CPU)
    return round(torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else ""


# kernel name -> category, the first pattern that matches (re.search); the order matters:
# cuDNN's attention kernels carry "wgmma" in their names (cudnn_generated_..._sdpa_sm90_
# flash_bprop_wgmma...), Inductor's fused loss kernels start triton_red_fused__log_softmax
KERNEL_CATEGORIES = (
    ("attention", r"flex_attention|fmha|flash|attention|sdpa|cudnn"),
    ("matrix products", r"nvjet|gemm|cutlass|xmma|cublas|wgmma|s16816|splitKreduce"),
    ("optimizer and clipping", r"adamw_kernel|sumsq_kernel|multi_tensor|FusedAdam|fused_adam"),
    ("loss", r"log_softmax|cross_entropy|nll_loss"),
    ("Inductor's elementwise kernels and norms", r"^triton_(poi|red|per)_"),
    ("other Triton kernels", r"^triton"),
    ("copies and fills", r"(?i)memcpy|memset|copy|fill"),
)


def kernel_category(name: str) -> str:
    """The :data:`KERNEL_CATEGORIES` entry of a GPU kernel's name (``other`` for none)."""
    return next((c for c, pat in KERNEL_CATEGORIES if re.search(pat, name)), "other")


def _per_kernel(kernels: list[tuple[str, float]]) -> dict[str, list[float]]:
    # each kernel name's [microseconds, launches], in the order the names first came
    tot: dict[str, list[float]] = {}
    for name, us in kernels:
        row = tot.setdefault(name, [0.0, 0])
        row[0] += us
        row[1] += 1
    return tot


def kernel_categories(kernels: list[tuple[str, float]], steps: int) -> list[dict[str, Any]]:
    """GPU kernels ``(name, microseconds)`` by :data:`KERNEL_CATEGORIES` (``other`` for no
    match): per category the milliseconds a step, its share of all kernel time, the launches a
    step and its largest kernel (by total time); the categories in descending time."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    total = sum(us for _, us in kernels) or 1.0
    cats: dict[str, dict[str, Any]] = {}
    for name, (us, launches) in _per_kernel(kernels).items():
        cat = kernel_category(name)
        row = cats.setdefault(cat, dict(category=cat, us=0.0, launches=0, top=0.0))
        row["us"] += us
        row["launches"] += launches
        if us > row["top"]:
            row["top"], row["largest"] = us, name
    return [dict(category=r["category"], ms_per_step=r["us"] / steps / 1e3,
                 share=r["us"] / total, launches_per_step=r["launches"] / steps,
                 largest=r["largest"]) for r in sorted(cats.values(), key=lambda r: -r["us"])]


def _kernel_table(kernels: list[tuple[str, float]], steps: int, wall_s: float) -> str:
    # the markdown of kernel_categories, with the kernels' sum against the wall clock
    rows = kernel_categories(kernels, steps)
    busy = sum(us for _, us in kernels) / 1e6
    lines = [f"GPU kernels by category over {steps} step(s): {busy / steps * 1e3:.2f} ms of "
             f"kernels a step against {wall_s / steps * 1e3:.2f} ms of wall clock a step "
             f"under the profiler ({busy / wall_s:.0%} busy, kernels of concurrent streams "
             "counted each)", "",
             "| category | ms a step | share | launches a step | largest kernel |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {r['category']} | {r['ms_per_step']:.2f} | {r['share']:.1%} | "
              f"{r['launches_per_step']:g} | `{r['largest'][:90]}` |" for r in rows]
    return "\n".join(lines) + "\n"


def _profile(fn, dev: torch.device, path: Path, steps: int = 1) -> Path:
    """Run ``fn()`` (``steps`` steps) under torch.profiler (CPU and CUDA activities on a GPU,
    CPU only on a CPU) and write the operators' key averages to ``path``: sorted by self CUDA
    time on a GPU, by self CPU time on a CPU, the first 40 rows; on a GPU followed by its
    kernels' time by category (:func:`kernel_categories`; annotations and runtime calls,
    which overlap the kernels, are not counted)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        wall = time.perf_counter() - t0
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by=key, row_limit=40) + "\n"
    if cuda:
        kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                   if e.device_type != torch.autograd.DeviceType.CPU
                   and not getattr(e, "is_user_annotation", False)
                   and getattr(e, "activity_type", None) in (None, "kernel", "gpu_memcpy",
                                                             "gpu_memset")]
        text += "\n" + _kernel_table(kernels, steps, wall)
        write_kernels_csv(kernels, steps, path.with_name(path.stem + "_kernels.csv"))
    path.write_text(text)
    return path


def write_kernels_csv(kernels: list[tuple[str, float]], steps: int, path: Path) -> Path:
    """A profile's GPU kernels, one row per name (its category, microseconds over all
    ``steps`` and launches), longest first: the data behind :func:`kernel_categories`'s
    table, for another grouping of the same kernels."""
    tot = _per_kernel(kernels)
    rows = [dict(kernel=n, category=kernel_category(n), us=round(v[0], 3), launches=v[1],
                 steps=steps) for n, v in sorted(tot.items(), key=lambda kv: -kv[1][0])]
    write_csv(path, ("kernel", "category", "us", "launches", "steps"), rows)
    return path


def _segments(res: list[dict[str, Any]]) -> tuple[float, int, str]:
    # a row's segments: the median seconds, the steps of one and the spread (max − min) / median
    sec = np.array([r["seconds"] for r in res])
    med = float(np.median(sec))
    return med, res[0]["steps"], f"{(sec.max() - sec.min()) / med:.1%}" if med > 0 else ""


def _ratio_text(r: float) -> str:
    # the perturbation ratio of a segment, "untracked" when no step of it tracked one (a
    # segment shorter than [llm].ratio_every)
    return "untracked" if r != r else f"{r:.3g}"


def _paired(res: list[dict[str, Any]], ref: list[dict[str, Any]] | None) -> dict[str, Any]:
    # a variant's rounds against adamw's of the same rounds: the median and range of
    # adamw seconds / variant seconds (its tokens/s ratio, paired within each round)
    if not ref or len(ref) != len(res):
        return {}
    r = np.array([a["seconds"] / v["seconds"] for a, v in zip(ref, res)])
    return dict(paired_ratio=round(float(np.median(r)), 4),
                paired_range=f"{r.min():.3f}–{r.max():.3f}")


def benchmark(o: LLMOptions, variants: Sequence[str], baseline_steps: int,
              out_dir: Path, lrs: Sequence[float] = (), max_steps: int = 0,
              peer: bool = True, rounds: int = 3, profile: int = 0,
              command: str = "") -> list[dict[str, Any]]:
    """Measure the arm's throughput; write ``throughput_bench.csv`` and ``throughput_bench.md``.

    Rows: with packed batching and ``peer``, the compiled Hugging Face peer (:class:`HFPeer`)
    on the arm's own packed steps, timed over the same steps as the arm's loop, and the check
    that it and the arm compute the same loss of step 0 from the base weights, and the
    matrix-product floor (:func:`matmul_floor`: the step's products alone at its shapes, an
    upper bound of any such loop's tokens/s, with its ratio to the peer); with example
    batching, the plain HF loop at batch 1 (:func:`_hf_baseline`, ``baseline_steps`` steps
    after 5 warm-up steps; CUDA only); then the arm's loop per variant (seed 0 data order, no
    evaluation), each with its tokens/s, ratio to adamw, ratio to the peer (``ratio_to_peer``:
    tokens/s over the peer's, same run, same rows), seconds per epoch and their relative cost
    against adamw's (C4), optimizer share, MFU and peak memory; then the greedy decoding of
    ``eval_questions`` test questions and the test loss (seconds). On CUDA the compiled flex
    path is checked against the dense-mask SDPA reference on one batch first (packed).

    Interleaved rounds: the timed steps of a row (the first ``max_steps`` steps of the epoch,
    0: all of them) are split into ``rounds`` segments of n = max(1, N // rounds) steps, each
    the first n steps of the epoch from the base weights (the same work every time). A round
    runs every row once (the peer, then each variant), the order rotating by one row per round,
    so that the device's drift falls on every row alike; ``rounds = 0`` runs as many rounds as
    there are rows, so that every row is timed once in every position of a round (a balanced
    rotation: no row always follows another, nor always comes first). A row's figures: the
    median segment's seconds (tokens/s, step time, the epoch's seconds extrapolated as seconds
    / n × steps, MFU), the median optimizer share, ``spread`` = (max − min) / median of the
    segment seconds, the mean training loss and skipped steps of the first segment, the largest
    peak memory of the segments. Before the rounds, one untimed rehearsal round runs every row
    over the same n steps, so that what is done once only in them (a one-time cost of 5.4 s
    inside steps 3 to n on the H200) is not timed. The peer stays resident during the arm's
    segments: its resident memory (:attr:`HFPeer.resident_mib`) is subtracted from the arm
    rows' peak, which is then what the arm alone holds. Compilation is outside the rounds, in
    ``warmup_s``. Besides the ratio of the median timings (``ratio_to_adamw``), each variant's
    ``paired_ratio`` is the median over rounds of adamw's seconds over the variant's in the
    same round (the same steps: a ratio of tokens/s, paired within a round, so drift between
    rounds cancels), and ``paired_range`` its smallest and largest round.

    Args:
        o: the options.
        variants: variant ids, one arm row each.
        baseline_steps: example batching: steps of the plain HF loop (0: none).
        out_dir: where the CSV, the markdown and the profiles go.
        lrs: extra adamw runs at these learning rates after the rounds, each over the first
            ``max_steps`` steps once, not interleaved (mean training loss and test loss: the
            lr check).
        max_steps: time only the first N steps of the epoch (0: all), e.g. for the paper's
            batch-1 protocol at the Llama-3.2-1B shape, whose 7,473 steps would take long::

                python -m ablations.llm bench --config ablations/configs/llm-paper.toml \\
                    --set model=random:1b --set tokenizer=smollm2-135m-instruct \\
                    --variants adamw,sin-l0.5 --steps 500 --baseline-steps 50

            (``random:1b``: the Llama-3.2-1B shape with random weights; SmolLM2's tokenizer
            gives GSM8K examples of realistic token lengths, the byte tokenizer about four
            times longer.)
        peer: packed batching: time the HF peer.
        rounds: the interleaved rounds (>= 1); 1 times each row once, one after another.
        profile: after the rounds, profile this many steps of the adamw arm loop and of the
            peer with torch.profiler (:func:`_profile`) into ``profile_arm.txt`` and
            ``profile_peer.txt`` (0: no profile).
        command: the command line that called it, for the report's ``## Machine`` section
            (with the commit, the device and the versions).

    Compilation: one static graph per length bucket (8 with ``bucket = 64``); ``--set
    bucket=0`` compiles one dynamic-shape graph instead, ``--set bucket=256`` three static
    ones, so the two can be compared.

    One FLOP count serves every row's MFU: :meth:`qsgd.models.llama.LlamaShape.train_flops`
    of the epoch (the decoder on every real token, the LM head on the scored tokens,
    document-causal attention), whatever a loop computes beyond it (the peer's LM head runs on
    every position, its SDPA over the dense mask), so MFU ratios equal tokens/s ratios.
    """
    import gc

    if rounds < 0:
        raise ValueError(f"rounds must be >= 1, or 0 for one per row, got {rounds}")
    seeds = derived_seeds(0)
    sess = open_session(o, seeds["init"])
    dev = sess.device
    cuda = dev.type == "cuda"
    b = epoch_batches(sess, seeds["order"])
    fig = epoch_figures(b, o)
    S = int(fig["steps"])
    N = min(S, max_steps) if max_steps else S
    per_example = o.per_example
    if rounds == 0:  # balanced: every row in every position once
        rounds = len(variants) + (1 if peer and not per_example else 0)
    n = max(1, N // rounds)
    capacity = getattr(b, "capacity", 0)
    step_text = (f"one example a step (bucket {o.bucket}, {len(b.shapes)} shapes)" if per_example
                 else f"{o.tokens_per_batch} tokens a step")
    peak = peak_flops(dev)
    flops = sess.base.shape.train_flops(fig["real"], fig["head"], fig["attn_pairs"])
    rows: list[dict[str, Any]] = []
    name = device_name(dev)
    timed = (f", first {n} step{'s' * (n > 1)}" if n < S else "") + (f", median of {rounds} rounds"
                                                       if rounds > 1 else "")
    print(f"[bench] {name}: {o.model}, {S} steps, {step_text}, {o.effective_precision}, "
          f"{fig['real']:.0f} real tokens ({fig['real'] / fig['slots']:.1%} of the slots), "
          f"{fig['scored']:.0f} scored; {rounds} rounds of {n} steps a row", flush=True)
    arm0 = None
    if not per_example:
        reset_weights(sess)
        with torch.no_grad():
            args = (b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0], b.n_loss[0])
            kw = attention_args(sess, b, 0)
            arm0 = float(sess.loss_fn(*args, **kw))
            if kw:
                impl = sess.attn_impl
                ref = float(sess.model.loss(*args))
                print(f"[bench] loss of batch 0: {impl} (compiled) {arm0:.5f}, dense SDPA "
                      f"{ref:.5f}", flush=True)
                rows.append(dict(config=f"check: {impl} vs dense-mask SDPA loss, batch 0",
                                 value=f"{arm0:.5f} vs {ref:.5f}", device=name))

    def timing(seconds: float, steps: int) -> dict[str, Any]:
        # the figures every timed row shares; the epoch's seconds extrapolated by steps
        epoch_s = seconds * S / steps
        return dict(tokens_per_s=round(fig["real"] / epoch_s), epoch_s=round(epoch_s, 2),
                    step_ms=round(1e3 * seconds / steps, 2),
                    mfu=round(flops / epoch_s / peak, 4) if peak else "")

    hf = HFPeer(sess, o, b) if peer and not per_example else None
    floor = None
    if not per_example:  # the step's matrix products alone, at its shapes: a speed bound
        slots = int(b.ids.shape[1] * b.ids.shape[2])
        scored = fig["scored"] / S
        floor_dtype = o.effective_precision
        floor = matmul_floor(sess.base.shape, slots, scored, dev,
                             {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
                                 floor_dtype, torch.float32))
    resident = hf.resident_mib if hf is not None and hf.resident_mib is not None else 0.0
    if hf is not None and cuda:
        print(f"[bench] the peer holds {resident:.0f} MiB between its timings (subtracted "
              "from the arm's peak memory)", flush=True)
    if baseline_steps and per_example and cuda:
        base = _hf_baseline(sess, o, baseline_steps)
        base_row = dict(config=f"HF LlamaForCausalLM, batch 1, SDPA, eager, AdamW, "
                               f"{o.effective_precision}",
                        variant="adamw", tokens_per_s=round(base["tokens_per_s"]),
                        step_ms=round(base["step_ms"], 2), device=name)
        print(f"[bench] HF baseline: {base['tokens_per_s']:.0f} tokens/s", flush=True)
    else:
        base_row = None
    arms = [parse_variant(vid) for vid in variants]
    warm: dict[str, float] = {}
    for v in arms:  # every variant's kernels compiled before the rounds
        t_warm = time.perf_counter()
        warm_up(sess, b, v, o)
        warm.setdefault(v.id, time.perf_counter() - t_warm)
    keys: list[Any] = (["peer"] if hf is not None else []) + list(range(len(arms)))

    def segment(k) -> dict[str, Any]:
        # one row's first n steps of the epoch from the base weights, timed
        if k == "peer":
            return hf.time(n)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        res = train_epoch(sess, b, arms[k], o.lr, seeds["noise"], o, max_steps=n)
        # CUDA graphs keep their activations in pools the allocator's peak leaves out:
        # no figure rather than a wrong one
        res["peak_mem_mib"] = ((torch.cuda.max_memory_allocated(dev) / 2**20 - resident)
                               if cuda and not o.cuda_graphs else None)
        return res

    # an untimed rehearsal round first, of the rounds' own n steps a row: what the first
    # segment that runs them does once then falls outside the timed rounds (on the H200 the
    # first arm row's first segment took 5.4 s longer, at both shapes, also after a rehearsal
    # of 3 steps: a one-time cost inside steps 3 to n)
    t_reh = time.perf_counter()
    for k in keys:
        segment(k)
    print(f"[bench] rehearsal ({n} steps a row, untimed): "
          f"{time.perf_counter() - t_reh:.1f} s", flush=True)
    # the rounds: every row once a round, the order rotating by one row per round
    segs: dict[Any, list[dict[str, Any]]] = {k: [] for k in keys}
    for r in range(rounds if keys else 0):
        turn = r % len(keys)
        for k in keys[turn:] + keys[:turn]:
            segs[k].append(segment(k))
        print(f"[bench] round {r + 1}/{rounds}, step ms: " + ", ".join(
            f"{'peer' if k == 'peer' else arms[k].id} {1e3 * segs[k][-1]['seconds'] / n:.2f}"
            for k in keys[turn:] + keys[:turn]), flush=True)

    def peak_of(res: list[dict[str, Any]]) -> float | str:
        mem = [x["peak_mem_mib"] for x in res if x["peak_mem_mib"] is not None]
        return round(max(mem)) if mem else ""

    peer_tps = None
    if hf is not None:
        res = segs["peer"]
        sec, steps, spread = _segments(res)
        t = timing(sec, steps)
        peer_tps = fig["real"] * steps / S / sec
        loss0 = res[0]["losses"][0]
        mode = "torch.compile" if o.compile else "eager"
        if o.compile and o.compile_mode != "default":  # the peer is compiled as a user would
            mode += f" (default mode; the arm's: {o.compile_mode})"
        rows.append(dict(config="check: HF peer vs arm loss, batch 0, base weights",
                         value=f"{loss0:.5f} vs {arm0:.5f}", device=name))
        rows.append(dict(config=f"{PEER}, SDPA (document mask from position_ids), {mode}, "
                                f"{step_text}, {o.effective_precision}, torch AdamW"
                                f"{' (fused)' if cuda else ''}{timed}",
                         variant="adamw", **t, ratio_to_peer=1.0, spread=spread,
                         mean_train_loss=round(float(np.mean(res[0]["losses"])), 5),
                         peak_mem_mib=peak_of(res), warmup_s=round(hf.warmup_s, 1),
                         device=name))
        print(f"[bench] HF peer ({mode}): {peer_tps:.0f} tokens/s, step {t['step_ms']} ms "
              f"(spread {spread}), loss of batch 0 {loss0:.5f} (arm {arm0:.5f})", flush=True)
    if base_row is not None:
        rows.append(base_row)
    if floor is not None:
        t = timing(floor["seconds"], 1)
        rows.append(dict(
            config=f"floor: the step's matrix products alone (torch.mm, {floor_dtype}, the "
                   f"arm's shapes: the decoder on {slots} token slots, the LM head on "
                   f"{scored:.0f} scored tokens, forward and both backward products; no "
                   "attention, norms, optimizer or launch gaps): no loop running them is faster",
            **t, ratio_to_peer=round(t["tokens_per_s"] / peer_tps, 4) if peer_tps else "",
            value=f"{floor['tflops']:.0f} TFLOP/s", device=name))
        print(f"[bench] matrix-product floor: {t['tokens_per_s']} tokens/s, step "
              f"{t['step_ms']} ms, {floor['tflops']:.0f} TFLOP/s", flush=True)
    graphs = f" {o.compile_mode}" if o.compile and o.compile_mode != "default" else ""
    impl = sess.attn_impl
    if impl == "flex" and (o.flex_block != 128 or o.flex_kernel):
        impl += f" block {o.flex_block}" + (f" {o.flex_kernel}" if o.flex_kernel else "")
    clip = ", fused clip" if o.fused_clip else ""
    loop = f"arm loop ({impl}, compile={o.compile}{graphs}{clip}, {step_text}, " \
           f"{o.effective_precision}{timed}"
    med = [_segments(segs[k]) for k in range(len(arms))]
    ref = next((k for k, v in enumerate(arms) if v.id == "adamw"), None)
    ref_epoch = med[ref][0] * S / med[ref][1] if ref is not None else None
    ref_tps = fig["real"] / ref_epoch if ref_epoch else None

    def arm_row(vid, lr, res, sec, steps, config, mem, warm_s, **extra):
        t = timing(sec, steps)
        epoch_s = sec * S / steps
        tps = fig["real"] / epoch_s
        row = dict(config=config, variant=vid, **t, **extra,
                   ratio_to_adamw=round(tps / ref_tps, 4) if ref_tps else "",
                   **_paired(res, segs[ref] if ref is not None and vid != "adamw" else None),
                   ratio_to_peer=round(tps / peer_tps, 4) if peer_tps else "",
                   cost_vs_adamw=f"{epoch_s / ref_epoch - 1:+.2%}" if ref_epoch else "",
                   mean_train_loss=round(float(np.mean(res[0]["losses"])), 5),
                   skipped_steps=res[0]["skipped_steps"], peak_mem_mib=mem,
                   warmup_s=round(warm_s, 1), device=name)
        rows.append(row)
        print(f"[bench] {vid} lr {lr:g}: {tps:.0f} tokens/s, {epoch_s:.1f} s an epoch "
              f"({row['cost_vs_adamw'] or 'reference'}), spread {row.get('spread', '-')}, "
              f"ratio to the peer {row['ratio_to_peer'] or '-'}, optimizer share "
              f"{row['optimizer_share']:.3f}, mean loss {row['mean_train_loss']}, perturbation "
              f"ratio {_ratio_text(res[0]['perturbation_ratio'])} {row.get('value', '')}",
              flush=True)
        return row

    for k, v in enumerate(arms):
        sec, steps, spread = med[k]
        share = float(np.median([x["optimizer_share"] for x in segs[k]]))
        arm_row(v.id, o.lr, segs[k], sec, steps, f"{loop}, lr {o.lr:g})", peak_of(segs[k]),
                warm[v.id], spread=spread, optimizer_share=round(share, 4))
    out_dir.mkdir(parents=True, exist_ok=True)
    adamw = parse_variant("adamw")  # the profile's and the lr checks'
    if profile:
        warm_up(sess, b, adamw, o)
        paths = [_profile(lambda: train_epoch(sess, b, adamw, o.lr, seeds["noise"], o,
                                              max_steps=profile), dev,
                          out_dir / "profile_arm.txt", profile)]
        if hf is not None:
            paths.append(_profile(lambda: hf.time(profile), dev, out_dir / "profile_peer.txt",
                                  profile))
        print(f"[bench] profiles of {profile} steps: " + ", ".join(map(str, paths)), flush=True)
    if hf is not None:  # the peer's model is dropped: the lr checks' peak memory is the arm's
        del hf
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
            print(f"[bench] after the peer: {torch.cuda.memory_allocated(dev) / 2**20:.0f} MiB "
                  "allocated (the session's)", flush=True)
    for lr in lrs:
        t_warm = time.perf_counter()
        warm_up(sess, b, adamw, o)
        warm_s = time.perf_counter() - t_warm
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        res = train_epoch(sess, b, adamw, lr, seeds["noise"], o, max_steps=max_steps)
        arm_row("adamw", lr, [res], res["seconds"], res["steps"], f"lr check, lr {lr:g}",
                _peak_mib(dev), warm_s, optimizer_share=round(res["optimizer_share"], 4),
                value=f"test loss {evaluate_loss(sess, capacity):.5f}")
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
    write_csv(out_dir / "throughput_bench.csv", BENCH_COLUMNS, rows)
    lines = dict_table(rows, BENCH_COLUMNS[:-1])
    peer_text = (
        " The peer (the `HF peer` row) is the loop a user would write instead: transformers' "
        "LlamaForCausalLM with SDPA attention, the same shape and base weights, "
        + ("torch.compile, " if o.compile else "eager, ")
        + (f"{o.effective_precision} autocast over float32 weights"
           if o.effective_precision != "fp32" else "float32 without autocast")
        + ", torch AdamW"
        + (" (fused)" if cuda else "")
        + " with the arm's lr schedule, weight decay and clipping, on the arm's own packed "
        "rows (position_ids restarting per example and no attention mask, from which "
        "transformers builds the same document-causal mask), labels −100 outside the "
        "answer tokens the arm scores, so both compute one loss (the check row: step 0 "
        "from the base weights); ratio_to_peer = tokens/s over the peer's. The padded "
        "batches of 16 that this bench timed before are not run: eager and two thirds "
        "padding, they were no peer a reader would compare with."
        if peer_tps else "")
    rounds_text = (
        (f" Each row is timed in {rounds} interleaved rounds: a round runs every row once"
         + (" (the peer, then each variant)" if peer_tps else "")
         + ", the order rotating by one row per round so that the device's drift falls on "
         "every row alike"
         + (" (as many rounds as rows: every row once in every position)"
            if rounds == len(segs) else "")
         + f"; each round times the first {n} step{'s' * (n > 1)} of the epoch "
         "from the base weights (the same work every time). A row's figures come from its "
         f"median round (optimizer_share: the median), after one untimed rehearsal round "
         f"of {n} step{'s' * (n > 1)} a row (what is done once only in "
         "these steps falls there); spread = (max − min) / median of its "
         f"{rounds} timings; peak_mem_mib: the largest of its rounds; mean_train_loss: the "
         "mean training loss over the timed steps of its first round. paired_ratio: the "
         "median over rounds of adamw's seconds over the variant's in the same round (a "
         "tokens/s ratio paired within rounds, which drift between rounds does not move); "
         "paired_range: its smallest and largest round."
         if rounds > 1 else " Each row is timed once, one after another; mean_train_loss: "
         "the mean training loss over its timed steps.")
        + (f" The peer's model stays resident while the arm's loop is timed: its "
           f"{resident:.0f} MiB (allocated after its build and warm-up, measured once) are "
           "subtracted from the arm rows' peak, which is what the arm alone holds."
           if peer_tps and cuda else "")
        + (" The lr check rows run once each after the rounds, not interleaved, over "
           + (f"the first {N} steps" if N < S else "the whole epoch") + "." if lrs else ""))
    (out_dir / "throughput_bench.md").write_text(
        f"# LLM arm throughput benchmark\n\nDevice: {name}. Model: {o.model} "
        f"({sess.base.shape.n_params() / 1e6:.1f}M parameters), {o.effective_precision}. One "
        f"epoch = {fig['real']:.0f} non-padding tokens in {S} steps, {step_text}"
        + (f"; the first {n} step{'s' * (n > 1)} of the epoch timed, the epoch's seconds "
           "extrapolated by steps" if n < S else "")
        + ". tokens_per_s counts non-padding tokens over the "
        "timed loop (compilation excluded, in warmup_s); epoch_s: seconds per epoch, "
        "cost_vs_adamw their relative difference to adamw's; peak_mem_mib: "
        + ("(none for the arm's rows with CUDA graphs, whose pools that peak does not count) "
           if o.cuda_graphs else "")
        + f"torch.cuda.max_memory_allocated over the timed loop (the peer's: above the memory "
        f"the session held before it, the arm's model and base copy); MFU = one FLOP count "
        f"for every row, {flops:.4g} FLOPs an epoch (forward + backward: 6·N per token for "
        f"the decoder's matrices, the LM head on the {fig['head']:.0f} scored tokens only, "
        f"document-causal attention on {fig['attn_pairs']:.4g} query-key pairs; work a loop "
        f"does beyond it is not counted) over time and the dense bf16 peak "
        f"({peak or 'unknown'} FLOP/s)."
        + rounds_text + peer_text
        + (" The `floor` row times the step's matrix products alone (`matmul_floor`: each "
           "linear layer's forward product and both backward ones, torch.mm at the arm's "
           "shapes, the LM head on the mean scored tokens of a step): attention, norms, "
           "activations, the optimizer and launch gaps cost more on top, so no loop that runs "
           "these products with these kernels reaches its tokens/s; its ratio_to_peer is the "
           "most any such loop can be ahead of the peer." if floor is not None else "")
        + "\n\n![tokens per second of every timed row](throughput_bench.png)\n\n"
        + "\n".join(lines) + "\n\n" + machine_section(name, command) + "\n")
    from .bench_plot import plot_bench

    png = plot_bench(out_dir / "throughput_bench.csv", out_dir / "throughput_bench.png",
                     f"{o.model} on {name}, {step_text}")
    if png:
        print(f"[bench] wrote {png}", flush=True)
    return rows


def machine_section(device: str, command: str = "") -> str:
    """The report's ``## Machine`` section: the code's commit (``-dirty`` for uncommitted
    changes), the command that made it (when given), the device, and the versions the
    timings depend on."""
    from ..provenance import machine_info

    info = machine_info(("transformers",),
                        command=f"`{command}`" if command else "(called from Python)",
                        device=device, cuda=str(torch.version.cuda))
    return "## Machine\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items())


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
