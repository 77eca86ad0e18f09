"""The classifier arm: sequence classification tasks that need attention, and one training run.

The tasks
---------
``[classifier].dataset`` picks the task from the registry of :mod:`ablations.arms.tasks`:
``query-count`` (the default and the arm's original task: does the query's symbol occur at
least ``threshold`` times among the content tokens?), ``parity``, ``retrieval`` and the real
``digits``. Each task's docstring states its generation, why it needs attention and its
accuracy ceiling (the synthetic tasks flip a fraction ``label_noise`` of labels: the ceiling
is 1 − label_noise, so "final accuracy" measures how close an optimizer gets to it).

Train, validation and test sets are disjoint, all drawn from ``data_seed``: the data are the same
for every run seed. Each run seed derives its own data order, model init and optimizer-noise
streams (``derived_seeds``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qsgd import SuperpositionalAdamW, parse_variant
from qsgd.circuit.noisy import FAKE_BACKENDS
from qsgd.hyper import DEFAULTS
from qsgd.noise import noise_key

from ..provenance import cpu_device
from ..schedules import lr_at
from ..seeds import derived_seeds
from .base import Arm, Metric, TimeTarget, register_arm
from .tasks import check_task, get_task

__all__ = ["ClassifierOptions", "Classifier", "make_task", "build_model", "derived_seeds", "run",
           "RunCurve", "TIMING_METRICS", "NUMERICS", "BATCHED_NUMERICS", "DEVICES",
           "run_device", "device_name", "keyed_dropout", "grouped_kernels", "dropout_generator"]

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
#: Version of the seed-batched path's numerics (:mod:`ablations.arms.seed_batch`, a grid's
#: ``[grid].seed_batched``), in the keys and records of its runs: 1000·b + NUMERICS, b the
#: batched path's own version, so that it never equals NUMERICS (a batched run and a one-run
#: run never share a key, and a grid runs one way or the other) and moves with it. b = 1:
#: every metric but the timings equals the one-run path's bit for bit on a CPU at one thread;
#: timings are a run's share of its batch's.
BATCHED_NUMERICS = 1000 * 1 + NUMERICS

PAD = 0
#: the values of ``[classifier].device``
DEVICES = ("cpu", "cuda")
#: the stream of a run seed's dropout key on a device (:func:`dropout_generator`); the streams
#: 1–3 are :data:`ablations.seeds.STREAMS`
DROPOUT_STREAM = 4


@dataclass(frozen=True)
class ClassifierOptions:
    """Arm options (the ``[classifier]`` table of a config), validated when built.

    Task: dataset (the task's name, :mod:`ablations.arms.tasks`; default query-count),
    n_train, n_test, data_seed, and the keys of that task (a key only other tasks read must
    keep its default): seq_len (tokens, the query included), n_symbols, threshold and span
    (the count distribution of query-count), label_noise (fraction of flipped labels, 0–0.5),
    max_count (parity: the largest count of the marked symbol), n_pairs, n_keys, n_values
    (retrieval), pixel_levels (digits: quantisation levels of a pixel). Training: epochs,
    batch_size, weight_decay, clip_grad (0: off), schedule (cosine or constant),
    bias_correction. Model: d_model, n_heads (dividing
    d_model), n_layers, d_ff, dropout, attn_qubits and attn_depth (the circuit of quantum
    attention); attn_readout (Φ's readout: ``amp``, the amplitude sum, default, or ``z``, the
    measurable mean ⟨Z_q⟩), attn_shots (S > 0: Φ estimated from S measurement shots per
    score; 0, default: exact) and attn_noise (a fake IBM backend whose noise model the circuit
    runs under, e.g. ``fake_sherbrooke``; "" default: ideal), the quantum-realism options of
    :mod:`qsgd.attention.measured` (issue 20; shots and noise need readout ``z``, except
    shots alone with ``amp``: a Hadamard test). circuit_shots (S > 0: the ``circuit``
    perturbation's r_i estimated from S X-basis shots per group and step, the optimizer's
    ``circuit_shots``; 0, default: exact ⟨X⟩): the quantum-realism option of the optimizer
    side; a run with it must use a circuit variant (refused when the config loads otherwise).
    Validation: n_val examples carved from the
    n_train training examples (the last n_val drawn; 0: none), scored every epoch: every
    choice (lr, difficulty, epochs) reads them, never the test set. Metrics: target_acc (the
    accuracy of epochs to target), ratio_every (steps between samples of the perturbation
    ratio; 0: never).

    Gradient scale: loss_scale c (default 1, finite and > 0) multiplies the training loss before
    backward, and the clipping threshold with it (c·clip_grad), so every gradient the
    optimizer sees is c times the unscaled run's. Adam's step m̂/(√v̂+ε) is invariant to it up
    to ε (and float rounding), a term in raw gradient units (the paper's sin(πθ)·g) grows
    with c. ε is not always negligible: where gradients are of order ε (this task's loss
    plateau near chance at the start) AdamW at c equals AdamW at c = 1 with ε/c, so the
    dose-response grid (configs/classifier-dose.toml) compares each variant with AdamW at the
    same c. The recorded losses are the unscaled ones.
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
    dataset: str = "query-count"
    max_count: int = 3
    n_pairs: int = 6
    n_keys: int = 12
    n_values: int = 2
    pixel_levels: int = 4
    loss_scale: float = 1.0
    attn_readout: str = "amp"
    attn_shots: int = 0
    attn_noise: str = ""
    circuit_shots: int = 0
    device: str = "cpu"

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
        need(self.d_model % self.n_heads == 0, "n_heads", f"a divisor of d_model ({self.d_model})")
        need(0.0 <= self.label_noise <= 0.5, "label_noise", "in [0, 0.5]")
        need(0.0 < self.target_acc <= 1.0, "target_acc", "in (0, 1]")
        for key in ("weight_decay", "clip_grad"):
            value = getattr(self, key)
            need(math.isfinite(value) and value >= 0, key, "finite and >= 0")
        need(math.isfinite(self.loss_scale) and self.loss_scale > 0, "loss_scale",
             "finite and > 0")
        need(self.ratio_every >= 0, "ratio_every", ">= 0")
        need(self.data_seed >= 0, "data_seed", ">= 0")
        need(self.schedule in ("cosine", "constant"), "schedule", "cosine or constant")
        need(self.attn_readout in ("amp", "z"), "attn_readout", "amp or z")
        need(self.attn_shots >= 0, "attn_shots", ">= 0")
        need(self.circuit_shots >= 0, "circuit_shots", ">= 0 (0: the exact readout)")
        need(self.attn_noise in ("",) + FAKE_BACKENDS, "attn_noise",
             "empty or one of " + ", ".join(FAKE_BACKENDS))
        need(self.attn_readout == "z" or not self.attn_noise, "attn_noise",
             "empty with attn_readout 'amp' (a noisy Hadamard test is not modelled)")
        need(self.device in DEVICES, "device", "one of " + ", ".join(DEVICES))
        check_task(self)  # the dataset and its own keys


def run_device(o: ClassifierOptions) -> torch.device:
    """The torch device a run of ``o`` trains on; ``RuntimeError`` naming [classifier].device
    when it is ``cuda`` and torch sees no CUDA device (asked when a run starts, not when the
    config loads). On CUDA it also turns TF32 matrix products off (full float32, as on the
    CPU), so that a run does not depend on what its process ran before."""
    if o.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("[classifier].device = 'cuda', but torch sees no CUDA device "
                               f"(torch {torch.__version__}, torch.cuda.is_available() is "
                               "False): run the grid on a machine with a GPU, or set device = "
                               "'cpu'")
        torch.backends.cuda.matmul.allow_tf32 = False
    return torch.device(o.device)


def device_name(device: torch.device) -> str:
    """The provenance's name of a run's device: :func:`ablations.provenance.cpu_device` on the
    CPU, ``cuda (<the GPU's name>)`` on CUDA."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return cpu_device()


def keyed_dropout(o: ClassifierOptions) -> bool:
    """Whether a run of ``o`` draws its dropout masks from its own generator on its device
    (:func:`dropout_generator`): on CUDA, where the global generator's stream (the CPU rule,
    kept bit for bit) cannot be split per run in a seed batch. The one-run and the seed-batched
    paths ask this same function, so they always draw alike."""
    return o.device != "cpu"


def grouped_kernels(o: ClassifierOptions) -> bool:
    """Whether a seed batch of ``o`` runs the per-run kernels grouped
    (:attr:`qsgd.models.SeedBatchedClassifier.grouped`): on CUDA, where it agrees with the
    one-run path to rounding either way; on the CPU the per-run kernels keep it bit for bit."""
    return o.device != "cpu"


def dropout_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """Run seed ``seed``'s dropout generator on ``device``: a ``torch.Generator`` there seeded
    with ``noise_key(seed, 0, 0, DROPOUT_STREAM)``. Both paths draw each dropout mask from it,
    as one ``bernoulli_`` over the layer's shape, in the model's order
    (:func:`qsgd.attention.keyed_dropout`), so a run's masks do not depend on its batch."""
    gen = torch.Generator(device=device)
    gen.manual_seed(noise_key(seed, 0, 0, DROPOUT_STREAM))
    return gen


def optimizer_options(o: ClassifierOptions, variant) -> dict[str, Any]:
    """The optimizer's keyword arguments of a run's variant (``Variant.optimizer_kwargs``) and
    options: ``circuit_shots`` when the options set it (0 is the exact readout, the default)."""
    kwargs = variant.optimizer_kwargs()
    if o.circuit_shots:
        kwargs["circuit_shots"] = o.circuit_shots
    return kwargs


def check_circuit_shots(o: ClassifierOptions, variant) -> None:
    """``ValueError`` naming [classifier].circuit_shots when it is set for a variant whose
    perturbation is not ``circuit`` (the shots would silently do nothing)."""
    if o.circuit_shots and variant.perturbation != "circuit":
        raise ValueError(f"[classifier].circuit_shots = {o.circuit_shots} applies to circuit "
                         f"variants only, not {variant.id!r} (give circuit shots a cell of "
                         "their own)")


def make_task(o: ClassifierOptions) -> dict[str, torch.Tensor]:
    """Train, validation and test tensors (tokens int64 [n, L], labels int64 [n]) of the
    task ``o.dataset`` (:mod:`ablations.arms.tasks`).

    The last n_val of the n_train training examples are the validation split (``x_val``,
    ``y_val``, present when n_val > 0). The test set shares no example with the training data
    (validation included).
    """
    return get_task(o.dataset).make(o)


_TASK_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _task(o: ClassifierOptions, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The task's tensors of ``o`` on ``device`` (made once per process and device)."""
    key = (o, str(device))
    if key not in _TASK_CACHE:
        cpu = _TASK_CACHE.get((o, "cpu")) or make_task(o)
        _TASK_CACHE[o, "cpu"] = cpu
        _TASK_CACHE[key] = {k: v.to(device) for k, v in cpu.items()}
    return _TASK_CACHE[key]


def build_model(o: ClassifierOptions, attention: str, shot_seed: int = 0) -> torch.nn.Module:
    """The model of the options; with attn_shots or attn_noise, each layer's Φ is replaced by
    a :class:`~qsgd.attention.measured.MeasuredScoreCircuit` holding the same parameters (the
    same initial values as the exact model of that seed), its shots keyed on ``shot_seed``
    and the layer index."""
    from qsgd.models import TransformerClassifier

    task = get_task(o.dataset)
    model = TransformerClassifier(
        vocab_size=task.vocab_size(o), n_classes=task.n_classes(o), max_len=task.seq_len(o),
        d_model=o.d_model, n_heads=o.n_heads, n_layers=o.n_layers, d_ff=o.d_ff,
        attention=attention, pad_id=PAD, n_qubits=o.attn_qubits, depth=o.attn_depth,
        dropout=o.dropout, readout=o.attn_readout,
    )
    if attention == "quantum" and (o.attn_shots or o.attn_noise):
        from qsgd.attention.measured import MeasuredScoreCircuit

        for i, block in enumerate(model.blocks):
            exact = block.attn.phi
            with torch.random.fork_rng():  # the global stream (dropout) as in the exact run
                phi = MeasuredScoreCircuit(o.attn_qubits, o.attn_depth, readout=o.attn_readout,
                                           shots=o.attn_shots, noise=o.attn_noise,
                                           seed=shot_seed, position=i)
            with torch.no_grad():
                phi.scale.copy_(exact.scale)
                phi.weights.copy_(exact.weights)
            block.attn.phi = phi
    return model


@torch.no_grad()
def _accuracy(model, x, y, batch=500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(x)


class RunCurve:
    """One run's per-epoch curve and its metrics: what the one-run loop (:func:`run`) and the
    seed-batched one (:mod:`ablations.arms.seed_batch`) record, epoch by epoch, the same way.

    ``target``: the accuracy of epochs to target; ``has_val``: the task has a validation split.
    """

    def __init__(self, target: float, has_val: bool):
        self.target, self.has_val = target, has_val
        self.curve: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.epoch_times: list[float] = []
        self.epochs_to_target = self.sec_to_target = self.epochs_to_target_val = None
        self.train_time = 0.0
        self.diverged = False

    def add_epoch(self, epoch: int, seconds: float, epoch_losses: list[float], test_acc: float,
                  val_acc: float | None = None) -> bool:
        """Record an epoch: its training seconds, step losses and accuracies. Returns False
        when the run diverged (a non-finite loss): its curve ends here."""
        self.train_time += seconds
        self.epoch_times.append(seconds)
        self.losses.extend(epoch_losses)
        point = {"epoch": epoch, "test_acc": test_acc,
                 "train_loss": float(np.mean(epoch_losses)), "sec": round(self.train_time, 4)}
        if self.has_val:
            point["val_acc"] = val_acc
            if self.epochs_to_target_val is None and val_acc >= self.target:
                self.epochs_to_target_val = epoch
        self.curve.append(point)
        if self.epochs_to_target is None and test_acc >= self.target:
            self.epochs_to_target, self.sec_to_target = epoch, self.train_time
        if not all(math.isfinite(v) for v in epoch_losses):
            self.diverged = True
        return not self.diverged

    def metrics(self, perturbation_ratio: float, steps: int) -> dict[str, Any]:
        curve, diverged = self.curve, self.diverged
        metrics = {
            "final_test_acc": curve[-1]["test_acc"] if not diverged else float("nan"),
            "epochs_to_90": (float(self.epochs_to_target) if self.epochs_to_target
                             else float("nan")),
            "reached_90": self.epochs_to_target is not None,
            "mean_train_loss": float(np.mean(self.losses)),
            "final_train_loss": curve[-1]["train_loss"],
            "sec_per_epoch": float(np.median(self.epoch_times)),
            "sec_to_target": (float(self.sec_to_target) if self.sec_to_target is not None
                              else float("nan")),
            "sec_total": float(self.train_time),
            "perturbation_ratio": perturbation_ratio,
            "steps": steps,
            "diverged": diverged,
        }
        if self.has_val:  # what every choice reads (lr, difficulty, epochs): never the test set
            metrics.update(
                final_val_acc=curve[-1]["val_acc"] if not diverged else float("nan"),
                epochs_to_90_val=(float(self.epochs_to_target_val) if self.epochs_to_target_val
                                  else float("nan")),
                reached_90_val=self.epochs_to_target_val is not None)
        return metrics


def run(spec) -> dict[str, Any]:
    """Train one classifier run; return metrics and the per-epoch curve.

    ``spec`` needs: variant, attention, seed, lr, config (dict of ClassifierOptions fields).
    All metrics except the wall-clock ones are bit-identical for equal specs on a CPU. On
    ``[classifier].device = "cuda"`` the model is built (drawn from the CPU generator, the
    same init as on the CPU) and moved to the device, with the data; dropout draws from the
    run's own device generator (:func:`dropout_generator`).
    """
    o = ClassifierOptions(**spec.config)
    variant = parse_variant(spec.variant)
    seeds = derived_seeds(spec.seed)
    device = run_device(o)
    data = _task(o, device)
    torch.manual_seed(seeds["init"])
    model = build_model(o, spec.attention, shot_seed=seeds["noise"]).to(device)
    if keyed_dropout(o):
        model.set_dropout_generator(dropout_generator(spec.seed, device))
    check_circuit_shots(o, variant)
    opt = SuperpositionalAdamW(model.parameters(), lr=spec.lr, weight_decay=o.weight_decay,
                               seed=seeds["noise"], bias_correction=o.bias_correction,
                               **optimizer_options(o, variant))
    order_gen = torch.Generator().manual_seed(seeds["order"])
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(data["x_train"])
    steps_per_epoch = math.ceil(n / o.batch_size)
    total_steps = steps_per_epoch * o.epochs
    has_val = "x_val" in data
    rec, step = RunCurve(o.target_acc, has_val), 0
    for epoch in range(1, o.epochs + 1):
        perm = torch.randperm(n, generator=order_gen)
        t0 = time.perf_counter()
        epoch_losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * o.batch_size:(b + 1) * o.batch_size].to(device)
            logits = model(data["x_train"][idx])
            loss = loss_fn(logits, data["y_train"][idx])
            opt.zero_grad(set_to_none=True)
            # loss_scale: c·loss and the threshold c·clip_grad give c times every gradient
            (loss * o.loss_scale if o.loss_scale != 1.0 else loss).backward()
            if o.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad * o.loss_scale,
                                               foreach=True)
            opt.track_ratio = o.ratio_every > 0 and step % o.ratio_every == 0
            if o.schedule == "cosine":  # cosine decay to zero over the run, no warm-up
                lr = lr_at(step, spec.lr, schedule="cosine", horizon=total_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.step()
            step += 1
            epoch_losses.append(loss.detach())
        epoch_losses = torch.stack(epoch_losses).tolist()  # one device sync an epoch
        dt_epoch = time.perf_counter() - t0
        acc = _accuracy(model, data["x_test"], data["y_test"])
        val = _accuracy(model, data["x_val"], data["y_val"]) if has_val else None
        if not rec.add_epoch(epoch, dt_epoch, epoch_losses, acc, val):
            break
    # on the CPU the CPU's name, also where the host has a GPU (not this run's device)
    return {"metrics": rec.metrics(opt.perturbation_ratio(), step), "curve": rec.curve,
            "device": device_name(device)}


_PP = dict(unit=" pp", scale=100.0)


@register_arm
class Classifier(Arm):
    """The classifier arm (claims C1–C5): the task of ``dataset`` (query-count by default),
    one run per spec, or a cell's seeds at once in a seed-batched grid (:meth:`run_batch`)."""

    name = "classifier"
    options = ClassifierOptions
    numerics = NUMERICS
    batched_numerics = BATCHED_NUMERICS
    resources = "cpu"
    attentions = ("quantum", "classical")  # the circuit term on (the default) or off
    curve_x = "epoch"
    curve_value = "test_acc"
    curve_label = "test accuracy"
    setup_exhibits = ("calibration",)
    analyses = ("factorial", "lr_check", "lr_sensitivity", "tuned_lr", "across_tasks",
                "perturbation", "curves")
    selection_metric = "final_val_acc"
    selection_exhibits = ("difficulty", "lr_sensitivity")
    #: the theory suite reads the paper protocol's grid (Table II's model, lr 1e-3, its seeds)
    reference_grid = "classifier-paper"
    #: the paper's protocol gives no task: its difficulty is chosen so that Adam reaches 90%
    #: validation accuracy at about the paper's 7.4 epochs (configs/classifier-difficulty.toml)
    difficulty = TimeTarget("epochs_to_90_val", "reached_90_val", "epochs", 7.4,
                            "the paper's Adam: 7.4 epochs to 90% accuracy, PAPER.md C2")
    metrics = (
        Metric("final_test_acc", "higher", "final test accuracy", margin=0.01, **_PP),
        Metric("epochs_to_90", "lower", "epochs to 90 % test accuracy", " epochs", margin=1.0),
        Metric("reached_90", "higher", "reached 90 % test accuracy", margin=0.1,
               compared=False),
        Metric("final_val_acc", "higher", "final validation accuracy", margin=0.01, **_PP),
        Metric("epochs_to_90_val", "lower", "epochs to 90 % validation accuracy", " epochs",
               margin=1.0),
        Metric("reached_90_val", "higher", "reached 90 % validation accuracy", compared=False),
        Metric("mean_train_loss", "lower", "mean training loss", margin=0.005),
        Metric("final_train_loss", "lower", "final training loss", margin=0.005),
        Metric("sec_per_epoch", "lower", "seconds per epoch", " s", timing=True),
        Metric("sec_to_target", "lower", "seconds to 90 % test accuracy", " s", timing=True),
        Metric("sec_total", "lower", "seconds of training", " s", timing=True, compared=False),
        Metric("perturbation_ratio", "none", "‖λ·Q‖ / ‖Adam step‖", compared=False),
    )

    def run(self, spec) -> dict[str, Any]:
        return run(spec)

    def seed_batched_by_default(self, options: ClassifierOptions) -> bool:
        """Seed-batched by default on a GPU (``[classifier].device = "cuda"``), where a batch of
        the headline cell trains 37x the runs of one run a GPU and 7x the best one-run packing
        (results/bench/seed_batched_gpu.md); one run a job on the CPU, where it gains 1.2x in
        CPU time (results/bench/seed_batched.md) and the committed grids' records are one-run
        ones. ``[grid].seed_batched`` set either way wins."""
        return self.resources_of(options) == "gpu"

    def resources_of(self, options: ClassifierOptions) -> str:
        """``gpu`` for ``[classifier].device = "cuda"`` (the runner's GPU layout), else
        ``cpu``."""
        return "gpu" if getattr(options, "device", "cpu") == "cuda" else "cpu"

    def check_spec(self, spec) -> None:
        check_circuit_shots(ClassifierOptions(**spec.config), parse_variant(spec.variant))

    def run_batch(self, specs) -> list:
        from .seed_batch import run_batch

        return run_batch(specs)

    def describe(self, cfg, runs) -> str:
        o, baseline_lr = cfg.arm_options, cfg.baseline_lr
        schedule = ("cosine learning-rate decay to 0" if o.schedule == "cosine"
                    else "constant learning rate")
        clip = f"gradient clipping {o.clip_grad:g}" if o.clip_grad else "no gradient clipping"
        attention = (f"`quantum` (circuit term on: {o.attn_qubits} qubits, depth "
                     f"{o.attn_depth}, readout {o.attn_readout}"
                     + (f", {o.attn_shots} shots per score" if o.attn_shots else "")
                     + (f", noise model of {o.attn_noise}" if o.attn_noise else "")
                     + ") or `classical`")
        if o.circuit_shots:
            attention += (f"; circuit perturbation read out from {o.circuit_shots} X-basis "
                          "shots per group and step")
        eps = f"{DEFAULTS['eps']:g}".replace("e-0", "e-")  # the arm sets neither β nor ε
        lr = (f"Adam β {tuple(DEFAULTS['betas'])}, ε {eps}; reference lr "
              f"{baseline_lr:g}")
        if cfg.selected_lr:
            lr += (f" (the lr {self.baselines[0]} selected on validation; selected: "
                   + ", ".join(f"{v} {x:g}" for v, x in sorted(cfg.selected_lr.items())) + ")")
        if o.n_val:
            splits = (f"{o.n_train - o.n_val} train, {o.n_val} validation (the last of the "
                      f"{o.n_train} training draws, held out) and {o.n_test} test examples. "
                      "Splits: metrics named *validation* (`final_val_acc`, "
                      "`epochs_to_90_val`) read the validation split, which every choice "
                      "reads; those named *test* (`final_test_acc`, `epochs_to_90`, "
                      "`sec_to_target`, the claims' verdicts) the test set, read for final "
                      "metrics only; training loss the training split")
        else:
            splits = (f"{o.n_train} train / {o.n_test} test examples, no validation split: "
                      "every accuracy below is test accuracy")
        task = get_task(o.dataset).describe(o)
        if cfg.cells and all(c.get("task") and c.get("options") for c in cfg.cells):
            # no run reads the table's own task: each cell names its own (listed below)
            task = ("Tasks: every cell runs a task of its own (listed below with the options "
                    "it changes, its sizes included); the rest is the grid's. ")
        return (
            task + f"Splits: {splits}. " +
            f"Model: {o.n_layers}-layer transformer, d={o.d_model}, {o.n_heads} heads, "
            f"feed-forward {o.d_ff}, dropout {o.dropout:g}; attention {attention}. "
            f"{o.epochs} epochs, batch {o.batch_size}, weight decay {o.weight_decay:g}, "
            f"{clip}, {schedule}; {lr}. Seeds pair runs: seed s fixes data order, init and "
            f"noise for every variant." + (
                " Seed-batched: a cell's seeds were trained at once, each run as its own (the "
                "same metrics as one run alone), its timings its share of its job's."
                if getattr(cfg, "seed_batched", False) else "") + "\n")


#: Wall-clock metrics: they vary between equal runs; every other metric is bit-reproducible.
TIMING_METRICS = tuple(m.name for m in Classifier.metrics if m.timing)
