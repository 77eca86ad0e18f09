"""Example batching of the LLM arm (``[llm].batching = "example"``): the paper's batch 1, one
chat-formatted example a step, and the two losses recorded for it.

Each step is one example: the rendered conversation ``x`` (n tokens, truncated to
``max_len``), padded at the end up to ``L = bucket · ⌈n / bucket⌉`` tokens (``bucket = 0``:
L = n). Attention is causal (SDPA), so the trailing padding changes no real position; its
targets are :data:`IGNORE`. Position j predicts token j + 1, with per-position cross-entropy
ℓ_j = −log p(x_{j+1} | x_{≤j}). Two losses per step, both from one forward:

    all-token loss   (1 / (n − 1)) · Σ_{j=0}^{n−2} ℓ_j
                     every token after the first is scored, as in a plain causal-LM recipe
                     (labels = input ids, shifted by the model);
    answer loss      (1 / (b − a)) · Σ_{j=a−1}^{b−2} ℓ_j
                     only the assistant's answer ``x[a:b]`` (after the template's generation
                     prompt, up to and including its end-of-turn token) is scored.

``[llm].loss_tokens`` picks the one that is trained on (its gradient is taken); the other is
recorded alongside it. Logits are computed at every position, whichever loss is trained.

Compilation: ``bucket > 0`` gives few shapes (GSM8K chat examples of SmolLM2's tokenizer are
97–570 tokens long: 8 shapes with the default bucket of 64, 12.7% padding), each compiled once
with static shapes (``dynamic=False``: Inductor specialises every kernel on the length, and
static shapes are what CUDA graphs need) before the timed loop; ``bucket = 0`` gives every
length its own shape and is compiled once with dynamic shapes (``dynamic=True``) instead of
once per length. Padding costs little at batch 1, where a step is bound by kernel launches,
not by arithmetic. ``[llm].compile_scope = "layer"`` compiles one decoder layer
(:func:`causal_layer`) instead of the whole step: the 30 layers share its code, so each shape
costs one layer's compilation rather than the model's (the embedding, the LM head and the
loss run eager).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qsgd.models.llama import IGNORE, CompactLlama

__all__ = ["ExampleBatches", "bucket_length", "example_batches", "example_losses",
           "RECOMPILE_LIMIT"]

#: dynamo's cache entries allowed for the example step while every bucket is compiled (the
#: default of 8 would send the ninth bucket to eager mode); at most max_len / bucket shapes
RECOMPILE_LIMIT = 256


def bucket_length(n: int, bucket: int, max_len: int) -> int:
    """The padded length of an n-token example: n rounded up to a multiple of ``bucket``
    (``bucket = 0``: n), at most ``max_len`` (n itself is at most ``max_len``)."""
    if bucket <= 0:
        return n
    return min(max_len, bucket * math.ceil(n / bucket))


@dataclass
class ExampleBatches:
    """One example a step, on the device.

    ids[s]: [1, L_s] token ids (padding ``pad_id``); tgt[s]: [L_s] the next token at every
    position of the all-token loss (IGNORE at the last real position and on the padding);
    ans[s]: [L_s] bool, True where that target is an answer token. lengths: L_s. n_real,
    n_all, n_answer: per-step numbers of real tokens, of all-token and of answer targets
    (host arrays). attn_pairs: Σ n(n+1)/2 over the examples (causal attention's query-key
    pairs). truncated: examples cut at ``max_len``.
    """

    ids: list[Tensor]
    tgt: list[Tensor]
    ans: list[Tensor]
    lengths: list[int]
    n_real: np.ndarray
    n_all: np.ndarray
    n_answer: np.ndarray
    attn_pairs: float
    truncated: int

    @property
    def steps(self) -> int:
        return len(self.ids)

    @property
    def shapes(self) -> list[int]:
        """The distinct padded lengths, in order of first use (one compiled graph each)."""
        return list(dict.fromkeys(self.lengths))

    @property
    def slots(self) -> int:
        """Token slots of the epoch, padding included."""
        return int(sum(self.lengths))


def example_batches(examples: Sequence[tuple[Sequence[int], int, int]], order: Sequence[int],
                    max_len: int, bucket: int, pad_id: int, device: torch.device
                    ) -> ExampleBatches:
    """The examples in ``order``, one a step, on ``device``. An example is (ids, a, b):
    ``ids[a:b]`` is its answer (see the module docstring); longer than ``max_len``, it is
    truncated (counted) and its answer span with it."""
    ids_h, tgt_h, ans_h, lengths = [], [], [], []
    n_real, n_all, n_ans = [], [], []
    truncated, pairs = 0, 0.0
    for i in order:
        x, a, b = examples[i]
        x = np.asarray(x, dtype=np.int64)
        if len(x) > max_len:
            truncated += 1
            x, b = x[:max_len], min(b, max_len)
        n = len(x)
        L = bucket_length(n, bucket, max_len)
        ids = np.full(L, pad_id, dtype=np.int64)
        ids[:n] = x
        tgt = np.full(L, IGNORE, dtype=np.int64)
        tgt[:n - 1] = x[1:]
        ans = np.zeros(L, dtype=bool)
        # position j predicts token j+1: an answer target when a <= j+1 < b
        lo, hi = max(a - 1, 0), max(b - 1, 0)
        ans[lo:hi] = True
        ids_h.append(ids)
        tgt_h.append(tgt)
        ans_h.append(ans)
        lengths.append(L)
        n_real.append(n)
        n_all.append(n - 1)
        n_ans.append(max(0, hi - lo))
        pairs += n * (n + 1) / 2

    def on_device(parts: list[np.ndarray], dtype: torch.dtype) -> list[Tensor]:
        # one transfer, then a copy per step: each step's tensor is its own allocation (offset
        # 0, aligned), as compiled graphs assume of their inputs
        if not parts:
            return []
        flat = torch.from_numpy(np.concatenate(parts)).to(device, dtype)
        return [t.clone() for t in flat.split(lengths)]

    ids_d = [t.view(1, -1) for t in on_device(ids_h, torch.long)]
    return ExampleBatches(ids_d, on_device(tgt_h, torch.long), on_device(ans_h, torch.bool),
                          lengths, np.array(n_real), np.array(n_all), np.array(n_ans), pairs,
                          truncated)


def _causal(q: Tensor, k: Tensor, v: Tensor, i: int) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def causal_layer(layer, x: Tensor, cos: Tensor, sin: Tensor, dtype: torch.dtype) -> Tensor:
    """One decoder layer with causal attention (the ``layer_fn`` of
    :meth:`CompactLlama.hidden`): the function ``[llm].compile_scope = "layer"`` compiles once
    and calls for every layer. The causal mask needs no layer index, so it passes 0."""
    return layer(x, cos, sin, _causal, 0, dtype)


def example_losses(model: CompactLlama, ids: Tensor, tgt: Tensor, ans: Tensor,
                   train_all: bool, layer_fn=None) -> tuple[Tensor, Tensor]:
    """Both losses of one (padded) example, from one forward (module docstring).

    Args:
        model: the model (its autocast applies).
        ids: [1, L] token ids; tgt: [L] next-token targets (IGNORE: not scored); ans: [L]
            bool, the answer targets (a subset of the scored ones).
        train_all: the trained-on loss is the all-token one (else the answer one).
        layer_fn: runs each decoder layer (:func:`causal_layer`, compiled), or None.

    Returns ``(loss, both)``: the trained-on loss (with its graph) and the detached
    float32 pair ``[all-token loss, answer loss]``. A loss with no scored token is 0.
    """
    L = ids.shape[1]
    pos = torch.arange(L, device=ids.device).unsqueeze(0)
    with model.autocast(ids.device):
        h = model.hidden(ids, pos, _causal, layer_fn)[0]
        logits = F.linear(h, model.lm_head.weight)
        ce = F.cross_entropy(logits.float(), tgt, ignore_index=IGNORE, reduction="none")
    n_all = (tgt != IGNORE).sum().clamp_min(1)
    n_ans = ans.sum().clamp_min(1)
    loss_all = ce.sum() / n_all
    loss_ans = torch.where(ans, ce, 0.0).sum() / n_ans
    loss = loss_all if train_all else loss_ans
    return loss, torch.stack([loss_all, loss_ans]).detach()
