"""The five BART models as ``flax.nnx`` modules, through ``flax.nnx.bridge`` over the linen modules.

There is one network, the linen one of ``bart_flax.modeling``. Each class here holds

- ``bridge``: an ``nnx.bridge.ToNNX`` around the linen module; its ``nnx.Param`` variables are the linen parameter
  tree one to one (``bridge.model.encoder.layers['0'].fc1.kernel`` is ``params["model"]["encoder"]["layers"]["0"]
  ["fc1"]["kernel"]``), and calling it is ``module.apply``: raw module outputs;
- ``rngs``: the ``nnx.Rngs`` whose ``dropout`` stream (or ``default``) draws the dropout key of a ``train=True``
  call.

The public calls (``__call__``, ``encode``, ``decode``, ``init_cache``, ``generate``) are those of the linen class
of the same name run on the bridge's current parameters, so input checks, label shifting, losses and output
dataclasses are the same code and the same numbers::

    from flax import nnx
    import optax
    from bart_flax.nnx import BartForConditionalGeneration

    model = BartForConditionalGeneration(config, rngs=nnx.Rngs(0))             # seeded, the reference init
    model = BartForConditionalGeneration.from_pretrained("path/to/checkpoint")  # or .from_linen(linen_model)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(lambda m: m(**batch, train=True).loss)(model)
        optimizer.update(model, grads)
        return loss

    graphdef, state = nnx.split(model)       # state: the Params (and the Rngs counters)
    model.to_linen().generate(...)           # or model.generate(...); model.save_pretrained(folder)

``nnx.split`` / ``nnx.merge`` / ``nnx.state`` / ``nnx.update`` work as on any NNX module. ``params`` is the
current linen tree, so linen code (``bart_flax.training``, ``save_pretrained``) reads an NNX model's weights.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx import bridge
from flax.nnx.bridge import variables as bridge_variables

from bart_core import BartConfig
from bart_flax import modeling as linen

__all__ = ["BartModel", "BartForConditionalGeneration", "BartForSequenceClassification", "BartForQuestionAnswering",
           "BartForCausalLM", "BartPreTrainedModel"]


class _StaticConfig(BartConfig):
    """The config a bridged linen module holds: NNX keeps the module as static graph data, which must be
    hashable; hashed by its JSON, so equal configs (``BartConfig.__eq__``) hash equal."""

    def __hash__(self) -> int:
        return hash(self.to_json_string())


def _rngs(rngs: nnx.Rngs | int | None) -> nnx.Rngs:
    return rngs if isinstance(rngs, nnx.Rngs) else nnx.Rngs(0 if rngs is None else rngs)


class BartPreTrainedModel(nnx.Module):
    """An NNX face of ``linen_class``: parameters as ``nnx.Param`` in ``bridge``, calls through the linen
    class (see the module docstring)."""
    linen_class: type = linen.BartPreTrainedModel

    def __init__(self, config: BartConfig, *, rngs: nnx.Rngs | int = 0, dtype: Any = jnp.float32,
                 params: Any = None):
        """``rngs``: an ``nnx.Rngs`` or a seed; the ``params`` stream draws the initial weights (the reference
        init of the linen class), the ``dropout`` stream (or ``default``) the dropout keys of training calls.
        ``params``: a linen parameter tree of this head (as ``linen_model.params``) to hold instead; see also
        ``from_linen`` and ``from_pretrained``."""
        rngs = _rngs(rngs)
        # the linen model whose methods the calls run; it keeps no weights (every call passes params=)
        self._linen = self.linen_class(config, dtype=dtype, params={})
        if params is None:
            params = self._linen.init_weights(rngs.params())
        module = self._linen.module_class(_StaticConfig.from_dict(self._linen.config.to_dict()), dtype)
        self.bridge = bridge.ToNNX(module)
        # the variables ToNNX creates from linen's {"params": tree} after an init (its own update path)
        for name, value in bridge_variables.linen_vars_to_nnx_attrs({"params": params}).items():
            setattr(self.bridge, name, nnx.data(value))
        self.rngs = rngs

    # ------------------------------------------------------------------ linen interop
    @classmethod
    def from_linen(cls, model: linen.BartPreTrainedModel, params: Any = None, *,
                   rngs: nnx.Rngs | int = 0) -> "BartPreTrainedModel":
        """The NNX face of a linen model of the same head (e.g. one from ``from_pretrained``): its config,
        compute dtype, generation config and ``params`` (default ``model.params``), copied into ``nnx.Param``s."""
        if not isinstance(model, cls.linen_class) or model.head != cls.linen_class.head:
            raise TypeError(f"{cls.__name__}.from_linen needs a bart_flax.{cls.linen_class.__name__}, got "
                            f"{type(model).__name__}")
        out = cls(model.config, rngs=rngs, dtype=model.dtype, params=model.params if params is None else params)
        out._linen.generation_config = model.generation_config
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, rngs: nnx.Rngs | int = 0, **kwargs):
        """``linen_class.from_pretrained`` (same keywords; ``output_loading_info=True`` returns ``(model,
        info)``), then ``from_linen``."""
        if "_do_init" in kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained: an NNX model holds its parameters (no _do_init)")
        loaded = cls.linen_class.from_pretrained(pretrained_model_name_or_path, **kwargs)
        if isinstance(loaded, tuple):
            return cls.from_linen(loaded[0], rngs=rngs), loaded[1]
        return cls.from_linen(loaded, rngs=rngs)

    def to_linen(self) -> linen.BartPreTrainedModel:
        """A linen model of the same head holding the current parameters (arrays shared, not copied)."""
        model = self.linen_class(self.config, dtype=self.dtype, params=self.params)
        model.generation_config = self.generation_config
        return model

    @property
    def params(self) -> dict:
        """The current parameters as the linen tree (``{"model": {"shared": {"embedding": ...}, ...}}``)."""
        return nnx.state(self.bridge, nnx.Param).to_pure_dict()

    @property
    def config(self) -> BartConfig:
        return self._linen.config

    @property
    def dtype(self) -> Any:
        return self._linen.dtype

    @property
    def generation_config(self):
        return self._linen.generation_config

    @generation_config.setter
    def generation_config(self, value) -> None:
        self._linen.generation_config = value

    @classmethod
    def can_generate(cls) -> bool:
        return cls.linen_class.can_generate()

    def num_parameters(self) -> int:
        return self._linen.num_parameters(self.params)

    def save_pretrained(self, save_directory, **kwargs):
        """``linen_class.save_pretrained`` of the current parameters (the reference layout, atomic)."""
        return self._linen.save_pretrained(save_directory, params=self.params, **kwargs)

    # ------------------------------------------------------------------ calls
    def _train_kwargs(self, train: bool) -> dict:
        return {"train": train, "dropout_rng": self.rngs.dropout() if train else None}

    def __call__(self, *args, train: bool = False, **kwargs):
        """The linen class's ``__call__`` (same arguments and outputs); ``train=True`` turns dropout and
        layerdrop on with a key from ``rngs``."""
        return self._linen(*args, params=self.params, **self._train_kwargs(train), **kwargs)

    def init_cache(self, batch_size: int, max_length: int, encoder_outputs=None) -> dict:
        return self._linen.init_cache(batch_size, max_length, encoder_outputs, params=self.params)


class BartModel(BartPreTrainedModel):
    """NNX face of `bart_flax.BartModel` (the linen module through ``flax.nnx.bridge``)."""
    linen_class = linen.BartModel

    def encode(self, *args, train: bool = False, **kwargs):
        return self._linen.encode(*args, params=self.params, **self._train_kwargs(train), **kwargs)

    def decode(self, *args, train: bool = False, **kwargs):
        return self._linen.decode(*args, params=self.params, **self._train_kwargs(train), **kwargs)


class BartForConditionalGeneration(BartModel):
    """NNX face of `bart_flax.BartForConditionalGeneration` (the linen module through ``flax.nnx.bridge``);
    ``generate`` as the linen class."""
    linen_class = linen.BartForConditionalGeneration

    def generate(self, *args, **kwargs):
        """The linen class's ``generate`` (one compiled program) on the current parameters."""
        return self._linen.generate(*args, params=self.params, **kwargs)


class BartForSequenceClassification(BartModel):
    """NNX face of `bart_flax.BartForSequenceClassification`."""
    linen_class = linen.BartForSequenceClassification


class BartForQuestionAnswering(BartModel):
    """NNX face of `bart_flax.BartForQuestionAnswering`."""
    linen_class = linen.BartForQuestionAnswering


class BartForCausalLM(BartPreTrainedModel):
    """NNX face of `bart_flax.BartForCausalLM`."""
    linen_class = linen.BartForCausalLM

    def generate(self, *args, **kwargs):
        """The linen class's ``generate`` (one compiled program) on the current parameters."""
        return self._linen.generate(*args, params=self.params, **kwargs)
