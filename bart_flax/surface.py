"""The reference's model surface shared by the five Flax models, none of it network code: parameter dtype casts,
parameter counts, the canonical numpy state dict and checkpoint IO (through ``bart_flax.io``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bart_flax.inputs import check_inputs


class ModelSurfaceMixin:
    """Needs ``config``, ``head`` and ``params`` from the model."""

    def _cast_params(self, params, dtype, mask):
        """``params`` (default ``self.params``) with floating leaves cast to ``dtype``; ``mask``, a tree of the
        same structure holding booleans, casts only the leaves where it is True (the reference's signature)."""
        params = self.params if params is None else params

        def cast(x, keep=True):
            return x.astype(dtype) if keep and jnp.issubdtype(x.dtype, jnp.floating) else x
        if mask is None:
            return jax.tree_util.tree_map(cast, params)
        return jax.tree_util.tree_map(lambda x, m: cast(x, bool(m)), params, mask)

    def to_bf16(self, params=None, mask=None):
        """Return ``params`` with floating leaves cast to bfloat16 (see ``_cast_params`` for ``mask``)."""
        return self._cast_params(params, jnp.bfloat16, mask)

    def to_fp16(self, params=None, mask=None):
        """Return ``params`` with floating leaves cast to float16 (see ``_cast_params`` for ``mask``)."""
        return self._cast_params(params, jnp.float16, mask)

    def to_fp32(self, params=None, mask=None):
        """Return ``params`` with floating leaves cast to float32 (see ``_cast_params`` for ``mask``)."""
        return self._cast_params(params, jnp.float32, mask)

    @classmethod
    def can_generate(cls) -> bool:
        return cls.head in ("conditional_generation", "causal_lm")

    def _check_generate_inputs(self, **args) -> None:
        """``generate``'s input check (``check_inputs`` for this head), so that decoding imports nothing from here."""
        check_inputs(self.config, self.head == "causal_lm", **args)

    def num_parameters(self, params=None) -> int:
        params = self.params if params is None else params
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))

    def numpy_state_dict(self) -> dict[str, np.ndarray]:
        from bart_flax.io import params_to_state_dict
        return params_to_state_dict(self.params, self.config, self.head)

    def load_numpy_state_dict(self, state, source: str = "state dict"):
        from bart_flax.io import load_state_into
        load_state_into(self, state, source)
        return self

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *model_args, **kwargs):
        """Load a checkpoint folder or hub id; keywords as the reference (see ``bart_flax.io.from_pretrained``)."""
        from bart_flax.io import from_pretrained
        return from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, params=None, **kwargs):
        """Save atomically in the reference layout (see ``bart_flax.io.save_pretrained``)."""
        from bart_flax.io import save_pretrained
        return save_pretrained(self, save_directory, params=params, **kwargs)
