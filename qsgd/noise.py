"""Keyed noise streams: one definition of "the noise of (seed, step, tensor index, stream)".

Every stochastic perturbation draws its noise from a stream keyed on (seed, step, tensor index,
stream), never from a generator carried between steps, so a resumed run reproduces an
uninterrupted one bit for bit and no noise state needs storing (DESIGN.md, principle 5).

* :func:`noise_key` mixes the tuple into a 63-bit key with SplitMix64 (Steele, Lea & Flood,
  "Fast splittable pseudorandom number generators", OOPSLA 2014; the finaliser of Vigna's
  ``splitmix64.c``).
* :func:`keyed_generator`: a fresh ``torch.Generator`` seeded with that key (every device).
* :func:`cuda_noise`: on CUDA, the Philox-4x32-10 stream (Salmon et al., "Parallel random
  numbers: as easy as 1, 2, 3", SC 2011) of the Triton kernels in ``qsgd._fused_kernels``:
  element i is word i mod 4 of the Philox block at counter ⌊i/4⌋ (normals by Box–Muller on
  word pairs; uniforms by Triton's uint → [0, 1) map). The fused optimizer step draws the very
  same numbers in-kernel, so reference, foreach and fused steps agree on CUDA.
* :func:`keyed_noise`: the source the perturbations use: :func:`cuda_noise` on CUDA when Triton
  imports, a :func:`keyed_generator` draw elsewhere (CPU and CUDA runs therefore draw different,
  equally distributed noise).

A leaf module: it imports torch alone (nothing from qsgd), and Triton only inside the functions
that launch a kernel, so ``import qsgd`` works without Triton.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

__all__ = [
    "NOISE_KINDS",
    "splitmix64",
    "noise_key",
    "keyed_generator",
    "keyed_noise",
    "triton_available",
    "triton_kernels",
    "cuda_noise",
    "device_noise_key",
]

#: the distributions a stream can be drawn as: N(0, 1) and U[0, 1)
NOISE_KINDS = ("normal", "uniform")

_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One SplitMix64 step on a 64-bit unsigned integer (Vigna's ``splitmix64.c``): add the
    golden-ratio increment, then the two xor-shift-multiply rounds of the finaliser."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_key(seed: int, step: int, index: int, stream: int = 0) -> int:
    """A 63-bit key mixing (seed, step, tensor index, stream) with SplitMix64.

    Each part is taken modulo 2⁶⁴ (so negative seeds are fine) and folded in as
    h ← splitmix64(h ⊕ part), starting from h = splitmix64(seed). Distinct tuples give
    statistically independent streams; the same tuple always gives the same key, on every
    machine. The Triton kernels compute the same key on the device (``noise_key_device``).
    """
    h = splitmix64(int(seed) & _MASK64)
    for part in (step, index, stream):
        h = splitmix64(h ^ (int(part) & _MASK64))
    return h & ((1 << 63) - 1)


def keyed_generator(device: torch.device | str, seed: int, step: int, index: int,
                    stream: int = 0) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`noise_key` of the arguments."""
    gen = torch.Generator(device=device)
    gen.manual_seed(noise_key(seed, step, index, stream))
    return gen


@functools.lru_cache(maxsize=1)
def triton_kernels() -> ModuleType:
    """The Triton kernels module ``qsgd._fused_kernels``, imported on first use (raises
    ``ImportError`` without Triton). Shared by :func:`cuda_noise` and :mod:`qsgd.fused`."""
    from . import _fused_kernels

    return _fused_kernels


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the Triton kernels import (Triton ships with PyTorch's CUDA wheels on Linux)."""
    try:
        triton_kernels()
    except Exception:  # noqa: BLE001 - any import failure means: no Triton path
        return False
    return True


def cuda_noise(key: int, n: int, kind: str, device: torch.device | str,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """The CUDA noise stream: n draws keyed on ``key`` (from :func:`noise_key`).

    ``kind`` is ``"normal"`` (N(0, 1)) or ``"uniform"`` (U[0, 1)). Element i is word i mod 4 of
    Philox-4x32-10 at counter ⌊i/4⌋ (normals by Box–Muller on word pairs), the definition the
    fused kernel uses, so both see the same ξ; element i does not depend on n. Drawn in float32,
    then cast to ``dtype``. Needs Triton (on CPU only under ``TRITON_INTERPRET=1``).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"invalid noise kind {kind!r} (valid: {', '.join(NOISE_KINDS)})")
    K = triton_kernels()
    out = torch.empty(n, dtype=torch.float32, device=device)
    if n:
        blk = 1024
        K.noise_kernel[(-(-n // blk),)](out, int(key), n, KIND=0 if kind == "normal" else 1,
                                        BLOCK=blk, num_warps=4)
    return out if dtype == torch.float32 else out.to(dtype)


def device_noise_key(seed: int, step: int, index: int, device: torch.device | str) -> int:
    """The key the fused kernel mixes on the device for (seed, step, index, stream 0), read
    back as an unsigned 64-bit integer (a test hook: it must equal :func:`noise_key`)."""
    K = triton_kernels()
    out = torch.empty(1, dtype=torch.int64, device=device)
    K.key_kernel[(1,)](out, int(seed) & _MASK64, int(step), int(index))
    return int(out.item()) & _MASK64


def keyed_noise(shape: torch.Size | tuple[int, ...], kind: str, *, seed: int, step: int,
                index: int, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """ξ of ``shape`` drawn as N(0, 1) (``kind="normal"``) or U[0, 1) (``"uniform"``) from the
    stream keyed on (seed, step, index, stream 0).

    On a CUDA device with Triton: :func:`cuda_noise` (the fused kernel's own stream, so every
    optimizer path on CUDA draws the same ξ). Elsewhere: ``torch.randn`` / ``torch.rand`` with
    a :func:`keyed_generator`.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"invalid noise kind {kind!r} (valid: {', '.join(NOISE_KINDS)})")
    device = torch.device(device)
    if device.type == "cuda" and triton_available():
        n = 1
        for s in shape:
            n *= int(s)
        return cuda_noise(noise_key(seed, step, index), n, kind, device, dtype).view(shape)
    draw = torch.randn if kind == "normal" else torch.rand
    return draw(shape, generator=keyed_generator(device, seed, step, index), dtype=dtype,
                device=device)
