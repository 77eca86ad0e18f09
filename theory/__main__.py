"""``python -m theory run [--quick] [--only T1,T2] [--out DIR] [--results-root DIR]``
runs the theory checks and writes ``results/theory/`` (checks.csv, report.md, claims.json,
figures/); ``python -m theory report [--out DIR]`` re-renders them from the stored checks.

``--quick`` runs every check at its small size (seconds, for a smoke test) and writes to
``.nox/theory-quick/`` (git-ignored) unless ``--out`` is given, so it never replaces or adds to
the committed results.
``--results-root`` is where the arms' runs are read from (:func:`theory.inputs.load_inputs`).
``--only`` runs some checks and re-renders the report with the others as last stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _print(check) -> None:
    mark = {None: "NOT RUN", True: "pass", False: "FAIL"}[check.passed]
    print(f"[{check.id}] {mark} ({check.seconds:.1f} s) {check.summary}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the checks and write the report")
    run.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    run.add_argument("--only", default="", help="comma-separated check ids, e.g. T2,T8")
    run.add_argument("--out", default=None, help="output directory (default results/theory, "
                     "or .nox/theory-quick with --quick)")
    run.add_argument("--results-root", default="results",
                     help="where the arms' runs.csv (or runs.jsonl) are read from "
                          "(default results)")
    rep = sub.add_parser("report", help="re-render the report from stored checks")
    rep.add_argument("--out", default="results/theory")
    args = parser.parse_args(argv)

    from .report import render, save_check

    if args.cmd == "report":
        for path in render(Path(args.out)):
            print(path)
        return 0
    size = "small" if args.quick else "full"
    out = Path(args.out or (".nox/theory-quick" if args.quick else "results/theory"))
    ids = [s.strip() for s in args.only.split(",") if s.strip()] or None
    from .base import run_checks
    from .inputs import load_inputs

    t0 = time.perf_counter()
    inputs = load_inputs(args.results_root)  # the one place the checks' data is read
    checks = run_checks(ids, size=size, inputs=inputs,
                        on_done=lambda c: (_print(c), save_check(c, out)))
    paths = render(out)
    failed = [c.id for c in checks if c.passed is False]
    print(f"{len(checks)} checks in {time.perf_counter() - t0:.0f} s; failed: "
          f"{', '.join(failed) or 'none'}; wrote {', '.join(str(p) for p in paths[:3])}, …",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
