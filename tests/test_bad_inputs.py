"""Bad model inputs give one clear error naming the argument, in every backend, eager and compiled.

One table, one row per case; each row runs for torch, tf and flax in eager mode, and under ``tf.function(jit_compile
=True)`` (tf "xla") and ``jax.jit`` (flax "jit") when the rule needs only shapes and dtypes. Rules that read values
(ids and labels in range) cannot run on traced tensors; ``bart_core.inputs`` documents what happens there instead.
The rules live once in ``bart_core.inputs.check_model_inputs``; each backend calls it at its entry points.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np
import pytest

from bart_core.inputs import TensorInfo, check_model_inputs
from tests.backends import get_backend
from tests.conftest import seeded_inputs, tiny_config

CONFIG = tiny_config()  # vocab 99, d_model 16, max_position_embeddings 64
V, D, P = CONFIG.vocab_size, CONFIG.d_model, CONFIG.max_position_embeddings
MODES = [("torch", "eager"), ("tf", "eager"), ("flax", "eager"), ("tf", "xla"), ("flax", "jit")]


def _x() -> dict:
    """Valid seq2seq inputs: input_ids / attention_mask (3, 9), decoder_input_ids (3, 7), int64."""
    return seeded_inputs(CONFIG)


def _labels(x, value=None):
    labels = x["decoder_input_ids"].copy()
    if value is not None:
        labels[1, 2] = value
    return labels


class Case(NamedTuple):
    name: str
    head: str                      # "seq2seq" (BartForConditionalGeneration) or "causal" (BartForCausalLM)
    call: str                      # "forward" or "generate"
    inputs: Callable[[], dict]     # numpy inputs of the call
    error: type
    match: str                     # regex; every message starts with the offending argument's name
    compiled: bool                 # the rule needs only shapes / dtypes, so it also runs under XLA / jit


CASES = [
    # inputs_embeds longer than the position table (was NaN in Flax, a GatherV2 error in TF)
    Case("inputs_embeds_too_long", "seq2seq", "forward",
         lambda: {"inputs_embeds": np.zeros((2, P + 1, D), np.float32),
                  "decoder_input_ids": _x()["decoder_input_ids"][:2]},
         ValueError, rf"^inputs_embeds has length {P + 1}, more than max_position_embeddings={P}", True),
    Case("decoder_inputs_embeds_too_long", "seq2seq", "forward",
         lambda: {"input_ids": _x()["input_ids"], "decoder_inputs_embeds": np.zeros((3, P + 1, D), np.float32)},
         ValueError, rf"^decoder_inputs_embeds has length {P + 1}, more than max_position_embeddings", True),
    Case("causal_inputs_embeds_too_long", "causal", "forward",
         lambda: {"inputs_embeds": np.zeros((2, P + 1, D), np.float32)},
         ValueError, r"^inputs_embeds has length 65, more than max_position_embeddings", True),
    Case("inputs_embeds_wrong_width", "seq2seq", "forward",
         lambda: {"inputs_embeds": np.zeros((2, 5, D + 1), np.float32),
                  "decoder_input_ids": _x()["decoder_input_ids"][:2]},
         ValueError, rf"^inputs_embeds has shape \(2, 5, {D + 1}\): its last axis must be d_model={D}", True),
    # float token ids (were truncated to integers by TF forward and generate and Flax generate)
    Case("float_input_ids", "seq2seq", "forward",
         lambda: dict(_x(), input_ids=_x()["input_ids"] + np.float32(0.5)),
         TypeError, r"^input_ids must hold integer token ids, got dtype float", True),
    Case("float_decoder_input_ids", "seq2seq", "forward",
         lambda: dict(_x(), decoder_input_ids=_x()["decoder_input_ids"] + np.float32(0.5)),
         TypeError, r"^decoder_input_ids must hold integer token ids, got dtype float", True),
    Case("float_input_ids_generate", "seq2seq", "generate",
         lambda: {"input_ids": _x()["input_ids"] + np.float32(0.5), "attention_mask": _x()["attention_mask"]},
         TypeError, r"^input_ids must hold integer token ids, got dtype float", True),
    Case("float_prompt_generate", "causal", "generate",
         lambda: {"input_ids": np.full((2, 4), 7.5, np.float32)},
         TypeError, r"^input_ids must hold integer token ids, got dtype float", True),
    Case("float_causal_input_ids", "causal", "forward",
         lambda: {"input_ids": np.full((2, 4), 7.5, np.float32)},
         TypeError, r"^input_ids must hold integer token ids", True),
    # labels outside [0, vocab) and not -100 (Flax: NaN for >= vocab, -5 read as vocab - 5; TF XLA: NaN)
    Case("labels_too_large", "seq2seq", "forward", lambda: dict(_x(), labels=_labels(_x(), V)),
         ValueError, rf"^labels contains label {V} at position \(1, 2\), outside the vocabulary \[0, {V}\)", False),
    Case("labels_negative", "seq2seq", "forward", lambda: dict(_x(), labels=_labels(_x(), -5)),
         ValueError, r"^labels contains label -5 at position \(1, 2\)", False),
    Case("causal_labels_too_large", "causal", "forward",
         lambda: {"input_ids": _x()["input_ids"], "labels": _labels({"decoder_input_ids": _x()["input_ids"]}, V)},
         ValueError, rf"^labels contains label {V}", False),
    Case("float_labels", "seq2seq", "forward", lambda: dict(_x(), labels=_labels(_x()).astype(np.float32)),
         TypeError, r"^labels must hold integer labels, got dtype float32", True),
    Case("labels_shape", "seq2seq", "forward", lambda: dict(_x(), labels=_labels(_x())[:, :5]),
         ValueError, r"^labels has shape \(3, 5\) but decoder_input_ids has shape \(3, 7\)", True),
    # masks whose shape differs from their sequence (a (1, S) mask was broadcast over the batch; torch ignored a
    # wrong-length all-ones mask)
    Case("mask_batch_of_one", "seq2seq", "forward", lambda: dict(_x(), attention_mask=_x()["attention_mask"][:1]),
         ValueError, r"^attention_mask has shape \(1, 9\) but input_ids has shape \(3, 9\)", True),
    Case("mask_wrong_length_all_ones", "seq2seq", "forward",
         lambda: dict(_x(), attention_mask=np.ones((3, 7), np.int64)),
         ValueError, r"^attention_mask has shape \(3, 7\) but input_ids has shape \(3, 9\)", True),
    Case("decoder_mask_batch_of_one", "seq2seq", "forward",
         lambda: dict(_x(), decoder_attention_mask=np.ones((1, 7), np.int64)),
         ValueError, r"^decoder_attention_mask has shape \(1, 7\) but decoder_input_ids has shape \(3, 7\)", True),
    Case("causal_mask_wrong_length", "causal", "forward",
         lambda: {"input_ids": _x()["input_ids"], "attention_mask": np.ones((3, 4), np.int64)},
         ValueError, r"^attention_mask has shape \(3, 4\) but input_ids has shape \(3, 9\)", True),
    Case("mask_batch_of_one_generate", "seq2seq", "generate",
         lambda: {"input_ids": _x()["input_ids"], "attention_mask": _x()["attention_mask"][:1]},
         ValueError, r"^attention_mask has shape \(1, 9\) but input_ids has shape \(3, 9\)", True),
    # empty batch (Flax generate: ZeroDivisionError) and wrong ranks (unpack / broadcast errors)
    Case("empty_batch", "seq2seq", "forward",
         lambda: {"input_ids": np.zeros((0, 5), np.int64), "decoder_input_ids": np.zeros((0, 3), np.int64)},
         ValueError, r"^input_ids has an empty batch \(shape \(0, 5\)\)", True),
    Case("empty_batch_generate", "seq2seq", "generate", lambda: {"input_ids": np.zeros((0, 5), np.int64)},
         ValueError, r"^input_ids has an empty batch", True),
    Case("empty_sequence", "causal", "forward", lambda: {"input_ids": np.zeros((2, 0), np.int64)},
         ValueError, r"^input_ids has no positions \(shape \(2, 0\)\)", True),
    Case("ids_rank_1", "seq2seq", "forward", lambda: dict(_x(), input_ids=_x()["input_ids"][0]),
         ValueError, r"^input_ids must have rank 2 \(batch, length\), got shape \(9,\)", True),
    Case("ids_rank_3_generate", "seq2seq", "generate", lambda: {"input_ids": _x()["input_ids"][None]},
         ValueError, r"^input_ids must have rank 2 \(batch, length\), got shape \(1, 3, 9\)", True),
    Case("decoder_ids_rank_3", "seq2seq", "forward",
         lambda: dict(_x(), decoder_input_ids=_x()["decoder_input_ids"][None]),
         ValueError, r"^decoder_input_ids must have rank 2", True),
    Case("mask_rank_3", "seq2seq", "forward", lambda: dict(_x(), attention_mask=_x()["attention_mask"][:, None]),
         ValueError, r"^attention_mask must have rank 2 \(batch, length\), got shape \(3, 1, 9\)", True),
    Case("causal_mask_rank_1", "causal", "forward",
         lambda: {"input_ids": _x()["input_ids"], "attention_mask": _x()["attention_mask"][0]},
         ValueError, r"^attention_mask must have rank 2", True),
    # an id outside the vocabulary: the message starts with the problem (TF started with Keras' "Exception
    # encountered when calling BartEncoder.call()")
    Case("id_out_of_range", "seq2seq", "forward", lambda: dict(_x(), input_ids=_labels({"decoder_input_ids":
                                                                                         _x()["input_ids"]}, V + 7)),
         ValueError, r"^input_ids contains token id 106 at position \(1, 2\), outside the vocabulary", False),
]

_PARAMS = [pytest.param(case, backend, mode, id=f"{case.name}-{backend}-{mode}")
           for case in CASES for backend, mode in MODES if mode == "eager" or case.compiled]
_HEADS = {"seq2seq": "BartForConditionalGeneration", "causal": "BartForCausalLM"}
_models: dict = {}


def _setup(backend_name: str, head: str):
    b = get_backend(backend_name)
    if not b.available():
        pytest.skip(f"{backend_name} backend not installed")
    key = (backend_name, head)
    if key not in _models:
        _models[key] = b.init(_HEADS[head], CONFIG)
    return b, _models[key]


def _run(backend, model, mode: str, call: str, inputs: dict):
    """One call of the model in ``mode``; returns numpy logits / ids."""
    if mode == "eager":
        if call == "forward":
            return backend.forward(model, **inputs)
        return backend.generate(model, max_new_tokens=2, **inputs)
    if backend.name == "tf":
        import tensorflow as tf
        if call == "forward":
            fn = tf.function(lambda kw: model(**kw).logits, jit_compile=True)
        else:  # generate traced into the caller's XLA function: the checks see symbolic tensors
            fn = tf.function(lambda kw: model.generate(**kw, max_new_tokens=2), jit_compile=True)
        return np.asarray(fn({k: tf.convert_to_tensor(v) for k, v in inputs.items()}))
    import jax
    if call == "forward":
        fn = jax.jit(lambda kw: model(**kw).logits)
    else:
        fn = jax.jit(lambda kw: model.generate(**kw, max_new_tokens=2))
    return np.asarray(fn(inputs))


@pytest.mark.parametrize("case, backend_name, mode", _PARAMS)
def test_bad_input_is_refused_naming_the_argument(case: Case, backend_name: str, mode: str):
    backend, model = _setup(backend_name, case.head)
    with pytest.raises(case.error) as err:
        _run(backend, model, mode, case.call, case.inputs())
    message = str(err.value)
    # eager: the message starts with the argument (no Keras "Exception encountered when calling ..." in front);
    # tf.function puts "in user code: <trace>" before it, so compiled modes only search
    pattern = case.match if mode == "eager" else case.match.lstrip("^")
    assert err.type is case.error
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"


@pytest.mark.parametrize("backend_name, mode", MODES)
@pytest.mark.parametrize("head, call", [("seq2seq", "forward"), ("seq2seq", "generate"), ("causal", "forward")])
def test_valid_inputs_pass(backend_name: str, mode: str, head: str, call: str):
    """The checks refuse nothing the models accept: the inputs the bad cases derive from run in every mode."""
    backend, model = _setup(backend_name, head)
    x = _x()
    if head == "causal":
        inputs = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}
        if mode == "eager":
            inputs["labels"] = np.where(x["attention_mask"] == 1, x["input_ids"], -100)
    elif call == "generate":
        inputs = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}
    else:
        inputs = dict(x, labels=np.where(np.arange(7) < 5, _labels(x), -100)) if mode == "eager" else x
    out = _run(backend, model, mode, call, inputs)
    length = 9 if head == "causal" else 7
    if call == "forward" and mode == "eager":
        assert np.isfinite(out["loss"]) and out["logits"].shape == (3, length, V)
    elif call == "forward":
        assert out.shape == (3, length, V)
    else:
        assert out.shape[0] == 3


@pytest.mark.parametrize("backend_name", ["torch", "tf", "flax"])
def test_generate_checks_once_not_per_step(backend_name: str, monkeypatch):
    """The checks run at the entry of generate, not in the decoding loop (no per-token overhead)."""
    backend, model = _setup(backend_name, "seq2seq")
    module = __import__(f"bart_{backend_name}.inputs", fromlist=["check_model_inputs"])  # the entry checks
    calls = []

    def counting(*args, **kwargs):
        calls.append(sorted(args[1]))
        return check_model_inputs(*args, **kwargs)

    monkeypatch.setattr(module, "check_model_inputs", counting)
    x = _x()
    out = backend.generate(model, x["input_ids"], x["attention_mask"], max_new_tokens=6, min_new_tokens=6)
    assert out.shape[1] == 7  # six steps ran
    assert calls == [["attention_mask", "input_ids"]]


def test_traced_shapes_and_values_are_checked_as_far_as_known():
    """Unknown sizes (None) and unknown values (traced) are skipped; known ones still checked."""
    traced = {"input_ids": TensorInfo((None, None), "int32"), "attention_mask": TensorInfo((None, 9), "int32")}
    check_model_inputs(CONFIG, traced)
    with pytest.raises(ValueError, match=r"^attention_mask has shape \(2, 9\) but input_ids has shape \(3, None\)"):
        check_model_inputs(CONFIG, {"input_ids": TensorInfo((3, None), "int32"),
                                    "attention_mask": TensorInfo((2, 9), "int32")})
    with pytest.raises(ValueError, match=r"^input_ids must have rank 2"):
        check_model_inputs(CONFIG, {"input_ids": TensorInfo((None,), "int32")})
    check_model_inputs(CONFIG, {"input_ids": TensorInfo(None, "int32")})  # unknown rank
    with pytest.raises(TypeError, match=r"^decoder_input_ids must hold integer token ids, got dtype bool"):
        check_model_inputs(CONFIG, {"decoder_input_ids": TensorInfo((None, None), "bool")})
    labels = np.array([[3, -100, 98]])
    check_model_inputs(CONFIG, {"labels": TensorInfo(labels.shape, "int64", labels)})
    check_model_inputs(CONFIG, {"labels": TensorInfo(labels.shape, "int64", None)})  # traced: not read


def test_cache_mask_covers_the_cache():
    """With a KV cache the decoder mask spans the cache, so only its batch must match the decoder ids."""
    ids = TensorInfo((2, 1), "int32", np.ones((2, 1), np.int32))
    check_model_inputs(CONFIG, {"decoder_input_ids": ids, "decoder_attention_mask": TensorInfo((2, 20), "int32")},
                       cache=True, past_length=5)
    with pytest.raises(ValueError, match=r"^decoder_attention_mask has shape \(1, 20\).*batch sizes must match"):
        check_model_inputs(CONFIG, {"decoder_input_ids": ids, "decoder_attention_mask": TensorInfo((1, 20), "int32")},
                           cache=True, past_length=5)
    with pytest.raises(ValueError, match=r"^decoder_input_ids has length 65 \(with 64 cached positions\)"):
        check_model_inputs(CONFIG, {"decoder_input_ids": ids}, cache=True, past_length=64)
