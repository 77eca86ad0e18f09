"""Provenance of generated results: the commit of the code, and where and when it ran.

Every record of ``runs.jsonl`` and every theory report carries it. No path of the machine
appears in it (DESIGN.md: generated files are free of machine paths).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["commit", "provenance", "utc_now"]

COMMIT_ENV = "QSGD_COMMIT"


@functools.lru_cache(maxsize=1)
def commit() -> str:
    """The code's commit (with ``-dirty`` for uncommitted tracked changes). Where the tree has
    no git history (a copy on another machine), ``$QSGD_COMMIT`` names it, else "unknown"."""
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
        return os.environ.get(COMMIT_ENV, "unknown")
    return sha + ("-dirty" if dirty is not None and dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name and the instruction set torch's CPU kernels use (e.g. ``AMD EPYC,
    AVX2``): CPU results are bit-reproducible only on the same kernels, so records name them."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        cap = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):  # pragma: no cover - old torch
        cap = "unknown"
    return f"{name}, {cap}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(wall_seconds: float | None = None, device: str | None = None) -> dict[str, Any]:
    """Where and how a result was made: commit, UTC time, Python and torch versions, device,
    CPU model and kernel instruction set, host name, wall seconds and the 1-minute load
    average (timings from a loaded machine are visible as such)."""
    import torch

    if device is None:
        device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                  else f"cpu ({platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads)")
    out = dict(commit=commit(), utc=utc_now(), python=platform.python_version(),
               torch=torch.__version__, device=device, cpu=cpu_model(), host=platform.node(),
               load_avg_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
               else None)
    if wall_seconds is not None:
        out["wall_seconds"] = round(wall_seconds, 3)
    return out
