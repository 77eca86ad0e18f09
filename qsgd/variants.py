"""Canonical variant ids (DESIGN.md) and their optimizer settings.

An id names one optimizer configuration::

    adamw                  plain AdamW (perturbation none, λ = 0)
    sin-l0.5               perturbation sin, λ = 0.5, scope all
    sin-l0.5-first4        the same, only the first 4 entries of each tensor (scope first_n)
    anneal                 annealed gradient noise with λ = 1 (η = 0.01, γ = 0.55; absolute)
    annealrel-l1.0         annealed gradient noise with σ relative to the gradient's RMS
    sinnorm-l0.5           the sine on Adam's normalised step, Q = sin(πθ)⊙m̂/(√v̂+ε)
    moment-l0.5            our reading of the paper's "moment updates": (1 + λ sin πθ)⊙g in m
    <name>-l<λ>[-first<n>] any registered perturbation (qsgd.perturbations.available())
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from .perturbations import available, get_perturbation

__all__ = ["Variant", "parse_variant", "canonical_id"]

_ID = re.compile(r"^(?P<name>[a-z]+)(?:-l(?P<lam>\d+(?:\.\d+)?))?(?:-first(?P<n>\d+))?$")
_IMPLICIT_WEIGHT = {"adamw": ("none", 0.0), "none": ("none", 0.0), "anneal": ("anneal", 1.0)}


@dataclass(frozen=True)
class Variant:
    """One optimizer configuration of a grid, named by its canonical id."""

    id: str
    perturbation: str
    quantum_weight: float
    scope: str = "all"
    n_qubits: int = 4

    @property
    def canonical(self) -> str:
        """The canonical spelling of this configuration's id: ``adamw`` for no perturbation,
        ``anneal`` for annealed noise at its implicit weight 1, else ``<name>-l<λ>`` with λ
        written as the shortest decimal that round-trips (``0.5``, ``1.0``, ``0.00001``), then
        ``-first<n>`` for the first-n scope (``adamw-first4`` is ``adamw``). ``sin-l0.50`` and
        ``sin-l0.5``, or ``none`` and ``adamw``, name one optimizer and share one id."""
        if self.perturbation == "none":  # no term: its scope changes nothing
            return "adamw"
        scope = f"-first{self.n_qubits}" if self.scope == "first_n" else ""
        if self.perturbation == "anneal" and self.quantum_weight == 1.0:
            return "anneal" + scope
        lam = format(Decimal(repr(float(self.quantum_weight))), "f")
        if "." not in lam:
            lam += ".0"
        return f"{self.perturbation}-l{lam}{scope}"

    def optimizer_kwargs(self) -> dict:
        """Keyword arguments for :class:`qsgd.SuperpositionalAdamW`."""
        return dict(perturbation=self.perturbation, quantum_weight=self.quantum_weight,
                    scope=self.scope, n_qubits=self.n_qubits)


def valid_ids_help() -> str:
    names = [n for n in available() if n not in ("none", "anneal")]
    return ("adamw, anneal, or <name>-l<λ>[-first<n>] with <name> one of "
            + ", ".join(names) + " (e.g. sin-l0.5, sin-l0.5-first4)")


def parse_variant(variant_id: str) -> Variant:
    """Parse a canonical id such as ``sin-l0.5-first4``; ValueError lists the valid forms."""
    m = _ID.match(variant_id) if isinstance(variant_id, str) else None
    if m is None:
        raise ValueError(f"malformed variant id {variant_id!r}; valid ids: {valid_ids_help()}")
    name, lam, n = m.group("name"), m.group("lam"), m.group("n")
    if name in _IMPLICIT_WEIGHT:
        pert, weight = _IMPLICIT_WEIGHT[name]
        if name != "anneal" and lam is not None:
            raise ValueError(f"variant {variant_id!r}: {name} takes no weight; use 'adamw'")
        if lam is not None:
            weight = float(lam)
    else:
        try:
            get_perturbation(name)
        except ValueError:
            raise ValueError(
                f"unknown variant {variant_id!r}; valid ids: {valid_ids_help()}"
            ) from None
        if lam is None:
            raise ValueError(f"variant {variant_id!r} needs a weight, e.g. {name}-l0.5")
        pert, weight = name, float(lam)
    if n is not None:
        if int(n) < 1:
            raise ValueError(f"variant {variant_id!r}: first<n> needs n >= 1")
        return Variant(variant_id, pert, weight, "first_n", int(n))
    return Variant(variant_id, pert, weight)


def canonical_id(variant_id: str) -> str:
    """The canonical id of a variant id (:attr:`Variant.canonical`); ValueError as
    :func:`parse_variant` for a malformed or unknown id."""
    return parse_variant(variant_id).canonical
