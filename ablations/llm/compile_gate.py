"""One process of a host compiles a graph first; the others then load it from the cache.

Workers packed on one host (``runs_per_gpu``) that start together all compile the same
per-bucket graphs at once, each missing the on-disk Inductor cache the others are about to
fill, and on a shared CPU every one of them takes as long as all of them together (measured on
one H200 host, 16 cores: about 6 minutes of loading and compiling a process with 12 starting
together, about 1.6 with 3). :func:`first_compile` lets the first process through alone and
holds the others until it has filled the cache; they then compile (now loading from the
cache) side by side. It changes no number: who compiles first, not what is compiled.

The gate is a lock file and a marker in the Inductor cache directory, named by a tag of
what is compiled (the caller's: model, shapes, precision, mode, torch version), so a wiped
cache wipes its markers with it. A process that fails while compiling leaves no marker: the
next one through compiles. A process held at the gate says so once, naming the lock file, and
after ``wait_s`` seconds (default 30 minutes: a stuck first compiler) compiles without it.
Off (the function is simply called) where ``fcntl`` is missing.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

try:
    import fcntl
except ImportError:  # not on POSIX: no gate
    fcntl = None

__all__ = ["first_compile", "gate_paths", "cache_root"]

T = TypeVar("T")

#: how long a process waits at the gate before it compiles without it (seconds)
WAIT_S = 1800.0


def cache_root() -> Path:
    """Inductor's cache directory (its markers live and die with it), else the temp folder."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return Path(cache_dir())
    except Exception:  # an older or newer torch without the helper
        return Path(tempfile.gettempdir())


def gate_paths(tag: object, root: Path | None = None) -> tuple[Path, Path]:
    """The lock file and the done marker of ``tag`` (any repr-able value) under ``root``
    (default :func:`cache_root`)."""
    root = Path(root) if root is not None else cache_root()
    name = hashlib.sha256(repr(tag).encode()).hexdigest()[:16]
    return root / f"qsgd-first-compile-{name}.lock", root / f"qsgd-first-compile-{name}.done"


def first_compile(tag: object, compile_fn: Callable[[], T], root: Path | None = None,
                  wait_s: float = WAIT_S) -> T:
    """Call ``compile_fn`` (the first compilation of what ``tag`` names): alone if no process
    of this host has finished it yet (the others wait for the lock), else at once (after any
    process still compiling it alone); after ``wait_s`` seconds at the gate, without it.
    Returns its result."""
    if fcntl is None:
        return compile_fn()
    lock, done = gate_paths(tag, root)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        if not _acquire(fh, lock, wait_s):
            return compile_fn()
        try:
            if done.exists():
                fcntl.flock(fh, fcntl.LOCK_UN)  # compiled before: side by side from here
                return compile_fn()
            out = compile_fn()
            done.touch()
            return out
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _acquire(fh, lock: Path, wait_s: float) -> bool:
    # the lock, at once or after waiting (said once); False after wait_s seconds
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    print(f"[compile] another process compiles these graphs first ({lock}): waiting, at most "
          f"{wait_s:g} s", flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    print(f"[compile] still held after {wait_s:g} s: compiling side by side", flush=True)
    return False
