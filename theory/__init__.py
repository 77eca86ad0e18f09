"""The theory suite: one function per analytic claim of the paper, each returning a measured
:class:`Check`. ``python -m theory run`` runs them all and writes ``results/theory/``."""

from .base import CHECKS, SIZES, Check, compare, register, run_checks

__all__ = ["Check", "CHECKS", "SIZES", "compare", "register", "run_checks"]
