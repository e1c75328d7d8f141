"""The denoising pipeline: statistics of each noise over many samples, invariants (what never moves, what is
kept), batch layout, reproducibility and pinned outputs for fixed seeds."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from bart_core.denoising import (
    CORPUS_DIR,
    DenoisingCollator,
    DenoisingConfig,
    DenoisingVocab,
    document_rng,
    insert_tokens,
    iterate_batches,
    make_documents,
    mask_words,
    noise_document,
    permute_sentences,
    read_corpus,
    rotate_document,
    sample_span_lengths,
)

# A synthetic vocabulary of 100 ids: 0-3 specials, 4 = ".", 5-49 word starts ("Ġ..."), 50-98 continuations,
# 99 = <mask>. FLAT has every token a word start, so spans are counted in tokens.
BOS, PAD, EOS, STOP, MASK = 0, 1, 2, 4, 99
_WORD_START = np.zeros(100, dtype=bool)
_WORD_START[[0, 1, 2, 3, 99]] = True
_WORD_START[5:50] = True
VOCAB = DenoisingVocab(_WORD_START, (STOP,), mask_token_id=MASK)
FLAT = DenoisingVocab(np.ones(100, dtype=bool), (STOP,), mask_token_id=MASK)
NO_PERMUTE = DenoisingConfig(permute_sentences=0.0)


def random_doc(rng: np.random.Generator, n: int, low: int = 5, high: int = 99) -> np.ndarray:
    """``[<s>, n ordinary tokens without full stops, </s>]``."""
    return np.concatenate([[BOS], rng.integers(low, high, n), [EOS]]).astype(np.int64)


def sentence_doc(rng: np.random.Generator, n_sentences: int) -> np.ndarray:
    """Sentences of 2-7 distinct-looking tokens, each ending with a full stop."""
    parts = [np.append(rng.integers(5, 99, rng.integers(2, 8)), STOP) for _ in range(n_sentences)]
    return np.concatenate([[BOS], *parts, [EOS]]).astype(np.int64)


def sentences_of(doc: np.ndarray) -> list[tuple[int, ...]]:
    body = doc[1:-1].tolist()
    out, cur = [], []
    for t in body:
        cur.append(t)
        if t == STOP:
            out.append(tuple(cur))
            cur = []
    if cur:
        out.append(tuple(cur))
    return out


def mask_runs(seq: np.ndarray) -> np.ndarray:
    m = np.concatenate([[0], (seq == MASK).astype(np.int8), [0]])
    d = np.diff(m)
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


# === options and vocabulary ===

@pytest.mark.parametrize("bad", [dict(mask=1.5), dict(mask_random=-0.1), dict(rotate=2.0), dict(insert=-1.0),
                                 dict(permute_sentences=1.1), dict(replace_length=2), dict(mask_length="char"),
                                 dict(poisson_lambda=0.0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="DenoisingConfig"):
        DenoisingConfig(**bad)


def test_defaults_are_the_paper_best_setting():
    c = DenoisingConfig()
    assert (c.mask, c.mask_length, c.poisson_lambda, c.replace_length, c.permute_sentences) == (
        0.3, "span-poisson", 3.0, 1, 1.0)
    assert (c.rotate, c.insert, c.mask_random) == (0.0, 0.0, 0.0)


def test_bundled_vocab_reads_specials_full_stop_and_word_starts():
    v = DenoisingVocab.from_file()
    assert v.size == 50265
    assert (v.bos_token_id, v.pad_token_id, v.eos_token_id, v.unk_token_id, v.mask_token_id) == (0, 1, 2, 3, 50264)
    assert v.full_stop_ids == (4,)
    assert v.word_start[5] and v.word_start[4758]          # "Ġthe", "Ġcat"
    assert not v.word_start[4] and not v.word_start[196]   # ".", "ed"
    assert not v.word_start[133]                           # "The" (no leading space)
    assert not np.isin(v.ordinary_ids, [0, 1, 2, 3, 50264]).any() and v.ordinary_ids.size == 50265 - 5


# === token masking and deletion (subword units) ===

def test_token_masking_masks_exactly_the_ratio_and_nothing_else():
    cfg = NO_PERMUTE.replace(mask=0.15, mask_length="subword")
    rng = np.random.default_rng(0)
    for i in range(200):
        doc = random_doc(rng, int(rng.integers(5, 80)))
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        assert out.shape == doc.shape
        changed = out != doc
        assert changed.sum() == math.ceil(0.15 * (doc.size - 2))
        assert (out[changed] == MASK).all()
        assert out[0] == BOS and out[-1] == EOS


def test_token_deletion_removes_the_ratio_and_keeps_order():
    cfg = NO_PERMUTE.replace(mask=0.2, mask_length="subword", replace_length=0)
    rng = np.random.default_rng(1)
    for i in range(200):
        doc = random_doc(rng, int(rng.integers(5, 80)))
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        assert doc.size - out.size == math.ceil(0.2 * (doc.size - 2))
        assert MASK not in out
        it = iter(doc.tolist())  # out is a subsequence of doc
        assert all(t in it for t in out.tolist())
        assert out[0] == BOS and out[-1] == EOS


def test_mask_random_replaces_that_fraction_of_spans_with_ordinary_tokens():
    cfg = NO_PERMUTE.replace(mask=0.3, mask_length="subword", mask_random=0.4)
    rng = np.random.default_rng(2)
    n_mask = n_random = 0
    for i in range(300):
        doc = random_doc(rng, 60, low=5, high=50)   # ids 50-98 never appear in the document
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        n_mask += int((out == MASK).sum())
        n_random += int(((out != doc) & (out != MASK)).sum())
        assert not np.isin(out[1:-1], [BOS, PAD, EOS, 3]).any()
    assert abs(n_random / (n_mask + n_random) - 0.4) < 0.03


# === whole-word masking ===

def test_word_masking_covers_whole_words():
    cfg = NO_PERMUTE.replace(mask=0.3, mask_length="word", replace_length=-1)
    rng = np.random.default_rng(3)
    for i in range(200):
        doc = random_doc(rng, 50)
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        assert out.shape == doc.shape
        masked = out == MASK
        word_id = np.cumsum(VOCAB.word_start[doc] | (np.arange(doc.size) == 1))
        for w in np.unique(word_id[masked]):  # a masked word is masked entirely
            assert masked[word_id == w].all()
        n_words = int(VOCAB.word_start[doc[1:-1]].sum() + (not VOCAB.word_start[doc[1]]))
        assert len(np.unique(word_id[masked])) == math.ceil(0.3 * n_words)


def test_first_token_after_bos_starts_a_word_even_without_marker():
    doc = np.array([BOS, 60, 61, 10, 62, 11, EOS])   # 60 and 61 are continuations: "The" "ory"
    cfg = NO_PERMUTE.replace(mask=1.0, mask_length="word", replace_length=1)
    out = noise_document(doc, cfg, VOCAB, np.random.default_rng(0))
    # three words (60 61 | 10 62 | 11), each becomes one <mask>
    np.testing.assert_array_equal(out, [BOS, MASK, MASK, MASK, EOS])


# === text infilling (span-poisson) ===

def test_span_lengths_follow_poisson_3():
    lengths = np.concatenate([sample_span_lengths(300, 3.0, np.random.default_rng(i))[:-1] for i in range(1500)])
    assert abs(lengths.mean() - 3.0) < 0.03
    assert abs((lengths == 0).mean() - math.exp(-3.0)) < 0.005
    for i in range(50):
        budget = 1 + i * 7
        spans = sample_span_lengths(budget, 3.0, np.random.default_rng(i))
        assert spans.sum() == budget and spans[-1] >= 1


def test_text_infilling_masked_fraction_and_span_lengths():
    # replace_length=-1 leaves one <mask> per corrupted token, so masks count the covered tokens (+ insertions)
    cfg = NO_PERMUTE.replace(mask=0.3, replace_length=-1)
    rng = np.random.default_rng(4)
    fractions, inserts = [], []
    for i in range(300):
        doc = random_doc(rng, 200)
        out = noise_document(doc, cfg, FLAT, np.random.default_rng(i))
        inserts.append(out.size - doc.size)
        fractions.append(((out == MASK).sum() - inserts[-1]) / 200)
    # spans may run into each other, so the covered fraction sits a little under 0.3 (about 1 - e^-0.3)
    assert 0.25 < np.mean(fractions) <= 0.30
    # zero-length spans: about 60 words / 3 per span * e^-3 = 1 insertion per document
    assert 0.8 < np.mean(inserts) < 1.3 and min(inserts) == 0

    low = NO_PERMUTE.replace(mask=0.05, replace_length=-1)   # sparse spans rarely touch
    runs = np.concatenate([mask_runs(noise_document(random_doc(rng, 400), low, FLAT, np.random.default_rng(i)))
                           for i in range(300)])
    assert abs(runs.mean() - 3.0) < 0.3


def test_text_infilling_replaces_each_span_with_one_mask():
    cfg = NO_PERMUTE  # replace_length=1
    rng = np.random.default_rng(5)
    shrink = []
    for i in range(300):
        doc = random_doc(rng, 200)
        out = noise_document(doc, cfg, FLAT, np.random.default_rng(i))
        minus = noise_document(doc, cfg.replace(replace_length=-1), FLAT, np.random.default_rng(i))
        # the same draws: collapsing each run of masks of the -1 output to one mask gives the 1 output,
        # except that insertions (single masks) may land next to a span
        assert (out == MASK).sum() <= (minus == MASK).sum()
        assert (out != MASK).sum() == (minus != MASK).sum()
        np.testing.assert_array_equal(out[out != MASK], minus[minus != MASK])
        shrink.append((doc.size - out.size) / 200)
    # covered ~0.27 of tokens, ~20 spans of ~3 tokens -> ~0.18 of the length disappears
    assert 0.14 < np.mean(shrink) < 0.22


def test_zero_length_spans_become_inserted_masks():
    doc = random_doc(np.random.default_rng(0), 30)
    inserted = 0
    for i in range(2000):
        # a budget of one word: every zero-length span drawn before the first non-empty one is an insertion
        out = mask_words(doc, NO_PERMUTE.replace(mask=0.01), FLAT, np.random.default_rng(i))
        extra = out.size - doc.size
        assert (out == MASK).sum() == 1 + extra
        kept = out[out != MASK].tolist()
        assert len(kept) == doc.size - 1 and kept[0] == BOS and kept[-1] == EOS
        inserted += extra
    assert 70 < inserted < 140   # 2000 * e^-3 / (1 - e^-3) = 105


# === insertion, rotation, permutation ===

def test_random_insertion_adds_the_ratio_and_keeps_the_document():
    rng = np.random.default_rng(6)
    cfg = DenoisingConfig(mask=0.0, permute_sentences=0.0, insert=0.2)
    for i in range(100):
        doc = random_doc(rng, int(rng.integers(3, 60)))
        n = math.ceil(doc.size * 0.2)
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        assert out.size == doc.size + n and (out == MASK).sum() == n
        np.testing.assert_array_equal(out[out != MASK], doc)
        mixed = noise_document(doc, cfg.replace(mask_random=0.25), VOCAB, np.random.default_rng(i))
        assert mixed.size == doc.size + n and (mixed == MASK).sum() == n - math.ceil(n * 0.25)
        assert mixed[0] == BOS and mixed[-1] == EOS and not np.isin(mixed[1:-1], [BOS, PAD, EOS, 3]).any()
    np.testing.assert_array_equal(insert_tokens(doc, 0, 0.0, VOCAB, rng), doc)


def test_rotation_keeps_the_multiset_of_tokens():
    rng = np.random.default_rng(7)
    cfg = DenoisingConfig(mask=0.0, permute_sentences=0.0, rotate=1.0)
    offsets = set()
    for i in range(200):
        doc = random_doc(rng, 20)
        out = noise_document(doc, cfg, VOCAB, np.random.default_rng(i))
        assert Counter(out.tolist()) == Counter(doc.tolist())
        assert out[0] == BOS and out[-1] == EOS
        body, orig = out[1:-1].tolist(), doc[1:-1].tolist()
        shifts = [k for k in range(20) if orig[k:] + orig[:k] == body]
        assert shifts, "not a rotation"
        offsets.add(shifts[0])
    assert len(offsets) >= 15   # the offset varies
    half = DenoisingConfig(mask=0.0, permute_sentences=0.0, rotate=0.5)
    rotated = sum(not np.array_equal(noise_document(doc, half, VOCAB, np.random.default_rng(i)), doc)
                  for i in range(400))
    assert 150 < rotated < 230   # P(rotate) = 0.5, minus the identity offsets 1 and n - 1 (2 of 20)
    np.testing.assert_array_equal(rotate_document(np.array([BOS, EOS]), rng), [BOS, EOS])


def test_sentence_permutation_keeps_the_multiset_of_sentences():
    rng = np.random.default_rng(8)
    reordered = 0
    for i in range(200):
        doc = sentence_doc(rng, int(rng.integers(2, 9)))
        out = permute_sentences(doc, 1.0, VOCAB, np.random.default_rng(i))
        assert out.shape == doc.shape and out[0] == BOS and out[-1] == EOS
        assert Counter(sentences_of(out)) == Counter(sentences_of(doc))
        reordered += sentences_of(out) != sentences_of(doc)
    assert reordered > 150


def test_sentence_permutation_moves_at_most_the_ratio():
    rng = np.random.default_rng(9)
    for i in range(100):
        doc = sentence_doc(rng, 10)
        out = permute_sentences(doc, 0.3, VOCAB, np.random.default_rng(i))
        moved = sum(a != b for a, b in zip(sentences_of(out), sentences_of(doc)))
        assert moved <= 3 and Counter(sentences_of(out)) == Counter(sentences_of(doc))


def test_last_sentence_without_full_stop_is_a_sentence():
    doc = np.array([BOS, 10, 11, STOP, 20, 21, 22, EOS])
    outs = {tuple(permute_sentences(doc, 1.0, VOCAB, np.random.default_rng(i)).tolist()) for i in range(20)}
    assert outs == {tuple(doc.tolist()), (BOS, 20, 21, 22, 10, 11, STOP, EOS)}


def test_bos_eos_never_masked_moved_or_duplicated():
    cfg = DenoisingConfig(mask=1.0, mask_random=0.5, insert=0.5, rotate=1.0, permute_sentences=1.0)
    rng = np.random.default_rng(10)
    for kind in ("subword", "word", "span-poisson"):
        for replace_length in (-1, 0, 1):
            c = cfg.replace(mask_length=kind, replace_length=replace_length)
            for i in range(30):
                doc = sentence_doc(rng, 4)
                out = noise_document(doc, c, VOCAB, np.random.default_rng(i))
                assert out[0] == BOS and out[-1] == EOS
                assert not np.isin(out[1:-1], [BOS, PAD, EOS]).any()


# === batches ===

def test_batch_layout_labels_decoder_inputs_and_padding():
    rng = np.random.default_rng(11)
    docs = [sentence_doc(rng, n) for n in (1, 5, 3)]
    batch = DenoisingCollator(VOCAB, seed=3)(docs)
    assert set(batch) == {"input_ids", "attention_mask", "decoder_input_ids", "labels"}
    assert all(v.dtype == np.int64 for v in batch.values())
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    assert labels.shape == (3, max(d.size for d in docs)) == dec.shape
    for row, doc in enumerate(docs):
        np.testing.assert_array_equal(labels[row, :doc.size], doc)
        assert (labels[row, doc.size:] == -100).all()
        assert dec[row, 0] == 2
        np.testing.assert_array_equal(dec[row, 1:doc.size + 1], doc[:dec.shape[1] - 1][:doc.size])
        assert (dec[row, doc.size + 1:] == PAD).all()
        n = int(batch["attention_mask"][row].sum())
        assert (batch["attention_mask"][row, :n] == 1).all() and (batch["input_ids"][row, n:] == PAD).all()
        assert batch["input_ids"][row, 0] == BOS and batch["input_ids"][row, n - 1] == EOS
        assert PAD not in batch["input_ids"][row, :n]
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()
    padded = DenoisingCollator(VOCAB, seed=3, pad_to_multiple_of=8)(docs)
    assert padded["input_ids"].shape[1] % 8 == 0 and padded["labels"].shape[1] % 8 == 0
    np.testing.assert_array_equal(padded["labels"][:, :labels.shape[1]], labels)


def test_same_seed_same_batches_other_seed_other_batches():
    rng = np.random.default_rng(12)
    docs = [random_doc(rng, 40) for _ in range(4)]
    a, b, c = (DenoisingCollator(VOCAB, seed=s) for s in (5, 5, 6))
    a1, a2, b1, b2, c1 = a(docs), a(docs), b(docs), b(docs), c(docs)
    for k in a1:
        np.testing.assert_array_equal(a1[k], b1[k])
        np.testing.assert_array_equal(a2[k], b2[k])
    assert not np.array_equal(a1["input_ids"], a2["input_ids"])   # a second call is fresh noise
    assert not np.array_equal(a1["input_ids"], c1["input_ids"])
    # document index i of epoch e always gets the same noise, whatever batch it is in
    single = DenoisingCollator(VOCAB, seed=5)([docs[2]], indices=[2])
    n = int(single["attention_mask"].sum())
    np.testing.assert_array_equal(single["input_ids"][0, :n], a1["input_ids"][2, :n])
    other_epoch = DenoisingCollator(VOCAB, seed=5)(docs, indices=[0, 1, 2, 3], epoch=1)
    assert not np.array_equal(other_epoch["input_ids"], a1["input_ids"])


def test_pinned_outputs_for_seed_0():
    # "The cat sat on the mat. It was warm. A dog barked twice." in the bart-base vocabulary
    doc = np.array([0, 133, 4758, 4005, 15, 5, 7821, 4, 85, 21, 3279, 4, 83, 2335, 28847, 196, 2330, 4, 2])
    vocab = DenoisingVocab.from_file()
    default = DenoisingCollator(vocab, seed=0)([doc, doc])
    np.testing.assert_array_equal(default["input_ids"], PINNED_DEFAULT)
    np.testing.assert_array_equal(default["attention_mask"], (PINNED_DEFAULT != 1).astype(np.int64))
    everything = DenoisingConfig(mask=0.4, mask_random=0.5, insert=0.1, rotate=1.0, mask_length="word",
                                 replace_length=-1, permute_sentences=0.5)
    out = noise_document(doc, everything, vocab, document_rng(0, 0, 0))
    np.testing.assert_array_equal(out, PINNED_EVERYTHING)
    deletion = noise_document(doc, DenoisingConfig(mask=0.3, mask_length="subword", replace_length=0,
                                                   permute_sentences=0.0), vocab, np.random.default_rng(0))
    np.testing.assert_array_equal(deletion, PINNED_DELETION)


# Seed runs of this implementation, checked by hand: row 0 reads "It<mask> A dog barked twice.The cat sat
# on<mask>" (sentences 2, 3, 1; 4 of the 13 words masked in two spans, each span one <mask>).
PINNED_DEFAULT = np.array([
    [0, 85, 50264, 83, 2335, 28847, 196, 2330, 4, 133, 4758, 4005, 15, 50264, 2, 1, 1],
    [0, 85, 21, 3279, 4, 133, 50264, 15, 5, 7821, 4, 50264, 28847, 196, 2330, 4, 2]])
PINNED_EVERYTHING = np.array([0, 2330, 4, 36478, 32262, 21, 3279, 4, 133, 50264, 4005, 50264, 523, 5, 7821, 4,
                              48191, 50264, 28847, 196, 2])
# ceil(0.3 * 17) = 6 tokens deleted: "The", "sat", "on", "the", the "." after "warm", "A"
PINNED_DELETION = np.array([0, 4758, 7821, 4, 85, 21, 3279, 2335, 28847, 196, 2330, 4, 2])


def test_documents_are_checked():
    col = DenoisingCollator(VOCAB)
    with pytest.raises(ValueError, match="start with <s>"):
        col([np.array([5, 6, EOS])])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        col([np.array([BOS, 100, EOS])])
    with pytest.raises(ValueError, match="need a tokenizer"):
        col(["some text"])
    with pytest.raises(ValueError, match="indices"):
        col([np.array([BOS, 5, EOS])], indices=[0, 1])


def test_max_source_length_cuts_and_keeps_eos():
    doc = random_doc(np.random.default_rng(13), 30)
    cfg = DenoisingConfig(mask=0.0, permute_sentences=0.0, insert=0.5)
    batch = DenoisingCollator(VOCAB, cfg, max_source_length=32)([doc])
    assert batch["input_ids"].shape == (1, 32) and batch["input_ids"][0, -1] == EOS
    assert batch["labels"].shape == (1, 32)


@pytest.mark.parametrize("kind", ["np", "pt", "tf", "jax"])
def test_return_tensors(kind):
    module = {"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}[kind]
    pytest.importorskip(module)
    rng = np.random.default_rng(14)
    docs = [random_doc(rng, 10), random_doc(rng, 6)]
    ref = DenoisingCollator(VOCAB, seed=1)(docs)
    out = DenoisingCollator(VOCAB, seed=1, return_tensors=kind)(docs)
    assert set(out) == set(ref)
    for k, v in out.items():
        assert type(v).__module__.split(".")[0] in {"numpy": ("numpy",), "torch": ("torch",),
                                                    "tensorflow": ("tensorflow", "tf_keras"),
                                                    "jax": ("jax", "jaxlib")}[module]
        np.testing.assert_array_equal(np.asarray(v), ref[k])
    with pytest.raises(ValueError, match="return_tensors"):
        DenoisingCollator(VOCAB, return_tensors="mx")


# === iteration ===

def test_iterate_batches_covers_each_document_once_per_epoch():
    docs = [np.array([BOS, 5 + i % 40, 50 + i // 40, EOS]) for i in range(23)]
    col = DenoisingCollator(VOCAB, DenoisingConfig(mask=0.0, permute_sentences=0.0), seed=2)
    seen = [tuple(r[r != -100].tolist()) for b in iterate_batches(docs, col, 5) for r in b["labels"]]
    assert sorted(seen) == sorted(tuple(d.tolist()) for d in docs)
    order0 = [tuple(r.tolist()) for b in iterate_batches(docs, col, 5) for r in b["labels"]]
    order1 = [tuple(r.tolist()) for b in iterate_batches(docs, col, 5, epoch=1) for r in b["labels"]]
    assert order0 != order1
    assert len(list(iterate_batches(docs, col, 5, drop_last=True))) == 4
    unshuffled = [tuple(r[r != -100].tolist()) for b in iterate_batches(docs, col, 5, shuffle=False)
                  for r in b["labels"]]
    assert unshuffled == [tuple(d.tolist()) for d in docs]


def test_iterate_batches_ranks_split_the_global_batch():
    rng = np.random.default_rng(16)
    docs = [random_doc(rng, int(rng.integers(5, 30))) for _ in range(21)]
    col = DenoisingCollator(VOCAB, seed=4)
    single = list(iterate_batches(docs, col, 6, epoch=3))
    ranks = [list(iterate_batches(docs, col, 3, epoch=3, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3   # 21 documents, global batch 6: the last 3 are dropped
    for step in range(3):
        for key in ("input_ids", "labels"):
            whole = single[step][key]
            for r in range(2):
                part = ranks[r][step][key]
                np.testing.assert_array_equal(part, whole[3 * r:3 * r + 3, :part.shape[1]])


# === text ===

class WhitespaceTokenizer:
    """Words of the form "wN" -> id N; "." -> 4."""

    def encode(self, text, add_special_tokens=False):
        return [4 if w == "." else int(w[1:]) for w in text.split()]


def test_make_documents_packs_whole_sentences():
    text = " ".join(f"w{5 + (i % 40)}" + (" ." if i % 7 == 6 else "") for i in range(300))
    tok = WhitespaceTokenizer()
    docs = make_documents([text, "w9 w10 ."], tok, max_length=20, vocab=VOCAB)
    assert all(d[0] == BOS and d[-1] == EOS and d.size <= 20 for d in docs)
    assert [t for d in docs[:-1] for t in d[1:-1].tolist()] == tok.encode(text)
    assert docs[-1].tolist() == [BOS, 9, 10, STOP, EOS]   # texts are never mixed
    assert all(d[-2] == STOP for d in docs[:-2])   # sentences (8 tokens) are kept whole; the text ends without "."
    long = make_documents("w5 " * 45, tok, max_length=20, vocab=VOCAB)
    assert [d.size for d in long] == [20, 20, 11]   # 45 = 18 + 18 + 9 tokens


def test_corpus_and_real_tokenizer(tokenizer_dir):
    tokenizer_mod = pytest.importorskip("bart_core.tokenizer")
    texts = read_corpus()
    assert len(texts) == 2 and sum(len(t) for t in texts) > 500_000
    assert (CORPUS_DIR / "README.md").is_file()
    assert "gutenberg" not in " ".join(texts).lower()    # licence headers removed
    tok = tokenizer_mod.BartTokenizer.from_pretrained(tokenizer_dir)
    docs = make_documents(texts[0][:20_000], tok, max_length=64)
    assert all(d.size <= 64 and d[0] == 0 and d[-1] == 2 for d in docs)
    assert sum(d.size > 40 for d in docs) > 0.7 * len(docs)   # blocks are mostly full
    col = DenoisingCollator(tokenizer=tok, seed=0)
    from_text = col(["The cat sat on the mat. It was warm."])
    from_ids = DenoisingCollator(seed=0)([np.array(tok.encode("The cat sat on the mat. It was warm."))])
    for k in from_ids:
        np.testing.assert_array_equal(from_text[k], from_ids[k])
