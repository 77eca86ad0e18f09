"""The runner: frozen specs → ``run_one(spec)`` → one record, appended atomically.

``run_grid`` runs what is missing: a record's ``key`` is the hash of its spec, so a changed
config never mixes with old runs, and a sweep killed at any moment loses at most the runs in
flight (a line is written whole, then flushed and fsynced; a torn last line is ignored on
load). Work goes through any ``concurrent.futures.Executor`` (default: one process per core).
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .arms import get_arm
from .config import GridConfig, RunSpec, expand
from .provenance import provenance
from .records import RUNS_FILE, append_record, load_records

__all__ = ["run_one", "run_grid", "load_records", "append_record", "provenance",
           "default_executor", "RUNS_FILE"]


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one spec in this process and return its record (data contract of DESIGN.md)."""
    arm = get_arm(spec.arm)
    t0 = time.perf_counter()
    out = arm.run(spec)
    wall = time.perf_counter() - t0
    record = dict(run_id=spec.run_id, key=spec.key, arm=spec.arm, variant=spec.variant,
                  attention=spec.attention, seed=spec.seed, lr=spec.lr, config=spec.config,
                  metrics=out["metrics"], curve=out.get("curve", []),
                  provenance=provenance(wall, out.get("device")))
    if spec.numerics:
        record["numerics"] = spec.numerics
    return record


def _import_all(modules: Sequence[str]) -> None:
    # an arm registered outside the built-ins (a user's module, a test) registers in the worker
    for name in modules:
        if name and name != "__main__":
            importlib.import_module(name)


def _worker_init(modules: Sequence[str] = ()) -> None:
    # one thread per worker: runs are bit-reproducible and workers do not fight for cores
    import torch

    torch.set_num_threads(1)
    _import_all(modules)


def _gpu_worker_init(queue, modules: Sequence[str] = ()) -> None:
    # pin this worker to one GPU before torch initialises CUDA
    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())
    _import_all(modules)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def default_executor(max_workers: int | None = None, arm: str = "classifier") -> cf.Executor:
    """Processes (spawned: safe with torch) for the arm's resources: over the available cores
    for a CPU arm, one thread each; one per visible GPU for a GPU arm, each pinned to its GPU
    (one process when there is none). Each worker imports the arm's module first, so an arm
    registered outside the built-ins runs too."""
    ctx = mp.get_context("spawn")
    a = get_arm(arm)
    modules = (type(a).__module__,)
    if a.resources == "gpu":
        n_gpu = _visible_gpus()
        if n_gpu > 0:
            queue = ctx.Manager().Queue()
            for i in range(n_gpu):
                queue.put(i)
            return cf.ProcessPoolExecutor(max_workers=n_gpu, mp_context=ctx,
                                          initializer=_gpu_worker_init,
                                          initargs=(queue, modules))
        return cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_import_all,
                                      initargs=(modules,))
    n = max_workers or cpu_count()
    return cf.ProcessPoolExecutor(max_workers=max(1, n), mp_context=ctx,
                                  initializer=_worker_init, initargs=(modules,))


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
