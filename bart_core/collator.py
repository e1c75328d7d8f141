"""Batching for seq2seq fine-tuning: `DataCollatorForSeq2Seq`, the reference collator's behaviour on a numpy
core.

Features are dicts of token lists (or 1-D arrays) such as the tokenizer returns per example: ``input_ids``,
``attention_mask`` and ``labels`` (or ``label``). The collator pads inputs with the tokenizer's `pad`
(``pad_token_id``, mask 0), pads labels with ``label_pad_token_id`` (-100, ignored by every backend's loss) on
the tokenizer's padding side, rounds lengths up to ``pad_to_multiple_of``, and, given a model or a
`BartConfig`, adds ``decoder_input_ids`` made with the model's shift (`bart_core.inputs.shift_tokens_right`).

It imports numpy only; ``return_tensors`` "pt", "tf" or "jax" imports that framework at call time. Use it as a
torch ``DataLoader(collate_fn=...)``, through `bart_tf.data.prepare_tf_dataset` for ``model.fit``, or on lists
of features in a JAX loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from bart_core.inputs import shift_tokens_right, to_framework

LABEL_PAD_TOKEN_ID = -100


@dataclasses.dataclass
class DataCollatorForSeq2Seq:
    """Pads a list of features into one batch (the reference ``DataCollatorForSeq2Seq``'s arguments).

    tokenizer: a `BartTokenizer` / `BartTokenizerFast` (its `pad`, ``pad_token_id`` and ``padding_side``).
    model: a model with a ``config``, or a `BartConfig`; when given and labels are present, the batch gets
        ``decoder_input_ids = shift_tokens_right(labels, pad_token_id, decoder_start_token_id)``.
    padding: True / "longest" (to the longest row), "max_length" (to ``max_length``), False / "do_not_pad".
    max_length: the length of "max_length" padding (inputs and labels).
    pad_to_multiple_of: round padded lengths up to a multiple of this (tensor-core / XLA friendly shapes).
    label_pad_token_id: the value that pads ``labels`` (-100: ignored by the loss).
    return_tensors: "np", "pt", "tf" or "jax" (default "pt", as the reference). Integer types follow the
        reference: int64 labels for "np" / "pt" / "tf"; inputs int64 for "np" / "pt", int32 for "tf"; "jax"
        gives int32 jax arrays for every field (the reference gives numpy labels there).
    """

    tokenizer: Any
    model: Any = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = LABEL_PAD_TOKEN_ID
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Mapping], return_tensors: str | None = None) -> dict:
        return_tensors = self.return_tensors if return_tensors is None else return_tensors
        if return_tensors not in ("np", "pt", "tf", "jax"):
            raise ValueError(f"return_tensors must be 'np', 'pt', 'tf' or 'jax', got {return_tensors!r}")
        if not features:
            raise ValueError("cannot collate an empty list of features")
        label_name = "label" if "label" in features[0] else "labels"
        labels = [f[label_name] for f in features] if label_name in features[0] else None
        if labels is not None and all(label is None for label in labels):
            labels = None
        inputs = [{k: v for k, v in f.items() if k != label_name} for f in features]
        batch = self.tokenizer.pad(inputs, padding=self.padding, max_length=self.max_length,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="np")
        batch = {k: np.asarray(v) for k, v in batch.items()}

        if labels is not None:
            labels = [np.asarray(label, dtype=np.int64).reshape(-1) for label in labels]
            if self.padding is False or self.padding == "do_not_pad":
                lengths = {len(label) for label in labels}
                if len(lengths) > 1:
                    raise ValueError(f"labels have different lengths {sorted(lengths)} and padding is off")
                batch["labels"] = np.stack(labels)
            else:
                batch["labels"] = self._pad_labels(labels)
            if self.model is not None:
                config = getattr(self.model, "config", self.model)
                batch["decoder_input_ids"] = shift_tokens_right(batch["labels"], config.pad_token_id,
                                                                config.decoder_start_token_id).astype(np.int64)
        return to_framework(batch, return_tensors, keep_int64=("labels", "decoder_input_ids"))

    def _pad_labels(self, labels: list[np.ndarray]) -> np.ndarray:
        """(B, T) int64 labels padded with ``label_pad_token_id`` on the tokenizer's padding side."""
        if self.padding == "max_length" and self.max_length is not None:
            length = self.max_length
        else:
            length = max(len(label) for label in labels)
        multiple = self.pad_to_multiple_of
        if multiple is not None:
            length = -(-length // multiple) * multiple
        longest = max(len(label) for label in labels)
        if longest > length:
            raise ValueError(f"a label sequence has {longest} tokens, more than max_length={length}; truncate "
                             "the targets when encoding them (text_target=..., truncation=True, max_length=...)")
        out = np.full((len(labels), length), self.label_pad_token_id, dtype=np.int64)  # (B, T)
        left = self.tokenizer.padding_side == "left"
        for row, label in enumerate(labels):
            if left:
                out[row, length - len(label):] = label
            else:
                out[row, :len(label)] = label
        return out
