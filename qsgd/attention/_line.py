"""What the native paths of Φ's line methods (:mod:`qsgd.attention.chain`,
:mod:`qsgd.attention.state`) share: their inputs checked and converted, whether the kernel
runs, and the two kernel calls (a forward pass over the scores; a backward pass that returns
∂L/∂t and the per-chunk partial sums of the parameter gradients, summed here in a fixed order).
Conversions and copies happen only where needed: at attention sizes every op counts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import _native
from ..circuit.spec import CircuitSpec

__all__ = ["line_inputs", "use_native", "needs_graph", "contiguous", "kernel_forward",
           "kernel_backward"]


def line_inputs(spec: CircuitSpec, weights: Tensor, scales: Tensor,
                t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """w (depth, 2, n), a (n,) and t checked and in one dtype: t's if float32/float64, else
    float32 (raises ``ValueError`` naming the expected shape of w)."""
    spec.check_weights(weights)
    if weights.dim() != 3:
        raise ValueError(f"weights must have shape {spec.weight_shape}, got "
                         f"{tuple(weights.shape)}")
    dt = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    tf, a, w = (x if x.dtype == dt else x.to(dt) for x in (t, scales, weights))
    return tf, a, w


def use_native(t: Tensor, native: bool | None, reason: str | None = None) -> bool:
    """Whether the kernel serves scores ``t``: ``native`` False: no; otherwise yes unless it
    cannot (``reason``, or not the CPU, or not compiled), which for ``native=True`` is a
    ``RuntimeError`` saying why."""
    if native is False:
        return False
    if reason is None and t.device.type != "cpu":
        reason = f"the kernel runs on the CPU, the scores are on {t.device}"
    if reason is None and _native.library() is None:
        reason = _native.unavailable_reason()
    if reason is not None and native:
        raise RuntimeError(f"native=True, but {reason}")
    return reason is None


def needs_graph(*xs: Tensor) -> bool:
    """Whether autograd records a graph through any of ``xs``."""
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def contiguous(*xs: Tensor) -> tuple[Tensor, ...]:
    """``xs`` contiguous (copied only where they are not), for the kernels' raw pointers."""
    return tuple(x if x.is_contiguous() else x.contiguous() for x in xs)


def kernel_forward(kernel: Callable, t: Tensor, args: tuple) -> Tensor:
    """``kernel(i0, i1, *args, out)`` over the scores, split over the threads; out has t's
    shape and dtype."""
    out = torch.empty_like(t)
    call = (*args, out.data_ptr())
    _native.run_parallel(lambda i0, i1: kernel(i0, i1, *call), t.numel(), grain=_native.BLOCK)
    return out


def kernel_backward(kernel: Callable, t: Tensor, g: Tensor, args: tuple, width: int,
                    w_rows: tuple[int, tuple[int, ...]], a_rows: tuple[int, int]
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``kernel(c0, c1, B, *args, g, gt, part)`` over the chunks of scores, split over the
    threads, then the partial sums part (chunks, width) summed over the chunks in double in a
    fixed order (independent of the threads): ∂L/∂t (t's shape), ∂L/∂w (entries
    [offset, offset + prod(shape)) as ``w_rows = (offset, shape)``) and ∂L/∂a (``a_rows =
    (offset, n)``), in t's dtype."""
    B, chunks = t.numel(), -(-t.numel() // _native.CHUNK)
    g = g if g.dtype == t.dtype else g.to(t.dtype)
    g = g if g.is_contiguous() else g.contiguous()  # e.g. an expanded ones from .sum()
    gt = torch.empty_like(t)
    part = torch.empty(chunks, width, dtype=torch.float64)
    call = (B, *args, g.data_ptr(), gt.data_ptr(), part.data_ptr())
    _native.run_parallel(lambda c0, c1: kernel(c0, c1, *call), chunks, grain=1)
    (wo, wshape), (ao, n) = w_rows, a_rows
    gw, ga = t.new_empty(wshape), t.new_empty(n)
    reduce = _native.kernel("qsgd_reduce", t.dtype)
    reduce(chunks, width, part.data_ptr(), wo, gw.numel(), gw.data_ptr(), ao, n, ga.data_ptr())
    return gt, gw, ga
