"""Quantum attention: scaled dot-product attention with a circuit term γ·Φ(S) in the logits.

Modules (one concern each; everything public is re-exported here):

* :mod:`qsgd.attention.layers`: the layer and its maths: :class:`ScoreCircuit` (Φ),
  :func:`quantum_attention` (the functional form of SDPA with Φ) and
  :class:`QuantumAttention` (multi-head self-attention); the encoding is documented there.
* :mod:`qsgd.attention.coefficients`: :func:`line_coefficients`, Φ's Fourier coefficients M(w)
  and their Jacobian (a cached table of corner simulations, or the parameter-shift rule).
* :mod:`qsgd.attention.series`: :func:`line_series`, :func:`fourier_eval_line` and
  :func:`circuit_line`, the series evaluated at every score with hand-written gradients.
* :mod:`qsgd.attention.chain`: :func:`chain_line`, Φ of a depth ≤ 2 circuit as a chain of 2×2
  transfer matrices over the qubits (native CPU kernel, or torch operations).
* :mod:`qsgd.attention.state`: :func:`state_line`, Φ by one statevector per score (native
  kernel with adjoint gradients, or the torch engine).
* :mod:`qsgd.attention.fused`: :func:`fused_attention`, a whole layer's scores, Φ (chain),
  softmax and values in one native kernel, forward and backward (the layer's default where
  it applies).

The circuits themselves (simulator, Fourier form) are :mod:`qsgd.circuit`'s; nothing there
knows about attention.
"""

from __future__ import annotations

from .chain import chain_line
from .coefficients import line_coefficients
from .fused import fused_applies, fused_attention
from .layers import (
    PHI_METHODS,
    PHI_READOUTS,
    QuantumAttention,
    ScoreCircuit,
    keyed_dropout,
    quantum_attention,
)
from .series import circuit_line, fourier_eval_line, line_series
from .state import state_line

__all__ = [
    "ScoreCircuit",
    "quantum_attention",
    "QuantumAttention",
    "PHI_READOUTS",
    "PHI_METHODS",
    "line_coefficients",
    "line_series",
    "fourier_eval_line",
    "circuit_line",
    "chain_line",
    "state_line",
    "fused_attention",
    "fused_applies",
    "keyed_dropout",
]
