"""The circuit perturbation read out from finite shots (``Circuit(shots=S)``, the optimizer's
``circuit_shots``, the classifier arm's ``[classifier].circuit_shots``): exact when off, keyed,
unbiased with the binomial variance, on the 2/S grid, and the same sampler as Qiskit's."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qsgd import SuperpositionalAdamW
from qsgd.batched import SeedBatchedAdamW
from qsgd.circuit import simulate
from qsgd.circuit.shots import (
    CIRCUIT_SHOT_STREAM,
    SHOT_STREAM,
    sample_multinomial,
    x_basis_probabilities,
    x_estimates,
)
from qsgd.noise import keyed_generator
from qsgd.perturbations import Circuit, Context

F64 = torch.float64
SHAPES = [(7, 5), (6,), (3, 2, 2), (1,)]


def _theta(numel: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _exact_x(theta: torch.Tensor, n: int = 4) -> torch.Tensor:
    """⟨X_j⟩ of the perturbation's default circuit straight from the simulator."""
    pad = (-theta.numel()) % n
    x = torch.cat((theta, theta.new_zeros(pad))).reshape(-1, n) * math.pi
    r = simulate(x, depth=2, entangle=True, hadamard=False, encoding="once", readout="X")
    return r.reshape(-1)[:theta.numel()]


def _bits_signs(n: int) -> torch.Tensor:
    k = torch.arange(2**n)
    return (1 - 2 * ((k[:, None] >> torch.arange(n)) & 1)).to(F64)  # (2ⁿ, n)


# ----------------------------------------------------------------------------- exact path


def test_shots_none_is_the_exact_readout_bit_for_bit():
    theta, grad = _theta(23), _theta(23, 1)
    ctx = Context(step=3, seed=7, index=2)
    exact = Circuit().term(theta, grad, ctx)
    assert torch.equal(Circuit(shots=None).term(theta, grad, ctx), exact)
    assert torch.equal(exact, _exact_x(theta) * grad)
    assert not Circuit().stochastic and Circuit(shots=8).stochastic
    assert not Circuit.stochastic  # the class (registry, compile messages) stays deterministic
    assert repr(Circuit()).endswith("backend='torch')")


def _trajectory(steps: int = 3, **kw) -> list[torch.Tensor]:
    params = [_theta(math.prod(s), i).reshape(s).requires_grad_() for i, s in enumerate(SHAPES)]
    opt = SuperpositionalAdamW(params, lr=1e-2, perturbation="circuit", seed=5, **kw)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = _theta(p.numel(), 100 + 10 * t + i).reshape(p.shape)
        opt.step()
    return [p.detach().clone() for p in params]


def test_optimizer_circuit_shots_none_equals_the_default():
    for a, b in zip(_trajectory(), _trajectory(circuit_shots=None)):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- keyed draws


def test_a_fixed_key_gives_identical_draws_and_other_keys_differ():
    theta, grad = _theta(40), torch.ones(40, dtype=F64)
    c = Circuit(shots=64)
    base = c.term(theta, grad, Context(step=4, seed=1, index=3))
    assert torch.equal(base, c.term(theta, grad, Context(step=4, seed=1, index=3)))
    for other in (Context(step=5, seed=1, index=3), Context(step=4, seed=2, index=3),
                  Context(step=4, seed=1, index=4)):
        assert not torch.equal(base, c.term(theta, grad, other))
    # the key: (seed, step, tensor index, the circuit's own stream), not the attention's
    assert CIRCUIT_SHOT_STREAM not in (0, SHOT_STREAM, SHOT_STREAM + 1)
    gen = keyed_generator("cpu", 1, 4, 3, CIRCUIT_SHOT_STREAM)
    assert torch.equal(base, c.shot_readout(theta, 4, gen))


def test_batched_terms_equal_term_tensor_by_tensor():
    c = Circuit(shots=128)
    thetas = [_theta(n, n) for n in (9, 4, 1, 13)]
    grads = [_theta(n, 50 + n) for n in (9, 4, 1, 13)]
    ctxs = [Context(step=2, seed=3, index=i, n_qubits=4) for i in range(4)]
    for a, t, g, ctx in zip(c.terms(thetas, grads, ctxs), thetas, grads, ctxs):
        assert torch.equal(a, c.term(t, g, ctx))


def test_optimizer_paths_and_resume_agree_with_shots():
    ref = _trajectory(steps=4, circuit_shots=32, foreach=False)
    for kw in (dict(), dict(foreach=True)):  # flat CPU path (default), multi-tensor path
        for a, b in zip(ref, _trajectory(steps=4, circuit_shots=32, **kw)):
            assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(ref, _trajectory(steps=4)))
    # resume after 2 steps from a weights_only state_dict: bit-identical to 4 steps at once
    params = [_theta(math.prod(s), i).reshape(s).requires_grad_() for i, s in enumerate(SHAPES)]

    def make(ps):
        return SuperpositionalAdamW(ps, lr=1e-2, perturbation="circuit", seed=5,
                                    circuit_shots=32, foreach=False)

    opt = make(params)
    for t in range(4):
        if t == 2:
            buf = io.BytesIO()
            torch.save(opt.state_dict(), buf)
            buf.seek(0)
            opt = make(params)
            opt.load_state_dict(torch.load(buf, weights_only=True))
        for i, p in enumerate(params):
            p.grad = _theta(p.numel(), 100 + 10 * t + i).reshape(p.shape)
        opt.step()
    for a, p in zip(ref, params):
        assert torch.equal(a, p.detach())
    assert opt.param_groups[0]["circuit_shots"] == 32


def test_seed_batched_optimizer_equals_one_optimizer_per_run_with_shots():
    seeds = [11, 5]
    kw = dict(lr=1e-2, weight_decay=0.1, perturbation="circuit", n_qubits=3, circuit_shots=16)

    def tensors(run, step=None):
        g = torch.Generator().manual_seed(100 * run + (0 if step is None else 1 + step))
        return [torch.randn(s, generator=g) for s in SHAPES]

    single = [[t.clone().requires_grad_() for t in tensors(r)] for r in range(2)]
    opts = [SuperpositionalAdamW(ps, seed=s, **kw) for ps, s in zip(single, seeds)]
    stacked = [torch.stack(ts).requires_grad_() for ts in zip(tensors(0), tensors(1))]
    batched = SeedBatchedAdamW(stacked, seeds, **kw)
    for step in range(3):
        grads = [tensors(r, step) for r in range(2)]
        for o, ps, gs in zip(opts, single, grads):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            o.step()
        for p, gs in zip(stacked, zip(*grads)):
            p.grad = torch.stack(gs)
        batched.step()
    for r in range(2):
        for k, p in enumerate(single[r]):
            assert torch.equal(stacked[k][r], p)


# ----------------------------------------------------------------------------- statistics


def test_estimates_are_unbiased_with_binomial_variance_and_device_correlations():
    """R independent groups of one circuit in one draw: mean, variance and the covariance of
    two qubits of a group against (⟨X⟩, (1 − ⟨X⟩²)/S, (⟨X_0 X_2⟩ − ⟨X_0⟩⟨X_2⟩)/S)."""
    S, R, n = 64, 20000, 4
    group = torch.tensor([0.3, -0.2, 0.6, 0.15], dtype=F64)  # r = (s0 s2, s1 s3, s2, s3)
    c = Circuit(shots=S)
    exact = c.readout(group, n)
    est = c.shot_readout(group.repeat(R), n, keyed_generator("cpu", 0, 1, 0, 99)).reshape(R, n)
    var = (1 - exact**2) / S
    se = (var / R).sqrt()
    assert ((est.mean(0) - exact).abs() < 5 * se).all(), (est.mean(0), exact)
    ratio = est.var(0) / var
    assert ((ratio - 1).abs() < 0.06).all(), ratio  # the sample variance's SE is ~1 %
    px = c.x_probabilities(group, n)[0]
    signs = _bits_signs(n)
    x0x2 = (px * signs[:, 0] * signs[:, 2]).sum()
    cov = torch.cov(est[:, [0, 2]].t())[0, 1]
    expect = (x0x2 - exact[0] * exact[2]) / S
    assert expect.abs() > 1e-3 and (cov - expect).abs() < 0.1 * expect.abs(), (cov, expect)


def test_x_basis_probabilities_give_the_exact_readout():
    theta = _theta(24, 3)
    c = Circuit()
    px = c.x_probabilities(theta, 4)
    assert torch.allclose(px.sum(-1), torch.ones(6, dtype=F64), atol=1e-12)
    assert torch.allclose((px @ _bits_signs(4)).reshape(-1), c.readout(theta, 4), atol=1e-12)
    # H on |0⟩ and |1⟩: |±⟩ measured in X are certain
    one = x_basis_probabilities(torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]], dtype=F64))
    assert torch.allclose(one, torch.tensor([[1.0, 0.0]], dtype=F64))


@pytest.mark.parametrize("n", [1, 3, 9])
def test_dense_and_butterfly_x_rotations_agree(n, monkeypatch):
    import qsgd.circuit.shots as shots

    state = torch.randn(6, 2**n, dtype=torch.complex128,
                        generator=torch.Generator().manual_seed(n))
    state = state / state.abs().square().sum(-1, keepdim=True).sqrt()
    dense = x_basis_probabilities(state)
    monkeypatch.setattr(shots, "DENSE_H_MAX_QUBITS", 0)
    butterfly = x_basis_probabilities(state)
    assert torch.allclose(dense, butterfly, atol=1e-12)
    assert torch.allclose(dense.sum(-1), torch.ones(6, dtype=F64), atol=1e-12)
    assert torch.equal(x_basis_probabilities(state.real), x_basis_probabilities(
        torch.complex(state.real, torch.zeros_like(state.real))))


def test_estimates_are_read_off_one_multinomial_draw():
    probs = Circuit().x_probabilities(_theta(12, 9), 4)
    counts = sample_multinomial(probs, 100, keyed_generator("cpu", 1, 2, 3, 4))
    est = x_estimates(probs, 100, keyed_generator("cpu", 1, 2, 3, 4))
    assert torch.equal(est, counts @ _bits_signs(4) / 100)


@given(theta=st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=11),
       shots=st.integers(1, 300), seed=st.integers(0, 2**31), step=st.integers(1, 10**6),
       n=st.integers(1, 5))
def test_estimates_lie_on_the_grid_of_multiples_of_two_over_s(theta, shots, seed, step, n):
    t = torch.tensor(theta, dtype=F64)
    g = torch.linspace(-2, 2, t.numel(), dtype=F64)
    ctx = Context(step=step, seed=seed, index=1, n_qubits=n)
    c = Circuit(shots=shots)
    r = c.shot_readout(t, n, c.shot_generator("cpu", ctx))
    assert r.shape == t.shape and (r.abs() <= 1).all()
    k = (r + 1) * shots / 2  # the number of +1 outcomes of qubit j
    assert torch.allclose(k, k.round(), atol=1e-9)
    q = c.term(t, g, ctx)
    assert torch.equal(q, r * g) and (q.abs() <= g.abs()).all()  # q_over_g_bound = 1 holds
    assert torch.equal(q, c.term(t, g, ctx))


def test_float32_parameters_get_float32_terms():
    theta = _theta(10).float()
    q = Circuit(shots=50).term(theta, torch.ones_like(theta), Context(1, 0, 0))
    assert q.dtype == torch.float32 and torch.allclose((q + 1) * 25, ((q + 1) * 25).round())


# ----------------------------------------------------------------------------- against Qiskit


def _qiskit_x_circuit(group: torch.Tensor):
    from qsgd.circuit import to_qiskit

    qc = to_qiskit(group * math.pi, None, group.numel(), 2, True, hadamard=False,
                   encoding="once")
    qc.h(range(group.numel()))  # the X-basis measurement: H on every qubit, then Z
    return qc


def test_shots_match_qiskit_samplers():
    """Same circuits, same X-basis measurement, same S: the outcome distribution of our
    sampler and of Qiskit's (Statevector.sample_counts; Aer's shots where installed) agree
    (chi-square homogeneity over all circuits' outcomes, pooled), and the X-basis
    probabilities equal Qiskit's exactly."""
    pytest.importorskip("qiskit", reason="qiskit is not installed")
    from qiskit.quantum_info import Statevector
    from scipy import stats

    S, n = 4096, 4
    groups = _theta(8 * n, 21).reshape(8, n) * 0.7
    c = Circuit(shots=S)
    probs = c.x_probabilities(groups.reshape(-1), n)
    ours = sample_multinomial(probs, S, keyed_generator("cpu", 0, 1, 0, CIRCUIT_SHOT_STREAM))
    samplers = {"statevector": []}
    try:
        from qiskit_aer import AerSimulator
        samplers["aer"] = []
    except ImportError:
        AerSimulator = None
    for i, grp in enumerate(groups):
        qc = _qiskit_x_circuit(grp)
        sv = Statevector(qc)
        assert torch.allclose(torch.from_numpy(sv.probabilities()), probs[i], atol=1e-12)
        sv.seed(1000 + i)
        samplers["statevector"].append(sv.sample_counts(S))
        if AerSimulator is not None:
            meas = qc.copy()
            meas.measure_all()
            res = AerSimulator(seed_simulator=2000 + i).run(meas, shots=S).result()
            samplers["aer"].append(res.get_counts())
    for name, counts in samplers.items():
        chi2, dof = 0.0, 0
        for i, cnt in enumerate(counts):
            theirs = torch.zeros(2**n, dtype=F64)
            for bits, v in cnt.items():
                theirs[int(bits.replace(" ", ""), 2)] = v
            assert theirs.sum() == S
            table = torch.stack((ours[i], theirs))
            table = table[:, table.sum(0) > 0].numpy()
            res = stats.chi2_contingency(table, correction=False)
            chi2, dof = chi2 + res.statistic, dof + res.dof
        p = stats.chi2.sf(chi2, dof)
        assert p > 1e-3, (name, chi2, dof, p)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("shots", [0, -3, 2.5, "64", True])
def test_bad_shots_are_refused_naming_the_option(shots):
    with pytest.raises(ValueError, match=r"^invalid shots: .* \(must be an integer >= 1\)$"):
        Circuit(shots=shots)
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match=r"^invalid circuit_shots: .*must be an integer >= 1"):
        SuperpositionalAdamW(p, perturbation="circuit", circuit_shots=shots)


def test_circuit_shots_need_the_circuit_perturbation():
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match=r"^circuit_shots=64 needs perturbation='circuit', "
                                         r"got 'sin'$"):
        SuperpositionalAdamW(p, perturbation="sin", circuit_shots=64)
    with pytest.raises(ValueError, match=r"^param group 1: circuit_shots=8 needs"):
        opt = SuperpositionalAdamW(p, perturbation="circuit")
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)],
                             "perturbation": "gauss", "circuit_shots": 8})
    with pytest.raises(ValueError, match="disagrees with the perturbation object's shots=16"):
        SuperpositionalAdamW(p, perturbation=Circuit(shots=16), circuit_shots=64)
    with pytest.raises(ValueError, match="circuit_shots=4 needs"):
        SeedBatchedAdamW([torch.zeros(2, 3)], [0, 1], perturbation="cos", circuit_shots=4)
    # an object's own shots, and the same value twice, are accepted; the object is not changed
    obj = Circuit()
    opt = SuperpositionalAdamW(p, perturbation=obj, circuit_shots=64)
    assert obj.shots is None and opt._hyper(opt.param_groups[0])["perturbation"].shots == 64
    SuperpositionalAdamW(p, perturbation=Circuit(shots=64), circuit_shots=64)


def test_shot_terms_refuse_torch_compile():
    from qsgd.update import compiled_group

    p = torch.zeros(4)
    with pytest.raises(ValueError, match="cannot run under torch.compile"):
        compiled_group([p], [torch.ones(4)], [torch.zeros(4)], [torch.zeros(4)],
                       [torch.tensor(1.0)], [0], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=0.0, quantum_weight=0.5, perturbation=Circuit(shots=8),
                       scope="all", n_qubits=4, bias_correction=True, seed=0, stats=None)


GRID = """
[grid]
arm = "classifier"
results = "{results}"

[classifier]
epochs = 1
{options}

[[cells]]
variants = {variants}
seeds = 1
"""


@pytest.mark.parametrize("options, variants, message", [
    ("circuit_shots = -1", '["circuit-l0.5"]',
     r"\[classifier\]\.circuit_shots must be >= 0 \(0: the exact readout\), got -1"),
    ("circuit_shots = 2.5", '["circuit-l0.5"]', r"\[classifier\]\.circuit_shots must be int"),
    ("circuit_shots = 64", '["adamw", "circuit-l0.5"]',
     r"\[classifier\]\.circuit_shots = 64 applies to circuit variants only, not 'adamw'"),
])
def test_the_arm_option_is_checked_when_the_config_loads(tmp_path, options, variants, message):
    from ablations.config import ConfigError, load_config

    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(results=tmp_path / "res", options=options, variants=variants))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_arm_passes_circuit_shots_to_the_optimizer():
    from ablations.arms.classifier import ClassifierOptions, optimizer_options
    from qsgd.variants import parse_variant

    v = parse_variant("circuit-l0.5")
    assert "circuit_shots" not in optimizer_options(ClassifierOptions(), v)
    assert optimizer_options(ClassifierOptions(circuit_shots=1024), v)["circuit_shots"] == 1024


def test_the_quantum_training_grid_loads_with_its_circuit_cells():
    from ablations.config import load_config

    cfg = load_config("ablations/quantum/train.toml")
    shots = [s for s in cfg.specs if s.config.get("circuit_shots")]
    assert len(shots) == 10 and {s.variant for s in shots} == {"circuit-l0.5"}
    assert sum(s.variant == "circuit-l0.5" and not s.task for s in cfg.specs) == 10
