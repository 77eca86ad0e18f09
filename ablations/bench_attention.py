"""Benchmark of quantum attention and of the circuit simulators, on CPU.

    python -m ablations.bench_attention              # writes results/bench/attention.{csv,md}
    python -m ablations.bench_attention --quick      # fewer repeats (a smoke run)

What is timed (median of ``--reps`` timed calls after ``--warmup`` untimed ones; p25/p75 too;
the variants of one comparison run in interleaved rounds, one call of each per round, so that a
change of load on a shared machine affects them alike):

1. ``attention``: forward + backward of one attention layer (``qsgd.attention.QuantumAttention``)
   at the classifier's shapes (batch 64, sequence 24, d_model 32, 2 heads, 2 qubits, depth 2),
   circuit off (exactly SDPA), and on with Φ by each exact method: the transfer-matrix chain
   (the default, ``"auto"``), the Fourier form, one simulated statevector per score.
2. ``classifier``: one training step's forward + backward of the whole 2-layer
   ``qsgd.models.TransformerClassifier`` at the same shapes, for the same four settings.
3. ``step``: the whole training step as the classifier arm takes it (zero_grad, forward, loss,
   backward, gradient clipping at 1, ``SuperpositionalAdamW`` with its defaults, sin and
   λ = 0.5) at the paper's shape (embedding 64, 4 heads, feed-forward 128, 2 layers, batch 32,
   sequence 16; circuit 4 qubits, depth 2) and at the shape above (2 qubits), on each thread
   count of ``--step-threads`` (default 1 and 2: a harness worker's single thread, and both
   cores of the machine the harness is sized for): classical and the default method (the
   chain) of both shapes in the same interleaved rounds, the Fourier and state methods in
   rounds of their own (fewer: they are slow, and their memory traffic would cool the caches
   of the others).
4. ``circuits``: circuits per second for the same batch of circuits (the attention layer's
   64·2·24·24 = 73,728 scores, each one circuit with angles a·s + w, 2 and 4 qubits, depth 2,
   amplitudes read out, no gradient, float32): ``qsgd.circuit.simulate`` on the full batch (on
   the CPU without gradients it runs the native gate-by-gate kernel), the torch engine's tensor
   operations (the path that carries gradients) on it, Qiskit Aer
   (``qsgd.circuit.simulate(backend="aer")``: one experiment per circuit, parameters bound to
   one transpiled template, the most favourable way to call Aer) on ``--aer-batch`` circuits,
   and ``qiskit.quantum_info.Statevector`` built circuit by circuit (what a straightforward
   Qiskit implementation does) on fewer. Aer and Statevector rates are scaled from their smaller
   batches (rate = circuits / seconds); the markdown gives the torch/Aer ratio, and the largest
   difference between the amplitudes of the torch rows and Aer's on Aer's batch.
5. ``perturbation``: one call of the circuit perturbation's term (``qsgd.circuit.Circuit``,
   4 qubits) against the closed-form ``sin`` term, at 10⁵ and 10⁶ parameters.
6. ``optimizer``: one optimizer step on the quantum classifier's 36 parameter tensors: torch's
   AdamW (per-tensor loop, its CPU default, and foreach) against SuperpositionalAdamW's
   reference (``foreach=False``), multi-tensor and flat (the CPU default) paths, for adamw
   (λ = 0), sin-l0.5 and gauss-l0.5. With tensors this small a CPU step is per-operation
   overhead, which the flat path removes.

Threads: ``--threads`` (default 1) sets ``torch.set_num_threads`` for every group but ``step``;
on a small shared machine one thread avoids contention between OpenMP workers and gives steadier
numbers. Aer uses its own thread pool (``max_parallel_threads`` is set to the same number).

Columns of attention.csv: group, variant, items, unit, ms_median, ms_p25, ms_p75, reps,
items_per_s (items / median seconds), ratio (ms_median over the group's reference row: classical
attention at the row's shape, the torch simulator, the sin term, or torch's AdamW loop; for
``circuits`` it is the torch rate over this row's rate), max_abs_diff (``circuits`` rows of the
torch simulator: the largest |amplitude − Aer's| on Aer's batch; empty elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

CSV_COLUMNS = ["group", "variant", "items", "unit", "ms_median", "ms_p25", "ms_p75", "reps",
               "items_per_s", "ratio", "max_abs_diff"]
B, T, D, H = 64, 24, 32, 2
#: the paper's classifier (PAPER.md, Tables II and III): embedding, heads, feed-forward, batch,
#: sequence (ours: the arm's seq_len), qubits of the attention's circuit
PAPER_SHAPE = dict(d_model=64, n_heads=4, d_ff=128, batch=32, seq=16, n_qubits=4)
#: Φ's methods as the bench names them: (row suffix, ScoreCircuit.method)
METHODS = [("chain", "auto"), ("fourier", "fourier"), ("state", "state")]


def _stats(ts: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
    return statistics.median(ts), q[0], q[2]


def _time(fn: Callable[[], object], warmup: int, reps: int) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile wall time of ``fn`` in milliseconds."""
    return _time_rounds({"fn": fn}, warmup, reps)["fn"]


def _time_rounds(fns: dict[str, Callable[[], object]], warmup: int,
                 reps: int) -> dict[str, tuple[float, float, float]]:
    """Time several functions in interleaved rounds (one call of each per round), so that a
    change of machine load during the run hits all of them alike; median, p25, p75 in ms."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: _stats(v) for k, v in ts.items()}


def _row(group, variant, items, unit, timing, reps):
    med, p25, p75 = timing
    return {"group": group, "variant": variant, "items": items, "unit": unit,
            "ms_median": med, "ms_p25": p25, "ms_p75": p75, "reps": reps,
            "items_per_s": items / (med / 1e3), "ratio": float("nan"),
            "max_abs_diff": float("nan")}


def bench_attention(warmup: int, reps: int) -> list[dict]:
    from qsgd.attention import QuantumAttention
    from qsgd.models import TransformerClassifier

    rows = []
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    settings = [("classical", "off", None)] + [(f"quantum-{name}", "on", method)
                                               for name, method in METHODS]
    steps = {}
    for name, circuit, method in settings:
        att = QuantumAttention(D, H, circuit=circuit, n_qubits=2, depth=2)
        if method is not None:
            att.phi.method = method
        xx = x.clone().requires_grad_()

        def step(att=att, xx=xx):
            att.zero_grad(set_to_none=True)
            xx.grad = None
            att(xx).sum().backward()

        steps[name] = step
    for name, timing in _time_rounds(steps, warmup, reps).items():
        rows.append(_row("attention", name, B, "sequences", timing, reps))
    tok = torch.randint(1, 17, (B, T))
    y = torch.randint(0, 2, (B,))
    steps = {}
    for name, attention, method in [("classical", "classical", None)] + [
            (f"quantum-{name}", "quantum", method) for name, method in METHODS]:
        torch.manual_seed(0)
        model = TransformerClassifier(17, 2, max_len=T, d_model=D, n_heads=H, d_ff=2 * D,
                                      attention=attention, n_qubits=2)
        if method is not None:
            for blk in model.blocks:
                blk.attn.phi.method = method

        def train_step(model=model):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(tok), y).backward()

        steps[name] = train_step
    for name, timing in _time_rounds(steps, warmup, reps).items():
        rows.append(_row("classifier", name, B, "sequences", timing, reps))
    for group in ("attention", "classifier"):
        ref = next(r for r in rows if r["group"] == group and r["variant"] == "classical")
        for r in rows:
            if r["group"] == group:
                r["ratio"] = r["ms_median"] / ref["ms_median"]
    return rows


def _training_step(attention: str, method: str | None, *, d_model: int, n_heads: int,
                   d_ff: int, batch: int, seq: int, n_qubits: int) -> Callable[[], None]:
    """One training step of the classifier arm's loop (ablations/arms/classifier.py: zero_grad,
    forward, cross-entropy, backward, clipping at 1, the optimizer) on a fixed batch."""
    from qsgd import SuperpositionalAdamW
    from qsgd.models import TransformerClassifier

    torch.manual_seed(0)
    model = TransformerClassifier(17, 2, max_len=seq, d_model=d_model, n_heads=n_heads,
                                  d_ff=d_ff, attention=attention, n_qubits=n_qubits)
    if method is not None:
        for blk in model.blocks:
            blk.attn.phi.method = method
    opt = SuperpositionalAdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    tok = torch.randint(1, 17, (batch, seq), generator=g)
    y = torch.randint(0, 2, (batch,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(tok), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()

    return step


def bench_step(warmup: int, reps: int, threads: list[int]) -> list[dict]:
    """The whole training step, classical against quantum attention by each method, at the
    paper's shape (4 qubits) and at this bench's shape (2 qubits), on each number of
    ``threads``. Classical and the default method (the chain) of both shapes are timed in the
    same interleaved rounds; the Fourier and state methods in rounds of their own (their
    memory traffic would otherwise evict the caches the others run from), their ratios taken
    against the same classical median. Variants are named "<shape>, <k> thread(s): <attention>"."""
    bench_shape = dict(d_model=D, n_heads=H, d_ff=2 * D, batch=B, seq=T, n_qubits=2)
    shapes = {"paper shape, 4 qubits": PAPER_SHAPE, "bench shape, 2 qubits": bench_shape}
    rows = []
    before = torch.get_num_threads()
    for k in threads:
        main, other = {}, {}
        for label, shape in shapes.items():
            main[f"{label}: classical"] = _training_step("classical", None, **shape)
            for name, method in METHODS:
                group = main if method == "auto" else other
                group[f"{label}: quantum-{name}"] = _training_step("quantum", method, **shape)
        torch.set_num_threads(k)
        try:
            timings = _time_rounds(main, warmup, reps)
            timings.update(_time_rounds(other, max(1, warmup // 2), max(3, reps // 3)))
        finally:
            torch.set_num_threads(before)
        tag = f"{k} thread" + ("s" if k > 1 else "")
        for label, shape in shapes.items():
            ref = timings[f"{label}: classical"][0]
            for name in [f"{label}: classical"] + [f"{label}: quantum-{m}" for m, _ in METHODS]:
                variant = name.replace(f"{label}:", f"{label}, {tag}:")
                n_reps = reps if name in main else max(3, reps // 3)
                r = _row("step", variant, shape["batch"], "sequences", timings[name], n_reps)
                r["ratio"] = r["ms_median"] / ref
                rows.append(r)
    return rows


def bench_circuits(warmup: int, reps: int, aer_batch: int, sv_batch: int,
                   threads: int) -> list[dict]:
    from qsgd.circuit import CircuitSpec, simulate, to_qiskit
    from qsgd.circuit.statevector import _run_torch

    rows = []
    n_scores = B * H * T * T
    for n in (2, 4):
        g = torch.Generator().manual_seed(n)
        s = torch.randn(n_scores, generator=g)
        scale = torch.ones(n)
        w = torch.rand(2, 2, n, generator=g) * 2 * math.pi - math.pi
        x = s[:, None] * scale
        kw = dict(depth=2, entangle=True, hadamard=True, encoding="reupload")
        spec = CircuitSpec(n, 2, True, True, "reupload")
        with torch.no_grad():
            timings = _time_rounds({
                "simulate": lambda x=x, w=w, kw=kw: simulate(x, w, **kw),
                "engine": lambda x=x, w=w, spec=spec: _run_torch(spec, x, w[None]),
            }, warmup, reps)
            state = simulate(x, w, **kw)
            engine = _run_torch(spec, x, w[None])
            engine = torch.complex(engine.re.t(), engine.im.t())
        rows.append(_row("circuits", f"torch n={n}", n_scores, "circuits", timings["simulate"],
                         reps))
        torch_rate = rows[-1]["items_per_s"]
        rows[-1]["ratio"] = 1.0
        rows.append(_row("circuits", f"torch engine, tensor ops n={n}", n_scores, "circuits",
                         timings["engine"], reps))
        rows[-1]["ratio"] = torch_rate / rows[-1]["items_per_s"]
        try:
            import qiskit_aer  # noqa: F401
        except ImportError:
            print("qiskit-aer not installed: Aer rows skipped", file=sys.stderr)
        else:
            from qsgd.circuit.qiskit import _aer_template

            sim = _aer_template(spec, True)[0]
            sim.set_options(max_parallel_threads=threads)
            xa = x[:aer_batch].double()
            a_reps = max(3, reps // 3)
            t_aer = _time(lambda xa=xa, w=w, kw=kw: simulate(xa, w.double(), backend="aer", **kw),
                          1, a_reps)
            aer = simulate(xa, w.double(), backend="aer", **kw)
            for r, amps in ((rows[-2], state), (rows[-1], engine)):  # same circuits, same results
                r["max_abs_diff"] = float((amps[:aer_batch].to(aer.dtype) - aer).abs().max())
            rows.append(_row("circuits", f"aer n={n}", aer_batch, "circuits", t_aer, a_reps))
            rows[-1]["ratio"] = torch_rate / rows[-1]["items_per_s"]
        try:
            from qiskit.quantum_info import Statevector
        except ImportError:
            print("qiskit not installed: Statevector rows skipped", file=sys.stderr)
        else:
            xs = x[:sv_batch].double()
            wd = w.double()

            def loop(xs=xs, wd=wd, n=n):
                for b in range(xs.shape[0]):
                    Statevector(to_qiskit(xs[b], wd, n, 2, True))

            s_reps = max(3, reps // 5)
            rows.append(_row("circuits", f"qiskit-statevector n={n}", sv_batch, "circuits",
                             _time(loop, 1, s_reps), s_reps))
            rows[-1]["ratio"] = torch_rate / rows[-1]["items_per_s"]
    # the attention's Φ of the same circuits by its chain and Fourier forms (a scalar per
    # circuit instead of 2ⁿ amplitudes; no gradient)
    from qsgd.attention import ScoreCircuit

    s = torch.randn(n_scores, generator=torch.Generator().manual_seed(9))
    for label, n, method in (("chain", 2, "chain"), ("fourier-form", 2, "fourier"),
                             ("chain", 4, "chain")):
        phi = ScoreCircuit(n, 2, method=method)
        with torch.no_grad():
            t_f = _time(lambda phi=phi: phi(s), warmup, reps)
        torch_rate = next(r for r in rows if r["variant"] == f"torch n={n}")["items_per_s"]
        rows.append(_row("circuits", f"{label} n={n} (Φ only)", n_scores, "circuits", t_f,
                         reps))
        rows[-1]["ratio"] = torch_rate / rows[-1]["items_per_s"]
    return rows


def bench_perturbation(warmup: int, reps: int) -> list[dict]:
    from qsgd.circuit import Circuit
    from qsgd.perturbations import Context, get_perturbation

    rows = []
    ctx = Context(step=1, seed=0, index=0, n_qubits=4)
    for size in (10**5, 10**6):
        g = torch.Generator().manual_seed(size)
        theta = torch.randn(size, generator=g) * 0.1
        grad = torch.randn(size, generator=g)
        fns = {name: (lambda p=p, th=theta, gr=grad: p.term(th, gr, ctx))
               for name, p in (("sin", get_perturbation("sin")), ("circuit n=4", Circuit()))}
        timings = _time_rounds(fns, warmup, reps)
        for name, timing in timings.items():
            r = _row("perturbation", name, size, "parameters", timing, reps)
            r["ratio"] = r["ms_median"] / timings["sin"][0]
            rows.append(r)
    return rows


def bench_optimizer_cpu(warmup: int, reps: int) -> list[dict]:
    """One optimizer step on the quantum-attention classifier's parameters (36 small tensors,
    ~18k entries): torch's AdamW (per-tensor loop, the CPU default, and foreach) against
    SuperpositionalAdamW's reference, multi-tensor and flat paths (the flat one is the CPU
    default). Every optimizer gets its own copy of the parameters and the same gradients."""
    import qsgd.optimizer as qopt
    from qsgd import SuperpositionalAdamW
    from qsgd.models import TransformerClassifier

    torch.manual_seed(0)
    model = TransformerClassifier(17, 2, max_len=T, d_model=D, n_heads=H, d_ff=2 * D,
                                  attention="quantum", n_qubits=2)
    base = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in base]
    n_params = sum(p.numel() for p in base)

    def make(factory, flat_max=None):
        params = [torch.nn.Parameter(p.clone()) for p in base]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt = factory(params)

        def step():
            if flat_max is None:
                opt.step()
                return
            saved, qopt.FLAT_MAX_NUMEL = qopt.FLAT_MAX_NUMEL, flat_max
            try:
                opt.step()
            finally:
                qopt.FLAT_MAX_NUMEL = saved
        return step

    kw = dict(lr=1e-9, weight_decay=0.01)  # a tiny lr keeps the state steady over the reps
    fns = {
        "torch AdamW (loop, CPU default)": make(
            lambda ps: torch.optim.AdamW(ps, foreach=False, **kw)),
        "torch AdamW (foreach)": make(lambda ps: torch.optim.AdamW(ps, foreach=True, **kw)),
    }
    for pert in ("none", "sin", "gauss"):
        lam = 0.0 if pert == "none" else 0.5
        label = "adamw" if pert == "none" else f"{pert}-l0.5"

        def factory(ps, foreach, pert=pert, lam=lam):
            return SuperpositionalAdamW(ps, perturbation=pert, quantum_weight=lam,
                                        foreach=foreach, **kw)

        fns[f"qsgd {label} reference"] = make(lambda ps, f=factory: f(ps, False))
        fns[f"qsgd {label} multi-tensor"] = make(lambda ps, f=factory: f(ps, True), flat_max=0)
        fns[f"qsgd {label} flat (default)"] = make(lambda ps, f=factory: f(ps, None))
    timings = _time_rounds(fns, warmup, reps)
    ref = timings["torch AdamW (loop, CPU default)"][0]
    rows = []
    for name, timing in timings.items():
        r = _row("optimizer", name, n_params, "parameters", timing, reps)
        r["ratio"] = r["ms_median"] / ref
        rows.append(r)
    return rows


def machine_info(threads: int) -> dict[str, str]:
    from .provenance import machine_info as machine

    return machine(("qiskit", "qiskit-aer"), **{"torch threads": str(threads)})


def _fmt(v: float, digits: int = 3) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def write_outputs(rows: list[dict], info: dict[str, str], out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "attention.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in CSV_COLUMNS})
    get = {(r["group"], r["variant"]): r for r in rows}
    lines = ["# Quantum attention and circuit simulation: CPU benchmark", "",
             "Generated by `python -m ablations.bench_attention"
             + (" --quick" if args.quick else "") + "`. Median wall time over "
             f"{args.reps} timed calls after {args.warmup} warm-up calls (Aer, Statevector and the "
             "whole step by the Fourier and state methods: "
             "fewer), with the variants of each table timed in interleaved rounds; p25–p75 in "
             "its own column. Shapes: batch 64, sequence 24, d_model 32, 2 heads; circuit "
             "2 qubits, depth 2 unless said. Every group runs on "
             f"{args.threads} torch thread(s) but the whole training step, on "
             f"{', '.join(map(str, args.step_threads))}.", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [""]
    titles = {
        "attention": ("One attention layer, forward + backward", "vs classical"),
        "classifier": ("Whole 2-layer classifier, forward + backward (one training step "
                       "without the optimizer)", "vs classical"),
        "step": ("Whole training step: forward, backward, clipping, optimizer "
                 "(SuperpositionalAdamW, sin λ = 0.5); paper shape: embedding 64, 4 heads, "
                 "feed-forward 128, 2 layers, batch 32, sequence 16, 4 qubits",
                 "vs classical, same shape and threads"),
        "circuits": ("Circuits per second, same circuits (angles a·s + w, amplitudes, float32, "
                     "no gradient; max |Δ| vs Aer on Aer's batch)", "torch rate / this rate"),
        "perturbation": ("Perturbation term, one call (4 qubits, groups of 4 parameters)",
                         "vs sin"),
        "optimizer": ("One optimizer step on the quantum classifier's parameters (36 tensors)",
                      "vs torch AdamW loop"),
    }
    for group, (title, ratio_name) in titles.items():
        grp = [r for r in rows if r["group"] == group]
        if not grp:
            continue
        diff = group == "circuits"
        lines += [f"## {title}", "", f"| variant | items | ms (median) | p25–p75 | items/s | "
                  f"{ratio_name} |" + (" max abs diff vs Aer |" if diff else ""),
                  "|---|---:|---:|---:|---:|---:|" + ("---:|" if diff else "")]
        for r in grp:
            extra = ""
            if diff:
                d = r["max_abs_diff"]
                extra = " |" if math.isnan(d) else f" {d:.1e} |"
            lines.append(f"| {r['variant']} | {r['items']:,} {r['unit']} | "
                         f"{_fmt(r['ms_median'])} | {_fmt(r['ms_p25'])}–{_fmt(r['ms_p75'])} | "
                         f"{_fmt(r['items_per_s'])} | {_fmt(r['ratio'])} |" + extra)
        lines.append("")
    summary = []
    for label, k in [(lb, k) for k in args.step_threads
                     for lb in ("paper shape, 4 qubits", "bench shape, 2 qubits")]:
        tag = f"{label}, {k} thread" + ("s" if k > 1 else "")
        by = {m: get.get(("step", f"{tag}: quantum-{m}")) for m, _ in METHODS}
        if all(by.values()):
            summary.append(f"- Whole training step, {tag}: "
                           f"quantum attention costs **{_fmt(by['chain']['ratio'])}×** the "
                           f"classical step with Φ by the transfer-matrix chain (the default), "
                           f"{_fmt(by['fourier']['ratio'])}× in Fourier form, "
                           f"{_fmt(by['state']['ratio'])}× with one statevector per score "
                           "(all exact, the same function).")
    for n in (2, 4):
        t, a = get.get(("circuits", f"torch n={n}")), get.get(("circuits", f"aer n={n}"))
        if t and a:
            summary.append(f"- {n} qubits: torch simulator {_fmt(t['items_per_s'])} circuits/s "
                           f"vs Qiskit Aer {_fmt(a['items_per_s'])} circuits/s: torch is "
                           f"**{_fmt(a['ratio'])}×** faster; the amplitudes differ by at most "
                           f"{t['max_abs_diff']:.1e} (float32 against Aer's float64).")
    c = get.get(("classifier", "classical"))
    by = {m: get.get(("classifier", f"quantum-{m}")) for m, _ in METHODS}
    if c and all(by.values()):
        summary.append(f"- Classifier forward + backward (2 qubits): quantum attention costs "
                       f"{_fmt(by['chain']['ratio'])}× the classical one with the chain, "
                       f"{_fmt(by['fourier']['ratio'])}× in Fourier form, "
                       f"{_fmt(by['state']['ratio'])}× with one statevector per score.")
    a2 = get.get(("circuits", "aer n=2"))
    if a2:
        per_step = 2 * B * H * T * T  # circuits in one classifier forward (2 layers)
        summary.append(f"- Estimate: the {per_step:,} circuits of one classifier forward pass "
                       f"(2 layers × {B * H * T * T:,} scores) would take about "
                       f"{_fmt(per_step / a2['items_per_s'])} s through Aer at the rate above, "
                       "without gradients.")
    if summary:
        lines += ["## Summary", ""] + summary + [""]
    lines += ["Notes: the Aer rate is measured on a smaller batch and scaled linearly; Aer runs "
              "every circuit as its own experiment, so its cost per circuit does not fall with "
              "the batch the way a batched torch simulation does. All timings are wall clock on "
              "a possibly shared machine: compare rows of one run, not runs of different "
              "machines.", ""]
    (out / "attention.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step-threads", default="1,2",
                    help="torch threads of the whole-training-step group, comma-separated "
                         "(default 1,2: a harness worker's one thread, and both cores)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--aer-batch", type=int, default=256)
    ap.add_argument("--sv-batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="3 warm-up and 5 timed calls")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.reps = 3, 5
    try:
        args.step_threads = [int(k) for k in str(args.step_threads).split(",")]
        if not args.step_threads or min(args.step_threads) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--step-threads must be positive integers separated by commas, got "
                 f"{args.step_threads!r}")
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    rows = bench_step(args.warmup, args.reps, args.step_threads)
    torch.set_num_threads(args.threads)
    rows += bench_attention(args.warmup, args.reps)
    rows += bench_circuits(args.warmup, args.reps, args.aer_batch, args.sv_batch, args.threads)
    rows += bench_perturbation(args.warmup, args.reps)
    rows += bench_optimizer_cpu(args.warmup, max(args.reps, 5 * args.reps // 2))
    for r in rows:
        print(f"{r['group']:<13} {r['variant']:<38} {r['ms_median']:>10.3f} ms  "
              f"{r['items_per_s']:>14,.0f} {r['unit']}/s  ratio {_fmt(r['ratio'])}")
    write_outputs(rows, info, args.out, args)
    print(f"wrote {args.out / 'attention.csv'} and {args.out / 'attention.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
