"""``bart-convert inspect DIR``: what a checkpoint holds, without loading a framework."""

from __future__ import annotations

import json
import os

import numpy as np

from bart_core.checkpoint import WEIGHT_FILES
from bart_core.names import param_table
from conversion.convert import LazyTensor, detect_head, open_source

CONFIG_SUMMARY = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                  "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
                  "activation_function", "scale_embedding", "tie_word_embeddings", "pad_token_id", "bos_token_id",
                  "eos_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id")


def _identical_pairs(tensors: dict[str, LazyTensor]) -> list[tuple[str, str]]:
    """Stored tensors whose values are equal (a tie the file does not declare): embedding-sized ones only."""
    big = [(n, t) for n, t in tensors.items() if len(t.shape) == 2 and t.shape[0] > t.shape[1]]
    pairs = []
    for i, (a, ta) in enumerate(big):
        va = None
        for b, tb in big[i + 1:]:
            if ta.shape != tb.shape or ta.dtype != tb.dtype:
                continue
            va = ta.load() if va is None else va
            if np.array_equal(va, tb.load()):
                pairs.append((a, b))
    return pairs


def inspect_checkpoint(directory: str) -> dict:
    """A JSON-able summary: files, config, head, tensors, tied weights, counts."""
    source = open_source(directory)
    config = source.config
    head = detect_head(list(source.tensors), config)
    table = {s.name: s for s in param_table(config, head)}
    # raw names may lack the "model." prefix (a base checkpoint); show them as the file has them
    tensors = [{"name": n, "shape": list(t.shape), "dtype": t.dtype.name, "bytes": t.nbytes}
               for n, t in source.tensors.items()]
    declared_ties = [{"name": s.name, "tied_to": s.tied_to, "stored": s.name in source.tensors}
                     for s in table.values() if s.tied_to is not None]
    files = []
    for f in sorted(os.listdir(source.directory)):
        p = os.path.join(source.directory, f)
        if f in WEIGHT_FILES or f.endswith(".safetensors"):
            files.append({"file": f, "bytes": os.path.getsize(p)})
    return {
        "directory": os.path.abspath(directory),
        "weight_file": os.path.basename(source.file),
        "files": files,
        "head": head,
        "architectures": config.extra.get("architectures"),
        "config": {k: getattr(config, k) for k in CONFIG_SUMMARY} | {"num_labels": config.num_labels},
        "tensors": tensors,
        "declared_ties": declared_ties,
        "identical_stored_tensors": [list(p) for p in _identical_pairs(source.tensors)],
        "num_tensors": len(tensors),
        "num_parameters": int(sum(int(np.prod(t["shape"], dtype=np.int64)) for t in tensors)),
        "num_bytes": int(sum(t["bytes"] for t in tensors)),
        "dtypes": sorted({t["dtype"] for t in tensors}),
        "not_in_table": sorted(n for n in source.tensors if n not in table and f"model.{n}" not in table),
    }


def format_inspection(info: dict) -> str:
    lines = [f"checkpoint {info['directory']}",
             "files: " + ", ".join(f"{f['file']} ({_size(f['bytes'])})" for f in info["files"]),
             f"read from: {info['weight_file']}",
             f"head: {info['head']} (architectures: {', '.join(info['architectures'] or ['-'])})",
             "config: " + ", ".join(f"{k}={v}" for k, v in info["config"].items()),
             f"parameters: {info['num_parameters']:,} in {info['num_tensors']} stored tensors, "
             f"{_size(info['num_bytes'])}, dtypes {', '.join(info['dtypes'])}"]
    ties = [f"{t['name']} -> {t['tied_to']}" + ("" if not t["stored"] else " (also stored)")
            for t in info["declared_ties"]]
    lines.append("tied weights: " + ("; ".join(ties) if ties else "none"))
    if info["identical_stored_tensors"]:
        lines.append("identical stored tensors: " + "; ".join(f"{a} == {b}"
                                                              for a, b in info["identical_stored_tensors"]))
    if info["not_in_table"]:
        lines.append("not in the name table: " + ", ".join(info["not_in_table"]))
    width = max((len(t["name"]) for t in info["tensors"]), default=4)
    lines.append("")
    lines.append(f"{'tensor'.ljust(width)}  {'shape':<16}  dtype")
    for t in info["tensors"]:
        lines.append(f"{t['name'].ljust(width)}  {str(tuple(t['shape'])):<16}  {t['dtype']}")
    return "\n".join(lines)


def _size(n: float) -> str:
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"


def inspect_json(directory: str) -> str:
    return json.dumps(inspect_checkpoint(directory), indent=2)
