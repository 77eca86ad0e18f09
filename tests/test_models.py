"""The transformer classifier: shapes, padding, the quantum model's classical limit, and a
short training run on a toy task with both attention kinds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qsgd.models import TransformerClassifier

F64 = torch.float64


def _tokens(seed=0, B=4, T=7, vocab=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (B, T), generator=g)


@pytest.mark.parametrize("attention", ["classical", "quantum"])
def test_shapes_and_padding_invariance(attention):
    """Extra padding at the end changes nothing: pad keys are masked, pad positions are left
    out of the pooling, and real tokens keep their positions."""
    torch.manual_seed(0)
    m = TransformerClassifier(11, 3, max_len=12, attention=attention).double().eval()
    tok = _tokens()
    tok[1, 5:] = 0
    out = m(tok)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    longer = torch.cat([tok, torch.zeros(4, 3, dtype=tok.dtype)], dim=1)
    assert torch.allclose(m(longer), out, atol=1e-12)
    assert torch.allclose(m(tok[1:2, :5]), out[1:2], atol=1e-12)


def test_quantum_with_zero_gamma_is_classical():
    torch.manual_seed(0)
    c = TransformerClassifier(11, 3, max_len=8, attention="classical").double()
    q = TransformerClassifier(11, 3, max_len=8, attention="quantum").double()
    missing, unexpected = q.load_state_dict(c.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.endswith(("phi.scale", "phi.weights", "gamma")) for k in missing)
    with torch.no_grad():
        for blk in q.blocks:
            blk.attn.gamma.zero_()
    tok = _tokens(T=8)
    tok[0, 6:] = 0
    assert torch.allclose(q(tok), c(tok), atol=1e-12)
    # the default γ = 0.1 starts near, not at, the classical model
    q2 = TransformerClassifier(11, 3, max_len=8, attention="quantum").double()
    q2.load_state_dict(c.state_dict(), strict=False)
    gap = (q2(tok) - c(tok)).abs().max()
    assert 0 < gap < 0.5


def test_all_padding_row_is_finite_and_validation():
    m = TransformerClassifier(11, 2, max_len=6, attention="quantum")
    tok = _tokens(T=6)
    tok[2] = 0
    assert torch.isfinite(m(tok)).all()
    with pytest.raises(ValueError, match="exceeds max_len=6"):
        m(_tokens(T=7))
    with pytest.raises(ValueError, match="invalid attention: 'hybrid'"):
        TransformerClassifier(11, 2, max_len=6, attention="hybrid")
    with pytest.raises(ValueError, match="invalid pad_id"):
        TransformerClassifier(11, 2, max_len=6, pad_id=11)
    with pytest.raises(ValueError, match="invalid d_model"):
        TransformerClassifier(11, 2, max_len=6, d_model=0)


def test_parameter_count_is_small():
    c = TransformerClassifier(64, 4, max_len=24)
    q = TransformerClassifier(64, 4, max_len=24, attention="quantum")
    nc = sum(p.numel() for p in c.parameters())
    nq = sum(p.numel() for p in q.parameters())
    assert nc < 30_000 and nq - nc == 2 * (2 + 2 * 2 * 2 + 1)  # per layer: scale, weights, γ


def _toy(n, seed, T=10, vocab=12):
    """Label 1 when token 3 occurs before token 4 (both present, order matters); needs
    attention plus positions, not just a bag of tokens."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(5, vocab, (n, T), generator=g)
    i = torch.randint(0, T, (n,), generator=g)
    j = (i + torch.randint(1, T, (n,), generator=g)) % T
    tok[torch.arange(n), i] = 3
    tok[torch.arange(n), j] = 4
    lengths = torch.randint(T - 3, T + 1, (n,), generator=g)
    lengths = torch.maximum(lengths, torch.maximum(i, j) + 1)
    tok[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    return tok, (i < j).long()


@pytest.fixture
def one_thread():
    """A short training run on a shared 2-core box is far faster without thread contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("attention", ["classical", "quantum"])
def test_trains_on_a_toy_task(attention, one_thread):
    torch.manual_seed(0)
    xtr, ytr = _toy(512, 1)
    xte, yte = _toy(512, 2)
    m = TransformerClassifier(12, 2, max_len=10, attention=attention)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = last = None
    for step in range(120):
        idx = torch.arange(step * 64, step * 64 + 64) % 512
        loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    with torch.no_grad():
        acc = float((m(xte).argmax(-1) == yte).float().mean())
    assert last < 0.8 * first, (first, last)
    assert acc > 0.7, acc
