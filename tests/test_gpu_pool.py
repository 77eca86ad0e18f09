"""GPU packing (``[grid].runs_per_gpu``) and the sweep log, without a GPU: a toy GPU arm whose
runs report the device their worker was pinned to, over a pretended count of GPUs."""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass

import pytest

from ablations import runner
from ablations.arms import Arm, Metric, register_arm
from ablations.config import ConfigError, load_config
from ablations.sweeplog import GpuSampler, _parse, load_sweeps


@dataclass(frozen=True)
class PinOptions:
    rendezvous: str = ""  # a folder: each run waits there until `parties` workers have come
    parties: int = 1


@register_arm
class Pinned(Arm):
    name = "pinned"
    options = PinOptions
    resources = "gpu"
    metrics = (Metric("device", "none", "device", compared=False),)

    def run(self, spec):
        import pathlib

        import torch

        o = self.parse_options(spec.config)
        if o.rendezvous:  # hold each run until as many distinct workers hold one
            here = pathlib.Path(o.rendezvous)
            (here / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(here.iterdir())) < o.parties and time.monotonic() < deadline:
                time.sleep(0.02)

        return {"metrics": {"device": int(os.environ["CUDA_VISIBLE_DEVICES"]),
                            "pid": os.getpid(), "threads": torch.get_num_threads()}}


CONFIG = """
[grid]
arm = "pinned"
baseline_lr = 0.1
{extra}

[pinned]
rendezvous = "{rdv}"
parties = {parties}

[[cells]]
variants = ["adamw"]
seeds = {seeds}
"""


def _config(tmp_path, extra="", seeds=4, parties=1):
    path = tmp_path / "grid.toml"
    (tmp_path / "rdv").mkdir(exist_ok=True)
    path.write_text(CONFIG.format(extra=extra, seeds=seeds, rdv=tmp_path / "rdv",
                                  parties=parties))
    return load_config(path, tmp_path / "res")


def test_runs_per_gpu_is_validated_and_part_of_no_key(tmp_path):
    assert _config(tmp_path).runs_per_gpu == 1
    packed = _config(tmp_path, "runs_per_gpu = 3")
    assert packed.runs_per_gpu == 3
    assert [s.key for s in packed.specs] == [s.key for s in _config(tmp_path).specs]
    for bad in ("0", "1.5", "true", '"2"'):
        with pytest.raises(ConfigError, match=r"\[grid\]\.runs_per_gpu must be an integer >= 1"):
            _config(tmp_path, f"runs_per_gpu = {bad}")
    with pytest.raises(ValueError, match="runs_per_gpu must be an integer >= 1"):
        runner.default_executor(arm="pinned", runs_per_gpu=0)


def test_workers_are_packed_runs_per_gpu_on_each_device(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_visible_gpus", lambda: 2)
    cfg = _config(tmp_path, "runs_per_gpu = 2", parties=4)
    counts = runner.run_grid(cfg, progress=False)
    assert counts["ran"] == 4
    recs = runner.load_records(cfg.results / runner.RUNS_FILE)
    by_pid = {r["metrics"]["pid"]: r["metrics"]["device"] for r in recs}
    # four workers, each pinned to one device for its life: two on GPU 0, two on GPU 1
    assert len(by_pid) == 4
    assert collections.Counter(by_pid.values()) == {0: 2, 1: 2}
    # packed workers split the host's cores between them
    assert {r["metrics"]["threads"] for r in recs} == {max(1, runner.cpu_count() // 4)}
    (sweep,) = load_sweeps(cfg.results)
    assert (sweep["ran"], sweep["stored"], sweep["total"]) == (4, 4, 4)
    assert sweep["workers"] == 4 and sweep["runs_per_gpu"] == 2
    assert sweep["wall_s"] > 0 and sweep["interrupted"] is False
    # nothing ran on resume: no second line
    runner.run_grid(cfg, progress=False)
    assert len(load_sweeps(cfg.results)) == 1
    # the report shows the sweep (no nvidia-smi here: GPU columns say so)
    from ablations.report import render_arm

    text = render_arm(cfg).read_text()
    assert "## Sweeps: wall clock and GPU use" in text
    row = next(line for line in text.splitlines() if line.startswith("| 20"))
    assert "| 4 |" in row and "| 2 |" in row


def test_gpu_sampler_summarises_nvidia_smi_lines(tmp_path):
    assert _parse("35, 1200\n[N/A], 3\n45, 800\n") == [(35.0, 1200.0), (45.0, 800.0)]
    fake = tmp_path / "smi"
    fake.write_text("#!/bin/sh\necho '40, 1000'\necho '60, 3000'\n")
    fake.chmod(0o755)
    sampler = GpuSampler(interval=0.05, query=[str(fake)]).start()
    time.sleep(0.5)
    out = sampler.stop()
    assert out["devices"] == 2 and out["samples"] >= 2
    assert out["util_mean"] == out["util_median"] == 50.0 and out["mem_max_mib"] == 3000.0
    assert GpuSampler(query=["no-such-command-here"]).start().stop() is None


def test_an_arm_without_a_batched_path_runs_a_batch_one_run_after_another(monkeypatch):
    """Arm.run_batch's default: what run returns for each spec, in order, or the exception
    that ended that run while the others go on."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    arm = Pinned()
    calls = []

    def run(spec):
        calls.append(spec)
        if spec == "bad":
            raise ValueError("this run failed")
        return {"metrics": {"device": 0}, "curve": [spec]}

    monkeypatch.setattr(arm, "run", run)
    out = arm.run_batch(["a", "bad", "c"])
    assert calls == ["a", "bad", "c"]
    assert out[0]["curve"] == ["a"] and out[2]["curve"] == ["c"]
    assert isinstance(out[1], ValueError) and str(out[1]) == "this run failed"
