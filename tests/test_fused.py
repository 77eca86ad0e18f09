"""The fused CUDA step (qsgd.fused) against the reference step.

GPU tests need a CUDA device and are skipped on CPU CI with the reason. The CPU tests check the
dispatch rules, that ``import qsgd`` does not import Triton, and (when Triton is installed) run
the kernels under Triton's CPU interpreter against the reference.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qsgd import SuperpositionalAdamW, fused
from qsgd.fused import FUSED_PERTURBATIONS, fused_unsupported_reason
from qsgd.perturbations import _REGISTRY, Sin, available, get_perturbation, noise_key, register

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (fused Triton kernels)")
NOISY = ("gauss", "unif", "anti", "anneal", "annealrel")

# odd sizes: tails, tensors shorter than n_qubits, one longer than a block, a matrix
SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (4099,), (64, 33), (3,)]


def _make(shapes, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.8).to(dtype=dtype, device=device).requires_grad_()
            for s in shapes]


def _grads(params, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g).to(dtype=p.dtype, device=p.device) for p in params]


def _run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(params, t), strict=False):
            p.grad = g
        opt.step()


def _pair(shapes=SHAPES, dtype=torch.float32, device="cuda", **kw):
    """(fused params, fused opt, reference params, reference opt) from the same start."""
    a = _make(shapes, dtype, device)
    b = [p.detach().clone().requires_grad_() for p in a]
    kw.setdefault("lr", 1e-2)
    kw.setdefault("weight_decay", 0.1)
    fused = SuperpositionalAdamW(a, fused=True, **kw)
    ref = SuperpositionalAdamW(b, fused=False, foreach=False, **kw)
    return a, fused, b, ref


def _close_step(a, b, start, rtol):
    """The steps taken (θ_now − θ_start) agree to rtol of their norm, tensor by tensor, up to a
    few fp32 roundings of θ itself (a tiny tensor's steps can nearly cancel)."""
    eps = torch.finfo(torch.float32).eps
    for k, (x, y, s) in enumerate(zip(a, b, start, strict=True)):
        dx, dy = (x.detach().double() - s), (y.detach().double() - s)
        err, size, floor = (dx - dy).norm(), dy.norm(), 8 * eps * s.norm()
        assert err <= rtol * size + floor, (
            f"tensor {k} ({x.numel()} elements): |step error| {float(err):.3e} > "
            f"{rtol:.0e}·|step| {float(size):.3e} + 8 ulp·|θ| {float(floor):.3e}")


# ---------------------------------------------------------------------------------------------
# CPU: dispatch rules and import hygiene (always run)

def test_import_qsgd_does_not_import_triton():
    code = "import sys, qsgd, qsgd.fused; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_invalid_fused_flag_names_the_argument():
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="invalid fused: 'yes'"):
        SuperpositionalAdamW(p, fused="yes")


def test_unsupported_reasons():
    p = [torch.zeros(4)]
    assert "not cuda" in fused_unsupported_reason(p, p, p, p, get_perturbation("sin"))
    # every built-in perturbation has a kernel, each of the four kinds included
    assert set(FUSED_PERTURBATIONS) == set(available())
    for name in ("anti", "anneal", "annealrel", "circuit", "sinnorm", "moment"):
        assert "not cuda" in fused_unsupported_reason(p, p, p, p, get_perturbation(name))
    # a kind the kernel does not compute is named, whatever the class sets
    odd = type("OddKind", (Sin,), {"name": "odd", "kind": "hessian", "fused_code": 1})()
    msg = fused_unsupported_reason(p, p, p, p, odd)
    assert "no fused kernel" in msg and "of kind 'hessian'" in msg and "sinnorm" in msg


@pytest.mark.parametrize("kw, n_qubits, why", [
    (dict(shots=64), 4, "circuit_shots=64: finite-shot readout"),
    (dict(backend="aer"), 4, "backend 'aer'"),
    (dict(encoding="reupload"), 4, "encoding 'reupload'"),
    (dict(extra_ry=0.3), 4, "extra_ry/extra_rz != 0"),
    (dict(extra_rz=-1.0), 4, "extra_ry/extra_rz != 0"),
    ({}, 3, "n_qubits=3: the kernel's qubit groups are 1, 2, 4, 8 wide"),
    ({}, 16, "n_qubits=16"),
])
def test_circuit_kernel_only_for_its_closed_form(kw, n_qubits, why):
    """The circuit's kernel computes the closed form of theory T5: other settings fall back,
    and the support check says why (before any tensor check)."""
    from qsgd.perturbations import Circuit

    p = [torch.zeros(4)]
    msg = fused_unsupported_reason(p, p, p, p, Circuit(**kw), n_qubits)
    assert msg.startswith("perturbation Circuit(") and "no fused kernel here: " + why in msg
    for ok in (Circuit(), Circuit(depth=1), Circuit(depth=3, hadamard=True),
               Circuit(entangle=False)):
        for n in (1, 2, 4, 8):
            assert fused_unsupported_reason(p, p, p, p, ok, n) == "tensors on cpu, not cuda"


def test_anti_and_anneal_draw_the_keyed_generator_on_cpu():
    """On the CPU the noise of anti and anneal (now drawn through keyed_noise, which on CUDA is
    the kernel's stream) is the keyed torch.Generator's, as before: the same bits."""
    from qsgd.noise import keyed_generator
    from qsgd.perturbations import Context, rms, sinpi

    g = torch.Generator().manual_seed(0)
    theta, grad = torch.randn(37, generator=g), torch.randn(37, generator=g)
    for step in (1, 4):
        ctx = Context(step=step, seed=11, index=3)

        def z(t):
            return torch.randn(37, generator=keyed_generator("cpu", 11, t, 3))

        want = z(step) - z(step - 1) if step > 1 else z(step)
        want = want * (rms(sinpi(theta) * grad) / math.sqrt(2.0))
        assert torch.equal(get_perturbation("anti").term(theta, grad, ctx), want)
        an = get_perturbation("anneal")
        assert torch.equal(an.term(theta, grad, ctx), z(step) * an.sigma(step))


def test_circuit_supports_are_theory_t5s():
    """Circuit.readout_supports (what the kernel multiplies) equals theory T5's Heisenberg
    supports, and the product of sines over them equals the simulator's ⟨X⟩."""
    from qsgd.perturbations import Circuit
    from theory.circuits import closed_form, heisenberg_supports

    g = torch.Generator().manual_seed(3)
    for n in (1, 2, 3, 4, 5, 8):
        for depth in (1, 2, 3):
            for entangle in (True, False):
                c = Circuit(depth=depth, entangle=entangle)
                assert c.readout_supports(n) == heisenberg_supports(n, depth, entangle)[0]
    assert Circuit().readout_supports(4) == [[0, 2], [1, 3], [2], [3]]
    theta = torch.rand(37, generator=g, dtype=torch.float64) * 6 - 3
    for n in (1, 2, 4, 8):
        for had in (False, True):
            c = Circuit(hadamard=had)
            padded = torch.cat([theta, theta.new_zeros((-37) % n)]).reshape(-1, n)
            want = closed_form(padded, 2, "X", had).reshape(-1)[:37]
            torch.testing.assert_close(c.readout(theta, n), want, rtol=0, atol=1e-12)


def test_noise_is_a_leaf_module():
    """qsgd/noise.py imports torch alone: loaded on its own (outside the package) in a fresh
    interpreter, no qsgd module and no Triton gets imported, and its key is the same."""
    root = Path(__file__).resolve().parents[1]
    path = str(root / "qsgd" / "noise.py")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("leaf_noise", {path!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        bad = sorted(m for m in sys.modules if m == "qsgd" or m.startswith(("qsgd.", "triton")))
        assert not bad, bad
        print(mod.noise_key(1, 2, 3, 4))
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120, cwd=root)
    assert int(out.stdout) == noise_key(1, 2, 3, 4)


def _module_graph() -> dict[str, set[str]]:
    """qsgd's module-level imports between its own modules (imports inside functions, which
    run on first use, and ``if TYPE_CHECKING`` blocks are not edges)."""
    root = Path(__file__).resolve().parents[1] / "qsgd"
    graph = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        name = ".".join(parts)
        package = parts if rel.name == "__init__" else parts[:-1]
        edges = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("qsgd")}
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(package[:len(package) - node.level + 1]) if node.level
                        else node.module or "")
                if node.level and node.module:
                    base = f"{base}.{node.module}"
                if not base.startswith("qsgd"):
                    continue
                if node.module is None:  # from . import a, b: the modules a and b
                    edges |= {f"{base}.{a.name}" for a in node.names}
                else:
                    edges.add(base)
        graph[name] = edges
    return graph


def test_no_import_cycles_and_fused_imports_no_concrete_perturbation():
    graph = _module_graph()
    assert graph["qsgd.noise"] == set()
    assert graph["qsgd.fused"] == {"qsgd.noise", "qsgd.perturbations"}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for dep in graph.get(m, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, dep])}"
            if dep not in state:
                visit(dep, [*path, dep])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    # and at run time: importing the fused module pulls in no circuit or attention code
    code = ("import sys, qsgd.fused; bad = [m for m in sys.modules if m.startswith("
            "('qsgd.circuit', 'qsgd.attention', 'qsgd.models'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_fused_codes_are_the_kernels_constants():
    """Each class's fused_code is the kernel's PERT_<NAME> constant (read from the kernels'
    source: Triton need not be installed), and FUSED_PERTURBATIONS lists exactly those."""
    src = (Path(__file__).resolve().parents[1] / "qsgd" / "_fused_kernels.py").read_text()
    consts = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [t.id for t in node.targets[0].elts]
            consts.update(zip(names, ast.literal_eval(node.value), strict=True))
    codes = {name: type(get_perturbation(name)).__dict__.get("fused_code")
             for name in available()}
    kernel = {n: c for n, c in codes.items() if c is not None}
    assert kernel == {n: consts[f"PERT_{n.upper()}"] for n in kernel}
    assert set(FUSED_PERTURBATIONS) == set(kernel) == set(fused.fused_perturbations())
    assert list(FUSED_PERTURBATIONS) == sorted(kernel, key=kernel.get)


class _ShiftedSin(Sin):
    """A subclass that changes the maths: must not run the sine kernel."""

    def term(self, theta, grad, ctx):
        return super().term(theta, grad, ctx) * 2


class _PlainSin(Sin):
    """A subclass that keeps the maths but does not opt in: no kernel either (exact classes)."""


class _OptedInSin(Sin):
    """A subclass that keeps the maths and says so."""

    fused_code = Sin.fused_code


def test_fused_support_follows_the_class_attribute():
    assert fused.fused_code(Sin()) == 1 and fused.fused_code(get_perturbation("sinnorm")) == 11
    assert fused.fused_code(get_perturbation("moment")) == 10  # its own, not SinNorm's
    assert fused.fused_code(_ShiftedSin()) is None and fused.fused_code(_PlainSin()) is None
    assert fused.fused_code(_OptedInSin()) == 1
    p = [torch.zeros(4)]
    for pert in (_ShiftedSin(), _PlainSin()):
        assert "no fused kernel" in fused_unsupported_reason(p, p, p, p, pert)
    assert "not cuda" in fused_unsupported_reason(p, p, p, p, _OptedInSin())
    # the derived list follows the registry: a registered class with its own code joins it,
    # one that only inherits a code does not
    register(type("Sin2", (_OptedInSin,), {"name": "sin2", "fused_code": 1}))
    register(type("Sin3", (_OptedInSin,), {"name": "sin3"}))
    try:
        names = fused.fused_perturbations()
        assert "sin2" in names and "sin3" not in names
    finally:
        _REGISTRY.pop("sin2")
        _REGISTRY.pop("sin3")
    assert fused.fused_perturbations() == FUSED_PERTURBATIONS


@pytest.mark.parametrize("pert", ["sin", "shifted"])
def test_the_optimizer_asks_only_the_one_support_check(monkeypatch, pert):
    """With fused_unsupported_reason forced to "supported", the optimizer launches the kernel
    (here a spy of the launcher) even for CPU tensors: no other check stands in the way; and
    the real check keeps a subclass that overrides term away from the kernel."""
    launched = []
    monkeypatch.setattr(fused, "_dispatch", lambda *a, **k: launched.append(a[7]))
    perturbation = "sin" if pert == "sin" else _ShiftedSin()
    a = _make(SHAPES, torch.float64, "cpu")
    opt = SuperpositionalAdamW(a, perturbation=perturbation, scope="first_n")
    _run(opt, a, 1)
    assert launched == []  # CPU: unsupported, so the reference paths ran
    real = fused.fused_unsupported_reason
    monkeypatch.setattr(fused, "fused_unsupported_reason",
                        lambda *args: None if real(*args).endswith("not cuda") else real(*args))
    before = [p.detach().clone() for p in a]
    _run(opt, a, 1)
    if pert == "sin":
        assert launched == [1]  # the group went to the kernel, with the sine's code
        assert all(torch.equal(x, y) for x, y in zip(a, before, strict=True))
    else:
        assert launched == []


@pytest.mark.parametrize("variant", ["sin", "gauss", "sinnorm", "moment"])
def test_fused_true_on_cpu_falls_back_to_the_reference(variant):
    a = _make(SHAPES, torch.float64, "cpu")
    b = [p.detach().clone().requires_grad_() for p in a]
    kw = dict(perturbation=variant, lr=1e-2)
    _run(SuperpositionalAdamW(a, fused=True, **kw), a, 3)
    _run(SuperpositionalAdamW(b, fused=False, foreach=False, **kw), b, 3)
    for x, y in zip(a, b, strict=False):
        assert torch.equal(x, y)


# the interpreter scripts' tensors: sizes 37, 1, 3x3 and 2050 (a second block; tails) and
# their hyperparameters; mk() gives params, grads, exp_avgs, exp_avg_sqs
_INTERP_DATA = textwrap.dedent("""
    shapes = [(37,), (1,), (3, 3), (2050,)]
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, n_qubits=4,
                 seed=7)
    def mk():
        g = torch.Generator().manual_seed(5)
        return [[torch.randn(s, generator=g) * sc for s in shapes] for sc in (0.8, 1.0, 0.1)] + \\
               [[torch.rand(s, generator=g) * 1e-2 for s in shapes]]
""")
_INTERP_SCRIPT = textwrap.dedent("""
    import math, torch
    from qsgd import fused, noise
    from qsgd.optimizer import reference_step
    from qsgd.perturbations import get_perturbation, noise_key, rms, sinpi
    for seed, step, idx in [(0, 1, 0), (123, 7, 42), (2**64 - 5, 3, 1), (-3, 100, 9)]:
        assert noise.device_noise_key(seed, step, idx, "cpu") == noise_key(seed, step, idx)
    key = noise_key(1, 2, 3)
    for kind in ("normal", "uniform"):
        long = noise.cuda_noise(key, 4099, kind, "cpu")
        short = noise.cuda_noise(key, 6, kind, "cpu")
        assert torch.equal(long[:6], short), "noise of element i must not depend on n"
""") + _INTERP_DATA + textwrap.dedent("""
    for pert in ["none", "sin", "cos", "taylor", "gauss", "unif"]:
        for scope in ["all", "first_n"]:
            for bc in (True, False):
                A, R = mk(), mk()
                P = get_perturbation(pert)
                idx = list(range(3, 3 + len(shapes)))
                fused._dispatch(*A, [5] * len(shapes), idx, [t.numel() for t in A[0]],
                                fused.fused_code(P), lam=0.5, first_n=scope == "first_n",
                                bias_correction=bc, **hyper)
                for i, (p, g, m, v) in enumerate(zip(*R)):
                    p0 = p.clone()
                    n = p.numel() if scope == "all" else min(4, p.numel())
                    q = None
                    if pert in ("gauss", "unif"):  # the CUDA noise source, run by the interpreter
                        th, gg = p.reshape(-1)[:n], g.reshape(-1)[:n]
                        s = rms(sinpi(th))
                        kind = "normal" if pert == "gauss" else "uniform"
                        xi = noise.cuda_noise(noise_key(7, 5, idx[i]), n, kind, "cpu")
                        q = (xi * s if pert == "gauss" else (xi * 2 - 1) * (s * math.sqrt(3))) * gg
                        P_ref = get_perturbation("none")
                    else:
                        P_ref = P
                    reference_step(p, g, m, v, step=5, index=idx[i], perturbation=P_ref,
                                   scope=scope, bias_correction=bc, quantum_weight=0.5, **hyper)
                    if q is not None:
                        p.reshape(-1)[:n].add_(q, alpha=-hyper["lr"] * 0.5)
                    d_ref, d_fused = (p - p0).double(), (A[0][i] - p0).double()
                    err = float((d_ref - d_fused).norm() / d_ref.norm())
                    assert err < 1e-4, (pert, scope, bc, i, err)
                    for x, y in ((A[2][i], m), (A[3][i], v)):
                        assert float((x - y).abs().max()) <= 1e-6 * float(y.abs().max())
    print("interpreter ok")
""")


# The kernels of anti, anneal, annealrel and circuit against the reference step, several steps,
# on the interpreter. The reference's keyed_noise is pointed at cuda_noise (which the
# interpreter runs on CPU tensors), the stream it draws on CUDA: so the perturbations' own
# term() and reference_step run unchanged, with the kernel's noise definition.
_INTERP_VARIANTS_SCRIPT = textwrap.dedent("""
    import math, torch
    from qsgd import fused, noise, perturbations
    from qsgd.optimizer import reference_step
    from qsgd.perturbations import Circuit, get_perturbation, noise_key

    def cuda_keyed_noise(shape, kind, *, seed, step, index, device, dtype):
        n = math.prod(shape)
        return noise.cuda_noise(noise_key(seed, step, index), n, kind, device, dtype).view(shape)

    perturbations.keyed_noise = cuda_keyed_noise
    shapes = [(1,), (3,), (5,), (1025,), (2, 3), (4,)]
    base = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, seed=7)

    def mk(seed):
        g = torch.Generator().manual_seed(seed)
        p = [torch.randn(s, generator=g) * 0.8 for s in shapes]
        m = [torch.randn(s, generator=g) * 0.1 for s in shapes]
        v = [torch.rand(s, generator=g) * 1e-2 for s in shapes]
        return p, m, v

    def grads(t):
        g = torch.Generator().manual_seed(100 + t)
        return [torch.randn(s, generator=g) for s in shapes]

    every = [(scope, bc) for scope in ("all", "first_n") for bc in (True, False)]
    cases = [(name, get_perturbation(name), 4, every) for name in ("anti", "anneal", "annealrel")]
    cases += [("circuit", Circuit(), 4, every)]
    # the first-moment kind (moment: sin(πθ)·g into m alone) and the normalized kind
    # (sinnorm: sin(πθ) on this step's Adam direction)
    cases += [(name, get_perturbation(name), 4, every) for name in ("moment", "sinnorm")]
    # other circuit settings (register sizes, depth, Hadamards): two configurations each
    two = [("all", True), ("first_n", False)]
    cases += [("circuit-d1-h", Circuit(depth=1, hadamard=True), 4, two),
              ("circuit-2", Circuit(), 2, two), ("circuit-8", Circuit(depth=3), 8, two),
              ("circuit-1", Circuit(), 1, two)]
    for name, P, nq, configs in cases:
        code = fused.fused_code(P)
        assert code is not None and P.fused_unsupported(nq) is None, name
        for scope, bc in configs:
            hyper = dict(base, n_qubits=nq)
            (pa, ma, va), (pr, mr, vr) = mk(5), mk(5)
            idx = list(range(3, 3 + len(shapes)))
            for t in (1, 2, 3):
                gs = grads(t)
                p0 = [p.clone() for p in pr]
                fused._dispatch(pa, [g.clone() for g in gs], ma, va, [t] * len(shapes), idx,
                                [x.numel() for x in pa], code, lam=0.5,
                                first_n=scope == "first_n", bias_correction=bc,
                                perturbation=P, **hyper)
                for i in range(len(shapes)):
                    reference_step(pr[i], gs[i].clone(), mr[i], vr[i], step=t, index=idx[i],
                                   perturbation=P, scope=scope, bias_correction=bc,
                                   quantum_weight=0.5, **hyper)
                    d_ref = (pr[i] - p0[i]).double()
                    d_fused = (pa[i] - p0[i]).double()
                    err = float((d_ref - d_fused).norm() / d_ref.norm())
                    assert err < 1e-4, (name, scope, bc, t, i, err)
                    for x, y in ((ma[i], mr[i]), (va[i], vr[i])):
                        tol = 1e-5 * float(y.abs().max())
                        assert float((x - y).abs().max()) <= tol, (name, scope, bc, t, i)
    # the in-kernel draw is cuda_noise's for the same key: from m = v = 0 and g = 0, anneal's
    # first moment after one step is (1 − β1)·λ·σ_1·z, z = cuda_noise(noise_key(seed, 1, index))
    P = get_perturbation("anneal")
    p, g, m, v = ([torch.zeros(1027)] for _ in range(4))
    fused._dispatch(p, g, m, v, [1], [9], [1027], fused.fused_code(P), lam=0.5, first_n=False,
                    bias_correction=True, perturbation=P, **dict(base, n_qubits=4))
    z = noise.cuda_noise(noise_key(7, 1, 9), 1027, "normal", "cpu")
    torch.testing.assert_close(m[0] / (0.1 * 0.5 * P.sigma(1)), z, rtol=1e-6, atol=1e-6)
    print("interpreter variants ok")
""")


def test_new_variant_kernels_under_the_triton_interpreter():
    """anti, anneal, annealrel, circuit (several register sizes and settings), moment and
    sinnorm: the fused
    kernel equals the reference step for 3 steps, scopes all and first_n, bias correction on
    and off, sizes 1, 3, 5, 1025 (a second block; a tail group), on CPU (TRITON_INTERPRET=1)."""
    _interpreted(_INTERP_VARIANTS_SCRIPT, "interpreter variants ok")


def test_kernels_under_the_triton_interpreter():
    """The kernels' maths on CPU (TRITON_INTERPRET=1), when Triton is installed."""
    _interpreted(_INTERP_SCRIPT, "interpreter ok")


def _interpreted(script: str, done: str) -> None:
    """Run ``script`` under TRITON_INTERPRET=1 in a fresh interpreter; it prints ``done``."""
    pytest.importorskip("triton", reason="Triton not installed (CPU CI); the GPU tests cover it")
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    assert done in out.stdout


_INTERP_CLIP_SCRIPT = textwrap.dedent("""
    import torch
    from qsgd import fused
    from qsgd.fused import FUSED_PERTURBATIONS
    from qsgd.perturbations import get_perturbation
""") + _INTERP_DATA + textwrap.dedent("""
    for name in ["none", *FUSED_PERTURBATIONS]:
        P = get_perturbation(name)
        for scope in ("all", "first_n"):
            for step in (1, 2):
                A, R = mk(), mk()
                coef = torch.tensor(0.37)
                raw = [g.clone() for g in A[1]]
                kw = dict(lam=0.5, first_n=scope == "first_n", bias_correction=True,
                          perturbation=P, **hyper)
                n = [t.numel() for t in A[0]]
                idx = list(range(3, 3 + len(shapes)))
                fused._dispatch(*A, [step] * 4, idx, n, fused.fused_code(P), grad_scale=coef, **kw)
                torch._foreach_mul_(R[1], coef)
                fused._dispatch(*R, [step] * 4, idx, n, fused.fused_code(P), **kw)
                for x, y in zip(A[0] + A[2] + A[3], R[0] + R[2] + R[3]):
                    assert torch.equal(x, y), (name, scope, step)
                assert all(torch.equal(x, y) for x, y in zip(A[1], raw)), "gradients written"
    print("interpreter clip ok")
""")


def test_clipping_product_under_the_triton_interpreter():
    """grad_scale (SuperpositionalAdamW.clip_grad_norm_'s deferred product), every fused code,
    float32 (the interpreter's bfloat16 conversion truncates, unlike the GPU's: bfloat16 is
    tests/test_clip.py's GPU test): the kernel equals clipping the gradients in place."""
    _interpreted(_INTERP_CLIP_SCRIPT, "interpreter clip ok")




# ---------------------------------------------------------------------------------------------
# GPU: fused ≡ reference

@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", FUSED_PERTURBATIONS)
@pytest.mark.parametrize("scope", ["all", "first_n"])
@pytest.mark.parametrize("bias_correction", [True, False])
def test_fused_matches_reference_fp32(variant, scope, bias_correction):
    a, fo, b, ro = _pair(perturbation=variant, scope=scope, bias_correction=bias_correction,
                         seed=11)
    start = [p.detach().double().clone() for p in a]
    _run(fo, a, 3)
    _run(ro, b, 3)
    _close_step(a, b, start, rtol=2e-5)
    for pa, pb in zip(a, b, strict=False):
        for key in ("exp_avg", "exp_avg_sq"):
            # annealrel's noise scale comes from an RMS the kernel reduces in another order
            # than torch: its rounding moves an element where gradient and noise cancel by
            # ~1e-5 of itself (measured on an H200: 6e-9 on a 6e-4 entry), so the absolute
            # tolerance is relative to the tensor, as in the interpreter test
            ref = ro.state[pb][key]
            torch.testing.assert_close(fo.state[pa][key], ref, rtol=2e-6,
                                       atol=max(1e-9, 2e-6 * float(ref.abs().max())))
        assert fo.state[pa]["step"] == ro.state[pb]["step"] == 3


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["sin", "cos", "taylor"])
def test_deterministic_terms_match_bit_for_bit_or_within_one_rounding(variant):
    """One step: θ differs from the reference by at most a few fp32 ulps (FMA contraction)."""
    a, fo, b, ro = _pair(perturbation=variant)
    _run(fo, a, 1)
    _run(ro, b, 1)
    for x, y in zip(a, b, strict=False):
        ulp = torch.finfo(torch.float32).eps * y.detach().abs().clamp_min(1e-2)
        assert bool(((x - y).abs() <= 4 * ulp).all())


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["none", "sin", "gauss", "unif", "anti", "anneal", "circuit",
                                     "moment", "sinnorm"])
def test_fused_matches_reference_bf16(variant):
    """bf16 tensors: the kernel computes in fp32 and rounds once; the reference on fp32 copies,
    rounded to bf16, agrees to bf16 rounding after one step."""
    a = _make(SHAPES, torch.bfloat16, "cuda")
    b = [p.detach().float().clone().requires_grad_() for p in a]
    kw = dict(perturbation=variant, lr=1e-2, weight_decay=0.1)
    fo = SuperpositionalAdamW(a, fused=True, **kw)
    ro = SuperpositionalAdamW(b, fused=False, foreach=False, **kw)
    grads = _grads(a, 0)
    for p, q, g in zip(a, b, grads, strict=False):
        p.grad, q.grad = g, g.float()
    fo.step()
    ro.step()
    for x, y in zip(a, b, strict=False):
        # one bf16 rounding apart at most (2**-7 relative)
        torch.testing.assert_close(x.float(), y.detach().bfloat16().float(), rtol=8e-3,
                                   atol=1e-6)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", NOISY)
def test_noise_is_one_definition_on_cuda(variant):
    """reference, foreach and fused steps on CUDA draw the same ξ (cuda_noise ≡ the kernel)."""
    a, fo, b, ro = _pair(perturbation=variant, quantum_weight=1.0)
    c = [p.detach().clone().requires_grad_() for p in a]
    fe = SuperpositionalAdamW(c, fused=False, foreach=True, perturbation=variant,
                              quantum_weight=1.0, lr=1e-2, weight_decay=0.1)
    start = [p.detach().double().clone() for p in a]
    _run(fo, a, 2)
    _run(ro, b, 2)
    _run(fe, c, 2)
    _close_step(a, b, start, rtol=2e-5)
    _close_step(c, b, start, rtol=2e-5)


@gpu
@pytest.mark.gpu
def test_cuda_noise_key_and_distribution():
    from qsgd.noise import cuda_noise, device_noise_key

    for seed, step, idx in [(0, 1, 0), (123, 7, 42), (2**64 - 5, 3, 1), (-3, 100, 9),
                            (2**40 + 17, 2**20, 12345)]:
        assert device_noise_key(seed, step, idx, "cuda") == noise_key(seed, step, idx)
    key = noise_key(5, 1, 0)
    z = cuda_noise(key, 1 << 20, "normal", "cuda").double()
    assert abs(float(z.mean())) < 5e-3 and abs(float(z.std()) - 1) < 5e-3
    assert abs(float(((z - z.mean()) ** 4).mean() / z.var() ** 2) - 3) < 0.05
    u = cuda_noise(key, 1 << 20, "uniform", "cuda").double()
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 3e-3 and abs(float(u.var()) * 12 - 1) < 1e-2
    assert abs(float(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1])) < 5e-3
    assert torch.equal(cuda_noise(key, 5, "normal", "cuda"), z[:5].float())
    assert not torch.equal(cuda_noise(noise_key(5, 2, 0), 5, "normal", "cuda"), z[:5].float())


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["sin", "gauss", "unif", "anti", "anneal", "annealrel",
                                     "circuit"])
def test_fused_resume_is_bit_identical(variant):
    kw = dict(perturbation=variant, lr=1e-2, seed=3)
    a = _make(SHAPES, torch.float32, "cuda")
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = SuperpositionalAdamW(a, fused=True, **kw)
    _run(oa, a, 6)
    ob = SuperpositionalAdamW(b, fused=True, **kw)
    _run(ob, b, 3)
    sd = ob.state_dict()
    c = [p.detach().clone().requires_grad_() for p in b]
    oc = SuperpositionalAdamW(c, fused=True, **kw)
    oc.load_state_dict(sd)
    _run(oc, c, 3, start=3)
    for x, y in zip(a, c, strict=False):
        assert torch.equal(x, y)


@gpu
@pytest.mark.gpu
def test_many_small_tensors_and_mixed_step_counts():
    """300 tensors of sizes 1…300 in one launch; one tensor misses a gradient on a step, so
    the group holds two step counts (two launches)."""
    g = torch.Generator().manual_seed(2)
    shapes = [(int(n),) for n in torch.randint(1, 300, (300,), generator=g)]
    for variant in ("sin", "gauss", "anti", "annealrel", "circuit"):
        a, fo, b, ro = _pair(shapes, perturbation=variant, scope="first_n")
        start = [p.detach().double().clone() for p in a]
        for t in range(3):
            for params in (a, b):
                for i, (p, gr) in enumerate(zip(params, _grads(params, t), strict=False)):
                    p.grad = None if (t == 1 and i == 5) else gr
            fo.step()
            ro.step()
        assert fo.state[a[5]]["step"] == 2 and fo.state[a[0]]["step"] == 3
        _close_step(a, b, start, rtol=2e-5)


@gpu
@pytest.mark.gpu
def test_dispatch_uses_the_fused_kernel_only_when_supported(monkeypatch):
    import qsgd.fused as F

    calls = []
    real = F.fused_group

    def spy(*args, **kwargs):
        ok = real(*args, **kwargs)
        calls.append(ok)
        return ok

    monkeypatch.setattr(F, "fused_group", spy)

    def steps(**kw):
        calls.clear()
        p = _make(SHAPES, torch.float32, "cuda")
        _run(SuperpositionalAdamW(p, **kw), p, 1)
        return list(calls)

    assert steps() == [True]                                   # auto on CUDA
    for name in ("anti", "anneal", "annealrel", "circuit", "sinnorm", "moment"):
        assert steps(perturbation=name) == [True], name
    assert steps(fused=False) == []
    assert steps(foreach=False) == []                          # auto respects foreach=False
    assert steps(foreach=False, fused=True) == [True]
    assert steps(perturbation="circuit", circuit_shots=8) == [False]  # falls back, silently
    assert steps(track_ratio=True) == []                       # ratio uses the foreach path
    p = _make(SHAPES, torch.float64, "cuda")
    assert fused_unsupported_reason(p, p, p, p, get_perturbation("sin")).startswith("dtype")


@gpu
@pytest.mark.gpu
def test_non_contiguous_falls_back_and_still_matches():
    base = torch.randn(8, 6, device="cuda")
    a = [base.t().contiguous().t().requires_grad_()]  # non-contiguous leaf
    assert not a[0].is_contiguous()
    b = [a[0].detach().clone().requires_grad_()]
    _run(SuperpositionalAdamW(a, fused=True), a, 2)
    _run(SuperpositionalAdamW(b, fused=False, foreach=False), b, 2)
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-7)


@gpu
@pytest.mark.gpu
def test_track_ratio_and_nonfinite_still_work_on_cuda():
    from qsgd import NonFiniteGradientError

    p = _make(SHAPES, torch.float32, "cuda")
    opt = SuperpositionalAdamW(p, track_ratio=True)
    _run(opt, p, 2)
    assert math.isfinite(opt.perturbation_ratio()) and opt.perturbation_ratio() > 0
    p = _make(SHAPES, torch.float32, "cuda")
    opt = SuperpositionalAdamW(p, fused=True)
    before = [x.detach().clone() for x in p]
    for x, g in zip(p, _grads(p, 0), strict=False):
        x.grad = g
    p[2].grad[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError):
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(p, before, strict=False))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["sin", "gauss", "anti", "anneal", "annealrel"])
def test_first_n_wider_than_a_block(variant):
    """n_qubits past the kernel's block size: the in-scope part spans several blocks."""
    a, fo, b, ro = _pair(perturbation=variant, scope="first_n", n_qubits=2500)
    start = [p.detach().double().clone() for p in a]
    _run(fo, a, 2)
    _run(ro, b, 2)
    _close_step(a, b, start, rtol=2e-5)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("depth, hadamard, entangle, n_qubits", [
    (2, False, True, 4), (1, True, True, 4), (2, False, True, 2), (3, False, True, 8),
    (2, False, True, 1), (2, False, False, 4)])
@pytest.mark.parametrize("scope", ["all", "first_n"])
def test_fused_circuit_closed_form_matches_the_simulator(depth, hadamard, entangle, n_qubits,
                                                         scope):
    """The circuit kernel's closed form (theory T5) against the reference's statevector
    simulator, tensors of sizes that leave tail groups (SHAPES) and one of two blocks."""
    from qsgd.perturbations import Circuit

    pert = Circuit(depth=depth, hadamard=hadamard, entangle=entangle)
    shapes = [*SHAPES, (1025,)]
    a, fo, b, ro = _pair(shapes, perturbation=pert, scope=scope, n_qubits=n_qubits)
    assert fused_unsupported_reason(a, a, a, a, pert, n_qubits) is None  # the kernel runs
    start = [p.detach().double().clone() for p in a]
    _run(fo, a, 3)
    _run(ro, b, 3)
    _close_step(a, b, start, rtol=2e-5)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["anti", "gauss", "sin"])
def test_a_per_perturbation_launch_changes_no_number(monkeypatch, variant):
    """qsgd.fused.UPDATE_LAUNCH (BLOCK, num_warps per perturbation): the noise is keyed on
    element positions, so another launch of the update kernel gives the same bits."""
    import qsgd.fused as F

    runs = []
    for launch in (None, (512, 4), (4096, 16)):
        monkeypatch.setattr(F, "UPDATE_LAUNCH", {} if launch is None else {variant: launch})
        a = _make(SHAPES + [(9000,)], torch.float32, "cuda")
        opt = SuperpositionalAdamW(a, fused=True, perturbation=variant, quantum_weight=1.0,
                                   lr=1e-2, weight_decay=0.1)
        _run(opt, a, 3)
        runs.append([p.detach().clone() for p in a])
    for other in runs[1:]:
        for x, y in zip(runs[0], other, strict=True):
            assert torch.equal(x, y)
