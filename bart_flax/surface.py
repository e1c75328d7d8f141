"""The reference's model surface shared by the five Flax models, none of it network code: weight initialisation,
parameter dtype casts, parameter counts, the canonical numpy state dict and checkpoint IO (``bart_flax.io``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bart_flax.inputs import check_inputs


@functools.partial(jax.jit, static_argnums=1)
def _normal_draw(rng, n: int):
    return jax.random.normal(rng, (n,), jnp.float32)


class ModelSurfaceMixin:
    """Needs ``config``, ``head``, ``module``, ``params`` and ``_init_args()`` (example inputs for
    ``module.init``) from the model."""

    def init_weights(self, rng) -> dict:
        """Dense kernels and embeddings ~ N(0, init_std), biases 0, layer-norm scales 1, the token table's
        ``pad_token_id`` row 0 (the reference PyTorch init; its Flax init keeps that row normal).
        The tree comes from ``jax.eval_shape`` (no compile); one normal draw fills every random leaf."""
        args, kw = self._init_args()
        shapes = jax.eval_shape(lambda r: self.module.init({"params": r}, *args, **kw)["params"], rng)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        names = [str(getattr(path[-1], "key", path[-1])) for path, _ in leaves]
        tokens = [len(path) > 1 and str(getattr(path[-2], "key", "")) in ("shared", "embed_tokens")
                  for path, _ in leaves]
        random = [n in ("kernel", "embedding") for n in names]
        total = sum(int(np.prod(x.shape)) for (_, x), r in zip(leaves, random) if r)
        flat = np.asarray(_normal_draw(rng, total)) * np.float32(self.config.init_std)
        out, pos = [], 0
        pad = self.config.pad_token_id
        for (_, x), name, r, token_table in zip(leaves, names, random, tokens):
            n = int(np.prod(x.shape))
            if r:
                arr, pos = flat[pos:pos + n].reshape(x.shape), pos + n
                if token_table and pad is not None:
                    arr = arr.copy()
                    arr[pad] = 0.0                                            # (V, D): the padding row
            else:
                arr = np.full(x.shape, 1.0 if name == "scale" else 0.0, np.float32)
            out.append(jnp.asarray(arr, jnp.float32))
        return jax.tree_util.tree_unflatten(treedef, out)

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
