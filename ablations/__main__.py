"""``python -m ablations run|report|prune ...``

``run CONFIG`` runs the grid's missing runs into its results folder (``--results``, else the
config's ``[grid].results``; ``~`` expanded), then renders that folder's report, and the claims
ledger ``results/README.md`` when the folder is one of ``results/`` under the working directory
and was not overridden. ``report CONFIG`` re-renders one grid's report (its folder only);
``report all`` every grid of ``ablations/configs`` whose runs exist, then the ledger.
``prune CONFIG`` drops the grid's dirty records (made by a tree with uncommitted changes) that
no report reads, superseded by a clean record of their key or of a key the grid no longer has,
then re-renders its report.

Everything the command reads is checked before the first run starts: the config, and the
results folder (a folder, writable, not in use by another ``run``).

Exit status:

* 0: done.
* 1: some runs failed: each raised twice (it is retried once), the others ran and are stored;
  the failed ones are named on stderr, their tracebacks are in ``failures.jsonl`` of the
  results folder, and a rerun tries them again. Also 1 when the executor itself broke (a
  process-pool worker died: its traceback is printed; the runs finished before it are stored).
* 2: bad input, one line ``error: ...`` naming the file, key or folder; nothing ran.
* 3: ``run`` stored every run it started, but rendering the report failed (one line;
  ``report CONFIG`` re-renders it once the cause is fixed).
* 130: interrupted (SIGINT or SIGTERM): one line saying how many runs are stored; rerunning
  resumes.

``--executor`` chooses where the runs go: ``processes`` (default: one process per core, or per
GPU slot), ``dask`` (a Dask ``LocalCluster`` laid out the same way; its dashboard's address is
printed) or ``dask://HOST:PORT`` (a running Dask scheduler and its workers; README, "Sweeps
beyond one machine"). Whatever runs them, records are appended by this process only.

``--debug`` shows the traceback instead of the one-line message (statuses 2, 3 and 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .cli_support import add_debug_flag, first_line, guarded

CONFIG_DIR = Path(__file__).parent / "configs"
#: ``run``: some runs failed (logged in failures.jsonl), the others are stored
EXIT_RUNS_FAILED = 1
#: ``run`` stored every run, but the report failed
EXIT_REPORT_FAILED = 3


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _workers(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _executor(text: str) -> str:
    from .dask_executor import ExecutorError, parse_executor

    try:
        return parse_executor(text)
    except ExecutorError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"executor {text!r}: ")) from None


def _parser() -> tuple[argparse.ArgumentParser, tuple[argparse.ArgumentParser, ...]]:
    parser = argparse.ArgumentParser(prog="python -m ablations",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the missing runs of a grid, then its report")
    run_p.add_argument("config", type=Path)
    run_p.add_argument("--results", type=Path, default=None,
                       help="results folder (default: the config's [grid].results)")
    run_p.add_argument("--executor", type=_executor, default="processes",
                       help="where the runs go: processes (default), dask (a local Dask "
                       "cluster) or dask://HOST:PORT (a running Dask scheduler)")
    run_p.add_argument("--workers", type=_workers, default=None,
                       help="worker processes of processes or dask (default: cores)")
    run_p.add_argument("--runs-per-gpu", type=_workers, default=None,
                       help="worker processes sharing each GPU (default: the config's "
                       "[grid].runs_per_gpu, else 1)")
    run_p.add_argument("--seeds-per-job", type=_workers, default=None,
                       help="most seeds in one job of a seed-batched grid (default: the "
                       "config's [grid].seeds_per_job, else 16)")
    run_p.add_argument("--limit", type=_count, default=None, help="start at most N runs")
    run_p.add_argument("--no-report", action="store_true")
    run_p.add_argument("--no-progress", action="store_true")
    rep_p = sub.add_parser("report", help="re-render reports from stored runs")
    rep_p.add_argument("config", help="a config path, or 'all' (every grid of ablations/configs "
                       "whose results exist, then the ledger results/README.md)")
    rep_p.add_argument("--results", type=Path, default=None)
    pr_p = sub.add_parser("prune", help="drop a grid's records whose code cannot be named "
                          "(dirty) and that no report reads: superseded by a clean record of "
                          "their key, or of a key the grid no longer has; then its report")
    pr_p.add_argument("config", type=Path)
    pr_p.add_argument("--results", type=Path, default=None)
    return parser, (run_p, rep_p, pr_p)


def _load(args):
    from .config import load_config

    cfg = load_config(args.config, args.results)
    # `~` of --results or [grid].results: the folder the user means, not ./~
    return dataclasses.replace(cfg, results=Path(cfg.results).expanduser())


def _feeds_ledger(args, cfg) -> bool:
    # the ledger reads results/<arm>/claims.json of the working directory: a grid written
    # elsewhere (--results, or a config's own folder) leaves it alone
    return args.results is None and cfg.results.resolve().parent == Path("results").resolve()


def _failed(counts, results: Path) -> None:
    from .failures import FAILURES_FILE, load_failures
    from .runner import RETRIES

    errors = {f["run_id"]: f["error"] for f in load_failures(results)}
    lines = [f"  {run_id}: {errors.get(run_id, '')}" for run_id in counts["failed_ids"]]
    print(f"{counts['failed']} run(s) failed (each tried {RETRIES + 1} times) and are not stored "
          f"(tracebacks in "
          f"{results / FAILURES_FILE}; rerun to try them again):", *lines, sep="\n",
          file=sys.stderr, flush=True)


def _run(args) -> int:
    from .cli_support import UsageError
    from .runner import run_grid

    if args.executor.startswith("dask://") and args.workers is not None:
        raise UsageError(f"--workers {args.workers} does not apply to --executor "
                         f"{args.executor}: a running scheduler's workers are those started "
                         "for it (dask worker ...)")
    cfg = _load(args)
    if args.runs_per_gpu is not None:
        cfg = dataclasses.replace(cfg, runs_per_gpu=args.runs_per_gpu)
    if args.seeds_per_job is not None:
        if not cfg.seed_batched:
            raise UsageError(f"--seeds-per-job applies to a seed-batched grid ([grid]."
                             f"seed_batched = true); {args.config} is not one")
        cfg = dataclasses.replace(cfg, seeds_per_job=args.seeds_per_job)
    t0 = time.perf_counter()
    counts = run_grid(cfg, args.executor, workers=args.workers,
                      progress=not args.no_progress, limit=args.limit)
    print(f"{cfg.name}: {counts['ran']} run(s) done now in "
          f"{(time.perf_counter() - t0) / 60:.1f} min of wall clock, "
          f"{counts['done_before']} already stored, {counts['total']} in the grid "
          f"-> {cfg.results}")
    status = 0
    if counts["failed"]:
        _failed(counts, cfg.results)
        status = EXIT_RUNS_FAILED
    if args.no_report:
        return status
    try:
        from .report import render_arm, render_ledger

        render_arm(cfg)
        if _feeds_ledger(args, cfg):
            render_ledger()
    except Exception as err:
        if args.debug:
            raise
        print(f"error: the runs are stored ({counts['stored']} of {counts['total']} in "
              f"{cfg.results}), but the report failed: {type(err).__name__}: "
              f"{first_line(err)}; `python -m ablations report {args.config}` re-renders it",
              file=sys.stderr)
        return status or EXIT_REPORT_FAILED
    return status


def _report(args) -> int:
    from .report import render_all, render_arm

    if args.config == "all":
        for path in render_all(CONFIG_DIR):
            print(f"wrote {path}")
    else:  # one grid: writes under its results folder only (the ledger: `report all`)
        print(f"wrote {render_arm(_load(args))}")
    return 0


def _interrupted(err: KeyboardInterrupt) -> str:
    counts = getattr(err, "counts", None)
    if counts is None:
        return "interrupted"
    return (f"interrupted: {counts['stored']} runs stored ({counts['ran']} this time, "
            f"{counts['total']} in the grid) in {err.results}; rerun to resume")


def _prune(args) -> int:
    from .records import RUNS_FILE, prune_dirty
    from .report import render_arm

    cfg = _load(args)
    superseded, stale = prune_dirty(cfg.results / RUNS_FILE, {s.key for s in cfg.specs})
    print(f"{cfg.name}: dropped {superseded} dirty record(s) superseded by clean ones and "
          f"{stale} dirty record(s) of keys the grid no longer has -> {cfg.results / RUNS_FILE}")
    if superseded or stale:
        render_arm(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command; return the exit status
    (module docstring)."""
    parser, subs = _parser()
    add_debug_flag(parser, subs)
    args = parser.parse_args(argv)
    body = {"run": _run, "report": _report, "prune": _prune}[args.command]
    source = args.config if args.command != "report" or args.config != "all" else None
    return guarded(lambda: body(args), debug=args.debug, source=source,
                   interrupted=_interrupted)


if __name__ == "__main__":
    sys.exit(main())
