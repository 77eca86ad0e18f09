"""S transformer classifiers of one architecture as one module: seed-batched training.

:class:`SeedBatchedClassifier` holds the parameters of S :class:`TransformerClassifier` models
(runs that differ only in their seed) stacked on a leading seed axis, in the models' parameter
order, and computes all S forward passes at once: ``forward(tokens [S, B, T]) → logits
[S, B, C]``, run s on its own tokens, parameters and dropout stream. Run s's logits and
gradients equal those of its own model bit for bit on a CPU (tested), because every operation
computes each run's entries as that run's model does:

* elementwise operations (residual sums, GELU, dropout's product, softmax over keys, Φ's
  weight γ) run once over the stacked tensors: PyTorch's elementwise CPU kernels give an entry
  the same result wherever it lies in a tensor, and row-wise ones (softmax) see the same rows;
* operations that combine entries with their own kernels (the linear layers' matrix
  products, layer norms, embeddings, scaled-dot-product attention, Φ and the fused
  quantum-attention kernel of :mod:`qsgd.attention.fused`) are called once per run, on that
  run's slices, with the same shapes and strides as in its own model, and so are their
  backward passes (``unbind`` and ``stack`` only copy);
* dropout draws run s's masks from run s's own generator (``generators[s]``: a copy of the
  global generator's state after that model was built), in the order the model draws them
  from the global one: ``F.dropout`` is ``x · bernoulli(1 − p) / (1 − p)`` with the mask drawn
  as one ``bernoulli_`` over x's shape, which is drawn here the same way (by
  :func:`bernoulli_`: torch's own loop redone natively, the same numbers at about a fifth of
  its cost); dropout inside ``F.scaled_dot_product_attention`` (classical attention) draws
  from the global generator, which is set to run s's state for that call.

What batching saves is the per-operation overhead of S separate passes (Python, dispatch,
autograd bookkeeping) over the elementwise work; the matrix products and Φ cost what they
cost per run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _native
from ..attention.fused import fused_applies, fused_attention
from ..attention.layers import quantum_attention
from .classifier import TransformerClassifier

__all__ = ["SeedBatchedClassifier", "dropout_generators"]


def dropout_generators(states: Sequence[Tensor]) -> list[torch.Generator]:
    """CPU generators set to the global generator states ``states`` (``torch.get_rng_state()``
    after each run's model was built): where each run's dropout draws come from."""
    gens = []
    for st in states:
        g = torch.Generator()
        g.set_state(st)
        gens.append(g)
    return gens


def _arch(m: TransformerClassifier) -> tuple:
    """What must agree between the models of one batch (besides parameter shapes)."""
    blocks = tuple((b.attn.n_heads, b.attn.dropout, b.attn.fused, b.drop.p, b.ln1.eps,
                    b.ln2.eps, None if b.attn.phi is None else repr(b.attn.phi))
                   for b in m.blocks)
    return (type(m), m.attention, m.pad_id, m.max_len, m.tok.padding_idx, m.norm.eps, blocks)


class SeedBatchedClassifier(nn.Module):
    """S :class:`TransformerClassifier` models trained as one (module docstring).

    Args:
        models: S models of one architecture (same options, sizes and attention); their
            current parameters are copied, stacked in ``models`` order (the models themselves
            are not changed or used afterwards).

    ``parameters()`` yields the stacked tensors ``[S, *shape]`` in the order of
    ``models[0].parameters()`` (the tensor index of the optimizer's noise keys);
    :attr:`names` holds their names in the models. ``forward(tokens, generators=None)``:
    tokens ``[S, B, T]`` (each run its own) or ``[B, T]`` (shared, e.g. evaluation) →
    logits ``[S, B, n_classes]``; in training mode with dropout ``generators`` (one
    ``torch.Generator`` per run, :func:`dropout_generators`, or with :attr:`keyed_dropout` the
    runs' own generators on the module's device) is required.
    """

    #: the runs' models draw dropout from their own generators (module docstring): set it
    #: when their one-run models have ``set_dropout_generator``; False: the global generator's
    #: rule (the CPU's bit-for-bit path)
    keyed_dropout: bool = False
    #: compute the kernels the per-run path calls once per run (linear layers, layer norms,
    #: the embedding, the attention's score and value products, Φ) once for all runs, as
    #: grouped ones (``baddbmm``, a layer norm without affine then each run's affine, one
    #: embedding over the runs' stacked tables, Φ's torch chain vmapped over the runs where Φ
    #: is the chain): the same function, rounded differently. For CUDA,
    #: where a batch agrees with its runs to rounding anyway and a launch per run is what a
    #: batch would otherwise pay; False (default): per run, bit for bit on a CPU
    grouped: bool = False

    def __init__(self, models: Sequence[TransformerClassifier]):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("SeedBatchedClassifier needs at least one model")
        first = models[0]
        for i, m in enumerate(models):
            if not isinstance(m, TransformerClassifier):
                raise TypeError(f"models[{i}] is a {type(m).__name__}, not a "
                                "TransformerClassifier")
            if _arch(m) != _arch(first) or [(n, p.shape) for n, p in m.named_parameters()] != [
                    (n, p.shape) for n, p in first.named_parameters()]:
                raise ValueError(f"models[{i}] differs from models[0] in its architecture: a "
                                 "batch holds runs of one configuration")
        self.n_runs = len(models)
        self.names = [n for n, _ in first.named_parameters()]
        self._index = {n: k for k, n in enumerate(self.names)}
        for n in self.names:
            stacked = torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            self.register_parameter(n.replace(".", "__"), nn.Parameter(stacked.clone()))
        self.attention, self.pad_id = first.attention, first.pad_id
        self.max_len, self.n_layers = first.max_len, len(first.blocks)
        self.padding_idx = first.tok.padding_idx
        self.d_model = first.tok.embedding_dim
        b0 = first.blocks[0]
        self.n_heads, self.attn_dropout = b0.attn.n_heads, b0.attn.dropout
        self.fused = b0.attn.fused
        self.p = b0.drop.p
        self.eps = {f"blocks.{i}.{ln}": getattr(b, ln).eps for i, b in enumerate(first.blocks)
                    for ln in ("ln1", "ln2")} | {"norm": first.norm.eps}
        # Φ's configuration per layer (its method, readout, circuit): the template's modules,
        # held in a plain list so that their own parameters are not this module's
        self._phis = [b.attn.phi for b in first.blocks]

    def _apply(self, fn, recurse=True):
        # Φ's template modules move with the parameters (``.to(device)``)
        super()._apply(fn, recurse)
        for phi in self._phis:
            if phi is not None:
                phi._apply(fn)
        return self

    def param(self, name: str) -> Tensor:
        """The stacked parameter of the models' parameter ``name``."""
        return getattr(self, name.replace(".", "__"))

    def forward(self, tokens: Tensor, generators: Sequence[torch.Generator] | None = None
                ) -> Tensor:
        S = self.n_runs
        if tokens.dim() == 2:
            tokens = tokens.expand(S, *tokens.shape)
        if tokens.dim() != 3 or tokens.shape[0] != S:
            raise ValueError(f"tokens must be [S={S}, B, T] or [B, T], got {tuple(tokens.shape)}")
        _, B, T = tokens.shape
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.max_len}")
        dropping = self.training and (self.p > 0.0 or self.attn_dropout > 0.0)
        if dropping and (generators is None or len(generators) != S):
            raise ValueError(f"training with dropout needs one generator per run ({S})")
        gens = list(generators) if dropping else None
        valid = tokens != self.pad_id
        valid = valid | ~valid.any(dim=2, keepdim=True)
        full = valid.flatten(1).all(dim=1).tolist()
        pads = [None if full[s] else ~valid[s] for s in range(S)]
        tok = self.param("tok.weight")
        if self.grouped:
            h = self._embedding(tokens, tok)
        else:
            h = torch.stack([F.embedding(tokens[s], w, self.padding_idx)
                             for s, w in enumerate(tok.unbind(0))])
        h = h + self.param("pos.weight")[:, None, :T]
        for i in range(self.n_layers):
            pre = f"blocks.{i}."
            a = self._attention(i, self._layer_norm(h, pre + "ln1"), pads, gens)
            h = h + self._dropout(a, self.p, gens)
            z = self._linear(self._layer_norm(h, pre + "ln2"), pre + "mlp.0")
            z = self._linear(F.gelu(z), pre + "mlp.2")
            h = h + self._dropout(z, self.p, gens)
        h = self._layer_norm(h, "norm")
        m = valid.unsqueeze(-1).to(h.dtype)
        z = (h * m).sum(2) / m.sum(2)
        return self._linear(z, "head")

    # ------------------------------------------------------------------ per-run kernels
    def _embedding(self, tokens: Tensor, tok: Tensor) -> Tensor:
        """Grouped: every run's ``F.embedding(tokens[s], tok[s], padding_idx)`` as one lookup
        in the stacked tables (run s's ids offset by s·V); the padding id's row gets no
        gradient, as with ``padding_idx``."""
        S, V, D = tok.shape
        idx = tokens + (torch.arange(S, device=tokens.device) * V).view(S, 1, 1)
        flat = tok.reshape(S * V, D)
        h = F.embedding(idx, flat)
        if self.padding_idx is None:
            return h
        pad = (tokens == self.padding_idx).unsqueeze(-1)
        return torch.where(pad, F.embedding(idx, flat.detach()), h)

    def _linear(self, x: Tensor, name: str) -> Tensor:
        w, b = self.param(name + ".weight"), self.param(name + ".bias")
        if self.grouped:
            S, n_out, n_in = w.shape
            out = torch.baddbmm(b.unsqueeze(1), x.reshape(S, -1, n_in), w.transpose(1, 2))
            return out.view(*x.shape[:-1], n_out)
        return _RunsLinear.apply(x, w, b)

    def _layer_norm(self, x: Tensor, name: str) -> Tensor:
        w, b, eps = self.param(name + ".weight"), self.param(name + ".bias"), self.eps[name]
        shape = (x.shape[-1],)
        if self.grouped:
            view = (x.shape[0],) + (1,) * (x.dim() - 2) + shape
            return F.layer_norm(x, shape, None, None, eps) * w.view(view) + b.view(view)
        return torch.stack([F.layer_norm(xs, shape, ws, bs, eps)
                            for xs, ws, bs in zip(x.unbind(0), w.unbind(0), b.unbind(0))])

    def _dropout(self, x: Tensor, p: float, gens: list[torch.Generator] | None) -> Tensor:
        """``F.dropout(x[s], p)`` of every run, each mask from its own generator."""
        if gens is None or p == 0.0:
            return x
        mask = torch.empty_like(x)
        for m, g in zip(mask.unbind(0), gens):
            bernoulli_(m, 1.0 - p, g)
        return x * mask.div_(1.0 - p)

    def _attention(self, i: int, x: Tensor, pads: list[Tensor | None],
                   gens: list[torch.Generator] | None) -> Tensor:
        S, B, T, D = x.shape
        H = self.n_heads
        pre = f"blocks.{i}.attn."
        qkv = self._linear(x, pre + "qkv")  # [S, B, T, 3D]
        p = self.attn_dropout if self.training else 0.0
        phi = self._phis[i]
        # per-run slices by unbind (its backward stacks the runs' gradients once; indexing
        # would give each run a gradient of the whole batch's size)
        runs = qkv.unbind(0)
        if phi is None:  # classical: SDPA per run, its dropout from the run's generator
            ys = []
            for s in range(S):
                q, k, v = runs[s].view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
                mask = None if pads[s] is None else (~pads[s])[:, None, None, :]
                gen = gens[s] if gens is not None and p > 0.0 else None
                if gen is not None and self.keyed_dropout:  # as the run's keyed model
                    y = quantum_attention(q, k, v, attn_mask=mask, dropout_p=p, generator=gen)
                else:
                    y = _with_generator(gen, F.scaled_dot_product_attention, q, k, v,
                                        attn_mask=mask, dropout_p=p)
                ys.append(y.transpose(1, 2).reshape(B, T, D))
            return self._linear(torch.stack(ys), pre + "out")
        gamma = self.param(pre + "gamma")
        a, w = self.param(pre + "phi.scale").unbind(0), self.param(pre + "phi.weights").unbind(0)
        dropping = gens is not None and p > 0.0
        if self.fused and fused_applies(phi, x, dropping):  # one native kernel per run
            y = torch.stack([
                fused_attention(runs[s].view(B, T, 3, H, D // H), phi, g, key_padding_mask=pads[s],
                                phi_params=(a[s], w[s]))
                for s, g in enumerate(gamma.unbind(0))])
            return self._linear(y.reshape(S, B, T, D), pre + "out")
        # quantum_attention's torch path, all runs at once; Φ per run
        q, k, v = qkv.view(S, B, T, 3, H, D // H).permute(3, 0, 1, 4, 2, 5).contiguous().unbind(0)
        if self.grouped:
            scores = q @ k.transpose(-2, -1)
        else:
            scores = torch.stack([qs @ ks.transpose(-2, -1) for qs, ks in zip(q, k)])
        scores = scores * (1.0 / math.sqrt(D // H))
        if self.grouped and _chain_maps(phi, scores):  # Φ of every run in one vmapped pass
            phis = _vmapped_chain(phi, self.param(pre + "phi.weights"),
                                  self.param(pre + "phi.scale"), scores)
        else:
            phis = torch.stack([phi.evaluate(sc, w[s], a[s])
                                for s, sc in enumerate(scores.unbind(0))])
        logits = scores + gamma.view(S, 1, 1, 1, 1) * phis
        if any(pd is not None for pd in pads):
            keep = torch.stack([torch.ones(B, T, dtype=torch.bool, device=x.device)
                                if pd is None else ~pd for pd in pads])
            logits = logits.masked_fill(~keep[:, :, None, None, :], float("-inf"))
        weights = self._dropout(torch.softmax(logits, dim=-1), p, gens if dropping else None)
        y = weights @ v if self.grouped else torch.stack([ws @ vs for ws, vs in zip(weights, v)])
        return self._linear(y.transpose(2, 3).reshape(S, B, T, D), pre + "out")


def _chain_maps(phi, scores: Tensor) -> bool:
    """Whether Φ of ``phi`` on ``scores`` is the transfer-matrix chain (a
    :class:`~qsgd.attention.ScoreCircuit` whose method there is the chain), whose torch
    operations :func:`torch.func.vmap` maps over the runs (on CUDA what each run computes; on
    a CPU in place of its native kernel, to rounding)."""
    from ..attention import ScoreCircuit

    return type(phi) is ScoreCircuit and phi.resolved_method(scores.device) == "chain"


def _vmapped_chain(phi, weights: Tensor, scales: Tensor, scores: Tensor) -> Tensor:
    """``stack(phi.evaluate(scores[s], weights[s], scales[s]))`` by one vmapped pass of the torch
    chain over the runs (the same operations, batched: equal to rounding)."""
    from ..attention.chain import chain_line

    w = weights if weights.dtype == scores.dtype else weights.to(scores.dtype)

    def one(w_s: Tensor, a_s: Tensor, t_s: Tensor) -> Tensor:
        return chain_line(w_s, a_s, t_s, depth=phi.depth, entangle=phi.entangle, hadamard=True,
                          encoding="reupload", native=False)

    return torch.func.vmap(one)(w, scales, scores)


def bernoulli_(out: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """``out.bernoulli_(p, generator=generator)``: the same numbers, and the generator left in
    the same state, by the native kernel ``qsgd_mt_bernoulli_f32`` (torch's CPU loop redone:
    MT19937, two draws per entry) where it is compiled, ``out`` a contiguous float32 CPU tensor
    and the kernel passed its check against torch in this process; else by torch itself."""
    if (out.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous()
            and generator.device.type == "cpu" and _fast_bernoulli_ok()):
        with torch.profiler.record_function("qsgd::bernoulli_"):  # named in a profile
            state = generator.get_state()
            _native.library().qsgd_mt_bernoulli_f32(state.data_ptr(), out.numel(), float(p),
                                                    out.data_ptr())
            generator.set_state(state)
        return out
    return out.bernoulli_(p, generator=generator)


@functools.lru_cache(maxsize=1)
def _fast_bernoulli_ok() -> bool:
    """Whether the kernel is compiled, reads this torch's generator state (its layout: 5056
    bytes) and draws what ``bernoulli_`` draws, checked once per process on 1,001 entries
    from a fresh generator at an odd offset of its stream."""
    lib = _native.library()
    if lib is None or torch.Generator().get_state().numel() != 5056:
        return False
    a, b = torch.Generator().manual_seed(20260101), torch.Generator().manual_seed(20260101)
    torch.rand(1, generator=a)
    torch.rand(1, generator=b)
    want = torch.empty(1001).bernoulli_(0.9, generator=a)
    state, got = b.get_state(), torch.empty(1001)
    lib.qsgd_mt_bernoulli_f32(state.data_ptr(), got.numel(), 0.9, got.data_ptr())
    return bool(torch.equal(want, got) and torch.equal(state, a.get_state()))


class _RunsLinear(torch.autograd.Function):
    """``F.linear(x[s], w[s], b[s])`` of every run s into one ``[S, …, out]`` tensor, and its
    backward, with the very calls autograd makes for one run's ``F.linear`` (``addmm`` forward;
    ``grad @ w``, ``gradᵀ @ x`` and the bias's sum over rows backward), each writing its run's
    slice of a batched result: no per-run outputs to stack."""

    @staticmethod
    def forward(ctx, x, w, b):
        S, n_out, n_in = w.shape
        xs = x.reshape(S, -1, n_in)
        out = x.new_empty(S, xs.shape[1], n_out)
        for s in range(S):
            torch.addmm(b[s], xs[s], w[s].t(), out=out[s])
        ctx.save_for_backward(xs, w)
        ctx.shape = x.shape
        return out.view(*x.shape[:-1], n_out)

    @staticmethod
    def backward(ctx, grad):
        xs, w = ctx.saved_tensors
        S, n_out, n_in = w.shape
        g = grad.reshape(S, -1, n_out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = xs.new_empty(xs.shape)
            for s in range(S):
                torch.mm(g[s], w[s], out=gx[s])
            gx = gx.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            gw = w.new_empty(S, n_out, n_in)
            for s in range(S):
                torch.mm(g[s].t(), xs[s], out=gw[s])
        if ctx.needs_input_grad[2]:
            gb = w.new_empty(S, 1, n_out)
            for s in range(S):
                torch.sum(g[s], 0, keepdim=True, out=gb[s])
            gb = gb.view(S, n_out)
        return gx, gw, gb


def _with_generator(gen: torch.Generator | None, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the global CPU generator in ``gen``'s state, which then
    takes the state ``fn`` left (None: the plain call)."""
    if gen is None:
        return fn(*args, **kwargs)
    saved = torch.get_rng_state()
    torch.set_rng_state(gen.get_state())
    try:
        return fn(*args, **kwargs)
    finally:
        gen.set_state(torch.get_rng_state())
        torch.set_rng_state(saved)
