"""Models: a small transformer classifier with classical or quantum attention
(:mod:`qsgd.models.classifier`), and a compact Llama decoder with Hugging Face parameter names
(:mod:`qsgd.models.llama`). Both need torch only."""

from .classifier import ATTENTIONS, TransformerClassifier
from .llama import IGNORE, PRESETS, CompactLlama, LlamaShape

__all__ = ["TransformerClassifier", "ATTENTIONS", "CompactLlama", "LlamaShape", "PRESETS",
           "IGNORE"]
