"""Greedy decoding of a :class:`qsgd.models.llama.CompactLlama` with a KV cache, each step
replayed as a CUDA graph on a GPU: the exact-match evaluation of the LLM arm."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qsgd.models.llama import CompactLlama

__all__ = ["greedy_generate"]


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

    with model.autocast(dev):
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
        with model.autocast(dev):
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
