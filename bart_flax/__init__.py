"""JAX/Flax backend: the five BART models as flax.linen modules with pure, jit-able calls.

The same five as ``flax.nnx`` modules (``nnx.bridge`` over these linen modules; ``nnx.jit``, ``nnx.Optimizer``,
``nnx.split``): ``from bart_flax.nnx import BartForConditionalGeneration`` (imported on demand).
"""

import dataclasses as _dataclasses

import jax as _jax

from bart_core import outputs as _outputs


def _register_outputs() -> None:
    """Output dataclasses become pytrees so they pass through jax.jit."""
    for obj in vars(_outputs).values():
        if isinstance(obj, type) and _dataclasses.is_dataclass(obj) and issubclass(obj, _outputs.ModelOutput) \
                and obj is not _outputs.ModelOutput:
            try:
                _jax.tree_util.register_dataclass(obj, data_fields=[f.name for f in _dataclasses.fields(obj)],
                                                  meta_fields=[])
            except ValueError:  # already registered
                pass


_register_outputs()

from bart_flax.modeling import (  # noqa: E402
    BartForCausalLM,
    BartForConditionalGeneration,
    BartForQuestionAnswering,
    BartForSequenceClassification,
    BartModel,
    BartPreTrainedModel,
)
from bart_flax.pipelines import pipeline  # noqa: E402

__all__ = ["BartModel", "BartForConditionalGeneration", "BartForSequenceClassification", "BartForQuestionAnswering",
           "BartForCausalLM", "BartPreTrainedModel", "pipeline"]
