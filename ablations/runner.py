"""The runner: frozen specs → ``run_one(spec)`` → one record, appended atomically.

``run_grid`` runs what is missing: a record's ``key`` is the hash of its spec, so a changed
config never mixes with old runs, and a sweep killed at any moment loses at most the runs in
flight (a line is written whole, then flushed and fsynced; a torn last line is ignored on
load). Work goes through any ``concurrent.futures.Executor`` (default: one process per core).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import functools
import importlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .config import GridConfig, RunSpec, expand

__all__ = ["run_one", "run_grid", "load_records", "append_record", "provenance"]

RUNS_FILE = "runs.jsonl"


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The code's commit (with ``-dirty`` for uncommitted tracked changes). Where the tree has no
    git history (a copy on another machine), ``QSGD_COMMIT`` names it, else "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        head = dirty = None
    sha = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if len(sha) != 40:
        return os.environ.get("QSGD_COMMIT", "unknown")
    return sha + ("-dirty" if dirty is not None and dirty.stdout.strip() else "")


def provenance(wall_seconds: float, device: str | None = None) -> dict[str, Any]:
    """Where and how a record was made."""
    import torch

    if device is None:
        device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                  else f"cpu ({platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads)")
    utc = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return dict(commit=_commit(), utc=utc,
                python=platform.python_version(), torch=torch.__version__, device=device,
                host=platform.node(), wall_seconds=round(wall_seconds, 3),
                load_avg_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one spec in this process and return its record (data contract of DESIGN.md)."""
    module = importlib.import_module(f"ablations.{spec.arm}")
    t0 = time.perf_counter()
    out = module.run(spec)
    wall = time.perf_counter() - t0
    record = dict(run_id=spec.run_id, key=spec.key, arm=spec.arm, variant=spec.variant,
                  attention=spec.attention, seed=spec.seed, lr=spec.lr, config=spec.config,
                  metrics=out["metrics"], curve=out.get("curve", []),
                  provenance=provenance(wall, out.get("device")))
    if spec.numerics:
        record["numerics"] = spec.numerics
    return record


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line whole: one write, flush, fsync. A torn last line (a writer killed
    mid-write) is closed first, so the new record never merges into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def load_records(path: Path) -> list[dict[str, Any]]:
    """All complete records of a runs.jsonl; a torn line (killed mid-write) is skipped."""
    if not Path(path).is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{lineno}: skipping a torn record (a run killed mid-write)",
                              RuntimeWarning, stacklevel=2)
    return records


def _worker_init() -> None:
    # one thread per worker: runs are bit-reproducible and workers do not fight for cores
    import torch

    torch.set_num_threads(1)


def _gpu_worker_init(queue) -> None:
    # pin this worker to one GPU before torch initialises CUDA
    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def default_executor(max_workers: int | None = None, arm: str = "classifier") -> cf.Executor:
    """Processes over the available cores (spawned: safe with torch); for the llm arm, one
    process per visible GPU, each pinned to its GPU."""
    ctx = mp.get_context("spawn")
    if arm == "llm":
        n_gpu = _visible_gpus()
        if n_gpu > 0:
            queue = ctx.Manager().Queue()
            for i in range(n_gpu):
                queue.put(i)
            return cf.ProcessPoolExecutor(max_workers=n_gpu, mp_context=ctx,
                                          initializer=_gpu_worker_init, initargs=(queue,))
        return cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
    n = max_workers or cpu_count()
    return cf.ProcessPoolExecutor(max_workers=max(1, n), mp_context=ctx,
                                  initializer=_worker_init)


def _visible_gpus() -> int:
    # ask a child process, so that this one never initialises CUDA before forking workers
    out = subprocess.run([sys.executable, "-c",
                          "import torch; print(torch.cuda.device_count())"],
                         capture_output=True, text=True, timeout=120)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def run_grid(
    config: GridConfig,
    executor: cf.Executor | None = None,
    *,
    progress: bool = True,
    limit: int | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    run_fn: Callable[[RunSpec], dict[str, Any]] = run_one,
) -> dict[str, int]:
    """Run every spec of ``config`` that has no record yet; return counts.

    ``limit`` caps how many runs start (for smoke tests and partial sweeps).
    """
    runs_path = config.results / RUNS_FILE
    done = {r.get("key") for r in load_records(runs_path)}
    todo = [s for s in expand(config.specs) if s.key not in done]
    if limit is not None:
        todo = todo[:limit]
    counts = {"total": len(config.specs), "done_before": len(config.specs) - len(
        [s for s in config.specs if s.key not in done]), "ran": 0}
    if not todo:
        return counts
    own = executor is None
    ex = executor or default_executor(arm=config.arm)
    bar = _progress(len(todo), config.name, progress)
    try:
        futures = {ex.submit(run_fn, s): s for s in todo}
        for fut in cf.as_completed(futures):
            spec = futures[fut]
            try:
                record = fut.result()
            except Exception as err:
                raise RuntimeError(f"run {spec.run_id} failed: {err}") from err
            append_record(runs_path, record)
            counts["ran"] += 1
            if on_record is not None:
                on_record(record)
            bar.update(1)
    finally:
        bar.close()
        if own:
            ex.shutdown(cancel_futures=True)
    return counts


def _progress(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="run", disable=not enabled, smoothing=0.1,
                file=sys.stderr, dynamic_ncols=True)


def run_serial(specs: Iterable[RunSpec]) -> list[dict[str, Any]]:
    """Run specs one after another in this process (debugging)."""
    return [run_one(s) for s in specs]
