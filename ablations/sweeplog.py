"""The sweep log: one line per ``run_grid`` session in ``results/<grid>/sweeps.jsonl``.

A run's record says how long *it* took; what a reader of a grid also wants is how long the
grid took on the machine it ran on, with how many workers, and (for a GPU arm) how busy the
GPUs were meanwhile: the figure that says whether packing several runs per GPU
(``[grid].runs_per_gpu``) paid. Each session of :func:`ablations.runner.run_grid` that started
at least one run appends one strict-JSON line (NaN/Infinity as strings, as records are)::

    {"started": UTC, "wall_s": s, "ran": n, "stored": n, "total": n, "failed": n,
     "interrupted": bool, "executor": "processes" | "dask" | "dask-scheduler", "workers": n,
     "runs_per_gpu": n, "commit": sha, "dirty": bool, "cpu": model,
     "gpu": {"samples": n, "interval_s": s, "util_mean": %, "util_median": %,
             "mem_max_mib": MiB, "devices": n} | null}

A session also appends a *checkpoint* of that line (``"partial": true``, the figures so far)
as soon as :data:`CHECKPOINT_S` seconds have passed since its previous line and a run has been
stored since (checked after each stored run and by a timer), so a session killed outright (a
GPU machine taken back, SIGKILL) still leaves its wall clock and GPU utilisation up to its last
checkpoint. Lines share ``started``; :func:`load_sweeps` keeps the last line of each session
(its final line, or its last checkpoint when it was killed).

(``failed``: runs logged in ``failures.jsonl`` this session; ``executor``: the runner's process
pool, a local Dask cluster, or a running Dask scheduler, whose ``workers`` are those connected
when the session started; lines written before these fields existed have neither, and were all
written by the process pool.)

GPU utilisation is sampled by ``nvidia-smi`` in a background thread of the parent (the parent
never initialises CUDA: its workers are spawned onto the GPUs), every ``interval`` seconds,
averaged over devices; it is the fraction of time a kernel was running, as NVML defines it,
not a FLOP utilisation. Where there is no ``nvidia-smi`` the ``gpu`` field is null.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
from pathlib import Path
from typing import Any

from .records import append_record, load_log

__all__ = ["SWEEPS_FILE", "CHECKPOINT_S", "GpuSampler", "append_sweep", "load_sweeps"]

SWEEPS_FILE = "sweeps.jsonl"
#: the least seconds between a session's checkpoint lines (each follows a stored run)
CHECKPOINT_S = 300.0

_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
          "--format=csv,noheader,nounits"]


def _parse(text: str) -> list[tuple[float, float]]:
    """``nvidia-smi`` CSV lines "util, mem" → [(util %, MiB)]; lines it cannot read (e.g.
    "[N/A]") are dropped."""
    out = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            out.append((float(parts[0]), float(parts[1])))
        except (ValueError, IndexError):
            continue
    return out


class GpuSampler:
    """Samples GPU utilisation and memory every ``interval`` s until :meth:`stop`.

    ``query`` is the command run each time (default: ``nvidia-smi``'s CSV query); a sampler
    whose command is missing records nothing and :meth:`summary` returns None.
    """

    def __init__(self, interval: float = 2.0, query: list[str] | None = None):
        self.interval = float(interval)
        self.query = list(query or _QUERY)
        self.samples: list[list[tuple[float, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        if shutil.which(self.query[0]) is None:
            return self
        self._thread = threading.Thread(target=self._loop, name="qsgd-gpu-sampler",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(self.query, capture_output=True, text=True, timeout=10)
                rows = _parse(out.stdout) if out.returncode == 0 else []
            except (OSError, subprocess.SubprocessError):
                rows = []
            if rows:
                self.samples.append(rows)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any] | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        return self.summary()

    def summary(self) -> dict[str, Any] | None:  # also while sampling: a checkpoint's figures
        """Utilisation mean and median (% over samples, each the mean over devices), the
        largest memory used on one device (MiB), the sample count; None without samples."""
        if not self.samples:
            return None
        utils = [statistics.fmean(u for u, _ in rows) for rows in self.samples]
        return dict(samples=len(self.samples), interval_s=self.interval,
                    util_mean=round(statistics.fmean(utils), 1),
                    util_median=round(statistics.median(utils), 1),
                    mem_max_mib=max(m for rows in self.samples for _, m in rows),
                    devices=max(len(rows) for rows in self.samples))


def append_sweep(folder: str | Path, entry: dict[str, Any]) -> Path:
    """Append ``entry`` as one strict-JSON line to ``folder/sweeps.jsonl``."""
    path = Path(folder) / SWEEPS_FILE
    append_record(path, entry)  # one whole line, flushed and fsynced, as a run's record
    return path


def load_sweeps(folder: str | Path) -> list[dict[str, Any]]:
    """The sweep log's sessions, one entry each in the order they started: the last line of
    each (grid, ``started``) (a session's checkpoints are superseded by its later lines; a torn or
    unreadable line is skipped)."""
    last: dict[Any, dict[str, Any]] = {}
    for i, entry in enumerate(load_log(Path(folder) / SWEEPS_FILE)):
        sid = (entry.get("grid"), entry.get("started")) if entry.get("started") else i
        last[sid] = entry  # at the place of the session's first line
    return list(last.values())
