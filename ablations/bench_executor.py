"""Benchmark of the runner's executors: what a run costs beyond its own work, process pool
against Dask, on the smoke grid.

    python -m ablations.bench_executor               # writes results/bench/executor.{csv,md}
    python -m ablations.bench_executor --rounds 3     # fewer warm rounds

Both executors get the same number of workers (``--workers``, default 1) and are alive at once.
What is timed, each executor as ``python -m ablations run`` builds it (:func:`run_grid` over
``ablations/configs/smoke.toml``, 15 runs, into a temporary results folder each time):

1. ``start``: from asking for the executor to the result of one trivial task, so its workers
   exist and are set up (processes spawned, torch imported and its threads set; for Dask also
   the scheduler, the nannies and the client of a ``LocalCluster``).
2. ``cold``: the first grid on those fresh workers (the first run of a worker also imports
   torch's optimizer machinery and builds the task's data).
3. ``warm``: ``--rounds`` more grids, the two executors interleaved round by round, so that a
   change of load on a shared machine affects both alike.
4. ``shutdown``: the executor's shutdown (for Dask: the client's and the cluster's close).

The overhead per run of a grid is ``(wall × workers − Σ run seconds) / runs``: a run's seconds
are its record's ``provenance.wall_seconds``, timed inside the worker around the arm's
``run``, so what is left is submission, pickling of the spec and the record, scheduling, the
result's way back and the runner's append (one fsync per record). With one worker no worker
waits idle for another's last run, so nothing else is in it.

Columns of executor.csv: executor, workers, phase (start, cold, warm, shutdown), round, runs,
wall_s, run_s (Σ of the runs' own seconds), overhead_ms_per_run (empty for start and shutdown).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

__all__ = ["bench_executors", "write_outputs", "main"]

SMOKE = Path(__file__).parent / "configs" / "smoke.toml"
EXECUTORS = ("processes", "dask")
CSV_COLUMNS = ["executor", "workers", "phase", "round", "runs", "wall_s", "run_s",
               "overhead_ms_per_run"]


def _ready() -> bool:
    # a trivial task: its result means a worker exists and was set up
    return True


def _build(kind: str, workers: int):
    from .dask_executor import local_cluster_executor
    from .runner import default_executor

    if kind == "processes":
        return default_executor(workers, arm="classifier")
    return local_cluster_executor("classifier", workers=workers, dashboard=":0",
                                  announce=False)


def _grid(ex, workers: int) -> tuple[float, float, int]:
    """(wall seconds, Σ of the runs' own seconds, runs) of the smoke grid on ``ex``."""
    from .config import load_config
    from .runner import timed_grid

    wall, records = timed_grid(load_config(SMOKE), ex)
    return wall, sum(r["provenance"]["wall_seconds"] for r in records), len(records)


def _row(kind, workers, phase, rnd, wall, run_s=None, runs=None) -> dict:
    over = (None if run_s is None else 1e3 * (wall * workers - run_s) / runs)
    return dict(executor=kind, workers=workers, phase=phase, round=rnd, runs=runs or "",
                wall_s=round(wall, 4), run_s="" if run_s is None else round(run_s, 4),
                overhead_ms_per_run="" if over is None else round(over, 2))


def bench_executors(workers: int = 1, rounds: int = 5) -> list[dict]:
    """The rows of executor.csv (module docstring)."""
    rows, live = [], {}
    try:
        for kind in EXECUTORS:
            t0 = time.perf_counter()
            live[kind] = _build(kind, workers)
            live[kind].submit(_ready).result()
            rows.append(_row(kind, workers, "start", 0, time.perf_counter() - t0))
        for kind in EXECUTORS:
            rows.append(_row(kind, workers, "cold", 0, *_grid(live[kind], workers)))
        for rnd in range(1, rounds + 1):
            for kind in (EXECUTORS if rnd % 2 else EXECUTORS[::-1]):  # alternate who goes first
                rows.append(_row(kind, workers, "warm", rnd, *_grid(live[kind], workers)))
                print(f"round {rnd} {kind}: {rows[-1]['overhead_ms_per_run']} ms per run",
                      flush=True)
    finally:
        for kind, ex in live.items():
            t0 = time.perf_counter()
            ex.shutdown()
            rows.append(_row(kind, workers, "shutdown", 0, time.perf_counter() - t0))
    return rows


def machine_info() -> dict[str, str]:
    from .provenance import machine_info as machine

    return machine(("dask", "distributed"))


def _summary(rows: list[dict], kind: str) -> dict[str, float]:
    mine = [r for r in rows if r["executor"] == kind]
    warm = [r for r in mine if r["phase"] == "warm"]
    one = {r["phase"]: r for r in mine if r["phase"] != "warm"}
    over = [r["overhead_ms_per_run"] for r in warm]
    return dict(start=one["start"]["wall_s"], cold=one["cold"]["wall_s"],
                cold_over=one["cold"]["overhead_ms_per_run"],
                warm=statistics.median(r["wall_s"] for r in warm),
                run_s=statistics.median(r["run_s"] for r in warm),
                over=statistics.median(over), over_min=min(over), over_max=max(over),
                shutdown=one["shutdown"]["wall_s"], rounds=len(warm))


def write_outputs(rows: list[dict], info: dict[str, str], out: Path) -> None:
    """executor.csv (every row) and executor.md (the summary, the method, the machine)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "executor.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    s = {k: _summary(rows, k) for k in EXECUTORS}
    workers, runs = rows[0]["workers"], next(r["runs"] for r in rows if r["runs"])
    lines = [
        "# Executors: the process pool against Dask, overhead per run\n",
        "Generated by `python -m ablations.bench_executor` (method in its docstring). The smoke "
        f"grid ({runs} runs, `ablations/configs/smoke.toml`) through `run_grid` with {workers} "
        "worker(s) on each executor: `processes` (the default process pool) and `dask` (a "
        "Dask `LocalCluster` as `--executor dask` builds it), both alive at once, warm grids "
        f"interleaved over {s['dask']['rounds']} rounds. Overhead per run = (grid wall × "
        "workers − Σ of the runs' own seconds) / runs: submission, pickling, scheduling, the "
        "result's way back, the runner's append.\n",
        "| executor | start (s) | cold grid (s) | warm grid (s, median) | Σ runs (s, median) | "
        "overhead per run, warm (ms: median, min–max) | cold (ms) | shutdown (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in EXECUTORS:
        v = s[k]
        lines.append(f"| {k} | {v['start']:.2f} | {v['cold']:.2f} | {v['warm']:.2f} | "
                     f"{v['run_s']:.2f} | {v['over']:.1f} ({v['over_min']:.1f}–"
                     f"{v['over_max']:.1f}) | {v['cold_over']:.0f} | {v['shutdown']:.2f} |")
    own = 1e3 * s["processes"]["run_s"] / runs
    over = {(r["executor"], r["round"]): r["overhead_ms_per_run"] for r in rows
            if r["phase"] == "warm"}
    paired = [over["dask", k] - over["processes", k] for (e, k) in over if e == "dask"]
    d = statistics.median(paired)
    lines += ["",
              f"Dask's extra per run, paired by round (the two executors' grids of the same "
              f"round, run back to back): median {d:+.1f} ms (min {min(paired):+.1f}, max "
              f"{max(paired):+.1f}) over {len(paired)} rounds. Its start takes "
              f"{s['dask']['start'] - s['processes']['start']:+.2f} s and its shutdown "
              f"{s['dask']['shutdown'] - s['processes']['shutdown']:+.2f} s against the "
              f"process pool's, once per sweep. A smoke run took {own:.0f} ms of its own here "
              f"(median over the pool's warm grids), so Dask's extra is {100 * d / own:.1f}% "
              "of a run this small; runs of seconds or minutes pay proportionally less. The "
              "runs' own seconds vary with the machine's load, and so does a task's way through "
              "Dask's event loops (scheduler, worker, client): these figures were taken at the "
              "load averages below.\n",
              "## Machine\n"]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    (out / "executor.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    if args.workers < 1 or args.rounds < 1:
        ap.error("--workers and --rounds must be >= 1")
    info = machine_info()
    rows = bench_executors(args.workers, args.rounds)
    info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    write_outputs(rows, info, args.out)
    print(f"wrote {args.out / 'executor.csv'} and {args.out / 'executor.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
