"""T5 (the circuit perturbation in closed form) and T6 (the spectrum of the attention term).

Both use only the public functions of :mod:`qsgd.circuit` and :mod:`qsgd.attention`, and are
self-contained: they take the suite's ``inputs`` (:class:`theory.inputs.TheoryInputs`) and read
nothing from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import Check, register
from .inputs import TheoryInputs

__all__ = ["chain_matrix", "heisenberg_supports", "closed_form", "closed_form_text",
           "t5_circuit_closed_form", "t6_spectrum"]


def chain_matrix(n: int) -> np.ndarray:
    """The CNOT chain CNOT(n−2→n−1)…CNOT(0→1) (CNOT(0→1) first) as a GF(2) matrix M acting
    on basis bit vectors, U|b⟩ = |M b⟩: bit k becomes b_0 ⊕ … ⊕ b_k (a prefix XOR)."""
    return np.tril(np.ones((n, n), dtype=np.int64))


def _gf2_inv(m: np.ndarray) -> np.ndarray:
    n = m.shape[0]
    a = np.concatenate([m % 2, np.eye(n, dtype=np.int64)], axis=1)
    for col in range(n):
        piv = next(r for r in range(col, n) if a[r, col])
        a[[col, piv]] = a[[piv, col]]
        for r in range(n):
            if r != col and a[r, col]:
                a[r] ^= a[col]
    return a[:, n:]


def heisenberg_supports(n: int, depth: int, entangle: bool = True
                        ) -> tuple[list[list[int]], list[list[int]]]:
    """Supports of U†X_jU and U†Z_jU for U = (CNOT chain)^depth: for each qubit j the qubits
    S_j with U†X_jU = Π_{q∈S_j} X_q (columns of M^−depth) and R_j with U†Z_jU = Π_{q∈R_j} Z_q
    (rows of M^depth)."""
    m = np.eye(n, dtype=np.int64)
    if entangle and n > 1:
        for _ in range(depth):
            m = (m @ chain_matrix(n)) % 2
    minv = _gf2_inv(m)
    xs = [[q for q in range(n) if minv[q, j]] for j in range(n)]
    zs = [[q for q in range(n) if m[j, q]] for j in range(n)]
    return xs, zs


def closed_form(theta: torch.Tensor, depth: int, pauli: str = "X", hadamard: bool = False,
                entangle: bool = True) -> torch.Tensor:
    """⟨P_j⟩ of the circuit perturbation's circuit for θ of shape (…, n), P ∈ {X, Z}.

    The state is U·⊗_q Ry(πθ_q + φ)|0⟩ with φ = π/2 when the circuit starts with Hadamards
    (H|0⟩ = Ry(π/2)|0⟩) and 0 otherwise; U is a basis permutation without phases, so
    ⟨X_j⟩ = Π_{q∈S_j} sin(πθ_q + φ) and ⟨Z_j⟩ = Π_{q∈R_j} cos(πθ_q + φ).
    """
    n = theta.shape[-1]
    xs, zs = heisenberg_supports(n, depth, entangle)
    ang = math.pi * theta + (math.pi / 2 if hadamard else 0.0)
    f = torch.sin(ang) if pauli == "X" else torch.cos(ang)
    sets = xs if pauli == "X" else zs
    return torch.stack([f[..., s].prod(-1) for s in sets], dim=-1)


def closed_form_text(n: int, depth: int, hadamard: bool = False) -> list[str]:
    """The closed form of ⟨X_j⟩, j = 0 … n−1, as strings."""
    xs, _ = heisenberg_supports(n, depth)
    fn = "cos" if hadamard else "sin"
    return [f"⟨X_{j}⟩ = " + "·".join(f"{fn}(πθ_{q})" for q in s) for j, s in enumerate(xs)]


@register("T5")
def t5_circuit_closed_form(size: str, inputs: TheoryInputs) -> Check:
    """T5: ⟨X⟩ of Ry(πθ)|0⟩ = sin(πθ); with the CNOT chains the readout is a product of
    sines (cosines with the leading Hadamards). Closed form vs the simulator."""
    from qsgd.circuit import Circuit, cnot_chain_permutation, simulate, to_qiskit

    gen = torch.Generator().manual_seed(5)
    batch = 2000 if size == "full" else 200
    rows = []
    worst = 0.0
    # the permutation the simulator uses is the inverse of our M (ψ'[k] = ψ[p[k]])
    perm_ok = True
    for n in range(2, 6):
        p = cnot_chain_permutation(n).numpy()
        m = chain_matrix(n)
        for b in range(2**n):
            bits = np.array([(b >> q) & 1 for q in range(n)])
            mb = (m @ bits) % 2
            k = int(sum(int(v) << q for q, v in enumerate(mb)))
            perm_ok &= int(p[k]) == b
    for n in range(1, 6):
        for depth in (1, 2, 3):
            for had in (False, True):
                theta = torch.rand(batch, n, generator=gen, dtype=torch.float64) * 6 - 3
                for pauli in ("X", "Z"):
                    sim = simulate(math.pi * theta, None, depth=depth, entangle=True,
                                   hadamard=had, encoding="once", readout=pauli)
                    err = float((sim - closed_form(theta, depth, pauli, had)).abs().max())
                    worst = max(worst, err)
                    rows.append({"n_qubits": n, "depth": depth, "hadamard": had,
                                 "readout": pauli, "max_abs_error": err})
    # the perturbation object itself (groups of 4, zero padding): θ of length 10
    circ = Circuit()
    theta = torch.rand(10, generator=gen, dtype=torch.float64) * 4 - 2
    padded = torch.cat([theta, theta.new_zeros(2)]).reshape(3, 4)
    want = closed_form(padded, circ.depth).reshape(-1)[:10]
    err_pert = float((circ.readout(theta, 4) - want).abs().max())
    worst = max(worst, err_pert)
    one = torch.linspace(-3, 3, 601, dtype=torch.float64)
    err_one = float((Circuit().readout(one, 1) - torch.sin(math.pi * one)).abs().max())
    worst = max(worst, err_one)
    # Qiskit's statevector for a few points of the 4-qubit circuit
    from qiskit.quantum_info import Pauli, Statevector

    err_qk = 0.0
    for _ in range(3 if size == "full" else 1):
        th = torch.rand(4, generator=gen, dtype=torch.float64) * 4 - 2
        sv = Statevector(to_qiskit(math.pi * th, None, 4, depth=2, entangle=True,
                                   hadamard=False, encoding="once"))
        cf = closed_form(th, 2)
        for j in range(4):
            label = "".join("X" if q == j else "I" for q in reversed(range(4)))
            err_qk = max(err_qk, abs(float(sv.expectation_value(Pauli(label)).real) - float(cf[j])))
    worst = max(worst, err_qk)
    tol = 1e-12
    forms = closed_form_text(4, 2)
    forms_h = closed_form_text(4, 2, hadamard=True)
    forms_1 = closed_form_text(4, 1)
    xs2, zs2 = heisenberg_supports(4, 2)
    summary = (f"max |simulator − closed form| = {worst:.2e} over n = 1…5, depth 1…3, with and "
               f"without H, ⟨X⟩ and ⟨Z⟩ ({len(rows)} cases × {batch} points); perturbation "
               f"object {err_pert:.1e}, one qubit = sin(πθ) to {err_one:.1e}, Qiskit "
               f"{err_qk:.1e}; 4 qubits, depth 2: " + "; ".join(forms))
    derivation = f"""\
**One qubit.** Ry(a)|0⟩ = cos(a/2)|0⟩ + sin(a/2)|1⟩, so ⟨X⟩ = 2·sin(a/2)·cos(a/2) = sin a and
⟨Z⟩ = cos a; at a = πθ, ⟨X⟩ = sin(πθ). A leading Hadamard is Ry(π/2) on |0⟩, which turns
this into sin(πθ + π/2) = cos(πθ).

**The chain.** CNOT(0→1), then CNOT(1→2), …, maps a basis state |b⟩ to |M b⟩ with M the
lower-triangular all-ones matrix over GF(2) (bit k becomes b_0 ⊕ … ⊕ b_k). The
`circuit` perturbation's convention (qsgd/perturbations.py, `Circuit`: no Hadamard, πθ only
in the first layer's Ry, depth 2, extra angles 0) is U·⊗_q Ry(πθ_q)|0⟩ with U = M² as a
permutation.
In the Heisenberg picture U†X_jU|b⟩ = |b ⊕ M^−L e_j⟩, i.e. X on the support S_j of column j
of M^−L, and U†Z_jU = Z on the support R_j of row j of M^L. The input is a product state,
so expectations factorize:

⟨X_j⟩ = Π_(q∈S_j) sin(πθ_q),   ⟨Z_j⟩ = Π_(q∈R_j) cos(πθ_q).

For depth 2, M² has rows e_0, e_1, e_0+e_2, e_1+e_3 and M^−2 = M², so S = {xs2}
and R = {zs2}:

{chr(10).join('- ' + f for f in forms)}

With the paper's leading Hadamards the sines become cosines:
{'; '.join(forms_h)}. With one chain (depth 1) the readout is
{'; '.join(forms_1)}. A tensor is cut into groups of 4; the last group is padded with
θ = 0, and since sin(0) = 0 every product that reaches a padded qubit vanishes (for a tensor
of 1 or 2 entries the circuit term is identically 0 — T2's toys see exactly that).

**Measurement.** The closed form against `qsgd.circuit.simulate` (readouts X and Z) on
random θ ∈ [−3, 3], against the `Circuit` perturbation's readout on a 10-entry tensor
(padding included), against sin(πθ) for one qubit, and against Qiskit's `Statevector` of
`to_qiskit` for the 4-qubit circuit. The simulator's basis permutation equals M⁻¹ as stated:
{perm_ok}."""
    survives = (
        "Yes for one qubit, no for the paper's circuit: the sine is exactly the one-qubit "
        "circuit (so the 'quantum' perturbation is a classical closed form needing no "
        "simulation), while the 4-qubit circuit gives products of sines. For the "
        "paper's 4-qubit entangled circuit the readout is not the sine: it is sin(πθ_q) for "
        "the last two qubits and a product of two sines for the first two, and with the "
        "paper's Hadamards all sines become cosines (the `cos` control). The entanglement "
        "adds no 'interference' beyond multiplying in another coordinate's sine; a circuit "
        "costing +35% per epoch (C4) computes products of at most two sines.")
    return Check(
        id="T5", claim="⟨X⟩ of Ry(πθ)|0⟩ equals sin(πθ); with the CNOT chain the readout is a "
        "product of sines (closed form for the 4-qubit circuit)", measured=worst, expected=0.0,
        tolerance=tol, passed=worst <= tol and perm_ok, relation="==",
        quantity="max |simulator − closed form| (float64)", summary=summary,
        derivation=derivation, survives=survives,
        tables={"max error per width": [
            {"n_qubits": n, "cases": sum(r["n_qubits"] == n for r in rows),
             "max_abs_error": max(r["max_abs_error"] for r in rows if r["n_qubits"] == n)}
            for n in sorted({r["n_qubits"] for r in rows})]
            + [{"n_qubits": "perturbation object (4, padded)", "cases": 1,
                "max_abs_error": err_pert},
               {"n_qubits": "one qubit vs sin(πθ)", "cases": 1, "max_abs_error": err_one},
               {"n_qubits": "Qiskit Statevector (4)", "cases": 1, "max_abs_error": err_qk}],
            "cases": rows},
        data={"forms": forms, "forms_hadamard": forms_h})


# --------------------------------------------------------------------------------------- T6


def _spectrum(n: int, depth: int, readout: str, scales: list[float] | None, period: float,
              points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Φ(s) of a ScoreCircuit with random weights (state-vector method) on one period, its
    frequencies ω (angular, per unit s) and |c_ω| for ω ≥ 0 (one-sided, c_−ω = conj c_ω)."""
    from qsgd.attention import ScoreCircuit

    torch.manual_seed(seed)
    phi = ScoreCircuit(n_qubits=n, depth=depth, readout=readout, method="state")
    if scales is not None:
        with torch.no_grad():
            phi.scale.copy_(torch.tensor(scales))
    s = torch.arange(points, dtype=torch.float64) * (period / points)
    with torch.no_grad():
        y = phi(s).double().numpy()
    c = np.fft.rfft(y) / points
    omega = np.arange(len(c)) * (2 * math.pi / period)
    return s.numpy(), y, np.abs(c) * np.where(np.arange(len(c)) == 0, 1.0, 2.0), omega


@register("T6")
def t6_spectrum(size: str, inputs: TheoryInputs) -> Check:
    """T6: Φ(s) is a trigonometric polynomial whose degree is set by how often s is
    encoded: highest frequency depth·Σ|a_q| ("amp") or twice that ("z")."""
    points = 512 if size == "full" else 128
    configs = [(n, d, ro, None) for ro in ("amp", "z") for n in (1, 2, 3) for d in (1, 2, 3)]
    configs.append((2, 2, "amp", [1.0, 0.5]))  # unequal scales: ω = m_0·1 + m_1·0.5
    if size != "full":
        configs = [c for c in configs if c[0] <= 2 and c[1] <= 2]
    rows, spectra = [], {}
    worst = 0.0
    for k, (n, d, ro, sc) in enumerate(configs):
        scales = sc or [1.0] * n
        # a common period: 2π divided by the gcd of the scales (here 1 or 0.5)
        period = 2 * math.pi / (0.5 if any(abs(a - round(a)) > 1e-12 for a in scales) else 1.0)
        bound = d * sum(abs(a) for a in scales) * (2 if ro == "z" else 1)
        # probabilities ignore the last layer's Rz (diagonal, and the CNOT chain after it only
        # permutes the basis), so "z" sees 2·depth − 1 data gates per qubit
        sharp = bound if ro == "amp" else (2 * d - 1) * sum(abs(a) for a in scales)
        s, y, amp, omega = _spectrum(n, d, ro, sc, period, points, seed=60 + k)
        thresh = 1e-9 * amp.max()
        top = float(omega[amp > thresh].max())
        above = float((amp[omega > bound + 1e-9] ** 2).sum() / (amp**2).sum())
        worst = max(worst, top / bound)
        rows.append({"n_qubits": n, "depth": d, "readout": ro, "scales": scales,
                     "predicted_max_freq": bound, "measured_max_freq": top,
                     "attained": abs(top - bound) < 1e-9, "sharp_bound": sharp,
                     "sharp_attained": abs(top - sharp) < 1e-9, "energy_above_bound": above,
                     "coef_at_bound": float(amp[np.argmin(np.abs(omega - bound))])})
        spectra[f"n={n}, depth={d}, {ro}" + (f", a={sc}" if sc else "")] = {
            "omega": omega[omega <= 2 * bound + 1].tolist(),
            "amp": amp[omega <= 2 * bound + 1].tolist(), "bound": bound,
            "s": s.tolist() if (n, d, ro, sc) == (2, 2, "amp", None) else None,
            "phi": y.tolist() if (n, d, ro, sc) == (2, 2, "amp", None) else None}
    attained = sum(r["attained"] for r in rows)
    sharp = sum(r["sharp_attained"] for r in rows)
    leak = max(r["energy_above_bound"] for r in rows)
    deg_cls = next(r["measured_max_freq"] for r in rows if r["n_qubits"] == 2 and r["depth"] == 2
                   and r["readout"] == "amp" and r["scales"] == [1.0, 1.0])
    summary = (f"highest frequency / predicted degree ≤ {worst:.3f} in all {len(rows)} "
               f"configurations, bound attained in {attained}/{len(rows)} (the sharper "
               f"(2·depth−1)·Σa for z: {sharp}/{len(rows)} attained); energy above the "
               f"bound ≤ {leak:.1e}; the classifier's Φ (2 qubits, depth 2, amp, a = 1) has "
               f"degree {deg_cls:.0f}")
    derivation = """\
**Frequencies.** In `ScoreCircuit` every Ry and Rz of every layer gets the angle a_q·s + w
(re-uploading), so s enters each qubit through G = 2·depth gates. A rotation
R_P(a·s + w) = e^(−i(a s + w)/2)·Π₊ + e^(+i(a s + w)/2)·Π₋ contributes a factor e^(±i a s/2),
so every amplitude ψ_k(s) is a sum of terms e^(iωs) with ω = Σ_q (a_q/2)·k_q and
k_q ∈ {−G, −G+2, …, G} (Schuld, Sweke & Meyer, PRA 103, 032430, 2021). The "amp" readout
Re Σ_k ψ_k/2^(n/2) is linear in the amplitudes: |ω| ≤ depth·Σ_q|a_q|; the "z" readout is
quadratic in them (ψ*ψ): |ω| ≤ 2·depth·Σ_q|a_q|. Φ is a trigonometric polynomial of that
degree, whatever the weights w; the weights only set its coefficients. With a_q = 1 the
frequencies are integers and Φ has period 2π in s. For "z" the bound sharpens: the last
layer's Rz is diagonal and the CNOT chain after it only permutes basis states, so it drops
out of every probability, leaving 2·depth − 1 data gates per qubit: |ω| ≤ (2·depth − 1)·Σ|a_q|.

**Measurement.** Φ from `qsgd.attention.ScoreCircuit(method="state")` (one statevector per
point, independent of the module's Fourier shortcut) with random weights, on a grid of
one period, FFT; the highest frequency with |c_ω| > 1e-9·max|c| is compared with the
degree predicted above, for n = 1…3 qubits, depth 1…3, both readouts, and one case with
unequal scales a = (1, 0.5) (frequencies m_0 + 0.5·m_1, period 4π)."""
    survives = (
        "The structure holds exactly (the paper does not state it): Φ is a trigonometric "
        "polynomial of degree depth·Σ|a_q|. The 'quantum attention' "
        "term is a low-degree trigonometric polynomial of each score — degree 4 for the "
        "classifier's 2-qubit, depth-2 circuit — added to the logits with a learned weight γ. "
        "It is a smooth, bounded, learned elementwise function of the score, computable in "
        "closed form from a handful of Fourier coefficients; nothing in it needs a quantum "
        "device or gives attention an ability a small classical feature map lacks.")
    return Check(
        id="T6", claim="the attention term Φ(s) is a trigonometric polynomial whose degree is "
        "set by how often s is encoded (Schuld, Sweke and Meyer 2021)", measured=worst,
        expected=1.0, tolerance=1e-9, passed=worst <= 1.0 + 1e-9 and leak < 1e-20,
        relation="<=", quantity="max over configurations of (highest frequency in the FFT) / "
        "(predicted degree)", summary=summary, derivation=derivation, survives=survives,
        tables={"spectra": rows}, data={"spectra": spectra})
