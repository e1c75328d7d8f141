"""Flax backend against transformers 4.57.6 (PyTorch classes as the numerical oracle, Flax classes for the file
layout) on checkpoints the reference wrote. Tolerance 1e-5 absolute on float32 outputs; generated ids identical."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

import bart_flax  # noqa: E402
from bart_core import GenerationConfig, shift_tokens_right  # noqa: E402
from bart_core.formats.flax_msgpack import read_flax_msgpack  # noqa: E402
from bart_flax.modeling import MODEL_CLASSES  # noqa: E402
from tests.conftest import (  # noqa: E402
    HEADS,
    load_reference,
    reference_outputs,
    seeded_inputs,
    task_inputs,
    tiny_config,
)

ATOL = 1e-5


def _transformers():
    return pytest.importorskip("transformers")


def _torch_ref(head, path, eager=False):
    return load_reference(head, path, eager=eager)


@pytest.fixture(scope="module")
def cg(reference_checkpoint):
    path = reference_checkpoint("conditional_generation", "gelu")
    return bart_flax.BartForConditionalGeneration.from_pretrained(path), _torch_ref("conditional_generation", path), path


# ============================================================================ layout and loading
@pytest.mark.parametrize("head", list(HEADS))
def test_param_tree_matches_reference_flax(head):
    t = _transformers()
    config = tiny_config("silu_untied" if head in ("conditional_generation", "causal_lm") else "gelu")
    ref_cfg = t.BartConfig(**config.to_dict())
    ref = getattr(t, "Flax" + HEADS[head])(ref_cfg, _do_init=False)
    shapes = jax.eval_shape(lambda r: ref.init_weights(r, (1, 4)), jax.random.PRNGKey(0))
    ours = MODEL_CLASSES[head](config)
    flat = lambda tree: {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    assert flat(ours.params) == flat(shapes)


def test_reads_msgpack_written_by_reference_flax(cg, tmp_path):
    ours, ref, path = cg
    t = _transformers()
    t.FlaxBartForConditionalGeneration.from_pretrained(path, from_pt=True).save_pretrained(tmp_path)
    assert (tmp_path / "flax_model.msgpack").is_file()
    state = read_flax_msgpack(tmp_path / "flax_model.msgpack")
    torch_state = {k: v.numpy() for k, v in ref.state_dict().items()}
    for name, arr in state.items():
        np.testing.assert_array_equal(arr, torch_state[name], err_msg=name)
    loaded = bart_flax.BartForConditionalGeneration.from_pretrained(tmp_path)
    x = task_inputs("conditional_generation", loaded.config)
    np.testing.assert_allclose(np.asarray(loaded(**x).logits), reference_outputs(ref, x)["logits"], atol=ATOL, rtol=0)


def test_written_msgpack_loads_in_reference_flax(cg, tmp_path):
    ours, _, _ = cg
    ours.save_pretrained(tmp_path)
    t = _transformers()
    ref = t.FlaxBartForConditionalGeneration.from_pretrained(tmp_path)
    x = task_inputs("conditional_generation", ours.config)
    del x["labels"]
    ref_logits = ref(**{k: jnp.asarray(v) for k, v in x.items()}).logits
    np.testing.assert_allclose(np.asarray(ours(**x).logits), np.asarray(ref_logits), atol=ATOL, rtol=0)


def test_causal_lm_msgpack_round_trip(reference_checkpoint, tmp_path):
    model = bart_flax.BartForCausalLM.from_pretrained(reference_checkpoint("causal_lm", "gelu"))
    model.save_pretrained(tmp_path)
    assert "flax_model.msgpack" in os.listdir(tmp_path) and "model.safetensors" not in os.listdir(tmp_path)
    again = bart_flax.BartForCausalLM.from_pretrained(tmp_path)
    for k, v in model.numpy_state_dict().items():
        np.testing.assert_array_equal(again.numpy_state_dict()[k], v, err_msg=k)


def test_saved_safetensors_and_bin_load(cg, reference_checkpoint, tmp_path):
    ours, ref, _ = cg
    ours.save_pretrained(tmp_path, safe_serialization=True)
    assert "model.safetensors" in os.listdir(tmp_path) and "flax_model.msgpack" not in os.listdir(tmp_path)
    t = _transformers()
    x = task_inputs("conditional_generation", ours.config)
    back = t.BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(reference_outputs(back, x)["logits"], reference_outputs(ref, x)["logits"], atol=0, rtol=0)
    binary = reference_checkpoint("conditional_generation", "gelu", safe_serialization=False)
    assert os.path.isfile(os.path.join(binary, "pytorch_model.bin"))
    from_bin = bart_flax.BartForConditionalGeneration.from_pretrained(binary)
    for k, v in ours.numpy_state_dict().items():
        np.testing.assert_array_equal(from_bin.numpy_state_dict()[k], v, err_msg=k)


# ============================================================================ jit and cache
def test_jitted_encode_decode_equal_unjitted(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    enc = ours.encode(x["input_ids"], x["attention_mask"])
    enc_j = jax.jit(ours.encode)(x["input_ids"], x["attention_mask"])
    np.testing.assert_allclose(enc_j.last_hidden_state, enc.last_hidden_state, atol=1e-6, rtol=0)
    dec = ours.decode(x["decoder_input_ids"], enc, x["attention_mask"])
    dec_j = jax.jit(ours.decode)(x["decoder_input_ids"], enc_j, x["attention_mask"])
    np.testing.assert_allclose(dec_j.logits, dec.logits, atol=1e-6, rtol=0)
    full = ours(**x).logits
    np.testing.assert_allclose(dec.logits, full, atol=1e-6, rtol=0)


def test_cached_decoding_equals_full_pass(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    enc = ours.encode(x["input_ids"], x["attention_mask"])
    full = np.asarray(ours.decode(x["decoder_input_ids"], enc, x["attention_mask"]).logits)   # (B, T, V)
    b, t = x["decoder_input_ids"].shape
    cache = ours.init_cache(b, t + 2, enc)
    decode = jax.jit(ours.decode)
    # two tokens at once, then one by one: positions come from the cache index
    out = ours.decode(x["decoder_input_ids"][:, :2], enc, x["attention_mask"], past_key_values=cache)
    steps, cache = [np.asarray(out.logits)], out.past_key_values
    for i in range(2, t):
        out = decode(x["decoder_input_ids"][:, i:i + 1], enc, x["attention_mask"], past_key_values=cache)
        steps.append(np.asarray(out.logits))
        cache = out.past_key_values
    assert int(cache["index"]) == t
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=ATOL, rtol=0)


def test_decoder_padding_mask_with_cache(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config, batch=2)
    dmask = np.ones_like(x["decoder_input_ids"])
    dmask[1, 3] = 0
    enc = ours.encode(x["input_ids"], x["attention_mask"])
    full = ours.decode(x["decoder_input_ids"], enc, x["attention_mask"], decoder_attention_mask=dmask).logits
    t = dmask.shape[1]
    cache = ours.init_cache(2, t, enc)
    out = ours.decode(x["decoder_input_ids"], enc, x["attention_mask"], decoder_attention_mask=dmask,
                      past_key_values=cache)
    np.testing.assert_allclose(out.logits, full, atol=ATOL, rtol=0)


def test_bad_inputs_are_clear_errors(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    bad = x["input_ids"].copy()
    bad[1, 2] = ours.config.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours(input_ids=bad, attention_mask=x["attention_mask"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.generate(bad, max_new_tokens=2)
    enc = ours.encode(x["input_ids"], x["attention_mask"])
    with pytest.raises(ValueError, match="decoder_input_ids contains token id -1"):
        ours.decode(-np.ones((3, 1), np.int64), enc)
    cache = ours.init_cache(3, 4, enc)
    with pytest.raises(ValueError, match="do not fit a cache"):
        ours.decode(x["decoder_input_ids"], enc, past_key_values=cache)
    out = ours.decode(x["decoder_input_ids"][:, :3], enc, past_key_values=cache)
    with pytest.raises(ValueError, match="holds 3 of 4"):
        ours.decode(x["decoder_input_ids"][:, :2], enc, past_key_values=out.past_key_values)
    with pytest.raises(ValueError, match="does not match the cache batch"):
        ours.decode(x["decoder_input_ids"][:2, :1], enc, past_key_values=cache)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.init_cache(3, ours.config.max_position_embeddings + 1, enc)
    # inside jit ids cannot be checked: an out-of-range id gives NaN, never a silent valid-looking row
    logits = jax.jit(lambda ids: ours(input_ids=ids, decoder_input_ids=ids).logits)(bad)
    assert np.isnan(np.asarray(logits)[1]).all() and np.isfinite(np.asarray(logits)[0]).all()


def test_shift_tokens_right_matches_core():
    from bart_flax.modeling import shift_tokens_right as jnp_shift
    labels = np.array([[5, 6, -100, -100], [7, 8, 9, 2]])
    np.testing.assert_array_equal(np.asarray(jnp_shift(labels, 1, 2)), shift_tokens_right(labels, 1, 2))


# ============================================================================ generation
def test_generate_under_outer_jit_equals_plain(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    options = dict(num_beams=4, max_length=15, length_penalty=2.0, early_stopping=True, num_return_sequences=2)
    plain = np.asarray(ours.generate(x["input_ids"], x["attention_mask"], **options))
    jitted = np.asarray(jax.jit(lambda p, i, m: ours.generate(i, m, params=p, **options))(
        ours.params, x["input_ids"], x["attention_mask"]))
    assert jitted.shape[1] == 15
    np.testing.assert_array_equal(jitted[:, :plain.shape[1]], plain)
    assert (jitted[:, plain.shape[1]:] == ours.config.pad_token_id).all()


def test_sampling_uses_the_key(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    sample = lambda key, **kw: np.asarray(ours.generate(x["input_ids"], x["attention_mask"], do_sample=True,
                                                        max_length=12, prng_key=key, top_p=0.9, temperature=0.7,
                                                        **kw))
    k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    np.testing.assert_array_equal(sample(k0), sample(k0))
    assert not np.array_equal(sample(k0), sample(k1))
    # top_k=1 sampling is greedy; three samples per input share one encoder row
    many = sample(k1, top_k=1, num_return_sequences=3)
    greedy = np.asarray(ours.generate(x["input_ids"], x["attention_mask"], max_length=12, top_p=0.9))
    np.testing.assert_array_equal(many, np.repeat(greedy, 3, axis=0))


def test_no_repeat_ngram_is_respected(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    seqs = np.asarray(ours.generate(x["input_ids"], x["attention_mask"], max_length=30, no_repeat_ngram_size=2,
                                    forced_eos_token_id=None, eos_token_id=None))
    for row in seqs:
        grams = list(zip(row[:-1], row[1:]))
        assert len(grams) == len(set(grams))


@pytest.fixture(scope="module")
def causal(reference_checkpoint):
    model = bart_flax.BartForCausalLM.from_pretrained(reference_checkpoint("causal_lm", "gelu", seed=1, init_std=0.3))
    return model, np.array([[0, 5, 9, 11], [0, 7, 8, 12]], np.int64)                       # prompt (B, L0)


def test_causal_lm_generate_under_outer_jit_equals_plain(causal):
    model, prompt = causal
    options = dict(num_beams=3, max_new_tokens=6, num_return_sequences=2, length_penalty=0.5)
    plain = np.asarray(model.generate(prompt, **options))
    jitted = np.asarray(jax.jit(lambda p, i: model.generate(i, params=p, **options))(model.params, prompt))
    assert jitted.shape == (4, prompt.shape[1] + 6)
    np.testing.assert_array_equal(jitted[:, :plain.shape[1]], plain)
    assert (jitted[:, plain.shape[1]:] == model.config.pad_token_id).all()
    # top_k=1 sampling is greedy, whatever the key
    many = np.asarray(model.generate(prompt, do_sample=True, top_k=1, num_return_sequences=2, max_new_tokens=6,
                                     prng_key=jax.random.PRNGKey(3)))
    np.testing.assert_array_equal(many, np.repeat(np.asarray(model.generate(prompt, max_new_tokens=6)), 2, axis=0))


def test_causal_lm_cached_generate_equals_full_pass_argmax(causal):
    model, prompt = causal
    b, l0 = prompt.shape
    # no length option: 20 new tokens after the prompt, as the reference
    out = model.generate(prompt, eos_token_id=None, forced_eos_token_id=None, return_dict_in_generate=True,
                         output_scores=True)
    seqs = np.asarray(out.sequences)                                                      # (B, L0 + 20)
    assert seqs.shape == (b, l0 + 20) and np.array_equal(seqs[:, :l0], prompt)
    full = np.asarray(model(input_ids=seqs).logits)                                       # (B, L, V), no cache
    np.testing.assert_array_equal(full[:, l0 - 1:-1].argmax(-1), seqs[:, l0:])
    assert len(out.scores) == 20
    np.testing.assert_allclose(np.stack(out.scores, axis=1), full[:, l0 - 1:-1], atol=ATOL, rtol=0)


def test_causal_lm_generate_bad_inputs_are_clear_errors(causal):
    model, prompt = causal
    mask = np.ones_like(prompt)
    mask[1, 0] = 0
    with pytest.raises(ValueError, match="does not support padded prompts"):
        model.generate(prompt, attention_mask=mask, max_new_tokens=2)
    padded = prompt.copy()
    padded[1, 0] = model.config.pad_token_id
    with pytest.raises(ValueError, match="does not support padded prompts"):
        model.generate(padded, max_new_tokens=2)
    with pytest.raises(ValueError, match="leaves no room after the 4 prompt tokens"):
        model.generate(prompt, max_length=4)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(prompt, max_new_tokens=model.config.max_position_embeddings)


# ============================================================================ dtype, dropout, training
def test_bfloat16_compute(cg):
    ours, _, path = cg
    half = bart_flax.BartForConditionalGeneration.from_pretrained(path, dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(half.params))
    x = seeded_inputs(ours.config)
    out = half(**x).logits
    assert out.dtype == jnp.float32  # bfloat16 products accumulate and return float32 (docs/design.md "bfloat16")
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ours(**x).logits), atol=0.1)
    bf = half.to_bf16()
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(bf))
    assert np.isfinite(np.asarray(half(**x, params=bf).logits, np.float32)).all()
    assert half.generate(x["input_ids"], x["attention_mask"], max_length=4).shape[0] == 3


def test_dropout_needs_and_uses_a_key():
    config = tiny_config(dropout=0.3, encoder_layerdrop=0.3, decoder_layerdrop=0.3)
    model = bart_flax.BartForConditionalGeneration(config)
    x = seeded_inputs(config)
    with pytest.raises(ValueError, match="dropout_rng"):
        model(**x, train=True)
    a = model(**x, train=True, dropout_rng=jax.random.PRNGKey(0)).logits
    b = model(**x, train=True, dropout_rng=jax.random.PRNGKey(0)).logits
    c = model(**x, train=True, dropout_rng=jax.random.PRNGKey(1)).logits
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(model(**x).logits, model(**x).logits)


def test_optax_training_loss_falls():
    import optax

    from bart_flax.training import TrainState, make_train_step
    config = tiny_config(dropout=0.1)
    model = bart_flax.BartForConditionalGeneration(config)
    x = seeded_inputs(config, batch=4, src_len=8)
    labels = x["input_ids"].copy()
    labels[x["attention_mask"] == 0] = -100
    batch = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"], "labels": labels}
    tx = optax.adamw(3e-3)
    state, step = TrainState.create(model, tx), make_train_step(model, tx, label_smoothing=0.1)
    losses = []
    for _ in range(30):
        state, loss = step(state, batch)
        losses.append(float(loss))
    assert losses[-1] < 0.75 * losses[0], losses
    assert int(state.step) == 30


def test_label_smoothing_matches_torch():
    import torch

    from bart_flax.modeling import cross_entropy
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(2, 5))
    labels[0, -1] = -100
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits).reshape(-1, 11),
                                                 torch.from_numpy(labels).reshape(-1), label_smoothing=0.2)
    np.testing.assert_allclose(float(cross_entropy(logits, labels, label_smoothing=0.2)), float(expected), atol=1e-6)


def test_outputs_are_pytrees(cg):
    ours, _, _ = cg
    x = seeded_inputs(ours.config)
    out = jax.jit(lambda p: ours(**x, params=p))(ours.params)
    assert type(out).__name__ == "Seq2SeqLMOutput" and out.logits.shape == (3, 7, ours.config.vocab_size)
    assert GenerationConfig.from_model_config(ours.config).max_length == ours.config.max_length
