"""Tidy tables of stored runs: one row a run (``runs.csv``), and the long table of learning
curves. The one flattening of records, used by reports, configs that select from another
grid's runs, and the theory suite.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["IDENTITY", "EARLIER", "current_records", "runs_table", "own_task", "curves_table"]

IDENTITY = ["run_id", "arm", "task", "protocol", "variant", "attention", "seed", "lr"]
#: how the ledger and reports name a grid without ``[grid].protocol`` (the grids of earlier
#: sessions, whose batch size and learning rate were chosen on test accuracy)
EARLIER = "earlier"


def current_records(records: list[dict], keys: set[str]) -> tuple[list[dict], int]:
    """The records whose key is a spec of the current config (the newest of a key wins;
    there is normally one), and how many stored records belong to older configs."""
    cur = [r for r in records if r.get("key") in keys]
    by_key = {r["key"]: r for r in cur}
    return list(by_key.values()), len(records) - len(cur)


def runs_table(records: list[dict], protocol: str = "") -> pd.DataFrame:
    """One row per run: identity columns, then the metrics, then provenance columns.

    ``task`` is "" for the grid's own task; ``protocol`` is the record's, else the given one
    (the grid's: records written before protocols existed carry none).
    """
    rows = []
    for r in records:
        row = {k: r.get(k) for k in IDENTITY}
        row["task"] = r.get("task") or ""
        row["protocol"] = r.get("protocol") or protocol
        row.update(r.get("metrics", {}))
        prov = r.get("provenance", {})
        row.update({"commit": prov.get("commit"), "device": prov.get("device"),
                    "cpu": prov.get("cpu"), "wall_seconds": prov.get("wall_seconds")})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=IDENTITY)
    return df.sort_values(["attention", "variant", "lr", "seed"]).reset_index(drop=True)


def own_task(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the grid's own task (``task`` "", as :func:`runs_table` writes it); all of
    them for a table without a ``task`` column."""
    return runs[runs["task"] == ""] if "task" in runs.columns else runs


def curves_table(records: list[dict]) -> pd.DataFrame:
    """Long table of the learning curves: one row per (run, point)."""
    rows = []
    for r in records:
        for point in r.get("curve", []):
            rows.append({"run_id": r["run_id"], "variant": r["variant"],
                         "attention": r["attention"], "seed": r["seed"], "lr": r["lr"], **point})
    return pd.DataFrame(rows)
