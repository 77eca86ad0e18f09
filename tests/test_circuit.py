"""The torch statevector simulator against Qiskit, its gradients against the parameter-shift
rule, its Fourier structure, and the circuit perturbation's one-qubit limit (the sine)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qsgd import SuperpositionalAdamW, get_perturbation
from qsgd.circuit import (
    READOUTS,
    CircuitSpec,
    cnot_chain_permutation,
    expectation,
    fourier_eval,
    fourier_frequencies,
    fourier_series,
    gate_angles,
    probabilities,
    readout_state,
    simulate,
    to_qiskit,
)
from qsgd.perturbations import Circuit, Context

F64 = torch.float64
angle = st.floats(-2 * math.pi, 2 * math.pi, allow_nan=False, width=64)


@st.composite
def circuits(draw, max_qubits=4, max_depth=3, batch=2):
    n = draw(st.integers(1, max_qubits))
    depth = draw(st.integers(1, max_depth))
    x = torch.tensor(draw(st.lists(angle, min_size=batch * n, max_size=batch * n)),
                     dtype=F64).reshape(batch, n)
    w = None
    if draw(st.booleans()):
        k = depth * 2 * n
        w = torch.tensor(draw(st.lists(angle, min_size=k, max_size=k)), dtype=F64)
        w = w.reshape(depth, 2, n)
    kw = dict(depth=depth, entangle=draw(st.booleans()), hadamard=draw(st.booleans()),
              encoding=draw(st.sampled_from(["reupload", "once"])))
    return x, w, kw


def _qiskit_state(x, w, kw):
    from qiskit.quantum_info import Statevector

    qc = to_qiskit(x, w, x.numel(), kw["depth"], kw["entangle"], hadamard=kw["hadamard"],
                   encoding=kw["encoding"])
    return Statevector(qc)


# ----------------------------------------------------------------------------- vs Qiskit


@settings(max_examples=40, deadline=None)
@given(circuits())
def test_amplitudes_match_statevector(case):
    pytest.importorskip("qiskit", reason="qiskit is not installed")
    x, w, kw = case
    amps = simulate(x, w, **kw)
    assert amps.dtype == torch.complex128 and amps.shape == (2, 2 ** x.shape[1])
    for b in range(x.shape[0]):
        ref = torch.from_numpy(_qiskit_state(x[b], w, kw).data)
        assert torch.allclose(amps[b], ref, atol=1e-10, rtol=0), (amps[b] - ref).abs().max()
    norms = amps.abs().pow(2).sum(-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-12)
    # float32 gives complex64 and the same state to single precision
    a32 = simulate(x.float(), None if w is None else w.float(), **kw)
    assert a32.dtype == torch.complex64
    assert torch.allclose(a32.to(torch.complex128), amps, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(circuits(max_qubits=3))
def test_readouts_match_qiskit(case):
    pytest.importorskip("qiskit", reason="qiskit is not installed")
    from qiskit.quantum_info import SparsePauliOp

    x, w, kw = case
    n = x.shape[1]
    probs = probabilities(x, w, **kw)
    ex = {p: expectation(x, w, pauli=p, **kw) for p in "XYZ"}
    amp_sum = simulate(x, w, readout="amp_sum", **kw)
    for b in range(x.shape[0]):
        sv = _qiskit_state(x[b], w, kw)
        assert torch.allclose(probs[b], torch.from_numpy(sv.probabilities()), atol=1e-10)
        for p in "XYZ":
            for q in range(n):
                label = ["I"] * n
                label[n - 1 - q] = p  # Qiskit labels read qubit n−1 … 0
                ref = sv.expectation_value(SparsePauliOp("".join(label))).real
                assert abs(float(ex[p][b, q]) - ref) < 1e-10, (p, q)
        ref_sum = complex(sv.data.sum()) / 2 ** (n / 2)
        assert abs(complex(amp_sum[b]) - ref_sum) < 1e-10
    # readout_state on complex amplitudes gives the same numbers
    amps = simulate(x, w, **kw)
    for ro in READOUTS:
        assert torch.allclose(readout_state(amps, ro), simulate(x, w, readout=ro, **kw),
                              atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(circuits(max_qubits=3, batch=3))
def test_aer_backend_matches_torch(case):
    pytest.importorskip("qiskit_aer", reason="qiskit-aer is not installed")
    x, w, kw = case
    aer = simulate(x, w, backend="aer", **kw)
    ours = simulate(x, w, **kw)
    assert aer.dtype == ours.dtype and aer.shape == ours.shape
    assert torch.allclose(aer, ours, atol=1e-6, rtol=0), (aer - ours).abs().max()
    z_aer = simulate(x, w, backend="aer", readout="Z", **kw)
    assert torch.allclose(z_aer, simulate(x, w, readout="Z", **kw), atol=1e-6)


def test_batch_shapes_and_broadcast_weights():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 2, dtype=F64)
    w = torch.randn(2, 2, 2, dtype=F64)
    out = simulate(x, w)
    assert out.shape == (3, 5, 4)
    flat = simulate(x.reshape(-1, 2), w).reshape(3, 5, 4)
    assert torch.equal(out, flat)
    # per-element weights broadcast against shared angles
    wb = w.expand(3, 5, 2, 2, 2)
    assert torch.allclose(simulate(x, wb), out, atol=1e-14)
    assert simulate(x[0, 0], w).shape == (4,)
    assert expectation(x, w, pauli="X").shape == (3, 5, 2)
    assert simulate(x, w, readout="amp_sum").shape == (3, 5)


def test_cnot_chain_permutation():
    # CNOT(0→1) on |b1 b0⟩ = |01⟩ (k = 1, qubit 0 set) gives |11⟩ (k = 3)
    p = cnot_chain_permutation(2)
    psi = torch.zeros(4)
    psi[1] = 1.0
    assert psi[p].nonzero().item() == 3
    for n in range(1, 6):
        assert sorted(cnot_chain_permutation(n).tolist()) == list(range(2**n))


def test_validation_messages():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="invalid depth: 0"):
        simulate(x, depth=0)
    with pytest.raises(ValueError, match="invalid encoding: 'twice'"):
        simulate(x, encoding="twice")
    with pytest.raises(ValueError, match="invalid backend: 'gpu'"):
        simulate(x, backend="gpu")
    with pytest.raises(ValueError, match="invalid readout: 'W'"):
        simulate(x, readout="W")
    with pytest.raises(ValueError, match=r"trailing shape \(depth, 2, n_qubits\) = \(2, 2, 3\)"):
        simulate(x, torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="invalid pauli: 'W'"):
        expectation(x, pauli="W")
    with pytest.raises(TypeError, match="real floating"):
        simulate(torch.zeros(2, 3, dtype=torch.int64))


def test_circuit_spec_validates_and_keys_caches():
    spec = CircuitSpec(3, 2, 1, 0, "once")
    assert (spec.entangle, spec.hadamard) == (True, False)  # plain bools: equal specs hash equal
    assert spec == CircuitSpec(3, 2, True, False, "once")
    assert hash(spec) == hash(CircuitSpec(3, 2, True, False, "once"))
    assert spec.weight_shape == (2, 2, 3) and spec.data_gates == 1
    assert CircuitSpec(3, 4).data_gates == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.depth = 3
    for kwargs, message in [(dict(n=0), "invalid n_qubits: 0"), (dict(n=True), "invalid n_qubits"),
                            (dict(n=2, depth=0), "invalid depth: 0"),
                            (dict(n=2, depth=1.5), "invalid depth: 1.5"),
                            (dict(n=2, encoding="twice"), "invalid encoding: 'twice'")]:
        with pytest.raises(ValueError, match=message):
            CircuitSpec(**kwargs)
    with pytest.raises(ValueError, match=r"trailing shape \(depth, 2, n_qubits\) = \(2, 2, 3\)"):
        spec.check_weights(torch.zeros(2, 2, 2))
    # the gate list skips exactly the identity gates of the plan (once, no weights: one Ry layer)
    assert [g for g, _, _ in spec.gates(False)] == ["ry"] * 3 + ["cx"] * 4
    assert [g for g, _, _ in CircuitSpec(1, 1).gates(True)] == ["h", "ry", "rz"]


def test_import_qsgd_is_light_and_circuit_is_re_exported():
    """``import qsgd`` loads no circuit, attention, model or fused code; ``qsgd.circuit.Circuit``
    is the registered perturbation of qsgd.perturbations."""
    code = ("import sys, qsgd; bad = [m for m in sys.modules if m.startswith(('qsgd.circuit', "
            "'qsgd.attention', 'qsgd.models', 'qsgd.fused', 'qiskit'))]; assert not bad, bad; "
            "import qsgd.circuit, qsgd.perturbations; "
            "assert qsgd.circuit.Circuit is qsgd.perturbations.Circuit; "
            "assert qsgd.perturbations.get_perturbation('circuit').__class__.__name__ == 'Circuit'")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=root)


def test_import_without_qiskit():
    """``import qsgd.circuit`` must not import qiskit (heavy imports are lazy)."""
    code = ("import sys, qsgd.circuit, qsgd.attention, qsgd.models; "
            "bad = [m for m in sys.modules if m.startswith(('qiskit', 'qiskit_aer'))]; "
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=root)


# ----------------------------------------------------------------------------- gradients


@settings(max_examples=15, deadline=None)
@given(circuits(max_qubits=3), st.sampled_from(["X", "Y", "Z"]))
def test_gradients_match_parameter_shift(case, pauli):
    """d⟨O⟩/dα = (⟨O⟩(α + π/2) − ⟨O⟩(α − π/2))/2 for every rotation angle α; a data angle
    x_q is the sum of that rule over the gates that carry it."""
    x, w, kw = case
    n, depth = x.shape[1], kw["depth"]
    w = torch.randn(depth, 2, n, dtype=F64, generator=torch.Generator().manual_seed(1)) \
        if w is None else w
    coef = torch.linspace(0.5, 1.5, n, dtype=F64)

    def f(xx, ww):
        return (expectation(xx, ww, pauli=pauli, **kw) * coef).sum()

    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(f(xg, wg), (xg, wg))
    shift = torch.zeros_like(w)
    ps = torch.zeros_like(w)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in w.shape)):
        i = tuple(idx.tolist())
        shift.zero_()
        shift[i] = math.pi / 2
        ps[i] = (f(x, w + shift) - f(x, w - shift)) / 2
    assert torch.allclose(gw, ps, atol=1e-9), (gw - ps).abs().max()
    # data angles: x_q enters every gate of qubit q (reupload) or layer 0's Ry (once); the
    # shift rule summed over those gates, per batch element
    for b in range(x.shape[0]):
        def fb(ww, b=b):
            return (expectation(x[b], ww, pauli=pauli, **kw) * coef).sum()

        gates = [(layer, g) for layer in range(depth) for g in (0, 1)
                 if kw["encoding"] == "reupload" or (layer == 0 and g == 0)]
        for q in range(n):
            tot = 0.0
            for layer, g in gates:
                shift.zero_()
                shift[layer, g, q] = math.pi / 2
                tot += float(fb(w + shift) - fb(w - shift)) / 2
            assert abs(float(gx[b, q]) - tot) < 1e-9


def test_gate_angles_layout():
    x = torch.tensor([[0.1, 0.2]], dtype=F64)
    w = torch.arange(8, dtype=F64).reshape(2, 2, 2)
    layers = gate_angles(x, w, depth=2, encoding="once")
    assert torch.allclose(layers[0][0], x + w[0, 0])
    assert torch.allclose(layers[0][1], w[0, 1].expand(1, 2))
    assert torch.allclose(layers[1][0], w[1, 0].expand(1, 2))
    assert gate_angles(x, None, depth=2, encoding="once")[1] == (None, None)


# ----------------------------------------------------------------------------- Fourier structure


@pytest.mark.parametrize("n,depth,encoding", [(1, 1, "once"), (3, 1, "once"), (2, 2, "reupload"),
                                              (3, 1, "reupload")])
def test_fourier_support_of_a_data_angle(n, depth, encoding):
    """Along x_q = s for all q, amplitudes hold only frequencies k/2 with k ≡ G·n (mod 2) and
    |k/2| ≤ G·n/2 (half-integers when G·n is odd), probabilities only integers ≤ G·n."""
    g = 2 * depth if encoding == "reupload" else 1
    N = 512
    s = torch.arange(N, dtype=F64) * (4 * math.pi / N)  # period 4π: FFT bin j ↔ frequency j/2
    w = torch.randn(depth, 2, n, dtype=F64, generator=torch.Generator().manual_seed(3))
    kw = dict(depth=depth, encoding=encoding)
    x = s[:, None].expand(N, n)
    bins = torch.fft.fftfreq(N, d=1.0 / N).round().long()  # signed bin j
    for ro, kmax in (("amplitudes", g * n), ("probabilities", 2 * g * n), ("Z", 2 * g * n),
                     ("X", 2 * g * n)):
        spec = torch.fft.fft(simulate(x, w, readout=ro, **kw), dim=0).abs().pow(2).sum(-1)
        allowed = (bins.abs() <= kmax) & ((bins - kmax) % 2 == 0)
        leak = spec[~allowed].sum() / spec.sum()
        assert leak < 1e-24, (ro, float(leak))
        if ro == "amplitudes" and kmax % 2 == 1:
            assert spec[bins % 2 == 1].sum() / spec.sum() > 0.999  # half-integer frequencies


@settings(max_examples=12, deadline=None)
@given(circuits(max_qubits=3, max_depth=2, batch=5), st.sampled_from(READOUTS))
def test_fourier_series_is_exact(case, readout):
    x, w, kw = case
    c, ks = fourier_series(w, x.shape[1], readout=readout, dtype=F64, **kw)
    assert torch.equal(ks, fourier_frequencies(kw["depth"], kw["encoding"], readout))
    got = fourier_eval(c, ks, x)
    ref = simulate(x, w, readout=readout, **kw).to(got.dtype)
    assert torch.allclose(got, ref, atol=1e-10), (got - ref).abs().max()


# ----------------------------------------------------------------------------- perturbation


def test_circuit_registered_and_defaults():
    p = get_perturbation("circuit")
    assert isinstance(p, Circuit)
    assert (p.depth, p.entangle, p.hadamard, p.encoding, p.extra_ry, p.extra_rz) == (
        2, True, False, "once", 0.0, 0.0)
    assert p == Circuit() and hash(p) == hash(Circuit())
    assert "depth=2" in repr(p)
    with pytest.raises(ValueError, match="invalid encoding"):
        Circuit(encoding="bad")


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_one_qubit_circuit_is_the_sine(depth):
    theta = torch.linspace(-3.0, 3.0, 601, dtype=F64)
    grad = torch.linspace(-1.0, 2.0, 601, dtype=F64)
    ctx = Context(step=1, seed=0, index=0, n_qubits=1)
    q = Circuit(depth=depth).term(theta, grad, ctx)
    ref = get_perturbation("sin").term(theta, grad, ctx)
    assert (q - ref).abs().max() < 1e-12
    # with the paper's leading Hadamard the limit is the cos control instead
    qh = Circuit(depth=depth, hadamard=True).term(theta, grad, ctx)
    assert (qh - get_perturbation("cos").term(theta, grad, ctx)).abs().max() < 1e-12


def test_two_qubits_closed_forms():
    """Heisenberg picture: CNOT(0→1) maps X_0 to X_0X_1 and keeps X_1, so after Ry(a_q):
    depth 1 gives ⟨X_0⟩ = sin a0·sin a1, ⟨X_1⟩ = sin a1; depth 2 applies CNOT twice (= I)."""
    theta = torch.tensor([0.3, -0.7, 1.1, 0.25], dtype=F64)
    s = torch.sin(math.pi * theta)
    r1 = Circuit(depth=1).readout(theta, 2)
    assert torch.allclose(r1, torch.stack([s[0] * s[1], s[1], s[2] * s[3], s[3]]), atol=1e-14)
    assert torch.allclose(Circuit(depth=2).readout(theta, 2), s, atol=1e-14)


def test_four_qubit_default_closed_form():
    """The ``circuit`` variant's default register (4 qubits, depth 2):
    r = (s0·s2, s1·s3, s2, s3) with s_j = sin(πθ_j); checked against Qiskit elsewhere."""
    theta = torch.tensor([0.3, -0.7, 1.1, 0.25, 0.6, 0.05, -0.4, 0.9], dtype=F64)
    s = torch.sin(math.pi * theta).reshape(2, 4)
    ref = torch.stack([s[:, 0] * s[:, 2], s[:, 1] * s[:, 3], s[:, 2], s[:, 3]], 1).reshape(-1)
    assert torch.allclose(get_perturbation("circuit").readout(theta, 4), ref, atol=1e-14)


def test_circuit_term_groups_padding_and_foreach():
    pytest.importorskip("qiskit", reason="qiskit is not installed")
    from qiskit.quantum_info import SparsePauliOp, Statevector

    torch.manual_seed(0)
    n = 4
    theta = torch.randn(10, dtype=F64)  # groups of 4, 4, 2 (+2 zero pads)
    grad = torch.randn(10, dtype=F64)
    th0, g0 = theta.clone(), grad.clone()
    p = Circuit()
    ctx = Context(step=1, seed=0, index=0, n_qubits=n)
    q = p.term(theta, grad, ctx)
    assert torch.equal(theta, th0) and torch.equal(grad, g0)
    padded = torch.cat([theta, theta.new_zeros(2)]).reshape(3, n)
    ref = []
    for grp in padded:
        sv = Statevector(to_qiskit(math.pi * grp, None, n, 2, True, hadamard=False,
                                   encoding="once"))
        for j in range(n):
            lab = ["I"] * n
            lab[n - 1 - j] = "X"
            ref.append(sv.expectation_value(SparsePauliOp("".join(lab))).real)
    ref = torch.tensor(ref[:10], dtype=F64) * grad
    assert torch.allclose(q, ref, atol=1e-12)
    # foreach form: several tensors in one batch equal the per-tensor terms
    thetas = [torch.randn(k, dtype=F64) for k in (1, 7, 8, 13)]
    grads = [torch.randn_like(t) for t in thetas]
    ctxs = [Context(step=1, seed=0, index=i, n_qubits=n) for i in range(4)]
    many = p.terms(thetas, grads, ctxs)
    for t, g, c, m in zip(thetas, grads, ctxs, many):
        assert torch.allclose(m, p.term(t, g, c), atol=1e-14)
    # float32 and half types keep their dtype
    for dt in (torch.float32, torch.bfloat16):
        out = p.term(theta.to(dt), grad.to(dt), ctx)
        assert out.dtype == dt
        assert torch.allclose(out.double(), q, atol=2e-2 if dt == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("foreach", [False, True])
def test_optimizer_circuit_one_qubit_equals_sin(foreach):
    torch.manual_seed(0)
    ps = [torch.randn(5, 3, dtype=F64), torch.randn(7, dtype=F64)]
    runs = {}
    for name in ("sin", "circuit"):
        params = [p.clone().requires_grad_() for p in ps]
        opt = SuperpositionalAdamW(params, lr=0.05, perturbation=name, n_qubits=1,
                                   quantum_weight=0.5, foreach=foreach)
        for step in range(5):
            opt.zero_grad()
            loss = sum(((p - 0.3 * step) ** 2).sum() + torch.sin(3 * p).sum() for p in params)
            loss.backward()
            opt.step()
        runs[name] = [p.detach() for p in params]
    for a, b in zip(runs["sin"], runs["circuit"]):
        assert (a - b).abs().max() < 1e-12


def test_circuit_aer_backend_matches():
    pytest.importorskip("qiskit_aer", reason="qiskit-aer is not installed")
    torch.manual_seed(0)
    theta, grad = torch.randn(11, dtype=F64), torch.randn(11, dtype=F64)
    ctx = Context(step=1, seed=0, index=0, n_qubits=4)
    a = Circuit(backend="aer", extra_rz=0.3).term(theta, grad, ctx)
    b = Circuit(extra_rz=0.3).term(theta, grad, ctx)
    assert torch.allclose(a, b, atol=1e-6)
