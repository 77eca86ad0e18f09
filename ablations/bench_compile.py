"""Compile time of the LLM arm's batch-1 step: the whole step against one decoder layer.

    python -m ablations.bench_compile                      # CPU, the 135M shape, 2 lengths
    python -m ablations.bench_compile --device cuda --lengths 128,192,256,320,384,448,512,576

The paper's protocol trains one example a step, padded to a length bucket (``[llm].bucket``),
and compiles one static graph per bucket: at the SmolLM2-135M shape that took 439 s for 8
buckets on an H200 (``results/llm/paper-135m/``), more than the 200 timed steps' training.
``[llm].compile_scope = "layer"`` compiles :func:`ablations.llm.examples.causal_layer` once
per shape instead, and every decoder layer runs it. For each scope this bench, in a fresh
process with an empty Inductor cache (so neither scope reads what the other compiled), builds
the model with random weights (``random:<preset>``, float32, or bf16 autocast on CUDA), and
for each length in turn times the first call of the training loss with its backward (the
compilation and one step) and then the median of ``--steps`` further steps; it checks the
gradients of the first length against the eager model's (max |Δ| over every entry, and the
largest gradient for scale) and counts the graphs Dynamo compiled. The data are random tokens:
compile time depends on shapes, not values.

Writes ``results/bench/compile_scope.{csv,md}`` (``--out``), with the commit and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .fmt import dict_table, write_csv

COLUMNS = ["scope", "length", "compile_s", "step_ms", "graphs", "grad_max_abs_diff",
           "grad_max_abs", "device", "preset"]


def _one(scope: str, preset: str, device: str, lengths: list[int], steps: int) -> list[dict]:
    """Both timings of one scope in this process (the child's work)."""
    import torch
    from torch._dynamo.utils import counters

    from ablations.llm.examples import causal_layer, example_losses
    from qsgd.models.llama import PRESETS, CompactLlama, default_inv_freq, random_state

    torch.manual_seed(0)
    shape = PRESETS[preset]
    dev = torch.device(device)
    amp = dev.type == "cuda"

    def build():
        m = CompactLlama(shape, default_inv_freq(shape), amp=amp)
        m.load_state_dict(random_state(shape, 0), strict=False)
        return m.to(dev)

    model, eager = build(), build()
    if scope == "layer":
        layer_fn = torch.compile(causal_layer, dynamic=False)

        def fn(ids, tgt, ans):
            return example_losses(model, ids, tgt, ans, True, layer_fn)
    else:
        fn = torch.compile(lambda ids, tgt, ans: example_losses(model, ids, tgt, ans, True),
                           dynamic=False)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(f, m, batch):
        for p in m.parameters():
            p.grad = None
        loss, _ = f(*batch)
        loss.backward()
        sync()

    rows = []
    for i, L in enumerate(lengths):
        g = torch.Generator().manual_seed(L)
        ids = torch.randint(0, shape.vocab_size, (1, L), generator=g).to(dev)
        tgt = torch.randint(0, shape.vocab_size, (L,), generator=g).to(dev)
        ans = torch.zeros(L, dtype=torch.bool, device=dev)
        ans[L // 2:] = True
        batch = (ids, tgt, ans)
        t = time.perf_counter()
        step(fn, model, batch)
        compile_s = time.perf_counter() - t
        diff = scale = ""
        if i == 0:
            grads = [p.grad.detach().clone() for p in model.parameters()]
            step(lambda *b: example_losses(eager, *b, True), eager, batch)
            diff = max(float((p.grad - q).abs().max()) for p, q in
                       zip(eager.parameters(), grads, strict=True))
            scale = max(float(q.abs().max()) for q in grads)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step(fn, model, batch)
            times.append(time.perf_counter() - t)
        times.sort()
        rows.append(dict(scope=scope, length=L, compile_s=round(compile_s, 2),
                         step_ms=round(1e3 * times[len(times) // 2], 2),
                         graphs=int(counters["stats"]["unique_graphs"]),
                         grad_max_abs_diff=f"{diff:.2e}" if diff != "" else "",
                         grad_max_abs=f"{scale:.3g}" if scale != "" else "",
                         device=torch.cuda.get_device_name(dev) if amp else "cpu",
                         preset=preset))
        print(f"[compile] {scope} L={L}: compile {compile_s:.1f} s, step "
              f"{rows[-1]['step_ms']} ms, graphs so far {rows[-1]['graphs']}", flush=True)
    return rows


def _child(scope: str, a: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, PYTHONUNBUFFERED="1")
        code = ("import json, sys; from ablations.bench_compile import _one; "
                f"rows = _one({scope!r}, {a.preset!r}, {a.device!r}, {a.lengths!r}, {a.steps}); "
                "print('ROWS ' + json.dumps(rows))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parent.parent)
    sys.stdout.write("".join(line + "\n" for line in out.stdout.splitlines()
                             if line.startswith("[compile]")))
    if out.returncode != 0:
        raise RuntimeError(f"compile scope {scope!r} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("ROWS "))
    return json.loads(line[5:])


def main(argv: list[str] | None = None) -> int:
    from qsgd.models.llama import PRESETS

    from .provenance import machine_info

    ap = argparse.ArgumentParser(prog="python -m ablations.bench_compile",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="135m", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--lengths", default="128,192", help="padded example lengths (buckets)")
    ap.add_argument("--scopes", default="model,layer")
    ap.add_argument("--steps", type=int, default=5, help="timed steps a length after its first")
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    raw = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(raw)
    try:
        a.lengths = [int(x) for x in a.lengths.split(",") if x]
    except ValueError:
        ap.error(f"--lengths must be comma-separated integers, got {a.lengths!r}")
    scopes = [s for s in a.scopes.split(",") if s]
    bad = [s for s in scopes if s not in ("model", "layer")]
    if bad or not scopes:
        ap.error(f"--scopes takes model and/or layer, got {a.scopes!r}")
    if not a.lengths or min(a.lengths) < 2 or a.steps < 1:
        ap.error("--lengths must hold lengths >= 2 and --steps must be >= 1")
    if a.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            ap.error(f"--device {a.device}: no CUDA device here")
    elif a.device != "cpu":
        ap.error(f"--device must be cpu or cuda[:N], got {a.device!r}")
    t0 = time.perf_counter()
    rows = [r for s in scopes for r in _child(s, a)]
    a.out.mkdir(parents=True, exist_ok=True)
    write_csv(a.out / "compile_scope.csv", COLUMNS, rows)
    total = {s: sum(r["compile_s"] for r in rows if r["scope"] == s) for s in scopes}
    import torch

    info = machine_info(**{"command": "`python -m ablations.bench_compile " + " ".join(raw)
                           + "`", "torch threads": str(torch.get_num_threads()),
                           "wall s": f"{time.perf_counter() - t0:.0f}"})
    lines = ["# Compile time of the batch-1 step: the whole step against one decoder layer", "",
             "Generated by `python -m ablations.bench_compile` (method in its docstring); do "
             "not edit. compile_s: the first call of a length (its compilation and one step); "
             "step_ms: the median of the further steps; graphs: graphs Dynamo compiled so far "
             "in that process; grad columns: the first length's gradients against the eager "
             "model's.", "",
             "Total compile time over the lengths: "
             + "; ".join(f"{s} {t:.1f} s" for s, t in total.items()) + ".", "",
             *dict_table(rows, COLUMNS), "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    (a.out / "compile_scope.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / 'compile_scope.csv'} and {a.out / 'compile_scope.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
