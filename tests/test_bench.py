"""The CPU benchmark's optimizer table: every path is timed, and the module constant that
switches the flat path off for one row is restored (timings themselves are not asserted)."""

from __future__ import annotations

import argparse

import pytest

import qsgd.optimizer as qopt
from ablations import bench_attention as bench


def test_cpu_optimizer_rows_and_markdown(tmp_path):
    before = qopt.FLAT_MAX_NUMEL
    rows = bench.bench_optimizer_cpu(warmup=1, reps=2)
    assert qopt.FLAT_MAX_NUMEL == before
    names = [r["variant"] for r in rows]
    for label in ("adamw", "sin-l0.5", "gauss-l0.5"):
        for path in ("reference", "multi-tensor", "flat (default)"):
            assert f"qsgd {label} {path}" in names
    assert all(r["ms_median"] > 0 and r["items"] > 10_000 for r in rows)
    assert next(r for r in rows if r["variant"].startswith("torch AdamW (loop"))["ratio"] == 1.0
    args = argparse.Namespace(quick=True, reps=2, warmup=1, threads=1, step_threads=[2])
    bench.write_outputs(rows, {"cpu": "test"}, tmp_path, args)
    text = (tmp_path / "attention.md").read_text()
    assert "One optimizer step on the quantum classifier's parameters" in text
    assert "qsgd sin-l0.5 flat (default)" in text


def test_step_and_circuit_rows_in_the_markdown(tmp_path):
    # rows as the step and circuits groups make them (values made up: the writer is tested)
    rows = []
    for label in ("paper shape, 4 qubits", "bench shape, 2 qubits"):
        for k, variant in enumerate(["classical"] + [f"quantum-{m}" for m, _ in bench.METHODS]):
            r = bench._row("step", f"{label}, 2 threads: {variant}", 32, "sequences",
                           (10.0 + k, 9, 11), 3)
            r["ratio"] = (10.0 + k) / 10.0
            rows.append(r)
    for n in (2, 4):
        t = bench._row("circuits", f"torch n={n}", 1000, "circuits", (1.0, 1, 1), 3)
        t["ratio"], t["max_abs_diff"] = 1.0, 3e-7
        a = bench._row("circuits", f"aer n={n}", 10, "circuits", (10.0, 9, 11), 3)
        a["ratio"] = 1000.0
        rows += [t, a]
    args = argparse.Namespace(quick=True, reps=3, warmup=1, threads=1, step_threads=[2])
    bench.write_outputs(rows, {"cpu": "test"}, tmp_path, args)
    text = (tmp_path / "attention.md").read_text()
    assert "Whole training step: forward, backward, clipping, optimizer" in text
    assert ("Whole training step, paper shape, 4 qubits, 2 threads: quantum attention costs "
            "**1.1×** the classical step") in text
    with pytest.raises(SystemExit):  # a bad thread list is refused before any work
        bench.main(["--step-threads", "2,x", "--out", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()
    assert "| torch n=4 | 1,000 circuits | 1 | 1–1 | 1,000,000 | 1 | 3.0e-07 |" in text
    assert "torch is **1,000×** faster; the amplitudes differ by at most 3.0e-07" in text
    header = (tmp_path / "attention.csv").read_text().splitlines()[0]
    assert header.split(",") == bench.CSV_COLUMNS and header.endswith("max_abs_diff")
