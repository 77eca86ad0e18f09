"""The C4 like-with-like bench (ablations/bench_c4.py): Φ by Qiskit is our Φ, its gradient
ours; the extrapolation and the markdown on made-up timings (timings themselves are not
asserted)."""

from __future__ import annotations

import argparse

import pytest
import torch

from ablations import bench_c4 as bench
from qsgd.attention import ScoreCircuit

pytest.importorskip("qiskit")
pytest.importorskip("qiskit_aer")


@pytest.mark.parametrize("backend", ["statevector", "aer"])
def test_phi_by_qiskit_is_our_phi_with_our_gradient(backend):
    torch.manual_seed(0)
    phi = ScoreCircuit(4, 2)
    s = torch.randn(1, 2, 3, 3)
    wrapped = bench.QiskitPhi(phi, backend)
    a = s.clone().requires_grad_()
    out = wrapped(a)
    torch.testing.assert_close(out, phi(s), rtol=0, atol=1e-6)
    out.pow(2).sum().backward()
    grads = [a.grad, phi.scale.grad.clone(), phi.weights.grad.clone()]
    phi.zero_grad()
    b = s.clone().requires_grad_()
    phi(b).pow(2).sum().backward()
    for got, want in zip(grads, [b.grad, phi.scale.grad, phi.weights.grad]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _measured():
    return [dict(row=f"{a} attention, {v}", attention=a, phi="x", optimizer=v, kind="measured",
                 sec_per_epoch=t, sec_p25=t - 0.1, sec_p75=t + 0.1, rounds=3, how="")
            for a, v, t in (("classical", "adamw", 2.0), ("classical", "sin-l0.5", 2.0),
                            ("quantum", "adamw", 2.4), ("quantum", "sin-l0.5", 2.5))]


def test_extrapolation_adds_the_qiskit_cost_per_sequence():
    rows = bench.extrapolate(_measured(), (0.5, 0.4, 0.6), n_seq=100, shifts=32,
                             label="Qiskit Statevector, one per score", rounds=2)
    by = {r["row"]: r for r in rows}
    assert len(rows) == 4 and all(r["kind"] == "extrapolated" for r in rows)
    fwd = by["quantum attention, Φ by Qiskit Statevector, one per score, forward only, adamw"]
    assert (fwd["sec_per_epoch"], fwd["sec_p25"], fwd["sec_p75"]) == pytest.approx(
        (2.4 + 50, 2.3 + 40, 2.5 + 60))
    ps = by["quantum attention, Φ by Qiskit Statevector, one per score, parameter-shift "
            "gradient, sin-l0.5"]
    assert ps["sec_per_epoch"] == pytest.approx(2.5 + 100 * 33 * 0.5)
    assert ps["phi"] == "Qiskit Statevector, one per score, parameter-shift gradient"
    assert ps["rounds"] == 2


def test_rounds_interleave_and_cap_the_slow_calls():
    calls = []
    fns = {"a": lambda: calls.append("a") or 1.5, "b": lambda: calls.append("b")}
    t = bench._rounds(fns, 3, {"b": 1})
    assert calls == ["a", "b", "a", "b", "a", "a"]  # warm-up, then b in the first round only
    assert t["a"] == [1.5, 1.5, 1.5] and len(t["b"]) == 1


def test_markdown_and_csv(tmp_path):
    rows = _measured()
    for label in ("Qiskit Statevector, one per score", "Qiskit Aer, one experiment per score"):
        rows += bench.extrapolate(rows, (5.0, 4.0, 6.0), n_seq=2500, shifts=32, label=label,
                                  rounds=2)
    classical = {r["optimizer"]: r["sec_per_epoch"] for r in rows
                 if r["attention"] == "classical"}
    for r in rows:
        r["vs_classical"] = r["sec_per_epoch"] / classical[r["optimizer"]]
    facts = dict(n_seq=2500, steps=79, scores_per_seq=2048, shifts=32, max_abs_diff=3e-7,
                 rounds=3, qiskit_rounds=2, fwd_ours=0.008, per_seq_statevector=5.0,
                 per_score_statevector=5.0 / 2048, per_seq_aer=5.0, per_score_aer=5.0 / 2048)
    bench.write_outputs(rows, facts, {"cpu": "test"}, tmp_path,
                        argparse.Namespace(quick=False))
    text = (tmp_path / "c4_like_with_like.md").read_text()
    assert "| quantum attention, adamw | measured | 2.4 | 2.3–2.5 | +20% |" in text
    assert ("ours (closed forms) +25%; with Φ by Qiskit Statevector ×6,251 forward only, "
            "×206,251 with parameter-shift gradients") in text
    assert "Largest |Φ_Qiskit − Φ_ours| over a layer's scores: 3.0e-07" in text
    header = (tmp_path / "c4_like_with_like.csv").read_text().splitlines()[0]
    assert header.split(",") == bench.CSV_COLUMNS


def test_bad_rounds_are_refused_before_any_work(tmp_path):
    for bad in (["--rounds", "0"], ["--qiskit-rounds", "0"]):
        with pytest.raises(SystemExit):
            bench.main([*bad, "--out", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()
