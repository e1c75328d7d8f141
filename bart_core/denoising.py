"""BART's denoising pre-training data, in numpy, for every backend.

The encoder reads a corrupted document, the decoder restores the original. The noising functions are the ones
of the BART paper with the semantics of fairseq's ``DenoisingDataset``, applied in its order:
sentence permutation, then word/span masking (token masking, token deletion and text infilling are its
settings), then random insertion, then document rotation.

A document is a 1-D array of token ids ``[<s>, ..., </s>]``; ``<s>`` and ``</s>`` are never masked, deleted,
permuted or rotated. Words are found from the byte-level BPE spelling: a token starting with the space marker
"Ġ" (or a special token) begins a word, and so does the first token after ``<s>``.

Randomness: every draw comes from a ``np.random.Generator`` handed in. ``DenoisingCollator`` gives document
``index`` of ``epoch`` its own generator seeded from ``(seed, epoch, index)``, so a document's noise does not
depend on the batch it lands in, on the process that reads it or on the backend that trains on it.

Pieces: ``DenoisingConfig`` (the options), ``DenoisingVocab`` (what the noise needs to know about the
vocabulary), the pure noising functions, ``DenoisingCollator`` (documents -> padded batch), ``iterate_batches``
(shuffled, shardable batches), ``read_corpus`` and ``make_documents`` (text -> token blocks).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from bart_core.inputs import TENSOR_TYPES, shift_tokens_right, to_framework

MASK_LENGTHS = ("subword", "word", "span-poisson")
LABEL_PAD = -100
WORD_START_MARKER = "\u0120"  # "Ġ": byte-level BPE's spelling of a leading space
CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "data" / "corpus"
_VOCAB_FILE = pathlib.Path(__file__).resolve().parent / "data" / "bart-base-tokenizer" / "vocab.json"
_NOISE_STREAM, _SHUFFLE_STREAM = 1, 2  # keep the noise and shuffle generators of one seed apart


# === Options ===

@dataclass(frozen=True)
class DenoisingConfig:
    """Noise options; names and meanings follow fairseq's denoising task. The defaults are the BART paper's
    best setting: text infilling (30% of words in Poisson(3) spans, one ``<mask>`` per span) plus sentence
    permutation. The paper's other noises, for example:

    - token masking: ``mask=0.15, mask_length="subword", replace_length=1, permute_sentences=0``
    - token deletion: ``mask=0.15, mask_length="subword", replace_length=0, permute_sentences=0``
    - document rotation only: ``mask=0, permute_sentences=0, rotate=1``
    """
    mask: float = 0.3                     # fraction of words (word starts) to corrupt; 0 turns masking off
    mask_random: float = 0.0              # fraction of corrupted spans (and inserted tokens) given a random
    #                                       token instead of <mask>
    insert: float = 0.0                   # extra tokens inserted, as a fraction of the document length
    rotate: float = 0.0                   # probability that a document is rotated to start at a random token
    permute_sentences: float = 1.0        # fraction of sentences shuffled among themselves
    replace_length: int = 1               # a corrupted span becomes 1: one <mask>, 0: nothing (deletion),
    #                                       -1: one <mask> per token
    mask_length: str = "span-poisson"     # span unit: "subword" (a token), "word" (a whole word),
    #                                       "span-poisson" (Poisson(poisson_lambda) whole words)
    poisson_lambda: float = 3.0           # mean span length in words for "span-poisson"

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"DenoisingConfig: {msg}")

        for name in ("mask", "mask_random", "rotate", "permute_sentences"):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value}")
        need(self.insert >= 0.0, f"insert must be >= 0, got {self.insert}")
        need(self.replace_length in (-1, 0, 1), f"replace_length must be -1, 0 or 1, got {self.replace_length}")
        need(self.mask_length in MASK_LENGTHS, f"mask_length must be one of {MASK_LENGTHS}, got {self.mask_length!r}")
        need(self.poisson_lambda > 0, f"poisson_lambda must be > 0, got {self.poisson_lambda}")

    def replace(self, **changes: Any) -> "DenoisingConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class DenoisingVocab:
    """What the noise needs to know about the vocabulary. ``word_start[i]`` is True when token ``i`` begins a
    word; ``full_stop_ids`` end sentences. Random replacement tokens are drawn from ``ordinary_ids``: every id
    but the five special ones."""
    word_start: np.ndarray                # (vocab_size,) bool
    full_stop_ids: tuple[int, ...]
    bos_token_id: int = 0
    pad_token_id: int = 1
    eos_token_id: int = 2
    unk_token_id: int = 3
    mask_token_id: int = 50264
    ordinary_ids: np.ndarray = field(init=False, repr=False)  # (n,) int64

    def __post_init__(self) -> None:
        word_start = np.asarray(self.word_start, dtype=bool)
        if word_start.ndim != 1:
            raise ValueError(f"word_start must be 1-D (one flag per vocabulary id), got shape {word_start.shape}")
        specials = self.special_ids
        for i in specials + tuple(self.full_stop_ids):
            if not 0 <= i < word_start.shape[0]:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {word_start.shape[0]})")
        ordinary = np.setdiff1d(np.arange(word_start.shape[0], dtype=np.int64), np.array(specials, dtype=np.int64))
        if ordinary.size == 0:
            raise ValueError("the vocabulary has no ordinary (non-special) token")
        object.__setattr__(self, "word_start", word_start)
        object.__setattr__(self, "full_stop_ids", tuple(int(i) for i in self.full_stop_ids))
        object.__setattr__(self, "ordinary_ids", ordinary)

    @property
    def size(self) -> int:
        return int(self.word_start.shape[0])

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.bos_token_id, self.pad_token_id, self.eos_token_id, self.unk_token_id, self.mask_token_id)

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int], full_stops: Sequence[str] = (".",), bos_token: str = "<s>",
                   pad_token: str = "<pad>", eos_token: str = "</s>", unk_token: str = "<unk>",
                   mask_token: str = "<mask>") -> "DenoisingVocab":
        """From a ``{token: id}`` mapping in byte-level BPE spelling (a ``vocab.json``). Special tokens count
        as word starts, as in fairseq."""
        names = dict(bos=bos_token, pad=pad_token, eos=eos_token, unk=unk_token, mask=mask_token)
        missing = [t for t in list(names.values()) + list(full_stops) if t not in vocab]
        if missing:
            raise ValueError(f"tokens {missing} are not in the vocabulary")
        size = max(vocab.values()) + 1
        word_start = np.zeros(size, dtype=bool)
        for token, i in vocab.items():
            word_start[i] = token.startswith(WORD_START_MARKER)
        ids = {k: int(vocab[t]) for k, t in names.items()}
        word_start[list(ids.values())] = True
        return cls(word_start, tuple(int(vocab[t]) for t in full_stops), bos_token_id=ids["bos"],
                   pad_token_id=ids["pad"], eos_token_id=ids["eos"], unk_token_id=ids["unk"],
                   mask_token_id=ids["mask"])

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> "DenoisingVocab":
        """From a ``vocab.json`` file or a folder holding one; the default is the bundled bart-base vocabulary."""
        path = pathlib.Path(path) if path is not None else _VOCAB_FILE
        if path.is_dir():
            path = path / "vocab.json"
        with open(path, encoding="utf-8") as f:
            return cls.from_vocab(json.load(f), **kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> "DenoisingVocab":
        """From any tokenizer with ``get_vocab()`` (``BartTokenizer``, a ``tokenizers.Tokenizer``, ...)."""
        return cls.from_vocab(tokenizer.get_vocab(), **kwargs)


# === Noising functions: (tokens, ..., rng) -> new tokens; the input array is never modified ===

def _random_tokens(vocab: DenoisingVocab, n: int, rng: np.random.Generator) -> np.ndarray:
    return vocab.ordinary_ids[rng.integers(0, vocab.ordinary_ids.shape[0], size=n)]


def permute_sentences(tokens: np.ndarray, p: float, vocab: DenoisingVocab, rng: np.random.Generator) -> np.ndarray:
    """Shuffle ``ceil(p * n_sentences)`` of the sentences among themselves. A sentence ends after the first of
    a run of full stops; the text before ``</s>`` always ends one."""
    tokens = np.asarray(tokens)
    if p <= 0 or tokens.shape[0] <= 3:
        return tokens.copy()
    full_stops = np.isin(tokens, vocab.full_stop_ids)
    full_stops[0] = False
    full_stops[-2] = True
    ends = np.flatnonzero(full_stops[1:] & ~full_stops[:-1]) + 2  # exclusive sentence ends, (n_sentences,)
    starts = np.concatenate([[1], ends[:-1]])
    n = ends.shape[0]
    k = math.ceil(n * p)
    chosen = rng.permutation(n)[:k]
    ordering = np.arange(n)
    ordering[chosen] = chosen[rng.permutation(k)]
    result = tokens.copy()
    result[1:ends[-1]] = np.concatenate([tokens[starts[i]:ends[i]] for i in ordering])
    return result


def word_starts(tokens: np.ndarray, vocab: DenoisingVocab, mask_length: str) -> np.ndarray:
    """``(len,)`` bool: positions where a masking span may begin. Never ``<s>`` or ``</s>``."""
    tokens = np.asarray(tokens)
    if mask_length == "subword":
        starts = np.ones(tokens.shape[0], dtype=bool)
    else:
        starts = vocab.word_start[tokens].copy()
        starts[1] = True  # a document's first word has no leading space
    starts[0] = starts[-1] = False
    return starts


def sample_span_lengths(num_to_mask: int, poisson_lambda: float, rng: np.random.Generator) -> np.ndarray:
    """Span lengths (in words) drawn from Poisson(lambda) until they cover ``num_to_mask`` words, the last one
    cut to fit: ``(n_spans,)`` int64, summing to ``num_to_mask``. Zero-length spans stay in (they become
    insertions)."""
    lengths = rng.poisson(poisson_lambda, size=num_to_mask)
    while lengths.sum() < num_to_mask:
        lengths = np.concatenate([lengths, rng.poisson(poisson_lambda, size=num_to_mask)])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, num_to_mask))  # first span reaching the budget
    lengths = lengths[:last + 1].astype(np.int64)
    lengths[last] = num_to_mask - (cum[last - 1] if last > 0 else 0)
    return lengths


def mask_words(tokens: np.ndarray, config: DenoisingConfig, vocab: DenoisingVocab,
               rng: np.random.Generator) -> np.ndarray:
    """Corrupt ``ceil(config.mask * n_words)`` words in spans of ``config.mask_length`` units. A span's first
    token becomes ``<mask>`` (``replace_length`` 1), or the whole span is deleted (0), or each of its tokens
    becomes ``<mask>`` (-1); a span is given a random token instead with probability ``mask_random``. Spans
    start at distinct words and may run into each other. With "span-poisson", each zero-length span inserts
    one ``<mask>`` at a random place."""
    source = np.array(tokens, copy=True)
    starts = word_starts(source, vocab, config.mask_length)
    num_to_mask = math.ceil(config.mask * int(starts.sum()))
    if num_to_mask == 0:
        return source
    num_inserts = 0
    if config.mask_length == "span-poisson":
        lengths = sample_span_lengths(num_to_mask, config.poisson_lambda, rng)
        num_inserts = int((lengths == 0).sum())
        lengths = lengths[lengths > 0]  # never empty: the last span is cut to length >= 1
    else:
        lengths = np.ones(num_to_mask, dtype=np.int64)
    num_spans = lengths.shape[0]

    candidates = np.flatnonzero(starts)
    indices = candidates[rng.permutation(candidates.shape[0])[:num_spans]]  # span starts, (num_spans,)
    use_random = rng.random(num_spans) < config.mask_random
    keep = np.ones(source.shape[0], dtype=bool)
    # word-start flags with </s> counted as a very long word, so no span runs past the end of the document
    boundary = starts.astype(np.int64)
    boundary[-1] = np.iinfo(np.int32).max

    def corrupt(positions: np.ndarray, randomize: np.ndarray) -> None:
        source[positions] = vocab.mask_token_id
        source[positions[randomize]] = _random_tokens(vocab, int(randomize.sum()), rng)

    if config.replace_length == 0:
        keep[indices] = False
    else:
        corrupt(indices, use_random)
    lengths = lengths - 1  # words still to cover after the current token's word
    while indices.shape[0] > 0:
        if config.mask_length == "span-poisson":
            lengths = lengths - boundary[indices + 1]
            going = lengths >= 0
        else:  # one word: continue over the word's remaining sub-tokens
            going = boundary[indices + 1] == 0
        indices, use_random, lengths = indices[going] + 1, use_random[going], lengths[going]
        if config.replace_length == -1:
            corrupt(indices, use_random)
        else:
            keep[indices] = False
    source = source[keep]
    if num_inserts > 0:
        source = insert_tokens(source, num_inserts, config.mask_random, vocab, rng)
    return source


def insert_tokens(tokens: np.ndarray, n: int, random_ratio: float, vocab: DenoisingVocab,
                  rng: np.random.Generator) -> np.ndarray:
    """Insert ``n`` tokens at random places between ``<s>`` and ``</s>``: ``ceil(n * random_ratio)`` random
    tokens, the rest ``<mask>``."""
    tokens = np.asarray(tokens)
    if n <= 0:
        return tokens.copy()
    length = tokens.shape[0] + n
    positions = rng.permutation(length - 2)[:n] + 1  # (n,) in [1, length - 2]
    inserted = np.zeros(length, dtype=bool)
    inserted[positions] = True
    result = np.empty(length, dtype=tokens.dtype)
    num_random = math.ceil(n * random_ratio)
    result[positions[num_random:]] = vocab.mask_token_id
    result[positions[:num_random]] = _random_tokens(vocab, num_random, rng)
    result[~inserted] = tokens
    return result


def rotate_document(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate the tokens between ``<s>`` and ``</s>`` so that a random one comes first."""
    tokens = np.asarray(tokens)
    offset = int(rng.integers(1, max(1, tokens.shape[0] - 1) + 1))
    return np.concatenate([tokens[:1], tokens[offset:-1], tokens[1:offset], tokens[-1:]])


def noise_document(tokens: np.ndarray, config: DenoisingConfig, vocab: DenoisingVocab,
                   rng: np.random.Generator) -> np.ndarray:
    """The encoder input for one document ``[<s>, ..., </s>]``: permutation, masking, insertion, rotation."""
    source = np.asarray(tokens, dtype=np.int64)
    if config.permute_sentences > 0:
        source = permute_sentences(source, config.permute_sentences, vocab, rng)
    if config.mask > 0:
        source = mask_words(source, config, vocab, rng)
    if config.insert > 0:
        source = insert_tokens(source, math.ceil(source.shape[0] * config.insert), config.mask_random, vocab, rng)
    if config.rotate > 0 and rng.random() < config.rotate:
        source = rotate_document(source, rng)
    return source


# === Batching ===

def document_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that noises document ``index`` in ``epoch``."""
    return np.random.default_rng([seed, _NOISE_STREAM, epoch, index])


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without special tokens, from a ``BartTokenizer``-like or ``tokenizers.Tokenizer`` object."""
    out = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(out, "ids", out))


class DenoisingCollator:
    """Documents -> one padded batch of numpy int64 arrays:

    - ``input_ids`` (B, S): the noised documents, right-padded with ``<pad>``;
    - ``attention_mask`` (B, S): 1 on tokens, 0 on padding;
    - ``labels`` (B, T): the original documents, padded with -100;
    - ``decoder_input_ids`` (B, T): ``shift_tokens_right(labels)``, starting with ``decoder_start_token_id``.

    ``documents`` are id arrays ``[<s>, ..., </s>]``, or strings when a ``tokenizer`` was given (they are
    encoded and wrapped in ``<s> ... </s>``). Document ``indices[i]`` of ``epoch`` is noised by
    ``document_rng(seed, epoch, indices[i])``. Without ``indices`` the collator numbers documents itself from a
    counter (0, 1, 2, ... over successive calls): successive calls give fresh noise, and a new collator with
    the same seed repeats them. Noised inputs longer than ``max_source_length`` (insertions can lengthen a
    document) are cut, keeping ``</s>``.
    """

    def __init__(self, vocab: DenoisingVocab | None = None, config: DenoisingConfig | None = None, *,
                 seed: int = 0, tokenizer: Any = None, decoder_start_token_id: int = 2,
                 return_tensors: str = "np", pad_to_multiple_of: int | None = None,
                 max_source_length: int | None = None):
        if vocab is None:
            vocab = DenoisingVocab.from_tokenizer(tokenizer) if tokenizer is not None else DenoisingVocab.from_file()
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if return_tensors not in TENSOR_TYPES:
            raise ValueError(f"return_tensors must be one of {TENSOR_TYPES}, got {return_tensors!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        if max_source_length is not None and max_source_length < 2:
            raise ValueError(f"max_source_length must be >= 2, got {max_source_length}")
        self.vocab = vocab
        self.config = config if config is not None else DenoisingConfig()
        self.seed = int(seed)
        self.tokenizer = tokenizer
        self.decoder_start_token_id = decoder_start_token_id
        self.return_tensors = return_tensors
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_source_length = max_source_length
        self._next_index = 0

    def document(self, doc: np.ndarray | Sequence[int] | str, position: int = 0) -> np.ndarray:
        """Check one document (or encode a string) -> int64 ``[<s>, ..., </s>]``."""
        v = self.vocab
        if isinstance(doc, str):
            if self.tokenizer is None:
                raise ValueError("text documents need a tokenizer: DenoisingCollator(tokenizer=...)")
            return np.array([v.bos_token_id, *_encode(self.tokenizer, doc), v.eos_token_id], dtype=np.int64)
        ids = np.asarray(doc)
        if ids.ndim != 1 or ids.shape[0] < 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"document {position} must be a 1-D integer array of length >= 2, got "
                             f"shape {ids.shape} and dtype {ids.dtype}")
        if ids[0] != v.bos_token_id or ids[-1] != v.eos_token_id:
            raise ValueError(f"document {position} must start with <s> ({v.bos_token_id}) and end with </s> "
                             f"({v.eos_token_id}), got {int(ids[0])} ... {int(ids[-1])}")
        if ids.min() < 0 or ids.max() >= v.size:
            raise ValueError(f"document {position} has token ids outside the vocabulary [0, {v.size})")
        return ids.astype(np.int64)

    def noise(self, doc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The encoder input for one checked document."""
        source = noise_document(doc, self.config, self.vocab, rng)
        if self.max_source_length is not None and source.shape[0] > self.max_source_length:
            source = np.concatenate([source[:self.max_source_length - 1], source[-1:]])
        return source

    def __call__(self, documents: Sequence[Any], indices: Sequence[int] | None = None,
                 epoch: int = 0) -> dict[str, Any]:
        docs = [self.document(d, i) for i, d in enumerate(documents)]
        if not docs:
            raise ValueError("an empty batch")
        if indices is None:
            indices = range(self._next_index, self._next_index + len(docs))
            self._next_index += len(docs)
        elif len(indices) != len(docs):
            raise ValueError(f"{len(indices)} indices for {len(docs)} documents")
        sources = [self.noise(d, document_rng(self.seed, epoch, int(i))) for d, i in zip(docs, indices)]
        batch = self.pad(sources, docs)
        return to_framework(batch, self.return_tensors, keep_int64=tuple(batch))  # int64 as the numpy batch

    def _padded_length(self, seqs: list[np.ndarray]) -> int:
        n = max(s.shape[0] for s in seqs)
        m = self.pad_to_multiple_of
        return n if m is None else -(-n // m) * m

    def pad(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Right-pad noised sources and original targets into the batch arrays."""
        batch, src_len, tgt_len = len(sources), self._padded_length(sources), self._padded_length(targets)
        input_ids = np.full((batch, src_len), self.vocab.pad_token_id, dtype=np.int64)     # (B, S)
        attention_mask = np.zeros((batch, src_len), dtype=np.int64)                         # (B, S)
        labels = np.full((batch, tgt_len), LABEL_PAD, dtype=np.int64)                       # (B, T)
        for row, (src, tgt) in enumerate(zip(sources, targets)):
            input_ids[row, :src.shape[0]] = src
            attention_mask[row, :src.shape[0]] = 1
            labels[row, :tgt.shape[0]] = tgt
        decoder_input_ids = shift_tokens_right(labels, self.vocab.pad_token_id, self.decoder_start_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "decoder_input_ids": decoder_input_ids.astype(np.int64), "labels": labels}


def iterate_batches(documents: Sequence[Any], collator: DenoisingCollator, batch_size: int, *, epoch: int = 0,
                    shuffle: bool = True, drop_last: bool = False, rank: int = 0,
                    world_size: int = 1) -> Iterator[dict[str, Any]]:
    """One epoch of batches. The order is a permutation seeded by ``(collator.seed, epoch)``; each global batch
    holds ``batch_size * world_size`` documents and process ``rank`` gets its ``batch_size`` slice. Noise
    follows the document index, so the union of the ranks' batches equals the single-process batch of
    ``batch_size * world_size`` documents (up to padding). With ``world_size > 1`` an incomplete last global
    batch is dropped so that every rank takes the same number of steps."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    n = len(documents)
    order = (np.random.default_rng([collator.seed, _SHUFFLE_STREAM, epoch]).permutation(n) if shuffle
             else np.arange(n))
    global_size = batch_size * world_size
    for begin in range(0, n, global_size):
        chunk = order[begin:begin + global_size]
        if chunk.shape[0] < global_size and (drop_last or world_size > 1):
            return
        mine = chunk[rank * batch_size:(rank + 1) * batch_size]
        if mine.shape[0]:
            yield collator([documents[i] for i in mine], indices=[int(i) for i in mine], epoch=epoch)


# === Text -> documents ===

def read_corpus(path: str | os.PathLike | None = None) -> list[str]:
    """The texts of every ``*.txt`` file in ``path`` (default: the bundled public-domain corpus), one string per
    file in name order, all runs of whitespace turned into one space."""
    folder = pathlib.Path(path) if path is not None else CORPUS_DIR
    files = [folder] if folder.is_file() else sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no .txt files in {folder}")
    return [re.sub(r"\s+", " ", f.read_text(encoding="utf-8")).strip() for f in files]


def make_documents(texts: str | Iterable[str], tokenizer: Any, max_length: int = 512,
                   vocab: DenoisingVocab | None = None) -> list[np.ndarray]:
    """Cut texts into documents ``[<s>, ..., </s>]`` of at most ``max_length`` tokens, packing whole sentences
    (cut after full stops) greedily and never mixing two texts; a sentence longer than a block is split.
    ``tokenizer`` needs ``encode(text, add_special_tokens=False)`` (and ``get_vocab()`` when ``vocab`` is
    not given)."""
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3, got {max_length}")
    vocab = vocab if vocab is not None else DenoisingVocab.from_tokenizer(tokenizer)
    texts = [texts] if isinstance(texts, str) else list(texts)
    budget = max_length - 2
    bos, eos = np.array([vocab.bos_token_id]), np.array([vocab.eos_token_id])
    documents: list[np.ndarray] = []

    def emit(block: list[np.ndarray]) -> None:
        if block:
            documents.append(np.concatenate([bos, *block, eos]).astype(np.int64))

    for text in texts:
        ids = np.asarray(_encode(tokenizer, text), dtype=np.int64)
        stops = np.isin(ids, vocab.full_stop_ids)
        cuts = np.flatnonzero(stops & ~np.append(stops[1:], False)) + 1  # after the last of a run of full stops
        block: list[np.ndarray] = []
        filled = 0
        for sentence in np.split(ids, cuts):
            while sentence.shape[0] > budget - filled:
                if filled == 0:  # longer than a whole block
                    emit([sentence[:budget]])
                    sentence = sentence[budget:]
                else:
                    emit(block)
                    block, filled = [], 0
            if sentence.shape[0]:
                block.append(sentence)
                filled += sentence.shape[0]
        emit(block)
    return documents
