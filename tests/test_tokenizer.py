"""BartTokenizer against transformers 4.57.6 (fast and slow BartTokenizer, the test oracle) on the bart-base files,
plus the reference documentation examples, save/load round trips and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bart_core.tokenizer import BartTokenizer, BartTokenizerFast, bundled_tokenizer_dir

DOC_EXAMPLES = {
    "Hello world": [0, 31414, 232, 2],
    " Hello world": [0, 20920, 232, 2],
    "UN Chief Says There Is No <mask> in Syria": [0, 4154, 1231, 15674, 345, 1534, 440, 50264, 11, 1854, 2],
}

CORPUS = [
    "Hello world", " Hello world", "UN Chief Says There Is No <mask> in Syria",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé — déjà vu, façade, Ångström", "ÄÖÜ ß ẞ Ωmega λ ﬁ ligature",
    "日本語のテキスト、中文文本。한국어 텍스트", "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "a  b   c    d     e", "  leading and trailing  ", "line1\nline2\r\nline3\ttab\t\tdouble\n\n",
    "", " ", "\n", "\u00a0non-breaking\u2009thin\u200bzero-width",
    "text with </s> inside and <s> too", "<mask>", " <mask>", "x<mask>y", "x <mask> y", "x   <mask>", "x\t<mask>",
    "<pad><unk>", "a</s>b", "end </s>", "<s>", " </s> ", "<mask> at the start and at the end <mask>",
    "Don't you think it's   fine? I'm here . And you ? We've, they're !",
    "1234567890 3.14159 $100 50% #hashtag @user https://example.com/path?q=1&r=2",
    "Mixed CASE WoRdS and_snake_case and camelCaseWords", "\"quoted\" 'single' (parens) [brackets] {braces}",
]

PAIRS = [
    ("The quick brown fox jumps over the lazy dog near the river bank.", "What is it?"),
    ("Short one.", "A second sentence of middling length here."),
    ("Ünïcödé 日本 😀 text", "x"),
    ("a b", "c d e f g h"),
    ("Is this <mask>?", "It is </s> fine."),
]

WORDS = [["Hello", "world"], ["naïve", "日本", "😀"], ["a", "b", "c", "d"], ["UN", "Chief", "<mask>", "Syria"]]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return BartTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def ref_fast(tokenizer_dir):
    transformers = pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")
    return transformers.BartTokenizerFast.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def ref_slow(tokenizer_dir):
    transformers = pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")
    return transformers.BartTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def refs(ref_fast, ref_slow):
    return {"fast": ref_fast, "slow": ref_slow}


# ---------------------------------------------------------------- documented examples (no transformers needed)

@pytest.mark.parametrize("text", list(DOC_EXAMPLES))
def test_doc_examples(tok, text):
    assert tok(text)["input_ids"] == DOC_EXAMPLES[text]
    assert tok.encode(text) == DOC_EXAMPLES[text]
    assert tok(text).attention_mask == [1] * len(DOC_EXAMPLES[text])


def test_bundled_copy_matches_doc_examples():
    tok = BartTokenizer.from_pretrained(BartTokenizer.default_dir())
    assert BartTokenizer.default_dir() == bundled_tokenizer_dir()
    assert BartTokenizerFast.is_fast and not BartTokenizer.is_fast and not issubclass(BartTokenizer, BartTokenizerFast)
    assert [tok(t).input_ids for t in DOC_EXAMPLES] == list(DOC_EXAMPLES.values())


def test_special_tokens_and_sizes(tok):
    assert (tok.bos_token, tok.eos_token, tok.sep_token, tok.cls_token) == ("<s>", "</s>", "</s>", "<s>")
    assert (tok.unk_token, tok.pad_token, tok.mask_token) == ("<unk>", "<pad>", "<mask>")
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0, 1, 2, 3, 50264)
    assert (tok.cls_token_id, tok.sep_token_id) == (0, 2)
    assert tok.vocab_size == len(tok) == len(tok.get_vocab()) == 50265
    assert tok.padding_side == "right" and tok.model_max_length == 1024
    assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 50264]


def test_mask_strips_space_on_its_left(tok):
    assert tok("No <mask> in").input_ids == tok("No<mask> in").input_ids == tok("No   <mask> in").input_ids
    assert tok("x <mask> y", return_offsets_mapping=True).offset_mapping == [(0, 0), (0, 1), (2, 8), (9, 10),
                                                                              (0, 0)]


def test_special_token_layout(tok):
    assert tok.build_inputs_with_special_tokens([7, 8]) == [0, 7, 8, 2]
    assert tok.build_inputs_with_special_tokens([7, 8], [9]) == [0, 7, 8, 2, 2, 9, 2]
    assert tok.get_special_tokens_mask([7, 8]) == [1, 0, 0, 1]
    assert tok.get_special_tokens_mask([7, 8], [9]) == [1, 0, 0, 1, 1, 0, 1]
    assert tok.get_special_tokens_mask([0, 7, 2, 50264, 1], already_has_special_tokens=True) == [1, 0, 1, 1, 1]
    assert tok.create_token_type_ids_from_sequences([7, 8], [9]) == [0] * 7
    enc = tok("Hello", "world", return_special_tokens_mask=True, return_token_type_ids=True)
    assert enc.input_ids == tok.build_inputs_with_special_tokens(tok.encode("Hello", add_special_tokens=False),
                                                                 tok.encode("world", add_special_tokens=False))
    assert enc.special_tokens_mask == [1, 0, 1, 1, 0, 1] and enc.token_type_ids == [0] * 6


def test_tokens_and_ids(tok):
    assert tok.tokenize(" Hello world") == ["ĠHello", "Ġworld"]
    assert tok.convert_tokens_to_ids(["ĠHello", "<mask>", "not-a-token"]) == [20920, 50264, 3]
    assert tok.convert_tokens_to_ids("Ġworld") == 232
    assert tok.convert_ids_to_tokens([0, 20920, 2]) == ["<s>", "ĠHello", "</s>"]
    assert tok.convert_ids_to_tokens([0, 20920, 2], skip_special_tokens=True) == ["ĠHello"]
    assert tok.convert_ids_to_tokens(232) == "Ġworld"
    assert tok.convert_tokens_to_string(["ĠHello", "Ġw", "orld"]) == " Hello world"


def test_decode_defaults_and_array_inputs(tok):
    ids = tok("Hello world. It's here !").input_ids
    assert tok.decode(ids) == "<s>Hello world. It's here !</s>"
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world. It's here !"
    assert tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True) == "Hello world. It's here!"
    assert tok.decode(np.array(ids)) == tok.decode(ids)
    assert tok.decode(31414) == "Hello"
    batch = tok(["Hello world", "a"], padding=True, return_tensors="np").input_ids
    assert tok.batch_decode(batch, skip_special_tokens=True) == ["Hello world", "a"]
    assert tok.batch_decode(batch)[1] == "<s>a</s><pad>"


def test_batch_shapes_and_attribute_access(tok):
    single = tok("Hello world")
    assert single.input_ids == single["input_ids"] and isinstance(single.input_ids[0], int)
    enc = tok(["Hello world", "a", "UN Chief Says"], padding=True, return_tensors="np")
    assert enc.input_ids.shape == enc.attention_mask.shape == (3, 5) and enc.input_ids.dtype == np.int64
    np.testing.assert_array_equal(enc.input_ids[1], [0, 102, 2, 1, 1])
    np.testing.assert_array_equal(enc.attention_mask[1], [1, 1, 1, 0, 0])
    one = tok("Hello world", return_tensors="np", return_offsets_mapping=True)
    assert one.input_ids.shape == (1, 4) and one.offset_mapping.shape == (1, 4, 2)
    # as in the references: the slow class counts rows before padding them, the fast one after
    assert tok(["a", "b c"], padding=True, pad_to_multiple_of=8, return_length=True).length == [3, 4]
    fast = BartTokenizerFast.from_pretrained(BartTokenizer.default_dir())
    assert fast(["a", "b c"], padding=True, pad_to_multiple_of=8, return_length=True).length == [8, 8]
    with pytest.raises(AttributeError, match="no field 'token_type_ids'"):
        enc.token_type_ids  # noqa: B018
    tok.padding_side = "left"
    try:
        assert tok(["a", "b c"], padding=True).input_ids[0] == [1, 0, 102, 2]
    finally:
        tok.padding_side = "right"
    assert tok(["a", "b c"], padding=True).input_ids[0] == [0, 102, 2, 1]


def test_framework_tensors(tok):
    torch = pytest.importorskip("torch")
    enc = tok(["Hello world", "a"], padding=True, return_tensors="pt")
    assert enc.input_ids.dtype == torch.int64 and enc.input_ids.tolist()[0] == DOC_EXAMPLES["Hello world"]
    jnp = pytest.importorskip("jax.numpy")
    enc = tok(["Hello world", "a"], padding=True, return_tensors="jax")
    assert isinstance(enc.input_ids, jnp.ndarray) and enc.input_ids.tolist()[0] == DOC_EXAMPLES["Hello world"]


def test_framework_tensors_tf(tok):
    tf = pytest.importorskip("tensorflow")
    enc = tok(["Hello world", "a"], padding=True, return_tensors="tf")
    assert tf.is_tensor(enc.input_ids) and enc.input_ids.numpy().tolist()[0] == DOC_EXAMPLES["Hello world"]


def test_module_imports_no_framework():
    code = ("import sys, bart_core.tokenizer as t; tk = t.BartTokenizer.from_pretrained(t.bundled_tokenizer_dir()); "
            "tk(['a', 'b c'], padding=True, return_tensors='np'); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- equivalence with transformers

def test_corpus_matches_reference(tok, refs):
    ours = tok(CORPUS)
    for name, ref in refs.items():
        expected = ref(CORPUS)
        assert ours.input_ids == expected["input_ids"], name
        assert ours.attention_mask == expected["attention_mask"], name
    for text in CORPUS:
        single = tok(text)
        assert single.input_ids == refs["fast"](text)["input_ids"] == refs["slow"](text)["input_ids"], text
        assert tok.tokenize(text) == refs["fast"].tokenize(text), text
        if "<mask>" not in text:  # the slow class names the lstripped mask token "<mask>", the fast " <mask>"
            assert tok.tokenize(text) == refs["slow"].tokenize(text), text
        assert tok.encode(text, add_special_tokens=False) == refs["slow"].encode(text, add_special_tokens=False)
        for name, ref in refs.items():
            for skip in (False, True):
                for clean in (False, True, None):
                    kw = dict(skip_special_tokens=skip)
                    if clean is not None:
                        kw["clean_up_tokenization_spaces"] = clean
                    assert tok.decode(single.input_ids, **kw) == ref.decode(single.input_ids, **kw), (name, text, kw)
    assert tok.batch_decode(ours.input_ids) == refs["fast"].batch_decode(ours.input_ids)
    assert tok.convert_ids_to_tokens(ours.input_ids[2]) == refs["slow"].convert_ids_to_tokens(ours.input_ids[2])


def test_offsets_match_reference_fast(tok, ref_fast):
    for text in CORPUS:
        assert tok(text, return_offsets_mapping=True).offset_mapping == \
            ref_fast(text, return_offsets_mapping=True)["offset_mapping"], text
    ours = tok(CORPUS, padding=True, return_offsets_mapping=True, return_tensors="np")
    ref = ref_fast(CORPUS, padding=True, return_offsets_mapping=True, return_tensors="np")
    np.testing.assert_array_equal(ours.offset_mapping, ref["offset_mapping"])
    a, b = zip(*PAIRS)
    assert tok(list(a), list(b), return_offsets_mapping=True).offset_mapping == \
        ref_fast(list(a), list(b), return_offsets_mapping=True)["offset_mapping"]


@pytest.mark.parametrize("options", [
    dict(padding=True), dict(padding="longest"), dict(padding="max_length", max_length=40),
    dict(padding="max_length", max_length=12, truncation=True), dict(truncation=True, max_length=7),
    dict(max_length=9), dict(padding=True, pad_to_multiple_of=8), dict(add_special_tokens=False, padding=True),
    dict(padding=True, return_attention_mask=False),
])
def test_batch_options_match_reference(tok, refs, options):
    batch = CORPUS[:12]
    tensors = "np" if options.get("padding") else None  # unpadded rows are ragged: compare lists
    ours = tok(batch, return_tensors=tensors, **options)
    for name, ref in refs.items():
        expected = ref(batch, return_tensors=tensors, **options)
        assert sorted(ours) == sorted(expected), name
        for key in ours:
            if tensors:
                np.testing.assert_array_equal(ours[key], expected[key], err_msg=f"{name} {key}")
            else:
                assert ours[key] == expected[key], (name, key)
    if "max_length" in options and "padding" not in options:
        assert max(map(len, ours.input_ids)) == options["max_length"]


@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [16, 20, 40])
def test_pair_truncation_matches_reference(tok, refs, strategy, max_length):
    for a, b in PAIRS:
        try:
            expected = refs["fast"](a, b, truncation=strategy, max_length=max_length)["input_ids"]
        except Exception:  # noqa: BLE001 - the reference refuses; we must refuse too
            with pytest.raises(ValueError, match="Truncation error"):
                tok(a, b, truncation=strategy, max_length=max_length)
            continue
        ours = tok(a, b, truncation=strategy, max_length=max_length).input_ids
        assert ours == expected, (a, b)
        assert ours == refs["slow"](a, b, truncation=strategy, max_length=max_length)["input_ids"], (a, b)
        assert len(ours) <= max_length


def test_pair_batch_padding_matches_reference(tok, refs):
    a, b = (list(x) for x in zip(*PAIRS))
    ours = tok(a, b, padding=True, return_tensors="np")
    for name, ref in refs.items():
        expected = ref(a, b, padding=True, return_tensors="np")
        np.testing.assert_array_equal(ours.input_ids, expected["input_ids"], err_msg=name)
        np.testing.assert_array_equal(ours.attention_mask, expected["attention_mask"], err_msg=name)
    assert tok(a[0], b[0]).input_ids == refs["slow"](a[0], b[0])["input_ids"]


def test_longest_first_follows_fast_reference_where_slow_differs(tok, ref_fast, ref_slow):
    # On this tie the two reference classes cut different sides; we follow the fast one.
    a, b = "Short one.", "A much longer second sentence that keeps on going and going for a while."
    ours = tok(a, b, truncation=True, max_length=9).input_ids
    assert ours == ref_fast(a, b, truncation=True, max_length=9)["input_ids"] == [0, 34256, 65, 2, 2, 250, 203, 1181, 2]
    assert ours != ref_slow(a, b, truncation=True, max_length=9)["input_ids"]


def _prefix_rules_agree(text: str) -> bool:
    """With add_prefix_space the two reference classes differ on two points; we follow the fast one. The slow
    class adds no space before text that starts with any whitespace (e.g. "\\n", "\\u00a0"), and none before
    the text that follows a special token inside the input; the fast one adds both."""
    specials = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
    return bool(text) and not text[0].isspace() and not any(s in text for s in specials)


def test_add_prefix_space_matches_reference(tokenizer_dir):
    transformers = pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")
    tok = BartTokenizer.from_pretrained(tokenizer_dir, add_prefix_space=True)
    fast = transformers.BartTokenizerFast.from_pretrained(tokenizer_dir, add_prefix_space=True)
    slow = transformers.BartTokenizer.from_pretrained(tokenizer_dir, add_prefix_space=True)
    assert tok(CORPUS).input_ids == fast(CORPUS)["input_ids"]
    texts = [t for t in CORPUS if _prefix_rules_agree(t)]
    assert tok(texts).input_ids == slow(texts)["input_ids"]
    assert tok("Hello world").input_ids == DOC_EXAMPLES[" Hello world"]
    assert tok(texts, return_offsets_mapping=True).offset_mapping == fast(texts, return_offsets_mapping=True)[
        "offset_mapping"]
    ours = tok(WORDS, is_split_into_words=True, return_offsets_mapping=True)
    expected = fast(WORDS, is_split_into_words=True, return_offsets_mapping=True)
    assert ours.input_ids == expected["input_ids"] and ours.offset_mapping == expected["offset_mapping"]
    assert ours.word_ids(1) == expected.word_ids(1) == [None, 0, 1, 1, 1, 1, 1, 2, 2, None]
    assert ours.tokens(0) == expected.tokens(0)
    with pytest.raises(ValueError, match="tracked only with return_offsets_mapping"):
        tok(texts).word_ids(0)


def test_split_into_words_matches_reference(tok, ref_slow):
    ours = tok(WORDS, is_split_into_words=True, padding=True, return_tensors="np")
    expected = ref_slow(WORDS, is_split_into_words=True, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, expected["attention_mask"])
    assert tok(WORDS[0], is_split_into_words=True).input_ids == DOC_EXAMPLES[" Hello world"]
    assert tok(WORDS[0], WORDS[1], is_split_into_words=True).input_ids == \
        ref_slow(WORDS[0], WORDS[1], is_split_into_words=True)["input_ids"]
    assert tok("Hello world").input_ids == DOC_EXAMPLES["Hello world"]  # the plain path is untouched


# ---------------------------------------------------------------- save / load

def test_save_load_round_trip(tokenizer_dir, tmp_path):
    tok = BartTokenizerFast.from_pretrained(tokenizer_dir)
    written = tok.save_pretrained(tmp_path)
    names = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert {os.path.basename(p) for p in written} == names == set(os.listdir(tmp_path))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 1024 and config["added_tokens_decoder"]["50264"]["lstrip"] is True
    for source in ("tokenizer.json", "vocab+merges"):
        if source == "vocab+merges":
            os.remove(tmp_path / "tokenizer.json")
        loaded = BartTokenizer.from_pretrained(tmp_path)
        assert loaded(CORPUS).input_ids == tok(CORPUS).input_ids, source
        assert loaded.model_max_length == 1024 and len(loaded) == len(tok)


def test_saved_files_load_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers (the test oracle) is not installed")
    tok = BartTokenizer.from_pretrained(bundled_tokenizer_dir(), add_prefix_space=True, model_max_length=512)
    tok.save_pretrained(tmp_path)
    fast = transformers.BartTokenizerFast.from_pretrained(str(tmp_path))
    slow = transformers.BartTokenizer.from_pretrained(str(tmp_path))
    assert fast.model_max_length == slow.model_max_length == 512
    assert fast.add_prefix_space is True and slow.add_prefix_space is True
    assert fast.mask_token_id == 50264 and len(fast) == len(slow) == 50265
    texts = [t for t in CORPUS if _prefix_rules_agree(t)]
    second = ["Is it?"] * len(texts)
    ours = tok(texts, second, truncation=True, max_length=24, padding=True)
    for ref in (fast, slow):
        expected = ref(texts, second, truncation=True, max_length=24, padding=True)
        assert ours.input_ids == expected["input_ids"] and ours.attention_mask == expected["attention_mask"]
        assert tok.batch_decode(ours.input_ids, skip_special_tokens=True) == \
            ref.batch_decode(ours.input_ids, skip_special_tokens=True)


# ---------------------------------------------------------------- errors

def test_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="unknown padding strategy 'shortest'"):
        tok("a", padding="shortest")
    with pytest.raises(ValueError, match="unknown truncation strategy 'middle'"):
        tok("a", truncation="middle")
    assert tok(["a", "b"], padding="max_length").input_ids[0] == [0, 102, 2] + [1] * 1021  # model_max_length
    with pytest.raises(ValueError, match="token id 50265 is outside the vocabulary \\(size 50265"):
        tok.decode([0, 50265])
    with pytest.raises(ValueError, match="token id -1 is outside the vocabulary"):
        tok.batch_decode([[0], [-1]])
    with pytest.raises(ValueError, match="token id 99999 is outside"):
        tok.convert_ids_to_tokens(99999)
    with pytest.raises(ValueError, match="rows of different lengths"):
        tok(["a", "b c d"], return_tensors="np")
    with pytest.raises(ValueError, match="return_tensors must be one of"):
        tok("a", return_tensors="torch")
    with pytest.raises(ValueError, match="Second sequence not provided"):
        tok("a b c d e f", truncation="only_second", max_length=4)
    with pytest.raises(ValueError, match="text has 2 entries but text_pair has 1"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="must be a string"):
        tok(["a", 3])
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found: .*nowhere"):
        BartTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"missing {tmp_path / 'vocab.json'}"):
        BartTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found: .*merges.txt"):
        BartTokenizer(vocab_file=os.path.join(bundled_tokenizer_dir(), "vocab.json"),
                      merges_file=tmp_path / "merges.txt")


# ---------------------------------------------------------------- the reference's calling surface

SOURCES = ["The quick brown fox jumps over the lazy dog.", "Short.", "Ünïcödé 日本 😀 <mask> text", "a b c d e f g"]
TARGETS = ["A fox jumped.", "A much longer summary that goes on for a while, really.", "x", "Is it </s> fine?"]


def _assert_same(ours, expected, msg=""):
    """Same fields, same values, same shapes (ragged lists compared as lists)."""
    assert sorted(ours) == sorted(expected), msg
    for key in expected:
        assert _py(ours[key]) == _py(expected[key]), f"{msg} {key}"
        assert type(ours[key]).__module__.split(".")[0] == type(expected[key]).__module__.split(".")[0], key


def _py(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    return value.tolist() if hasattr(value, "tolist") else value


@pytest.mark.parametrize("options", [
    dict(), dict(padding=True, return_tensors="np"), dict(truncation=True, max_length=6),
    dict(padding="max_length", max_length=16, truncation=True, return_tensors="pt"),
    dict(padding=True, pad_to_multiple_of=8, padding_side="left", return_special_tokens_mask=True),
])
def test_text_target_matches_reference(tok, refs, options):
    for name, ref in refs.items():
        _assert_same(tok(SOURCES, text_target=TARGETS, **options), ref(SOURCES, text_target=TARGETS, **options),
                     name)
        _assert_same(tok(text_target=TARGETS, **options), ref(text_target=TARGETS, **options), name)
        _assert_same(tok(SOURCES[0], text_target=TARGETS[1], **options),
                     ref(SOURCES[0], text_target=TARGETS[1], **options), name)
    both = dict(options, truncation=options.get("truncation", False))
    _assert_same(tok(SOURCES, SOURCES[::-1], text_target=TARGETS, text_pair_target=TARGETS[::-1], **both),
                 refs["fast"](SOURCES, SOURCES[::-1], text_target=TARGETS, text_pair_target=TARGETS[::-1], **both))
    assert tok(SOURCES, text_target=TARGETS)["labels"][2] == tok(TARGETS[2]).input_ids
    with pytest.raises(ValueError, match="give text .* or text_target"):
        tok()
    with pytest.raises(ValueError, match="text_pair_target needs text_target"):
        tok("a", text_pair_target="b")


def test_prepare_seq2seq_batch_and_as_target_tokenizer(tok, tokenizer_dir):
    import warnings
    transformers = pytest.importorskip("transformers")
    # With its default "no limit" model_max_length the reference itself overflows here; give it BART's 1024.
    ref_fast = transformers.BartTokenizerFast.from_pretrained(tokenizer_dir, model_max_length=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kw in (dict(), dict(max_length=6, max_target_length=4), dict(max_length=8, padding="max_length")):
            ours = tok.prepare_seq2seq_batch(SOURCES, TARGETS, return_tensors="np", **kw)
            _assert_same(ours, ref_fast.prepare_seq2seq_batch(SOURCES, TARGETS, return_tensors="np", **kw), str(kw))
            assert ours["labels"].shape[0] == len(TARGETS)
        assert sorted(tok.prepare_seq2seq_batch(SOURCES)) == ["attention_mask", "input_ids"]
        with tok.as_target_tokenizer():
            inside = tok(TARGETS, padding=True)
        with ref_fast.as_target_tokenizer():
            expected = ref_fast(TARGETS, padding=True)
    _assert_same(inside, expected)
    assert not tok._in_target_context_manager


@pytest.mark.parametrize("kind", ["np", "pt", "tf", "jax"])
def test_encode_return_tensors(tok, ref_fast, kind, request):
    pytest.importorskip({"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}[kind])
    if kind == "tf":
        request.getfixturevalue("reference_tf_tensors")
    ours = tok.encode("Hello world", "again", return_tensors=kind)
    expected = ref_fast.encode("Hello world", "again", return_tensors=kind)
    assert tuple(ours.shape) == tuple(expected.shape) == (1, 7)
    assert _py(ours) == _py(expected) and str(ours.dtype).split(".")[-1] == str(expected.dtype).split(".")[-1]
    assert tok.encode("Hello world", max_length=3, truncation=True) == [0, 31414, 2]


def test_encode_plus_and_batch_encode_plus_match_reference(tok, refs, tokenizer_dir):
    kw = dict(return_special_tokens_mask=True, return_length=True)
    for name, ref in refs.items():
        mine = BartTokenizerFast.from_pretrained(tokenizer_dir) if name == "fast" else tok
        _assert_same(mine.encode_plus(*PAIRS[0], **kw), ref.encode_plus(*PAIRS[0], **kw), name)
        _assert_same(mine.batch_encode_plus(PAIRS, padding=True, **kw),
                     ref.batch_encode_plus(PAIRS, padding=True, **kw), name)
        _assert_same(mine.batch_encode_plus(CORPUS[:6]), ref.batch_encode_plus(CORPUS[:6]), name)
    _assert_same(tok.batch_encode_plus(WORDS, is_split_into_words=True),
                 refs["slow"].batch_encode_plus(WORDS, is_split_into_words=True))
    with pytest.raises(ValueError, match="encode_plus takes one text"):
        tok.encode_plus(["a", "b"])


@pytest.mark.parametrize("options", [
    dict(), dict(padding="max_length", max_length=24), dict(pad_to_multiple_of=8), dict(padding_side="left"),
    dict(padding=False), dict(return_attention_mask=False), dict(return_tensors="np"),
])
def test_pad_matches_reference(tok, refs, options):
    features = [tok(t, return_special_tokens_mask=True, return_token_type_ids=True) for t in CORPUS[:5]]
    for name, ref in refs.items():
        expected = ref.pad([dict(f) for f in features], **options)
        _assert_same(tok.pad([dict(f) for f in features], **options), expected, name)
        as_dict = {k: [f[k] for f in features] for k in features[0]}
        _assert_same(tok.pad(as_dict, **options), ref.pad(as_dict, **options), name)
        _assert_same(tok.pad(dict(features[1]), **options), ref.pad(dict(features[1]), **options), name)
    arrays = [{"input_ids": np.array(tok(t).input_ids)} for t in CORPUS[:3]]
    ours = tok.pad(arrays)
    assert isinstance(ours["input_ids"], np.ndarray)  # the inputs' framework comes back
    _assert_same(ours, refs["fast"].pad(arrays))
    with pytest.raises(ValueError, match="needs the field 'input_ids'"):
        tok.pad([{"labels": [1]}])


@pytest.mark.parametrize("options", [
    dict(), dict(truncation=True, max_length=9), dict(truncation="only_second", max_length=10),
    dict(truncation="only_first", max_length=12, return_overflowing_tokens=True, stride=2),
    dict(truncation="only_second", max_length=10, return_overflowing_tokens=True),
    dict(padding="max_length", max_length=30, return_special_tokens_mask=True, return_length=True),
    dict(add_special_tokens=False, return_token_type_ids=True), dict(return_tensors="np", prepend_batch_axis=True),
])
def test_prepare_for_model_matches_reference(tok, refs, options):
    for a, b in PAIRS[:4]:
        ids, pair = tok.encode(a, add_special_tokens=False), tok.encode(b, add_special_tokens=False)
        for name, ref in refs.items():
            for second in (None, pair):
                if second is None and options.get("truncation") == "only_second":
                    continue
                try:
                    expected = ref.prepare_for_model(ids, second, **options)
                except AssertionError:  # the fast reference cannot make this special-tokens mask; we can
                    continue
                except ValueError:  # refused by the reference: refused by us too
                    with pytest.raises(ValueError):
                        tok.prepare_for_model(ids, second, **options)
                    continue
                try:
                    ours = tok.prepare_for_model(ids, second, **options)
                except ValueError as error:  # the reference logs an error and leaves the ids too long
                    assert "cannot remove" in str(error)
                    assert len(expected["input_ids"]) > options["max_length"]
                    continue
                _assert_same(ours, expected, f"{name} {a!r}")
    with pytest.raises(ValueError, match="cannot remove 8 tokens: the second sequence has 2"):
        tok.prepare_for_model([5] * 10, [6, 7], truncation="only_second", max_length=8)


def test_prepare_for_model_follows_the_python_rule_on_ties(tok, ref_fast, ref_slow):
    # prepare_for_model (Python, in both references) and __call__ (Rust) cut a pair differently on this tie.
    a, b = "Short one.", "A much longer second sentence that keeps on going and going for a while."
    ids, pair = tok.encode(a, add_special_tokens=False), tok.encode(b, add_special_tokens=False)
    ours = tok.prepare_for_model(ids, pair, truncation=True, max_length=9)
    assert ours.input_ids == ref_fast.prepare_for_model(ids, pair, truncation=True, max_length=9)["input_ids"] \
        == ref_slow(a, b, truncation=True, max_length=9)["input_ids"]
    assert ours.input_ids != tok(a, b, truncation=True, max_length=9).input_ids


def test_add_tokens_and_special_tokens_match_reference(tokenizer_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import AddedToken
    ours, ref = BartTokenizerFast.from_pretrained(tokenizer_dir), transformers.BartTokenizerFast.from_pretrained(
        tokenizer_dir)
    for t in (ours, ref):
        assert t.add_tokens(["newword", AddedToken("<x>", lstrip=True), "Hello"]) == 3  # "Hello" counts, adds no id
        assert t.add_tokens("<q>", special_tokens=True) == 1
        assert t.add_special_tokens({"additional_special_tokens": ["<y>", "<z>"], "pad_token": "<pad2>"}) == 3
        assert t.add_special_tokens({"additional_special_tokens": ["<w>"]}, replace_additional_special_tokens=False) == 1
    assert len(ours) == len(ref) == 50265 + 7 and ours.vocab_size == ref.vocab_size == 50265
    assert ours.pad_token == ref.pad_token == "<pad2>" and ours.pad_token_id == ref.pad_token_id == 50270
    assert ours.additional_special_tokens == ref.additional_special_tokens == ["<y>", "<z>", "<w>"]
    assert ours.additional_special_tokens_ids == ref.additional_special_tokens_ids
    assert sorted(ours.all_special_tokens) == sorted(ref.all_special_tokens)
    assert ours.get_added_vocab() == ref.get_added_vocab()
    texts = ["a newword <x> b<y>c <q> Hello", "<z> newwords <pad2>", "short"]
    enc = ours(texts, padding=True, return_special_tokens_mask=True)
    _assert_same(enc, ref(texts, padding=True, return_special_tokens_mask=True))
    assert enc.input_ids[2][-1] == 50270  # padded with the new pad token
    for ids in enc.input_ids:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
        assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == \
            ref.get_special_tokens_mask(ids, already_has_special_tokens=True)
    ours.save_pretrained(tmp_path / "ours")
    for cls in (transformers.BartTokenizerFast, transformers.BartTokenizer):
        reloaded = cls.from_pretrained(tmp_path / "ours")
        assert reloaded(texts)["input_ids"][:1] == enc.input_ids[:1] and len(reloaded) == len(ours), cls
        assert reloaded.additional_special_tokens == ours.additional_special_tokens
    ref.save_pretrained(tmp_path / "ref")
    for cls in (BartTokenizerFast, BartTokenizer):
        back = cls.from_pretrained(tmp_path / "ref")
        assert back(texts, padding=True).input_ids == enc.input_ids and len(back) == len(ours), cls
    os.remove(tmp_path / "ref" / "tokenizer.json")  # vocab.json + merges.txt + the added tokens in the config
    assert BartTokenizer.from_pretrained(tmp_path / "ref")(texts, padding=True).input_ids == enc.input_ids


def test_special_token_setters_match_reference(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    ours, ref = BartTokenizer.from_pretrained(tokenizer_dir), transformers.BartTokenizer.from_pretrained(tokenizer_dir)
    for t in (ours, ref):
        t.bos_token_id = 3
        t.pad_token = "</s>"
        t.cls_token_id = 50264
    assert (ours.bos_token, ours.pad_token_id, ours.cls_token) == (ref.bos_token, ref.pad_token_id, ref.cls_token) \
        == ("<unk>", 2, "<mask>")
    assert ours("a b", "c", padding="max_length", max_length=9).input_ids == \
        ref("a b", "c", padding="max_length", max_length=9)["input_ids"] == [50264, 102, 741, 2, 2, 438, 2, 2, 2]
    with pytest.raises(ValueError, match="must be a string"):
        ours.eos_token = 5


def test_train_new_from_iterator_matches_reference(tok, ref_fast):
    from tokenizers import AddedToken
    corpus = [CORPUS[i:i + 5] for i in range(0, len(CORPUS), 5)] * 3
    kw = dict(vocab_size=400, new_special_tokens=["<extra>"], special_tokens_map={"<s>": "<bos>"})
    ours, ref = tok.train_new_from_iterator(corpus, **kw), ref_fast.train_new_from_iterator(corpus, **kw)
    assert type(ours) is type(tok) and ours.get_vocab() == ref.get_vocab() and len(ours) == len(ref) <= 400
    assert (ours.bos_token, ours.cls_token, ours.additional_special_tokens) == ("<bos>", "<bos>", ["<extra>"])
    texts = ["Hello world <mask> <extra>", "The lazy fox.", "日本語"]
    assert ours(texts).input_ids == ref(texts)["input_ids"]
    assert ours.batch_decode(ours(texts).input_ids) == ref.batch_decode(ref(texts)["input_ids"])
    assert isinstance(ours._special_tokens["mask_token"], AddedToken) and ours._special_tokens["mask_token"].lstrip


def test_init_kwargs_lengths_and_keywords(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from tokenizers import AddedToken
    kw = dict(model_max_length=512, use_fast=True, do_lower_case=False, verbose=False,
              additional_special_tokens=["<a1>", AddedToken("<a2>", lstrip=True)],
              mask_token=AddedToken("<mask>", lstrip=False, rstrip=False, normalized=True, special=True))
    ours = BartTokenizer.from_pretrained(tokenizer_dir, **kw)
    ref = transformers.BartTokenizerFast.from_pretrained(tokenizer_dir, **kw)
    assert type(ours) is BartTokenizerFast and ours.is_fast  # use_fast picks the class, as AutoTokenizer does
    assert type(BartTokenizerFast.from_pretrained(tokenizer_dir, use_fast=False)) is BartTokenizer
    for key in ("model_max_length", "use_fast", "do_lower_case", "verbose", "add_prefix_space", "errors",
                "trim_offsets"):
        assert ours.init_kwargs[key] == ref.init_kwargs[key], key
    assert ours.name_or_path == ref.name_or_path == tokenizer_dir and ours.verbose is False
    assert (ours.max_len_single_sentence, ours.max_len_sentences_pair) == \
        (ref.max_len_single_sentence, ref.max_len_sentences_pair) == (510, 508)
    assert ours.additional_special_tokens == ref.additional_special_tokens == ["<a1>", "<a2>"]
    texts = ["x <mask> y <a1>z <a2>", "No <mask> in"]
    assert ours(texts).input_ids == ref(texts)["input_ids"]
    assert ours("No <mask> in").input_ids != tok_default(tokenizer_dir)("No <mask> in").input_ids  # lstrip off
    with pytest.warns(UserWarning, match="do_lower_case=True .* changes nothing"):
        lower = BartTokenizer.from_pretrained(tokenizer_dir, do_lower_case=True)
    assert lower("Hello").input_ids == ref("Hello")["input_ids"] == [0, 31414, 2]


def tok_default(tokenizer_dir):
    return BartTokenizer.from_pretrained(tokenizer_dir)


def test_sides_are_validated(tokenizer_dir, tok):
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'up'"):
        BartTokenizer.from_pretrained(tokenizer_dir, padding_side="up")
    with pytest.raises(ValueError, match="truncation_side must be 'right' or 'left', got 'middle'"):
        tok.truncation_side = "middle"
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'top'"):
        tok(["a", "b c"], padding=True, padding_side="top")
    assert tok.truncation_side == "right" and tok.padding_side == "right"


def test_saved_files_are_the_reference_files(tmp_path, tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    source = tmp_path / "source"
    transformers.BartTokenizerFast.from_pretrained(tokenizer_dir, model_max_length=1024).save_pretrained(source)
    for ours_cls, ref_cls in ((BartTokenizer, transformers.BartTokenizer),
                              (BartTokenizerFast, transformers.BartTokenizerFast)):
        ours, ref = ours_cls.from_pretrained(source), ref_cls.from_pretrained(source)
        for t in (ours, ref):
            t.add_tokens(["newword"])
            t.add_special_tokens({"additional_special_tokens": ["<y>"]})
        a, b = tmp_path / f"ours-{ours_cls.__name__}", tmp_path / f"ref-{ours_cls.__name__}"
        written = ours.save_pretrained(a)
        ref.save_pretrained(b)
        assert sorted(os.path.basename(p) for p in written) == sorted(os.listdir(b)), ours_cls
        for name in os.listdir(b):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (ours_cls, name)


def test_huge_model_max_length_means_no_limit(tmp_path, tokenizer_dir, ref_fast):
    tok = BartTokenizer.from_pretrained(tokenizer_dir, model_max_length=1000000000000000019884624838656)
    long_text = "word " * 1500
    assert len(tok(long_text, truncation=True).input_ids) == len(ref_fast(long_text, truncation=True)["input_ids"]) \
        == 1503
    assert tok(["a", "b c"], padding="max_length").input_ids == ref_fast(["a", "b c"], padding="max_length")[
        "input_ids"] == [[0, 102, 2], [0, 428, 740, 2]]
    assert len(tok(long_text, truncation=True, max_length=10**40).input_ids) == 1503
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["model_max_length"] == int(1e30)
    assert BartTokenizer.from_pretrained(tmp_path).model_max_length == int(1e30)


def test_folder_with_only_tokenizer_json(tmp_path, tokenizer_dir, ref_fast):
    ref_fast.save_pretrained(tmp_path, legacy_format=False)
    assert not (tmp_path / "vocab.json").exists()
    os.remove(tmp_path / "tokenizer_config.json")
    os.remove(tmp_path / "special_tokens_map.json")
    assert os.listdir(tmp_path) == ["tokenizer.json"]
    for cls in (BartTokenizer, BartTokenizerFast):
        loaded = cls.from_pretrained(tmp_path)
        assert loaded(CORPUS).input_ids == ref_fast(CORPUS)["input_ids"] and loaded.mask_token_id == 50264
    BartTokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")  # vocab/merges from tokenizer.json
    assert BartTokenizer.from_pretrained(tmp_path / "again")(CORPUS).input_ids == ref_fast(CORPUS)["input_ids"]


@pytest.mark.parametrize("name, damage", [
    ("tokenizer.json", lambda s: s[: len(s) // 2]), ("vocab.json", lambda s: s[:-10]),
    ("vocab.json", lambda s: "[1, 2]"), ("merges.txt", lambda s: s.replace("\nĠ t\n", "\nĠ t x\n", 1)),
    ("merges.txt", lambda s: s.replace("\nĠ a\n", "\nĠ zzzz-not-in-vocab\n", 1)),
    ("tokenizer_config.json", lambda s: s[:-5]), ("special_tokens_map.json", lambda s: "{"),
])
def test_damaged_files_raise_one_clear_error(tmp_path, name, damage):
    from bart_core.tokenizer import TokenizerFileError
    BartTokenizerFast.from_pretrained(bundled_tokenizer_dir()).save_pretrained(tmp_path)
    if name in ("vocab.json", "merges.txt"):
        os.remove(tmp_path / "tokenizer.json")
    path = tmp_path / name
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=str(path)) as info:
        BartTokenizer.from_pretrained(tmp_path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_lone_surrogate_names_the_argument(tok):
    with pytest.raises(ValueError, match=r"text holds a lone surrogate '\\ud800' at character 1"):
        tok("a\ud800b")
    with pytest.raises(ValueError, match=r"text_pair\[1\] holds a lone surrogate '\\udcff'"):
        tok(["a", "b"], ["c", "d\udcff"])
    with pytest.raises(ValueError, match=r"text_target\[0\] holds a lone surrogate"):
        tok(["a"], text_target=["\ud83d"])
    with pytest.raises(ValueError, match=r"text holds a lone surrogate"):
        tok.tokenize("x\ud800")
    assert tok("a\U0001F600").input_ids == tok("a😀").input_ids  # a proper pair is fine


def test_sequence_ids_word_ids_and_to_device(tok, ref_fast):
    a, b = zip(*PAIRS)
    ours, expected = tok(list(a), list(b), padding=True), ref_fast(list(a), list(b), padding=True)
    for i in range(len(a)):
        assert ours.sequence_ids(i) == expected.sequence_ids(i)
    assert set(ours.sequence_ids(0)) == {None, 0, 1} and ours.n_sequences == 2
    torch = pytest.importorskip("torch")
    enc = tok(list(a), padding=True, return_tensors="pt")
    moved = enc.to("meta")
    assert moved is enc and enc.input_ids.device.type == "meta" and enc.attention_mask.device.type == "meta"
    assert tok(list(a), padding=True, return_tensors="pt").to(torch.device("cpu")).input_ids.device.type == "cpu"


# ---------------------------------------------------------------- property test against the fast reference

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(CORPUS)


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(sources=st.lists(_TEXT, min_size=1, max_size=3), data=st.data(),
                  strategy=st.sampled_from([True, "longest_first", "only_first", "only_second"]),
                  max_length=st.integers(6, 24), padding=st.sampled_from([True, "max_length", False]),
                  padding_side=st.sampled_from(["right", "left"]), truncation_side=st.sampled_from(["right", "left"]))
def test_random_text_matches_reference_fast(fast_pair, sources, data, strategy, max_length, padding, padding_side,
                                             truncation_side):
    ours, ref = fast_pair
    pairs = data.draw(st.lists(_TEXT, min_size=len(sources), max_size=len(sources)))
    targets = data.draw(st.lists(_TEXT, min_size=len(sources), max_size=len(sources)))
    for t in (ours, ref):
        t.truncation_side = truncation_side
    kw = dict(truncation=strategy, max_length=max_length, padding=padding, padding_side=padding_side,
              return_special_tokens_mask=True)
    try:
        expected = ref(sources, pairs, text_target=targets, text_pair_target=pairs, **kw)
    except Exception:  # noqa: BLE001 - the reference cannot truncate this way: neither can we
        with pytest.raises(ValueError, match="Truncation error"):
            ours(sources, pairs, text_target=targets, text_pair_target=pairs, **kw)
        return
    got = ours(sources, pairs, text_target=targets, text_pair_target=pairs, **kw)
    _assert_same(got, expected)
    for i in range(len(sources)):
        assert got.sequence_ids(i) == expected.sequence_ids(i)
    single = dict(kw, truncation=True)
    _assert_same(ours(text_target=targets, **single), ref(text_target=targets, **single))
    assert ours.batch_decode(got.input_ids, skip_special_tokens=True) == \
        ref.batch_decode(got.input_ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def fast_pair(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return BartTokenizerFast.from_pretrained(tokenizer_dir), transformers.BartTokenizerFast.from_pretrained(
        tokenizer_dir)
