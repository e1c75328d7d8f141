"""Any checkpoint format to any other, streamed tensor by tensor through numpy.

The pipeline is: open the source lazily (``open_source``), match its names to the canonical table
(``bart_core.checkpoint.align_state_dict``, which checks every shape before anything is read), then hand each
writer a mapping whose values are read, cast and released one at a time (``LazyTensors``). No framework is
imported and the model is never materialised as a whole: safetensors sources are read with ``pread`` into
fresh buffers (a memory map would keep every touched page resident), and the safetensors and msgpack outputs
are written by streaming writers, so peak memory is about one tensor plus what the format library buffers.

Everything that can be checked is checked before the temporary output folder is created; the folder is moved
over DST only when every file is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    WEIGHT_FILES,
    CheckpointError,
    _read_header,
    align_state_dict,
    bf16_to_float32,
    check_shard_name,
    find_weight_file,
    load_state_dict,
    parse_size,
)
from bart_core.config import CONFIG_NAME, BartConfig
from bart_core.fileio import folder_lock, recover_folder_swap, replace_folder, staging_folder
from bart_core.generation import GENERATION_CONFIG_NAME, GENERATIVE_HEADS, GenerationConfig
from bart_core.names import HEADS, param_table

TARGETS = ("torch", "tf", "flax", "safetensors", "all")
DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "generation_config.json")
# which file each --to target writes; torch and safetensors both write model.safetensors (format "pt")
TARGET_FILES = {"torch": SAFE_WEIGHTS_NAME, "safetensors": SAFE_WEIGHTS_NAME, "tf": TF_WEIGHTS_NAME,
                "flax": FLAX_WEIGHTS_NAME}
ARCHITECTURES = {
    "BartModel": "base", "BartForConditionalGeneration": "conditional_generation",
    "BartForSequenceClassification": "sequence_classification",
    "BartForQuestionAnswering": "question_answering", "BartForCausalLM": "causal_lm",
}
HEAD_ARCHITECTURE = {v: k for k, v in ARCHITECTURES.items()}


class ConversionError(ValueError):
    """Bad input or an impossible request; the message is one line that names the file and the problem."""


# ----------------------------------------------------------------------------------------- dtypes
def _bf16_dtype() -> np.dtype | None:
    try:
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


def target_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        bf = _bf16_dtype()
        if bf is None:
            raise ConversionError("--dtype bfloat16 needs the ml_dtypes package (installed with jax or tensorflow)")
        return bf
    if name not in DTYPES:
        raise ConversionError(f"--dtype {name!r} is not one of {', '.join(DTYPES)}")
    return np.dtype(name)


def is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def cast(arr: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """Cast floating-point tensors to ``dtype`` (round to nearest even); integer tensors are left alone."""
    if dtype is None or arr.dtype == dtype or not is_float(arr.dtype):
        return arr
    if arr.dtype.name == "bfloat16":
        arr = arr.astype(np.float32)
    return arr.astype(dtype)


# ----------------------------------------------------------------------------------------- sources
@dataclass
class LazyTensor:
    """A tensor not read yet: ``shape`` and ``dtype`` are known, ``load()`` reads it (a fresh array)."""
    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _safetensors_lazy(path: str) -> dict[str, LazyTensor]:
    """``{name: LazyTensor}`` for one safetensors file; each load is one ``pread`` into a fresh buffer."""
    offset, header = _read_header(path)
    st_to_np = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}
    bf = _bf16_dtype()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        st = info.get("dtype")
        if st not in st_to_np:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st}")
        shape = tuple(int(d) for d in info["shape"])
        start, end = info["data_offsets"]
        raw_dtype = np.dtype(st_to_np[st])
        if (end - start) != int(np.prod(shape, dtype=np.int64)) * raw_dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - start} bytes, its shape {shape} needs "
                                  f"{int(np.prod(shape)) * raw_dtype.itemsize}")

        def load(start=offset + start, shape=shape, raw_dtype=raw_dtype, st=st, name=name) -> np.ndarray:
            arr = np.empty(shape, raw_dtype)
            view = memoryview(arr.reshape(-1)).cast("B") if arr.size else memoryview(b"")
            with open(path, "rb") as f:
                f.seek(start)
                if f.readinto(view) != arr.nbytes:
                    raise CheckpointError(f"{path}: truncated while reading tensor {name!r}")
            if st == "BF16":
                return arr.view(bf) if bf is not None else bf16_to_float32(arr)
            return arr

        dtype = (bf if bf is not None else np.dtype(np.float32)) if st == "BF16" else raw_dtype
        out[name] = LazyTensor(shape, dtype, load)
    return out


def _sharded_lazy(index_path: str) -> dict[str, LazyTensor]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index ({e})") from None
    folder = os.path.dirname(index_path)
    out: dict[str, LazyTensor] = {}
    for fname in sorted(set(weight_map.values())):
        check_shard_name(index_path, fname)
        shard = os.path.join(folder, fname)
        if not os.path.isfile(shard):
            raise CheckpointError(f"{index_path}: shard {fname} is missing")
        out.update(_safetensors_lazy(shard))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed in the index are missing from the shards: "
                              f"{missing[:5]}")
    return out


def _eager_lazy(state: Mapping[str, np.ndarray]) -> dict[str, LazyTensor]:
    return {k: LazyTensor(tuple(v.shape), np.asarray(v).dtype, (lambda v=v: np.asarray(v)))
            for k, v in state.items()}


@dataclass
class Source:
    """An opened checkpoint: its config, the weight file and lazily readable tensors (raw names)."""
    config: BartConfig
    file: str
    tensors: dict[str, LazyTensor]
    directory: str
    notes: list[str] = field(default_factory=list)


def read_config(directory: str) -> BartConfig:
    file = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(file):
        raise ConversionError(f"{directory}: no {CONFIG_NAME}")
    try:
        return BartConfig.from_pretrained(file)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(msg if file in msg else f"{file}: {msg}") from None


def _h5_lazy(path: str, config: BartConfig) -> dict[str, LazyTensor] | None:
    """``{canonical name: LazyTensor}`` reading one HDF5 dataset per load, located through the declared
    ``tf_h5.h5_table`` of every head; ``None`` when the file holds a weight that table does not name (the
    eager reader of ``bart_core`` then handles the older spellings)."""
    import h5py

    from bart_core.formats import tf_h5

    def key(layer: str, wname: str) -> tuple[str, str]:
        first, _, rest = wname.partition("/")
        return layer, rest if first.startswith("tf_bart") else wname

    known: dict[tuple[str, str], tuple[str, bool]] = {}
    for head in reversed(HEADS):  # the prefixed names of the task heads win over the base model's
        for name, layer, wname, transpose in tf_h5.h5_table(config, head):
            known[key(layer, wname)] = (name, transpose)
    out: dict[str, LazyTensor] = {}
    with h5py.File(path, "r") as f:
        tf_h5.check_self_contained(f, path)
        if "layer_names" not in f.attrs:
            return None
        for layer in [v.decode() if isinstance(v, bytes) else str(v) for v in f.attrs["layer_names"]]:
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in f[layer].attrs.get("weight_names", [])]
            for wname in names:
                hit = known.get(key(layer, wname))
                if hit is None or wname not in f[layer]:
                    return None
                ds = f[layer][wname]
                name, transpose = hit
                shape = tuple(reversed(ds.shape)) if transpose else tuple(ds.shape)

                def load(ds_path=f"{layer}/{wname}", transpose=transpose) -> np.ndarray:
                    with h5py.File(path, "r") as g:
                        arr = g[ds_path][()]
                    return np.ascontiguousarray(arr.T) if transpose else arr

                out[name] = LazyTensor(shape, np.dtype(ds.dtype), load)
    return out


def _msgpack_index(path: str) -> dict[tuple[str, ...], tuple[int, int, int]]:
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


def _msgpack_lazy(path: str, config: BartConfig) -> dict[str, LazyTensor] | None:
    """``{canonical name: LazyTensor}`` reading one msgpack leaf per load, located through the declared
    ``flax_msgpack.flax_mapping`` of every head; ``None`` for anything else (chunked leaves, unknown paths)."""
    import msgpack

    from bart_core.formats import flax_msgpack as fm

    known: dict[tuple[str, ...], tuple[str, bool]] = {}
    for head in reversed(HEADS):
        for name, fpath, transpose in fm.flax_mapping(config, head):
            known[tuple(fpath)] = (name, transpose)
    index = _msgpack_index(path)
    if set(p[0] for p in index) == {"params"}:
        index = {p[1:]: v for p, v in index.items()}
    out: dict[str, LazyTensor] = {}
    for fpath, (code, offset, n) in index.items():
        hit = known.get(fpath)
        if hit is None or code != fm.EXT_NDARRAY:
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
            dt = _bf16_dtype() if dtype_name == "bfloat16" else np.dtype(dtype_name)
            if dt is None:  # bfloat16 without ml_dtypes: widen the raw bits exactly
                arr = bf16_to_float32(np.frombuffer(buf, np.uint16).reshape(shape))
            else:
                arr = np.frombuffer(buf, dt).reshape(shape)
            return np.ascontiguousarray(arr.T) if transpose else arr

        dtype = (_bf16_dtype() or np.dtype(np.float32)) if dtype_name == "bfloat16" else np.dtype(dtype_name)
        out[name] = LazyTensor(tuple(reversed(shape)) if transpose else shape, dtype, load)
    return out


def _open_weights(file: str, config: BartConfig) -> dict[str, LazyTensor]:
    base = os.path.basename(file)
    try:
        if base.endswith(".safetensors"):
            return _safetensors_lazy(file)
        if base == SAFE_WEIGHTS_INDEX_NAME or base.endswith(".json"):
            return _sharded_lazy(file)
        lazy = None
        if base.endswith(".h5"):
            lazy = _h5_lazy(file, config)
        elif base.endswith(".msgpack"):
            lazy = _msgpack_lazy(file, config)
        return lazy if lazy is not None else _eager_lazy(load_state_dict(file))
    except (CheckpointError, ConversionError) as e:
        raise ConversionError(str(e).splitlines()[0]) from None
    except Exception as e:  # format libraries (h5py, msgpack, torch) raise many kinds on a corrupt file
        detail = str(e).splitlines()[0] if str(e) else ""
        raise ConversionError(f"{file}: cannot read ({type(e).__name__}{': ' + detail if detail else ''})") \
            from None


def open_source(path: str, prefer: Sequence[str] = WEIGHT_FILES) -> Source:
    """Open a checkpoint directory (or a weight file inside one) without reading any tensor data
    (safetensors) or reading it once into numpy (the other formats)."""
    path = os.fspath(path)
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file or directory")
    config = read_config(directory)
    try:
        file = find_weight_file(path, prefer)
    except FileNotFoundError as e:
        raise ConversionError(str(e)) from None
    return Source(config, file, _open_weights(file, config), directory)


# ----------------------------------------------------------------------------------------- heads
def detect_head(names: Sequence[str], config: BartConfig) -> str:
    """The task head a checkpoint holds, from its tensor names, else from ``config.architectures``."""
    names = set(names)
    has_encoder = any(".encoder." in f".{n}" for n in names)
    if any(n.startswith("classification_head.") for n in names):
        return "sequence_classification"
    if any(n.startswith("qa_outputs.") for n in names):
        return "question_answering"
    if not has_encoder and any("decoder.layers." in n for n in names):
        return "causal_lm"
    if "final_logits_bias" in names or "lm_head.weight" in names:
        return "conditional_generation"
    for arch in config.extra.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if not any(n.startswith("model.") for n in names):
        return "base"
    return "conditional_generation"


# ----------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """What a conversion will write: tensors in table order, already shape-checked."""
    config: BartConfig
    head: str
    tensors: dict[str, LazyTensor]        # canonical stored name -> source tensor
    dtype: np.dtype | None                # None: keep the source dtypes
    source: Source
    unexpected: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(self.out_nbytes(t) for t in self.tensors.values())

    def out_dtype(self, t: LazyTensor) -> np.dtype:
        return self.dtype if self.dtype is not None and is_float(t.dtype) else t.dtype

    def out_nbytes(self, t: LazyTensor) -> int:
        return int(np.prod(t.shape, dtype=np.int64)) * self.out_dtype(t).itemsize


def make_plan(source: Source, head: str | None = None, dtype: str | None = None) -> Plan:
    head = head or detect_head(list(source.tensors), source.config)
    if head not in HEADS:
        raise ConversionError(f"--head {head!r} is not one of {', '.join(HEADS)}")
    try:
        report = align_state_dict(source.tensors, source.config, head, source=source.file)
    except CheckpointError as e:
        raise ConversionError(str(e).splitlines()[0]) from None
    if report.missing_head:
        raise ConversionError(f"{source.file}: head {head!r} needs tensors the file does not have: "
                              f"{', '.join(report.missing_head[:4])}; pass --head to choose another head")
    params = {}
    for spec in param_table(source.config, head):
        if not spec.stored:
            continue
        v = report.params[spec.name]
        params[spec.name] = v if isinstance(v, LazyTensor) else _eager_lazy({spec.name: v})[spec.name]
    return Plan(source.config, head, params, None if dtype is None else target_dtype(dtype), source,
                report.unexpected, report.filled)


class LazyTensors(Mapping):
    """Read-on-access mapping of a plan's tensors (canonical names, PyTorch layout, target dtype).

    Each access reads the tensor from the source file and casts it; nothing is cached, so a writer that
    handles one tensor at a time holds one tensor at a time. ``progress`` is advanced on every access."""

    def __init__(self, plan: Plan, progress=None):
        self._plan, self._progress = plan, progress

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._plan.tensors[name]
        arr = cast(t.load(), self._plan.dtype)
        if self._progress is not None:
            self._progress.update(arr.nbytes)
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._plan.tensors)

    def __len__(self) -> int:
        return len(self._plan.tensors)


# ----------------------------------------------------------------------------------------- writers
def _st_dtype(dtype: np.dtype) -> str:
    table = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
    if dtype.name not in table:
        raise ConversionError(f"dtype {dtype} cannot be stored in safetensors")
    return table[dtype.name]


def _write_safetensors_file(path: str, names: list[str], plan: Plan, tensors: Mapping[str, np.ndarray]) -> None:
    """One safetensors file whose header is computed from shapes alone; data written tensor by tensor."""
    header: dict = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name in names:
        t = plan.tensors[name]
        out_dtype = plan.out_dtype(t)
        n = plan.out_nbytes(t)
        header[name] = {"dtype": _st_dtype(out_dtype), "shape": list(t.shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in names:
            arr = np.ascontiguousarray(tensors[name])
            if arr.nbytes != header[name]["data_offsets"][1] - header[name]["data_offsets"][0]:
                raise ConversionError(f"{name}: {arr.nbytes} bytes, header planned "
                                      f"{header[name]['data_offsets'][1] - header[name]['data_offsets'][0]}")
            if arr.size:
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
        f.flush()
        os.fsync(f.fileno())


def write_safetensors_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], directory: str,
                                max_shard_size: int | str | None = None) -> list[str]:
    """``model.safetensors`` or shards ``model-0000i-of-0000n.safetensors`` plus the index (the layout of
    ``bart_core.checkpoint.write_safetensors``), one tensor in memory at a time."""
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in plan.tensors.items():
        n = plan.out_nbytes(t)
        if limit is not None and shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    if len(shards) == 1:
        path = os.path.join(directory, SAFE_WEIGHTS_NAME)
        _write_safetensors_file(path, shards[0], plan, tensors)
        return [path]
    paths, weight_map = [], {}
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors_file(os.path.join(directory, fname), names, plan, tensors)
        paths.append(os.path.join(directory, fname))
        weight_map.update({n: fname for n in names})
    index = {"metadata": {"total_size": plan.nbytes}, "weight_map": weight_map}
    with open(os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2) + "\n")
    return paths + [os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME)]


def write_pytorch_bin(tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``pytorch_model.bin`` through ``torch.save`` (needs every tensor at once: the format is one pickle)."""
    try:
        import torch
    except ImportError:
        raise ConversionError("--torch-bin needs torch installed") from None
    state = {}
    for name in tensors:
        arr = tensors[name]
        state[name] = (torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16) if arr.dtype.name == "bfloat16"
                       else torch.from_numpy(np.ascontiguousarray(arr)))
    torch.save(state, path)


def write_tf_h5_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``tf_model.h5`` through ``bart_core.formats.tf_h5.stage_tf_h5``, one dataset read and written at a time."""
    if plan.dtype is not None and plan.dtype.name == "bfloat16":
        raise ConversionError("--dtype bfloat16 cannot be written to tf_model.h5 (HDF5 has no bfloat16 type); "
                              "use float16 or float32")
    from bart_core.formats.tf_h5 import stage_tf_h5
    stage_tf_h5(path, tensors, plan.config, plan.head)


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


def write_flax_msgpack_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``flax_model.msgpack`` in the layout of ``bart_core.formats.flax_msgpack`` (its ``flax_mapping`` is the
    mapping), written leaf by leaf: msgpack map headers only need the number of keys, known from the name
    table, so the serialised buffer never exists as a whole. Keys are sorted as flax's serialiser sorts them."""
    import msgpack

    from bart_core.formats import flax_msgpack as fm

    tree: dict = {}
    for name, fpath, transpose in fm.flax_mapping(plan.config, plan.head):
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
        if arr.nbytes <= fm.MAX_CHUNK_BYTES:
            _write_msgpack_array(f, packer, arr, fm.EXT_NDARRAY)
            return
        per = max(1, fm.MAX_CHUNK_BYTES // arr.dtype.itemsize)
        flat = arr.reshape(-1)
        starts = list(range(0, flat.size, per))
        f.write(packer.pack_map_header(3) + packer.pack(fm.CHUNK_KEY) + packer.pack(True))
        f.write(packer.pack("shape") + packer.pack({str(i): int(d) for i, d in enumerate(arr.shape)}))
        f.write(packer.pack("chunks") + packer.pack_map_header(len(starts)))
        for i, s in enumerate(starts):
            f.write(packer.pack(str(i)))
            _write_msgpack_array(f, packer, flat[s:s + per], fm.EXT_NDARRAY)

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


# ----------------------------------------------------------------------------------------- output folder
def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_destination(dst: str, overwrite: bool, src: str | None = None) -> None:
    """Refuse a DST that would destroy the source (DST is the source folder or contains it) or a non-empty DST
    without ``overwrite``. Checked again under the DST lock just before the output is put in place."""
    if src is not None:
        src_dir = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
        if _inside(src_dir, dst):
            what = "is the source directory" if os.path.realpath(src_dir) == os.path.realpath(dst) else \
                f"contains the source {src_dir}"
            raise ConversionError(f"{dst}: DST {what}; replacing it would delete the source: convert into a "
                                  "new directory")
    if os.path.exists(dst):
        if not os.path.isdir(dst):
            raise ConversionError(f"{dst}: exists and is not a directory")
        if os.listdir(dst) and not overwrite:
            raise ConversionError(f"{dst}: exists and is not empty; pass --overwrite to replace it")


def check_free_space(folder: str, nbytes: int) -> None:
    """Refuse to start when the file system of ``folder`` cannot hold ``nbytes`` (a full disk mid-write is handled
    too, but HDF5 reports it badly and a refused start costs nothing)."""
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise ConversionError(f"{folder}: not enough free space: the output needs about {nbytes / 1e6:.1f} MB, "
                              f"the file system has {free / 1e6:.1f} MB free")


@contextlib.contextmanager
def staged_directory(dst: str, overwrite: bool = False, src: str | None = None) -> Iterator[str]:
    """A temporary folder beside ``dst`` that replaces ``dst`` on success and vanishes on any error.

    The DST lock is held throughout, so two conversions into one DST never interleave: the second waits, then
    finds DST written and refuses it without ``overwrite``. What a killed conversion left beside DST (a staging
    folder, a previous DST moved aside) is repaired first (``bart_core.fileio.recover_folder_swap``)."""
    dst = os.path.abspath(dst)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    with folder_lock(dst):
        recover_folder_swap(dst)
        check_destination(dst, overwrite, src)
        tmp = staging_folder(dst)
        try:
            yield tmp
            replace_folder(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# ----------------------------------------------------------------------------------------- convert
@dataclass
class ConversionResult:
    destination: str
    head: str
    files: list[str]
    nbytes: int
    source_file: str
    notes: list[str] = field(default_factory=list)


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, disable=None)


def _copy_side_files(src_dir: str, dst_dir: str) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        p = os.path.join(src_dir, name)
        if os.path.isfile(p):
            shutil.copy2(p, os.path.join(dst_dir, name))
            copied.append(name)
    return copied


def output_config(plan: Plan) -> BartConfig:
    config = plan.config.copy()
    config.extra["architectures"] = [HEAD_ARCHITECTURE[plan.head]]
    if plan.dtype is not None:
        config.extra["dtype"] = plan.dtype.name
    config.extra.pop("torch_dtype", None)
    return config


def _output_nbytes(plan: Plan, targets: Sequence[str], torch_bin: bool) -> int:
    """About what the weight files of ``targets`` take on disk (safetensors counted once for torch/safetensors)."""
    files = len(set("safetensors" if t == "torch" else t for t in targets)) + bool(torch_bin)
    tf_wider = "tf" in targets and plan.dtype is not None and plan.dtype.itemsize < 4  # h5 is written in float32
    overhead = 8192 * len(plan.tensors) * files + 1_000_000  # headers, HDF5 object headers and B-trees, configs
    return plan.nbytes * files + (plan.nbytes if tf_wider else 0) + overhead


def targets_of(to: str) -> list[str]:
    if to not in TARGETS:
        raise ConversionError(f"--to {to!r} is not one of {', '.join(TARGETS)}")
    return ["torch", "tf", "flax"] if to == "all" else [to]


def convert(src: str | Source, dst: str, to: str = "all", dtype: str | None = None,
            max_shard_size: int | str | None = None, overwrite: bool = False, head: str | None = None,
            torch_bin: bool = False) -> ConversionResult:
    """Convert ``src`` into ``dst``; raises ``ConversionError`` (nothing written) on bad input."""
    targets = targets_of(to)
    source = src if isinstance(src, Source) else open_source(src)
    check_destination(dst, overwrite, None if isinstance(src, Source) else src)
    plan = make_plan(source, head, dtype)
    if "tf" in targets and plan.dtype is not None and plan.dtype.name == "bfloat16":
        raise ConversionError("--dtype bfloat16 cannot be written to tf_model.h5 (HDF5 has no bfloat16 type); "
                              "use float16 or float32")
    files = []
    check_free_space(os.path.dirname(os.path.abspath(dst)) if not os.path.isdir(dst) else dst,
                     _output_nbytes(plan, targets, torch_bin))
    with staged_directory(dst, overwrite, None if isinstance(src, Source) else src) as tmp:
        config = output_config(plan)
        generative = plan.head in GENERATIVE_HEADS  # as the reference: their generation fields move out of config
        config.save_pretrained(tmp, move_generation_parameters=generative)
        files.append(CONFIG_NAME)
        files += _copy_side_files(source.directory, tmp)
        if generative and GENERATION_CONFIG_NAME not in files and config.non_default_generation_parameters():
            GenerationConfig.from_model_config(config).save_pretrained(tmp)  # a source from before the file
            files.append(GENERATION_CONFIG_NAME)
        for target in dict.fromkeys("safetensors" if t == "torch" else t for t in targets):
            with _progress(plan.nbytes, f"{TARGET_FILES[target]}") as bar:
                tensors = LazyTensors(plan, bar)
                if target == "safetensors":
                    written = write_safetensors_streaming(plan, tensors, tmp, max_shard_size)
                    files += [os.path.basename(p) for p in written]
                    if torch_bin:
                        write_pytorch_bin(LazyTensors(plan), os.path.join(tmp, PT_WEIGHTS_NAME))
                        files.append(PT_WEIGHTS_NAME)
                elif target == "tf":
                    write_tf_h5_streaming(plan, tensors, os.path.join(tmp, TF_WEIGHTS_NAME))
                    files.append(TF_WEIGHTS_NAME)
                elif target == "flax":
                    write_flax_msgpack_streaming(plan, tensors, os.path.join(tmp, FLAX_WEIGHTS_NAME))
                    files.append(FLAX_WEIGHTS_NAME)
    notes = list(source.notes)
    if plan.unexpected:
        notes.append(f"ignored tensors the {plan.head} model does not use: {', '.join(plan.unexpected[:8])}")
    if plan.filled:
        notes.append(f"filled with zeros (absent from the source): {', '.join(plan.filled)}")
    return ConversionResult(os.path.abspath(dst), plan.head, files, plan.nbytes, source.file, notes)
