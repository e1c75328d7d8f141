"""Serving: SavedModels that plain ``tf.saved_model.load`` runs (the loader needs TensorFlow only).

Two exports, both with ``serving_default``:

- ``model.export(path)`` (``export_forward``): the forward pass. Inputs are int32 ``(batch, length)`` tensors of
  any size, ``input_ids`` / ``attention_mask`` and, for the encoder-decoder heads, ``decoder_input_ids`` /
  ``decoder_attention_mask`` (the reference TF classes' serving inputs); the signature returns a dict of the
  model's output tensors by name (``logits``, ``encoder_last_hidden_state``, ...; hidden states and attentions,
  when the config asks for them, stacked over layers).
- ``export_generate(model, path, **options)``: the whole ``generate`` call. The decoding options are fixed at
  export time (they shape the compiled loop); inputs are ``input_ids`` / ``attention_mask`` int32
  ``(batch, src_len)`` of any size. The signature returns ``sequences`` int32
  ``(batch * num_return_sequences, length)`` cropped to the generated length, and ``sequences_scores`` (beam
  search; zeros otherwise). With ``jit_compile=True`` the decoding loop is an XLA function inside the SavedModel
  (compiled on first use for each input shape).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from bart_core.generation import GenerationConfig, resolve_generation_config, resolve_lengths


class GenerateModule(tf.Module):
    """A ``tf.Module`` whose ``serving_default`` signature runs the model's ``generate`` (what
    ``export_generate`` saves)."""
    def __init__(self, model, gen: GenerationConfig, jit_compile: bool = False):
        super().__init__(name="bart_generate")
        self.model = model  # tracks the variables
        seed = gen.seed or 0
        core = tf.function(lambda ids, mask: model._generate_core(ids, mask, gen, tf.constant([seed, 0])),
                           jit_compile=jit_compile)
        rows = gen.num_return_sequences

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="input_ids"),
                                      tf.TensorSpec([None, None], tf.int32, name="attention_mask")])
        def generate(input_ids, attention_mask):
            result, _ = core(input_ids, attention_mask)
            scores = result.sequences_scores
            if scores is None:
                scores = tf.zeros([tf.shape(input_ids)[0] * rows], tf.float32)
            return {"sequences": result.sequences[:, :result.length], "sequences_scores": scores}

        self.generate = generate


def export_generate(model, path: str | os.PathLike, jit_compile: bool = False, **options) -> str:
    """Write a SavedModel at ``path`` whose ``serving_default`` signature runs ``model.generate(**options)``."""
    if model.head == "causal_lm":
        raise NotImplementedError("export_generate supports BartForConditionalGeneration; BartForCausalLM.generate "
                                  "needs a static prompt length, which the exported signature does not fix")
    gen = resolve_lengths(resolve_generation_config(getattr(model, "generation_config", None), None, options,
                                                    model.config), 1,
                          options.get("max_length") is not None, model.config.max_position_embeddings)
    module = GenerateModule(model, gen, jit_compile)
    path = os.fspath(path)
    tf.saved_model.save(module, path, signatures={"serving_default": module.generate})
    return path


def serving_inputs(model) -> list[tf.TensorSpec]:
    """The forward export's inputs: int32 (batch, length) each, named as the call arguments."""
    names = ["input_ids", "attention_mask"]
    if model.head != "causal_lm":
        names += ["decoder_input_ids", "decoder_attention_mask"]
    return [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]


def _named_specs(input_signature) -> list[tf.TensorSpec]:
    """A dict ``{argument: spec}`` or a list of named specs (``tf.TensorSpec``, ``keras.InputSpec``) -> named
    ``tf.TensorSpec``s; the names are call arguments of the model."""
    if isinstance(input_signature, dict):
        items = list(input_signature.items())
    else:
        items = [(getattr(spec, "name", None), spec) for spec in input_signature]
    specs = []
    for name, spec in items:
        if not name:
            raise ValueError("model.export: give each input a name (a dict {argument: spec} or named "
                             "tf.TensorSpec), e.g. {'input_ids': tf.TensorSpec([None, None], tf.int32)}")
        specs.append(tf.TensorSpec(tuple(spec.shape), tf.as_dtype(spec.dtype or "int32"), name=name))
    return specs


def serving_outputs(out) -> dict:
    """A model output -> ``{name: tensor}``: fields that are set, tuples over layers stacked, the cache left out."""
    return {name: tf.stack(value) if isinstance(value, (tuple, list)) else value
            for name, value in out.items() if name != "past_key_values"}


def export_forward(model, path: str | os.PathLike, input_signature=None, verbose=None) -> str:
    """Write a SavedModel at ``path`` whose ``serving_default`` signature runs the forward pass and returns a dict
    of named tensors (``model.export`` calls this). ``input_signature``: which inputs the signature takes, as a dict
    ``{argument: spec}`` or a list of named specs (default ``serving_inputs(model)``)."""
    specs = serving_inputs(model) if input_signature is None else _named_specs(input_signature)
    names = [spec.name for spec in specs]

    def serve(*tensors):
        out = model(**dict(zip(names, tensors)), use_cache=False, return_dict=True, training=False)
        return serving_outputs(out)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, specs)
    path = os.fspath(path)
    archive.write_out(path, verbose=bool(verbose))
    return path
