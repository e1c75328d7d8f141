"""Kernel choices of the Flax models: how a product runs (its operand dtype, float32 accumulation), not what it
computes. In a bfloat16 / float16 model products of enough rows run in the narrow type with float32 results
(docs/design.md, "bfloat16"); ``BartLinear`` is every dense layer of the model."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any


# Products of at least this many rows (per batch entry) run in the model's dtype when it is bfloat16 / float16;
# fewer stay float32. Measured under jax.jit on XLA:CPU (docs/design.md, "bfloat16"): a one-row bfloat16 product
# ran 2.5-10x slower than float32 (the tied LM head 65 against 6 ms), from 2 rows on bfloat16 was faster.
LOW_PRECISION_MIN_ROWS = 2


def product_dtype(rows: int, dtype: Dtype) -> Dtype:
    """The dtype the operands of a product with ``rows`` rows run in: ``dtype`` from ``LOW_PRECISION_MIN_ROWS``
    rows on, float32 below."""
    return dtype if rows >= LOW_PRECISION_MIN_ROWS else jnp.float32


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Dtype, rows: int) -> jax.Array:
    """``jnp.einsum(spec, a, b)`` with both operands in ``product_dtype(rows, dtype)``, accumulated and returned
    in float32 (``preferred_element_type``: XLA:CPU runs a bfloat16 product with a bfloat16 result several times
    slower). In a float32 model this is the plain float32 product."""
    operands = product_dtype(rows, dtype)
    return jnp.einsum(spec, a.astype(operands), b.astype(operands), preferred_element_type=jnp.float32)


class BartLinear(nn.Module):
    """``nn.Dense``'s parameters (``kernel`` (in, out), ``bias`` (out,), stored float32 unless ``to_bf16``) with the
    product of ``mixed_einsum``: (..., in) -> (..., out) float32."""
    features: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        y = mixed_einsum("...i,io->...o", x, kernel, self.dtype, rows=x.size // x.shape[-1])
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(jnp.float32)
        return y
