"""``Trainer``: what a backend gives the shared loop (``recipes.loop``), checkpoints and evaluation."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from recipes.datasets import StepBatches


class Trainer:
    """A backend's model, optimizer and processes. Collectives are no-ops on one process. The torch and flax
    trainers implement every method; the tf recipe's steps run inside ``model.fit``, so it has no ``train_step``."""
    is_main: bool = True
    tokenizer: Any = None

    def all_reduce_sum(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    def share(self, value: Any) -> Any:
        """The main process's ``value``, on every process."""
        return value

    def loss_sum(self, batches: Sequence[dict[str, Any]]) -> tuple[float, int]:
        """Eval-mode (no dropout) sum of token losses and label-token count over ``batches``, this process."""
        raise NotImplementedError

    def train_step(self, step: StepBatches, lr: float) -> tuple[float, float | None]:
        """One optimizer step -> (mean token loss over all replicas, gradient global norm before clipping, or
        None where the backend's step does not report it)."""
        raise NotImplementedError

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int,
                 num_beams: int) -> list[list[int]]:
        raise NotImplementedError

    def save(self, folder: pathlib.Path) -> None:
        """Model, optimizer and RNG state (called on every process), each file through ``write_file``."""
        raise NotImplementedError

    def load(self, folder: pathlib.Path) -> None:
        """Replace the whole training state with ``folder``'s; a file that cannot be read or does not fit is a
        ``CheckpointError`` naming it (``read_file``)."""
        raise NotImplementedError

    def save_model(self, folder: pathlib.Path) -> None:
        raise NotImplementedError
