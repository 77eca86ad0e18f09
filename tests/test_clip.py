"""``SuperpositionalAdamW.clip_grad_norm_``: torch's gradient clipping, its product with the
gradients moved into the fused CUDA kernel's read of them.

The contract: ``opt.clip_grad_norm_(c); opt.step()`` gives the returned norm of
``torch.nn.utils.clip_grad_norm_(params, c); opt.step()`` bit for bit, and its weights and
moments bit for bit on every path but the fused kernel's, where they agree to a rounding.
On the CPU no product is deferred (torch's function clips); the
deferral's fallbacks are checked here by forcing it (every CPU path then multiplies the
gradients itself, as torch would have). The GPU tests check the kernel's product against
clipping in place, for every fused perturbation, float32 and bfloat16 (float32 under Triton's
CPU interpreter too: tests/test_fused.py).
"""

from __future__ import annotations

import pytest
import torch

from qsgd import SuperpositionalAdamW
from qsgd.fused import FUSED_PERTURBATIONS

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (fused Triton kernels)")
SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (4099,), (64, 33)]


def _params(dtype=torch.float32, device="cpu", shapes=SHAPES):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(s, generator=g) * 0.8).to(dtype=dtype, device=device).requires_grad_()
            for s in shapes]


def _set_grads(params, step, scale=3.0):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(dtype=p.dtype, device=p.device)


def _twins(dtype=torch.float32, device="cpu", **kw):
    a = _params(dtype, device)
    b = [p.detach().clone().requires_grad_() for p in a]
    kw.setdefault("lr", 1e-2)
    kw.setdefault("weight_decay", 0.1)
    return a, SuperpositionalAdamW(a, **kw), b, SuperpositionalAdamW(b, **kw)


def _same(a, oa, b, ob, ulps=0):
    """Weights and moments equal, bit for bit (``ulps`` 0), or to ``ulps`` roundings of the
    dtype relative to each value."""
    def check(x, y, what):
        if ulps == 0:
            assert torch.equal(x, y), (what, float((x.float() - y.float()).abs().max()))
        else:
            # relative to the value, and to the tensor's mean size (a θ near 0 still moves by
            # lr-sized steps, in which a rounding of v shows)
            yy = y.detach().double().abs()
            tol = ulps * torch.finfo(x.dtype).eps * (yy + yy.mean())
            err = (x.detach().double() - y.detach().double()).abs()
            assert bool((err <= tol).all()), (what, float((err - tol).max()))
    for x, y in zip(a, b, strict=True):
        check(x, y, "param")
        for key in ("exp_avg", "exp_avg_sq"):
            check(oa.state[x][key], ob.state[y][key], key)


def _torch_then_own(a, oa, b, ob, steps=3, max_norm=1.0, expect_deferred=None, kernel=False,
                    ulps=0):
    """Steps of (a: the optimizer's clipping) against (b: torch's clipping in place);
    ``kernel``: the fused kernel applies the product (the gradients stay unclipped)."""
    for t in range(steps):
        _set_grads(a, t)
        _set_grads(b, t)
        raw = [p.grad.clone() for p in a]
        n_own = oa.clip_grad_norm_(max_norm)
        if expect_deferred is not None:
            assert (oa._pending_clip is not None) == expect_deferred
        n_torch = torch.nn.utils.clip_grad_norm_(b, max_norm)
        assert torch.equal(n_own, n_torch)
        oa.step()
        ob.step()
        if kernel:  # the kernel read them scaled and left them as they were
            assert all(torch.equal(p.grad, r) for p, r in zip(a, raw))
        else:  # clipped in place, as torch's
            assert all(torch.equal(p.grad, q.grad) for p, q in zip(a, b))
        assert oa._pending_clip is None
        oa.zero_grad()
        ob.zero_grad()
    _same(a, oa, b, ob, ulps)


@pytest.mark.parametrize("kw", [dict(), dict(foreach=True, scope="first_n"),
                                dict(foreach=False), dict(perturbation="gauss"),
                                dict(maximize=True), dict(amsgrad=True)])
def test_cpu_clip_is_torchs(kw):
    a, oa, b, ob = _twins(**kw)
    _torch_then_own(a, oa, b, ob, expect_deferred=False)


@pytest.mark.parametrize("max_norm", [0.5, 1e3, float("inf")])
@pytest.mark.parametrize("kw", [dict(), dict(foreach=True, scope="first_n"),
                                dict(foreach=False), dict(perturbation="anti"),
                                dict(quantum_weight=0.0)])
def test_a_forced_deferral_on_any_path_is_torchs(monkeypatch, kw, max_norm):
    """Deferred although no fused kernel runs (forced): the flat, multi-tensor and per-tensor
    CPU paths multiply their gradients first, so the step is torch's clipping + step."""
    monkeypatch.setattr(SuperpositionalAdamW, "_can_defer_clip", lambda self, *a: True)
    a, oa, b, ob = _twins(**kw)
    _torch_then_own(a, oa, b, ob, max_norm=max_norm, expect_deferred=True)


def test_zero_grad_drops_and_a_second_clip_applies_the_pending_product(monkeypatch):
    monkeypatch.setattr(SuperpositionalAdamW, "_can_defer_clip", lambda self, *a: True)
    a, oa, b, ob = _twins()
    _set_grads(a, 0)
    oa.clip_grad_norm_(1.0)
    oa.zero_grad()
    assert oa._pending_clip is None and all(p.grad is None for p in a)
    # clipping twice: the second norm is that of the once-clipped gradients, as in torch
    _set_grads(a, 1)
    _set_grads(b, 1)
    first_own, first_torch = oa.clip_grad_norm_(0.5), torch.nn.utils.clip_grad_norm_(b, 0.5)
    second_own, second_torch = oa.clip_grad_norm_(0.2), torch.nn.utils.clip_grad_norm_(b, 0.2)
    assert torch.equal(first_own, first_torch) and torch.equal(second_own, second_torch)
    oa.step()
    ob.step()
    _same(a, oa, b, ob)


def test_new_gradient_tensors_after_clipping_get_torchs_treatment(monkeypatch):
    """Gradients replaced between clipping and the step: the product goes to the tensors it
    was computed for (as torch's in-place clipping), the step reads the new ones as they are."""
    monkeypatch.setattr(SuperpositionalAdamW, "_can_defer_clip", lambda self, *a: True)
    a, oa, b, ob = _twins()
    _set_grads(a, 0)
    _set_grads(b, 0)
    old = [p.grad for p in a]
    oa.clip_grad_norm_(1.0)
    torch.nn.utils.clip_grad_norm_(b, 1.0)
    want_old = [p.grad.clone() for p in b]
    _set_grads(a, 5)
    _set_grads(b, 5)
    oa.step()
    ob.step()
    _same(a, oa, b, ob)
    assert all(torch.equal(x, y) for x, y in zip(old, want_old))


def test_a_skipped_step_leaves_torchs_clipped_gradients(monkeypatch):
    monkeypatch.setattr(SuperpositionalAdamW, "_can_defer_clip", lambda self, *a: True)
    a, oa, b, ob = _twins(nonfinite="skip")
    for ps in (a, b):
        _set_grads(ps, 0)
        ps[2].grad[0, 0, 0] = float("nan")
    oa.clip_grad_norm_(1.0)
    torch.nn.utils.clip_grad_norm_(b, 1.0)
    oa.step()
    ob.step()
    assert oa.skipped_steps == ob.skipped_steps == 1
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0, equal_nan=True)


def test_the_pending_product_is_not_state():
    import copy
    import pickle

    a, oa, _, _ = _twins()
    _set_grads(a, 0)
    oa._pending_clip = (torch.tensor(0.5), [p.grad for p in a])
    for other in (copy.deepcopy(oa), pickle.loads(pickle.dumps(oa))):
        assert other._pending_clip is None
    assert "_pending_clip" not in str(oa.state_dict().keys())


def test_the_llm_arm_clips_with_the_optimizers_own_under_fused_clip(monkeypatch):
    from ablations.llm.options import LLMOptions
    from ablations.llm.precision import LossScaling

    assert LLMOptions().fused_clip is False and LLMOptions.from_dict(
        {"fused_clip": True}).fused_clip is True
    cpu = torch.device("cpu")
    a, oa, _, _ = _twins()
    calls = []
    monkeypatch.setattr(oa, "clip_grad_norm_", lambda c: calls.append(c))
    _set_grads(a, 0)
    LossScaling("bf16", cpu, fused_clip=True).clip(oa, a, 1.0)
    LossScaling("bf16", cpu, fused_clip=True).clip(oa, a, 0.0)  # 0: no clipping
    assert calls == [1.0]
    LossScaling("bf16", cpu).clip(oa, a, 1.0)  # the default: torch's clipping
    assert calls == [1.0]
    assert float(torch.nn.utils.get_total_norm([p.grad for p in a])) <= 1.0 + 1e-5
    # torch's optimizers (the peer's) keep torch's clipping
    b = _params()
    _set_grads(b, 0)
    want = torch.nn.utils.get_total_norm([p.grad for p in b])
    LossScaling("bf16", cpu, fused_clip=True).clip(torch.optim.AdamW(b), b, 1.0)
    assert float(torch.nn.utils.get_total_norm([p.grad for p in b])) <= 1.0 + 1e-5 < float(want)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", ["none", *FUSED_PERTURBATIONS])
@pytest.mark.parametrize("scope", ["all", "first_n"])
def test_fused_kernel_product_is_clipping_in_place(variant, dtype, scope):
    """To two roundings of the dtype: the kernel with the product is another compilation,
    whose contractions (fma) of the moments' arithmetic may differ (on an H200 the second
    moment came out one rounding apart in places)."""
    kw = dict(quantum_weight=0.0) if variant == "none" else dict(perturbation=variant)
    a, oa, b, ob = _twins(dtype, "cuda", scope=scope, fused=True, **kw)
    _torch_then_own(a, oa, b, ob, steps=3, max_norm=1.0, expect_deferred=True, kernel=True,
                    ulps=2)


@gpu
@pytest.mark.gpu
def test_no_deferral_where_the_kernel_would_not_run():
    for kw in (dict(fused=False), dict(amsgrad=True), dict(maximize=True),
               dict(perturbation="sin", track_ratio=True)):
        a, oa, b, ob = _twins(torch.float32, "cuda", **kw)
        _torch_then_own(a, oa, b, ob, steps=2, expect_deferred=False)


def test_the_deferral_decision(monkeypatch):
    """With the kernel's support check passing (patched: CPU tensors have no kernel), the
    product is deferred for plain tensors only, and never where the step would not take the
    kernel."""
    import qsgd.fused as F

    monkeypatch.setattr(F, "fused_unsupported_reason", lambda *a, **k: None)
    for kw, want in [(dict(), True), (dict(fused=False), False), (dict(foreach=False), False),
                     (dict(foreach=False, fused=True), True), (dict(amsgrad=True), False),
                     (dict(maximize=True), False), (dict(track_ratio=True), False)]:
        a, oa, _, _ = _twins(**kw)
        _set_grads(a, 0)
        assert oa._can_defer_clip() is want, kw
    a, oa, _, _ = _twins()
    _set_grads(a, 0)
    a[1].grad = a[1].grad.to_sparse()
    assert oa._can_defer_clip() is False
    z = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.ones(3, dtype=torch.complex64)
    assert SuperpositionalAdamW([z])._can_defer_clip() is False
    monkeypatch.setattr(F, "fused_unsupported_reason", lambda *a, **k: "no kernel")
    a, oa, _, _ = _twins()
    _set_grads(a, 0)
    assert oa._can_defer_clip() is False


def test_the_optimizer_bench_clipped_rows_step_alike_on_cpu():
    """bench_optimizer's clipped rows: torch's clipping and the optimizer's own run the same
    step (on a CPU nothing is deferred), and both clip to the bench's CLIP."""
    from ablations import bench_optimizer as bo

    runs = []
    for own in (False, True):
        ps = _params()
        _set_grads(ps, 0, scale=5.0)
        opt = bo._Clipped(bo._qsgd("sin", fused=None), own=own)(ps)
        opt.step()
        assert float(torch.nn.utils.get_total_norm([p.grad for p in ps])) <= bo.CLIP + 1e-5
        runs.append(ps)
    assert all(torch.equal(x, y) for x, y in zip(*runs))
