"""Seed-batched runs of the classifier arm: every seed of one cell trained at once.

``[grid].seed_batched = true`` (:mod:`ablations.config`) makes the runner hand a cell's specs
(one variant, attention, lr and options; several seeds) to :func:`run_batch` as one job. The S
runs are trained in lockstep as one model, :class:`qsgd.models.SeedBatchedClassifier`, with one
optimizer, :class:`qsgd.batched.SeedBatchedAdamW`; everything that is a run's own stays its
own: its data order, init and noise streams (:func:`ablations.seeds.derived_seeds` of its
seed, as in :func:`ablations.arms.classifier.run`), its dropout stream (the global generator's
state after its model was built), its per-tensor RMS, first-n scope and noise keys, its
gradient clipping, its evaluation and its curve. Each run's record equals the one-run path's
bit for bit on a CPU at one thread (tested for adamw, sin, gauss, sin-first4, sinnorm, and
both attentions), except the timings:

* ``sec_per_epoch``, ``sec_to_target``, ``sec_total`` and the curve's ``sec`` are the batch's
  training seconds divided by its runs (a run's share of the job), and the provenance's
  ``wall_seconds`` is the job's wall clock divided likewise (``seed_batch``: the runs it held).

A run's result does not depend on which seeds share its job (tested: a seed alone and in a
batch give the same record), so the runner may split a cell into jobs of any size and a sweep
resumes record by record. The records carry ``numerics = BATCHED_NUMERICS``, never the
one-run path's version: the two never share a key, so a grid runs one way or the other (its
timings mean different things).

On ``[classifier].device = "cuda"`` the batch trains on the device: each run's init drawn on
the CPU as its one-run path draws it, its dropout from its own device generator
(:func:`ablations.arms.classifier.dropout_generator`, as its one-run path on CUDA), and each
run's record equals its one-run record on the same device to float rounding (the GPU tests
of tests/test_classifier_device.py), not bit for bit; there the batch also runs its per-run
kernels grouped (:attr:`qsgd.models.SeedBatchedClassifier.grouped`: linear layers, layer
norms, embedding, attention products, Φ (the torch chain, vmapped over the runs), the loss
and the clipping norms once for all runs, not one launch per run).

A run whose gradient turns non-finite fails alone, with the message its one-run optimizer
would raise; the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from qsgd import NonFiniteGradientError, parse_variant
from qsgd.batched import SeedBatchedAdamW, SeedNonFiniteError
from qsgd.models.batched import SeedBatchedClassifier, dropout_generators

from ..schedules import lr_at
from ..seeds import derived_seeds
from . import classifier as _classifier
from .classifier import (
    ClassifierOptions,
    RunCurve,
    _task,
    build_model,
    device_name,
    dropout_generator,
    optimizer_options,
    run_device,
)

__all__ = ["run_batch", "same_cell"]


def same_cell(specs: Sequence) -> None:
    """Raise ValueError unless ``specs`` differ in their seeds only (one cell's runs)."""
    first = specs[0]
    for s in specs[1:]:
        if (s.arm, s.variant, s.attention, s.lr, s.options, s.numerics, s.task) != (
                first.arm, first.variant, first.attention, first.lr, first.options,
                first.numerics, first.task):
            raise ValueError(f"a seed batch holds the runs of one cell: {s.run_id} differs "
                             f"from {first.run_id} in more than its seed")
    seeds = [s.seed for s in specs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed batch lists a seed twice: {seeds}")


@torch.no_grad()
def _accuracies(model: SeedBatchedClassifier, x, y, batch: int = 500) -> list[float]:
    """Every run's accuracy on (x, y), in chunks of ``batch`` as the one-run path's."""
    model.eval()
    correct = torch.zeros(model.n_runs, dtype=torch.int64, device=x.device)
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum(1)
    model.train()
    return [c / len(x) for c in correct.tolist()]


def _clip(params: list[torch.Tensor], max_norm: float, runs: int) -> None:
    """``torch.nn.utils.clip_grad_norm_(run's parameters, max_norm, foreach=True)`` for every
    run: its norm from its own gradients (the same calls), then one product per tensor."""
    coefs = []
    for s in range(runs):
        norms = torch._foreach_norm([p.grad[s] for p in params], 2.0)
        total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
        coefs.append(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    coef = torch.stack(coefs)
    for p in params:
        p.grad.mul_(coef.view(runs, *([1] * (p.dim() - 1))))


def _clip_grouped(params: list[torch.Tensor], max_norm: float, runs: int) -> None:
    """:func:`_clip` with every run's norm from one norm per tensor over the runs (the same
    clipping, rounded differently: the grouped kernels' path)."""
    norms = torch.stack([p.grad.reshape(runs, -1).norm(dim=1) for p in params], dim=1)
    coef = torch.clamp(max_norm / (torch.linalg.vector_norm(norms, 2.0, dim=1) + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef.view(runs, *([1] * (p.dim() - 1))))


def run_batch(specs: Sequence) -> list[dict[str, Any] | Exception]:
    """Train the runs of ``specs`` (one cell's, :func:`same_cell`) at once; per spec, in order,
    its ``{"metrics", "curve", "device"}`` as :func:`ablations.arms.classifier.run` returns
    them (timings a share of the batch's: module docstring), or the exception that ended it."""
    specs = list(specs)
    same_cell(specs)
    first = specs[0]
    o = ClassifierOptions(**first.config)
    variant = parse_variant(first.variant)
    derived = [derived_seeds(s.seed) for s in specs]
    device = run_device(o)
    data = _task(o, device)
    models, states = [], []
    for d in derived:  # each run's init as its one-run path draws it, then its dropout stream
        torch.manual_seed(d["init"])
        models.append(build_model(o, first.attention))
        states.append(torch.get_rng_state())
    model = SeedBatchedClassifier(models).to(device)
    del models
    model.grouped = _classifier.grouped_kernels(o)
    if _classifier.keyed_dropout(o):  # each run's own generator on the device, as one run's
        model.keyed_dropout = True
        gens = [dropout_generator(s.seed, device) for s in specs]
    else:
        gens = dropout_generators(states)
    params = list(model.parameters())
    S = len(specs)
    opt = SeedBatchedAdamW(params, [d["noise"] for d in derived], lr=first.lr,
                           weight_decay=o.weight_decay, bias_correction=o.bias_correction,
                           **optimizer_options(o, variant))
    order_gens = [torch.Generator().manual_seed(d["order"]) for d in derived]
    loss_fn = torch.nn.CrossEntropyLoss()
    x_train, y_train = data["x_train"], data["y_train"]
    n = len(x_train)
    steps_per_epoch = math.ceil(n / o.batch_size)
    total_steps = steps_per_epoch * o.epochs
    has_val = "x_val" in data
    recs = [RunCurve(o.target_acc, has_val) for _ in specs]
    failed: dict[int, Exception] = {}
    live = set(range(S))  # runs still training (not failed, not diverged)
    step = 0
    for epoch in range(1, o.epochs + 1):
        perms = [torch.randperm(n, generator=g) for g in order_gens]
        t0 = time.perf_counter()
        epoch_losses: list[list[float]] = [[] for _ in specs]
        step_losses: list[torch.Tensor] = []
        for b in range(steps_per_epoch):
            idx = torch.stack([p[b * o.batch_size:(b + 1) * o.batch_size]
                               for p in perms]).to(device)
            logits = model(x_train[idx], gens)
            if model.grouped:  # every run's mean loss from one kernel
                losses = F.cross_entropy(logits.flatten(0, 1), y_train[idx].flatten(),
                                         reduction="none").view(S, -1).mean(1)
            else:
                losses = torch.stack([loss_fn(lg, t) for lg, t in zip(logits.unbind(0),
                                                                       y_train[idx].unbind(0))])
            opt.zero_grad()
            # loss_scale: c·loss and the threshold c·clip_grad give c times every gradient
            (losses * o.loss_scale if o.loss_scale != 1.0 else losses).sum().backward()
            for s in range(S):
                if s not in live:  # a finished run's gradient is ignored (kept finite)
                    for p in params:
                        p.grad[s].zero_()
            if o.clip_grad:
                (_clip_grouped if model.grouped else _clip)(params, o.clip_grad * o.loss_scale,
                                                            S)
            opt.track_ratio = o.ratio_every > 0 and step % o.ratio_every == 0
            if o.schedule == "cosine":  # cosine decay to zero over the run, no warm-up
                opt.lr = lr_at(step, first.lr, schedule="cosine", horizon=total_steps)
            try:
                opt.step()
            except SeedNonFiniteError as err:  # those runs fail, as their one-run path would
                for s, msg in err.errors.items():
                    failed[s] = NonFiniteGradientError(msg)
                    live.discard(s)
                    for p in params:
                        p.grad[s].zero_()
                opt.step()
            step += 1
            step_losses.append(losses.detach())
        for s, v in enumerate(torch.stack(step_losses, 1).tolist()):  # one sync an epoch
            epoch_losses[s] = v
        share = (time.perf_counter() - t0) / S
        acc = _accuracies(model, data["x_test"], data["y_test"])
        val = _accuracies(model, data["x_val"], data["y_val"]) if has_val else [None] * S
        for s in sorted(live):
            if not recs[s].add_epoch(epoch, share, epoch_losses[s], acc[s], val[s]):
                live.discard(s)
        if not live:
            break
    ratios = opt.perturbation_ratio()
    name = device_name(device)
    return [failed[s] if s in failed else
            {"metrics": recs[s].metrics(ratios[s], _steps(recs[s], steps_per_epoch)),
             "curve": recs[s].curve, "device": name} for s in range(S)]


def _steps(rec: RunCurve, steps_per_epoch: int) -> int:
    """The steps a run took: its epochs' (a run that diverged stopped after its last epoch)."""
    return len(rec.curve) * steps_per_epoch
