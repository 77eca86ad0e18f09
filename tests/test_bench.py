"""The CPU benchmark's optimizer table: every path is timed, and the module constant that
switches the flat path off for one row is restored (timings themselves are not asserted)."""

from __future__ import annotations

import argparse

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
    args = argparse.Namespace(quick=True, reps=2, warmup=1)
    bench.write_outputs(rows, {"cpu": "test"}, tmp_path, args)
    text = (tmp_path / "attention.md").read_text()
    assert "One optimizer step on the quantum classifier's parameters" in text
    assert "qsgd sin-l0.5 flat (default)" in text
