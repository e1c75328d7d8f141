"""``tf.data`` input pipelines for ``model.fit``: token lists -> padded, shuffled, batched datasets.

`prepare_tf_dataset` is the counterpart of the reference's ``TFPreTrainedModel.prepare_tf_dataset`` for data
held as token lists: each batch is made by a collator (by default `bart_core.collator.DataCollatorForSeq2Seq`
with numpy output), so padding, -100 labels and ``decoder_input_ids`` are the same as in the torch and JAX loops.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from bart_core.collator import DataCollatorForSeq2Seq


def prepare_tf_dataset(features: Sequence[Mapping] | Mapping[str, Sequence], batch_size: int = 8,
                       shuffle: bool = True, tokenizer: Any = None, collate_fn: Callable | None = None,
                       drop_remainder: bool = False, seed: int | None = None, label_cols: Sequence[str] | None = None,
                       prefetch: bool = True, model: Any = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of padded batches (dicts of ``(B, L)`` tensors) for ``model.fit``.

    features: a list of examples (dicts of token lists, e.g. ``{"input_ids": [...], "labels": [...]}``) or a
        dict of columns (``{"input_ids": [[...], ...], "labels": [[...], ...]}``).
    collate_fn: list of examples -> dict of numpy arrays; default `DataCollatorForSeq2Seq` (needs ``tokenizer``;
        ``model`` or its config adds ``decoder_input_ids``).
    shuffle: reshuffle the example order every epoch (seeded by ``seed``: the same seed gives the same orders).
    label_cols: when given, batches are ``(inputs, labels)`` tuples with these fields as labels (for
        ``compile(loss=...)``); otherwise the labels stay in the dict and the model computes its own loss.
    """
    if isinstance(features, Mapping):
        columns = {k: list(v) for k, v in features.items()}
        sizes = {len(v) for v in columns.values()}
        if len(sizes) != 1:
            raise ValueError(f"columns have different lengths {sorted(sizes)}")
        features = [dict(zip(columns, row)) for row in zip(*columns.values())]
    features = list(features)
    if not features:
        raise ValueError("prepare_tf_dataset needs at least one example")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if collate_fn is None:
        if tokenizer is None:
            raise ValueError("give a tokenizer (for the default DataCollatorForSeq2Seq) or a collate_fn")
        collate_fn = DataCollatorForSeq2Seq(tokenizer, model=model, return_tensors="np")

    def collate(batch_features) -> dict[str, np.ndarray]:
        if isinstance(collate_fn, DataCollatorForSeq2Seq):
            batch = collate_fn(batch_features, return_tensors="np")
        else:
            batch = collate_fn(batch_features)
        return {k: np.asarray(v) for k, v in batch.items() if v is not None}

    sample = collate(features[:batch_size])
    signature = {k: tf.TensorSpec(shape=(None,) * v.ndim, dtype=tf.as_dtype(v.dtype)) for k, v in sample.items()}
    epochs = [0]
    rng_seed = 0 if seed is None else seed

    def batches():
        order = np.arange(len(features))
        if shuffle:
            np.random.default_rng([rng_seed, epochs[0]]).shuffle(order)
        epochs[0] += 1
        stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
        for start in range(0, stop, batch_size):
            yield collate([features[i] for i in order[start:start + batch_size]])

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if label_cols:
        missing = [c for c in label_cols if c not in signature]
        if missing:
            raise ValueError(f"label_cols {missing} are not in the batches (fields: {sorted(signature)})")
        cols = list(label_cols)

        def split(batch):
            inputs = {k: v for k, v in batch.items() if k not in cols}
            labels = batch[cols[0]] if len(cols) == 1 else {c: batch[c] for c in cols}
            return inputs, labels

        dataset = dataset.map(split)
    n_batches = len(features) // batch_size if drop_remainder else -(-len(features) // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset
