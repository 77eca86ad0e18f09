"""Quantum realism (issue 20): shot-based readouts, the noisy-device program, the measured Φ."""

from __future__ import annotations

import math

import pytest
import torch

from qsgd.attention import ScoreCircuit
from qsgd.attention.measured import MeasuredScoreCircuit
from qsgd.circuit import CircuitSpec, simulate
from qsgd.circuit.shots import (
    hadamard_test_estimate,
    sample_multinomial,
    shots_generator,
    weight_classes,
    weight_values,
    z_estimate,
)

INSTALL = "qiskit-ibm-runtime is not installed: pip install 'qsgd[hardware]'"


def test_weight_classes_and_values_give_mean_z():
    torch.manual_seed(0)
    x, w = torch.randn(7, 3, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)
    p = simulate(x, w, readout="probabilities")
    phi = weight_classes(p) @ weight_values(3, torch.float64)
    assert torch.allclose(phi, simulate(x, w, readout="Z").mean(-1), atol=1e-12)


def test_multinomial_counts_are_exact_and_keyed():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64).expand(20000, 4)
    n = sample_multinomial(p, 64, shots_generator("cpu", 1, 2, 3, 11))
    assert bool((n.sum(-1) == 64).all()) and bool((n >= 0).all())
    # mean and covariance of Multinomial(64; p): 64 p_j, 64 (p_j δ_jk − p_j p_k)
    assert torch.allclose(n.mean(0), 64 * p[0], rtol=0.02)
    cov = torch.cov(n.t())
    want = 64 * (torch.diag(p[0]) - p[0][:, None] * p[0][None])
    assert torch.allclose(cov, want, atol=0.5)
    again = sample_multinomial(p, 64, shots_generator("cpu", 1, 2, 3, 11))
    assert torch.equal(n, again)


def test_estimators_are_unbiased_with_binomial_spread():
    phi = torch.full((40000,), 0.3, dtype=torch.float64)
    est = hadamard_test_estimate(phi, 256, shots_generator("cpu", 0, 0, 0, 11))
    assert abs(float(est.mean()) - 0.3) < 4 * math.sqrt((1 - 0.09) / 256 / 40000)
    assert abs(float(est.var()) - (1 - 0.09) / 256) < 0.1 * (1 - 0.09) / 256
    classes = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).expand(40000, 3)
    z = z_estimate(classes, 128, shots_generator("cpu", 0, 0, 1, 11))
    assert abs(float(z.mean()) - 0.3) < 4 * math.sqrt(0.61 / 128 / 40000)  # E = .5 − .2


def test_measured_phi_exact_equals_score_circuit_z_and_shots_are_straight_through():
    torch.manual_seed(1)
    ref = ScoreCircuit(2, 2, readout="z")
    m = MeasuredScoreCircuit(2, 2, shots=256, seed=5, position=1)
    with torch.no_grad():
        m.scale.copy_(ref.scale)
        m.weights.copy_(ref.weights)
    s = torch.randn(3, 2, 8, 8) * 2
    m.shots = 0
    assert torch.allclose(m(s), ref(s), atol=1e-5)
    m.shots = 256
    s1 = s.clone().requires_grad_()
    out = m(s1)
    assert (out - ref(s)).abs().max() < 6 / math.sqrt(256)
    out.sum().backward()
    s2 = s.clone().requires_grad_()
    ref(s2).sum().backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-4)
    # keyed on (seed, call, position): a fresh module with the same counters draws the same
    fresh = MeasuredScoreCircuit(2, 2, shots=256, seed=5, position=1)
    fresh.load_state_dict(m.state_dict())
    fresh.calls.zero_()
    assert torch.equal(fresh(s), out.detach())


def test_measured_phi_validates():
    with pytest.raises(ValueError, match="readout 'amp'"):
        MeasuredScoreCircuit(2, 2, readout="amp", shots=0)
    with pytest.raises(ValueError, match="invalid shots"):
        MeasuredScoreCircuit(2, 2, shots=-1)


def test_noisy_program_noiseless_is_ideal_and_series_is_direct():
    pytest.importorskip("qiskit_ibm_runtime", reason=INSTALL)
    pytest.importorskip("qiskit_aer", reason="qiskit-aer is not installed")
    from qsgd.circuit.noisy import hardware_program, program_probabilities

    spec = CircuitSpec(2, 2)
    torch.manual_seed(2)
    x, w = torch.randn(30, 2, dtype=torch.float64) * 3, torch.randn(2, 2, 2, dtype=torch.float64)
    ideal = hardware_program(spec, noise=False)
    assert ideal.two_qubit == 2  # the 2-qubit chain, twice: no routing swaps
    got = program_probabilities(ideal, spec, x, w)
    assert torch.allclose(got, simulate(x, w, readout="probabilities"), atol=1e-12)
    m = MeasuredScoreCircuit(2, 2, noise="fake_sherbrooke")
    s = torch.randn(200, dtype=torch.float64)
    with torch.no_grad():
        p = program_probabilities(m.program, spec, s[:, None] * m.scale.double(),
                                  m.weights.double())
        direct = weight_classes(p) @ weight_values(2, torch.float64)
        assert torch.allclose(m(s), direct, atol=1e-9)


def test_c4_ledger_note_reads_the_qpu_table():
    import pandas as pd

    from ablations.claims import _c4_qpu

    assert _c4_qpu(None) is None
    t = pd.DataFrame([
        {"model": "the paper's classifier (x)", "shots": 1024, "scenario": "shot-limited",
         "qpu_seconds": 86400.0 * 3},
        {"model": "the paper's classifier (x)", "shots": 1024, "scenario": "session",
         "qpu_seconds": 86400.0 * 4},
        {"model": "the paper's LLM epoch", "shots": 1024, "scenario": "shot-limited",
         "qpu_seconds": 3.156e7 * 2}])
    note = _c4_qpu(t)
    assert "3 days shot-limited (4 in a reserved session)" in note and "2 years" in note


def test_training_table_pairs_each_cell_with_exact_by_seed(tmp_path):
    """The training summary: per cell and variant its runs and cpu; deltas against the exact
    cell paired by seed (a seed missing from one side drops out), and sin − adamw per cell."""
    import json

    from ablations.quantum.__main__ import _shot_cells, training_table

    def rec(task, variant, seed, acc, cpu="A"):
        return {"task": task, "variant": variant, "seed": seed,
                "metrics": {"final_test_acc": acc, "epochs_to_90": None, "sec_per_epoch": 1.0},
                "curve": [{"epoch": 1, "test_acc": acc}],
                "provenance": {"commit": "0123456789ab", "cpu": cpu}}

    rows = [rec(None, v, s, 0.80 + 0.01 * s) for v in ("adamw", "sin-l0.5") for s in range(3)]
    rows += [rec("shots-256", "adamw", s, 0.82 + 0.01 * s, cpu="B") for s in range(2)]
    rows += [rec("shots-256", "sin-l0.5", s, 0.79 + 0.01 * s, cpu="B") for s in range(3)]
    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summ, deltas = training_table(tmp_path)
    assert set(summ.cell) == {"exact", "shots-256"} and set(summ.cpu) == {"A", "B"}
    d = deltas.set_index(["cell", "variant", "metric"])
    assert d.loc[("shots-256", "adamw", "final_test_acc"), "seeds"] == 2
    assert d.loc[("shots-256", "adamw", "final_test_acc"), "mean_diff_vs_exact"] == \
        pytest.approx(0.02)
    assert d.loc[("shots-256", "sin-l0.5", "final_test_acc"), "mean_diff_vs_exact"] == \
        pytest.approx(-0.01)
    assert d.loc[("exact", "sin-l0.5 - adamw", "final_test_acc"), "mean_diff_vs_exact"] == \
        pytest.approx(0.0, abs=1e-12)
    assert _shot_cells(summ) == "256"
    more = pd_concat_cells(summ, ["shots-64", "shots-1024"])
    assert _shot_cells(more) == "64, 256 or 1024"


def pd_concat_cells(summ, cells):
    import pandas as pd

    return pd.concat([summ, pd.DataFrame({"cell": cells})], ignore_index=True)
