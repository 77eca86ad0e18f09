"""Quantum attention: exactly SDPA with the circuit off, masks, gradients, permutation
equivariance, the Fourier and statevector ways of computing Φ (the chain: test_native.py),
and Φ's Fourier band limit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import qsgd.attention.coefficients as coefficients
from qsgd.attention import (
    QuantumAttention,
    ScoreCircuit,
    circuit_line,
    fourier_eval_line,
    line_coefficients,
    line_series,
    quantum_attention,
)
from qsgd.circuit import CircuitSpec, fourier_series
from qsgd.circuit.fourier import to_real_basis

F64 = torch.float64
EPS32 = torch.finfo(torch.float32).eps


def _qkv(seed=0, B=2, H=2, L=5, S=5, E=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, E, generator=g, dtype=dtype) for n in (L, S, S)]


def _padding_mask(B=2, S=5):
    keep = torch.ones(B, 1, 1, S, dtype=torch.bool)
    keep[0, ..., 3:] = False  # sequence 0 has 3 real tokens, sequence 1 all 5
    return keep


# ----------------------------------------------------------------------------- circuit off


@pytest.mark.parametrize("mask", ["none", "padding", "causal", "float"])
def test_circuit_off_is_sdpa(mask):
    q, k, v = _qkv()
    kw = {}
    if mask == "padding":
        kw["attn_mask"] = _padding_mask()
    elif mask == "causal":
        kw["is_causal"] = True
    elif mask == "float":
        kw["attn_mask"] = torch.randn(2, 1, 5, 5)
    assert torch.equal(quantum_attention(q, k, v, **kw),
                       F.scaled_dot_product_attention(q, k, v, **kw))


@pytest.mark.parametrize("mask", ["padding", "causal", "float"])
def test_circuit_on_with_zero_gamma_matches_sdpa(mask):
    """The explicit softmax path applies masks as SDPA does (checked with γ = 0)."""
    q, k, v = _qkv(dtype=F64)
    kw = {}
    if mask == "padding":
        kw["attn_mask"] = _padding_mask()
    elif mask == "causal":
        kw["is_causal"] = True
    else:
        kw["attn_mask"] = torch.randn(2, 1, 5, 5, dtype=F64)
    phi = ScoreCircuit().double()
    got = quantum_attention(q, k, v, phi=phi, gamma=0.0, **kw)
    ref = F.scaled_dot_product_attention(q, k, v, **kw)
    assert torch.allclose(got, ref, atol=1e-12)
    # with γ ≠ 0 masked keys still get zero weight: changing them changes nothing
    if mask == "padding":
        k2, v2 = k.clone(), v.clone()
        k2[0, :, 3:] += 5.0
        v2[0, :, 3:] -= 7.0
        a = quantum_attention(q, k, v, phi=phi, gamma=0.7, **kw)
        b = quantum_attention(q, k2, v2, phi=phi, gamma=0.7, **kw)
        assert torch.allclose(a, b, atol=1e-12)


def test_module_circuit_off_equals_sdpa_call():
    torch.manual_seed(0)
    att = QuantumAttention(8, 2, circuit="off")
    assert att.phi is None and att.gamma is None
    x = torch.randn(3, 6, 8)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    q, k, v = att.qkv(x).view(3, 6, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=(~pad)[:, None, None, :])
    ref = att.out(y.transpose(1, 2).reshape(3, 6, 8))
    assert torch.equal(att(x, key_padding_mask=pad), ref)


def test_validation():
    with pytest.raises(ValueError, match="invalid circuit: 'maybe'"):
        QuantumAttention(8, 2, circuit="maybe")
    with pytest.raises(ValueError, match="not divisible"):
        QuantumAttention(10, 3)
    with pytest.raises(ValueError, match="invalid readout: 'sum'"):
        ScoreCircuit(readout="sum")
    with pytest.raises(ValueError, match="invalid method: 'dense'"):
        ScoreCircuit(method="dense")


def test_auto_method_and_four_qubits():
    """At 4 qubits "auto" (the transfer-matrix chain) and the Fourier form agree."""
    torch.manual_seed(0)
    s = torch.randn(6, 7, dtype=F64)
    a = ScoreCircuit(4, 1, method="auto").double()
    b = ScoreCircuit(4, 1, method="fourier").double()
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a(s), b(s), atol=1e-12)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="not both"):
        quantum_attention(q, k, v, attn_mask=_padding_mask(), is_causal=True,
                          phi=ScoreCircuit(), gamma=0.1)


# ----------------------------------------------------------------------------- gradients, symmetry


@pytest.mark.parametrize("method", ["fourier", "state"])
def test_gradients_reach_the_circuit(method):
    torch.manual_seed(0)
    att = QuantumAttention(8, 2, n_qubits=2, depth=2)
    att.phi.method = method
    x = torch.randn(2, 5, 8)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, 3:] = True
    att(x, key_padding_mask=pad).pow(2).sum().backward()
    for name in ("phi.scale", "phi.weights", "gamma"):
        g = dict(att.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert float(att.gamma.detach()) == pytest.approx(0.1)


@pytest.mark.parametrize("method", ["fourier", "state"])
def test_permutation_equivariance(method):
    """Permuting keys and values together leaves the output unchanged; permuting queries
    permutes the output rows (no positional information enters attention)."""
    q, k, v = _qkv(seed=1, L=6, S=7, dtype=F64)
    phi = ScoreCircuit(3, 2, method=method).double()
    out = quantum_attention(q, k, v, phi=phi, gamma=0.5)
    perm = torch.tensor([3, 0, 6, 2, 5, 1, 4])
    assert torch.allclose(quantum_attention(q, k[..., perm, :], v[..., perm, :], phi=phi,
                                            gamma=0.5), out, atol=1e-12)
    qp = torch.tensor([5, 2, 0, 1, 4, 3])
    assert torch.allclose(quantum_attention(q[..., qp, :], k, v, phi=phi, gamma=0.5),
                          out[..., qp, :], atol=1e-12)


# ----------------------------------------------------------------------------- Φ: two exact methods


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.sampled_from(["amp", "z"]), st.booleans(),
       st.integers(0, 2**16))
def test_fourier_method_equals_state_method(n, depth, readout, entangle, seed):
    g = torch.Generator().manual_seed(seed)
    a = ScoreCircuit(n, depth, readout=readout, entangle=entangle, method="fourier").double()
    with torch.no_grad():
        a.scale.copy_(torch.randn(n, generator=g, dtype=F64) * 1.5)
        a.weights.copy_(torch.rand(depth, 2, n, generator=g, dtype=F64) * 6 - 3)
    b = ScoreCircuit(n, depth, readout=readout, entangle=entangle, method="state").double()
    b.load_state_dict(a.state_dict())
    s = torch.randn(3, 4, 5, generator=g, dtype=F64) * 2
    sa, sb = s.clone().requires_grad_(), s.clone().requires_grad_()
    ya, yb = a(sa), b(sb)
    assert ya.shape == s.shape
    assert torch.allclose(ya, yb, atol=1e-11)
    w = torch.randn(ya.shape, generator=g, dtype=F64)
    ga = torch.autograd.grad((ya * w).sum(), [sa, *a.parameters()])
    gb = torch.autograd.grad((yb * w).sum(), [sb, *b.parameters()])
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-9), (x - y).abs().max()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_line_series_gradcheck(n):
    c, ks = fourier_series(torch.randn(2, 2, n, dtype=F64), n, readout="amp_sum")
    c = c.detach().requires_grad_()
    a = torch.randn(n, dtype=F64, requires_grad=True)
    t = torch.randn(7, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c_, a_, t_: fourier_eval_line(c_, ks, a_, t_),
                                    (c, a, t))


@pytest.mark.parametrize("readout", ["amp_sum", "Z", "X"])
@pytest.mark.parametrize("n", [1, 2])
def test_line_coefficients_table_and_shift_rule_agree_with_autograd(monkeypatch, n, readout):
    # M(w) three ways: autograd through fourier_series (the definition), the cached corner
    # table, and the parameter-shift rule (forced by a zero table limit); values and dM/dw
    g = torch.Generator().manual_seed(n)
    w = (torch.rand(2, 2, n, generator=g, dtype=F64) * 6 - 3).requires_grad_()
    probe = torch.randn((5 if readout == "amp_sum" else 9,) * n, generator=g, dtype=F64)
    c, ks = fourier_series(w, n, readout=readout)
    if readout != "amp_sum":
        c = c.mean(-1)
    ref = to_real_basis(c, ks)
    ref_grad, = torch.autograd.grad((ref * probe).sum(), w)
    assert coefficients.coefficient_table(CircuitSpec(n, 2, True, True, "reupload"), readout,
                                          F64, torch.device("cpu")) is not None
    got = {}
    for path in ("table", "shift"):
        if path == "shift":
            monkeypatch.setattr(coefficients, "TABLE_LIMIT", 0)
            coefficients.coefficient_table.cache_clear()
        M, ks2 = line_coefficients(w, n, readout=readout)
        assert torch.equal(ks2, ks)
        got[path] = (M, torch.autograd.grad((M * probe).sum(), w)[0])
        assert torch.allclose(M, ref, atol=1e-12), path
        assert torch.allclose(got[path][1], ref_grad, atol=1e-11), path
        with torch.no_grad():  # no gradient wanted: the same M, by the cheaper route
            assert torch.allclose(line_coefficients(w, n, readout=readout)[0], M, atol=1e-13)
    coefficients.coefficient_table.cache_clear()


def test_line_coefficients_errors():
    w = torch.zeros(2, 2, 2)
    with pytest.raises(ValueError, match="invalid readout: 'probabilities'"):
        line_coefficients(w, 2, readout="probabilities")
    with pytest.raises(ValueError, match="must have shape"):
        line_coefficients(torch.zeros(3, 2, 2, 2), 2)
    M, ks = line_coefficients(w, 2)
    with pytest.raises(ValueError, match=r"M must have shape \(5, 5\)"):
        line_series(M[:3], ks, torch.ones(2), torch.zeros(4))


def test_line_series_inference_path_equals_training_path():
    g = torch.Generator().manual_seed(3)
    M, ks = line_coefficients(torch.randn(2, 2, 2, generator=g), 2)
    a, t = torch.randn(2, generator=g), torch.randn(6, 7, generator=g) * 3
    with_grad = line_series(M, ks, a.requires_grad_(), t)
    with torch.no_grad():
        without = line_series(M, ks, a, t)
    assert with_grad.requires_grad and not without.requires_grad
    # the same values to rounding; the same bits on some CPUs only: BLAS picks its kernel by
    # shape and instruction set (bit-identical where these tests were written, about 1 ulp
    # apart on an AMD EPYC whose torch kernels use AVX2)
    torch.testing.assert_close(with_grad.detach(), without, rtol=4 * EPS32, atol=4 * EPS32)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("readout", ["amp_sum", "Z"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_circuit_line_is_line_series_of_line_coefficients(n, readout, dtype):
    # the fused route (coefficients, Jacobian and series in one Function) against the two
    # public steps: the same forward bits, the same gradients up to rounding
    g = torch.Generator().manual_seed(10 * n + len(readout))
    w0 = torch.rand(2, 2, n, generator=g, dtype=F64) * 6 - 3
    a0 = torch.rand(n, generator=g, dtype=F64) + 0.5
    t0 = torch.randn(3, 17, generator=g, dtype=F64) * 2
    probe = torch.randn(3, 17, generator=g, dtype=dtype)
    out, grads = {}, {}
    for route in ("fused", "steps"):
        w, a, t = (x.to(dtype).requires_grad_() for x in (w0, a0, t0))
        if route == "fused":
            y = circuit_line(w, a, t, readout=readout)
        else:
            y = line_series(*line_coefficients(w, n, readout=readout), a, t)
        out[route] = y
        grads[route] = torch.autograd.grad((y * probe).sum(), (w, a, t))
    assert out["fused"].dtype == dtype and out["fused"].shape == t0.shape
    # the same forward to rounding (the same bits where BLAS takes the same kernel for both
    # shapes, which depends on the CPU: see test_line_series_inference_path_equals_training_path)
    ulp = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(out["fused"], out["steps"], rtol=ulp, atol=ulp)
    tol = 1e-10 if dtype == F64 else 2e-4
    for x, y in zip(grads["fused"], grads["steps"]):
        assert torch.allclose(x, y, rtol=tol, atol=tol), (x - y).abs().max()
    with torch.no_grad():  # inference route: no graph, the same values
        y = circuit_line(w0.to(dtype), a0.to(dtype), t0.to(dtype), readout=readout)
    assert not y.requires_grad
    assert torch.allclose(y, out["fused"].detach(), rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [1, 2])
def test_circuit_line_gradcheck_and_fallback(monkeypatch, n):
    g = torch.Generator().manual_seed(n)
    w = torch.randn(2, 2, n, generator=g, dtype=F64, requires_grad=True)
    a = torch.randn(n, generator=g, dtype=F64, requires_grad=True)
    t = torch.randn(5, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w_, a_, t_: circuit_line(w_, a_, t_), (w, a, t))
    fused = circuit_line(w, a, t, readout="Z")
    monkeypatch.setattr(coefficients, "TABLE_LIMIT", 0)  # no table: the shift-rule route
    coefficients.coefficient_table.cache_clear()
    try:
        assert torch.allclose(circuit_line(w, a, t, readout="Z"), fused, atol=1e-12)
        assert torch.autograd.gradcheck(lambda w_, a_, t_: circuit_line(w_, a_, t_), (w, a, t))
    finally:
        coefficients.coefficient_table.cache_clear()


def test_circuit_line_errors():
    with pytest.raises(ValueError, match="invalid readout: 'probabilities'"):
        circuit_line(torch.zeros(2, 2, 2), torch.ones(2), torch.zeros(3), readout="probabilities")
    with pytest.raises(ValueError, match="must have trailing shape"):
        circuit_line(torch.zeros(3, 2, 2), torch.ones(2), torch.zeros(3))


def test_phi_bounded_and_dtype():
    torch.manual_seed(0)
    s = torch.randn(4, 50) * 5
    for ro in ("amp", "z"):
        y = ScoreCircuit(2, 2, readout=ro)(s)
        assert y.dtype == torch.float32 and y.shape == s.shape
        assert y.abs().max() <= 1.0 + 1e-5


@pytest.mark.parametrize("readout", ["amp", "z"])
@pytest.mark.parametrize("scales", [(1.0, 1.0), (1.0, 2.0), (3.0,)])
def test_phi_fourier_band_limit(readout, scales):
    """Φ(s) = Σ c_ω e^{iωs} only at ω = Σ_q m_q a_q with |m_q| ≤ depth ("amp") or 2·depth ("z"):
    with integer scales, no energy beyond depth·Σa ("amp") or 2·depth·Σa ("z"). Computed by
    per-score statevector simulation ("state"), sampled over one period, FFT."""
    n, depth = len(scales), 2
    phi = ScoreCircuit(n, depth, readout=readout, method="state").double()
    with torch.no_grad():
        phi.scale.copy_(torch.tensor(scales, dtype=F64))
    N = 256
    s = torch.arange(N, dtype=F64) * (2 * math.pi / N)  # period 2π: bin j ↔ frequency j
    with torch.no_grad():
        spec = torch.fft.fft(phi(s)).abs().pow(2)
    bins = torch.fft.fftfreq(N, d=1.0 / N).round().abs()
    bound = phi.max_frequency()
    assert bound == depth * sum(scales) * (1 if readout == "amp" else 2)
    leak = spec[bins > bound].sum() / spec.sum()
    assert leak < 1e-24, float(leak)
    assert spec[bins > 0].sum() / spec.sum() > 1e-6  # Φ is not constant
    # the fast method reproduces the same function
    fast = ScoreCircuit(n, depth, readout=readout, method="fourier").double()
    fast.load_state_dict(phi.state_dict())
    with torch.no_grad():
        assert torch.allclose(fast(s), phi(s), atol=1e-12)
