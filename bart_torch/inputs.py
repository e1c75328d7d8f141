"""The entry checks of the torch models: their arguments described for ``bart_core.inputs.check_model_inputs``
(the one definition of what is accepted), skipped under torch.jit / torch.compile tracing."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from bart_core.config import BartConfig
from bart_core.inputs import VALUE_CHECKED, TensorInfo, check_model_inputs, check_token_ids
from bart_core.outputs import BaseModelOutput
from bart_torch.cache import as_cache
from bart_torch.kernels import _is_tracing


def _check_ids(ids: Optional[torch.Tensor], config: BartConfig, name: str, past_length: int = 0) -> None:
    if ids is not None and not _is_tracing():
        check_token_ids(ids.detach().cpu().numpy(), config, name, past_length)


def _tensor_info(x, values: bool) -> TensorInfo:
    if not isinstance(x, torch.Tensor):  # generate also takes lists and numpy arrays
        x = np.asarray(x)
        return TensorInfo(x.shape, x.dtype.name, x if values and x.dtype.kind in "iu" else None)
    integer = not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    return TensorInfo(tuple(x.shape), str(x.dtype).removeprefix("torch."),
                      x.detach().cpu().numpy() if values and integer else None)


def check_inputs(config: BartConfig, causal: bool = False, past_key_values=None, **args) -> None:
    """``bart_core.inputs.check_model_inputs`` on the arguments given, once per entry point (forward, generate);
    skipped under torch.jit / torch.compile tracing."""
    if _is_tracing():
        return
    encoder = args.pop("encoder_outputs", None)
    if encoder is not None:
        args["encoder_outputs"] = encoder[0] if isinstance(encoder, (tuple, list, BaseModelOutput)) else encoder
    past = 0 if past_key_values is None else as_cache(past_key_values).index
    check_model_inputs(config, {k: _tensor_info(v, k in VALUE_CHECKED) for k, v in args.items() if v is not None},
                       causal, past_key_values is not None, past)
