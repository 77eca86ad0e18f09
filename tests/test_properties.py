"""Hypothesis properties of one step over bounded random states."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qsgd import SuperpositionalAdamW, get_perturbation
from qsgd.perturbations import Context, available

VARIANTS = [v for v in available() if v not in ("none", "circuit")]
finite = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def states(draw, max_size=24):
    n = draw(st.integers(1, max_size))
    theta = draw(st.lists(finite, min_size=n, max_size=n))
    grad = draw(st.lists(finite, min_size=n, max_size=n))
    m = draw(st.lists(finite, min_size=n, max_size=n))
    v = draw(st.lists(st.floats(0.0, 9.0, width=64), min_size=n, max_size=n))
    step = draw(st.integers(0, 50))
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    return t(theta), t(grad), t(m), t(v), step


def _one_step(theta, grad, m, v, prev_step, **kw):
    p = theta.clone().requires_grad_()
    opt = SuperpositionalAdamW([p], **kw)
    if prev_step > 0:
        opt.state[p].update(step=prev_step, exp_avg=m.clone(), exp_avg_sq=v.clone())
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]


@settings(max_examples=60, deadline=None)
@given(states(), st.sampled_from(VARIANTS), st.sampled_from(["all", "first_n"]),
       st.floats(0.0, 1.0), st.floats(0.0, 0.2), st.booleans())
def test_update_bound(state, variant, scope, lam, wd, bias_correction):
    """|Δθ_i| ≤ lr·(|m̂_i|/(√v̂_i+ε) + λ|Q_i|) + lr·wd·|θ_i| for every coordinate."""
    theta, grad, m, v, prev = state
    lr, eps = 0.01, 1e-8
    kw = dict(lr=lr, eps=eps, weight_decay=wd, quantum_weight=lam, perturbation=variant,
              scope=scope, n_qubits=3, bias_correction=bias_correction, seed=7)
    new, s = _one_step(theta, grad, m, v, prev, **kw)
    t = s["step"]
    bc1, bc2 = (1 - 0.9**t, 1 - 0.999**t) if bias_correction else (1.0, 1.0)
    adam = (s["exp_avg"] / bc1).abs() / ((s["exp_avg_sq"] / bc2).sqrt() + eps)
    pert = get_perturbation(variant)
    q = torch.zeros_like(theta)
    if pert.kind in ("direction", "normalized"):  # the other kinds act through the moments
        sl = slice(None) if scope == "all" else slice(0, 3)
        q[sl] = pert.term(theta[sl], grad[sl], Context(step=t, seed=7, index=0, n_qubits=3))
        if pert.kind == "normalized":  # a factor on Adam's direction: Q = r⊙u
            q[sl] *= adam[sl]
    bound = lr * (adam + lam * q.abs()) + lr * wd * theta.abs()
    assert torch.all((new - theta).abs() <= bound * (1 + 1e-9) + 1e-15)


@settings(max_examples=60, deadline=None)
@given(states())
def test_sin_and_cos_terms_are_bounded_by_the_gradient(state):
    theta, grad, *_ = state
    ctx = Context(step=1, seed=0, index=0)
    for name in ("sin", "cos"):
        q = get_perturbation(name).term(theta, grad, ctx)
        assert torch.all(q.abs() <= grad.abs())


BOUNDED = [v for v in available()
           if math.isfinite(get_perturbation(v).q_over_g_bound)]


def test_q_over_g_bounds_are_declared_on_the_classes():
    """The attribute the theory checks read: finite exactly where a bound exists."""
    bounds = {v: get_perturbation(v).q_over_g_bound for v in available()}
    assert bounds == {"none": 0.0, "sin": 1.0, "cos": 1.0, "circuit": 1.0,
                      "unif": math.sqrt(3.0), "taylor": math.inf, "gauss": math.inf,
                      "anti": math.inf, "anneal": math.inf, "annealrel": math.inf,
                      "sinnorm": math.inf, "moment": math.inf}


@pytest.mark.parametrize("variant", BOUNDED)
@settings(max_examples=30, deadline=None)
@given(states(), st.integers(1, 10_000), st.integers(0, 2**40))
def test_every_finite_q_over_g_bound_holds(variant, state, step, seed):
    """|Q_i| ≤ q_over_g_bound·|g_i| for every perturbation that declares a finite bound."""
    theta, grad, *_ = state
    pert = get_perturbation(variant)
    assert pert.kind == "direction"
    q = pert.term(theta, grad, Context(step=step, seed=seed, index=3, n_qubits=3))
    assert torch.all(q.abs() <= pert.q_over_g_bound * grad.abs() * (1 + 1e-12))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=16), st.lists(finite, min_size=16,
                                                                           max_size=16))
def test_sin_vanishes_at_integers_and_zero_gradient(ints, grads):
    ctx = Context(step=1, seed=0, index=0)
    sin = get_perturbation("sin")
    theta = torch.tensor(ints, dtype=torch.float64)
    g = torch.tensor(grads[: len(ints)], dtype=torch.float64)
    assert torch.all(sin.term(theta, g, ctx) == 0)
    theta2 = g * 0.37 + 0.1
    assert torch.all(sin.term(theta2, torch.zeros_like(theta2), ctx) == 0)


@settings(max_examples=40, deadline=None)
@given(states(), st.sampled_from(VARIANTS), st.integers(1, 5), st.floats(0.05, 1.0))
def test_out_of_scope_coordinates_get_exactly_the_adamw_update(state, variant, n, lam):
    theta, grad, m, v, prev = state
    base = dict(lr=0.01, weight_decay=0.01, seed=3)
    ours, _ = _one_step(theta, grad, m, v, prev, perturbation=variant, quantum_weight=lam,
                        scope="first_n", n_qubits=n, **base)
    plain, _ = _one_step(theta, grad, m, v, prev, perturbation="none", **base)
    assert torch.equal(ours[n:], plain[n:])


@pytest.mark.parametrize("variant", ["gauss", "unif"])
@settings(max_examples=15, deadline=None)
@given(st.floats(0.01, 2.0), st.integers(0, 10_000))
def test_rms_matched_multiplier_has_the_rms_of_the_sine(variant, scale, step):
    """ξ in Q = ξ·g has RMS equal to RMS(sin(πθ)) (4096 draws: within 6%)."""
    g = torch.Generator().manual_seed(step)
    theta = torch.randn(4096, generator=g, dtype=torch.float64) * scale
    ones = torch.ones_like(theta)
    xi = get_perturbation(variant).term(theta, ones, Context(step=step + 1, seed=1, index=2))
    target = torch.sin(math.pi * theta).pow(2).mean().sqrt()
    assert float(xi.pow(2).mean().sqrt()) == pytest.approx(float(target), rel=0.06)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.01, 2.0), st.integers(1, 10_000))
def test_anticorrelated_noise_has_the_rms_of_the_sine_term(scale, step):
    g = torch.Generator().manual_seed(step)
    theta = torch.randn(4096, generator=g, dtype=torch.float64) * scale
    grad = torch.randn(4096, generator=g, dtype=torch.float64)
    q = get_perturbation("anti").term(theta, grad, Context(step=step + 1, seed=1, index=2))
    target = (torch.sin(math.pi * theta) * grad).pow(2).mean().sqrt()
    assert float(q.pow(2).mean().sqrt()) == pytest.approx(float(target), rel=0.06)


def test_anticorrelated_increments_telescope():
    """Σ_t Q_t/s_t = z_T/√2: the anti noise is a difference of one walk's positions."""
    theta = torch.full((256,), 0.25, dtype=torch.float64)
    grad = torch.ones_like(theta)
    anti = get_perturbation("anti")
    s = float((torch.sin(math.pi * theta) * grad).pow(2).mean().sqrt())
    total = sum(anti.term(theta, grad, Context(step=t, seed=4, index=1)) for t in range(1, 9))
    z8 = torch.randn(256, generator=Context(step=8, seed=4, index=1).generator("cpu"),
                     dtype=torch.float64)
    torch.testing.assert_close(total / s, z8 / math.sqrt(2))


def test_anneal_variance_schedule():
    an = get_perturbation("anneal")
    xi = an.term(torch.zeros(200_000), torch.zeros(200_000), Context(step=1, seed=0, index=0))
    assert float(xi.var()) == pytest.approx(0.01, rel=0.02)
    xi = an.term(torch.zeros(200_000), torch.zeros(200_000), Context(step=100, seed=0, index=0))
    assert float(xi.var()) == pytest.approx(0.01 / 100**0.55, rel=0.02)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(-1e9, 1e9, allow_nan=False, width=32), min_size=1,
                         max_size=40), min_size=1, max_size=5),
       st.sampled_from([torch.float32, torch.float64]))
def test_multi_tensor_sinpi_cospi_have_the_same_bits(values, dtype):
    # the foreach path (the CPU default) must not change a single bit of the sine term
    from qsgd.perturbations import cospi, foreach_cospi, foreach_sinpi, sinpi

    xs = [torch.tensor(v, dtype=dtype) for v in values]
    xs.append(torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.5, 2.0**30], dtype=dtype))
    view = torch.int32 if dtype == torch.float32 else torch.int64
    for one, many in ((sinpi, foreach_sinpi), (cospi, foreach_cospi)):
        for x, y in zip((one(x) for x in xs), many(xs)):
            assert torch.equal(x.view(view), y.view(view))
