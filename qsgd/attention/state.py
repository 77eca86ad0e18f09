"""Φ by one statevector per score: the readout of C(a·s; w) for every score s, by the native
gate-by-gate kernel with its gradient by the adjoint method, or by the torch engine.

This is :class:`~qsgd.attention.ScoreCircuit`'s ``method="state"``: the most general of Φ's
exact methods (any depth, readout "amp" or "z"), and the one ``"auto"`` takes where the chain
does not apply and the Fourier form has too many coefficients. Per score the kernel
(:mod:`qsgd._native`) simulates the 2ⁿ amplitudes gate by gate in real arithmetic
(:func:`qsgd.circuit.simulate`'s conventions) and reads out Re Σ_k ψ_k / 2^{n/2} or the mean of
⟨Z_q⟩. The backward pass is the adjoint method (Jones & Gacon 2020, arXiv 2009.02823; Luo et
al., Yao.jl, 2020): from G = ∂L/∂Re ψ + i ∂L/∂Im ψ after the last gate, each gate
U = exp(−iθP/2) (P = Y or Z of one qubit), taken back in reverse order, gives
∂L/∂θ = Im⟨G|P ψ⟩ / 2 (ψ and G just after U), then ψ ← U^H ψ and G ← U^H G; the CNOT chain is
undone by its inverse permutation. It recomputes the forward per block of 32 scores and keeps
nothing per score between the passes; the gradients of a and w are summed per fixed chunk of
scores in double, so they do not depend on the thread count.

Without the kernel (no compiler, not the CPU, more than
:data:`qsgd.circuit.statevector.NATIVE_MAX_QUBITS` qubits) the torch engine computes the same
readout and autograd its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native
from ..circuit.spec import CircuitSpec
from ..circuit.statevector import NATIVE_MAX_QUBITS, _native_tables, simulate_spec
from ._line import contiguous, kernel_backward, kernel_forward, line_inputs, needs_graph, use_native

__all__ = ["state_line", "LINE_READOUTS"]

#: the readouts of :func:`state_line` (the kernel's readout codes are their positions)
LINE_READOUTS = ("amp_sum", "Z")


def state_line(
    weights: Tensor,
    scales: Tensor,
    t: Tensor,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    readout: str = "amp_sum",
    native: bool | None = None,
) -> Tensor:
    """The readout of C(a·t; w) at every entry of ``t``, one statevector per entry.

    Args:
        weights: w (depth, 2, n), shared by all scores; scales: a (n,), qubit q's data angle
            is x_q = a_q·t; t: the scores, any shape.
        depth, entangle, hadamard, encoding: the circuit, as :func:`qsgd.circuit.simulate`.
        readout: ``"amp_sum"`` (its real part, Re Σ_k ψ_k / 2^{n/2}) or ``"Z"`` (the mean over
            qubits of ⟨Z_q⟩).
        native: None (default): the kernel where it applies (CPU, float32/float64, at most
            ``NATIVE_MAX_QUBITS`` qubits, compiled), else the torch engine; True: the kernel or
            an error saying why not; False: the torch engine.

    Returns the readout with ``t``'s shape and dtype (computed in float32 for half types),
    differentiable in ``weights``, ``scales`` and ``t``.
    """
    if readout not in LINE_READOUTS:
        raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(LINE_READOUTS)})")
    spec = CircuitSpec(scales.numel(), depth, entangle, hadamard, encoding)
    tf, a, w = line_inputs(spec, weights, scales, t)
    too_wide = (f"the kernel simulates up to {NATIVE_MAX_QUBITS} qubits, not {spec.n}"
                if spec.n > NATIVE_MAX_QUBITS else None)
    code = LINE_READOUTS.index(readout)
    if not use_native(tf, native, too_wide):
        out = simulate_spec(spec, tf.unsqueeze(-1) * a, w, readout=readout)
        out = out.real if readout == "amp_sum" else out.mean(-1)
    elif needs_graph(tf, a, w):
        out = _NativeStateLine.apply(*contiguous(tf, a, w), spec, code)
    else:
        out = _forward(*contiguous(tf, a, w), spec, code)
    return out if out.dtype == t.dtype else out.to(t.dtype)


def _fixed(spec: CircuitSpec) -> tuple:
    perm, data = _native_tables(spec)
    return (spec.n, spec.depth, data.data_ptr(), int(spec.hadamard),
            int(spec.entangle and spec.n > 1), perm.data_ptr())


def _forward(t: Tensor, a: Tensor, w: Tensor, spec: CircuitSpec, code: int) -> Tensor:
    kernel = _native.kernel("qsgd_line_state_fwd", t.dtype)
    n, depth, data, had, ent, perm = _fixed(spec)
    return kernel_forward(kernel, t, (n, depth, t.data_ptr(), a.data_ptr(), w.data_ptr(), data,
                                      had, ent, perm, code))


class _NativeStateLine(torch.autograd.Function):
    """The kernel's forward; backward by the adjoint method (module docstring)."""

    @staticmethod
    def forward(ctx, t, a, w, spec, code):
        ctx.save_for_backward(t, a, w)
        ctx.spec, ctx.code = spec, code
        return _forward(t, a, w, spec, code)

    @staticmethod
    def backward(ctx, g):
        t, a, w = ctx.saved_tensors
        spec = ctx.spec
        kernel = _native.kernel("qsgd_line_state_bwd", t.dtype)
        n, depth, data, had, ent, perm = _fixed(spec)
        args = (n, depth, t.data_ptr(), a.data_ptr(), w.data_ptr(), data, had, ent, perm,
                ctx.code)
        W = 2 * depth * n  # part per chunk: dL/dw (W), then dL/da (n)
        gt, gw, ga = kernel_backward(kernel, t, g, args, W + n, (0, spec.weight_shape), (W, n))
        return gt, ga, gw, None, None
