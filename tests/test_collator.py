"""DataCollatorForSeq2Seq against transformers 4.57.6 (the test oracle) on the bart-base vocabulary, in each
return_tensors; its use as a torch collate_fn, in a JAX loop, and through bart_tf.data.prepare_tf_dataset."""

from __future__ import annotations

import numpy as np
import pytest

from bart_core import BartConfig, DataCollatorForSeq2Seq
from bart_core.tokenizer import BartTokenizer, BartTokenizerFast

SOURCES = ["The quick brown fox jumps over the lazy dog.", "Short.", "Ünïcödé 日本 😀 <mask> text", "a b c d e"]
TARGETS = ["A fox jumped.", "A much longer summary that goes on for a while, really.", "x", "Is it fine?"]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return BartTokenizerFast.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def ref_tok(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BartTokenizerFast.from_pretrained(tokenizer_dir, model_max_length=1024)


@pytest.fixture(scope="module")
def ref_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(vocab_size=50265, d_model=8, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=8,
                                     decoder_ffn_dim=8, max_position_embeddings=64)
    return transformers.BartForConditionalGeneration(config)


def features(tok, label_key="labels"):
    enc = [tok(s, text_target=t) for s, t in zip(SOURCES, TARGETS)]
    return [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"], label_key: e["labels"]} for e in enc]


def _np(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _assert_batches_equal(ours: dict, expected: dict, kind: str):
    expected = {k: v for k, v in expected.items() if v is not None}  # the reference puts labels=None
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(_np(ours[key]), _np(value), err_msg=f"{kind} {key}")
        if kind != "jax" and (kind == "pt" or key != "decoder_input_ids"):  # framework and int type as the reference
            assert type(ours[key]).__module__.split(".")[0] == type(value).__module__.split(".")[0], key
            assert str(ours[key].dtype).split(".")[-1] == str(value.dtype).split(".")[-1], (kind, key)


@pytest.mark.parametrize("kind", ["np", "pt", "tf", "jax"])
@pytest.mark.parametrize("options", [
    dict(), dict(pad_to_multiple_of=8), dict(padding="max_length", max_length=24), dict(padding="longest"),
    dict(label_pad_token_id=-1, pad_to_multiple_of=3),
])
def test_collator_matches_reference(tok, ref_tok, ref_model, kind, options, request):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip({"np": "numpy", "pt": "torch", "tf": "tensorflow", "jax": "jax"}[kind])
    if kind == "tf":
        request.getfixturevalue("reference_tf_tensors")
    ref_kind = "np" if kind == "jax" else kind  # the reference's jax labels are numpy; compare values
    for model in (None, "model"):
        ref = transformers.DataCollatorForSeq2Seq(ref_tok, return_tensors=ref_kind, **options)
        ours = DataCollatorForSeq2Seq(tok, model=BartConfig() if model else None, return_tensors=kind, **options)
        expected = ref(features(ref_tok))
        if model:  # the reference model's shift works on torch tensors: take it from the "pt" collator
            with_model = transformers.DataCollatorForSeq2Seq(ref_tok, model=ref_model, return_tensors="pt", **options)
            shifted = with_model(features(ref_tok))["decoder_input_ids"]
            expected["decoder_input_ids"] = shifted if kind == "pt" else shifted.numpy()
        got = ours(features(tok))
        _assert_batches_equal(got, expected, kind)
        labels = _np(got["labels"])
        assert (labels == options.get("label_pad_token_id", -100)).any() and labels.shape[0] == 4
        if model:
            dec = _np(got["decoder_input_ids"])
            assert (dec[:, 0] == 2).all() and (dec[:, 1:] == np.where(labels[:, :-1] == -100, 1, labels[:, :-1])).all()
    if kind == "jax":
        import jax
        assert all(isinstance(v, jax.Array) for v in got.values())


def test_collator_label_key_left_padding_and_arrays(tok, ref_tok, ref_model):
    transformers = pytest.importorskip("transformers")
    for t in (tok, ref_tok):
        t.padding_side = "left"
    try:
        for key in ("label", "labels"):
            as_arrays = [{k: np.asarray(v) for k, v in f.items()} for f in features(tok, key)]
            ref = transformers.DataCollatorForSeq2Seq(ref_tok, model=ref_model, return_tensors="pt")
            expected = ref([{k: np.asarray(v) for k, v in f.items()} for f in features(ref_tok, key)])
            got = DataCollatorForSeq2Seq(tok, model=BartConfig(), return_tensors="pt")(as_arrays)
            _assert_batches_equal(got, expected, "pt")
            assert got["labels"][2, 0] == -100 and got["input_ids"][1, 0] == tok.pad_token_id  # padded on the left
    finally:
        for t in (tok, ref_tok):
            t.padding_side = "right"
    without = DataCollatorForSeq2Seq(tok, return_tensors="np")([{"input_ids": [0, 5, 2]}, {"input_ids": [0, 2]}])
    assert sorted(without) == ["attention_mask", "input_ids"] and without["input_ids"].tolist()[1] == [0, 2, 1]
    with pytest.raises(ValueError, match="different lengths"):
        DataCollatorForSeq2Seq(tok, padding=False, return_tensors="np")(features(tok)[:2])


def test_collator_imports_frameworks_lazily():
    import os
    import subprocess
    import sys
    code = ("import sys; from bart_core import DataCollatorForSeq2Seq; from bart_core.tokenizer import BartTokenizer;"
            "t = BartTokenizer.from_pretrained(BartTokenizer.default_dir());"
            "b = DataCollatorForSeq2Seq(t, return_tensors='np')([{'input_ids': [0, 2], 'labels': [5]}]);"
            "assert b['labels'].tolist() == [[5]];"
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


def test_torch_dataloader_and_jax_loop(tokenizer_dir):
    torch = pytest.importorskip("torch")
    tok = BartTokenizer.from_pretrained(tokenizer_dir)
    collator = DataCollatorForSeq2Seq(tok, model=BartConfig(), pad_to_multiple_of=4)
    loader = torch.utils.data.DataLoader(features(tok), batch_size=3, collate_fn=collator)
    batches = list(loader)
    assert [b["input_ids"].shape[0] for b in batches] == [3, 1]
    assert all(b["labels"].dtype == torch.int64 and b["labels"].shape[1] % 4 == 0 for b in batches)
    assert batches[0]["decoder_input_ids"].shape == batches[0]["labels"].shape
    jax = pytest.importorskip("jax")
    collator = DataCollatorForSeq2Seq(tok, model=BartConfig(), return_tensors="jax")

    @jax.jit
    def real_tokens(batch):  # counts label tokens the loss would see
        return (batch["labels"] != -100).sum()

    total = sum(int(real_tokens(collator(features(tok)[i:i + 2]))) for i in (0, 2))
    assert total == sum(len(tok(text_target=t).input_ids) for t in TARGETS)


def test_prepare_tf_dataset_feeds_model_fit(tokenizer_dir):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import bart_tf
    from tests.conftest import tiny_config
    tok = BartTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_config()
    rng = np.random.default_rng(0)
    examples = [{"input_ids": [0, *rng.integers(3, 99, size=n).tolist(), 2],
                 "labels": [0, *rng.integers(3, 99, size=n // 2 + 1).tolist(), 2]} for n in range(3, 13)]
    data = bart_tf.prepare_tf_dataset(examples, batch_size=4, tokenizer=tok, model=config, seed=0)
    assert data.cardinality().numpy() == 3
    first, second = [[b["input_ids"].numpy()[:, 1].tolist() for b in data] for _ in range(2)]
    assert first != second  # reshuffled each epoch
    assert sorted(sum(first, [])) == sorted(e["input_ids"][1] for e in examples)  # every example once
    batch = next(iter(data))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    ids, mask, labels = batch["input_ids"].numpy(), batch["attention_mask"].numpy(), batch["labels"].numpy()
    assert ((ids == tok.pad_token_id) == (mask == 0)).all() and (labels == -100).any()
    fixed = bart_tf.prepare_tf_dataset(examples, batch_size=4, tokenizer=tok, shuffle=False, drop_remainder=True,
                                       label_cols=["labels"])
    x, y = next(iter(fixed))
    assert fixed.cardinality().numpy() == 2 and "labels" not in x and y.shape[0] == 4
    # fixed shapes (padding="max_length") keep the compiled train step to one trace
    collate = DataCollatorForSeq2Seq(tok, model=config, padding="max_length", max_length=16, return_tensors="np")
    fit_data = bart_tf.prepare_tf_dataset(examples, batch_size=5, collate_fn=collate, seed=1)
    keras.utils.set_random_seed(0)
    model = bart_tf.BartForConditionalGeneration(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)  # tracing the step costs ~40 s on CI
    history = model.fit(fit_data, epochs=3, verbose=0, shuffle=False).history["loss"]
    assert np.isfinite(history).all() and history[-1] < history[0]
    assert tf.is_tensor(batch["labels"])
