"""The entry checks of the Keras models: their arguments described for ``bart_core.inputs.check_model_inputs``
(the one definition of what is accepted), with what TensorFlow can know about them (static shapes always, values
only in eager mode).

The model's ``__call__`` and ``generate`` check their arguments with
``bart_core.inputs.check_model_inputs`` before Keras wraps ``call``, so the error starts with the problem. Shapes
and dtypes (ranks, masks matching their sequence, integer ids and labels, lengths) are checked under
``tf.function`` and XLA too; values (ids and labels in ``[0, vocab_size)``) only in eager mode. Inside
``tf.function`` an out-of-range id is not detected: without XLA, TensorFlow's CPU gather raises
``InvalidArgumentError`` while its GPU gather returns a zero row; under XLA (``jit_compile=True``) gathers clamp
the index into ``[0, vocab_size - 1]``, so the id silently reads the first or last embedding row, and a label
``>= vocab_size`` gives a NaN loss. Validate ids and labels before entering compiled code.
"""

from __future__ import annotations

import functools
import inspect

import keras
import numpy as np
import tensorflow as tf

from bart_core import outputs as O
from bart_core.config import BartConfig
from bart_core.inputs import VALUE_CHECKED, TensorInfo, check_model_inputs, check_token_ids


def _check_ids(ids, config: BartConfig, name: str, past_length=0) -> None:
    if ids is not None and tf.executing_eagerly():
        check_token_ids(np.asarray(ids), config, name, int(past_length))


def _tensor_info(x, values: bool) -> TensorInfo:
    if not tf.is_tensor(x):  # lists and numpy arrays
        x = np.asarray(x)
        return TensorInfo(x.shape, x.dtype.name, x if values and x.dtype.kind in "iu" else None)
    dtype = tf.as_dtype(x.dtype)
    shape = None if x.shape.rank is None else tuple(x.shape.as_list())
    concrete = values and dtype.is_integer and tf.executing_eagerly()
    return TensorInfo(shape, dtype.name, np.asarray(x) if concrete else None)


@tf.autograph.experimental.do_not_convert  # plain Python on static shapes: autograph must not rewrite it
def check_inputs(config: BartConfig, causal: bool = False, past_key_values=None, **args) -> None:
    """``bart_core.inputs.check_model_inputs`` on the arguments given, once per entry point (the model's
    ``__call__`` and ``generate``). Shapes and dtypes are checked under tf.function and XLA too; values (ids and
    labels in range) in eager mode only. Keras' symbolic placeholders are skipped."""
    encoder = args.pop("encoder_outputs", None)
    if encoder is not None:
        args["encoder_outputs"] = encoder[0] if isinstance(encoder, (tuple, list, O.ModelOutput)) else encoder
    past = 0
    if past_key_values is not None:
        past = tf.get_static_value(past_key_values.index) or 0
    check_model_inputs(config, {k: _tensor_info(v, k in VALUE_CHECKED) for k, v in args.items()
                                if v is not None and not isinstance(v, keras.KerasTensor)},
                       causal, past_key_values is not None, int(past))


_CHECKED = ("input_ids", "attention_mask", "inputs_embeds", "decoder_input_ids", "decoder_attention_mask",
            "decoder_inputs_embeds", "encoder_outputs", "encoder_hidden_states", "encoder_attention_mask", "labels")


@functools.lru_cache(maxsize=None)
def _call_parameters(cls) -> tuple:
    """Names of ``cls.call``'s parameters, in order (positional arguments of ``__call__`` map onto them)."""
    return tuple(inspect.signature(cls.call).parameters)[1:]


def check_call(model, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The model's ``__call__`` arguments checked (``check_inputs`` for its head) -> ``(args, kwargs)`` for Keras.
    As the reference, the first argument may be a dict of inputs (the tokenizer's ``BatchEncoding``): its entries
    become keyword arguments, beside the keyword arguments given (an argument given both ways is an error)."""
    if args and isinstance(args[0], dict):
        inputs = dict(args[0])
        both = sorted(set(inputs) & set(kwargs))
        if both:
            raise TypeError(f"{type(model).__name__}: {both} given both in the input dict and as keywords")
        args, kwargs = args[1:], {**inputs, **kwargs}
        if args:
            raise TypeError(f"{type(model).__name__}: with a dict of inputs, pass the rest as keywords")
    given = dict(zip(_call_parameters(type(model)), args), **kwargs)
    if model.head not in ("conditional_generation", "causal_lm"):
        given.pop("labels", None)  # class labels and positions: not token ids
    check_inputs(model.config, model.head == "causal_lm", given.get("past_key_values"),
                 **{k: given.get(k) for k in _CHECKED})
    return args, kwargs
