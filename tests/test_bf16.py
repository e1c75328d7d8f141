"""bfloat16 generation (docs/design.md "bfloat16"): products in bfloat16 with float32 accumulation from
``LOW_PRECISION_MIN_ROWS`` rows on, everything numerically sensitive in float32.

Two kinds of check on tiny models: agreement with the float32 model (a rate, not identity: bfloat16 may flip a
near tie), and dtypes of the pieces that must stay float32 (layer norms, softmax, logits, processed scores, beam
scores), plus the dtypes the products actually run in (the jaxpr / the XLA HLO).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import seeded_inputs, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# forced length: every row decodes the same number of new tokens, so the rates compare like with like
FIXED = dict(max_new_tokens=10, min_new_tokens=10, no_repeat_ngram_size=0)


def _bf16_kwargs(name: str) -> dict:
    if name == "torch":
        import torch
        return {"torch_dtype": torch.bfloat16}
    if name == "flax":
        import jax.numpy as jnp
        return {"dtype": jnp.bfloat16}
    return {"dtype": "bfloat16"}


@pytest.fixture(scope="module")
def pair(backend, tmp_path_factory):
    """(float32 model, bfloat16 model) of one backend, the same weights (a reference checkpoint with random layer
    norms and biases)."""
    from tests.conftest import make_reference_checkpoint
    pytest.importorskip("transformers")
    path = make_reference_checkpoint(tmp_path_factory.mktemp(f"bf16-{backend.name}"))
    full = backend.from_pretrained("BartForConditionalGeneration", path)
    half = backend.from_pretrained("BartForConditionalGeneration", path, **_bf16_kwargs(backend.name))
    return full, half


def _ids(config, batch: int, seed: int = 1):
    x = seeded_inputs(config, batch=batch, src_len=12, seed=seed)
    return x["input_ids"], x["attention_mask"], x["decoder_input_ids"]


@pytest.mark.parametrize("num_beams,batch", [(1, 8), (4, 2)])
def test_bf16_generation_agrees_with_float32(backend, pair, num_beams, batch):
    full, half = pair
    ids, mask, _ = _ids(full.config, batch)
    a = np.asarray(backend.generate(full, ids, mask, num_beams=num_beams, **FIXED))
    b = np.asarray(backend.generate(half, ids, mask, num_beams=num_beams, **FIXED))
    assert a.shape == b.shape == (batch, 11)
    assert (a == b).mean() >= 0.9, (a, b)


def test_bf16_teacher_forced_logits(backend, pair):
    """Float32 logits, top-1 equal to float32's at >= 95% of positions, and not bit-equal (bfloat16 did run)."""
    full, half = pair
    ids, mask, dec = _ids(full.config, 8)
    a = backend.forward(full, input_ids=ids, attention_mask=mask, decoder_input_ids=dec)["logits"]
    b = backend.forward(half, input_ids=ids, attention_mask=mask, decoder_input_ids=dec)["logits"]
    assert np.asarray(b).dtype == np.float32
    diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max()
    assert 0 < diff < 0.1
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize("num_beams", [1, 3])
def test_bf16_scores_are_float32(backend, pair, num_beams):
    """The processed scores of every step (and beam search's sequence scores) are float32."""
    full, half = pair
    ids, mask, _ = _ids(full.config, 4)
    out = backend.generate(half, ids, mask, num_beams=num_beams, return_dict_in_generate=True, output_scores=True,
                           max_new_tokens=4, min_new_tokens=4, no_repeat_ngram_size=0, repetition_penalty=1.3)
    assert len(out["scores"]) == 4 and all(np.asarray(s).dtype == np.float32 for s in out["scores"])
    if num_beams > 1:
        assert np.asarray(out["sequences_scores"]).dtype == np.float32


# ============================================================================ flax: intermediates and products
def _dot_dtypes(jaxpr) -> list:
    """(operand dtypes, result dtype) of every dot_general in a (closed) jaxpr, sub-jaxprs included."""
    found = []
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype)))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    found += _dot_dtypes(sub)
    return found


@pytest.fixture(scope="module")
def flax_pair():
    jnp = pytest.importorskip("jax.numpy")
    import bart_flax
    config = tiny_config()
    full = bart_flax.BartForConditionalGeneration(config, seed=0)
    return full, bart_flax.BartForConditionalGeneration(config, dtype=jnp.bfloat16, params=full.to_bf16())


def test_flax_bf16_intermediates_float32(flax_pair):
    """capture_intermediates: every layer norm, linear layer and attention (output and softmax) returns float32
    with bfloat16 parameters and products."""
    import jax
    _, half = flax_pair
    ids, mask, dec = _ids(half.config, 4)
    (_, logits), state = half.module.apply({"params": half.to_bf16()}, ids, mask, dec, output_attentions=True,
                                           capture_intermediates=True, mutable=["intermediates"])
    assert logits.dtype == np.float32
    seen = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
        name = jax.tree_util.keystr(path)
        kind = next((k for k in ("proj", "layer_norm", "layernorm", "fc1", "fc2", "attn") if k in name), None)
        if kind is not None and value is not None:
            seen.setdefault(kind, set()).add(str(value.dtype))
    assert set(seen) == {"layer_norm", "layernorm", "attn", "proj", "fc1", "fc2"}
    assert all(dtypes == {"float32"} for dtypes in seen.values()), seen


def test_flax_bf16_products_by_rows(flax_pair):
    """A forward pass of 4 x 12 / 4 x 7 tokens runs its weight products in bfloat16 (float32 results); a one-row
    decoding step runs them in float32 (LOW_PRECISION_MIN_ROWS); the float32 model never uses bfloat16."""
    import jax

    from bart_flax.modeling import LOW_PRECISION_MIN_ROWS
    full, half = flax_pair
    ids, mask, dec = _ids(half.config, 4)
    params = half.to_bf16()
    forward = _dot_dtypes(jax.make_jaxpr(lambda p: half.module.apply({"params": p}, ids, mask, dec))(params))
    assert forward and all(out == "float32" for _, out in forward)
    assert all(ops == ("bfloat16", "bfloat16") for ops, _ in forward)          # every product has >= 2 rows
    assert LOW_PRECISION_MIN_ROWS == 2

    enc = half.encode(ids[:1], mask[:1], params=params)
    cache = half.init_cache(1, 4, enc, params=params)
    step = _dot_dtypes(jax.make_jaxpr(lambda p, c: half.module.apply(
        {"params": p}, dec[:1, :1], None, mask[:1], cache=c, method="decode"))(params, cache))
    weights = [ops for ops, _ in step]
    assert weights and all(ops == ("float32", "float32") for ops in weights)
    plain = _dot_dtypes(jax.make_jaxpr(lambda p: full.module.apply({"params": p}, ids, mask, dec))(full.params))
    assert all(ops == ("float32", "float32") for ops, _ in plain)


# ============================================================================ tf: layers called directly, HLO
@pytest.fixture(scope="module")
def tf_half():
    keras = pytest.importorskip("keras")
    import bart_tf
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        return bart_tf.BartForConditionalGeneration(tiny_config())
    finally:
        keras.config.set_dtype_policy(previous)


def test_tf_bf16_intermediates_float32(tf_half):
    """Under mixed_bfloat16 the layer norms, linear layers, attention (output and softmax weights), hidden states
    and logits are float32 (variables float32, products bfloat16)."""
    import tensorflow as tf
    model = tf_half
    layer = model.model.decoder.layers[0]
    x = tf.random.normal((2, 5, model.config.d_model), dtype=tf.bfloat16)
    assert layer.self_attn_layer_norm(x).dtype == tf.float32
    assert layer.fc1(x).dtype == tf.float32 and layer.fc1.kernel.dtype == "float32"
    out, weights, _ = layer.self_attn(x, output_attentions=True)
    assert out.dtype == weights.dtype == tf.float32
    ids, mask, dec = _ids(model.config, 2)
    res = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True,
                output_attentions=True)
    assert res.logits.dtype == tf.float32
    for group in (res.decoder_hidden_states, res.encoder_hidden_states, res.decoder_attentions,
                  res.cross_attentions):
        assert all(t.dtype == tf.float32 for t in group)


def _hlo_dots(fn, *args) -> set:
    """The operand types of the dots in the XLA HLO of ``fn`` (e.g. {"bf16"}), with their result type."""
    hlo = tf_function(fn).experimental_get_compiler_ir(*args)(stage="hlo")
    return set(re.findall(r"= (\w+)\[[^\]]*\][^ ]* dot\((\w+)\[", hlo))


def tf_function(fn):
    import tensorflow as tf
    return tf.function(fn, jit_compile=True)


def test_tf_bf16_products_by_rows(tf_half):
    """Under XLA a product of >= 2 rows is one bfloat16 dot with a float32 result; one row stays float32."""
    import tensorflow as tf
    fc1 = tf_half.model.decoder.layers[0].fc1
    many = tf.random.normal((2, 3, tf_half.config.d_model))
    one = tf.random.normal((1, 1, tf_half.config.d_model))
    assert _hlo_dots(fc1, many) == {("f32", "bf16")}
    assert _hlo_dots(fc1, one) == {("f32", "f32")}
    assert np.allclose(fc1(many).numpy(), tf_function(fc1)(many).numpy(), atol=1e-2)


def _converts_in_loop(hlo: str) -> set:
    """Shapes (rows, cols) of the 2-D ``convert`` results (either way, float32 <-> bfloat16) of the ops TensorFlow
    placed inside a while loop (their ``op_name`` starts with ``while/``), in an HLO module."""
    return {(int(a), int(b)) for line in hlo.splitlines() if 'op_name="while/' in line
            for a, b in re.findall(r"= (?:bf16|f32)\[(\d+),(\d+)\]\S* convert\(", line)}


def test_tf_bf16_compiled_generate_casts_weights_once(tf_half, monkeypatch):
    """In a compiled generate the weights are cast to bfloat16 once, before the decoding loop
    (``kernels.precast_weights``): no weight-shaped convert inside the tf.while_loop; with the precast turned off
    there are (the per-step casts it removes). The ids are the same either way."""
    import tensorflow as tf

    from bart_tf import kernels
    ids, mask, _ = _ids(tf_half.config, 3)  # 3 inputs x 2 beams: activations of 6 rows, no weight's shape
    weights = {tuple(v.shape) for v in tf_half.get_decoder().weights if len(v.shape) == 2}

    def compiled():
        fn = tf.function(lambda a, m: tf_half.generate(a, m, num_beams=2, max_new_tokens=4), jit_compile=True)
        return fn.experimental_get_compiler_ir(tf.constant(ids), tf.constant(mask))(stage="hlo"), fn
    hlo, fn = compiled()
    assert not _converts_in_loop(hlo) & weights
    precast_ids = fn(tf.constant(ids), tf.constant(mask)).numpy()
    monkeypatch.setattr(kernels, "PRECAST_WEIGHTS", False)
    hlo, fn = compiled()
    assert _converts_in_loop(hlo) & weights
    assert np.array_equal(fn(tf.constant(ids), tf.constant(mask)).numpy(), precast_ids)
