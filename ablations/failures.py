"""Runs that raise: captured in the worker, retried by the runner, then logged in
``results/<grid>/failures.jsonl``.

Whatever executor runs a grid (the process pool, Dask, a test's serial one), a run goes
through :class:`Attempt`, which turns any exception of the run into a :class:`RunError`
carrying the error's line, its traceback as text and the worker that ran it: plain strings,
so the error pickles back from any worker, whatever the original exception held. The runner
(:func:`ablations.runner.run_grid`) retries a failed run once, then appends one strict-JSON line
here (one write, flushed and fsynced, as a run's record) and goes on with the other runs::

    {"run_id": ..., "key": ..., "spec": RunSpec.as_dict(), "error": "ValueError: ...",
     "traceback": "...", "worker": "...", "attempts": 2, "time": UTC, "commit": sha}

The file is a log: a failed run has no record in ``runs.jsonl``, so a rerun of the grid runs it
again, and a second failure appends a second line. File names in a traceback are given relative
to the import path entry their module was found on (``ablations/runner.py``,
``torch/nn/modules/module.py``), so no path of the machine that ran it is written.
"""

from __future__ import annotations

import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Any

from .cli_support import first_line
from .records import append_record, load_log

__all__ = ["FAILURES_FILE", "RunError", "Attempt", "BatchAttempt", "failure_entry",
           "append_failure", "load_failures"]

FAILURES_FILE = "failures.jsonl"


class RunError(Exception):
    """A run raised in its worker. ``error``: the exception's type and first line;
    ``traceback``: the whole traceback as text; ``worker``: who ran it (the Dask worker's
    address, or host and pid)."""

    def __init__(self, error: str, traceback: str, worker: str):
        super().__init__(error, traceback, worker)  # args: what pickling rebuilds it from

    error = property(lambda self: self.args[0])
    traceback = property(lambda self: self.args[1])
    worker = property(lambda self: self.args[2])

    def __str__(self) -> str:
        return self.error


def _import_roots() -> list[str]:
    # the import path, longest first: a frame's file is named after the entry it was found on
    roots = {os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str)}
    return sorted((r.rstrip(os.sep) + os.sep for r in roots), key=len, reverse=True)


def traceback_text(err: BaseException) -> str:
    """``err``'s traceback (its cause and context chain too) as text, each file named relative
    to the import path entry it lies under."""
    roots = _import_roots()
    home = os.path.expanduser("~")
    tb = traceback.TracebackException.from_exception(err)
    seen = tb
    while seen is not None:
        for frame in seen.stack:
            name = os.path.abspath(frame.filename)
            root = next((r for r in roots if name.startswith(r)), None)
            if root is not None:
                frame.filename = name[len(root):]
            elif home != "~" and name.startswith(home + os.sep):
                frame.filename = "~" + name[len(home):]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return "".join(tb.format())


def worker_name() -> str:
    """Who runs this code: the Dask worker's address and name when in one, and host and pid."""
    here = f"{platform.node()} pid {os.getpid()}"
    if "distributed" in sys.modules:  # only a Dask worker has it loaded
        from distributed import get_worker

        try:
            w = get_worker()
        except ValueError:  # not in a worker: the client itself
            return here
        return f"{w.address} (worker {w.name}, {here})"
    return here


class Attempt:
    """``Attempt(fn)(spec)`` is ``fn(spec)``, except that an exception of the run is raised as
    :class:`RunError` (picklable, with the traceback as text and the worker's name)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, spec):
        try:
            return self.fn(spec)
        except Exception as err:
            raise RunError(f"{type(err).__name__}: {first_line(err)}", traceback_text(err),
                           worker_name()) from None


class BatchAttempt:
    """``BatchAttempt(fn)(specs)`` is ``fn(specs)`` (a seed-batched job: per spec a record or
    the exception that ended that run), with every exception, of a run or of the whole job, as
    :class:`RunError`: per spec a record or a RunError, or the job's RunError raised."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, specs):
        try:
            results = self.fn(specs)
        except Exception as err:
            raise RunError(f"{type(err).__name__}: {first_line(err)}", traceback_text(err),
                           worker_name()) from None
        return [RunError(f"{type(r).__name__}: {first_line(r)}", traceback_text(r),
                         worker_name()) if isinstance(r, BaseException) else r
                for r in results]


def failure_entry(spec, err: BaseException, attempts: int) -> dict[str, Any]:
    """The log line of ``spec``, which failed ``attempts`` times, the last with ``err`` (a
    :class:`RunError`, or an error of the executor itself, e.g. Dask's KilledWorker)."""
    from .provenance import commit, utc_now

    if isinstance(err, RunError):
        error, text, worker = err.error, err.traceback, err.worker
    else:
        error, text, worker = (f"{type(err).__name__}: {first_line(err)}",
                               traceback_text(err), "")
    return dict(run_id=spec.run_id, key=spec.key, spec=spec.as_dict(), error=error,
                traceback=text, worker=worker, attempts=attempts, time=utc_now(),
                commit=commit())


def append_failure(folder: str | Path, entry: dict[str, Any]) -> Path:
    """Append ``entry`` as one strict-JSON line to ``folder/failures.jsonl``."""
    path = Path(folder) / FAILURES_FILE
    append_record(path, entry)
    return path


def load_failures(folder: str | Path) -> list[dict[str, Any]]:
    """The failure log's entries, oldest first (a torn or unreadable line is skipped)."""
    return load_log(Path(folder) / FAILURES_FILE)
