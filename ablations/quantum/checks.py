"""Cross-checks of the quantum-realism models against Qiskit Aer, over many circuits.

* :func:`shots_gof`: the shot counts of our torch sampler and of Aer's sampler (``SamplerV2``,
  ideal circuits) against the exact Born probabilities, per circuit a Pearson chi-square
  test, and over the circuits a Kolmogorov–Smirnov test of the p values against U(0, 1)
  (a correct sampler gives uniform p values; one number per circuit would not show it).
* :func:`noisy_gof`: Aer's noisy simulation (density matrix, ``NoiseModel.from_backend`` of the
  fake backend, the transpiled circuit) against our torch program's probabilities
  (:mod:`qsgd.circuit.noisy`), the same two-level test at many shots.
* :func:`transpiled_facts`: depth, two-qubit gate count and layout of the circuit, and of the
  Hadamard test the amplitude readout would need, on each backend.

Chi-square with small expected counts: outcome cells whose expected count is below 5 are pooled
(into one cell, merged with the smallest other while still below 5), so the asymptotic
chi-square law holds; a circuit left with one cell is skipped.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from qsgd.circuit import CircuitSpec, simulate
from qsgd.circuit.shots import sample_multinomial, shots_generator

__all__ = ["pooled_chi2", "shots_gof", "noisy_gof", "transpiled_facts", "random_circuits"]


def pooled_chi2(counts: np.ndarray, probs: np.ndarray) -> float | None:
    """Pearson chi-square p value of ``counts`` (m,) against ``probs`` (m,), cells of expected
    count < 5 pooled (module docstring); None when fewer than 2 cells remain."""
    from scipy import stats

    S = counts.sum()
    e = probs * S
    order = np.argsort(e)
    small = [i for i in order if e[i] < 5]
    keep = [i for i in order if e[i] >= 5]
    obs, exp = [counts[i] for i in keep], [e[i] for i in keep]
    if small:
        po, pe = sum(counts[i] for i in small), sum(e[i] for i in small)
        if pe < 5 and exp:
            j = int(np.argmin(exp))
            po, pe = po + obs.pop(j), pe + exp.pop(j)
        obs.append(po)
        exp.append(pe)
    if len(obs) < 2:
        return None
    return float(stats.chisquare(obs, np.asarray(exp) * (S / sum(exp))).pvalue)


def random_circuits(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k circuits of the family (data angles x (k, n) ~ U(−π, π)·1.5, weights (k, 2, 2, n)
    ~ U(−π, π)), float64, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(k, n, generator=g, dtype=torch.float64) * 2 - 1) * 1.5 * np.pi
    w = (torch.rand(k, 2, 2, n, generator=g, dtype=torch.float64) * 2 - 1) * np.pi
    return x, w


def _values(spec: CircuitSpec, x: torch.Tensor, w: torch.Tensor, slots) -> np.ndarray:
    from qsgd.circuit.qiskit import _angle_array

    vals = _angle_array(spec, x, w).numpy()
    return np.stack([vals[:, s[0], s[1], s[2]] for s in slots], axis=1)


def _ks(pvals: list[float]) -> dict:
    from scipy import stats

    p = np.asarray([v for v in pvals if v is not None])
    return {"circuits": int(p.size), "ks_p": float(stats.kstest(p, "uniform").pvalue),
            "frac_p_below_0.05": float((p < 0.05).mean())}


def shots_gof(n: int, shots: tuple[int, ...], k: int = 200, seed: int = 0) -> list[dict]:
    """Rows (source, n, shots, circuits, ks_p, frac_p_below_0.05) for our sampler (over the
    2ⁿ outcomes, as :func:`qsgd.circuit.shots.sample_multinomial` draws the Hamming classes,
    and for those classes) and Aer's SamplerV2."""
    from qiskit_aer.primitives import SamplerV2

    from qsgd.circuit.qiskit import parameterised_circuit
    from qsgd.circuit.shots import weight_classes

    spec = CircuitSpec(n, 2)
    x, w = random_circuits(n, k, seed)
    p = simulate(x, w, readout="probabilities")  # (k, 2ⁿ) float64
    pc = weight_classes(p)
    qc, params, slots = parameterised_circuit(spec, True)
    qc.measure_all()
    vals = _values(spec, x, w, slots)
    rows = []
    for S in shots:
        ours = sample_multinomial(p, S, shots_generator("cpu", seed, S, n, 99)).numpy()
        ours_c = sample_multinomial(pc, S, shots_generator("cpu", seed, S, n, 98)).numpy()
        t0 = time.perf_counter()
        res = SamplerV2(seed=seed + S).run([(qc, vals)], shots=S).result()[0]
        aer_s = time.perf_counter() - t0
        aer = np.zeros((k, 2**n))
        for i in range(k):
            for key, c in res.data.meas[i].get_counts().items():
                aer[i, int(key, 2)] += c
        P, PC = p.numpy(), pc.numpy()
        for source, counts, probs in (("torch sampler, 2^n outcomes", ours, P),
                                      ("torch sampler, Hamming classes (training)", ours_c, PC),
                                      ("Aer SamplerV2, 2^n outcomes", aer, P)):
            pv = [pooled_chi2(counts[i], probs[i]) for i in range(k)]
            rows.append({"source": source, "n_qubits": n, "shots": S, **_ks(pv),
                         **({"aer_sec_per_circuit": aer_s / k} if source.startswith("Aer")
                            else {})})
    return rows


def noisy_gof(n: int, backend: str, shots: int = 100_000, k: int = 100,
              seed: int = 1) -> dict:
    """Aer's noisy counts of k transpiled circuits against our program's probabilities."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel

    from qsgd.circuit.noisy import hardware_program, program_probabilities, transpiled_circuit

    spec = CircuitSpec(n, 2)
    tqc, params, slots, b = transpiled_circuit(spec, backend)
    prog = hardware_program(spec, backend)
    x, w = random_circuits(n, k, seed)
    ours = program_probabilities(prog, spec, x, w).numpy()
    ideal = simulate(x, w, readout="probabilities").numpy()
    vals = _values(spec, x, w, slots)
    sim = AerSimulator(method="density_matrix", noise_model=NoiseModel.from_backend(b))
    t0 = time.perf_counter()
    binds = [{p: vals[:, j].tolist() for j, p in enumerate(params)}]
    res = sim.run(tqc, parameter_binds=binds, shots=shots, seed_simulator=seed).result()
    aer_s = time.perf_counter() - t0
    pv, tv = [], []
    pv_ideal = []  # the same counts against the ideal probabilities: the test's power
    for i in range(k):
        counts = _counts(res, i, n)
        pv.append(pooled_chi2(counts, ours[i]))
        pv_ideal.append(pooled_chi2(counts, ideal[i]))
        tv.append(0.5 * np.abs(counts / shots - ours[i]).sum())
    return {"backend": backend, "n_qubits": n, "shots": shots, **_ks(pv),
            "ks_p_vs_ideal_probs": _ks(pv_ideal)["ks_p"],
            "mean_tv_aer_vs_ours": float(np.mean(tv)),
            "mean_tv_noisy_vs_ideal": float(0.5 * np.abs(ours - ideal).sum(-1).mean()),
            "aer_sec_per_circuit": aer_s / k}


def _counts(res, i: int, n: int) -> np.ndarray:
    counts = np.zeros(2**n)
    for key, c in res.get_counts(i).items():
        counts[int(key.replace(" ", ""), 2)] += c
    return counts


def transpiled_facts(n: int, backend: str) -> list[dict]:
    """Depth and gate counts of the readout-z circuit and of the amplitude readout's Hadamard
    test (an ancilla controlling H^⊗n·C, random angles) transpiled to ``backend``."""
    import qiskit

    from qsgd.circuit import to_qiskit
    from qsgd.circuit.noisy import hardware_program, transpiled_circuit

    spec = CircuitSpec(n, 2)
    prog = hardware_program(spec, backend, noise=False)
    tqc = transpiled_circuit(spec, backend)[0]
    rows = [{"circuit": "readout z (C, measured)", "backend": backend, "n_qubits": n,
             "depth": prog.depth, "two_qubit_gates": prog.two_qubit,
             "ops": str(dict(prog.ops)), "layout": str(list(prog.layout)),
             "duration_us": _duration(tqc, backend)}]
    x, w = random_circuits(n, 1, 5)
    c = to_qiskit(x[0], w[0], n, 2)
    c.h(range(n))
    ht = qiskit.QuantumCircuit(n + 1, 1)
    ht.h(n)
    ht.append(c.to_gate().control(1), [n] + list(range(n)))
    ht.h(n)
    ht.measure(n, 0)
    from qsgd.circuit.noisy import fake_backend

    t = qiskit.transpile(ht, fake_backend(backend), optimization_level=3, seed_transpiler=0)
    ops = t.count_ops()
    rows.append({"circuit": "readout amp (Hadamard test, n+1 qubits)", "backend": backend,
                 "n_qubits": n, "depth": int(t.depth()),
                 "two_qubit_gates": int(sum(v for k, v in ops.items() if k in ("ecr", "cz"))),
                 "ops": str(dict(ops)), "layout": "", "duration_us": _duration(t, backend)})
    return rows


def _duration(tqc, backend: str) -> float:
    """The circuit's duration in µs from the backend's gate and measure durations (a
    critical path: per qubit the sum of its instructions' durations, the longest path)."""
    from qsgd.circuit.noisy import fake_backend

    target = fake_backend(backend).target
    clock = {}
    for ins in tqc.data:
        name = ins.operation.name
        qs = tuple(tqc.find_bit(q).index for q in ins.qubits)
        if name == "barrier":
            continue
        try:
            d = target[name][qs].duration or 0.0
        except KeyError:
            d = 0.0
        start = max(clock.get(q, 0.0) for q in qs)
        for q in qs:
            clock[q] = start + d
    return 1e6 * max(clock.values())
