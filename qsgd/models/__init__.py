"""Models: a small transformer classifier with classical or quantum attention
(:mod:`qsgd.models.classifier`), S of them trained as one (:mod:`qsgd.models.batched`), and a
compact Llama decoder with Hugging Face parameter names (:mod:`qsgd.models.llama`). All need
torch only."""

from .batched import SeedBatchedClassifier
from .classifier import ATTENTIONS, TransformerClassifier
from .llama import IGNORE, PRESETS, CompactLlama, LlamaShape

__all__ = ["TransformerClassifier", "SeedBatchedClassifier", "ATTENTIONS", "CompactLlama",
           "LlamaShape", "PRESETS", "IGNORE"]
