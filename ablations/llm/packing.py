"""Packing of the LLM arm: whole examples into fixed-shape rows, their device copies, and the
document-causal attention masks.

Examples are packed whole, in a given order, into rows of ``max_len`` tokens (an example never
straddles two rows; the rest of a row is padding); a step takes ``rows_per_step`` rows.
Attention is causal *within* each example (document masking) and positions restart at 0 for
each example, so packing changes nothing but speed. Every step has the same shapes, so one
compiled graph serves the whole epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.attention.flex_attention import create_block_mask

from qsgd.models.llama import IGNORE

__all__ = ["Packed", "pack", "DeviceBatches", "to_device", "loss_capacity", "FlexMasks",
           "varlen_segments"]


@dataclass
class Packed:
    """Examples packed into steps of rows (numpy, host side).

    ids/pos/doc/tgt: [S, R, L]; tgt holds the next-token target where it is scored, else
    IGNORE. n_loss: scored tokens per step. n_real: non-padding tokens. attn_pairs: Σ n(n+1)/2.
    """

    ids: np.ndarray
    pos: np.ndarray
    doc: np.ndarray
    tgt: np.ndarray
    n_loss: np.ndarray
    n_real: int
    attn_pairs: float
    n_examples: int
    truncated: int

    @property
    def steps(self) -> int:
        return self.ids.shape[0]


def pack(examples: Sequence[tuple[Sequence[int], int, int]], order: Sequence[int], max_len: int,
         rows_per_step: int, pad_id: int) -> Packed:
    """Pack whole examples, in ``order``, into rows of ``max_len`` tokens, ``rows_per_step``
    rows a step. An example is (ids, a, b): tokens ids[a:b] are scored (predicted from the
    previous position). Examples longer than ``max_len`` are truncated (counted)."""
    rows: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        n = min(len(examples[i][0]), max_len)
        if used + n > max_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    S = max(1, math.ceil(len(rows) / rows_per_step))
    shape = (S * rows_per_step, max_len)
    ids = np.full(shape, pad_id, dtype=np.int64)
    pos = np.zeros(shape, dtype=np.int64)
    doc = np.full(shape, -1, dtype=np.int32)
    tgt = np.full(shape, IGNORE, dtype=np.int64)
    truncated, n_real, pairs = 0, 0, 0.0
    for r, row in enumerate(rows):
        off = 0
        for d, i in enumerate(row):
            x, a, b = examples[i]
            x = np.asarray(x, dtype=np.int64)
            if len(x) > max_len:
                truncated += 1
                x = x[:max_len]
                b = min(b, max_len)
            n = len(x)
            ids[r, off:off + n] = x
            pos[r, off:off + n] = np.arange(n)
            doc[r, off:off + n] = d
            # position j predicts token j+1: scored when a <= j+1 < b
            lo, hi = max(a - 1, 0), max(b - 1, 0)
            if hi > lo:
                tgt[r, off + lo:off + hi] = x[lo + 1:hi + 1]
            off += n
            n_real += n
            pairs += n * (n + 1) / 2
    R = rows_per_step
    as_steps = lambda arr: arr.reshape(S, R, max_len)
    n_loss = (as_steps(tgt) != IGNORE).reshape(S, -1).sum(1)
    return Packed(as_steps(ids), as_steps(pos), as_steps(doc), as_steps(tgt), n_loss, n_real,
                  pairs, len(order), truncated)


@dataclass
class DeviceBatches:
    """One rank's share of a :class:`Packed` on the device, ready for the compiled step."""

    ids: Tensor          # [S, R, L]
    pos: Tensor
    doc: Tensor
    loss_idx: Tensor     # [S, C]
    loss_tgt: Tensor     # [S, C]
    n_loss: Tensor       # [S] float32, global scored tokens of each step
    block_masks: list | None
    packed: Packed
    capacity: int
    cu_seqlens: Tensor | None = None  # [S, K + 1] int32 (attn_impl "varlen"), else None

    @property
    def steps(self) -> int:
        return self.ids.shape[0]


def loss_capacity(count: int, total: int) -> int:
    """Slots for ``count`` scored tokens out of ``total``: rounded up to a multiple of
    total/16, so that steps (and the test set) share a few loss shapes and hence compiled
    graphs, at most ``total``."""
    quantum = max(1, total // 16)
    return min(total, quantum * math.ceil(max(count, 1) / quantum))


def varlen_segments(doc: np.ndarray, bound: int = 0) -> np.ndarray:
    """Cumulative segment offsets [S, K + 1] (int32) of the steps' flattened rows, for
    variable-length attention: ``doc`` [S, R, L] holds each token's example id (−1 padding); a
    segment is a run of one id within a row (an example, or a row's padding), so attention
    within segments is the document-causal mask. Every step has K segments: the steps with
    fewer end in empty segments (repeated offsets R·L), which attend to nothing and cost
    nothing, so every step has one shape. K = ``bound`` when the steps fit in it, else the
    most segments of a step rounded up to a multiple of 16 (few shapes, few graphs)."""
    S, R, L = doc.shape
    flat = doc.reshape(S, R * L)
    starts = np.ones((S, R * L), dtype=bool)
    starts[:, 1:] = flat[:, 1:] != flat[:, :-1]
    starts[:, ::L] = True  # a row starts a segment, whatever ids its neighbour holds
    counts = starts.sum(1)
    need = int(counts.max()) if S else 1
    K = bound if need <= bound else 16 * math.ceil(need / 16)
    cu = np.full((S, K + 1), R * L, dtype=np.int32)
    for s in range(S):
        pos = np.nonzero(starts[s])[0]
        cu[s, :len(pos)] = pos
    return cu


def to_device(p: Packed, device: torch.device, rank: int = 0, world: int = 1,
              mask_builder: Callable | None = None, capacity: int | None = None,
              segments: int | None = None) -> DeviceBatches:
    """Rank ``rank``'s share (rows ``rank·R/world`` to ``(rank+1)·R/world`` of every step) of
    ``p`` on ``device``, with the scored positions of each step gathered into ``capacity``
    slots (default :func:`loss_capacity` of the largest step) and, when ``mask_builder`` is
    given, one attention block mask per step built from the step's example ids; when
    ``segments`` is not None, the steps' segment offsets for variable-length attention
    (:func:`varlen_segments` with that bound; 0: the steps' own)."""
    S, R, L = p.ids.shape
    if R % world:
        raise ValueError(f"{R} rows per step do not split over {world} ranks")
    r0, r1 = rank * R // world, (rank + 1) * R // world
    tgt = p.tgt[:, r0:r1].reshape(S, -1)
    counts = (tgt != IGNORE).sum(1)
    C = capacity or loss_capacity(int(counts.max()), tgt.shape[1])
    idx = np.zeros((S, C), dtype=np.int64)
    lt = np.full((S, C), IGNORE, dtype=np.int64)
    for s in range(S):
        where = np.nonzero(tgt[s] != IGNORE)[0]
        if len(where) > C:
            raise ValueError(f"step {s} scores {len(where)} tokens, over the capacity {C}")
        idx[s, :len(where)] = where
        lt[s, :len(where)] = tgt[s, where]
    t = lambda a, dt=torch.long: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)
    ids, pos = t(p.ids[:, r0:r1]), t(p.pos[:, r0:r1])
    doc = t(p.doc[:, r0:r1], torch.int32)
    masks = [mask_builder(doc[s]) for s in range(S)] if mask_builder is not None else None
    cu = (t(varlen_segments(p.doc[:, r0:r1], segments), torch.int32)
          if segments is not None else None)
    return DeviceBatches(ids, pos, doc, t(idx), t(lt),
                         torch.from_numpy(p.n_loss.astype(np.float32)).to(device), masks, p, C,
                         cu)


class FlexMasks:
    """Document-causal FlexAttention block masks that all share one mask_mod object.

    The mask_mod reads the example ids from one persistent buffer; the step copies its ids into
    the buffer before the forward, so the compiled graph never sees a new function. ``block``:
    the masks' block (``BLOCK_SIZE`` of ``create_block_mask``, ``[llm].flex_block``)."""

    def __init__(self, rows: int, length: int, device: torch.device, block: int = 128):
        self.buf = torch.full((rows, length), -1, dtype=torch.int32, device=device)
        buf = self.buf

        def mask_mod(b, h, q, kv):
            return (buf[b, q] == buf[b, kv]) & (q >= kv)

        self.mask_mod = mask_mod
        self.rows, self.length, self.device, self.block = rows, length, device, block

    def __call__(self, doc: Tensor):
        self.buf.copy_(doc)
        return create_block_mask(self.mask_mod, self.rows, None, self.length, self.length,
                                 device=self.device, BLOCK_SIZE=self.block)
