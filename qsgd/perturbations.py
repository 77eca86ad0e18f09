"""The perturbation family: one small object per variant, one registry.

A perturbation is the term that Superpositional Gradient Descent adds to Adam. It comes in two
kinds:

* ``kind = "direction"``: a tensor Q added to the Adam direction,
  ``θ ← θ − lr·(m̂/(√v̂+ε) + λ·Q)``. The paper's sine, and every control of the same shape
  (cos, taylor, gauss, unif, anti, circuit).
* ``kind = "gradient"``: a tensor ξ added to the gradient *before* the moments,
  ``g ← g + λ·ξ`` (anneal, as ``optax.add_noise``).

Every perturbation sees the *flattened in-scope slice* of one parameter tensor: θ (before this
step's weight decay) and g, both 1-D and of the same length, plus a :class:`Context` carrying
the step, the run seed, the tensor's index and n_qubits. Noise is drawn from a generator keyed on
(seed, step, tensor index, stream), so a resumed run reproduces an uninterrupted one bit for
bit, and no noise state needs storing.

Adding a variant is one class and one ``@register`` line: the optimizer, tests, grids and
reports find it by name.
"""

from __future__ import annotations

import abc
import importlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

__all__ = [
    "Context",
    "Perturbation",
    "register",
    "get_perturbation",
    "available",
    "keyed_generator",
    "rms",
    "sinpi",
    "cospi",
    "noise_key",
    "None_",
    "Sin",
    "Cos",
    "Taylor",
    "Gauss",
    "Unif",
    "Anneal",
    "Anti",
]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_key(seed: int, step: int, index: int, stream: int = 0) -> int:
    """A 63-bit key mixing (seed, step, tensor index, stream) with SplitMix64.

    Distinct tuples give statistically independent streams; the same tuple always gives the
    same key, on every machine.
    """
    h = _splitmix64(int(seed) & _MASK64)
    for part in (step, index, stream):
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h & ((1 << 63) - 1)


def keyed_generator(device: torch.device | str, seed: int, step: int, index: int,
                    stream: int = 0) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`noise_key`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(noise_key(seed, step, index, stream))
    return gen


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


@dataclass(frozen=True)
class Context:
    """Where a perturbation is evaluated.

    step: t = 1, 2, … (this step's number). seed: the optimizer's noise seed.
    index: the tensor's position among all parameters of the optimizer (group order, then
    parameter order), stable across ``state_dict`` round trips. n_qubits: register size for the
    circuit variant and the ``first_n`` scope.
    """

    step: int
    seed: int
    index: int
    n_qubits: int = 4

    def generator(self, device: torch.device | str, stream: int = 0,
                  step: int | None = None) -> torch.Generator:
        return keyed_generator(device, self.seed, self.step if step is None else step,
                               self.index, stream)


class Perturbation(abc.ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`term`.

    ``term(theta, grad, ctx)`` returns Q (direction kind) or ξ (gradient kind) for 1-D
    ``theta`` and ``grad`` of equal length, in their dtype and device; the optimizer multiplies
    it by λ. It must not modify its inputs.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "direction"  # or "gradient"
    stochastic: ClassVar[bool] = False
    #: Q_i depends on (θ_i, g_i) alone (no per-tensor statistic, no noise stream), so one call
    #: on several tensors concatenated equals the calls tensor by tensor (the flat CPU path)
    elementwise: ClassVar[bool] = False

    @abc.abstractmethod
    def term(self, theta: Tensor, grad: Tensor, ctx: Context) -> Tensor:
        """Q (or ξ) for one flattened in-scope slice."""

    def terms(self, thetas: list[Tensor], grads: list[Tensor],
              ctxs: list[Context]) -> list[Tensor]:
        """Batched form for the foreach path; the default loops over :meth:`term`."""
        return [self.term(t, g, c) for t, g, c in zip(thetas, grads, ctxs)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.__dict__.items()))))


_REGISTRY: dict[str, type[Perturbation]] = {}
# Variants whose module carries heavier code register on first use.
_LAZY: dict[str, str] = {"circuit": "qsgd.circuit"}


def register(cls: type[Perturbation]) -> type[Perturbation]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """All registered perturbation names (lazy ones included)."""
    return sorted(set(_REGISTRY) | set(_LAZY))


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
    if spec not in _REGISTRY and spec in _LAZY:
        importlib.import_module(_LAZY[spec])
    if spec not in _REGISTRY:
        raise ValueError(
            f"unknown perturbation {spec!r}; valid perturbations: {', '.join(available())}"
        )
    return _REGISTRY[spec]()


@register
class None_(Perturbation):
    """Q = 0: plain AdamW."""

    name = "none"
    elementwise = True

    def term(self, theta, grad, ctx):
        return torch.zeros_like(grad)

    def terms(self, thetas, grads, ctxs):
        return [torch.zeros_like(g) for g in grads]


@register
class Sin(Perturbation):
    """The paper's term: Q_i = sin(π θ_i) · g_i."""

    name = "sin"
    elementwise = True

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

    def term(self, theta, grad, ctx):
        return (theta * math.pi).mul_(grad)

    def terms(self, thetas, grads, ctxs):
        q = torch._foreach_mul(thetas, math.pi)
        torch._foreach_mul_(q, grads)
        return q


def _sin_rms(theta: Tensor) -> Tensor:
    return rms(sinpi(theta))


# [cuda-noise] On CUDA, gauss/unif draw ξ from the Philox stream of qsgd.fused (the fused kernel
# draws the very same numbers), so reference, foreach and fused steps agree there. Elsewhere, or
# without Triton, a keyed torch.Generator. Both are keyed on (seed, step, tensor index).
def _keyed_noise(grad: Tensor, ctx: Context, kind: str) -> Tensor:
    """ξ ~ N(0, 1) (``kind="normal"``) or U[0, 1) (``"uniform"``), shaped and typed as grad."""
    if grad.is_cuda:
        from .fused import cuda_noise, triton_available

        if triton_available():
            key = noise_key(ctx.seed, ctx.step, ctx.index)
            return cuda_noise(key, grad.numel(), kind, grad.device, grad.dtype).view(grad.shape)
    draw = torch.randn if kind == "normal" else torch.rand
    return draw(grad.shape, generator=ctx.generator(grad.device), dtype=grad.dtype,
                device=grad.device)
# [/cuda-noise]


@register
class Gauss(Perturbation):
    """Magnitude-matched noise: Q_i = ξ_i · g_i, ξ ~ N(0, s²), s = RMS of sin(π θ) over the
    in-scope tensor at this step. Same size as the sine term on average, no structure."""

    name = "gauss"
    stochastic = True

    def term(self, theta, grad, ctx):
        s = _sin_rms(theta)
        xi = _keyed_noise(grad, ctx, "normal")
        return xi.mul_(s).mul_(grad)


@register
class Unif(Perturbation):
    """As :class:`Gauss` with ξ ~ U(−a, a), a = √3·s (so ξ has RMS s)."""

    name = "unif"
    stochastic = True

    def term(self, theta, grad, ctx):
        a = _sin_rms(theta) * math.sqrt(3.0)
        u = _keyed_noise(grad, ctx, "uniform")
        return u.mul_(2.0).sub_(1.0).mul_(a).mul_(grad)


@register
class Anneal(Perturbation):
    """Annealed additive Gaussian gradient noise (Neelakantan et al. 2015; optax.add_noise).

    ξ ~ N(0, σ_t²), σ_t² = η / (1 + t')^γ with t' = t − 1 the number of earlier steps (optax's
    count, so the first step has variance η). Added to g before the moments as ``g + λ·ξ``;
    the grid's id ``anneal`` uses λ = 1, so λ = 0 is plain AdamW like every other variant.
    """

    name = "anneal"
    kind = "gradient"
    stochastic = True

    def __init__(self, eta: float = 0.01, gamma: float = 0.55):
        self.eta = float(eta)
        self.gamma = float(gamma)

    def sigma(self, step: int) -> float:
        return math.sqrt(self.eta / (1.0 + (step - 1)) ** self.gamma)

    def term(self, theta, grad, ctx):
        xi = torch.randn(grad.shape, generator=ctx.generator(grad.device), dtype=grad.dtype,
                         device=grad.device)
        return xi.mul_(self.sigma(ctx.step))

    def __repr__(self) -> str:
        return f"Anneal(eta={self.eta}, gamma={self.gamma})"


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

    def term(self, theta, grad, ctx):
        s = rms(sinpi(theta).mul_(grad))
        dev, dt = grad.device, grad.dtype
        z = torch.randn(grad.shape, generator=ctx.generator(dev), dtype=dt, device=dev)
        if ctx.step > 1:
            z_prev = torch.randn(grad.shape, generator=ctx.generator(dev, step=ctx.step - 1),
                                 dtype=dt, device=dev)
            z.sub_(z_prev)
        return z.mul_(s / math.sqrt(2.0))
