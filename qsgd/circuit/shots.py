"""Finite-shot readouts: what a quantum device returns instead of exact expectation values.

A device never shows amplitudes; it returns S bit strings, each drawn from the Born
distribution p_k = |ψ_k|² of the measured state (or, on noisy hardware, from the measured
distribution of the noisy state after readout error, :mod:`qsgd.circuit.noisy`). The readouts
defined here are functions of those S outcomes, and this module samples them in torch.

The measured readout of the quantum attention, ``"z"``: Φ_z = (1/n) Σ_q ⟨Z_q⟩, with
⟨Z_q⟩ = Σ_k p_k (1 − 2 b_q(k)) (b_q(k) bit q of basis index k). From S shots with outcomes
k_1 … k_S the estimator is

    Φ̂_z = (1/(nS)) Σ_s Σ_q (1 − 2 b_q(k_s)) = Σ_j (N_j/S) · (n − 2j)/n,

N_j the number of shots of Hamming weight j (j = 0 … n). It depends on the outcomes only
through (N_0 … N_n) ~ Multinomial(S; P_0 … P_n), P_j = Σ_{|k| = j} p_k, so sampling those n+1
counts (by n conditional binomials, exactly) is sampling Φ̂_z; no 2ⁿ-outcome draw is needed.
E[Φ̂_z] = Φ_z exactly (unbiased) and Var Φ̂_z = Var_P[(n − 2J)/n] / S, at most 1/S.

Relation to the paper's amplitude sum: the default Φ of :mod:`qsgd.attention.layers`,
``"amp"`` = Re Σ_k ψ_k / 2^{n/2} = Re⟨+…+|ψ⟩, is not a function of p: it depends on the
phases of ψ (its global phase included), so no number of computational-basis shots
estimates it. On a device it needs a Hadamard test: an ancilla in |+⟩ controlling H^⊗n·C,
whose ⟨X_anc⟩ = Re⟨0…0|H^⊗n C|0…0⟩ = Re⟨+…+|ψ⟩; its S-shot estimate is
Φ̂_amp = 2B/S − 1 with B ~ Binomial(S, (1 + Φ_amp)/2) (:func:`hadamard_test_estimate`),
unbiased with variance (1 − Φ_amp²)/S, at the price of a controlled circuit on n + 1 qubits
(every gate controlled: many more two-qubit gates than C itself). Φ_z and Φ_amp are different
functions of the score; both are trigonometric polynomials of it (:mod:`qsgd.attention.layers`).

The one-qubit X readouts of the circuit perturbation (:class:`qsgd.perturbations.Circuit`
with ``shots=S``): a device measures every qubit in the X basis (H on each qubit, then Z), so
one shot is a basis index k of the rotated state H^⊗n ψ, drawn with probability
p^X_k = |(H^⊗n ψ)_k|² (:func:`x_basis_probabilities`). The estimate of ⟨X_j⟩ for every qubit j
is read off the same S shots, r̂_j = Σ_k (N_k/S)·(1 − 2 b_j(k)) with
(N_k) ~ Multinomial(S; p^X) (:func:`x_estimates`): unbiased, Var r̂_j = (1 − ⟨X_j⟩²)/S, and
correlated across qubits as on a device, Cov(r̂_j, r̂_l) = (⟨X_j X_l⟩ − ⟨X_j⟩⟨X_l⟩)/S. Each
r̂_j is one of −1, −1 + 2/S, …, 1.

Randomness is keyed like every other noise stream of the project (:mod:`qsgd.noise`): a
draw is a function of (seed, step, position, stream) alone, never of a carried generator.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..noise import keyed_generator

__all__ = ["SHOT_COUNTS", "SHOT_STREAM", "CIRCUIT_SHOT_STREAM", "weight_classes",
           "weight_values", "sample_multinomial", "z_estimate", "hadamard_test_estimate",
           "x_basis_probabilities", "x_estimates", "check_shots", "shots_generator"]

#: the shot counts of the study (issue 20); any S ≥ 1 works
SHOT_COUNTS = (64, 256, 1024, 8192)
#: the stream id of training-mode shot draws (evaluation: SHOT_STREAM + 1); the optimizer's
#: noise streams use stream 0 of their own keys, the run seeds streams 1-3 (ablations.seeds)
SHOT_STREAM = 11
#: the stream id of the circuit perturbation's shot draws (its key: the optimizer's noise seed,
#: the step and the tensor index, as the optimizer's other noise, on a stream of its own)
CIRCUIT_SHOT_STREAM = 13


def check_shots(shots: object, name: str = "shots") -> int:
    """``shots`` as an int, or ``ValueError`` naming ``name`` unless it is an integer >= 1."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"invalid {name}: {shots!r} (must be an integer >= 1)")
    return int(shots)


def weight_classes(probs: Tensor) -> Tensor:
    """P_j = Σ_{popcount(k) = j} p_k: probabilities (…, 2ⁿ) → Hamming-weight classes (…, n+1)."""
    dim = probs.shape[-1]
    n = dim.bit_length() - 1
    if dim != 2**n:
        raise ValueError(f"probabilities have {dim} entries, not a power of two")
    k = torch.arange(dim, device=probs.device)
    weight = sum(((k >> q) & 1) for q in range(n)) if n else torch.zeros_like(k)
    onehot = torch.nn.functional.one_hot(weight, n + 1).to(probs.dtype)  # (2ⁿ, n+1)
    return probs @ onehot


def weight_values(n: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> Tensor:
    """(n − 2j)/n for j = 0 … n: the value of (1/n) Σ_q z_q on a shot of Hamming weight j."""
    j = torch.arange(n + 1, dtype=dtype, device=device)
    return (n - 2 * j) / n


def sample_multinomial(probs: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Counts (…, m) ~ Multinomial(shots; probs (…, m)), exactly, by m − 1 conditional
    binomials: N_0 ~ Bin(S, p_0), N_j ~ Bin(S − Σ_{i<j} N_i, p_j / (1 − Σ_{i<j} p_i)), the
    last the remainder. ``probs`` is clamped to [0, 1] and renormalised first (rounding);
    no gradient. Counts are returned in ``probs``' dtype (integers, exactly)."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"invalid shots: {shots!r} (must be an integer >= 1)")
    p = probs.detach().to(torch.float64).clamp(0, 1)
    p = p / p.sum(-1, keepdim=True)
    left = torch.full(p.shape[:-1], float(shots), dtype=torch.float64, device=p.device)
    mass = torch.ones_like(left)
    out = []
    for j in range(p.shape[-1] - 1):
        q = torch.where(mass > 0, (p[..., j] / mass.clamp_min(1e-300)).clamp(0, 1),
                        torch.zeros_like(mass))
        nj = torch.binomial(left, q, generator=generator)
        out.append(nj)
        left = left - nj
        mass = (mass - p[..., j]).clamp_min(0)
    out.append(left)
    return torch.stack(out, -1).to(probs.dtype)


def z_estimate(classes: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Φ̂_z from S shots (module docstring): classes (…, n+1) are the Hamming-weight
    probabilities P_j (:func:`weight_classes`); returns (…,) in their dtype, no gradient."""
    n = classes.shape[-1] - 1
    counts = sample_multinomial(classes, shots, generator)
    return counts @ weight_values(n, classes.dtype, classes.device) / shots


def hadamard_test_estimate(phi: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Φ̂_amp = 2B/S − 1, B ~ Binomial(S, (1 + Φ_amp)/2): the S-shot Hadamard-test estimate
    of Re⟨+…+|ψ⟩ = ``phi`` (module docstring). No gradient; ``phi``'s shape and dtype."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"invalid shots: {shots!r} (must be an integer >= 1)")
    p = ((1 + phi.detach().to(torch.float64)) / 2).clamp(0, 1)
    b = torch.binomial(torch.full_like(p, float(shots)), p, generator=generator)
    return (2 * b / shots - 1).to(phi.dtype)


def x_basis_probabilities(state: Tensor) -> Tensor:
    """p^X_k = |(H^⊗n ψ)_k|²: the outcome probabilities (…, 2ⁿ) of measuring every qubit of
    the states ``state`` (…, 2ⁿ), complex or real amplitudes, in the X basis (H on each qubit,
    then the computational-basis measurement; outcome bit b_j(k) = 0 is X_j = +1). Real
    output (float64 for complex128 or float64 input, else float32), no gradient; qubit order
    little-endian as :mod:`qsgd.circuit`."""
    dim = state.shape[-1]
    n = dim.bit_length() - 1
    if dim != 2**n:
        raise ValueError(f"state has {dim} amplitudes, not a power of two")
    psi = state.detach()
    batch = psi.shape[:-1]
    real = psi.real if psi.is_complex() else psi
    imag = psi.imag if psi.is_complex() else None
    if n <= DENSE_H_MAX_QUBITS:  # one matmul with H^⊗n per part: fastest for small registers
        hn = _hadamard(n, real.dtype, str(real.device))
        out = (real @ hn).square_()
        return out if imag is None else out.add_((imag @ hn).square_())
    # butterflies: H on qubit q mixes the pairs of indices that differ in bit q
    out = None
    for part in (real, imag):
        if part is None:
            continue
        for q in range(n):
            v = part.reshape(-1, 2 ** (n - 1 - q), 2, 2**q)
            a0, a1 = v[:, :, 0], v[:, :, 1]
            part = torch.stack((a0 + a1, a0 - a1), dim=2).mul_(0.5 ** 0.5)
        part = part.reshape(*batch, dim).square_()
        out = part if out is None else out.add_(part)
    return out


#: registers up to this size rotate to the X basis by a dense 2ⁿ×2ⁿ matmul, larger by
#: butterflies (:func:`x_basis_probabilities`)
DENSE_H_MAX_QUBITS = 8


@functools.lru_cache(maxsize=16)
def _hadamard(n: int, dtype: torch.dtype, device: str) -> Tensor:
    """H^⊗n (2ⁿ, 2ⁿ), symmetric, entries ±2^{−n/2}: row k, column l is (−1)^{popcount(k∧l)}."""
    k = torch.arange(2**n, device=device)
    both = k[:, None] & k[None, :]
    parity = sum(((both >> q) & 1) for q in range(n)) if n else torch.zeros_like(both)
    return ((1 - 2 * (parity & 1)).to(dtype)) * 2.0 ** (-n / 2)


def x_estimates(probs: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """r̂_j = Σ_k (N_k/S)·(1 − 2 b_j(k)), j = 0 … n−1, from one draw
    (N_k) ~ Multinomial(S; ``probs``) per row (:func:`sample_multinomial`): the S-shot
    estimates of ⟨X_j⟩ of every qubit from the same S outcomes (module docstring), for X-basis
    probabilities ``probs`` (…, 2ⁿ) (:func:`x_basis_probabilities`). Returns (…, n) float64,
    each entry one of −1, −1 + 2/S, …, 1; no gradient."""
    shots = check_shots(shots)
    dim = probs.shape[-1]
    n = dim.bit_length() - 1
    counts = sample_multinomial(probs.to(torch.float64), shots, generator)
    k = torch.arange(dim, device=probs.device)
    signs = 1 - 2 * ((k[:, None] >> torch.arange(n, device=probs.device)) & 1)  # (2ⁿ, n)
    # Σ_k N_k·(±1) is an integer below 2⁵³: exact in float64, then one division
    return (counts @ signs.to(torch.float64)) / shots


def shots_generator(device: torch.device | str, seed: int, step: int, position: int,
                    stream: int) -> torch.Generator:
    """The generator of one shot draw: :func:`qsgd.noise.keyed_generator` of (seed, step,
    position, stream), e.g. position = the attention layer, stream = train or evaluation."""
    return keyed_generator(device, seed, step, position, stream)
