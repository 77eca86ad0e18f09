"""Reports: stored runs → tidy tables → statistics → verdicts → figures → markdown, and the
claims ledger.

This module does the I/O; :mod:`ablations.stats` computes, :mod:`ablations.claims` judges,
:mod:`ablations.plots` draws and :mod:`ablations.exhibits` assembles sections. For a grid it
writes ``runs.csv``, ``stats.csv``, ``claims.json``, ``figures/*.png`` and ``report.md`` into
the grid's results folder; :func:`render_ledger` writes ``results/README.md`` from every
claim's ``claims.json``. Everything arm-specific comes from the arm
(:mod:`ablations.arms`: metrics, baselines, cell keys, setup text, analyses) and from the
claims registered for it; nothing here tests an arm's name.

Only records whose key matches a spec of the current config are used: runs of an older config
stay in ``runs.jsonl`` (never deleted) but are not mixed into the tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .arms import get_arm
from .claims import Claim, ClaimResult, Evidence, claimed_effects, claims, claims_for, get_claim
from .cli_support import first_line
from .config import ConfigError, GridConfig, SelectionPending, load_config, selection_runs
from .exhibits import EXHIBITS, Context, md_table
from .fmt import num
from .records import RUNS_FILE, json_default, load_records
from .sweeplog import SWEEPS_FILE, load_sweeps
from .tables import EARLIER, IDENTITY, current_records, curves_table, runs_table

__all__ = ["runs_table", "curves_table", "render_arm", "render_ledger", "render_all",
           "save_figure", "IDENTITY"]

# ----------------------------------------------------------------------------- tables
def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    """Write a figure of :mod:`ablations.plots` as a PNG (parent folders are created) and
    return ``path``; white background, tight bounding box."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight", facecolor="white")
    return path


# ----------------------------------------------------------------------------- statistics
def _registered_margins(designs: dict | None) -> dict[str, tuple[str, float]]:
    """metric → (claim id, margin) for every claim whose design in the grid sets a margin
    (``[claims.<id>].margin``)."""
    return {get_claim(cid).metric: (cid, d.margin) for cid, d in (designs or {}).items()
            if d.margin is not None}


def _margins(arm, runs: pd.DataFrame, metrics: list[str],
             designs: dict | None = None) -> dict[str, float]:
    """TOST margins: the pre-registered one where the grid's design of a claim sets one for
    the metric (:func:`_registered_margins`), else the metric's own (absolute, or relative to
    the baseline's mean)."""
    from_claims = {m: margin for m, (_, margin) in _registered_margins(designs).items()}
    base = runs[runs["variant"] == arm.baselines[0]]
    out = {}
    for name in metrics:
        if name in from_claims:
            out[name] = from_claims[name]
            continue
        mean = pd.to_numeric(base[name], errors="coerce").abs().mean()
        out[name] = arm.metric(name).tost_margin(float(mean))
    return out


def _cell_keys(arm, runs: pd.DataFrame) -> tuple[str, ...]:
    """The arm's cell keys, with the task first when the grid runs more than its own task."""
    tasks = runs["task"] if "task" in runs.columns else pd.Series([""])
    return (("task",) if (tasks != "").any() else ()) + tuple(arm.cell_keys)


def _null_ran(arm, runs: pd.DataFrame) -> str | None:
    """The arm's null control where the grid ran it, else None."""
    null = arm.null_control
    return null if null and null in set(runs["variant"]) else None


def _baselines(arm, runs: pd.DataFrame) -> tuple[str, ...]:
    """The arm's baselines, and its null control where the grid ran it (every variant is
    then also compared with the nudge)."""
    null = _null_ran(arm, runs)
    return arm.baselines + ((null,) if null else ())


def _one_task(runs: pd.DataFrame) -> bool:
    """Whether the claims have one comparison to read: some runs of the grid's own task, or
    one task in all."""
    tasks = runs["task"].fillna("") if "task" in runs.columns else pd.Series([""])
    return bool((tasks == "").any() or tasks.nunique() < 2)


def _stats_table(arm, runs: pd.DataFrame, designs: dict | None = None) -> pd.DataFrame:
    metrics = [m.name for m in arm.compared_metrics if m.name in runs.columns]
    effects = {k: v for k, v in claimed_effects(arm.name, arm.baselines[0]).items()
               if k in metrics}
    return stats.compare_all(runs, metrics, baselines=_baselines(arm, runs),
                             claimed_effects=effects,
                             tost_margins=_margins(arm, runs, metrics, designs),
                             higher_is_better=arm.directions(),
                             cell_keys=_cell_keys(arm, runs), n_boot=4000)


# ----------------------------------------------------------------------------- sections
def _shown(path) -> str:
    """A path as the report shows it: relative to the working directory when inside it (no
    machine-specific prefix in committed reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _exhibit(name: str, ctx: Context, claim: Claim | None) -> list[str]:
    """One exhibit's blocks; one that cannot be computed from what has run (a partial grid, a
    grid without a baseline, one seed) says so in the report instead of failing it."""
    try:
        return EXHIBITS[name](ctx, claim)
    except (ValueError, KeyError) as err:
        where = f" of {claim.id}" if claim is not None else ""
        return [f"_{name}{where}: not available from the runs so far ({err})._\n"]


def _setup(ctx: Context) -> list[str]:
    body = ["## Setup\n", ctx.arm.describe(ctx.cfg, ctx.runs)]
    tasks = {c["task"]: c.get("options", {}) for c in ctx.cfg.cells if c.get("task")}
    if tasks:  # cells of their own task: what they change from the options above
        body.append("Tasks of the cells (compared within a task only), with the options they "
                    "change: " + "; ".join(
                        f"`{t}` " + (", ".join(f"{k} = {v}" for k, v in sorted(o.items()))
                                     or "none") for t, o in tasks.items()) + ".\n")
    for name in ctx.arm.setup_exhibits:
        body += _exhibit(name, ctx, None)
    records, runs = ctx.records, ctx.runs
    stamps = pd.to_datetime([r["provenance"]["utc"] for r in records], utc=True)
    if len(stamps):
        span = (stamps.max() - stamps.min()).total_seconds()
        loads = [r["provenance"].get("load_avg_1min") for r in records]
        loads = [x for x in loads if x is not None]
        body.append(
            f"Cost: {len(records)} runs, {runs['wall_seconds'].sum() / 60:.1f} min of run time "
            f"in all; finished within {span / 60:.1f} min of wall clock from the first record to "
            f"the last (plus the first runs' own time)"
            + (f"; mean 1-minute load average at record time {np.mean(loads):.2f} on "
               f"{runs['device'].iloc[0]}" if loads else "") + ".\n")
    body.append(_code_line(records))
    keys = [k for k in ("task", "attention", "variant", "lr") if k in runs.columns
            and (k != "task" or (runs["task"] != "").any())]
    counts = runs.groupby(keys).size().rename("runs").reset_index()
    body.append("<details><summary>Runs per cell</summary>\n\n" + md_table(counts) +
                "\n</details>\n")
    return body


def _code_line(records: list[dict]) -> str:
    """Which code made the runs: their commits, how many were dirty, and any commit that is
    not in this repository (its records cannot be traced to code)."""
    from .provenance import known_commit

    commits: dict[str, int] = {}
    dirty = 0
    for r in records:
        c = str(r.get("provenance", {}).get("commit", "unknown"))
        commits[c.removesuffix("-dirty")] = commits.get(c.removesuffix("-dirty"), 0) + 1
        dirty += c.endswith("-dirty") or bool(r.get("provenance", {}).get("dirty"))
    unknown = [c for c in commits if not known_commit(c)]
    text = "Code: " + ", ".join(f"`{c[:10]}` ({n} runs)" for c, n in sorted(
        commits.items(), key=lambda kv: -kv[1]))
    if dirty:
        text += f"; {dirty} runs from a tree with uncommitted changes"
    if unknown:
        text += (f"; **{sum(commits[c] for c in unknown)} runs name no commit of this "
                 f"repository** ({', '.join(f'`{c}`' for c in unknown)})")
    return text + ".\n"


def _claim_section(ctx: Context, claim: Claim, res: ClaimResult) -> list[str]:
    cell = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in claim.cell_of(ctx.evidence).items())
    what = f"{claim.variant} against {claim.baseline}" + (f", {cell}" if cell else "")
    head = f"## {claim.id}: {claim.title or claim.text}\n"
    if res.kind == "not run yet":
        return [head, f"The paper: {claim.paper}. Not measured: this grid has no runs of "
                      f"{what} yet. Verdict: **not run yet**.\n"]
    text = (f"The paper: {claim.paper}. Measured ({what}): {res.measured}; 95% CI {res.ci}; "
            f"{res.test}.")
    v = res.values
    if claim.claimed is not None and not claim.relative and "n_for_claim" in v:
        text += (f" Detecting the paper's {claim.claimed * claim.scale:+.3g}{claim.unit} at this "
                 f"spread needs {num(v.get('n_for_claim'), 0)} paired seeds (80% power); the "
                 f"smallest effect {int(v['n'])} seeds detect is "
                 f"{num(v.get('mde', float('nan')) * claim.scale, 2)}{claim.unit}.")
    if v.get("design"):
        text += f" {v['design']}"
    if res.power != "–":
        text += f" Power: {res.power}."
    if res.null != "–":
        text += f" Null control: {res.null}."
    body = [head, text + f" Verdict: **{res.verdict}**.\n"]
    for name in claim.exhibits:
        body += _exhibit(name, ctx, claim)
    return body


def _sweeps_section(out: Path) -> list[str]:
    """The sweep log (:mod:`ablations.sweeplog`): wall clock, workers, packing and GPU
    utilisation of each session that ran runs of this grid; nothing when there is no log."""
    sweeps = load_sweeps(out)
    if not sweeps:
        return []
    rows = []
    for s in sweeps:
        gpu = s.get("gpu") or {}
        wall = float(s.get("wall_s", float("nan")))
        rows.append({"started (UTC)": str(s.get("started", ""))[:16],
                     "runs": str(s.get("ran")) + (" (killed: its last checkpoint)"
                                                  if s.get("partial") else ""),
                     "wall (min)": f"{wall / 60:.1f}",
                     "min per run": f"{wall / 60 / max(1, s.get('ran') or 0):.2f}",
                     "failed": str(s.get("failed", 0)),
                     "executor": str(s.get("executor", "processes")),
                     "workers": str(s.get("workers")),
                     "runs per GPU": str(s.get("runs_per_gpu")),
                     "GPU util (mean %)": (f"{gpu['util_mean']:.0f}" if "util_mean" in gpu
                                           else "–"),
                     "GPU mem max (MiB)": (f"{gpu['mem_max_mib']:.0f}" if "mem_max_mib" in gpu
                                           else "–"),
                     "commit": str(s.get("commit", ""))[:7]
                     + (" (dirty)" if s.get("dirty") else "")})
    return ["## Sweeps: wall clock and GPU use\n",
            f"From `{SWEEPS_FILE}`: one row per session of `python -m ablations run` that ran "
            "runs (failed: runs logged in `failures.jsonl`; executor: the process pool, a "
            "local Dask cluster or a running Dask scheduler; GPU utilisation: the time share "
            "with a kernel running, "
            "sampled by nvidia-smi every 2 s, mean over devices).\n",
            md_table(pd.DataFrame(rows), digits=3)]


def waves_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Runs that trained at the same time, grouped into waves: a run's interval is its
    provenance ``utc`` (when it was stored) less its ``wall_seconds``; a run that starts
    before every run of the current wave has ended joins it. Per wave: its runs, start, wall
    clock (first start to last end), the median run's wall clock and training seconds
    (``train_seconds``, where the arm records it), the wave's wall clock per run (what one run
    costs when the wave's runs share the device) and its commits. Empty without timings."""
    spans = []
    for r in records:
        p = r.get("provenance") or {}
        try:
            end = pd.Timestamp(p["utc"]).timestamp()
            wall = float(p["wall_seconds"])
        except (KeyError, TypeError, ValueError):
            continue
        spans.append((end - wall, end, wall, r))
    spans.sort(key=lambda x: x[0])
    waves: list[list[tuple]] = []
    wave_end = -np.inf  # the last end of the current wave's runs
    for span in spans:
        if span[0] < wave_end:
            waves[-1].append(span)
        else:
            waves.append([span])
        wave_end = max(wave_end, span[1])
    rows = []
    for w in waves:
        start, end = min(x[0] for x in w), max(x[1] for x in w)
        train = [float(x[3].get("metrics", {}).get("train_seconds", float("nan"))) for x in w]
        rows.append({
            "started (UTC)": pd.Timestamp(start, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M"),
            "runs": len(w), "wall (min)": (end - start) / 60,
            "run wall, median (s)": float(np.median([x[2] for x in w])),
            "run training, median (s)": float(np.nanmedian(train)) if np.isfinite(train).any()
            else float("nan"),
            "wave wall per run (s)": (end - start) / len(w),
            "commit": ", ".join(sorted({str((x[3].get("provenance") or {}).get("commit", ""))[:7]
                                        for x in w}))})
    return pd.DataFrame(rows)


def _waves_section(records: list[dict[str, Any]]) -> list[str]:
    """For a GPU arm: the waves of the grid's runs that shared the device
    (:func:`waves_table`)."""
    table = waves_table(records)
    if table.empty:
        return []
    return ["## Waves: runs that shared the GPU\n",
            "From each record's provenance (stored at `utc` after `wall_seconds`): runs "
            "whose intervals overlap trained side by side, `runs_per_gpu` to a GPU. A run's "
            "wall clock includes loading the model, compiling and evaluating; its training "
            "seconds are the epoch's alone; the wave's wall clock per run is what a run cost "
            "when the wave's runs shared the device.\n",
            md_table(table, digits=3)]


#: the columns a run is paired with its twin by (a replicating grid, ``[grid].replicates``)
TWIN_KEYS = ["attention", "variant", "lr", "seed", "task"]


def replication_table(runs: pd.DataFrame, twin: pd.DataFrame, metrics: list[str],
                      baseline: str) -> pd.DataFrame:
    """Each run of ``runs`` against its twin in ``twin`` (equal :data:`TWIN_KEYS`), per
    variant and metric: the pairs, the mean and the largest |this − twin| (and the largest
    relative to the twin), and the variant − ``baseline`` contrast (mean over the seeds both
    grids ran) in each grid side by side."""
    both = runs.merge(twin, on=TWIN_KEYS, suffixes=("", "_twin"))
    pair = [k for k in TWIN_KEYS if k != "variant"]  # a variant's run and its baseline's
    base = both[both["variant"] == baseline].set_index(pair)
    rows = []
    for m in metrics:
        if m not in both.columns or f"{m}_twin" not in both.columns:
            continue
        d = both[m] - both[f"{m}_twin"]
        for v, g in both.groupby("variant", sort=True):
            dv = d[g.index]
            row = {"variant": v, "metric": m, "pairs": len(g), "mean_diff": float(dv.mean()),
                   "max_abs_diff": float(dv.abs().max()),
                   "max_rel_diff": float((dv / g[f"{m}_twin"]).abs().max())}
            if v != baseline and not base.empty:
                idx = g.set_index(pair)
                common = idx.index.intersection(base.index)
                row["contrast"] = float((idx.loc[common, m] - base.loc[common, m]).mean())
                row["contrast_twin"] = float((idx.loc[common, f"{m}_twin"]
                                              - base.loc[common, f"{m}_twin"]).mean())
            rows.append(row)
    return pd.DataFrame(rows)


def _replication_section(ctx: Context) -> list[str]:
    """For a grid that repeats another by other code paths: each run against its twin."""
    cfg = ctx.cfg
    if cfg.replicates is None:
        return []
    try:
        other = load_config(cfg.replicates)
    except (ConfigError, SelectionPending) as err:  # the twin grid cannot be read: say so
        return ["## Against its twin grid\n",
                f"`{_shown(cfg.replicates)}` ([grid].replicates) does not load, so no run is "
                f"paired: {first_line(err)}\n"]
    twin = selection_runs(other)  # its current records' runs table
    metrics = [m.name for m in ctx.arm.metrics if m.compared and not m.timing]
    baseline = ctx.arm.baselines[0]
    table = (replication_table(ctx.runs, twin, metrics, baseline) if not twin.empty
             else pd.DataFrame())
    table.to_csv(cfg.results / "replication.csv", index=False)
    head = [f"## Against `{_shown(other.results)}`: the same runs by other code paths\n",
            f"This grid repeats runs of `{_shown(other.path)}` ([grid].replicates) with other "
            "speed settings; each run is paired with its twin there (same variant, seed, lr, "
            "attention). `max_abs_diff`: the largest |this − twin| of the variant's runs, the "
            "spread that the choice of kernels alone makes; `contrast` and `contrast_twin`: "
            f"the variant − {baseline} difference (mean over the seeds) in each grid. "
            "`replication.csv` holds the table.\n"]
    if table.empty:
        return head + [f"No twins: `{_shown(other.results)}` holds none of these runs.\n"]
    return head + [md_table(table, digits=3)]


def _statistics_note(ctx: Context) -> str:
    margins = []
    shown = [m for m in ctx.arm.compared_metrics if m.name in ctx.runs.columns]
    registered = _registered_margins(ctx.cfg.designs)
    for m in shown:
        if m.name in registered:
            cid, margin = registered[m.name]
            margins.append(f"±{margin * m.scale:g}{m.unit} ({m.display}, pre-registered in "
                           f"[claims.{cid}])")
        elif m.margin is not None:
            margins.append(f"±{m.margin * m.scale:g}{m.unit} ({m.display})")
    rel = [m.display for m in shown if m.margin is None and m.name not in registered]
    if rel:
        margins.append(f"±5% of {ctx.arm.baselines[0]}'s mean ({', '.join(rel)})")
    baselines = _baselines(ctx.arm, ctx.runs)
    null = (f" (`{ctx.arm.null_control}` is the null control: a negligible random "
            "perturbation whose paired differences to AdamW measure chaotic divergence)"
            if ctx.arm.null_control in baselines else "")
    return (f"## Statistics\n\n`stats.csv`: every variant against "
            f"{' and against '.join(f'`{b}`' for b in baselines)}{null}, paired by seed "
            f"within a cell ({', '.join(ctx.arm.cell_keys)}); 95% t and bootstrap CIs; paired t "
            "and Wilcoxon tests; Holm correction over all variants against one baseline on one "
            "metric (a claim with a pre-registered family: over that family); Cohen's d_z; "
            "TOST equivalence with margins " + ", ".join(margins)
            + "; its achieved power at the measured spread were the true difference 0 "
            "(`tost_power`); seeds needed for the paper's effect, the power to detect it and "
            "the minimum detectable effect at 80% power.\n")


# ----------------------------------------------------------------------------- arm reports
def render_arm(cfg: GridConfig) -> Path:
    """Write runs.csv, stats.csv, claims.json, figures and report.md for one grid."""
    arm = get_arm(cfg.arm)
    out = cfg.results
    records, stale = current_records(load_records(out / RUNS_FILE), {s.key for s in cfg.specs})
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_table(records, cfg.protocol)
    runs.to_csv(out / "runs.csv", index=False)
    missing = len(cfg.specs) - len(records)
    header = [f"# {cfg.name}: report\n",
              f"Protocol: **{_protocol_name(cfg.protocol)}**. Generated by "
              f"`python -m ablations report {_shown(cfg.path)}` from "
              f"`{_shown(out / RUNS_FILE)}` ({len(records)} runs of {len(cfg.specs)} in the grid"
              + (f"; {stale} older records of a changed config ignored" if stale else "")
              + "). Do not edit: regenerate.\n"]
    if cfg.selected_task:
        level = ", ".join(f"{k} = {v!r}" for k, v in cfg.selected_task_options.items())
        header.append(f"Task: level **{cfg.selected_task}** ({level}) of the difficulty "
                      f"selection `{_shown(cfg.selected_task_from)}`, chosen there on "
                      "validation data ([grid].select_task).\n")
    if missing:
        header.append(f"**Partial grid: {missing} of {len(cfg.specs)} runs have not run yet** "
                      "(`python -m ablations run` resumes); every number below is from the "
                      "runs stored so far.\n")
    if runs.empty:
        (out / "report.md").write_text("\n".join(header) + "\nNo runs yet.\n")
        _write_claims(out, cfg, {})
        return out / "report.md"
    table = _stats_table(arm, runs, cfg.designs)
    table.to_csv(out / "stats.csv", index=False)
    horizon = getattr(cfg.arm_options, "epochs", None)
    evidence = Evidence(runs=runs, stats=table, lr=cfg.baseline_lr,
                        horizon=float(horizon) if horizon is not None else None,
                        directions=arm.directions(), designs=cfg.designs,
                        tables=_bench_tables(out.parent),
                        null=_null_ran(arm, runs))
    ctx = Context(cfg=cfg, arm=arm, runs=runs, curves=curves_table(records), stats=table,
                  records=records, evidence=evidence, sweep=_sweep_runs(cfg))
    body = _setup(ctx)
    if cfg.selection:  # a sweep: the runs choose the settings, they do not also test
        body.append("A selection grid (`[grid].selection`): its runs choose settings for other "
                    "grids and judge no claim. Its choices read the validation split only "
                    "(carved from the training data); the test metrics its runs also record "
                    "(`runs.csv`, `stats.csv`) play no part in them.\n")
        for name in arm.selection_exhibits:
            body += _exhibit(name, ctx, None)
    elif cfg.exhibits:  # a study grid: its own exhibits, no claim
        body.append("A study grid (`[grid].exhibits`): its report shows the analyses it was "
                    "run for and judges no claim; `stats.csv` holds every comparison of its "
                    "runs all the same.\n")
        for name in cfg.exhibits:
            body += _exhibit(name, ctx, None)
        body.append(_statistics_note(ctx))
    elif table.empty:  # e.g. configs/calibration.toml: AdamW alone, nothing to compare
        body.append("No comparisons: the grid has no variant besides its baselines"
                    + ("" if set(runs["variant"]) & set(arm.baselines) else
                       f" (and none of the baselines {', '.join(arm.baselines)})") + ".\n")
    else:
        if _one_task(runs):
            for claim in claims_for(arm.name):
                res = claim.verdict(evidence)
                ctx.results[claim.id] = res
                body += _claim_section(ctx, claim, res)
        else:  # a claim reads one cell; several tasks would leave it to pick one of them
            body.append("No claim is judged by this grid: every cell runs a task of its own, "
                        "and a claim reads the comparison of one task. The variants are "
                        "compared per task and across tasks below.\n")
        for name in arm.analyses:
            body += _exhibit(name, ctx, None)
        body.append(_statistics_note(ctx))
    body += _replication_section(ctx)
    body += _sweeps_section(out)
    if cfg.resources == "gpu":
        body += _waves_section(records)
    figs = out / "figures"
    for name, fig in ctx.figures.items():
        save_figure(fig, figs / name)
    # the folder holds this report's figures only: one that it no longer draws would be stale
    for old in figs.glob("*.png") if figs.is_dir() else ():
        if old.name not in ctx.figures:
            old.unlink()
    _write_claims(out, cfg, {cid: r.as_dict() for cid, r in ctx.results.items()},
                  arm.ledger_note(cfg) if ctx.results else "")
    (out / "report.md").write_text("\n".join(header + body))
    return out / "report.md"


#: the bench tables a verdict may read (``Evidence.tables`` name → file under the results
#: root): C4's like-with-like timing (ablations/bench_c4.py) and the QPU projection of an
#: epoch (``python -m ablations.quantum report``, issue 20)
BENCH_TABLES = {"c4_bench": "bench/c4_like_with_like.csv", "qpu_cost": "quantum/qpu_cost.csv"}


def _bench_tables(root: Path) -> dict[str, pd.DataFrame]:
    """The :data:`BENCH_TABLES` stored under ``<root>`` (the results root, beside the grid's
    folder); a table not generated yet is absent."""
    found = {}
    for name, file in BENCH_TABLES.items():
        path = root / file
        if path.is_file():
            found[name] = pd.read_csv(path)
    return found


def _sweep_runs(cfg: GridConfig) -> pd.DataFrame | None:
    """The runs table of the grid that selected this grid's learning rates
    (``cfg.selected_grid``), or None without one."""
    return None if cfg.selected_grid is None else selection_runs(cfg.selected_grid)


def _protocol_name(protocol: str) -> str:
    return protocol or f"{EARLIER} (no [grid].protocol: batch and lr chosen on test accuracy)"


def _write_claims(out: Path, cfg: GridConfig, results: dict[str, Any], note: str = "") -> None:
    """``claims.json``: the grid, its arm and protocol, its claims' results (the ledger
    reads every grid's file) and, when the arm has one, the ledger's note on its setting."""
    data = {"grid": cfg.name, "arm": cfg.arm, "protocol": cfg.protocol or EARLIER,
            "claims": results}
    if note:
        data["note"] = note
    (out / "claims.json").write_text(json.dumps(data, indent=2, default=json_default) + "\n")


# ----------------------------------------------------------------------------- ledger
def _stored_claims(root: Path) -> list[dict[str, Any]]:
    """Every ``<root>/<folder>/claims.json``: ``{"grid", "arm", "protocol", "claims"}`` (the
    theory suite writes ``{claim id: result}``: its arm is ``theory``)."""
    found = []
    for path in sorted(root.glob("*/claims.json")):
        data = json.loads(path.read_text())
        if "claims" not in data:
            data = {"grid": path.parent.name, "arm": path.parent.name, "protocol": "",
                    "claims": data}
        data["folder"] = path.parent.name
        found.append(data)
    return found


def _ledger_rows(claim: Claim, stored: list[dict]) -> list[tuple[str, dict]]:
    """(protocol, result) rows of one claim: one per protocol whose grids measured it (a grid
    that has not run the claim's comparison adds nothing when another one has)."""
    by_protocol: dict[str, list[tuple[str, dict]]] = {}
    for data in stored:
        if data["arm"] == claim.source and claim.id in data["claims"]:
            by_protocol.setdefault(data["protocol"], []).append(
                (data["folder"], data["claims"][claim.id]))
    rows = []
    for protocol, found in by_protocol.items():
        ran = [(f, r) for f, r in found if r.get("verdict") != "not run yet"] or found[:1]
        for folder, res in ran:
            label = protocol or "–"
            rows.append((label if len(ran) == 1 else f"{label} (`{folder}`)", res))
    return rows or [("–", {"measured": f"the {claim.source} arm has not run yet", "ci": "–",
                           "test": "–", "verdict": "not run yet"})]


def render_ledger(root: Path | str = "results") -> Path:
    """Write ``<root>/README.md``: one row per registered claim and protocol, from every
    grid's ``claims.json`` (written by its report, or by the theory suite for C7)."""
    root = Path(root)
    stored = _stored_claims(root)
    lines = ["# Claims ledger\n",
             "Generated by `python -m ablations report all` from `results/<grid>/claims.json` "
             "(themselves generated from the raw runs). Do not edit: regenerate with "
             "`nox -s report`.\n",
             "| claim | the paper says | paper's numbers | protocol | measured | 95% CI | test "
             "| power | null control | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in claims():
        for protocol, r in _ledger_rows(c, stored):
            cells = [c.id, c.text, c.paper, protocol, r.get("measured", "–"), r.get("ci", "–"),
                     r.get("test", "–"), _power_cell(r.get("power"), c),
                     r.get("null", "–"), f"**{r.get('verdict', '–')}**"]
            lines.append("| " + " | ".join(str(x).replace("|", "/") for x in cells) + " |")
    # the reports behind the rows: every folder whose claims.json judged a claim (a selection
    # grid judges none), in the claims' order
    by_folder: dict[str, list[str]] = {}
    order = [c.id for c in claims()]
    for data in stored:
        ids = [cid for cid in order if cid in data["claims"]
               and data["claims"][cid].get("verdict") != "not run yet"]
        if ids:
            by_folder[data["folder"]] = ids
    details = ", ".join(f"`{f}/report.md` ({_id_span(ids)})" for f, ids in by_folder.items())
    lines += ["", f"Details: {details}; `bench/` (speed)."]
    notes: dict[str, list[str]] = {}  # one line per note, naming every grid that has it
    for data in stored:
        if data.get("note"):
            notes.setdefault(data["note"], []).append(data["folder"])
    for note, folders in notes.items():
        ids = sorted({cid for d in stored if d["folder"] in folders for cid in d["claims"]})
        lines += ["", f"Setting of {', '.join(ids)} in {', '.join(f'`{f}`' for f in folders)}: "
                      f"{note}"]
    lines += ["",
              "Protocols: *paper* (the paper's Tables II and III, nothing tuned), *calibrated* "
              "(every choice made on validation data), *earlier* (grids of earlier sessions: "
              "their batch size and learning rate were chosen on test accuracy). Power, as "
              "achieved at the measured spread and number of seeds: of the TOST at the "
              "claim's pre-registered margin were the true difference 0 (below 0.8 an "
              "equivalence is under-powered, and the verdict says so), of the paired t test "
              "to detect the paper's claimed effect, and of the log-rank test to detect the "
              "paper's hazard ratio (Schoenfeld); the seeds pre-registered in the grid's "
              "config (`[claims.<id>]`) beside those run. Null control: the paired difference "
              "of `gauss-l0.001` (a negligible random perturbation) to AdamW, its 95% CI and "
              "the sd of its paired differences, the spread chaotic divergence alone "
              "produces; the claim's spread as a multiple of it; and the claim's variant "
              "against the nudge, so that \"differs from AdamW\" and \"differs from a "
              "nudge\" are told apart.", "",
              "Verdicts: *supported* (significant after Holm correction, in the paper's "
              "direction; for a cost: its 95% interval contains the paper's figure), "
              "*contradicted* (significant in the other direction; for a cost: the interval "
              "excludes the paper's figure), *equivalent within ±margin* (TOST; "
              "*under-powered* when its power is below 0.8), *no detectable difference* "
              "(neither; *not shown equivalent: under-powered* when the TOST could not have "
              "shown equivalence), *not supported: …* (a claim judged by several "
              "pre-specified tests, C7: support needs every one of them and not all pass; the "
              "text says what each found)."]
    path = root / "README.md"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _power_cell(power: Any, claim: Claim) -> str:
    """The ledger's power: the claim's words (a number in a claims.json of older code)."""
    if isinstance(power, str):
        return power
    return num(power, 2) if power is not None else claim.power_note


def _id_span(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{ids[0]}–{ids[-1]}"


def render_all(config_dir: Path | str, names: tuple[str, ...] | None = None,
               root: Path | str = "results") -> list[Path]:
    """Re-render every grid of ``config_dir`` (or the ``names`` among them) whose results
    exist, then the ledger under ``root``."""
    config_dir = Path(config_dir)
    paths = ([config_dir / n for n in names] if names is not None
             else sorted(config_dir.glob("*.toml")))
    written = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            cfg = load_config(path)
        except SelectionPending:  # its lr sweep has not finished: nothing of it has run
            continue
        if (cfg.results / RUNS_FILE).is_file():
            written.append(render_arm(cfg))
    written.append(render_ledger(root))
    return written
