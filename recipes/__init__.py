"""Training recipes for the three backends: denoising pre-training on a text corpus and summarisation-style
fine-tuning (source/target JSON lines, ROUGE evaluation), single process or data parallel.

``train(run)`` runs a ``RunConfig`` on its backend; ``python -m recipes pretrain|finetune --backend
torch|tf|flax ...`` is the command line. Backend modules (``torch_train``, ``tf_train``, ``flax_train``) are
imported on use, so one framework is enough to run its recipe.

The framework-neutral modules, by concern: ``config`` (``RunConfig``, the command-line options, model presets
and initial weights), ``datasets`` (pre-training and fine-tuning data, batch streams), ``checkpoints``
(crash-safe checkpoints, resume), ``evaluation`` (held-out loss, ROUGE), ``trainer`` (what a backend provides)
and ``loop`` (what happens around an optimizer step, the same for the three backends).
"""

from __future__ import annotations

from typing import Any

from recipes.config import MODEL_PRESETS, RecipeError, RunConfig, initial_state, model_config
from recipes.loop import learning_rates, read_metrics

__all__ = ["MODEL_PRESETS", "RecipeError", "RunConfig", "initial_state", "learning_rates", "read_metrics", "train"]


def train(run: RunConfig) -> dict[str, Any]:
    """Run ``run`` on ``run.backend``; returns ``{"losses": [...], "eval": {...}, "out": ...}``. Bad options,
    data or checkpoints raise ``RecipeError`` / ``CheckpointError``."""
    model_config(run)  # a bad --model fails here, before any framework or data is loaded
    if run.backend == "torch":
        from recipes.torch_train import train as backend_train
    elif run.backend == "tf":
        from recipes.tf_train import train as backend_train
    else:
        from recipes.flax_train import train as backend_train
    return backend_train(run)
