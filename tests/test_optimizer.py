"""SuperpositionalAdamW: equivalences, resume, errors and non-finite gradients."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import qsgd
from qsgd import NonFiniteGradientError, SuperpositionalAdamW
from qsgd.perturbations import available

VARIANTS = [v for v in available() if v != "none"]


def _params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _grads(params, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _groups(params, **over):
    return [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3, "weight_decay": 0.1, **over}]


def _run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(params, t)):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("variant", ["none"] + [(v, 0.0) for v in VARIANTS])
@pytest.mark.parametrize("foreach", [False, True])
def test_equals_torch_adamw_in_float64(variant, weight_decay, foreach):
    """perturbation='none', and every variant with λ = 0, is torch.optim.AdamW exactly."""
    ref = _params()
    ours = [p.detach().clone().requires_grad_() for p in ref]
    torch_opt = torch.optim.AdamW(_groups(ref), lr=1e-2, weight_decay=weight_decay,
                                  betas=(0.8, 0.95), eps=1e-7, foreach=foreach)
    pert, lam = (variant, 0.0) if isinstance(variant, str) else variant
    opt = SuperpositionalAdamW(_groups(ours), lr=1e-2, weight_decay=weight_decay,
                               betas=(0.8, 0.95), eps=1e-7, perturbation=pert,
                               quantum_weight=lam if pert != "none" else 0.5, foreach=foreach)
    _run(torch_opt, ref, 6)
    _run(opt, ours, 6)
    for a, b in zip(ref, ours):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scope", ["all", "first_n"])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_foreach_equals_reference_bit_for_bit_on_cpu(variant, scope, bias_correction, dtype):
    # foreach is the CPU default, so every CPU result must be the reference path's, exactly
    a = _params(dtype)
    b = [p.detach().clone().requires_grad_() for p in a]
    kw = dict(lr=1e-2, quantum_weight=0.5, perturbation=variant, scope=scope, n_qubits=3,
              bias_correction=bias_correction, seed=11)
    o1 = SuperpositionalAdamW(_groups(a), foreach=False, **kw)
    o2 = SuperpositionalAdamW(_groups(b), foreach=True, **kw)
    o3 = SuperpositionalAdamW(_groups([p.detach().clone().requires_grad_() for p in a]), **kw)
    assert all(g["foreach"] is None for g in o3.param_groups)  # the default takes foreach
    for o in (o1, o2):
        o.track_ratio = True
    _run(o1, a, 5)
    _run(o2, b, 5)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    # the diagnostic ratio sums its squared norms in another order: equal to rounding
    assert o1.ratio_history() == pytest.approx(o2.ratio_history(), rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("foreach", [False, True])
def test_resume_from_state_dict_is_bit_identical(variant, foreach):
    """Noise is keyed on (seed, step, tensor), so save → load → continue equals never stopping."""
    kw = dict(lr=1e-2, perturbation=variant, quantum_weight=0.5, seed=5, foreach=foreach)
    a = _params(torch.float32)
    o1 = SuperpositionalAdamW(_groups(a), **kw)
    _run(o1, a, 8)

    b = _params(torch.float32)
    o2 = SuperpositionalAdamW(_groups(b), **kw)
    _run(o2, b, 3)
    saved_params = [p.detach().clone() for p in b]
    saved_state = copy.deepcopy(o2.state_dict())

    c = [p.clone().requires_grad_() for p in saved_params]
    o3 = SuperpositionalAdamW(_groups(c), **kw)
    o3.load_state_dict(saved_state)
    _run(o3, c, 5, start=3)
    for x, y in zip(a, c):
        assert torch.equal(x, y)


def test_flat_cpu_path_keeps_the_per_parameter_state_layout():
    """The flat CPU path keeps its moments in one buffer whose slices are the state tensors:
    state_dict shows the usual per-parameter layout, and a state tensor replaced by the user
    (or by load_state_dict) is picked up, not silently ignored."""
    a = _params(torch.float32)
    b = [p.detach().clone().requires_grad_() for p in a]
    kw = dict(lr=1e-2, quantum_weight=0.5, seed=2)
    flat, ref = SuperpositionalAdamW(_groups(a), **kw), SuperpositionalAdamW(_groups(b),
                                                                            foreach=False, **kw)
    _run(flat, a, 3)
    _run(ref, b, 3)
    for p, q in zip(a, b):
        assert flat.state[p]["exp_avg"].shape == p.shape
        assert torch.equal(flat.state[p]["exp_avg"], ref.state[q]["exp_avg"])
        assert torch.equal(flat.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])
    # the user resets one moment in place and replaces another: both take effect
    flat.state[a[0]]["exp_avg"].zero_()
    ref.state[b[0]]["exp_avg"].zero_()
    flat.state[a[2]]["exp_avg_sq"] = torch.full_like(a[2], 0.25)
    ref.state[b[2]]["exp_avg_sq"] = torch.full_like(b[2], 0.25)
    _run(flat, a, 2, start=3)
    _run(ref, b, 2, start=3)
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("variant", ["sin", "gauss", "anneal", "anti"])
def test_lockstep_copies_stay_identical(variant):
    """Two optimizers, the second built from the first's state_dict mid-run, move in lockstep."""
    a = _params(torch.float32)
    b = [p.detach().clone().requires_grad_() for p in a]
    o1 = SuperpositionalAdamW(_groups(a), perturbation=variant, seed=3)
    _run(o1, a, 2)
    with torch.no_grad():
        for x, y in zip(a, b):
            y.copy_(x)
    o2 = SuperpositionalAdamW(_groups(b), perturbation=variant, seed=3)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))
    for t in range(2, 6):
        _run(o1, a, 1, start=t)
        _run(o2, b, 1, start=t)
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_seed_changes_noise_and_deterministic_variants_ignore_it():
    for variant, should_differ in [("gauss", True), ("sin", False)]:
        runs = []
        for seed in (0, 1):
            p = _params(torch.float32)
            opt = SuperpositionalAdamW(p, perturbation=variant, seed=seed)
            _run(opt, p, 2)
            runs.append(p)
        same = all(torch.equal(x, y) for x, y in zip(*runs))
        assert same is not should_differ


def test_state_holds_only_two_moment_buffers():
    """Memory: no persistent buffers beyond AdamW's m and v, for every variant."""
    for variant in VARIANTS:
        p = _params(torch.float32)
        opt = SuperpositionalAdamW(p, perturbation=variant)
        _run(opt, p, 2)
        for q in p:
            st = opt.state[q]
            tensors = [k for k, v in st.items() if isinstance(v, torch.Tensor)]
            assert sorted(tensors) == ["exp_avg", "exp_avg_sq"], (variant, st.keys())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1e-3), "invalid lr: -0.001"),
        (dict(quantum_weight=-0.5), "invalid quantum_weight: -0.5"),
        (dict(betas=(1.0, 0.999)), "invalid betas[0]: 1.0"),
        (dict(betas=(0.9, -0.1)), "invalid betas[1]: -0.1"),
        (dict(betas=(0.9,)), "invalid betas: (0.9,)"),
        (dict(eps=-1.0), "invalid eps: -1.0"),
        (dict(weight_decay=-0.1), "invalid weight_decay: -0.1"),
        (dict(scope="first4"), "invalid scope: 'first4' (valid scopes: all, first_n)"),
        (dict(n_qubits=0), "invalid n_qubits: 0"),
        (dict(n_qubits=2.5), "invalid n_qubits: 2.5"),
        (dict(perturbation="sine"), "unknown perturbation 'sine'; valid perturbations: anneal,"),
        (dict(nonfinite="ignore"), "invalid nonfinite: 'ignore'"),
        (dict(seed="a"), "invalid seed: 'a'"),
    ],
)
def test_invalid_hyperparameters_name_argument_and_value(kwargs, message):
    with pytest.raises(ValueError) as err:
        SuperpositionalAdamW(_params(), **kwargs)
    assert message in str(err.value)


def test_invalid_group_override_is_caught():
    p = _params()
    with pytest.raises(ValueError, match=r"invalid quantum_weight: -1"):
        SuperpositionalAdamW([{"params": p[:1]}, {"params": p[1:], "quantum_weight": -1}])


def test_constructor_defaults_are_hyper_defaults():
    """qsgd.hyper.DEFAULTS is what the reports and theory checks read as the optimizer's
    defaults (ε, β): it must be the constructor's."""
    import inspect

    from qsgd.hyper import DEFAULTS

    sig = inspect.signature(SuperpositionalAdamW).parameters
    shared = {k: sig[k].default for k in DEFAULTS if k in sig}
    assert shared == {k: DEFAULTS[k] for k in shared} and {"eps", "betas"} <= set(shared)


def test_unknown_variant_lists_valid_ids():
    with pytest.raises(ValueError, match=r"unknown variant 'sinus-l0.5'; valid ids: adamw, anneal"):
        qsgd.parse_variant("sinus-l0.5")
    with pytest.raises(ValueError, match=r"needs a weight"):
        qsgd.parse_variant("sin")


def test_parse_variant_ids():
    v = qsgd.parse_variant("sin-l0.5-first4")
    assert (v.perturbation, v.quantum_weight, v.scope, v.n_qubits) == ("sin", 0.5, "first_n", 4)
    assert qsgd.parse_variant("adamw").optimizer_kwargs()["quantum_weight"] == 0.0
    assert qsgd.parse_variant("anneal").quantum_weight == 1.0
    assert qsgd.parse_variant("gauss-l0.05").quantum_weight == 0.05


@pytest.mark.parametrize("foreach", [False, True])
def test_nonfinite_gradient_raises_with_name_and_keeps_state(foreach):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = SuperpositionalAdamW(list(model.named_parameters()), foreach=foreach)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    params_before = [p.detach().clone() for p in model.parameters()]
    model[0].bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"'0.bias'.*no parameter or optimizer"):
        opt.step()
    for p, q in zip(model.parameters(), params_before):
        assert torch.equal(p, q)
    after = opt.state_dict()
    for k in before["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(before["state"][k][name], after["state"][k][name])
        assert before["state"][k]["step"] == after["state"][k]["step"]


def test_nonfinite_skip_counts_and_survives_resume():
    p = _params(torch.float32)
    opt = SuperpositionalAdamW(p, nonfinite="skip")
    _run(opt, p, 1)
    snapshot = [x.detach().clone() for x in p]
    for x in p:
        x.grad = torch.zeros_like(x)
    p[2].grad.view(-1)[3] = float("inf")
    with pytest.warns(RuntimeWarning, match="step skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(p, snapshot))
    assert opt.state[p[0]]["step"] == 1
    opt2 = SuperpositionalAdamW(_params(torch.float32), nonfinite="skip")
    opt2.load_state_dict(opt.state_dict())
    assert opt2.skipped_steps == 1


def test_first_n_touches_only_the_first_entries():
    a = _params()
    b = [p.detach().clone().requires_grad_() for p in a]
    o1 = SuperpositionalAdamW(a, quantum_weight=0.0)
    o2 = SuperpositionalAdamW(b, quantum_weight=0.7, scope="first_n", n_qubits=4)
    _run(o1, a, 3)
    _run(o2, b, 3)
    for x, y in zip(a, b):
        assert torch.equal(x.view(-1)[4:], y.view(-1)[4:])
        if x.numel() > 0:
            assert not torch.equal(x.view(-1)[:4], y.view(-1)[:4])


def test_track_ratio_matches_hand_computation():
    p = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64, requires_grad=True)
    opt = SuperpositionalAdamW([p], lr=0.1, quantum_weight=0.5, weight_decay=0.0,
                               track_ratio=True)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    q = torch.sin(math.pi * theta) * g
    adam = (0.1 * g / 0.1) / ((0.001 * g * g / 0.001).sqrt() + 1e-8)
    expected = float((0.5 * q).norm() / adam.norm())
    assert opt.perturbation_ratio() == pytest.approx(expected, rel=1e-12)


def test_closure_and_param_without_grad():
    w = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(2))
    opt = SuperpositionalAdamW([w, unused])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == 3.0
    assert len(opt.state[unused]) == 0
    assert torch.all(w < 1)


@pytest.mark.parametrize("variant", ["none"] + VARIANTS)
def test_every_variant_lowers_a_regression_loss_in_float32(variant):
    """A small two-layer regression model, fixed seed, 60 steps: the loss must fall by half."""
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(128, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    lam = 1.0 if variant == "anneal" else 0.5
    opt = SuperpositionalAdamW(model.parameters(), lr=1e-2, perturbation=variant,
                               quantum_weight=lam, seed=1)
    loss_fn = torch.nn.MSELoss()
    first = float(loss_fn(model(x), y))
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    last = float(loss_fn(model(x), y))
    assert last < 0.5 * first, (variant, first, last)


@pytest.mark.parametrize("foreach", [False, True])
def test_huge_finite_gradients_are_not_mistaken_for_nonfinite(foreach):
    # the flat CPU path checks one float64 sum per group; a sum that overflows to inf must fall
    # back to the exact check instead of raising
    p = [torch.zeros(4, dtype=torch.float64, requires_grad=True),
         torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    opt = SuperpositionalAdamW(p, foreach=foreach, lr=0.1)
    p[0].grad = torch.full((4,), 1e308, dtype=torch.float64)
    p[1].grad = torch.full((3,), 1e308, dtype=torch.float64)
    opt.step()
    assert opt.state[p[0]]["step"] == 1 and opt.skipped_steps == 0
    assert torch.allclose(opt.state[p[1]]["exp_avg"], torch.full((3,), 1e307, dtype=torch.float64))


@pytest.mark.parametrize("kw", [dict(foreach=False), dict(scope="first_n"), {}],
                         ids=["reference", "foreach", "flat"])
def test_a_zero_size_parameter_steps_on_every_path(kw):
    """Before: the non-finite check took the infinity norm of an empty gradient, which torch
    refuses, on every path but the flat one. An empty tensor has nothing to check or update."""
    p = [torch.zeros(0, requires_grad=True), torch.ones(3, requires_grad=True)]
    opt = SuperpositionalAdamW(p, lr=0.1, **kw)
    for x in p:
        x.grad = torch.ones_like(x)
    opt.step()
    assert opt.state[p[0]]["step"] == 1 and torch.all(p[1] < 1)


def test_sparse_gradients_are_rejected_with_the_parameter_name():
    # complex parameters are supported (their real view; tests/test_contracts.py)
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = SuperpositionalAdamW(list(emb.named_parameters()))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"sparse gradients \('weight'\)"):
        opt.step()


@pytest.mark.parametrize("variant", ["anneal", "sin-l0.5"])
def test_step_never_writes_into_the_gradient(variant):
    # one tensor in the group: the flat path's concatenation must still be a copy
    p = torch.randn(6, requires_grad=True)
    opt = SuperpositionalAdamW([p], **qsgd.parse_variant(variant).optimizer_kwargs())
    p.grad = torch.randn(6)
    g = p.grad.clone()
    opt.step()
    assert torch.equal(p.grad, g)


# ---------------------------------------------------------------------------------------------
# validation at every entry (issue 13, item 8): one line naming the key, before anything changes

@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=math.inf), "invalid eps: inf (must be a finite number >= 0)"),
        (dict(weight_decay=math.inf), "invalid weight_decay: inf (must be a finite number >= 0)"),
        (dict(bias_correction="no"), "invalid bias_correction: 'no' (must be True or False)"),
        (dict(foreach="yes"), "invalid foreach: 'yes' (must be True, False or None)"),
        (dict(fused=1), "invalid fused: 1 (must be True, False or None)"),
        (dict(amsgrad=None), "invalid amsgrad: None (must be True or False)"),
        (dict(maximize="True"), "invalid maximize: 'True' (must be True or False)"),
        (dict(track_ratio="on"), "invalid track_ratio: 'on' (must be True or False)"),
        (dict(lr=torch.tensor([1e-3, 1e-3])),
         "invalid lr: a Tensor of shape (2,) (a Tensor lr must have exactly one element)"),
        (dict(lr=torch.tensor(-1.0)), "invalid lr: tensor(-1.) (must be a finite number >= 0)"),
        (dict(betas=(0.9, True)), "invalid betas[1]: True (must be a number in [0, 1))"),
    ],
)
def test_more_invalid_hyperparameters_name_argument_and_value(kwargs, message):
    with pytest.raises(ValueError) as err:
        SuperpositionalAdamW(_params(), **kwargs)
    assert str(err.value) == message


def test_add_param_group_validates_before_appending():
    """Before: the bad group was appended anyway and the next step moved p *up* the gradient."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = SuperpositionalAdamW([a], perturbation="none")
    with pytest.raises(ValueError, match=r"^param group 1: invalid lr: -1 \(must be a finite"):
        opt.add_param_group({"params": [b], "lr": -1})
    assert len(opt.param_groups) == 1
    b.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and len(opt.state) == 0
    opt.add_param_group({"params": [b], "lr": 0.1})  # a good group still goes in
    opt.step()
    assert torch.all(b < 1)


@pytest.mark.parametrize("key, value, message", [
    ("lr", -1, "invalid lr: -1 (must be a finite number >= 0)"),
    ("eps", math.inf, "invalid eps: inf (must be a finite number >= 0)"),
    ("scope", "first4", "invalid scope: 'first4' (valid scopes: all, first_n)"),
    ("foreach", "yes", "invalid foreach: 'yes' (must be True, False or None)"),
    ("capturable", True, "capturable=True is not supported by SuperpositionalAdamW"),
])
def test_load_state_dict_revalidates_and_changes_nothing_on_error(key, value, message):
    p = _params(torch.float32)
    opt = SuperpositionalAdamW(_groups(p))
    _run(opt, p, 2)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][1][key] = value
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(sd)
    assert str(err.value).startswith(f"loaded state_dict param group 1: {message}")
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for k in before["state"]:
        assert torch.equal(before["state"][k]["exp_avg"], after["state"][k]["exp_avg"])


def test_load_state_dict_validates_the_qsgd_settings():
    p = _params(torch.float32)
    opt = SuperpositionalAdamW(p)
    sd = opt.state_dict()
    sd["qsgd"]["nonfinite"] = "ignore"
    with pytest.raises(ValueError, match=r"^loaded state_dict: invalid nonfinite: 'ignore'"):
        opt.load_state_dict(sd)
    assert opt.nonfinite == "raise"


def test_settings_round_trip_through_state_dict():
    p = _params(torch.float32)
    opt = SuperpositionalAdamW(p, nonfinite="skip", track_ratio=True)
    opt2 = SuperpositionalAdamW(_params(torch.float32))
    opt2.load_state_dict(opt.state_dict())
    assert (opt2.nonfinite, opt2.track_ratio, opt2.skipped_steps) == ("skip", True, 0)


@pytest.mark.parametrize("nonfinite", ["raise", "skip", "off"])
def test_meta_parameters_step_without_reading_values(nonfinite):
    """Before: nonfinite='raise' on a meta model raised torch's `.item()` error. Meta tensors
    hold no values, so the check skips them and the step runs (shapes only), as AdamW's does."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(),
                                    torch.nn.Linear(3, 1))
    opt = SuperpositionalAdamW(model.parameters(), nonfinite=nonfinite)
    with torch.device("meta"):
        for q in model.parameters():
            q.grad = torch.rand_like(q)
    opt.step()
    assert len(opt.state) == 4
    assert all(s["exp_avg"].is_meta and s["step"] == 1 for s in opt.state.values())


# ---------------------------------------------------------------------------------------------
# a property of the method: the term is in raw gradient units (README, "When the term dominates")

def _convex_run(opt_cls, seeds, scale=1.0, steps=20, **kw):
    """torch's convex test problem, one draw per seed, stepped as one batch (the optimizer is
    elementwise and the losses separate, so each draw steps exactly as its own run would):
    the draws and the loop are theory T9's (theory.invariance)."""
    from theory.invariance import run_draws, torch_convex_problem

    problem = torch_convex_problem(seeds)
    r = run_draws(problem.params, problem.loss, lambda ps: opt_cls(ps, lr=1e-3, **kw),
                  scale=scale, steps=steps)
    return r.first, r.last, r.opt


def test_when_the_term_dominates_sin_can_climb_a_convex_loss():
    """λ·sin(πθ)·g is in gradient units while Adam's step is normalised: at large gradients the
    term dominates and climbs where sin(πθ) < 0, so the method is not invariant to rescaling the
    loss. Measured on torch's convex problem, lr 1e-3, 20 steps, seeds 0-199 (torch 2.13 CPU):
    sin-l0.5 fails to lower the loss in 24 of 200 draws, AdamW in none; seed 26 goes
    141.86 -> 156.09. The paper's rule stays the default; this test pins the property."""
    seeds = range(200)
    first, last, _ = _convex_run(SuperpositionalAdamW, seeds, perturbation="sin",
                                 quantum_weight=0.5)
    climbs = int((last >= first).sum())
    _, last_adamw, _ = _convex_run(torch.optim.AdamW, seeds)
    assert int((last_adamw >= first).sum()) == 0
    assert 15 <= climbs <= 35, climbs  # 24 measured; the band allows other kernels' rounding
    assert float(first[26]) == pytest.approx(141.86, abs=0.01)
    assert float(last[26]) == pytest.approx(156.09, abs=0.05)
    # scale the same loss down 100-fold: the term no longer dominates, every draw goes down
    first_s, last_s, _ = _convex_run(SuperpositionalAdamW, seeds, scale=0.01)
    assert int((last_s >= first_s).sum()) == 0


def test_track_ratio_warns_once_when_the_term_dominates():
    with pytest.warns(RuntimeWarning, match=r"dominates the Adam step: .* = [0-9.]+ > 1") as rec:
        _, _, opt = _convex_run(SuperpositionalAdamW, [26], track_ratio=True)
    assert sum("dominates" in str(r.message) for r in rec) == 1
    assert max(opt.ratio_history()) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a term that stays small never warns
        _convex_run(SuperpositionalAdamW, [26], scale=1e-4, track_ratio=True)
