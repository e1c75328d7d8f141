"""The safetensors format: one lazy reader and one streaming writer, used by eager loading, ``save_pretrained`` and
conversion alike.

* ``open_file(path)`` / ``open_sharded(index)``: ``{name: LazyTensor}`` after checking the whole header (known
  dtype, a byte range of the size the shape needs, ranges in order without gaps or overlaps); each ``load()`` is one
  ``pread`` into a fresh buffer, so streaming a large checkpoint holds one tensor at a time.
* ``read_file(path)``: the eager form, lazy then read.
* ``write_file(path, tensors, specs)`` / ``stage(files, tensors, specs, max_shard_size)``: the header is computed
  from shapes and dtypes alone (``specs``, or the arrays themselves), then each tensor is read from ``tensors`` (a
  dict or a read-on-access mapping), written and released.

bfloat16 is read as ``ml_dtypes.bfloat16`` when ``keep_bf16`` and ml_dtypes exist, else widened to float32 exactly.

What the ``safetensors`` package does and what stays ours:

* reading: every tensor but bfloat16 is read with ``safe_open(framework="np").get_tensor`` (a fresh array per
  load), and every file is opened by the package once up front, so a file it refuses is refused here too. Our
  ``read_header`` runs first: its errors name the file, the tensor and the flaw (the package's do not name the
  file).
* bfloat16 stays a ``pread`` of the raw bits: the package's numpy API returns bfloat16 only when ml_dtypes is
  installed (not a dependency of bart_core), and ``keep_bf16=False`` wants float32 anyway.
* writing stays ours: ``safetensors.numpy.save_file`` / ``serialize_file`` take every tensor at once, while
  conversion streams tensors read on access one at a time (the file of a large model is never in memory whole).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
from safetensors import SafetensorError, safe_open

from bart_core.errors import CheckpointError

if TYPE_CHECKING:
    from bart_core.fileio import FileSet

FILE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

ST_TO_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
            "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
ITEMSIZE = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in ST_TO_NP.items()}}


def _error(message: str) -> CheckpointError:
    return CheckpointError(message)


# ----------------------------------------------------------------------------------------- dtypes
def bfloat16() -> np.dtype | None:
    """``ml_dtypes.bfloat16`` (shipped with jax and tensorflow) or None."""
    try:
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32 exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (round to nearest even) and return the uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def dtype_code(dtype: np.dtype) -> str:
    """The safetensors dtype code of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return "BF16"
    for k, v in ST_TO_NP.items():
        if np.dtype(v) == dtype:
            return k
    raise _error(f"dtype {dtype} cannot be stored in safetensors")


# ----------------------------------------------------------------------------------------- reading
@dataclass
class LazyTensor:
    """A tensor not read yet: ``shape`` and ``dtype`` are known, ``load()`` reads it (a fresh array)."""
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_header(path: str) -> tuple[int, dict]:
    """``(data start, header)`` of a safetensors file, every entry checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _error(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise _error(f"{path}: truncated safetensors file (header says {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _error(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise _error(f"{path}: corrupt safetensors header (not a JSON object)")
    data_len = size - 8 - n
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            if info is not None and not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise _error(f"{path}: corrupt safetensors header (__metadata__ is not an object of strings)")
            continue
        try:
            st, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                  and type(start) is int and type(end) is int and 0 <= start <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise _error(f"{path}: corrupt safetensors header entry for tensor {name!r}: {info!r:.200}")
        if st not in ITEMSIZE:
            raise _error(f"{path}: tensor {name!r} has unsupported dtype {st!r}")
        if end > data_len:
            raise _error(f"{path}: truncated safetensors file (tensor {name!r} ends at byte {end}, data has "
                         f"{data_len})")
        need = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[st]
        if end - start != need:
            raise _error(f"{path}: tensor {name!r} of shape {shape} and dtype {st} needs {need} bytes, its byte "
                         f"range holds {end - start}")
        ranges.append((start, end, name))
    pos = 0
    for start, end, name in sorted(ranges):
        if start != pos:
            what = "overlaps the previous tensor" if start < pos else f"leaves a gap at byte {pos}"
            raise _error(f"{path}: corrupt safetensors file: the byte range of tensor {name!r} {what}")
        pos = end
    if ranges and pos != data_len:
        raise _error(f"{path}: corrupt safetensors file: {data_len - pos} bytes after the last tensor")
    return 8 + n, header


def _package_open(path: str):
    """``safe_open(path, framework="np")``; a refusal of the package is a ``CheckpointError`` naming the file."""
    try:
        return safe_open(path, framework="np")
    except (SafetensorError, OSError) as e:
        raise _error(f"{path}: corrupt safetensors file (the safetensors library refuses it: {e})") from None


def open_file(path: str, keep_bf16: bool = True) -> dict[str, LazyTensor]:
    """``{name: LazyTensor}`` for one safetensors file; each load reads one tensor into a fresh array."""
    offset, header = read_header(path)
    with _package_open(path):  # the package's own checks, up front rather than at the first load
        pass
    bf = bfloat16() if keep_bf16 else None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        st, shape = info["dtype"], tuple(info["shape"])
        if st != "BF16":
            def load(name=name) -> np.ndarray:
                with _package_open(path) as f:
                    try:
                        return f.get_tensor(name)
                    except SafetensorError as e:
                        raise _error(f"{path}: cannot read tensor {name!r} ({e})") from None

            out[name] = LazyTensor(shape, np.dtype(ST_TO_NP[st]), load)
            continue

        def load_bf16(start=offset + info["data_offsets"][0], shape=shape, name=name) -> np.ndarray:
            raw = np.empty(shape, np.uint16)
            view = memoryview(raw.reshape(-1).view(np.uint8)) if raw.size else memoryview(b"")
            with open(path, "rb") as f:
                f.seek(start)
                if f.readinto(view) != raw.nbytes:
                    raise _error(f"{path}: truncated while reading tensor {name!r}")
            return raw.view(bf) if bf is not None else bf16_to_float32(raw)

        out[name] = LazyTensor(shape, bf if bf is not None else np.dtype(np.float32), load_bf16)
    return out


def check_shard_name(index_path: str, fname) -> None:
    """A shard named by an index must be a plain file name in the index's folder (no path, no ``..``)."""
    if not isinstance(fname, str) or not fname or os.path.basename(fname) != fname or fname in (".", "..") \
            or "/" in fname or "\\" in fname:
        raise _error(f"{index_path}: shard {fname!r} is not a file name in the checkpoint folder (absolute and "
                     "relative paths are refused)")


def open_sharded(index_path: str, keep_bf16: bool = True) -> dict[str, LazyTensor]:
    """``{name: LazyTensor}`` over the shards a ``model.safetensors.index.json`` names."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise _error(f"{index_path}: not a safetensors index ({e})") from None
    folder = os.path.dirname(index_path)
    out: dict[str, LazyTensor] = {}
    for fname in sorted(set(weight_map.values()), key=str):
        check_shard_name(index_path, fname)
        shard = os.path.join(folder, fname)
        if not os.path.isfile(shard):
            raise _error(f"{index_path}: shard {fname} is missing")
        out.update(open_file(shard, keep_bf16))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise _error(f"{index_path}: tensors listed in the index are missing from the shards: {missing[:5]}")
    return out


def read_file(path: str, keep_bf16: bool = False) -> dict[str, np.ndarray]:
    """``{name: array}``: every tensor of ``open_file`` read (bfloat16 widened unless ``keep_bf16``)."""
    return {name: t.load() for name, t in open_file(path, keep_bf16).items()}


def read_sharded(index_path: str, keep_bf16: bool = False) -> dict[str, np.ndarray]:
    return {name: t.load() for name, t in open_sharded(index_path, keep_bf16).items()}


# ----------------------------------------------------------------------------------------- writing
def _specs_of(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    out = {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype == np.dtype("O"):
            raise _error(f"tensor {name!r} is not numeric")
        out[name] = (tuple(arr.shape), arr.dtype)
    return out


def write_file(path: str, tensors: Mapping[str, np.ndarray], specs: Mapping | None = None,
               metadata: dict | None = None) -> None:
    """Write one safetensors file at ``path`` (a staged temporary path: atomicity is the caller's). The header
    comes from ``specs`` (``{name: (shape, dtype)}``, default: the arrays of ``tensors``); then each tensor is read
    from ``tensors``, checked against its spec, written and released."""
    specs = _specs_of(tensors) if specs is None else specs
    metadata = dict(metadata or {"format": "pt"})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _error(f"metadata {metadata!r:.200}: safetensors metadata maps strings to strings")
    header: dict = {"__metadata__": metadata}
    pos = 0
    for name, (shape, dtype) in specs.items():
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": dtype_code(dtype), "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, (shape, dtype) in specs.items():
            arr = np.ascontiguousarray(tensors[name])
            if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
                raise _error(f"tensor {name!r}: got {arr.dtype}{list(arr.shape)}, the header planned "
                             f"{np.dtype(dtype)}{list(shape)}")
            if arr.size:
                f.write(arr.reshape(-1).view(np.uint8).data)  # a byte view: works for bfloat16 too
            del arr
        f.flush()
        os.fsync(f.fileno())


def parse_size(size: int | str | None) -> int | None:
    """``"5GB"`` / ``"500MB"`` / ``1000`` -> bytes (decimal units, as the reference)."""
    if size is None or isinstance(size, int):
        if isinstance(size, int) and size <= 0:
            raise ValueError(f"max_shard_size: {size!r} must be positive")
        return size
    s = size.strip().upper()
    try:
        for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6),
                           ("KB", 10**3), ("B", 1)):
            if s.endswith(unit):
                n = int(float(s[: -len(unit)]) * mult)
                break
        else:
            n = int(s)
    except ValueError:
        raise ValueError(f"max_shard_size: {size!r} is not a size (examples: 500MB, 2GB, 1000000)") from None
    if n <= 0:
        raise ValueError(f"max_shard_size: {size!r} must be positive")
    return n


def stage(files: "FileSet", tensors: Mapping[str, np.ndarray], specs: Mapping | None = None,
          max_shard_size: int | str | None = None, metadata: dict | None = None) -> list[str]:
    """Stage ``model.safetensors`` (or shards plus the index, the reference's layout) in ``files``; returns the
    file names."""
    specs = _specs_of(tensors) if specs is None else specs
    limit = parse_size(max_shard_size)
    shards: list[dict] = [{}]
    size = 0
    for name, (shape, dtype) in specs.items():
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if limit is not None and shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][name] = (shape, dtype)
        size += n
    if len(shards) == 1:
        write_file(files.path(FILE_NAME), tensors, shards[0], metadata)
        return [FILE_NAME]
    names, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_file(files.path(fname), tensors, shard, metadata)
        names.append(fname)
        for name, (shape, dtype) in shard.items():
            weight_map[name] = fname
            total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    files.write_text(INDEX_NAME, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                            indent=2) + "\n")
    return names + [INDEX_NAME]
