"""The perturbation family: one small object per variant, one registry.

A perturbation is the term that Superpositional Gradient Descent adds to Adam. With
u = m̂/(√v̂+ε) Adam's (bias-corrected, normalised) direction, it comes in four kinds
(:data:`KINDS`), each naming where the tensor that :meth:`Perturbation.term` returns enters
the step:

* ``kind = "direction"``: a tensor Q added to the Adam direction,
  ``θ ← θ − lr·(u + λ·Q)``. The paper's sine, and every control of the same shape
  (cos, taylor, gauss, unif, anti, circuit).
* ``kind = "gradient"``: a tensor ξ added to the gradient *before* both moments,
  ``g ← g + λ·ξ`` (anneal, as ``optax.add_noise``).
* ``kind = "normalized"``: a factor r that multiplies Adam's own direction,
  ``θ ← θ − lr·(u + λ·r⊙u)``, i.e. Q = r⊙u: a term in the units of Adam's step, so the update
  is invariant to rescaling the loss as Adam's is (sinnorm).
* ``kind = "first-moment"``: a factor f on the gradient in the *first* moment only,
  ``m ← β1·m + (1−β1)·(1 + λ·f)⊙g``, while v averages the raw g² (moment).

Every perturbation sees the *flattened in-scope slice* of one parameter tensor: θ (before this
step's weight decay) and g, both 1-D and of the same length, plus a :class:`Context` carrying
the step, the run seed, the tensor's index and n_qubits. Noise is drawn from a stream keyed on
(seed, step, tensor index, stream) (:mod:`qsgd.noise`; ``noise_key`` and ``keyed_generator``
are re-exported here), so a resumed run reproduces an uninterrupted one bit for bit, and no
noise state needs storing.

Adding a variant is one class and one ``@register`` line: the optimizer, tests, grids and
reports find it by name, and read its properties (kind, fused kernel, bound on |Q|/|g|) from
its class attributes (:class:`Perturbation`). The ``circuit`` variant imports its simulator
(:mod:`qsgd.circuit`) only when one is made, so ``import qsgd`` needs torch alone.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from .noise import keyed_generator, keyed_noise, noise_key, triton_available

if TYPE_CHECKING:  # pragma: no cover
    from .sharding import ShardLayout

__all__ = [
    "Context",
    "Perturbation",
    "register",
    "get_perturbation",
    "perturbation_class",
    "available",
    "keyed_generator",
    "rms",
    "global_rms",
    "sinpi",
    "cospi",
    "noise_key",
    "KINDS",
    "None_",
    "Sin",
    "Cos",
    "Taylor",
    "Gauss",
    "Unif",
    "Anneal",
    "AnnealRel",
    "Anti",
    "Circuit",
    "SinNorm",
    "Moment",
]

#: where a perturbation's term enters the step (module docstring; ``Perturbation.kind``)
KINDS = ("direction", "gradient", "normalized", "first-moment")

def sinpi(x: Tensor) -> Tensor:
    """sin(π x), exactly 0 at integers and accurate for large |x| (argument reduced first)."""
    r = torch.round(x)
    out = torch.sin((x - r).mul_(math.pi))
    return out.mul_(1.0 - 2.0 * torch.remainder(r, 2.0))


def cospi(x: Tensor) -> Tensor:
    """cos(π x), exactly 0 at half-integers (argument reduced first)."""
    r = torch.round(x)
    out = torch.cos((x - r).mul_(math.pi))
    return out.mul_(1.0 - 2.0 * torch.remainder(r, 2.0))


def _foreach_pi_reduced(xs: list[Tensor], fn) -> list[Tensor]:
    """[fn(π(x − round x))·(−1)^round(x) for x in xs] with multi-tensor kernels: the same
    operations, so the same bits, as :func:`sinpi` / :func:`cospi` tensor by tensor
    ((−1)^r = 1 − 4·|frac(r/2)| is exact, as 1 − 2·(r mod 2) is)."""
    r = torch._foreach_round(xs)
    out = torch._foreach_sub(xs, r)
    torch._foreach_mul_(out, math.pi)
    fn(out)
    sign = torch._foreach_mul(r, 0.5)
    torch._foreach_frac_(sign)
    torch._foreach_abs_(sign)
    torch._foreach_mul_(sign, -4.0)
    torch._foreach_add_(sign, 1.0)
    torch._foreach_mul_(out, sign)
    return out


def foreach_sinpi(xs: list[Tensor]) -> list[Tensor]:
    """:func:`sinpi` of every tensor of a list (multi-tensor kernels, same bits)."""
    return _foreach_pi_reduced(xs, torch._foreach_sin_)


def foreach_cospi(xs: list[Tensor]) -> list[Tensor]:
    """:func:`cospi` of every tensor of a list (multi-tensor kernels, same bits)."""
    return _foreach_pi_reduced(xs, torch._foreach_cos_)


def rms(x: Tensor) -> Tensor:
    """Root mean square of all entries (0-dim tensor, no host sync)."""
    if x.numel() == 0:
        return x.new_zeros(())
    return x.pow(2).mean().sqrt()


def global_rms(xs: Iterable[Tensor], ctxs: list[Context]) -> list[Tensor]:
    """The RMS of each ``xs[k]`` over its whole tensor (``ctxs[k].shard``; :func:`rms` itself
    where there is none). A sharded tensor's local sum of squares (float64) is summed over the
    ranks that hold its other shards and divided by the global number of entries: one
    all-reduce for all tensors that share their process groups and device. ``xs`` may be a
    generator (each entry is reduced as it comes, so the terms need not all be held). Every
    rank must call it with the same tensors in the same order. The float64 sums make the
    result equal the unsharded float32 RMS to float rounding, not bit for bit."""
    out: list[Tensor | None] = []
    pending: dict[tuple, list[tuple[int, Tensor, torch.dtype]]] = {}
    for k, (x, c) in enumerate(zip(xs, ctxs)):
        if c.shard is None:
            out.append(rms(x))
            continue
        out.append(None)
        pending.setdefault((c.shard.groups, x.device), []).append(
            (k, x.double().pow(2).sum(), x.dtype))
    for sums in pending.values():
        total = ctxs[sums[0][0]].shard.all_reduce(torch.stack([s for _, s, _ in sums]))
        for (k, _, dtype), sq in zip(sums, total):
            n = ctxs[k].shard.numel
            out[k] = ((sq / n).sqrt() if n else sq.new_zeros(())).to(dtype)
    return out


@dataclass(frozen=True)
class Context:
    """Where a perturbation is evaluated.

    step: t = 1, 2, … (this step's number). seed: the optimizer's noise seed.
    index: the tensor's position among all parameters of the optimizer (group order, then
    parameter order), stable across ``state_dict`` round trips. n_qubits: register size for the
    circuit variant and the ``first_n`` scope. shard: None for a whole tensor; for the local
    shard of a DTensor, where it lies in the global in-scope tensor
    (:class:`qsgd.sharding.ShardLayout`): a term that reads several entries computes its
    statistics (:meth:`rms`) and noise (:meth:`local`) over the global tensor through it, so
    the run does not depend on the sharding.
    """

    step: int
    seed: int
    index: int
    n_qubits: int = 4
    shard: ShardLayout | None = None

    def rms(self, x: Tensor) -> Tensor:
        """RMS of ``x`` (this tensor's in-scope entries, or a function of them entry by entry)
        over the whole tensor: :func:`rms` when unsharded, else :func:`global_rms`."""
        if self.shard is None:
            return rms(x)
        return global_rms([x], [self])[0]

    def local(self, draw, like: Tensor) -> Tensor:
        """Noise keyed by global position: ``draw(shape)`` for the whole in-scope tensor (1-D,
        as ``like``), of which this shard's entries are returned; unsharded, ``draw(like.shape)``
        itself. ``draw`` must draw a stream whose element i does not depend on where it is
        cut (a keyed generator drawing the global tensor's length does so by construction)."""
        if self.shard is None:
            return draw(like.shape)
        return self.shard.take(draw((self.shard.numel,)))

    def generator(self, device: torch.device | str, stream: int = 0,
                  step: int | None = None) -> torch.Generator:
        return keyed_generator(device, self.seed, self.step if step is None else step,
                               self.index, stream)


class Perturbation(abc.ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`term`.

    ``term(theta, grad, ctx)`` returns Q (direction kind), ξ (gradient kind) or a factor
    (r: normalized kind, f: first-moment kind) for 1-D ``theta`` and ``grad`` of equal length,
    in their dtype and device; the optimizer multiplies it by λ (module docstring). It must not
    modify its inputs.

    Class attributes (read by the optimizer, the fused dispatch and the theory checks, so a
    variant's properties live on its class and nowhere else):

    * ``name``: the registry name. ``kind``: one of :data:`KINDS`, ``"direction"``,
      ``"gradient"``, ``"normalized"`` or ``"first-moment"`` (module docstring; checked by
      :func:`register` and by the optimizer). ``stochastic``: the term draws keyed noise.
    * ``elementwise``: Q_i depends on (θ_i, g_i) alone, so one call on several tensors
      concatenated equals the calls tensor by tensor (the flat CPU path uses this). Such a
      term is the same on a DTensor's local shard as on the whole tensor.
    * ``shard_invariant``: a term that reads several entries (an RMS, keyed noise, groups) and
      computes them over the whole tensor when given a shard (``ctx.shard``): through
      :meth:`Context.rms` / :func:`global_rms`, :meth:`Context.local` for noise keyed by
      global position, or ``ctx.shard.gather``. Every built-in term is elementwise or
      shard-invariant; a custom non-elementwise term that ignores ``ctx.shard`` is computed
      per shard under FSDP2.
    * ``fused_code``: the perturbation code (constexpr ``PERT``) of the fused Triton kernel
      that computes this term in-kernel (:mod:`qsgd.fused`), or None: no kernel, the optimizer
      takes another path. It holds for the class that sets it and for no subclass: a subclass
      may override :meth:`term`, which the kernel would not see, so :mod:`qsgd.fused` reads it
      from ``type(p).__dict__`` only; a subclass that keeps the maths may set it again. An
      instance whose settings the kernel does not compute says why in
      :meth:`fused_unsupported`.
    * ``q_over_g_bound``: a bound B with |Q_i| ≤ B·|g_i| for every θ and every step (for the
      direction kind), ``math.inf`` when there is none: 0 for none, 1 for sin, cos and circuit
      (|sin|, |cos|, |⟨X⟩| ≤ 1), √3 for unif (|ξ| ≤ √3·RMS(sin πθ) ≤ √3), ∞ for taylor (π|θ|
      grows with θ), gauss (unbounded normal), anti (additive, not a multiple of g), the
      gradient-kind anneal, and the two kinds whose term is not added to the direction in
      gradient units: the normalized-kind sinnorm (Q = r⊙u is a multiple of Adam's step, not of
      g: |Q_i| ≤ |u_i|, a bound in step units only) and the first-moment-kind moment (its
      term enters m, and through m every later step). Used by the theory checks' update-size
      bound, which reads it for the direction kind only.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "direction"  # one of KINDS
    stochastic: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    shard_invariant: ClassVar[bool] = False
    fused_code: ClassVar[int | None] = None
    q_over_g_bound: ClassVar[float] = math.inf

    @abc.abstractmethod
    def term(self, theta: Tensor, grad: Tensor, ctx: Context) -> Tensor:
        """Q (or ξ) for one flattened in-scope slice."""

    def terms(self, thetas: list[Tensor], grads: list[Tensor],
              ctxs: list[Context]) -> list[Tensor]:
        """Batched form for the foreach path; the default loops over :meth:`term`."""
        return [self.term(t, g, c) for t, g, c in zip(thetas, grads, ctxs)]

    def fused_unsupported(self, n_qubits: int) -> str | None:
        """Why this instance's term, at register size ``n_qubits``, is not what its class's
        fused kernel (``fused_code``) computes, or None (the default: it is)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.__dict__.items()))))


_REGISTRY: dict[str, type[Perturbation]] = {}


def register(cls: type[Perturbation]) -> type[Perturbation]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}: invalid kind {cls.kind!r} (valid kinds: "
                         f"{', '.join(KINDS)})")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """All registered perturbation names, sorted."""
    return sorted(_REGISTRY)


def perturbation_class(name: str) -> type[Perturbation]:
    """The class registered under ``name`` (raises ``ValueError`` listing the valid names)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown perturbation {name!r}; valid perturbations: {', '.join(available())}"
        )
    return _REGISTRY[name]


def get_perturbation(spec: str | Perturbation | None) -> Perturbation:
    """Resolve a registry name (or an instance, returned as is) to a perturbation object."""
    if spec is None:
        spec = "none"
    if isinstance(spec, Perturbation):
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"perturbation must be a name or a Perturbation, got {type(spec).__name__}: {spec!r}"
        )
    return perturbation_class(spec)()


@register
class None_(Perturbation):
    """Q = 0: plain AdamW."""

    name = "none"
    elementwise = True
    fused_code = 0  # PERT_NONE of qsgd._fused_kernels
    q_over_g_bound = 0.0

    def term(self, theta, grad, ctx):
        return torch.zeros_like(grad)

    def terms(self, thetas, grads, ctxs):
        return [torch.zeros_like(g) for g in grads]


@register
class Sin(Perturbation):
    """The paper's term: Q_i = sin(π θ_i) · g_i."""

    name = "sin"
    elementwise = True
    fused_code = 1  # PERT_SIN of qsgd._fused_kernels
    q_over_g_bound = 1.0

    def term(self, theta, grad, ctx):
        return sinpi(theta).mul_(grad)

    def terms(self, thetas, grads, ctxs):
        q = foreach_sinpi(thetas)
        torch._foreach_mul_(q, grads)
        return q


@register
class Cos(Perturbation):
    """Phase-shifted control: Q_i = cos(π θ_i) · g_i (large where the sine is small)."""

    name = "cos"
    elementwise = True
    fused_code = 2  # PERT_COS of qsgd._fused_kernels
    q_over_g_bound = 1.0

    def term(self, theta, grad, ctx):
        return cospi(theta).mul_(grad)

    def terms(self, thetas, grads, ctxs):
        q = foreach_cospi(thetas)
        torch._foreach_mul_(q, grads)
        return q


@register
class Taylor(Perturbation):
    """Small-weight limit of the sine: Q_i = π θ_i · g_i."""

    name = "taylor"
    elementwise = True
    fused_code = 3  # PERT_TAYLOR of qsgd._fused_kernels
    q_over_g_bound = math.inf  # π|θ| grows with |θ|

    def term(self, theta, grad, ctx):
        return (theta * math.pi).mul_(grad)

    def terms(self, thetas, grads, ctxs):
        q = torch._foreach_mul(thetas, math.pi)
        torch._foreach_mul_(q, grads)
        return q


# [cuda-noise] On CUDA (with Triton) gauss, unif, anti, anneal and annealrel draw their noise
# from the Philox stream the fused kernel draws in-kernel (qsgd.noise.cuda_noise), so reference,
# foreach and fused steps agree there. Elsewhere a keyed torch.Generator (the same draws as
# ``ctx.generator``). Both are keyed on (seed, step, tensor index).
def _keyed_noise(grad: Tensor, ctx: Context, kind: str, step: int | None = None) -> Tensor:
    """ξ ~ N(0, 1) (``kind="normal"``) or U[0, 1) (``"uniform"``) of the stream keyed on
    (seed, ``step`` or this step, index), shaped and typed as grad; for a shard
    (``ctx.shard``), its entries of the whole in-scope tensor's ξ."""
    def draw(shape):
        return keyed_noise(shape, kind, seed=ctx.seed, step=ctx.step if step is None else step,
                           index=ctx.index, device=grad.device, dtype=grad.dtype)

    lay = ctx.shard
    if (lay is not None and lay.flat_range is not None and grad.device.type == "cuda"
            and triton_available()):
        # Philox is counter-based: element i of the stream does not depend on the length
        # drawn, so a contiguous shard [start, stop) needs the first stop entries only
        start, stop = lay.flat_range
        return draw((stop,))[start:].view(grad.shape)
    return ctx.local(draw, grad)
# [/cuda-noise]


def _randn(grad: Tensor, ctx: Context, step: int | None = None) -> Tensor:
    """z ~ N(0, 1) keyed on (seed, ``step`` or this step, index): :func:`_keyed_noise`'s normal
    draw (on CUDA the fused kernel's stream, see [cuda-noise])."""
    return _keyed_noise(grad, ctx, "normal", step)


@register
class Gauss(Perturbation):
    """Magnitude-matched noise: Q_i = ξ_i · g_i, ξ ~ N(0, s²), s = RMS of sin(π θ) over the
    in-scope tensor at this step. Same size as the sine term on average, no structure."""

    name = "gauss"
    stochastic = True
    fused_code = 4  # PERT_GAUSS of qsgd._fused_kernels
    q_over_g_bound = math.inf  # ξ is normal, unbounded

    shard_invariant = True

    def term(self, theta, grad, ctx):
        return self._scaled(ctx.rms(sinpi(theta)), grad, ctx)

    def terms(self, thetas, grads, ctxs):
        ss = global_rms((sinpi(t) for t in thetas), ctxs)  # one all-reduce when sharded
        return [self._scaled(s, g, c) for s, g, c in zip(ss, grads, ctxs)]

    def _scaled(self, s, grad, ctx):
        xi = _keyed_noise(grad, ctx, "normal")
        return xi.mul_(s).mul_(grad)


@register
class Unif(Perturbation):
    """As :class:`Gauss` with ξ ~ U(−a, a), a = √3·s (so ξ has RMS s)."""

    name = "unif"
    stochastic = True
    fused_code = 5  # PERT_UNIF of qsgd._fused_kernels
    q_over_g_bound = math.sqrt(3.0)

    shard_invariant = True

    def term(self, theta, grad, ctx):
        return self._scaled(ctx.rms(sinpi(theta)), grad, ctx)

    def terms(self, thetas, grads, ctxs):
        ss = global_rms((sinpi(t) for t in thetas), ctxs)
        return [self._scaled(s, g, c) for s, g, c in zip(ss, grads, ctxs)]

    def _scaled(self, s, grad, ctx):
        a = s * math.sqrt(3.0)
        u = _keyed_noise(grad, ctx, "uniform")
        return u.mul_(2.0).sub_(1.0).mul_(a).mul_(grad)


@register
class Anneal(Perturbation):
    """Annealed additive Gaussian gradient noise (Neelakantan et al. 2015; optax.add_noise).

    ξ ~ N(0, σ_t²), σ_t² = η / (1 + t')^γ with t' = t − 1 the number of earlier steps (optax's
    count, so the first step has variance η). Added to g before the moments as ``g + λ·ξ``;
    the grid's id ``anneal`` uses λ = 1, so λ = 0 is plain AdamW like every other variant.
    η is absolute (in squared gradient units), so the noise's size relative to the gradient
    depends on the loss's units; :class:`AnnealRel` (``annealrel-l{λ}``) scales it to the
    gradient's RMS instead.
    """

    name = "anneal"
    kind = "gradient"
    stochastic = True
    fused_code = 8  # PERT_ANNEAL of qsgd._fused_kernels
    q_over_g_bound = math.inf  # gradient kind: ξ is added to g, not a multiple of it

    def __init__(self, eta: float = 0.01, gamma: float = 0.55):
        self.eta = float(eta)
        self.gamma = float(gamma)

    def sigma(self, step: int) -> float:
        return math.sqrt(self.eta / (1.0 + (step - 1)) ** self.gamma)

    shard_invariant = True

    def term(self, theta, grad, ctx):
        xi = _keyed_noise(grad, ctx, "normal")  # [cuda-noise]: the fused kernel's on CUDA
        return xi.mul_(self.sigma(ctx.step))

    def __repr__(self) -> str:
        return f"Anneal(eta={self.eta}, gamma={self.gamma})"


@register
class AnnealRel(Perturbation):
    """Annealed Gaussian gradient noise scaled to the gradient: the informative anneal control.

    In DESIGN.md's table form::

        | annealrel-l{λ} | additive gradient noise before the moments, g + λ·ξ, ξ_i = s_t·z_i,
        |                | z ~ N(0, 1) keyed, s_t = RMS(g)/(1 + t')^{γ/2}, γ = 0.55 (RMS over the
        |                | tensor at that step; λ: noise-to-gradient RMS at the first step) |

    As :class:`Anneal` (kind ``"gradient"``: ξ is added to g before both moments; variance
    decaying as (1 + t')^−γ with t' = t − 1 the number of earlier steps, optax's count), but
    σ is relative: s_t is the RMS of this step's gradient over the in-scope tensor, so λ is the
    ratio of the noise's RMS to the gradient's at the first step (λ = 1: as large as the
    gradient), whatever the units of the loss. ``anneal``'s absolute η = 0.01 gives
    σ_1 = 0.1 per coordinate, tens of times the classifier's clipped gradients (RMS ~ 10⁻³):
    the noise swamps the signal and the control sits at chance, showing nothing. Here the
    gradient the moments see is g + λ·ξ with ξ ∝ RMS(g), so multiplying the loss by c > 0
    multiplies both by c and the update is unchanged up to ε, as Adam's: the control's size
    is a property of the noise, not of the gradient scale. z is keyed on (seed, step, tensor
    index) as every stochastic term (:func:`_keyed_noise`), so a resumed run is bit-identical.
    A zero gradient gets zero noise.
    """

    name = "annealrel"
    kind = "gradient"
    stochastic = True
    fused_code = 9  # PERT_ANNEALREL of qsgd._fused_kernels
    q_over_g_bound = math.inf  # gradient kind: ξ is added to g, not a multiple of it

    def __init__(self, gamma: float = 0.55):
        self.gamma = float(gamma)

    def decay(self, step: int) -> float:
        """(1 + t')^{−γ/2}, t' = step − 1: the factor of s_t on RMS(g)."""
        return (1.0 + (step - 1)) ** (-0.5 * self.gamma)

    shard_invariant = True

    def term(self, theta, grad, ctx):
        return self._scaled(ctx.rms(grad), grad, ctx)

    def terms(self, thetas, grads, ctxs):
        return [self._scaled(s, g, c) for s, g, c in zip(global_rms(grads, ctxs), grads, ctxs)]

    def _scaled(self, s, grad, ctx):
        z = _keyed_noise(grad, ctx, "normal")
        return z.mul_(s * self.decay(ctx.step))

    def __repr__(self) -> str:
        return f"AnnealRel(gamma={self.gamma})"


@register
class Anti(Perturbation):
    """Anticorrelated additive noise (Orvieto et al. 2022): Q = s_t·(z_t − z_{t−1})/√2.

    z_t ~ N(0, I) is keyed on (seed, t, tensor), so z_{t−1} is regenerated rather than stored:
    the variant needs no state. s_t is the RMS of the sine term sin(π θ)·g over the in-scope
    tensor at this step, so Q has that RMS (z_t − z_{t−1} has variance 2). At t = 1, z_0 = 0
    and Q = s_1·z_1/√2 (the first increment of the walk). Additive: Q does not multiply g.
    """

    name = "anti"
    stochastic = True
    fused_code = 6  # PERT_ANTI of qsgd._fused_kernels
    q_over_g_bound = math.inf  # additive: Q is not a multiple of g

    shard_invariant = True

    def term(self, theta, grad, ctx):
        return self._scaled(ctx.rms(sinpi(theta).mul_(grad)), grad, ctx)

    def terms(self, thetas, grads, ctxs):
        ss = global_rms((sinpi(t).mul_(g) for t, g in zip(thetas, grads)), ctxs)
        return [self._scaled(s, g, c) for s, g, c in zip(ss, grads, ctxs)]

    def _scaled(self, s, grad, ctx):
        z = _randn(grad, ctx)
        if ctx.step > 1:
            z.sub_(_randn(grad, ctx, step=ctx.step - 1))
        return z.mul_(s / math.sqrt(2.0))


@register
class Circuit(Perturbation):
    r"""The circuit perturbation: Q_i = r_i · g_i with r_i = ⟨X⟩ of qubit i's circuit.

    The flattened in-scope θ is cut into groups of n = ``ctx.n_qubits`` consecutive entries
    (the last group padded with zeros); entry j of a group is qubit j of that group's circuit,
    whose data angles are x = π·θ_group. r_i is ⟨X_j⟩ of that circuit (Pauli X on qubit j).
    All groups of all tensors are simulated as one batch. On a DTensor's local shard
    (``ctx.shard``) groups may straddle two shards, so the shard gathers the whole in-scope θ
    of its tensor (one all-reduce of the tensor's size), simulates every group and keeps its
    own entries: the same r as unsharded (the shots too: the draw is of the whole tensor), at
    the cost of each rank simulating the whole tensor.

    Defaults (documented choices):
        * ``hadamard=False``: the circuit starts from |0…0⟩. On |0⟩ the paper's leading
          Hadamard equals Ry(π/2) (H|0⟩ = Ry(π/2)|0⟩ = |+⟩), i.e. a fixed π/2 offset on the first
          encoding angle, which turns ⟨X⟩ = sin(πθ) into sin(πθ + π/2) = cos(πθ): the ``cos``
          control, not the paper's sine. Dropping it makes the one-qubit limit
          ⟨X⟩ of Ry(πθ)|0⟩ = sin(πθ), the identity PAPER.md states. ``hadamard=True`` gives
          the literal paper circuit (one-qubit limit: cos(πθ)).
        * ``encoding="once"``: πθ enters only the first layer's Ry. Re-uploading it into every
          Ry and Rz would make even the one-qubit circuit a different function
          (e.g. depth 2: Ry(a)Rz(a)Ry(a)Rz(a)|0⟩), so the sine limit would be lost.
        * ``depth=2`` (the paper's), ``entangle=True`` (CNOT chain after each layer),
          ``extra_ry = extra_rz = 0`` (fixed extra angles added to every Ry / Rz; at 0 those
          gates are the identity and skipped).
    With these defaults the circuit is Ry(πθ_q) on each qubit followed by two CNOT chains,
    so for n = 1 (no CNOT exists) r = 2·cos(πθ/2)·sin(πθ/2) = sin(πθ) for every depth, and
    ``SuperpositionalAdamW(perturbation="circuit", n_qubits=1)`` is the ``sin`` variant.
    For n > 1 the state before the CNOTs is a product with Bloch vectors (sin πθ_q, 0, cos πθ_q)
    and CNOT(c→t) maps X_c to X_c·X_t (Heisenberg picture), so every r_i is a product of sines
    s_j = sin(πθ_j) of its group: n = 2, depth 2: the two CNOTs cancel and r = (s_0, s_1), the
    sine again; n = 4, depth 2 (the ``circuit`` variant's default register):
    r = (s_0·s_2, s_1·s_3, s_2, s_3); n = 4, depth 1: (s_0·s_1, s_1·s_2, s_2·s_3, s_3).

    Computed without autograd in float32 or float64 (half types in float32), on θ's device,
    by the statevector simulator of :mod:`qsgd.circuit` (encoding angles π·θ).
    ``backend="aer"`` routes every group through Qiskit Aer instead (slow; for cost checks).

    Finite shots (``shots=S``): r_i is what a device returns instead of the exact ⟨X_j⟩. Each
    group's circuit is measured S times with every qubit in the X basis (H on each qubit, then
    Z): the S outcomes are one draw (N_k) ~ Multinomial(S; p^X), p^X_k = |(H^⊗n ψ)_k|² over the
    2ⁿ basis states (exact, by conditional binomials, :mod:`qsgd.circuit.shots`), and every
    qubit's estimate is read off the same outcomes, r̂_j = Σ_k (N_k/S)(1 − 2 b_j(k)). So
    E[r̂_j] = ⟨X_j⟩, the exact readout (unbiased), Var r̂_j = (1 − ⟨X_j⟩²)/S, the qubits of a
    group correlated as on a device (Cov(r̂_j, r̂_l) = (⟨X_j X_l⟩ − ⟨X_j⟩⟨X_l⟩)/S), and
    r̂_j ∈ {−1, −1 + 2/S, …, 1}, so |Q_i| ≤ |g_i| still holds. The draw of a tensor is keyed
    on (the optimizer's noise seed, step, tensor index, stream
    :data:`~qsgd.circuit.shots.CIRCUIT_SHOT_STREAM`), its groups in order, so a resumed run is
    bit-identical and the batched :meth:`terms` equals :meth:`term` tensor by tensor; it is
    drawn on θ's device from a keyed ``torch.Generator`` (CPU and CUDA draw different, equally
    distributed shots). Cost: 2ⁿ − 1 binomial draws per tensor and step (vectorised over its
    groups), on top of the simulation. ``shots=None`` (default) is the exact readout, the
    same bits as without the option. With shots the term is stochastic (``stochastic`` is
    True on the instance), so it cannot run under ``torch.compile``.

    Args (the circuit, as :func:`qsgd.circuit.simulate`): depth, entangle, hadamard, encoding;
    extra_ry, extra_rz: the fixed extra angles; backend: ``"torch"`` or ``"aer"``;
    shots: S ≥ 1 measurement shots per group and step, or None (default): exact ⟨X⟩.
    """

    name = "circuit"
    fused_code = 7  # PERT_CIRCUIT of qsgd._fused_kernels: the closed form (fused_unsupported)
    q_over_g_bound = 1.0  # |⟨X⟩| ≤ 1
    shard_invariant = True  # a shard gathers its tensor's θ (groups may straddle shards)

    def __init__(self, depth: int = 2, entangle: bool = True, hadamard: bool = False,
                 encoding: str = "once", extra_ry: float = 0.0, extra_rz: float = 0.0,
                 backend: str = "torch", shots: int | None = None):
        # the simulator is imported here and in readout(), not at module level: ``import qsgd``
        # stays free of the circuit package until a circuit perturbation is made
        from .circuit.spec import CircuitSpec, check_backend

        CircuitSpec(1, depth, entangle, hadamard, encoding)  # validates depth and encoding
        check_backend(backend)
        self.depth = int(depth)
        self.entangle = bool(entangle)
        self.hadamard = bool(hadamard)
        self.encoding = encoding
        self.extra_ry = float(extra_ry)
        self.extra_rz = float(extra_rz)
        self.backend = backend
        if shots is not None:
            from .circuit.shots import check_shots

            shots = check_shots(shots)
        self.shots = shots
        self.stochastic = shots is not None  # the class attribute stays False: exact by default

    def __repr__(self) -> str:
        return (f"Circuit(depth={self.depth}, entangle={self.entangle}, "
                f"hadamard={self.hadamard}, encoding={self.encoding!r}, "
                f"extra_ry={self.extra_ry}, extra_rz={self.extra_rz}, "
                f"backend={self.backend!r}"
                + (f", shots={self.shots})" if self.shots is not None else ")"))

    #: the register sizes of the fused kernel's closed form (groups of NQ entries in a block)
    FUSED_QUBITS: ClassVar[tuple[int, ...]] = (1, 2, 4, 8)

    def readout_supports(self, n_qubits: int) -> list[list[int]]:
        """S_j, j = 0 … n−1: the qubits whose f_q multiply into ⟨X_j⟩ (theory T5), with
        f_q = sin(πθ_q), or cos(πθ_q) with the leading Hadamards. The circuit is U·⊗Ry(πθ_q)|0⟩
        with U = M^depth, M the CNOT chain as a GF(2) matrix on basis bits (bit k becomes
        b_0 ⊕ … ⊕ b_k); U†X_jU is X on the support of column j of M^−depth, and
        M^−1 = I + (ones below the diagonal, k − 1 → k). Without entanglement S_j = {j}.
        Holds for ``encoding="once"`` and no extra angles only (:meth:`fused_unsupported`)."""
        n = int(n_qubits)
        a = [[int(q == j) for j in range(n)] for q in range(n)]
        if self.entangle and n > 1:
            d = [[int(q == j or q == j + 1) for j in range(n)] for q in range(n)]  # M^−1
            for _ in range(self.depth):
                a = [[sum(a[q][k] * d[k][j] for k in range(n)) % 2 for j in range(n)]
                     for q in range(n)]
        return [[q for q in range(n) if a[q][j]] for j in range(n)]

    def fused_unsupported(self, n_qubits: int) -> str | None:
        """The fused kernel computes the readout in closed form (:meth:`readout_supports`):
        exact ⟨X⟩ (no shots), the torch backend's maths, πθ in the first Ry only, no extra
        angles, and groups of 1, 2, 4 or 8 qubits (whole groups in one kernel block)."""
        if self.shots is not None:
            return f"circuit_shots={self.shots}: finite-shot readout is drawn on the host"
        if self.backend != "torch":
            return f"backend {self.backend!r} runs every group through its simulator"
        if self.encoding != "once":
            return (f"encoding {self.encoding!r}: the readout is a product of sines only for "
                    "encoding 'once' (theory T5)")
        if self.extra_ry != 0.0 or self.extra_rz != 0.0:
            return "extra_ry/extra_rz != 0: the readout is no product of sines (theory T5)"
        if int(n_qubits) not in self.FUSED_QUBITS:
            return (f"n_qubits={n_qubits}: the kernel's qubit groups are "
                    f"{', '.join(map(str, self.FUSED_QUBITS))} wide")
        return None

    def readout(self, theta: Tensor, n_qubits: int) -> Tensor:
        """r for a 1-D θ: the exact ⟨X⟩ per entry, same length, dtype and device as θ."""
        return self._simulate(theta, n_qubits, "X")

    def x_probabilities(self, theta: Tensor, n_qubits: int) -> Tensor:
        """The X-basis outcome probabilities p^X (groups, 2ⁿ) of each group's circuit for a
        1-D θ (groups as :meth:`readout`, the last padded with zeros), float64."""
        from .circuit.shots import x_basis_probabilities

        state = self._simulate(theta, n_qubits, "amplitudes")
        return x_basis_probabilities(state.to(torch.complex128))

    def shot_readout(self, theta: Tensor, n_qubits: int,
                     generator: torch.Generator) -> Tensor:
        """r̂ for a 1-D θ from ``self.shots`` X-basis shots per group drawn with ``generator``
        (class docstring); same length, dtype and device as θ."""
        return self._estimate(self.x_probabilities(theta, n_qubits), theta.numel(),
                              generator, theta.dtype)

    def _estimate(self, probs: Tensor, length: int, generator: torch.Generator,
                  dtype: torch.dtype) -> Tensor:
        from .circuit.shots import x_estimates

        return x_estimates(probs, self.shots, generator).reshape(-1)[:length].to(dtype)

    def shot_generator(self, device: torch.device | str, ctx: Context) -> torch.Generator:
        """The generator of one tensor's shots: keyed on (seed, step, tensor index) and the
        stream :data:`qsgd.circuit.shots.CIRCUIT_SHOT_STREAM`."""
        from .circuit.shots import CIRCUIT_SHOT_STREAM

        return ctx.generator(device, stream=CIRCUIT_SHOT_STREAM)

    def _simulate(self, theta: Tensor, n_qubits: int, readout: str) -> Tensor:
        from .circuit.spec import CircuitSpec
        from .circuit.statevector import simulate_spec

        n = int(n_qubits)
        spec = CircuitSpec(n, self.depth, self.entangle, self.hadamard, self.encoding)
        length = theta.numel()
        if length == 0:  # no group (an empty tensor, or an empty shard of one)
            if readout == "X":
                return theta.detach().reshape(-1).clone()
            return torch.zeros(0, 2 ** n, dtype=torch.complex128, device=theta.device)
        dt = theta.dtype if theta.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.no_grad():
            x = theta.detach().reshape(-1).to(dt)
            pad = (-length) % n
            if pad:
                x = torch.cat((x, x.new_zeros(pad)))
            x = (x * math.pi).reshape(-1, n)
            w = None
            if self.extra_ry != 0.0 or self.extra_rz != 0.0:
                w = x.new_empty(self.depth, 2, n)
                w[:, 0] = self.extra_ry
                w[:, 1] = self.extra_rz
            r = simulate_spec(spec, x, w, readout=readout, backend=self.backend)
            if readout != "X":
                return r  # (groups, 2ⁿ) amplitudes
            return r.reshape(-1)[:length].to(theta.dtype)

    def term(self, theta: Tensor, grad: Tensor, ctx: Context) -> Tensor:
        if ctx.shard is not None:  # groups may straddle shards: the whole in-scope θ
            whole = ctx.shard.gather(theta.detach())
            return ctx.shard.take(self._r(whole, ctx)).mul(grad)
        return self._r(theta, ctx).mul_(grad)

    def _r(self, theta: Tensor, ctx: Context) -> Tensor:
        if self.shots is None or theta.numel() == 0:
            return self.readout(theta, ctx.n_qubits)
        return self.shot_readout(theta, ctx.n_qubits, self.shot_generator(theta.device, ctx))

    def terms(self, thetas: list[Tensor], grads: list[Tensor],
              ctxs: list[Context]) -> list[Tensor]:
        """All tensors in one batch: each is padded to whole groups, concatenated, simulated
        once and split back (groups never straddle two tensors)."""
        if not thetas:
            return []
        if any(c.shard is not None for c in ctxs):  # each tensor gathered whole (term)
            return super().terms(thetas, grads, ctxs)
        ns = {c.n_qubits for c in ctxs}
        dts = {t.dtype for t in thetas}
        devs = {t.device for t in thetas}
        if len(ns) != 1 or len(dts) != 1 or len(devs) != 1:
            return super().terms(thetas, grads, ctxs)
        n = ns.pop()
        parts, lengths = [], []
        for t in thetas:
            flat = t.detach().reshape(-1)
            pad = (-flat.numel()) % n
            parts.append(torch.cat((flat, flat.new_zeros(pad))) if pad else flat)
            lengths.append(flat.numel())
        if self.shots is not None:  # one simulation, then each tensor's own keyed draw
            probs = self.x_probabilities(torch.cat(parts), n)
            out, start = [], 0
            for length, t, g, c in zip(lengths, thetas, grads, ctxs):
                rows = -(-length // n)
                gen = self.shot_generator(t.device, c)
                r = self._estimate(probs[start:start + rows], length, gen, t.dtype)
                out.append(r.mul_(g))
                start += rows
            return out
        r = self.readout(torch.cat(parts), n)
        out, start = [], 0
        for length, g in zip(lengths, grads):
            out.append(r[start:start + length].mul(g))
            start += length + (-length) % n
        return out


@register
class SinNorm(Perturbation):
    """The sine on Adam's normalised step: Q_i = sin(π θ_i) · m̂_i/(√v̂_i+ε).

    Kind ``"normalized"``: :meth:`term` returns the factor r = sin(π θ) (θ before this step's
    weight decay, as every term) and the optimizer forms Q = r⊙u with u = m̂/(√v̂+ε) this
    step's Adam direction, so ``θ ← θ − lr·(u + λ·sin(πθ)⊙u) = θ − lr·(1 + λ·sin(πθ))⊙u``.
    The form a practitioner would try to make the paper's term scale-invariant: multiplying the
    loss by c > 0 multiplies m̂ by c and √v̂ by c, so the trajectory changes only through ε (the
    paper's term sin(πθ)·g grows with c). ‖λQ‖ ≤ λ·‖u‖, so the recorded ratio
    ‖λQ‖/‖Adam step‖ is at most λ; for λ < 1 every coordinate moves in Adam's direction, by
    a factor in [1 − λ, 1 + λ].
    """

    name = "sinnorm"
    kind = "normalized"
    elementwise = True
    fused_code = 11  # PERT_SINNORM of qsgd._fused_kernels
    q_over_g_bound = math.inf  # Q = r⊙u is a multiple of Adam's step, not of g

    def term(self, theta, grad, ctx):
        return sinpi(theta)

    def terms(self, thetas, grads, ctxs):
        return foreach_sinpi(thetas)


@register
class Moment(SinNorm):
    """Our *reading* of the paper's undefined arm "Adam with quantum-inspired moment updates".

    PAPER.md lists the arm but never defines it. We read it as the sine entering the first
    moment only, with θ before this step's weight decay::

        m ← β1·m + (1−β1)·(1 + λ·sin(πθ))⊙g      v ← β2·v + (1−β2)·g²  (the raw g)
        θ ← θ − lr·m̂/(√v̂+ε)

    Kind ``"first-moment"``: :meth:`term` returns the factor f = sin(π θ) (as
    :class:`SinNorm`, whose term it inherits) and the optimizer feeds (1 + λ·f)⊙g into m alone.
    This is a documented reading, not the paper's definition: the arm's results speak for this
    reading only. For λ < 1 each input to m has the sign of g (1 + λ·f ≥ 1 − λ > 0). Were θ
    constant, m would be (1 + λ·sin(πθ))⊙ Adam's m and the variant would be sinnorm; it differs
    in that the factor enters with each step's θ and decays with β1.
    """

    name = "moment"
    kind = "first-moment"
    fused_code = 10  # PERT_MOMENT of qsgd._fused_kernels
    q_over_g_bound = math.inf  # the term enters m, not the direction
