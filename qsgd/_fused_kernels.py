"""Triton kernels of the fused CUDA step (imported lazily by :mod:`qsgd.fused`; never at
``import qsgd``).

Three kernels, all multi-tensor: every launch covers a whole list of tensors through small device
tables (per tensor and buffer an int64 element offset from one base pointer, the element count,
and a block → tensor map).

* ``adamw_kernel``: one read of θ, g, m, v and one write of θ, m, v per element; the
  perturbation term is computed from the loaded θ in registers, so sin/cos/taylor cost no memory
  traffic (the circuit's closed-form readout too: its groups lie inside one block). Noise
  (gauss, unif, anti, anneal, annealrel) is Philox keyed on (seed, step, tensor index), the key
  mixed in the kernel with the same SplitMix64 as :func:`qsgd.perturbations.noise_key`.
* ``sumsq_kernel`` + ``finalize_rms_kernel``: s = RMS over each in-scope tensor before the
  update of sin(πθ) (gauss/unif), sin(πθ)·g (anti) or g (annealrel): per-block partial sums,
  then one program per tensor adds its partials in a fixed order (deterministic, no atomics).
* ``noise_kernel``: the same Philox noise (``_noise``) written to a buffer; the reference path
  on CUDA draws its noise here (every stochastic term but circuit's shots), so reference and
  fused steps see the same ξ.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language import core as tlc
from triton.language.extra import libdevice

# Under TRITON_INTERPRET=1 (CPU tests of these kernels) libdevice is unavailable.
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")

# Perturbation codes (constexpr PERT).
PERT_NONE, PERT_SIN, PERT_COS, PERT_TAYLOR, PERT_GAUSS, PERT_UNIF, PERT_ANTI, PERT_CIRCUIT, \
    PERT_ANNEAL, PERT_ANNEALREL, PERT_MOMENT, PERT_SINNORM = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
NOISE_NORMAL, NOISE_UNIFORM = 0, 1
# What the reduction pass sums (constexpr SQ of sumsq_kernel): sin(πθ)² (gauss, unif),
# (sin(πθ)·g)² (anti), g² (annealrel).
SQ_SIN, SQ_SIN_G, SQ_G = 0, 1, 2


@triton.jit
def _splitmix64(x):
    x = x + 0x9E3779B97F4A7C15
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


@triton.jit
def _rint(x):
    """Round half to even, as torch.round."""
    if _INTERPRET:
        return tl.floor(x + 0.5)  # ties differ; only the CPU interpreter tests use this
    else:
        return libdevice.rint(x)


@triton.jit
def _reduce_pi(x):
    """(x − r, (−1)^r) with r = round(x): qsgd.perturbations.sinpi/cospi's argument reduction."""
    r = _rint(x)
    sign = 1.0 - 2.0 * (r - 2.0 * tl.floor(r * 0.5))  # 1 − 2·remainder(r, 2)
    return x - r, sign


@triton.jit
def sinpi(x):
    """sin(πx) exactly as qsgd.perturbations.sinpi computes it (fp32)."""
    y, sign = _reduce_pi(x)
    return tl.sin(y * 3.141592653589793) * sign


@triton.jit
def cospi(x):
    """cos(πx) exactly as qsgd.perturbations.cospi computes it (fp32)."""
    y, sign = _reduce_pi(x)
    return tl.cos(y * 3.141592653589793) * sign


@triton.jit
def noise_key_device(seed, step, index):
    """qsgd.perturbations.noise_key(seed, step, index, stream=0), in uint64 arithmetic."""
    h = _splitmix64(tlc.to_tensor(seed).to(tl.uint64))
    h = _splitmix64(h ^ tlc.to_tensor(step).to(tl.uint64))
    h = _splitmix64(h ^ tlc.to_tensor(index).to(tl.uint64))
    h = _splitmix64(h)  # stream 0: h ^ 0
    return h & 0x7FFFFFFFFFFFFFFF


@triton.jit
def _noise(key, start, BLOCK: tl.constexpr, KIND: tl.constexpr):
    """The one definition of the CUDA noise, for elements start … start+BLOCK−1 of a tensor
    (start and BLOCK multiples of 4): element i is word i % 4 of Philox-4x32-10 at counter
    i // 4 under ``key``. KIND 0: N(0, 1) by Box–Muller on word pairs (0, 1) and (2, 3), using
    both the cosine and the sine output; KIND 1: U[0, 1) (Triton's uint → float map). One Philox
    call serves four elements, which keeps the kernel memory-bound."""
    c = start // 4 + tl.arange(0, BLOCK // 4)
    i1, i2, i3, i4 = tl.randint4x(key, c)
    u1 = tl.random.uint_to_uniform_float(i1)
    u2 = tl.random.uint_to_uniform_float(i2)
    u3 = tl.random.uint_to_uniform_float(i3)
    u4 = tl.random.uint_to_uniform_float(i4)
    if KIND == 0:
        u1, u2 = tl.random.pair_uniform_to_normal(u1, u2)
        u3, u4 = tl.random.pair_uniform_to_normal(u3, u4)
    # out[4c + k] = word k of counter c: join(join(w0, w2), join(w1, w3))[c, i, j] = w_{2i+j}
    return tl.reshape(tl.join(tl.join(u1, u3), tl.join(u2, u4)), [BLOCK])


@triton.jit(do_not_specialize=["key", "n"])
def noise_kernel(out_ptr, key, n, KIND: tl.constexpr, BLOCK: tl.constexpr):
    # int64 positions: any n (counters below 2**32 are the same as the fused kernel's int32)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, _noise(key, start, BLOCK, KIND), mask=offs < n)


@triton.jit(do_not_specialize=["seed", "step", "index"])
def key_kernel(out_ptr, seed, step, index):
    """Test hook: the in-kernel noise key, for comparison with the host's noise_key."""
    tl.store(out_ptr, noise_key_device(seed, step, index).to(tl.int64, bitcast=True))


@triton.jit
def _tensor_ptr(base, tab, tid, k, T, VEC: tl.constexpr):
    """Pointer to tensor ``tid``'s buffer ``k`` (0 θ, 1 g, 2 m, 3 v): the group's base pointer
    plus an element offset from the table. VEC > 1 (all buffers 16-byte aligned) tells the
    compiler the offset is a multiple of VEC elements, so loads and stores are 16 bytes wide
    (an address table cast to pointers would lose that: int-to-pointer casts drop alignment)."""
    off = tl.load(tab + k * T + tid)
    if VEC > 1:
        off = tl.multiple_of(off, VEC)
    return base + off


@triton.jit
def _scaled(g, gp, gs_ptr, GSCALE: tl.constexpr):
    """g (float32) times the clipping coefficient at gs_ptr when GSCALE, rounded to the
    gradient's dtype first: what ``torch._foreach_mul_(grads, coef)`` writes and a later load
    reads (qsgd.SuperpositionalAdamW.clip_grad_norm_ defers that product to this load)."""
    if GSCALE:
        c = tl.load(gs_ptr).to(tl.float32)
        if _INTERPRET:
            g = g * c
        else:  # rounded on its own, never contracted into a later add (an fma would skip it)
            g = libdevice.mul_rn(g, c)
        g = g.to(gp.dtype.element_ty).to(tl.float32)
    return g


@triton.jit
def _sq(tp, gp, offs, n, gs_ptr, SQ: tl.constexpr, MASKED: tl.constexpr,
        GSCALE: tl.constexpr):
    """The squares the reduction sums, of the in-scope entries offs (< n when MASKED)."""
    if MASKED:
        mask = offs < n
        if SQ == 2:
            x = _scaled(tl.load(gp + offs, mask=mask, other=0.0).to(tl.float32), gp, gs_ptr,
                        GSCALE)
        else:
            x = sinpi(tl.load(tp + offs, mask=mask, other=0.0).to(tl.float32))
            if SQ == 1:
                x = x * _scaled(tl.load(gp + offs, mask=mask, other=0.0).to(tl.float32), gp,
                                gs_ptr, GSCALE)
        return tl.where(mask, x * x, 0.0)
    else:
        if SQ == 2:
            x = _scaled(tl.load(gp + offs).to(tl.float32), gp, gs_ptr, GSCALE)
        else:
            x = sinpi(tl.load(tp + offs).to(tl.float32))
            if SQ == 1:
                x = x * _scaled(tl.load(gp + offs).to(tl.float32), gp, gs_ptr, GSCALE)
        return x * x


@triton.jit(do_not_specialize=["T", "n_qubits"])
def sumsq_kernel(base, off_tab, numel_tab, rblk_tensor, rblk_first, partial_ptr, T,
                 n_qubits, gs_ptr, SQ: tl.constexpr, FIRST_N: tl.constexpr, VEC: tl.constexpr,
                 RB: tl.constexpr, BLOCK: tl.constexpr, GSCALE: tl.constexpr):
    """partial[b] = Σ x² over reduction block b (RB in-scope elements of one tensor), with
    x = sin(πθ) (SQ 0), sin(πθ)·g (SQ 1) or g (SQ 2); g scaled by *gs_ptr when GSCALE."""
    pid = tl.program_id(0)
    tid = tl.load(rblk_tensor + pid)
    lb = pid - tl.load(rblk_first + tid)
    n = tl.load(numel_tab + tid)
    if FIRST_N:
        n = tl.minimum(n, n_qubits)
    tp = _tensor_ptr(base, off_tab, tid, 0, T, VEC)
    gp = _tensor_ptr(base, off_tab, tid, 1, T, VEC)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    if (lb + 1) * RB <= n:
        for i in range(0, RB, BLOCK):
            acc += _sq(tp, gp, lb * RB + i + tl.arange(0, BLOCK), n, gs_ptr, SQ, False,
                        GSCALE)
    else:
        for i in range(0, RB, BLOCK):
            acc += _sq(tp, gp, lb * RB + i + tl.arange(0, BLOCK), n, gs_ptr, SQ, True,
                        GSCALE)
    tl.store(partial_ptr + pid, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["n_qubits"])
def finalize_rms_kernel(partial_ptr, rblk_first, numel_tab, s_ptr, n_qubits,
                        FIRST_N: tl.constexpr, MAX_PARTS: tl.constexpr, FB: tl.constexpr):
    """s[t] = sqrt(Σ partials of tensor t / in-scope count), summed in float64, fixed order."""
    tid = tl.program_id(0)
    lo = tl.load(rblk_first + tid)
    hi = tl.load(rblk_first + tid + 1)
    n = tl.load(numel_tab + tid)
    if FIRST_N:
        n = tl.minimum(n, n_qubits)
    acc = tl.zeros([FB], dtype=tl.float64)
    for start in range(0, MAX_PARTS, FB):  # MAX_PARTS ≥ most partials of any one tensor
        offs = lo + start + tl.arange(0, FB)
        acc += tl.load(partial_ptr + offs, mask=offs < hi, other=0.0).to(tl.float64)
    total = tl.sum(acc, axis=0)
    s = tl.where(n > 0, tl.sqrt(total / tl.maximum(n, 1).to(tl.float64)), 0.0)
    tl.store(s_ptr + tid, s.to(tl.float32))


@triton.jit
def _circuit_readout(theta, BLOCK: tl.constexpr, NQ: tl.constexpr, CMASK: tl.constexpr,
                     CCOS: tl.constexpr):
    """r = ⟨X_j⟩ of the circuit perturbation for BLOCK entries (BLOCK a multiple of NQ, the
    block starting at a group boundary), in closed form (theory T5): with f_q = sin(πθ_q)
    (cos(πθ_q) with the leading Hadamards, CCOS), r_j = Π_{q∈S_j} f_q over the qubits q of
    its own group. CMASK packs the supports: bit NQ·q + j is set when q ∈ S_j. Entries past a
    tensor's end are loaded as θ = 0, the reference's zero padding."""
    if CCOS:
        f = cospi(theta)
    else:
        f = sinpi(theta)
    f2 = tl.reshape(f, [BLOCK // NQ, NQ])
    col = tl.arange(0, NQ)[None, :]
    r2 = tl.full([BLOCK // NQ, NQ], 1.0, tl.float32)
    for q in tl.static_range(NQ):
        fq = tl.sum(tl.where(col == q, f2, 0.0), axis=1)  # f of qubit q of each group
        outs = (CMASK >> (NQ * q)) & ((1 << NQ) - 1)  # the outputs j whose S_j holds q
        sel = ((tl.full([1, NQ], outs, tl.int32) >> col) & 1) == 1
        r2 = tl.where(sel, r2 * fq[:, None], r2)
    return tl.reshape(r2, [BLOCK])


@triton.jit
def _adamw_block(pp, gp, mp, vp, start, n, s_ptr, index_tab, tid,
                 seed, step, decay, w1, beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam,
                 n_qubits, lam, sigma, PERT: tl.constexpr, FIRST_N: tl.constexpr,
                 LERP_LOW: tl.constexpr, PREV: tl.constexpr, NQ: tl.constexpr,
                 CMASK: tl.constexpr, CCOS: tl.constexpr, BLOCK: tl.constexpr,
                 MASKED: tl.constexpr, gs_ptr, GSCALE: tl.constexpr):
    offs = start + tl.arange(0, BLOCK)
    if MASKED:
        mask = offs < n
        theta = tl.load(pp + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(gp + offs, mask=mask, other=0.0).to(tl.float32)
        m = tl.load(mp + offs, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(vp + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        theta = tl.load(pp + offs).to(tl.float32)
        g = tl.load(gp + offs).to(tl.float32)
        m = tl.load(mp + offs).to(tl.float32)
        v = tl.load(vp + offs).to(tl.float32)
    g = _scaled(g, gp, gs_ptr, GSCALE)  # the deferred clipping product, if any

    # the direction term q (PERT 1-7), the gradient the moments see (PERT 8, 9), or the one
    # the first moment sees (PERT 10); sinnorm's term (PERT 11) needs this step's u, below
    if PERT == 1:
        q = sinpi(theta) * g
    elif PERT == 2:
        q = cospi(theta) * g
    elif PERT == 3:
        q = (theta * 3.141592653589793) * g
    elif PERT == 4:
        s = tl.load(s_ptr + tid)
        key = noise_key_device(seed, step, tl.load(index_tab + tid))
        q = (_noise(key, start, BLOCK, 0) * s) * g
    elif PERT == 5:
        a = tl.load(s_ptr + tid) * 1.7320508075688772
        key = noise_key_device(seed, step, tl.load(index_tab + tid))
        q = (((_noise(key, start, BLOCK, 1) * 2.0) - 1.0) * a) * g
    elif PERT == 6:  # anti: s·(z_t − z_{t−1})/√2, z_0 = 0
        index = tl.load(index_tab + tid)
        z = _noise(noise_key_device(seed, step, index), start, BLOCK, 0)
        if PREV:
            z = z - _noise(noise_key_device(seed, step - 1, index), start, BLOCK, 0)
        q = z * (tl.load(s_ptr + tid) * 0.7071067811865476)
    elif PERT == 7:
        q = _circuit_readout(theta, BLOCK, NQ, CMASK, CCOS) * g
    else:
        q = g  # unused
    if PERT == 8 or PERT == 9:  # anneal (σ_t = sigma), annealrel (σ_t = RMS(g)·sigma): g + λ·σ_t·z
        key = noise_key_device(seed, step, tl.load(index_tab + tid))
        if PERT == 8:
            sd = sigma
        else:
            sd = tl.load(s_ptr + tid) * sigma
        gn = g + lam * (_noise(key, start, BLOCK, 0) * sd)
        if FIRST_N:
            g = tl.where(offs < n_qubits, gn, g)
        else:
            g = gn

    gm = g  # what the first moment averages
    if PERT == 10:  # moment: (1 + λ·sin(πθ))⊙g = g + λ·(sin(πθ)·g) into m alone, v from g
        gt = g + lam * (sinpi(theta) * g)
        if FIRST_N:
            gm = tl.where(offs < n_qubits, gt, g)
        else:
            gm = gt

    theta_new = theta * decay
    if LERP_LOW:
        m = m + w1 * (gm - m)
    else:
        m = gm - (gm - m) * (1.0 - w1)
    v = v * beta2
    v = v + (c2 * g) * g
    denom = tl.div_rn(tl.sqrt_rn(v), bc2s) + eps
    theta_new = theta_new + neg_step_size * tl.div_rn(m, denom)
    if PERT == 11:  # sinnorm: Q = sin(πθ)⊙u, u = (m/bc1)/denom this step's Adam direction
        q = tl.div_rn(tl.div_rn(m, sigma), denom) * sinpi(theta)  # sigma = bc1
    if (PERT != 0 and PERT < 8) or PERT == 11:
        if FIRST_N:
            theta_new = tl.where(offs < n_qubits, theta_new + neg_lr_lam * q, theta_new)
        else:
            theta_new = theta_new + neg_lr_lam * q

    dt = pp.dtype.element_ty
    if MASKED:
        tl.store(pp + offs, theta_new.to(dt), mask=mask)
        tl.store(mp + offs, m.to(dt), mask=mask)
        tl.store(vp + offs, v.to(dt), mask=mask)
    else:
        tl.store(pp + offs, theta_new.to(dt))
        tl.store(mp + offs, m.to(dt))
        tl.store(vp + offs, v.to(dt))


# Scalars that change between steps or groups are not specialized on (no recompiles when the
# step count happens to be a multiple of 16).
@triton.jit(do_not_specialize=["T", "seed", "step", "decay", "w1", "beta2", "c2", "bc2s", "eps",
                               "neg_step_size", "neg_lr_lam", "n_qubits", "lam", "sigma"])
def adamw_kernel(base, off_tab, numel_tab, index_tab, blk_tensor, blk_first, s_ptr, T,
                 seed, step, decay, w1, beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam,
                 n_qubits, lam, sigma, gs_ptr,
                 PERT: tl.constexpr, FIRST_N: tl.constexpr, LERP_LOW: tl.constexpr,
                 PREV: tl.constexpr, NQ: tl.constexpr, CMASK: tl.constexpr,
                 CCOS: tl.constexpr, VEC: tl.constexpr, BLOCK: tl.constexpr,
                 GSCALE: tl.constexpr):
    """One SuperpositionalAdamW step over BLOCK elements of one tensor (see qsgd.fused).

    Op order mirrors qsgd.optimizer.reference_step (itself torch.optim.AdamW's):
    Q from θ before decay (direction kind), or g ← g + λ·ξ on the in-scope entries (gradient
    kind: anneal, annealrel; both moments see it); θ·decay; m lerp (towards g + λ·sin(πθ)·g
    for moment, the first-moment kind); v·β2 + (1−β2)·g·g; denom = √v/√bc2 + ε;
    θ + (−lr/bc1)·(m/denom); θ + (−lr·λ)·Q (sinnorm, the normalized kind: Q = sin(πθ)·u with
    u = (m/bc1)/denom, bc1 passed as sigma). Full blocks run unmasked
    (16-byte accesses); only each tensor's last block is masked. With scope first_n, blocks
    past the first n_qubits entries skip the perturbation entirely. Scalars: lam = λ and
    sigma (σ_t of anneal; the decay factor of annealrel; bc1 for sinnorm),
    PREV: step > 1 (anti's z_{t−1});
    NQ, CMASK, CCOS: the circuit's group size, supports and sines/cosines
    (_circuit_readout); GSCALE: g is multiplied by *gs_ptr at its load (a deferred gradient
    clipping; gs_ptr is unread otherwise).
    """
    pid = tl.program_id(0)
    tid = tl.load(blk_tensor + pid)
    lb = pid - tl.load(blk_first + tid)
    n = tl.load(numel_tab + tid)
    start = lb * BLOCK
    pp = _tensor_ptr(base, off_tab, tid, 0, T, VEC)
    gp = _tensor_ptr(base, off_tab, tid, 1, T, VEC)
    mp = _tensor_ptr(base, off_tab, tid, 2, T, VEC)
    vp = _tensor_ptr(base, off_tab, tid, 3, T, VEC)
    full = (lb + 1) * BLOCK <= n
    if FIRST_N and start >= n_qubits:
        # a block past the first n_qubits entries: plain AdamW (no noise drawn)
        if full:
            _adamw_block(pp, gp, mp, vp, start, n, s_ptr, index_tab, tid, seed, step, decay, w1,
                         beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam, n_qubits, lam, sigma,
                         0, FIRST_N, LERP_LOW, PREV, NQ, CMASK, CCOS, BLOCK, False, gs_ptr,
                         GSCALE)
        else:
            _adamw_block(pp, gp, mp, vp, start, n, s_ptr, index_tab, tid, seed, step, decay, w1,
                         beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam, n_qubits, lam, sigma,
                         0, FIRST_N, LERP_LOW, PREV, NQ, CMASK, CCOS, BLOCK, True, gs_ptr,
                         GSCALE)
    elif full:
        _adamw_block(pp, gp, mp, vp, start, n, s_ptr, index_tab, tid, seed, step, decay, w1,
                     beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam, n_qubits, lam, sigma,
                     PERT, FIRST_N, LERP_LOW, PREV, NQ, CMASK, CCOS, BLOCK, False, gs_ptr,
                     GSCALE)
    else:
        _adamw_block(pp, gp, mp, vp, start, n, s_ptr, index_tab, tid, seed, step, decay, w1,
                     beta2, c2, bc2s, eps, neg_step_size, neg_lr_lam, n_qubits, lam, sigma,
                     PERT, FIRST_N, LERP_LOW, PREV, NQ, CMASK, CCOS, BLOCK, True, gs_ptr,
                     GSCALE)
