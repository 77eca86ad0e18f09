"""Seed-batched training against one run per process: runs per hour of the headline cell.

    python -m ablations.bench_batched                  # writes results/bench/seed_batched.{csv,md}
    python -m ablations.bench_batched --seeds 2 --epochs 1 --rounds 1 --out /tmp/b  # smoke
    python -m ablations.bench_batched --device cuda    # one GPU: seed_batched_gpu.{csv,md}

The cell: ``headline`` of ``configs/classifier-paper.toml`` (the paper's Table II model:
embedding 64, 4 heads, feed-forward 128, 2 layers, dropout 0.1, quantum attention with the
4-qubit circuit; batch 32, constant lr 1e-3, its task level: 2,500 training sequences, 79 steps
an epoch), variants adamw and sin-l0.5, seeds 0 … N−1 (``--seeds``), each run cut to
``--epochs`` epochs (the config's 12 do not fit a short bench; a run's cost is linear in its
epochs). Both ways go through :func:`ablations.runner.run_grid` into a temporary results folder,
on the same process pool (``--workers`` processes of one thread each, as
:func:`ablations.runner.default_executor` builds it for ``python -m ablations run``), started
and warmed once:

1. ``one-run``: each run its own job (:func:`ablations.runner.run_one`): 2N jobs;
2. ``seed-batched``: each variant's N seeds one job (``[grid].seed_batched``,
   ``seeds_per_job`` = N; :func:`ablations.runner.run_batch_one`): 2 jobs, one per worker.

``--rounds`` rounds, alternating which way goes first, so that a change of the machine's load
hits both alike. runs/hour = runs / grid wall clock × 3600 over all rounds; the speed-up is the
one-run grids' wall clock over the seed-batched ones' (and by round). Every run's non-timing
metrics and curve are compared between the two ways: they are the same runs and must be equal
(``equal``).

Where the time goes (the ``profile`` rows): ``torch.profiler`` over ``--profile-steps``
training steps (forward, backward, optimizer) of the cell's model in this process at one
thread, once for one run and once for a batch of N, the self CPU time of each step split into
the kernels a batch still calls once per run (matrix products, Φ's native kernels, the dropout
masks, layer norms) and everything else (elementwise kernels, autograd, Python), which a batch
calls once for all its runs; per run and step. The profiler's own cost inflates the rest; the
per-run kernels bound the speed-up (Amdahl): a batch cannot beat one run's step time over its
per-run kernels' time.

The workers' CPU time (user + system seconds of the pool's processes over a grid, read from
/proc) is reported beside the wall clock: on a machine shared with other processes it does not
grow while they hold the cores, so its ratio is the steadier figure of the two.

On one GPU (``--device cuda``, the cell with ``[classifier].device = "cuda"``; written to
seed_batched_gpu.{csv,md}, the CPU's files stay): several one-run processes share a device
(``[grid].runs_per_gpu``), so the one-run baseline is measured at each ``--runs-per-gpu``
(default 1 and 8) on the pool :func:`ablations.runner.default_executor` builds for a GPU grid,
over the runs of ``--one-run-seeds`` seeds (default 8: 16 runs; a run's throughput does not
depend on how many seeds its grid has), and its best is the baseline. On CUDA a seed batch
runs its per-run kernels grouped (:attr:`qsgd.models.SeedBatchedClassifier.grouped`).
Seed-batched is measured at each ``--seeds`` (a comma list, default 8,32: seeds per job), the
two variants' jobs on a pool of 2 processes on the GPU. Each pool is started and warmed (CUDA
initialised and the optimizer's kernels compiled in every worker) before it is timed. The runs
both ways hold (the one-run seeds) are compared to float rounding (on CUDA the two paths agree
to rounding, not bit for bit): ``max_dloss`` is the largest relative difference of a curve's
training loss, ``max_dacc`` of its test accuracy.

Columns of seed_batched_gpu.csv: mode, runs_per_gpu, seeds (a job's, for seed-batched; the
grid's for one-run), epochs, runs, jobs, wall_s, runs_per_hour, max_dloss, max_dacc.

Columns of seed_batched.csv: section (grid or profile), mode (one-run or seed-batched), round,
workers, seeds, epochs, runs, jobs, wall_s, runs_per_hour, cpu_s (the workers' CPU seconds),
runs_per_cpu_hour, run_s (Σ of the records' wall_seconds), load_1min (at the grid's end),
equal, category (profile rows), ms_per_run_step (profile rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from .fmt import write_csv

__all__ = ["bench_grids", "profile_steps", "write_outputs", "bench_gpu", "write_gpu_outputs",
           "main"]

PAPER_CONFIG = Path(__file__).resolve().parent / "configs" / "classifier-paper.toml"
VARIANTS = ("adamw", "sin-l0.5")
MODES = ("one-run", "seed-batched")
CSV_COLUMNS = ["section", "mode", "round", "workers", "seeds", "epochs", "runs", "jobs",
               "wall_s", "runs_per_hour", "cpu_s", "runs_per_cpu_hour", "run_s", "load_1min",
               "equal", "category", "ms_per_run_step"]
#: profiler categories: the kernels a batch runs once per run (by name), and the rest
PER_RUN = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
           "Φ kernels": ("_NativeChain", "_NativeChainBackward", "_FusedAttention",
                         "_FusedAttentionBackward"),
           "dropout masks": ("aten::bernoulli_", "qsgd::bernoulli_"),
           "layer norms": ("aten::native_layer_norm", "aten::native_layer_norm_backward")}


def _ready() -> bool:
    return True


def _ready_cuda() -> str:
    """Initialise CUDA in a pool worker and step the optimizer there once per variant (its
    kernels compiled or loaded from Triton's cache): what its first run would pay otherwise."""
    import time as _time

    import torch

    from qsgd import SuperpositionalAdamW, parse_variant

    for v in VARIANTS:
        p = torch.zeros(8, device="cuda", requires_grad=True)
        p.grad = torch.ones_like(p)
        SuperpositionalAdamW([p], lr=1e-3, **parse_variant(v).optimizer_kwargs()).step()
    torch.cuda.synchronize()
    _time.sleep(0.5)  # hold this worker so that the others take the other warm-ups
    return torch.cuda.get_device_name(0)


def _cpu_seconds(ex) -> float | None:
    """CPU seconds (user + system) the pool's worker processes have used so far, from
    /proc (None where it cannot be read): unlike the wall clock, what a grid costs does not
    grow while other processes hold the cores."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in (getattr(ex, "_processes", None) or {}).values():
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / tick if total else None
    except (OSError, ValueError, AttributeError):
        return None


def _grid(seeds: int, epochs: int, batched: bool, results: Path, device: str = "cpu",
          runs_per_gpu: int = 1):
    """The headline cell of the paper grid as a GridConfig of ``VARIANTS`` × ``seeds`` runs of
    ``epochs`` epochs, one-run or seed-batched, writing into ``results``; ``device``: its
    ``[classifier].device`` (``cpu`` leaves the options as the config has them)."""
    from .arms import get_arm
    from .config import _freeze, load_config

    cfg = load_config(PAPER_CONFIG)
    arm = get_arm(cfg.arm)
    numerics = arm.batched_numerics if batched else arm.numerics
    extra = {"epochs": epochs} | ({"device": device} if device != "cpu" else {})
    specs = []
    for v in VARIANTS:
        base = next(s for s in cfg.specs if s.variant == v and s.attention == "quantum"
                    and not s.task)
        opts = _freeze({**base.config, **extra})
        specs += [dataclasses.replace(base, seed=s, options=opts, numerics=numerics)
                  for s in range(seeds)]
    arm_options = dataclasses.replace(cfg.arm_options, **extra)
    return dataclasses.replace(cfg, name=f"bench-{'batched' if batched else 'one-run'}",
                               results=results, specs=tuple(specs), designs={},
                               seed_batched=batched, seeds_per_job=seeds,
                               arm_options=arm_options, runs_per_gpu=runs_per_gpu)


def _comparable(record: dict) -> str:
    from .arms.classifier import TIMING_METRICS

    metrics = {k: v for k, v in record["metrics"].items() if k not in TIMING_METRICS}
    curve = [{k: v for k, v in p.items() if k != "sec"} for p in record["curve"]]
    return json.dumps([metrics, curve], sort_keys=True)


def bench_grids(seeds: int, epochs: int, workers: int, rounds: int) -> list[dict]:
    """The grid rows of seed_batched.csv (module docstring)."""
    from .runner import default_executor, timed_grid

    rows = []
    ex = default_executor(workers, arm="classifier")
    try:
        for f in [ex.submit(_ready) for _ in range(workers)]:
            f.result()
        for rnd in range(1, rounds + 1):
            got = {}
            for mode in (MODES if rnd % 2 else MODES[::-1]):
                cfg = _grid(seeds, epochs, mode == "seed-batched", Path("unused"))
                c0 = _cpu_seconds(ex)  # the workers' CPU time: idle outside run_grid
                wall, records = timed_grid(cfg, ex)
                c1 = _cpu_seconds(ex)
                cpu = None if c0 is None or c1 is None else c1 - c0
                got[mode] = {(r["variant"], r["seed"]): _comparable(r) for r in records}
                jobs = 2 if mode == "seed-batched" else len(records)
                rows.append(dict(section="grid", mode=mode, round=rnd, workers=workers,
                                 seeds=seeds, epochs=epochs, runs=len(records), jobs=jobs,
                                 wall_s=round(wall, 3),
                                 runs_per_hour=round(3600 * len(records) / wall, 1),
                                 cpu_s="" if cpu is None else round(cpu, 2),
                                 runs_per_cpu_hour="" if not cpu else
                                 round(3600 * len(records) / cpu, 1),
                                 run_s=round(sum(r["provenance"]["wall_seconds"]
                                                 for r in records), 3),
                                 load_1min=round(os.getloadavg()[0], 2)))
                print(f"round {rnd} {mode}: {len(records)} runs in {wall:.1f} s "
                      f"({rows[-1]['runs_per_hour']:.0f} runs/hour; {rows[-1]['cpu_s']} CPU s)",
                      flush=True)
            equal = got["one-run"] == got["seed-batched"]
            for r in rows[-2:]:
                r["equal"] = equal
    finally:
        ex.shutdown()
    return rows


def _differences(a: list[dict], b: list[dict]) -> tuple[float, float]:
    """(largest relative difference of a curve's train_loss, largest difference of its
    test_acc) over the runs (variant, seed) that both record lists hold."""
    at = {(r["variant"], r["seed"]): r for r in b}
    dloss = dacc = 0.0
    for r in a:
        other = at.get((r["variant"], r["seed"]))
        if other is None:
            continue
        for p, q in zip(r["curve"], other["curve"]):
            dloss = max(dloss, abs(p["train_loss"] - q["train_loss"])
                        / max(abs(q["train_loss"]), 1e-30))
            dacc = max(dacc, abs(p["test_acc"] - q["test_acc"]))
    return dloss, dacc


def bench_gpu(seeds: list[int], one_run_seeds: int, epochs: int,
              runs_per_gpu: list[int]) -> list[dict]:
    """The rows of seed_batched_gpu.csv (module docstring): one-run at each ``runs_per_gpu``
    over ``one_run_seeds`` seeds a variant, seed-batched at each of ``seeds`` seeds a job."""
    from .runner import default_executor, timed_grid

    rows, one_records = [], None

    def pool(n: int):
        ex = default_executor(arm="classifier", runs_per_gpu=n, resources="gpu")
        for f in [ex.submit(_ready_cuda) for _ in range(n)]:
            f.result()
        return ex

    for rpg in runs_per_gpu:
        ex = pool(rpg)
        try:
            cfg = _grid(one_run_seeds, epochs, False, Path("unused"), "cuda", rpg)
            wall, records = timed_grid(cfg, ex)
        finally:
            ex.shutdown()
        if one_records is None:
            one_records = records
        rows.append(dict(mode="one-run", runs_per_gpu=rpg, seeds=one_run_seeds, epochs=epochs,
                         runs=len(records), jobs=len(records), wall_s=round(wall, 3),
                         runs_per_hour=round(3600 * len(records) / wall, 1)))
        print(f"one-run, {rpg} a GPU: {len(records)} runs in {wall:.1f} s "
              f"({rows[-1]['runs_per_hour']:.0f} runs/hour)", flush=True)
    ex = pool(len(VARIANTS))  # the variants' jobs side by side
    try:
        for n in seeds:
            cfg = _grid(n, epochs, True, Path("unused"), "cuda", len(VARIANTS))
            wall, records = timed_grid(cfg, ex)
            dloss, dacc = _differences(records, one_records)
            rows.append(dict(mode="seed-batched", runs_per_gpu=len(VARIANTS), seeds=n,
                             epochs=epochs, runs=len(records), jobs=len(VARIANTS),
                             wall_s=round(wall, 3),
                             runs_per_hour=round(3600 * len(records) / wall, 1),
                             max_dloss=f"{dloss:.3g}", max_dacc=f"{dacc:.3g}"))
            print(f"seed-batched, {n} seeds a job: {len(records)} runs in {wall:.1f} s "
                  f"({rows[-1]['runs_per_hour']:.0f} runs/hour; vs one-run: loss {dloss:.2g}, "
                  f"accuracy {dacc:.2g})", flush=True)
    finally:
        ex.shutdown()
    return rows


GPU_COLUMNS = ["mode", "runs_per_gpu", "seeds", "epochs", "runs", "jobs", "wall_s",
               "runs_per_hour", "max_dloss", "max_dacc"]


def write_gpu_outputs(rows: list[dict], info: dict[str, str], out: Path) -> None:
    """seed_batched_gpu.csv (every row) and seed_batched_gpu.md (the figures, the method, the
    machine)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "seed_batched_gpu.csv", GPU_COLUMNS, rows)
    one = [r for r in rows if r["mode"] == "one-run"]
    best = max(one, key=lambda r: r["runs_per_hour"])
    epochs = rows[0]["epochs"]
    lines = [
        "# Seed-batched training on one GPU: runs per hour of the headline cell\n",
        "Generated by `python -m ablations.bench_batched --device cuda` (method in its "
        "docstring). The `headline` cell of `configs/classifier-paper.toml` (Table II model, "
        "quantum attention, 4 qubits, dropout 0.1, batch 32, 79 steps an epoch) with "
        f"`[classifier].device = \"cuda\"`, {' and '.join(VARIANTS)}, {epochs} epoch(s) a "
        "run, through `run_grid`: one-run with `runs_per_gpu` processes sharing the GPU (the "
        f"baseline: the best, {best['runs_per_gpu']} a GPU), seed-batched with each variant's "
        "seeds in one job, the two jobs side by side. The speed-up is runs per hour over the "
        "baseline's.\n",
        "| way | runs per GPU | seeds a job | runs | wall (s) | runs/hour | speed-up "
        "| vs one-run: loss (rel.) | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        batched = r["mode"] == "seed-batched"
        speed = r["runs_per_hour"] / best["runs_per_hour"]
        lines.append(f"| {r['mode']} | {r['runs_per_gpu']} | {r['seeds'] if batched else 1} | "
                     f"{r['runs']} | {r['wall_s']:.1f} | {r['runs_per_hour']:,.0f} | "
                     + (f"**{speed:.2f}×**" if batched else f"{speed:.2f}×")
                     + f" | {r.get('max_dloss', '') or '–'} | {r.get('max_dacc', '') or '–'} |")
    lines += ["", "The last two columns: the largest difference between a run's seed-batched "
              "and one-run curves (training loss relative, test accuracy absolute) over the "
              "runs both hold: on CUDA the two paths agree to float rounding, not bit for bit "
              "(a prediction on the decision boundary may flip).\n",
              "## Machine\n"] + [f"- {k}: {v}" for k, v in info.items()]
    (out / "seed_batched_gpu.md").write_text("\n".join(lines) + "\n")


def _categorise(prof) -> dict[str, float]:
    """Self CPU microseconds per category (PER_RUN, and "rest") of a profile."""
    out = {k: 0.0 for k in PER_RUN} | {"rest": 0.0}
    for ev in prof.key_averages():
        cat = next((k for k, names in PER_RUN.items() if ev.key in names), "rest")
        out[cat] += ev.self_cpu_time_total
    return out


def _step_fn(o, data, runs: int, gen):
    """One training step (forward, backward, sin-l0.5 step) of ``runs`` runs of the cell's
    model: one run's own path for ``runs`` = 1, else a seed batch of ``runs``."""
    import torch
    import torch.nn.functional as F

    from qsgd import SuperpositionalAdamW
    from qsgd.batched import SeedBatchedAdamW
    from qsgd.models.batched import SeedBatchedClassifier, dropout_generators

    from .arms.classifier import build_model

    x, y = data["x_train"], data["y_train"]
    models, states = [], []
    for s in range(runs):
        torch.manual_seed(s)
        models.append(build_model(o, "quantum"))
        states.append(torch.get_rng_state())
    if runs == 1:
        model = models[0]
        opt = SuperpositionalAdamW(model.parameters(), lr=1e-3, weight_decay=0.0,
                                   perturbation="sin")

        def step():
            idx = torch.randint(0, len(x), (o.batch_size,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    batch = SeedBatchedClassifier(models)
    gens = dropout_generators(states)
    bopt = SeedBatchedAdamW(list(batch.parameters()), list(range(runs)), lr=1e-3,
                            weight_decay=0.0, perturbation="sin")

    def batch_step():
        idx = torch.randint(0, len(x), (runs, o.batch_size), generator=gen)
        logits = batch(x[idx], gens)
        loss = torch.stack([F.cross_entropy(a, b)
                            for a, b in zip(logits.unbind(0), y[idx].unbind(0))])
        bopt.zero_grad()
        loss.sum().backward()
        bopt.step()
    return batch_step


def profile_steps(seeds: int, steps: int) -> list[dict]:
    """The profile rows of seed_batched.csv: per run and training step, milliseconds of self
    CPU time by category, of one run and of a batch of ``seeds`` (module docstring); and the
    unprofiled wall time of a step (category ``step (wall)``)."""
    import torch
    from torch.profiler import profile

    from .arms.classifier import _task

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = _grid(seeds, 1, False, Path("unused"))
    o = cfg.arm_options.__class__(**cfg.specs[0].config)
    data = _task(o)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for mode, runs in (("one-run", 1), ("seed-batched", seeds)):
        step = _step_fn(o, data, runs, gen)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / (steps * runs) * 1e3
        with profile() as prof:
            for _ in range(steps):
                step()
        for cat, us in _categorise(prof).items():
            rows.append(dict(section="profile", mode=mode, seeds=runs, category=cat,
                             ms_per_run_step=round(us / 1e3 / (steps * runs), 3)))
        rows.append(dict(section="profile", mode=mode, seeds=runs, category="step (wall)",
                         ms_per_run_step=round(wall, 3)))
    torch.set_num_threads(before)
    return rows


def machine_info(gpu: bool = False) -> dict[str, str]:
    import subprocess
    import sys

    from .provenance import machine_info as machine

    info = machine()
    if gpu:  # asked in a child: this process must not initialise CUDA before the pools fork
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda."
                              "get_device_name(0), torch.version.cuda, sep='|')"],
                             capture_output=True, text=True, timeout=120)
        name, _, cuda = out.stdout.strip().rpartition("\n")[2].partition("|")
        info |= {"gpu": name or "none", "cuda": cuda or "none"}
    return info


def write_outputs(rows: list[dict], info: dict[str, str], out: Path) -> None:
    """seed_batched.csv (every row) and seed_batched.md (the figures, the method, the
    machine)."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "seed_batched.csv", CSV_COLUMNS, rows)
    grid = [r for r in rows if r["section"] == "grid"]
    at = {(r["mode"], r["round"]): r for r in grid}
    rounds = sorted({r["round"] for r in grid})
    first = grid[0]
    cpu_ok = all(isinstance(r.get("cpu_s"), (int, float)) and r["cpu_s"] > 0 for r in grid)
    keys = ("runs", "wall_s", "cpu_s") if cpu_ok else ("runs", "wall_s")
    tot = {m: {k: sum(at[m, i][k] for i in rounds) for k in keys} for m in MODES}
    speed = tot["one-run"]["wall_s"] / tot["seed-batched"]["wall_s"]
    cpu_speed = tot["one-run"]["cpu_s"] / tot["seed-batched"]["cpu_s"] if cpu_ok else None
    paired = [at["one-run", i]["wall_s"] / at["seed-batched", i]["wall_s"] for i in rounds]
    lines = [
        "# Seed-batched training: runs per hour of the headline cell\n",
        "Generated by `python -m ablations.bench_batched` (method in its docstring). The "
        "`headline` cell of `configs/classifier-paper.toml` (Table II model, quantum attention, "
        f"4 qubits, dropout 0.1, batch 32, 79 steps an epoch), {' and '.join(VARIANTS)} × "
        f"{first['seeds']} seeds, {first['epochs']} epoch(s) a run, through `run_grid` on "
        f"{first['workers']} worker process(es) of one thread: each run its own job "
        f"(`one-run`), or each variant's {first['seeds']} seeds one job (`seed-batched`); "
        f"{len(rounds)} round(s), alternating which goes first. Over all rounds:\n",
        "| way | runs | jobs a round | runs/hour | speed-up | runs per CPU-hour of the workers "
        "| speed-up in CPU time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in MODES:
        t = tot[m]
        cpu = (f"{3600 * t['runs'] / t['cpu_s']:,.0f} | "
               + ("1.00×" if m == "one-run" else f"**{cpu_speed:.2f}×**")) if cpu_ok else "– | –"
        lines.append(f"| {m} | {t['runs']} | {at[m, rounds[0]]['jobs']} | "
                     f"{3600 * t['runs'] / t['wall_s']:,.0f} | "
                     + ("1.00×" if m == "one-run" else f"**{speed:.2f}×**") + f" | {cpu} |")
    lines += ["", "| round | load (1 min) | one-run wall (s) | seed-batched wall (s) | "
                  "speed-up | one-run CPU (s) | seed-batched CPU (s) | speed-up in CPU time |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i in rounds:
        a, b = at["one-run", i], at["seed-batched", i]
        c = (f"{a['cpu_s']:.1f} | {b['cpu_s']:.1f} | {a['cpu_s'] / b['cpu_s']:.2f}×"
             if cpu_ok else "– | – | –")
        lines.append(f"| {i} | {a.get('load_1min', '')} | {a['wall_s']:.1f} | "
                     f"{b['wall_s']:.1f} | {a['wall_s'] / b['wall_s']:.2f}× | {c} |")
    equal = all(r.get("equal") for r in grid)
    lines += ["",
              f"Speed-up in wall clock: {speed:.2f}× over all rounds (by round: "
              f"{min(paired):.2f}–{max(paired):.2f}×)"
              + (f"; in the workers' CPU time (user + system, from /proc, which does not grow "
                 f"while other processes hold the cores): {cpu_speed:.2f}×" if cpu_ok else "")
              + ". Every run's non-timing metrics and curve equal between the two ways: "
              f"**{'yes' if equal else 'NO'}** (the same runs, bit for bit). The machine is "
              "shared (the load averages above): a grid of 2 jobs waits for the slower, so a "
              "core taken by another process stretches its wall clock more than that of 16 "
              "jobs, which the pool rebalances.\n"]
    prof = [r for r in rows if r["section"] == "profile"]
    if prof:
        cats = list(PER_RUN) + ["rest", "step (wall)"]
        val = {(r["mode"], r["category"]): r["ms_per_run_step"] for r in prof}
        seeds = next(r["seeds"] for r in prof if r["mode"] == "seed-batched")
        lines += ["## Where a training step's time goes (ms per run and step)\n",
                  "Self CPU time by `torch.profiler` (one thread, this process, the cell's "
                  f"model, sin-l0.5), one run against a batch of {seeds}; the last row is the "
                  "unprofiled wall time. The first four rows are kernels a batch still calls "
                  "once per run, with the same sizes as one run's (the batch draws its dropout "
                  "masks with `qsgd.models.batched.bernoulli_`, a native copy of torch's loop: "
                  "the same numbers; the one-run path keeps torch's).\n",
                  "| category | one run | seed-batched | per run in a batch |",
                  "|---|---:|---:|---|"]
        for c in cats:
            a, b = val.get(("one-run", c)), val.get(("seed-batched", c))
            kind = ("once per run" if c in PER_RUN else "once per batch" if c == "rest"
                    else "")
            lines.append(f"| {c} | {a:.2f} | {b:.2f} | {kind} |")
        fixed = sum(val[("one-run", c)] for c in PER_RUN)
        total = sum(val[("one-run", c)] for c in list(PER_RUN) + ["rest"])
        rest = (val[("one-run", "rest")], val[("seed-batched", "rest")])
        lines += ["",
                  f"In one run's step the per-run kernels take {fixed:.1f} of {total:.1f} ms "
                  f"of CPU time ({100 * fixed / total:.0f}%): even with every other cost "
                  f"shared by a batch, the speed-up would be bounded by {total / fixed:.1f}× "
                  f"(Amdahl) on this machine. The rest is not all per-operation overhead: "
                  f"batched it still takes {rest[1]:.1f} ms a run and step against "
                  f"{rest[0]:.1f} ms alone, for it is mostly the elementwise work itself "
                  "(activations, dropout products, the optimizer's pass over the parameters), "
                  "which a batch does for every run, over tensors S times larger (out of the "
                  "caches one run's fit in), plus the copies that stack the runs' results.\n"]
    lines += ["## Machine\n"] + [f"- {k}: {v}" for k, v in info.items()]
    (out / "seed_batched.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: the one-GPU bench (seed_batched_gpu.*)")
    ap.add_argument("--seeds", default=None,
                    help="seeds a job: one integer (cpu; default 8) or a comma list (cuda; "
                         "default 8,32)")
    ap.add_argument("--epochs", type=int, default=None, help="a run's (default cpu 2, cuda 1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--runs-per-gpu", default="1,8", help="cuda: the one-run layouts")
    ap.add_argument("--one-run-seeds", type=int, default=8, help="cuda: the one-run grid's")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    try:
        seeds = [int(x) for x in (args.seeds or ("8,32" if gpu else "8")).split(",")]
        rpgs = [int(x) for x in args.runs_per_gpu.split(",")]
    except ValueError:
        ap.error("--seeds and --runs-per-gpu take integers separated by commas")
    epochs = args.epochs or (1 if gpu else 2)
    if min(seeds + rpgs + [epochs, args.workers, args.rounds, args.profile_steps,
                           args.one_run_seeds]) < 1:
        ap.error("--seeds, --epochs, --workers, --rounds, --profile-steps, --runs-per-gpu and "
                 "--one-run-seeds must be >= 1")
    if not gpu and len(seeds) != 1:
        ap.error("--seeds takes one integer on the CPU")
    info = machine_info(gpu)
    if gpu:
        rows = bench_gpu(seeds, args.one_run_seeds, epochs, rpgs)
        info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
        write_gpu_outputs(rows, info, args.out)
        print(f"wrote {args.out / 'seed_batched_gpu.csv'} and "
              f"{args.out / 'seed_batched_gpu.md'}")
        return 0
    args.seeds, args.epochs = seeds[0], epochs
    rows = bench_grids(args.seeds, args.epochs, args.workers, args.rounds)
    rows += profile_steps(args.seeds, args.profile_steps)
    info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    write_outputs(rows, info, args.out)
    print(f"wrote {args.out / 'seed_batched.csv'} and {args.out / 'seed_batched.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
