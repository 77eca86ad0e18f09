"""Where a DTensor's local shard lies in its global tensor, so that terms which read several
entries of a tensor (an RMS, keyed noise, circuit groups) are computed as on the whole tensor.

FSDP2 (``fully_shard``) parameters are DTensors: each rank holds a box of the global tensor
(``Shard(d)`` on a mesh dimension cuts tensor dim d into ``torch.chunk`` pieces, uneven and
possibly empty on the last ranks; ``Replicate`` keeps it whole). The optimizer steps the local
shards (:mod:`qsgd.optimizer`); a perturbation that reads several entries receives a
:class:`ShardLayout` in its :class:`qsgd.perturbations.Context` and uses it for

* global statistics: :meth:`ShardLayout.all_reduce` sums local sums over the process groups of
  the mesh dimensions that shard the tensor (the others hold copies), divided by the global
  number of entries by the caller;
* noise keyed by global position: the stream of the *global* tensor is drawn and the local
  entries taken (:meth:`ShardLayout.take`), so element i of the global tensor gets the same ξ
  whatever the sharding;
* the whole tensor when nothing smaller will do (circuit groups that may straddle two shards):
  :meth:`ShardLayout.gather`.

A leaf module: it imports torch alone; ``torch.distributed`` only when a layout is made.
Unsharded tensors have no layout (``None``), and nothing here runs for them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["ShardLayout", "layout_of"]


@dataclass(frozen=True, eq=False)
class ShardLayout:
    """The local shard of one tensor as a box of its global tensor.

    ``global_shape``: the global tensor's shape; ``local_shape``: this rank's shard's;
    ``offset``: the box's first index in each dim (the local tensor is
    ``global[offset[0]:offset[0]+local_shape[0], …]``); ``groups``: the process groups of the
    mesh dimensions that shard the tensor (sums are reduced over these; mesh dimensions that
    replicate it are left out); ``placements``: the DTensor's placements, for messages.
    """

    global_shape: tuple[int, ...]
    local_shape: tuple[int, ...]
    offset: tuple[int, ...]
    groups: tuple = ()
    placements: str = ""

    @functools.cached_property
    def numel(self) -> int:
        """Entries of the global tensor."""
        return math.prod(self.global_shape)

    @functools.cached_property
    def local_numel(self) -> int:
        return math.prod(self.local_shape)

    @functools.cached_property
    def flat_range(self) -> tuple[int, int] | None:
        """(start, stop) when the local shard is the contiguous range [start, stop) of the
        flattened global tensor (``Shard(0)``, or any box whose inner dims are whole), else
        None. An empty shard is the empty range at its first index's position."""
        strides = [1] * len(self.global_shape)
        for d in range(len(self.global_shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * self.global_shape[d + 1]
        first = sum(o * s for o, s in zip(self.offset, strides))
        if self.local_numel == 0:
            return (min(first, self.numel), min(first, self.numel))
        last = sum((o + n - 1) * s for o, n, s in zip(self.offset, self.local_shape, strides))
        return (first, last + 1) if last + 1 - first == self.local_numel else None

    def _box(self) -> tuple[slice, ...]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.local_shape))

    def take(self, full: Tensor) -> Tensor:
        """The local entries, flattened in row-major order, of ``full``: the global tensor or
        its flattening (``numel`` entries)."""
        rng = self.flat_range
        flat = full.reshape(-1)
        if rng is not None:
            return flat[rng[0]:rng[1]]
        return flat.view(self.global_shape)[self._box()].reshape(-1)

    def place(self, local: Tensor) -> Tensor:
        """A flat global tensor holding ``local`` (the shard, any shape of its size) at its
        positions and zeros elsewhere."""
        full = local.new_zeros(self.numel)
        if self.local_numel:
            full.view(self.global_shape)[self._box()] = local.reshape(self.local_shape)
        return full

    def all_reduce(self, t: Tensor) -> Tensor:
        """Sum ``t`` in place over the ranks that hold the other shards; returns ``t``. Every
        rank of those groups must call it, for the same tensors in the same order."""
        import torch.distributed as dist

        for group in self.groups:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return t

    def gather(self, local: Tensor) -> Tensor:
        """The flattened global tensor from every rank's shard (a collective: the shards are
        disjoint boxes, so the sum of the placed shards is the tensor, exactly)."""
        return self.all_reduce(self.place(local))

    def prefix(self, n: int) -> tuple[ShardLayout, int]:
        """The layout of the first ``n`` entries of the flattened global tensor (the
        ``first_n`` scope) and how many of them this shard holds (a prefix of its flattened
        local tensor). Needs a shard that is a contiguous range of the flattened tensor."""
        rng = self.flat_range
        if rng is None:
            raise ValueError(
                f"scope='first_n' on a DTensor whose local shard is not a contiguous range of "
                f"the flattened tensor (placements {self.placements}, global shape "
                f"{self.global_shape}, local {self.local_shape}): shard it on dim 0 "
                "(Shard(0), FSDP2's default) or use scope='all'")
        total = min(int(n), self.numel)
        start = min(rng[0], total)
        count = max(0, min(rng[1], total) - start)
        return ShardLayout((total,), (count,), (start,), self.groups, self.placements), count


def layout_of(t: Tensor) -> ShardLayout | None:
    """The :class:`ShardLayout` of a DTensor that is sharded over some mesh dimension, for the
    tensor the optimizer steps (``view_as_real`` of a complex one: one more dim of size 2);
    None for a replicated one, or one sharded over mesh dimensions of size 1 only. Raises
    ``ValueError`` for placements other than ``Shard(d)`` and ``Replicate`` (``Partial``,
    ``_StridedShard``)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, mesh, placements, complex_ = tuple(t.shape), t.device_mesh, tuple(t.placements), \
        t.is_complex()
    names = "(" + ", ".join(map(repr, placements)) + ")"
    for p in placements:
        if type(p) is not Shard and not isinstance(p, Replicate):
            raise ValueError(
                f"SuperpositionalAdamW steps DTensor parameters with Shard(d) and Replicate "
                f"placements only, got {names}: a {type(p).__name__} placement's local shard "
                "is not one box of the tensor")
    if all(not isinstance(p, Shard) or mesh.size(d) == 1 for d, p in enumerate(placements)):
        # replicated, or sharded over one rank only (FSDP2 at world size 1): the local tensor is
        # the whole tensor on every rank, so it is stepped as one (the same bits as unsharded)
        return None
    local, offset = compute_local_shape_and_global_offset(shape, mesh, placements)
    groups = tuple(mesh.get_group(d) for d, p in enumerate(placements) if isinstance(p, Shard))
    if complex_:  # the optimizer steps view_as_real: one more dim of 2, never sharded
        shape, local, offset = (*shape, 2), (*local, 2), (*offset, 0)
    return ShardLayout(tuple(shape), tuple(local), tuple(offset), groups, names)

