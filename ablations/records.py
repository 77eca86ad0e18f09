"""Run records on disk: one strict-JSON object per line of ``runs.jsonl``, in a results folder
that one sweep at a time writes.

The one reader and the one writer of that file (the runner appends, the report, the theory
suite and the LLM throughput summary read). A line is written whole (one write, flush, fsync),
so a sweep killed at any moment loses at most the runs in flight.

Strict JSON: a non-finite number is written as the string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` (the tokens Python's and JavaScript's JSON use), so any JSON parser reads the
file; :func:`load_records` turns those strings back into floats, and still reads the bare
``NaN`` of files written before (RFC 8259 has no NaN; ECMA-404 neither). Those three strings
are therefore reserved: a text value equal to one of them reads back as a float.

What :func:`load_records` skips, each with a RuntimeWarning naming file and line:

* a *torn* line: the last line, without its newline, that is not JSON (a writer killed
  mid-write; :func:`append_record` starts the next record on a new line);
* a *malformed* line: any other line that is not a JSON object, or an object without a string
  ``key``, a ``run_id`` and a ``metrics`` object (such a record cannot count as done).

A key stored twice is warned about with both line numbers; the newer record wins (at the place
of the first, so the order of the records stays the order their keys were first stored). The
one repeat that is not warned about is the expected one: a record from a tree with uncommitted
changes (:func:`is_dirty`) followed by its clean rerun (the runner reruns dirty records).

:func:`prepare_results` checks a results folder before any run starts (``~`` expanded,
created, writable), and :func:`results_lock` keeps a second sweep out of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RUNS_FILE", "LOCK_FILE", "ResultsError", "append_record", "load_records", "is_dirty",
           "load_log", "encode_record", "json_default", "strict", "prepare_results", "results_lock"]

RUNS_FILE = "runs.jsonl"
LOCK_FILE = ".lock"

#: how a non-finite float is written (and read back): the strings of Python's and JS's JSON
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ResultsError(ValueError):
    """A results folder cannot take runs (a file, not writable, or in use by another sweep);
    the message names the folder."""


def json_default(x: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and paths (non-finite floats → None)."""
    import numpy as np

    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return strict(x.tolist())
    return str(x)


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def _nonfinite_name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def encode_record(value: Any) -> Any:
    """``value`` as plain JSON types, every non-finite float (numpy's too) as its string
    ``"NaN"``/``"Infinity"``/``"-Infinity"``; numpy arrays as lists, other objects as ``str``."""
    if isinstance(value, dict):
        return {k: encode_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_record(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):  # numpy.float64 too
        return float(value) if math.isfinite(value) else _nonfinite_name(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return encode_record(value.tolist())  # numpy scalars and arrays → Python values
    return str(value)


def _decode(value: Any) -> Any:
    # the inverse of encode_record's non-finite strings
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one strict-JSON line whole: one write, flush, fsync. A torn last line (a writer
    killed mid-write) is closed first, so the new record never merges into it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(encode_record(record), sort_keys=True, allow_nan=False) + "\n"
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _problem(rec: Any) -> str | None:
    # why a parsed line cannot count as a finished run (None: it can)
    if not isinstance(rec, dict):
        return f"not a JSON object but {json.dumps(rec)[:40]}"
    missing = [k for k in ("key", "run_id", "metrics") if k not in rec]
    if missing:
        return f"no {', '.join(missing)}"
    if not isinstance(rec["key"], str) or not rec["key"]:
        return f"key is not a string: {json.dumps(rec['key'])[:40]}"
    if not isinstance(rec["metrics"], dict):
        return f"metrics is not an object: {json.dumps(rec['metrics'])[:40]}"
    return None


def is_dirty(rec: dict[str, Any]) -> bool:
    """Whether a record was made by a tree with uncommitted changes (its provenance's
    ``dirty`` flag, or a commit ending in ``-dirty``): its code cannot be named exactly, so
    the runner counts it as not done and reruns it."""
    prov = rec.get("provenance") or {}
    return bool(prov.get("dirty")) or str(prov.get("commit", "")).endswith("-dirty")


def load_records(path: Path | str) -> list[dict[str, Any]]:
    """Every finished run of a runs.jsonl, one per key (none when the file is absent).

    A torn last line, a malformed line and a repeated key are reported with a RuntimeWarning
    naming file and line (module docstring); a repeated key keeps the newer record.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")  # the last item is b"" after a final newline
    by_key: dict[str, dict[str, Any]] = {}
    line_of: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if lineno == len(lines):  # the last line, and it has no newline: torn
                warnings.warn(f"{path}:{lineno}: skipping a torn record (a run killed "
                              "mid-write)", RuntimeWarning, stacklevel=2)
            else:
                reason = err.reason if isinstance(err, UnicodeDecodeError) else err.msg
                warnings.warn(f"{path}:{lineno}: skipping a malformed record (not JSON: "
                              f"{reason})", RuntimeWarning, stacklevel=2)
            continue
        problem = _problem(rec)
        if problem is not None:
            warnings.warn(f"{path}:{lineno}: skipping a malformed record ({problem})",
                          RuntimeWarning, stacklevel=2)
            continue
        key = rec["key"]
        if key in line_of and not (is_dirty(by_key[key]) and not is_dirty(rec)):
            warnings.warn(f"{path}:{lineno}: key {key} is stored on line {line_of[key]} too; "
                          f"keeping line {lineno} (the newer)", RuntimeWarning, stacklevel=2)
        line_of[key] = lineno
        by_key[key] = _decode(rec)
    return list(by_key.values())


def prune_dirty(path: Path | str, keys: set[str]) -> tuple[int, int]:
    """Drop from a runs.jsonl the records whose code cannot be named (:func:`is_dirty`) and
    that no report reads: those a clean record of the same key supersedes, and those whose
    key is not in ``keys`` (the grid's current specs: an older config or numerics version).
    Every other line stays as it is, in its order. The file is rewritten whole (a temporary
    file beside it, then one rename), under the folder's lock. Returns (superseded, stale)."""
    path = Path(path)
    if not path.is_file():
        return 0, 0
    with results_lock(path.parent):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        parsed = []
        for raw in lines:
            try:
                rec = json.loads(raw) if raw.strip() else None
            except json.JSONDecodeError:
                rec = None  # a line this function does not understand is kept as it is
            parsed.append(rec if isinstance(rec, dict) and _problem(rec) is None else None)
        clean = {r["key"] for r in parsed if r is not None and not is_dirty(r)}
        keep, superseded, stale = [], 0, 0
        for raw, rec in zip(lines, parsed):
            if rec is not None and is_dirty(rec) and rec["key"] in clean:
                superseded += 1
            elif rec is not None and is_dirty(rec) and rec["key"] not in keys:
                stale += 1
            else:
                keep.append(raw)
        if superseded or stale:
            fd, tmp = tempfile.mkstemp(prefix=".runs-", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(keep)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        return superseded, stale


def load_log(path: Path | str) -> list[dict[str, Any]]:
    """The entries of a log written line by line with :func:`append_record` (the sweep and
    failure logs), oldest first; none when the file is absent. A torn or unreadable line is
    skipped: a log's reader wants what it can read, not a warning per line."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(_decode(json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out


def prepare_results(folder: Path | str) -> Path:
    """The results folder ``folder`` with ``~`` expanded, created if absent and checked
    writable (a file written and removed: permission bits alone do not tell, e.g. for root or
    a read-only mount). Raises :class:`ResultsError` naming the folder otherwise, so that a
    sweep fails before its first run, not after it."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ResultsError(f"results folder {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResultsError(f"results folder {folder} cannot be created: "
                           f"{err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        runs = folder / RUNS_FILE
        if runs.exists() or runs.is_symlink():
            with open(runs, "ab"):  # appends nothing: only asks whether it could
                pass
    except OSError as err:
        raise ResultsError(f"results folder {folder} is not writable: "
                           f"{err.strerror or err}") from None
    return folder


@contextlib.contextmanager
def results_lock(folder: Path | str) -> Iterator[Path]:
    """Hold ``<folder>/.lock`` (an exclusive ``flock``) for the duration: one sweep at a time
    writes a results folder. The file names the holder (pid, host, start time); a second
    sweep raises :class:`ResultsError` quoting it. The kernel releases the lock when the
    holder dies, however it dies, so a stale file never blocks; the holder removes the file
    on exit. Where ``fcntl`` is missing (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Path(folder) / LOCK_FILE
        return
    path = Path(folder) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 400).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise ResultsError(f"results folder {folder} is in use by another sweep ("
                               f"{holder or 'starting up'}); wait for it to finish, or stop "
                               "it and rerun") from None
        # a holder that just left removed the file we opened: lock the one now at the path
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before unlocking: a waiter then re-checks the path (above)
        os.close(fd)
