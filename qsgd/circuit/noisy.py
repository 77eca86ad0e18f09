"""The circuit on a noisy device, exactly: transpiled to a fake IBM backend's native gates and
coupling map, with that backend's noise model, simulated as a density matrix in torch.

Why not Aer per score: a training step of the classifier evaluates Φ at ~10⁵ scores; Aer runs
one experiment per circuit (milliseconds each, :mod:`qsgd.circuit.qiskit`). But the noisy
circuit has a fixed structure: the transpiled gate list is the same for every angle, the data
and weight angles enter only virtual ``rz`` gates (each with angle c·α + d, one parameter α,
checked affine when the program is built), and Aer's noise model (``NoiseModel.from_backend``)
attaches to each instruction a fixed channel that does not depend on the angle. So the whole
noisy run is a product of fixed linear maps on the vectorised density matrix vec(ρ) and
diagonal phases exp(−iθ(s_j − s_k)/2) of the parametric ``rz`` (s_j = ±1 the Z eigenvalue
of qubit q in basis state j), followed by the per-qubit readout confusion matrices:

    vec ρ_T = F_m · D(θ_m) · … · D(θ_1) · F_0 · vec |0⟩⟨0|,    p_meas = diag(ρ_T) · A,

F_i the composed superoperators (Σ_K K ⊗ K̄ for each channel, U ⊗ Ū for each fixed gate,
row-major vec) of the instructions between two parametric gates, A = ⊗_q A_q with
A_q[true, measured] Aer's readout error of the qubit. This module reads those maps from the
backend once (:func:`hardware_program`, needs qiskit, qiskit-aer and qiskit-ibm-runtime) and
evaluates them in torch (:func:`program_probabilities`, differentiable, batched): the same
probabilities Aer's density-matrix simulator gives (tested on many circuits), at the cost of
a few small matrix products per circuit.

Scope of the model, as Aer's ``NoiseModel.from_backend``: depolarising + thermal-relaxation
errors on ``sx``, ``x``, ``ecr``/``cz`` (``rz`` is virtual and exact), a thermal-relaxation
error on ``measure`` (applied before the measurement, as Aer does) and readout error. Idle
qubits decohere only in a scheduled circuit with delays, which neither Aer nor this module
adds, so both omit idle noise. Crosstalk and leakage are not modelled by either.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .spec import CircuitSpec, spec_gate_angles

__all__ = ["FAKE_BACKENDS", "NoisyProgram", "hardware_program", "program_probabilities",
           "fake_backend", "transpiled_circuit"]

#: fake backends of qiskit-ibm-runtime this study uses (127-qubit Eagle r3 devices, ECR gates)
FAKE_BACKENDS = ("fake_sherbrooke", "fake_brisbane")

_INSTALL = ("pip install 'qsgd[hardware]' (or: pip install qiskit qiskit-aer "
            "qiskit-ibm-runtime)")


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                          f"{_INSTALL}") from err


def fake_backend(name: str):
    """The fake backend ``name`` (e.g. ``"fake_sherbrooke"``) of
    ``qiskit_ibm_runtime.fake_provider``: a real device's coupling map and calibration."""
    if name not in FAKE_BACKENDS:
        raise ValueError(f"invalid backend: {name!r} (valid: {', '.join(FAKE_BACKENDS)})")
    fp = _require("qiskit_ibm_runtime.fake_provider", f"the {name} noise model")
    cls = "Fake" + name.removeprefix("fake_").capitalize()
    return getattr(fp, cls)()


def _parameterised(spec: CircuitSpec):
    """The circuit family with one Parameter per gate angle (:mod:`qsgd.circuit.qiskit`),
    measured on every qubit; and the (layer, g, q) slot of each parameter."""
    from .qiskit import parameterised_circuit

    qc, params, slots = parameterised_circuit(spec, True)
    qc.measure_all()
    return qc, params, slots


@functools.lru_cache(maxsize=8)
def transpiled_circuit(spec: CircuitSpec, backend: str, optimization_level: int = 3,
                       seed_transpiler: int = 0):
    """(transpiled circuit, parameters, slots, backend object) of the family ``spec`` for
    ``backend``: native gates (rz, sx, x, ecr), its coupling map and a noise-aware layout
    (Qiskit's preset pass manager at ``optimization_level``, ``seed_transpiler`` fixed)."""
    qiskit = _require("qiskit", "the hardware circuit")
    b = fake_backend(backend)
    qc, params, slots = _parameterised(spec)
    tqc = qiskit.transpile(qc, b, optimization_level=optimization_level,
                           seed_transpiler=seed_transpiler)
    return tqc, params, slots, b


@dataclass(frozen=True)
class NoisyProgram:
    """The noisy circuit as torch maps (module docstring).

    steps: per step either ("fixed", F (4ⁿ, 4ⁿ) complex128) or ("phase", local qubit q,
    slot index i, coefficient c, offset d): rz(c·α_i + d) on qubit q, α_i the angle of gate
    slot ``slots[i]`` (layer, g, q). readout: A (2ⁿ, 2ⁿ) float64, p_meas = p_true @ A.
    Facts of the transpiled circuit: depth, two_qubit (count), ops (name → count), layout
    (physical qubit of each of our qubits), backend name, noise (whether channels are in).
    """

    n: int
    steps: tuple
    slots: tuple
    readout: Tensor
    depth: int
    two_qubit: int
    ops: tuple
    layout: tuple
    backend: str
    noise: bool

    def facts(self) -> dict:
        return {"backend": self.backend, "depth": self.depth, "two_qubit_gates": self.two_qubit,
                "ops": dict(self.ops), "layout": list(self.layout)}


def _affine(expr, params) -> tuple[int, float, float]:
    """(parameter index, c, d) with expr = c·p + d, checked at three points."""
    (p,) = expr.parameters
    i = params.index(p)
    vals = [float(expr.bind({p: x}).numeric()) for x in (0.0, 1.0, 2.5)]
    c, d = vals[1] - vals[0], vals[0]
    if abs(vals[2] - (d + 2.5 * c)) > 1e-9:
        raise ValueError(f"transpiled rz angle {expr} is not affine in one parameter")
    return i, c, d


@functools.lru_cache(maxsize=8)
def hardware_program(spec: CircuitSpec, backend: str = "fake_sherbrooke", *,
                     noise: bool = True, optimization_level: int = 3,
                     seed_transpiler: int = 0) -> NoisyProgram:
    """Read the transpiled circuit and (``noise=True``) the backend's noise model into a
    :class:`NoisyProgram`. ``noise=False`` gives the same transpiled circuit without
    channels or readout error: its probabilities equal the ideal circuit's (tested), which
    checks the transpilation and the parameter mapping."""
    import numpy as np

    qi = _require("qiskit.quantum_info", "the hardware noise model")
    aer_noise = _require("qiskit_aer.noise", "the hardware noise model")
    tqc, params, slots, b = transpiled_circuit(spec, backend, optimization_level,
                                               seed_transpiler)
    nm = aer_noise.NoiseModel.from_backend(b) if noise else None
    n = spec.n
    local: dict[int, int] = {}  # physical qubit → our qubit (the clbit measure_all gave it)
    for ins in tqc.data:
        if ins.operation.name == "measure":
            local[tqc.find_bit(ins.qubits[0]).index] = tqc.find_bit(ins.clbits[0]).index
    if sorted(local.values()) != list(range(n)):
        raise ValueError(f"the transpiled circuit measures {sorted(local.values())}, not 0..{n-1}")
    dim = 2**n
    eye = np.eye(dim * dim, dtype=complex)

    def embed(mat, qubits):
        op = qi.Operator(np.eye(dim)).compose(qi.Operator(mat), qargs=[local[q] for q in qubits])
        return op.data

    def channel(kraus, qubits):
        out = np.zeros((dim * dim, dim * dim), dtype=complex)
        for K in kraus:
            E = embed(K, qubits)
            out += np.kron(E, E.conj())
        return out

    def error_of(name, qubits):
        if nm is None:
            return None
        err = nm._local_quantum_errors.get(name, {}).get(tuple(qubits))
        return err if err is not None else nm._default_quantum_errors.get(name)

    steps, F = [], eye.copy()
    two_qubit, names = 0, {}
    measured_errors = []
    for ins in tqc.data:
        op, name = ins.operation, ins.operation.name
        qubits = [tqc.find_bit(q).index for q in ins.qubits]
        if name == "barrier":
            continue
        names[name] = names.get(name, 0) + 1
        if any(q not in local for q in qubits):
            raise ValueError(f"{name} on unmeasured physical qubit(s) {qubits}")
        if name == "measure":
            measured_errors.append(qubits[0])
            err = error_of("measure", qubits)
            if err is not None:  # Aer applies a measure's quantum error before it
                F = channel(qi.Kraus(err.to_quantumchannel()).data, qubits) @ F
            continue
        if len(qubits) == 2:
            two_qubit += 1
        if name == "rz" and getattr(op.params[0], "parameters", None):
            steps.append(("fixed", torch.from_numpy(F.copy())))
            i, c, d = _affine(op.params[0], params)
            steps.append(("phase", local[qubits[0]], i, c, d))
            F = eye.copy()
            continue
        U = embed(qi.Operator(op).data, qubits)
        F = np.kron(U, U.conj()) @ F
        err = error_of(name, qubits)
        if err is not None:
            F = channel(qi.Kraus(err.to_quantumchannel()).data, qubits) @ F
    steps.append(("fixed", torch.from_numpy(F)))
    A = np.ones((1, 1))
    for q in range(n - 1, -1, -1):  # qubit n−1 most significant (little-endian index)
        phys = next(p for p, v in local.items() if v == q)
        Aq = np.eye(2)
        if nm is not None:
            ro = nm._local_readout_errors.get((phys,))
            if ro is not None:
                Aq = np.asarray(ro.probabilities)
        A = np.kron(A, Aq)
    layout = tuple(next(p for p, v in local.items() if v == q) for q in range(n))
    return NoisyProgram(n=n, steps=tuple(steps), slots=tuple(slots),
                        readout=torch.from_numpy(A), depth=int(tqc.depth()),
                        two_qubit=two_qubit, ops=tuple(sorted(names.items())), layout=layout,
                        backend=backend, noise=noise)


@functools.lru_cache(maxsize=16)
def _phase_table(n: int, q: int) -> Tensor:
    """Δ[(j, k)] = (s_j − s_k)/2 ∈ {−1, 0, 1} on the row-major vec index j·2ⁿ + k, s = ±1 the
    Z eigenvalue of qubit q (rz(θ) multiplies ρ_jk by exp(−iθΔ))."""
    k = torch.arange(2**n)
    s = 1 - 2 * ((k >> q) & 1)
    return ((s[:, None] - s[None, :]) / 2).reshape(-1).to(torch.float64)


def program_probabilities(program: NoisyProgram, spec: CircuitSpec, angles: Tensor,
                          weights: Tensor | None) -> Tensor:
    """Measured probabilities (B…, 2ⁿ) of the noisy circuits C(x; w) (our qubit order:
    basis index Σ_q b_q 2^q), x = ``angles`` (…, n), w (depth, 2, n) or (…, depth, 2, n);
    computed in float64/complex128, returned in the angles' dtype; differentiable."""
    if spec.n != program.n or angles.shape[-1] != spec.n:
        raise ValueError(f"program of {program.n} qubits, spec {spec.n}, angles "
                         f"{angles.shape[-1]}")
    out_dtype = angles.dtype
    x = angles.to(torch.float64)
    batch = x.shape[:-1]
    w = None if weights is None else weights.to(torch.float64)
    if w is not None and w.dim() > 3:
        batch = torch.broadcast_shapes(batch, w.shape[:-3])
        w = w.expand(*batch, *spec.weight_shape).reshape(-1, *spec.weight_shape)
    x = x.expand(*batch, spec.n).reshape(-1, spec.n)
    layers = spec_gate_angles(spec, x, w)
    B, dim = x.shape[0], 2**spec.n
    v = torch.zeros(B, dim * dim, dtype=torch.complex128, device=x.device)
    v[:, 0] = 1
    for step in program.steps:
        if step[0] == "fixed":
            v = v @ step[1].to(x.device).t()
        else:
            _, q, i, c, d = step
            layer, g, qs = program.slots[i]
            a = layers[layer][g]  # (B, n): this gate slot's angles on every qubit
            theta = c * a[:, qs] + d
            ph = torch.polar(torch.ones(1, dtype=torch.float64, device=x.device),
                             -theta[:, None] * _phase_table(spec.n, q).to(x.device)[None])
            v = v * ph
    diag = v[:, :: dim + 1].real
    p = diag @ program.readout.to(x.device)
    return p.reshape(*batch, dim).to(out_dtype)
