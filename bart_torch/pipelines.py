"""``pipeline`` for the PyTorch backend: the model calls of the shared task pipelines (``bart_core.pipelines``)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from bart_core.pipelines import Pipeline, build_pipeline


def _device(device) -> Optional[torch.device]:
    """The reference's spellings: an int (-1 = CPU, i = cuda:i), a string or a ``torch.device``."""
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device(f"cuda:{device}")
    return torch.device(device)


class TorchRunner:
    """Forward and generate of one torch model on numpy batches, without gradients, on the model's device (or
    ``device``, where the model is moved). ``generate`` runs the encoder packed (``bart_torch.packed``);
    ``forward`` runs it padded: on length-sorted batches the packed encoder's row-by-row attention cost more than
    the little padding it saves (zero-shot, bart-base geometry, batches of 8 rows: median 76 s packed against
    67 s padded, interleaved runs on 2 loaded cores)."""

    length_multiple = None  # eager: every length costs the same, no padding beyond the batch's longest row

    def __init__(self, model: torch.nn.Module, device=None):
        device = _device(device)
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(self.device)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(input_ids=self._tensor(input_ids), attention_mask=self._tensor(attention_mask),
                             use_cache=False)
        return {k: getattr(out, k).float().cpu().numpy() for k in ("logits", "start_logits", "end_logits")
                if getattr(out, k, None) is not None}

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, **options) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.generate(self._tensor(input_ids), attention_mask=self._tensor(attention_mask), **options)
        return getattr(out, "sequences", out).cpu().numpy()


def _load(class_name: str, path, **kwargs):
    import bart_torch
    return getattr(bart_torch, class_name).from_pretrained(path, **kwargs)


def pipeline(task: str, model: Any = None, tokenizer: Any = None, batch_size: Optional[int] = None, device=None,
             model_kwargs: Optional[dict] = None, progress: Optional[bool] = None,
             max_batch_tokens: Optional[int] = None, **kwargs: Any) -> Pipeline:
    """A task pipeline (``bart_core.pipelines``) on a torch model: ``model`` is a checkpoint folder, a hub id or
    a model object; ``tokenizer`` defaults to the checkpoint's; ``batch_size`` and ``max_batch_tokens`` (rows x
    padded length) limit a batch; ``device`` as the reference (``-1``, ``0``, ``"cuda:1"``, a ``torch.device``;
    default: where the model is); other keywords become the defaults of every call."""
    return build_pipeline(task, model, tokenizer, batch_size, _load, TorchRunner, device, model_kwargs, progress,
                          max_batch_tokens, **kwargs)


__all__ = ["pipeline", "TorchRunner"]
