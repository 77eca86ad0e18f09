"""The bridge to Qiskit: the same circuits as ``qiskit.QuantumCircuit`` objects, and the Aer
backend of :func:`qsgd.circuit.simulate` (``backend="aer"``).

The paper simulated its circuit with Qiskit; Aer runs each circuit of a batch as its own
experiment, which measures that cost. Qiskit and Qiskit Aer are imported inside the functions
that need them, so ``import qsgd.circuit`` works without them. Both builders walk the gate list
of :meth:`CircuitSpec.gates`, so they skip exactly the identity gates the torch engine skips,
and Qiskit's qubit q is our qubit q (little-endian basis index, package docstring).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from .spec import CircuitSpec, spec_gate_angles

__all__ = ["to_qiskit", "run_aer", "parameterised_circuit"]

_INSTALL = "pip install 'qsgd[quantum]' (or: pip install qiskit qiskit-aer)"


def _require(module: str, what: str):
    """Import ``module`` or raise ImportError saying what needs it and what to install (the
    simulator itself is torch; only this cross-check needs Qiskit)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                          f"{_INSTALL}") from err


def _angle_array(spec: CircuitSpec, x: Tensor, w: Tensor | None) -> Tensor:
    """All gate angles of x (B, n), w (B|1, depth, 2, n) or None as one detached
    (B, depth, 2, n) float64 tensor, 0 for skipped gates (the values bound into Qiskit)."""
    layers = spec_gate_angles(spec, x.double(), None if w is None else w.double())
    out = x.new_zeros((x.shape[0], spec.depth, 2, x.shape[-1]), dtype=torch.float64)
    for layer, pair in enumerate(layers):
        for g, a in enumerate(pair):
            if a is not None:
                out[:, layer, g] = a.detach()
    return out


def to_qiskit(
    angles: Sequence[float] | Tensor,
    weights: Sequence | Tensor | None = None,
    n_qubits: int | None = None,
    depth: int = 2,
    entangle: bool = True,
    *,
    hadamard: bool = True,
    encoding: str = "reupload",
):
    """The same circuit C(x; w) as a ``qiskit.QuantumCircuit`` with numeric angles.

    ``angles``: one circuit's data angles, length n; ``weights``: (depth, 2, n) or None;
    ``n_qubits``: n, checked against the angles when given; ``depth``, ``entangle``,
    ``hadamard``, ``encoding``: as :func:`qsgd.circuit.simulate`. Qiskit's qubit q is our
    qubit q, so ``Statevector(to_qiskit(...)).data`` equals ``simulate(...)`` for the same
    arguments. No measurement or save instruction is added.
    """
    QuantumCircuit = _require("qiskit", "to_qiskit (the Qiskit cross-check)").QuantumCircuit

    x = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    n = x.numel()
    if n_qubits is not None and n_qubits != n:
        raise ValueError(f"n_qubits={n_qubits} but {n} angles were given")
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w is not None:
        w = w.reshape(1, depth, 2, n)
    spec = CircuitSpec(n, depth, entangle, hadamard, encoding)
    vals = _angle_array(spec, x[None], w)[0]
    qc = QuantumCircuit(n)
    for gate, qubits, slot in spec.gates(w is not None):
        if gate == "h":
            qc.h(qubits[0])
        elif gate == "cx":
            qc.cx(*qubits)
        else:
            getattr(qc, gate)(float(vals[slot]), qubits[0])
    return qc


def parameterised_circuit(spec: CircuitSpec, has_weights: bool):
    """The circuits ``spec`` as one ``QuantumCircuit`` with a Parameter per gate angle, in the
    order of :meth:`CircuitSpec.gates`: (circuit, parameters, their (layer, g, q) slots)."""
    qiskit = _require("qiskit", "the parameterised circuit (the Qiskit cross-check)")
    ops = spec.gates(has_weights)
    slots = [slot for _, _, slot in ops if slot is not None]
    pv = qiskit.circuit.ParameterVector("a", len(slots))
    qc = qiskit.QuantumCircuit(spec.n)
    i = 0
    for gate, qubits, _ in ops:
        if gate == "h":
            qc.h(qubits[0])
        elif gate == "cx":
            qc.cx(*qubits)
        else:
            getattr(qc, gate)(pv[i], qubits[0])
            i += 1
    return qc, list(pv), slots


@functools.lru_cache(maxsize=32)
def _aer_template(spec: CircuitSpec, has_weights: bool):
    """A parameterised, transpiled circuit (one Parameter per gate angle) and its simulator:
    (AerSimulator, transpiled circuit, parameters, their (layer, g, q) slots). Cached per
    circuit shape; ablations/bench_attention.py sets the simulator's thread count through it."""
    qiskit = _require("qiskit", "backend='aer' (the Qiskit Aer cross-check)")
    AerSimulator = _require("qiskit_aer", "backend='aer' (the Qiskit Aer cross-check)").AerSimulator
    transpile = qiskit.transpile
    qc, pv, slots = parameterised_circuit(spec, has_weights)
    qc.save_statevector()
    sim = AerSimulator(method="statevector")
    # optimization_level=0: ry, rz, h, cx are Aer basis gates, so the circuit runs gate for gate
    tqc = transpile(qc, sim, optimization_level=0)
    return sim, tqc, list(pv), slots


def run_aer(spec: CircuitSpec, x: Tensor, w: Tensor | None) -> Tensor:
    """Run each circuit of a flat batch (x (B, n), w (B|1, depth, 2, n) or None) as its own
    Aer experiment; complex amplitudes (B, 2ⁿ) on x's device, complex128 for float64 x, else
    complex64 (Aer computes in float64). No gradient."""
    import numpy as np

    sim, tqc, params, slots = _aer_template(spec, w is not None)
    if w is not None and w.shape[0] != x.shape[0]:
        w = w.expand(x.shape[0], -1, -1, -1)
    vals = _angle_array(spec, x.detach().cpu(),
                        None if w is None else w.detach().cpu()).numpy()
    B = x.shape[0]
    if params:
        binds = [{p: vals[:, s[0], s[1], s[2]].tolist() for p, s in zip(params, slots)}]
        result = sim.run(tqc, parameter_binds=binds).result()
        states = [np.asarray(result.get_statevector(i)) for i in range(B)]
    else:
        result = sim.run([tqc] * B).result()
        states = [np.asarray(result.get_statevector(i)) for i in range(B)]
    out = torch.from_numpy(np.stack(states).astype(np.complex128))
    cdt = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    return out.to(device=x.device, dtype=cdt)
