"""A small pre-norm transformer classifier, with classical or quantum attention.

The paper's classification arm uses a 2-layer transformer on synthetic text (PAPER.md, C1–C5);
its sizes are not given. This one is small enough for a grid of ~250 runs on 2 CPU cores::

    h = E_tok[tokens] + E_pos[0..T−1]
    for each of n_layers blocks:
        h = h + Attn(LayerNorm(h), padding keys masked)     classical SDPA or quantum attention
        h = h + MLP(LayerNorm(h))                           Linear(d, d_ff) → GELU → Linear(d_ff, d)
    z = mean of LayerNorm(h) over the non-pad positions
    logits = Linear(d, n_classes)(z)

Attention ``"classical"`` is ``QuantumAttention(circuit="off")``, i.e. exactly
``F.scaled_dot_product_attention``; ``"quantum"`` adds γ·Φ(S) to the logits (qsgd.attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import QuantumAttention, keyed_dropout

__all__ = ["TransformerClassifier", "ATTENTIONS"]

ATTENTIONS = ("classical", "quantum")


class _Block(nn.Module):
    generator: torch.Generator | None = None  # TransformerClassifier.set_dropout_generator

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, circuit: str,
                 circuit_kw: dict):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = QuantumAttention(d_model, n_heads, circuit=circuit, dropout=dropout,
                                     **circuit_kw)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def _drop(self, x: Tensor) -> Tensor:
        if self.generator is None or not self.training:
            return self.drop(x)
        return keyed_dropout(x, self.drop.p, self.generator)

    def forward(self, h: Tensor, pad: Tensor | None) -> Tensor:
        h = h + self._drop(self.attn(self.ln1(h), key_padding_mask=pad))
        return h + self._drop(self.mlp(self.ln2(h)))


class TransformerClassifier(nn.Module):
    """Pre-norm transformer encoder with mean pooling and a linear head.

    Args:
        vocab_size: number of token ids (``pad_id`` among them).
        n_classes: number of output classes.
        max_len: longest sequence (size of the learned position table).
        d_model: width (default 32).
        n_heads: attention heads (default 2).
        n_layers: blocks (default 2, as the paper).
        d_ff: MLP hidden width (default 2·d_model).
        dropout: dropout on residual branches and attention weights (default 0).
        pad_id: padding token id; pad keys are masked in attention and pad positions are left
            out of the mean pooling; its embedding is fixed at zero (default 0).
        attention: ``"classical"`` (default) or ``"quantum"``.
        n_qubits, depth, readout, gamma_init: of the quantum attention's circuit term
            (defaults 2, 2, "amp", 0.1; ignored for classical attention).

    ``forward(tokens)``: tokens (B, T) int64, T ≤ max_len → logits (B, n_classes). A sequence
    made only of padding attends to all its positions and pools over all of them (so it gives a
    finite output instead of NaN).

    Dropout draws from torch's global generator, or, after :meth:`set_dropout_generator`, from
    the given generator (every mask one ``bernoulli_`` over its layer's shape,
    :func:`qsgd.attention.keyed_dropout`, in the order of the forward pass: per block the
    attention weights, the attention branch, the MLP branch).
    """

    def __init__(self, vocab_size: int, n_classes: int, max_len: int, d_model: int = 32,
                 n_heads: int = 2, n_layers: int = 2, d_ff: int | None = None,
                 dropout: float = 0.0, pad_id: int = 0, attention: str = "classical",
                 n_qubits: int = 2, depth: int = 2, readout: str = "amp",
                 gamma_init: float = 0.1):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"invalid attention: {attention!r} (valid: {', '.join(ATTENTIONS)})")
        for name, val in (("vocab_size", vocab_size), ("n_classes", n_classes),
                          ("max_len", max_len), ("d_model", d_model), ("n_heads", n_heads),
                          ("n_layers", n_layers)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"invalid {name}: {val!r} (must be an integer >= 1)")
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"invalid pad_id: {pad_id!r} (must lie in [0, vocab_size))")
        d_ff = 2 * d_model if d_ff is None else d_ff
        self.attention, self.pad_id, self.max_len = attention, pad_id, max_len
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = nn.Embedding(max_len, d_model)
        circuit = "on" if attention == "quantum" else "off"
        kw = dict(n_qubits=n_qubits, depth=depth, readout=readout,
                  gamma_init=gamma_init) if circuit == "on" else {}
        self.blocks = nn.ModuleList(
            _Block(d_model, n_heads, d_ff, dropout, circuit, kw) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def set_dropout_generator(self, generator: torch.Generator | None) -> None:
        """Draw every dropout mask from ``generator`` (on the model's device; None: the global
        generator again, with F.dropout and SDPA's own dropout)."""
        for block in self.blocks:
            block.generator = generator
            block.attn.generator = generator

    def forward(self, tokens: Tensor) -> Tensor:
        B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len}")
        valid = tokens != self.pad_id
        # all-pad rows: treat every position as valid, so softmax and pooling stay finite
        valid = valid | ~valid.any(dim=1, keepdim=True)
        pad = None if bool(valid.all()) else ~valid
        h = self.tok(tokens) + self.pos.weight[:T]
        for block in self.blocks:
            h = block(h, pad)
        h = self.norm(h)
        m = valid.unsqueeze(-1).to(h.dtype)
        z = (h * m).sum(1) / m.sum(1)
        return self.head(z)
