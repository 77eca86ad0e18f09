"""Run records on disk: one strict-JSON object per line of ``runs.jsonl``.

The one reader and the one writer of that file (the runner appends, the report, the theory
suite and the LLM throughput summary read). A line is written whole (one write, flush, fsync);
a torn last line, left by a writer killed mid-write, is skipped with a warning when read, so a
sweep killed at any moment loses at most the runs in flight.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["RUNS_FILE", "append_record", "load_records", "json_default", "strict"]

RUNS_FILE = "runs.jsonl"


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


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line whole: one write, flush, fsync. A torn last line (a writer killed
    mid-write) is closed first, so the new record never merges into it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=True, default=json_default) + "\n"
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def load_records(path: Path | str) -> list[dict[str, Any]]:
    """All complete records of a runs.jsonl (none when the file is absent); a torn line
    (a writer killed mid-write) is skipped with a RuntimeWarning naming file and line."""
    path = Path(path)
    if not path.is_file():
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
