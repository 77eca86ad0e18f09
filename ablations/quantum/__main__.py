"""Quantum realism (issue 20): finite shots, a device's noise model, training under both, and
what a QPU epoch would cost. Writes results/quantum/ (generated only):

    python -m ablations run ablations/quantum/train.toml --workers 2 --no-report   # training
    python -m ablations.quantum check    # GoF of the samplers, noisy program vs Aer, transpiled
    python -m ablations.quantum report   # cost table, training deltas, report.md (reads both)

``check`` needs qiskit, qiskit-aer and qiskit-ibm-runtime (``pip install 'qsgd[hardware]'``);
``report`` reads the stored tables and runs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..provenance import provenance

OUT = Path("results/quantum")
TRAIN = OUT / "train"
SHOTS = (64, 256, 1024, 8192)
BACKENDS = ("fake_sherbrooke", "fake_brisbane")
INSTALL = "pip install 'qsgd[hardware]' (qiskit, qiskit-aer, qiskit-ibm-runtime)"


def _check(out: Path) -> int:
    try:
        import qiskit_aer  # noqa: F401
        import qiskit_ibm_runtime  # noqa: F401
    except ImportError:
        print(f"python -m ablations.quantum check needs qiskit-aer and qiskit-ibm-runtime: "
              f"{INSTALL}", file=sys.stderr)
        return 2
    from .checks import noisy_gof, shots_gof, transpiled_facts

    out.mkdir(parents=True, exist_ok=True)
    gof = [r for n in (2, 4) for r in shots_gof(n, SHOTS)]
    pd.DataFrame(gof).to_csv(out / "gof_shots.csv", index=False)
    noisy = [noisy_gof(n, b) for n in (2, 4) for b in BACKENDS[:1]]
    pd.DataFrame(noisy).to_csv(out / "gof_noisy.csv", index=False)
    facts = [r for n in (2, 4) for b in BACKENDS for r in transpiled_facts(n, b)]
    pd.DataFrame(facts).to_csv(out / "transpiled.csv", index=False)
    (out / "check_provenance.json").write_text(json.dumps(provenance(), indent=1) + "\n")
    print(f"wrote {out}/gof_shots.csv, gof_noisy.csv, transpiled.csv")
    return 0


def _t_ci(d: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan"), float("nan"), float("nan")
    m, se = d.mean(), d.std(ddof=1) / np.sqrt(d.size)
    h = stats.t.ppf(0.975, d.size - 1) * se
    return float(m), float(m - h), float(m + h)


def _num(v) -> float:
    """A stored metric as a float (strict JSON stores a missing value as null)."""
    return float("nan") if v is None else float(v)


def _epochs_to(curve: list[dict], acc: float) -> float:
    return next((float(p["epoch"]) for p in curve if p["test_acc"] >= acc), float("nan"))


def training_table(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell summary, paired deltas against the exact cell by seed) of the grid's runs."""
    rows = []
    for line in (folder / "runs.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append({"cell": r.get("task") or "exact", "variant": r["variant"],
                     "seed": r["seed"], "final_test_acc": r["metrics"]["final_test_acc"],
                     "epochs_to_90": _num(r["metrics"]["epochs_to_90"]),
                     "epochs_to_85": _epochs_to(r["curve"], 0.85),
                     "sec_per_epoch": r["metrics"]["sec_per_epoch"],
                     "commit": r["provenance"]["commit"][:10],
                     "cpu": r["provenance"].get("cpu", "?")})
    df = pd.DataFrame(rows)
    summ = df.groupby(["cell", "variant"]).agg(
        n=("seed", "size"), final_test_acc=("final_test_acc", "mean"),
        reached_90=("epochs_to_90", lambda s: float(np.isfinite(s).mean())),
        reached_85=("epochs_to_85", lambda s: float(np.isfinite(s).mean())),
        sec_per_epoch=("sec_per_epoch", "median"),
        cpu=("cpu", lambda s: " + ".join(sorted(set(s))))).reset_index()
    deltas = []
    exact = df[df.cell == "exact"].set_index(["variant", "seed"])
    for (cell, variant), g in df[df.cell != "exact"].groupby(["cell", "variant"]):
        g = g.set_index("seed")
        base = exact.loc[variant]
        seeds = sorted(set(g.index) & set(base.index))
        for metric in ("final_test_acc", "epochs_to_85", "epochs_to_90"):
            d = g.loc[seeds, metric].to_numpy(float) - base.loc[seeds, metric].to_numpy(float)
            m, lo, hi = _t_ci(d)
            deltas.append({"cell": cell, "variant": variant, "metric": metric,
                           "pairs": int(np.isfinite(d).sum()), "seeds": len(seeds),
                           "mean_diff_vs_exact": m, "ci_low": lo, "ci_high": hi})
    for cell, g in df.groupby("cell"):  # the optimizer effect inside each readout
        a = g[g.variant == "adamw"].set_index("seed")["final_test_acc"]
        s = g[g.variant == "sin-l0.5"].set_index("seed")["final_test_acc"]
        seeds = sorted(set(a.index) & set(s.index))
        if not seeds:  # a cell of other variants (the circuit perturbation's shots)
            continue
        m, lo, hi = _t_ci(s.loc[seeds].to_numpy(float) - a.loc[seeds].to_numpy(float))
        deltas.append({"cell": cell, "variant": "sin-l0.5 - adamw", "metric": "final_test_acc",
                       "pairs": len(seeds), "seeds": len(seeds), "mean_diff_vs_exact": m,
                       "ci_low": lo, "ci_high": hi})
    return summ, pd.DataFrame(deltas)


def _shot_cells(summ: pd.DataFrame) -> str:
    """The shot counts of the summary's ``shots-S`` cells, as "64, 256 or 1024"."""
    counts = sorted(int(c.split("-", 1)[1]) for c in set(summ.cell) if c.startswith("shots-"))
    if not counts:
        return "no"
    return ", ".join(map(str, counts[:-1])) + (" or " if len(counts) > 1 else "") + str(counts[-1])


def cost_table(out: Path, train_sec_per_epoch: float | None) -> pd.DataFrame:
    """The QPU projection (ablations.quantum.cost) for our grid's model, the paper's
    classifier and the paper's LLM epoch."""
    from .cost import GSM8K_TOKENS, LLM_SHAPE, epoch_circuits, qpu_rows

    facts = pd.read_csv(out / "transpiled.csv")
    rep_delay = 250e-6  # fake_sherbrooke's configuration().default_rep_delay
    dur = {n: float(facts[(facts.n_qubits == n) & (facts.backend == "fake_sherbrooke")
                          & facts.circuit.str.startswith("readout z")].duration_us.iloc[0])
           for n in (2, 4)}
    c4 = pd.read_csv("results/bench/c4_like_with_like.csv")
    paper_sim = c4[(c4.attention == "quantum") & c4.phi.astype(str).str.startswith("ours")
                   & (c4.optimizer == "adamw")].sec_per_epoch
    rows = []
    ours = epoch_circuits(sequences=2500, eval_sequences=1000, heads=2, layers=2, seq_len=16,
                          n_qubits=2, depth=2)
    rows += qpu_rows("this grid's classifier (d=32, 2 heads, 2 qubits)", ours, 34,
                     SHOTS, dur[2] * 1e-6 + rep_delay, train_sec_per_epoch,
                     "our torch simulator, 64 shots (results/quantum/train, median)")
    paper = epoch_circuits(sequences=2500, eval_sequences=1500, heads=4, layers=2, seq_len=16,
                           n_qubits=4, depth=2)
    rows += qpu_rows("the paper's classifier (Table II: 4 heads, 4 qubits)", paper, 79, SHOTS,
                     dur[4] * 1e-6 + rep_delay,
                     float(paper_sim.iloc[0]) if len(paper_sim) else None,
                     "our exact closed forms (results/bench/c4_like_with_like.md)")
    llm = epoch_circuits(sequences=GSM8K_TOKENS["examples"], eval_sequences=0,
                         heads=LLM_SHAPE["heads"], layers=LLM_SHAPE["layers"],
                         seq_len=GSM8K_TOKENS["tokens"], n_qubits=4, depth=2, causal=True)
    rows += qpu_rows("the paper's LLM epoch (Llama-3.2-1B, GSM8K, 1 epoch)", llm,
                     GSM8K_TOKENS["examples"], SHOTS, dur[4] * 1e-6 + rep_delay, None,
                     "no quantum-attention LLM run of ours exists (the paper's own: hours on "
                     "an A100 with its optimizer only)")
    df = pd.DataFrame(rows)
    df.to_csv(out / "qpu_cost.csv", index=False)
    return df


def _md(df: pd.DataFrame, digits: int = 3) -> str:
    def fmt(v):
        if isinstance(v, float):
            if not np.isfinite(v):
                return "–"
            return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3g}"
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _report(out: Path) -> int:
    parts = ["# Quantum realism: finite shots, a device's noise model, training, QPU cost",
             "", "Generated by `python -m ablations.quantum report` from the tables of "
             "`python -m ablations.quantum check` and the runs of "
             "`python -m ablations run ablations/quantum/train.toml` (issue 20). Never edit "
             "by hand.", ""]
    parts += ["## Readouts", "",
              "Φ_z = (1/n) Σ_q ⟨Z_q⟩ of the measured distribution; from S shots "
              "Φ̂_z = Σ_j (N_j/S)(n − 2j)/n with (N_0…N_n) ~ Multinomial(S; P_0…P_n) the "
              "counts of Hamming weight j: unbiased, variance ≤ 1/S (qsgd/circuit/shots.py). "
              "The paper's amplitude sum Re⟨+…+|ψ⟩ is not a function of the measured "
              "probabilities; on a device it needs a Hadamard test (Φ̂ = 2·Bin(S, (1+Φ)/2)/S − "
              "1) on n + 1 qubits (its transpiled size is below). Training uses Φ_z; the "
              "gradient is the expectation's (straight-through), which leaves out the shot "
              "noise of parameter-shift gradients a device would add.", ""]
    if (out / "gof_shots.csv").exists():
        parts += ["## Shot sampling against Aer (goodness of fit)", "",
                  "Per circuit (200 random circuits of the family per row), a Pearson "
                  "chi-square of the counts against the exact Born probabilities (cells of "
                  "expected count < 5 pooled); over the circuits a KS test of the p values "
                  "against U(0, 1). A correct sampler: ks_p not small, about 5% of p < 0.05.",
                  "", _md(pd.read_csv(out / "gof_shots.csv")), ""]
    if (out / "gof_noisy.csv").exists():
        parts += ["## The noisy device: our torch program against Aer", "",
                  "Aer's density-matrix simulation of the transpiled circuit with "
                  "`NoiseModel.from_backend` (100 random circuits, 10⁵ shots each) against "
                  "the probabilities of qsgd/circuit/noisy.py; `ks_p_vs_ideal_probs`: the "
                  "same counts against the ideal (noiseless) probabilities, which the test "
                  "must reject (its power).", "", _md(pd.read_csv(out / "gof_noisy.csv")), ""]
    if (out / "transpiled.csv").exists():
        parts += ["## Transpiled circuits", "", _md(pd.read_csv(out / "transpiled.csv")), ""]
    sec = None
    if (TRAIN / "runs.jsonl").exists():
        summ, deltas = training_table(TRAIN)
        summ.to_csv(out / "train_summary.csv", index=False)
        deltas.to_csv(out / "train_deltas.csv", index=False)
        s64 = summ[summ.cell == "shots-64"].sec_per_epoch
        sec = float(s64.median()) if len(s64) else None
        commits = sorted({json.loads(x)["provenance"]["commit"][:10]
                          for x in (TRAIN / "runs.jsonl").read_text().splitlines()})
        parts += ["## Training under shots and device noise", "",
                  f"ablations/quantum/train.toml (runs at commit(s) {', '.join(commits)}): "
                  "the query-count classifier, readout z, 8 epochs; cells exact, "
                  f"{_shot_cells(summ)} shots per score (training and evaluation), and "
                  "fake_sherbrooke's noise model (exact expectation); and the optimizer's "
                  "circuit perturbation (circuit-l0.5) with its exact readout (in the exact "
                  "cell) and from 1,024 X-basis shots per group and step "
                  "(circuit-shots-1024). Deltas pair by seed "
                  "with the exact cell (same init, data order, optimizer noise); 95% t "
                  "intervals. epochs_to_85 is read post hoc from the curves (few runs reach "
                  "90% in 8 epochs). Column cpu: where the cell ran; a change of processor "
                  "alters the rounding and so acts like a small nudge (README), which a "
                  "paired delta's interval then carries; seconds compare only within a cpu.",
                  "", _md(summ), "",
                  _md(deltas), ""]
    if (out / "transpiled.csv").exists():
        cost = cost_table(out, sec)
        parts += ["## What an epoch would cost on a QPU", "",
                  "Circuits per epoch: every score is a circuit, its training step adds two "
                  "parameter-shift circuits per data-carrying gate (1 + 2G per score, G = "
                  "2·depth·n), evaluation one per score (ablations/quantum/cost.py). Time per "
                  "shot: the transpiled circuit's calibrated duration on fake_sherbrooke plus "
                  "its default repetition delay, 250 µs (backend configuration). Scenarios: "
                  "shot-limited (no overhead), a reserved session (1 ms a circuit, 2 s a "
                  "step), the fair-share queue (1 ms a circuit, 1 min a step); the overheads "
                  "are assumptions, the rep delay and durations the backend's data.", "",
                  _md(cost.drop(columns=["assumption"])), ""]
    (out / "report.md").write_text("\n".join(parts) + "\n")
    print(f"wrote {out}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.quantum", description=__doc__)
    p.add_argument("command", choices=("check", "report"))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    return _check(args.out) if args.command == "check" else _report(args.out)


if __name__ == "__main__":
    sys.exit(main())
