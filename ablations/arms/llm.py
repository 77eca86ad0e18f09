"""The LLM arm (claim C6) as a registered arm: its options, metrics and resources.

The training loop, data, model loading and benchmark live in :mod:`ablations.llm`; this
module is what config, runner, statistics and report know of it.
"""

from __future__ import annotations

import json
from typing import Any

from ..llm import DEFAULT_MODEL, LLMOptions
from .base import Arm, Metric, register_arm

__all__ = ["LLM", "PAPER_MODEL"]

#: the model the paper fine-tunes (PAPER.md, Table III)
PAPER_MODEL = "Llama-3.2-1B-Instruct"


@register_arm
class LLM(Arm):
    """Full fine-tuning of a small Llama for one epoch (GSM8K by default), one run per spec."""

    name = "llm"
    options = LLMOptions
    resources = "gpu"
    attentions = ("none",)
    curve_x = "step"
    curve_value = "train_loss"
    curve_label = "training loss"
    analyses = ("lr_sensitivity", "perturbation", "curves", "throughput")
    selection_metric = "val_loss"
    #: the theory suite reads the calibrated grid (lr chosen on validation, records of named
    #: commits); the earlier grid's records were removed
    reference_grid = "llm-calibrated"
    metrics = (
        Metric("mean_train_loss", "lower", "mean training loss", margin=0.005),
        # example batching records both losses of every step, whichever is trained on
        Metric("mean_train_loss_all", "lower", "mean training loss (all tokens)",
               margin=0.005),
        Metric("mean_train_loss_answer", "lower", "mean training loss (answer tokens)",
               margin=0.005),
        Metric("final_train_loss", "lower", "final training loss", margin=0.005),
        Metric("val_loss", "lower", "validation loss", margin=0.005),
        Metric("test_loss", "lower", "test loss", margin=0.005),
        Metric("test_loss_all", "lower", "test loss (all tokens)", margin=0.005),
        Metric("test_exact_match", "higher", "test exact match", margin=0.02),
        Metric("tokens_per_s", "higher", "tokens per second", timing=True),
        Metric("optimizer_share", "lower", "optimizer share of step time", timing=True),
        Metric("perturbation_ratio", "none", "‖λ·Q‖ / ‖Adam step‖", compared=False),
        Metric("skipped_steps", "none", "fp16 steps skipped (inf/NaN gradients)",
               compared=False),
        Metric("train_seconds", "lower", "seconds of training", " s", timing=True,
               compared=False),
        Metric("eval_seconds", "lower", "seconds of evaluation", " s", timing=True,
               compared=False),
        Metric("mfu", "higher", "model FLOPs utilisation", timing=True, compared=False),
    )

    def run(self, spec) -> dict[str, Any]:
        from ..llm import run

        return run(spec)

    def ledger_note(self, cfg) -> str:
        model = cfg.arm_options.model
        if PAPER_MODEL.lower() in model.lower():
            return ""
        name = "SmolLM2-135M-Instruct" if model == DEFAULT_MODEL else f"`{model}`"
        return (f"{name} stands in for the paper's {PAPER_MODEL} (no offline copy of its "
                "weights); the two models' loss levels differ, so C6 is read as the relative "
                "change of the mean training loss, with its 95% CI as a share of AdamW's mean.")

    def describe(self, cfg, runs) -> str:
        o = cfg.options
        devices = ", ".join(sorted(set(map(str, runs["device"].dropna()))))
        from ..llm.data import get_task

        name = cfg.arm_options.task
        task = get_task(name).description or f"task `{name}`"
        return (f"Model `{o.get('model', 'smollm2-135m-instruct')}`, {task}, one epoch, lr "
                f"{cfg.baseline_lr:g}, options: "
                f"`{json.dumps(o, sort_keys=True)}`. Devices: {devices}. "
                + self.splits_text(cfg) + "\n")

    @staticmethod
    def splits_text(cfg) -> str:
        """Which split every recorded number comes from, and which split the choices read."""
        a = cfg.arm_options
        train = (f"the first {a.train_examples} training examples" if a.train_examples
                 else "the task's training examples")
        if a.val_examples:
            train += f" less the last {a.val_examples}, held out as the validation split"
        test = (f"the first {a.test_loss_examples} test examples" if a.test_loss_examples
                else "the task's test examples")
        if cfg.selected_lr:
            chosen = ("the lr of each variant was selected on `val_loss` ("
                      + ", ".join(f"{v} {x:g}" for v, x in sorted(cfg.selected_lr.items()))
                      + ")")
        else:
            chosen = ("no setting of this grid was chosen from a metric: they are the "
                      "config's" + (", the paper's own" if cfg.protocol == "paper" else "")
                      + ("; a selection made from this grid reads its `val_loss` only"
                         if a.val_examples else ""))
        em = (f"`test_exact_match` over the first {a.eval_questions} test questions"
              if a.eval_questions else "no exact match (`eval_questions` = 0)")
        return (f"Splits: the training losses (`mean_train_loss*`, `final_train_loss`, the "
                f"curves) are the losses of the trained steps over {train}; `val_loss` is the "
                "validation split's, which every choice reads"
                + ("" if a.val_examples else " (none held out in this grid)")
                + f"; `test_loss*` are over {test}, {em}: read for final metrics only; "
                f"{chosen}.")
