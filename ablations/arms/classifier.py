"""The classifier arm: a synthetic sequence task that needs attention, and one training run.

The task ("query count")
------------------------
A sequence is one query token followed by ``seq_len − 1`` content tokens. The query names one of
``n_symbols`` symbols (query tokens and content tokens are different vocabulary entries: ids
1…k for queries, k+1…2k for content). The label is 1 when the query's symbol occurs at least
``threshold`` times among the content tokens. Sequences are generated balanced: the count is
drawn uniformly from ``threshold − span … threshold − 1`` (label 0) or
``threshold … threshold + span − 1`` (label 1), the other content tokens from the remaining
symbols. Then a fraction ``label_noise`` of labels, in train and test alike, is flipped.

Why this needs attention: whether a content token counts depends on the query, which sits at
another position. Per-token features pooled over the sequence give a histogram of symbols and
the query's identity, and the label (histogram[query] ≥ threshold) is not a linear function of
those, so the linear head on the pooled vector cannot read it; the model must route the query
to the content tokens (or the reverse) through attention.
Why the noise: flipped labels put a ceiling of 1 − label_noise on test accuracy, so "final
accuracy" measures how close an optimizer gets to the ceiling.

Train and test sets are disjoint (duplicated sequences are dropped from the test set), both drawn
from ``data_seed``: the data are the same for every run seed. Each run seed derives its own data
order, model init and optimizer-noise streams (``derived_seeds``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qsgd import SuperpositionalAdamW, parse_variant

from ..schedules import lr_at
from ..seeds import derived_seeds
from .base import Arm, Metric, register_arm

__all__ = ["ClassifierOptions", "Classifier", "make_task", "build_model", "derived_seeds", "run",
           "TIMING_METRICS", "NUMERICS"]

#: Version of this arm's numerics, part of every run's key (ablations.config.RunSpec): bump it
#: whenever a code change alters the metrics of an unchanged spec, so the stored runs become
#: stale and ``nox -s ablations`` reruns them. 2: Φ's coefficients from the cached corner
#: table, contiguous attention heads, the test set in one batch (the same maths as version 1,
#: rounded differently). 3: Φ's weight gradient from the table's Jacobian
#: (``qsgd.attention.circuit_line``), the test set in batches of 500. 4: Φ by the
#: transfer-matrix chain (``method="auto"`` at depth <= 2, ``qsgd.attention.chain_line``) and
#: the whole attention of a layer in one native kernel where compiled
#: (``qsgd.attention.fused``), Fourier coefficients from the minimal grid: the same function,
#: rounded differently (agreement to float32 rounding is tested).
NUMERICS = 4

PAD = 0


@dataclass(frozen=True)
class ClassifierOptions:
    """Arm options (the ``[classifier]`` table of a config), validated when built.

    Task: seq_len (tokens, the query included), n_symbols, threshold and span (the count
    distribution, module docstring), label_noise (fraction of flipped labels, 0–0.5),
    n_train, n_test, data_seed. Training: epochs, batch_size, weight_decay, clip_grad (0: off),
    schedule (cosine or constant), bias_correction. Model: d_model, n_heads (dividing
    d_model), n_layers, d_ff, dropout, attn_qubits and attn_depth (the circuit of quantum
    attention). Validation: n_val examples carved from the n_train training examples (the last
    n_val drawn; 0: none), scored every epoch: every choice (lr, difficulty, epochs) reads them,
    never the test set. Metrics: target_acc (the accuracy of epochs to target), ratio_every
    (steps between samples of the perturbation ratio; 0: never).
    """

    seq_len: int = 16
    n_symbols: int = 8
    threshold: int = 1
    span: int = 2
    label_noise: float = 0.05
    n_train: int = 3000
    n_test: int = 1000
    data_seed: int = 1234
    epochs: int = 12
    batch_size: int = 75
    weight_decay: float = 0.01
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 64
    attn_qubits: int = 2
    attn_depth: int = 2
    dropout: float = 0.0
    n_val: int = 0
    clip_grad: float = 1.0
    target_acc: float = 0.90
    ratio_every: int = 10
    schedule: str = "cosine"
    bias_correction: bool = True

    def __post_init__(self):
        # ValueError naming [classifier].<key>; every check here runs when the config loads
        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"[classifier].{key} must be {rule}, got "
                                 f"{getattr(self, key)!r}")

        for key in ("seq_len", "n_symbols"):
            need(getattr(self, key) >= 2, key, ">= 2")
        for key in ("threshold", "span", "n_train", "n_test", "epochs", "batch_size",
                    "d_model", "n_heads", "n_layers", "d_ff", "attn_qubits", "attn_depth"):
            need(getattr(self, key) >= 1, key, ">= 1")
        need(0 <= self.n_val < self.n_train, "n_val", f"in [0, n_train = {self.n_train})")
        need(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)")
        need(self.threshold <= self.seq_len - 1, "threshold",
             f"<= seq_len - 1 = {self.seq_len - 1} (the count of content tokens)")
        need(self.d_model % self.n_heads == 0, "n_heads", f"a divisor of d_model ({self.d_model})")
        need(0.0 <= self.label_noise <= 0.5, "label_noise", "in [0, 0.5]")
        need(0.0 < self.target_acc <= 1.0, "target_acc", "in (0, 1]")
        for key in ("weight_decay", "clip_grad"):
            value = getattr(self, key)
            need(math.isfinite(value) and value >= 0, key, "finite and >= 0")
        need(self.ratio_every >= 0, "ratio_every", ">= 0")
        need(self.data_seed >= 0, "data_seed", ">= 0")
        need(self.schedule in ("cosine", "constant"), "schedule", "cosine or constant")


def _sample(rng: np.random.Generator, n: int,
            o: ClassifierOptions) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of the query-count task (module docstring) and their noisy labels."""
    L, k = o.seq_len, o.n_symbols
    query = rng.integers(0, k, size=n)
    # the count of the query's symbol among the L-1 content tokens: below or at/above threshold,
    # half the sequences each, spread evenly over the counts on each side
    low = rng.integers(max(0, o.threshold - o.span), o.threshold, size=n)
    high = rng.integers(o.threshold, min(L - 1, o.threshold + o.span - 1) + 1, size=n)
    labels = (rng.random(n) < 0.5).astype(np.int64)
    count = np.where(labels == 1, high, low)
    # content: symbols other than the query, then `count` copies of the query symbol planted
    other = rng.integers(0, k - 1, size=(n, L - 1))
    other = other + (other >= query[:, None])  # skip the query symbol
    for i in range(n):
        pos = rng.choice(L - 1, size=count[i], replace=False)
        other[i, pos] = query[i]
    x = np.concatenate([(1 + query)[:, None], (1 + k + other)], axis=1)
    flip = rng.random(n) < o.label_noise
    labels[flip] = 1 - labels[flip]
    return x, labels


def make_task(o: ClassifierOptions) -> dict[str, torch.Tensor]:
    """Train, validation and test tensors (tokens int64 [n, L], labels int64 [n]).

    The n_train training examples are drawn first; the last n_val of them are the validation
    split (``x_val``, ``y_val``, present when n_val > 0). The test set is drawn after, with
    every sequence of the training data (validation included) left out.
    """
    rng = np.random.default_rng(o.data_seed)
    xtr, ytr = _sample(rng, o.n_train, o)
    seen = {row.tobytes() for row in xtr}
    xs, ys, need, tries = [], [], o.n_test, 0
    while need > 0:
        tries += 1
        if tries > 1000:  # the task has fewer distinct sequences than train + test need
            raise ValueError(f"[classifier]: cannot draw {o.n_test} test sequences disjoint "
                             f"from {o.n_train} training ones (seq_len {o.seq_len}, n_symbols "
                             f"{o.n_symbols}): make the task larger or the sets smaller")
        xt, yt = _sample(rng, need, o)
        keep = np.array([row.tobytes() not in seen for row in xt])
        xs.append(xt[keep])
        ys.append(yt[keep])
        need -= int(keep.sum())
    xte, yte = np.concatenate(xs)[: o.n_test], np.concatenate(ys)[: o.n_test]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).long()
    out = {"x_test": t(xte), "y_test": t(yte)}
    cut = o.n_train - o.n_val
    out.update(x_train=t(xtr[:cut]), y_train=t(ytr[:cut]))
    if o.n_val:
        out.update(x_val=t(xtr[cut:]), y_val=t(ytr[cut:]))
    return out


_TASK_CACHE: dict[ClassifierOptions, dict[str, torch.Tensor]] = {}


def _task(o: ClassifierOptions) -> dict[str, torch.Tensor]:
    if o not in _TASK_CACHE:
        _TASK_CACHE[o] = make_task(o)
    return _TASK_CACHE[o]


def build_model(o: ClassifierOptions, attention: str) -> torch.nn.Module:
    from qsgd.models import TransformerClassifier

    return TransformerClassifier(
        vocab_size=2 * o.n_symbols + 1, n_classes=2, max_len=o.seq_len, d_model=o.d_model,
        n_heads=o.n_heads, n_layers=o.n_layers, d_ff=o.d_ff, attention=attention,
        pad_id=PAD, n_qubits=o.attn_qubits, depth=o.attn_depth, dropout=o.dropout,
    )


@torch.no_grad()
def _accuracy(model, x, y, batch=500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(x)


def run(spec) -> dict[str, Any]:
    """Train one classifier run; return metrics and the per-epoch curve.

    ``spec`` needs: variant, attention, seed, lr, config (dict of ClassifierOptions fields).
    All metrics except the wall-clock ones are bit-identical for equal specs on a CPU.
    """
    o = ClassifierOptions(**spec.config)
    variant = parse_variant(spec.variant)
    seeds = derived_seeds(spec.seed)
    data = _task(o)
    torch.manual_seed(seeds["init"])
    model = build_model(o, spec.attention)
    opt = SuperpositionalAdamW(model.parameters(), lr=spec.lr, weight_decay=o.weight_decay,
                               seed=seeds["noise"], bias_correction=o.bias_correction,
                               **variant.optimizer_kwargs())
    order_gen = torch.Generator().manual_seed(seeds["order"])
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(data["x_train"])
    steps_per_epoch = math.ceil(n / o.batch_size)
    total_steps = steps_per_epoch * o.epochs
    curve, losses, epoch_times = [], [], []
    epochs_to_target, sec_to_target, train_time, step = None, None, 0.0, 0
    has_val, epochs_to_target_val = "x_val" in data, None
    diverged = False
    for epoch in range(1, o.epochs + 1):
        perm = torch.randperm(n, generator=order_gen)
        t0 = time.perf_counter()
        epoch_losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * o.batch_size:(b + 1) * o.batch_size]
            logits = model(data["x_train"][idx])
            loss = loss_fn(logits, data["y_train"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad, foreach=True)
            opt.track_ratio = o.ratio_every > 0 and step % o.ratio_every == 0
            if o.schedule == "cosine":  # cosine decay to zero over the run, no warm-up
                lr = lr_at(step, spec.lr, schedule="cosine", horizon=total_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.step()
            step += 1
            epoch_losses.append(float(loss.detach()))
        dt_epoch = time.perf_counter() - t0
        train_time += dt_epoch
        epoch_times.append(dt_epoch)
        losses.extend(epoch_losses)
        acc = _accuracy(model, data["x_test"], data["y_test"])
        point = {"epoch": epoch, "test_acc": acc, "train_loss": float(np.mean(epoch_losses)),
                 "sec": round(train_time, 4)}
        if has_val:
            point["val_acc"] = _accuracy(model, data["x_val"], data["y_val"])
            if epochs_to_target_val is None and point["val_acc"] >= o.target_acc:
                epochs_to_target_val = epoch
        curve.append(point)
        if epochs_to_target is None and acc >= o.target_acc:
            epochs_to_target, sec_to_target = epoch, train_time
        if not all(math.isfinite(v) for v in epoch_losses):
            diverged = True
            break
    metrics = {
        "final_test_acc": curve[-1]["test_acc"] if not diverged else float("nan"),
        "epochs_to_90": float(epochs_to_target) if epochs_to_target else float("nan"),
        "reached_90": epochs_to_target is not None,
        "mean_train_loss": float(np.mean(losses)),
        "final_train_loss": curve[-1]["train_loss"],
        "sec_per_epoch": float(np.median(epoch_times)),
        "sec_to_target": float(sec_to_target) if sec_to_target is not None else float("nan"),
        "sec_total": float(train_time),
        "perturbation_ratio": opt.perturbation_ratio(),
        "steps": step,
        "diverged": diverged,
    }
    if has_val:  # what every choice reads (lr, difficulty, epochs): never the test set
        metrics.update(
            final_val_acc=curve[-1]["val_acc"] if not diverged else float("nan"),
            epochs_to_90_val=float(epochs_to_target_val) if epochs_to_target_val
            else float("nan"),
            reached_90_val=epochs_to_target_val is not None)
    return {"metrics": metrics, "curve": curve}


_PP = dict(unit=" pp", scale=100.0)


@register_arm
class Classifier(Arm):
    """The classifier arm (claims C1–C5): the query-count task above, one run per spec."""

    name = "classifier"
    options = ClassifierOptions
    numerics = NUMERICS
    resources = "cpu"
    attentions = ("quantum", "classical")  # the circuit term on (the default) or off
    curve_x = "epoch"
    curve_value = "test_acc"
    curve_label = "test accuracy"
    setup_exhibits = ("calibration",)
    analyses = ("factorial", "lr_check", "lr_sensitivity", "perturbation", "curves")
    selection_metric = "final_val_acc"
    metrics = (
        Metric("final_test_acc", "higher", "final test accuracy", margin=0.01, **_PP),
        Metric("epochs_to_90", "lower", "epochs to 90 % accuracy", " epochs", margin=1.0),
        Metric("reached_90", "higher", "reached 90 % accuracy", margin=0.1, compared=False),
        Metric("final_val_acc", "higher", "final validation accuracy", margin=0.01, **_PP),
        Metric("epochs_to_90_val", "lower", "epochs to 90 % validation accuracy", " epochs",
               margin=1.0),
        Metric("reached_90_val", "higher", "reached 90 % validation accuracy", compared=False),
        Metric("mean_train_loss", "lower", "mean training loss", margin=0.005),
        Metric("final_train_loss", "lower", "final training loss", margin=0.005),
        Metric("sec_per_epoch", "lower", "seconds per epoch", " s", timing=True),
        Metric("sec_to_target", "lower", "seconds to 90 % accuracy", " s", timing=True),
        Metric("sec_total", "lower", "seconds of training", " s", timing=True, compared=False),
        Metric("perturbation_ratio", "none", "‖λ·Q‖ / ‖Adam step‖", compared=False),
    )

    def run(self, spec) -> dict[str, Any]:
        return run(spec)

    def describe(self, cfg, runs) -> str:
        o, baseline_lr = cfg.arm_options, cfg.baseline_lr
        return (
            f"Task: query count (`ablations/arms/classifier.py`), sequences of {o.seq_len} "
            f"tokens, {o.n_train} train / {o.n_test} test examples, label noise "
            f"{o.label_noise} (accuracy ceiling {1 - float(o.label_noise):.2f}). "
            f"Model: {o.n_layers}-layer transformer, d={o.d_model}, "
            f"{o.n_heads} heads; attention `quantum` (circuit term on) or `classical`. "
            f"{o.epochs} epochs, batch {o.batch_size}, weight decay "
            f"{o.weight_decay}, gradient clipping 1.0, cosine learning-rate decay; "
            f"reference lr {baseline_lr:g}. Seeds pair runs: seed s fixes data order, init and "
            f"noise for every variant.\n")


#: Wall-clock metrics: they vary between equal runs; every other metric is bit-reproducible.
TIMING_METRICS = tuple(m.name for m in Classifier.metrics if m.timing)
