"""The check record every theory function returns, and the registry that runs them.

A check compares one measured figure with what a derivation predicts::

    Check(id="T1", claim="...", measured=0.9999, expected=1.0, tolerance=1e-9,
          relation="<=", passed=True, ...)

``relation`` says how ``measured`` is compared with ``expected`` (within ``tolerance``):

    "<="  measured <= expected + tolerance          (a bound)
    "=="  |measured - expected| <= tolerance          (an identity; tolerance absolute)
    ">="  measured >= expected - tolerance
    "x"   max(measured/expected, expected/measured) <= tolerance   (within a factor)

Every check is registered with :func:`register` and has the signature
``fn(size: str, inputs: TheoryInputs) -> Check``: ``size`` is one of :data:`SIZES`
(``"small"`` runs in seconds, for smoke tests; ``"full"`` is what ``results/theory/`` holds),
``inputs`` (:class:`theory.inputs.TheoryInputs`) is all it reads from outside the code: the
arms' runs tables, their reference learning rates, the claims. A check reads no file;
:func:`theory.inputs.load_inputs` does that, once, for ``python -m theory run``.

``passed`` is ``None`` when the check could not run (its ``status`` then says why, e.g.
"classifier arm not run yet"). ``expected_outcome`` is ``"pass"``, or ``"fail"`` for a check
designed to fail (registered with ``@register("T…", expected_outcome="fail")``), or for a
check registered with ``expected_outcome="derived"`` whatever the check derives from its inputs
by a rule its docstring states and sets on the :class:`Check` it returns (T8: pass expected
where the reference grid's null control gives a single run 80% power, fail otherwise). A check
*meets its expectation* (:attr:`Check.met`) when it ran and ``passed`` is what was expected, and
``python -m theory run`` exits 0 only when every check does. Beyond the six CSV fields a
check carries a one-line ``summary`` (printed by the CLI), the ``derivation`` and
``survives`` paragraphs of the report (markdown), result ``tables`` (lists of row dicts) and
``data`` for its figures.
Checks compute only; :mod:`theory.plots` draws and :mod:`theory.report` writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inputs import TheoryInputs

__all__ = ["Check", "SIZES", "RELATIONS", "OUTCOMES", "DERIVED", "register", "CHECKS",
           "EXPECTED_OUTCOMES", "run_checks", "compare", "check_ids"]

SIZES = ("small", "full")
RELATIONS = ("<=", "==", ">=", "x")
#: what a check may be expected to do (:attr:`Check.expected_outcome`)
OUTCOMES = ("pass", "fail")
#: registered instead of an outcome: the check derives its expected outcome from its inputs
DERIVED = "derived"


def compare(measured: float, expected: float, tolerance: float, relation: str) -> bool:
    """Whether ``measured`` satisfies ``relation`` against ``expected`` within ``tolerance``."""
    if relation not in RELATIONS:
        raise ValueError(f"invalid relation: {relation!r} (valid: {', '.join(RELATIONS)})")
    if not (math.isfinite(measured) and math.isfinite(expected)):
        return False
    if relation == "<=":
        return measured <= expected + tolerance
    if relation == ">=":
        return measured >= expected - tolerance
    if relation == "==":
        return abs(measured - expected) <= tolerance
    if measured <= 0 or expected <= 0:
        return False
    return max(measured / expected, expected / measured) <= tolerance


@dataclass
class Check:
    """One theory check: a claim, its measured figure and what theory expects.

    The first six fields are the columns of ``results/theory/checks.csv``.
    """

    id: str
    claim: str
    measured: float
    expected: float
    tolerance: float
    passed: bool | None
    relation: str = "<="
    quantity: str = ""
    summary: str = ""
    status: str = "ran"
    derivation: str = ""
    survives: str = ""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    size: str = "full"
    seconds: float = math.nan
    expected_outcome: str = "pass"

    @property
    def met(self) -> bool:
        """Whether the check ran and its result is the expected one (a check expected to fail
        meets its expectation by failing)."""
        return self.passed is not None and bool(self.passed) == (self.expected_outcome == "pass")

    def row(self) -> dict[str, Any]:
        """The CSV row: the six contract columns, then extras."""
        return {
            "id": self.id, "claim": self.claim, "measured": self.measured,
            "expected": self.expected, "tolerance": self.tolerance,
            "passed": "" if self.passed is None else bool(self.passed),
            "relation": self.relation, "quantity": self.quantity, "status": self.status,
            "summary": self.summary, "size": self.size, "seconds": round(self.seconds, 2),
            "expected_outcome": self.expected_outcome,
        }


CheckFn = Callable[..., Check]
CHECKS: dict[str, CheckFn] = {}
#: check id → "pass" or "fail" (what the check is designed to show), or :data:`DERIVED`
EXPECTED_OUTCOMES: dict[str, str] = {}


def register(check_id: str, *, expected_outcome: str = "pass") -> Callable[[CheckFn], CheckFn]:
    """Decorator: make a check function available under ``check_id`` (run in id order).
    ``expected_outcome="fail"`` marks a check designed to fail (module docstring); the checks
    it returns, and stored ones re-rendered, carry the mark. ``expected_outcome="derived"``
    (:data:`DERIVED`): the check sets ``expected_outcome`` on each check it returns, from its
    inputs, by the rule its docstring states."""
    if expected_outcome not in (*OUTCOMES, DERIVED):
        raise ValueError(f"invalid expected_outcome: {expected_outcome!r} "
                         f"(valid: {', '.join((*OUTCOMES, DERIVED))})")

    def wrap(fn: CheckFn) -> CheckFn:
        CHECKS[check_id] = fn
        EXPECTED_OUTCOMES[check_id] = expected_outcome
        return fn

    return wrap


def _load_all() -> None:
    # the modules register their checks on import
    from . import bounds, circuits, escape, invariance, power, scale  # noqa: F401


def check_ids() -> list[str]:
    """Every registered check id, in id order."""
    _load_all()
    return sorted(CHECKS)


def run_checks(ids: list[str] | None = None, size: str = "full", *, inputs: TheoryInputs,
               on_done: Callable[[Check], None] | None = None) -> list[Check]:
    """Run the checks ``ids`` (default: all, in id order) at ``size`` on ``inputs``; return
    them.

    Every check function is called as ``fn(size, inputs)`` (module docstring). ``inputs`` is
    a :class:`theory.inputs.TheoryInputs` (``load_inputs(results_root)`` for the stored
    results, or one built by hand). ``on_done`` is called with each finished check (the CLI
    prints its summary).
    """
    if size not in SIZES:
        raise ValueError(f"invalid size: {size!r} (valid: {', '.join(SIZES)})")
    _load_all()
    wanted = sorted(CHECKS) if ids is None else list(ids)
    unknown = [i for i in wanted if i not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check ids {unknown}; valid: {', '.join(sorted(CHECKS))}")
    out = []
    for cid in wanted:
        t0 = time.perf_counter()
        check = CHECKS[cid](size, inputs)
        check.seconds = time.perf_counter() - t0
        check.size = size
        registered = EXPECTED_OUTCOMES.get(cid, "pass")
        if registered != DERIVED:
            check.expected_outcome = registered
        elif check.expected_outcome not in OUTCOMES:
            raise ValueError(f"{cid} derives its expected outcome and returned "
                             f"{check.expected_outcome!r} (valid: {', '.join(OUTCOMES)})")
        out.append(check)
        if on_done is not None:
            on_done(check)
    return out
