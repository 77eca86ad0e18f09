"""The LLM arm's training loop and evaluation, and its entry point :func:`run`.

One run: the session's base weights (:mod:`ablations.llm.session`), one epoch over the
training examples of the run seed's data order, packed into rows (:mod:`ablations.llm.packing`)
or one a step (:mod:`ablations.llm.examples`), with :class:`qsgd.SuperpositionalAdamW`, the
options' lr schedule and precision (:mod:`ablations.llm.precision`), then the test loss and the
greedy exact match of the session's task (:mod:`ablations.llm.data`). The loop knows no data
set: a task only supplies the examples and the scoring of a completion.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qsgd import SuperpositionalAdamW, parse_variant

from ..seeds import derived_seeds
from .examples import RECOMPILE_LIMIT, ExampleBatches
from .generate import greedy_generate
from .options import LLMOptions, lr_at
from .packing import DeviceBatches
from .precision import LossScaling
from .session import (
    Session,
    device_name,
    epoch_batches,
    eval_batches,
    open_session,
    peak_flops,
    sync,
)

__all__ = ["run", "train_epoch", "reset_weights", "warm_up", "evaluate_loss",
           "evaluate_losses", "evaluate_exact_match", "recorded_losses", "epoch_figures",
           "attention_args"]


def _step_loss(sess: Session, b: DeviceBatches | ExampleBatches, s: int
               ) -> tuple[Tensor, Tensor]:
    """Step s's trained-on loss (with its graph) and the detached losses recorded for it:
    packed, ``[loss]``, the mean answer-token loss over all ranks' scored tokens (b.n_loss is
    global); per example, ``[all-token loss, answer loss]``. With CUDA graphs
    (``compile_mode``) each call begins a new step of the graphs' memory pool: the previous
    step's outputs are consumed by then."""
    if sess.opts.cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    if sess.opts.per_example:
        return sess.example_fn(b.ids[s], b.tgt[s], b.ans[s])
    loss = sess.loss_fn(b.ids[s], b.pos[s], b.doc[s], b.loss_idx[s], b.loss_tgt[s], b.n_loss[s],
                        **attention_args(sess, b, s))
    return loss, loss.detach().reshape(1)


def attention_args(sess: Session, b: DeviceBatches, s: int) -> dict[str, Any]:
    """The attention keywords of packed step s for ``model.loss``: its FlexAttention block mask
    (the mask_mod's id buffer then holds the step's example ids), or its segment offsets for
    variable-length attention, or none (the dense-mask SDPA reference)."""
    if b.block_masks is not None:
        sess.flex.buf.copy_(b.doc[s])  # the mask_mod reads this step's example ids
        return {"block_mask": b.block_masks[s]}
    if b.cu_seqlens is not None:
        return {"cu_seqlens": b.cu_seqlens[s]}
    return {}


def recorded_losses(b: DeviceBatches | ExampleBatches, o: LLMOptions) -> tuple[str, ...]:
    """Names of the per-step losses :func:`_step_loss` records, in its order."""
    return ("all", "answer") if o.per_example else (o.loss_tokens,)


def epoch_figures(b: DeviceBatches | ExampleBatches, o: LLMOptions) -> dict[str, float]:
    """Sizes of an epoch of batches: steps, real (non-padding) tokens, token slots, scored
    tokens of the trained-on loss, tokens the LM head runs on (packed: the scored ones; per
    example: every real one, for the all-token loss) and causal attention pairs Σ n(n+1)/2."""
    if o.per_example:
        scored = b.n_all if o.loss_tokens == "all" else b.n_answer
        real = float(b.n_real.sum())
        return dict(steps=b.steps, real=real, slots=float(b.slots), scored=float(scored.sum()),
                    head=real, attn_pairs=b.attn_pairs)
    p = b.packed
    return dict(steps=p.steps, real=float(p.n_real), slots=float(p.ids.size),
                scored=float(p.n_loss.sum()), head=float(p.n_loss.sum()),
                attn_pairs=p.attn_pairs)


def _warm_key(b: DeviceBatches | ExampleBatches, o: LLMOptions) -> tuple:
    return tuple(b.shapes) if o.per_example else (b.capacity,)


def reset_weights(sess: Session) -> None:
    """Copy the base weights back into the model and drop the gradients: each run starts
    from the same weights."""
    with torch.no_grad():
        torch._foreach_copy_(list(sess.model.parameters()), sess.base_params)
    for p in sess.model.parameters():
        p.grad = None


def _allreduce_grads(params: list[Tensor]) -> None:
    # one flat all-reduce (sum: each rank's loss is its share of the global mean)
    import torch.distributed as dist

    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    torch._foreach_copy_(grads, [c.view_as(g) for c, g in
                                 zip(flat.split([g.numel() for g in grads]), grads)])


def _make_optimizer(params, variant, lr: float, o: LLMOptions, noise_seed: int):
    # nonfinite="off": a non-finite gradient shows in the loss; the check would synchronise
    return SuperpositionalAdamW(params, lr=lr, weight_decay=o.weight_decay, seed=noise_seed,
                                bias_correction=o.bias_correction, nonfinite="off",
                                **variant.optimizer_kwargs())


def warm_up(sess: Session, b: DeviceBatches | ExampleBatches, variant, o: LLMOptions) -> None:
    """Compile the step (every shape of ``b``: one per example bucket) and the optimizer's
    kernels outside the timed loop; weights unchanged (lr = 0 makes every update exactly
    zero) and reset afterwards anyway."""
    key = (variant.id, _warm_key(b, o))
    if key in sess.warm:
        return
    if o.compile and sess.device.type == "cuda" and sess.dist.world == 1 and not sess.warm:
        # this process's first compilation of the step's graphs: the first process of the
        # host compiles them alone, the others then load them from the cache side by side
        # (a data-parallel group skips the gate: its ranks meet in collectives while warming)
        from .compile_gate import first_compile

        tag = (torch.__version__, o.model, o.tokenizer, o.max_len, o.tokens_per_batch,
               o.batching, o.bucket, o.effective_precision, o.loss_tokens, o.attn_impl,
               o.compile_mode, o.compile_scope,
               tuple(sorted(_warm_key(b, o))))  # the shapes, not their order
        first_compile(tag, lambda: _warm_steps(sess, b, variant, o))
    else:
        _warm_steps(sess, b, variant, o)
    sess.warm.add(key)


def _warm_steps(sess: Session, b: DeviceBatches | ExampleBatches, variant,
                o: LLMOptions) -> None:
    # one step of every shape at lr 0, then the base weights back (warm_up's work)
    params = list(sess.model.parameters())
    opt = _make_optimizer(params, variant, 0.0, o, 0)
    scaling = LossScaling(o.effective_precision, sess.device, o.fused_clip)
    if o.per_example:
        first = {}
        for s, L in enumerate(b.lengths):
            first.setdefault(L, s)
        steps = [0, *first.values()]
    else:
        steps = [0, 0]
    if o.cuda_graphs:  # CUDA-graph trees record a shape on its second call: two of each
        steps = [s for s in dict.fromkeys(steps) for _ in range(2)]
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        for s in steps:
            loss, _ = _step_loss(sess, b, s)
            scaling.backward(loss)
            if sess.dist.world > 1:
                _allreduce_grads(params)
            scaling.clip(opt, params, o.clip_grad or float("inf"))
            scaling.step(opt)
            opt.zero_grad(set_to_none=True)
    del opt
    reset_weights(sess)
    sync(sess.device)


def train_epoch(sess: Session, b: DeviceBatches | ExampleBatches, variant, lr: float,
                noise_seed: int, o: LLMOptions, max_steps: int = 0) -> dict[str, Any]:
    """One epoch over ``b`` from the base weights.

    Args:
        sess: the session (model, compiled loss, device, data-parallel group).
        b: this rank's batches (:func:`ablations.llm.session.epoch_batches`).
        variant: a :class:`qsgd.Variant` (the optimizer's settings).
        lr: the peak learning rate; the step's rate is :func:`ablations.llm.options.lr_at`.
        noise_seed: the optimizer's noise seed.
        o: the options (schedule, clipping, weight decay, precision, ratio sampling).
        max_steps: stop after this many steps (0: the whole epoch); the schedule is still
            the epoch's (the benchmark times the first steps of an epoch this way).

    The loop reads nothing on the host: the losses are written into a device buffer and
    read once after the epoch (fp16 loss scaling reads one flag a step,
    :mod:`ablations.llm.precision`).

    Returns a dict: ``losses`` (float64 array of the per-step trained-on losses),
    ``recorded`` (name → float64 array of every recorded per-step loss:
    :func:`recorded_losses`), ``seconds`` (wall time of the loop, the warm-up excluded),
    ``optimizer_share`` (optimizer.step's share of step time; CUDA events on a GPU, host
    clocks on a CPU; steps that track the ratio left out), ``perturbation_ratio``,
    ``skipped_steps`` (fp16 steps skipped for inf/NaN gradients) and ``steps`` (run).
    """
    warm_up(sess, b, variant, o)
    reset_weights(sess)
    params = list(sess.model.parameters())
    opt = _make_optimizer(params, variant, lr, o, noise_seed)
    scaling = LossScaling(o.effective_precision, sess.device, o.fused_clip)
    names = recorded_losses(b, o)
    S, dev = b.steps, sess.device
    run_steps = min(S, max_steps) if max_steps else S
    losses = torch.zeros(run_steps, len(names), dtype=torch.float32, device=dev)
    cuda = dev.type == "cuda"
    ev = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(run_steps)] \
        if cuda else None
    host_opt, host_step = [], []
    tracked = []
    sync(dev)
    t0 = time.perf_counter()
    for s in range(run_steps):
        opt.param_groups[0]["lr"] = lr_at(s, S, o, lr)
        track = o.ratio_every > 0 and ((s + 1) % o.ratio_every == 0 or s == S - 1)
        opt.track_ratio = track
        tracked.append(track)
        h0 = time.perf_counter()
        if cuda:
            ev[s][0].record()
        loss, rec = _step_loss(sess, b, s)
        scaling.backward(loss)
        if sess.dist.world > 1:
            _allreduce_grads(params)
        scaling.clip(opt, params, o.clip_grad)
        h1 = time.perf_counter()
        if cuda:
            ev[s][1].record()
        scaling.step(opt)
        if cuda:
            ev[s][2].record()
        h2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses[s] = rec
        host_opt.append(h2 - h1)
        host_step.append(h2 - h0)
    sync(dev)
    seconds = time.perf_counter() - t0
    keep = [s for s in range(run_steps) if not tracked[s]] or list(range(run_steps))
    if cuda:
        opt_ms = sum(ev[s][1].elapsed_time(ev[s][2]) for s in keep)
        step_ms = sum(ev[s][0].elapsed_time(ev[s][2]) for s in keep)
    else:
        opt_ms = sum(host_opt[s] for s in keep)
        step_ms = sum(host_step[s] for s in keep)
    if sess.dist.world > 1:
        import torch.distributed as dist

        dist.all_reduce(losses)  # each rank holds its share of each step's loss
    table = losses.cpu().double().numpy()
    recorded = {name: table[:, k] for k, name in enumerate(names)}
    return dict(losses=recorded[o.loss_tokens], recorded=recorded, seconds=seconds,
                optimizer_share=opt_ms / step_ms if step_ms > 0 else float("nan"),
                perturbation_ratio=opt.perturbation_ratio(),
                skipped_steps=scaling.skipped_steps, steps=run_steps)


@torch.no_grad()
def evaluate_losses(sess: Session, capacity: int, split: str = "test") -> dict[str, float]:
    """Token-weighted mean losses over the test-loss set (or the validation set), through the
    training step's graph: ``{"answer": ...}`` (the answer tokens), and with example batching
    also ``"all"`` (every token after the first of each example). ``capacity``: the packed
    training batches' loss slots, so that the graph is reused (unused per example)."""
    b = eval_batches(sess, capacity, split)
    if sess.opts.per_example:
        per_step = torch.zeros(b.steps, 2, dtype=torch.float32, device=sess.device)
        with torch.enable_grad(), torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            for s in range(b.steps):
                per_step[s] = _step_loss(sess, b, s)[1]
        table = per_step.cpu().double().numpy()
        return {name: float(table[:, k] @ n) / max(1.0, float(n.sum()))
                for k, (name, n) in enumerate((("all", b.n_all), ("answer", b.n_answer)))}
    total = torch.zeros((), dtype=torch.float64, device=sess.device)
    with torch.enable_grad():  # the training graph, reused without a second compilation
        for s in range(b.steps):
            loss, _ = _step_loss(sess, b, s)
            total += loss.detach().double() * b.n_loss[s].double()
    return {"answer": float(total) / float(b.packed.n_loss.sum())}


def evaluate_loss(sess: Session, capacity: int, split: str = "test") -> float:
    """Token-weighted mean answer-token loss over the test-loss set (or the validation set):
    :func:`evaluate_losses`'s ``"answer"``."""
    return evaluate_losses(sess, capacity, split)["answer"]


def evaluate_exact_match(sess: Session, o: LLMOptions) -> float:
    """Share of the first ``eval_questions`` test questions whose greedy completion the task
    scores as correct (NaN when ``eval_questions`` is 0)."""
    if o.eval_questions == 0:
        return float("nan")
    qs = sess.test_data[:o.eval_questions]
    tok = sess.base.tokenizer
    prompts = tok.encode_prompts([e.question for e in qs])
    sess.model.eval()
    gen = greedy_generate(sess.model, prompts, o.max_new_tokens, tok.eos_id, tok.pad_id,
                          o.eval_batch)
    sess.model.train()
    hits = sum(sess.task.is_correct(tok.decode(g), e.answer) for g, e in zip(gen, qs))
    return hits / len(qs)


def run(spec) -> dict[str, Any]:
    """Fine-tune for one epoch and evaluate; the runner's entry point for arm "llm".

    ``spec`` needs ``variant``, ``seed``, ``lr`` (None or 0: the options' lr) and ``config``
    (the ``[llm]`` table as a dict; ``task`` picks the data set). Returns ``{"metrics",
    "curve", "device"}``; the metrics are listed in :mod:`ablations.llm`.
    """
    o = LLMOptions.from_dict(getattr(spec, "config", None))
    variant = parse_variant(spec.variant)
    seeds = derived_seeds(int(spec.seed))
    lr = float(getattr(spec, "lr", 0) or o.lr)
    sess = open_session(o, seeds["init"])
    b = epoch_batches(sess, seeds["order"])
    res = train_epoch(sess, b, variant, lr, seeds["noise"], o)
    losses = res["losses"]
    S = len(losses)
    tail = max(1, math.ceil(0.05 * S))
    capacity = getattr(b, "capacity", 0)
    t_eval = time.perf_counter()
    test = {"answer": float("nan")}
    val_loss = float("nan")
    if sess.dist.rank == 0:
        test = evaluate_losses(sess, capacity)
        if sess.val_examples:
            val_loss = evaluate_loss(sess, capacity, "val")
        em = evaluate_exact_match(sess, o)
    else:
        em = float("nan")
    eval_seconds = time.perf_counter() - t_eval
    fig = epoch_figures(b, o)
    tokens_per_s = fig["real"] / res["seconds"]
    peak = peak_flops(sess.device)
    flops = sess.base.shape.train_flops(fig["real"], fig["head"], fig["attn_pairs"])
    world = sess.dist.world
    mfu = flops / res["seconds"] / (peak * world) if peak else float("nan")
    per_example = o.per_example
    curve = []
    for lo in range(0, S, o.curve_every):
        point = {"step": min(lo + o.curve_every, S),
                 "train_loss": float(np.mean(losses[lo:lo + o.curve_every]))}
        if per_example:
            for name, values in res["recorded"].items():
                point[f"train_loss_{name}"] = float(np.mean(values[lo:lo + o.curve_every]))
        curve.append(point)
    metrics = {
        "mean_train_loss": float(np.mean(losses)),
        "final_train_loss": float(np.mean(losses[-tail:])),
        "test_loss": test["answer"],
        "test_exact_match": em,
        "tokens_per_s": tokens_per_s,
        "optimizer_share": res["optimizer_share"],
        "perturbation_ratio": res["perturbation_ratio"],
        "steps": S,
        "train_seconds": res["seconds"],
        "eval_seconds": eval_seconds,
        "mfu": mfu,
    }
    if per_example:  # both losses of every step, whichever is trained on (examples.py)
        for name, values in res["recorded"].items():
            metrics[f"mean_train_loss_{name}"] = float(np.mean(values))
        metrics["test_loss_all"] = test.get("all", float("nan"))
    if o.effective_precision == "fp16":
        metrics["skipped_steps"] = res["skipped_steps"]
    if sess.val_examples:  # what every choice reads (the lr): never the test set
        metrics["val_loss"] = val_loss
    dev = device_name(sess.device) + (f" x{world} (DDP)" if world > 1 else "")
    return {"metrics": metrics, "curve": curve, "device": dev}
