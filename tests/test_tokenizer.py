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
    assert BartTokenizerFast is BartTokenizer
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
    assert tok(["a", "b c"], padding=True, pad_to_multiple_of=8, return_length=True).length == [8, 8]
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

def test_save_load_round_trip(tok, tmp_path):
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
    with pytest.raises(ValueError, match="padding='max_length' needs max_length"):
        tok(["a", "b"], padding="max_length")
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
