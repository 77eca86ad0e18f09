"""qsgd: a test harness for Superpositional Gradient Descent, and its optimizer.

``import qsgd`` pulls in torch only; Qiskit, statsmodels, seaborn and transformers are imported
inside the functions that need them.
"""

from .optimizer import NonFiniteGradientError, SuperpositionalAdamW, reference_step
from .perturbations import Context, Perturbation, available, get_perturbation, register
from .variants import Variant, parse_variant

__version__ = "0.1.0"

__all__ = [
    "SuperpositionalAdamW",
    "NonFiniteGradientError",
    "reference_step",
    "Perturbation",
    "Context",
    "register",
    "available",
    "get_perturbation",
    "Variant",
    "parse_variant",
]
