"""Evaluation of the recipes: held-out loss (token mean) and, for fine-tuning, ROUGE-1/2/L (``rouge-score``)
of decoded outputs against the targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from recipes.config import RunConfig
from recipes.datasets import eval_batches
from recipes.trainer import Trainer


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (x100) from ``rouge-score`` with stemming."""
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for k in totals:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: 100.0 * v / n for k, v in totals.items()}


def eval_sources(pairs: Sequence[tuple[str, str]], collator: Any, batch_size: int, limit: int
                 ) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """(input_ids, attention_mask, reference texts) batches of the first ``limit`` eval pairs."""
    chosen = list(pairs[:limit])
    out = []
    for begin in range(0, len(chosen), batch_size):
        part = chosen[begin:begin + batch_size]
        batch = collator(part)
        out.append((batch["input_ids"], batch["attention_mask"], [t for _, t in part]))
    return out




@dataclass
class EvalData:
    """What evaluation reads: held-out loss batches and, for fine-tuning, sources and references for ROUGE."""
    loss_batches: list[dict[str, Any]]
    rouge_batches: list[tuple[np.ndarray, np.ndarray, list[str]]] = field(default_factory=list)


def make_eval_data(run: RunConfig, heldout: Sequence[Any], collator: Any) -> EvalData:
    if run.task == "pretrain":
        return EvalData(eval_batches(heldout, collator, run.global_batch, limit=run.eval_batches))
    loss_batches = eval_batches(heldout, collator, run.global_batch)
    rouge = eval_sources(heldout, collator, run.global_batch, run.max_eval_examples)
    return EvalData(loss_batches, rouge)


def evaluate(run: RunConfig, trainer: Trainer, data: EvalData) -> dict[str, float]:
    """Held-out loss (token mean); for fine-tuning also ROUGE-1/2/L of decoded outputs vs the targets."""
    total, count = trainer.loss_sum(data.loss_batches)
    result = {"eval_loss": total / max(count, 1)}
    if data.rouge_batches:
        predictions, references = [], []
        for input_ids, attention_mask, refs in data.rouge_batches:
            for ids in trainer.generate(input_ids, attention_mask, run.target_len, run.num_beams):
                predictions.append(trainer.tokenizer.decode(list(ids), skip_special_tokens=True).strip())
            references.extend(refs)
        result.update(rouge_scores(predictions, references))
        result["example"] = predictions[0] if predictions else ""
    return result
