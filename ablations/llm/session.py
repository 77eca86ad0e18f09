"""Sessions of the LLM arm: everything that survives across the runs of one process (the
loaded model, its compiled loss, the encoded data, the packed or per-example batches), and the
process's place in a data-parallel group.

A worker process runs many specs; those that share the session's key (model, tokenizer, task,
data, shapes, compile and attention settings, device, rank) reuse one session, and each run
starts from the stored base weights (:func:`ablations.llm.train.reset_weights`). Batches are
cached per data-order seed (the two most recent), so the variants of one seed share them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from qsgd.models.llama import CompactLlama, set_flex_block

from .data import LMTask, get_task
from .examples import ExampleBatches, causal_layer, example_batches, example_losses
from .loading import BaseModel, load_base
from .options import LLMOptions, flex_call_options
from .packing import DeviceBatches, FlexMasks, loss_capacity, pack, to_device
from .precision import build_model

__all__ = ["Dist", "dist_info", "Session", "open_session", "epoch_batches", "eval_batches",
           "sync", "device_name", "peak_flops", "PEAK_BF16"]

#: dense bf16 peak of the GPUs we report MFU on (vendor datasheets, SXM parts), FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


@dataclass
class Dist:
    """This process's place in a data-parallel group (torchrun's environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def dist_info() -> Dist:
    """Rank, world size and local rank from ``$WORLD_SIZE``/``$LOCAL_RANK``; under torchrun
    (world > 1) the process group is initialised here on first use (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _pick_device(o: LLMOptions, d: Dist) -> torch.device:
    # data-parallel ranks each take the GPU of their local rank, whatever [llm].device says
    if o.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", d.local_rank)
        return torch.device("cpu")
    dev = torch.device(o.device)
    if dev.type == "cuda" and d.world > 1:
        return torch.device("cuda", d.local_rank)
    if dev.type == "cuda" and dev.index is None:
        # "cuda" names the current GPU; torch.cuda.set_device needs its index
        return torch.device("cuda", torch.cuda.current_device())
    return dev


@dataclass
class Session:
    """One process's loaded state for runs that share its key (see :func:`open_session`).

    train_examples, test_examples, val_examples: encoded ``(ids, a, b)`` of the training set,
    the test-loss set and the validation set (carved from the task's training examples; empty
    without ``val_examples``); test_data: the task's test examples (the exact-match questions);
    base_params: device copies of the base weights that every run starts from; loss_fn: the
    packed rows' loss (``model.loss``, compiled or not); attn_impl: the attention in effect,
    ``"flex"`` or ``"sdpa"`` (``[llm].attn_impl`` with ``"auto"`` resolved for the device and
    batching); example_fn: with example batching,
    ``(ids, tgt, ans) -> (loss, [all-token loss, answer loss])``
    (:func:`ablations.llm.examples.example_losses`, compiled or not); train_cache: training
    batches per data-order seed; warm: (variant, shapes) pairs whose step is compiled;
    segments: with ``attn_impl = "varlen"``, the segments per step of the training batches
    (later data orders and the test and validation sets pad to as many when they fit, so one
    graph serves them), else None.
    """

    key: tuple
    opts: LLMOptions
    base: BaseModel
    device: torch.device
    dist: Dist
    model: CompactLlama
    base_params: list[Tensor]
    loss_fn: Callable
    flex: FlexMasks | None
    train_examples: list
    test_examples: list
    test_data: list
    task: LMTask
    val_examples: list = field(default_factory=list)
    attn_impl: str = "sdpa"
    example_fn: Callable | None = None
    train_cache: dict = field(default_factory=dict)
    eval_cache: dict = field(default_factory=dict)
    warm: set = field(default_factory=set)
    segments: int | None = None


_SESSIONS: dict[str, Session] = {}


def open_session(o: LLMOptions, init_seed: int) -> Session:
    """The session for options ``o`` (and, for ``random:`` models, the init seed): the current
    one when its key matches, else a new one that replaces it. Loads the base model, builds
    and optionally compiles the loss, and reads and encodes the task's examples."""
    d = dist_info()
    device = _pick_device(o, d)
    key = (o.model, o.tokenizer, o.task, o.data_dir, o.max_len, o.tokens_per_batch,
           o.val_examples, o.train_examples, o.test_loss_examples, o.compile, o.compile_mode,
           o.compile_scope, o.attn_impl, o.flex_block, o.flex_kernel, o.amp, o.batching,
           o.bucket, o.effective_precision, o.loss_tokens,
           str(device), d.world, d.rank, init_seed if o.model.startswith("random:") else None)
    cur = _SESSIONS.get("current")
    if cur is not None and cur.key == key:
        return cur
    _SESSIONS.pop("current", None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.empty_cache()
        torch.backends.cuda.matmul.allow_tf32 = True
    base = load_base(o.model, o.tokenizer, init_seed)
    model = build_model(base.shape, base.inv_freq, o.effective_precision)
    model.load_state_dict(base.state, strict=False)
    missing = set(model.state_dict()) - set(base.state) - (
        {"lm_head.weight"} if base.shape.tie_embeddings else set())
    if missing:
        raise ValueError(f"{o.model}: weights missing for {sorted(missing)[:5]}")
    model.to(device)
    base_params = [p.detach().clone() for p in model.parameters()]
    per_example = o.per_example
    impl = o.attn_impl
    if impl == "auto":
        impl = "flex" if device.type == "cuda" and not per_example else "sdpa"
    if impl == "flex" and device.type != "cuda":
        raise ValueError("[llm].attn_impl = 'flex' needs a CUDA device (FlexAttention has no "
                         "CPU backward); use 'sdpa' on a CPU")
    if impl == "varlen" and device.type != "cuda":
        raise ValueError("[llm].attn_impl = 'varlen' needs a CUDA device (FlashAttention); use "
                         "'sdpa' on a CPU")
    if per_example and d.world > 1:
        raise ValueError("[llm].batching = 'example' trains one example a step, which does not "
                         f"split over {d.world} data-parallel ranks: run it on one device")
    rows = max(1, o.tokens_per_batch // o.max_len)
    if rows % d.world:
        raise ValueError(f"{rows} rows per step do not split over {d.world} ranks")
    flex = FlexMasks(rows // d.world, o.max_len, device, o.flex_block) if impl == "flex" \
        else None
    if impl == "flex":  # the kernels' tiles ([llm].flex_kernel): None is torch's choice
        model.flex_kernel_options = flex_call_options(o.flex_block, o.flex_kernel)
    # a mask finer than Inductor's own tiles compiles (128: Inductor's configurations as they are)
    set_flex_block(o.flex_block if impl == "flex" else None)
    loss_fn = model.loss
    if o.compile and not per_example:  # example batching steps through example_fn alone
        loss_fn = torch.compile(model.loss, dynamic=False, mode=o.compile_mode)
    example_fn = None
    if per_example:
        train_all = o.loss_tokens == "all"

        layer_fn = None
        if o.compile and o.compile_scope == "layer":  # one layer compiled, shared by all
            layer_fn = torch.compile(causal_layer, dynamic=o.bucket == 0, mode=o.compile_mode)

        def example_fn(ids, tgt, ans):
            return example_losses(model, ids, tgt, ans, train_all, layer_fn)

        if o.compile and layer_fn is None:  # static shapes per bucket, dynamic without buckets
            example_fn = torch.compile(example_fn, dynamic=o.bucket == 0, mode=o.compile_mode)
    tok = base.tokenizer
    task = get_task(o.task).from_options(o)
    train = list(task.train_examples())
    test = list(task.test_examples())
    if o.val_examples >= len(train):
        raise ValueError(f"[llm].val_examples ({o.val_examples}) must be below the task's "
                         f"{len(train)} training examples")
    val = train[len(train) - o.val_examples:] if o.val_examples else []
    train = train[:len(train) - o.val_examples]
    if o.train_examples:
        train = train[:o.train_examples]
    test_loss_set = test[:o.test_loss_examples] if o.test_loss_examples else test
    enc_train = tok.encode_examples([e.question for e in train], [e.answer for e in train])
    enc_test = tok.encode_examples([e.question for e in test_loss_set],
                                   [e.answer for e in test_loss_set])
    enc_val = tok.encode_examples([e.question for e in val], [e.answer for e in val]) \
        if val else []
    sess = Session(key, o, base, device, d, model, base_params, loss_fn, flex, enc_train,
                   enc_test, test, task, val_examples=enc_val, attn_impl=impl,
                   example_fn=example_fn, segments=0 if impl == "varlen" else None)
    _SESSIONS["current"] = sess
    return sess


def epoch_order(n: int, order_seed: int) -> np.ndarray:
    """The order of ``n`` training examples in the epoch of ``order_seed``: a permutation by
    numpy's default generator."""
    return np.random.default_rng(order_seed).permutation(n)


def epoch_batches(sess: Session, order_seed: int) -> DeviceBatches | ExampleBatches:
    """The training examples in the order of ``order_seed`` (a permutation by numpy's
    default generator), packed (or one a step, with example batching) and on this rank's
    device."""
    if order_seed not in sess.train_cache:
        o = sess.opts
        order = epoch_order(len(sess.train_examples), order_seed)
        while len(sess.train_cache) >= 2:
            sess.train_cache.pop(next(iter(sess.train_cache)))
        if o.per_example:
            sess.train_cache[order_seed] = example_batches(
                sess.train_examples, order, o.max_len, o.bucket, sess.base.tokenizer.pad_id,
                sess.device)
        else:
            p = pack(sess.train_examples, order, o.max_len, o.tokens_per_batch // o.max_len,
                     sess.base.tokenizer.pad_id)
            b = to_device(p, sess.device, sess.dist.rank, sess.dist.world, sess.flex,
                          segments=sess.segments)
            if b.cu_seqlens is not None:  # later orders and the eval sets pad to the same K
                sess.segments = b.cu_seqlens.shape[1] - 1
            sess.train_cache[order_seed] = b
    return sess.train_cache[order_seed]


def eval_batches(sess: Session, capacity: int, split: str = "test"
                 ) -> DeviceBatches | ExampleBatches:
    """The test (or validation) set packed like a training step of this rank (same shapes:
    the compiled graph is reused), with the training capacity unless a step scores more;
    with example batching, one example a step in the set's order."""
    o = sess.opts
    cached = sess.eval_cache.get(split)
    if o.per_example:
        if cached is None:
            examples = sess.val_examples if split == "val" else sess.test_examples
            sess.eval_cache[split] = cached = example_batches(
                examples, range(len(examples)), o.max_len, o.bucket,
                sess.base.tokenizer.pad_id, sess.device)
        return cached
    if cached is None or cached.capacity < capacity:
        examples = sess.val_examples if split == "val" else sess.test_examples
        rows = o.tokens_per_batch // o.max_len // sess.dist.world
        p = pack(examples, range(len(examples)), o.max_len, rows, sess.base.tokenizer.pad_id)
        need = int(p.n_loss.max())
        cap = capacity if need <= capacity else loss_capacity(need, rows * o.max_len)
        sess.eval_cache[split] = cached = to_device(p, sess.device, 0, 1, sess.flex,
                                                    capacity=cap, segments=sess.segments)
    return cached


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; a no-op on a CPU): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The GPU's name, or ``cpu (<machine>, <threads> threads)``: a record's device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak (:data:`PEAK_BF16`) of a known GPU, else None (no MFU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return None

