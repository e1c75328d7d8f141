"""Training and held-out data of the recipes (numpy and the standard library only).

- Pre-training: ``pretraining_data`` (corpus -> denoising documents and ``bart_core``'s ``DenoisingCollator``).
- Fine-tuning: ``read_pairs`` (source/target JSON lines; the bundled ``recipes/data/summaries`` by default),
  ``Seq2SeqCollator``, ``finetuning_data``.
- Batches: ``BatchStream`` (an endless, seekable stream of micro-batches over epochs), ``StepBatches`` (one
  optimizer step: micro-batches plus the label-token counts that weight the loss), ``eval_batches``.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import types
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from bart_core.collator import DataCollatorForSeq2Seq
from bart_core.denoising import (
    LABEL_PAD,
    DenoisingCollator,
    DenoisingConfig,
    iterate_batches,
    make_documents,
    read_corpus,
)
from recipes.config import RecipeError, RunConfig

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
SUMMARIES_DIR = DATA_DIR / "summaries"  # the bundled fine-tuning pairs (scripts/build_summary_dataset.py)


def load_tokenizer():
    from bart_core.tokenizer import BartTokenizer, bundled_tokenizer_dir
    return BartTokenizer.from_pretrained(bundled_tokenizer_dir())


def pretraining_data(run: RunConfig, tokenizer=None) -> tuple[list[np.ndarray], list[np.ndarray],
                                                               DenoisingCollator]:
    """Corpus -> (train documents, held-out documents (every 50th), collator). Documents are at most
    ``seq_len`` tokens; noised inputs are cut to ``seq_len``; flax pads every batch to ``seq_len`` so one
    compiled step serves the run."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    docs = make_documents(read_corpus(run.corpus), tokenizer, max_length=run.seq_len)
    held = set(range(0, len(docs), 50))
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [docs[i] for i in sorted(held)]
    collator = DenoisingCollator(
        tokenizer=tokenizer, config=DenoisingConfig(mask=run.mask, permute_sentences=run.permute_sentences),
        seed=run.seed, max_source_length=run.seq_len,
        pad_to_multiple_of=run.seq_len if run.backend == "flax" else None)
    return train, heldout, collator


def read_pairs(path: str | os.PathLike, source_key: str = "source", target_key: str = "target") -> list[tuple[str, str]]:
    """(source, target) texts of a JSON-lines file; a bad line is a ``RecipeError`` naming the file and line."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict) or source_key not in row or target_key not in row:
                    got = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise RecipeError(f"{path}:{n}: a row needs {source_key!r} and {target_key!r}, got {got}")
                pairs.append((str(row[source_key]), str(row[target_key])))
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not pairs:
        raise RecipeError(f"{path}: no rows")
    return pairs


class Seq2SeqCollator:
    """(source, target) text pairs -> the batch layout of ``DenoisingCollator``: ``input_ids``,
    ``attention_mask`` (B, S), ``decoder_input_ids``, ``labels`` (B, T) (-100 on padding), numpy int64.
    Texts are encoded once and cached; padding and the decoder shift are ``bart_core.DataCollatorForSeq2Seq``'s.
    It has the collator interface ``iterate_batches`` expects."""

    def __init__(self, tokenizer, max_source_length: int, max_target_length: int, seed: int = 0,
                 decoder_start_token_id: int = 2, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.seed = seed
        self.decoder_start_token_id = decoder_start_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        vocab = tokenizer.get_vocab()
        self.bos, self.pad, self.eos = vocab["<s>"], vocab["<pad>"], vocab["</s>"]
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        shift = types.SimpleNamespace(pad_token_id=self.pad, decoder_start_token_id=decoder_start_token_id)
        self._pad = DataCollatorForSeq2Seq(tokenizer, model=shift, pad_to_multiple_of=pad_to_multiple_of,
                                           label_pad_token_id=LABEL_PAD, return_tensors="np")

    def encode(self, text: str, max_length: int) -> np.ndarray:
        key = (text, max_length)
        if key not in self._cache:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))[:max_length - 2]
            self._cache[key] = np.array([self.bos, *ids, self.eos], dtype=np.int64)
        return self._cache[key]

    def __call__(self, pairs: Sequence[tuple[str, str]], indices: Sequence[int] | None = None,
                 epoch: int = 0) -> dict[str, np.ndarray]:
        features = []
        for source, target in pairs:
            src = self.encode(source, self.max_source_length)
            features.append({"input_ids": src, "attention_mask": np.ones_like(src),
                             "labels": self.encode(target, self.max_target_length)})
        return {k: np.asarray(v, np.int64) for k, v in self._pad(features).items()}


def finetuning_data(run: RunConfig, tokenizer=None) -> tuple[list, list, Seq2SeqCollator]:
    """(train pairs, eval pairs, collator); the bundled summaries when no files are given."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    train = read_pairs(run.train_file or SUMMARIES_DIR / "train.jsonl", run.source_key, run.target_key)
    evals = read_pairs(run.eval_file or SUMMARIES_DIR / "eval.jsonl", run.source_key, run.target_key)
    pad = run.seq_len if run.backend == "flax" else None
    collator = Seq2SeqCollator(tokenizer, run.seq_len, run.target_len, seed=run.seed, pad_to_multiple_of=pad)
    if pad is not None:  # targets share one padded length too
        collator = _FixedTargetCollator(collator, run.target_len)
    return train, evals, collator


class _FixedTargetCollator:
    """Pads sources to ``max_source_length`` and targets to ``target_len``: fixed shapes for a compiled step."""

    def __init__(self, inner: Seq2SeqCollator, target_len: int):
        self.inner, self.seed, self.target_len = inner, inner.seed, target_len
        self.tokenizer = inner.tokenizer

    def __call__(self, pairs, indices=None, epoch=0):
        batch = self.inner(pairs, indices, epoch)
        t = batch["labels"].shape[1]
        extra = self.target_len - t
        if extra > 0:
            batch["labels"] = np.pad(batch["labels"], ((0, 0), (0, extra)), constant_values=LABEL_PAD)
            batch["decoder_input_ids"] = np.pad(batch["decoder_input_ids"], ((0, 0), (0, extra)),
                                                constant_values=self.inner.pad)
        return batch


def label_tokens(batch: dict[str, Any]) -> int:
    return int((np.asarray(batch["labels"]) != LABEL_PAD).sum())


def batch_tokens(batch: dict[str, Any]) -> int:
    """Tokens a step processes, for throughput: source tokens plus label tokens."""
    return int(np.asarray(batch["attention_mask"]).sum()) + label_tokens(batch)


class BatchStream:
    """Endless micro-batches over epochs (``iterate_batches`` with ``drop_last``: every batch is full), for
    process ``rank`` of ``world_size``. The position is the number of micro-batches handed out; ``seek``
    restores one without collating the batches before it."""

    def __init__(self, items: Sequence[Any], collator: Any, batch_size: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.items, self.collator, self.batch_size = items, collator, batch_size
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.per_epoch = len(items) // (batch_size * world_size)
        if self.per_epoch == 0:
            raise ValueError(f"{len(items)} examples do not fill one batch of {batch_size * world_size}")
        self.position = 0
        self._it: Iterator | None = None

    def seek(self, position: int) -> None:
        self.position = position
        self._it = None

    def _epoch_iterator(self, epoch: int, skip: int) -> Iterator[Any]:
        it = iterate_batches(self.items, _Deferred(self.collator), self.batch_size, epoch=epoch,
                             shuffle=self.shuffle, drop_last=True, rank=self.rank, world_size=self.world_size)
        for _ in range(skip):  # deferred batches: skipping collates nothing
            next(it)
        return it

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._it is None:
                epoch, skip = divmod(self.position, self.per_epoch)
                self._it = self._epoch_iterator(epoch, skip)
            try:
                deferred = next(self._it)
            except StopIteration:
                self._it = None
                continue
            self.position += 1
            return deferred()

    def take(self, n: int) -> list[dict[str, Any]]:
        return [next(self) for _ in range(n)]


class _Deferred:
    """A collator whose batches are collated on demand: ``iterate_batches`` fixes the order, slicing and
    example indices (which seed the noise), and positions before a resume point cost nothing."""

    def __init__(self, inner: Any):
        self.inner, self.seed = inner, inner.seed

    def __call__(self, items, indices=None, epoch: int = 0):
        return functools.partial(self.inner, items, indices=indices, epoch=epoch)


@dataclass
class StepBatches:
    """The micro-batches of one optimizer step for this process, and the label-token counts that weight them:
    ``tokens[i]`` in micro-batch ``i`` here, ``global_tokens`` over the whole step on every replica."""
    batches: list[dict[str, Any]]
    tokens: list[int]
    global_tokens: int
    throughput_tokens: int   # source + label tokens of this process's micro-batches

    @classmethod
    def take(cls, stream: BatchStream, grad_accum: int) -> "StepBatches":
        batches = stream.take(grad_accum)
        tokens = [label_tokens(b) for b in batches]
        return cls(batches, tokens, sum(tokens), sum(batch_tokens(b) for b in batches))


def eval_batches(items: Sequence[Any], collator: Any, batch_size: int, limit: int | None = None) -> list[dict]:
    """Held-out batches in order (no shuffle, last batch kept)."""
    out = []
    for batch in iterate_batches(items, collator, batch_size, shuffle=False):
        out.append(batch)
        if limit is not None and len(out) >= limit:
            break
    return out
