"""Moved to :mod:`ablations.llm.gsm8k`; this module re-exports its public names for older
imports (``from ablations import gsm8k``, as in theory/scale.py)."""

from .llm.gsm8k import *  # noqa: F403
from .llm.gsm8k import __all__  # noqa: F401
