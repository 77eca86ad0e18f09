"""One quantum-attention layer in one native kernel: scores, Φ by the chain, softmax and values,
forward and backward, q, k and v read in place from the projection's output.

:class:`~qsgd.attention.QuantumAttention` computes, per head (:func:`quantum_attention`)::

    S = scale·q kᵀ,   logits = S + γ·Φ(S) + mask,   P = softmax over keys,   O = P v

In torch operations that is a head-contiguous copy of the projection, two batched matrix
products, Φ, a softmax and their backward passes, and the gradients of q, k and v stacked back
into the projection's layout: at the classifier's sizes (heads of 16×16 scores) these copies and
small products cost about as much as Φ itself. Here each head is one pass of the native kernel
(:mod:`qsgd._native`): q, k, v read from the (B, L, 3, H, E) projection, S, Φ(S) (the chain,
:mod:`qsgd.attention.chain`) and P kept for the backward pass (3·B·H·L² reals), the output
written in the (B, L, H, E) layout the output projection reads, and the backward pass writing
the projection's gradient in place::

    dP = dO vᵀ,   dv = Pᵀ dO,   dlogits = P ⊙ (dP − rowsum(P ⊙ dP)),   dγ = Σ dlogits ⊙ Φ,
    dS = dlogits + γ·Φ'(S) ⊙ dlogits (the chain's backward pass, which also gives Φ's
    parameter gradients),   dq = scale·dS k,   dk = scale·dS ᵀ q.

The heads are spread over the threads; the gradients of the parameters are summed per head in
double and then over heads in a fixed order, so they do not depend on the thread count. The
masks are those of the layer: padding keys (``key_padding_mask``) and ``is_causal``; attention
dropout is not fused (the layer takes its torch path while dropout is active). Exact: the same
function as the torch path, to rounding (tested against it in float64, values and gradients).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _native
from .chain import _data_flags, _flag_tensor, native_chain_runs

__all__ = ["fused_attention", "fused_applies"]


def fused_applies(phi, x: Tensor, dropout_active: bool) -> bool:
    """Whether :func:`fused_attention` computes the layer with circuit term ``phi`` for input
    ``x``: ``phi`` a :class:`~qsgd.attention.ScoreCircuit` whose method is the chain, its native
    kernel available for ``x`` (CPU, compiled), float32 or float64, no attention dropout."""
    from .layers import ScoreCircuit

    return (not dropout_active and isinstance(phi, ScoreCircuit)
            and x.dtype in (torch.float32, torch.float64) and native_chain_runs(x.device)
            and phi.resolved_method(x.device) == "chain")


def fused_attention(qkv: Tensor, phi, gamma: Tensor, *, key_padding_mask: Tensor | None = None,
                    is_causal: bool = False, scale: float | None = None,
                    phi_params: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The attention of one layer (module docstring) from its projection ``qkv`` (B, L, 3, H, E)
    (queries, keys, values; contiguous), the circuit term ``phi`` (a ScoreCircuit taking the
    chain: :func:`fused_applies`) and its weight ``gamma`` (a 0-dim tensor). ``key_padding_mask``
    (B, L) bool, True marks padding keys; ``is_causal``: keys after the query are masked;
    ``scale``: of the scores, default 1/√E; ``phi_params``: Φ's (scale, weights) to use in
    place of ``phi``'s own parameters (a seed-batched model passes each run's slice). Returns
    O (B, L, H, E), differentiable in ``qkv``, ``gamma`` and Φ's ``scale`` and ``weights``."""
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"qkv must have shape (B, L, 3, H, E), got {tuple(qkv.shape)}")
    B, L, _, H, E = qkv.shape
    dt = qkv.dtype
    sc = 1.0 / math.sqrt(E) if scale is None else float(scale)
    pad = None
    if key_padding_mask is not None and is_causal:  # as quantum_attention (and SDPA)
        raise ValueError("pass either key_padding_mask or is_causal=True, not both (as SDPA)")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (B, L):
            raise ValueError(f"key_padding_mask must have shape {(B, L)}, got "
                             f"{tuple(key_padding_mask.shape)}")
        pad = key_padding_mask.to(torch.uint8).contiguous()
    a, w = (phi.scale, phi.weights) if phi_params is None else phi_params
    a = a if a.dtype == dt else a.to(dt)
    w = w if w.dtype == dt else w.to(dt)
    g = gamma if gamma.dtype == dt else gamma.to(dt)
    spec = phi.chain_spec()
    qkv = qkv if qkv.is_contiguous() else qkv.contiguous()
    return _FusedAttention.apply(qkv, a.contiguous(), w.contiguous(), g, pad, bool(is_causal),
                                 sc, spec)


class _FusedAttention(torch.autograd.Function):
    """The kernel's forward (keeping S, Φ, P) and backward (module docstring)."""

    @staticmethod
    def forward(ctx, qkv, a, w, gamma, pad, causal, scale, spec):
        B, L, _, H, E = qkv.shape
        out = qkv.new_empty(B, L, H, E)
        S, Phi, P = (qkv.new_empty(B, H, L, L) for _ in range(3))
        flags = _flag_tensor(tuple(_data_flags(spec)))
        g = float(gamma)
        _native.kernel("qsgd_attn_fwd", qkv.dtype)(
            0, B * H, H, L, E, qkv.data_ptr(), None if pad is None else pad.data_ptr(),
            int(causal), scale, g, spec.n, spec.depth, a.data_ptr(), w.data_ptr(),
            flags.data_ptr(), int(spec.hadamard), int(spec.entangle), out.data_ptr(),
            S.data_ptr(), Phi.data_ptr(), P.data_ptr())
        ctx.save_for_backward(qkv, a, w, S, Phi, P)
        ctx.gamma, ctx.scale, ctx.spec, ctx.gdtype = g, scale, spec, gamma.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        qkv, a, w, S, Phi, P = ctx.saved_tensors
        spec = ctx.spec
        B, L, _, H, E = qkv.shape
        n, depth = spec.n, spec.depth
        dout = dout if dout.dtype == qkv.dtype else dout.to(qkv.dtype)
        dout = dout if dout.is_contiguous() else dout.contiguous()
        dqkv = torch.empty_like(qkv)
        width = 5 * n + 1  # per head: the chain's dL/dw (4 gates), dL/da, then dL/dgamma
        part = torch.empty(B * H, width, dtype=torch.float64)
        flags = _flag_tensor(tuple(_data_flags(spec)))
        _native.kernel("qsgd_attn_bwd", qkv.dtype)(
            0, B * H, H, L, E, qkv.data_ptr(), ctx.scale, ctx.gamma, n, depth, a.data_ptr(),
            w.data_ptr(), flags.data_ptr(), int(spec.hadamard), int(spec.entangle),
            S.data_ptr(), Phi.data_ptr(), P.data_ptr(), dout.data_ptr(), dqkv.data_ptr(),
            part.data_ptr())
        gw, ga = qkv.new_empty(depth, 2, n), qkv.new_empty(n)
        ggamma = torch.empty((), dtype=qkv.dtype)
        reduce = _native.kernel("qsgd_reduce", qkv.dtype)
        reduce(B * H, width, part.data_ptr(), 0, gw.numel(), gw.data_ptr(), 4 * n, n,
               ga.data_ptr())
        reduce(B * H, width, part.data_ptr(), 5 * n, 1, ggamma.data_ptr(), 0, 0, None)
        return dqkv, ga, gw, ggamma.to(ctx.gdtype), None, None, None, None
