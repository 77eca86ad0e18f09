"""Benchmark of one optimizer step on a GPU: torch AdamW (fused, foreach) against
SuperpositionalAdamW's fused Triton step, for each perturbation, at 10M, 100M and 1B fp32
parameters in 100 equal tensors.

    python -m ablations.bench_optimizer                 # writes results/bench/optimizer_step.*
    python -m ablations.bench_optimizer --compiled --sweep   # also: a torch.compile'd step
                                               # (at 1B) and a launch-configuration sweep
    python -m ablations.bench_optimizer --clipped --sizes 1e8,1e9 --out results/bench/optimizer-clip
                                               # the clipped steps (nox -s bench: 4 rows)

Method: every variant runs on the same random data (θ ~ N(0, 0.5²), g ~ N(0, 10⁻⁶), moments
from warm-up steps), after ``--warmup`` untimed steps (compilation, state creation); each timed
step is preceded by a device synchronize and a write of a buffer larger than the L2 cache (the
step never starts with its data in L2), and is timed with CUDA events around
``optimizer.step()``; median, min and max over ``--reps`` steps. Host overhead is inside the
events: where launching takes longer than the GPU work (small sizes), that is what a step costs.
qsgd rows use ``nonfinite="off"`` (torch's AdamW does no such check); the row ``…-check`` shows
the default ``nonfinite="raise"``, which adds a max-norm pass over the gradients and a host sync.

The row torch-adamw-fused-again repeats the baseline last: its spread from the first is the
run's noise.

Columns of optimizer_step.csv: variant, params, ms_median, ms_min, ms_max,
ratio_to_adamw_fused (ms_median over torch's fused AdamW in the same run, same size),
bytes_per_param (the fewest bytes the step must move per parameter: θ, g, m, v read and θ, m, v
written = 28 for fp32; gauss/unif read θ once more for their RMS, 32), achieved_tb_s
(bytes_per_param × params / ms_median: useful bandwidth; foreach paths move more bytes than
that). The markdown adds the device, versions, the measured copy bandwidth and the memory floor.
On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

CSV_COLUMNS = ["variant", "params", "ms_median", "ms_min", "ms_max", "ratio_to_adamw_fused",
               "bytes_per_param", "achieved_tb_s"]
QSGD_FUSED = ["none", "sin", "cos", "taylor", "gauss", "unif", "anti", "circuit", "anneal",
              "annealrel", "sinnorm", "moment"]
#: bytes per fp32 parameter of each fused variant (qsgd/fused.py): 28, plus a reduction pass
FUSED_BYTES = {"gauss": 32, "unif": 32, "annealrel": 32, "anti": 36}
TARGETS = {"sin": 1.05, "cos": 1.05, "taylor": 1.05, "gauss": 1.15, "unif": 1.15,
           "circuit": 1.05, "anneal": 1.05, "annealrel": 1.15, "anti": 1.25, "sinnorm": 1.05,
           "moment": 1.05}
LR, WD, LAM = 1e-3, 1e-2, 0.5


def _fmt_params(n: int) -> str:
    for unit, div in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


class Bench:
    """Tensors of one size, shared by every variant (each variant gets fresh moments)."""

    def __init__(self, total: int, n_tensors: int, device: torch.device, flush_bytes: int):
        per = total // n_tensors
        self.total = per * n_tensors
        gen = torch.Generator(device=device).manual_seed(0)
        self.params = []
        for _ in range(n_tensors):
            p = torch.empty(per, device=device).normal_(0.0, 0.5, generator=gen)
            p.requires_grad_(True)
            p.grad = torch.empty(per, device=device).normal_(0.0, 1e-3, generator=gen)
            self.params.append(p)
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device)

    def time(self, make_opt: Callable[[list], object], warmup: int,
             reps: int) -> tuple[list[float], list[float]]:
        """(device ms per step from CUDA events, host ms spent inside step())."""
        opt = make_opt(self.params)
        for _ in range(warmup):
            opt.step()
        torch.cuda.synchronize()
        times, host = [], []
        for _ in range(reps):
            self.flush.fill_(1.0)  # evict the step's data from L2
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            opt.step()
            host.append((time.perf_counter() - t0) * 1e3)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        del opt
        torch.cuda.empty_cache()
        return times, host


def copy_bandwidth(device: torch.device, nbytes: int = 4 << 30, reps: int = 10) -> float:
    """Device-to-device copy, bytes read + written per second (TB/s), median of reps."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (statistics.median(times) * 1e-3) / 1e12


def _qsgd(perturbation: str, **kw):
    from qsgd import SuperpositionalAdamW

    kw.setdefault("nonfinite", "off")
    kw.setdefault("fused", True)
    return lambda params: SuperpositionalAdamW(params, lr=LR, weight_decay=WD,
                                               quantum_weight=LAM, perturbation=perturbation,
                                               **kw)


class _CompiledSin:
    """The sin step as one torch.compile'd elementwise function, launched per tensor (the
    alternative to the Triton kernel; same maths as qsgd.optimizer.reference_step)."""

    def __init__(self, params):
        from qsgd.perturbations import sinpi

        self.params = params
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.t = 0

        def body(p, g, m, v, sc):
            q = sinpi(p) * g
            new = p * sc[0]
            m.lerp_(g, sc[1])
            v.mul_(sc[2]).add_(g * g * sc[3])
            denom = v.sqrt() / sc[4] + sc[5]
            new = new + sc[6] * (m / denom) + sc[7] * q
            p.copy_(new)

        self.fn = torch.compile(body, dynamic=False, fullgraph=True)

    def step(self):
        self.t += 1
        b1, b2 = 0.9, 0.999
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        sc = torch.tensor([1 - LR * WD, 1 - b1, b2, 1 - b2, math.sqrt(bc2), 1e-8, -LR / bc1,
                           -LR * LAM], dtype=torch.float32).to(self.params[0].device,
                                                               non_blocking=True)
        with torch.no_grad():
            for p, (m, v) in zip(self.params, self.state, strict=False):
                self.fn(p, p.grad, m, v, sc)


CLIP = 1.0  # max_norm of the clipping rows (the LLM arm's clip_grad)


class _Clipped:
    """An optimizer factory whose optimizers' ``step()`` first clips the gradients' global
    norm to :data:`CLIP`: by torch's ``clip_grad_norm_`` (``own=False``; what a user writes
    before ``opt.step()``) or by the optimizer's own ``clip_grad_norm_`` (qsgd: the product
    with the gradients done by the fused kernel as it reads them)."""

    def __init__(self, make: Callable[[list], object], own: bool):
        self.make, self.own = make, own

    def __call__(self, params):
        return _ClippedStep(self.make(params), params, self.own)


class _ClippedStep:
    def __init__(self, opt, params, own: bool):
        self.opt, self.params, self.own = opt, params, own

    def step(self):
        if self.own:
            self.opt.clip_grad_norm_(CLIP)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()


def variants(compiled: bool, clipped: bool = False) -> list[tuple[str, Callable, int]]:
    """(name, optimizer factory, bytes per parameter); with ``clipped`` the clipped steps'
    rows too (``--clipped``: results/bench/optimizer-clip)."""
    rows: list[tuple[str, Callable, int]] = [
        ("torch-adamw-fused",
         lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, fused=True), 28),
        ("torch-adamw-foreach",
         lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, foreach=True), 28),
    ]
    for name in QSGD_FUSED:
        rows.append((f"qsgd-{name}-fused", _qsgd(name), FUSED_BYTES.get(name, 28)))
    rows += [
        ("qsgd-sin-first4-fused", _qsgd("sin", scope="first_n"), 28),
        ("qsgd-gauss-first4-fused", _qsgd("gauss", scope="first_n"), 28),
        ("qsgd-sin-fused-check", _qsgd("sin", nonfinite="raise"), 28),
        ("qsgd-sin-foreach", _qsgd("sin", fused=False, foreach=True), 28),
        ("qsgd-gauss-foreach", _qsgd("gauss", fused=False, foreach=True), 32),
    ]
    # with gradient clipping (the LLM arm's step): torch's clipping before each optimizer,
    # and qsgd's own, deferred into the kernel; bytes as the optimizer alone (the norm's read
    # of g comes on top for all three; torch's clipping also reads and writes g once more)
    if clipped:
        rows += [
            ("torch-adamw-fused+clip", _Clipped(rows[0][1], own=False), 28),
            ("qsgd-sin-fused+torch-clip", _Clipped(_qsgd("sin"), own=False), 28),
            ("qsgd-sin-fused+clip", _Clipped(_qsgd("sin"), own=True), 28),
        ]
    if compiled:
        rows.append(("qsgd-sin-compiled", _CompiledSin, 28))
    # the baseline once more, last: the spread between the two is the run's noise
    rows.append(("torch-adamw-fused-again", rows[0][1], 28))
    return rows


UPDATE_CONFIGS = [(256, 2), (512, 2), (512, 4), (1024, 2), (1024, 4), (1024, 8), (2048, 4),
                  (2048, 8), (4096, 8), (4096, 16)]
REDUCE_CONFIGS = [(8192, 1024, 4), (16384, 1024, 4), (16384, 2048, 4), (32768, 4096, 8)]


#: the perturbations the update sweep times (anti: two noise draws per element, the most work)
SWEEP_UPDATE = ("none", "sin", "gauss", "anti")


def sweep(bench: Bench, warmup: int, reps: int, log) -> list[str]:
    """Time the kernels' launch configurations (update: :data:`SWEEP_UPDATE`, each at every
    configuration, qsgd.fused.UPDATE_LAUNCH set aside; reduction: gauss and anti) and return
    markdown lines; the rows then run with the defaults of qsgd/fused.py."""
    import qsgd.fused as F

    saved = (F.BLOCK, F.NUM_WARPS, F.RED_RB, F.RED_BLOCK, F.RED_WARPS)
    launch = dict(F.UPDATE_LAUNCH)
    per = "".join(f"; {k}: BLOCK={b}, num_warps={w}" for k, (b, w) in launch.items())
    lines = [f"Launch-configuration sweep at {_fmt_params(bench.total)} (median ms; the rows "
             f"above use the defaults, update BLOCK={saved[0]}, num_warps={saved[1]}{per}, "
             f"reduction RB={saved[2]}, BLOCK={saved[3]}, num_warps={saved[4]}):", "",
             "| update BLOCK, warps | " + " | ".join(SWEEP_UPDATE) + " |",
             "|---|" + "---|" * len(SWEEP_UPDATE)]
    try:
        F.UPDATE_LAUNCH.clear()
        for block, warps in UPDATE_CONFIGS:
            F.BLOCK, F.NUM_WARPS = block, warps
            ts = [statistics.median(bench.time(_qsgd(name), warmup, reps)[0])
                  for name in SWEEP_UPDATE]
            log(f"sweep update BLOCK={block} warps={warps}: " + " ".join(
                f"{n} {t:.3f}" for n, t in zip(SWEEP_UPDATE, ts)) + " ms")
            lines.append(f"| {block}, {warps} | " + " | ".join(f"{t:.3f}" for t in ts) + " |")
        F.BLOCK, F.NUM_WARPS = saved[0], saved[1]
        lines += ["", "| reduction RB, BLOCK, warps | gauss | anti |", "|---|---|---|"]
        for rb, blk, warps in REDUCE_CONFIGS:
            F.RED_RB, F.RED_BLOCK, F.RED_WARPS = rb, blk, warps
            ts = [statistics.median(bench.time(_qsgd(name), warmup, reps)[0])
                  for name in ("gauss", "anti")]
            log(f"sweep reduce RB={rb} BLOCK={blk} warps={warps}: gauss {ts[0]:.3f} anti "
                f"{ts[1]:.3f} ms")
            lines.append(f"| {rb}, {blk}, {warps} | {ts[0]:.3f} | {ts[1]:.3f} |")
    finally:
        F.BLOCK, F.NUM_WARPS, F.RED_RB, F.RED_BLOCK, F.RED_WARPS = saved
        F.UPDATE_LAUNCH.clear()
        F.UPDATE_LAUNCH.update(launch)
    return lines


def write_markdown(path: Path, rows: list[dict], meta: dict) -> None:
    lines = ["# Optimizer step benchmark", "",
             f"Device: {meta['device']}. torch {meta['torch']}, triton {meta['triton']}, "
             f"Python {meta['python']}. Generated by `python -m ablations.bench_optimizer` "
             f"({meta['date']}) from commit `{meta['commit']}`.", "",
             f"fp32, {meta['n_tensors']} equal tensors; median of {meta['reps']} steps after "
             f"{meta['warmup']} warm-up steps, CUDA events, L2 flushed before each step; "
             "qsgd rows with `nonfinite=\"off\"` unless marked `-check`. "
             f"λ = {LAM}, lr = {LR}, weight decay = {WD}.", "",
             f"Measured device-to-device copy: {meta['copy_tb_s']:.2f} TB/s (read + write). "
             "Memory floor of an AdamW step = 28 bytes/param at that bandwidth"
             + "".join(f"; {_fmt_params(n)}: {28 * n / (meta['copy_tb_s'] * 1e12) * 1e3:.3f} ms"
                       for n in meta["sizes"]) + ".", "",
             f"Fused kernel launch configuration: {meta['config']}.", "",
             "Rows: `torch-adamw-*`: torch.optim.AdamW (fused / foreach); `qsgd-<p>-fused`: "
             "SuperpositionalAdamW with perturbation p through the fused Triton kernel "
             "(qsgd/fused.py; `first4`: scope first_n, n = 4; `-check`: with the default "
             "nonfinite=\"raise\"); `qsgd-<p>-foreach`: the same optimizer through its "
             "torch._foreach path; `qsgd-sin-compiled`: the sin step as a torch.compile'd "
             "per-tensor function (the alternative to the Triton kernel); `+torch-clip`: "
             f"torch.nn.utils.clip_grad_norm_(params, {CLIP}) before the step (what a user "
             "writes; the LLM arm's step clips so), `qsgd-sin-fused+clip`: the optimizer's own "
             "clip_grad_norm_, its product with the gradients done by the kernel as it reads "
             "them (compare with `torch-adamw-fused+clip`, the peer's clipped step); "
             "`torch-adamw-fused-again`: the baseline repeated last (run noise).", ""]
    sizes = meta["sizes"]
    lines.append("| variant | " + " | ".join(f"{_fmt_params(n)} ms (×fused AdamW)"
                                            for n in sizes)
                 + f" | {_fmt_params(sizes[-1])} TB/s (% of copy) |")
    lines.append("|---|" + "---|" * (len(sizes) + 1))
    by = {(r["variant"], r["params"]): r for r in rows}
    for name in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for n in sizes:
            r = by.get((name, n))
            cells.append(f"{r['ms_median']:.3f} ({r['ratio_to_adamw_fused']:.2f})" if r else "")
        last = by.get((name, sizes[-1]))
        if last:
            tb = last["achieved_tb_s"]
            cells.append(f"{tb:.2f} ({100 * tb / meta['copy_tb_s']:.0f}%)")
        else:
            cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    big = sizes[-1]
    lines += ["", f"Targets at {_fmt_params(big)} (ratio to torch's fused AdamW, same run):"]
    for name, target in TARGETS.items():
        r = by.get((f"qsgd-{name}-fused", big))
        if r:
            ok = "met" if r["ratio_to_adamw_fused"] <= target else "NOT met"
            lines.append(f"- {name}: {r['ratio_to_adamw_fused']:.3f} (target ≤ {target}): {ok}")
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablations.bench_optimizer",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e7,1e8,1e9", help="total parameters, comma-separated")
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--compiled", action="store_true",
                    help="add the torch.compile'd sin step at the largest size")
    ap.add_argument("--sweep", action="store_true",
                    help="also time the kernels' launch configurations at the largest size")
    ap.add_argument("--clipped", action="store_true",
                    help="add the clipped steps (torch's clipping + each optimizer, and the "
                         "optimizer's own clip_grad_norm_)")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run")
    ap.add_argument("--log", type=Path, default=None, help="also write the log to this file")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_optimizer: no CUDA device; nothing to measure (this benchmark needs a GPU)")
        return 0
    import triton

    import qsgd.fused as F

    device = torch.device("cuda")
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 64 << 20)
    args.out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    log(f"device {props.name}, {props.multi_processor_count} SMs, L2 {l2 >> 20} MiB, "
        f"torch {torch.__version__}, triton {triton.__version__}")
    copy_bw = copy_bandwidth(device)
    log(f"copy bandwidth {copy_bw:.3f} TB/s")
    rows: list[dict] = []
    notes: list[str] = []
    only = set(args.only.split(",")) if args.only else None
    flush = max(4 * l2, 256 << 20)
    for total in sizes:
        bench = Bench(total, args.tensors, device, flush)
        n = bench.total
        base = None
        hosts: dict[str, float] = {}
        for name, make, bpp in variants(args.compiled and total == sizes[-1], args.clipped):
            if only and name not in only and not name.startswith("torch-adamw-fused"):
                continue
            t0 = time.perf_counter()
            try:
                times, host = bench.time(make, args.warmup, args.reps)
            except Exception as exc:  # a failed row is reported, not fatal
                log(f"{name} @ {_fmt_params(n)}: FAILED {type(exc).__name__}: {exc}")
                notes.append(f"- {name} at {_fmt_params(n)} failed: {type(exc).__name__}")
                continue
            wall = time.perf_counter() - t0
            med = statistics.median(times)
            if name == "torch-adamw-fused":
                base = med
            row = dict(variant=name, params=n, ms_median=med, ms_min=min(times),
                       ms_max=max(times), ratio_to_adamw_fused=med / base,
                       bytes_per_param=bpp, achieved_tb_s=bpp * n / (med * 1e-3) / 1e12)
            rows.append(row)
            log(f"{name:26s} {_fmt_params(n):>5s}  median {med:8.3f} ms  min {min(times):8.3f}"
                f"  max {max(times):8.3f}  x{row['ratio_to_adamw_fused']:.3f}"
                f"  {row['achieved_tb_s']:.2f} TB/s  host {statistics.median(host):.3f} ms"
                f"  (wall {wall:.1f} s incl. warm-up)")
            hosts[name] = statistics.median(host)
            if name == "qsgd-sin-compiled":
                notes.append(
                    f"- qsgd-sin-compiled at {_fmt_params(n)}: torch.compile (inductor) of the "
                    f"per-tensor sin step, one launch per tensor: {med:.3f} ms on the GPU, "
                    f"{hosts[name]:.2f} ms of host time per step (qsgd-sin-fused: "
                    f"{hosts.get('qsgd-sin-fused', float('nan')):.2f} ms, one launch), "
                    f"{wall:.0f} s for compilation, warm-up and timing.")
        del bench
        torch.cuda.empty_cache()

    if args.sweep:
        bench = Bench(max(sizes), args.tensors, device, flush)
        notes += ["", *sweep(bench, args.warmup, max(10, args.reps // 2), log)]
        del bench
        torch.cuda.empty_cache()

    with open(args.out / "optimizer_step.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    from .provenance import commit

    meta = dict(commit=commit(), device=f"{props.name} ({props.multi_processor_count} SMs, "
                f"{props.total_memory / 2**30:.0f} GiB, L2 {l2 >> 20} MiB)",
                torch=torch.__version__, triton=triton.__version__,
                python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M UTC",
                                                                     time.gmtime()),
                n_tensors=args.tensors, reps=args.reps, warmup=args.warmup, copy_tb_s=copy_bw,
                sizes=sorted({r["params"] for r in rows}),
                config=f"update BLOCK={F.BLOCK}, num_warps={F.NUM_WARPS}"
                       + "".join(f" ({k}: BLOCK={b}, num_warps={w})"
                                 for k, (b, w) in F.UPDATE_LAUNCH.items()) + "; reduction "
                       f"RB={F.RED_RB}, BLOCK={F.RED_BLOCK}, num_warps={F.RED_WARPS}",
                notes=notes)
    write_markdown(args.out / "optimizer_step.md", rows, meta)
    if args.log:
        args.log.write_text("\n".join(log_lines) + "\n")
    log(f"wrote {args.out / 'optimizer_step.csv'} and {args.out / 'optimizer_step.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
