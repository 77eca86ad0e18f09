"""SuperpositionalAdamW: AdamW plus the perturbation term of Superpositional Gradient Descent.

Per tensor, step t = 1, 2, … (Pamuk et al., arXiv 2511.01918, restated in PAPER.md; decoupled
decay as Loshchilov & Hutter 2019)::

    θ ← (1 − lr·wd)·θ − lr·( m̂/(√v̂ + ε) + λ·Q(θ_before_decay, g) )

The maths lives in :mod:`qsgd.update` (:func:`reference_step`, re-exported here, and the faster
paths, each tested equal to it: multi-tensor, flat CPU, compiled; the fused Triton kernel is
:mod:`qsgd.fused`); the defaults and validation of the hyperparameters in :mod:`qsgd.hyper`.
This module is the optimizer class: parameter groups, state, ``state_dict`` and pickling, the
non-finite gradient check, complex and DTensor parameters, and the choice of path.
"""

from __future__ import annotations

import operator
import sys
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch._utils import _unflatten_dense_tensors
from torch.optim import Optimizer

from .hyper import (
    DEFAULTS,
    NONFINITE,
    SCOPES,
    check_group,
    check_settings,
    complete,
    group_perturbation,
)
from .perturbations import Perturbation
from .update import (
    _concat,
    _flat_group,
    _foreach_group,
    compiled_group,
    in_scope,
    reference_step,
)

__all__ = ["SuperpositionalAdamW", "NonFiniteGradientError", "reference_step", "in_scope",
           "SCOPES", "NONFINITE"]  # the last two live in qsgd.hyper

_LAYOUT, _DEVICE = operator.attrgetter("layout"), operator.attrgetter("device")

#: the flat CPU path (:func:`_flat_group`) is taken for groups of at most this many entries
FLAT_MAX_NUMEL = 1 << 24


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient holds NaN or ±inf. Raised before any parameter or state is touched."""


class _Work(NamedTuple):
    """One parameter group's tensors that have a gradient, as the update paths see them."""

    gi: int                 # the group's index
    group: dict[str, Any]
    originals: list[Tensor]  # the parameters as given (they key the state)
    params: list[Tensor]     # the same as real, local tensors (:func:`_real_local`)
    grads: list[Tensor]      # their gradients, likewise, negated when maximize=True
    idx: list[int]           # global tensor indices (the noise key)
    flat: bool               # the group may take the flat CPU path
    shards: list | None = None  # each tensor's ShardLayout (None: whole); None: none sharded


def _real_local(t: Tensor) -> Tensor:
    """The tensor the update runs on: a DTensor's local shard (FSDP2 parameters, gradients and
    state are DTensors; each rank steps its own shard, and a term that reads several entries
    reads the global tensor through the shard's layout, :mod:`qsgd.sharding`), and a
    complex tensor's real view ``view_as_real`` (as ``torch.optim.AdamW``: the real and
    imaginary parts are two real coordinates). Plain real tensors are returned as they are."""
    dtensor = sys.modules.get("torch.distributed.tensor")  # no DTensor exists before its import
    if dtensor is not None and isinstance(t, dtensor.DTensor):
        t = t.to_local()  # under no_grad: the local tensor itself, no copy
    return torch.view_as_real(t) if t.is_complex() else t


class SuperpositionalAdamW(Optimizer):
    r"""AdamW with the perturbation term of Superpositional Gradient Descent.

    Update rule (per tensor, step t = 1, 2, …; see the module docstring for the full form)::

        θ ← (1 − lr·wd)·θ − lr·( m̂/(√v̂ + ε) + λ·Q(θ_before_decay, g) )

    with Q_i = sin(π θ_i)·g_i for the paper's ``perturbation="sin"``. Two variants place the
    sine elsewhere (:data:`qsgd.perturbations.KINDS`): ``"sinnorm"`` multiplies Adam's own
    direction, Q = sin(πθ)⊙m̂/(√v̂+ε) (invariant to rescaling the loss, up to ε), and
    ``"moment"`` (our reading of the paper's undefined "moment updates") feeds
    (1 + λ·sin(πθ))⊙g into the first moment only, v from the raw g.

    It keeps ``torch.optim.AdamW``'s contracts (tested in tests/test_contracts.py): param groups,
    step and state_dict hooks, ``state_dict``/``load_state_dict`` (a state_dict missing keys,
    e.g. one saved by ``torch.optim.AdamW``, is completed with this optimizer's defaults and
    re-validated), ``copy.deepcopy`` and pickling (every setting survives), a one-element
    Tensor ``lr``, zero and absent gradients. Complex parameters are optimised as their real
    view (``torch.view_as_real``), as AdamW does: the perturbation is defined on that view,
    Q = sin(π·Re θ)·Re g and sin(π·Im θ)·Im g (``first_n`` counts real entries of the view).
    FSDP2 (DTensor) parameters are stepped shard by shard on their local tensors, and every
    built-in term equals the unsharded run's to float rounding whatever the sharding
    (``Shard(d)`` on any dim and ``Replicate``, uneven and empty shards): elementwise terms
    need nothing; the RMS of gauss, unif, anti and annealrel is reduced over the global tensor
    (one all-reduce of the local sums of squares per group), keyed noise is drawn by global
    position (a shard takes its entries of the whole tensor's stream: on the CPU each rank
    draws the whole tensor's noise), circuit gathers each tensor's θ (its groups may straddle
    shards), and ``first_n`` is the first ``n_qubits`` entries of the flattened global tensor
    (shards that are contiguous ranges of it only, as ``Shard(0)``, FSDP2's default; others
    raise ``ValueError``). Sharded groups of gauss and unif take the foreach path instead of
    the fused kernel (:func:`qsgd.fused.fused_sharded_reason`), and ``first_n`` on shards the
    per-tensor path. See :mod:`qsgd.sharding`.

    ``torch.compile(fullgraph=True)`` of a function that calls :meth:`step` works with
    ``nonfinite="off"`` and ``track_ratio=False``: the compiled step keeps its step counts and a
    Tensor ``lr`` as tensors (:func:`qsgd.update.compiled_group`), so neither a new step nor a
    scheduler's in-place change of a Tensor lr recompiles (a float lr recompiles when it
    changes). The default ``nonfinite="raise"`` raises at trace time saying so: the check reads
    one flag on the host, which a graph cannot. Stochastic perturbations (gauss, unif, anneal,
    annealrel, anti, and circuit with ``circuit_shots``) key their noise on the host step
    count and cannot be compiled.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer. Every
            argument below from ``lr`` to ``circuit_shots`` may be overridden per group.
        lr: learning rate α (default 1e-3): a number or a one-element Tensor.
        betas: (β1, β2) for the moment averages (default (0.9, 0.999)).
        eps: ε added to √v̂ (default 1e-8).
        weight_decay: decoupled weight decay, as ``torch.optim.AdamW`` (default 1e-2).
        quantum_weight: λ, the weight of the perturbation (default 0.5, the paper's best).
        perturbation: a registry name (``qsgd.perturbations.available()``: none, sin, cos,
            taylor, gauss, unif, anneal, annealrel, anti, circuit, sinnorm, moment) or a
            ``Perturbation`` object (default ``"sin"``). A name keeps ``state_dict`` loadable with
            ``torch.load(weights_only=True)``; an object does not.
        scope: ``"all"`` (default): Q on every coordinate; ``"first_n"``: Q only on the first
            ``n_qubits`` entries of each flattened tensor (the paper's literal scope); the other
            coordinates get exactly the AdamW update.
        n_qubits: n for the ``first_n`` scope and the circuit width (default 4).
        bias_correction: divide the moments by (1 − β^t) (default True). The paper does not say.
        seed: key of the noise streams of stochastic variants: noise depends only on
            (seed, step, tensor index), so a resumed run is bit-identical (default 0).
        foreach: use the multi-tensor path (default: when every tensor of the group is on one
            device, CPU included; on CPU its parameters equal the per-tensor reference path's
            bit for bit, tested for every variant).
        fused: use the fused Triton kernel of :mod:`qsgd.fused` (one launch, one pass over
            memory). ``None`` (default): whenever the group supports it (CUDA, contiguous,
            float32/bfloat16; perturbations none, sin, cos, taylor, gauss, unif, anti,
            anneal, annealrel, and circuit in its closed form) unless
            ``foreach=False``; ``True``: the same, also with ``foreach=False``; ``False``: never.
            Unsupported groups, ``amsgrad=True`` and every step with ``track_ratio=True`` fall
            back silently to the foreach or per-tensor path.
        nonfinite: what a NaN/inf gradient does. ``"raise"`` (default): raise
            :class:`NonFiniteGradientError` naming the parameter, before touching any state;
            ``"skip"``: skip the whole step (no parameter, moment or step count changes), warn,
            and count it in ``skipped_steps``; ``"off"``: no check (saves one host sync a step;
            what a step under ``torch.compile(fullgraph=True)`` needs). Tensors on the
            ``meta`` device hold no values and are not checked.
        track_ratio: record ‖λ·Q‖/‖m̂/(√v̂+ε)‖ over all tensors each step (costs extra work and
            one host sync); read it with :meth:`perturbation_ratio`. Q is the term in the units
            it is added in (:mod:`qsgd.update`): for sinnorm Q = sin(πθ)⊙m̂/(√v̂+ε), so the
            ratio is at most λ; for moment, with f = sin(πθ) the factor on g in m, λ·Q is
            λf/(1+λf)⊙m̂/(√v̂+ε) (0 where 1+λf = 0), the part of m̂ the term holds when f is
            constant over the moment's averaging window; for anneal Q = ξ in gradient units.
            The first step whose ratio exceeds 1 warns (once): the term then dominates Adam's
            step (README, "When the term dominates").
        amsgrad: keep the running maximum of v and divide by it, as
            ``torch.optim.AdamW(amsgrad=True)`` (default False; one more state buffer).
        maximize: maximise the objective (the update sees −g everywhere, the perturbation
            included), as ``torch.optim.AdamW(maximize=True)`` (default False).
        capturable, differentiable: accepted for ``torch.optim.AdamW`` compatibility only as
            False; True raises ``ValueError`` saying why.
        circuit_shots: for ``perturbation="circuit"`` only: S ≥ 1 measurement shots per
            circuit and step, r_i estimated from S X-basis outcomes as a device returns them
            (unbiased, variance (1 − ⟨X⟩²)/S; :class:`qsgd.perturbations.Circuit`, keyed on
            seed, step and tensor index), or ``None`` (default): the exact ⟨X⟩. Any other
            perturbation with a value raises ``ValueError``. Per group, as the keys above.

    References:
        A. E. Pamuk, E. K. Özdemir, Ş. T. Kocabay, "Superpositional Gradient Descent",
        arXiv 2511.01918 (2025). I. Loshchilov, F. Hutter, "Decoupled Weight Decay
        Regularization", ICLR 2019. S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of
        Adam and Beyond", ICLR 2018 (AMSGrad).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        quantum_weight: float = 0.5,
        perturbation: str | Perturbation = "sin",
        scope: str = "all",
        n_qubits: int = 4,
        bias_correction: bool = True,
        seed: int = 0,
        foreach: bool | None = None,
        nonfinite: str = "raise",
        track_ratio: bool = False,
        fused: bool | None = None,
        amsgrad: bool = False,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        circuit_shots: int | None = None,
    ) -> None:
        check_settings(nonfinite, track_ratio)
        defaults = dict(
            lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
            weight_decay=weight_decay, quantum_weight=quantum_weight,
            perturbation=perturbation, scope=scope, n_qubits=n_qubits,
            bias_correction=bias_correction, seed=seed, foreach=foreach, fused=fused,
            amsgrad=amsgrad, maximize=maximize, capturable=capturable,
            differentiable=differentiable, circuit_shots=circuit_shots,
        )
        check_group(defaults)
        self.nonfinite = nonfinite
        self.track_ratio = track_ratio
        self.skipped_steps = 0
        self._ratios: list[Tensor] = []
        self._warned_dominant = False
        self._pending_clip: tuple[Tensor, list[Tensor]] | None = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.add_param_group``; the group (completed with the
        defaults) is validated first, so a bad group is never added."""
        if isinstance(param_group, dict):  # torch raises the TypeError for anything else
            probe = complete({k: v for k, v in param_group.items() if k != "params"},
                             self.defaults)
            check_group(probe, where=f"param group {len(self.param_groups)}: ")
        super().add_param_group(param_group)

    # every setting survives copy.deepcopy and pickle (torch's __getstate__ keeps only
    # defaults, state and param_groups) and state_dict, which carries them under "qsgd"
    _SETTINGS = ("nonfinite", "track_ratio", "skipped_steps")
    _PRIVATE = ("_ratios", "_warned_dominant")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in self._SETTINGS + self._PRIVATE:
            state[key] = getattr(self, key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Both ``load_state_dict`` (``state`` holds "state" and "param_groups") and
        unpickling (it also holds "defaults" and the settings) come here: each group is
        completed with the defaults and validated before anything changes."""
        unpickling = "defaults" in state
        if unpickling:
            state = dict(state)
            state["defaults"] = complete(dict(state["defaults"]), DEFAULTS)
            for key, value in zip(self._SETTINGS, ("raise", False, 0)):
                state.setdefault(key, value)
            check_settings(*(state[k] for k in self._SETTINGS), where="unpickled optimizer: ")
        defaults = state["defaults"] if unpickling else self.defaults
        source = "unpickled optimizer" if unpickling else "loaded state_dict"
        for i, group in enumerate(state["param_groups"]):
            complete(group, defaults)
            check_group(group, where=f"{source} param group {i}: ")
        super().__setstate__(state)
        self.__dict__.setdefault("_ratios", [])
        self.__dict__.setdefault("_warned_dominant", False)
        self.__dict__["_pending_clip"] = None  # a deferred clipping product is not state

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["qsgd"] = {key: getattr(self, key) for key in self._SETTINGS}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``. Keys a state_dict lacks (one saved by
        ``torch.optim.AdamW`` or an older qsgd) take this optimizer's defaults; every
        hyperparameter is validated before anything changes."""
        state_dict = dict(state_dict)
        extra = dict(state_dict.pop("qsgd", None) or {})
        settings = {"nonfinite": self.nonfinite, "track_ratio": self.track_ratio,
                    "skipped_steps": 0, **extra}
        check_settings(*(settings[k] for k in self._SETTINGS), where="loaded state_dict: ")
        super().load_state_dict(state_dict)
        for key in self._SETTINGS:
            setattr(self, key, settings[key])

    def perturbation_ratio(self) -> float:
        """Mean over tracked steps of ‖λ·Q‖/‖Adam direction‖ (NaN if nothing was tracked)."""
        if not self._ratios:
            return float("nan")
        return float(torch.stack(self._ratios).mean())

    def ratio_history(self) -> list[float]:
        """Per-step ratios recorded with ``track_ratio=True``."""
        return [float(r) for r in self._ratios]

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0,
                        error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over this optimizer's parameters, with the
        gradients' product by the clipping coefficient moved into the next :meth:`step`'s
        fused kernel where it runs (one pass over the gradients fewer: 2.0 ms a step at 1B
        float32 parameters on an H200, results/bench/optimizer-clip).

        Returns the total norm, as torch's function does. The coefficient is torch's,
        ``min(max_norm / (total_norm + 1e-6), 1)`` from ``torch.nn.utils.get_total_norm``, and
        the kernel multiplies each gradient it reads by it and rounds to the gradient's dtype,
        as ``torch._foreach_mul_`` does; the step then agrees with clipping in place and
        stepping to a rounding (the kernel with the product is another compilation, whose
        fused multiply-adds may differ: on an H200 the second moment came out one rounding
        apart in places), and on every other path bit for bit. The product is deferred only
        when the next step is sure to take the fused kernel (every parameter a plain tensor
        on one CUDA device with a kernel for its group:
        :func:`qsgd.fused.fused_unsupported_reason`; no ``maximize``, AMSGrad,
        ``track_ratio`` or ``fused=False``; not under ``torch.compile``; torch ≥ 2.6);
        otherwise the gradients are clipped here, by torch's function. While a product is
        deferred, ``p.grad`` holds the unclipped gradient, and keeps holding it after the
        step; :meth:`zero_grad` drops the pending product, a second call first applies it,
        and a step that finds other gradient tensors than this call saw applies it to those
        it saw, then steps as usual.
        """
        self._apply_pending_clip()
        groups = [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        params = [p for ps in groups for p in ps]
        if not self._can_defer_clip(groups):
            return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type,
                                                  error_if_nonfinite, foreach)
        grads = [p.grad for p in params]
        total = torch.nn.utils.get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
        coef = torch.clamp(float(max_norm) / (total + 1e-6), max=1.0)
        self._pending_clip = (coef.to(grads[0].device), grads)
        return total

    def _can_defer_clip(self, groups: list[list[Tensor]] | None = None) -> bool:
        """Whether the next step will run every group through the fused kernel (see
        :meth:`clip_grad_norm_`), so that the kernel can apply the clipping product;
        ``groups``: each group's parameters with a gradient, if at hand. Checked
        with C-level maps over the tensors (it runs every step); a group the kernel turns
        down after all (:func:`qsgd.fused.fused_group` checks the real moments) multiplies
        its gradients itself in :meth:`step`, so this only has to be right to be fast."""
        if (torch.compiler.is_compiling() or self.track_ratio
                or not hasattr(torch.nn.utils, "get_total_norm")):
            return False
        from .fused import fused_unsupported_reason

        plain = {torch.Tensor, torch.nn.Parameter}
        devices = set()
        if groups is None:
            groups = [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        for group, params in zip(self.param_groups, groups, strict=True):
            if not params:
                continue
            fused = group.get("fused")
            if fused is False or (fused is None and group["foreach"] is False):
                return False
            if group["amsgrad"] or group["maximize"]:
                return False
            grads = [p.grad for p in params]
            # plain real tensors (no DTensor, complex or sparse): the step's own tensors
            if (not set(map(type, params)) | set(map(type, grads)) <= plain
                    or any(map(Tensor.is_complex, params))
                    or set(map(_LAYOUT, grads)) != {torch.strided}):
                return False
            devices.update(map(_DEVICE, params))
            # the moments are zeros_like(p), p's dtype, device and strides: p stands in
            if fused_unsupported_reason(params, grads, params, params, group_perturbation(group),
                                        group["n_qubits"]) is not None:
                return False
        return len(devices) == 1

    def _apply_pending_clip(self) -> None:
        """Multiply the gradients a deferred clipping saw by its coefficient, as torch's
        clipping would have, and forget it."""
        pending, self._pending_clip = self._pending_clip, None
        if pending is not None and pending[1]:
            torch._foreach_mul_(pending[1], pending[0])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As ``torch.optim.Optimizer.zero_grad``; a deferred clipping product
        (:meth:`clip_grad_norm_`) is dropped with the gradients."""
        self._pending_clip = None
        super().zero_grad(set_to_none=set_to_none)

    def _param_name(self, gi: int, pi: int, p: Tensor) -> str:
        names = self.param_groups[gi].get("param_names")
        if names is not None and pi < len(names):
            return f"{names[pi]!r}"
        return f"param_groups[{gi}]['params'][{pi}] (shape {tuple(p.shape)})"

    def _flat_candidate(self, group: dict[str, Any], params: list[Tensor],
                        grads: list[Tensor]) -> bool:
        """Whether a group may take the flat CPU path (:func:`_flat_group`): foreach allowed,
        scope "all", no AMSGrad, one CPU dtype, contiguous, and few enough entries that a
        concatenated copy is cheap. (The path also needs one step count; :meth:`step` checks
        that, and plain real parameters; :meth:`_collect` does.)"""
        return (group["foreach"] is not False and group["scope"] == "all"
                and not group["amsgrad"] and params[0].device.type == "cpu"
                and len({p.dtype for p in params} | {g.dtype for g in grads}) == 1
                and all(p.is_contiguous() for p in params)
                and sum(p.numel() for p in params) <= FLAT_MAX_NUMEL)

    def _collect(self) -> list[_Work]:
        """The tensors with a gradient, group by group, as the paths see them."""
        work = []
        index = 0
        for gi, group in enumerate(self.param_groups):
            originals, params, grads, idx = [], [], [], []
            plain = True
            for pi, p in enumerate(group["params"]):
                g = p.grad
                if g is not None:
                    if g.is_sparse:
                        raise ValueError("SuperpositionalAdamW does not support sparse gradients "
                                         f"({self._param_name(gi, pi, p)})")
                    rp = _real_local(p)
                    plain = plain and rp is p
                    originals.append(p)
                    params.append(rp)
                    grads.append(_real_local(g))
                    idx.append(index)
                index += 1
            if params:
                if group["maximize"]:
                    grads = torch._foreach_neg(grads)
                flat = plain and self._flat_candidate(group, params, grads)
                shards = None if plain else self._shards(gi, originals, params)
                work.append(_Work(gi, group, originals, params, grads, idx, flat, shards))
        return work

    def _shards(self, gi: int, originals: list[Tensor], params: list[Tensor]) -> list | None:
        """Each tensor's :class:`qsgd.sharding.ShardLayout` (None for a plain or replicated
        one), or None when no tensor of the group is sharded. Cached per parameter: a
        parameter's placements do not change."""
        dtensor = sys.modules.get("torch.distributed.tensor")
        if dtensor is None:
            return None
        from .sharding import layout_of

        cache = self.__dict__.setdefault("_layout_cache", {})
        out = []
        for p, rp in zip(originals, params):
            hit = cache.get(id(p))
            if hit is None or hit[0] is not p:
                lay = layout_of(p) if isinstance(p, dtensor.DTensor) else None
                if lay is not None and lay.local_shape != tuple(rp.shape):
                    pi = next(i for i, q in enumerate(self.param_groups[gi]["params"]) if q is p)
                    raise ValueError(
                        f"{self._param_name(gi, pi, p)}: local shard of shape "
                        f"{tuple(rp.shape)}, but its placements {lay.placements} give "
                        f"{lay.local_shape}: the shard is not the box the placements describe")
                hit = cache[id(p)] = (p, lay)
            out.append(hit[1])
        return out if any(lay is not None for lay in out) else None

    def _nonfinite_ok(self, work: list[_Work], flat: dict[int, Tensor]) -> bool:
        """True if every gradient is finite; otherwise raise or report a skip. ``flat`` holds
        the concatenated gradients of the flat-path groups: one sum checks each (NaN and ±inf
        propagate through it; an overflow to inf only sends us to the exact check below).
        Meta tensors hold no values: they are not checked.

        Sharded (DTensor) parameters: the verdict is collective. Each rank's finding is summed
        over the process groups that shard its tensors (one scalar all-reduce a step), so a
        NaN in one rank's shard makes every rank raise or skip together: a rank that skipped
        alone would desynchronise the shards' step counts, and one that raised alone would
        leave the others waiting in their next collective."""
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"nonfinite={self.nonfinite!r} reads one flag on the host each step, which a "
                "torch.compile graph cannot do: pass nonfinite='off' to compile the step")
        checks = [torch.isfinite(g.sum(dtype=torch.float64)) for g in flat.values()]
        # an empty tensor has no infinity norm (torch raises) and nothing to check
        rest = [g for w in work if w.gi not in flat for g in w.grads
                if g.device.type != "meta" and g.numel()]
        if rest:
            maxabs = torch._foreach_norm(rest, float("inf"))
            dev = maxabs[0].device
            checks.append(torch.isfinite(torch.stack([x.float().to(dev) for x in maxabs])).all())
        bad = None if all(bool(c) for c in checks) else self._first_nonfinite(work)
        remote = self._nonfinite_elsewhere(work, bad is not None)
        if bad is None and not remote:
            return True  # (also when a sum overflowed: every value is finite)
        where = ("a gradient of another rank's shard (this rank's gradients are finite)"
                 if bad is None else bad)
        if self.nonfinite == "raise":
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or inf) in {where}; no parameter or optimizer "
                "state was changed. Pass nonfinite='skip' to skip such steps instead.")
        self.skipped_steps += 1
        warnings.warn(f"non-finite gradient in {where}: step skipped "
                      f"({self.skipped_steps} skipped so far)", RuntimeWarning, stacklevel=3)
        return False

    def _first_nonfinite(self, work: list[_Work]) -> str | None:
        """The name of the first parameter whose gradient holds a NaN or inf, or None."""
        for w in work:
            group_params = self.param_groups[w.gi]["params"]
            for p, g in zip(w.originals, w.grads):
                if g.device.type != "meta" and not bool(torch.isfinite(g).all()):
                    pi = next(i for i, q in enumerate(group_params) if q is p)
                    return self._param_name(w.gi, pi, p)
        return None

    @staticmethod
    def _nonfinite_elsewhere(work: list[_Work], here: bool) -> bool:
        """For sharded groups: True when this rank's gradients are finite (``here`` False)
        but another rank's are not. Every rank's finding is summed over the process groups
        that shard the tensors, in the order the tensors first name them (the same on every
        rank), so every rank takes part even when it found a NaN itself. False, with no
        collective, when nothing is sharded."""
        groups, device = {}, None
        for w in work:
            for lay, g in zip(w.shards or (), w.grads):
                if lay is not None:
                    device = device or g.device
                    for pg in lay.groups:
                        groups.setdefault(id(pg), pg)
        if not groups:
            return False
        import torch.distributed as dist

        flag = torch.tensor([1.0 if here else 0.0], device=device)
        for pg in groups.values():
            dist.all_reduce(flag, op=dist.ReduceOp.SUM, group=pg)
        return bool(flag.item() > 0) and not here

    def _state_lists(self, w: _Work, compiling: bool = False) -> tuple[
            list[Tensor], list[Tensor], list[Tensor] | None, list]:
        """Moments (real, local views), AMSGrad maxima (or None) and this step's numbers of
        the group's tensors; the state is created on first use and the step counts advance
        (host integers; 0-dim float32 tensors under ``torch.compile``)."""
        m, v, vmax, steps = [], [], [], []
        amsgrad = w.group["amsgrad"]
        for p in w.originals:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if compiling:  # a 0-dim tensor on the parameter's device: no recompile per step
                st = state["step"]
                if not isinstance(st, Tensor) or st.device != p.device:
                    st = torch.as_tensor(st, dtype=torch.float32, device=p.device).clone()
                state["step"] = st.add_(1)
            else:
                state["step"] = int(state["step"]) + 1
            m.append(_real_local(state["exp_avg"]))
            v.append(_real_local(state["exp_avg_sq"]))
            if amsgrad:
                vmax.append(_real_local(state["max_exp_avg_sq"]))
            steps.append(state["step"])
        return m, v, (vmax if amsgrad else None), steps

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        work = self._collect()
        compiling = torch.compiler.is_compiling()
        pending = self._pending_clip
        if pending is not None:
            seen = [g for w in work for g in w.grads]
            if (compiling or any(w.flat or w.shards is not None for w in work)
                    or len(seen) != len(pending[1])
                    or any(a is not b for a, b in zip(seen, pending[1]))):
                self._apply_pending_clip()  # not the step clipping expected: as torch
                pending = None
        # a deferred clipping product (clip_grad_norm_): the fused kernel applies it; any
        # other path multiplies its group's gradients first
        scale = None if pending is None else pending[0]
        if compiling and self.track_ratio:
            raise ValueError("track_ratio=True appends to a host list every step, which "
                             "torch.compile would recompile for each time: switch it off for "
                             "compiled steps (or record the ratio on eager steps)")
        # the flat CPU groups' gradients, concatenated once (one C++ call), serve both the
        # non-finite check and the update
        flat = {} if compiling else {w.gi: _concat(w.grads) for w in work if w.flat}
        if self.nonfinite != "off" and not self._nonfinite_ok(work, flat):
            self._apply_pending_clip()  # the step is skipped: the gradients as torch leaves them
            return loss
        self._pending_clip = None

        stats: dict[str, Tensor] | None = {} if self.track_ratio else None
        for w in work:
            group, params, grads, idx = w.group, w.params, w.grads, w.idx
            m, v, vmax, steps = self._state_lists(w, compiling)
            hyper = self._hyper(group, compiling)
            shards = w.shards
            if compiling and shards is not None and (
                    group["scope"] != "all" or not hyper["perturbation"].elementwise):
                raise ValueError(
                    f"perturbation {hyper['perturbation'].name!r} with scope "
                    f"{group['scope']!r} reads the whole of a sharded (DTensor) tensor, which "
                    "the compiled step does not do: step eagerly, or use an elementwise "
                    "perturbation with scope 'all'")
            if compiling:  # traced into the caller's graph (qsgd.update.compiled_group)
                compiled_group(params, grads, m, v, steps, idx, stats=stats,
                               max_exp_avg_sqs=vmax, **hyper)
                continue
            if w.gi in flat and steps.count(steps[0]) == len(steps):
                m_flat, v_flat = self._flat_state(w.gi, params, m, v)
                _flat_group(params, flat[w.gi], m_flat, v_flat, steps[0], idx, stats=stats,
                            **hyper)
                continue
            if shards is not None and group["scope"] != "all":
                # first_n on shards: each shard's in-scope prefix has its own length
                for k, (p, g, ea, eas, s, i) in enumerate(zip(params, grads, m, v, steps, idx)):
                    reference_step(p, g, ea, eas, step=s, index=i, stats=stats,
                                   max_exp_avg_sq=None if vmax is None else vmax[k],
                                   shard=shards[k], **hyper)
                continue
            # [fused] one Triton launch for the group when supported (qsgd.fused); else below.
            # Support (device, dtype, perturbation, Triton) is decided by fused_group alone, with
            # qsgd.fused.fused_unsupported_reason; here only the user's switch, track_ratio and
            # AMSGrad (which the kernel does not compute).
            use_fused = group.get("fused")
            if use_fused is None:
                use_fused = group["foreach"] is not False
            if use_fused and stats is None and vmax is None:
                from .fused import fused_group

                if fused_group(params, grads, m, v, steps, idx, sharded=shards is not None,
                               grad_scale=scale, **hyper):
                    continue
            # [/fused]
            if scale is not None:  # this group's gradients as clipping would have left them
                torch._foreach_mul_(grads, scale)
            use_foreach = group["foreach"]
            if use_foreach is None:  # on CPU too: fewer Python-level ops for small models
                use_foreach = len({p.device for p in params}) == 1
            if use_foreach and all(p.is_contiguous() for p in params):
                _foreach_group(params, grads, m, v, steps, idx, stats=stats,
                               max_exp_avg_sqs=vmax, shards=shards, **hyper)
            else:
                for k, (p, g, ea, eas, s, i) in enumerate(zip(params, grads, m, v, steps, idx)):
                    reference_step(p, g, ea, eas, step=s, index=i, stats=stats,
                                   max_exp_avg_sq=None if vmax is None else vmax[k],
                                   shard=None if shards is None else shards[k], **hyper)
        if stats is not None and "adam_sq" in stats:
            self._record_ratio(stats)
        return loss

    def _record_ratio(self, stats: dict[str, Tensor]) -> None:
        """Store this step's ‖λQ‖/‖Adam step‖ and warn the first time it exceeds 1."""
        pert = stats.get("pert_sq", torch.zeros((), dtype=torch.float64))
        ratio = (pert.sqrt() / stats["adam_sq"].sqrt()).detach()
        self._ratios.append(ratio)
        if not self._warned_dominant and float(ratio) > 1.0:
            self._warned_dominant = True
            warnings.warn(
                f"the perturbation term dominates the Adam step: ||lambda*Q|| / ||Adam step|| "
                f"= {float(ratio):.3g} > 1. A term in gradient units (sin and its controls) "
                "meets Adam's normalised step, so at large gradients it can raise the loss "
                "(README: 'When the term dominates'). Warned once per optimizer.",
                RuntimeWarning, stacklevel=2)

    def _flat_state(self, gi: int, params: list[Tensor], m: list[Tensor],
                    v: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The group's moments as two flat buffers whose slices *are* the per-parameter state
        tensors ``m``, ``v`` (so state_dict, resume and the other paths see the usual layout).
        Rebuilt from the current state whenever a state tensor is no longer one of those
        slices (first step, load_state_dict, a user's replacement)."""
        cache = self.__dict__.setdefault("_flat_cache", {})
        hit = cache.get(gi)
        if hit is not None:
            bufs, views_m, views_v = hit
            if (len(views_m) == len(m) and all(map(operator.is_, m, views_m))
                    and all(map(operator.is_, v, views_v))):
                return bufs
        bufs = (_concat(m), _concat(v))
        views = []
        for buf, key in zip(bufs, ("exp_avg", "exp_avg_sq")):
            vs = _unflatten_dense_tensors(buf, params)
            for p, t in zip(params, vs):
                self.state[p][key] = t
            views.append(list(vs))
        cache[gi] = (bufs, *views)
        return bufs

    @staticmethod
    def _hyper(group: dict[str, Any], compiling: bool = False) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        return dict(
            # a compiled step keeps a Tensor lr a tensor (float() would read it on the host)
            lr=lr if compiling and isinstance(lr, Tensor) else float(lr),
            beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], quantum_weight=float(group["quantum_weight"]),
            perturbation=group_perturbation(group), scope=group["scope"],
            n_qubits=group["n_qubits"], bias_correction=group["bias_correction"],
            seed=group["seed"],
        )
