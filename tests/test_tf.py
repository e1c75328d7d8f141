"""TensorFlow (Keras 3) backend against transformers 4.57.6: PyTorch reference numbers and generate, the reference
TF classes' tf_model.h5 (run in a subprocess with tf-keras), Keras training, XLA, export, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import bart_tf  # noqa: E402
from bart_core.formats.tf_h5 import h5_table, read_tf_h5  # noqa: E402
from tests.conftest import (  # noqa: E402
    HEADS,
    TINY_CONFIGS,
    load_reference,
    randomize_biases,
    seeded_inputs,
    tiny_config,
)

ATOL = 1e-5


def reference_model(head: str, config: str = "gelu", seed: int = 0):
    """The in-memory model ``make_reference_checkpoint`` saves (transformers re-ties untied embeddings wrongly on
    reload, so we compare with the model as built, not as reloaded)."""
    cfg = transformers.BartConfig(**TINY_CONFIGS[config])
    cfg._attn_implementation = "eager"
    if head == "causal_lm":
        cfg.is_decoder, cfg.is_encoder_decoder = True, False
    torch.manual_seed(seed)
    return randomize_biases(getattr(transformers, HEADS[head])(cfg).eval(), seed)


# ----------------------------------------------------------------------------------------- numbers
def test_cached_decoding_equals_full_pass(reference_checkpoint):
    model = bart_tf.BartForConditionalGeneration.from_pretrained(reference_checkpoint())
    inputs = seeded_inputs(tiny_config())
    full = model(**inputs, use_cache=False).logits.numpy()
    dec = inputs["decoder_input_ids"]
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], decoder_input_ids=dec[:, :3],
                use_cache=True)
    steps = [out.logits.numpy()]
    encoder = (out.encoder_last_hidden_state,)
    for t in range(3, dec.shape[1]):
        out = model(encoder_outputs=encoder, attention_mask=inputs["attention_mask"], decoder_input_ids=dec[:, t:t + 1],
                    past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=ATOL)


# ----------------------------------------------------------------------------------------- generation
XLA_CASES = {
    "greedy_processors": dict(max_length=15, min_length=8, no_repeat_ngram_size=2, repetition_penalty=1.3,
                              forced_bos_token_id=0),
    "beam_processors_never": dict(num_beams=3, max_length=14, no_repeat_ngram_size=3, min_length=5,
                                  repetition_penalty=1.2, forced_bos_token_id=0, early_stopping="never",
                                  length_penalty=0.5),
}


@pytest.fixture(scope="module")
def generation_pair(reference_checkpoint):
    path = reference_checkpoint()
    return bart_tf.BartForConditionalGeneration.from_pretrained(path), \
        transformers.BartForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def small_model():
    """One layer each side: XLA compile time grows with the graph; these tests compare our own paths."""
    keras.utils.set_random_seed(0)
    return bart_tf.BartForConditionalGeneration(tiny_config(encoder_layers=1, decoder_layers=1, init_std=0.3))


@pytest.mark.parametrize("case", ["greedy_processors", "beam_processors_never"])
def test_xla_generate_equals_eager(small_model, case):
    ours = small_model
    inputs = seeded_inputs(tiny_config())
    eager = ours.generate(inputs["input_ids"], inputs["attention_mask"], **XLA_CASES[case]).numpy()
    xla = ours.generate(inputs["input_ids"], inputs["attention_mask"], jit_compile=True,
                        **XLA_CASES[case]).numpy()
    np.testing.assert_array_equal(xla, eager)
    for mode in (dict(run_eagerly=True), dict(jit_compile=False)):  # op by op; the whole loop as a graph
        other = ours.generate(inputs["input_ids"], inputs["attention_mask"], **mode, **XLA_CASES[case]).numpy()
        np.testing.assert_array_equal(other, eager)
    # a user's own tf.function(jit_compile=True) gets the uncropped buffer; its prefix is the same result
    fn = tf.function(lambda ids, mask: ours.generate(ids, mask, **XLA_CASES[case]), jit_compile=True)
    padded = fn(tf.constant(inputs["input_ids"]), tf.constant(inputs["attention_mask"])).numpy()
    np.testing.assert_array_equal(padded[:, :eager.shape[1]], eager)
    assert (padded[:, eager.shape[1]:] == 1).all()


def test_sampling_is_seeded_and_respects_top_k(generation_pair):
    ours, _ = generation_pair
    inputs = seeded_inputs(tiny_config())
    options = dict(do_sample=True, top_k=1, max_new_tokens=8, seed=3)
    greedy = ours.generate(inputs["input_ids"], inputs["attention_mask"], max_new_tokens=8).numpy()
    np.testing.assert_array_equal(ours.generate(inputs["input_ids"], inputs["attention_mask"], **options).numpy(),
                                  greedy)
    options = dict(do_sample=True, top_p=0.9, temperature=0.7, max_new_tokens=8, seed=5, num_return_sequences=2)
    a = ours.generate(inputs["input_ids"], inputs["attention_mask"], **options).numpy()
    b = ours.generate(inputs["input_ids"], inputs["attention_mask"], **options).numpy()
    assert a.shape[0] == 6
    np.testing.assert_array_equal(a, b)


CAUSAL_PROMPT = np.array([[0, 5, 9, 11], [0, 7, 8, 12]], np.int32)
CAUSAL_CASES = {
    "greedy": dict(max_new_tokens=7, no_repeat_ngram_size=2, repetition_penalty=1.3),
    "beam": dict(num_beams=3, max_length=12, min_length=9, length_penalty=0.5, num_return_sequences=2),
}


@pytest.fixture(scope="module")
def small_causal_lm():
    keras.utils.set_random_seed(0)
    return bart_tf.BartForCausalLM(tiny_config(decoder_layers=1, init_std=0.3))


@pytest.mark.parametrize("case", list(CAUSAL_CASES))
def test_causal_lm_generate_modes_agree(small_causal_lm, case):
    """Prompt continuation: eager (step graph), op by op, whole-loop graph and XLA give the same tokens."""
    ours, options = small_causal_lm, CAUSAL_CASES[case]
    eager = ours.generate(CAUSAL_PROMPT, **options).numpy()
    rows = 2 * options.get("num_return_sequences", 1)
    assert eager.shape[0] == rows and eager.shape[1] > CAUSAL_PROMPT.shape[1]
    np.testing.assert_array_equal(eager[:, :4], np.repeat(CAUSAL_PROMPT, rows // 2, axis=0))
    for mode in (dict(run_eagerly=True), dict(jit_compile=False), dict(jit_compile=True)):
        np.testing.assert_array_equal(ours.generate(CAUSAL_PROMPT, **mode, **options).numpy(), eager)
    fn = tf.function(lambda ids: ours.generate(ids, **options), jit_compile=True)  # uncropped buffer
    padded = fn(tf.constant(CAUSAL_PROMPT)).numpy()
    np.testing.assert_array_equal(padded[:, :eager.shape[1]], eager)


def test_causal_lm_generate_scores_match_reference(reference_checkpoint):
    path = reference_checkpoint("causal_lm", "gelu", seed=1, init_std=0.3)
    options = dict(num_beams=3, max_new_tokens=6, return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        ref = load_reference("causal_lm", path, eager=False).generate(torch.from_numpy(CAUSAL_PROMPT).long(),
                                                                       **options)
    ours = bart_tf.BartForCausalLM.from_pretrained(path).generate(CAUSAL_PROMPT, **options)
    assert ours.sequences.numpy().tolist() == ref.sequences.tolist()
    np.testing.assert_allclose(ours.sequences_scores.numpy(), ref.sequences_scores.numpy(), atol=ATOL, rtol=0)
    assert len(ours.scores) == len(ref.scores)
    for a, b in zip(ours.scores, ref.scores):
        a, b = a.numpy(), b.numpy()
        assert np.array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(a[np.isfinite(b)], b[np.isfinite(b)], atol=ATOL, rtol=0)


def test_causal_lm_generate_refuses_padded_prompts(small_causal_lm):
    with pytest.raises(ValueError, match="padded prompts"):
        small_causal_lm.generate(CAUSAL_PROMPT, np.array([[1, 1, 1, 1], [0, 1, 1, 1]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="padded prompts"):  # pad_token_id in the prompt, no mask: inferred
        small_causal_lm.generate(np.array([[1, 1, 5, 9]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="leaves no room after the 4 prompt tokens"):
        small_causal_lm.generate(CAUSAL_PROMPT, max_length=4)


def test_export_generate_round_trip(small_model, tmp_path):
    from bart_tf.export import export_generate
    ours = small_model
    inputs = seeded_inputs(tiny_config())
    options = dict(num_beams=2, max_new_tokens=6, no_repeat_ngram_size=2)
    expected = ours.generate(inputs["input_ids"], inputs["attention_mask"], **options).numpy()
    export_generate(ours, tmp_path / "saved", **options)
    np.save(tmp_path / "ids.npy", inputs["input_ids"])
    np.save(tmp_path / "mask.npy", inputs["attention_mask"])
    code = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(tmp_path / 'saved')!r}).signatures["serving_default"]
        out = serve(input_ids=tf.constant(np.load({str(tmp_path / 'ids.npy')!r}), tf.int32),
                    attention_mask=tf.constant(np.load({str(tmp_path / 'mask.npy')!r}), tf.int32))
        assert not any(m.startswith(("bart_tf", "bart_core", "transformers")) for m in sys.modules)
        np.save({str(tmp_path / 'out.npy')!r}, out["sequences"].numpy())
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


# ----------------------------------------------------------------------------------------- bad input
def test_out_of_range_ids_raise_in_eager(generation_pair):
    ours, _ = generation_pair
    inputs = seeded_inputs(tiny_config())
    bad = inputs["input_ids"].copy()
    bad[1, 2] = 99
    with pytest.raises(ValueError, match=r"token id 99 at position \(1, 2\)"):
        ours(input_ids=bad, attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(input_ids=inputs["input_ids"], decoder_input_ids=-inputs["decoder_input_ids"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.generate(bad, max_new_tokens=3)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.generate(inputs["input_ids"], max_length=100)


# ----------------------------------------------------------------------------------------- checkpoints
TF_REFERENCE_SCRIPT = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["USE_TF"] = "1"  # other test modules turn transformers' TF classes off in this process tree
import numpy as np, tensorflow as tf, transformers
job = json.loads(sys.argv[1])
ids, mask = np.load(job["ids"]), np.load(job["mask"])
out = {}
for name, (cls, src, dst) in job["convert"].items():   # reference PT checkpoint -> reference tf_model.h5
    model = getattr(transformers, cls).from_pretrained(src, from_pt=True)
    model.save_pretrained(dst)
    result = model(input_ids=ids, attention_mask=mask)
    out[name] = (result.logits if hasattr(result, "logits") else result.last_hidden_state).numpy()
for name, (cls, src) in job["load"].items():            # our tf_model.h5 -> reference TF class
    model, info = getattr(transformers, cls).from_pretrained(src, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    out[name] = model(input_ids=ids, attention_mask=mask).logits.numpy()
np.savez(job["out"], **out)
"""


@pytest.fixture(scope="module")
def tf_reference_run(reference_checkpoint, tmp_path_factory):
    """One tf-keras subprocess: the reference TF classes write tf_model.h5 files (from the PyTorch reference
    checkpoints) and load the tf_model.h5 we write."""
    root = tmp_path_factory.mktemp("tf-reference")
    inputs = seeded_inputs(tiny_config())
    np.save(root / "ids.npy", inputs["input_ids"].astype(np.int32))
    np.save(root / "mask.npy", inputs["attention_mask"].astype(np.int32))
    ours = bart_tf.BartForConditionalGeneration.from_pretrained(reference_checkpoint())
    ours.save_pretrained(root / "ours")  # the reference TF classes' default: tf_model.h5 only
    assert "model.safetensors" not in os.listdir(root / "ours")
    convert = {head: (f"TF{HEADS[head]}", reference_checkpoint(head), str(root / f"ref-{head}"))
               for head in ("conditional_generation", "base", "sequence_classification")}
    job = {"ids": str(root / "ids.npy"), "mask": str(root / "mask.npy"), "out": str(root / "out.npz"),
           "convert": convert, "load": {"ours": ("TFBartForConditionalGeneration", str(root / "ours"))}}
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", TF_REFERENCE_SCRIPT, json.dumps(job)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return dict(np.load(root / "out.npz")), convert, inputs


@pytest.mark.parametrize("head", ["conditional_generation", "base", "sequence_classification"])
def test_reads_reference_tf_model_h5(tf_reference_run, head):
    results, convert, inputs = tf_reference_run
    path = convert[head][2]
    assert os.listdir(path) and "tf_model.h5" in os.listdir(path)
    ours = getattr(bart_tf, HEADS[head]).from_pretrained(path)
    out = ours(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    got = out.last_hidden_state if head == "base" else out.logits
    np.testing.assert_allclose(np.asarray(got), results[head], atol=ATOL)


def test_our_tf_model_h5_loads_in_reference(tf_reference_run, reference_checkpoint):
    results, _, inputs = tf_reference_run
    ref = reference_model("conditional_generation")
    with torch.no_grad():
        expected = ref(input_ids=torch.tensor(inputs["input_ids"]),
                       attention_mask=torch.tensor(inputs["attention_mask"])).logits.numpy()
    np.testing.assert_allclose(results["ours"], expected, atol=ATOL)


@pytest.mark.parametrize("head", list(HEADS))
def test_tf_h5_layout_round_trip(reference_checkpoint, tmp_path, head):
    model = getattr(bart_tf, HEADS[head]).from_pretrained(reference_checkpoint(head))
    model.save_pretrained(tmp_path)
    state = model.numpy_state_dict()
    back = read_tf_h5(tmp_path / "tf_model.h5")
    prefix = "model." if head == "base" else ""
    assert set(back) == {prefix + k for k in state}
    for k, v in state.items():
        np.testing.assert_array_equal(back[prefix + k], v)
    assert len(h5_table(model.config, head)) == len(state)
    assert "model.safetensors" not in os.listdir(tmp_path)  # the h5 alone reloads
    again = getattr(bart_tf, HEADS[head]).from_pretrained(tmp_path)
    for k, v in again.numpy_state_dict().items():
        np.testing.assert_array_equal(v, state[k])


def test_reads_pytorch_bin_and_reports_missing_head(reference_checkpoint, tmp_path):
    from tests.conftest import make_reference_checkpoint
    path = make_reference_checkpoint(tmp_path / "bin", safe_serialization=False)
    assert os.path.exists(os.path.join(path, "pytorch_model.bin"))
    a = bart_tf.BartForConditionalGeneration.from_pretrained(path).numpy_state_dict()
    b = bart_tf.BartForConditionalGeneration.from_pretrained(reference_checkpoint()).numpy_state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.warns(UserWarning, match="classification_head"):
        bart_tf.BartForSequenceClassification.from_pretrained(reference_checkpoint())


# ----------------------------------------------------------------------------------------- training
def _lm_dataset(config, n=16):
    inputs = seeded_inputs(config, batch=n, src_len=9, tgt_len=9)
    labels = inputs["input_ids"].copy()
    labels[inputs["attention_mask"] == 0] = -100
    return tf.data.Dataset.from_tensor_slices({"input_ids": inputs["input_ids"],
                                               "attention_mask": inputs["attention_mask"],
                                               "labels": labels}).batch(8)


TRAIN_CONFIG = dict(encoder_layers=1, decoder_layers=1)  # tracing the train step dominates; keep it small


def test_fit_lowers_loss_with_jit_compile():
    config = tiny_config(**TRAIN_CONFIG)
    keras.utils.set_random_seed(0)
    model = bart_tf.BartForConditionalGeneration(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    data = _lm_dataset(config)
    history = model.fit(data, epochs=5, verbose=0, shuffle=False).history["loss"]
    assert history[-1] < 0.85 * history[0]
    assert model.evaluate(data, verbose=0) < history[0]
    assert model.predict(data, verbose=0)["logits"].shape == (16, 9, config.vocab_size)


def test_fit_question_answering_and_mixed_bfloat16():
    config = tiny_config(**TRAIN_CONFIG)
    inputs = seeded_inputs(config, batch=16)
    for cls, extra in [(bart_tf.BartForQuestionAnswering, dict(start_positions=np.full(16, 1),
                                                                end_positions=np.full(16, 3)))]:
        keras.utils.set_random_seed(0)
        model = cls(config)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        data = tf.data.Dataset.from_tensor_slices({"input_ids": inputs["input_ids"],
                                                   "attention_mask": inputs["attention_mask"], **extra}).batch(8)
        history = model.fit(data, epochs=3, verbose=0, shuffle=False).history["loss"]
        assert history[-1] < history[0], cls.__name__
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = bart_tf.BartForConditionalGeneration(config)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = model.fit(_lm_dataset(config), epochs=2, verbose=0, shuffle=False).history["loss"]
        assert np.isfinite(history).all() and history[-1] < history[0]
        assert model.model.shared.embeddings.dtype == "float32"
        assert model.generate(inputs["input_ids"][:2], max_new_tokens=4).shape[0] == 2
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_save_load_round_trip_and_random_init_is_seeded(tmp_path):
    config = tiny_config("silu_untied")
    keras.utils.set_random_seed(1)
    a = bart_tf.BartForConditionalGeneration(config)
    keras.utils.set_random_seed(1)
    b = bart_tf.BartForConditionalGeneration(config)
    sa, sb = a.numpy_state_dict(), b.numpy_state_dict()
    assert set(sa) == {s.name for s in __import__("bart_core").param_table(config) if s.stored}
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert (sa["model.shared.weight"][config.pad_token_id] == 0).all()
    a.save_pretrained(tmp_path)
    c = bart_tf.BartForConditionalGeneration.from_pretrained(tmp_path)
    inputs = seeded_inputs(config)
    np.testing.assert_allclose(c(**inputs).logits.numpy(), a(**inputs).logits.numpy(), atol=0)
