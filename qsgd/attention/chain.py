"""Φ by transfer matrices: the ``"amp_sum"`` readout of a circuit of depth ≤ 2 as a chain of
2×2 products over its qubits, exact and linear in n.

The attention's Φ(s) is Re ⟨+…+|C(a·s; w)|0…0⟩ (:mod:`qsgd.attention.layers`). With
C = P·G₂·P·G₁·H (G_l the layer-l rotations ⊗_q Rz·Ry, P the CNOT chain, :mod:`qsgd.circuit`):

* ⟨+…+|P = ⟨+…+| (P permutes the basis and ⟨+…+| is uniform), so the last chain drops out;
* G₁·H|0…0⟩ = ⊗_q v_q is a product state, v_q = Rz(β₀)Ry(α₀)|+⟩ (or |0⟩ without H), and
  ⟨+…+|G₂ = ⊗_q r_q with the row r_q = ⟨+|Rz(β₁)Ry(α₁);
* P maps the basis state b to c with c_q = b_0 ⊕ … ⊕ b_q (CNOT(0→1) first), so
  ⟨+…+|C|0…0⟩ = Σ_b Π_q r_q[c_q] v_q[b_q] = Σ_c Π_q r_q[c_q] v_q[c_q ⊕ c_{q−1}] (c_{−1} = 0):
  a product of 2×2 transfer matrices T_q[c', c] = r_q[c] v_q[c ⊕ c'] summed over the chain's
  prefix parity. Computed left to right: m_0[c] = r_0[c] v_0[c],
  m_q[c] = r_q[c] Σ_c' m_{q−1}[c'] v_q[c ⊕ c'], and the readout Σ_c m_{n−1}[c].

Without CNOTs the same recursion with v_q[c] for v_q[c ⊕ c'] is the product Π_q r_q·v_q; at
depth 1, r_q = ⟨+| (no second layer). Per score that is n sines and cosines (every gate angle
is x_q + w or w alone, combined by the addition theorem) and about 60 flops per qubit,
against 2ⁿ amplitudes per gate for a statevector and rⁿ = 5ⁿ coefficients for the Fourier
series: the exact method that scales to the paper's 4 qubits. Deeper circuits need a bond of
2^{depth−1} per qubit and are left to the other methods.

Two implementations of the same arithmetic, both differentiable in t, a and w:

* the native CPU kernel (:mod:`qsgd._native`, float32 and float64): forward one pass over the
  scores; backward one pass that recomputes the chain per block of 32 scores (measured no
  slower than keeping 4n derivatives per score between the passes, which would be that much
  fresh memory every step), runs it back (the adjoint of every complex product,
  G_x = G_z·conj(y) for z = x·y) and accumulates the gradients of a and w per fixed chunk of
  scores in double, so they do not depend on the thread count;
* torch operations (any device and dtype; autograd differentiates them), used where the
  kernel is unavailable or not wanted.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .. import _native
from ..circuit.spec import CircuitSpec
from ._line import contiguous, kernel_backward, kernel_forward, line_inputs, needs_graph, use_native

__all__ = ["chain_supported", "chain_line", "native_chain_runs"]

_H = math.sqrt(0.5)


def chain_supported(spec: CircuitSpec, readout: str) -> bool:
    """Whether :func:`chain_line` computes ``readout`` of ``spec``: ``"amp_sum"`` at depth ≤ 2."""
    return readout == "amp_sum" and spec.depth <= 2


def native_chain_runs(device: torch.device | str = "cpu") -> bool:
    """Whether :func:`chain_line` runs its native kernel for scores on ``device`` (the CPU,
    with the kernels compiled: :func:`qsgd._native.library`)."""
    return torch.device(device).type == "cpu" and _native.library() is not None


def chain_line(
    weights: Tensor,
    scales: Tensor,
    t: Tensor,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    native: bool | None = None,
) -> Tensor:
    """Re ⟨+…+|C(a·t; w)|0…0⟩ (the real part of ``simulate(..., readout="amp_sum")``) at every
    entry of ``t``, by the transfer-matrix chain (module docstring).

    Args:
        weights: w (depth, 2, n), the extra angles (``[l, 0, q]`` layer l's Ry on qubit q,
            ``[l, 1, q]`` its Rz).
        scales: a (n,), the encoding scales: qubit q's data angle is x_q = a_q·t.
        t: the scores, any shape.
        depth: 1 or 2; entangle, hadamard, encoding: the circuit, as
            :func:`qsgd.circuit.simulate`.
        native: None (default): the native kernel where it applies (CPU, float32/float64,
            compiled), else torch operations; True: the kernel or an error saying why not;
            False: torch operations.

    Returns the readout with ``t``'s shape and dtype (computed in float32 for half types).
    Differentiable in ``weights``, ``scales`` and ``t``.
    """
    spec = _spec(scales.numel(), depth, entangle, hadamard, encoding)
    tf, a, w = line_inputs(spec, weights, scales, t)
    if not use_native(tf, native):
        out = _torch_chain(tf.reshape(-1), a, w, spec).reshape(t.shape)
    elif needs_graph(tf, a, w):
        out = _NativeChain.apply(*contiguous(tf, a, w), spec)
    else:  # inference: no graph
        out = _native_forward(*contiguous(tf, a, w), spec)
    return out if out.dtype == t.dtype else out.to(t.dtype)


@functools.lru_cache(maxsize=64)
def _spec(n: int, depth: int, entangle: bool, hadamard: bool, encoding: str) -> CircuitSpec:
    """The validated spec (cached: built on every call), refusing depth > 2."""
    spec = CircuitSpec(n, depth, entangle, hadamard, encoding)
    if depth > 2:
        raise ValueError(f"chain_line needs depth <= 2 (the bond grows as 2^(depth-1)), "
                         f"got depth={depth}")
    return spec


def _data_flags(spec: CircuitSpec) -> list[int]:
    """Which of the four gates (layer 0 Ry, Rz, layer 1 Ry, Rz) carry the data angle
    (:attr:`CircuitSpec.data_flags`; a depth-1 chain's absent layer 1 reads 0)."""
    return [int(f) for f in spec.data_flags] + [0] * (4 - 2 * spec.depth)


# ----------------------------------------------------------------------------- torch operations


def _torch_chain(t: Tensor, a: Tensor, w: Tensor, spec: CircuitSpec) -> Tensor:
    """The chain in torch operations (complex arithmetic, autograd for the gradient)."""
    x = a[:, None] * t[None, :]  # (n, B)
    flags = _data_flags(spec)

    def half_angle(gate: int) -> tuple[Tensor, Tensor]:
        layer, g = divmod(gate, 2)
        ang = w[layer, g][:, None]
        ang = x + ang if flags[gate] else ang.expand_as(x)
        return torch.cos(ang * 0.5), torch.sin(ang * 0.5)

    c0, s0 = half_angle(0)
    y0, y1 = ((c0 - s0) * _H, (c0 + s0) * _H) if spec.hadamard else (c0, s0)
    c1, s1 = half_angle(1)
    e1 = torch.complex(c1, -s1)  # e^{-iβ/2}
    v0, v1 = y0 * e1, y1 * e1.conj()  # (n, B) complex
    if spec.depth == 2:
        c2, s2 = half_angle(2)
        c3, s3 = half_angle(3)
        z0 = torch.complex(c3, -s3) * _H
        z1 = z0.conj()
        r0, r1 = z0 * c2 + z1 * s2, z1 * c2 - z0 * s2
    else:
        r0 = r1 = torch.full_like(v0, _H)
    m0, m1 = r0[0] * v0[0], r1[0] * v1[0]
    for q in range(1, spec.n):
        if spec.entangle:
            t0, t1 = m0 * v0[q] + m1 * v1[q], m0 * v1[q] + m1 * v0[q]
        else:
            s = m0 + m1
            t0, t1 = s * v0[q], s * v1[q]
        m0, m1 = r0[q] * t0, r1[q] * t1
    return (m0 + m1).real


# ----------------------------------------------------------------------------- native kernel


@functools.lru_cache(maxsize=16)
def _flag_tensor(flags: tuple[int, ...]) -> Tensor:
    return torch.tensor(flags, dtype=torch.int32)


@functools.lru_cache(maxsize=64)
def _kernels(spec: CircuitSpec, dtype: torch.dtype) -> tuple:
    """The forward and backward kernels for ``dtype`` and their fixed arguments: n, depth, the
    data flags (a cached tensor that stays alive), hadamard, entangle."""
    flags = _flag_tensor(tuple(_data_flags(spec)))
    fixed = (spec.n, spec.depth, flags.data_ptr(), int(spec.hadamard), int(spec.entangle))
    return _native.kernel("qsgd_chain_fwd", dtype), _native.kernel("qsgd_chain_bwd", dtype), fixed


def _native_forward(t: Tensor, a: Tensor, w: Tensor, spec: CircuitSpec) -> Tensor:
    """Φ(t) by the kernel (contiguous t, a, w of one dtype); the output has t's shape."""
    fwd, _, (n, depth, flags, had, ent) = _kernels(spec, t.dtype)
    return kernel_forward(fwd, t, (n, depth, t.data_ptr(), a.data_ptr(), w.data_ptr(), flags,
                                   had, ent))


class _NativeChain(torch.autograd.Function):
    """The chain by the native kernel: forward Φ(t); backward ∂L/∂t, ∂L/∂a and ∂L/∂w in one
    pass that recomputes the chain per block of scores and runs it back from ∂L/∂Φ (module
    docstring; no per-score state is kept between the passes)."""

    @staticmethod
    def forward(ctx, t, a, w, spec):
        ctx.save_for_backward(t, a, w)
        ctx.spec = spec
        return _native_forward(t, a, w, spec)

    @staticmethod
    def backward(ctx, g):
        t, a, w = ctx.saved_tensors
        _, bwd, (n, depth, flags, had, ent) = _kernels(ctx.spec, t.dtype)
        args = (n, depth, t.data_ptr(), a.data_ptr(), w.data_ptr(), flags, had, ent)
        # part (5, n) per chunk: dL/dw of the four gates (the first 2·depth rows are w's), dL/da
        gt, gw, ga = kernel_backward(bwd, t, g, args, 5 * n, (0, (depth, 2, n)), (4 * n, n))
        return gt, ga, gw, None
