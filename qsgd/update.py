"""The update rule of :class:`qsgd.SuperpositionalAdamW`: the per-tensor reference and its faster
paths, each tested equal to it.

For each parameter tensor θ with gradient g at step t = 1, 2, … (Pamuk et al., arXiv 2511.01918,
restated in PAPER.md; decoupled decay as Loshchilov & Hutter 2019)::

    Q = perturbation(θ_t, g_t)                  # from θ before this step's weight decay
    θ ← θ − lr·weight_decay·θ                    # decoupled, as torch.optim.AdamW
    m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g²
    m̂ = m/(1−β1^t) ;  v̂ = v/(1−β2^t)            # bias_correction=True; False: m̂ = m, v̂ = v
    θ ← θ − lr·( m̂/(√v̂ + ε) + λ·Q )

The kind of the perturbation (:data:`qsgd.perturbations.KINDS`) says where its term goes:
``"direction"``: Q as above. ``"gradient"`` (anneal): g is replaced by g + λ·ξ before both
moments. ``"normalized"`` (sinnorm): the term is a factor r and Q = r⊙u with u = m̂/(√v̂ + ε)
this step's Adam direction, so θ ← θ − lr·(u + λ·r⊙u). ``"first-moment"`` (moment): the term
is a factor f and m ← β1·m + (1−β1)·(g + λ·f⊙g), v from the raw g (no Q). Each is computed
from θ before the decay and applies to the in-scope entries only (``scope``); the other entries
get exactly the AdamW update. AMSGrad (``amsgrad=True``) divides by √max(v) instead of √v, as
``torch.optim.AdamW``.

The diagnostic ``stats`` (``track_ratio``) hold ‖P‖² and ‖u‖² summed over tensors, with P the
perturbation in the units it is added in: λ·Q (direction), λ·ξ (gradient: gradient units,
against a normalised step), λ·r⊙u (normalized: the ratio ‖P‖/‖u‖ is at most λ·max|r|), and
for the first-moment kind P = λf/(1 + λf)⊙u (0 where 1 + λf = 0), the part of m̂ that the
term holds when f is constant over the moment's averaging window (then m is (1 + λf)⊙ the
unperturbed m; θ, hence f, moves by O(lr) a step). The last needs no state beyond m and v;
the exact part would need a third moment buffer.

* :func:`reference_step`: the maths for one real tensor (the reference).
* :func:`_foreach_group`: the same with ``torch._foreach_*`` kernels over a list of tensors.
* :func:`_flat_group`: a CPU group concatenated into one flat tensor (small models).
* :func:`compiled_group`: the form ``torch.compile`` traces (step counts and lr as tensors).
* the fused Triton kernel of :mod:`qsgd.fused` (CUDA).

Every function here works on plain real tensors; the optimizer (:mod:`qsgd.optimizer`) handles
groups, state, complex and DTensor parameters, and chooses the path.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .perturbations import Context, None_, Perturbation, available, perturbation_class

if TYPE_CHECKING:  # pragma: no cover
    from .sharding import ShardLayout

__all__ = ["reference_step", "in_scope"]


def in_scope(flat: Tensor, scope: str, n_qubits: int) -> Tensor:
    """The in-scope part of a flattened tensor: everything, or the first n_qubits entries."""
    return flat if scope == "all" else flat[:n_qubits]


def _concat(tensors: list[Tensor]) -> Tensor:
    """A new flat tensor holding ``tensors`` one after the other (one C++ call; unlike
    ``_flatten_dense_tensors`` alone, never a view of a single input)."""
    if len(tensors) == 1:
        return tensors[0].reshape(-1).clone()
    return _flatten_dense_tensors(tensors)


class _Routed(NamedTuple):
    """A perturbation's term (a tensor, or a list of them) under the name of its kind
    (:data:`qsgd.perturbations.KINDS`, "-" read as "_"), None under the others."""

    direction: Any = None  # q: θ −= lr·λ·q
    gradient: Any = None  # ξ: g + λ·ξ in both moments
    normalized: Any = None  # r: θ −= lr·λ·r⊙u
    first_moment: Any = None  # f: m from g + λ·f⊙g


#: no term at all (λ = 0 or no perturbation)
_NO_TERM = _Routed()


def _route(perturbation: Perturbation, term) -> _Routed:
    """``term`` under the name of ``perturbation.kind`` (validated where the perturbation
    enters: :func:`qsgd.perturbations.register` and :func:`qsgd.hyper.check_group`)."""
    return _Routed(**{perturbation.kind.replace("-", "_"): term})


def _moment_share(f: Tensor, lam: float) -> Tensor:
    """λf/(1 + λf), 0 where 1 + λf = 0: the term's part of m for a constant factor f."""
    den = f * lam + 1.0
    return torch.where(den != 0, (f * lam) / den, torch.zeros_like(f))


def _with_term(grad: Tensor, term: Tensor, lam: float, scope: str, n_qubits: int) -> Tensor:
    """A contiguous copy of ``grad`` with λ·term added to its in-scope entries."""
    out = grad.clone(memory_format=torch.contiguous_format)
    in_scope(out.view(-1), scope, n_qubits).add_(term, alpha=lam)
    return out


def _foreach_with_terms(grads: list[Tensor], terms: list[Tensor], lam: float, scope: str,
                        n_qubits: int) -> list[Tensor]:
    """:func:`_with_term` of every tensor of a list (one multi-tensor add, same bits)."""
    out = [g.clone(memory_format=torch.contiguous_format) for g in grads]
    torch._foreach_add_([in_scope(g.view(-1), scope, n_qubits) for g in out], terms, alpha=lam)
    return out


def _bias_corrections(step: int, beta1: float, beta2: float, on: bool) -> tuple[float, float]:
    if not on:
        return 1.0, 1.0
    return 1.0 - beta1**step, 1.0 - beta2**step


def reference_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    quantum_weight: float,
    perturbation: Perturbation,
    scope: str,
    n_qubits: int,
    bias_correction: bool,
    seed: int,
    index: int,
    stats: dict[str, Tensor] | None = None,
    max_exp_avg_sq: Tensor | None = None,
    shard: ShardLayout | None = None,
) -> None:
    """One SuperpositionalAdamW step for one real tensor, in place. The reference for all paths.

    ``step`` is this step's number t (≥ 1). ``index`` keys the noise streams. When ``stats`` is
    a dict, the squared norms of λ·(term) and of the Adam direction m̂/(√v̂+ε) are added to its
    entries ``"pert_sq"`` and ``"adam_sq"`` (0-dim tensors, created on first use).
    ``max_exp_avg_sq`` (AMSGrad, as ``torch.optim.AdamW(amsgrad=True)``): when given, it becomes
    max(itself, v) and replaces v in the denominator. ``maximize`` is the caller's: it passes −g.
    Op order mirrors ``torch.optim.AdamW``'s single-tensor path, so λ = 0 matches it exactly.
    The perturbation's kind says where its term enters (module docstring).

    ``shard``: for the local shard of a DTensor (``param`` is the local tensor), where it lies
    in the global tensor (:class:`qsgd.sharding.ShardLayout`): the term sees it in its
    context and reads the whole tensor through it (the RMS, keyed noise, circuit groups), and
    scope ``first_n`` is the first ``n_qubits`` entries of the flattened *global* tensor (the
    shard's share of them is a prefix of its flattened local tensor, possibly empty; this needs
    a shard that is a contiguous range of the flattened tensor, as ``Shard(0)`` is).
    """
    lam = quantum_weight
    active = lam != 0.0 and not isinstance(perturbation, None_)
    routed = _NO_TERM
    n_scope = n_qubits  # the in-scope prefix of the flattened tensor for first_n
    if shard is not None and scope == "first_n":
        shard, n_scope = shard.prefix(n_qubits)
    if active:
        ctx = Context(step=step, seed=seed, index=index, n_qubits=n_qubits, shard=shard)
        theta_s = in_scope(param.reshape(-1), scope, n_scope)
        grad_s = in_scope(grad.reshape(-1), scope, n_scope)
        term = perturbation.term(theta_s, grad_s, ctx)
        routed = _route(perturbation, term)
        if routed.gradient is not None:
            grad = _with_term(grad, routed.gradient, lam, scope, n_scope)
        if stats is not None and (routed.direction is not None or routed.gradient is not None):
            _acc(stats, "pert_sq", term.double().pow(2).sum() * (lam * lam))

    _adam_update(param, grad, exp_avg, exp_avg_sq, routed.direction, step=step, lr=lr,
                 beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, lam=lam,
                 scope=scope, n_qubits=n_scope, bias_correction=bias_correction, stats=stats,
                 max_exp_avg_sq=max_exp_avg_sq, factor=routed.normalized,
                 m_factor=routed.first_moment)


def _adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                 q: Tensor | None, *, step: int, lr: float, beta1: float, beta2: float,
                 eps: float, weight_decay: float, lam: float, scope: str, n_qubits: int,
                 bias_correction: bool, stats: dict[str, Tensor] | None,
                 max_exp_avg_sq: Tensor | None = None, factor: Tensor | None = None,
                 m_factor: Tensor | None = None) -> None:
    """The rest of :func:`reference_step` once the term is known, in place on one tensor (a
    parameter, or the flat path's concatenated group): decay, moments (m from g + λ·m_factor⊙g
    on the in-scope entries when ``m_factor`` is given), the Adam step, and −lr·λ·q on the
    in-scope entries when ``q`` is given, or q = factor⊙u (u the in-scope Adam direction) when
    ``factor`` is."""
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)
    g_m = grad
    if m_factor is not None:
        g_s = in_scope(grad.reshape(-1), scope, n_qubits)
        g_m = _with_term(grad, m_factor * g_s, lam, scope, n_qubits)
    exp_avg.lerp_(g_m, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bc1, bc2 = _bias_corrections(step, beta1, beta2, bias_correction)
    step_size = lr / bc1
    if max_exp_avg_sq is not None:  # AMSGrad: the running maximum of v, as torch's AdamW
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        exp_avg_sq = max_exp_avg_sq
    denom = (exp_avg_sq.sqrt() / (bc2**0.5)).add_(eps)
    if factor is not None:  # Q = r⊙u on the in-scope entries
        q = (in_scope(exp_avg.reshape(-1), scope, n_qubits) / bc1).div_(
            in_scope(denom.reshape(-1), scope, n_qubits)).mul_(factor)
    if stats is not None:
        d = (exp_avg / bc1).div_(denom)
        _acc(stats, "adam_sq", d.double().pow(2).sum())
        if factor is not None:
            _acc(stats, "pert_sq", q.double().pow(2).sum() * (lam * lam))
        if m_factor is not None:
            share = _moment_share(m_factor, lam) * in_scope(d.reshape(-1), scope, n_qubits)
            _acc(stats, "pert_sq", share.double().pow(2).sum())
    param.addcdiv_(exp_avg, denom, value=-step_size)
    if q is not None:
        if param.is_contiguous():
            in_scope(param.view(-1), scope, n_qubits).add_(q, alpha=-lr * lam)
        else:
            full = torch.zeros_like(param).reshape(-1)
            in_scope(full, scope, n_qubits).copy_(q)
            param.add_(full.view_as(param), alpha=-lr * lam)


def _acc(stats: dict[str, Tensor], key: str, value: Tensor) -> None:
    stats[key] = stats[key] + value if key in stats else value


def _foreach_sq(tensors: list[Tensor]) -> Tensor:
    """Σ‖t‖² over a list, in float64 (0-dim)."""
    norms = torch._foreach_norm([t.double() for t in tensors])
    return torch.stack(norms).pow(2).sum()


def _foreach_group(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    indices: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    quantum_weight: float,
    perturbation: Perturbation,
    scope: str,
    n_qubits: int,
    bias_correction: bool,
    seed: int,
    stats: dict[str, Tensor] | None,
    max_exp_avg_sqs: list[Tensor] | None = None,
    shards: list[ShardLayout | None] | None = None,
) -> None:
    """Multi-tensor form of :func:`reference_step` (same maths, ``torch._foreach_*`` kernels).

    ``shards``: each tensor's :class:`qsgd.sharding.ShardLayout` (None for a whole tensor), as
    ``reference_step``'s ``shard``, in scope ``"all"`` only (``first_n`` on shards has a
    prefix of its own length per tensor: the per-tensor reference takes it)."""
    lam = quantum_weight
    active = lam != 0.0 and not isinstance(perturbation, None_)
    routed = _NO_TERM
    if shards is not None and scope != "all":
        raise ValueError(f"scope={scope!r} on sharded tensors takes the per-tensor reference "
                         "path (reference_step with shard=), not the foreach path")
    if active:
        ctxs = [Context(step=s, seed=seed, index=i, n_qubits=n_qubits, shard=sh)
                for s, i, sh in zip(steps, indices, shards or itertools.repeat(None))]
        thetas = [in_scope(p.view(-1), scope, n_qubits) for p in params]
        gs = [in_scope(g.reshape(-1), scope, n_qubits) for g in grads]
        all_terms = perturbation.terms(thetas, gs, ctxs)
        routed = _route(perturbation, all_terms)
        if stats is not None and (routed.direction is not None or routed.gradient is not None):
            _acc(stats, "pert_sq", _foreach_sq(all_terms) * (lam * lam))
        if routed.gradient is not None:
            grads = _foreach_with_terms(grads, routed.gradient, lam, scope, n_qubits)
    terms, factors, m_factors = routed.direction, routed.normalized, routed.first_moment

    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    g_m = grads
    if m_factors is not None:
        xis = torch._foreach_mul(m_factors, [in_scope(g.reshape(-1), scope, n_qubits)
                                             for g in grads])
        g_m = _foreach_with_terms(grads, xis, lam, scope, n_qubits)
    torch._foreach_lerp_(exp_avgs, g_m, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    bcs = [_bias_corrections(s, beta1, beta2, bias_correction) for s in steps]
    step_sizes = [-(lr / bc1) for bc1, _ in bcs]
    if max_exp_avg_sqs is not None:  # AMSGrad
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        exp_avg_sqs = max_exp_avg_sqs
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [bc2**0.5 for _, bc2 in bcs])
    torch._foreach_add_(denom, eps)
    if factors is not None:  # Q = r⊙u on the in-scope entries
        terms = torch._foreach_div([in_scope(m.reshape(-1), scope, n_qubits) for m in exp_avgs],
                                   [bc1 for bc1, _ in bcs])
        torch._foreach_div_(terms, [in_scope(d.reshape(-1), scope, n_qubits) for d in denom])
        torch._foreach_mul_(terms, factors)
    if stats is not None:
        d = torch._foreach_div(exp_avgs, [bc1 for bc1, _ in bcs])
        torch._foreach_div_(d, denom)
        _acc(stats, "adam_sq", _foreach_sq(d))
        if factors is not None:
            _acc(stats, "pert_sq", _foreach_sq(terms) * (lam * lam))
        if m_factors is not None:
            shares = torch._foreach_mul([_moment_share(f, lam) for f in m_factors],
                                        [in_scope(x.reshape(-1), scope, n_qubits) for x in d])
            _acc(stats, "pert_sq", _foreach_sq(shares))
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
    if terms is not None:
        torch._foreach_add_([in_scope(p.view(-1), scope, n_qubits) for p in params], terms,
                            alpha=-lr * lam)


def _flat_group(
    params: list[Tensor],
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    indices: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    quantum_weight: float,
    perturbation: Perturbation,
    scope: str,
    n_qubits: int,
    bias_correction: bool,
    seed: int,
    stats: dict[str, Tensor] | None,
) -> None:
    """:func:`reference_step` for a whole CPU group at once (scope "all", one step count).

    Parameters are concatenated into one flat tensor (``grad`` already is: the caller's own
    copy, which this function may modify), the moments already are flat (``exp_avg``,
    ``exp_avg_sq``: their slices are the per-parameter state), the same elementwise operations
    as the reference run once over everything, and the parameters are copied back. On CPU a
    small model's step is dominated by per-operation overhead (dozens of tensors × a dozen
    operations), which this removes (measured in ``results/bench/attention.md``, table
    "optimizer"); the parameters equal the reference path's bit for bit (tested). Elementwise
    perturbations (``Perturbation.elementwise``) run once on the flat tensors; the others per
    tensor, keyed by each tensor's index, as everywhere.
    """
    del scope  # "all" (checked by the caller)
    theta = _concat(params)
    lam = quantum_weight
    routed = _NO_TERM
    if lam != 0.0 and not isinstance(perturbation, None_):
        if perturbation.elementwise:
            term = perturbation.term(theta, grad, Context(step=step, seed=seed,
                                                          index=indices[0], n_qubits=n_qubits))
        else:
            ctxs = [Context(step=step, seed=seed, index=i, n_qubits=n_qubits) for i in indices]
            sizes = [p.numel() for p in params]
            term = torch.cat(perturbation.terms(list(theta.split(sizes)),
                                                list(grad.split(sizes)), ctxs))
        routed = _route(perturbation, term)
        if stats is not None and (routed.direction is not None or routed.gradient is not None):
            _acc(stats, "pert_sq", term.double().pow(2).sum() * (lam * lam))
        if routed.gradient is not None:
            grad.add_(routed.gradient, alpha=lam)  # grad is this function's own copy
    _adam_update(theta, grad, exp_avg, exp_avg_sq, routed.direction, step=step, lr=lr,
                 beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, lam=lam, scope="all",
                 n_qubits=n_qubits, bias_correction=bias_correction, stats=stats,
                 factor=routed.normalized, m_factor=routed.first_moment)
    torch._foreach_copy_(params, _unflatten_dense_tensors(theta, params))


def _sub_in_scope(param: Tensor, q: Tensor, scale, scope: str, n_qubits: int) -> None:
    """param −= scale·q on the in-scope entries (``scale`` a number or a 0-dim tensor)."""
    if param.is_contiguous():
        in_scope(param.view(-1), scope, n_qubits).sub_(q * scale)
    else:
        full = torch.zeros_like(param).reshape(-1)
        in_scope(full, scope, n_qubits).copy_(q)
        param.sub_(full.view_as(param) * scale)


def compiled_group(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    indices: list[int],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    quantum_weight: float,
    perturbation: Perturbation,
    scope: str,
    n_qubits: int,
    bias_correction: bool,
    seed: int,
    stats: dict[str, Tensor] | None,
    max_exp_avg_sqs: list[Tensor] | None = None,
) -> None:
    """:func:`reference_step` tensor by tensor in the form ``torch.compile`` traces: ``steps``
    are 0-dim tensors (this step's numbers) and ``lr`` may be one, so the bias corrections and
    step sizes are tensors and a new step (or a scheduler's new Tensor lr) needs no recompile.
    Inductor fuses the loop itself. Equal to the reference to float rounding (the bias
    corrections are computed in the step tensor's dtype, float32, instead of Python floats).

    Deterministic perturbations only: the stochastic ones key their noise on the host step
    count (:mod:`qsgd.noise`), which a graph does not have; they raise ``ValueError``.
    """
    lam = quantum_weight
    active = lam != 0.0 and not isinstance(perturbation, None_)
    if active and perturbation.stochastic:
        deterministic = [n for n in available() if not perturbation_class(n).stochastic]
        raise ValueError(f"perturbation {perturbation.name!r} draws keyed noise from the host "
                         "step count and cannot run under torch.compile; the deterministic "
                         f"ones can ({', '.join(deterministic)}), or step eagerly")
    for k, (p, g, ea, eas, st) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        routed = _NO_TERM
        if active:  # a deterministic term does not read ctx.step
            ctx = Context(step=0, seed=seed, index=indices[k], n_qubits=n_qubits)
            term = perturbation.term(in_scope(p.reshape(-1), scope, n_qubits),
                                     in_scope(g.reshape(-1), scope, n_qubits), ctx)
            routed = _route(perturbation, term)
            if routed.gradient is not None:
                g = _with_term(g, routed.gradient, lam, scope, n_qubits)
            if stats is not None and (routed.direction is not None or routed.gradient is not None):
                _acc(stats, "pert_sq", term.double().pow(2).sum() * (lam * lam))
        q, factor, m_factor = routed.direction, routed.normalized, routed.first_moment
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)
        g_m = g
        if m_factor is not None:
            g_m = _with_term(g, m_factor * in_scope(g.reshape(-1), scope, n_qubits), lam, scope,
                             n_qubits)
        ea.lerp_(g_m, 1.0 - beta1)
        eas.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        if bias_correction:
            bc1, bc2 = 1.0 - torch.pow(beta1, st), 1.0 - torch.pow(beta2, st)
        else:
            bc1 = bc2 = torch.ones_like(st)
        v = eas
        if max_exp_avg_sqs is not None:
            v = max_exp_avg_sqs[k]
            torch.maximum(v, eas, out=v)
        denom = (v.sqrt() / bc2.sqrt()).add_(eps)
        direction = ea / bc1 / denom
        if factor is not None:  # Q = r⊙u on the in-scope entries
            q = in_scope(direction.reshape(-1), scope, n_qubits) * factor
        if stats is not None:
            _acc(stats, "adam_sq", direction.double().pow(2).sum())
            if factor is not None:
                _acc(stats, "pert_sq", q.double().pow(2).sum() * (lam * lam))
            if m_factor is not None:
                share = _moment_share(m_factor, lam) * in_scope(direction.reshape(-1), scope,
                                                                n_qubits)
                _acc(stats, "pert_sq", share.double().pow(2).sum())
        p.sub_(direction * lr)
        if q is not None:
            _sub_in_scope(p, q, lr * lam, scope, n_qubits)
