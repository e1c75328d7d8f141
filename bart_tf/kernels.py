"""Kernel choices of the Keras models: how a product runs (its operand dtype, one 2-D matmul), not what it computes.
Under a mixed policy (bfloat16 / float16) products of enough rows run in the narrow type with float32 results
(docs/design.md, "bfloat16"); ``BartLinear`` is every Dense of the model, ``BartLayerNorm`` every layer norm."""

from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

# Products of at least this many rows (per batch entry) run in the compute dtype of a mixed policy (bfloat16 /
# float16); fewer stay float32. Measured under XLA:CPU (docs/design.md, "bfloat16"): a one-row bfloat16 product
# ran 5-10x slower than float32 (768 -> 3072: 6.6 against 0.6 ms), from 2 rows on bfloat16 was faster.
LOW_PRECISION_MIN_ROWS = 2


def product_dtype(rows, dtype):
    """The dtype the operands of a product with ``rows`` rows run in: ``dtype`` from ``LOW_PRECISION_MIN_ROWS``
    rows on (or when the count is not static), float32 below."""
    return tf.float32 if rows is not None and rows < LOW_PRECISION_MIN_ROWS else tf.as_dtype(dtype)


# A compiled generate (tf.function, XLA) runs its decoding steps in a tf.while_loop, where a product would cast its
# float32 weight to the compute dtype at every step: that reads 4 bytes and writes 2 per parameter, more traffic
# than the narrow product saves. ``precast_weights`` casts the weights once, before the loop, and ``mixed_matmul``
# takes the cast copy. Only while tracing a graph: an eager call's copies would be captured as constants by the
# cached step graph. ``PRECAST_WEIGHTS = False`` turns it off (bench_tf.py --only bf16 compares the two).
PRECAST_WEIGHTS = True
_precast = threading.local()  # .copies: {id(variable): tensor in the compute dtype} inside precast_weights


@contextlib.contextmanager
def precast_weights(variables, dtype):
    """Inside the block, products on the (2-D weight) variables ``variables()`` lists read a copy cast to ``dtype``
    here, once (``variables`` is called only when the precast applies: graph tracing, a narrow dtype)."""
    copies = getattr(_precast, "copies", None)
    if not PRECAST_WEIGHTS or tf.executing_eagerly() or tf.as_dtype(dtype) == tf.float32 or copies is not None:
        yield
        return
    _precast.copies = {id(v): tf.cast(v, dtype) for v in variables()}
    try:
        yield
    finally:
        _precast.copies = None


def _operand(x, dtype):
    """x in ``dtype``: the precast copy of a weight variable when there is one."""
    copies = getattr(_precast, "copies", None)
    if copies and id(x) in copies and copies[id(x)].dtype == dtype:
        return copies[id(x)]
    return tf.cast(x, dtype)


def mixed_matmul(a, b, dtype, rows, transpose_b: bool = False):
    """``a @ b`` (``b^T`` with ``transpose_b``; batched over leading axes) with both operands in
    ``product_dtype(rows, dtype)`` and a float32 result. Under XLA a low-precision product is one
    ``BatchMatMulV3(Tout=float32)``: float32 accumulation, and XLA:CPU runs it several times faster than a product
    with a bfloat16 result; TensorFlow's own kernels have no such op, so outside XLA the product is cast after."""
    operands = product_dtype(rows, dtype)
    a, b = tf.cast(a, operands), _operand(b, operands)
    if operands == tf.float32:
        return tf.matmul(a, b, transpose_b=transpose_b)
    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return tf.raw_ops.BatchMatMulV3(x=a, y=b, Tout=tf.float32, adj_y=transpose_b)
    return tf.cast(tf.matmul(a, b, transpose_b=transpose_b), tf.float32)


def matmul_2d(x, w, transpose_b: bool = False, dtype=tf.float32):
    """``x @ w`` (``w.T`` with ``transpose_b``) on the last axis of x (..., in) as one 2-D ``mixed_matmul`` in
    ``dtype`` -> (..., out) float32.

    A 3-D by 2-D ``tf.matmul`` is a broadcasting BatchMatMul: outside XLA its gradient builds a (batch, in, out)
    kernel gradient and sums it (forward + backward measured 1.55x slower at 4 x 256 tokens, 768 -> 3072), and
    under XLA it copies a transposed ``w`` on every call (the tied LM head's whole (V, D) table) and runs ~15%
    slower at one row. Leading sizes stay static when known (no shape ops in eager mode)."""
    if x.shape.rank == 2:
        return mixed_matmul(x, w, dtype, x.shape[0], transpose_b)
    size_in, out = (w.shape[1], w.shape[0]) if transpose_b else (w.shape[0], w.shape[1])
    lead = x.shape[:-1]
    rows = lead.num_elements() if lead.is_fully_defined() else None
    y = mixed_matmul(tf.reshape(x, [-1, size_in]), w, dtype, rows, transpose_b)      # (N, out)
    if rows is not None:
        return tf.reshape(y, lead.as_list() + [out])
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [out]], 0))


class BartLinear(keras.layers.Dense):
    """Dense as one 2-D matmul plus bias (``matmul_2d``) in the compute dtype, float32 result. Keras' Dense goes
    through tensordot: ~10 ops per call, which dominated eager decoding."""

    def call(self, x):  # (..., in) -> (..., out) float32
        y = matmul_2d(x, self.kernel, dtype=self.compute_dtype)
        return y + tf.cast(self.bias, tf.float32) if self.use_bias else y


class BartLayerNorm(keras.layers.LayerNormalization):
    """LayerNormalization computed and returned in float32 under every policy (the residual stream is float32),
    with a handful of ops (same formula, biased variance)."""

    def call(self, x):  # (..., D) -> (..., D) float32
        x32 = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon) * tf.cast(self.gamma, tf.float32)
        return y + tf.cast(self.beta, tf.float32)
