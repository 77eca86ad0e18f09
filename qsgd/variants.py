"""Canonical variant ids (DESIGN.md) and their optimizer settings.

An id names one optimizer configuration::

    adamw                  plain AdamW (perturbation none, λ = 0)
    sin-l0.5               perturbation sin, λ = 0.5, scope all
    sin-l0.5-first4        the same, only the first 4 entries of each tensor (scope first_n)
    anneal                 annealed gradient noise with λ = 1 (η = 0.01, γ = 0.55)
    <name>-l<λ>[-first<n>] any registered perturbation
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .perturbations import available, get_perturbation

__all__ = ["Variant", "parse_variant"]

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
