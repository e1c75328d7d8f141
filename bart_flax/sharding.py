"""Placing parameters and batches on a device mesh with ``jax.sharding``.

Every parameter gets logical axis names from its path (``embed``, ``vocab``, ``heads``, ``mlp``); ``LOGICAL_RULES``
maps them to mesh axes (``data``, ``model``): Megatron-style model parallelism (q/k/v and fc1 split by output,
out_proj and fc2 by input, embeddings by vocabulary) and data parallelism over the batch. A dimension that the
mesh axis does not divide stays replicated. XLA inserts the collectives; the numbers equal one device's.

    mesh = make_mesh(data=2, model=2)
    params = shard_params(model.params, mesh)
    batch = shard_batch(batch, mesh)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("heads", "model"),
    ("mlp", "model"),
    ("embed", None),
    ("length", None),
)


def make_mesh(data: int = 1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``data`` x ``model`` ``jax.sharding.Mesh`` over the first ``data * model`` devices."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) < data * model:
        raise ValueError(f"mesh {data}x{model} needs {data * model} devices, {len(devices)} available")
    return Mesh(np.array(devices[:data * model]).reshape(data, model), ("data", "model"))


def logical_axes(path: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
    """Logical names of a parameter's dimensions, from its tree path."""
    leaf = path[-1]
    owner = path[-2] if len(path) > 1 else ""
    if leaf == "embedding":
        return (None, "embed") if owner == "embed_positions" else ("vocab", "embed")
    if leaf == "final_logits_bias":
        return (None, "vocab")
    if owner in ("q_proj", "k_proj", "v_proj"):
        return ("embed", "heads") if leaf == "kernel" else ("heads",)
    if owner == "out_proj" and len(path) > 2 and path[-3] in ("self_attn", "encoder_attn"):
        return ("heads", "embed") if leaf == "kernel" else (None,)
    if owner == "fc1":
        return ("embed", "mlp") if leaf == "kernel" else ("mlp",)
    if owner == "fc2":
        return ("mlp", "embed") if leaf == "kernel" else (None,)
    if owner == "lm_head":
        return ("embed", "vocab")
    return (None,) * ndim


def to_partition_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                      rules=LOGICAL_RULES) -> P:
    """The ``PartitionSpec`` of one parameter from the logical names of its dimensions (``logical_axes``) through
    ``rules``; a dimension that the mesh axis does not divide stays unsplit."""
    table = dict(rules)
    spec = []
    for name, dim in zip(axes, shape):
        mesh_axis = table.get(name) if name is not None else None
        if mesh_axis is not None and dim % mesh.shape[mesh_axis]:
            mesh_axis = None
        spec.append(mesh_axis)
    return P(*spec)


def param_shardings(params, mesh: Mesh, rules=LOGICAL_RULES):
    """A tree of ``NamedSharding`` matching ``params``."""
    def one(path, x):
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        return NamedSharding(mesh, to_partition_spec(logical_axes(keys, x.ndim), x.shape, mesh, rules))
    return jax.tree_util.tree_map_with_path(one, params)


def shard_params(params, mesh: Mesh, rules=LOGICAL_RULES):
    """Place a parameter tree on ``mesh`` with ``to_partition_spec`` for each leaf."""
    return jax.device_put(params, param_shardings(params, mesh, rules))


def shard_batch(batch, mesh: Mesh):
    """Split every array's leading (batch) axis over ``data``."""
    def one(x):
        spec = P("data", *([None] * (x.ndim - 1))) if x.shape[0] % mesh.shape["data"] == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))
    return jax.tree_util.tree_map(one, batch)


def replicate(tree, mesh: Mesh):
    """Place a tree on every device of ``mesh`` unsplit."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
