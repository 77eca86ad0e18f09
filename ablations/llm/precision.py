"""Precision of the LLM arm's training step (``[llm].precision``): float32 master weights,
gradients and optimizer state under bfloat16 or float16 autocast, or plain float32; and the
dynamic loss scaling that float16 needs.

* ``bf16`` (the calibrated protocol): the matrix products run under bfloat16 autocast; the
  residual stream, norms, RoPE and the loss stay float32 (:class:`CompactLlama`). bfloat16
  has float32's exponent range, so gradients need no scaling.
* ``fp16`` (the paper's "mixed precision FP16", Table III): the same under float16 autocast
  (:class:`Fp16Llama`). float16 gradients underflow below 6e-8, so the loss is scaled by a
  factor S before the backward, with :class:`torch.amp.GradScaler` (Micikevicius et al. 2018,
  "Mixed Precision Training", arXiv 1710.03740). One step::

      (S · loss).backward()
      g ← g / S                       scaler.unscale_(opt): also notes whether any g is inf/NaN
      g ← g · min(1, c / ‖g‖)         clipping at c = clip_grad, on the unscaled gradient
      opt.step() unless a g was inf/NaN: a skipped step changes no weight, moment or step count
      S ← S · ½ after a skipped step; S ← 2 S after 2000 finite steps in a row

  with torch's defaults (S₀ = 2¹⁶), which Hugging Face's Trainer also uses for fp16.
  :class:`qsgd.SuperpositionalAdamW` needs nothing special for this: its master weights and
  gradients are float32 (GradScaler refuses float16 gradients), and GradScaler calls its
  ``step`` only when every gradient is finite, so the optimizer's own non-finite check
  (``nonfinite``) never sees one; the arm runs it with ``nonfinite="off"``.
* ``fp32``: no autocast.

Host synchronisation: GradScaler decides on the host whether to step (one ``.item()`` of the
found-inf flag a step), the only host sync of an fp16 step. A skip on the device would need an
optimizer that takes GradScaler's ``found_inf`` tensor into its kernel (torch's fused Adam
does, through ``_step_supports_amp_scaling``); SuperpositionalAdamW does not. The number of
skipped steps is accumulated on the device and read once, after the epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qsgd.models.llama import CompactLlama, LlamaShape

__all__ = ["Fp16Llama", "build_model", "LossScaling"]


class Fp16Llama(CompactLlama):
    """:class:`CompactLlama` whose autocast is float16 instead of bfloat16 (float32 weights,
    residual stream, norms, RoPE and loss, as the bfloat16 model)."""

    def __init__(self, shape: LlamaShape, inv_freq: Tensor):
        super().__init__(shape, inv_freq, amp=True)

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.float16, cache_enabled=False)

    def _dtype(self) -> torch.dtype:
        return torch.float16


def build_model(shape: LlamaShape, inv_freq: Tensor, precision: str) -> CompactLlama:
    """The training model for a precision in effect (``"bf16"``, ``"fp16"``, ``"fp32"``:
    :attr:`ablations.llm.LLMOptions.effective_precision`)."""
    if precision == "fp16":
        return Fp16Llama(shape, inv_freq)
    return CompactLlama(shape, inv_freq, amp=precision == "bf16")


class LossScaling:
    """Backward, clipping and optimizer step of one training step, with GradScaler for fp16
    (see the module docstring) and exactly ``loss.backward()``, ``clip_grad_norm_`` (with
    ``fused_clip`` the optimizer's own, where it has one: :meth:`clip`) and ``opt.step()``
    otherwise.

    precision: the precision in effect; device: the training device (GradScaler runs on CPU
    too, which the tests use); fused_clip: ``[llm].fused_clip``.
    """

    def __init__(self, precision: str, device: torch.device, fused_clip: bool = False):
        self.fused_clip = fused_clip
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self._skipped = torch.zeros((), dtype=torch.float32, device=device)

    def backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def clip(self, opt: torch.optim.Optimizer, params: list[Tensor], max_norm: float) -> None:
        """Unscale the gradients (fp16), then clip their global norm to ``max_norm`` (0: no
        clipping). ``params`` are ``opt``'s parameters, in its order. With ``fused_clip``
        and no fp16 scaling, :class:`qsgd.SuperpositionalAdamW` clips with its own
        ``clip_grad_norm_``: torch's norm and coefficient, whose product with the gradients
        its fused CUDA kernel does as it reads them (one pass over the gradients fewer)."""
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if max_norm:
            own = getattr(opt, "clip_grad_norm_", None) if self.fused_clip else None
            if own is not None and self.scaler is None:
                own(max_norm)
            else:
                torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self, opt: torch.optim.Optimizer) -> None:
        """``opt.step()``; with fp16, skipped when a gradient is inf/NaN (counted), then the
        scale is updated."""
        if self.scaler is None:
            opt.step()
            return
        self.scaler.step(opt)
        # read before update(), which forgets the optimizer's per-step state; device tensors
        for found in self.scaler._found_inf_per_device(opt).values():
            self._skipped += found.to(self._skipped.device)
        self.scaler.update()

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for inf/NaN gradients so far (a host read: call after the loop)."""
        return int(self._skipped)

    @property
    def scale(self) -> float:
        """The current loss scale (1.0 without scaling)."""
        return 1.0 if self.scaler is None else float(self.scaler.get_scale())
