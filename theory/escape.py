"""T2: stationary points are preserved, and escape rates from shallow wells (claim C7).

Every run uses the real :class:`qsgd.SuperpositionalAdamW`. N independent runs are one
parameter tensor of N rows (Adam and the sin, cos, taylor and anneal terms act per
coordinate, so the rows are exactly independent runs). Two variants read the whole tensor:
gauss and unif scale their noise by the RMS of sin(πθ) over it, anti by the RMS of
sin(πθ)·g; here that RMS runs over the N runs, as it would over the coordinates of one layer.
The circuit groups 4 consecutive entries into one circuit, so each run gets its own row of 4
entries, the unused ones fixed at θ = 0 with zero gradient (exactly a tensor of the run's
size padded as the optimizer pads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Check, register
from .inputs import TheoryInputs

__all__ = ["Landscape", "LANDSCAPES", "CONDITIONS", "T2_VARIANTS", "mcnemar_exact",
           "t2_escape"]

T2_VARIANTS = ("adamw", "sin-l0.5", "cos-l0.5", "taylor-l0.5", "gauss-l0.5", "unif-l0.5",
               "circuit-l0.5", "anneal", "anti-l0.5")
MULTIPLICATIVE = ("sin-l0.5", "cos-l0.5", "taylor-l0.5", "gauss-l0.5", "unif-l0.5",
                  "circuit-l0.5")
LR = 0.05
SIGMA = 3.0
CLIP = 10.0
NEAR = 0.25  # start box half-width, as a fraction of the distance to the basin's edge
#: condition: (start, gradient-noise std, scale of f and of the noise)
CONDITIONS = {
    "at": ("at", 0.0, 1.0),
    "near": ("near", 0.0, 1.0),
    "noisy": ("near", SIGMA, 1.0),
    "noisy ×1e-3": ("near", SIGMA, 1e-3),
}


def _newton(grad, curv, x0: float, iters: int = 100) -> float:
    x = torch.tensor([x0], dtype=torch.float64)
    for _ in range(iters):
        x = x - grad(x) / curv(x)
    return float(x)


@dataclass(frozen=True)
class Landscape:
    """A separable test function: f(x) = Σ_i φ(x_i) with φ one of two 1-D profiles.

    ``kind="double-well"``: φ(x) = (x² − 1)² + c·x (c = ``param``), d = 1: two wells, the
    one on the side of sign(c) shallower. ``kind="rastrigin"``: φ(x) = κ·(x² − A·cos 2πx)
    (+κA), A = 10, κ = 0.01, d = 2: local minima near the integers; the run starts in the
    cell of ``start_cell``. κ puts its barriers (≈ 0.2) near the double well's.
    """

    name: str
    kind: str
    param: float
    start_cell: tuple[float, ...] = ()

    @property
    def dim(self) -> int:
        return 1 if self.kind == "double-well" else len(self.start_cell)

    def grad1(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "double-well":
            return 4.0 * x * (x * x - 1.0) + self.param
        k, a = 0.01, 10.0
        return k * (2.0 * x + 2.0 * math.pi * a * torch.sin(2.0 * math.pi * x))

    def curv1(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "double-well":
            return 12.0 * x * x - 4.0
        k, a = 0.01, 10.0
        return k * (2.0 + 4.0 * math.pi**2 * a * torch.cos(2.0 * math.pi * x))

    def value1(self, x: float) -> float:
        if self.kind == "double-well":
            return (x * x - 1.0) ** 2 + self.param * x
        return 0.01 * (x * x - 10.0 * math.cos(2 * math.pi * x) + 10.0)

    def minimum(self) -> list[float]:
        """The shallow well's minimum, per coordinate (Newton in float64)."""
        if self.kind == "double-well":
            return [_newton(self.grad1, self.curv1, math.copysign(0.9, self.param))]
        return [_newton(self.grad1, self.curv1, float(c)) for c in self.start_cell]

    def basin(self) -> tuple[list[float], list[float]]:
        """Per-coordinate bounds (lo, hi) of the starting basin: the neighbouring maxima."""
        if self.kind == "double-well":
            xb = _newton(self.grad1, self.curv1, 0.0)
            return ([xb], [math.inf]) if self.param > 0 else ([-math.inf], [xb])
        lo = [_newton(self.grad1, self.curv1, c - 0.5) for c in self.start_cell]
        hi = [_newton(self.grad1, self.curv1, c + 0.5) for c in self.start_cell]
        return lo, hi

    def barrier(self) -> float:
        """Height of the lowest barrier out of the starting well."""
        xs = self.minimum()
        lo, hi = self.basin()
        heights = []
        for i, x in enumerate(xs):
            for b in (lo[i], hi[i]):
                if math.isfinite(b):
                    heights.append(self.value1(b) - self.value1(x))
        return min(heights)


LANDSCAPES = (
    Landscape("double well, shallow well at x>0", "double-well", 1.0),
    Landscape("double well, shallow well at x<0", "double-well", -1.0),
    Landscape("Rastrigin 2-D, cell (1, 1)", "rastrigin", 0.0, (1.0, 1.0)),
    Landscape("Rastrigin 2-D, cell (−1, −1)", "rastrigin", 0.0, (-1.0, -1.0)),
)


def mcnemar_exact(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, float]:
    """Exact McNemar test of paired outcomes a, b (bool tensors): (n10, n01, p two-sided), p
    the binomial test of n10 among the n10 + n01 discordant pairs at 1/2
    (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``; 1 without discordance)."""
    from statsmodels.stats.contingency_tables import mcnemar

    n10 = int((a & ~b).sum())
    n01 = int((~a & b).sum())
    return n10, n01, float(mcnemar([[0, n10], [n01, 0]], exact=True).pvalue)


def _run_batch(land: Landscape, cond: str, variant: str, n: int, steps: int,
               seed: int) -> dict[str, torch.Tensor]:
    """n runs of one variant from the condition's starts; paired across variants (the
    starts and the gradient noise depend only on (landscape, condition, seed))."""
    from qsgd import SuperpositionalAdamW, parse_variant

    start_kind, sigma, scale = CONDITIONS[cond]
    d = land.dim
    xs = torch.tensor(land.minimum(), dtype=torch.float64)
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in land.basin())
    gen = torch.Generator().manual_seed(seed)
    x0 = xs.expand(n, d).clone()
    if start_kind == "near":
        half = NEAR * torch.minimum(xs - lo, hi - xs)
        x0 = x0 + (torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1) * half
    noise = (torch.randn(steps, n, d, generator=gen, dtype=torch.float64) * sigma
             if sigma > 0 else None)
    # the gradient at the minimum, from a tensor of the same shape and the same ops, so that
    # grad − g0 is exactly 0 at x* (Newton leaves a residual of ~1e-16)
    g0 = land.grad1(xs.expand(n, d).clone())
    v = parse_variant(variant)
    width = 4 if v.perturbation == "circuit" else d
    p = torch.zeros(n, width, dtype=torch.float64)
    p[:, :d] = x0
    p.requires_grad_(True)
    opt = SuperpositionalAdamW([p], lr=LR, weight_decay=0.0, seed=seed + 7, nonfinite="off",
                               **v.optimizer_kwargs())
    ever = torch.zeros(n, dtype=torch.bool)
    diverged = torch.zeros(n, dtype=torch.bool)
    for t in range(steps):
        x = p.detach()[:, :d].contiguous()  # the layout g0 was computed in
        with torch.no_grad():
            g = land.grad1(x) - g0
            if noise is not None:
                g = g + noise[t]
            g = g * scale
            norm = g.norm(dim=1, keepdim=True)
            g = g * torch.clamp(CLIP * scale / norm.clamp_min(1e-300), max=1.0)
            g[diverged] = 0.0
            full = torch.zeros_like(p)
            full[:, :d] = g
        p.grad = full
        opt.step()
        x = p.detach()[:, :d]
        out = ~((x > lo) & (x < hi)).all(dim=1)
        ever |= out
        diverged |= ~torch.isfinite(x).all(dim=1) | (x.abs() > 1e3).any(dim=1)
    x = p.detach()[:, :d]
    disp = (x - xs).abs().max(dim=1).values
    return {"final_out": out | diverged, "ever_out": ever | diverged, "diverged": diverged,
            "displacement": disp}


def _summary(rows: list[dict]) -> list[dict]:
    """One row per (landscape, variant): the escape rate of each condition side by side."""
    from ablations.claims import c7_test

    vs_noise = c7_test("sine").p_column
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["landscape"], r["variant"])
        d = out.setdefault(key, {"landscape": r["landscape"], "variant": r["variant"]})
        c = r["condition"]
        if c == "at":
            d["at: max |θ−θ*|"] = r["max_displacement"]
        else:
            d[f"{c}"] = r["escape_rate"]
        if c == "noisy":
            d["noisy 95% CI"] = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            d["noisy ever left"] = r["ever_left_rate"]
            d["p McNemar"] = r["p_mcnemar_vs_adamw"]
            d["p Fisher"] = r["p_fisher_vs_adamw"]
            d["p McNemar vs gauss"] = r[vs_noise]
        if c == "noisy ×1e-3":
            d["×1e-3 p McNemar"] = r["p_mcnemar_vs_adamw"]
    return list(out.values())


@register("T2")
def t2_escape(size: str, inputs: TheoryInputs) -> Check:
    """T2: where g = 0 the sin, cos, taylor and circuit terms vanish, so no run leaves an
    exact minimum; escape rates from shallow wells per variant (claim C7).

    Reads only claim C7 from ``inputs``: its verdict function (``ablations.claims``) judges
    the table of escape rates and gives the claims-ledger entry.
    """
    import pandas as pd
    from scipy import stats

    from ablations.claims import C7_TESTS, Evidence, c7_test
    from ablations.stats import wilson

    # the magnitude-matched noise control the sine is compared with (C7, test (a))
    noise = c7_test("sine")
    control = noise.comparator

    n = 400 if size == "full" else 16
    steps = 300 if size == "full" else 30  # small: three conditions (C7) in the old time
    # C7 reads noisy and noisy ×1e-3 (ablations.claims.C7_TESTS)
    conditions = list(CONDITIONS) if size == "full" else ["at", "noisy", "noisy ×1e-3"]
    rows, outcomes = [], {}
    for li, land in enumerate(LANDSCAPES):
        xs = land.minimum()
        s_min = [math.sin(math.pi * x) for x in xs]
        for ci, cond in enumerate(CONDITIONS):
            if cond not in conditions:
                continue
            seed = 1000 + 100 * li + ci
            for variant in T2_VARIANTS:
                r = _run_batch(land, cond, variant, n, steps, seed)
                outcomes[(land.name, cond, variant)] = r
            base = outcomes[(land.name, cond, "adamw")]
            gauss = outcomes[(land.name, cond, control)]
            for variant in T2_VARIANTS:
                r = outcomes[(land.name, cond, variant)]
                k = int(r["final_out"].sum())
                lo, hi = wilson(k, n)  # ablations.stats: the one Wilson interval
                kb = int(base["final_out"].sum())
                if variant == "adamw":
                    p_f = p_m = math.nan
                    n10 = n01 = 0
                else:
                    p_f = float(stats.fisher_exact([[k, n - k], [kb, n - kb]])[1])
                    n10, n01, p_m = mcnemar_exact(r["final_out"], base["final_out"])
                # against magnitude-matched noise, paired by seed as well (C7's test (a))
                g10, g01, p_g = ((0, 0, math.nan) if variant == control
                                 else mcnemar_exact(r["final_out"], gauss["final_out"]))
                rows.append({
                    "landscape": land.name, "condition": cond, "variant": variant, "n": n,
                    "escaped": k, "escape_rate": k / n, "ci_low": lo, "ci_high": hi,
                    "ever_left_rate": float(r["ever_out"].double().mean()),
                    "diverged": int(r["diverged"].sum()),
                    "max_displacement": float(r["displacement"].max()),
                    "p_fisher_vs_adamw": p_f, "p_mcnemar_vs_adamw": p_m,
                    "only_variant_escaped": n10, "only_adamw_escaped": n01,
                    noise.p_column: p_g, "only_variant_vs_gauss": g10,
                    "only_gauss_escaped": g01,
                    "sin_pi_x_at_min": ", ".join(f"{s:+.3f}" for s in s_min),
                    "barrier": land.barrier()})
    at = [r for r in rows if r["condition"] == "at"]
    disp_mult = max(r["max_displacement"] for r in at if r["variant"] in MULTIPLICATIVE)
    disp_adamw = max(r["max_displacement"] for r in at if r["variant"] == "adamw")
    disp_anti = max(r["max_displacement"] for r in at if r["variant"] == "anti-l0.5")
    disp_anneal = max(r["max_displacement"] for r in at if r["variant"] == "anneal")
    esc_at = max(r["escape_rate"] for r in at if r["variant"] != "anneal")
    # C7, pre-specified (the claim's rule, ablations.claims.judge_escape): sin-l0.5 vs
    # gauss-l0.5 (noisy) and vs adamw (noisy ×1e-3), with vs adamw (noisy) as context; one
    # exact McNemar test per landscape (paired by seed: same start, same gradient noise),
    # Holm over all of them
    c7 = inputs.claim("C7")
    result = c7.verdict(Evidence(tables={"escape": pd.DataFrame(rows)}))
    verdict = result.verdict
    outcomes = result.values.get("outcomes", {})
    tests = result.values.get("tests", {})
    for spec in (t for t in C7_TESTS if t.key in tests):  # its Holm column named by C7_TESTS
        test = tests[spec.key]
        by_land = dict(zip(test["landscapes"], test["p_holm"]))
        for r in rows:
            if (r["condition"] == test["condition"] and r["variant"] == c7.variant
                    and r["landscape"] in by_land):
                r[spec.holm_column] = by_land[r["landscape"]]
    scaled = {r["landscape"]: r for r in rows
              if r["condition"] == "noisy ×1e-3" and r["variant"] == "sin-l0.5"}
    scaled_base = {r["landscape"]: r for r in rows
                   if r["condition"] == "noisy ×1e-3" and r["variant"] == "adamw"}
    short = {land.name: f"L{i + 1}" for i, land in enumerate(LANDSCAPES)}
    claims = {"C7": {k: getattr(result, k) for k in ("measured", "ci", "test", "verdict")}}
    ok = disp_mult == 0.0 and disp_adamw == 0.0 and disp_anneal > 0.0
    summary = (f"from the exact minimum: max displacement sin/cos/taylor/gauss/unif/circuit = "
               f"{disp_mult:g}, adamw = {disp_adamw:g}, anti = {disp_anti:g}, anneal = "
               f"{disp_anneal:.3g} (escape rate at the minimum, all but anneal: {esc_at:.2f}); "
               f"C7: {result.measured} → {verdict}")
    derivation = f"""\
**Stationary points.** For sin, cos, taylor, circuit, gauss and unif, Q_i = r_i·g_i with a
finite factor r_i (sin(πθ_i), cos(πθ_i), πθ_i, ⟨X_i⟩, ξ_i). At an exact stationary point
g = 0, so Q = 0; Adam's moments stay 0 and m̂/(√v̂+ε) = 0/ε = 0; with no weight decay
Δθ = 0 at every step, whatever λ. The perturbation cannot move a run that sits exactly at a
minimum. Additive noise can: anneal adds ξ ~ N(0, σ_t²) to g before the moments. anti is
additive too, but this implementation scales it by the RMS of sin(πθ)·g over the tensor,
which is 0 where g = 0, so anti also stays put at an exact minimum (a consequence of its
magnitude matching, measured below).

**Escape experiment (C7).** Four shallow wells, each with an AdamW baseline:
{chr(10).join(f'- {short[land.name]}: {land.name}; minimum at '
              f'{", ".join(f"{x:.4f}" for x in land.minimum())}, sin(πx*) = '
              f'{", ".join(f"{math.sin(math.pi * x):+.3f}" for x in land.minimum())}, '
              f'barrier {land.barrier():.3f}' for land in LANDSCAPES)}

L1/L2 are f(x) = (x² − 1)² ± x (mirror images: the same landscape, opposite signs of
sin(πx) at the well); L3/L4 are Rastrigin (A = 10) scaled by κ = 0.01, started in two mirror
cells. The gradient is corrected by its float64 residual at the minimum (≈1e-16) so that it
vanishes exactly there. Conditions: *at* (start exactly at the minimum), *near* (start
uniform in a box of half-width {NEAR} × the distance to the basin's edge), *noisy* (near,
plus N(0, {SIGMA}²) gradient noise every step, as from minibatches), and *noisy ×1e-3*
(f and the noise multiplied by 10⁻³: Adam is invariant to this, the perturbation is not;
T3 shows real per-coordinate gradients are smaller still). Real optimizer, lr {LR}, no
weight decay, {steps} steps, per-run gradient norm clipped at {CLIP} (× scale; without it
taylor and the sine run away on the quartic walls, see T1), {n} seeds per cell; starts and
noise are shared by all variants of a seed, so comparisons are paired. The circuit variant
sees each run as a 1- or 2-entry tensor padded to 4 qubits with θ = 0, and by T5 every
readout of such a group contains sin(0) = 0, so circuit-l0.5 is AdamW here, bit for bit.
anneal's noise has a fixed absolute size (η = 0.01), so at ×1e-3 it dominates the gradient.
*Escaped* = outside the starting basin (beyond the neighbouring maximum) at the end; the
table also gives the share that ever left.

**C7, pre-specified** (`ablations.claims.judge_escape`): two tests, each sin-l0.5 against a
comparator with one exact McNemar test per landscape (paired by seed; Fisher exact also
reported): (a) against magnitude-matched Gaussian noise {control} in the noisy condition (is
it the sinusoid?), (b) against adamw in the noisy ×1e-3 condition (does it survive a
realistic gradient scale?); and, as context, against adamw in the noisy condition (is there
an effect to explain?). Holm over all of these p values together. A test is passed when sin
escapes significantly more on at least one landscape and significantly less on none.
*supported* only if (a) and (b) both pass; *contradicted* if sin escapes significantly less
than adamw in either condition; else *not supported*, with what each test found."""
    noisy = {(r["landscape"], r["variant"]): r for r in rows if r["condition"] == "noisy"}
    lands = [land.name for land in LANDSCAPES]
    cos_rates = [noisy[(n_, "cos-l0.5")]["escape_rate"] for n_ in lands]
    mirror = float(stats.fisher_exact([
        [noisy[(lands[0], "sin-l0.5")]["escaped"], n - noisy[(lands[0], "sin-l0.5")]["escaped"]],
        [noisy[(lands[1], "sin-l0.5")]["escaped"], n - noisy[(lands[1], "sin-l0.5")]["escaped"]],
    ])[1])
    mirror_base = float(stats.fisher_exact([
        [noisy[(lands[0], "adamw")]["escaped"], n - noisy[(lands[0], "adamw")]["escaped"]],
        [noisy[(lands[1], "adamw")]["escaped"], n - noisy[(lands[1], "adamw")]["escaped"]],
    ])[1])
    if scaled:
        what = {"more": "persists", "less": "reverses"}.get(outcomes.get("scale"), "vanishes")
        scale_txt = (f"; at the ×1e-3 gradient scale the sine's effect {what} (sin − adamw: "
                     + ", ".join(f"{scaled[k]['escape_rate'] - scaled_base[k]['escape_rate']:+.3f}"
                                 for k in lands if k in scaled)
                     + "), because Adam is scale-invariant and the perturbation is not (T3, T9)")
    else:
        scale_txt = ""
    g_minus_s = [noisy[(n_, control)]["escape_rate"] - noisy[(n_, "sin-l0.5")]["escape_rate"]
                 for n_ in lands]
    gauss_minus_sin = ", ".join(f"{d:+.2f}" for d in g_minus_s)
    cos_below = all(noisy[(n_, "cos-l0.5")]["escape_rate"] < noisy[(n_, "adamw")]["escape_rate"]
                    for n_ in lands)
    survives = (
        "The exact statement survives; the escape mechanism survives only as a property of "
        "un-normalized gradient noise, not of the sine. A multiplicative term cannot move a run "
        "out of an exact minimum (displacement exactly 0), so the sine is no escape mechanism "
        "by itself: it reshapes the noise and drift the gradient already carries. With noisy "
        "gradients of O(1) scale the sine "
        + {"more": "does raise escape rates above AdamW's",
           "less": "lowers escape rates below AdamW's"}.get(outcomes.get("toy"),
                                                           "does not detectably change "
                                                           "escape rates")
        + f" (C7 verdict: {verdict}); magnitude-matched Gaussian noise without any sine "
        "(gauss) escapes "
        + ("about as often or more" if min(g_minus_s) >= -0.1 else "less often")
        + f" (gauss − sin per landscape: {gauss_minus_sin}); the cosine, the same term "
        "shifted by half a period, escapes "
        + ("less often than AdamW" if cos_below else "at rates")
        + " (" + ", ".join(f"{c:.3f}" for c in cos_rates) + "), so the phase of the "
        "trigonometric factor across the basin decides the effect (T4), a property of the "
        "coordinates rather than of the landscape (mirror-image double wells: sin "
        + ("differs" if mirror < 0.05 else "does not differ detectably")
        + f", Fisher p = {mirror:.2g}; adamw p = {mirror_base:.2g})"
        + scale_txt + ". At the gradient scale of real networks (T3) the mechanism is absent.")
    return Check(
        id="T2", claim="where g = 0 the sin, cos, taylor and circuit terms vanish, so the "
        "perturbation cannot move a run out of an exact minimum; additive noise can",
        measured=disp_mult, expected=0.0, tolerance=0.0, passed=ok, relation="==",
        quantity="max |θ_T − θ*| of the multiplicative variants started at an exact minimum",
        summary=summary, derivation=derivation, survives=survives,
        tables={f"summary (escape rate per condition; p: vs adamw, or vs {control})":
                _summary(rows),
                "all cells": rows},
        data={"rows": rows, "short": short}, claims=claims)
