"""The fast exact paths of Φ and of the simulator against their references: the transfer-matrix
chain (native kernel and torch operations) against the statevector simulation, values and
gradients; the native statevector kernel against the torch engine; the kernels' sine and
cosine; what happens without a compiler; thread-count independence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qsgd import _native
from qsgd.attention import ScoreCircuit, chain_line, state_line
from qsgd.attention.chain import native_chain_runs
from qsgd.circuit import CircuitSpec, simulate
from qsgd.circuit import statevector as sv

F64 = torch.float64
needs_native = pytest.mark.skipif(_native.library() is None,
                                  reason=f"native kernels unavailable: "
                                         f"{_native.unavailable_reason()}")


@st.composite
def lines(draw, max_qubits=4, max_depth=2):
    """A circuit along the line x = a·t: spec flags, a, w and t (float64)."""
    n = draw(st.integers(1, max_qubits))
    depth = draw(st.integers(1, max_depth))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    kw = dict(depth=depth, entangle=draw(st.booleans()), hadamard=draw(st.booleans()),
              encoding=draw(st.sampled_from(["reupload", "once"])))
    a = torch.randn(n, generator=g, dtype=F64) * 1.5
    w = torch.rand(depth, 2, n, generator=g, dtype=F64) * 4 * math.pi - 2 * math.pi
    t = torch.randn(draw(st.integers(1, 75)), generator=g, dtype=F64) * 3
    return kw, a, w, t


def _reference(kw, a, w, t):
    """Re amp_sum of the statevector simulation (the torch engine: gradients by autograd)."""
    return simulate(t[:, None] * a, w, readout="amp_sum", **kw).real


def _values_and_grads(fn, a, w, t, probe):
    a, w, t = (x.clone().requires_grad_() for x in (a, w, t))
    y = fn(a, w, t)
    return (y.detach(), *torch.autograd.grad((y * probe).sum(), (t, a, w)))


# ----------------------------------------------------------------------------- the chain


@settings(max_examples=40, deadline=None)
@given(lines(), st.sampled_from([True, False]))
def test_chain_equals_statevector_values_and_gradients(case, native):
    """Φ and ∂/∂t, ∂/∂a, ∂/∂w of the chain equal the statevector simulation's (float64)."""
    if native and _native.library() is None:
        pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
    kw, a, w, t = case
    probe = torch.randn(t.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref = _values_and_grads(lambda a_, w_, t_: _reference(kw, a_, w_, t_), a, w, t, probe)
    got = _values_and_grads(lambda a_, w_, t_: chain_line(w_, a_, t_, native=native, **kw),
                            a, w, t, probe)
    for name, x, y in zip(("value", "d/dt", "d/da", "d/dw"), got, ref):
        assert x.dtype == F64 and x.shape == y.shape, name
        assert torch.allclose(x, y, atol=1e-11, rtol=0), (name, (x - y).abs().max())


@settings(max_examples=10, deadline=None)
@given(lines(max_qubits=4, max_depth=2))
def test_chain_and_state_match_qiskit(case):
    """Φ by the chain (both implementations) and by the state kernel against Qiskit's
    Statevector of the same circuit, score by score."""
    pytest.importorskip("qiskit", reason="qiskit is not installed")
    from qiskit.quantum_info import Statevector

    from qsgd.circuit import to_qiskit

    kw, a, w, t = case
    t = t[:6]
    n = a.numel()
    ref = torch.tensor([
        complex(Statevector(to_qiskit(a * s, w, n, kw["depth"], kw["entangle"],
                                      hadamard=kw["hadamard"],
                                      encoding=kw["encoding"])).data.sum()).real / 2 ** (n / 2)
        for s in t], dtype=F64)
    got = {"chain, torch": chain_line(w, a, t, native=False, **kw)}
    if _native.library() is not None:
        got["chain, native"] = chain_line(w, a, t, native=True, **kw)
        got["state, native"] = state_line(w, a, t, native=True, **kw)
    for name, y in got.items():
        assert torch.allclose(y, ref, atol=1e-12, rtol=0), (name, (y - ref).abs().max())


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
@pytest.mark.parametrize("n,depth,entangle", [(1, 2, True), (3, 2, True), (2, 1, False),
                                              (4, 2, False)])
def test_chain_gradcheck(native, n, depth, entangle):
    g = torch.Generator().manual_seed(n + 10 * depth)
    w = torch.randn(depth, 2, n, generator=g, dtype=F64, requires_grad=True)
    a = torch.randn(n, generator=g, dtype=F64, requires_grad=True)
    t = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    fn = lambda w_, a_, t_: chain_line(w_, a_, t_, depth=depth, entangle=entangle,  # noqa: E731
                                       native=native)
    assert torch.autograd.gradcheck(fn, (w, a, t))


@needs_native
@pytest.mark.parametrize("n", [2, 4])
def test_chain_float32_native_and_torch_agree_to_rounding(n):
    g = torch.Generator().manual_seed(n)
    a = torch.rand(n, generator=g) + 0.5
    w = torch.rand(2, 2, n, generator=g) * 6 - 3
    t = torch.randn(5000, generator=g) * 3
    ref = _reference(dict(depth=2, entangle=True, hadamard=True, encoding="reupload"),
                     a.double(), w.double(), t.double())
    probe = torch.randn(t.shape, generator=g)
    grads = {}
    for native in (True, False):
        got = _values_and_grads(lambda a_, w_, t_, nat=native: chain_line(w_, a_, t_, native=nat),
                                a, w, t, probe)
        assert got[0].dtype == torch.float32
        assert (got[0].double() - ref).abs().max() < 1e-6, native
        grads[native] = got[1:]
    for x, y in zip(grads[True], grads[False]):  # sums over 5000 scores: relative rounding
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-4), (x - y).abs().max()


@needs_native
def test_chain_native_inference_equals_training_values_and_threads_do_not_matter():
    g = torch.Generator().manual_seed(5)
    a = torch.rand(4, generator=g) + 0.5
    w = torch.rand(2, 2, 4, generator=g) * 6 - 3
    t = torch.randn(3 * _native.CHUNK + 77, generator=g)  # several chunks, a ragged tail
    probe = torch.randn(t.shape, generator=g)
    before, openmp = torch.get_num_threads(), _native._state.get("openmp")
    runs = []
    try:  # the kernels' OpenMP threads, and Python threads (a library built without OpenMP)
        for threads, omp in ((1, openmp), (2, openmp), (3, openmp), (2, False)):
            torch.set_num_threads(threads)
            _native._state["openmp"] = omp
            runs.append(_values_and_grads(lambda a_, w_, t_: chain_line(w_, a_, t_), a, w, t,
                                          probe))
            with torch.no_grad():
                assert torch.equal(chain_line(w, a, t), runs[-1][0])
    finally:
        torch.set_num_threads(before)
        _native._state["openmp"] = openmp
    for run in runs[1:]:  # bit for bit: the reductions are per fixed chunk of scores
        for x, y in zip(run, runs[0]):
            assert torch.equal(x, y)


def test_chain_shapes_dtypes_and_errors():
    w, a = torch.zeros(2, 2, 3), torch.ones(3)
    t = torch.randn(2, 5, 7, dtype=torch.bfloat16)
    y = chain_line(w, a, t)
    assert y.shape == t.shape and y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="needs depth <= 2"):
        chain_line(torch.zeros(3, 2, 3), a, t, depth=3)
    with pytest.raises(ValueError, match="must have trailing shape"):
        chain_line(torch.zeros(2, 2, 2), a, t)
    with pytest.raises(ValueError, match="must have shape"):
        chain_line(torch.zeros(4, 2, 2, 3), a, t)


def test_without_the_kernel_the_torch_operations_serve(monkeypatch):
    monkeypatch.setitem(_native._state, "lib", None)
    monkeypatch.setitem(_native._state, "reason", "no C compiler found (test)")
    assert _native.library() is None and not native_chain_runs("cpu")
    w, a = torch.rand(2, 2, 2, dtype=F64), torch.ones(2, dtype=F64)
    t = torch.randn(9, dtype=F64)
    ref = _reference(dict(depth=2, entangle=True, hadamard=True, encoding="reupload"), a, w, t)
    assert torch.allclose(chain_line(w, a, t), ref, atol=1e-12)
    with pytest.raises(RuntimeError, match=r"native=True, but no C compiler found \(test\)"):
        chain_line(w, a, t, native=True)
    with torch.no_grad():  # the simulator falls back to its torch engine
        assert torch.allclose(simulate(t[:, None] * a, w, readout="amp_sum").real, ref,
                              atol=1e-12)
    # "auto" then keeps the Fourier form where it is faster than the torch chain (n < 4)
    assert ScoreCircuit(2, 2).resolved_method() == "fourier"
    assert ScoreCircuit(4, 2).resolved_method() == "chain"


def test_library_reports_why_it_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("QSGD_NATIVE", "0")
    assert _native.library() is None
    assert _native.unavailable_reason() == "switched off by QSGD_NATIVE=0"
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.delenv("QSGD_NATIVE")
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    assert _native.library() is None
    assert _native.unavailable_reason() == "no C compiler found ($CC, cc, gcc, clang)"
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setattr(_native, "_compiler", lambda: "/bin/false")  # a "compiler" that fails
    monkeypatch.setenv("QSGD_CACHE", str(tmp_path))
    assert _native.library() is None
    assert _native.unavailable_reason().startswith("compiling _native_kernels.c failed")
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


@needs_native
@pytest.mark.parametrize("dtype,tol", [(F64, 4e-16), (torch.float32, 1.2e-7)])
def test_kernel_sine_and_cosine(dtype, tol):
    x = torch.cat([torch.linspace(-50, 50, 200_001, dtype=F64),
                   torch.tensor([0.0, math.pi / 4, -math.pi / 2, 1e3, -7e3], dtype=F64)])
    x = x.to(dtype)
    s, c = torch.empty_like(x), torch.empty_like(x)
    _native.kernel("qsgd_sincos_array", dtype)(x.numel(), x.data_ptr(), s.data_ptr(),
                                               c.data_ptr())
    xd = x.double()
    assert (s.double() - torch.sin(xd)).abs().max() < tol * 4
    assert (c.double() - torch.cos(xd)).abs().max() < tol * 4
    assert float(s[x.numel() - 5]) == 0.0 and float(c[x.numel() - 5]) == 1.0  # exact at 0


# ----------------------------------------------------------------------------- Φ's methods


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 2), st.booleans(), st.integers(0, 2**16))
def test_score_circuit_chain_equals_fourier_and_state(n, depth, entangle, seed):
    g = torch.Generator().manual_seed(seed)
    mods = {m: ScoreCircuit(n, depth, entangle=entangle, method=m).double()
            for m in ("chain", "fourier", "state")}
    with torch.no_grad():
        mods["chain"].scale.copy_(torch.randn(n, generator=g, dtype=F64))
        mods["chain"].weights.copy_(torch.rand(depth, 2, n, generator=g, dtype=F64) * 6 - 3)
    for m in ("fourier", "state"):
        mods[m].load_state_dict(mods["chain"].state_dict())
    s = torch.randn(2, 3, 4, generator=g, dtype=F64) * 2
    probe = torch.randn(s.shape, generator=g, dtype=F64)
    res = {}
    for m, mod in mods.items():
        x = s.clone().requires_grad_()
        y = mod(x)
        res[m] = (y, *torch.autograd.grad((y * probe).sum(), [x, *mod.parameters()]))
    for m in ("fourier", "state"):
        for x, y in zip(res["chain"], res[m]):
            assert torch.allclose(x, y, atol=1e-10), (m, (x - y).abs().max())


def test_auto_method_choice_and_chain_errors():
    runs = native_chain_runs("cpu")
    assert ScoreCircuit(2, 2).resolved_method() == ("chain" if runs else "fourier")
    assert ScoreCircuit(4, 2).resolved_method() == "chain"
    assert ScoreCircuit(4, 1, entangle=False).resolved_method() == "chain"
    # no chain: the Fourier form while it has at most FOURIER_AUTO_MAX coefficients (fewer
    # when the statevector has its native kernel)
    assert ScoreCircuit(2, 3).resolved_method() == "fourier"  # 7^2 = 49
    assert ScoreCircuit(3, 3).resolved_method() == ("state" if runs else "fourier")  # 7^3
    assert ScoreCircuit(4, 3).resolved_method() == "state"  # 7^4
    assert ScoreCircuit(2, 2, readout="z").resolved_method() == ("state" if runs
                                                                 else "fourier")  # 9^2
    assert ScoreCircuit(3, 2, readout="z").resolved_method() == "state"  # 9^3
    with pytest.raises(ValueError, match="method 'chain' needs readout 'amp' and depth <= 2, "
                                         "got readout 'z', depth 2"):
        ScoreCircuit(2, 2, readout="z", method="chain")
    phi = ScoreCircuit(2, 3)
    phi.method = "chain"  # set after construction: the error at the forward
    with pytest.raises(ValueError, match="got readout 'amp', depth 3"):
        phi(torch.zeros(3))


# ----------------------------------------------------------------------------- Φ by the state


@needs_native
@settings(max_examples=40, deadline=None)
@given(lines(max_qubits=4, max_depth=3), st.sampled_from(["amp_sum", "Z"]))
def test_state_line_kernel_equals_torch_engine_values_and_gradients(case, readout):
    """The native statevector with adjoint gradients against the torch engine + autograd."""
    kw, a, w, t = case
    probe = torch.randn(t.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    got, ref = (_values_and_grads(
        lambda a_, w_, t_, nat=native: state_line(w_, a_, t_, readout=readout, native=nat, **kw),
        a, w, t, probe) for native in (True, False))
    for name, x, y in zip(("value", "d/dt", "d/da", "d/dw"), got, ref):
        assert x.shape == y.shape, name
        assert torch.allclose(x, y, atol=1e-11, rtol=0), (name, (x - y).abs().max())


@needs_native
@pytest.mark.parametrize("readout", ["amp_sum", "Z"])
def test_state_line_gradcheck_threads_and_fallback(readout, monkeypatch):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 2, 3, generator=g, dtype=F64, requires_grad=True)
    a = torch.randn(3, generator=g, dtype=F64, requires_grad=True)
    t = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    fn = lambda w_, a_, t_: state_line(w_, a_, t_, depth=3, readout=readout)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, a, t))
    big = torch.randn(2 * _native.CHUNK + 5, generator=g)
    wf, af = w.detach().float(), a.detach().float()
    probe = torch.randn(big.shape, generator=g)
    before, runs = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(_values_and_grads(
                lambda a_, w_, t_: state_line(w_, a_, t_, depth=3, readout=readout),
                af, wf, big, probe))
    finally:
        torch.set_num_threads(before)
    for x, y in zip(*runs):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="invalid readout: 'X'"):
        state_line(w, a, t, depth=3, readout="X")
    native = fn(w, a, t)
    monkeypatch.setitem(_native._state, "lib", None)
    monkeypatch.setitem(_native._state, "reason", "no C compiler found (test)")
    with pytest.raises(RuntimeError, match=r"native=True, but no C compiler found \(test\)"):
        state_line(w, a, t, depth=3, readout=readout, native=True)
    assert torch.allclose(fn(w, a, t), native, atol=1e-12)  # the torch engine serves


# ----------------------------------------------------------------------------- statevector


@st.composite
def batches(draw):
    n = draw(st.integers(1, 5))
    depth = draw(st.integers(1, 3))
    B = draw(st.integers(1, 70))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    spec = CircuitSpec(n, depth, draw(st.booleans()), draw(st.booleans()),
                       draw(st.sampled_from(["reupload", "once"])))
    x = torch.randn(B, n, generator=g, dtype=F64) * 3
    w = draw(st.sampled_from(["none", "shared", "batched"]))
    if w != "none":
        w = torch.rand(1 if w == "shared" else B, depth, 2, n, generator=g, dtype=F64) * 12 - 6
    else:
        w = None
    return spec, x, w


@needs_native
@settings(max_examples=40, deadline=None)
@given(batches())
def test_native_statevector_equals_torch_engine(case):
    spec, x, w = case
    st_ = sv._run_torch(spec, x, w)
    ref = torch.complex(st_.re.t(), torch.zeros_like(st_.re.t()) if st_.im is None
                        else st_.im.t())
    got = sv._run_native(spec, x, w)
    assert got.dtype == torch.complex128 and got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-13, rtol=0), (got - ref).abs().max()
    got32 = sv._run_native(spec, x.float(), None if w is None else w.float())
    assert got32.dtype == torch.complex64
    assert (got32.to(torch.complex128) - ref).abs().max() < 2e-6


@needs_native
def test_simulate_takes_the_kernel_only_without_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    w = torch.randn(2, 2, 3, generator=g, dtype=F64, requires_grad=True)
    with_grad = simulate(x, w, readout="Z")
    assert with_grad.requires_grad  # the torch engine: differentiable
    with torch.no_grad():
        native = simulate(x, w, readout="Z")
    assert not native.requires_grad
    assert torch.allclose(native, with_grad.detach(), atol=1e-13)
    for ro in ("amplitudes", "probabilities", "X", "Y", "amp_sum"):
        with torch.no_grad():
            a, b = simulate(x, w, readout=ro), sv.readout_state(simulate(x, w), ro)
        assert torch.allclose(a, b, atol=1e-13), ro
    with torch.no_grad():
        assert sv._native_applies(CircuitSpec(3), x, w)
        assert not sv._native_applies(CircuitSpec(sv.NATIVE_MAX_QUBITS + 1), x, w)
        # mostly absent gates (the circuit perturbation's circuit): the engine skips them
        assert not sv._native_applies(CircuitSpec(3, encoding="once"), x, None)
        assert sv._native_applies(CircuitSpec(3, encoding="once"), x, w)


# ----------------------------------------------------------------------------- fused attention


@st.composite
def attention_cases(draw):
    n = draw(st.integers(1, 4))
    depth = draw(st.integers(1, 2))
    H = draw(st.integers(1, 3))
    E = draw(st.sampled_from([1, 3, 8, 16, 19]))
    T = draw(st.integers(1, 20))
    B = draw(st.integers(1, 3))
    mask = draw(st.sampled_from(["none", "padding", "causal"]))
    return dict(n=n, depth=depth, H=H, E=E, T=T, B=B, mask=mask,
                entangle=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _attention_pair(case, dtype=F64):
    """The layer on the fused kernel and on torch operations (the chain's kernel), one state."""
    from qsgd.attention import QuantumAttention

    torch.manual_seed(case["seed"])
    kw = dict(n_qubits=case["n"], depth=case["depth"], entangle=case["entangle"])
    ref = QuantumAttention(case["H"] * case["E"], case["H"], fused=False, **kw).to(dtype)
    with torch.no_grad():
        ref.gamma.fill_(0.8)
        ref.phi.scale.mul_(1.5)
    fused = QuantumAttention(case["H"] * case["E"], case["H"], fused=True, **kw).to(dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _layer_grads(m, x, pad, causal, probe):
    xx = x.clone().requires_grad_()
    y = m(xx, key_padding_mask=pad, is_causal=causal)
    return (y.detach(), *torch.autograd.grad((y * probe).sum(), [xx, *m.parameters()]))


def _mask(case, g):
    pad = None
    if case["mask"] == "padding":
        pad = torch.rand(case["B"], case["T"], generator=g) < 0.3
        pad[:, 0] = False  # every sequence keeps a key (an all-padding row is NaN in both)
    return pad, case["mask"] == "causal"


@needs_native
@settings(max_examples=30, deadline=None)
@given(attention_cases())
def test_fused_attention_equals_torch_path(case):
    """The fused kernel against the layer's torch operations (softmax(S + γΦ(S) + mask)·V with Φ
    by the chain): values and the gradients of the input and of every parameter, float64."""
    ref, fused = _attention_pair(case)
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["B"], case["T"], case["H"] * case["E"], generator=g, dtype=F64)
    pad, causal = _mask(case, g)
    probe = torch.randn(x.shape, generator=g, dtype=F64)
    got = _layer_grads(fused, x, pad, causal, probe)
    want = _layer_grads(ref, x, pad, causal, probe)
    names = ["output", "input"] + [name for name, _ in ref.named_parameters()]
    for name, a, b in zip(names, got, want):
        assert torch.allclose(a, b, atol=1e-11, rtol=0), (name, (a - b).abs().max())


@needs_native
def test_fused_attention_float32_threads_gradcheck_and_errors():
    from qsgd.attention import fused_attention

    case = dict(n=4, depth=2, H=4, E=16, T=16, B=5, mask="padding", entangle=True, seed=7)
    ref, fused = _attention_pair(case, torch.float32)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 16, 64, generator=g)
    pad, causal = _mask(case, g)
    probe = torch.randn(x.shape, generator=g)
    want = _layer_grads(ref, x, pad, causal, probe)
    before, runs = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(_layer_grads(fused, x, pad, causal, probe))
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:  # heads split over threads, parameter sums in a fixed order
        for a, b in zip(run, runs[0]):
            assert torch.equal(a, b)
    for a, b in zip(runs[0], want):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    # gradcheck of the functional form on a tiny layer, in float64
    tiny = dict(n=2, depth=2, H=2, E=3, T=4, B=2, mask="none", entangle=True, seed=1)
    _, layer = _attention_pair(tiny)
    qkv = torch.randn(2, 4, 3, 2, 3, generator=g, dtype=F64, requires_grad=True)
    gamma = torch.tensor(0.6, dtype=F64, requires_grad=True)
    def fn(qkv_, gamma_, a_, w_):  # Φ's parameters as inputs: a stand-in with its attributes
        phi = SimpleNamespace(scale=a_, weights=w_, chain_spec=layer.phi.chain_spec)
        return fused_attention(qkv_, phi, gamma_, is_causal=True)

    args = (qkv, gamma, *(p.detach().clone().requires_grad_()
                          for p in (layer.phi.scale, layer.phi.weights)))
    assert torch.autograd.gradcheck(fn, args)
    with pytest.raises(ValueError,
                       match=r"pass either key_padding_mask or is_causal=True, not both"):
        fused_attention(qkv, layer.phi, gamma, key_padding_mask=torch.zeros(2, 4, dtype=bool),
                        is_causal=True)
    with pytest.raises(ValueError, match=r"qkv must have shape \(B, L, 3, H, E\)"):
        fused_attention(qkv[:, :, :2], layer.phi, gamma)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 4\)"):
        fused_attention(qkv, layer.phi, gamma, key_padding_mask=torch.zeros(2, 5, dtype=bool))


def test_fused_attention_is_taken_only_where_it_applies():
    from qsgd.attention import QuantumAttention, fused_applies

    layer = QuantumAttention(8, 2, n_qubits=2, dropout=0.1)
    x = torch.randn(2, 3, 8)
    runs = native_chain_runs("cpu")
    assert fused_applies(layer.phi, x, dropout_active=False) == runs
    assert not fused_applies(layer.phi, x, dropout_active=True)  # attention dropout: torch ops
    assert not fused_applies(layer.phi, x.to(torch.bfloat16), dropout_active=False)
    layer.phi.method = "fourier"
    assert not fused_applies(layer.phi, x, dropout_active=False)


@needs_native
def test_kernel_exp():
    x = torch.cat([torch.linspace(-90, 88, 400_001), torch.tensor([0.0, -float("inf")])])
    y = torch.empty_like(x)
    _native.library().qsgd_exp_array_f32(x.numel(), x.data_ptr(), y.data_ptr())
    ref = torch.exp(x.double())
    rel = ((y.double() - ref).abs() / ref.clamp_min(1e-300))[ref > 1e-37]
    assert rel.max() < 4e-7, rel.max()
    assert float(y[-1]) == 0.0 and float(y[-2]) == 1.0
    z = torch.tensor([float("nan")])
    _native.library().qsgd_exp_array_f32(1, z.data_ptr(), z.data_ptr())
    assert torch.isnan(z).all()
