"""The circuits' readouts as exact trigonometric polynomials of the data angles.

Every gate angle is x_q + const, and R_P(x + w) = e^{−ix/2}·e^{−iw/2}Π₊ + e^{ix/2}·e^{iw/2}Π₋
(Π± the eigenprojectors of P), so each amplitude is a trigonometric polynomial in the data
angles: ψ(x) = Σ_k ψ̂_k Π_q e^{i k_q x_q/2}, with k_q ∈ {−G, −G+2, …, G} for G data gates
per qubit (Schuld, Sweke & Meyer, PRA 103, 032430, 2021). Probabilities and expectations
are products of two such series: k_q ∈ {−2G, …, 2G}, even. Either way the m frequencies of
a qubit are k = k₀ + 2j, j = 0 … m−1, so f(x)·e^{−ik₀x/2} = Σ_j c_j e^{ijx} is 2π-periodic with
m integer frequencies: sampling the readout on an mⁿ grid of period 2π (x_p = 2πp/m),
multiplying by e^{−ik₀x_p/2} per qubit and taking an n-dimensional DFT recovers the
coefficients exactly, without aliasing, from the fewest samples that can (m per qubit: 5
instead of 9 for the amplitudes of the paper's depth-2 circuit, 5ⁿ against 9ⁿ circuits).
Evaluating the series at many x is then far cheaper than simulating every circuit, and it
stays differentiable in the weights and in x.

Besides :func:`fourier_series` and :func:`fourier_eval`, the module holds what the attention's
Φ (:mod:`qsgd.attention`) builds on: the frequency set of a readout, the grid and its DFT, and
the real basis {cos νθ, sin νθ} a real readout is rewritten in.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .spec import CircuitSpec, check_readout
from .statevector import simulate_spec

__all__ = [
    "data_gates_per_qubit",
    "fourier_frequencies",
    "spec_frequencies",
    "fourier_series",
    "fourier_eval",
    "angle_grid",
    "grid_dft",
    "basis_tables",
    "ks_tuple",
    "frequency_tuple",
    "to_real_basis",
]


def data_gates_per_qubit(depth: int, encoding: str) -> int:
    """G: how many gates carry the data angle on each qubit (2·depth or 1)."""
    return CircuitSpec(1, depth, encoding=encoding).data_gates


def fourier_frequencies(depth: int, encoding: str, readout: str) -> Tensor:
    """The half-unit frequencies k (int64, ascending) a readout can contain, per qubit:
    the readout is Σ_k c_k Π_q exp(i k_q x_q / 2) over k_q in this set."""
    check_readout(readout)
    return spec_frequencies(CircuitSpec(1, depth, encoding=encoding), readout)


def spec_frequencies(spec: CircuitSpec, readout: str) -> Tensor:
    """:func:`fourier_frequencies` of the circuits ``spec`` (only depth and encoding matter):
    k_q ∈ {−G, −G+2, …, G} for the amplitude readouts, {−2G, …, 2G} (even) for the others."""
    check_readout(readout)
    g = spec.data_gates
    kmax = g if readout in ("amplitudes", "amp_sum") else 2 * g
    return torch.arange(-kmax, kmax + 1, 2)


def fourier_series(
    weights: Tensor | None,
    n_qubits: int,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    readout: str = "amp_sum",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact Fourier coefficients of a readout as a function of the data angles.

    With k = :func:`fourier_frequencies` (m values) the readout of C(x; w) is
    ``Σ_{j_0…j_{n−1}} c[j_0, …, j_{n−1}, …] · Π_q exp(i k[j_q] x_q / 2)``. Returns (c, k): c
    complex of shape (m,)*n + the readout's trailing shape (none for ``"amp_sum"``, (n,) for
    X/Y/Z, (2ⁿ,) for amplitudes/probabilities). ``weights``: (depth, 2, n) or None; c is
    differentiable in it. ``n_qubits``, ``depth``, ``entangle``, ``hadamard``, ``encoding``,
    ``readout``: as :func:`qsgd.circuit.simulate`; ``dtype``, ``device``: of the grid when
    there are no weights (default: torch's default dtype, the CPU). Cost: one batch of mⁿ
    circuits (the grid of :func:`angle_grid`), so meant for small n (m = 2·depth+1 or
    4·depth+1 with re-uploading).
    """
    spec = CircuitSpec(int(n_qubits), depth, entangle, hadamard, encoding)
    n = spec.n
    ks = spec_frequencies(spec, readout)
    if weights is not None:
        dtype = dtype or weights.dtype
        device = device or weights.device
    dtype = dtype or torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    grid = angle_grid(ks.numel(), n, dtype, device)  # (m,)*n + (n,)
    r = simulate_spec(spec, grid, None if weights is None else weights.to(dtype),
                      readout=readout)
    return grid_dft(r, ks, first=0, n=n), ks


def angle_grid(m: int, n: int, dtype: torch.dtype, device) -> Tensor:
    """The (m,)*n + (n,) grid of data angles x_p = 2πp/m, p = 0 … m−1, on every qubit: the
    samples :func:`grid_dft` takes for a frequency set of m values k₀ + 2j."""
    grid1 = torch.arange(m, dtype=dtype, device=device) * (2 * math.pi / m)
    return torch.stack(torch.meshgrid(*([grid1] * n), indexing="ij"), dim=-1)


def grid_dft(r: Tensor, ks: Tensor, *, first: int, n: int) -> Tensor:
    """Exact Fourier coefficients c (…, m, …, m, …) at the frequencies ``ks`` = k₀ + 2j
    (ascending, m values) from readouts ``r`` sampled on :func:`angle_grid`, whose n qubit
    axes (m points each) start at axis ``first`` of ``r``: per axis, the samples times
    e^{−ik₀x_p/2} = e^{−iπk₀p/m}, then the DFT over the axes divided by mⁿ (module docstring)."""
    m = ks.numel()
    axes = tuple(range(first, first + n))
    cdt = torch.complex128 if r.dtype in (torch.float64, torch.complex128) else torch.complex64
    p = torch.arange(m, dtype=torch.float64, device=r.device)
    phase = torch.polar(torch.ones_like(p), -math.pi * int(ks[0]) * p / m).to(cdt)
    c = r.to(cdt)
    for q in axes:
        c = c * phase.reshape((m,) + (1,) * (c.dim() - q - 1))
    return torch.fft.fftn(c, dim=axes) / m**n


def fourier_eval(coeffs: Tensor, ks: Tensor, angles: Tensor) -> Tensor:
    """Evaluate Σ_j c[j, …] Π_q exp(i k[j_q] x_q / 2) at data angles x (…, n).

    ``coeffs`` and ``ks`` as returned by :func:`fourier_series`. Returns complex
    (…, readout trailing shape). One (B, m) × (m, mⁿ⁻¹·T) product and n−1 weighted sums.
    """
    n = angles.shape[-1]
    m = ks.numel()
    batch = angles.shape[:-1]
    trailing = coeffs.shape[n:]
    x = angles.reshape(-1, n)
    ph = x[:, :, None] * (ks.to(device=x.device, dtype=x.dtype) * 0.5)  # (B, n, m)
    e = torch.complex(torch.cos(ph), torch.sin(ph))
    c = coeffs.to(e.dtype).reshape(m, -1)
    out = e[:, 0] @ c
    for q in range(1, n):
        out = (out.reshape(out.shape[0], m, -1) * e[:, q, :, None]).sum(1)
    return out.reshape(*batch, *trailing)


@functools.lru_cache(maxsize=64)
def basis_tables(ks: tuple[int, ...], dtype: torch.dtype,
                  device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A real trigonometric basis for the half-unit frequencies ``ks`` (a symmetric set).

    Returns (nu, off, T, K) on ``device``: the basis is b_i(θ) = cos(nu_i·θ + off_i), i.e.
    cos(νθ) for every ν = |k|/2 and sin(νθ) = cos(νθ − π/2) for every ν > 0; T (m, r) complex
    has exp(i k_j θ/2) = Σ_i T[j, i]·b_i(θ); K (r, r) has db/dθ = b·K ((cos νθ)' = −ν sin νθ,
    (sin νθ)' = ν cos νθ). nu, off, K in ``dtype``, T in its complex type. Cached: the tables
    depend only on the frequency set, and building them is many tiny ops.
    """
    half = sorted({abs(k) for k in ks})
    nus = [v / 2 for v in half] + [v / 2 for v in half if v > 0]
    offs = [0.0] * len(half) + [-math.pi / 2] * sum(1 for v in half if v > 0)
    sin_col = {v: len(half) + i for i, v in enumerate(v for v in half if v > 0)}
    T = torch.zeros(len(ks), len(nus), dtype=torch.complex128)
    for j, k in enumerate(ks):
        T[j, half.index(abs(k))] = 1.0
        if k != 0:
            T[j, sin_col[abs(k)]] = 1j if k > 0 else -1j
    K = torch.zeros(len(nus), len(nus), dtype=torch.float64)
    for v, js in sin_col.items():
        ic = half.index(v)
        K[js, ic] = -v / 2  # (cos νθ)' = −ν·sin νθ
        K[ic, js] = v / 2  # (sin νθ)' = ν·cos νθ
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    real = dict(device=device, dtype=dtype)
    return (torch.tensor(nus, dtype=torch.float64).to(**real),
            torch.tensor(offs, dtype=torch.float64).to(**real),
            T.to(device=device, dtype=cdt), K.to(**real))


def ks_tuple(ks: Tensor) -> tuple[int, ...]:
    """A frequency tensor as a tuple of ints (hashable: a cache key)."""
    return tuple(int(k) for k in ks)


@functools.lru_cache(maxsize=64)
def frequency_tuple(spec: CircuitSpec, readout: str) -> tuple[int, ...]:
    """:func:`spec_frequencies` as a tuple, cached (it is read on every forward pass)."""
    return ks_tuple(spec_frequencies(spec, readout))


def to_real_basis(coeffs: Tensor, ks: Tensor, lead: int = 0) -> Tensor:
    """The complex coefficients c (m,)*n of a real readout → the real-basis tensor M (r,)*n
    with Re Σ_j c_j Π_q exp(i k[j_q] θ_q/2) = Σ_i M[i] Π_q b(θ_q)[i_q]. ``lead`` batch axes
    in front are kept."""
    dt = torch.float64 if coeffs.dtype in (torch.complex128, torch.float64) else torch.float32
    T = basis_tables(ks_tuple(ks), dt, coeffs.device)[2]
    M = coeffs.to(T.dtype)
    for _ in range(coeffs.dim() - lead):  # contract each qubit axis; the new axis goes last
        M = torch.tensordot(M, T, dims=([lead], [0]))
    return M.real
