"""Figures of the theory report. Each function takes a finished :class:`~theory.base.Check`
and returns a matplotlib Figure (or None when the check has nothing to draw); the report
saves them. Nothing here computes a result or writes a file.

Figures share the ablation reports' look: drawn under :func:`ablations.style.themed` on a
:func:`ablations.style.new_figure` (Agg canvas, no ``pyplot`` state, constrained layout)."""

from __future__ import annotations

import math

from ablations.style import new_figure, themed

from .base import Check

__all__ = ["FIGURES", "figures_for"]


@themed
def escape_rates(check: Check):
    """T2: escape rates with Wilson 95% intervals, per landscape and variant."""
    rows = check.data.get("rows", [])
    conds = [c for c in ("near", "noisy", "noisy ×1e-3") if any(r["condition"] == c
                                                                 for r in rows)]
    if not rows or not conds:
        return None
    lands = list(dict.fromkeys(r["landscape"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = new_figure(len(lands), 1, 10, 2.4 * len(lands) + 0.4, sharex=True)
    axes = list(axes[:, 0])
    width = 0.8 / len(conds)
    colors = {"near": "#999999", "noisy": "#1f77b4", "noisy ×1e-3": "#ff7f0e"}
    for ax, land in zip(axes, lands):
        for j, cond in enumerate(conds):
            sub = {r["variant"]: r for r in rows if r["landscape"] == land
                   and r["condition"] == cond}
            xs = [i + (j - (len(conds) - 1) / 2) * width for i in range(len(variants))]
            ys = [sub[v]["escape_rate"] for v in variants]
            lo = [max(0.0, sub[v]["escape_rate"] - sub[v]["ci_low"]) for v in variants]
            hi = [max(0.0, sub[v]["ci_high"] - sub[v]["escape_rate"]) for v in variants]
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=colors[cond], label=cond)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="x", visible=False)  # grid lines through the bars read as data
        ax.set_ylabel("escaped")
        ax.set_title(land, fontsize=9)
        ax.axhline(0, color="k", lw=0.5)
    axes[0].legend(fontsize=8, ncol=len(conds), loc="upper left")
    axes[-1].set_xticks(range(len(variants)))
    axes[-1].set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
    fig.suptitle("T2: share of runs ending outside the starting well (Wilson 95% CI)")
    return fig


@themed
def ratio_trace(check: Check):
    """T3: ‖λQ‖/‖A‖ during classifier training, measured and estimated."""
    tr = check.data.get("trace")
    if not tr or not tr.get("step"):
        return None
    fig, axes = new_figure(1, 1, 7.5, 4)
    ax = axes[0, 0]
    ax.semilogy(tr["step"], tr["measured"], "k-", lw=2, label="measured (optimizer)")
    ax.semilogy(tr["step"], tr["sine_scale"], "C0--",
                label="estimate: per-tensor rms(sin πθ)·rms(g)")
    ax.semilogy(tr["step"], tr["per_tensor"], "C1:", label="estimate: per-tensor π·rms(θ)·rms(g)")
    ax.semilogy(tr["step"], tr["global"], "C2-.", label="estimate: global π·θ_rms·g_rms")
    llm = check.data.get("llm_ratio")
    if llm is not None and math.isfinite(llm):
        ax.axhline(llm, color="C3", lw=1.5,
                   label=f"{check.data.get('llm_name')}, step 1: {llm:.1e}")
    ax.set_xlabel("classifier training step")
    ax.set_ylabel("‖λQ‖ / ‖m̂/(√v̂+ε)‖")
    ax.set_title("T3: size of the sine term relative to Adam's step (λ = 0.5)")
    # below the axes: inside, the legend covered the LLM's line near the bottom
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2,
               fontsize=8)
    return fig


@themed
def stability_map(check: Check):
    """T4: predicted and simulated outcome per minimum and regime."""
    reg = check.data.get("regimes")
    if not reg:
        return None
    import numpy as np

    fig, axes = new_figure(2, 1, 8, 6, gridspec_kw={"height_ratios": [2, 1.2]})
    ax, ax2 = axes[:, 0]
    for i, r in enumerate(reg.values()):
        stars = np.array(r["theta_star"])
        pred = np.array(r["predicted"])
        att = np.array(r["attracted"])
        half = len(stars) // 2
        for k, side in ((slice(0, half), -0.12), (slice(half, None), 0.12)):
            xs = stars[k]
            ax.scatter(xs, np.full(len(xs), i + side), c=np.where(att[k], "tab:green", "tab:red"),
                       marker="o", s=40, zorder=3)
            ax.scatter(xs, np.full(len(xs), i + side), facecolors="none",
                       edgecolors=np.where(pred[k], "tab:green", "tab:red"), marker="s", s=110,
                       zorder=2)
    ax.set_yticks(range(len(reg)))
    ax.set_yticklabels(list(reg), fontsize=8)
    ax.set_xlabel("minimum θ* (two starts each, θ* ∓ p/8)")
    ax.set_title("T4: filled = simulated, square = predicted; green attract, red repel",
                 fontsize=9)
    th = np.linspace(-1.05, 0.9, 400)
    ax2.plot(th, np.sin(np.pi * th), "k-", label="sin(πθ)")
    for lam, c in ((0.5, "C0"), (2.0, "C1")):
        ax2.axhline(-1 / lam, color=c, ls="--", lw=1, label=f"−1/λ, λ = {lam}")
    ax2.set_xlabel("θ")
    ax2.legend(fontsize=8, ncol=3)
    ax2.set_title("GD + sine repels a minimum iff sin(πθ*) < −1/λ", fontsize=9)
    return fig


@themed
def spectra(check: Check):
    """T6: |c_ω| of Φ(s) for several circuits; the predicted degree as a dashed line."""
    sp = check.data.get("spectra")
    if not sp:
        return None
    keys = [k for k in sp if k.endswith("amp") and k.startswith("n=2")]
    keys += [k for k in sp if k.startswith("n=3, depth=2") or k == "n=1, depth=2, amp"]
    keys = list(dict.fromkeys(keys))[:5]
    # at most three panels a row: six in one row made a strip too wide to read
    ncols = min(3, len(keys) + 1)
    nrows = math.ceil((len(keys) + 1) / ncols)
    fig, grid = new_figure(nrows, ncols, 3.6 * ncols, 2.9 * nrows + 0.4)
    axes = list(grid.flat)
    for ax in axes[len(keys) + 1:]:
        ax.set_visible(False)
    for ax, k in zip(axes, keys):
        s = sp[k]
        ax.bar(s["omega"], s["amp"], width=0.35)
        ax.axvline(s["bound"], color="r", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(1e-18, 2)
        ax.set_title(k, fontsize=8)
        ax.set_xlabel("ω")
    for row in grid:
        row[0].set_ylabel("|c_ω|")
    main = next((v for v in sp.values() if v.get("phi")), None)
    last = axes[len(keys)]
    if main:
        last.plot(main["s"], main["phi"], "k-")
        last.set_title("Φ(s), 2 qubits, depth 2 (classifier)", fontsize=8)
        last.set_xlabel("score s")
        last.set_ylabel("Φ(s)")
    fig.suptitle("T6: spectrum of the attention term; dashed: predicted degree", fontsize=10)
    return fig


@themed
def power_curves(check: Check):
    """T8: power of the paired t test against the number of seeds, per claim."""
    cur = check.data.get("curves")
    if not cur:
        return None
    fig, axes = new_figure(1, 1, 6.5, 4)
    ax = axes[0, 0]
    for cid, c in cur.items():
        ax.plot(c["n"], c["power"], label=cid)
    ax.axhline(0.8, color="k", ls="--", lw=1)
    ax.set_xlabel("seeds (paired)")
    ax.set_ylabel("power at the claimed effect")
    ax.set_ylim(0, 1.02)
    ax.set_title("T8: seeds needed for the paper's claimed effects")
    ax.legend()
    return fig


@themed
def scale_curves(check: Check):
    """T9: per problem, the share of coordinates climbing at step 1 (predicted curve,
    measured points) and the share of draws whose loss did not fall, against the loss
    scale c."""
    rows, curves = check.data.get("rows"), check.data.get("curves")
    if not rows or not curves:
        return None
    fig, axes = new_figure(1, 2, 11, 4)
    left, right = axes[0]
    markers = {"sin-l0.5": "o", "sinnorm-l0.5": "s", "adamw": "^"}
    for i, (name, cur) in enumerate(curves.items()):
        color = f"C{i}"
        label = check.data.get("short", {}).get(name, name)
        left.plot(cur["c"], cur["climbing"], color=color, label=f"{label}: predicted")
        for variant, m in markers.items():
            sub = sorted((r for r in rows if r["problem"] == name and r["variant"] == variant),
                         key=lambda r: r["scale c"])
            xs = [r["scale c"] for r in sub]
            left.plot(xs, [r["climbing (measured)"] for r in sub], m, color=color, ms=5,
                      mfc="none" if variant != "sin-l0.5" else color,
                      label=f"{label}: {variant}")
            right.plot(xs, [r["failed to fall (measured)"] / r["draws"] for r in sub],
                       m + "-", color=color, ms=5, lw=1,
                       mfc="none" if variant != "sin-l0.5" else color,
                       label=f"{label}: {variant}")
            if variant == "sin-l0.5":
                right.plot(xs, [r["failed to fall (first order)"] / r["draws"] for r in sub],
                           ":", color=color, lw=1.5, label=f"{label}: first-order prediction")
    left.axhline(0.5, color="k", ls="--", lw=0.8)
    for ax, ylabel in ((left, "coordinates climbing at step 1"),
                       (right, "draws whose loss did not fall")):
        ax.set_xscale("log")
        ax.set_xlabel("loss scale c")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle("T9: the sine term is not scale-invariant (λ = 0.5); sinnorm and AdamW are")
    return fig


FIGURES = {"T2": [("t2_escape.png", escape_rates)], "T3": [("t3_ratio.png", ratio_trace)],
           "T4": [("t4_stability.png", stability_map)], "T6": [("t6_spectrum.png", spectra)],
           "T8": [("t8_power.png", power_curves)], "T9": [("t9_scale.png", scale_curves)]}


def figures_for(check: Check) -> list[tuple[str, object]]:
    """(file name, Figure) pairs for one check (empty when it has nothing to draw)."""
    out = []
    for name, fn in FIGURES.get(check.id, []):
        fig = fn(check)
        if fig is not None:
            out.append((name, fig))
    return out
