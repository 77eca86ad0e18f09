"""Batched, differentiable statevector simulation of the paper's circuit family, in torch.

The circuit family (Pamuk et al., arXiv 2511.01918, restated in PAPER.md): n qubits, depth L;
Hadamard on every qubit, then per layer an Ry and an Rz rotation on each qubit and a chain of
CNOTs. The paper gives no exact encoding; this module fixes one and documents it.

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

Implementation: the state is kept as a pair of real tensors (real part, imaginary part or
``None`` while the state is real, as it stays with no Rz) of shape (2ⁿ, batch): amplitudes
first, batch last, so each gate runs over contiguous batch rows (for n ≤ 4 and large batches
this is several times faster than batch-first). Before the first CNOT the state is a product
state, built directly from per-qubit 2-vectors by Kronecker products; afterwards a one-qubit
Ry on qubit q reshapes the state to (2^{n−1−q}, 2, 2^q, batch), i.e. the (2, …, 2, batch)
tensor with qubit q's axis isolated, and contracts that axis with the 2×2 rotation; a whole Rz
layer is one diagonal phase; a CNOT chain is one gather by a fixed permutation of the basis
(consecutive chains are composed into one gather). No dense 2ⁿ×2ⁿ matrix is ever formed and
there is no Python loop over the batch. Everything is differentiable by autograd and runs on
any torch device.

``backend="aer"`` runs every circuit of the batch through Qiskit Aer (one experiment per batch
element: the paper simulated its circuit with Qiskit) to measure that cost; its results carry no
gradient. :func:`fourier_series` and :func:`fourier_eval_line` give the same readouts as exact
trigonometric polynomials of the data angles (used by the quantum attention).

The :class:`Circuit` perturbation (registry name ``"circuit"``) uses this simulator with
encoding angles π·θ; see its docstring for the readout and why its defaults reduce to the
paper's closed-form sine for one qubit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .perturbations import Context, Perturbation, register

__all__ = [
    "ENCODINGS",
    "BACKENDS",
    "READOUTS",
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
    "fourier_eval_line",
    "line_coefficients",
    "line_series",
    "circuit_line",
    "cnot_chain_permutation",
    "to_qiskit",
    "Circuit",
]

ENCODINGS = ("reupload", "once")
BACKENDS = ("torch", "aer")
READOUTS = ("amplitudes", "probabilities", "X", "Y", "Z", "amp_sum")


# ----------------------------------------------------------------------------- validation


def _check(n: int, depth: int, encoding: str, backend: str = "torch") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"invalid n_qubits: {n!r} (must be an integer >= 1)")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"invalid depth: {depth!r} (must be an integer >= 1)")
    if encoding not in ENCODINGS:
        raise ValueError(f"invalid encoding: {encoding!r} (valid: {', '.join(ENCODINGS)})")
    if backend not in BACKENDS:
        raise ValueError(f"invalid backend: {backend!r} (valid: {', '.join(BACKENDS)})")


def _check_weights(weights: Tensor | None, depth: int, n: int) -> None:
    if weights is not None and tuple(weights.shape[-3:]) != (depth, 2, n):
        raise ValueError(
            f"weights must have trailing shape (depth, 2, n_qubits) = ({depth}, 2, {n}), "
            f"got {tuple(weights.shape)}"
        )


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    dt = None
    for t in tensors:
        if t is None:
            continue
        if not t.is_floating_point():
            raise TypeError(f"circuit angles must be real floating tensors, got {t.dtype}")
        dt = t.dtype if dt is None else torch.promote_types(dt, t.dtype)
    return dt if dt in (torch.float32, torch.float64) else torch.float32


def _plan(depth: int, encoding: str, has_weights: bool) -> list[tuple[bool, bool]]:
    """Per layer, whether its Ry and Rz gates exist (a gate with angle ≡ 0 is skipped)."""
    plan = []
    for layer in range(depth):
        ry = has_weights or encoding == "reupload" or layer == 0
        rz = has_weights or encoding == "reupload"
        plan.append((ry, rz))
    return plan


def gate_angles(
    angles: Tensor,
    weights: Tensor | None = None,
    *,
    depth: int = 2,
    encoding: str = "reupload",
) -> list[tuple[Tensor | None, Tensor | None]]:
    """The rotation angles of every gate: per layer a pair (ry, rz) of tensors (…, n), ``None``
    for a skipped (identity) gate. ``angles``: (…, n) data angles x; ``weights``: extra angles
    broadcastable to (…, depth, 2, n), index 0 of the third-last axis for Ry, 1 for Rz."""
    n = angles.shape[-1]
    _check(n, depth, encoding)
    _check_weights(weights, depth, n)
    out: list[tuple[Tensor | None, Tensor | None]] = []
    for layer, present in enumerate(_plan(depth, encoding, weights is not None)):
        pair: list[Tensor | None] = []
        for g in (0, 1):
            if not present[g]:
                pair.append(None)
                continue
            data = encoding == "reupload" or (layer == 0 and g == 0)
            a = angles if data else None
            if weights is not None:
                w = weights[..., layer, g, :]
                a = w if a is None else a + w
            pair.append(a)
        out.append((pair[0], pair[1]))
    return out


# ----------------------------------------------------------------------------- constant tables


@functools.lru_cache(maxsize=64)
def _tables(n: int, device: torch.device) -> dict[str, Tensor]:
    k = torch.arange(2**n, device=device)
    bits = (k[:, None] >> torch.arange(n, device=device)) & 1  # (2^n, n): b_q(k)
    return {
        "bits": bits,
        "pm": (2 * bits - 1),  # (2ⁿ, n): +1 where b_q = 1, −1 where 0 (Rz phase sign)
        "chain": cnot_chain_permutation(n).to(device),
    }


def cnot_chain_permutation(n: int) -> Tensor:
    """Index p with (U ψ)[k] = ψ[p[k]] for U = CNOT(n−2→n−1)·…·CNOT(0→1) (CNOT(0→1) first)."""
    idx = torch.arange(2**n)
    for c in range(n - 1):
        t = c + 1
        src = torch.arange(2**n)
        src = src ^ (((src >> c) & 1) << t)  # CNOT(c→t) maps basis k to k ⊕ (b_c 2^t)
        idx = idx[src]
    return idx


# ----------------------------------------------------------------------------- torch engine
# Layout: amplitudes first, batch last. A state is a (2ⁿ, B) real tensor pair, so every gate
# works on contiguous rows of length B (vectorised over the batch), a one-qubit gate on qubit q
# views it as (2^{n−1−q}, 2, 2^q, B), and a basis permutation is a gather of whole rows.


class _State:
    """A batch of states as (re, im) real tensors of shape (2ⁿ, B); im None while real."""

    __slots__ = ("re", "im", "n", "perm")

    def __init__(self, re: Tensor, im: Tensor | None, n: int):
        self.re, self.im, self.n = re, im, n
        self.perm: Tensor | None = None  # a pending basis permutation, applied lazily

    def flush(self) -> None:
        if self.perm is not None:
            self.re = self.re.index_select(0, self.perm)
            if self.im is not None:
                self.im = self.im.index_select(0, self.perm)
            self.perm = None

    def permute(self, p: Tensor) -> None:
        # ψ'[k] = ψ[perm[p[k]]]: compose with whatever is pending
        self.perm = p if self.perm is None else self.perm[p]

    def ry(self, a: Tensor) -> None:
        """Ry(a_q) on every qubit q; a: (n, B|1)."""
        self.flush()
        c, s = torch.cos(a * 0.5), torch.sin(a * 0.5)
        # Ry is real: rotate real and imaginary parts together (half the kernel launches)
        z = self.re if self.im is None else torch.stack((self.re, self.im))
        for q in range(self.n):
            z = _rot(z, c[q], s[q], q)
        if self.im is None:
            self.re = z
        else:
            self.re, self.im = z.unbind(0)

    def rz(self, b: Tensor, pm: Tensor) -> None:
        """Rz(b_q) on every qubit: the diagonal phase exp(i Σ_q (2b_q(k)−1)·b_q/2); b: (n, B|1)."""
        self.flush()
        phase = (pm.to(b.dtype) @ b) * 0.5  # (2ⁿ, B|1)
        c, s = torch.cos(phase), torch.sin(phase)
        re, im = self.re, self.im
        if im is None:
            self.re, self.im = re * c, re * s
        else:
            self.re, self.im = re * c - im * s, re * s + im * c


def _rot(x: Tensor, c: Tensor, s: Tensor, q: int) -> Tensor:
    """[[c, −s], [s, c]] on qubit q of x (…, 2ⁿ, B); c, s: (B|1,)."""
    v = x.reshape(-1, 2, 2**q, x.shape[-1])  # (…·2^{n−1−q}, 2, 2^q, B)
    x0, x1 = v[:, 0], v[:, 1]
    y = torch.stack((c * x0 - s * x1, s * x0 + c * x1), dim=1)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _product(ry: Tensor | None, rz: Tensor | None, n: int, hadamard: bool,
             like: Tensor) -> _State:
    """The state after H (optional) and the first rotation layer: a product state.

    ry, rz: (n, B|1) or None. Per qubit the 2-vector Rz(b)·Ry(a)·(|0⟩ or |+⟩), then their
    Kronecker product with qubit n−1 most significant (little-endian basis index).
    """
    h = math.sqrt(0.5)
    if ry is not None:
        c, s = torch.cos(ry * 0.5), torch.sin(ry * 0.5)
        v0, v1 = ((c - s) * h, (c + s) * h) if hadamard else (c, s)
    else:
        base = (h, h) if hadamard else (1.0, 0.0)
        v0 = like.new_full((n, 1), base[0])
        v1 = like.new_full((n, 1), base[1])
    if rz is not None:
        cb, sb = torch.cos(rz * 0.5), torch.sin(rz * 0.5)
        vre = torch.stack((v0 * cb, v1 * cb), dim=1)  # (n, 2, B)
        vim = torch.stack((-(v0 * sb), v1 * sb), dim=1)
    else:
        vre = torch.stack(torch.broadcast_tensors(v0, v1), dim=1)
        vim = None
    re = vre[n - 1]
    im = None if vim is None else vim[n - 1]
    for q in range(n - 2, -1, -1):
        ar, br = re[:, None], vre[q][None]
        if vim is None:
            y = ar * br
            re = y.reshape(-1, y.shape[-1])
        else:
            ai, bi = im[:, None], vim[q][None]
            nre = ar * br - ai * bi
            nim = ar * bi + ai * br
            re, im = nre.reshape(-1, nre.shape[-1]), nim.reshape(-1, nim.shape[-1])
    return _State(re, im, n)


def _run_torch(x: Tensor, w: Tensor | None, depth: int, entangle: bool, hadamard: bool,
               encoding: str) -> _State:
    """Simulate a flat batch: x (B, n), w (B|1, depth, 2, n) or None. State (2ⁿ, B)."""
    n = x.shape[-1]
    tab = _tables(n, x.device)
    layers = [(None if a is None else a.t(), None if b is None else b.t())
              for a, b in gate_angles(x, w, depth=depth, encoding=encoding)]
    st = _product(layers[0][0], layers[0][1], n, hadamard, x)
    for layer, (ry, rz) in enumerate(layers):
        if layer > 0:
            if ry is not None:
                st.ry(ry)
            if rz is not None:
                st.rz(rz, tab["pm"])
        if entangle and n > 1:
            st.permute(tab["chain"])
    st.flush()
    B = x.shape[0]
    if st.re.shape[-1] != B:  # only when no gate depended on the batch
        st.re = st.re.expand(-1, B)
        st.im = None if st.im is None else st.im.expand(-1, B)
    return st


# ----------------------------------------------------------------------------- readouts


def _readout(re: Tensor, im: Tensor | None, n: int, readout: str) -> Tensor:
    """Readout of states (2ⁿ, B) as a batch-first tensor (B, …)."""
    if readout == "amplitudes":
        return torch.complex(re.t(), torch.zeros_like(re.t()) if im is None else im.t())
    if readout == "probabilities":
        p = re * re if im is None else re * re + im * im
        return p.t()
    if readout == "amp_sum":
        scale = 2.0 ** (-n / 2)
        s_re = re.sum(0) * scale
        s_im = torch.zeros_like(s_re) if im is None else im.sum(0) * scale
        return torch.complex(s_re, s_im)
    if readout == "Z":
        p = re * re if im is None else re * re + im * im
        z = 1 - 2 * _tables(n, re.device)["bits"].t().to(re.dtype)  # (n, 2ⁿ)
        return (z @ p).t()
    if readout in ("X", "Y"):
        B = re.shape[-1]
        cols = []
        for q in range(n):
            r = re.reshape(2 ** (n - 1 - q), 2, 2**q, B)
            r0, r1 = r[:, 0], r[:, 1]
            if im is None:
                val = 2 * (r0 * r1).sum((0, 1)) if readout == "X" else r0.new_zeros(B)
            else:
                i = im.reshape(2 ** (n - 1 - q), 2, 2**q, B)
                i0, i1 = i[:, 0], i[:, 1]
                if readout == "X":  # 2 Re Σ conj(ψ0) ψ1
                    val = 2 * (r0 * r1 + i0 * i1).sum((0, 1))
                else:  # 2 Im Σ conj(ψ0) ψ1
                    val = 2 * (r0 * i1 - i0 * r1).sum((0, 1))
            cols.append(val)
        return torch.stack(cols, dim=-1)
    raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(READOUTS)})")


def readout_state(state: Tensor, readout: str) -> Tensor:
    """Apply a readout to complex amplitudes ``state`` of shape (…, 2ⁿ) (e.g. from Aer).

    ``readout``: ``"amplitudes"`` (…, 2ⁿ) complex; ``"probabilities"`` (…, 2ⁿ);
    ``"X"``, ``"Y"``, ``"Z"`` (…, n): the one-qubit Pauli expectations ⟨P_q⟩, q = 0 … n−1;
    ``"amp_sum"`` (…,) complex: Σ_k ψ_k / 2^{n/2} = ⟨+…+|ψ⟩ (|·| ≤ 1).
    """
    dim = state.shape[-1]
    n = dim.bit_length() - 1
    if dim != 2**n:
        raise ValueError(f"state has {dim} amplitudes, not a power of two")
    batch = state.shape[:-1]
    flat = state.reshape(-1, dim).t()
    out = _readout(flat.real.contiguous(), flat.imag.contiguous(), n, readout)
    return out.reshape(*batch, *out.shape[1:])


# ----------------------------------------------------------------------------- public entry


def simulate(
    angles: Tensor,
    weights: Tensor | None = None,
    *,
    depth: int = 2,
    entangle: bool = True,
    hadamard: bool = True,
    encoding: str = "reupload",
    readout: str = "amplitudes",
    backend: str = "torch",
) -> Tensor:
    """Simulate a batch of circuits C(x; w) (module docstring) and read them out.

    Args:
        angles: data angles x, shape (…, n); n = number of qubits. Any batch shape.
        weights: extra angles added to the gates, broadcastable to (…, depth, 2, n)
            (``[..., l, 0, q]`` for layer l's Ry on qubit q, ``[..., l, 1, q]`` for its Rz);
            typically (depth, 2, n), shared over the batch. ``None``: no extra angles.
        depth: number of layers L (≥ 1).
        entangle: apply the CNOT chain after each layer (False: a product circuit).
        hadamard: start with H on every qubit (the paper's circuit).
        encoding: ``"reupload"`` (x in every Ry and Rz) or ``"once"`` (x in layer 0's Ry only).
        readout: see :func:`readout_state` (``"amplitudes"`` by default).
        backend: ``"torch"`` (differentiable, batched) or ``"aer"`` (Qiskit Aer, one experiment
            per batch element, float64 internally, no gradient, result on the input's device
            and dtype).

    Returns:
        The readout with the batch shape of ``angles`` (and ``weights``) in front.
    """
    n = angles.shape[-1]
    _check(n, depth, encoding, backend)
    if readout not in READOUTS:
        raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(READOUTS)})")
    _check_weights(weights, depth, n)
    dt = _compute_dtype(angles, weights)
    batch = angles.shape[:-1]
    if weights is not None:
        batch = torch.broadcast_shapes(batch, weights.shape[:-3])
    x = angles.to(dt).expand(*batch, n).reshape(-1, n)
    w = None
    if weights is not None:
        w = weights.to(dt)
        if w.dim() == 3:  # shared over the batch: keep one copy, broadcast in the gates
            w = w.reshape(1, depth, 2, n)
        else:
            w = w.expand(*batch, depth, 2, n).reshape(-1, depth, 2, n)
    if backend == "aer":
        state = _run_aer(x, w, depth, entangle, hadamard, encoding).t()
        out = _readout(state.real.contiguous(), state.imag.contiguous(), n, readout)
    else:
        st = _run_torch(x, w, depth, entangle, hadamard, encoding)
        out = _readout(st.re, st.im, n, readout)
    return out.reshape(*batch, *out.shape[1:])


def amplitudes(angles: Tensor, weights: Tensor | None = None, **kw) -> Tensor:
    """Complex amplitudes (…, 2ⁿ); keyword arguments as :func:`simulate`."""
    return simulate(angles, weights, readout="amplitudes", **kw)


def probabilities(angles: Tensor, weights: Tensor | None = None, **kw) -> Tensor:
    """Basis-state probabilities (…, 2ⁿ); keyword arguments as :func:`simulate`."""
    return simulate(angles, weights, readout="probabilities", **kw)


def expectation(angles: Tensor, weights: Tensor | None = None, *, pauli: str = "Z",
                **kw) -> Tensor:
    """One-qubit Pauli expectations ⟨P_q⟩ for P ∈ {X, Y, Z}, shape (…, n)."""
    if pauli not in ("X", "Y", "Z"):
        raise ValueError(f"invalid pauli: {pauli!r} (valid: X, Y, Z)")
    return simulate(angles, weights, readout=pauli, **kw)


# ----------------------------------------------------------------------------- Fourier form
# Every gate angle is x_q + const, and R_P(x + w) = e^{−ix/2}·e^{−iw/2}Π₊ + e^{ix/2}·e^{iw/2}Π₋
# (Π± the eigenprojectors of P), so each amplitude is a trigonometric polynomial in the data
# angles: ψ(x) = Σ_k ψ̂_k Π_q e^{i k_q x_q/2}, with k_q ∈ {−G, −G+2, …, G} for G data gates
# per qubit (Schuld, Sweke & Meyer, PRA 103, 032430, 2021). Probabilities and expectations
# are products of two such series: k_q ∈ {−2G, …, 2G}, even. Sampling the readout on a
# (N)ⁿ grid of period 4π with N > 2·k_max and taking an n-dimensional DFT recovers the
# coefficients exactly (no aliasing); evaluating the series at many x is then far cheaper
# than simulating every circuit, and it stays differentiable in the weights and in x.


def data_gates_per_qubit(depth: int, encoding: str) -> int:
    """G: how many gates carry the data angle on each qubit (2·depth or 1)."""
    _check(1, depth, encoding)
    return 2 * depth if encoding == "reupload" else 1


def fourier_frequencies(depth: int, encoding: str, readout: str) -> Tensor:
    """The half-unit frequencies k (int64, ascending) a readout can contain, per qubit:
    the readout is Σ_k c_k Π_q exp(i k_q x_q / 2) over k_q in this set."""
    if readout not in READOUTS:
        raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(READOUTS)})")
    g = data_gates_per_qubit(depth, encoding)
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
    differentiable in it. Cost: one batch of Nⁿ circuits with N = 2·k_max + 1, so meant for
    small n (N = 4·depth+1 or 8·depth+1 with re-uploading).
    """
    n = int(n_qubits)
    _check(n, depth, encoding)
    ks = fourier_frequencies(depth, encoding, readout)
    kmax = int(ks[-1])
    N = 2 * kmax + 1
    if weights is not None:
        dtype = dtype or weights.dtype
        device = device or weights.device
    dtype = dtype or torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    grid = _angle_grid(N, n, dtype, device)  # (N,)*n + (n,)
    r = simulate(grid, None if weights is None else weights.to(dtype), depth=depth,
                 entangle=entangle, hadamard=hadamard, encoding=encoding, readout=readout)
    return _grid_dft(r, N, ks, first=0, n=n), ks


def _angle_grid(N: int, n: int, dtype: torch.dtype, device) -> Tensor:
    """The (N,)*n + (n,) grid of data angles over one 4π period, N points per qubit."""
    grid1 = torch.arange(N, dtype=dtype, device=device) * (4 * math.pi / N)
    return torch.stack(torch.meshgrid(*([grid1] * n), indexing="ij"), dim=-1)


def _grid_dft(r: Tensor, N: int, ks: Tensor, *, first: int, n: int) -> Tensor:
    """Exact Fourier coefficients at the frequencies ks from readouts sampled on the grid,
    whose n qubit axes (N points each) start at axis ``first`` of ``r``."""
    axes = tuple(range(first, first + n))
    c = torch.fft.fftn(r, dim=axes) / N**n
    idx = (ks % N).to(c.device)
    for q in axes:
        c = c.index_select(q, idx)
    return c


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
def _basis_tables(ks: tuple[int, ...], dtype: torch.dtype,
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


def _ks_tuple(ks: Tensor) -> tuple[int, ...]:
    return tuple(int(k) for k in ks)


@functools.lru_cache(maxsize=64)
def _frequency_tuple(depth: int, encoding: str, readout: str) -> tuple[int, ...]:
    """:func:`fourier_frequencies` as a tuple, cached (it is read on every forward pass)."""
    return _ks_tuple(fourier_frequencies(depth, encoding, readout))


def _to_real_basis(coeffs: Tensor, ks: Tensor, lead: int = 0) -> Tensor:
    """The complex coefficients c (m,)*n of a real readout → the real-basis tensor M (r,)*n
    with Re Σ_j c_j Π_q exp(i k[j_q] θ_q/2) = Σ_i M[i] Π_q b(θ_q)[i_q]. ``lead`` batch axes
    in front are kept."""
    dt = torch.float64 if coeffs.dtype in (torch.complex128, torch.float64) else torch.float32
    T = _basis_tables(_ks_tuple(ks), dt, coeffs.device)[2]
    M = coeffs.to(T.dtype)
    for _ in range(coeffs.dim() - lead):  # contract each qubit axis; the new axis goes last
        M = torch.tensordot(M, T, dims=([lead], [0]))
    return M.real


def fourier_eval_line(coeffs: Tensor, ks: Tensor, scales: Tensor, t: Tensor) -> Tensor:
    """Re Σ_j c_j Π_q exp(i k[j_q] a_q t / 2): a scalar readout's series along the line
    x = a·t, at every entry of ``t`` (any shape; output has that shape, real).

    ``coeffs`` (m,)*n from :func:`fourier_series` for a scalar readout (``"amp_sum"``, or one
    component of another), ``scales`` a (n,). The series is rewritten once in the real basis
    b(θ) = {cos νθ, sin νθ} per qubit (r = m real features for a symmetric set of m
    frequencies), so f(t) = Σ_i M[i_0…i_{n−1}] Π_q b(a_q t)[i_q], and evaluated by
    :func:`line_series`. Differentiable in ``coeffs``, ``scales`` and ``t``.
    """
    n = scales.numel()
    m = ks.numel()
    if tuple(coeffs.shape) != (m,) * n:
        raise ValueError(f"coeffs must have shape {(m,) * n}, got {tuple(coeffs.shape)}")
    return line_series(_to_real_basis(coeffs, ks), ks, scales, t)


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
    plan = _series_plan(_ks_tuple(ks), n, t.dtype, t.device)
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
    the attention's Φ (qsgd.attention.ScoreCircuit). Differentiable in ``weights``,
    ``scales`` and ``t``; output of ``t``'s shape and dtype.
    """
    n = scales.numel()
    dt = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    w = weights.to(dt)
    table = (_coefficient_table(n, depth, entangle, hadamard, encoding, readout, dt, t.device)
             if readout in _SCALAR_READOUTS and tuple(w.shape) == (depth, 2, n) else None)
    if table is None or t.dtype != dt:  # the general route (validates its arguments)
        M, ks = line_coefficients(w, n, depth=depth, entangle=entangle, hadamard=hadamard,
                                  encoding=encoding, readout=readout)
        return line_series(M, ks, scales, t)
    plan = _series_plan(_frequency_tuple(depth, encoding, readout), n, dt, t.device)
    a, tf = scales.to(dt), t.reshape(-1)
    linear = readout in _LINEAR_READOUTS
    if torch.is_grad_enabled() and any(x.requires_grad for x in (tf, a, w)):
        out = _CircuitLine.apply(tf, a, w, table, linear, plan)
    else:
        M = _table_coefficients(w, table, linear, jacobian=False)[0]
        out = _line_eval(tf, a, _stacked(M, plan, False), plan, derivatives=False)[0]
    return out.reshape(t.shape)


#: readouts linear in the state: ∂ψ/∂α = ½·ψ(α + π) for a gate exp(−iαP/2) (one shift);
#: the others are quadratic and take the two-term rule ½·[f(α + π/2) − f(α − π/2)].
_LINEAR_READOUTS = ("amplitudes", "amp_sum")
_SCALAR_READOUTS = ("amp_sum", "X", "Y", "Z")


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
    :func:`fourier_series` followed by the real-basis change, computed without differentiating
    a simulation. Every weight w_j (``weights`` (depth, 2, n), W = 2·depth·n of them) is the
    extra angle of exactly one Ry or Rz, and
    exp(−i(x + w_j)P/2) = cos(w_j/2)·R(x) − i·sin(w_j/2)·P·R(x) with R(x) = exp(−ixP/2), so:

    * ``"amp_sum"`` (linear in the state) is multilinear in the pairs (cos w_j/2, sin w_j/2),
      and the Pauli readouts (quadratic) in the triples (1, cos w_j, sin w_j). M is then one
      fixed table (simulated once per circuit shape, dtype and device, and cached: the
      readout at the corners w ∈ {0, π}^W, or {0, π/2, π}^W solved per axis) times the
      Kronecker product of those small vectors: a few tiny ops. The same few ops give the
      Jacobian dM/dw (the Kronecker products with one vector replaced by its derivative), so
      the backward pass is one matrix-vector product.
    * When that table would be large (3^W·rⁿ above 2²⁰ entries, e.g. Pauli readouts at
      n = 3), M comes from one batched simulation of the Nⁿ grid and its gradient from the
      exact parameter-shift rule (the same batch also simulates the shifted weights: 1 + W
      settings for ``"amp_sum"``, 1 + 2W for the Pauli readouts), so the backward pass is one
      matrix-vector product.
    """
    if readout not in _SCALAR_READOUTS:
        raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(_SCALAR_READOUTS)})")
    n = int(n_qubits)
    _check(n, depth, encoding)
    _check_weights(weights, depth, n)
    if weights.dim() != 3:
        raise ValueError(f"weights must have shape {(depth, 2, n)}, got {tuple(weights.shape)}")
    ks = fourier_frequencies(depth, encoding, readout)
    kw = dict(n=n, ks=ks, depth=depth, entangle=entangle, hadamard=hadamard,
              encoding=encoding, readout=readout)
    dtype = weights.dtype if weights.dtype in (torch.float32, torch.float64) else torch.float32
    table = _coefficient_table(n, depth, entangle, hadamard, encoding, readout, dtype,
                               weights.device)
    if table is not None:
        linear = readout in _LINEAR_READOUTS
        w = weights.to(dtype)
        if torch.is_grad_enabled() and w.requires_grad:
            compute = functools.partial(_table_coefficients, table=table, linear=linear,
                                        jacobian=True)
            M = _WithJacobian.apply(w, compute)
        else:
            M = _table_coefficients(w, table, linear, jacobian=False)[0]
        return M.reshape((ks.numel(),) * n), ks
    if torch.is_grad_enabled() and weights.requires_grad:
        return _WithJacobian.apply(weights, functools.partial(_shift_coefficients, kw=kw)), ks
    with torch.no_grad():
        return _coefficients_batch(weights[None], **kw)[0], ks


#: the largest coefficient table (entries) :func:`line_coefficients` builds and caches
_TABLE_LIMIT = 2**20
#: and the most circuits it simulates to build one (once per shape, dtype and device)
_TABLE_CIRCUITS = 2**21


@functools.lru_cache(maxsize=32)
def _coefficient_table(n: int, depth: int, entangle: bool, hadamard: bool, encoding: str,
                       readout: str, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """(rⁿ, d^W) with M(w) = table @ ⊗_j v(w_j) (see :func:`line_coefficients`), or None."""
    W = 2 * depth * n
    linear = readout in _LINEAR_READOUTS
    d = 2 if linear else 3
    ks = fourier_frequencies(depth, encoding, readout)
    N = 2 * int(ks[-1]) + 1
    if d**W * ks.numel() ** n > _TABLE_LIMIT or d**W * N**n > _TABLE_CIRCUITS:
        return None
    corners = torch.tensor([0.0, math.pi] if linear else [0.0, math.pi / 2, math.pi],
                           dtype=torch.float64)
    settings = torch.cartesian_prod(*([corners] * W)).reshape(-1, W)  # (d^W, W)
    kw = dict(n=n, ks=ks, depth=depth, entangle=entangle, hadamard=hadamard,
              encoding=encoding, readout=readout)
    with torch.no_grad():
        Ms = torch.cat([_coefficients_batch(chunk.reshape(-1, depth, 2, n), **kw)
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


def _table_coefficients(w: Tensor, table: Tensor, linear: bool, *,
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


def _coefficients_batch(wb: Tensor, *, n: int, ks: Tensor, depth: int, entangle: bool,
                        hadamard: bool, encoding: str, readout: str) -> Tensor:
    """M for every weight setting of a batch wb (S, depth, 2, n) → (S, r, …, r)."""
    dtype = wb.dtype if wb.dtype in (torch.float32, torch.float64) else torch.float32
    N = 2 * int(ks[-1]) + 1
    grid = _angle_grid(N, n, dtype, wb.device).reshape(1, -1, n)
    S = wb.shape[0]
    r = simulate(grid, wb.to(dtype).reshape(S, 1, depth, 2, n), depth=depth, entangle=entangle,
                 hadamard=hadamard, encoding=encoding, readout=readout)  # (S, Nⁿ[, n])
    if readout != "amp_sum":
        r = r.mean(-1)
    c = _grid_dft(r.reshape(S, *([N] * n)), N, ks, first=1, n=n)
    return _to_real_basis(c, ks, lead=1).contiguous()


def _shift_coefficients(w: Tensor, kw: dict) -> tuple[Tensor, Tensor]:
    """M(w) (r,)*n and dM/dw (rⁿ, W) by the parameter-shift rule, all settings simulated in one
    batch (see :func:`line_coefficients`)."""
    W = w.numel()
    eye = torch.eye(W, dtype=w.dtype, device=w.device).reshape(W, *w.shape)
    if kw["readout"] in _LINEAR_READOUTS:
        Ms = _coefficients_batch(torch.cat([w[None], w + math.pi * eye]), **kw)
        J = Ms[1:] * 0.5
    else:
        half = (math.pi / 2) * eye
        Ms = _coefficients_batch(torch.cat([w[None], w + half, w - half]), **kw)
        J = (Ms[1:1 + W] - Ms[1 + W:]) * 0.5
    return Ms[0], J.reshape(W, -1).t()


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
    nu, off, _, K = _basis_tables(ks, torch.float64, torch.device("cpu"))
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
    """:func:`circuit_line` on the table route: M(w) and dM/dw (:func:`_table_coefficients`),
    then the series (:class:`_LineSeries`); ∂L/∂w = (dM/dw)ᵀ·∂L/∂M."""

    @staticmethod
    def forward(ctx, t, a, w, table, linear, plan):
        M, J = _table_coefficients(w, table, linear, jacobian=ctx.needs_input_grad[2])
        f, dtheta, feats = _line_eval(t, a, _stacked(M, plan, True), plan, derivatives=True)
        ctx.save_for_backward(t, a, dtheta, *feats, *([] if J is None else [J]))
        ctx.n, ctx.wshape = plan.n, w.shape
        return f

    @staticmethod
    def backward(ctx, g):
        gt, ga, gM = _series_grads(ctx, g)
        gw = None if gM is None else (gM @ ctx.saved_tensors[-1]).reshape(ctx.wshape)
        return gt, ga, gw, None, None, None


# ----------------------------------------------------------------------------- Qiskit


def _gate_list(n: int, depth: int, entangle: bool, hadamard: bool, encoding: str,
               has_weights: bool):
    """The circuit as a list of (gate, qubit(s), (layer, g, q) angle slot or None)."""
    ops: list[tuple[str, tuple[int, ...], tuple[int, int, int] | None]] = []
    if hadamard:
        ops += [("h", (q,), None) for q in range(n)]
    for layer, (ry, rz) in enumerate(_plan(depth, encoding, has_weights)):
        if ry:
            ops += [("ry", (q,), (layer, 0, q)) for q in range(n)]
        if rz:
            ops += [("rz", (q,), (layer, 1, q)) for q in range(n)]
        if entangle:
            ops += [("cx", (c, c + 1), None) for c in range(n - 1)]
    return ops


def _angle_array(x: Tensor, w: Tensor | None, depth: int, encoding: str) -> Tensor:
    """All gate angles as a (B, depth, 2, n) float64 tensor (0 for skipped gates)."""
    layers = gate_angles(x.double(), None if w is None else w.double(), depth=depth,
                         encoding=encoding)
    out = x.new_zeros((x.shape[0], depth, 2, x.shape[-1]), dtype=torch.float64)
    for layer, pair in enumerate(layers):
        for g, a in enumerate(pair):
            if a is not None:
                out[:, layer, g] = a.detach()
    return out


def to_qiskit(
    angles: Sequence[float] | Tensor,
    weights: Sequence | Tensor | None = None,
    n_qubits: int | None = None,
    depth: int = 2,
    entangle: bool = True,
    *,
    hadamard: bool = True,
    encoding: str = "reupload",
):
    """The same circuit C(x; w) as a ``qiskit.QuantumCircuit`` with numeric angles.

    ``angles``: one circuit's data angles, length n; ``weights``: (depth, 2, n) or None.
    Qiskit's qubit q is our qubit q, so ``Statevector(to_qiskit(...)).data`` equals
    ``simulate(...)`` for the same arguments. No measurement or save instruction is added.
    """
    from qiskit import QuantumCircuit

    x = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    n = x.numel()
    if n_qubits is not None and n_qubits != n:
        raise ValueError(f"n_qubits={n_qubits} but {n} angles were given")
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w is not None:
        w = w.reshape(1, depth, 2, n)
    _check(n, depth, encoding)
    vals = _angle_array(x[None], w, depth, encoding)[0]
    qc = QuantumCircuit(n)
    for gate, qubits, slot in _gate_list(n, depth, entangle, hadamard, encoding, w is not None):
        if gate == "h":
            qc.h(qubits[0])
        elif gate == "cx":
            qc.cx(*qubits)
        else:
            getattr(qc, gate)(float(vals[slot]), qubits[0])
    return qc


@functools.lru_cache(maxsize=32)
def _aer_template(n: int, depth: int, entangle: bool, hadamard: bool, encoding: str,
                  has_weights: bool):
    """A parameterised, transpiled circuit (one Parameter per gate angle) and its simulator."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import ParameterVector
    from qiskit_aer import AerSimulator

    ops = _gate_list(n, depth, entangle, hadamard, encoding, has_weights)
    slots = [slot for _, _, slot in ops if slot is not None]
    pv = ParameterVector("a", len(slots))
    qc = QuantumCircuit(n)
    i = 0
    for gate, qubits, _ in ops:
        if gate == "h":
            qc.h(qubits[0])
        elif gate == "cx":
            qc.cx(*qubits)
        else:
            getattr(qc, gate)(pv[i], qubits[0])
            i += 1
    qc.save_statevector()
    sim = AerSimulator(method="statevector")
    # optimization_level=0: ry, rz, h, cx are Aer basis gates, so the circuit runs gate for gate
    tqc = transpile(qc, sim, optimization_level=0)
    return sim, tqc, list(pv), slots


def _run_aer(x: Tensor, w: Tensor | None, depth: int, entangle: bool, hadamard: bool,
             encoding: str) -> Tensor:
    """Run each batch element as its own Aer experiment; complex amplitudes (B, 2ⁿ)."""
    import numpy as np

    n = x.shape[-1]
    sim, tqc, params, slots = _aer_template(n, depth, entangle, hadamard, encoding,
                                            w is not None)
    if w is not None and w.shape[0] != x.shape[0]:
        w = w.expand(x.shape[0], -1, -1, -1)
    vals = _angle_array(x.detach().cpu(), None if w is None else w.detach().cpu(), depth,
                        encoding).numpy()
    B = x.shape[0]
    if params:
        binds = [{p: vals[:, s[0], s[1], s[2]].tolist() for p, s in zip(params, slots)}]
        result = sim.run(tqc, parameter_binds=binds).result()
        states = [np.asarray(result.get_statevector(i)) for i in range(B)]
    else:
        result = sim.run([tqc] * B).result()
        states = [np.asarray(result.get_statevector(i)) for i in range(B)]
    out = torch.from_numpy(np.stack(states).astype(np.complex128))
    cdt = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    return out.to(device=x.device, dtype=cdt)


# ----------------------------------------------------------------------------- perturbation


@register
class Circuit(Perturbation):
    r"""The circuit perturbation: Q_i = r_i · g_i with r_i = ⟨X⟩ of qubit i's circuit.

    The flattened in-scope θ is cut into groups of n = ``ctx.n_qubits`` consecutive entries
    (the last group padded with zeros); entry j of a group is qubit j of that group's circuit,
    whose data angles are x = π·θ_group. r_i is ⟨X_j⟩ of that circuit (Pauli X on qubit j).
    All groups of all tensors are simulated as one batch.

    Defaults (documented choices):
        * ``hadamard=False``: the circuit starts from |0…0⟩. On |0⟩ the paper's leading
          Hadamard equals Ry(π/2) (H|0⟩ = Ry(π/2)|0⟩ = |+⟩), i.e. a fixed π/2 offset on the first
          encoding angle, which turns ⟨X⟩ = sin(πθ) into sin(πθ + π/2) = cos(πθ): the ``cos``
          control, not the paper's sine. Dropping it makes the one-qubit limit
          ⟨X⟩ of Ry(πθ)|0⟩ = sin(πθ), the identity PAPER.md states. ``hadamard=True`` gives
          the literal paper circuit (one-qubit limit: cos(πθ)).
        * ``encoding="once"``: πθ enters only the first layer's Ry. Re-uploading it into every
          Ry and Rz would make even the one-qubit circuit a different function
          (e.g. depth 2: Ry(a)Rz(a)Ry(a)Rz(a)|0⟩), so the sine limit would be lost.
        * ``depth=2`` (the paper's), ``entangle=True`` (CNOT chain after each layer),
          ``extra_ry = extra_rz = 0`` (fixed extra angles added to every Ry / Rz; at 0 those
          gates are the identity and skipped).
    With these defaults the circuit is Ry(πθ_q) on each qubit followed by two CNOT chains,
    so for n = 1 (no CNOT exists) r = 2·cos(πθ/2)·sin(πθ/2) = sin(πθ) for every depth, and
    ``SuperpositionalAdamW(perturbation="circuit", n_qubits=1)`` is the ``sin`` variant.
    For n > 1 the state before the CNOTs is a product with Bloch vectors (sin πθ_q, 0, cos πθ_q)
    and CNOT(c→t) maps X_c to X_c·X_t (Heisenberg picture), so every r_i is a product of sines
    s_j = sin(πθ_j) of its group: n = 2, depth 2: the two CNOTs cancel and r = (s_0, s_1), the
    sine again; n = 4, depth 2 (the ``circuit`` variant's default register):
    r = (s_0·s_2, s_1·s_3, s_2, s_3); n = 4, depth 1: (s_0·s_1, s_1·s_2, s_2·s_3, s_3).

    Computed without autograd in float32 or float64 (half types in float32), on θ's device.
    ``backend="aer"`` routes every group through Qiskit Aer instead (slow; for cost checks).
    """

    name = "circuit"

    def __init__(self, depth: int = 2, entangle: bool = True, hadamard: bool = False,
                 encoding: str = "once", extra_ry: float = 0.0, extra_rz: float = 0.0,
                 backend: str = "torch"):
        _check(1, depth, encoding, backend)
        self.depth = int(depth)
        self.entangle = bool(entangle)
        self.hadamard = bool(hadamard)
        self.encoding = encoding
        self.extra_ry = float(extra_ry)
        self.extra_rz = float(extra_rz)
        self.backend = backend

    def __repr__(self) -> str:
        return (f"Circuit(depth={self.depth}, entangle={self.entangle}, "
                f"hadamard={self.hadamard}, encoding={self.encoding!r}, "
                f"extra_ry={self.extra_ry}, extra_rz={self.extra_rz}, "
                f"backend={self.backend!r})")

    def readout(self, theta: Tensor, n_qubits: int) -> Tensor:
        """r for a 1-D θ: ⟨X⟩ per entry, same length, dtype and device as θ."""
        n = int(n_qubits)
        length = theta.numel()
        dt = theta.dtype if theta.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.no_grad():
            x = theta.detach().reshape(-1).to(dt)
            pad = (-length) % n
            if pad:
                x = torch.cat((x, x.new_zeros(pad)))
            x = (x * math.pi).reshape(-1, n)
            w = None
            if self.extra_ry != 0.0 or self.extra_rz != 0.0:
                w = x.new_empty(self.depth, 2, n)
                w[:, 0] = self.extra_ry
                w[:, 1] = self.extra_rz
            r = simulate(x, w, depth=self.depth, entangle=self.entangle,
                         hadamard=self.hadamard, encoding=self.encoding, readout="X",
                         backend=self.backend)
            return r.reshape(-1)[:length].to(theta.dtype)

    def term(self, theta: Tensor, grad: Tensor, ctx: Context) -> Tensor:
        return self.readout(theta, ctx.n_qubits).mul_(grad)

    def terms(self, thetas: list[Tensor], grads: list[Tensor],
              ctxs: list[Context]) -> list[Tensor]:
        """All tensors in one batch: each is padded to whole groups, concatenated, simulated
        once and split back (groups never straddle two tensors)."""
        if not thetas:
            return []
        ns = {c.n_qubits for c in ctxs}
        dts = {t.dtype for t in thetas}
        devs = {t.device for t in thetas}
        if len(ns) != 1 or len(dts) != 1 or len(devs) != 1:
            return super().terms(thetas, grads, ctxs)
        n = ns.pop()
        parts, lengths = [], []
        for t in thetas:
            flat = t.detach().reshape(-1)
            pad = (-flat.numel()) % n
            parts.append(torch.cat((flat, flat.new_zeros(pad))) if pad else flat)
            lengths.append(flat.numel())
        r = self.readout(torch.cat(parts), n)
        out, start = [], 0
        for length, g in zip(lengths, grads):
            out.append(r[start:start + length].mul(g))
            start += length + (-length) % n
        return out
