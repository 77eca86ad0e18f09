"""A compact Llama decoder in plain PyTorch whose parameters carry the Hugging Face names.

Architecture (Touvron et al. 2023, "Llama", arXiv 2302.13971; the 3.x family is the same
block): no biases; pre-norm RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467); rotary position
embeddings on queries and keys (RoPE, Su et al. 2021, arXiv 2104.09864, the "rotate half"
layout of Hugging Face); grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245); a
SwiGLU MLP (Shazeer 2020, arXiv 2002.05202); the LM head optionally tied to the embedding::

    h = E[ids]
    for each layer:  h = h + W_o · Attn(RoPE(W_q x), RoPE(W_k x), W_v x),  x = RMSNorm(h)
                     h = h + W_down (silu(W_gate x) ⊙ W_up x),              x = RMSNorm(h)
    logits = W_head · RMSNorm(h)

``CompactLlama.state_dict()`` has the keys of ``transformers.LlamaForCausalLM``, so its
weights load as they are and an optimizer sees the same tensors in the same order. The q/k/v
and gate/up weights are concatenated on the fly for one matrix product each. The residual
stream, the norms, RoPE and the loss stay in float32; the matrix products run under bfloat16
autocast when ``amp`` is on.

:meth:`CompactLlama.loss` is the training forward over packed rows: attention is causal within
each example (document masking, by FlexAttention block mask, Dong et al. 2024, arXiv
2412.05496, by variable-length FlashAttention over the examples, Dao 2023, arXiv 2307.08691,
or a dense SDPA mask), and logits are computed only at the scored positions.
Targets equal to :data:`IGNORE` are not scored (``F.cross_entropy``'s ``ignore_index``).

FLOP counts (:meth:`LlamaShape.train_flops`) follow Kaplan et al. 2020 (arXiv 2001.08361:
2 FLOPs per parameter and token forward, 3× that with the backward) plus causal attention, as
in the MFU of Chowdhery et al. 2022 (PaLM, arXiv 2204.02311, appendix B).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import flex_attention

__all__ = ["IGNORE", "LlamaShape", "PRESETS", "CompactLlama", "RMSNorm", "default_inv_freq",
           "random_state", "varlen_attend", "set_flex_block"]

#: target id of a position that is not scored (``F.cross_entropy``'s default ignore_index)
IGNORE = -100


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


def default_inv_freq(shape: LlamaShape) -> Tensor:
    """RoPE inverse frequencies θ^(−2i/head_dim), i = 0 … head_dim/2 − 1 (float64, then
    float32), of a shape without RoPE scaling."""
    exps = torch.arange(0, shape.head_dim, 2, dtype=torch.float64) / shape.head_dim
    return (1.0 / (shape.rope_theta ** exps)).float()


def random_state(shape: LlamaShape, seed: int) -> dict[str, Tensor]:
    """Llama init: N(0, 0.02) for matrices and embeddings, ones for norms (CPU generator)."""
    gen = torch.Generator().manual_seed(seed)
    model = CompactLlama(shape, default_inv_freq(shape))
    state = {}
    for name, p in model.state_dict().items():
        if shape.tie_embeddings and name == "lm_head.weight":
            continue
        if p.dim() == 1:
            state[name] = torch.ones_like(p)
        else:
            state[name] = torch.randn(p.shape, generator=gen) * 0.02
    return state


class RMSNorm(nn.Module):
    """x / √(mean(x²) + eps) · weight over the last axis, computed in float32 and cast back
    to the input's dtype before the weight is applied (as Hugging Face's LlamaRMSNorm)."""

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
    # "rotate half": the pairs are (x_i, x_{i + head_dim/2}), as in Hugging Face's Llama
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class _Body(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(_Block(s) for _ in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_eps)


def _varlen_keywords(fn: Callable) -> dict:
    # torch 2.9/2.10 take is_causal; later versions window_size=(-1, 0) and enable_gqa
    import inspect

    params = inspect.signature(fn).parameters
    kw: dict = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "enable_gqa" in params:
        kw["enable_gqa"] = True
    return kw


try:  # resolved once at import: the compiled step traces no signature inspection
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
except ImportError:  # torch < 2.9
    _varlen_attn = None
_VARLEN_KW = _varlen_keywords(_varlen_attn) if _varlen_attn is not None else {}


#: the mask block that compiled FlexAttention's configurations are clipped to (None: none)
_FLEX_BLOCK: dict[str, int | None] = {"block": None}


def _clip_flex_tiles(configs: list, block: int | None) -> list:
    """``configs`` (Inductor's FlexAttention forward or backward configurations) with every
    tile (``block_*`` field) clipped to ``block``, duplicates dropped (None: as they are):
    powers of two stay powers of two, and the kernels' constraints (N1 a multiple of M1, M2
    of N2) hold after."""
    import dataclasses

    if block is None:
        return configs
    out: list = []
    for c in configs:
        clipped = dataclasses.replace(c, **{f.name: min(getattr(c, f.name), block)
                                            for f in dataclasses.fields(c)
                                            if f.name.startswith("block_")})
        if clipped not in out:
            out.append(clipped)
    return out


def set_flex_block(block: int | None) -> None:
    """Let compiled FlexAttention run over block masks of ``block`` < 128 tokens (None or 128:
    Inductor's own configurations again), for this process's compilations from now on.

    Inductor lowers FlexAttention only with configurations of its own whose tiles divide the
    mask's block, filtered before the ``kernel_options`` of the call apply, and its backward's
    for 64-wide heads on a GPU are 128 wide: with a finer mask no candidate is left and the
    compile fails (``NoValidChoicesError``). From the first call with a block below 128,
    ``InductorChoices.get_flex_attention_{fwd,bwd}_configs`` return Inductor's own
    configurations with every tile clipped to the block set here (:func:`_clip_flex_tiles`;
    unchanged while it is None). The methods are wrapped on the class, not on a thread's
    handler, because Inductor compiles a backward lazily on autograd's device thread. The
    call's ``kernel_options`` still win over these tiles."""
    _FLEX_BLOCK["block"] = block if block is not None and block < 128 else None
    if _FLEX_BLOCK["block"] is None:
        return
    from torch._inductor.choices import InductorChoices

    for name in ("get_flex_attention_fwd_configs", "get_flex_attention_bwd_configs"):
        method = getattr(InductorChoices, name)
        if getattr(method, "_qsgd_clipped", False):
            continue

        def clipped(self, *args, _method=method, **kwargs):
            return _clip_flex_tiles(_method(self, *args, **kwargs), _FLEX_BLOCK["block"])

        clipped._qsgd_clipped = True
        setattr(InductorChoices, name, clipped)


def varlen_attend(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Causal attention within the segments of the flattened rows: q [B, H, T, d], k, v
    [B, H_kv, T, d] (grouped-query heads shared natively), ``cu_seqlens`` [K + 1] int32
    offsets into the B·T tokens (:func:`ablations.llm.packing.varlen_segments`; empty
    segments allowed, each segment within one row, so at most T long). torch's
    variable-length FlashAttention (``torch.nn.attention.varlen``, torch ≥ 2.9, CUDA,
    bf16/fp16); its keywords (causal as ``is_causal`` or ``window_size``, ``enable_gqa``)
    follow the installed version. Returns [B, H, T, d]."""
    if _varlen_attn is None:
        raise ImportError(f"attn_impl 'varlen' needs torch.nn.attention.varlen (torch >= 2.9); "
                          f"this is torch {torch.__version__}: use 'flex'")
    B, H, T, d = q.shape
    Hkv = k.shape[1]

    def flat(x, h):
        return x.transpose(1, 2).reshape(B * T, h, d)

    o = _varlen_attn(flat(q, H), flat(k, Hkv), flat(v, Hkv), cu_seqlens, cu_seqlens, T, T,
                     **_VARLEN_KW)
    return o.view(B, T, H, d).transpose(1, 2)


class CompactLlama(nn.Module):
    """A Llama decoder in plain PyTorch whose parameters carry the Hugging Face names.

    ``state_dict()`` keys equal those of ``transformers.LlamaForCausalLM`` (``lm_head.weight``
    is tied to ``model.embed_tokens.weight`` when the shape says so), so HF weights load as is
    and the optimizer sees the same tensors in the same order.

    Args:
        shape: the hyperparameters.
        inv_freq: RoPE inverse frequencies [head_dim / 2] (:func:`default_inv_freq`, or a
            loaded model's own).
        amp: run the matrix products under bfloat16 autocast (default True).

    :attr:`flex_kernel_options`: the ``kernel_options`` of every FlexAttention call (its
    kernels' tiles, warps and stages; None: torch's choice for the device).
    """

    flex_kernel_options: dict[str, int] | None = None

    def __init__(self, shape: LlamaShape, inv_freq: Tensor, amp: bool = True):
        super().__init__()
        self.shape = shape
        self.model = _Body(shape)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inv_freq.clone().float(), persistent=False)
        self.amp = amp

    def autocast(self, device: torch.device):
        """The model's autocast context on ``device``: bfloat16 when ``amp``, else a no-op."""
        # no cast cache: each weight is cast once per forward anyway, and CUDA graph capture
        # (greedy decoding) needs it off
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp,
                              cache_enabled=False)

    def _dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.amp else torch.float32

    def hidden(self, ids: Tensor, pos: Tensor, attend: Callable,
               layer_fn: Callable | None = None) -> Tensor:
        """Final-norm hidden states [B, T, D] for token ids and positions [B, T].

        ``attend(q, k, v, layer_index)`` computes attention from q [B, H, T, d] and k, v
        [B, H_kv, T, d] (bfloat16 under amp): the caller chooses the mask (training) or a KV
        cache (decoding). ``layer_fn(layer, x, cos, sin, dtype)``, when given, runs each
        decoder layer in place of ``layer(x, cos, sin, attend, index, dtype)``: one compiled
        function for every layer (regional compilation), which must attend as ``attend`` does
        and needs no layer index (it gets none, so a compiled one is not specialised on it)."""
        freqs = pos.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # [B, 1, T, head_dim]
        cos, sin = emb.cos(), emb.sin()
        x = self.model.embed_tokens(ids)
        dtype = self._dtype()
        for i, layer in enumerate(self.model.layers):
            x = (layer(x, cos, sin, attend, i, dtype) if layer_fn is None
                 else layer_fn(layer, x, cos, sin, dtype))
        return self.model.norm(x)

    def loss(self, ids: Tensor, pos: Tensor, doc: Tensor, loss_idx: Tensor, loss_tgt: Tensor,
             n_tok: Tensor, block_mask=None, cu_seqlens: Tensor | None = None) -> Tensor:
        """Σ cross-entropy over the scored positions, divided by ``n_tok`` (a 0-dim tensor).

        ids, pos, doc: [R, L] packed rows (doc: example id per token; -1 for padding).
        loss_idx, loss_tgt: [C] flat positions into the R·L tokens and their targets
        (IGNORE for unused slots). block_mask: a FlexAttention block mask; cu_seqlens: the
        rows' segment offsets for variable-length FlashAttention (:func:`varlen_attend`); with
        neither, the dense-mask SDPA reference.
        """
        with self.autocast(ids.device):
            if cu_seqlens is not None:
                def attend(q, k, v, i):
                    return varlen_attend(q, k, v, cu_seqlens)
            elif block_mask is None:
                T = ids.shape[1]
                causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
                mask = ((doc.unsqueeze(2) == doc.unsqueeze(1)) & causal).unsqueeze(1)

                def attend(q, k, v, i):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                          enable_gqa=True)
            else:
                def attend(q, k, v, i):
                    return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True,
                                          kernel_options=self.flex_kernel_options)

            h = self.hidden(ids, pos, attend)
            h = h.flatten(0, 1).index_select(0, loss_idx)
            logits = F.linear(h, self.lm_head.weight)
            ce = F.cross_entropy(logits.float(), loss_tgt, ignore_index=IGNORE, reduction="sum")
        return ce / n_tok

    def logits(self, h: Tensor) -> Tensor:
        """float32 logits of hidden states ``h`` [..., D] (the LM head under autocast)."""
        with self.autocast(h.device):
            return F.linear(h, self.lm_head.weight).float()

