"""The arms: one module per task family, each a registered :class:`Arm` (``base.py``).

``get_arm(name)`` returns the arm (importing a built-in one on first use); config, runner,
statistics, plots and report iterate over what it gives and never test an arm's name.
"""

from .base import (
    DIRECTIONS,
    Arm,
    ArmError,
    Metric,
    TimeTarget,
    arm_names,
    get_arm,
    register_arm,
)

__all__ = ["Arm", "ArmError", "Metric", "TimeTarget", "DIRECTIONS", "register_arm", "get_arm",
           "arm_names"]
