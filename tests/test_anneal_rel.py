"""``annealrel``: annealed gradient noise with σ relative to the gradient's RMS (the
informative anneal control).

Generic tests pick it up by name (tests/test_optimizer.py, test_contracts.py,
test_properties.py: λ = 0 ≡ torch's AdamW in float64, foreach ≡ reference bit for bit,
resume from a state_dict bit-identical, lockstep copies, deepcopy and pickle). Here: the noise's
schedule and keying, a direct float64 re-implementation of the update against every eager path,
a resume mid-run, and the property that makes it informative at any gradient scale: the
update is invariant to rescaling the loss, as Adam's.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import qsgd.optimizer as qopt
from qsgd import SuperpositionalAdamW, parse_variant
from qsgd.noise import keyed_generator
from qsgd.perturbations import Context, get_perturbation

GAMMA = 0.55
#: the eager paths: the per-tensor reference, the multi-tensor one (the flat path switched off
#: through its size limit) and the flat CPU path (the default for a small model)
PATHS = {"reference": dict(foreach=False), "foreach": dict(foreach=True), "flat": {}}


@pytest.fixture
def on_path(monkeypatch):
    def kwargs(path: str) -> dict:
        monkeypatch.setattr(qopt, "FLAT_MAX_NUMEL", 0 if path == "foreach" else 1 << 24)
        return PATHS[path]

    return kwargs


def _params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    return [(torch.randn(s, generator=g, dtype=dtype) * 0.8).requires_grad_() for s in shapes]


def _grads(params, step, scale=1.0):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) * scale * (i + 1) ** -1.5
            for i, p in enumerate(params)]


def _run(opt, params, steps, scale=1.0, start=0):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(params, t, scale)):
            p.grad = g
        opt.step()


def test_noise_is_relative_to_the_gradient_and_anneals():
    pert = get_perturbation("annealrel")
    assert pert.kind == "gradient" and pert.stochastic and pert.gamma == GAMMA
    grad = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 3e-4
    g_rms = float(grad.pow(2).mean().sqrt())
    for step in (1, 100, 10_000):
        xi = pert.term(torch.zeros_like(grad), grad, Context(step=step, seed=0, index=2))
        assert float(xi.std()) == pytest.approx(g_rms / step ** (GAMMA / 2), rel=0.01)
    # ξ = s_t·z with z the keyed stream of (seed, step, index): a new step draws anew, the same
    # key the same numbers; a zero gradient gets no noise
    ctx = Context(step=7, seed=3, index=1)
    xi = pert.term(torch.zeros(50), torch.ones(50), ctx)
    z = torch.randn(50, generator=keyed_generator("cpu", 3, 7, 1))
    torch.testing.assert_close(xi, z * 7 ** (-GAMMA / 2), rtol=1e-6, atol=0)
    assert torch.equal(pert.term(torch.zeros(50), torch.ones(50), ctx), xi)
    assert not torch.equal(pert.term(torch.zeros(50), torch.ones(50),
                                     Context(step=8, seed=3, index=1)), xi)
    assert torch.equal(pert.term(torch.zeros(9), torch.zeros(9), ctx), torch.zeros(9))


def test_variant_id_parses():
    v = parse_variant("annealrel-l1.0")
    assert (v.perturbation, v.quantum_weight, v.canonical) == ("annealrel", 1.0,
                                                               "annealrel-l1.0")
    with pytest.raises(ValueError, match="needs a weight"):
        parse_variant("annealrel")


def _direct(thetas, steps, *, lr, lam, seed, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
            scale=1.0):
    """The update written out in float64, tensor by tensor: g' = g + λ·s_t·z with
    s_t = RMS(g)·t^(−γ/2), z keyed on (seed, t, tensor index); then AdamW on g'."""
    b1, b2 = betas
    th = [t.detach().clone() for t in thetas]
    m = [torch.zeros_like(t) for t in th]
    v = [torch.zeros_like(t) for t in th]
    for t in range(1, steps + 1):
        for i, g in enumerate(_grads(thetas, t - 1, scale)):
            z = torch.randn(g.shape, generator=keyed_generator("cpu", seed, t, i),
                            dtype=g.dtype)
            g = g + lam * z * g.pow(2).mean().sqrt() * t ** (-GAMMA / 2)
            th[i] = th[i] * (1 - lr * weight_decay)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            u = (m[i] / (1 - b1 ** t)) / ((v[i] / (1 - b2 ** t)).sqrt() + eps)
            th[i] = th[i] - lr * u
    return th


@pytest.mark.parametrize("path", list(PATHS))
def test_every_eager_path_equals_the_formula(path, on_path):
    params = _params()
    opt = SuperpositionalAdamW(params, lr=0.05, perturbation="annealrel", quantum_weight=0.7,
                               seed=11, **on_path(path))
    _run(opt, params, 6)
    for got, want in zip(params, _direct(_params(), 6, lr=0.05, lam=0.7, seed=11)):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("path", list(PATHS))
def test_resume_from_a_state_dict_is_bit_identical(path, on_path):
    """A run stopped after 3 steps and resumed from its state_dict (a fresh optimizer: the
    noise is keyed, nothing else needs storing) equals the uninterrupted run bit for bit."""
    a = _params(torch.float32)
    kw = on_path(path)
    opt = SuperpositionalAdamW(a, perturbation="annealrel", quantum_weight=1.0, seed=5, **kw)
    _run(opt, a, 3)
    b = [p.detach().clone().requires_grad_() for p in a]
    resumed = SuperpositionalAdamW(b, perturbation="sin", seed=0, **kw)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    _run(opt, a, 4, start=3)
    _run(resumed, b, 4, start=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_the_update_is_invariant_to_the_loss_scale(scale):
    """g → c·g gives g' → c·g' (s_t ∝ RMS(g)), so AdamW's step is unchanged up to ε: the
    control's size does not depend on the units of the loss (anneal's absolute η does)."""
    ref, scaled = _params(), _params()
    for params, c in ((ref, 1.0), (scaled, scale)):
        opt = SuperpositionalAdamW(params, lr=0.05, perturbation="annealrel",
                                   quantum_weight=1.0, seed=2, eps=0.0)
        _run(opt, params, 8, scale=c)
    for x, y in zip(ref, scaled):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
    # the absolute anneal is not: its noise is the same whatever the gradient's size
    ref, scaled = _params(), _params()
    for params, c in ((ref, 1.0), (scaled, scale)):
        opt = SuperpositionalAdamW(params, lr=0.05, perturbation="anneal", quantum_weight=1.0,
                                   seed=2, eps=0.0)
        _run(opt, params, 8, scale=c)
    assert max(float((x - y).detach().abs().max()) for x, y in zip(ref, scaled)) > 1e-3


def test_lambda_zero_is_adamw():
    a, b = _params(), _params()
    SuperpositionalAdamW(a, perturbation="annealrel", quantum_weight=0.0, seed=1)
    o1 = SuperpositionalAdamW(a, perturbation="annealrel", quantum_weight=0.0, seed=1)
    o2 = torch.optim.AdamW(b, lr=1e-3, weight_decay=0.01)
    _run(o1, a, 5)
    _run(o2, b, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert math.isinf(get_perturbation("annealrel").q_over_g_bound)
