"""PyTorch backend of bart3: the five BART classes, decoding and checkpoint IO."""

from bart_torch.generation import generate
from bart_torch.modeling import (
    BartForCausalLM,
    BartForConditionalGeneration,
    BartForQuestionAnswering,
    BartForSequenceClassification,
    BartModel,
    KVCache,
)
from bart_torch.pipelines import pipeline

__all__ = ["BartModel", "BartForConditionalGeneration", "BartForSequenceClassification", "BartForQuestionAnswering",
           "BartForCausalLM", "KVCache", "generate", "pipeline"]
