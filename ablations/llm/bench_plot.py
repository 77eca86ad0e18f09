"""The figure of the LLM throughput benchmark: ``throughput_bench.png`` beside its CSV.

One horizontal bar per timed row of ``throughput_bench.csv`` (the compiled Hugging Face peer,
then the arm's variants), its length the row's tokens per second; where the CSV has a
``spread`` column (the bench's interleaved rounds: (max − min) / median of a row's segment
times) a whisker spans it. Reference lines: the peer's throughput (×1) and the issue's targets,
twice the peer for the arm and 0.95 of the arm's AdamW for every variant, and where the bench
measured it, the matrix-product floor (the ``floor:`` row: the most tokens/s any loop running
the step's matrix products can reach). Rows that time nothing (checks, test loss, decoding)
and lr-check rows are left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..style import BASELINE_COLOR, REFERENCE_COLOR, new_figure, themed, variant_color

__all__ = ["plot_bench", "bench_rows"]

#: the config prefix of the peer's row (bench.PEER), of the arm's rows and of the floor's
_PEER, _ARM, _FLOOR = "HF peer", "arm loop", "floor:"


def _pct(text: str) -> float | None:
    text = (text or "").strip().rstrip("%")
    try:
        return float(text) / 100
    except ValueError:
        return None


def bench_rows(csv_path: Path) -> list[dict]:
    """The timed rows of a ``throughput_bench.csv``: the peer's and the arm's, each with
    ``label``, ``variant``, ``tokens_per_s`` (float), ``spread`` (fraction or None) and
    ``peer`` (whether it is the peer's row), in the file's order."""
    out = []
    with open(csv_path, newline="") as fh:
        for r in csv.DictReader(fh):
            config = r.get("config", "")
            if not config.startswith((_PEER, _ARM)) or not r.get("tokens_per_s"):
                continue
            peer = config.startswith(_PEER)
            out.append(dict(label="HF peer (adamw)" if peer else r["variant"],
                            variant=r["variant"], tokens_per_s=float(r["tokens_per_s"]),
                            spread=_pct(r.get("spread", "")), peer=peer))
    return out


@themed
def plot_bench(csv_path: Path, out_png: Path, title: str = "") -> Path | None:
    """Draw ``out_png`` from ``csv_path`` (:func:`bench_rows`); None when the CSV times no
    row. Returns the path written."""
    rows = bench_rows(csv_path)
    if not rows:
        return None
    with open(csv_path, newline="") as fh:
        floor = next((float(r["tokens_per_s"]) / 1e3 for r in csv.DictReader(fh)
                      if r.get("config", "").startswith(_FLOOR) and r.get("tokens_per_s")),
                     None)
    fig, axes = new_figure(1, 1, 7.0, 0.32 * len(rows) + 1.6)
    ax = axes[0, 0]
    y = list(range(len(rows)))[::-1]
    vals = [r["tokens_per_s"] / 1e3 for r in rows]
    colors = [BASELINE_COLOR if r["peer"] else variant_color(r["variant"]) for r in rows]
    err = [[v * (r["spread"] or 0) / 2 for v, r in zip(vals, rows, strict=True)]] * 2
    ax.barh(y, vals, color=colors, height=0.7,
            xerr=err if any(r["spread"] for r in rows) else None,
            error_kw=dict(ecolor=".2", capsize=2, lw=0.8))
    ax.set_yticks(y, [r["label"] for r in rows])
    peer = next((v for v, r in zip(vals, rows, strict=True) if r["peer"]), None)
    adamw = next((v for v, r in zip(vals, rows, strict=True)
                  if not r["peer"] and r["variant"] == "adamw"), None)
    lines = []
    if peer:
        lines += [(peer, "-", "HF peer"), (2 * peer, "--", "2× the peer (target)")]
    if adamw:
        lines.append((0.95 * adamw, ":", "0.95 × the arm's adamw (target)"))
    if floor:
        lines.append((floor, "-.", "matrix-product floor (bound)"))
    for x, style, label in lines:
        ax.axvline(x, color=REFERENCE_COLOR, ls=style, lw=1, label=label)
    if lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlabel("thousand tokens per second" + (" (whiskers: spread over rounds)"
                                                 if any(r["spread"] for r in rows) else ""))
    ax.set_title(title or "LLM arm against the compiled Hugging Face peer")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=130)
    return out_png
