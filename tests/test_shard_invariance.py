"""Shard invariance: SuperpositionalAdamW on DTensor shards steps as one unsharded process.

Two gloo ranks on the CPU (``torch.multiprocessing.spawn``, a ``file://`` rendezvous) hold
DTensor parameters: ``Shard(0)`` uneven (7 rows as 4 + 3, 3 entries as 2 + 1), a tensor smaller
than the world (one row: rank 1's shard is empty), ``Shard(1)`` (a shard that is no range of
the flattened tensor) and ``Replicate``. Each variant takes three steps on the same seeded
gradients as the unsharded run in this process; the gathered parameters must equal it.

Tolerances. Float64 tensors, lr 0.05, so the term moves the parameters visibly. Terms without
a reduction (sin, anneal: noise sliced from the global stream) are compared bit for bit; the
elementwise Adam part runs the same operations on each entry. Terms with a global RMS (gauss,
unif, anti, annealrel) sum their squares per shard in float64 and then across the ranks, in
another order than the unsharded float64 mean: a relative difference of a few ulps in s, so
atol 1e-12 on parameters of size ~1 (a per-shard RMS moves them by ~1e-3, a per-shard noise
draw by ~lr). circuit (a gathered θ, then one simulation per tensor instead of one batch over
the group's tensors) is held to the same bound.
"""

from __future__ import annotations

import datetime
import os
import tempfile

import pytest
import torch

import qsgd
from qsgd.noise import keyed_noise
from qsgd.perturbations import Context, get_perturbation, rms, sinpi
from qsgd.sharding import ShardLayout
from qsgd.update import reference_step

WORLD = 2
STEPS = 3
ATOL = 1e-12

# (shape, placement): "s0" Shard(0), "s1" Shard(1), "r" Replicate
SPECS = [((7, 5), "s0"), ((1, 3), "s0"), ((3,), "s0"), ((4, 6), "s1"), ((5,), "r"),
         ((16, 3), "s0")]
SPECS_FIRST_N = [s if s[1] != "s1" else ((4, 6), "s0") for s in SPECS]

# (id, optimizer kwargs, exact): bit for bit, or to ATOL
CASES = [
    ("sin", dict(perturbation="sin"), True),
    ("anneal", dict(perturbation="anneal"), True),
    ("gauss", dict(perturbation="gauss"), False),
    ("gauss-ref", dict(perturbation="gauss", foreach=False), False),
    ("unif", dict(perturbation="unif"), False),
    ("anti", dict(perturbation="anti"), False),
    ("anti-ref", dict(perturbation="anti", foreach=False), False),
    ("annealrel", dict(perturbation="annealrel"), False),
    ("circuit", dict(perturbation="circuit", n_qubits=3), False),
    ("circuit-shots", dict(perturbation="circuit", n_qubits=3, circuit_shots=16), False),
    ("gauss-first23", dict(perturbation="gauss", scope="first_n", n_qubits=23), False),
    ("sin-first3", dict(perturbation="sin", scope="first_n", n_qubits=3), True),
    ("circuit-first7", dict(perturbation="circuit", scope="first_n", n_qubits=7), False),
]


def _specs(kwargs: dict) -> list:
    return SPECS_FIRST_N if kwargs.get("scope") == "first_n" else SPECS


def _initial(kwargs: dict) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape, _ in _specs(kwargs)]


def _grads(kwargs: dict, step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape, _ in _specs(kwargs)]


def _optimizer(params, kwargs: dict):
    return qsgd.SuperpositionalAdamW(params, lr=0.05, seed=5, **kwargs)


def _unsharded(kwargs: dict) -> list[torch.Tensor]:
    params = [torch.nn.Parameter(t) for t in _initial(kwargs)]
    opt = _optimizer(params, kwargs)
    for step in range(STEPS):
        for p, g in zip(params, _grads(kwargs, step)):
            p.grad = g
        opt.step()
    return [p.detach() for p in params]


def _worker(rank: int, folder: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            init_method=f"file://{folder}/rendezvous")
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        place = {"s0": [Shard(0)], "s1": [Shard(1)], "r": [Replicate()]}
        out = {}
        for name, kwargs, _ in CASES:
            pls = [place[p] for _, p in _specs(kwargs)]
            params = [torch.nn.Parameter(distribute_tensor(t, mesh, pl))
                      for t, pl in zip(_initial(kwargs), pls)]
            opt = _optimizer(params, kwargs)
            for step in range(STEPS):
                for p, g, pl in zip(params, _grads(kwargs, step), pls):
                    p.grad = distribute_tensor(g, mesh, pl)
                opt.step()
            with torch.no_grad():
                out[name] = [p.full_tensor() for p in params]
            if name == "sin":  # the shard sizes this test claims
                out["local_shapes"] = [tuple(p.to_local().shape) for p in params]
        from qsgd.sharding import layout_of

        mesh2 = init_device_mesh("cpu", (WORLD, 1))
        out["layouts"] = [
            layout_of(distribute_tensor(torch.zeros(5, 2), mesh2, pl)) is None
            for pl in ([Replicate(), Shard(0)], [Shard(0), Replicate()])]
        if rank == 0:
            torch.save(out, f"{folder}/out.pt")
        dist.barrier()  # no rank tears gloo down while the other still has work in flight
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded() -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="qsgd-shard-") as folder:
        mp.spawn(_worker, args=(folder,), nprocs=WORLD, join=True)
        return torch.load(os.path.join(folder, "out.pt"))


def test_the_shards_are_uneven_empty_strided_and_replicated(sharded):
    # rank 0's shards: 4 of 7 rows, the one row (rank 1: none), 2 of 3, 3 of 6 columns, all 5
    assert sharded["local_shapes"] == [(4, 5), (1, 3), (2,), (4, 3), (5,), (8, 3)]


def test_a_shard_over_one_rank_is_stepped_as_a_whole_tensor(sharded):
    # Shard(0) on a mesh dim of size 1 (FSDP2 at world size 1): no layout, today's path;
    # on the dim of size 2: a layout
    assert sharded["layouts"] == [True, False]


@pytest.mark.parametrize("name, kwargs, exact", CASES, ids=[c[0] for c in CASES])
def test_sharded_step_equals_one_process(sharded, name, kwargs, exact):
    ref = _unsharded(kwargs)
    start = _initial(kwargs)
    for k, (a, b, t0) in enumerate(zip(sharded[name], ref, start)):
        assert not torch.equal(b, t0)  # the run moved every tensor
        if exact:
            assert torch.equal(a, b), f"tensor {k}: max diff {(a - b).abs().max():.3g}"
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=f"{name}, tensor {k}")


# ---------------------------------------------------------------------------------------------
# a NaN in one rank's shard: every rank raises or skips together

def _nonfinite_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.set_num_threads(1)
    # a rank that skips or raises alone leaves the other waiting in a collective: the
    # timeout turns that hang into a failure
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            init_method=f"file://{folder}/rendezvous",
                            timeout=datetime.timedelta(seconds=30))
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        out = {}
        for mode in ("skip", "raise"):
            start = [torch.randn(7, 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
            params = [torch.nn.Parameter(distribute_tensor(t, mesh, [Shard(0)])) for t in start]
            opt = qsgd.SuperpositionalAdamW(params, lr=0.05, seed=5, perturbation="gauss",
                                            nonfinite=mode)
            bad = torch.ones(7, 5, dtype=torch.float64)
            bad[6, 2] = float("nan")  # row 6: rank 1's shard (rows 4-6)
            for p, g in zip(params, (bad, torch.ones(3, dtype=torch.float64))):
                p.grad = distribute_tensor(g, mesh, [Shard(0)])
            before = [p.to_local().clone() for p in params]
            res = {}
            try:
                opt.step()
                res["raised"] = None
            except qsgd.NonFiniteGradientError as err:
                res["raised"] = str(err)
            res["unchanged"] = all(torch.equal(p.to_local(), b) for p, b in zip(params, before))
            res["skipped"] = opt.skipped_steps
            for p in params:  # a finite step afterwards: the ranks are still in step
                p.grad = distribute_tensor(torch.ones(p.shape, dtype=torch.float64), mesh,
                                           [Shard(0)])
            opt.step()
            res["steps"] = [opt.state[p]["step"] for p in params]
            out[mode] = res
        torch.save(out, f"{folder}/nonfinite{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def nonfinite() -> list[dict]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="qsgd-shard-nan-") as folder:
        mp.spawn(_nonfinite_worker, args=(folder,), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(folder, f"nonfinite{r}.pt")) for r in range(WORLD)]


def test_a_nan_in_one_shard_skips_the_step_on_every_rank(nonfinite):
    for rank, out in enumerate(nonfinite):
        res = out["skip"]
        assert res["raised"] is None and res["unchanged"] and res["skipped"] == 1, rank
        assert res["steps"] == [1, 1], rank  # the step counts stay equal across the ranks


def test_a_nan_in_one_shard_raises_on_every_rank(nonfinite):
    mine, theirs = nonfinite[1]["raise"], nonfinite[0]["raise"]
    assert mine["raised"] and "another rank" not in mine["raised"]
    assert "another rank's shard" in theirs["raised"]  # rank 0's own gradients were finite
    for res in (mine, theirs):
        assert res["unchanged"] and res["skipped"] == 0 and res["steps"] == [1, 1]


# ---------------------------------------------------------------------------------------------
# the slice logic, without processes (layouts made by hand; no reduction is needed for them)

def _layout(global_shape, local_shape, offset) -> ShardLayout:
    return ShardLayout(tuple(global_shape), tuple(local_shape), tuple(offset))


@pytest.mark.parametrize("g, l, o, rng", [
    ((7, 5), (4, 5), (0, 0), (0, 20)),
    ((7, 5), (3, 5), (4, 0), (20, 35)),
    ((1, 3), (0, 3), (1, 0), (3, 3)),     # an empty shard past the end
    ((4, 6), (4, 3), (0, 3), None),       # Shard(1): no range of the flattened tensor
    ((1, 6), (1, 3), (0, 3), (3, 6)),     # Shard(1) of one row is a range
    ((2, 3, 4), (2, 3, 2), (0, 0, 2), None),
])
def test_take_place_and_flat_range(g, l, o, rng):
    lay = _layout(g, l, o)
    full = torch.arange(float(lay.numel)).reshape(g)
    box = full[tuple(slice(a, a + n) for a, n in zip(o, l))]
    assert lay.flat_range == rng
    assert torch.equal(lay.take(full), box.reshape(-1))
    assert torch.equal(lay.take(full.reshape(-1)), box.reshape(-1))
    placed = lay.place(box)
    mask = torch.zeros(g, dtype=torch.bool)
    mask[tuple(slice(a, a + n) for a, n in zip(o, l))] = True
    assert torch.equal(placed.view(g)[mask], full[mask])
    assert not placed.view(g)[~mask].any()


def test_prefix_is_the_first_n_of_the_flattened_global_tensor():
    top, bottom = _layout((7, 5), (4, 5), (0, 0)), _layout((7, 5), (3, 5), (4, 0))
    assert [(p.global_shape, p.local_shape, p.offset, k)
            for p, k in (top.prefix(23), bottom.prefix(23))] == [
        ((23,), (20,), (0,), 20), ((23,), (3,), (20,), 3)]
    assert bottom.prefix(4)[1] == 0 and top.prefix(4)[1] == 4
    assert top.prefix(100)[0].global_shape == (35,)
    with pytest.raises(ValueError, match=r"scope='first_n' on a DTensor whose local shard is "
                                         r"not a contiguous range"):
        _layout((4, 6), (4, 3), (0, 3)).prefix(5)


@pytest.mark.parametrize("kind", ["normal", "uniform"])
@pytest.mark.parametrize("g, l, o", [((7, 5), (3, 5), (4, 0)), ((4, 6), (4, 3), (0, 3)),
                                     ((1, 3), (0, 3), (1, 0))])
def test_a_shard_draws_its_entries_of_the_global_stream(kind, g, l, o):
    lay = _layout(g, l, o)
    ctx = Context(step=3, seed=2, index=4)
    whole = keyed_noise((lay.numel,), kind, seed=2, step=3, index=4, device="cpu",
                        dtype=torch.float64)
    local = torch.empty(lay.local_numel, dtype=torch.float64)
    drawn = Context(step=3, seed=2, index=4, shard=lay).local(
        lambda shape: keyed_noise(shape, kind, seed=ctx.seed, step=ctx.step, index=ctx.index,
                                  device="cpu", dtype=torch.float64), local)
    assert torch.equal(drawn, lay.take(whole))


@pytest.mark.parametrize("name", ["anneal", "gauss", "unif", "anti", "annealrel"])
def test_noise_of_a_shard_is_the_slice_of_the_whole_tensors(name):
    """The term of a shard with the RMS taken from the whole tensor equals the whole tensor's
    term at the shard's entries: for anneal (no RMS) directly, for the others with λ's scale
    divided out (s is a scalar: Q/s of a shard is the slice of Q/s of the whole)."""
    gen = torch.Generator().manual_seed(1)
    theta, grad = (torch.randn(7, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    lay = _layout((7, 5), (3, 5), (4, 0))
    pert = get_perturbation(name)
    whole = pert.term(theta.reshape(-1), grad.reshape(-1), Context(step=2, seed=3, index=1))
    part = pert.term(lay.take(theta), lay.take(grad),
                     Context(step=2, seed=3, index=1, shard=lay))  # RMS over the shard alone
    if name == "anneal":
        assert torch.equal(part, lay.take(whole))
        return
    sin_sq = sinpi(theta)
    x = {"gauss": sin_sq, "unif": sin_sq, "anti": sin_sq * grad, "annealrel": grad}[name]
    # no process group here: the layout has no groups, so the sum is the shard's own
    s_whole = rms(x.reshape(-1))
    s_part = (lay.take(x).double().pow(2).sum() / lay.numel).sqrt()
    torch.testing.assert_close(part / s_part, lay.take(whole) / s_whole, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["gauss", "unif", "anti", "anneal", "annealrel", "circuit"])
def test_unsharded_terms_are_todays_bits(name):
    """Without a shard the terms are the formulas they were before shards existed, bit for
    bit, alone and batched (the foreach path's ``terms``)."""
    gen = torch.Generator().manual_seed(4)
    thetas = [torch.randn(n, generator=gen) for n in (13, 1, 0, 40)]
    grads = [torch.randn(n, generator=gen) for n in (13, 1, 0, 40)]
    ctxs = [Context(step=3, seed=7, index=i, n_qubits=3) for i in range(4)]
    pert = get_perturbation(name)

    def today(theta, grad, c):
        kw = dict(seed=c.seed, step=c.step, index=c.index, device="cpu", dtype=grad.dtype)

        def randn(step):
            return torch.randn(grad.shape, generator=c.generator("cpu", step=step))
        if name == "gauss":
            return keyed_noise(grad.shape, "normal", **kw).mul_(rms(sinpi(theta))).mul_(grad)
        if name == "unif":
            a = rms(sinpi(theta)) * 3.0 ** 0.5
            return keyed_noise(grad.shape, "uniform", **kw).mul_(2.0).sub_(1.0).mul_(a).mul_(grad)
        if name == "anneal":
            return randn(None).mul_(pert.sigma(c.step))
        if name == "annealrel":
            return keyed_noise(grad.shape, "normal", **kw).mul_(rms(grad) * pert.decay(c.step))
        if name == "anti":
            s = rms(sinpi(theta).mul_(grad))
            return randn(None).sub_(randn(c.step - 1)).mul_(s / 2.0 ** 0.5)
        return pert.readout(theta, 3).mul_(grad)

    expected = [today(t, g, c) for t, g, c in zip(thetas, grads, ctxs)]
    for t, g, c, e in zip(thetas, grads, ctxs, expected):
        assert torch.equal(pert.term(t, g, c), e)
    for got, e in zip(pert.terms(thetas, grads, ctxs), expected):
        assert torch.equal(got, e)


def test_first_n_on_a_strided_shard_is_refused_before_any_collective():
    p = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"placements .*shard it on dim 0"):
        reference_step(p, p.clone(), p.clone(), p.clone(), step=1, lr=1e-3, beta1=0.9,
                       beta2=0.999, eps=1e-8, weight_decay=0.0, quantum_weight=0.5,
                       perturbation=get_perturbation("gauss"), scope="first_n", n_qubits=5,
                       bias_correction=True, seed=0, index=0,
                       shard=ShardLayout((4, 6), (4, 3), (0, 3), (), "(Shard(dim=1),)"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("g, l, o", [((7, 5), (3, 5), (4, 0)), ((4, 6), (4, 3), (0, 3)),
                                     ((1, 3), (0, 3), (1, 0))])
def test_cuda_noise_of_a_shard_is_the_slice_of_the_whole_tensors(g, l, o):
    """On CUDA (Philox, :func:`qsgd.noise.cuda_noise`) a contiguous shard draws the stream up
    to its end and keeps its entries, a strided one the whole stream: both the slice of the
    whole tensor's ξ, as gauss's term of the whole tensor sees it."""
    from qsgd.perturbations import _keyed_noise

    lay = _layout(g, l, o)
    grad = torch.ones(lay.numel, device="cuda")
    whole = _keyed_noise(grad, Context(step=2, seed=9, index=3), "normal")
    part = _keyed_noise(lay.take(grad), Context(step=2, seed=9, index=3, shard=lay), "normal")
    assert torch.equal(part, lay.take(whole))
