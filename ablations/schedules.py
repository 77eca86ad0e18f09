"""Learning-rate schedules shared by every arm: linear warm-up, then constant, linear or cosine
decay to a floor.

One function, so that the classifier's cosine decay and the LLM arm's warm-up + cosine are the
same code. Its operation order is fixed (the classifier's runs are bit-reproducible on a CPU,
and a rounding change would make every stored run stale).
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_at"]

SCHEDULES = ("cosine", "linear", "constant")


def lr_at(step: int, lr: float, *, schedule: str, horizon: int, warmup: int = 0,
          min_ratio: float = 0.0) -> float:
    """The learning rate of 0-based ``step``.

    Warm-up: ``lr · (step + 1) / warmup`` for ``step < warmup``. After it, with
    x = step − warmup clipped to [0, span] and span = max(1, horizon − warmup), floor =
    ``min_ratio · lr``:

    * ``constant``: lr;
    * ``linear``: lr − (lr − floor) · x / span;
    * ``cosine``: floor + ½ (lr − floor) (1 + cos(π x / span)).

    ``horizon`` is the step at which the decay reaches the floor: the classifier decays over
    its ``total_steps`` (so its last step stays above 0), the LLM arm over ``steps − 1`` (its
    last step is at the floor). With ``warmup = 0`` and ``min_ratio = 0`` the cosine is
    ``lr · ½ (1 + cos(π step / horizon))`` to the bit.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"invalid schedule: {schedule!r} (valid: {', '.join(SCHEDULES)})")
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    span = max(1, horizon - warmup)
    x = min(span, max(0, step - warmup))
    floor = min_ratio * lr
    if schedule == "linear":
        return lr - (lr - floor) * (x / span)
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * x / span))
