"""The paper's circuit family: its shape, a batched differentiable statevector simulator in
torch, its exact Fourier form, and a bridge to Qiskit.

The circuit family (Pamuk et al., arXiv 2511.01918, restated in PAPER.md): n qubits, depth L;
Hadamard on every qubit, then per layer an Ry and an Rz rotation on each qubit and a chain of
CNOTs. The paper gives no exact encoding; this package fixes one and documents it.

Circuit C(x; w) for data angles x ∈ ℝⁿ and extra angles w ∈ ℝ^{L×2×n}, in time order::

    |0…0⟩
    H on every qubit                               (hadamard=True; skipped when False)
    for l = 0 … L−1:
        Ry(α[l,0,q]) on every qubit q                α[l,0,q] = e[l,0]·x_q + w[l,0,q]
        Rz(α[l,1,q]) on every qubit q                α[l,1,q] = e[l,1]·x_q + w[l,1,q]
        CNOT(0→1), CNOT(1→2), …, CNOT(n−2→n−1)      (entangle=True; none when n = 1)

On each qubit the Ry acts before the Rz; gates on different qubits commute, so the order over
qubits within a rotation layer does not matter. The encoding flags e[l,g] say where the data
enters: ``encoding="reupload"`` (default): e = 1 everywhere, i.e. every Ry and Rz of every layer
gets x_q + w (data re-uploading); ``encoding="once"``: only the first layer's Ry gets x_q
(e[0,0] = 1, all others 0), the rest carry w alone. A gate whose angle is structurally zero
(no data and ``weights=None``) is the identity and is skipped, by the simulator and by
:func:`to_qiskit` alike.

Conventions:
    * Angles: Ry(a) = exp(−i a Y/2) = [[cos a/2, −sin a/2], [sin a/2, cos a/2]],
      Rz(a) = exp(−i a Z/2) = diag(e^{−ia/2}, e^{ia/2}), exactly Qiskit's ``ry`` and ``rz``
      (no global-phase difference, so amplitudes compare directly).
    * Qubit order: Qiskit's little-endian one. Basis index k = Σ_q b_q·2^q, qubit 0 the least
      significant bit; an amplitude vector from here equals ``Statevector(qc).data``. Viewed as
      a tensor (batch, 2, …, 2), axis 1 is qubit n−1 and the last axis is qubit 0.
    * dtypes: float32 angles give float32 readouts and complex64 amplitudes, float64 gives
      float64/complex128. Other floating dtypes (half, bfloat16) are computed in float32.

Modules (one concern each; everything public is re-exported here):

* :mod:`qsgd.circuit.spec`: :class:`CircuitSpec`, the validated bundle (n, depth, entangle,
  hadamard, encoding) every other module takes, the gate plan and :func:`gate_angles`.
* :mod:`qsgd.circuit.statevector`: the torch engine, the readouts and :func:`simulate`
  (``amplitudes``, ``probabilities``, ``expectation``, ``readout_state``); without gradients
  on the CPU it runs a native kernel (:mod:`qsgd._native`).
* :mod:`qsgd.circuit.fourier`: :func:`fourier_series` / :func:`fourier_eval`, the readouts as
  exact trigonometric polynomials of the data angles, and the real basis the quantum
  attention's Φ is evaluated in (:mod:`qsgd.attention`).
* :mod:`qsgd.circuit.qiskit`: :func:`to_qiskit` and ``backend="aer"`` (Qiskit imported lazily).

The :class:`~qsgd.perturbations.Circuit` perturbation (registry name ``"circuit"``) lives with
the other perturbations in :mod:`qsgd.perturbations`; it is re-exported here on first access.
"""

from __future__ import annotations

from .fourier import data_gates_per_qubit, fourier_eval, fourier_frequencies, fourier_series
from .qiskit import to_qiskit
from .spec import BACKENDS, ENCODINGS, READOUTS, CircuitSpec, gate_angles
from .statevector import (
    amplitudes,
    cnot_chain_permutation,
    expectation,
    probabilities,
    readout_state,
    simulate,
)

__all__ = [
    "ENCODINGS",
    "BACKENDS",
    "READOUTS",
    "CircuitSpec",
    "simulate",
    "amplitudes",
    "probabilities",
    "expectation",
    "gate_angles",
    "readout_state",
    "data_gates_per_qubit",
    "fourier_frequencies",
    "fourier_series",
    "fourier_eval",
    "cnot_chain_permutation",
    "to_qiskit",
    "Circuit",
]


def __getattr__(name: str):
    # ``from qsgd.circuit import Circuit`` keeps working without this package importing the
    # perturbation registry at import time (the perturbation imports the simulator lazily)
    if name == "Circuit":
        from ..perturbations import Circuit

        return Circuit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
