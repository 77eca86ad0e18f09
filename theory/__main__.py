"""``python -m theory run [--quick] [--only T1,T2] [--out DIR] [--results-root DIR]``
runs the theory checks and writes ``results/theory/`` (checks.csv, report.md, claims.json,
figures/); ``python -m theory report [--out DIR]`` re-renders them from the stored checks.

``--quick`` runs every check at its small size (seconds, for a smoke test) and writes to
``.nox/theory-quick/`` (git-ignored) unless ``--out`` is given, so it never replaces or adds to
the committed results.
``--results-root`` is where the arms' runs are read from (:func:`theory.inputs.load_inputs`).
``--only`` runs some checks and re-renders the report with the others as last stored.

Exit status of ``run``: 0 when every check run meets its expectation (passes, or fails where it
is designed or, by its stated rule, expected to: :attr:`theory.base.Check.met`; T8 derives its
expectation from the grid's null control); 1 when one does not (a failure of a check expected
to pass, a pass of a check expected to fail, or a check that could not run for lack of
inputs). Both commands:
2 for bad arguments or input (one line ``error: ...``, e.g. an unknown ``--only`` id, or no
stored checks to re-render), 130 when interrupted; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ablations.cli_support import UsageError, add_debug_flag, guarded


def _mark(check) -> str:
    if check.passed is None:
        return "NOT RUN"
    mark = "pass" if check.passed else "FAIL"
    if check.expected_outcome == "fail":
        mark += " (expected)" if not check.passed else " (UNEXPECTED: expected to fail)"
    return mark


def _print(check) -> None:
    print(f"[{check.id}] {_mark(check)} ({check.seconds:.1f} s) {check.summary}", flush=True)


def _ids(only: str) -> list[str] | None:
    # the --only ids, checked before anything is read or run
    from .base import check_ids

    ids = [s.strip() for s in only.split(",") if s.strip()] or None
    unknown = [i for i in ids or () if i not in check_ids()]
    if unknown:
        raise UsageError(f"--only: unknown check id(s) {', '.join(unknown)} "
                         f"(valid: {', '.join(check_ids())})")
    return ids


def _report(args) -> int:
    from .report import render

    raw = Path(args.out) / "raw"
    if not any(raw.glob("*.json")):
        raise UsageError(f"{raw}: no stored checks to re-render (`python -m theory run` "
                         "stores them)")
    for path in render(Path(args.out)):
        print(path)
    return 0


def _run(args) -> int:
    from ablations.provenance import commit

    from .base import run_checks
    from .inputs import load_inputs
    from .report import render, save_check

    ids = _ids(args.only)
    commit()  # read (and cached) before any result is written: results/ is tracked by git
    size = "small" if args.quick else "full"
    out = Path(args.out or (".nox/theory-quick" if args.quick else "results/theory"))
    t0 = time.perf_counter()
    inputs = load_inputs(args.results_root)  # the one place the checks' data is read
    checks = run_checks(ids, size=size, inputs=inputs,
                        on_done=lambda c: (_print(c), save_check(c, out)))
    paths = render(out)
    unmet = [f"{c.id} ({_mark(c)})" for c in checks if not c.met]
    expected = [c.id for c in checks if c.met and c.expected_outcome == "fail"]
    print(f"{len(checks)} checks in {time.perf_counter() - t0:.0f} s; "
          f"not as expected: {', '.join(unmet) or 'none'}; "
          f"failed as designed: {', '.join(expected) or 'none'}; "
          f"wrote {', '.join(str(p) for p in paths[:3])}, …", flush=True)
    return 1 if unmet else 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command; return the exit status
    (module docstring)."""
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
    add_debug_flag(parser, (run, rep))
    args = parser.parse_args(argv)
    return guarded(lambda: (_run if args.cmd == "run" else _report)(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
