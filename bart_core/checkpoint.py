"""Framework-neutral checkpoint IO in numpy.

* ``read_safetensors`` / ``write_safetensors``: the safetensors format (plain and sharded with
  ``model.safetensors.index.json``), read through ``np.memmap`` so tensors stream one at a time.
* ``load_state_dict(directory)``: find the weight file of a checkpoint directory and return
  ``{canonical name: np.ndarray}``, whatever format it is in.
* ``align_state_dict``: match a raw state dict to the name table of one head (add or strip the ``model.``
  prefix, resolve tied aliases, check every shape) and report missing / unexpected tensors by name.

Reading ``pytorch_model.bin`` needs ``torch`` (pickle is only ever read through
``torch.load(weights_only=True)``); it is imported lazily, only for that format.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from bart_core.config import BartConfig
from bart_core.fileio import FileSet, atomic_files
from bart_core.names import BASE_PREFIX, head_param_names, param_table

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
TF_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, TF_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the file."""


# ----------------------------------------------------------------------------------------- dtypes
def _bfloat16():
    try:
        import ml_dtypes  # shipped with jax and tensorflow; optional here
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


_ST_TO_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
             "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _np_to_st(dtype: np.dtype) -> str:
    for k, v in _ST_TO_NP.items():
        if np.dtype(v) == dtype:
            return k
    if dtype.name == "bfloat16":
        return "BF16"
    raise CheckpointError(f"dtype {dtype} cannot be stored in safetensors")


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32 exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (round to nearest even) and return the uint16 bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


# ----------------------------------------------------------------------------------------- safetensors
_ST_ITEMSIZE = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _ST_TO_NP.items()}}


def _read_header(path: str) -> tuple[int, dict]:
    """``(data start, header)`` of a safetensors file, every entry checked: known dtype, integer shape, byte range
    of the size the shape needs, ranges in order without gaps or overlaps covering the data exactly."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated safetensors file (header says {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_len = size - 8 - n
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            if info is not None and not isinstance(info, dict):
                raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")
            continue
        try:
            st, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                  and type(start) is int and type(end) is int and 0 <= start <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: corrupt safetensors header entry for tensor {name!r}: {info!r:.200}")
        if st not in _ST_ITEMSIZE:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st!r}")
        if end > data_len:
            raise CheckpointError(f"{path}: truncated safetensors file (tensor {name!r} ends at byte {end}, "
                                  f"data has {data_len})")
        need = int(np.prod(shape, dtype=np.int64)) * _ST_ITEMSIZE[st]
        if end - start != need:
            raise CheckpointError(f"{path}: tensor {name!r} of shape {shape} and dtype {st} needs {need} bytes, its "
                                  f"byte range holds {end - start}")
        ranges.append((start, end, name))
    pos = 0
    for start, end, name in sorted(ranges):
        if start != pos:
            what = "overlaps the previous tensor" if start < pos else f"leaves a gap at byte {pos}"
            raise CheckpointError(f"{path}: corrupt safetensors file: the byte range of tensor {name!r} {what}")
        pos = end
    if ranges and pos != data_len:
        raise CheckpointError(f"{path}: corrupt safetensors file: {data_len - pos} bytes after the last tensor")
    return 8 + n, header


def read_safetensors(path: str, keep_bf16: bool = False) -> dict[str, np.ndarray]:
    """Memory-mapped ``{name: array}``; bfloat16 becomes float32 unless ``keep_bf16`` and ml_dtypes exist."""
    offset, header = _read_header(path)
    if len(header) == (1 if "__metadata__" in header else 0):
        return {}
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        buf = mm[offset + start: offset + end]
        st = info["dtype"]
        if st == "BF16":
            raw = buf.view(np.uint16).reshape(shape)
            bf = _bfloat16()
            out[name] = raw.view(bf) if (keep_bf16 and bf is not None) else bf16_to_float32(raw)
        elif st in _ST_TO_NP:
            out[name] = buf.view(_ST_TO_NP[st]).reshape(shape)
        else:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st}")
    return out


def _serialize(tensors: Mapping[str, np.ndarray], metadata: dict | None) -> tuple[bytes, list[np.ndarray]]:
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    pos, blobs = 0, []
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype == np.dtype("O"):
            raise CheckpointError(f"tensor {name!r} is not numeric")
        st = _np_to_st(arr.dtype)
        arr = np.ascontiguousarray(arr)
        header[name] = {"dtype": st, "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
        blobs.append(arr)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, blobs


def _write_one(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None) -> None:
    """Write one safetensors file at ``path`` (a staged temporary path: atomicity is the caller's)."""
    head, blobs = _serialize(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for b in blobs:
            f.write(b.reshape(-1).view(np.uint8).data if b.size else b"")  # bytes view: works for bfloat16 too
        f.flush()
        os.fsync(f.fileno())


def parse_size(size: int | str | None) -> int | None:
    """``"5GB"`` / ``"500MB"`` / ``1000`` -> bytes (decimal units, as the reference)."""
    if size is None or isinstance(size, int):
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


_SHARD_RE = re.compile(r"^(model|pytorch_model|tf_model|flax_model)-\d{5}-of-\d{5}\.(safetensors|bin|h5|msgpack)$")


def is_weight_file(name: str) -> bool:
    """True for every file name the reference layout uses for weights (plain, sharded, index)."""
    return (name in WEIGHT_FILES or _SHARD_RE.match(name) is not None
            or name in ("pytorch_model.bin.index.json", "tf_model.h5.index.json", "flax_model.msgpack.index.json"))


def stage_safetensors(files: FileSet, tensors: Mapping[str, np.ndarray], max_shard_size: int | str | None = None,
                      metadata: dict | None = None) -> list[str]:
    """Stage ``model.safetensors`` (or shards plus ``model.safetensors.index.json``) in ``files``; returns the
    file names."""
    limit = parse_size(max_shard_size)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        nbytes = np.asarray(arr).nbytes
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += nbytes
    if len(shards) == 1:
        _write_one(files.path(SAFE_WEIGHTS_NAME), shards[0], metadata)
        return [SAFE_WEIGHTS_NAME]
    names, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_one(files.path(fname), shard, metadata)
        names.append(fname)
        for name, arr in shard.items():
            weight_map[name] = fname
            total += np.asarray(arr).nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files.write_text(SAFE_WEIGHTS_INDEX_NAME, json.dumps(index, indent=2) + "\n")
    return names + [SAFE_WEIGHTS_INDEX_NAME]


def write_safetensors(tensors: Mapping[str, np.ndarray], directory: str, max_shard_size: int | str | None = None,
                      metadata: dict | None = None) -> list[str]:
    """Write ``model.safetensors`` (or shards plus ``model.safetensors.index.json``) as one atomic unit: the
    previous safetensors files of ``directory`` are replaced only once the new ones are complete."""
    parse_size(max_shard_size)
    with atomic_files(directory, replaces=lambda n: is_weight_file(n) and n.endswith((".safetensors",
                                                                                        ".safetensors.index.json"))) \
            as files:
        names = stage_safetensors(files, tensors, max_shard_size, metadata)
    return [os.path.join(directory, n) for n in names]


def stage_pytorch_bin(path: str, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``pytorch_model.bin`` (``torch.save`` of a tensor dict) at a staged path; needs torch."""
    import torch

    def to_torch(arr: np.ndarray):
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name == "bfloat16":
            return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(arr.copy())

    with open(path, "wb") as f:
        torch.save({k: to_torch(v) for k, v in tensors.items()}, f)
        f.flush()
        os.fsync(f.fileno())


FORMATS = ("safetensors", "torch_bin", "tf", "flax")


def save_checkpoint(directory: str | os.PathLike, config: BartConfig, tensors: Mapping[str, np.ndarray], head: str,
                    formats: Iterable[str] = ("safetensors",), max_shard_size: int | str | None = None,
                    generation_config=None) -> list[str]:
    """Save a checkpoint folder in the reference layout as one atomic unit, for every backend.

    ``tensors`` are the canonical stored tensors (``export_state_dict``). Each format in ``formats``
    (``safetensors``: ``model.safetensors``; ``torch_bin``: ``pytorch_model.bin``; ``tf``: ``tf_model.h5``; ``flax``:
    ``flax_model.msgpack``) is written
    to a temporary file first; ``config.json`` (and ``generation_config.json`` when given, in which case the
    generation fields of ``config.json`` are written as ``null``, as the reference does) are published last.
    Weight files of the folder that this save did not write (an older ``tf_model.h5``, stale shards, ...) are
    removed after the new files are in place, so the folder loads as this model in every framework. Another
    writer of the same folder waits for the lock.
    """
    from bart_core.formats.flax_msgpack import stage_flax_msgpack
    from bart_core.formats.tf_h5 import stage_tf_h5

    directory = os.fspath(directory)
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats: {bad or formats} not among {FORMATS}")
    parse_size(max_shard_size)
    names = []
    with atomic_files(directory, replaces=is_weight_file) as files:
        for fmt in formats:
            if fmt == "safetensors":
                names += stage_safetensors(files, tensors, max_shard_size)
            elif fmt == "torch_bin":
                stage_pytorch_bin(files.path(PT_WEIGHTS_NAME), tensors)
                names.append(PT_WEIGHTS_NAME)
            elif fmt == "tf":
                stage_tf_h5(files.path(TF_WEIGHTS_NAME), tensors, config, head)
                names.append(TF_WEIGHTS_NAME)
            else:
                stage_flax_msgpack(files.path(FLAX_WEIGHTS_NAME), tensors, config, head)
                names.append(FLAX_WEIGHTS_NAME)
        if generation_config is not None:
            files.write_text("generation_config.json", generation_config.to_json_string())
            names.append("generation_config.json")
        files.write_text("config.json", config.to_json_string(move_generation_parameters=generation_config is not None))
        names.append("config.json")
    return [os.path.join(directory, n) for n in names]


def check_shard_name(index_path: str, fname) -> None:
    """A shard named by an index must be a plain file name in the index's folder (no path, no ``..``)."""
    if not isinstance(fname, str) or not fname or os.path.basename(fname) != fname or fname in (".", "..") \
            or "/" in fname or "\\" in fname:
        raise CheckpointError(f"{index_path}: shard {fname!r} is not a file name in the checkpoint folder "
                              "(absolute and relative paths are refused)")


def read_sharded_safetensors(index_path: str) -> dict[str, np.ndarray]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index ({e})") from None
    folder = os.path.dirname(index_path)
    out: dict[str, np.ndarray] = {}
    for fname in sorted(set(weight_map.values())):
        check_shard_name(index_path, fname)
        shard = os.path.join(folder, fname)
        if not os.path.isfile(shard):
            raise CheckpointError(f"{index_path}: shard {fname} is missing")
        out.update(read_safetensors(shard))
    missing = set(weight_map) - set(out)
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed in the index are missing from the shards: "
                              f"{sorted(missing)[:5]}")
    return out


# ----------------------------------------------------------------------------------------- other formats
def read_pytorch_bin(path: str) -> dict[str, np.ndarray]:
    """Read a pickled torch state dict, only through ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading pytorch_model.bin needs torch (pip install 'bart3[torch]'); "
                              "convert it to model.safetensors with bart-convert") from None
    try:
        state = torch_load_weights(path)
    except Exception as e:  # torch raises many kinds for a bad zip or pickle
        raise CheckpointError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    if isinstance(state.get("state_dict"), dict) and not any(hasattr(v, "detach") for v in state.values()):
        state = state["state_dict"]
    out = {}
    for k, v in state.items():
        if not isinstance(k, str) or not hasattr(v, "detach"):
            raise CheckpointError(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
        v = v.detach()
        out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    return out


def torch_load_weights(path: str, safe_globals=()):
    """``torch.load(weights_only=True)`` of a zip checkpoint (memory-mapped) or of the legacy pre-1.6 format, which
    cannot be memory-mapped and is read whole instead."""
    import torch
    with torch.serialization.safe_globals(list(safe_globals)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_h5(path: str) -> dict[str, np.ndarray]:
    from bart_core.formats.tf_h5 import read_tf_h5
    return read_tf_h5(path)


def _read_msgpack(path: str) -> dict[str, np.ndarray]:
    from bart_core.formats.flax_msgpack import read_flax_msgpack
    return read_flax_msgpack(path)


READERS: dict[str, Callable[[str], dict[str, np.ndarray]]] = {
    SAFE_WEIGHTS_NAME: read_safetensors,
    SAFE_WEIGHTS_INDEX_NAME: read_sharded_safetensors,
    PT_WEIGHTS_NAME: read_pytorch_bin,
    TF_WEIGHTS_NAME: _read_h5,
    FLAX_WEIGHTS_NAME: _read_msgpack,
}


def find_weight_file(directory: str, prefer: Iterable[str] = WEIGHT_FILES) -> str:
    """Path of the first weight file of ``prefer`` order present in ``directory``."""
    if os.path.isfile(directory):
        return directory
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    prefer = list(prefer) + [f for f in WEIGHT_FILES if f not in prefer]
    for name in prefer:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise FileNotFoundError(f"{directory}: no weight file (looked for {', '.join(WEIGHT_FILES)})")


def load_state_dict(path: str, prefer: Iterable[str] = WEIGHT_FILES) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` from a checkpoint directory (or a weight file given directly)."""
    file = find_weight_file(path, prefer)
    base = os.path.basename(file)
    reader = READERS.get(base)
    if reader is None:
        reader = {".safetensors": read_safetensors, ".bin": read_pytorch_bin, ".h5": _read_h5,
                  ".msgpack": _read_msgpack, ".json": read_sharded_safetensors}.get(os.path.splitext(base)[1])
    if reader is None:
        raise CheckpointError(f"{file}: unknown weight file format")
    return reader(file)


# ----------------------------------------------------------------------------------------- alignment
@dataclass
class LoadReport:
    """What ``align_state_dict`` found: ``params`` holds one array per stored (non-alias) name."""
    params: dict[str, np.ndarray]
    missing_head: list[str] = field(default_factory=list)   # head tensors to initialise freshly
    unexpected: list[str] = field(default_factory=list)      # tensors in the file the model does not use
    filled: list[str] = field(default_factory=list)          # filled with a documented default (zeros)


def _normalise_prefix(state: Mapping[str, np.ndarray], head: str) -> dict[str, np.ndarray]:
    """Add or strip ``model.`` so a base-model checkpoint and a head checkpoint load into each other."""
    base_roots = ("shared.", "encoder.", "decoder.")
    has_prefix = any(k.startswith(BASE_PREFIX) for k in state)
    if head == "base":
        if not has_prefix:
            return dict(state)
        return {k[len(BASE_PREFIX):] if k.startswith(BASE_PREFIX) else k: v for k, v in state.items()}
    if has_prefix:
        return dict(state)
    return {BASE_PREFIX + k if k.startswith(base_roots) else k: v for k, v in state.items()}


def align_state_dict(state: Mapping[str, np.ndarray], config: BartConfig, head: str,
                     source: str = "checkpoint", allow_missing: Iterable[str] = ()) -> LoadReport:
    """Match ``state`` to ``param_table(config, head)``; raise ``CheckpointError`` on a wrong shape or a
    missing tensor that is not part of the task head (or of ``allow_missing``: tensors to initialise freshly)."""
    state = _normalise_prefix(state, head)
    table = param_table(config, head)
    stored = [s for s in table if s.stored]
    aliases: dict[str, list[str]] = {}
    for s in table:
        if s.tied_to is not None:
            aliases.setdefault(s.tied_to, []).append(s.name)
    if head == "causal_lm":  # a seq2seq checkpoint keeps the decoder embedding under model.shared.weight
        aliases.setdefault("model.decoder.embed_tokens.weight", []).append("model.shared.weight")
    head_names = set(head_param_names(config, head)) | set(allow_missing)
    report = LoadReport(params={})
    used = set()
    missing = []
    for spec in stored:
        candidates = [spec.name] + aliases.get(spec.name, [])
        found = next((c for c in candidates if c in state), None)
        if found is None:
            if spec.kind == "logits_bias":
                report.params[spec.name] = np.zeros(spec.shape, np.float32)
                report.filled.append(spec.name)
            elif spec.name in head_names:
                report.missing_head.append(spec.name)
            else:
                missing.append(spec.name)
            continue
        arr = state[found]
        if not (arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"):
            raise CheckpointError(f"{source}: tensor {found!r} has dtype {arr.dtype}; BART weights are floating "
                                  "point (an integer or boolean tensor here is a corrupt or foreign checkpoint)")
        if tuple(arr.shape) != spec.shape:
            raise CheckpointError(f"{source}: tensor {found!r} has shape {tuple(arr.shape)}, the model expects "
                                  f"{spec.shape}")
        report.params[spec.name] = arr
        used.update(c for c in candidates if c in state)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise CheckpointError(f"{source}: missing tensors {shown}")
    all_names = {s.name for s in table}
    report.unexpected = sorted(k for k in state if k not in used and k not in all_names)
    return report


def export_state_dict(params: Mapping[str, np.ndarray], config: BartConfig, head: str) -> dict[str, np.ndarray]:
    """Order ``params`` by the name table and drop tied aliases: the tensors a saved file should hold."""
    out = {}
    for spec in param_table(config, head):
        src = spec.name
        if not spec.stored:
            # transformers 4.57.6 does not re-tie the encoder/decoder token embeddings of a model with
            # tie_word_embeddings=False and would initialise them freshly: write those aliases out for it.
            if config.tie_word_embeddings or not spec.name.endswith("coder.embed_tokens.weight"):
                continue
            src = spec.name if spec.name in params else spec.tied_to
        if src not in params:
            raise CheckpointError(f"model has no tensor {spec.name!r} to save")
        arr = np.asarray(params[src])
        if tuple(arr.shape) != spec.shape:
            raise CheckpointError(f"tensor {spec.name!r} has shape {tuple(arr.shape)}, expected {spec.shape}")
        out[spec.name] = arr
    return out
