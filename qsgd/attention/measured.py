"""Φ as a quantum device would give it: from S measurement shots, optionally of the circuit
run on a noisy device (a fake IBM backend's noise model), instead of exact expectations.

:class:`MeasuredScoreCircuit` is a drop-in for :class:`~qsgd.attention.ScoreCircuit` (the same
parameters ``scale`` (n,) and ``weights`` (depth, 2, n), the same circuit C(a·s; w)):

* readout ``"z"``: Φ(s) = (1/n) Σ_q ⟨Z_q⟩ of the measured distribution p(s) (the ideal
  |ψ(s)|², or with ``noise`` the backend's noisy distribution after readout error,
  :mod:`qsgd.circuit.noisy`). p(s) is a trigonometric polynomial of s with the frequencies
  of the Pauli readouts (every data angle enters one rz per gate, the noise channels are
  fixed linear maps), so Φ and the Hamming-weight class probabilities P_j(s) are evaluated
  exactly as such series: their coefficients come from the measured distribution on the
  aliasing-free angle grid (rⁿ circuits per step, r = 4·depth + 1, computed in float64
  and differentiable in w), and the series at every score by
  :func:`~qsgd.attention.series.line_series` (tested against direct simulation).
* readout ``"amp"`` (the paper's amplitude sum, Re⟨+…+|ψ⟩): only with shots and no noise,
  as a Hadamard test (:mod:`qsgd.circuit.shots`); its noisy version needs a controlled
  circuit on n + 1 qubits and is not modelled.

``shots`` S > 0 replaces the forward value by the S-shot estimate Φ̂ (``"z"``: N ~
Multinomial(S; P_0 … P_n) over Hamming weights, Φ̂ = Σ_j N_j (n − 2j)/(nS); ``"amp"``:
2·Bin(S, (1 + Φ)/2)/S − 1), drawn from the keyed stream (seed, call, position, stream):
``position`` the layer, ``call`` a counter of this module's forward passes kept per mode
(train: stream SHOT_STREAM, evaluation: SHOT_STREAM + 1) in buffers, so a resumed run
(state dict restored) draws what the uninterrupted one drew. Every score of a forward pass
is its own circuit run with S fresh shots. The backward pass is straight-through: the
gradient is that of the expectation Φ (out = Φ + (Φ̂ − Φ).detach()); on a device it would
itself be estimated by parameter shifts with shots, a further noise this model leaves out
(stated in the report).
``shots = 0``: the exact expectation of the (ideal or noisy) measured distribution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..circuit.fourier import angle_grid, grid_dft, spec_frequencies, to_real_basis
from ..circuit.shots import (
    SHOT_STREAM,
    hadamard_test_estimate,
    shots_generator,
    weight_classes,
    weight_values,
    z_estimate,
)
from ..circuit.spec import CircuitSpec
from ..circuit.statevector import simulate_spec
from .chain import chain_line
from .series import line_series

__all__ = ["MeasuredScoreCircuit", "MEASURED_READOUTS"]

MEASURED_READOUTS = ("z", "amp")


class MeasuredScoreCircuit(nn.Module):
    """Φ from shots and/or a noisy device (module docstring).

    Args:
        n_qubits, depth, entangle: the circuit, as :class:`~qsgd.attention.ScoreCircuit`.
        readout: ``"z"`` (default) or ``"amp"`` (shots only, Hadamard test).
        shots: S ≥ 0 (0: the exact expectation).
        noise: ``""`` (ideal device) or a fake backend of :data:`qsgd.circuit.noisy.FAKE_BACKENDS`.
        seed: the run's seed of the shot stream; position: this module's index in the model.
        init_scale: initial a_q (default 1.0); w ~ U(−π, π) as ScoreCircuit.
    """

    def __init__(self, n_qubits: int = 2, depth: int = 2, *, entangle: bool = True,
                 readout: str = "z", shots: int = 0, noise: str = "", seed: int = 0,
                 position: int = 0, init_scale: float = 1.0):
        super().__init__()
        if readout not in MEASURED_READOUTS:
            raise ValueError(f"invalid readout: {readout!r} (valid: "
                             f"{', '.join(MEASURED_READOUTS)})")
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
            raise ValueError(f"invalid shots: {shots!r} (must be an integer >= 0)")
        if readout == "amp" and (noise or not shots):
            raise ValueError("readout 'amp' is modelled with shots (a Hadamard test) and "
                             "without device noise only; use readout 'z'")
        if readout == "amp" and depth > 2:
            raise ValueError("readout 'amp' takes the transfer-matrix chain: depth <= 2")
        self.n_qubits, self.depth, self.entangle = n_qubits, depth, entangle
        self.readout, self.shots, self.noise = readout, shots, noise
        self.seed, self.position = int(seed), int(position)
        self.spec = CircuitSpec(n_qubits, depth, entangle, True, "reupload")
        self.program = None
        if noise:
            from ..circuit.noisy import hardware_program

            self.program = hardware_program(self.spec, noise)
        self.scale = nn.Parameter(torch.full((n_qubits,), float(init_scale)))
        self.weights = nn.Parameter(torch.empty(depth, 2, n_qubits).uniform_(-math.pi, math.pi))
        self.register_buffer("calls", torch.zeros(2, dtype=torch.int64))

    def extra_repr(self) -> str:
        return (f"n_qubits={self.n_qubits}, depth={self.depth}, readout={self.readout!r}, "
                f"shots={self.shots}, noise={self.noise!r}")

    def grid_probabilities(self, w: Tensor) -> Tensor:
        """The measured distribution (rⁿ, 2ⁿ) on the angle grid, float64, differentiable."""
        ks = spec_frequencies(self.spec, "Z")
        grid = angle_grid(ks.numel(), self.n_qubits, torch.float64, w.device)
        grid = grid.reshape(-1, self.n_qubits)
        if self.program is not None:
            from ..circuit.noisy import program_probabilities

            return program_probabilities(self.program, self.spec, grid, w.to(torch.float64))
        return simulate_spec(self.spec, grid, w.to(torch.float64), readout="probabilities")

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(M, ks): real-basis coefficients (n+1, r, …, r) of Φ (row 0) and of the class
        probabilities P_0 … P_{n−1} (rows 1 … n), and their frequencies."""
        n = self.n_qubits
        ks = spec_frequencies(self.spec, "Z")
        m = ks.numel()
        classes = weight_classes(self.grid_probabilities(self.weights))  # (mⁿ, n+1)
        phi = classes @ weight_values(n, classes.dtype, classes.device)
        r = torch.cat([phi[:, None], classes[:, :n]], dim=1).t().reshape(n + 1, *([m] * n))
        return to_real_basis(grid_dft(r, ks, first=1, n=n), ks, lead=1), ks

    def _generator(self, device) -> torch.Generator:
        mode = 0 if self.training else 1
        call = int(self.calls[mode])
        self.calls[mode] += 1
        return shots_generator(device, self.seed, call, self.position,
                               SHOT_STREAM + mode)

    def forward(self, scores: Tensor) -> Tensor:
        if self.readout == "amp":
            w = self.weights.to(scores.dtype)
            phi = chain_line(w, self.scale, scores, depth=self.depth, entangle=self.entangle,
                             hadamard=True, encoding="reupload")
            est = hadamard_test_estimate(phi, self.shots, self._generator(scores.device))
            return phi + (est - phi).detach()
        M, ks = self.coefficients()
        a = self.scale.to(scores.dtype)
        phi = line_series(M[0].to(scores.dtype), ks, a, scores)
        if not self.shots:
            return phi
        with torch.no_grad():
            n = self.n_qubits
            P = torch.stack([line_series(M[1 + j].to(scores.dtype), ks, a.detach(), scores)
                             for j in range(n)], -1)
            P = torch.cat([P, 1 - P.sum(-1, keepdim=True)], -1)
            est = z_estimate(P, self.shots, self._generator(scores.device))
        return phi + (est - phi).detach()
