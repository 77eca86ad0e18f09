"""Quantum attention: scaled dot-product attention with a circuit term added to the logits.

The paper (Pamuk et al., arXiv 2511.01918; PAPER.md) adds to the attention logits a term
Φ(Q, K, C): the scores drive a simulated circuit C (H, Ry, Rz, CNOT) whose amplitudes ψ_k are
summed and added before the softmax. The exact encoding is not given; ours, for every score
s = (q·k)/√d independently (batched over batch, heads, queries and keys, no loop)::

    x_q   = a_q · s                                   encoding angle of qubit q, learned scale a_q
    ψ     = C(x; w)                                   qsgd.circuit.simulate, hadamard=True,
                                                      encoding="reupload" (x in every Ry, Rz),
                                                      learned extra angles w (depth, 2, n),
                                                      CNOT chain after each layer
    Φ(s)  = Re Σ_k ψ_k / 2^{n/2} = Re ⟨+…+|ψ⟩         readout "amp" (default), |Φ| ≤ 1
    logits = s + γ·Φ(s) ;  attention = softmax(logits + mask) · V

Readout "amp" is the literal "amplitudes summed": a real logit needs a real number, and the
real part is what an implicit complex-to-real cast keeps; dividing by 2^{n/2} bounds it by 1
for every n (any other scale is absorbed by γ). It depends on the global phase, so it is a
simulation quantity, not a measurable one; ``readout="z"`` (mean of ⟨Z_q⟩, measurable) is the
alternative. As a function of s, Φ is a trigonometric polynomial: each of the 2·depth gates
per qubit contributes a frequency ±a_q/2, so "amp" contains only ω = Σ_q m_q·a_q with integers
|m_q| ≤ depth, hence |ω| ≤ depth·Σ_q|a_q|, and "z" (built on probabilities, products of two
amplitudes) only |m_q| ≤ 2·depth, at most twice that. Three exact ways to compute Φ use
this structure to different degrees (:class:`ScoreCircuit`): ``method="chain"`` (readout "amp",
depth ≤ 2, the paper's circuit; chosen by the default ``"auto"`` there) writes ⟨+…+|C|0…0⟩ as
a product of 2×2 transfer matrices over the qubits (:mod:`qsgd.attention.chain`), linear in
n; ``"fourier"`` evaluates the trigonometric polynomial; ``"state"`` simulates one statevector
per score. With the chain and its native kernel, :class:`QuantumAttention` computes scores, Φ,
softmax and values of a layer in one kernel (:mod:`qsgd.attention.fused`), the same function.

Initial values: a_q = 1 (angles of the order of the scores), w ~ U(−π, π) (a generic circuit,
drawn from torch's global generator so a seeded model is reproducible), and γ = 0.1: the model
starts near classical attention (|γΦ| ≤ 0.1 in the logits), yet γ ≠ 0, so the circuit weights
get a gradient from the first step.

``circuit="off"`` (or ``phi=None``) is exactly ``torch.nn.functional.scaled_dot_product_attention``
(the same call with the same arguments), masks included.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..circuit import CircuitSpec
from ..circuit.fourier import frequency_tuple
from ..circuit.statevector import NATIVE_MAX_QUBITS
from .chain import chain_line, chain_supported, native_chain_runs
from .fused import fused_applies, fused_attention
from .series import circuit_line
from .state import state_line

__all__ = ["ScoreCircuit", "quantum_attention", "QuantumAttention", "PHI_READOUTS",
           "PHI_METHODS", "FOURIER_AUTO_MAX", "keyed_dropout"]

#: Φ's readouts and the circuit readout (:data:`qsgd.circuit.READOUTS`) each one computes
_CIRCUIT_READOUT = {"amp": "amp_sum", "z": "Z"}
PHI_READOUTS = tuple(_CIRCUIT_READOUT)
PHI_METHODS = ("auto", "chain", "fourier", "state")
#: the most Fourier coefficients rⁿ for which ``method="auto"`` takes "fourier" over "state"
#: where "chain" does not apply, with the statevector's native kernel and without it (forward +
#: backward at 32,768 scores on one CPU core, fourier vs state; native: "amp" depth 3, n = 2
#: (49 coefficients) 5.1 vs 7.0 ms, n = 3 (343) 53 vs 16 ms; "z" depth 2, n = 2 (81) 7.2 vs
#: 5.4 ms; torch engine: "amp" depth 3, n = 3 (343) 27 vs 67 ms, n = 4 (2401) 437 vs 170 ms;
#: "z" depth 2, n = 2 (81) 7 vs 30 ms, n = 3 (729) 84 vs 58 ms)
FOURIER_AUTO_MAX = {"native": 50, "torch": 400}


class ScoreCircuit(nn.Module):
    """Φ: every entry s of a score tensor ↦ the readout of the circuit with angles a·s + w.

    Args:
        n_qubits: circuit width n (default 2: cheap, 4 amplitudes per score).
        depth: layers L (default 2, the paper's).
        entangle: CNOT chain after each layer (default True).
        readout: ``"amp"`` (Re Σ_k ψ_k / 2^{n/2}, default) or ``"z"`` (mean_q ⟨Z_q⟩).
        init_scale: initial encoding scale a_q (default 1.0).
        method: how Φ is computed, all exact and equal to rounding (tested):

            * ``"chain"`` (readout "amp", depth ≤ 2 only): ⟨+…+|C(a·s; w)|0…0⟩ as a chain of
              2×2 transfer matrices over the qubits, n sines and cosines and ~60 flops per
              qubit and score, by a native CPU kernel with a hand-written gradient where it
              is available, else torch operations (``qsgd.attention.chain_line``);
            * ``"fourier"``: Φ(s) as a trigonometric polynomial in s: its real-basis
              coefficients M(w) (rⁿ of them, r = 2·depth+1 for "amp", 4·depth+1 for "z") come
              from a table of the circuit simulated once per shape at corner weights, or,
              where that table would be too large, from one batched simulation on a grid of
              rⁿ angle tuples with parameter-shift gradients
              (``qsgd.attention.line_coefficients``), and the polynomial is evaluated at every
              score; coefficients, their Jacobian and the series are one ``autograd.Function``
              (``qsgd.attention.circuit_line``);
            * ``"state"``: one statevector per score, by the native kernel with adjoint
              gradients where it is available, else the torch engine
              (``qsgd.attention.state_line``);
            * ``"auto"`` (default): the fastest where it applies, as measured on CPU at
              32,768 scores (:meth:`resolved_method`): "chain" wherever it applies with its
              native kernel (forward + backward 1.4 ms at n = 2 against 2.7 ms for
              "fourier", 2.1 ms at n = 4 against 112 ms for "state"), and from 4 qubits by
              torch operations (38 ms at n = 4; 13 ms at n = 2 would lose to "fourier");
              otherwise "fourier" while rⁿ ≤ :data:`FOURIER_AUTO_MAX` (50 with the native
              kernels, 400 without), else "state".

    Parameters: ``scale`` (n,), ``weights`` (L, 2, n). Output: same shape and dtype as the input.
    """

    def __init__(self, n_qubits: int = 2, depth: int = 2, *, entangle: bool = True,
                 readout: str = "amp", init_scale: float = 1.0, method: str = "auto"):
        super().__init__()
        if isinstance(n_qubits, bool) or not isinstance(n_qubits, int) or n_qubits < 1:
            raise ValueError(f"invalid n_qubits: {n_qubits!r} (must be an integer >= 1)")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"invalid depth: {depth!r} (must be an integer >= 1)")
        if readout not in PHI_READOUTS:
            raise ValueError(f"invalid readout: {readout!r} (valid: {', '.join(PHI_READOUTS)})")
        if method not in PHI_METHODS:
            raise ValueError(f"invalid method: {method!r} (valid: {', '.join(PHI_METHODS)})")
        self.n_qubits, self.depth, self.entangle, self.readout = n_qubits, depth, entangle, readout
        self.method = method
        self.resolved_method()  # "chain" where it does not apply: the error now
        self.scale = nn.Parameter(torch.full((n_qubits,), float(init_scale)))
        self.weights = nn.Parameter(torch.empty(depth, 2, n_qubits).uniform_(-math.pi, math.pi))

    def extra_repr(self) -> str:
        return (f"n_qubits={self.n_qubits}, depth={self.depth}, entangle={self.entangle}, "
                f"readout={self.readout!r}, method={self.method!r}")

    def max_frequency(self) -> float:
        """Largest frequency ω of Φ(s) = Σ c_ω e^{iωs} allowed by the current scales."""
        amp = self.depth * float(self.scale.detach().abs().sum())
        return amp if self.readout == "amp" else 2.0 * amp

    def resolved_method(self, device: torch.device | str = "cpu") -> str:
        """The method used for scores on ``device``: ``method`` itself, or what ``"auto"``
        stands for: ``"chain"`` where it applies (readout "amp", depth ≤ 2) and either its
        native kernel runs (CPU, compiled) or n ≥ 4, else ``"fourier"`` while its rⁿ
        coefficients are at most :data:`FOURIER_AUTO_MAX` (the native kernels' limit where
        they run), else ``"state"`` (the timings are in the class docstring). Raises
        ``ValueError`` for ``"chain"`` where it does not apply (``method`` may be set after
        construction)."""
        if self.method not in PHI_METHODS:
            raise ValueError(f"invalid method: {self.method!r} (valid: {', '.join(PHI_METHODS)})")
        return _resolve(self.method, self.n_qubits, self.depth, self.entangle, self.readout,
                        native_chain_runs(device))

    def chain_spec(self) -> CircuitSpec:
        """The circuit as a :class:`~qsgd.circuit.CircuitSpec` (H first, data in every gate)."""
        return _spec(self.n_qubits, self.depth, self.entangle)

    def forward(self, scores: Tensor) -> Tensor:
        return self.evaluate(scores, self.weights, self.scale)

    def evaluate(self, scores: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
        """Φ of ``scores`` with ``weights`` (L, 2, n) and ``scale`` (n,) in place of the module's
        own parameters: the same computation as :meth:`forward`, for a caller that holds the
        parameters elsewhere (a seed-batched model passes each run's slice)."""
        w = weights if weights.dtype == scores.dtype else weights.to(scores.dtype)
        kw = dict(depth=self.depth, entangle=self.entangle, hadamard=True, encoding="reupload")
        method = self.resolved_method(scores.device)
        if method == "chain":
            return chain_line(w, scale, scores, **kw)
        line = circuit_line if method == "fourier" else state_line
        return line(w, scale, scores, readout=_CIRCUIT_READOUT[self.readout], **kw)


@functools.lru_cache(maxsize=64)
def _spec(n: int, depth: int, entangle: bool) -> CircuitSpec:
    """Φ's circuit of width n: H first, data in every gate (cached)."""
    return CircuitSpec(n, depth, entangle, True, "reupload")


@functools.lru_cache(maxsize=256)
def _resolve(method: str, n: int, depth: int, entangle: bool, readout: str,
             native: bool) -> str:
    """:meth:`ScoreCircuit.resolved_method` for a valid ``method`` (cached: read on every
    forward pass); ``native``: whether the chain's kernel runs for the scores."""
    spec, ro = _spec(n, depth, entangle), _CIRCUIT_READOUT[readout]
    if method == "chain" and not chain_supported(spec, ro):
        raise ValueError(f"method 'chain' needs readout 'amp' and depth <= 2, got readout "
                         f"{readout!r}, depth {depth}")
    if method != "auto":
        return method
    if chain_supported(spec, ro) and (n >= 4 or native):
        return "chain"
    r = len(frequency_tuple(spec, ro))
    limit = FOURIER_AUTO_MAX["native" if native and n <= NATIVE_MAX_QUBITS else "torch"]
    return "fourier" if r**n <= limit else "state"


def keyed_dropout(x: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """``F.dropout(x, p)`` in training with its mask drawn from ``generator`` (on x's device):
    ``x · m / (1 − p)``, m one ``bernoulli_(1 − p)`` over x's shape, the rule of ``F.dropout``
    on a CPU (there the two agree bit for bit when the generator is in the global one's
    state). A run that owns its generator draws the same masks in any batch of runs."""
    if p == 0.0:
        return x
    mask = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * mask.div_(1.0 - p)


def quantum_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    phi: nn.Module | None = None,
    gamma: Tensor | float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """softmax(S + γ·Φ(S) + mask)·V with S = Q Kᵀ·scale; arguments as
    ``torch.nn.functional.scaled_dot_product_attention`` (shapes (…, L, E), (…, S, E),
    (…, S, Ev); ``attn_mask`` boolean, True = take part, or additive float; ``is_causal``:
    the top-left lower-triangular mask; ``scale`` default 1/√E).

    ``phi=None`` calls ``F.scaled_dot_product_attention`` with exactly these arguments.
    Otherwise ``phi`` maps the score tensor elementwise and ``gamma`` (tensor or float) weighs it.
    ``generator``: with ``dropout_p > 0``, the attention weights' dropout mask is drawn from it
    (:func:`keyed_dropout`), for ``phi=None`` too (then by the explicit softmax(S + mask)·V,
    not SDPA, whose dropout reads the global generator).
    """
    keyed = generator is not None and dropout_p > 0.0
    if phi is None and not keyed:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                              dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale)
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True, not both (as SDPA)")
    if gamma is None and phi is not None:
        raise ValueError("gamma is required when phi is given")
    L, S = query.size(-2), key.size(-2)
    sc = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * sc
    logits = scores if phi is None else scores + gamma * phi(scores)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    weights = torch.softmax(logits, dim=-1)
    if keyed:
        weights = keyed_dropout(weights, dropout_p, generator)
    elif dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ value


class QuantumAttention(nn.Module):
    """Multi-head self-attention with the optional circuit logit term.

    Args:
        d_model: model width (divisible by ``n_heads``).
        n_heads: number of heads (default 2).
        circuit: ``"on"`` (default; quantum attention) or ``"off"`` (exactly SDPA).
        n_qubits, depth, entangle, readout: of the :class:`ScoreCircuit`, one per layer and
            shared by its heads (defaults 2, 2, True, "amp").
        gamma_init: initial γ (default 0.1; see the module docstring).
        dropout: attention dropout probability in training (default 0).
        bias: biases of the projections (default True).
        fused: where Φ is the chain with its native kernel and no attention dropout is active,
            compute scores, Φ, softmax and values of all heads in one native kernel, forward and
            backward (:mod:`qsgd.attention.fused`; default True); False: always the torch
            operations of :func:`quantum_attention`. The same function, to rounding.

    ``forward(x, key_padding_mask=None, is_causal=False)``: x (B, T, d_model);
    ``key_padding_mask`` (B, T) bool, True marks padding keys to ignore (as
    ``nn.MultiheadAttention``). Returns (B, T, d_model). ``generator`` (attribute, default
    None: the global generator): where the attention dropout draws its masks
    (:func:`keyed_dropout`).
    """

    generator: torch.Generator | None = None

    def __init__(self, d_model: int, n_heads: int = 2, *, circuit: str = "on",
                 n_qubits: int = 2, depth: int = 2, entangle: bool = True,
                 readout: str = "amp", gamma_init: float = 0.1, dropout: float = 0.0,
                 bias: bool = True, fused: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if circuit not in ("on", "off"):
            raise ValueError(f"invalid circuit: {circuit!r} (valid: on, off)")
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, float(dropout)
        self.fused = bool(fused)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        if circuit == "on":
            self.phi: ScoreCircuit | None = ScoreCircuit(n_qubits, depth, entangle=entangle,
                                                         readout=readout)
            self.gamma: nn.Parameter | None = nn.Parameter(torch.tensor(float(gamma_init)))
        else:
            self.phi = None
            self.register_parameter("gamma", None)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        B, T, D = x.shape
        H = self.n_heads
        dropout_active = self.training and self.dropout > 0.0
        if self.phi is not None and self.fused and fused_applies(self.phi, x, dropout_active):
            y = fused_attention(self.qkv(x).view(B, T, 3, H, D // H), self.phi, self.gamma,
                                key_padding_mask=key_padding_mask, is_causal=is_causal)
            return self.out(y.reshape(B, T, D))
        qkv = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if self.phi is not None:  # the explicit path's matmuls want contiguous heads (SDPA not)
            qkv = qkv.contiguous()
        q, k, v = qkv.unbind(0)
        mask = None
        if key_padding_mask is not None:
            mask = (~key_padding_mask)[:, None, None, :]  # SDPA: True = attend
        y = quantum_attention(q, k, v, attn_mask=mask,
                              dropout_p=self.dropout if self.training else 0.0,
                              is_causal=is_causal, phi=self.phi, gamma=self.gamma,
                              generator=self.generator)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
