"""The multi-process FSDP2 check (ablations/multigpu.py), end to end at world size 2 on the CPU.

Tolerances. The shard-invariant variants (adamw, sin-l0.5, the peer torch AdamW) differ from
the one-process run only by float32 rounding: each rank's half batch goes through the same
matrix products in other blocks, and the gradient is summed in another order by the
reduce-scatter. Measured on the CPU: ≤ 2e-7 relative in the loss and ≤ 1.7e-6 in a parameter,
at 5 and at 50 steps. The bounds below are about 50× and 30× that, and far below what a real
fault would show: one Adam step moves a parameter by up to lr = 1e-3 (a shard stepped wrongly,
or not at all, shows as ~1e-3 per step), and the loss falls by ~1e-2 relative over the first
steps. The world-1 FSDP2 run equals the reference (measured 0); it is held to the same bound,
since thread counts of the processes may differ on other hosts.
"""

from __future__ import annotations

import csv
import re

import pytest
import torch

from ablations import multigpu

LOSS_REL_TOL = 1e-5
PARAM_TOL = 5e-5
CUDA = torch.cuda.is_available()


def _rows(folder) -> list[dict]:
    with (folder / "multigpu.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == multigpu.CSV_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    out = tmp_path_factory.mktemp("multigpu")
    rc = multigpu.main(["--world", "2", "--backend", "gloo", "--preset", "tiny", "--steps", "5",
                        "--warmup", "1", "--variants", "adamw,sin-l0.5", "--out", str(out)])
    assert rc == 0
    return out


def test_elementwise_variants_match_one_process_at_world_2(world2):
    rows = {r["variant"]: r for r in _rows(world2)}
    assert list(rows) == ["adamw", "sin-l0.5", multigpu.PEER]
    for variant, r in rows.items():
        print(f"{variant}: loss rel max {r['loss_rel_max']}, param max {r['param_max_abs']}, "
              f"world 1 vs ref {r['w1_ref_param_max_abs']}")
        assert r["expected"] == "equal"
        assert (r["world"], r["backend"], r["device"], r["steps"]) == ("2", "gloo", "cpu", "5")
        assert 0 <= float(r["loss_rel_mean"]) <= float(r["loss_rel_max"]) < LOSS_REL_TOL
        assert float(r["param_max_abs"]) < PARAM_TOL
        assert float(r["w1_param_max_abs"]) < PARAM_TOL
        assert float(r["w1_ref_param_max_abs"]) < PARAM_TOL
        assert float(r["step_ms"]) > 0 and float(r["opt_ms"]) > 0
        assert r["peak_mem_mib"] == ""  # CPU: n/a
        assert r["seed_spread_rel_max"] == ""  # deterministic variants
        # each of the 2 ranks holds half of the state, 0.72 MiB unsharded (m and v, fp32)
        assert 0 < float(r["state_mib"]) < 0.4
    assert rows["sin-l0.5"]["optimizer"] == "qsgd.SuperpositionalAdamW"
    assert rows[multigpu.PEER]["optimizer"] == "torch.optim.AdamW"


def test_report_names_the_setup_and_no_machine_path(world2):
    text = (world2 / "multigpu.md").read_text(encoding="utf-8")
    assert f"torch {torch.__version__}" in text
    assert "world size 2, backend gloo" in text
    assert re.search(r"- commit ([0-9a-f]{40}|unknown)", text)
    assert "| variant | expected | loss rel max |" in text
    for variant in ("adamw", "sin-l0.5", multigpu.PEER):
        assert f"| {variant} | equal |" in text
    assert "## Reading" in text and "shard-invariant rows" in text
    assert str(world2) not in text and "/tmp" not in text


def test_expectation_follows_the_perturbation_class():
    assert multigpu.expectation("sin-l0.5") == "equal"
    assert multigpu.expectation("sinnorm-l0.5") == "equal"
    assert multigpu.expectation("gauss-l0.5") == "equal"
    assert multigpu.expectation("anti-l0.5") == "equal"
    assert multigpu.expectation("circuit-l0.5") == "equal"
    assert multigpu.expectation("sin-l0.5-first4") == "equal"
    assert multigpu.expectation(multigpu.PEER) == "equal"


def test_a_term_that_reads_its_shard_alone_is_expected_per_shard(monkeypatch):
    from qsgd.perturbations import Gauss

    monkeypatch.setattr(Gauss, "shard_invariant", False)
    assert multigpu.expectation("gauss-l0.5") == "per-shard"


@pytest.mark.parametrize("argv, message", [
    (["--world", "0"], "--world must be >= 1, got 0"),
    (["--variants", "adamw,bogus-l0.5"], "--variants: unknown variant 'bogus-l0.5'"),
    (["--variants", "sin"], "--variants: variant 'sin' needs a weight"),
    (["--batch", "3"], "--batch 3 must be divisible by --world 2"),
    (["--steps", "2", "--warmup", "2"], "--warmup must be in [0, --steps)"),
])
def test_bad_arguments_are_one_line_before_any_process(argv, message, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.setattr(multigpu, "sharded", _no_process)
    assert multigpu.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_nccl_without_enough_cuda_devices_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(multigpu, "sharded", _no_process)
    assert multigpu.main(["--backend", "nccl", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --backend nccl needs 2 CUDA device(s), one a rank; found 0 "
                   "(use --backend gloo on the CPU)\n")


def _no_process(*args, **kwargs):
    raise AssertionError("a process group was started for bad arguments")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_nccl_elementwise_variants_match_one_process(tmp_path):
    """NCCL with one GPU a rank (world 2 where there are two, else 1): fused kernels on the
    local shards; the same bounds, and each rank's peak memory is reported."""
    world = min(2, torch.cuda.device_count())
    assert multigpu.main(["--world", str(world), "--backend", "nccl", "--steps", "5",
                          "--warmup", "1", "--variants", "adamw,sin-l0.5",
                          "--out", str(tmp_path)]) == 0
    for r in _rows(tmp_path):
        print(f"{r['variant']}: loss rel max {r['loss_rel_max']}, param {r['param_max_abs']}")
        assert float(r["loss_rel_max"]) < LOSS_REL_TOL
        assert float(r["param_max_abs"]) < PARAM_TOL
        assert len(r["peak_mem_mib"].split(";")) == world
