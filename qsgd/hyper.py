"""The hyperparameters of :class:`qsgd.SuperpositionalAdamW`: their defaults and their validation.

One rule for every place a parameter group enters the optimizer (the constructor,
``add_param_group``, ``load_state_dict`` and unpickling): the group is completed with the
defaults for every missing key (as ``torch.optim`` does for flags it added later, so a
state_dict saved by ``torch.optim.AdamW`` or by an older qsgd loads), then checked by
:func:`check_group`, and only then does anything change. Each error is one line naming the key,
the value and what is allowed; ``where`` says which group of which source.

Flags that ``torch.optim.AdamW`` users pass: ``amsgrad`` and ``maximize`` work as in AdamW;
``capturable=True`` and ``differentiable=True`` are refused with the reason (the step count is a
host integer and the update runs under ``no_grad``); ``decoupled_weight_decay=False`` (the key
``torch.optim.Adam`` writes for an L2 penalty) is refused when weight decay is on, since this
optimizer's decay is always decoupled.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import Tensor

from .perturbations import KINDS, get_perturbation

__all__ = ["DEFAULTS", "SCOPES", "NONFINITE", "check_group", "check_settings", "complete",
           "group_perturbation"]

SCOPES = ("all", "first_n")
NONFINITE = ("raise", "skip", "off")

#: every key of a parameter group and its default (the constructor's defaults)
DEFAULTS: dict[str, Any] = dict(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, quantum_weight=0.5,
    perturbation="sin", scope="all", n_qubits=4, bias_correction=True, seed=0, foreach=None,
    fused=None, amsgrad=False, maximize=False, capturable=False, differentiable=False,
    circuit_shots=None,
)

_UNSUPPORTED = {
    "capturable": "the step count is a host integer, so the step cannot be captured in a "
                  "CUDA graph (on CUDA the fused Triton step is one launch already)",
    "differentiable": "the update runs under torch.no_grad(); no gradient flows through it",
}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite_nonneg(where: str, key: str, value: Any, shown: Any = None) -> None:
    if not (_number(value) and value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{where}invalid {key}: {value if shown is None else shown!r} "
                         "(must be a finite number >= 0)")


def _flag(where: str, group: dict[str, Any], key: str, allow_none: bool = False) -> None:
    v = group[key]
    if not (isinstance(v, bool) or (allow_none and v is None)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise ValueError(f"{where}invalid {key}: {v!r} (must be {allowed})")


def complete(group: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Fill ``group`` in place with ``defaults`` (then :data:`DEFAULTS`) for missing keys."""
    for source in (defaults, DEFAULTS):
        for key, value in source.items():
            if key != "params":
                group.setdefault(key, value)
    return group


def check_group(group: dict[str, Any], where: str = "") -> None:
    """Validate one complete parameter group; raise ``ValueError`` naming the first bad key.

    ``where`` prefixes the message (e.g. ``"param group 1: "``)."""
    lr = group["lr"]
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{where}invalid lr: a Tensor of shape {tuple(lr.shape)} "
                             "(a Tensor lr must have exactly one element)")
        _finite_nonneg(where, "lr", float(lr), shown=lr)
    else:
        _finite_nonneg(where, "lr", lr)
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"{where}invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    for i, b in enumerate(betas):
        if not (_number(b) and 0.0 <= b < 1.0):
            raise ValueError(f"{where}invalid betas[{i}]: {b!r} (must be a number in [0, 1))")
    for key in ("eps", "weight_decay", "quantum_weight"):
        _finite_nonneg(where, key, group[key])
    if group["scope"] not in SCOPES:
        raise ValueError(f"{where}invalid scope: {group['scope']!r} "
                         f"(valid scopes: {', '.join(SCOPES)})")
    n = group["n_qubits"]
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"{where}invalid n_qubits: {n!r} (must be an integer >= 1)")
    seed = group["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{where}invalid seed: {seed!r} (must be an integer)")
    for key in ("bias_correction", "amsgrad", "maximize", "capturable", "differentiable"):
        _flag(where, group, key)
    for key in ("foreach", "fused"):  # [fused] the fused CUDA path's switch (qsgd.fused)
        _flag(where, group, key, allow_none=True)
    for key, why in _UNSUPPORTED.items():
        if group[key]:
            raise ValueError(f"{where}{key}=True is not supported by SuperpositionalAdamW: "
                             f"{why}")
    if group.get("decoupled_weight_decay", True) is False and group["weight_decay"] != 0:
        raise ValueError(f"{where}decoupled_weight_decay=False is not supported: the weight "
                         "decay of SuperpositionalAdamW is decoupled, as torch.optim.AdamW's")
    try:
        pert = get_perturbation(group["perturbation"])
    except ValueError as err:  # the message lists the valid names
        raise ValueError(f"{where}{err}") from None
    if pert.kind not in KINDS:  # an instance of an unregistered class is not checked by register
        raise ValueError(f"{where}invalid perturbation kind: {pert.kind!r} of {pert!r} "
                         f"(valid kinds: {', '.join(KINDS)})")
    _check_circuit_shots(group, pert, where)


def _check_circuit_shots(group: dict[str, Any], pert: Any, where: str = "") -> None:
    """The group's ``circuit_shots`` checked: None, or an integer >= 1 with the circuit
    perturbation (a name or a :class:`~qsgd.perturbations.Circuit`) whose own shots, if it
    has any, agree."""
    shots = group.get("circuit_shots")
    if shots is None:
        return
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"{where}invalid circuit_shots: {shots!r} (must be an integer >= 1, "
                         "or None for the exact readout)")
    if pert.name != "circuit":
        raise ValueError(f"{where}circuit_shots={shots} needs perturbation='circuit', got "
                         f"{pert.name!r}")
    own = getattr(pert, "shots", None)
    if own is not None and own != shots:
        raise ValueError(f"{where}circuit_shots={shots} disagrees with the perturbation "
                         f"object's shots={own}")


def group_perturbation(group: dict[str, Any]) -> Any:
    """The perturbation object of a (checked) group: ``group["perturbation"]`` resolved, with
    ``circuit_shots`` (when set) as the circuit's shots (a copy; an object passed in is never
    changed)."""
    pert = get_perturbation(group["perturbation"])
    shots = group.get("circuit_shots")
    if shots is not None and getattr(pert, "shots", None) != shots:
        pert = copy.copy(pert)
        pert.shots, pert.stochastic = int(shots), True
    return pert


def check_settings(nonfinite: Any, track_ratio: Any, skipped_steps: Any = 0,
                   where: str = "") -> None:
    """Validate the optimizer-wide settings (not per group)."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"{where}invalid nonfinite: {nonfinite!r} "
                         f"(valid: {', '.join(NONFINITE)})")
    if not isinstance(track_ratio, bool):
        raise ValueError(f"{where}invalid track_ratio: {track_ratio!r} (must be True or False)")
    if isinstance(skipped_steps, bool) or not isinstance(skipped_steps, int) or skipped_steps < 0:
        raise ValueError(f"{where}invalid skipped_steps: {skipped_steps!r} "
                         "(must be an integer >= 0)")
