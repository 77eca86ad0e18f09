"""The LLM arm's throughput report (``python -m ablations.llm summary``), from stored files
only: a grid's ``runs.jsonl`` and, when given, a ``bench`` CSV and a ``decode-check`` log.
No torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fmt import dict_table, write_csv
from ..records import load_records

__all__ = ["throughput_summary"]


def throughput_summary(runs: Path, out_dir: Path, bench_csv: Path | None = None,
                       decode_log: Path | None = None) -> str:
    """The arm's throughput report from stored files: per variant, the mean over its grid runs
    (``runs.jsonl``) of tokens_per_s, optimizer_share and MFU, and the ratio to adamw, as
    ``throughput.csv``; ``throughput.md`` adds the plain-loop baseline and the learning-rate
    check of a ``bench`` CSV and the decoding check's timings, when given. Returns the markdown.
    """
    import csv

    if not Path(runs).is_file():
        raise FileNotFoundError(f"no runs file at {runs}")
    recs = load_records(runs)
    by: dict[str, list[dict]] = {}
    dev = {r["provenance"]["device"] for r in recs}
    for r in recs:
        by.setdefault(r["variant"], []).append(r["metrics"])
    ref = np.mean([m["tokens_per_s"] for m in by.get("adamw", [])]) if "adamw" in by else None
    rows = []
    for vid, ms in by.items():
        tps = np.array([m["tokens_per_s"] for m in ms])
        def mean(k, ms=ms):
            return float(np.nanmean([m.get(k, float("nan")) for m in ms]))

        rows.append(dict(variant=vid, runs=len(ms), tokens_per_s=round(float(tps.mean())),
                         tokens_per_s_sd=round(float(tps.std(ddof=1))) if len(ms) > 1 else "",
                         ratio_to_adamw=round(float(tps.mean() / ref), 4) if ref else "",
                         within_5pct=bool(tps.mean() >= 0.95 * ref) if ref else "",
                         optimizer_share=round(mean("optimizer_share"), 4),
                         mfu=round(mean("mfu"), 4), train_seconds=round(mean("train_seconds"), 2),
                         eval_seconds=round(mean("eval_seconds"), 2)))
    cols = list(rows[0]) if rows else []
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "throughput.csv", cols, rows)
    commits = ", ".join(f"`{c}`" for c in sorted(
        {str(r["provenance"].get("commit", "unknown"))[:7] for r in recs}))
    md = ["# LLM arm: throughput", "",
          f"Training throughput of the grid's runs ({len(recs)} runs of "
          f"`{Path(runs).parent.name}/{Path(runs).name}`, on {', '.join(sorted(dev))}, code "
          f"{commits}; as the grid ran them: runs it packed on one GPU slowed one another): "
          "tokens_per_s counts the non-padding tokens of the epoch "
          "(prompt and answer) over the timed training loop (compilation warm-up and "
          "evaluation excluded); optimizer_share is the share of GPU step time inside "
          "optimizer.step (CUDA events); MFU = model FLOPs (forward + backward of the decoder on "
          "every token, the LM head on the scored tokens, causal attention) over time and the "
          "dense bf16 peak (989 TFLOP/s). Means over seeds; ratio_to_adamw = mean tokens/s over "
          "adamw's; within_5pct: ratio ≥ 0.95.", "", *dict_table(rows, cols)]
    if bench_csv is not None and Path(bench_csv).is_file():
        from .bench_plot import plot_bench

        png = out_dir / "throughput_bench.png"
        if not png.exists():  # the bench's own figure (titled with its device) is kept
            png = plot_bench(Path(bench_csv), png)
        with open(bench_csv, newline="") as fh:
            bench = list(csv.DictReader(fh))
        keep = [r for r in bench if r["config"].startswith(("HF ", "lr check", "check:"))
                or (r["config"].startswith("arm loop") and r["variant"] == "adamw")]
        bcols = ["config", "variant", "tokens_per_s", "ratio_to_peer", "step_ms", "spread",
                 "mfu", "peak_mem_mib", "mean_train_loss", "value", "device"]
        md += ["", f"Peer, baseline and checks from `{Path(bench_csv).name}` (`python -m "
               "ablations.llm bench`, one process, seed-0 data order; its rows of the other "
               "variants are in that file):", "", *dict_table(keep, bcols)]
        if png:
            md += ["", "Every timed row of that file: ![tokens per second of the bench's rows]"
                   "(throughput_bench.png)"]
    if decode_log is not None and Path(decode_log).is_file():
        for line in Path(decode_log).read_text().splitlines():
            if line.startswith("[decode-check]"):
                d = json.loads(line.split(" ", 1)[1])
                md += ["", f"Greedy decoding (`python -m ablations.llm decode-check`): "
                       f"{d['n']} questions in {d['graph_s']} s with the CUDA-graph step against "
                       f"{d['eager_s']} s eager ({d['identical']}/{d['n']} identical outputs); "
                       f"{d['eval_questions']} questions, as in each run's evaluation, in "
                       f"{d['eval_s']} s."]
    text = "\n".join(md) + "\n"
    (out_dir / "throughput.md").write_text(text)
    return text
