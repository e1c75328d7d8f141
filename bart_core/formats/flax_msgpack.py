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
import struct
from typing import Any, Mapping

import numpy as np

from bart_core.config import BartConfig
from bart_core.errors import CheckpointError
from bart_core.fileio import atomic_path
from bart_core.formats.safetensors import LazyTensor, bf16_to_float32, bfloat16
from bart_core.names import HEADS, ParamSpec, invert_leaves, param_table

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


def _stored_leaf(spec: ParamSpec, head: str) -> tuple[str, bool]:
    path, transpose = flax_path(spec.name, spec.kind)
    return path[-1], transpose


# flax leaf -> (canonical leaf, transposed?): the inverse of ``flax_path`` over the name table
LEAF_BACK = invert_leaves(_stored_leaf)


def flax_canonical(path: tuple[str, ...]) -> tuple[str, bool]:
    """Tree path -> (canonical name, transposed?): the inverse of ``flax_path``. A path whose leaf the table does
    not know keeps its dotted path (reported as unexpected if unused)."""
    if path[-1] not in LEAF_BACK:
        return ".".join(path), False
    leaf, transposed = LEAF_BACK[path[-1]]
    return ".".join(path[:-1] + (leaf,)), transposed


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
    out = {}
    for p, arr in flat.items():
        name, transposed = flax_canonical(p)
        out[name] = np.ascontiguousarray(arr.T) if transposed else arr
    return out


# ----------------------------------------------------------------------------------------- encoding
def to_flax_tree(tensors: Mapping[str, np.ndarray], config: BartConfig, head: str) -> dict:
    """The nested parameter tree of the reference Flax class for ``head``."""
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


def _leaf_index(path: str) -> dict[tuple[str, ...], tuple[int, int, int]]:
    """Tree path -> (ext code, payload offset, payload length) of every leaf of a msgpack file, found by
    walking the headers and seeking over the payloads (no tensor data is read)."""
    size = os.path.getsize(path)
    out: dict[tuple[str, ...], tuple[int, int, int]] = {}
    with open(path, "rb") as f:
        def read(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise CheckpointError(f"{path}: truncated msgpack data at byte {f.tell()}")
            return b

        def skip(n: int) -> None:
            if f.tell() + n > size:
                raise CheckpointError(f"{path}: truncated msgpack data (a value runs past the end of the file)")
            f.seek(n, 1)

        def uint(n: int) -> int:
            return int.from_bytes(read(n), "big")

        def value(prefix: tuple[str, ...]):
            t = read(1)[0]
            if t <= 0x7F or t >= 0xE0 or t in (0xC0, 0xC2, 0xC3):
                return None
            if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
                n = t & 0x0F if t <= 0x8F else uint(2 if t == 0xDE else 4)
                for _ in range(n):
                    k = value(prefix)
                    if not isinstance(k, str):
                        raise CheckpointError(f"{path}: non-string key under {'/'.join(prefix) or 'the root'}")
                    value(prefix + (k,))
                return None
            if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
                n = t & 0x1F if t <= 0xBF else uint({0xD9: 1, 0xDA: 2, 0xDB: 4}[t])
                return read(n).decode("utf-8")
            if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
                n = t & 0x0F if t <= 0x9F else uint(2 if t == 0xDC else 4)
                for _ in range(n):
                    value(prefix)
                return None
            if t in (0xC4, 0xC5, 0xC6):
                skip(uint({0xC4: 1, 0xC5: 2, 0xC6: 4}[t]))
                return None
            fixed = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
            if t in fixed:
                skip(fixed[t])
                return None
            if 0xD4 <= t <= 0xD8 or t in (0xC7, 0xC8, 0xC9):
                n = 1 << (t - 0xD4) if t >= 0xD4 else uint({0xC7: 1, 0xC8: 2, 0xC9: 4}[t])
                code = int.from_bytes(read(1), "big", signed=True)
                out[prefix] = (code, f.tell(), n)
                skip(n)
                return None
            raise CheckpointError(f"{path}: not msgpack data (byte 0x{t:02x} at {f.tell() - 1})")

        value(())
        if f.tell() != size:
            raise CheckpointError(f"{path}: {size - f.tell()} bytes of trailing data after the msgpack tree")
    return out


def open_file(path: str, config: BartConfig) -> dict[str, LazyTensor] | None:
    """``{canonical name: LazyTensor}`` reading one msgpack leaf per load, located through the declared
    ``flax_msgpack.flax_mapping`` of every head; ``None`` for anything else (chunked leaves, unknown paths)."""
    import msgpack

    known: dict[tuple[str, ...], tuple[str, bool]] = {}
    for head in reversed(HEADS):
        for name, fpath, transpose in flax_mapping(config, head):
            known[tuple(fpath)] = (name, transpose)
    index = _leaf_index(path)
    if set(p[0] for p in index) == {"params"}:
        index = {p[1:]: v for p, v in index.items()}
    out: dict[str, LazyTensor] = {}
    for fpath, (code, offset, n) in index.items():
        hit = known.get(fpath)
        if hit is None or code != EXT_NDARRAY:
            return None
        with open(path, "rb") as f:  # the small head of the payload: shape and dtype
            f.seek(offset)
            unpacker = msgpack.Unpacker(f, raw=False)
            if unpacker.read_array_header() != 3:
                raise CheckpointError(f"{path}: leaf {'/'.join(fpath)} is not an ndarray")
            shape, dtype_name = tuple(unpacker.unpack()), unpacker.unpack()
        name, transpose = hit

        def load(offset=offset, n=n, transpose=transpose, fpath=fpath) -> np.ndarray:
            with open(path, "rb") as f:
                f.seek(offset)
                shape, dtype_name, buf = msgpack.unpackb(f.read(n), raw=False)
            dt = bfloat16() if dtype_name == "bfloat16" else np.dtype(dtype_name)
            if dt is None:  # bfloat16 without ml_dtypes: widen the raw bits exactly
                arr = bf16_to_float32(np.frombuffer(buf, np.uint16).reshape(shape))
            else:
                arr = np.frombuffer(buf, dt).reshape(shape)
            return np.ascontiguousarray(arr.T) if transpose else arr

        dtype = (bfloat16() or np.dtype(np.float32)) if dtype_name == "bfloat16" else np.dtype(dtype_name)
        out[name] = LazyTensor(tuple(reversed(shape)) if transpose else shape, dtype, load)
    return out


def write_flax_msgpack(tensors: Mapping[str, np.ndarray], config: BartConfig, head: str,
                       path: str | os.PathLike) -> str:
    """Write ``tensors`` (canonical names) as the ``flax_model.msgpack`` of the reference Flax class for
    ``head``; atomic."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        stage_flax_msgpack(tmp, tensors, config, head)
    return path


def _msgpack_ext_header(n: int, code: int) -> bytes:
    fixext = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixext:
        return struct.pack(">Bb", fixext[n], code)
    if n < 2 ** 8:
        return struct.pack(">BBb", 0xC7, n, code)
    if n < 2 ** 16:
        return struct.pack(">BHb", 0xC8, n, code)
    return struct.pack(">BIb", 0xC9, n, code)


def _msgpack_bin_header(n: int) -> bytes:
    if n < 2 ** 8:
        return struct.pack(">BB", 0xC4, n)
    if n < 2 ** 16:
        return struct.pack(">BH", 0xC5, n)
    return struct.pack(">BI", 0xC6, n)


def _write_msgpack_array(f, packer, arr: np.ndarray, code: int) -> None:
    """One flax ndarray leaf: ext ``code`` holding ``msgpack((shape, dtype name, bytes))``, streamed."""
    arr = np.ascontiguousarray(arr)
    inner = packer.pack_array_header(3) + packer.pack(list(arr.shape)) + packer.pack(arr.dtype.name)
    inner += _msgpack_bin_header(arr.nbytes)
    f.write(_msgpack_ext_header(len(inner) + arr.nbytes, code))
    f.write(inner)
    if arr.size:
        f.write(memoryview(arr.reshape(-1).view(np.uint8)))


def stage_flax_msgpack(path: str, tensors: Mapping[str, np.ndarray], config: BartConfig, head: str) -> None:
    """Write the ``flax_model.msgpack`` of the reference Flax class for ``head`` at ``path`` (a staged temporary
    path), leaf by leaf: msgpack map headers only need the number of keys, known from the name table, so the
    serialised buffer never exists as a whole and ``tensors`` may be read on access. Keys are sorted as flax's
    serialiser sorts them; float16 and bfloat16 stay, other dtypes are written as float32."""
    msgpack = _msgpack()

    tree: dict = {}
    for name, fpath, transpose in flax_mapping(config, head):
        node = tree
        for k in fpath[:-1]:
            node = node.setdefault(k, {})
        node[fpath[-1]] = (name, transpose)
    packer = msgpack.Packer(use_bin_type=True)

    def leaf(f, name: str, transpose: bool) -> None:
        arr = tensors[name]
        if arr.dtype.name not in ("float32", "float16", "bfloat16"):
            arr = arr.astype(np.float32)
        if transpose:
            arr = np.ascontiguousarray(arr.T)
        if arr.nbytes <= MAX_CHUNK_BYTES:
            _write_msgpack_array(f, packer, arr, EXT_NDARRAY)
            return
        per = max(1, MAX_CHUNK_BYTES // arr.dtype.itemsize)
        flat = arr.reshape(-1)
        starts = list(range(0, flat.size, per))
        f.write(packer.pack_map_header(3) + packer.pack(CHUNK_KEY) + packer.pack(True))
        f.write(packer.pack("shape") + packer.pack({str(i): int(d) for i, d in enumerate(arr.shape)}))
        f.write(packer.pack("chunks") + packer.pack_map_header(len(starts)))
        for i, s in enumerate(starts):
            f.write(packer.pack(str(i)))
            _write_msgpack_array(f, packer, flat[s:s + per], EXT_NDARRAY)

    def node(f, d: dict) -> None:
        f.write(packer.pack_map_header(len(d)))
        for k in sorted(d):
            f.write(packer.pack(k))
            if isinstance(d[k], dict):
                node(f, d[k])
            else:
                leaf(f, *d[k])

    with open(path, "wb") as f:
        node(f, tree)
        f.flush()
        os.fsync(f.fileno())
