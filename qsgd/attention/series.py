"""Φ's evaluation: a real trigonometric series along a line, f(t) = Σ_i M[i] Π_q b(a_q t)[i_q],
at every score, with hand-written exact gradients.

The quantum attention's Φ(s) is the scalar readout of C(a·s; w) (:mod:`qsgd.attention.layers`).
As a function of s it is a trigonometric polynomial (:mod:`qsgd.circuit.fourier`), rewritten
in the real basis b(θ) = {cos νθ, sin νθ} per qubit; :mod:`qsgd.attention.coefficients` gives
its coefficients M(w). This module evaluates it:

* :func:`line_series`: the series for given M (an ``autograd.Function``, first derivatives);
* :func:`fourier_eval_line`: the same from complex Fourier coefficients
  (:func:`qsgd.circuit.fourier_series`);
* :func:`circuit_line`: Φ itself, M(w), dM/dw and the series fused into one
  ``autograd.Function`` when the coefficient table exists.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ..circuit.fourier import basis_tables, frequency_tuple, ks_tuple, to_real_basis
from ..circuit.spec import CircuitSpec
from .coefficients import (
    LINEAR_READOUTS,
    SCALAR_READOUTS,
    coefficient_table,
    spec_line_coefficients,
    table_coefficients,
)

__all__ = ["line_series", "fourier_eval_line", "circuit_line"]


def fourier_eval_line(coeffs: Tensor, ks: Tensor, scales: Tensor, t: Tensor) -> Tensor:
    """Re Σ_j c_j Π_q exp(i k[j_q] a_q t / 2): a scalar readout's series along the line
    x = a·t, at every entry of ``t`` (any shape; output has that shape, real).

    ``coeffs`` (m,)*n from :func:`qsgd.circuit.fourier_series` for a scalar readout
    (``"amp_sum"``, or one component of another), ``scales`` a (n,). The series is rewritten
    once in the real basis b(θ) = {cos νθ, sin νθ} per qubit (r = m real features for a
    symmetric set of m frequencies), so f(t) = Σ_i M[i_0…i_{n−1}] Π_q b(a_q t)[i_q], and
    evaluated by :func:`line_series`. Differentiable in ``coeffs``, ``scales`` and ``t``.
    """
    n = scales.numel()
    m = ks.numel()
    if tuple(coeffs.shape) != (m,) * n:
        raise ValueError(f"coeffs must have shape {(m,) * n}, got {tuple(coeffs.shape)}")
    return line_series(to_real_basis(coeffs, ks), ks, scales, t)


def line_series(M: Tensor, ks: Tensor, scales: Tensor, t: Tensor) -> Tensor:
    """f(t) = Σ_i M[i_0…i_{n−1}] Π_q b(a_q t)[i_q] at every entry of ``t`` (any shape; the
    output has that shape and ``t``'s dtype), with b the real basis of the frequencies ``ks``
    (r = len(ks) features per qubit) and a = ``scales`` (n,).

    Per qubit one outer product, one add and one cosine give the features of every t (the
    constant feature cos(0·θ) is filled, not computed); one ((n+1)·rⁿ⁻¹, r)×(r, B) matrix
    product and n−1 weighted sums contract them. The forward pass also contracts the n
    derivative tensors (b' = b·K with a fixed sparse K, applied to M as one cached linear
    map), so the backward pass needs no further transcendental or (B, r)-sized work: it is a
    hand-written ``autograd.Function`` (first derivatives only), checked by
    ``torch.autograd.gradcheck`` in the tests. Differentiable in ``M``, ``scales`` and ``t``.
    """
    n, r = scales.numel(), ks.numel()
    if tuple(M.shape) != (r,) * n:
        raise ValueError(f"M must have shape {(r,) * n}, got {tuple(M.shape)}")
    plan = _series_plan(ks_tuple(ks), n, t.dtype, t.device)
    args = (t.reshape(-1), scales.to(t.dtype), M.to(t.dtype))
    if torch.is_grad_enabled() and any(x.requires_grad for x in args):
        out = _LineSeries.apply(*args, plan)
    else:  # inference: f alone, no derivative contractions
        out = _line_eval(args[0], args[1], _stacked(args[2], plan, False), plan,
                         derivatives=False)[0]
    return out.reshape(t.shape)


def circuit_line(
    weights: Tensor,
    scales: Tensor,
    t: Tensor,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    readout: str = "amp_sum",
) -> Tensor:
    """The scalar readout of C(a·t; w) at every entry of ``t``: exactly
    ``line_series(*line_coefficients(weights, n, …), scales, t)`` with n = ``scales.numel()``
    (bit for bit in the forward pass), fused into one ``autograd.Function`` when the
    coefficient table exists: M(w), its Jacobian dM/dw and the series are computed together
    and the backward pass is a few small products, with no autograd graph to walk. This is
    the attention's Φ (qsgd.attention.ScoreCircuit). ``weights``: w (depth, 2, n);
    ``scales``: a (n,); ``depth``, ``entangle``, ``hadamard``, ``encoding``: the circuit, as
    :func:`qsgd.circuit.simulate`; ``readout``: ``"amp_sum"``, ``"X"``, ``"Y"`` or ``"Z"``,
    as :func:`~qsgd.attention.coefficients.line_coefficients`. Differentiable in ``weights``,
    ``scales`` and ``t``; output of ``t``'s shape and dtype.
    """
    n = scales.numel()
    spec = CircuitSpec(n, depth, entangle, hadamard, encoding)
    dt = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    w = weights.to(dt)
    table = (coefficient_table(spec, readout, dt, t.device)
             if readout in SCALAR_READOUTS and tuple(w.shape) == spec.weight_shape else None)
    if table is None or t.dtype != dt:  # the general route (validates its arguments)
        M, ks = spec_line_coefficients(spec, w, readout)
        return line_series(M, ks, scales, t)
    plan = _series_plan(frequency_tuple(spec, readout), n, dt, t.device)
    a, tf = scales.to(dt), t.reshape(-1)
    linear = readout in LINEAR_READOUTS
    if torch.is_grad_enabled() and any(x.requires_grad for x in (tf, a, w)):
        out = _CircuitLine.apply(tf, a, w, table, linear, plan)
    else:
        M = table_coefficients(w, table, linear, jacobian=False)[0]
        out = _line_eval(tf, a, _stacked(M, plan, False), plan, derivatives=False)[0]
    return out.reshape(t.shape)


class _SeriesPlan(NamedTuple):
    """What a line series of one frequency set needs, built once (:func:`_series_plan`)."""

    n: int
    r: int
    nu: Tensor  # (r,) frequencies of the basis b_i(θ) = cos(nu_i·θ + off_i)
    off: Tensor  # (r, 1)
    zero: int  # 1 if b_0 ≡ 1 (ν = 0, no offset): filled, not computed
    L: Tensor  # ((n+1)·rⁿ, rⁿ): M ↦ (M, ∂_0 M, …) in the contraction's layout


@functools.lru_cache(maxsize=64)
def _series_plan(ks: tuple[int, ...], n: int, dtype: torch.dtype,
                 device: torch.device) -> _SeriesPlan:
    """The basis of ``ks`` and the linear map L from M to the stacked coefficients of f and
    of ∂f/∂θ_q (M with its axis q mapped by K, b' = b·K), laid out (n+1, r, …, r, r) with
    qubit 0's feature index last, so one matrix product with qubit 0's features starts the
    contraction. L's entries are 0, 1 and ±ν: every stacked coefficient is one exact product."""
    nu, off, _, K = basis_tables(ks, torch.float64, torch.device("cpu"))
    r = len(ks)
    E = torch.eye(r**n, dtype=torch.float64).reshape(r**n, *([r] * n))
    stack = [E] + [torch.movedim(torch.tensordot(E, K, dims=([q + 1], [1])), -1, q + 1)
                   for q in range(n)]
    S = torch.movedim(torch.stack(stack, dim=1), 2, -1)  # (rⁿ, n+1, r_1, …, r_{n−1}, r_0)
    L = S.reshape(r**n, -1).t().contiguous()
    zero = int(float(nu[0]) == 0.0 and float(off[0]) == 0.0)
    real = dict(device=device, dtype=dtype)
    return _SeriesPlan(n, r, nu.to(**real), off.reshape(-1, 1).to(**real), zero, L.to(**real))


def _stacked(M: Tensor, plan: _SeriesPlan, derivatives: bool) -> Tensor:
    """M (rⁿ) → the ((1 or n+1)·rⁿ⁻¹, r) coefficient rows of :func:`_line_eval`."""
    rows = plan.L.shape[0] if derivatives else plan.r**plan.n
    return (plan.L[:rows] @ M.reshape(-1)).reshape(-1, plan.r)


def _line_eval(t: Tensor, a: Tensor, S: Tensor, plan: _SeriesPlan, *,
               derivatives: bool) -> tuple[Tensor, Tensor | None, list[Tensor]]:
    """f(t) (B,) of :class:`_LineSeries` from the stacked coefficients S (:func:`_stacked`);
    with ``derivatives`` also ∂f/∂θ_q (n, B); and the per-qubit features (r, B)."""
    n, r, z, B = plan.n, plan.r, plan.zero, t.numel()
    A = torch.outer(a, plan.nu[z:])  # (n, r − z): the nonzero frequencies of each qubit
    feats = []
    for q in range(n):  # (r, B); outer + add_ + cos_ is ~3× faster than a broadcast addcmul
        F = t.new_empty(r, B)
        if z:
            F[0].fill_(1.0)
        torch.outer(A[q], t, out=F[z:])
        F[z:].add_(plan.off[z:]).cos_()
        feats.append(F)
    h = n + 1 if derivatives else 1
    P = S @ feats[0]  # (h·rⁿ⁻¹, B)
    for q in range(1, n):
        Pv = P.reshape(h, r, -1, B)  # axis 1 is qubit q's feature index
        acc = Pv[:, 0] * feats[q][0]
        for j in range(1, r):
            acc.addcmul_(Pv[:, j], feats[q][j])
        P = acc
    P = P.reshape(h, B)
    return (P[0].clone(), P[1:], feats) if derivatives else (P[0], None, feats)


def _series_grads(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """∂L/∂t, ∂L/∂a and ∂L/∂M (flat) of a line series from the saved forward tensors (inputs
    0, 1 and 2 of the Function: t, a, and M or the weights M is computed from)."""
    t, a, dtheta, *feats = ctx.saved_tensors[:3 + ctx.n]
    g = g.reshape(-1).contiguous()  # e.g. an expanded ones from .sum(); strided products are slow
    gt = ga = gM = None
    gth = dtheta * g  # (n, B): ∂L/∂θ_q with θ_q = a_q·t
    if ctx.needs_input_grad[0]:
        gt = a @ gth
    if ctx.needs_input_grad[1]:
        ga = gth @ t
    if ctx.needs_input_grad[2]:
        G = feats[0] * g  # (r, B): Σ_B g·Π_q b_q[i_q]
        if len(feats) == 1:
            gM = G.sum(1)
        else:
            for f in feats[1:-1]:
                G = (G[:, None, :] * f[None, :, :]).reshape(-1, G.shape[-1])
            gM = (G @ feats[-1].t()).reshape(-1)
    return gt, ga, gM


class _LineSeries(torch.autograd.Function):
    """f(t) = Σ M[i] Π_q b(a_q t)[i_q], b(θ)_i = cos(ν_i θ + off_i), with its exact gradient.

    Features are laid out (r, B), batch last, so every elementwise op runs over contiguous
    batch rows (several times faster than (B, r) with r ≈ 5 on CPU)."""

    @staticmethod
    def forward(ctx, t, a, M, plan):
        f, dtheta, feats = _line_eval(t, a, _stacked(M, plan, True), plan, derivatives=True)
        ctx.save_for_backward(t, a, dtheta, *feats)
        ctx.n, ctx.mshape = plan.n, M.shape
        return f

    @staticmethod
    def backward(ctx, g):
        gt, ga, gM = _series_grads(ctx, g)
        return gt, ga, None if gM is None else gM.reshape(ctx.mshape), None


class _CircuitLine(torch.autograd.Function):
    """:func:`circuit_line` on the table route: M(w) and dM/dw (:func:`table_coefficients`),
    then the series (:class:`_LineSeries`); ∂L/∂w = (dM/dw)ᵀ·∂L/∂M."""

    @staticmethod
    def forward(ctx, t, a, w, table, linear, plan):
        M, J = table_coefficients(w, table, linear, jacobian=ctx.needs_input_grad[2])
        f, dtheta, feats = _line_eval(t, a, _stacked(M, plan, True), plan, derivatives=True)
        ctx.save_for_backward(t, a, dtheta, *feats, *([] if J is None else [J]))
        ctx.n, ctx.wshape = plan.n, w.shape
        return f

    @staticmethod
    def backward(ctx, g):
        gt, ga, gM = _series_grads(ctx, g)
        gw = None if gM is None else (gM @ ctx.saved_tensors[-1]).reshape(ctx.wshape)
        return gt, ga, gw, None, None, None


