"""``python -m ablations run|report ...``"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .config import ConfigError, load_config

CONFIG_DIR = Path(__file__).parent / "configs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the missing runs of a grid, then its report")
    run_p.add_argument("config", type=Path)
    run_p.add_argument("--results", type=Path, default=None,
                       help="results folder (default: the config's [grid].results)")
    run_p.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    run_p.add_argument("--limit", type=int, default=None, help="start at most N runs")
    run_p.add_argument("--no-report", action="store_true")
    run_p.add_argument("--no-progress", action="store_true")
    rep_p = sub.add_parser("report", help="re-render reports from stored runs")
    rep_p.add_argument("config", help="a config path, or 'all' (every grid of ablations/configs "
                       "whose results exist, then the ledger results/README.md)")
    rep_p.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            from .runner import default_executor, run_grid

            cfg = load_config(args.config, args.results)
            ex = default_executor(args.workers, arm=cfg.arm) if args.workers else None
            t0 = time.perf_counter()
            counts = run_grid(cfg, ex, progress=not args.no_progress, limit=args.limit)
            print(f"{cfg.name}: {counts['ran']} run(s) done now in "
                  f"{(time.perf_counter() - t0) / 60:.1f} min of wall clock, "
                  f"{counts['done_before']} already stored, {counts['total']} in the grid "
                  f"-> {cfg.results}")
            if not args.no_report:
                from .report import render_arm, render_ledger

                render_arm(cfg)
                if args.results is None:
                    render_ledger()
        else:
            from .report import render_all, render_arm

            if args.config == "all":
                for path in render_all(CONFIG_DIR):
                    print(f"wrote {path}")
            else:  # one grid: writes under its results folder only (the ledger: `report all`)
                print(f"wrote {render_arm(load_config(args.config, args.results))}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
