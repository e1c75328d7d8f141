"""Framework-neutral checkpoint IO in numpy.

* ``read_safetensors`` / ``write_safetensors`` / ``save_checkpoint``: checkpoint folders, through one module per
  format in ``bart_core.formats`` (safetensors, torch_bin, tf_h5, flax_msgpack) and the atomic writes of
  ``bart_core.fileio``.
* ``load_state_dict(directory)``: find the weight file of a checkpoint directory and return
  ``{canonical name: np.ndarray}``, whatever format it is in.
* ``align_state_dict``: match a raw state dict to the name table of one head (add or strip the ``model.``
  prefix, resolve tied aliases, check every shape) and report missing / unexpected tensors by name.

Reading ``pytorch_model.bin`` needs ``torch`` (pickle is only ever read through
``torch.load(weights_only=True)``); it is imported lazily, only for that format.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from bart_core.config import BartConfig
from bart_core.errors import CheckpointError
from bart_core.fileio import atomic_files
from bart_core.formats import safetensors as st
from bart_core.formats.safetensors import (  # noqa: F401  (re-exported: the names users and tests import)
    bf16_to_float32,
    check_shard_name,
    float32_to_bf16_bits,
    parse_size,
)
from bart_core.formats.torch_bin import read_pytorch_bin, stage_pytorch_bin, torch_load_weights  # noqa: F401
from bart_core.names import BASE_PREFIX, head_param_names, param_table

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
TF_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, TF_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)


# ----------------------------------------------------------------------------------------- dtypes
_SHARD_RE = re.compile(r"^(model|pytorch_model|tf_model|flax_model)-\d{5}-of-\d{5}\.(safetensors|bin|h5|msgpack)$")


def is_weight_file(name: str) -> bool:
    """True for every file name the reference layout uses for weights (plain, sharded, index)."""
    return (name in WEIGHT_FILES or _SHARD_RE.match(name) is not None
            or name in ("pytorch_model.bin.index.json", "tf_model.h5.index.json", "flax_model.msgpack.index.json"))


def write_safetensors(tensors: Mapping[str, np.ndarray], directory: str, max_shard_size: int | str | None = None,
                      metadata: dict | None = None) -> list[str]:
    """Write ``model.safetensors`` (or shards plus ``model.safetensors.index.json``) as one atomic unit: the
    previous safetensors files of ``directory`` are replaced only once the new ones are complete."""
    parse_size(max_shard_size)
    with atomic_files(directory, replaces=lambda n: is_weight_file(n) and n.endswith((".safetensors",
                                                                                        ".safetensors.index.json"))) \
            as files:
        names = st.stage(files, tensors, max_shard_size=max_shard_size, metadata=metadata)
    return [os.path.join(directory, n) for n in names]


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
                names += st.stage(files, tensors, max_shard_size=max_shard_size)
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


def read_safetensors(path: str, keep_bf16: bool = False) -> dict[str, np.ndarray]:
    """``{name: array}`` of one safetensors file (bfloat16 widened to float32 unless ``keep_bf16``)."""
    return st.read_file(path, keep_bf16)


def read_sharded_safetensors(index_path: str) -> dict[str, np.ndarray]:
    return st.read_sharded(index_path)


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
