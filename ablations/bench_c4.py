"""C4 like with like: the cost of an epoch of the paper's classifier with the attention's circuit
simulated by Qiskit, as the paper did, against our closed forms and against classical attention.

    python -m ablations.bench_c4            # writes results/bench/c4_like_with_like.{csv,md}
    python -m ablations.bench_c4 --quick    # one round (a smoke run)

The paper reports about +35% per epoch "due to quantum circuit simulation" (PAPER.md, C4) and
simulated its 4-qubit attention circuit with Qiskit's statevector simulator. Our grids time
our own implementation, in which Φ is a closed form (the transfer-matrix chain) and the sine
term one elementwise operation, so their C4 figure is about ours, not the paper's. This bench
times, on one machine, in interleaved rounds (one call of each per round, so that a change
of load hits all alike), the model of ``configs/classifier-paper.toml`` (embedding 64, 4 heads,
feed-forward 128, 2 layers, dropout 0.1, batch 32, sequence 16, circuit 4 qubits depth 2; its
task: 2,500 training sequences, 79 steps an epoch), one thread:

1. *measured epochs*: one training epoch of the classifier arm itself
   (:func:`ablations.arms.classifier.run` with ``epochs = 1``; its ``sec_per_epoch``, the
   training loop only), for classical attention and for our quantum attention (closed forms),
   each with adamw and with sin-l0.5 (the paper's method);
2. *Φ by Qiskit*: the same model's forward pass on one training sequence (2 layers × 4 heads ×
   16 × 16 = 2,048 scores) with every attention's Φ computed by :class:`QiskitPhi`: one
   ``qiskit.quantum_info.Statevector`` per score, of the circuit built by
   :func:`qsgd.circuit.to_qiskit` (angles a·s + w, the same circuit as ours; Φ = Re Σψ/2^{n/2}),
   against the same forward with our Φ; and Φ of the same 2,048 scores by Qiskit Aer (one
   experiment per circuit, parameters bound to one transpiled template: the most favourable
   way to call Aer). The largest |Φ_Qiskit − Φ_ours| over those scores is recorded.

Extrapolated rows (stated as such in the table): an epoch with Φ's forward by Qiskit is our
measured quantum epoch plus, for each of the epoch's training sequences, the measured extra
time of the Qiskit forward over ours (forward only: the backward stays our closed form's, so
this is a lower bound on a Qiskit-only implementation); with Φ's gradient by the
parameter-shift rule, each score also needs two shifted circuits per gate angle
(2 · 2 · depth · n = 32 for 4 qubits, depth 2: every Ry and Rz carries a·s + w), 32 more
circuit simulations per score, added at the measured per-sequence Qiskit cost. The Aer rows
likewise. Evaluation passes (validation, test) are not part of an epoch here, as in the arm's
``sec_per_epoch``.

Columns of c4_like_with_like.csv: row, attention, phi, optimizer, kind (measured or
extrapolated), sec_per_epoch (median), sec_p25, sec_p75, rounds, vs_classical
(sec_per_epoch over classical attention's with the same optimizer), how.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

CSV_COLUMNS = ["row", "attention", "phi", "optimizer", "kind", "sec_per_epoch", "sec_p25",
               "sec_p75", "rounds", "vs_classical", "how"]
PAPER_CONFIG = Path(__file__).resolve().parent / "configs" / "classifier-paper.toml"


class _QiskitFunction(torch.autograd.Function):
    """Φ by Qiskit in the forward pass; the backward is our closed form's vector-Jacobian
    product (the same function: a training step runs, with the gradient from the chain)."""

    @staticmethod
    def forward(ctx, scores: Tensor, scale: Tensor, weights: Tensor, phi: nn.Module,
                backend: str) -> Tensor:
        ctx.phi = phi
        ctx.save_for_backward(scores, scale, weights)
        return qiskit_phi(scores.detach(), scale.detach(), weights.detach(), phi.n_qubits,
                          phi.depth, phi.entangle, backend)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scores, scale, weights = ctx.saved_tensors
        phi = ctx.phi
        with torch.enable_grad():
            s = scores.detach().requires_grad_()
            out = phi(s)  # our Φ with the module's own (scale, weights)
            gs, ga, gw = torch.autograd.grad(out, (s, phi.scale, phi.weights), grad,
                                             allow_unused=True)
        return gs, ga, gw, None, None


def qiskit_phi(scores: Tensor, scale: Tensor, weights: Tensor, n_qubits: int, depth: int,
               entangle: bool, backend: str = "statevector") -> Tensor:
    """Φ(s) = Re Σ_k ψ_k / 2^{n/2} of every score, each circuit simulated by Qiskit:
    ``"statevector"``: ``Statevector(to_qiskit(a·s, w))``, one circuit built and simulated per
    score (what a straightforward Qiskit implementation does, as the paper describes);
    ``"aer"``: :func:`qsgd.circuit.simulate` with ``backend="aer"`` (one Aer experiment per
    circuit, parameters bound to one transpiled template). Same shape and dtype as scores."""
    from qsgd.circuit import simulate, to_qiskit

    x = scores.reshape(-1, 1).double() * scale.double()  # (N, n): angles a_q · s
    w = weights.double()
    kw = dict(depth=depth, entangle=entangle, hadamard=True, encoding="reupload")
    if backend == "aer":
        amps = simulate(x, w, backend="aer", **kw)
        phi = amps.real.sum(-1)
    else:
        from qiskit.quantum_info import Statevector

        phi = torch.tensor([float(Statevector(to_qiskit(xi, w, n_qubits, depth, entangle))
                                  .data.real.sum()) for xi in x], dtype=torch.float64)
    return (phi / 2 ** (n_qubits / 2)).to(scores.dtype).reshape(scores.shape)


class QiskitPhi(nn.Module):
    """Wraps an attention's :class:`qsgd.attention.ScoreCircuit`: Φ by Qiskit in the forward
    pass (``backend``: "statevector" or "aer", :func:`qiskit_phi`), our closed form's gradient
    in the backward; the wrapped module's parameters (a, w) are the ones used."""

    def __init__(self, phi: nn.Module, backend: str = "statevector"):
        super().__init__()
        self.inner, self.backend = phi, backend

    def forward(self, scores: Tensor) -> Tensor:
        p = self.inner
        return _QiskitFunction.apply(scores, p.scale, p.weights, p, self.backend)


def _paper_options():
    from ablations.config import load_config

    return load_config(PAPER_CONFIG).arm_options


def _epoch_fn(options, attention: str, variant: str, lr: float):
    """One epoch of the classifier arm (its own loop and clock): returns its sec_per_epoch."""
    from dataclasses import asdict

    from ablations.arms.classifier import NUMERICS, run
    from ablations.config import RunSpec

    opts = {**asdict(options), "epochs": 1}
    spec = RunSpec("classifier", variant, attention, 0, lr, tuple(sorted(opts.items())),
                   NUMERICS)
    return lambda: run(spec)["metrics"]["sec_per_epoch"]


def _forward_fn(options, phi_backend: str | None):
    """The paper model's forward pass (train mode, no gradient) on one training sequence,
    with our Φ (``phi_backend=None``) or Φ by Qiskit; returns (call, Φ of its first layer's
    scores)."""
    from ablations.arms.classifier import _task, build_model

    data = _task(options)
    torch.manual_seed(0)
    model = build_model(options, "quantum")
    for blk in model.blocks:
        blk.attn.fused = False  # the torch path, which calls attn.phi on the score tensor
        if phi_backend is not None:
            blk.attn.phi = QiskitPhi(blk.attn.phi, phi_backend)
    x = data["x_train"][:1]

    def call():
        with torch.no_grad():
            model(x)

    return call, model


def _phi_agreement(ours_model, qiskit_models) -> float:
    """max |Φ_Qiskit − Φ_ours| over one layer's scores of a sequence (each backend)."""
    torch.manual_seed(1)
    s = torch.randn(1, 4, 16, 16)
    ref = ours_model.blocks[0].attn.phi(s)
    worst = 0.0
    for m in qiskit_models:
        with torch.no_grad():
            worst = max(worst, float((m.blocks[0].attn.phi(s) - ref).abs().max()))
    return worst


def _rounds(fns: dict, rounds: int, at_most: dict[str, int] | None = None
            ) -> dict[str, list[float]]:
    """Each function once per round, in turn (warm-up: one untimed call each first); a
    function named in ``at_most`` only in that many of the first rounds (the slow Qiskit
    forwards: the same interleaving, fewer calls). A function returning a number reports its
    own seconds (the arm's clock); else wall time."""
    at_most = at_most or {}
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(rounds):
        for k, fn in fns.items():
            if i >= at_most.get(k, rounds):
                continue
            t0 = time.perf_counter()
            got = fn()
            out[k].append(float(got) if isinstance(got, float) else time.perf_counter() - t0)
    return out


def _summary(ts: list[float]) -> tuple[float, float, float]:
    if len(ts) == 1:
        return ts[0], ts[0], ts[0]
    q = statistics.quantiles(ts, n=4)
    return statistics.median(ts), q[0], q[2]


def bench(rounds: int, qiskit_rounds: int) -> tuple[list[dict], dict]:
    """The rows of the table and the facts the markdown states: ``rounds`` interleaved rounds,
    the forward passes (ours and by Qiskit, which they are subtracted from) in the first
    ``qiskit_rounds`` of them."""
    from ablations.arms.classifier import _task

    o = _paper_options()
    lr = 1e-3  # Table II
    epochs = {(a, v): _epoch_fn(o, a, v, lr) for a in ("classical", "quantum")
              for v in ("adamw", "sin-l0.5")}
    fwd_ours, ours_model = _forward_fn(o, None)
    fwd_sv, sv_model = _forward_fn(o, "statevector")
    fwd_aer, aer_model = _forward_fn(o, "aer")
    fns = {f"epoch {a} {v}": fn for (a, v), fn in epochs.items()}
    fns.update({"forward ours": fwd_ours, "forward statevector": fwd_sv,
                "forward aer": fwd_aer})
    forwards = ("forward ours", "forward statevector", "forward aer")
    t = _rounds(fns, rounds, {k: min(rounds, qiskit_rounds) for k in forwards})
    data = _task(o)
    n_seq = len(data["x_train"])
    steps = math.ceil(n_seq / o.batch_size)
    scores_per_seq = o.n_layers * o.n_heads * data["x_train"].shape[1] ** 2
    gate_angles = 2 * o.attn_depth * o.attn_qubits  # every Ry and Rz carries a·s + w
    shifts = 2 * gate_angles
    facts = dict(n_seq=n_seq, steps=steps, scores_per_seq=scores_per_seq, shifts=shifts,
                 max_abs_diff=_phi_agreement(ours_model, (sv_model, aer_model)), rounds=rounds,
                 qiskit_rounds=min(rounds, qiskit_rounds),
                 fwd_ours=_summary(t["forward ours"])[0])
    rows = []
    for (a, v) in epochs:
        med, p25, p75 = _summary(t[f"epoch {a} {v}"])
        phi = "none (SDPA)" if a == "classical" else "ours: closed form (chain)"
        rows.append(dict(row=f"{a} attention, {v}", attention=a, phi=phi, optimizer=v,
                         kind="measured", sec_per_epoch=med, sec_p25=p25, sec_p75=p75,
                         rounds=len(t[f"epoch {a} {v}"]),
                         how="the arm's epoch (ablations.arms.classifier.run, epochs = 1), "
                             "its sec_per_epoch"))
    for backend, label in (("statevector", "Qiskit Statevector, one per score"),
                           ("aer", "Qiskit Aer, one experiment per score")):
        extra = _summary([q - f for q, f in zip(t[f"forward {backend}"], t["forward ours"])])
        facts[f"per_seq_{backend}"] = extra[0]
        facts[f"per_score_{backend}"] = extra[0] / scores_per_seq
        rows += extrapolate(rows, extra, n_seq=n_seq, shifts=shifts, label=label,
                            rounds=len(t[f"forward {backend}"]))
    classical = {r["optimizer"]: r["sec_per_epoch"] for r in rows
                 if r["attention"] == "classical"}
    for r in rows:
        r["vs_classical"] = r["sec_per_epoch"] / classical[r["optimizer"]]
    return rows, facts


def extrapolate(measured: list[dict], extra: tuple[float, float, float], *, n_seq: int,
                shifts: int, label: str, rounds: int) -> list[dict]:
    """The extrapolated rows of one way to compute Φ: for each measured quantum epoch (our
    closed forms, per optimizer), that epoch plus ``n_seq`` × ``extra`` (the measured extra
    seconds of Φ's forward on one sequence: median, p25, p75), "forward only"; and plus
    ``n_seq`` × (1 + ``shifts``) × ``extra`` with Φ's gradient by the parameter-shift rule
    (``shifts`` more circuits per score, each at the forward's cost). ``rounds``: how many
    Qiskit forwards were timed."""
    rows = []
    for b in (r for r in measured if r["attention"] == "quantum" and r["kind"] == "measured"):
        for mode, factor, how in (
                ("forward only", 1, "our measured quantum epoch + the epoch's sequences × the "
                                    "measured extra seconds of Φ's forward by Qiskit "
                                    "(backward: our closed form's gradient)"),
                ("parameter-shift gradient", 1 + shifts,
                 f"as forward only, + {shifts} shifted circuits per score for Φ's gradient "
                 "(parameter shift, two per gate angle), at the measured cost")):
            cost = [b[k] + n_seq * factor * x
                    for k, x in zip(("sec_per_epoch", "sec_p25", "sec_p75"), extra)]
            rows.append(dict(row=f"quantum attention, Φ by {label}, {mode}, {b['optimizer']}",
                             attention="quantum", phi=f"{label}, {mode}",
                             optimizer=b["optimizer"], kind="extrapolated",
                             sec_per_epoch=cost[0], sec_p25=cost[1], sec_p75=cost[2],
                             rounds=rounds, how=how))
    return rows


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _times(x: float) -> str:
    """A ratio as the markdown states it: +x% below 2, ×x above."""
    return f"{(x - 1) * 100:+.0f}%" if x < 2 else f"×{_fmt(x)}"


def write_outputs(rows: list[dict], facts: dict, info: dict, out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "c4_like_with_like.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in CSV_COLUMNS})
    get = {r["row"]: r for r in rows}
    lines = [
        "# C4 like with like: an epoch with the circuit simulated by Qiskit, by our closed "
        "forms, and classical", "",
        "Generated by `python -m ablations.bench_c4" + (" --quick" if args.quick else "")
        + f"`. The model of `configs/classifier-paper.toml` (embedding 64, 4 heads, "
        f"feed-forward 128, 2 layers, dropout 0.1, batch 32, sequence 16, circuit 4 qubits "
        f"depth 2, lr 1e-3; its task: {facts['n_seq']:,} training sequences, "
        f"{facts['steps']} steps an epoch), one torch thread, every row timed in "
        f"{facts['rounds']} interleaved round(s) after one warm-up call (the forward passes "
        f"behind the extrapolated rows in the first {facts['qiskit_rounds']} of them); median, "
        "p25–p75 over rounds (extrapolated rows: from those of their parts). *Measured* rows "
        "are the classifier arm's own epoch (its `sec_per_epoch`: the "
        "training loop, no evaluation). *Extrapolated* rows add to our measured quantum epoch "
        "the measured extra cost of computing Φ by Qiskit: the model's forward pass on one "
        f"training sequence ({facts['scores_per_seq']:,} scores, each one circuit) with Φ by "
        "Qiskit, less the same forward with our Φ, times the epoch's sequences; *forward "
        "only* keeps our closed form's backward (a lower bound on a Qiskit-only "
        f"implementation), *parameter-shift gradient* adds {facts['shifts']} shifted circuits "
        "per score (two per gate angle: every Ry and Rz carries a·s + w) at the same cost.",
        "", "## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [
        "", "## Seconds per epoch", "",
        "| row | kind | s per epoch (median) | p25–p75 | vs classical attention, same "
        "optimizer |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['kind']} | {_fmt(r['sec_per_epoch'])} | "
                     f"{_fmt(r['sec_p25'])}–{_fmt(r['sec_p75'])} | {_times(r['vs_classical'])} |")
    q_sv = get["quantum attention, Φ by Qiskit Statevector, one per score, forward only, "
               "sin-l0.5"]
    q_ps = get["quantum attention, Φ by Qiskit Statevector, one per score, parameter-shift "
               "gradient, sin-l0.5"]
    q_aer = get["quantum attention, Φ by Qiskit Aer, one experiment per score, forward only, "
                "sin-l0.5"]
    ours = get["quantum attention, sin-l0.5"]
    ours_a = get["quantum attention, adamw"]
    cl_a = get["classical attention, adamw"]
    lines += [
        "", "## Summary", "",
        f"- Φ by Qiskit Statevector: {1e3 * facts['per_score_statevector']:.2f} ms per score "
        f"({_fmt(facts['per_seq_statevector'])} s for one sequence's "
        f"{facts['scores_per_seq']:,} scores; our whole forward of it: "
        f"{1e3 * facts['fwd_ours']:.1f} ms); by Aer {1e3 * facts['per_score_aer']:.3f} ms per "
        f"score. Largest |Φ_Qiskit − Φ_ours| over a layer's scores: {facts['max_abs_diff']:.1e} "
        "(the same function).",
        f"- The paper's method (sin-l0.5, quantum attention) against Adam with classical "
        f"attention, per epoch: ours (closed forms) "
        f"{_times(ours['sec_per_epoch'] / cl_a['sec_per_epoch'])}; with Φ by Qiskit "
        f"Statevector {_times(q_sv['sec_per_epoch'] / cl_a['sec_per_epoch'])} forward only, "
        f"{_times(q_ps['sec_per_epoch'] / cl_a['sec_per_epoch'])} with parameter-shift "
        f"gradients; by Aer {_times(q_aer['sec_per_epoch'] / cl_a['sec_per_epoch'])} forward "
        "only. The paper's figure: +35%.",
        f"- The sine term alone (sin-l0.5 against adamw, our quantum attention): "
        f"{_times(ours['sec_per_epoch'] / ours_a['sec_per_epoch'])} per epoch; the circuit "
        f"attention alone (our closed forms against classical, adamw): "
        f"{_times(ours_a['sec_per_epoch'] / cl_a['sec_per_epoch'])}.",
        "",
        "Notes: wall clock on a possibly shared machine (load average at start and end above; "
        "on a 2-core machine a load above 2 means the rows shared their cores with other "
        "work, which the interleaving spreads over all rows alike but which widens every "
        "interval): compare rows of one run; the measured rows differ by tens of percent "
        "between runs on a loaded machine, the orders of magnitude of the Qiskit rows do "
        "not. Extrapolation is linear in the number of circuits (each Qiskit "
        "circuit is simulated on its own, so its cost per circuit does not fall with the "
        "batch). Aer with GPU acceleration, which the paper names for larger models, is not "
        "timed here.", ""]
    (out / "c4_like_with_like.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--qiskit-rounds", type=int, default=3,
                    help="of them, the rounds that also time the forward passes with Φ by "
                         "Qiskit (about 5-20 s each on a shared CPU; default 3)")
    ap.add_argument("--quick", action="store_true", help="one round")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = args.qiskit_rounds = 1
    if args.rounds < 1 or args.qiskit_rounds < 1:
        ap.error(f"--rounds and --qiskit-rounds must be >= 1, got {args.rounds}, "
                 f"{args.qiskit_rounds}")
    try:
        import qiskit  # noqa: F401
        import qiskit_aer  # noqa: F401
    except ImportError as err:
        print(f"this bench needs qiskit and qiskit-aer: {err}", file=sys.stderr)
        return 2
    from .bench_attention import machine_info

    torch.set_num_threads(1)
    info = machine_info(1)
    rows, facts = bench(args.rounds, args.qiskit_rounds)
    if hasattr(os, "getloadavg"):  # the other end of the run: was the machine shared?
        info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    for r in rows:
        print(f"{r['row']:<100} {r['sec_per_epoch']:>12.3f} s  {_times(r['vs_classical'])}")
    write_outputs(rows, facts, info, args.out, args)
    print(f"wrote {args.out / 'c4_like_with_like.csv'} and {args.out / 'c4_like_with_like.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
