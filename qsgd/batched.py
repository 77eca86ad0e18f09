"""Seed-batched SuperpositionalAdamW: S runs that differ only in their seed, stepped at once.

A grid trains many runs of one configuration that differ only in the run seed (data order,
init, noise). :class:`SeedBatchedAdamW` steps S such runs together. Its parameters are stacked
on a leading seed axis (tensor k of every run is one tensor ``[S, *shape_k]``, e.g. from
``torch.func.stack_module_state`` or :class:`qsgd.models.SeedBatchedClassifier`), and each
run's slice ``p[s]`` is updated exactly as one :class:`~qsgd.SuperpositionalAdamW` (one
parameter group, the same hyperparameters, ``seed=seeds[s]``) updates that run's tensors:

* the elementwise update (decay, moments, Adam step, the term of an elementwise perturbation)
  runs once over a flat buffer ``[S, N]`` whose row s is run s's parameters concatenated in
  tensor order: the layout of the single-run optimizer's flat CPU path, each row its buffer
  (the parameters become views of it, as the moments are: no copy back);
* everything that reads more than one entry is computed per run, with that run's own
  context: the perturbation terms that are not elementwise (the RMS of gauss, unif, annealrel
  and anti, the circuit's groups) from run s's tensors with its noise keys (seed s, step,
  tensor index k), the first-n scope (the first n entries of each tensor of each run), the
  non-finite check and the diagnostic ratio ‖λQ‖/‖Adam step‖ (per run, as
  :meth:`perturbation_ratio` returns it).

On a CPU each run's parameters, moments and ratios equal those of its own single-run
optimizer bit for bit (tested for every perturbation, both scopes, with and without bias
correction): PyTorch's elementwise CPU kernels give an entry the same result wherever it lies
in a tensor (checked for the operations used here), and every reduction is taken over the
same entries, in the same order, as in the single-run path.

Limits (refused with a message): one parameter group, real dense floating tensors on one
device, no AMSGrad, no maximize, host float ``lr``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .hyper import DEFAULTS, check_group, check_settings, group_perturbation
from .optimizer import NonFiniteGradientError
from .perturbations import Context, None_
from .update import _acc, _bias_corrections, _foreach_sq, _moment_share

__all__ = ["SeedBatchedAdamW", "SeedNonFiniteError"]


class SeedNonFiniteError(NonFiniteGradientError):
    """Some runs of a seed-batched step have a non-finite gradient; ``errors`` maps each such
    run's position to the message its single-run optimizer would raise. Raised before any
    parameter or state changes."""

    def __init__(self, errors: dict[int, str]):
        self.errors = dict(errors)
        runs = ", ".join(str(s) for s in sorted(errors))
        super().__init__(f"non-finite gradient in run(s) {runs} of the batch: "
                         + next(iter(self.errors.values())))


class SeedBatchedAdamW:
    """SuperpositionalAdamW for S runs stacked on a leading seed axis (module docstring).

    Args:
        params: the stacked parameters, in the single-run optimizer's order (its tensor
            index k, which keys the noise, is the position in this list); each of shape
            ``[S, *shape_k]``, S the same for all. They are made views of one flat buffer
            (their values are kept).
        seeds: the noise seed of each run (``seed`` of its single-run optimizer), S of them.
        lr, betas, eps, weight_decay, quantum_weight, perturbation, scope, n_qubits,
            bias_correction, circuit_shots: as :class:`qsgd.SuperpositionalAdamW`, shared by
            the runs (run s's shots keyed on its own seed).
            ``lr`` may be changed between steps (a schedule).
        nonfinite: ``"raise"`` (default): a run whose gradient holds NaN or ±inf raises
            :class:`SeedNonFiniteError` naming it (and the tensor) before anything changes;
            ``"off"``: no check.
        track_ratio: record ‖λ·Q‖/‖Adam direction‖ per run at this step (set it before a
            step, as on the single-run optimizer).
    """

    def __init__(self, params: Sequence[Tensor], seeds: Sequence[int], *,
                 lr: float = DEFAULTS["lr"], betas: tuple[float, float] = DEFAULTS["betas"],
                 eps: float = DEFAULTS["eps"], weight_decay: float = DEFAULTS["weight_decay"],
                 quantum_weight: float = DEFAULTS["quantum_weight"],
                 perturbation: Any = DEFAULTS["perturbation"], scope: str = DEFAULTS["scope"],
                 n_qubits: int = DEFAULTS["n_qubits"],
                 bias_correction: bool = DEFAULTS["bias_correction"], nonfinite: str = "raise",
                 track_ratio: bool = False, circuit_shots: int | None = None):
        if nonfinite not in ("raise", "off"):
            raise ValueError(f"invalid nonfinite: {nonfinite!r} (a seed-batched step supports "
                             "'raise' and 'off')")
        check_settings(nonfinite, track_ratio)
        seeds = [int(s) for s in seeds]
        group = dict(DEFAULTS, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                     quantum_weight=quantum_weight, perturbation=perturbation, scope=scope,
                     n_qubits=n_qubits, bias_correction=bias_correction, seed=0,
                     circuit_shots=circuit_shots)
        check_group(group)
        if isinstance(lr, Tensor):
            raise ValueError("a seed-batched step takes a float lr")
        params = list(params)
        if not params or not seeds:
            raise ValueError("SeedBatchedAdamW needs at least one parameter and one seed")
        S = len(seeds)
        for k, p in enumerate(params):
            if p.dim() < 1 or p.shape[0] != S:
                raise ValueError(f"params[{k}] (shape {tuple(p.shape)}) is not stacked on a "
                                 f"leading axis of the {S} seeds")
            if not p.is_floating_point() or p.is_sparse:
                raise ValueError(f"params[{k}] must be a dense floating tensor, got {p.dtype}")
        if len({(p.dtype, p.device) for p in params}) != 1:
            raise ValueError("SeedBatchedAdamW needs every parameter in one dtype on one device")
        self.params, self.seeds = params, seeds
        self.lr = float(lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.quantum_weight = float(quantum_weight)
        self.perturbation = group_perturbation(group)
        self.scope, self.n_qubits, self.bias_correction = scope, n_qubits, bias_correction
        self.nonfinite, self.track_ratio = nonfinite, track_ratio
        self.step_count = 0
        self.sizes = [p[0].numel() for p in params]
        self.offsets = [sum(self.sizes[:k]) for k in range(len(params))]
        n = sum(self.sizes)
        like = params[0]
        self.theta = like.new_empty(S, n)
        self.exp_avg = torch.zeros_like(self.theta)
        self.exp_avg_sq = torch.zeros_like(self.theta)
        self._ratios: list[list[Tensor]] = [[] for _ in seeds]
        self._warned_dominant = False
        self._bind()

    # ------------------------------------------------------------------ layout
    def _block(self, flat: Tensor, k: int) -> Tensor:
        """Tensor k's columns of a flat ``[S, N]`` buffer: ``[S, numel_k]``."""
        return flat[:, self.offsets[k]:self.offsets[k] + self.sizes[k]]

    def _bind(self) -> None:
        """Copy the parameters into ``theta`` and make them views of it (row s: run s's
        tensors concatenated, the single-run flat path's layout)."""
        S = len(self.seeds)
        with torch.no_grad():
            for k, p in enumerate(self.params):
                block = self._block(self.theta, k)
                block.copy_(p.detach().reshape(S, -1))
                p.data = block.view(p.shape)
        self._ptrs = [p.data_ptr() for p in self.params]

    def _bound(self) -> bool:
        return all(p.data_ptr() == q for p, q in zip(self.params, self._ptrs))

    def _scoped(self, flat: Tensor) -> list[Tensor]:
        """The in-scope parts of a flat buffer: the whole of it (scope "all"), or per tensor
        the ``[S, min(n, numel_k)]`` view of its first n entries in every run (first_n)."""
        if self.scope == "all":
            return [flat]
        return [self._block(flat, k)[:, :self.n_qubits] for k in range(len(self.params))]

    # ------------------------------------------------------------------ checks
    def _nonfinite_errors(self, grad: Tensor) -> dict[int, str]:
        """Run position → the single-run optimizer's message, for runs whose gradient is not
        finite: one sum per run first (NaN and ±inf propagate through it; an overflow to inf
        only sends that run to the exact check), then the exact check where it is not
        finite. In the gradient's own dtype: a float64 copy of the whole batch would cost more
        than the step's update."""
        sums = grad.sum(dim=1)
        bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()  # one device sync
        errors = {}
        for s in bad:
            for k, p in enumerate(self.params):
                if not bool(torch.isfinite(self._block(grad, k)[s]).all()):
                    errors[s] = (f"non-finite gradient (NaN or inf) in param_groups[0]['params']"
                                 f"[{k}] (shape {tuple(p.shape[1:])}); no parameter or "
                                 "optimizer state was changed. Pass nonfinite='skip' to skip "
                                 "such steps instead.")
                    break
        return errors

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> None:
        """One step of every run (module docstring). Parameters without a gradient are an
        error: every run's every tensor is stepped."""
        missing = [k for k, p in enumerate(self.params) if p.grad is None]
        if missing:
            raise ValueError(f"params[{missing[0]}] has no gradient: a seed-batched step needs "
                             "every tensor's gradient")
        if not self._bound():  # a parameter's data was replaced: take its values again
            self._bind()
        S = len(self.seeds)
        grad = torch.cat([p.grad.reshape(S, -1) for p in self.params], dim=1)
        if self.nonfinite == "raise":
            errors = self._nonfinite_errors(grad)
            if errors:
                raise SeedNonFiniteError(errors)
        self.step_count += 1
        step, lam, pert = self.step_count, self.quantum_weight, self.perturbation
        lr, (beta1, beta2), eps = self.lr, self.betas, self.eps
        theta, m, v = self.theta, self.exp_avg, self.exp_avg_sq
        stats = [{} for _ in range(S)] if self.track_ratio else None
        direction = gradient = factor = m_factor = None
        if lam != 0.0 and not isinstance(pert, None_):
            terms = self._terms(theta, grad, step)
            direction, gradient, factor, m_factor = (
                terms if pert.kind == kind else None
                for kind in ("direction", "gradient", "normalized", "first-moment"))
            if stats is not None and (direction is not None or gradient is not None):
                for s in range(S):
                    _acc(stats[s], "pert_sq", self._sq(terms, s) * (lam * lam))
            if gradient is not None:
                for g_s, t in zip(self._scoped(grad), gradient):
                    g_s.add_(t, alpha=lam)  # grad is this step's own copy
        # the rest of qsgd.update._adam_update, in-scope parts per tensor (first_n) or whole
        if self.weight_decay != 0.0:
            theta.mul_(1.0 - lr * self.weight_decay)
        g_m = grad
        if m_factor is not None:
            g_m = grad.clone()
            for gm_s, g_s, f in zip(self._scoped(g_m), self._scoped(grad), m_factor):
                gm_s.add_(f * g_s, alpha=lam)
        m.lerp_(g_m, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bc1, bc2 = _bias_corrections(step, beta1, beta2, self.bias_correction)
        denom = (v.sqrt() / (bc2**0.5)).add_(eps)
        q = direction
        if factor is not None:  # Q = r⊙u on the in-scope entries
            q = [(m_s / bc1).div_(d_s).mul_(r)
                 for m_s, d_s, r in zip(self._scoped(m), self._scoped(denom), factor)]
        if stats is not None:
            self._adam_stats(stats, m, denom, bc1, lam, q if factor is not None else None,
                             m_factor)
        theta.addcdiv_(m, denom, value=-(lr / bc1))
        if q is not None:
            for p_s, q_s in zip(self._scoped(theta), q):
                p_s.add_(q_s, alpha=-lr * lam)
        if stats is not None:
            for s in range(S):
                if "adam_sq" in stats[s]:
                    pert_sq = stats[s].get("pert_sq", torch.zeros((), dtype=torch.float64))
                    ratio = pert_sq.sqrt() / stats[s]["adam_sq"].sqrt()
                    self._ratios[s].append(ratio)
                    if not self._warned_dominant and float(ratio) > 1.0:
                        self._warned_dominant = True
                        warnings.warn(
                            f"the perturbation term dominates the Adam step of run {s}: "
                            f"||lambda*Q|| / ||Adam step|| = {float(ratio):.3g} > 1 (README: "
                            "'When the term dominates'). Warned once per optimizer.",
                            RuntimeWarning, stacklevel=2)

    def _contexts(self, s: int, step: int) -> list[Context]:
        return [Context(step=step, seed=self.seeds[s], index=k, n_qubits=self.n_qubits)
                for k in range(len(self.params))]

    def _terms(self, theta: Tensor, grad: Tensor, step: int) -> list[Tensor]:
        """The perturbation's term on the in-scope parts (:meth:`_scoped`): for scope "all" one
        ``[S, N]`` tensor, for first_n one ``[S, n_k']`` tensor per parameter. An elementwise
        term is one call on all runs at once (it reads neither seed nor index); any other is
        computed run by run from that run's slices and contexts, with the single-run paths'
        own call (``terms`` over the run's tensors)."""
        pert, S = self.perturbation, len(self.seeds)
        scoped_theta, scoped_grad = self._scoped(theta), self._scoped(grad)
        if pert.elementwise:
            ctx = Context(step=step, seed=self.seeds[0], index=0, n_qubits=self.n_qubits)
            return [pert.term(t, g, ctx) for t, g in zip(scoped_theta, scoped_grad)]
        per_run = []
        for s in range(S):
            if self.scope == "all":
                t_s = [self._block(theta, k)[s] for k in range(len(self.params))]
                g_s = [self._block(grad, k)[s] for k in range(len(self.params))]
            else:
                t_s = [t[s] for t in scoped_theta]
                g_s = [g[s] for g in scoped_grad]
            per_run.append(pert.terms(t_s, g_s, self._contexts(s, step)))
        if self.scope == "all":
            return [torch.stack([torch.cat(ts) for ts in per_run])]
        return [torch.stack([ts[k] for ts in per_run]) for k in range(len(self.params))]

    def _sq(self, parts: list[Tensor], s: int) -> Tensor:
        """Σ x² of run s's entries of in-scope ``parts`` in float64, summed as the single-run
        path sums them (the flat path: one sum over its row; foreach: per-tensor norms)."""
        if self.scope == "all":
            return parts[0][s].double().pow(2).sum()
        return _foreach_sq([x[s] for x in parts])

    def _adam_stats(self, stats: list[dict[str, Tensor]], m: Tensor, denom: Tensor, bc1: float,
                    lam: float, q: list[Tensor] | None, m_factor: list[Tensor] | None) -> None:
        """‖u‖² and the terms of the normalized and first-moment kinds, per run (the stats of
        ``qsgd.update._adam_update`` and ``_foreach_group``)."""
        d = (m / bc1).div_(denom)
        for s in range(len(self.seeds)):
            if self.scope == "all":
                _acc(stats[s], "adam_sq", d[s].double().pow(2).sum())
            else:
                _acc(stats[s], "adam_sq", _foreach_sq([self._block(d, k)[s]
                                                       for k in range(len(self.params))]))
            if q is not None:
                _acc(stats[s], "pert_sq", self._sq(q, s) * (lam * lam))
            if m_factor is not None:
                shares = [_moment_share(f[s], lam) * d_s[s]
                          for f, d_s in zip(m_factor, self._scoped(d))]
                _acc(stats[s], "pert_sq", shares[0].double().pow(2).sum()
                     if self.scope == "all" else _foreach_sq(shares))

    # ------------------------------------------------------------------ diagnostics
    def perturbation_ratio(self) -> list[float]:
        """Per run: the mean over tracked steps of ‖λ·Q‖/‖Adam direction‖ (NaN if nothing was
        tracked), as :meth:`qsgd.SuperpositionalAdamW.perturbation_ratio`."""
        return [float(torch.stack(r).mean()) if r else float("nan") for r in self._ratios]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
