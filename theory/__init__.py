"""The theory suite: one function per analytic claim of the paper, each returning a measured
:class:`Check` from the data it is given (a :class:`TheoryInputs`, read by
:func:`load_inputs`). ``python -m theory run`` runs them all and writes ``results/theory/``."""

from .base import CHECKS, SIZES, Check, compare, register, run_checks
from .inputs import ArmRuns, TheoryInputs, load_inputs

__all__ = ["Check", "CHECKS", "SIZES", "compare", "register", "run_checks", "ArmRuns",
           "TheoryInputs", "load_inputs"]
