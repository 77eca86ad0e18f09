"""I/O of the theory suite: store finished checks, render checks.csv, report.md, claims.json
and the figures from the stored checks.

Layout of ``results/theory/`` (the data contract, DESIGN.md)::

    raw/<id>.json      every field of one check (re-rendering needs no re-run)
    checks.csv         id, claim, measured, expected, tolerance, passed, then extras (the last,
                       expected_outcome: "fail" for a check designed or, by its rule,
                       expected to fail)
    claims.json        {"C7": {"measured", "ci", "test", "verdict"}} for the claims ledger
    report.md          derivations, measurements, figures, verdicts
    figures/*.png
    tables/<id>_<name>.csv   tables too long to show in the report
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablations.records import json_default

from .base import DERIVED, EXPECTED_OUTCOMES, Check, check_ids

__all__ = ["CSV_COLUMNS", "save_check", "load_checks", "render", "write_csv"]

CSV_COLUMNS = ("id", "claim", "measured", "expected", "tolerance", "passed", "relation",
               "quantity", "status", "summary", "size", "seconds", "expected_outcome")
INLINE_ROWS = 40


def save_check(check: Check, out: Path) -> Path:
    """Write one check to ``out/raw/<id>.json``."""
    raw = Path(out) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    path = raw / f"{check.id}.json"
    path.write_text(json.dumps(asdict(check), indent=1, default=json_default,
                               ensure_ascii=False) + "\n")
    return path


def load_checks(out: Path) -> list[Check]:
    """All checks stored under ``out/raw``, in id order; one stored before checks carried
    their ``expected_outcome`` gets its check's registered one (a check that derives its
    expectation from its inputs has none to give: ValueError, re-run it)."""
    raw = Path(out) / "raw"
    names = {f.name for f in fields(Check)}
    check_ids()  # registers every check, and so its expected outcome
    checks = []
    for path in sorted(raw.glob("*.json")):
        d = json.loads(path.read_text())
        registered = EXPECTED_OUTCOMES.get(d.get("id"), "pass")
        if "expected_outcome" not in d and registered == DERIVED:
            raise ValueError(f"{path}: {d.get('id')} derives its expected outcome from its "
                             "inputs and this stored check has none; re-run it "
                             f"(`python -m theory run --only {d.get('id')}`)")
        d.setdefault("expected_outcome", registered)
        checks.append(Check(**{k: v for k, v in d.items() if k in names}))
    return sorted(checks, key=lambda c: c.id)


def write_csv(checks: list[Check], path: Path) -> Path:
    import pandas as pd

    df = pd.DataFrame([c.row() for c in checks], columns=list(CSV_COLUMNS))
    df.to_csv(path, index=False)
    return path


def _fmt(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if 0.999 < x < 1.001 and x != 1.0:
            return f"{x:.15g}"
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x == 0:
            return "0"
        if abs(x) >= 1e4 or abs(x) < 1e-3:
            return f"{x:.3g}"
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_fmt(v) for v in x)
    if x is None:
        return "–"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(_fmt(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _passed(c: Check) -> str:
    if c.passed is None:
        return "not run"
    shown = "**pass**" if c.passed else "**fail**"
    if c.expected_outcome == "fail":  # a check designed to fail
        return shown + (" (expected)" if not c.passed else " (expected to fail)")
    return shown


def _first_sentence(text: str) -> str:
    text = text.strip()
    return text.split(". ")[0] + "." if ". " in text else text


def _short_commit(full: str) -> str:
    """``ablations.provenance.commit()`` shortened to 7 hex digits, keeping ``-dirty``."""
    sha, sep, rest = full.partition("-")
    if len(sha) != 40:  # "unknown", or a name given by $QSGD_COMMIT
        return full
    return sha[:7] + sep + rest


def _provenance() -> str:
    from ablations.provenance import commit as full_commit

    commit = _short_commit(full_commit())
    try:
        import torch

        tv = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        tv = "none"
    return (f"commit {commit}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
            f"Python {platform.python_version()}, torch {tv}, {platform.machine()}")


def render(out: Path | str, checks: list[Check] | None = None) -> list[Path]:
    """Write checks.csv, claims.json, report.md, figures and long tables under ``out`` from
    ``checks`` (default: every check stored under ``out/raw``). Returns the files written."""
    from .plots import figures_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checks = load_checks(out) if checks is None else checks
    written = [write_csv(checks, out / "checks.csv")]
    claims: dict[str, dict] = {}
    for c in checks:
        claims.update(c.claims)
    cpath = out / "claims.json"
    cpath.write_text(json.dumps(claims, indent=2, ensure_ascii=False, default=json_default)
                     + "\n")
    written.append(cpath)
    figdir, tabdir = out / "figures", out / "tables"
    total = sum(c.seconds for c in checks if math.isfinite(c.seconds))
    sizes = sorted({c.size for c in checks})
    md = ["# Theory checks\n",
          f"Generated by `python -m theory run` ({'/'.join(sizes)} size; {_provenance()}; "
          f"checks took {total:.0f} s in all). Do not edit: re-run, or re-render from "
          "`raw/` with `python -m theory report`.\n",
          "Each check derives a statement of the paper (or one its argument needs) on paper, "
          "then measures it with the project's own optimizer, circuit simulator and models. "
          "*measured* is compared with *expected* by *relation* within *tolerance* "
          "(`x`: within a factor); `checks.csv` holds the same rows.\n",
          "| id | statement | measured | relation | expected | tolerance | result | does the "
          "paper's reasoning survive? |", "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        md.append("| " + " | ".join([c.id, _fmt(c.claim), _fmt(c.measured), c.relation,
                                     _fmt(c.expected), _fmt(c.tolerance), _passed(c),
                                     _fmt(_first_sentence(c.survives))]) + " |")
    if claims:
        md.append("\n## Claims ledger entries\n")
        md.append(_md_table([{"claim": k, **v} for k, v in claims.items()]))
    for c in checks:
        md.append(f"\n## {c.id}: {c.claim}\n")
        md.append(f"**Result:** {_passed(c)} ({c.seconds:.0f} s). {c.summary}\n")
        want = (f"within a factor {_fmt(c.tolerance)} of {_fmt(c.expected)}" if c.relation == "x"
                else f"{c.relation} {_fmt(c.expected)} (tolerance {_fmt(c.tolerance)})")
        md.append(f"*measured* ({c.quantity}): {_fmt(c.measured)}; *expected*: {want}.\n")
        if c.status != "ran":
            md.append(f"*status*: {c.status}\n")
        md.append("### Derivation\n")
        md.append(c.derivation.strip() + "\n")
        for name, fig in figures_for(c):
            figdir.mkdir(parents=True, exist_ok=True)
            fig.savefig(figdir / name, dpi=120)
            import matplotlib.pyplot as plt

            plt.close(fig)
            written.append(figdir / name)
            md.append(f"![{c.id}](figures/{name})\n")
        for key, rows in c.tables.items():
            if not rows:
                continue
            slug = key.replace(" ", "_").replace("/", "_")
            if len(rows) > INLINE_ROWS:
                import pandas as pd

                tabdir.mkdir(parents=True, exist_ok=True)
                path = tabdir / f"{c.id}_{slug}.csv"
                pd.DataFrame(rows).to_csv(path, index=False)
                written.append(path)
                md.append(f"*Table {key}*: {len(rows)} rows in "
                          f"[`tables/{path.name}`](tables/{path.name}).\n")
            else:
                md.append(f"*Table {key}*\n")
                md.append(_md_table(rows) + "\n")
        md.append("### Does the paper's reasoning survive?\n")
        md.append(c.survives.strip() + "\n")
    rpath = out / "report.md"
    rpath.write_text("\n".join(md) + "\n")
    written.append(rpath)
    return written
