"""The runner: frozen specs → ``run_one(spec)`` → one record, appended atomically.

``run_grid`` runs what is missing: a record's ``key`` is the hash of its spec, so a changed
config never mixes with old runs, and a sweep killed at any moment loses at most the runs in
flight (a line is written whole, then flushed and fsynced; a torn last line is ignored on
load). Work goes through any ``concurrent.futures.Executor``: by default one process per core
(:func:`default_executor`), or Dask distributed (``executor="dask"`` for a local cluster,
``"dask://HOST:PORT"`` for a running scheduler; :mod:`ablations.dask_executor`). Whatever the
executor, this process alone appends records, so the atomic append and the resume stay the same.

A run that raises is retried once, then logged in ``failures.jsonl`` with its traceback and
worker (:mod:`ablations.failures`); the other runs go on, and the counts say how many failed.

A seed-batched grid (``[grid].seed_batched``) goes through the executor in jobs of one cell's
seeds (:func:`seed_jobs`, at most ``[grid].seeds_per_job`` each; :func:`run_batch_one` runs one):
a job returns one record per run, each appended as it would be alone, and a run that failed
inside its job is retried (with the job's other failed runs) and logged as above. The resume
is per record: the missing runs of a cell make the next sweep's jobs.

Before the first run starts, the results folder is checked (``~`` expanded, created,
writable) and locked against a second sweep (:mod:`ablations.records`). An interrupt
(KeyboardInterrupt: Ctrl-C, or SIGTERM where the command line maps it so) stops the workers of
the runner's own pool at once (a local Dask cluster is closed; on a running scheduler the
sweep's runs are cancelled) and raises :class:`SweepInterrupted` with the counts. The pool's
workers ignore SIGINT (the parent decides) and exit by themselves when the parent dies, however
it dies (a watchdog thread polling the parent's pid), so no worker outlives its sweep.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import sweeplog
from .arms import get_arm
from .config import GridConfig, RunSpec, expand
from .failures import FAILURES_FILE, Attempt, BatchAttempt, append_failure, failure_entry
from .provenance import commit_info, cpu_model, provenance, require_commit, utc_now
from .records import RUNS_FILE, append_record, is_dirty, load_records, prepare_results, results_lock
from .sweeplog import GpuSampler, append_sweep

__all__ = ["run_one", "run_batch_one", "seed_jobs", "run_grid", "load_records",
           "append_record", "provenance", "default_executor", "RUNS_FILE", "FAILURES_FILE",
           "RETRIES", "SweepInterrupted", "timed_grid"]

#: seconds between a worker's checks that its parent is alive
PARENT_POLL = 0.5
#: how many times a run that raised is submitted again before it is logged as failed
RETRIES = 1


class SweepInterrupted(KeyboardInterrupt):
    """``run_grid`` was interrupted; ``counts`` as it returns them (``stored``: the grid's runs
    now in ``results``, this session's included), ``results`` the folder."""

    def __init__(self, counts: dict[str, int], results: os.PathLike):
        super().__init__(f"interrupted: {counts['stored']} runs stored in {results}")
        self.counts, self.results = counts, results


def _record(spec: RunSpec, out: dict[str, Any], wall: float, seed_batch: int = 0
            ) -> dict[str, Any]:
    """The record of ``spec`` from its arm's output (data contract of DESIGN.md); a run of a
    seed-batched job also names the job's size in its provenance (``seed_batch``)."""
    record = dict(run_id=spec.run_id, key=spec.key, arm=spec.arm, variant=spec.variant,
                  attention=spec.attention, seed=spec.seed, lr=spec.lr, config=spec.config,
                  metrics=out["metrics"], curve=out.get("curve", []),
                  provenance=provenance(wall, out.get("device")))
    if seed_batch:
        record["provenance"]["seed_batch"] = seed_batch
    if spec.numerics:
        record["numerics"] = spec.numerics
    if spec.task:
        record["task"] = spec.task
    return record


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run one spec in this process and return its record (data contract of DESIGN.md)."""
    arm = get_arm(spec.arm)
    t0 = time.perf_counter()
    out = arm.run(spec)
    return _record(spec, out, time.perf_counter() - t0)


def run_batch_one(specs: Sequence[RunSpec]) -> list[dict[str, Any] | Exception]:
    """Run one seed-batched job (one cell's specs, :meth:`ablations.arms.Arm.run_batch`) in this
    process: per spec, in order, its record (``wall_seconds``: the job's wall clock divided by
    its runs) or the exception that ended that run."""
    specs = list(specs)
    arm = get_arm(specs[0].arm)
    t0 = time.perf_counter()
    outs = arm.run_batch(specs)
    share = (time.perf_counter() - t0) / len(specs)
    return [out if isinstance(out, BaseException) else _record(spec, out, share, len(specs))
            for spec, out in zip(specs, outs)]


def seed_jobs(specs: Sequence[RunSpec], per_job: int) -> list[tuple[RunSpec, ...]]:
    """``specs`` grouped by cell (every field but the seed), each cell's split into near-equal
    jobs of at most ``per_job`` seeds (in seed order); the jobs in the order of each cell's
    first spec."""
    cells: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        cells.setdefault((s.arm, s.variant, s.attention, s.lr, s.options, s.numerics, s.task),
                         []).append(s)
    jobs = []
    for runs in cells.values():
        runs.sort(key=lambda s: s.seed)
        k = -(-len(runs) // per_job)  # jobs for this cell
        size = -(-len(runs) // k)
        jobs += [tuple(runs[i:i + size]) for i in range(0, len(runs), size)]
    return jobs


def _import_all(modules: Sequence[str]) -> None:
    # an arm registered outside the built-ins (a user's module, a test) registers in the worker
    for name in modules:
        if name and name != "__main__":
            importlib.import_module(name)


def _watch_parent(parent: int | None) -> None:
    """In a pool worker: ignore SIGINT (Ctrl-C reaches the whole process group; the parent
    stops the workers) and exit as soon as the parent process ``parent`` is gone (its pid is
    no longer our parent's), so a killed sweep leaves no worker behind. A daemon thread polls
    ``os.getppid()`` every :data:`PARENT_POLL` s: portable, and unlike Linux's
    PR_SET_PDEATHSIG not tied to the thread that spawned the worker."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is None:
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)  # the parent died: nobody will read this worker's results

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="qsgd-parent-watch", daemon=True).start()


def _pool_init(modules: Sequence[str] = (), parent: int | None = None) -> None:
    _watch_parent(parent)
    _import_all(modules)


def _worker_init(modules: Sequence[str] = (), parent: int | None = None) -> None:
    # one thread per worker: runs are bit-reproducible and workers do not fight for cores
    _watch_parent(parent)
    import torch

    torch.set_num_threads(1)
    _import_all(modules)


def _gpu_worker_init(queue, modules: Sequence[str] = (), parent: int | None = None,
                     threads: int = 0) -> None:
    # pin this worker to one GPU before torch initialises CUDA; workers that share the host
    # split its cores (``threads``; 0: torch's default)
    _watch_parent(parent)
    os.environ["CUDA_VISIBLE_DEVICES"] = queue.get()
    if threads:
        import torch

        torch.set_num_threads(threads)
    _import_all(modules)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def device_ids(n_gpu: int) -> list[str]:
    """The ids a worker pinned to GPU ``i`` of ``n_gpu`` gets as its ``CUDA_VISIBLE_DEVICES``:
    the i-th entry of this process's own list where it has one (``2,3``: workers see 2 or 3),
    else ``i``."""
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
            if d.strip()]
    return [mine[i] if i < len(mine) else str(i) for i in range(n_gpu)]


def worker_layout(arm: str, max_workers: int | None = None, runs_per_gpu: int = 1,
                  resources: str | None = None) -> tuple[int, int, list[str]]:
    """(workers, torch threads per worker, GPU ids) for ``arm``'s resources, the one rule of
    every executor the runner builds: a CPU arm gets ``max_workers`` (default: the available
    cores) workers of one thread each; a GPU arm ``runs_per_gpu`` workers per visible GPU,
    worker ``i`` pinned to GPU id ``ids[i % len(ids)]``, packed workers splitting the cores
    (threads 0: torch's default), or one unpinned worker without a GPU. ``resources``: the
    grid's (:attr:`ablations.config.GridConfig.resources`, e.g. a classifier grid on CUDA);
    None: the arm's default."""
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be an integer >= 1, got {runs_per_gpu!r}")
    if (resources or get_arm(arm).resources) != "gpu":
        return max(1, max_workers or cpu_count()), 1, []
    n_gpu = _visible_gpus()
    if n_gpu == 0:
        return 1, 0, []
    n = n_gpu * runs_per_gpu
    return n, (max(1, cpu_count() // n) if runs_per_gpu > 1 else 0), device_ids(n_gpu)


def default_executor(max_workers: int | None = None, arm: str = "classifier",
                     runs_per_gpu: int = 1, resources: str | None = None) -> cf.Executor:
    """Processes (spawned: safe with torch) for the arm's resources: over the available cores
    for a CPU arm, one thread each; ``runs_per_gpu`` per visible GPU for a GPU arm, each
    pinned to its GPU and given an equal share of the cores (one process when there is no
    GPU). Each worker imports the arm's module first, so an arm registered outside the
    built-ins runs too, ignores SIGINT and exits when this process dies
    (:func:`_watch_parent`)."""
    n, threads, devices = worker_layout(arm, max_workers, runs_per_gpu, resources)
    pool = _pool(n, threads, devices, arm)
    pool.workers = n  # the sweep log reads this (Dask's executor has it too)
    return pool


def _pool(n: int, threads: int, devices: list[str], arm: str) -> cf.ProcessPoolExecutor:
    ctx = mp.get_context("spawn")
    modules, parent = (type(get_arm(arm)).__module__,), os.getpid()
    if devices:
        # a plain queue, handed over at spawn: a Manager would be one more process that
        # outlives a killed sweep. Device i appears runs_per_gpu times, so the pool's
        # workers pack that many on each GPU (round robin: 0, 1, …, 0, 1, …)
        queue = ctx.Queue()
        for i in range(n):
            queue.put(devices[i % len(devices)])
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx,
                                      initializer=_gpu_worker_init,
                                      initargs=(queue, modules, parent, threads))
    if threads == 0:  # a GPU arm on a machine without one: one process, torch's threads
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pool_init,
                                      initargs=(modules, parent))
    return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx,
                                  initializer=_worker_init, initargs=(modules, parent))


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
    executor: cf.Executor | str | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    run_fn: Callable[[RunSpec], dict[str, Any]] = run_one,
    retries: int = RETRIES,
    batch_fn: Callable[[Sequence[RunSpec]], list] = run_batch_one,
) -> dict[str, Any]:
    """Run every spec of ``config`` that has no clean record yet (a record from a tree with
    uncommitted changes, :func:`ablations.records.is_dirty`, is rerun); return counts
    (``total`` specs, ``done_before``, ``ran`` now, ``stored`` after, ``failed`` now) and
    ``failed_ids`` (the run ids that failed, in the order they did).

    executor: where the runs go: an Executor (left running), or one the runner builds for the
        arm's resources and shuts down at the end: ``"processes"`` (the default,
        :func:`default_executor` with ``workers`` processes), ``"dask"`` (a local Dask
        cluster of ``workers`` workers) or ``"dask://HOST:PORT"`` (a running Dask scheduler;
        :mod:`ablations.dask_executor`).
    limit: caps how many runs start (for smoke tests and partial sweeps).
    on_record: called with each record once it is stored.
    run_fn: what runs one spec (default :func:`run_one`).
    batch_fn: what runs one job of a seed-batched grid (default :func:`run_batch_one`): the
        specs of one cell in, per spec a record or the exception of that run out.
    retries: how many times a run that raised is submitted again; a run that still raises is
        appended to ``failures.jsonl`` (:mod:`ablations.failures`) and the others go on. An
        executor that breaks (a process pool whose worker died) stops the grid with a
        RuntimeError; Dask replaces a dead worker and reruns its run by itself.

    The results folder (``config.results``, ``~`` expanded) is checked and locked before
    anything runs (:class:`ablations.records.ResultsError` if it cannot take runs or another
    sweep holds it). A KeyboardInterrupt stops the pool's workers (the default pool's) and
    raises :class:`SweepInterrupted`; the records stored until then stay.
    """
    kind = _executor_kind(executor, workers)
    require_commit()  # no record of code that cannot be named (a git hash, or $QSGD_COMMIT)
    folder = prepare_results(config.results)
    runs_path = folder / RUNS_FILE
    with results_lock(folder):
        # a record from a dirty tree is not done: its clean rerun supersedes it
        done = {r["key"] for r in load_records(runs_path) if not is_dirty(r)}
        todo = [s for s in expand(config.specs) if s.key not in done]
        if limit is not None:
            todo = todo[:limit]
        done_before = sum(s.key in done for s in config.specs)
        counts = {"total": len(config.specs), "done_before": done_before, "ran": 0,
                  "stored": done_before, "failed": 0, "failed_ids": []}
        if not todo:
            return counts
        own = kind is not None
        ex = None if own else executor
        bar = None
        sampler = GpuSampler().start() if config.resources == "gpu" else None
        started, t0, interrupted = utc_now(), time.perf_counter(), False
        checkpoints = _Checkpoints(lambda now: _log_sweep(
            folder, config, counts, started, now - t0, ex, sampler, False, partial=True), t0)
        batched = config.seed_batched
        attempt = BatchAttempt(batch_fn) if batched else Attempt(run_fn)
        try:
            ex = ex or _build_executor(kind, config, workers)
            bar = _progress(len(todo), config.name, progress)
            jobs = seed_jobs(todo, config.seeds_per_job) if batched else todo
            futures = {ex.submit(attempt, job): (job, 0) for job in jobs}
            while futures:
                finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    job, tries = futures.pop(fut)
                    specs = job if batched else (job,)
                    try:
                        results = fut.result()
                    except cf.BrokenExecutor as err:
                        raise RuntimeError(f"run {specs[0].run_id} failed: {err}") from err
                    except Exception as err:  # the whole job: each of its runs failed
                        results = [err] * len(specs)
                    else:
                        results = results if batched else [results]
                    again = []
                    for spec, result in zip(specs, results):
                        if isinstance(result, BaseException):
                            if tries < retries:
                                again.append(spec)
                                continue
                            append_failure(folder, failure_entry(spec, result, tries + 1))
                            counts["failed"] += 1
                            counts["failed_ids"].append(spec.run_id)
                            bar.set_postfix(failed=counts["failed"])
                            bar.update(1)
                            continue
                        if config.protocol:
                            result["protocol"] = config.protocol
                        append_record(runs_path, result)
                        counts["ran"] += 1
                        counts["stored"] += 1
                        checkpoints.stored()  # a killed session keeps its figures
                        if on_record is not None:
                            on_record(result)
                        bar.update(1)
                    if again:  # a failed run is tried again (a batch: with its job's others)
                        retry = tuple(again) if batched else again[0]
                        futures[ex.submit(attempt, retry)] = (retry, tries + 1)
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
                bar = None
            if own and ex is not None:
                _stop_workers(ex)
                own = False
            with warnings.catch_warnings():  # the file's problems were reported on entry
                warnings.simplefilter("ignore")
                stored = {r["key"] for r in load_records(runs_path) if not is_dirty(r)}
            counts["stored"] = sum(s.key in stored for s in config.specs)
            counts["ran"] = counts["stored"] - done_before
            interrupted = True
            raise SweepInterrupted(counts, folder) from None
        finally:
            checkpoints.close()
            if bar is not None:
                bar.close()
            if own and ex is not None:
                ex.shutdown(cancel_futures=True)
            _log_sweep(folder, config, counts, started, time.perf_counter() - t0, ex,
                       sampler, interrupted)
    return counts


class _Checkpoints:
    """The checkpoint lines of a session's sweep log (:mod:`ablations.sweeplog`): one is
    written as soon as :data:`~ablations.sweeplog.CHECKPOINT_S` seconds have passed since the
    previous line (or the session's start) and a run has been stored since; checked after each
    stored run and by a timer thread, so that runs stored shortly after a checkpoint are not
    left out of the log when the session is then killed while its next runs train (a GPU
    machine given back mid-wave)."""

    def __init__(self, write: Callable[[float], None], start: float):
        self._write, self._last, self._pending = write, start, False
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweep-checkpoints",
                                        daemon=True)
        self._thread.start()

    def stored(self) -> None:
        with self._lock:
            self._pending = True
            self._due()

    def _due(self) -> None:
        now = time.perf_counter()
        if self._pending and now - self._last >= sweeplog.CHECKPOINT_S:
            self._last, self._pending = now, False
            self._write(now)

    def _loop(self) -> None:
        while not self._stop.wait(max(sweeplog.CHECKPOINT_S / 4, 0.05)):
            with self._lock:
                self._due()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _executor_kind(executor: cf.Executor | str | None, workers: int | None) -> str | None:
    """None for a given Executor; else the normalised name of the one to build, checked
    before anything runs (:class:`ablations.dask_executor.ExecutorError` naming the value)."""
    if executor is None or isinstance(executor, str):
        from .dask_executor import parse_executor

        return parse_executor(executor or "processes", workers)
    return None


def _build_executor(kind: str, config: GridConfig, workers: int | None) -> cf.Executor:
    if kind == "processes":
        return default_executor(workers, arm=config.arm, runs_per_gpu=config.runs_per_gpu,
                                resources=config.resources)
    from .dask_executor import dask_executor

    return dask_executor(kind, arm=config.arm, workers=workers,
                         runs_per_gpu=config.runs_per_gpu, resources=config.resources)


def _log_sweep(folder, config: GridConfig, counts: dict[str, int], started: str,
               wall: float, ex: cf.Executor | None, sampler: GpuSampler | None,
               interrupted: bool, partial: bool = False) -> None:
    """One line of ``sweeps.jsonl`` (:mod:`ablations.sweeplog`) for a session that ran
    something: its wall clock, executor, workers, packing and GPU utilisation; ``partial``:
    a checkpoint of the session so far (the sampler keeps sampling)."""
    if sampler is None:
        gpu = None
    else:
        gpu = sampler.summary() if partial else sampler.stop()
    if counts["ran"] == 0 and counts["failed"] == 0:
        return
    sha, dirty = commit_info()
    append_sweep(folder, dict(
        grid=config.name, started=started, wall_s=round(wall, 1), ran=counts["ran"],
        stored=counts["stored"], total=counts["total"], failed=counts["failed"],
        interrupted=interrupted, executor=getattr(ex, "kind", "processes"),
        workers=getattr(ex, "workers", None), runs_per_gpu=config.runs_per_gpu,
        commit=sha, dirty=dirty, cpu=cpu_model(), gpu=gpu, **({"partial": True} if partial
                                                               else {})))


def _stop_workers(ex: cf.Executor) -> None:
    """Shut ``ex`` down without waiting for its runs: cancel what has not started and
    terminate a process pool's workers (SIGTERM, then SIGKILL after 5 s)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
            p.kill()
            p.join(timeout=5)


def _progress(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="run", disable=not enabled, smoothing=0.1,
                file=sys.stderr, dynamic_ncols=True)


def timed_grid(cfg: GridConfig, executor: cf.Executor) -> tuple[float, list[dict]]:
    """Every run of ``cfg`` on ``executor``, into a temporary results folder (the benchmarks'
    way to time a grid): (wall seconds of :func:`run_grid` alone, the stored records). Raises
    ``RuntimeError`` when a run failed or did not run."""
    import dataclasses
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="qsgd-timed-grid-") as tmp:
        cfg = dataclasses.replace(cfg, results=Path(tmp) / "g")
        t0 = time.perf_counter()
        counts = run_grid(cfg, executor, progress=False)
        wall = time.perf_counter() - t0
        records = load_records(cfg.results / RUNS_FILE)
    if counts["ran"] != len(cfg.specs) or counts["failed"]:
        raise RuntimeError(f"the {cfg.name} grid did not complete: {counts}")
    return wall, records
