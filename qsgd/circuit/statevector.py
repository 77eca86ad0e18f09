"""The torch statevector engine: gates, readouts and :func:`simulate`.

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

On the CPU, when no gradient is wanted and every gate is present, :func:`simulate` runs the
same circuits through a native kernel instead (:mod:`qsgd._native`): gate by gate in real
arithmetic per block of 32 circuits, the first layer as a product state, Rz·Ry fused into one
2×2 complex gate per qubit, the CNOT chain as a row permutation, in one pass that writes the
amplitudes once; the same results to rounding (tested against this engine and Qiskit).

``backend="aer"`` hands the same circuits to Qiskit Aer (:mod:`qsgd.circuit.qiskit`), whose
amplitudes take the same readouts. Conventions (angles, qubit order, dtypes) are in the package
docstring (:mod:`qsgd.circuit`).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .. import _native
from .qiskit import run_aer
from .spec import CircuitSpec, check_backend, check_readout, spec_gate_angles

__all__ = [
    "simulate",
    "simulate_spec",
    "amplitudes",
    "probabilities",
    "expectation",
    "readout_state",
    "cnot_chain_permutation",
]


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype a batch is simulated in: float32 or float64 as promoted from the inputs,
    float32 for half types (raises ``TypeError`` for non-floating angles)."""
    dt = None
    for t in tensors:
        if t is None:
            continue
        if not t.is_floating_point():
            raise TypeError(f"circuit angles must be real floating tensors, got {t.dtype}")
        dt = t.dtype if dt is None else torch.promote_types(dt, t.dtype)
    return dt if dt in (torch.float32, torch.float64) else torch.float32


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


def _run_torch(spec: CircuitSpec, x: Tensor, w: Tensor | None) -> _State:
    """Simulate a flat batch: x (B, n), w (B|1, depth, 2, n) or None. State (2ⁿ, B)."""
    n = spec.n
    tab = _tables(n, x.device)
    layers = [(None if a is None else a.t(), None if b is None else b.t())
              for a, b in spec_gate_angles(spec, x, w)]
    st = _product(layers[0][0], layers[0][1], n, spec.hadamard, x)
    for layer, (ry, rz) in enumerate(layers):
        if layer > 0:
            if ry is not None:
                st.ry(ry)
            if rz is not None:
                st.rz(rz, tab["pm"])
        if spec.entangle and n > 1:
            st.permute(tab["chain"])
    st.flush()
    B = x.shape[0]
    if st.re.shape[-1] != B:  # only when no gate depended on the batch
        st.re = st.re.expand(-1, B)
        st.im = None if st.im is None else st.im.expand(-1, B)
    return st


# ----------------------------------------------------------------------------- native kernel
# The same circuits gate by gate in one C pass per block of 32 circuits (qsgd/_native_kernels.c:
# real arithmetic on (re, im) rows, the first layer as a product state, Rz·Ry fused into one 2×2
# complex gate per qubit, the CNOT chain as a row permutation); forward only, so it serves
# inference (no gradient wanted) on the CPU, and the torch engine above everything else.

#: the widest circuit the kernel simulates (its block holds 4·2ⁿ·32 reals)
NATIVE_MAX_QUBITS = 12


def _native_applies(spec: CircuitSpec, x: Tensor, w: Tensor | None) -> bool:
    """Whether the kernel takes this batch: on the CPU, without gradients, up to
    :data:`NATIVE_MAX_QUBITS`, and with every gate present (weights, or data in every gate):
    the kernel computes every gate, so a circuit of mostly absent gates (the circuit
    perturbation's: data in the first Ry alone, no weights) is faster on the engine, which
    skips them and keeps a real state real."""
    if x.device.type != "cpu" or spec.n > NATIVE_MAX_QUBITS:
        return False
    if w is None and spec.encoding != "reupload":
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (w is not None and w.requires_grad)):
        return False
    return _native.library() is not None


@functools.lru_cache(maxsize=32)
def _native_tables(spec: CircuitSpec) -> tuple[Tensor, Tensor]:
    """The CNOT chain's permutation (int32) and the data flags per gate slot (depth·2, int32)."""
    return (cnot_chain_permutation(spec.n).to(torch.int32),
            torch.tensor(spec.data_flags, dtype=torch.int32))


def _run_native(spec: CircuitSpec, x: Tensor, w: Tensor | None) -> Tensor:
    """Amplitudes (B, 2ⁿ), complex64 for float32 x, complex128 for float64, of the flat batch
    x (B, n), w (B|1, depth, 2, n) or None, by the native kernel. A gate the torch engine
    skips (no data, no weights) has angle 0 here: the identity exactly."""
    n, B = spec.n, x.shape[0]
    x = x.detach().contiguous()
    if w is None:
        w = x.new_zeros(1, *spec.weight_shape)
    w = w.detach().contiguous()
    stride = 0 if w.shape[0] == 1 else spec.depth * 2 * n
    perm, data = _native_tables(spec)
    cdt = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    out = torch.empty(B, 2**n, dtype=cdt)
    view = torch.view_as_real(out)
    kernel = _native.kernel("qsgd_state", x.dtype)
    args = (n, spec.depth, x.data_ptr(), w.data_ptr(), stride, data.data_ptr(),
            int(spec.hadamard), int(spec.entangle and n > 1), perm.data_ptr(), view.data_ptr())
    _native.run_parallel(lambda i0, i1: kernel(i0, i1, *args), B, grain=_native.BLOCK)
    return out


# ----------------------------------------------------------------------------- readouts


def _readout(re: Tensor, im: Tensor | None, n: int, readout: str) -> Tensor:
    """Readout of states (2ⁿ, B) as a batch-first tensor (B, …)."""
    check_readout(readout)
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
    # "X" or "Y": ⟨P_q⟩ from the amplitude pairs that differ in qubit q
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
    """Simulate a batch of circuits C(x; w) (the family of :mod:`qsgd.circuit`) and read them out.

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
    return simulate_spec(CircuitSpec(angles.shape[-1], depth, entangle, hadamard, encoding),
                         angles, weights, readout=readout, backend=backend)


def simulate_spec(spec: CircuitSpec, angles: Tensor, weights: Tensor | None = None, *,
                  readout: str = "amplitudes", backend: str = "torch") -> Tensor:
    """:func:`simulate` of the circuits ``spec`` (``angles`` (…, spec.n)); the other arguments
    as there. The entry point for code that holds a spec (the Fourier form, Φ's coefficients,
    the circuit perturbation)."""
    n = spec.n
    if angles.shape[-1] != n:
        raise ValueError(f"angles have {angles.shape[-1]} entries per circuit, the spec {n}")
    check_backend(backend)
    check_readout(readout)
    spec.check_weights(weights)
    dt = _compute_dtype(angles, weights)
    batch = angles.shape[:-1]
    if weights is not None:
        batch = torch.broadcast_shapes(batch, weights.shape[:-3])
    x = angles.to(dt).expand(*batch, n).reshape(-1, n)
    w = None
    if weights is not None:
        w = weights.to(dt)
        if w.dim() == 3:  # shared over the batch: keep one copy, broadcast in the gates
            w = w.reshape(1, *spec.weight_shape)
        else:
            w = w.expand(*batch, *spec.weight_shape).reshape(-1, *spec.weight_shape)
    if backend == "aer":
        state = run_aer(spec, x, w).t()
        out = _readout(state.real.contiguous(), state.imag.contiguous(), n, readout)
    elif _native_applies(spec, x, w):
        state = _run_native(spec, x, w)
        out = state if readout == "amplitudes" else _readout(state.real.t(), state.imag.t(),
                                                             n, readout)
    else:
        st = _run_torch(spec, x, w)
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


