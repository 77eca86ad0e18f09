"""torch.optim's generic optimizer contracts, for every variant of SuperpositionalAdamW.

The contracts are those torch's own generic tests check for its optimizers (``TestOptimRenewed``
in torch's test/test_optim.py, driven by ``OptimizerInfo`` tables of inputs): the loss goes the
right way on a small convex problem, a state_dict round trip continues bit for bit, the hooks
fire in order, deepcopy and pickle keep every setting, param groups keep their own lr and weight
decay, a zero gradient is a no-op, and complex parameters are their real view. The table
:data:`INPUTS` holds one entry per registered perturbation (so a new one is picked up by name)
plus the flags users pass to ``torch.optim.AdamW``; every generic test runs over all of it and
over both implementations (per-tensor reference and the default foreach/flat path).

Each entry's properties are stated on it, not in the tests: a variant that is not elementwise
(its term depends on the whole tensor) or draws noise cannot split a complex tensor into two
real ones; ``anneal`` adds noise to the gradient, so a zero gradient still moves the parameters
(``annealrel``'s noise is relative to the gradient: none at a zero gradient).
"""

from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import StepLR
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from qsgd import SuperpositionalAdamW
from qsgd.perturbations import available, perturbation_class


@dataclass(frozen=True)
class OptimInput:
    """One optimizer configuration and the contract properties it has."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the term is elementwise in (θ_i, g_i), deterministic and on every coordinate: a complex
    #: tensor equals its real and imaginary parts as two separate real tensors
    splits_complex: bool = True
    #: zero gradients (weight decay 0) leave the parameters unchanged
    zero_grad_noop: bool = True


def _variant_input(name: str) -> OptimInput:
    cls = perturbation_class(name)
    lam = 1.0 if name == "anneal" else 0.5
    return OptimInput(
        f"{name}-l{lam:g}", dict(perturbation=name, quantum_weight=lam),
        splits_complex=cls.elementwise and not cls.stochastic,
        # gradient-kind noise moves a parameter whose gradient is 0, unless its σ is relative
        # to the gradient (annealrel: σ ∝ RMS(g) = 0)
        zero_grad_noop=cls.kind != "gradient" or name == "annealrel")


INPUTS = [_variant_input(name) for name in available()] + [
    OptimInput("sin-l0.5-first4", dict(quantum_weight=0.5, scope="first_n", n_qubits=4),
               splits_complex=False),
    OptimInput("sin-l0.5-amsgrad", dict(amsgrad=True)),
    OptimInput("sin-l0.5-maximize", dict(maximize=True)),
    OptimInput("sin-l0.5-no-bias-correction", dict(bias_correction=False)),
    OptimInput("sin-l0.5-tensor-lr", dict(lr=torch.tensor(1e-3, dtype=torch.float64))),
    OptimInput("gauss-l0.5-amsgrad-maximize", dict(perturbation="gauss", amsgrad=True,
                                                   maximize=True), splits_complex=False),
]
IMPLS = {"reference": dict(foreach=False), "default": {}}


def _kwargs(inp: OptimInput, impl: str, **over) -> dict[str, Any]:
    kw = {**inp.kwargs, **IMPLS[impl], **over}
    if isinstance(kw.get("lr"), torch.Tensor):
        kw["lr"] = kw["lr"].clone()  # a fresh Tensor lr per optimizer (schedulers mutate it)
    return kw


table = pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.id)
impls = pytest.mark.parametrize("impl", list(IMPLS))


def _problem(seed=0, contiguous=True, dtype=torch.float32):
    """torch's convex test problem: loss = ((W x + b)²).sum(), W (10, 5), b (10), x (5)."""
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        w = torch.randn(10, 5, generator=g, dtype=dtype)
        b = torch.randn(10, generator=g, dtype=dtype)
    else:  # every second entry of a larger tensor
        w = torch.randn(10, 5, 2, generator=g, dtype=dtype)[..., 0]
        b = torch.randn(10, 2, generator=g, dtype=dtype)[..., 0]
    x = torch.randn(5, generator=g, dtype=dtype)
    return torch.nn.Parameter(w), torch.nn.Parameter(b), x


def _loss(w, b, x, scale=0.01):
    """The problem's loss times ``scale``. The default 0.01 brings the gradients to order 1,
    where the term is a perturbation of Adam's step; at torch's scale (1) the raw-gradient term
    can dominate and climb (a property of the method: test_when_the_term_dominates)."""
    return (w.mv(x) + b).pow(2).sum() * scale


def _value(w, b, x, scale=0.01):
    with torch.no_grad():
        return float(_loss(w, b, x, scale))


def _train(opt, w, b, x, steps, scheduler=None):
    for _ in range(steps):
        opt.zero_grad()
        _loss(w, b, x).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _assert_same(a, b, path="state_dict"):
    """Nested equality of state_dicts: tensors bit for bit, everything else by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, a.keys(), b.keys())
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


# ---------------------------------------------------------------------------------------------
# the generic contracts, over the whole table

@table
@impls
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("with_scheduler", [False, True])
def test_goes_right_direction(inp, impl, contiguous, with_scheduler):
    w, b, x = _problem(contiguous=contiguous)
    opt = SuperpositionalAdamW([w, b], **_kwargs(inp, impl))
    sched = StepLR(opt, step_size=5, gamma=0.5) if with_scheduler else None
    first = _value(w, b, x)
    _train(opt, w, b, x, 20, sched)
    last = _value(w, b, x)
    if opt.defaults["maximize"]:
        assert last > first, (first, last)
    else:
        assert last < first, (first, last)


@table
@impls
def test_state_dict_round_trip_is_deterministic(inp, impl):
    """Prime, copy the state into a new optimizer on equal (not identical) parameters, run both:
    they move in lockstep, their state_dicts stay equal, and the state_dict survives
    ``torch.save``/``torch.load(weights_only=True)`` unchanged."""
    w, b, x = _problem()
    opt = SuperpositionalAdamW([w, b], **_kwargs(inp, impl))
    _train(opt, w, b, x, 5)
    w2, b2 = (torch.nn.Parameter(t.detach().clone()) for t in (w, b))
    opt2 = SuperpositionalAdamW([w2, b2], **_kwargs(inp, impl))
    saved = copy.deepcopy(opt.state_dict())
    opt2.load_state_dict(saved)
    _assert_same(saved, opt.state_dict())  # loading did not modify what it was given
    for _ in range(5):
        _train(opt, w, b, x, 1)
        _train(opt2, w2, b2, x, 1)
        assert torch.equal(w, w2) and torch.equal(b, b2)
    _assert_same(opt.state_dict(), opt2.state_dict())
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    _assert_same(opt.state_dict(), torch.load(buf, weights_only=True))


@table
def test_can_load_a_state_dict_without_the_flags_added_later(inp):
    """A state_dict lacking keys (an older qsgd, or torch's AdamW) loads and steps: missing keys
    take this optimizer's defaults, as torch does for flags it added later."""
    w, b, x = _problem()
    opt = SuperpositionalAdamW([w, b], **_kwargs(inp, "default"))
    _train(opt, w, b, x, 3)
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        for key in ("foreach", "fused", "amsgrad", "maximize", "capturable", "differentiable",
                    "scope", "n_qubits", "seed", "bias_correction", "quantum_weight",
                    "perturbation"):
            group.pop(key, None)
    del old["qsgd"]
    opt.load_state_dict(old)
    assert opt.param_groups[0]["scope"] == opt.defaults["scope"]
    _train(opt, w, b, x, 1)
    assert all(s["step"] == 4 for s in opt.state.values())


@table
def test_step_and_state_dict_hooks_fire_in_order(inp):
    w, b, x = _problem()
    opt = SuperpositionalAdamW([w, b], **_kwargs(inp, "default"))
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda *a: calls.append(0)),
        register_optimizer_step_post_hook(lambda *a: calls.append(3)),
        opt.register_step_pre_hook(lambda *a: calls.append(1)),
        opt.register_step_post_hook(lambda *a: calls.append(2)),
    ]
    try:
        _train(opt, w, b, x, 2)
    finally:
        for h in handles:
            h.remove()
    _train(opt, w, b, x, 1)
    assert calls == [0, 1, 2, 3] * 2

    def sd_post(o, sd):
        sd["seen_by_post_hook"] = "qsgd" in sd or "not yet"
        return sd

    opt.register_state_dict_pre_hook(lambda o: calls.append("sd-pre"))
    opt.register_state_dict_post_hook(sd_post)
    sd = opt.state_dict()
    assert calls[-1] == "sd-pre" and "seen_by_post_hook" in sd and "qsgd" in sd

    def load_pre(o, sd):
        sd = copy.deepcopy(sd)
        sd["param_groups"][0]["lr"] = 0.003
        return sd

    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.003 and calls[-1] == "load-post"


@table
def test_deepcopy_and_pickle_keep_every_setting(inp):
    w, b, x = _problem()
    opt = SuperpositionalAdamW([w, b], nonfinite="skip", track_ratio=True,
                               **_kwargs(inp, "default"))
    _train(opt, w, b, x, 2)
    w.grad = torch.full_like(w, float("nan"))
    with pytest.warns(RuntimeWarning, match="step skipped"):
        opt.step()
    public = {k for k in opt.__dict__ if not k.startswith("_")}
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert {k for k in clone.__dict__ if not k.startswith("_")} == public
        assert (clone.nonfinite, clone.track_ratio, clone.skipped_steps) == ("skip", True, 1)
        assert clone.ratio_history() == opt.ratio_history()
        clone.zero_grad()
        clone.step()  # no gradients: nothing to do, but it must not fail on the copy
    # a deep copy with its own parameters continues exactly as the original
    model_a = torch.nn.Linear(5, 10)
    opt_a = SuperpositionalAdamW(model_a.parameters(), **_kwargs(inp, "default"))
    model_a(x).pow(2).sum().backward()
    opt_a.step()
    model_b, opt_b = copy.deepcopy((model_a, opt_a))
    for model, o in ((model_a, opt_a), (model_b, opt_b)):
        for _ in range(3):
            o.zero_grad()
            model(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


@table
def test_param_groups_keep_their_own_lr_and_weight_decay(inp):
    w, b, x = _problem()
    frozen = torch.nn.Parameter(torch.randn(2))
    before = frozen.detach().clone()
    kw = _kwargs(inp, "default")
    group_kw = {"lr": kw.pop("lr", 1e-3)}
    opt = SuperpositionalAdamW([{"params": [w], **group_kw},
                                {"params": [b], "weight_decay": 0.0, **group_kw},
                                {"params": [frozen]}], **kw, lr=1e-28)
    first = _value(w, b, x)
    for _ in range(20):
        opt.zero_grad()
        _loss(w, b, x).backward()
        frozen.grad = torch.rand_like(frozen)
        opt.step()
    last = _value(w, b, x)
    assert (last > first) if opt.defaults["maximize"] else (last < first)
    assert torch.equal(frozen, before)  # lr 1e-28: no visible change, decay included


@table
@impls
def test_zero_gradient_is_a_no_op_and_no_gradient_no_state(inp, impl):
    p = torch.nn.Parameter(torch.randn(5, 1))
    before = p.detach().clone()
    opt = SuperpositionalAdamW([p], **_kwargs(inp, impl, weight_decay=0.0))
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p, before) is inp.zero_grad_noop
    q = torch.nn.Parameter(torch.randn(3))
    opt = SuperpositionalAdamW([q], **_kwargs(inp, impl))
    assert opt.step(lambda: 7.0) == 7.0 and len(opt.state) == 0
    assert repr(opt).startswith("SuperpositionalAdamW (")


@table
@impls
def test_complex_parameters_are_their_real_view(inp, impl):
    """A complex tensor steps exactly as its ``view_as_real`` would (AdamW's convention), mixed
    with a real tensor in the same group, on every path."""
    g = torch.Generator().manual_seed(3)
    cplx = [torch.randn(10, 5, dtype=torch.complex64, generator=g).requires_grad_(),
            torch.randn(10, dtype=torch.complex64, generator=g).requires_grad_(),
            torch.randn(4, 3, generator=g).requires_grad_()]
    real = [(torch.view_as_real(p) if p.is_complex() else p).detach().clone().requires_grad_()
            for p in cplx]
    oc = SuperpositionalAdamW(cplx, **_kwargs(inp, impl))
    orl = SuperpositionalAdamW(real, **_kwargs(inp, impl))
    for _ in range(3):
        for pc, pr in zip(cplx, real):
            pr.grad = torch.randn(pr.shape, generator=g)
            pc.grad = torch.view_as_complex(pr.grad) if pc.is_complex() else pr.grad.clone()
        oc.step()
        orl.step()
        for pc, pr in zip(cplx, real):
            assert torch.equal(torch.view_as_real(pc) if pc.is_complex() else pc, pr)
    assert oc.state[cplx[0]]["exp_avg"].dtype == torch.complex64  # state keeps the layout


@pytest.mark.parametrize("inp", [i for i in INPUTS if i.splits_complex], ids=lambda i: i.id)
def test_complex_tensor_equals_its_real_and_imaginary_parts(inp):
    """torch's test_complex_2d: a complex tensor optimised on a complex loss steps as its real
    and imaginary parts held as two real tensors (elementwise, deterministic terms only)."""
    def rosenbrock(t):
        x, y = t
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    a = torch.randn(2, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    a = a.requires_grad_()
    re, im = a.real.detach().clone().requires_grad_(), a.imag.detach().clone().requires_grad_()
    o1 = SuperpositionalAdamW([a], **_kwargs(inp, "default"))
    o2 = SuperpositionalAdamW([re, im], **_kwargs(inp, "default"))
    for _ in range(5):
        o1.zero_grad()
        o2.zero_grad()
        rosenbrock(a).abs().backward()
        rosenbrock(torch.complex(re, im)).abs().backward()
        o1.step()
        o2.step()
        torch.testing.assert_close(a.real, re, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.imag, im, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("inp", [i for i in INPUTS if "lr" not in i.kwargs], ids=lambda i: i.id)
def test_tensor_lr_equals_float_lr(inp):
    runs = []
    for lr in (1e-3, torch.tensor(1e-3, dtype=torch.float64)):  # the same number
        w, b, x = _problem()
        opt = SuperpositionalAdamW([w, b], **_kwargs(inp, "default", lr=lr))
        _train(opt, w, b, x, 5)
        runs.append((w, b))
    assert all(torch.equal(p, q) for p, q in zip(*runs))


@table
def test_state_is_not_empty_after_a_step_and_holds_the_documented_buffers(inp):
    model = torch.nn.Linear(5, 5)
    opt = SuperpositionalAdamW(model.parameters(), **_kwargs(inp, "default"))
    model(torch.rand(2, 5)).sum().backward()
    opt.step()
    expected = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if
                                                     opt.defaults["amsgrad"] else set())
    assert all(set(s) == expected for s in opt.state.values()) and len(opt.state) == 2


# ---------------------------------------------------------------------------------------------
# AdamW compatibility: flags, a state_dict from torch.optim.AdamW

@pytest.mark.parametrize("flags", [dict(amsgrad=True), dict(maximize=True),
                                   dict(amsgrad=True, maximize=True, weight_decay=0.1)],
                         ids=["amsgrad", "maximize", "amsgrad-maximize"])
@pytest.mark.parametrize("foreach", [False, True])
def test_amsgrad_and_maximize_equal_torch_adamw_in_float64(flags, foreach):
    ref = [torch.randn(7, 3, dtype=torch.float64, requires_grad=True),
           torch.randn(4, dtype=torch.float64, requires_grad=True)]
    ours = [p.detach().clone().requires_grad_() for p in ref]
    t_opt = torch.optim.AdamW(ref, lr=1e-2, foreach=foreach, **flags)
    q_opt = SuperpositionalAdamW(ours, lr=1e-2, perturbation="none", foreach=foreach, **flags)
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        for a, b in zip(ref, ours):
            a.grad = torch.randn(a.shape, generator=g, dtype=a.dtype) * (3.0 if step == 2 else 1)
            b.grad = a.grad.clone()
        t_opt.step()
        q_opt.step()
    for a, b in zip(ref, ours):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


def test_state_dict_of_torch_adamw_loads_and_continues_as_adamw():
    """Before: KeyError 'scope' at the first step. Now the missing qsgd keys take this
    optimizer's defaults and, with perturbation 'none', training continues as AdamW's."""
    ref = [torch.randn(6, 2, dtype=torch.float64, requires_grad=True)]
    ours = [ref[0].detach().clone().requires_grad_()]
    t_opt = torch.optim.AdamW(ref, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, 2, generator=g, dtype=torch.float64) for _ in range(6)]
    for gr in grads[:3]:
        ref[0].grad = gr.clone()
        t_opt.step()
    with torch.no_grad():
        ours[0].copy_(ref[0])
    q_opt = SuperpositionalAdamW(ours, perturbation="none", lr=0.5)
    q_opt.load_state_dict(copy.deepcopy(t_opt.state_dict()))
    assert q_opt.param_groups[0]["lr"] == 1e-2  # the saved hyperparameters win, as in torch
    assert q_opt.param_groups[0]["scope"] == "all"
    for gr in grads[3:]:
        ref[0].grad, ours[0].grad = gr.clone(), gr.clone()
        t_opt.step()
        q_opt.step()
    torch.testing.assert_close(ref[0], ours[0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_unsupported_adamw_flags_say_so(flag):
    p = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(ValueError, match=rf"^{flag}=True is not supported by "
                                         r"SuperpositionalAdamW: .+"):
        SuperpositionalAdamW(p, **{flag: True})
    SuperpositionalAdamW(p, **{flag: False})  # the AdamW default is accepted


def test_adam_state_dict_with_coupled_weight_decay_is_refused():
    p = torch.nn.Parameter(torch.randn(3))
    sd = torch.optim.Adam([p], weight_decay=0.1).state_dict()
    opt = SuperpositionalAdamW([p])
    with pytest.raises(ValueError, match=r"loaded state_dict param group 0: "
                                         r"decoupled_weight_decay=False is not supported"):
        opt.load_state_dict(sd)


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True) of the step (dynamo with an eager backend here; inductor on CUDA
# in tests/test_integrations.py)

COMPILABLE = [i for i in INPUTS if not perturbation_class(
    i.kwargs.get("perturbation", "sin")).stochastic]


@pytest.mark.parametrize("inp", COMPILABLE, ids=lambda i: i.id)
def test_compiled_step_equals_eager_without_recompiling(inp):
    """Real, non-contiguous and complex parameters; the compiled step (tensor step counts)
    equals the eager one to float32 rounding and traces no new graph after its second call."""
    def make():
        g = torch.Generator().manual_seed(5)
        return [torch.randn(6, 4, generator=g).requires_grad_(),
                torch.randn(6, 2, generator=g)[:, 0].detach().requires_grad_(),  # strided
                torch.randn(5, dtype=torch.complex64, generator=g).requires_grad_()]

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    a, b = make(), make()
    kw = _kwargs(inp, "default", nonfinite="off")
    oa, ob = SuperpositionalAdamW(a, **kw), SuperpositionalAdamW(b, **_kwargs(inp, "default"))
    step = torch.compile(oa.step, fullgraph=True, backend=backend)
    g = torch.Generator().manual_seed(6)
    for t in range(6):
        for p, q in zip(a, b):
            q.grad = torch.randn(q.shape, dtype=q.dtype, generator=g)
            p.grad = q.grad.clone()
        if t == 2:
            n_graphs = len(graphs)
        step()
        ob.step()
    assert len(graphs) == n_graphs <= 2
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert all(isinstance(s["step"], torch.Tensor) and int(s["step"]) == 6
               for s in oa.state.values())
    ob.load_state_dict(oa.state_dict())  # tensor step counts load into an eager optimizer
    ob.step()
    torch._dynamo.reset()


@pytest.mark.parametrize("kwargs, message", [
    (dict(), r"nonfinite='raise' reads one flag on the host each step, which a torch.compile "
             r"graph cannot do: pass nonfinite='off' to compile the step"),
    (dict(nonfinite="off", track_ratio=True), r"track_ratio=True appends to a host list"),
    (dict(nonfinite="off", perturbation="gauss"), r"perturbation 'gauss' draws keyed noise "
                                                  r"from the host step count"),
])
def test_compiled_step_refuses_what_needs_the_host_and_says_what_to_set(kwargs, message):
    p = torch.nn.Parameter(torch.randn(3))
    opt = SuperpositionalAdamW([p], **kwargs)
    p.grad = torch.ones(3)
    torch._dynamo.reset()
    with pytest.raises(Exception, match=message):
        torch.compile(opt.step, fullgraph=True, backend="eager")()
    assert len(opt.state) == 0 or all(int(s["step"]) == 0 for s in opt.state.values())
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# CUDA: every entry's default path (the fused Triton step where it applies, complex parameters
# through their real view, maximize's negated gradients) against the per-tensor reference

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@table
def test_cuda_default_path_equals_the_reference(inp):
    def make():
        g = torch.Generator().manual_seed(8)
        return [torch.randn(64, 33, generator=g).cuda().requires_grad_(),
                torch.randn(7, generator=g).cuda().requires_grad_(),
                torch.randn(5, 3, dtype=torch.complex64, generator=g).cuda().requires_grad_()]

    a, b = make(), make()
    fast = SuperpositionalAdamW(a, **_kwargs(inp, "default", lr=1e-2))
    ref = SuperpositionalAdamW(b, **_kwargs(inp, "reference", lr=1e-2))
    g = torch.Generator().manual_seed(9)
    for _ in range(5):
        for p, q in zip(a, b):
            q.grad = torch.randn(q.shape, dtype=q.dtype, generator=g).cuda()
            p.grad = q.grad.clone()
        fast.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
