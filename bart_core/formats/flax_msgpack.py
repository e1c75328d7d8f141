"""The reference Flax checkpoint layout (``flax_model.msgpack``) as a declared mapping from canonical names.

The file is flax's msgpack serialisation of the parameter tree: nested maps keyed by module name, leaves are
msgpack ext type 1 holding ``msgpack((shape, dtype name, C-order bytes))``; leaves larger than 2**30 bytes are
split into ``{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}``. Implemented with the
``msgpack`` package alone, so reading and writing needs no jax.

Mapping (``LEAF_RULES``): a canonical name ``a.b.c.<leaf>`` lives at tree path ``a/b/c/<flax leaf>``:

========================  ============  =====================================================
canonical kind            flax leaf     transform
========================  ============  =====================================================
linear weight (out, in)   ``kernel``    transpose to (in, out)
embedding / position      ``embedding`` none (a Dense ``lm_head`` stores ``kernel``, transposed)
norm weight               ``scale``     none
any bias                  ``bias``      none
final_logits_bias         (itself)      none
========================  ============  =====================================================

Tied aliases (``param_table(...).tied_to``) are not stored, as in the reference.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from bart_core.config import BartConfig
from bart_core.fileio import atomic_path
from bart_core.names import param_table

EXT_NDARRAY = 1
EXT_NPSCALAR = 3
CHUNK_KEY = "__msgpack_chunked_array__"
MAX_CHUNK_BYTES = 2 ** 30

# canonical kind -> (flax leaf name, transpose?)
LEAF_RULES: dict[str, tuple[str, bool]] = {
    "linear": ("kernel", True),
    "embedding": ("embedding", False),
    "position": ("embedding", False),
    "norm_weight": ("scale", False),
    "norm_bias": ("bias", False),
    "bias": ("bias", False),
}
DENSE_EMBEDDINGS = ("lm_head.weight",)   # an output projection the reference stores as an nn.Dense kernel


def _msgpack():
    try:
        import msgpack
    except ImportError:
        raise ImportError("reading or writing flax_model.msgpack needs the msgpack package "
                          "(pip install msgpack)") from None
    return msgpack


def flax_path(name: str, kind: str) -> tuple[tuple[str, ...], bool]:
    """Tree path and transpose flag of one canonical tensor."""
    if kind == "logits_bias":
        return tuple(name.split(".")), False
    parts = name.split(".")
    if name in DENSE_EMBEDDINGS:
        return tuple(parts[:-1]) + ("kernel",), True
    leaf, transpose = LEAF_RULES[kind]
    return tuple(parts[:-1]) + (leaf,), transpose


def flax_mapping(config: BartConfig, head: str) -> list[tuple[str, tuple[str, ...], bool]]:
    """``[(canonical name, tree path, transpose)]`` for every stored tensor of ``head``."""
    return [(s.name, *flax_path(s.name, s.kind)) for s in param_table(config, head) if s.stored]


# ----------------------------------------------------------------------------------------- decoding
def _dtype(name: bytes | str) -> np.dtype:
    name = name.decode() if isinstance(name, bytes) else name
    if name == "bfloat16":
        return np.dtype(np.uint16)  # raw bits, widened by the caller
    return np.dtype(name)


def _array_from_ext(data: bytes) -> np.ndarray:
    msgpack = _msgpack()
    shape, dtype_name, buf = msgpack.unpackb(data, raw=True)
    arr = np.frombuffer(buf, dtype=_dtype(dtype_name)).reshape(shape)
    if (dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name) == "bfloat16":
        from bart_core.checkpoint import bf16_to_float32
        arr = bf16_to_float32(arr)
    return arr


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_NDARRAY:
        return _array_from_ext(data)
    if code == EXT_NPSCALAR:
        return _array_from_ext(data)[()]
    raise ValueError(f"unsupported msgpack ext type {code}")


def _unchunk(tree: Any) -> Any:
    if isinstance(tree, dict):
        if tree.get(CHUNK_KEY):
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            arr = np.asarray(v)
            if arr.dtype.kind not in "fiub":
                raise ValueError(f"leaf {'/'.join(prefix + (str(k),))} is not a numeric array")
            out[prefix + (str(k),)] = arr
    return out


def read_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` from a reference ``flax_model.msgpack`` (any head)."""
    from bart_core.checkpoint import CheckpointError
    msgpack = _msgpack()
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
        if not isinstance(tree, dict):
            raise CheckpointError(f"{path}: expected a parameter tree, got {type(tree).__name__}")
        tree = _unchunk(tree)
        if set(tree) == {"params"}:  # a variables dict rather than params
            tree = tree["params"]
        flat = _flatten(tree)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.exceptions.ExtraData,
            msgpack.exceptions.UnpackException) as e:  # every way a corrupt tree fails to decode
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"{path}: not a flax msgpack checkpoint ({type(e).__name__}: {detail})") from None
    leaf_to_kind = {"kernel": True, "embedding": False, "scale": False, "bias": False}
    out = {}
    for p, arr in flat.items():
        leaf = p[-1]
        if leaf in leaf_to_kind:
            name = ".".join(p[:-1]) + (".bias" if leaf == "bias" else ".weight")
            out[name] = np.ascontiguousarray(arr.T) if leaf_to_kind[leaf] else arr
        else:  # final_logits_bias and anything unknown keep their path (reported as unexpected if unused)
            out[".".join(p)] = arr
    return out


# ----------------------------------------------------------------------------------------- encoding
def _ext_default(obj: Any) -> Any:
    msgpack = _msgpack()
    if isinstance(obj, np.ndarray):
        return msgpack.ExtType(EXT_NDARRAY, _array_bytes(obj))
    if isinstance(obj, np.generic):
        return msgpack.ExtType(EXT_NPSCALAR, _array_bytes(np.asarray(obj)))
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _array_bytes(arr: np.ndarray) -> bytes:
    msgpack = _msgpack()
    return msgpack.packb((list(arr.shape), arr.dtype.name, np.ascontiguousarray(arr).tobytes("C")),
                         use_bin_type=True)


def _chunked(arr: np.ndarray) -> Any:
    if arr.nbytes <= MAX_CHUNK_BYTES:
        return arr
    n = max(1, MAX_CHUNK_BYTES // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    chunks = [flat[i:i + n] for i in range(0, flat.size, n)]
    return {CHUNK_KEY: True, "shape": {str(i): int(d) for i, d in enumerate(arr.shape)},
            "chunks": {str(i): c for i, c in enumerate(chunks)}}


def to_flax_tree(tensors: Mapping[str, np.ndarray], config: BartConfig, head: str) -> dict:
    """The nested parameter tree of the reference Flax class for ``head``."""
    from bart_core.checkpoint import CheckpointError
    tree: dict = {}
    for name, path, transpose in flax_mapping(config, head):
        if name not in tensors:
            raise CheckpointError(f"no tensor {name!r} to write to flax_model.msgpack")
        arr = np.asarray(tensors[name])
        if arr.dtype.name == "bfloat16" or arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        arr = np.ascontiguousarray(arr.T if transpose else arr)
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = arr
    return tree


def write_flax_msgpack(tensors: Mapping[str, np.ndarray], config: BartConfig, head: str,
                       path: str | os.PathLike) -> str:
    """Write ``tensors`` (canonical names) as the ``flax_model.msgpack`` of the reference Flax class for
    ``head``; atomic."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        stage_flax_msgpack(tmp, tensors, config, head)
    return path


def stage_flax_msgpack(path: str, tensors: Mapping[str, np.ndarray], config: BartConfig, head: str) -> None:
    """Write the ``flax_model.msgpack`` layout at ``path`` directly (a staged temporary path)."""
    msgpack = _msgpack()
    tree = to_flax_tree(tensors, config, head)

    def chunk_all(node: dict) -> dict:
        return {k: chunk_all(v) if isinstance(v, dict) else _chunked(v) for k, v in node.items()}

    data = msgpack.packb(chunk_all(tree), default=_ext_default, strict_types=True, use_bin_type=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
