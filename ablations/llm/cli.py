"""The LLM arm's command line, ``python -m ablations.llm``:

* ``train``: one run (under ``torchrun --nproc-per-node N``: data-parallel); prints the JSON
  record's result part and writes it to ``--out``;
* ``bench``: the throughput benchmark → ``OUT/throughput_bench.{csv,md}`` (``--steps N``
  times the first N steps of each epoch: the paper's batch-1 epoch at the 1B shape, C4),
  with the compiled Hugging Face peer on the same packed rows (``--no-peer`` skips it); the
  rows timed in ``--rounds R`` interleaved rounds (median and spread); ``--profile K``
  writes torch.profiler tables of K steps of the arm and of the peer;
* ``decode-check``: CUDA-graph against eager greedy decoding, timed;
* ``summary``: the per-variant throughput of a grid's ``runs.jsonl`` →
  ``OUT/throughput.{csv,md}``.

Options come from a grid TOML's ``[llm]`` table (``--config``) and ``--set key=value``
overrides (typed by the option's default). torch is imported only by the commands that need it.

Exit status: 0 done; 2 bad input (one line ``error: ...`` naming the file, line or option: a
config, a GSM8K file, a missing file); 130 interrupted; ``--debug`` shows the traceback instead
(:mod:`ablations.cli_support`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..cli_support import UsageError, add_debug_flag, guarded
from .options import LLMOptions

__all__ = ["main"]


def _options_from(config: Path | None, sets: list[str]) -> dict[str, Any]:
    # the [llm] table with the --set overrides, as a dict checked by LLMOptions.from_dict
    opts: dict[str, Any] = {}
    if config is not None:
        from ..config import read_config

        opts.update(read_config(config).get("llm", {}))
    for item in sets:
        k, _, v = item.partition("=")
        if not _:
            raise UsageError(f"--set needs key=value, got {item!r}")
        default = getattr(LLMOptions, k, None)
        try:
            if isinstance(default, bool):
                opts[k] = v.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                opts[k] = int(v)
            elif isinstance(default, float):
                opts[k] = float(v)
            else:
                opts[k] = v
        except ValueError:
            raise UsageError(f"--set {k}: {v!r} is not a {type(default).__name__}") from None
    try:  # validated here too, so that a typo is one line before anything loads
        LLMOptions.from_dict(opts)
    except ValueError as err:
        where = ", ".join(([str(config)] if config is not None else []) + ["--set"] * bool(sets))
        raise UsageError(f"{where}: {err}") from None
    return opts


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit code."""
    # the description is the first line of the package's docstring
    ap = argparse.ArgumentParser(prog="python -m ablations.llm", description=sys.modules[
        __package__].__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="one run (under torchrun: data-parallel); prints JSON")
    tr.add_argument("--config", type=Path, default=None, help="a grid TOML; its [llm] table")
    tr.add_argument("--set", action="append", default=[], help="override an option: key=value")
    tr.add_argument("--variant", default="adamw")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--lr", type=float, default=0.0)
    tr.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    bn = sub.add_parser("bench", help="throughput figures, the arm against the compiled HF "
                        "peer -> OUT/throughput_bench.{csv,md}", description=(
                            "Time the arm's loop per variant and, on the same packed rows, "
                            "the compiled Hugging Face peer (transformers' LlamaForCausalLM, "
                            "SDPA, torch.compile, autocast over float32 weights, fused torch "
                            "AdamW; labels -100 outside the answer tokens the arm scores): "
                            "tokens/s, ratio_to_peer, step time, peak memory, MFU from one "
                            "FLOP count."))
    bn.add_argument("--config", type=Path, default=None)
    bn.add_argument("--set", action="append", default=[])
    bn.add_argument("--variants", default="adamw,sin-l0.5,sin-l0.1,sin-l0.5-first4,cos-l0.5,"
                    "gauss-l0.5,unif-l0.5,taylor-l0.5,circuit-l0.5,anneal,annealrel-l1.0,"
                    "anti-l0.5,moment-l0.5")
    bn.add_argument("--baseline-steps", type=int, default=40,
                    help="example batching: steps of the plain eager HF loop at batch 1 "
                         "(0: skip it)")
    bn.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                    help="packed batching: time the compiled HF peer (LlamaForCausalLM, "
                         "SDPA, torch.compile unless --set compile=false, autocast, fused "
                         "torch AdamW) on the arm's packed rows, over the same steps as the "
                         "arm, and give every arm row its ratio_to_peer (default: on)")
    dc = sub.add_parser("decode-check", help="CUDA-graph vs eager greedy decoding, timed")
    dc.add_argument("--config", type=Path, default=None)
    dc.add_argument("--set", action="append", default=[])
    dc.add_argument("--n", type=int, default=64)
    su = sub.add_parser("summary", help="per-variant throughput of a grid's runs.jsonl")
    su.add_argument("runs", type=Path)
    su.add_argument("--out", type=Path, default=Path("results/llm"))
    su.add_argument("--bench", type=Path, default=None, help="a throughput_bench.csv")
    su.add_argument("--decode-log", type=Path, default=None, help="a decode-check log")
    bn.add_argument("--lrs", default="", help="extra adamw epochs at these lrs (comma list)")
    bn.add_argument("--steps", type=int, default=0,
                    help="time only the first N steps of each epoch and extrapolate the "
                         "epoch's seconds (0: the whole epoch)")
    bn.add_argument("--rounds", type=int, default=3,
                    help="split the timed steps into R segments of N // R steps, each from "
                         "the base weights, and time them in R rounds that run every row "
                         "(the peer, then each variant) once, the order rotating by one row "
                         "a round; a row's figures are its median segment's, spread = "
                         "(max - min) / median; 0: as many rounds as rows, every row once "
                         "in every position (default: 3)")
    bn.add_argument("--profile", type=int, default=0,
                    help="after the rounds, profile K steps of the adamw arm loop and K of "
                         "the peer with torch.profiler -> OUT/profile_arm.txt, "
                         "OUT/profile_peer.txt (0: off)")
    bn.add_argument("--out", type=Path, default=Path("results/llm"))
    add_debug_flag(ap, (tr, bn, dc, su))
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    source = args.runs if args.cmd == "summary" else args.config
    return guarded(lambda: _command(args), debug=args.debug, source=source)


def _command(args: argparse.Namespace) -> int:
    if args.cmd == "summary":
        from .summary import throughput_summary

        print(throughput_summary(args.runs, args.out, args.bench, args.decode_log))
        return 0
    opts = _options_from(args.config, args.set)
    if args.cmd == "decode-check":
        from .bench import decode_check

        decode_check(LLMOptions.from_dict(opts), args.n)
        return 0
    if args.cmd == "train":
        from types import SimpleNamespace

        from .session import dist_info
        from .train import run

        spec = SimpleNamespace(variant=args.variant, seed=args.seed, lr=args.lr, config=opts)
        out = run(spec)
        if dist_info().rank == 0:
            text = json.dumps(out, indent=1)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text)
            print(text)
        if dist_info().world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return 0
    from .bench import benchmark

    if args.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {args.steps}")
    if args.rounds < 0:
        raise UsageError(f"--rounds must be >= 1, or 0 for one round per row, got "
                         f"{args.rounds}")
    if args.profile < 0:
        raise UsageError(f"--profile must be >= 0, got {args.profile}")
    benchmark(LLMOptions.from_dict(opts), [v for v in args.variants.split(",") if v],
              args.baseline_steps, args.out, [float(x) for x in args.lrs.split(",") if x],
              max_steps=args.steps, peer=args.peer, rounds=args.rounds, profile=args.profile,
              command="python -m ablations.llm " + " ".join(
                  shlex.quote(a) for a in args.argv))
    return 0
