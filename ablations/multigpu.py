"""Multi-process FSDP2 check: SuperpositionalAdamW on sharded parameters against one process.

    python -m ablations.multigpu                       # world 2, gloo on the CPU, tiny, 50 steps
    python -m ablations.multigpu --world 4 --backend nccl --preset 135m --steps 50   # GPUs

For each variant (``--variants``, canonical ids of :mod:`qsgd.variants`, plus the peer
``torch-adamw``: ``torch.optim.AdamW`` with the same hyperparameters, ``fused=True`` on CUDA,
its default foreach path on the CPU) three runs train the same model on the same data:

* the reference: one process, no process group, the unsharded ``CompactLlama`` of
  ``PRESETS[--preset]`` (float32, ``amp=False``: the check is of the optimizer's sharding, not
  of bf16 autocast) from :func:`qsgd.models.llama.random_state` with ``--init-seed``;
* the sharded run: ``--world`` processes (``torch.multiprocessing.spawn``, a ``file://``
  rendezvous in a temporary folder, gloo on the CPU or NCCL with one GPU a rank), the same
  initial weights, ``fully_shard`` on each decoder layer and on the root as the README's fsdp2
  recipe does (the root's ``loss`` method registered as an FSDP forward);
* the same at world size 1 (skipped when ``--world 1``), which separates what sharding over
  ranks changes from what FSDP itself changes (at world 1 the local shard is the whole tensor).

Data, data-parallel: a pool of ``--pool`` fixed random token batches of ``--batch`` rows of
``--seq`` tokens (CPU generator, ``--data-seed``) is cycled, so the loss falls as the model
memorises them. The reference sees each whole global batch; rank r of the sharded run sees
rows [r·B/W, (r+1)·B/W) of it. Every row scores the same number of tokens (next-token
cross-entropy, all positions but the last), so each rank's mean loss averaged over ranks (what
FSDP2's gradient reduce-scatter averages) is the global batch's mean loss: the sharded run is
the reference's computation with the batch split and the gradient summed in another order.
The loss curve recorded is the step's loss before the update, all-reduced and averaged over the
ranks; the final parameters are gathered with ``full_tensor()``.

Expected: every built-in variant equals the reference to float32 rounding of the split batch
and the reordered gradient sum. Elementwise terms (adamw, sin, cos, taylor, sinnorm, moment)
are the same on a shard; terms that read several entries of a tensor are computed over the
global tensor (:mod:`qsgd.sharding`): the RMS of gauss, unif, anti and annealrel is
all-reduced, keyed noise is drawn by global position (a shard takes its entries of the whole
tensor's stream), circuit gathers the tensor's θ, and ``first_n`` is the first entries of the
flattened global tensor. A custom perturbation that is neither elementwise nor
``shard_invariant`` is expected ``per-shard``. To show what the agreement is worth for the
stochastic variants, they also run the reference with noise seed ``--noise-seed + 1``: the
spread of two noise seeds is what a different noise draw alone does, against which the
sharded run's difference is read.

Outputs, in ``--out`` (default results/llm): ``multigpu.csv``, one row a variant, columns
:data:`CSV_COLUMNS` (``loss_rel_*``: |L_sharded − L_ref| / |L_ref| over the steps;
``param_max_abs``: max |θ_sharded − θ_ref| over every entry at the end; ``w1_loss_rel_max``,
``w1_param_max_abs``: the same against the world-1 FSDP run; ``w1_ref_param_max_abs``: the
world-1 FSDP run against the reference; ``seed_spread_*``: the reference against itself with
the other noise seed, empty for deterministic variants; ``step_ms``: median wall ms of a whole
training step on rank 0, forward, backward, step and loss all-reduce, after ``--warmup``
steps; ``opt_ms``: median ms of ``optimizer.step()`` alone; ``peak_mem_mib``: CUDA
``max_memory_allocated`` of each rank, ';'-separated, empty on the CPU; ``state_mib``: the
optimizer state each rank holds, max over ranks), and ``multigpu.md``, a generated report.
Bad arguments stop with one line ``error: …`` and exit status 2 before any process starts
(``--debug``: the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PEER = "torch-adamw"
CSV_COLUMNS = [
    "variant", "optimizer", "expected", "world", "backend", "device", "preset", "steps",
    "loss_rel_max", "loss_rel_mean", "param_max_abs", "w1_loss_rel_max", "w1_param_max_abs",
    "w1_ref_param_max_abs", "seed_spread_rel_max", "seed_spread_param_max", "ref_final_loss",
    "final_loss", "step_ms", "ref_step_ms", "opt_ms", "ref_opt_ms", "peak_mem_mib", "state_mib",
]


@dataclass(frozen=True)
class Setup:
    """One invocation's settings (validated by :func:`parse_args`)."""

    world: int
    backend: str
    preset: str
    steps: int
    variants: tuple[str, ...]
    batch: int = 8
    seq: int = 64
    pool: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    init_seed: int = 0
    data_seed: int = 1
    noise_seed: int = 0
    warmup: int = 3

    @property
    def command(self) -> str:
        """The command line that reproduces this setup: every option the parser takes."""
        variants = ",".join(v for v in self.variants if v != PEER)
        return (f"python -m ablations.multigpu --world {self.world} --backend {self.backend} "
                f"--preset {self.preset} --steps {self.steps} --variants {variants} "
                f"--batch {self.batch} --seq {self.seq} --pool {self.pool} --lr {self.lr:g} "
                f"--warmup {self.warmup}")

    @property
    def device(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"


def parser() -> argparse.ArgumentParser:
    from qsgd.models.llama import PRESETS

    from .cli_support import add_debug_flag

    ap = argparse.ArgumentParser(prog="python -m ablations.multigpu",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=2, help="processes of the sharded run")
    ap.add_argument("--backend", default="gloo", choices=["gloo", "nccl"],
                    help="gloo: CPU ranks; nccl: one CUDA device a rank")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--variants", default="adamw,sin-l0.5,gauss-l0.5",
                    help="comma-separated variant ids (torch-adamw is always added)")
    ap.add_argument("--batch", type=int, default=8, help="global batch, rows")
    ap.add_argument("--seq", type=int, default=64, help="tokens a row")
    ap.add_argument("--pool", type=int, default=4, help="distinct batches, cycled")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the timings")
    ap.add_argument("--out", type=Path, default=Path("results/llm"))
    add_debug_flag(ap)
    return ap


def make_setup(a: argparse.Namespace) -> Setup:
    """The validated setup of parsed arguments; :class:`~ablations.cli_support.UsageError`
    naming the option (world < 1, nccl without enough CUDA devices, an unknown variant, …),
    raised before any process starts."""
    from qsgd.variants import parse_variant

    from .cli_support import UsageError

    for name in ("world", "steps", "batch", "pool"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.seq < 2:
        raise UsageError(f"--seq must be >= 2 (next-token targets), got {a.seq}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise UsageError(f"--lr must be a positive number, got {a.lr}")
    if a.batch % a.world:
        raise UsageError(f"--batch {a.batch} must be divisible by --world {a.world} "
                         "(rows a rank)")
    if not 0 <= a.warmup < a.steps:
        raise UsageError(f"--warmup must be in [0, --steps), got {a.warmup} with --steps "
                         f"{a.steps}")
    if a.backend == "nccl":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n < a.world:
            raise UsageError(f"--backend nccl needs {a.world} CUDA device(s), one a rank; "
                             f"found {n} (use --backend gloo on the CPU)")
    variants = []
    for vid in filter(None, (v.strip() for v in a.variants.split(","))):
        if vid == PEER:
            continue  # always run
        try:
            variants.append(parse_variant(vid).canonical)
        except ValueError as err:
            raise UsageError(f"--variants: {err}") from None
    variants = list(dict.fromkeys(variants)) + [PEER]
    return Setup(a.world, a.backend, a.preset, a.steps, tuple(variants), a.batch, a.seq,
                 a.pool, a.lr, warmup=a.warmup)


# ---------------------------------------------------------------------------------------------
# one training run (shared by the reference and every rank)

def token_pool(setup: Setup) -> torch.Tensor:
    """[pool, batch, seq] token ids, the same in every process (CPU generator)."""
    from qsgd.models.llama import PRESETS

    gen = torch.Generator().manual_seed(setup.data_seed)
    return torch.randint(PRESETS[setup.preset].vocab_size, (setup.pool, setup.batch, setup.seq),
                         generator=gen)


def make_model(setup: Setup, device: torch.device):
    """The float32 CompactLlama with the seeded Llama init, on ``device``."""
    from qsgd.models.llama import PRESETS, CompactLlama, default_inv_freq, random_state

    shape = PRESETS[setup.preset]
    model = CompactLlama(shape, default_inv_freq(shape), amp=False)
    model.load_state_dict(random_state(shape, setup.init_seed), strict=False)  # tied head
    return model.to(device)


def make_optimizer(setup: Setup, variant: str, params, device: torch.device,
                   noise_seed: int | None = None) -> torch.optim.Optimizer:
    """SuperpositionalAdamW of the variant id, or the peer torch.optim.AdamW."""
    import qsgd
    from qsgd.variants import parse_variant

    if variant == PEER:
        fused = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.AdamW(params, lr=setup.lr, weight_decay=setup.weight_decay, **fused)
    seed = setup.noise_seed if noise_seed is None else noise_seed
    return qsgd.SuperpositionalAdamW(params, lr=setup.lr, weight_decay=setup.weight_decay,
                                     seed=seed, **parse_variant(variant).optimizer_kwargs())


def loss_args(tokens: torch.Tensor, device: torch.device) -> tuple:
    """The arguments of :meth:`CompactLlama.loss` for rows of tokens: one document a row,
    next-token targets at every position but the last, the mean over the scored tokens."""
    rows, seq = tokens.shape
    ids = tokens.to(device)
    pos = torch.arange(seq, device=device).expand(rows, seq)
    doc = torch.zeros(rows, seq, dtype=torch.long, device=device)
    flat = (torch.arange(rows, device=device)[:, None] * seq
            + torch.arange(seq - 1, device=device)).reshape(-1)
    tgt = ids[:, 1:].reshape(-1)
    return ids, pos, doc, flat, tgt, torch.tensor(float(tgt.numel()), device=device)


def train(setup: Setup, model, opt, rows: slice, device: torch.device,
          world: int = 1) -> dict:
    """``setup.steps`` steps on ``rows`` of each pool batch; the loss curve (averaged over the
    ranks when ``world`` > 1), and the wall ms of each whole step and of each ``opt.step()``."""
    import torch.distributed as dist

    pool = token_pool(setup)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    losses, step_ms, opt_ms = [], [], []
    for t in range(setup.steps):
        args = loss_args(pool[t % setup.pool, rows], device)
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(*args)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        sync()
        t2 = time.perf_counter()
        loss = loss.detach()
        if world > 1:
            dist.all_reduce(loss)  # SUM: gloo has no AVG
            loss = loss / world
        losses.append(float(loss))
        step_ms.append((time.perf_counter() - t0) * 1e3)
        opt_ms.append((t2 - t1) * 1e3)
    return dict(losses=losses, step_ms=step_ms, opt_ms=opt_ms)


def _state_mib(opt: torch.optim.Optimizer) -> float:
    """MiB of the optimizer state this process holds (a DTensor's local shard only)."""
    total = 0
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                local = v.to_local() if hasattr(v, "to_local") else v
                total += local.numel() * local.element_size()
    return total / 2**20


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def full_float32_products():
    """CUDA float32 matrix products in full float32 (no TF32) inside, restored after: the
    reference runs in the caller's process, whose setting another part of a program may have
    changed (the LLM arm turns TF32 on), and the ranks start with torch's default (off); the
    check compares the optimizer's sharding, not two precisions of the products."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def reference(setup: Setup, variant: str, noise_seed: int | None = None) -> dict:
    """The one-process, unsharded run of a variant: its curve, timings, final parameters."""
    with full_float32_products():
        return _reference(setup, variant, noise_seed)


def _reference(setup: Setup, variant: str, noise_seed: int | None) -> dict:
    device = torch.device(setup.device)
    _reset_peak(device)
    model = make_model(setup, device)
    opt = make_optimizer(setup, variant, model.parameters(), device, noise_seed)
    out = train(setup, model, opt, slice(None), device)
    out["params"] = [p.detach().cpu().clone() for p in model.parameters()]
    out["peak_mib"] = [_peak_mib(device)]
    out["state_mib"] = _state_mib(opt)
    return out


# ---------------------------------------------------------------------------------------------
# the sharded runs

def _worker(rank: int, setup: Setup, world: int, folder: str) -> None:
    """Rank ``rank`` of ``world``: every variant in turn under FSDP2; writes rank<r>.pt."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if setup.device == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        # the ranks share the host's cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        device = torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # as the reference (full_float32_products)
    dist.init_process_group(setup.backend, rank=rank, world_size=world,
                            init_method=f"file://{folder}/rendezvous")
    try:
        mesh = init_device_mesh(setup.device, (world,))
        per = setup.batch // world
        results = {}
        for variant in setup.variants:
            _reset_peak(device)
            model = make_model(setup, device)
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            register_fsdp_forward_method(model, "loss")  # the training forward is loss()
            opt = make_optimizer(setup, variant, model.parameters(), device)
            out = train(setup, model, opt, slice(rank * per, (rank + 1) * per), device, world)
            with torch.no_grad():  # full_tensor() is a collective: every rank calls it
                full = [p.full_tensor().cpu() for p in model.parameters()]
            out["params"] = full if rank == 0 else None
            out["peak_mib"] = _peak_mib(device)
            out["state_mib"] = _state_mib(opt)
            results[variant] = out
            del model, opt
        torch.save(results, f"{folder}/rank{rank}.pt")
        # no rank tears its process group down while another still has work in flight (gloo
        # worker threads holding async work at exit abort the process: seen once, on 2 cores)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def sharded(setup: Setup, world: int) -> dict[str, dict]:
    """Every variant's FSDP2 run over ``world`` processes: rank 0's curve, timings and
    gathered parameters, each rank's peak memory and the largest state a rank holds."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="qsgd-multigpu-") as folder:
        mp.spawn(_worker, args=(setup, world, folder), nprocs=world, join=True)
        ranks = [torch.load(f"{folder}/rank{r}.pt", weights_only=False) for r in range(world)]
    out = {}
    for variant in setup.variants:
        row = dict(ranks[0][variant])
        row["peak_mib"] = [r[variant]["peak_mib"] for r in ranks]
        row["state_mib"] = max(r[variant]["state_mib"] for r in ranks)
        out[variant] = row
    return out


# ---------------------------------------------------------------------------------------------
# comparison and outputs

def curve_diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """(max, mean) over the steps of |a − b| / |b|."""
    rel = [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True)]
    return max(rel), statistics.fmean(rel)


def param_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def expectation(variant: str) -> str:
    """What the design predicts: ``equal`` for an elementwise term or one that reads its whole
    tensor through the shard's layout (``Perturbation.shard_invariant``: every built-in one;
    ``first_n`` too, FSDP2's ``Shard(0)`` shards being ranges of the flattened tensor) and for
    the peer, ``per-shard`` otherwise (a custom term that reads several entries of its shard
    alone)."""
    from qsgd.perturbations import perturbation_class
    from qsgd.variants import parse_variant

    if variant == PEER:
        return "equal"
    cls = perturbation_class(parse_variant(variant).perturbation)
    return "equal" if cls.elementwise or cls.shard_invariant else "per-shard"


def _median_after(xs: list[float], warmup: int) -> float:
    return statistics.median(xs[warmup:])


def compare(setup: Setup, variant: str, ref: dict, run: dict, w1: dict | None,
            spread: dict | None) -> dict:
    """One CSV row (:data:`CSV_COLUMNS`) of a variant's runs."""
    lmax, lmean = curve_diff(run["losses"], ref["losses"])
    row = dict(
        variant=variant, optimizer="torch.optim.AdamW" if variant == PEER
        else "qsgd.SuperpositionalAdamW", expected=expectation(variant), world=setup.world,
        backend=setup.backend, device=setup.device, preset=setup.preset, steps=setup.steps,
        loss_rel_max=lmax, loss_rel_mean=lmean, param_max_abs=param_diff(run["params"],
                                                                         ref["params"]),
        w1_loss_rel_max="", w1_param_max_abs="", w1_ref_param_max_abs="",
        seed_spread_rel_max="", seed_spread_param_max="",
        ref_final_loss=ref["losses"][-1], final_loss=run["losses"][-1],
        step_ms=_median_after(run["step_ms"], setup.warmup),
        ref_step_ms=_median_after(ref["step_ms"], setup.warmup),
        opt_ms=_median_after(run["opt_ms"], setup.warmup),
        ref_opt_ms=_median_after(ref["opt_ms"], setup.warmup),
        peak_mem_mib=";".join(f"{m:.1f}" for m in run["peak_mib"] if m is not None),
        state_mib=run["state_mib"],
    )
    if w1 is not None:
        row["w1_loss_rel_max"] = curve_diff(run["losses"], w1["losses"])[0]
        row["w1_param_max_abs"] = param_diff(run["params"], w1["params"])
        row["w1_ref_param_max_abs"] = param_diff(w1["params"], ref["params"])
    if spread is not None:
        row["seed_spread_rel_max"] = curve_diff(spread["losses"], ref["losses"])[0]
        row["seed_spread_param_max"] = param_diff(spread["params"], ref["params"])
    return row


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _g(x, spec: str = ".2e") -> str:
    return "—" if x in ("", None) else format(x, spec)


def write_markdown(path: Path, setup: Setup, rows: list[dict], meta: dict) -> None:
    """The generated report: setup, device, versions, commit, the table and a reading."""
    lines = [
        "# FSDP2 at world size > 1: SuperpositionalAdamW against one process",
        "",
        f"Generated by `{setup.command}` (and `--out`); do not edit. The method is the "
        "module docstring of ablations/multigpu.py.",
        "",
        f"- commit {meta['commit']}{' (dirty)' if meta['dirty'] else ''}, {meta['utc']}",
        f"- device: {meta['device']}; torch {meta['torch']}, python {meta['python']}; "
        f"1-min load average at the start {meta['load']}",
        f"- world size {setup.world}, backend {setup.backend}, `fully_shard` on each of the "
        f"{meta['layers']} decoder layers and the root; preset `{setup.preset}` "
        f"({meta['n_params'] / 1e6:.2f}M parameters), float32",
        f"- {setup.steps} steps, lr {setup.lr:g}, weight decay {setup.weight_decay:g}; global "
        f"batch {setup.batch} rows × {setup.seq} tokens ({setup.batch // setup.world} rows a "
        f"rank), {setup.pool} fixed random batches cycled; init seed {setup.init_seed}, data "
        f"seed {setup.data_seed}, noise seed {setup.noise_seed}",
        f"- timings: median wall ms after {setup.warmup} warm-up step(s), rank 0; step = forward, "
        "backward, optimizer step and loss all-reduce; opt = `optimizer.step()` alone"
        + ("" if setup.device == "cuda" else
           f"; on the CPU each rank uses {meta['threads']} thread(s) and the reference "
           f"{torch.get_num_threads()}, on a host shared with other jobs"),
        "- peak memory: " + ("CUDA max_memory_allocated per rank" if setup.device == "cuda"
                             else "n/a on the CPU")
        + "; state: optimizer state a rank holds (max over ranks; the reference's in brackets)",
        f"- wall time of the whole check: {meta['wall']:.0f} s",
        "",
        "Loss rel: |L_sharded − L_ref| / L_ref per step, max and mean over the steps; param: "
        "max |θ_sharded − θ_ref| over every entry at the end; vs w1: the sharded run against "
        "the FSDP2 run at world size 1 (loss rel max / param); w1 = ref: the world-1 FSDP2 run "
        "against the reference (param); seed spread: the reference against itself with noise "
        "seed + 1 (loss rel max / param).",
        "",
        "| variant | expected | loss rel max | loss rel mean | param max | vs w1 | w1 = ref | "
        "seed spread | final loss (ref) | step ms (ref) | opt ms (ref) | peak MiB | "
        "state MiB (ref) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['expected']} | {_g(r['loss_rel_max'])} | "
            f"{_g(r['loss_rel_mean'])} | {_g(r['param_max_abs'])} | "
            f"{_g(r['w1_loss_rel_max'])} / {_g(r['w1_param_max_abs'])} | "
            f"{_g(r['w1_ref_param_max_abs'])} | {_g(r['seed_spread_rel_max'])} / "
            f"{_g(r['seed_spread_param_max'])} | "
            f"{r['final_loss']:.4f} ({r['ref_final_loss']:.4f}) | {r['step_ms']:.1f} "
            f"({r['ref_step_ms']:.1f}) | {r['opt_ms']:.2f} ({r['ref_opt_ms']:.2f}) | "
            f"{r['peak_mem_mib'] or 'n/a'} | {r['state_mib']:.2f} "
            f"({meta['ref_state'][r['variant']]:.2f}) |")
    lines += ["", "## Reading", "", reading(rows), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def reading(rows: list[dict]) -> str:
    """The paragraph under the table, from the figures (no verdict is written by hand)."""
    equal = [r for r in rows if r["expected"] == "equal"]
    shard = [r for r in rows if r["expected"] != "equal"]
    parts = []
    if equal:
        worst = max(equal, key=lambda r: r["loss_rel_max"])
        parts.append(
            f"The shard-invariant rows ({', '.join(r['variant'] for r in equal)}) follow the "
            f"one-process run to at most {worst['loss_rel_max']:.1e} relative loss difference "
            f"({worst['variant']}) and {max(r['param_max_abs'] for r in equal):.1e} in any "
            "parameter: float32 rounding of the split batch and of the reordered gradient "
            "sum, as the optimizer's contract says.")
        noisy = [r for r in equal if r["seed_spread_param_max"] != ""]
        for r in noisy:
            parts.append(
                f"{r['variant']} draws keyed noise by global position and takes its RMS over "
                f"the whole tensor, so it is {r['loss_rel_max']:.1e} (loss) and "
                f"{r['param_max_abs']:.1e} (parameter) from the one-process run, where a new "
                f"noise seed moves the run by {r['seed_spread_rel_max']:.1e} and "
                f"{r['seed_spread_param_max']:.1e}.")
    floor = max((r["param_max_abs"] for r in equal), default=None)
    for r in shard:
        txt = (f"{r['variant']} reads several entries of its local shard alone (it is "
               "neither elementwise nor shard-invariant), so its run differs from the "
               "one-process run by up to "
               f"{r['loss_rel_max']:.1e} in the loss (mean {r['loss_rel_mean']:.1e}) and "
               f"{r['param_max_abs']:.1e} in a parameter")
        if floor is not None:
            txt += f", against {floor:.1e} for the shard-invariant rows"
        if r["w1_ref_param_max_abs"] != "":
            txt += (f"; FSDP2 at world size 1 is {r['w1_ref_param_max_abs']:.1e} from the "
                    f"reference and the world-{r['world']} run {r['w1_param_max_abs']:.1e} "
                    "from world 1, so the difference is the sharding's")
        if r["seed_spread_param_max"] != "":
            sp, d = r["seed_spread_param_max"], r["param_max_abs"]
            how = ("about as much as" if sp / 3 <= d <= 3 * sp
                   else "more than" if d > sp else "less than")
            txt += (f"; two noise seeds of the one-process run differ by "
                    f"{r['seed_spread_rel_max']:.1e} in the loss and {sp:.1e} in a parameter, "
                    f"so sharding changes the run {how} a new noise draw does")
        parts.append(txt + ".")
    peer = next((r for r in rows if r["variant"] == PEER), None)
    qs = next((r for r in rows if r["variant"] == "adamw"), None)
    if peer is not None and qs is not None:
        parts.append(
            f"Under the same FSDP2 setup a SuperpositionalAdamW step (adamw) took "
            f"{qs['opt_ms']:.2f} ms against {peer['opt_ms']:.2f} ms for torch.optim.AdamW "
            f"(whole steps {qs['step_ms']:.1f} and {peer['step_ms']:.1f} ms).")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """The command: exit 0 when the files are written, 2 with one line for bad input."""
    from .cli_support import guarded

    args = parser().parse_args(argv)
    return guarded(lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    """Validate, run every variant's three runs, write multigpu.csv and multigpu.md."""
    setup, out = make_setup(args), args.out
    from ablations.provenance import commit_info, cpu_device, utc_now
    from qsgd.models.llama import PRESETS
    from qsgd.perturbations import perturbation_class
    from qsgd.variants import parse_variant

    start = time.perf_counter()
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else "n/a"
    utc = utc_now()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    refs, spreads = {}, {}
    for variant in setup.variants:
        refs[variant] = reference(setup, variant)
        log(f"reference {variant}: loss {refs[variant]['losses'][0]:.4f} -> "
            f"{refs[variant]['losses'][-1]:.4f}")
        if variant != PEER and perturbation_class(parse_variant(variant).perturbation).stochastic:
            spreads[variant] = reference(setup, variant, setup.noise_seed + 1)
    runs = sharded(setup, setup.world)
    log(f"world {setup.world} ({setup.backend}) done")
    w1 = sharded(setup, 1) if setup.world > 1 else runs
    log("world 1 done")
    rows = [compare(setup, v, refs[v], runs[v], w1[v], spreads.get(v)) for v in setup.variants]
    for r in rows:
        log(f"{r['variant']}: loss rel max {r['loss_rel_max']:.2e}, param max "
            f"{r['param_max_abs']:.2e}, step {r['step_ms']:.1f} ms, opt {r['opt_ms']:.2f} ms")
    sha, dirty = commit_info()
    shape = PRESETS[setup.preset]
    meta = dict(commit=sha, dirty=dirty, utc=utc, torch=torch.__version__,
                python=platform.python_version(), load=load,
                device=(torch.cuda.get_device_name(0) + f" ×{setup.world}")
                if setup.device == "cuda" else cpu_device(),
                layers=shape.num_layers, n_params=shape.n_params(),
                threads=max(1, (os.cpu_count() or 1) // setup.world),
                ref_state={v: refs[v]["state_mib"] for v in setup.variants},
                wall=time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "multigpu.csv", rows)
    write_markdown(out / "multigpu.md", setup, rows, meta)
    log(f"wrote {out / 'multigpu.csv'} and {out / 'multigpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
