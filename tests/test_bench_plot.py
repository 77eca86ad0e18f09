"""The LLM bench's figure (ablations/llm/bench_plot.py): which rows of throughput_bench.csv it
draws, how it reads their spread, and that it writes a PNG (nothing for a CSV without timings)."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("matplotlib")

from ablations.llm.bench_plot import bench_rows, plot_bench  # noqa: E402

ROWS = [
    dict(config="check: HF peer vs arm loss, batch 0, base weights", value="1.2 vs 1.2"),
    dict(config="HF peer: LlamaForCausalLM, SDPA", variant="adamw", tokens_per_s="118083",
         spread="3.0%"),
    dict(config="arm loop (flex, lr 0.0003)", variant="adamw", tokens_per_s="174623",
         spread="1.5%"),
    dict(config="arm loop (flex, lr 0.0003)", variant="sin-l0.5", tokens_per_s="170000"),
    dict(config="lr check, lr 3e-05", variant="adamw", tokens_per_s="170001"),
    dict(config="test loss, 1319 examples", value="0.59"),
]


def _write(path, rows):
    cols = ["config", "variant", "tokens_per_s", "spread", "value"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def test_bench_rows_keep_the_peer_and_the_arm_with_their_spread(tmp_path):
    rows = bench_rows(_write(tmp_path / "b.csv", ROWS))
    assert [(r["label"], r["tokens_per_s"], r["spread"], r["peer"]) for r in rows] == [
        ("HF peer (adamw)", 118083.0, pytest.approx(0.03), True),
        ("adamw", 174623.0, pytest.approx(0.015), False),
        ("sin-l0.5", 170000.0, None, False),
    ]


def test_plot_bench_writes_a_png_and_nothing_without_timed_rows(tmp_path):
    out = plot_bench(_write(tmp_path / "b.csv", ROWS), tmp_path / "b.png")
    assert out == tmp_path / "b.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert plot_bench(_write(tmp_path / "e.csv", ROWS[:1] + ROWS[-1:]), tmp_path / "e.png") \
        is None
    assert not (tmp_path / "e.png").exists()
