"""What a circuit is: its shape (:class:`CircuitSpec`), which gates exist, and their angles.

The family and its conventions are in the package docstring (:mod:`qsgd.circuit`). This module
holds the pieces every consumer of a circuit shares: the simulator, the Fourier form, the
Qiskit bridge and the attention's coefficient tables all take one :class:`CircuitSpec` instead
of repeating (n, depth, entangle, hadamard, encoding), and all build their gates from
:meth:`CircuitSpec.plan` / :meth:`CircuitSpec.gates` and :func:`spec_gate_angles`, so they
skip exactly the same identity gates.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "ENCODINGS",
    "BACKENDS",
    "READOUTS",
    "CircuitSpec",
    "check_backend",
    "check_readout",
    "gate_angles",
    "spec_gate_angles",
]

ENCODINGS = ("reupload", "once")
BACKENDS = ("torch", "aer")
READOUTS = ("amplitudes", "probabilities", "X", "Y", "Z", "amp_sum")

#: one gate of :meth:`CircuitSpec.gates`: (name, qubits, (layer, g, q) angle slot or None)
Gate = tuple[str, tuple[int, ...], "tuple[int, int, int] | None"]


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"invalid {name}: {value!r} (must be an integer >= 1)")


@dataclass(frozen=True)
class CircuitSpec:
    """The shape of one circuit C(x; w) of the family (package docstring), validated.

    Args:
        n: number of qubits (≥ 1); also the length of the data-angle vector x.
        depth: number of layers L (≥ 1).
        entangle: a CNOT chain CNOT(0→1)…CNOT(n−2→n−1) after each layer (none when n = 1).
        hadamard: H on every qubit before the first layer.
        encoding: ``"reupload"`` (x in every Ry and Rz) or ``"once"`` (x in layer 0's Ry only).

    Raises ``ValueError`` naming the first invalid field (n as ``n_qubits``). Frozen and
    hashable, so it keys the caches of compiled circuits and coefficient tables.
    """

    n: int
    depth: int = 2
    entangle: bool = True
    hadamard: bool = True
    encoding: str = "reupload"

    def __post_init__(self) -> None:
        _check_int("n_qubits", self.n)
        _check_int("depth", self.depth)
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"invalid encoding: {self.encoding!r} (valid: {', '.join(ENCODINGS)})")
        # truthiness is all the flags ever meant; store plain bools so equal specs hash equal
        object.__setattr__(self, "entangle", bool(self.entangle))
        object.__setattr__(self, "hadamard", bool(self.hadamard))

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        """(depth, 2, n): the shape of the extra angles w (index 0 of axis 1 for Ry, 1 for Rz)."""
        return (self.depth, 2, self.n)

    @property
    def data_flags(self) -> tuple[bool, ...]:
        """Per gate slot (layer 0 Ry, layer 0 Rz, layer 1 Ry, …; 2·depth of them), whether the
        gate carries the data angle x: all of them (``"reupload"``) or layer 0's Ry alone
        (``"once"``). The one statement of this rule; the simulator, its native tables and the
        attention's chain kernels read it."""
        return tuple(self.encoding == "reupload" or slot == 0 for slot in range(2 * self.depth))

    @property
    def data_gates(self) -> int:
        """G: how many gates carry the data angle on each qubit (2·depth or 1)."""
        return sum(self.data_flags)

    def check_weights(self, weights: Tensor | None) -> None:
        """Raise unless ``weights`` is None or has trailing shape (depth, 2, n)."""
        if weights is not None and tuple(weights.shape[-3:]) != self.weight_shape:
            raise ValueError(
                f"weights must have trailing shape (depth, 2, n_qubits) = "
                f"({self.depth}, 2, {self.n}), got {tuple(weights.shape)}"
            )

    def plan(self, has_weights: bool) -> list[tuple[bool, bool]]:
        """Per layer, whether its Ry and Rz gates exist (a gate with angle ≡ 0, i.e. no data
        and no extra angle, is the identity and skipped)."""
        flags = self.data_flags
        return [(has_weights or flags[2 * layer], has_weights or flags[2 * layer + 1])
                for layer in range(self.depth)]

    def gates(self, has_weights: bool) -> list[Gate]:
        """The circuit in time order as (gate, qubit(s), (layer, g, q) angle slot or None),
        gate one of ``"h"``, ``"ry"``, ``"rz"``, ``"cx"`` (the Qiskit bridge builds from it)."""
        ops: list[Gate] = []
        if self.hadamard:
            ops += [("h", (q,), None) for q in range(self.n)]
        for layer, (ry, rz) in enumerate(self.plan(has_weights)):
            if ry:
                ops += [("ry", (q,), (layer, 0, q)) for q in range(self.n)]
            if rz:
                ops += [("rz", (q,), (layer, 1, q)) for q in range(self.n)]
            if self.entangle:
                ops += [("cx", (c, c + 1), None) for c in range(self.n - 1)]
        return ops


def check_backend(backend: str) -> None:
    """Raise unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"invalid backend: {backend!r} (valid: {', '.join(BACKENDS)})")


def check_readout(readout: str, valid: tuple[str, ...] = READOUTS) -> None:
    """Raise unless ``readout`` is one of ``valid`` (default :data:`READOUTS`)."""
    if readout not in valid:
        raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(valid)})")


def spec_gate_angles(spec: CircuitSpec, angles: Tensor,
                     weights: Tensor | None) -> list[tuple[Tensor | None, Tensor | None]]:
    """:func:`gate_angles` for a validated ``spec`` (``angles`` (…, spec.n))."""
    spec.check_weights(weights)
    flags = spec.data_flags
    out: list[tuple[Tensor | None, Tensor | None]] = []
    for layer, present in enumerate(spec.plan(weights is not None)):
        pair: list[Tensor | None] = []
        for g in (0, 1):
            if not present[g]:
                pair.append(None)
                continue
            a = angles if flags[2 * layer + g] else None
            if weights is not None:
                w = weights[..., layer, g, :]
                a = w if a is None else a + w
            pair.append(a)
        out.append((pair[0], pair[1]))
    return out


def gate_angles(
    angles: Tensor,
    weights: Tensor | None = None,
    *,
    depth: int = 2,
    encoding: str = "reupload",
) -> list[tuple[Tensor | None, Tensor | None]]:
    """The rotation angles of every gate: per layer a pair (ry, rz) of tensors (…, n), ``None``
    for a skipped (identity) gate. ``angles``: (…, n) data angles x; ``weights``: extra angles
    broadcastable to (…, depth, 2, n), index 0 of the third-last axis for Ry, 1 for Rz; the
    angle of a gate is e·x_q + w (package docstring), e the encoding flag of its slot."""
    return spec_gate_angles(CircuitSpec(angles.shape[-1], depth, encoding=encoding), angles,
                            weights)

