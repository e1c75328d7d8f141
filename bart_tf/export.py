"""Serving: the whole ``generate`` call as a SavedModel signature that plain ``tf.saved_model.load`` runs.

The decoding options are fixed at export time (they shape the compiled loop); inputs are
``input_ids`` / ``attention_mask`` int32 ``(batch, src_len)`` of any size. The signature returns
``sequences`` int32 ``(batch * num_return_sequences, length)`` cropped to the generated length, and
``sequences_scores`` (beam search; zeros otherwise). With ``jit_compile=True`` the decoding loop is an XLA
function inside the SavedModel (compiled on first use for each input shape). The loader needs TensorFlow only.
"""

from __future__ import annotations

import os

import tensorflow as tf

from bart_core.generation import GenerationConfig, resolve_generation_config, resolve_lengths


class GenerateModule(tf.Module):
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
            out = core(input_ids, attention_mask)
            scores = out["sequences_scores"]
            if scores is None:
                scores = tf.zeros([tf.shape(input_ids)[0] * rows], tf.float32)
            return {"sequences": out["sequences"][:, :out["length"]], "sequences_scores": scores}

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
