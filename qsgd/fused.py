"""The fused CUDA step of :class:`qsgd.SuperpositionalAdamW` (Triton), and the CUDA noise source.

One kernel launch updates a whole list of tensors: it reads θ, g, m, v once and writes θ, m, v
once (28 bytes per fp32 parameter, the memory floor of any AdamW step), and computes the
perturbation term from the θ and g it has already loaded, so the sine (and cos, taylor, the
circuit's readout, the keyed noise) costs no memory traffic at all. The maths and its op order
are those of :func:`qsgd.optimizer.reference_step`; results agree with it to fp32 rounding
(tests/test_fused.py: on a GPU, and on the CPU under Triton's interpreter).

Supported, used automatically (``fused=None``) when every tensor of a parameter group is on one
CUDA device, contiguous, of one dtype, float32 or bfloat16 (parameters, gradients, moments),
has fewer than 2**31 − 2**20 elements, Triton can be imported, and ``track_ratio`` is off:

* perturbations (and any of them with λ = 0), with the bytes moved per fp32 parameter
  (bfloat16: half):

  ======================================  =====  ==============================================
  none, sin, cos, taylor                  28     one pass
  sinnorm, moment                         28     one pass: sin(πθ) on u, or on g into m alone
  circuit (closed form, below)            28     one pass: the readout is computed in registers
  anneal                                  28     one pass: σ_t·z added to g in registers
  gauss, unif                             32     + the RMS of sin(πθ) (reads θ)
  annealrel                               32     + the RMS of g (reads g)
  anti                                    36     + the RMS of sin(πθ)·g (reads θ and g)
  ======================================  =====  ==============================================

  scopes ``all`` and ``first_n`` (the reduction and the term over the first n_qubits entries
  only; with first_n the reduction pass reads n_qubits entries per tensor, so the step moves
  about 28 bytes), bias correction on or off, weight decay, per-tensor step counts (tensors are
  batched by step), any number and sizes of tensors (one launch covers them all: ~100 big ones
  or thousands of small ones).

Which perturbations have a kernel is a property of their class: ``Perturbation.fused_code``
(the kernel's constexpr ``PERT``), read from the exact class only, so a subclass that overrides
``term`` never inherits a kernel that would not see its override; an instance whose settings
the kernel does not compute says why (``Perturbation.fused_unsupported``).
:data:`FUSED_PERTURBATIONS` is derived from the registry. Anything else (a circuit with shots,
the Aer backend, encoding ``reupload``, extra angles or a
register that is not 1, 2, 4 or 8 qubits, custom perturbations, CPU tensors, other dtypes,
non-contiguous tensors, ``track_ratio=True``, no Triton) falls back silently to the foreach
or per-tensor path; :func:`fused_unsupported_reason` is the one support check, and says why for
a given group.

Kinds. A direction-kind term Q is added as θ − lr·λ·Q after the Adam step (as the reference).
A gradient-kind term (anneal, annealrel) replaces g by g + λ·ξ on the in-scope entries right
after the load, before anything else reads g: both moments see it, weight decay (θ only) does
not, exactly the reference's order. The first-moment kind (moment) feeds g + λ·sin(πθ)·g to m
alone (v from the raw g); the normalized kind (sinnorm) adds −lr·λ·sin(πθ)·u after the Adam
step, u = (m/bc1)/denom this step's Adam direction, in the reference's op order. Gradient
clipping is the caller's, before ``step``, so it sees the raw g in both; with
:meth:`qsgd.SuperpositionalAdamW.clip_grad_norm_` the clipping product g·c (c a device scalar,
``grad_scale``) is done here, at the load of g (rounded on its own, then to g's dtype, as
``torch._foreach_mul_`` writes it; the rest of the step to a rounding, this being another
compilation of the kernel), which saves the pass over the gradients that multiplying
them in place costs (a read and a write of g: 2.0 ms a step at 1B float32 parameters on an
H200, results/bench/optimizer-clip).

Reductions. gauss and unif need s = RMS of sin(πθ), anti s = RMS of sin(πθ)·g, annealrel
RMS(g), each over the in-scope tensor *before* the update: a first pass over θ and/or g
(partial sums per block, then one fixed-order sum per tensor in float64: deterministic, no
atomics). Measured on an H200 (results/bench/optimizer_step.md, 1B parameters): gauss 8.90 ms,
unif 8.77, sin 7.21; so Box–Muller costs gauss ~1.5% over unif, and both pay ~23% for this
pass (32 vs 28 bytes and a second launch), which the rule (s from θ before the update) makes
necessary: a gauss slower than unif in a training run is not this kernel's doing.

Circuit. The readout ⟨X_j⟩ of the circuit perturbation's default circuit (U·⊗Ry(πθ_q)|0⟩, U the
CNOT chains; any depth, entangle, hadamard) is Π_{q∈S_j} f_q over qubits of its own group, with
f = sin(πθ) (cos(πθ) with the leading Hadamards): theory T5,
:meth:`qsgd.perturbations.Circuit.readout_supports`. The kernel's blocks (BLOCK = 1024) start at
a multiple of BLOCK inside each tensor, so for n_qubits ∈ {1, 2, 4, 8} no group straddles two
blocks; the tail group of a tensor whose size is not a multiple of n_qubits reads θ = 0 past the
end, as the reference pads it (f = 0, or 1 with Hadamards).

Noise. On CUDA, every keyed ξ (gauss, unif, anti, anneal, annealrel) is Philox-4x32-10 keyed on
:func:`qsgd.noise.noise_key` (seed, step, tensor index): element i of the in-scope slice
is word i mod 4 of the Philox block at counter ⌊i/4⌋ (normal: Box–Muller on word pairs;
uniform: Triton's uint → [0, 1) map); anti draws z_t and z_{t−1} (keys at steps t and t − 1;
z_0 = 0). The fused kernel mixes the key in-kernel with the same SplitMix64; the reference and
foreach paths on CUDA draw the same stream through :func:`qsgd.noise.cuda_noise` (same Triton
code). So on CUDA reference ≡ fused for the noise, and a resumed run is bit-identical (the fused
step is deterministic: fixed reduction order, keyed noise). On the CPU the noise comes from a
keyed ``torch.Generator`` as before: CPU and CUDA runs draw different (equally distributed)
noise.

Numerics: the kernel computes in float32 (bfloat16 tensors are loaded to float32 and rounded
once on store, as ``torch.optim.AdamW(fused=True)`` does); √ and ÷ are correctly rounded
(``sqrt_rn``, ``div_rn``); sin(πθ) and cos(πθ) use the argument reduction of
:func:`qsgd.perturbations.sinpi` and libdevice's precise sinf/cosf, like torch's CUDA kernels.
The only differences from the reference are FMA contraction, for the reductions the summation
order of s, and for the circuit the closed form in place of the simulator's statevector.

Why a Triton kernel rather than torch.compile: measured on an H200 (1B fp32 parameters in 100
tensors, results/bench/optimizer_step.md), a torch.compile'd per-tensor sin step reaches the same
bandwidth (7.17 vs 7.21 ms) but needs one launch and one guard check per tensor, 7.2 ms of host
time per step against 0.6 ms here, so it is host-bound as soon as tensors are small or many;
one compiled graph over all tensors would recompile for every model.

This module imports Triton only inside the functions that launch kernels (through
:func:`qsgd.noise.triton_kernels`), so ``import qsgd`` and ``import qsgd.fused`` work without it.
It depends on the base of :mod:`qsgd.perturbations` (the class and the registry) and on
:mod:`qsgd.noise`, and nothing imports it at module level: no import cycle.
"""

from __future__ import annotations

import operator
from collections import OrderedDict

import torch
from torch import Tensor

from .noise import triton_available, triton_kernels
from .perturbations import Perturbation, available, perturbation_class

__all__ = [
    "FUSED_PERTURBATIONS",
    "triton_available",
    "fused_code",
    "fused_perturbations",
    "fused_unsupported_reason",
    "fused_sharded_reason",
    "fused_group",
]

_dtype_of = operator.attrgetter("dtype")
_DTYPES = (torch.float32, torch.bfloat16)
_MAX_NUMEL = 2**31 - 2**20  # int32 offsets inside the kernels, with a block to spare

# Launch configuration of the update kernel (elements per program, warps per program), and of
# the s reduction (elements per partial sum, inner block). Chosen by measurement on an H200
# (ablations/bench_optimizer.py --sweep); see results/bench/optimizer_step.md.
BLOCK = 1024
NUM_WARPS = 8
RED_RB = 16384
RED_BLOCK = 2048
RED_WARPS = 4
_FIN_FB = 1024
#: the update kernel's (BLOCK, num_warps) for the perturbations whose best launch differs from
#: (BLOCK, NUM_WARPS), by name (the sweep of ablations/bench_optimizer.py times each); the
#: noise is keyed on element positions, so a launch changes no number
UPDATE_LAUNCH: dict[str, tuple[int, int]] = {
    # anti at 1B fp32 on an H200: 10.12 ms at (2048, 8) against 11.36 ms at (1024, 8)
    "anti": (2048, 8),
}

_CACHE_SIZE = 32

#: the kinds of term the kernel computes (qsgd.perturbations.KINDS): added to Adam's direction,
#: to the gradient, to the gradient the first moment sees, or as a factor on Adam's direction
_KERNEL_KINDS = ("direction", "gradient", "first-moment", "normalized")


def _class_code(cls: type[Perturbation]) -> int | None:
    # the one rule for which classes get the kernel (fused_unsupported_reason asks it): the
    # class's own attribute, not an inherited one (see fused_code); a class of a kind the
    # kernel does not compute has none whatever it sets
    return cls.__dict__.get("fused_code") if cls.kind in _KERNEL_KINDS else None


def fused_code(perturbation: Perturbation) -> int | None:
    """The fused kernel's code for ``perturbation``, or None when it has no kernel.

    Read from ``type(perturbation).__dict__``, not by attribute lookup: only the class that
    sets ``fused_code`` gets the kernel, never a subclass (which may override ``term``, and the
    kernel would not see the override). None for a kind the kernel does not compute
    (``_KERNEL_KINDS``: today every kind of :data:`qsgd.perturbations.KINDS`). An instance's
    settings may still rule the kernel out
    (:meth:`Perturbation.fused_unsupported`, asked by :func:`fused_unsupported_reason`)."""
    return _class_code(type(perturbation))


def fused_perturbations() -> tuple[str, ...]:
    """The registered names whose class has a fused kernel, in kernel-code order."""
    coded = [(code, name) for name in available()
             if (code := _class_code(perturbation_class(name))) is not None]
    return tuple(name for _, name in sorted(coded))


#: the names with a fused kernel among the perturbations registered when this module is
#: imported (all built-in ones); :func:`fused_perturbations` reads the registry as it is now
FUSED_PERTURBATIONS = fused_perturbations()


def fused_unsupported_reason(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    perturbation: Perturbation,
    n_qubits: int = 4,
) -> str | None:
    """None when the fused kernel can run this group, else a short reason.

    The one support check: :func:`fused_group` runs it on every step, so the common (supported)
    case maps C-level accessors over all tensors with no Python loop; a reason string is only
    built for an unsupported group. Requirements: a perturbation with a kernel
    (:func:`fused_code`; its kind one the kernel computes) that its settings allow at this
    ``n_qubits`` (:meth:`Perturbation.fused_unsupported`: e.g. a circuit with shots or extra
    angles has no closed form), at least one tensor, every tensor on one CUDA device, of one
    dtype (float32 or bfloat16), contiguous, each gradient and moment of its parameter's size,
    fewer than 2**31 − 2**20 elements, and Triton importable.
    """
    if fused_code(perturbation) is None:  # the rule is _class_code's; the kind only says why
        kind = perturbation.kind
        why = ("" if kind in _KERNEL_KINDS else
               f": its term is of kind {kind!r}, which the kernel does not compute")
        return (f"perturbation {perturbation!r} has no fused kernel{why} "
                f"(fused: {', '.join(fused_perturbations())})")
    why = perturbation.fused_unsupported(n_qubits)
    if why is not None:
        return f"perturbation {perturbation!r} has no fused kernel here: {why}"
    if not params:
        return "no parameters"
    p0 = params[0]
    dev, dtype = p0.device, p0.dtype
    if dev.type != "cuda":
        return f"tensors on {dev.type}, not cuda"
    if dtype not in _DTYPES:
        return f"dtype {dtype} (fused: float32, bfloat16)"
    tensors = (*params, *grads, *exp_avgs, *exp_avg_sqs)
    if set(map(Tensor.get_device, tensors)) != {p0.get_device()}:
        return "tensors on more than one device"
    if set(map(_dtype_of, tensors)) != {dtype}:
        return "tensors of more than one dtype (parameters, gradients, moments)"
    if not all(map(Tensor.is_contiguous, tensors)):
        return "non-contiguous tensor"
    numels = tuple(map(Tensor.numel, params))
    if (tuple(map(Tensor.numel, grads)) != numels or tuple(map(Tensor.numel, exp_avgs)) != numels
            or tuple(map(Tensor.numel, exp_avg_sqs)) != numels):
        return "gradient or moment of another size than its parameter"
    if max(numels) > _MAX_NUMEL:
        return "tensor with 2**31 - 2**20 elements or more"
    if not triton_available():
        return "Triton is not importable"
    return None


def fused_sharded_reason(perturbation: Perturbation) -> str | None:
    """None when the kernel steps DTensor shards as the whole tensor would be stepped, else
    why not: an elementwise term is the same on a shard, but gauss and unif read their whole
    tensor (the RMS of sin(πθ), noise keyed by global position), which the kernel computes
    over the local shard it sees; such a group takes the foreach path, which computes them
    over the global tensor (:mod:`qsgd.sharding`)."""
    if perturbation.elementwise:
        return None
    return (f"perturbation {perturbation!r} reads its whole tensor (an RMS, noise keyed by "
            "global position) and the group holds DTensor shards: the kernel would compute "
            "them per shard, the foreach path computes them over the global tensor")


# ---------------------------------------------------------------------------------------------
# Device tables, cached: the block layout depends only on the sizes; the address table only on
# the addresses (gradients are often re-allocated each step; a small LRU keeps the recent ones).

class _LRU(OrderedDict):
    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        val = make()
        self[key] = val
        if len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return val


_layouts = _LRU()
_tables = _LRU()


def _blocks(counts: list[int], per_block: int) -> tuple[list[int], list[int]]:
    """Block → tensor map and each tensor's first block (with a final total)."""
    blk_tensor: list[int] = []
    first = [0]
    for t, c in enumerate(counts):
        nb = -(-c // per_block)
        blk_tensor.extend([t] * nb)
        first.append(first[-1] + nb)
    return blk_tensor, first


def _layout(device: torch.device, numels: tuple[int, ...], block: int):
    def make():
        blk_tensor, first = _blocks(list(numels), block)
        i32 = dict(dtype=torch.int32, device=device)
        return (torch.tensor(blk_tensor or [0], **i32), torch.tensor(first, **i32),
                torch.tensor(list(numels), **i32), len(blk_tensor))
    return _layouts.get_or(("upd", device, numels, block), make)


def _red_layout(device: torch.device, numels: tuple[int, ...], first_n: bool, n_qubits: int,
                rb: int):
    def make():
        counts = [min(n, n_qubits) if first_n else n for n in numels]
        blk_tensor, first = _blocks(counts, rb)
        i32 = dict(dtype=torch.int32, device=device)
        most = max(b - a for a, b in zip(first, first[1:], strict=False))
        return (torch.tensor(blk_tensor or [0], **i32), torch.tensor(first, **i32),
                len(blk_tensor), most)
    return _layouts.get_or(("red", device, numels, first_n, n_qubits, rb), make)


def _int64_table(device: torch.device, values: tuple[int, ...]) -> Tensor:
    return _tables.get_or((device, values),
                          lambda: torch.tensor(list(values), dtype=torch.int64, device=device))


def _offsets(device: torch.device, addrs: tuple[int, ...], elsize: int) -> tuple[Tensor, int]:
    """Element offsets of every buffer from the first (a device table) and the vector width:
    16 bytes when every buffer is 16-byte aligned, else 1 element. Cached by the addresses."""
    def make():
        vec = 16 // elsize if all(a % 16 == 0 for a in addrs) else 1
        offs = [(a - addrs[0]) // elsize for a in addrs]
        return torch.tensor(offs, dtype=torch.int64, device=device), vec
    return _tables.get_or(("off", device, addrs, elsize), make)


# ---------------------------------------------------------------------------------------------

def fused_group(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    indices: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    quantum_weight: float,
    perturbation: Perturbation,
    scope: str,
    n_qubits: int,
    bias_correction: bool,
    seed: int,
    sharded: bool = False,
    grad_scale: Tensor | None = None,
) -> bool:
    """In-place fused form of :func:`qsgd.optimizer.reference_step` for a list of tensors.

    Returns False, touching nothing, when the group is not supported (the caller then runs
    another path); :func:`fused_unsupported_reason` says why, and for ``sharded=True`` (the
    tensors are DTensor local shards, scope ``"all"``) :func:`fused_sharded_reason`.
    ``steps`` are the tensors' step numbers (this step's, ≥ 1), ``indices`` their global
    indices (the noise key). Tensors with different step counts run in separate launches.
    Zero-size tensors are skipped.
    """
    if sharded and fused_sharded_reason(perturbation) is not None:
        return False
    if fused_unsupported_reason(params, grads, exp_avgs, exp_avg_sqs, perturbation,
                                n_qubits) is not None:
        return False
    code = fused_code(perturbation)
    numels = tuple(map(Tensor.numel, params))
    tensors = (*params, *grads, *exp_avgs, *exp_avg_sqs)
    _dispatch(params, grads, exp_avgs, exp_avg_sqs, steps, indices, numels, code,
              lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
              lam=quantum_weight, first_n=scope == "first_n", n_qubits=n_qubits,
              bias_correction=bias_correction, seed=seed, perturbation=perturbation,
              addrs=tuple(map(Tensor.data_ptr, tensors)), grad_scale=grad_scale)
    return True


def _dispatch(params, grads, exp_avgs, exp_avg_sqs, steps, indices, numels, code, *,
              lam, addrs=None, **hyper) -> None:
    """Launch per step-count bucket, on the tensors' device (no validation: see fused_group;
    tests call this directly on CPU tensors under TRITON_INTERPRET=1). ``addrs``: the data
    pointers of params, grads, exp_avgs, exp_avg_sqs in that order, if already at hand.
    ``perturbation``: the object whose code ``code`` is (anneal's σ_t, annealrel's decay and
    the circuit's supports are read from it; not needed for the other codes)."""
    if lam == 0.0:
        code = 0  # PERT_NONE: λ·Q = 0
    if len(set(steps)) == 1 and all(numels):
        buckets = {int(steps[0]): None}  # everything, in one launch
    elif len(set(steps)) == 1:
        buckets = {int(steps[0]): [i for i, n in enumerate(numels) if n]}
    else:
        buckets = {}
        for i, (n, st) in enumerate(zip(numels, steps, strict=False)):
            if n:
                buckets.setdefault(int(st), []).append(i)
    device = params[0].device
    switch = device.type == "cuda" and device.index != torch.cuda.current_device()
    prev = torch.cuda.current_device() if switch else None
    if switch:
        torch.cuda.set_device(device)
    try:
        for step, sel in buckets.items():
            if sel is None:
                _launch(params, grads, exp_avgs, exp_avg_sqs, indices, tuple(numels), device,
                        step, code, lam=lam, addrs=addrs, **hyper)
            elif sel:
                P, G, M, V, I, N = ([L[i] for i in sel] for L in
                                    (params, grads, exp_avgs, exp_avg_sqs, indices, numels))
                _launch(P, G, M, V, I, tuple(N), device, step, code, lam=lam, **hyper)
    finally:
        if switch:
            torch.cuda.set_device(prev)


def _kernel_args(K, code: int, perturbation: Perturbation | None, step: int,
                 n_qubits: int) -> dict:
    """The per-perturbation scalars and constexprs of adamw_kernel for this step."""
    args = dict(sigma=0.0, PREV=False, NQ=1, CMASK=0, CCOS=False)
    if code == K.PERT_ANTI:
        args["PREV"] = step > 1
    elif code == K.PERT_ANNEAL:
        args["sigma"] = perturbation.sigma(step)
    elif code == K.PERT_ANNEALREL:
        args["sigma"] = perturbation.decay(step)
    elif code == K.PERT_CIRCUIT:
        supports = perturbation.readout_supports(n_qubits)
        args.update(NQ=n_qubits, CCOS=perturbation.hadamard,
                    CMASK=sum(1 << (n_qubits * q + j) for j, sj in enumerate(supports)
                              for q in sj))
    return args


def _launch(params, grads, exp_avgs, exp_avg_sqs, indices, numels, device, step, code, *,
            lr, beta1, beta2, eps, weight_decay, lam, first_n, n_qubits, bias_correction,
            seed, perturbation=None, addrs=None, grad_scale=None) -> None:
    K = triton_kernels()
    T = len(params)
    if addrs is None:
        addrs = tuple(map(Tensor.data_ptr, (*params, *grads, *exp_avgs, *exp_avg_sqs)))
    base = params[0]  # every buffer is addressed as base + element offset
    off_tab, vec = _offsets(device, addrs, params[0].element_size())
    block, warps = UPDATE_LAUNCH.get(getattr(perturbation, "name", ""), (BLOCK, NUM_WARPS))
    if code == 0:  # PERT_NONE (λ = 0 included): the plain AdamW launch
        block, warps = BLOCK, NUM_WARPS
    blk_tensor, blk_first, numel_tab, nblocks = _layout(device, numels, block)
    gscale = grad_scale is not None
    gs = grad_scale if gscale else numel_tab  # unread without GSCALE

    # s = RMS over each in-scope tensor, a first pass: of sin(πθ) (gauss, unif), of
    # sin(πθ)·g (anti), of g (annealrel)
    sq = {K.PERT_GAUSS: K.SQ_SIN, K.PERT_UNIF: K.SQ_SIN, K.PERT_ANTI: K.SQ_SIN_G,
          K.PERT_ANNEALREL: K.SQ_G}.get(code)
    if code in (K.PERT_GAUSS, K.PERT_UNIF, K.PERT_ANTI, K.PERT_ANNEAL, K.PERT_ANNEALREL):
        index_tab = _int64_table(device, tuple(indices))
    else:
        index_tab = off_tab  # unused by the kernel
    if sq is not None:
        rblk_tensor, rblk_first, nrblocks, most = _red_layout(device, numels, first_n, n_qubits,
                                                        RED_RB)
        partial = torch.empty(max(nrblocks, 1), dtype=torch.float32, device=device)
        s_buf = torch.empty(T, dtype=torch.float32, device=device)
        if nrblocks:
            K.sumsq_kernel[(nrblocks,)](
                base, off_tab, numel_tab, rblk_tensor, rblk_first, partial, T, n_qubits, gs,
                SQ=sq, FIRST_N=first_n, VEC=vec, RB=RED_RB, BLOCK=RED_BLOCK, GSCALE=gscale,
                num_warps=RED_WARPS)
        # a power of two ≥ the most partials of one tensor: few compiled variants
        max_parts = max(_FIN_FB, 1 << max(most - 1, 0).bit_length())
        K.finalize_rms_kernel[(T,)](partial, rblk_first, numel_tab, s_buf, n_qubits,
                                    FIRST_N=first_n, MAX_PARTS=max_parts, FB=_FIN_FB,
                                    num_warps=4)
    else:
        s_buf = numel_tab

    if bias_correction:
        bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
    else:
        bc1, bc2 = 1.0, 1.0
    w1 = 1.0 - beta1
    kargs = _kernel_args(K, code, perturbation, step, n_qubits)
    if code == K.PERT_SINNORM:
        kargs["sigma"] = bc1  # u = (m/bc1)/denom, as the reference divides
    K.adamw_kernel[(nblocks,)](
        base, off_tab, numel_tab, index_tab, blk_tensor, blk_first, s_buf, T,
        int(seed) & 0xFFFFFFFFFFFFFFFF, int(step),
        1.0 - lr * weight_decay, w1, beta2, 1.0 - beta2, bc2**0.5, eps, -(lr / bc1),
        -lr * lam, n_qubits, lam, gs_ptr=gs,
        PERT=code, FIRST_N=first_n, LERP_LOW=abs(w1) < 0.5, VEC=vec, BLOCK=block,
        GSCALE=gscale, num_warps=warps, **kargs)
