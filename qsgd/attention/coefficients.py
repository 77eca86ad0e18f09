"""Φ's coefficients: the real-basis Fourier coefficients M(w) of a scalar circuit readout as a
function of the circuit's extra angles w, with their Jacobian dM/dw.

The quantum attention's Φ(s) is a readout of C(a·s; w) (:mod:`qsgd.attention.layers`), a
trigonometric polynomial in s whose coefficients depend on w alone
(:mod:`qsgd.circuit.fourier`). This module computes those coefficients, without
differentiating a simulation, in one of two exact ways (see :func:`line_coefficients`):

* a cached table of the circuit simulated once per shape at corner weights, times a Kronecker
  product of small per-weight vectors (few tiny ops; the Jacobian comes from the same product);
* where that table would be too large, one batched simulation of the angle grid, with the
  gradient from the exact parameter-shift rule (Mitarai et al., PRA 98, 032309, 2018;
  Schuld et al., PRA 99, 032331, 2019).

:mod:`qsgd.attention.series` evaluates the polynomial at every score.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..circuit.fourier import angle_grid, grid_dft, spec_frequencies, to_real_basis
from ..circuit.spec import CircuitSpec, check_readout
from ..circuit.statevector import simulate_spec

__all__ = ["SCALAR_READOUTS", "LINEAR_READOUTS", "line_coefficients", "spec_line_coefficients",
           "coefficient_table", "table_coefficients"]

#: readouts linear in the state: ∂ψ/∂α = ½·ψ(α + π) for a gate exp(−iαP/2) (one shift);
#: the others are quadratic and take the two-term rule ½·[f(α + π/2) − f(α − π/2)].
LINEAR_READOUTS = ("amplitudes", "amp_sum")
#: the readouts with a scalar form (Re of amp_sum; the mean over qubits of X, Y or Z)
SCALAR_READOUTS = ("amp_sum", "X", "Y", "Z")

#: the largest coefficient table (entries) :func:`line_coefficients` builds and caches; it
#: also simulates that many circuits to build it (once per shape, dtype and device)
TABLE_LIMIT = 2**20


def line_coefficients(
    weights: Tensor,
    n_qubits: int,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    readout: str = "amp_sum",
) -> tuple[Tensor, Tensor]:
    """The real-basis coefficients M (r,)*n of a scalar readout, and its frequencies ks.

    The scalar is Re of ``"amp_sum"``, or the mean over qubits of ``"X"``, ``"Y"`` or
    ``"Z"``; with it, ``line_series(M, ks, a, t)`` is that readout of C(a·t; w). M equals
    :func:`qsgd.circuit.fourier_series` followed by the real-basis change, computed without
    differentiating a simulation. ``weights``: w (depth, 2, n); ``n_qubits``, ``depth``,
    ``entangle``, ``hadamard``, ``encoding``: the circuit, as :func:`qsgd.circuit.simulate`.
    Every weight w_j (W = 2·depth·n of them) is the extra angle of exactly one Ry or Rz, and
    exp(−i(x + w_j)P/2) = cos(w_j/2)·R(x) − i·sin(w_j/2)·P·R(x) with R(x) = exp(−ixP/2), so:

    * ``"amp_sum"`` (linear in the state) is multilinear in the pairs (cos w_j/2, sin w_j/2),
      and the Pauli readouts (quadratic) in the triples (1, cos w_j, sin w_j). M is then one
      fixed table (simulated once per circuit shape, dtype and device, and cached: the
      readout at the corners w ∈ {0, π}^W, or {0, π/2, π}^W solved per axis) times the
      Kronecker product of those small vectors: a few tiny ops. The same few ops give the
      Jacobian dM/dw (the Kronecker products with one vector replaced by its derivative), so
      the backward pass is one matrix-vector product.
    * When that table would be large (3^W·rⁿ above 2²⁰ entries, e.g. Pauli readouts at
      n = 3), M comes from one batched simulation of the mⁿ grid and its gradient from the
      exact parameter-shift rule (the same batch also simulates the shifted weights: 1 + W
      settings for ``"amp_sum"``, 1 + 2W for the Pauli readouts), so the backward pass is one
      matrix-vector product.
    """
    check_readout(readout, SCALAR_READOUTS)
    spec = CircuitSpec(int(n_qubits), depth, entangle, hadamard, encoding)
    return spec_line_coefficients(spec, weights, readout)


def spec_line_coefficients(spec: CircuitSpec, weights: Tensor,
                           readout: str) -> tuple[Tensor, Tensor]:
    """:func:`line_coefficients` of the circuits ``spec``."""
    check_readout(readout, SCALAR_READOUTS)
    spec.check_weights(weights)
    if weights.dim() != 3:
        raise ValueError(
            f"weights must have shape {spec.weight_shape}, got {tuple(weights.shape)}")
    ks = spec_frequencies(spec, readout)
    dtype = weights.dtype if weights.dtype in (torch.float32, torch.float64) else torch.float32
    table = coefficient_table(spec, readout, dtype, weights.device)
    if table is not None:
        linear = readout in LINEAR_READOUTS
        w = weights.to(dtype)
        if torch.is_grad_enabled() and w.requires_grad:
            compute = functools.partial(table_coefficients, table=table, linear=linear,
                                        jacobian=True)
            M = _WithJacobian.apply(w, compute)
        else:
            M = table_coefficients(w, table, linear, jacobian=False)[0]
        return M.reshape((ks.numel(),) * spec.n), ks
    if torch.is_grad_enabled() and weights.requires_grad:
        compute = functools.partial(_shift_coefficients, spec=spec, ks=ks, readout=readout)
        return _WithJacobian.apply(weights, compute), ks
    with torch.no_grad():
        return _coefficients_batch(weights[None], spec, ks, readout)[0], ks


@functools.lru_cache(maxsize=32)
def coefficient_table(spec: CircuitSpec, readout: str, dtype: torch.dtype,
                      device: torch.device) -> Tensor | None:
    """(rⁿ, d^W) with M(w) = table @ ⊗_j v(w_j) (see :func:`line_coefficients`), or None
    when it would exceed :data:`TABLE_LIMIT` entries (d^W·mⁿ, as many circuits)."""
    n, depth = spec.n, spec.depth
    W = 2 * depth * n
    linear = readout in LINEAR_READOUTS
    d = 2 if linear else 3
    ks = spec_frequencies(spec, readout)
    m = ks.numel()
    if d**W * m**n > TABLE_LIMIT:
        return None
    corners = torch.tensor([0.0, math.pi] if linear else [0.0, math.pi / 2, math.pi],
                           dtype=torch.float64)
    settings = torch.cartesian_prod(*([corners] * W)).reshape(-1, W)  # (d^W, W)
    with torch.no_grad():
        Ms = torch.cat([_coefficients_batch(chunk.reshape(-1, depth, 2, n), spec, ks, readout)
                        for chunk in settings.split(512)])  # (d^W, r, …, r)
    Ms = Ms.reshape(d**W, -1)
    if not linear:  # per axis: values at (0, π/2, π) → coefficients of (1, cos w, sin w)
        solve = torch.tensor([[0.5, 0.0, 0.5], [0.5, 0.0, -0.5], [-0.5, 1.0, -0.5]],
                             dtype=torch.float64)
        Ms = Ms.reshape(*([3] * W), -1)
        for _ in range(W):  # contract the leading axis; the coefficient axis goes to the back
            Ms = torch.tensordot(Ms, solve, dims=([0], [1]))
            Ms = torch.movedim(Ms, -1, W - 1)  # keep the flattened M axis last
        Ms = Ms.reshape(d**W, -1)
    return Ms.t().contiguous().to(device=device, dtype=dtype)


def table_coefficients(w: Tensor, table: Tensor, linear: bool, *,
                       jacobian: bool) -> tuple[Tensor, Tensor | None]:
    """M(w) = table @ ⊗_j v(w_j) (flat, rⁿ) and, with ``jacobian``, dM/dw (rⁿ, W).

    v(w) = (cos w/2, sin w/2) for a linear readout, else (1, cos w, sin w). Column j of the
    Jacobian is the table times the Kronecker product with v(w_j) replaced by v'(w_j); all W
    of them and M come from one batched Kronecker product (row 0 is M's, op for op the
    product M alone would take, so M has the same bits with or without the Jacobian)."""
    wf = w.reshape(-1)
    W = wf.numel()
    if linear:
        h = wf * 0.5
        c, s = torch.cos(h), torch.sin(h)
        v = torch.stack([c, s], dim=-1)  # (W, 2)
        dv = torch.stack([-s, c], dim=-1) * 0.5
    else:
        c, s = torch.cos(wf), torch.sin(wf)
        v = torch.stack([torch.ones_like(wf), c, s], dim=-1)  # (W, 3)
        dv = torch.stack([torch.zeros_like(wf), -s, c], dim=-1)
    if jacobian:  # batch row 0: v; row 1 + j: v with v_j replaced by v_j'
        V = v.expand(1 + W, *v.shape).clone()
        idx = torch.arange(W, device=w.device)
        V[1 + idx, idx] = dv
    else:
        V = v[None]
    F = V[:, 0]
    for j in range(1, W):  # Kronecker product, weight 0 the slowest index
        F = (F[:, :, None] * V[:, j, None, :]).reshape(V.shape[0], -1)
    M = table @ F[0]
    return M, (table @ F[1:].t() if jacobian else None)


class _WithJacobian(torch.autograd.Function):
    """M(w) computed together with its Jacobian J = dM/dw (rⁿ, W) by ``compute(w) -> (M, J)``
    (the table's batched Kronecker product, or the parameter-shift rule); the backward pass is
    one vector-matrix product."""

    @staticmethod
    def forward(ctx, w, compute):
        M, J = compute(w)
        ctx.save_for_backward(J)
        ctx.wshape = w.shape
        return M

    @staticmethod
    def backward(ctx, gM):
        (J,) = ctx.saved_tensors
        return (gM.reshape(-1).to(J.dtype) @ J).reshape(ctx.wshape), None


def _coefficients_batch(wb: Tensor, spec: CircuitSpec, ks: Tensor, readout: str) -> Tensor:
    """M for every weight setting of a batch wb (S, depth, 2, n) → (S, r, …, r)."""
    n = spec.n
    dtype = wb.dtype if wb.dtype in (torch.float32, torch.float64) else torch.float32
    m = ks.numel()
    grid = angle_grid(m, n, dtype, wb.device).reshape(1, -1, n)
    S = wb.shape[0]
    r = simulate_spec(spec, grid, wb.to(dtype).reshape(S, 1, *spec.weight_shape),
                      readout=readout)  # (S, mⁿ[, n])
    if readout != "amp_sum":
        r = r.mean(-1)
    c = grid_dft(r.reshape(S, *([m] * n)), ks, first=1, n=n)
    return to_real_basis(c, ks, lead=1).contiguous()


def _shift_coefficients(w: Tensor, *, spec: CircuitSpec, ks: Tensor,
                        readout: str) -> tuple[Tensor, Tensor]:
    """M(w) (r,)*n and dM/dw (rⁿ, W) by the parameter-shift rule, all settings simulated in one
    batch (see :func:`line_coefficients`)."""
    W = w.numel()
    eye = torch.eye(W, dtype=w.dtype, device=w.device).reshape(W, *w.shape)
    if readout in LINEAR_READOUTS:
        Ms = _coefficients_batch(torch.cat([w[None], w + math.pi * eye]), spec, ks, readout)
        J = Ms[1:] * 0.5
    else:
        half = (math.pi / 2) * eye
        Ms = _coefficients_batch(torch.cat([w[None], w + half, w - half]), spec, ks, readout)
        J = (Ms[1:1 + W] - Ms[1 + W:]) * 0.5
    return Ms[0], J.reshape(W, -1).t()
