"""Provenance of generated results: the commit of the code, and where and when it ran.

Every record of ``runs.jsonl`` and every theory report carries it. No path of the machine
appears in it (DESIGN.md: generated files are free of machine paths).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["commit", "commit_info", "require_commit", "known_commit", "provenance", "utc_now",
           "machine_info", "ProvenanceError"]

COMMIT_ENV = "QSGD_COMMIT"
_ROOT = Path(__file__).resolve().parent.parent
_HASH = re.compile(r"^[0-9a-f]{40}$")


class ProvenanceError(RuntimeError):
    """The code's commit cannot be named, so its results could not be traced to code."""


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def commit_info() -> tuple[str, bool]:
    """(commit hash, dirty) of the code.

    ``$QSGD_COMMIT`` first, when set: whoever copies the tree to another machine names the
    commit it copied (``<40 hex digits>``, with ``-dirty`` appended when the copy had
    uncommitted changes); a git history that travels with such a copy may be stale (seen on
    the GPU machines: a copy of the session's first commit), so the declaration wins. Else
    git, where the tree has its history (dirty: a tracked file outside ``results/`` differs
    from the commit: the runs a grid appends to its tracked ``runs.jsonl`` are data, not code,
    and must not mark the records after the first as made by changed code).
    Else ("unknown", False); a ``$QSGD_COMMIT`` that is not a hash also gives "unknown".
    """
    env = os.environ.get(COMMIT_ENV, "").strip()
    if env:
        dirty = env.endswith("-dirty")
        env = env.removesuffix("-dirty")
        return (env, dirty) if _HASH.match(env) else ("unknown", False)
    head = _git("rev-parse", "--verify", "HEAD")
    sha = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    if _HASH.match(sha):
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)results")
        return sha, bool(status is not None and status.stdout.strip())
    return "unknown", False


def commit() -> str:
    """The code's commit, with ``-dirty`` appended for uncommitted tracked changes
    (:func:`commit_info`), or "unknown"."""
    sha, dirty = commit_info()
    return sha + ("-dirty" if dirty else "")


def require_commit() -> str:
    """:func:`commit`, or ProvenanceError when it cannot be named: the runner records no run
    of code it cannot trace."""
    sha, _ = commit_info()
    if sha == "unknown":
        raise ProvenanceError(
            "cannot name the code's commit: "
            + (f"${COMMIT_ENV} is not a 40-digit commit hash"
               if os.environ.get(COMMIT_ENV, "").strip()
               else f"this tree has no git history and ${COMMIT_ENV} is not set")
            + f"; set {COMMIT_ENV}=<hash> (with -dirty appended if the copy has uncommitted "
            "changes) to the commit it was copied from")
    return commit()


def known_commit(sha: str) -> bool:
    """Whether ``sha`` (``-dirty`` allowed) names a commit of this repository (True where
    there is no repository to ask: a copy of the tree)."""
    sha = sha.removesuffix("-dirty")
    if not _HASH.match(sha):
        return False
    here = _git("rev-parse", "--verify", "HEAD")
    if here is None or here.returncode != 0:
        return True
    found = _git("cat-file", "-e", f"{sha}^{{commit}}")
    return found is not None and found.returncode == 0


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


def cpu_device() -> str:
    """The device name of a run on the CPU: architecture and torch's thread count (what an arm
    that trains on the CPU reports, also on a host that has a GPU)."""
    import torch

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine_info(versions: tuple[str, ...] = (), **extra: str | None) -> dict[str, str]:
    """The machine a bench ran on, as its report states it (one helper for every bench):
    the code's commit (``-dirty`` for uncommitted changes), the UTC time, the CPU with torch's
    instruction set, logical cores, the 1-minute load average at the call, Python, torch and
    the platform; then the installed version of each distribution in ``versions`` ("not
    installed" where absent); then ``extra``'s keys in their order (a value of None leaves
    its key out; a key also above replaces that value in place)."""
    import importlib.metadata as md

    import torch

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    info = {"commit": commit(), "utc": utc_now(), "cpu": cpu_model(),
            "logical cores": str(os.cpu_count()),
            "load average (1 min) at start": (f"{os.getloadavg()[0]:.2f}"
                                              if hasattr(os, "getloadavg") else "n/a"),
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}
    info |= {dist: version(dist) for dist in versions}
    for key, value in extra.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = str(value)
    return info


def provenance(wall_seconds: float | None = None, device: str | None = None) -> dict[str, Any]:
    """Where and how a result was made: commit, UTC time, Python and torch versions, device,
    CPU model and kernel instruction set, host name, wall seconds and the 1-minute load
    average (timings from a loaded machine are visible as such)."""
    import torch

    if device is None:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_device()
    sha, dirty = commit_info()
    out = dict(commit=commit(), dirty=dirty, utc=utc_now(), python=platform.python_version(),
               torch=torch.__version__, device=device, cpu=cpu_model(), host=platform.node(),
               load_avg_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
               else None)
    if wall_seconds is not None:
        out["wall_seconds"] = round(wall_seconds, 3)
    return out
