"""The entry checks of the Flax models: their arguments described for ``bart_core.inputs.check_model_inputs``
(the one definition of what is accepted), with what JAX can know about them (shapes always, values only when
concrete), and the check that a decoder call fits its preallocated cache.

Every entry point (``__call__``, ``encode``, ``decode``, ``generate``) checks its arguments with
``bart_core.inputs.check_model_inputs``. Shapes and dtypes are static, so ranks, masks matching their sequence,
integer ids and labels and lengths are checked inside ``jax.jit`` too. Values cannot be checked on tracers: an
out-of-range id gathers a row of NaN (``jnp.take(mode="fill")``), so the outputs of that sequence are NaN rather
than silently wrong; a label ``>= vocab_size`` gives a NaN loss and a negative label other than -100 reads the
log-probability of ``vocab_size + label``; a decode step past the end of the cache writes at the clamped last slot
(``lax.dynamic_update_slice``) and its output is undefined. Outside ``jit`` all of these raise ``ValueError``
before any computation.
"""

from __future__ import annotations

import jax
import numpy as np

from bart_core import BartConfig
from bart_core.inputs import VALUE_CHECKED, TensorInfo, check_model_inputs
from bart_core.outputs import BaseModelOutput


def _is_concrete(x) -> bool:
    return x is not None and not isinstance(x, jax.core.Tracer)


def _tensor_info(x, values: bool) -> TensorInfo:
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):  # lists
        x = np.asarray(x)
    integer = np.issubdtype(x.dtype, np.integer)
    return TensorInfo(tuple(x.shape), np.dtype(x.dtype).name,
                      np.asarray(x) if values and integer and _is_concrete(x) else None)


def check_inputs(config: BartConfig, causal: bool = False, past_key_values=None, **args) -> None:
    """``bart_core.inputs.check_model_inputs`` on the arguments given, once per entry point (``__call__``,
    ``encode``, ``decode``, ``generate``). Shapes and dtypes are checked under ``jax.jit`` too; values (ids and
    labels in range) only when concrete: under jit an id outside the vocabulary reads a clamped row and a label
    outside it gives a wrong or NaN loss."""
    encoder = args.pop("encoder_outputs", None)
    if encoder is not None:
        args["encoder_outputs"] = _hidden(encoder)
    past = 0
    if past_key_values is not None and _is_concrete(past_key_values["index"]):
        past = int(past_key_values["index"])
    check_model_inputs(config, {k: _tensor_info(v, k in VALUE_CHECKED) for k, v in args.items() if v is not None},
                       causal, past_key_values is not None, past)


def _hidden(encoder_outputs):
    if isinstance(encoder_outputs, BaseModelOutput):
        return encoder_outputs.last_hidden_state
    if isinstance(encoder_outputs, (tuple, list)):
        return encoder_outputs[0]
    return encoder_outputs


def _as_encoder_output(encoder_outputs):
    if encoder_outputs is None or isinstance(encoder_outputs, BaseModelOutput):
        return encoder_outputs
    if isinstance(encoder_outputs, (tuple, list)):
        return BaseModelOutput(*encoder_outputs)
    return BaseModelOutput(last_hidden_state=encoder_outputs)


def _check_cache(cache, t: int, batch) -> None:
    """A decoder call of ``t`` positions (batch ``batch``, None: unchecked) fits ``cache`` (None: no cache)."""
    if cache is None:
        return
    length = cache["layers"][0]["key"].shape[2]
    if t > length:
        raise ValueError(f"{t} decoder positions do not fit a cache of max_length {length}")
    if batch is not None and batch != cache["layers"][0]["key"].shape[0]:
        raise ValueError(f"decoder batch {batch} does not match the cache batch "
                         f"{cache['layers'][0]['key'].shape[0]}")
    index = cache["index"]
    if _is_concrete(index) and int(index) + t > length:
        raise ValueError(f"cache holds {int(index)} of {length} positions; {t} more do not fit "
                         "(init_cache with a larger max_length)")
