"""The LLM arm's options (the ``[llm]`` table of a config), their validation, and the
learning-rate schedule they define.

Light on purpose: the arm registry (:mod:`ablations.arms.llm`) imports this module when a
config is loaded, so it imports neither torch nor transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..schedules import SCHEDULES
from ..schedules import lr_at as _lr_at
from .data import task_names

__all__ = ["LLMOptions", "lr_at", "DEFAULT_MODEL", "ATTN_IMPLS", "BATCHINGS", "PRECISIONS",
           "LOSS_TOKENS", "COMPILE_MODES", "CUDA_GRAPH_MODES", "COMPILE_SCOPES",
           "FLEX_KERNEL_KEYS", "parse_flex_kernel", "flex_kernel_options", "flex_call_options"]

DEFAULT_MODEL = "smollm2-135m-instruct"
ATTN_IMPLS = ("auto", "flex", "varlen", "sdpa")
#: packed rows of many examples (the calibrated protocol) or one example a step (the paper's)
BATCHINGS = ("packed", "example")
#: "auto" follows ``amp`` (bf16 when on, else fp32), as before the option existed
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: the tokens the trained-on loss scores: the assistant's answer, or the whole conversation
LOSS_TOKENS = ("answer", "all")
#: torch.compile's modes for the training forward; the second and third replay CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: what torch.compile compiles: the whole training step, or one decoder layer shared by all
COMPILE_SCOPES = ("model", "layer")
#: the FlexAttention kernel options ``[llm].flex_kernel`` may set: the forward kernel's tiles
#: (queries × keys) and the backward's (M1 × N1 for the key/value gradients, M2 × N2 for the
#: query gradient), and each kernel's warps and pipeline stages
FLEX_TILE_KEYS = ("fwd_BLOCK_M", "fwd_BLOCK_N", "bwd_BLOCK_M1", "bwd_BLOCK_N1", "bwd_BLOCK_M2",
                  "bwd_BLOCK_N2")
FLEX_KERNEL_KEYS = FLEX_TILE_KEYS + ("fwd_num_warps", "fwd_num_stages", "bwd_num_warps",
                                     "bwd_num_stages")


@dataclass(frozen=True)
class LLMOptions:
    """Arm options (the ``[llm]`` table of a config). 0 or "" means "the default source/all".

    model: model spec (see :mod:`ablations.llm`). tokenizer: ``"auto"`` (the model's own; a
    byte-level chat tokenizer for ``random:`` models), ``"byte"``, or a model spec whose
    tokenizer to use. task: the data set (a registered :class:`ablations.llm.data.LMTask`,
    default ``"gsm8k"``). data_dir: the task's data directory (for GSM8K: "" →
    ``$QSGD_GSM8K_DIR`` → the hub).
    batching: ``"packed"`` (default: whole examples packed into rows of ``max_len`` tokens,
    ``tokens_per_batch`` tokens a step) or ``"example"`` (the paper's batch 1: one example a
    step at its own length, rounded up to a multiple of ``bucket`` tokens with the padding
    unscored; :mod:`ablations.llm.examples`). max_len: tokens per packed row, and the context:
    longer examples are truncated. tokens_per_batch: tokens per step (a multiple of max_len;
    packed only). bucket: the length quantum of example batching (0: every example its own
    length; see :mod:`ablations.llm.examples` for the compilation this implies).
    loss_tokens: the tokens of the trained-on loss: ``"answer"`` (default: the assistant turn
    after the generation prompt, up to its end-of-turn token) or ``"all"`` (every token after
    the first of the chat-formatted example, as a plain causal-LM recipe; example batching
    only). Example batching records both losses each step, whichever is trained on.
    lr, schedule, warmup, min_lr_ratio, weight_decay, clip_grad, bias_correction: optimisation.
    fused_clip: clip with :meth:`qsgd.SuperpositionalAdamW.clip_grad_norm_` (torch's norm and
    coefficient, the product with the gradients done by the fused CUDA kernel as it reads
    them: one pass over the gradients fewer) instead of ``torch.nn.utils.clip_grad_norm_``
    (default false). The same clipping, but a differently compiled kernel: on an H200 the
    second moment came out one rounding apart in places, so runs with it are other runs (their
    own keys), not the default's numbers.
    val_examples: the last N of the task's training examples held out as the validation set
    (0: none; every choice reads it, never the test set); its loss is ``val_loss``.
    train_examples / test_loss_examples: use only the first N (0: all). eval_questions: test
    questions decoded greedily for exact match. max_new_tokens, eval_batch: decoding limits.
    curve_every, ratio_every: sampling of the curve and of the perturbation ratio (steps).
    compile: torch.compile the training forward. compile_mode: its ``mode`` (``"default"``;
    ``"reduce-overhead"`` replays each static shape, one per length bucket, as a CUDA graph:
    the same kernels, so the same numbers, without their launch cost; on a CPU there is no
    graph to replay). compile_scope: ``"model"`` (default: the whole step, one graph per
    shape) or ``"layer"`` (example batching only: one decoder layer is compiled and reused by
    every layer, so each shape costs one layer's compilation; the embedding, LM head and loss
    run eager; other fusions, so not the same bits). attn_impl: auto (flex on CUDA, sdpa on CPU),
    flex (FlexAttention, a document-causal block mask), varlen (torch's variable-length
    FlashAttention over the examples of a step; CUDA, torch ≥ 2.9, not under CUDA graphs; an
    independent kernel for cross-checks, measured slower than flex at the 135M shape: 50.9
    against 35.0 ms a compiled forward + backward on an H200),
    sdpa (the dense-mask reference; packed only: example batching attends causally with
    SDPA). flex_block: the FlexAttention block mask's block (tokens, a power of two from 16
    to 128; default 128, torch's): the kernels skip the blocks of query × key pairs that the
    document-causal mask leaves empty, so a finer block computes fewer masked pairs (GSM8K's
    short examples leave most 128-blocks partly empty). flex_kernel: FlexAttention's kernel
    options as ``key=value`` pairs separated by commas (keys :data:`FLEX_KERNEL_KEYS`, e.g.
    ``"fwd_BLOCK_M=64,fwd_BLOCK_N=64"``; "" default: torch's own choice for the device); every
    tile must be a power of two from 16 that divides flex_block, with bwd_BLOCK_N1 a multiple
    of bwd_BLOCK_M1 and bwd_BLOCK_M2 of bwd_BLOCK_N2 (the kernels' constraints). With a
    flex_block below 128 a tile left unset is the flex_block (torch's defaults are 128-wide,
    which no smaller block divides). Both change the kernels' summation order, so the loss to
    rounding, not the function. amp: mixed
    precision (bfloat16 autocast unless ``precision`` says otherwise). precision: ``"auto"``
    (default: bf16 with ``amp``, else fp32), ``"bf16"``, ``"fp16"`` (float16 autocast with
    dynamic loss scaling, :mod:`ablations.llm.precision`) or ``"fp32"``; an explicit value
    wins over ``amp``, except that ``amp = false`` with bf16 or fp16 is a contradiction.
    device: auto, cpu, cuda, cuda:N.

    A run's key hashes the table as written, so options left at their defaults (``task``,
    ``batching``, ``bucket``, ``precision``, ``loss_tokens``, ``compile_mode``,
    ``compile_scope``) keep the keys of runs made before they existed.
    """

    model: str = DEFAULT_MODEL
    tokenizer: str = "auto"
    task: str = "gsm8k"
    data_dir: str = ""
    batching: str = "packed"
    max_len: int = 2048
    tokens_per_batch: int = 8192
    bucket: int = 64
    loss_tokens: str = "answer"
    lr: float = 3e-4
    schedule: str = "cosine"
    warmup: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    fused_clip: bool = False
    bias_correction: bool = True
    val_examples: int = 0
    train_examples: int = 0
    test_loss_examples: int = 0
    eval_questions: int = 500
    max_new_tokens: int = 320
    eval_batch: int = 512
    curve_every: int = 10
    ratio_every: int = 50
    compile: bool = True
    compile_mode: str = "default"
    compile_scope: str = "model"
    attn_impl: str = "auto"
    flex_block: int = 128
    flex_kernel: str = ""
    amp: bool = True
    precision: str = "auto"
    device: str = "auto"

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> LLMOptions:
        """Build from a config table; unknown keys, wrong types and invalid values raise
        ValueError naming ``[llm].<key>``."""
        from ..arms.base import options_from_table

        return options_from_table(cls, options, "llm")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming ``[llm].<key>`` for the first invalid value."""
        if self.max_len < 8:
            raise ValueError(f"[llm].max_len must be >= 8, got {self.max_len}")
        if self.batching == "packed" and (self.tokens_per_batch < self.max_len
                                          or self.tokens_per_batch % self.max_len):
            raise ValueError(f"[llm].tokens_per_batch ({self.tokens_per_batch}) must be a "
                             f"positive multiple of max_len ({self.max_len})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"[llm].lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"[llm].schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"[llm].attn_impl must be one of {', '.join(ATTN_IMPLS)}, "
                             f"got {self.attn_impl!r}")
        if self.task not in task_names():
            raise ValueError(f"[llm].task must be one of {', '.join(task_names())}, "
                             f"got {self.task!r}")
        for key, valid in (("batching", BATCHINGS), ("precision", PRECISIONS),
                           ("loss_tokens", LOSS_TOKENS), ("compile_mode", COMPILE_MODES),
                           ("compile_scope", COMPILE_SCOPES)):
            if getattr(self, key) not in valid:
                raise ValueError(f"[llm].{key} must be one of {', '.join(valid)}, "
                                 f"got {getattr(self, key)!r}")
        if not self.amp and self.precision in ("bf16", "fp16"):
            raise ValueError(f"[llm].precision = {self.precision!r} is mixed precision, but "
                             "[llm].amp = false: drop amp (precision wins) or set precision = "
                             "'fp32'")
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"[llm].compile_mode = {self.compile_mode!r} needs [llm].compile "
                             "= true")
        if self.compile_scope != "model" and not (self.compile and self.per_example):
            raise ValueError(f"[llm].compile_scope = {self.compile_scope!r} needs [llm].compile "
                             "= true and batching = 'example' (packed rows compile the whole "
                             "step)")
        if self.compile_mode in CUDA_GRAPH_MODES and self.per_example and self.bucket == 0:
            raise ValueError(f"[llm].compile_mode = {self.compile_mode!r} needs [llm].bucket > 0 "
                             "with batching = 'example' (bucket 0 compiles one dynamic shape, "
                             "which CUDA graphs would record once per example length)")
        if self.compile_mode in CUDA_GRAPH_MODES and self.attn_impl == "varlen":
            raise ValueError(f"[llm].attn_impl = 'varlen' does not run under CUDA graphs "
                             f"(compile_mode = {self.compile_mode!r}): use 'flex', or "
                             "compile_mode = 'default'")
        if not 0 <= self.bucket <= self.max_len:
            raise ValueError(f"[llm].bucket must lie in [0, max_len = {self.max_len}], "
                             f"got {self.bucket}")
        if self.batching == "packed" and self.loss_tokens != "answer":
            raise ValueError(f"[llm].loss_tokens = {self.loss_tokens!r} needs batching = "
                             "'example' (packed rows score the answer tokens only)")
        if self.flex_block not in (16, 32, 64, 128):
            raise ValueError(f"[llm].flex_block must be 16, 32, 64 or 128, got "
                             f"{self.flex_block!r}")
        parse_flex_kernel(self.flex_kernel, self.flex_block)
        if (self.flex_block != 128 or self.flex_kernel) and (
                self.attn_impl in ("varlen", "sdpa") or self.per_example):
            raise ValueError("[llm].flex_block and [llm].flex_kernel apply to FlexAttention "
                             "over packed rows (attn_impl = 'flex', or 'auto' on CUDA), not "
                             f"to attn_impl = {self.attn_impl!r} with batching = "
                             f"{self.batching!r}")
        if self.per_example and self.attn_impl in ("flex", "varlen"):
            raise ValueError(f"[llm].attn_impl = {self.attn_impl!r} applies to packed rows; "
                             "batching = 'example' attends causally with SDPA (use 'auto' or "
                             "'sdpa')")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"[llm].min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        for key in ("warmup", "val_examples", "train_examples", "test_loss_examples",
                    "eval_questions"):
            if getattr(self, key) < 0:
                raise ValueError(f"[llm].{key} must be >= 0, got {getattr(self, key)}")
        for key in ("max_new_tokens", "eval_batch", "curve_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"[llm].{key} must be >= 1, got {getattr(self, key)}")
        if self.ratio_every < 0:
            raise ValueError(f"[llm].ratio_every must be >= 0, got {self.ratio_every}")
        if self.clip_grad < 0 or self.weight_decay < 0:
            raise ValueError("[llm].clip_grad and [llm].weight_decay must be >= 0")

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled training forward replays CUDA graphs (``compile_mode``)."""
        return self.compile and self.compile_mode in CUDA_GRAPH_MODES

    @property
    def per_example(self) -> bool:
        """Whether batching is ``"example"`` (one example a step) rather than packed rows: the
        one test of it (sessions, training loop, bench)."""
        return self.batching == "example"

    @property
    def effective_precision(self) -> str:
        """The precision in effect: ``"bf16"``, ``"fp16"`` or ``"fp32"`` (``precision``, or
        with ``"auto"`` bf16 when ``amp`` is on, else fp32)."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.amp else "fp32"


def parse_flex_kernel(text: str, block: int = 128) -> dict[str, int]:
    """``[llm].flex_kernel`` (``"key=value,key=value"``) as a dict of ints; ValueError naming
    ``[llm].flex_kernel`` and the pair at fault for an unknown key, a value that is not a
    positive integer, a key given twice, a tile that is not a power of two from 16 dividing
    ``block`` (``[llm].flex_block``), or backward tiles the kernels reject."""
    if not isinstance(text, str):
        raise ValueError(f"[llm].flex_kernel must be a string of key=value pairs, got "
                         f"{text!r}")
    out: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, eq, val = (t.strip() for t in pair.partition("="))
        if key not in FLEX_KERNEL_KEYS:
            raise ValueError(f"[llm].flex_kernel: unknown key {key!r} in {pair!r} (valid: "
                             f"{', '.join(FLEX_KERNEL_KEYS)})")
        if not eq or not val.isdigit() or int(val) < 1:
            raise ValueError(f"[llm].flex_kernel: {pair!r} needs a positive integer value")
        if key in out:
            raise ValueError(f"[llm].flex_kernel: {key!r} is given twice")
        n = int(val)
        if key in FLEX_TILE_KEYS and (n < 16 or n & (n - 1) or block % n):
            raise ValueError(f"[llm].flex_kernel: {key} = {n} must be a power of two from 16 "
                             f"that divides flex_block = {block}")
        out[key] = n
    full = flex_kernel_options(out, block)
    m1, n1 = full.get("bwd_BLOCK_M1"), full.get("bwd_BLOCK_N1")
    m2, n2 = full.get("bwd_BLOCK_M2"), full.get("bwd_BLOCK_N2")
    if m1 and n1 and n1 % m1:
        raise ValueError(f"[llm].flex_kernel: bwd_BLOCK_N1 = {n1} must be a multiple of "
                         f"bwd_BLOCK_M1 = {m1}")
    if m2 and n2 and m2 % n2:
        raise ValueError(f"[llm].flex_kernel: bwd_BLOCK_M2 = {m2} must be a multiple of "
                         f"bwd_BLOCK_N2 = {n2}")
    return out


def flex_kernel_options(given: dict[str, int], block: int) -> dict[str, int]:
    """The kernel options FlexAttention is called with: ``given`` (parsed
    ``[llm].flex_kernel``), and with a block below 128 every tile left unset equal to the
    block (torch's own tiles are 128 wide at the 64-wide heads of these models)."""
    out = dict(given)
    if block < 128:
        for key in FLEX_TILE_KEYS:
            out.setdefault(key, block)
    return out


def flex_call_options(block: int, kernel: str) -> dict[str, int] | None:
    """The ``kernel_options`` the arm calls FlexAttention with for ``[llm].flex_block`` =
    ``block`` and ``[llm].flex_kernel`` = ``kernel`` (validated; None: torch's choice)."""
    return flex_kernel_options(parse_flex_kernel(kernel, block), block) or None


def lr_at(step: int, steps: int, o: LLMOptions, lr: float) -> float:
    """Learning rate of 0-based ``step`` of ``steps``: linear warm-up, then the schedule down
    to ``min_lr_ratio`` × lr at the last step (:func:`ablations.schedules.lr_at`)."""
    return _lr_at(step, lr, schedule=o.schedule, horizon=steps - 1, warmup=o.warmup,
                  min_ratio=o.min_lr_ratio)

