"""Keras 3 users' habits on bart_tf: ``.keras`` files, ``ModelCheckpoint``, ``model.export`` (and
``export_generate``) reloaded by plain TensorFlow in a fresh process, metrics passed to ``compile``,
``fit((x, y))`` on the model's own loss, ``summary()`` and the backend guard at import."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import bart_tf  # noqa: E402
from tests.conftest import HEADS, ROOT, seeded_inputs, tiny_config  # noqa: E402

ATOL = 1e-6
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def make(cls_name: str = "BartForConditionalGeneration", seed: int = 0, **overrides):
    """A tiny seeded model whose final_logits_bias is random (so the non-trainable variable is checked too)."""
    keras.utils.set_random_seed(seed)
    model = getattr(bart_tf, cls_name)(tiny_config(**overrides))
    if hasattr(model, "final_logits_bias"):
        model.final_logits_bias.assign(np.random.default_rng(seed).normal(0, 0.5, (1, 99)).astype("float32"))
    return model


def lm_batch(config, batch: int = 4, seed: int = 0):
    """Unpadded ids (B, 9) and token labels (B, 6) with the last label position ignored (-100)."""
    x = seeded_inputs(config, batch=batch, seed=seed, pad=False)
    labels = x["decoder_input_ids"][:, 1:].astype("int32")
    labels[:, -1] = -100
    return x["input_ids"].astype("int32"), labels


def assert_same_weights(a, b):
    sa, sb = a.numpy_state_dict(), b.numpy_state_dict()
    assert sorted(sa) == sorted(sb)
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


# ----------------------------------------------------------------------------------------- .keras files
def test_keras_file_round_trip_equal_logits_and_generate(tmp_path):
    model = make()
    # a non-default generation_config must travel with the file: without it the tiny model would stop at once
    model.generation_config = model.generation_config.replace(min_length=6, max_length=8)
    inputs = seeded_inputs(model.config)
    logits = model(**inputs).logits.numpy()
    tokens = model.generate(inputs["input_ids"], inputs["attention_mask"]).numpy()
    assert tokens.shape == (3, 8) and (tokens[:, 1:6] != model.config.eos_token_id).all()

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")

    assert type(loaded) is bart_tf.BartForConditionalGeneration
    assert loaded.config.to_dict() == model.config.to_dict()
    assert loaded.generation_config == model.generation_config
    assert_same_weights(loaded, model)
    np.testing.assert_allclose(loaded(**inputs).logits.numpy(), logits, atol=ATOL)
    np.testing.assert_array_equal(loaded.generate(inputs["input_ids"], inputs["attention_mask"]).numpy(), tokens)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_get_config_is_plain_and_registered(head):
    overrides = {"num_labels": 3} if head == "sequence_classification" else {}
    model = make(HEADS[head], tie_word_embeddings=False, **overrides)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config  # plain JSON values only
    assert config["config"] == model.config.to_dict()
    serialized = keras.saving.serialize_keras_object(model)
    assert serialized["registered_name"] == f"bart3>{HEADS[head]}"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(model) and clone.name == model.name
    assert clone.config.to_dict() == model.config.to_dict()
    assert clone.generation_config == model.generation_config
    assert model.numpy_state_dict().keys() == clone.numpy_state_dict().keys()


def test_from_config_keeps_a_mixed_precision_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = make()
    finally:
        keras.config.set_dtype_policy(previous)
    clone = type(model).from_config(model.get_config())
    assert keras.config.dtype_policy().name == previous.name
    dense = clone.model.encoder.layers[0].fc1
    assert clone.dtype_policy.name == dense.dtype_policy.name == "mixed_bfloat16"
    assert dense.kernel.dtype == "float32"


# ----------------------------------------------------------------------------------------- export
def test_export_and_export_generate_reload_in_fresh_process(tmp_path):
    from bart_tf.export import export_generate
    model = make()  # never called before export
    model.export(str(tmp_path / "forward"))
    options = dict(max_length=8, min_length=6)
    export_generate(model, tmp_path / "generate", **options)

    inputs = {k: v.astype("int32") for k, v in seeded_inputs(model.config).items()}
    inputs["decoder_attention_mask"] = np.ones_like(inputs["decoder_input_ids"])
    expected = model(**inputs)
    tokens = model.generate(inputs["input_ids"], inputs["attention_mask"], **options).numpy()
    np.savez(tmp_path / "inputs.npz", **inputs)
    code = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        x = {k: tf.constant(v) for k, v in np.load("inputs.npz").items()}
        forward = tf.saved_model.load("forward").signatures["serving_default"]
        out = forward(**x)
        generate = tf.saved_model.load("generate").signatures["serving_default"]
        gen = generate(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        assert not any(m.startswith(("bart_tf", "bart_core")) for m in sys.modules)
        np.savez("out.npz", sequences=gen["sequences"].numpy(), **{k: v.numpy() for k, v in out.items()})
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = dict(np.load(tmp_path / "out.npz"))
    assert set(out) == {"sequences", "logits", "encoder_last_hidden_state"}
    np.testing.assert_allclose(out["logits"], expected.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["encoder_last_hidden_state"], expected.encoder_last_hidden_state.numpy(), atol=1e-5)
    np.testing.assert_array_equal(out["sequences"], tokens)


# ----------------------------------------------------------------------------------------- compile and fit
def test_compile_metrics_use_logits_and_labels_in_the_input_dict():
    model = make()
    ids, labels = lm_batch(model.config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"], jit_compile=False)
    data = {"input_ids": ids, "labels": labels}
    history = model.fit(data, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    assert set(history) == {"loss", "accuracy"}

    # make the last kept label the model's own prediction there (a label only feeds later decoder positions), so
    # the accuracy is neither 0 nor 1 on a random tiny model
    labels[:, -2] = model(input_ids=ids, labels=labels).logits.numpy().argmax(-1)[:, -2]
    result = model.evaluate({"input_ids": ids, "labels": labels}, batch_size=4, verbose=0, return_dict=True)
    out = model(input_ids=ids, labels=labels)
    keep = labels != -100
    accuracy = (out.logits.numpy().argmax(-1) == labels)[keep].mean()  # -100 positions left out
    assert 0.0 < accuracy < 1.0
    np.testing.assert_allclose(result["accuracy"], accuracy, atol=1e-6)
    np.testing.assert_allclose(result["loss"], out.loss.numpy(), atol=1e-5)


def test_fit_x_y_trains_on_the_internal_loss_and_model_checkpoint_saves_it(tmp_path):
    model = make()
    ids, labels = lm_batch(model.config)
    before = model.numpy_state_dict()
    initial = float(model(input_ids=ids, labels=labels).loss)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)  # no loss
    path = tmp_path / "ckpt.keras"
    losses = model.fit(ids, labels, batch_size=4, epochs=3, verbose=0, shuffle=False,
                       callbacks=[keras.callbacks.ModelCheckpoint(str(path))]).history["loss"]
    np.testing.assert_allclose(losses[0], initial, rtol=1e-5)  # y went into `labels`: the model's own loss
    assert losses[-1] < losses[0]

    loaded = keras.models.load_model(path)  # the checkpoint of the last epoch
    assert_same_weights(loaded, model)
    assert not np.array_equal(loaded.numpy_state_dict()["model.shared.weight"], before["model.shared.weight"])
    np.testing.assert_allclose(loaded(input_ids=ids).logits.numpy(), model(input_ids=ids).logits.numpy(), atol=ATOL)


def test_labels_move_into_the_inputs_per_head():
    qa = make("BartForQuestionAnswering")
    ids = np.ones((2, 5), np.int32)
    start, end = np.array([1, 2]), np.array([3, 4])
    x, y, w = qa._labels_into_inputs((ids, (start, end)))
    assert y is None and w is None and set(x) == {"input_ids", "start_positions", "end_positions"}
    assert x["start_positions"] is start and x["end_positions"] is end
    x, _, _ = qa._labels_into_inputs(({"input_ids": ids}, {"start_positions": start, "end_positions": end}))
    assert x["end_positions"] is end
    with pytest.raises(ValueError, match="given both"):
        qa._labels_into_inputs(({"input_ids": ids, "start_positions": start}, (start, end)))

    cls = make("BartForSequenceClassification", num_labels=3)
    weights = np.ones(2, np.float32)
    x, y, w = cls._labels_into_inputs(({"input_ids": ids}, start, weights))
    assert y is None and w is weights and x["labels"] is start

    cls.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = (ids, start)
    assert cls._labels_into_inputs(data) is data  # a compiled loss keeps y apart
    base = make("BartModel")
    assert base._labels_into_inputs(data) is data  # no labels to take


# ----------------------------------------------------------------------------------------- summary
@pytest.mark.parametrize("head,rows", [
    ("conditional_generation", ["model.shared", "model.encoder", "model.decoder", "final_logits_bias", "lm_head"]),
    ("sequence_classification", ["model.shared", "model.encoder", "model.decoder", "classification_head"]),
    ("question_answering", ["model.shared", "model.encoder", "model.decoder", "qa_outputs"]),
    ("causal_lm", ["model.decoder", "lm_head"]),
    ("base", ["shared", "encoder", "decoder"]),
])
def test_summary_lists_sub_layers_with_parameter_counts(head, rows):
    model = make(HEADS[head])
    printed = []
    model.summary(print_fn=printed.append)
    text = "".join(printed)
    names = re.findall(r"^│ (\S+) \(", text, flags=re.M)
    assert names == rows
    counts = [int(c.replace(",", "")) for c in re.findall(r"│\s+([\d,]+) │$", text, flags=re.M)]
    total = int(re.search(r"Total params: ([\d,]+)", text).group(1).replace(",", ""))
    assert total == model.num_parameters() > 0
    assert sum(counts) == total  # each variable counted once, the tied embedding in its first row
    assert re.search(r"decoder \(BartDecoder\)\s+│ \(None, None, 16\)", text)


# ----------------------------------------------------------------------------------------- backend guard
@pytest.mark.parametrize("backend,where", [("jax", "env"), ("torch", "env"), ("jax", "keras.json")])
def test_other_keras_backend_fails_at_import(backend, where, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "KERAS_BACKEND"}
    if where == "env":
        env["KERAS_BACKEND"] = backend
    else:  # no variable: keras reads $KERAS_HOME/keras.json
        (tmp_path / "keras.json").write_text(json.dumps({"backend": backend}))
        env["KERAS_HOME"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", "import bart_tf"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: bart_tf needs Keras 3's TensorFlow backend")
    assert repr(backend) in last and "bart_flax" in last and "bart_torch" in last
