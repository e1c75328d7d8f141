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
import os
import shutil
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

from bart_core.checkpoint import (
    FLAX_WEIGHTS_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    WEIGHT_FILES,
    CheckpointError,
    align_state_dict,
    find_weight_file,
    load_state_dict,
)
from bart_core.config import CONFIG_NAME, BartConfig
from bart_core.fileio import folder_lock, recover_folder_swap, replace_folder, staging_folder
from bart_core.formats import flax_msgpack, tf_h5
from bart_core.formats import safetensors as st
from bart_core.formats.safetensors import LazyTensor, bfloat16
from bart_core.formats.torch_bin import stage_pytorch_bin
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
def target_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        bf = bfloat16()
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


def _open_weights(file: str, config: BartConfig) -> dict[str, LazyTensor]:
    base = os.path.basename(file)
    try:
        if base.endswith(".safetensors"):
            return st.open_file(file)
        if base == SAFE_WEIGHTS_INDEX_NAME or base.endswith(".json"):
            return st.open_sharded(file)
        lazy = None
        if base.endswith(".h5"):
            lazy = tf_h5.open_file(file, config)
        elif base.endswith(".msgpack"):
            lazy = flax_msgpack.open_file(file, config)
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
def write_safetensors_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], directory: str,
                                max_shard_size: int | str | None = None) -> list[str]:
    """``model.safetensors`` or its shards plus the index in ``directory`` through ``bart_core.formats.safetensors``
    (header from the plan's shapes and dtypes, one tensor in memory at a time)."""
    specs = {name: (t.shape, plan.out_dtype(t)) for name, t in plan.tensors.items()}
    return [os.path.join(directory, n) for n in st.stage(_Direct(directory), tensors, specs, max_shard_size)]


class _Direct:
    """A ``FileSet`` that writes straight into a folder (conversion stages the whole folder instead)."""

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def write_text(self, name: str, text: str) -> None:
        with open(self.path(name), "w", encoding="utf-8") as f:
            f.write(text)


def write_flax_msgpack_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``flax_model.msgpack`` through ``bart_core.formats.flax_msgpack.stage_flax_msgpack``, leaf by leaf."""
    flax_msgpack.stage_flax_msgpack(path, tensors, plan.config, plan.head)


def write_pytorch_bin(tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``pytorch_model.bin`` (the whole dict at once: the format is one pickle)."""
    stage_pytorch_bin(path, tensors)


def write_tf_h5_streaming(plan: Plan, tensors: Mapping[str, np.ndarray], path: str) -> None:
    """``tf_model.h5`` through ``bart_core.formats.tf_h5.stage_tf_h5``, one dataset read and written at a time."""
    if plan.dtype is not None and plan.dtype.name == "bfloat16":
        raise ConversionError("--dtype bfloat16 cannot be written to tf_model.h5 (HDF5 has no bfloat16 type); "
                              "use float16 or float32")
    tf_h5.stage_tf_h5(path, tensors, plan.config, plan.head)


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
