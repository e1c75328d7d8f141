"""The reference TensorFlow weight file, ``tf_model.h5``, as a declared mapping from canonical names.

Layout written by transformers' ``TFBart*.save_pretrained`` (Keras 2 ``save_weights`` in HDF5)::

    attrs: layer_names=[<top-level layers>], backend="tensorflow", keras_version=...
    /<layer>                      attrs: weight_names=[<weight name>, ...]
    /<layer>/<weight name>        dataset, one per weight name (the name contains "/")

Weight names start with the Keras model name (``tf_bart_for_conditional_generation/model/encoder/...``) except
for the shared embedding (``model.shared/model.shared/embeddings:0``) and ``final_logits_bias:0``. The loader of
the reference drops the first path component and matches the rest, so the model-name prefix is free; we write
the one the reference writes.

Transforms (``_LEAF``): a dense weight is stored as the Keras kernel, the transpose of the canonical
``(out, in)`` weight; layer norms are ``gamma``/``beta``; embeddings and position tables are ``embeddings``
(older files say ``weight``). The reference TF line has no question-answering or causal-LM class and always
ties the LM head; for those we declare the same scheme under ``tf_bart_for_question_answering`` /
``tf_bart_for_causal_lm`` and an untied LM head under the ``lm_head`` layer.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from bart_core.config import BartConfig
from bart_core.errors import CheckpointError
from bart_core.fileio import atomic_path
from bart_core.formats.safetensors import LazyTensor
from bart_core.names import BASE_PREFIX, HEADS, ParamSpec, invert_leaves, param_table

KERAS_VERSION = "2.21.0"
MODEL_NAMES = {  # head -> Keras model name of the reference class (first component of weight names)
    "base": "tf_bart_model",
    "conditional_generation": "tf_bart_for_conditional_generation",
    "sequence_classification": "tf_bart_for_sequence_classification",
    "question_answering": "tf_bart_for_question_answering",
    "causal_lm": "tf_bart_for_causal_lm",
}
# canonical kind -> (Keras variable name, transpose?)
_LEAF = {"linear": ("kernel", True), "bias": ("bias", False), "norm_weight": ("gamma", False),
         "norm_bias": ("beta", False), "embedding": ("embeddings", False), "position": ("embeddings", False),
         "logits_bias": ("final_logits_bias", False)}


def _path(dotted: str) -> list[str]:
    """``model.encoder.layers.0.fc1`` -> ``["model", "encoder", "layers.0", "fc1"]`` (Keras layer names)."""
    out: list[str] = []
    for part in dotted.split("."):
        if part.isdigit() and out:
            out[-1] += "." + part
        else:
            out.append(part)
    return out


def h5_entry(name: str, kind: str, head: str) -> tuple[str, str, bool]:
    """Canonical name -> (top-level layer, weight name, transpose). The declared mapping table, one rule."""
    if kind == "logits_bias":
        return "final_logits_bias", "final_logits_bias:0", False
    leaf, transpose = _LEAF[kind]
    body = name if head != "base" else BASE_PREFIX + name
    module = body.rsplit(".", 1)[0]
    if module == "model.shared":
        return "model", "model.shared/model.shared/embeddings:0", False
    parts = _path(module)
    return parts[0], "/".join([MODEL_NAMES[head]] + parts + [f"{leaf}:0"]), transpose


def h5_table(config: BartConfig, head: str) -> list[tuple[str, str, str, bool]]:
    """``[(canonical name, layer, weight name, transpose)]`` for every stored tensor of ``head``."""
    return [(s.name, *h5_entry(s.name, s.kind, head)) for s in param_table(config, head) if s.stored]


def _stored_leaf(spec: ParamSpec, head: str) -> tuple[str, bool]:
    """(Keras variable name, transposed?) of one canonical tensor: ``.../fc1/kernel:0`` -> ``kernel``."""
    _, weight_name, transpose = h5_entry(spec.name, spec.kind, head)
    return weight_name.split(":")[0].rsplit("/", 1)[-1], transpose


# Keras variable name -> (canonical leaf, transposed?): the inverse of ``h5_entry`` over the name table, plus the
# ``weight`` that older files write for embeddings.
LEAF_BACK = {**invert_leaves(_stored_leaf), "weight": ("weight", False)}


def h5_canonical(weight_name: str) -> tuple[str, bool]:
    """Weight name of any TF-BART h5 file -> (canonical name with ``model.`` prefix, transposed?): the inverse of
    ``h5_entry``."""
    parts = weight_name.split(":")[0].split("/")
    if parts[-1] == "final_logits_bias":  # a top-level weight, under whatever layer name the writer chose
        parts = parts[-1:]
    if parts[0].startswith("tf_bart"):
        parts = parts[1:]
    if parts[0] in ("model.shared", "shared"):  # the shared embedding's layer is named after its canonical module
        parts = ["model", "shared", parts[-1]]
    *module, leaf = parts
    if leaf not in LEAF_BACK:
        raise ValueError(f"unknown variable {leaf!r}")
    canonical_leaf, transposed = LEAF_BACK[leaf]
    return ".".join(module + [canonical_leaf]), transposed


def _decode(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def check_self_contained(f, path: str) -> None:
    """Refuse an HDF5 file whose data is not all inside it: external links, soft links, datasets with external
    storage, virtual datasets (each could read a file outside the checkpoint folder)."""
    import h5py

    def link(name, lnk):
        if isinstance(lnk, (h5py.ExternalLink, h5py.SoftLink)):
            raise CheckpointError(f"{path}: {name} is a {type(lnk).__name__}; weight files must hold their data "
                                  "themselves (links are refused)")

    def dataset(name, obj):
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            raise CheckpointError(f"{path}: dataset {name} keeps its data outside the file (refused)")

    f.visititems_links(link)
    f.visititems(dataset)


def read_tf_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{canonical name: array}`` (``model.``-prefixed, PyTorch layout) from a reference ``tf_model.h5``.

    Any failure of the HDF5 library on the file (it raises RuntimeError, OSError, SystemError, ... on corrupt
    structures) is a ``CheckpointError`` naming the file."""

    path = os.fspath(path)
    try:
        return _read_tf_h5(path)
    except CheckpointError:
        raise
    except Exception as e:
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"{path}: corrupt HDF5 weight file ({type(e).__name__}: {detail})") from None


def _read_tf_h5(path: str) -> dict[str, np.ndarray]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({e})") from None
    out: dict[str, np.ndarray] = {}
    with f:
        check_self_contained(f, path)
        root = f["model_weights"] if "model_weights" in f else f  # a full-model .h5 nests the weights
        layers = _decode(root.attrs["layer_names"]) if "layer_names" in root.attrs else list(root.keys())
        for layer in layers:
            if layer not in root:
                raise CheckpointError(f"{path}: layer {layer!r} is listed in layer_names but missing")
            group = root[layer]
            if "weight_names" in group.attrs:
                names = [n for n in _decode(group.attrs["weight_names"]) if n]
            else:
                names = []
                group.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            for wname in names:
                try:
                    canonical, transposed = h5_canonical(wname)
                except (ValueError, IndexError):
                    raise CheckpointError(f"{path}: weight {layer}/{wname} is not a BART variable") from None
                if wname not in group:
                    raise CheckpointError(f"{path}: dataset {layer}/{wname} is listed in weight_names but missing")
                arr = np.asarray(group[wname])
                out[canonical] = np.ascontiguousarray(arr.T) if transposed else arr
    return out


def open_file(path: str, config: BartConfig) -> dict[str, LazyTensor] | None:
    """``{canonical name: LazyTensor}`` reading one HDF5 dataset per load, located through the declared
    ``h5_table`` of every head; ``None`` when the file holds a weight that table does not name (the
    eager reader of ``bart_core`` then handles the older spellings)."""
    import h5py

    def key(layer: str, wname: str) -> tuple[str, str]:
        first, _, rest = wname.partition("/")
        return layer, rest if first.startswith("tf_bart") else wname

    known: dict[tuple[str, str], tuple[str, bool]] = {}
    for head in reversed(HEADS):  # the prefixed names of the task heads win over the base model's
        for name, layer, wname, transpose in h5_table(config, head):
            known[key(layer, wname)] = (name, transpose)
    out: dict[str, LazyTensor] = {}
    with h5py.File(path, "r") as f:
        check_self_contained(f, path)
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


def write_tf_h5(tensors: dict[str, np.ndarray], config: BartConfig, head: str, path: str | os.PathLike) -> str:
    """Write ``tensors`` (canonical stored names, PyTorch layout) as the reference ``tf_model.h5``; atomic."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        stage_tf_h5(tmp, tensors, config, head)
    return path


def stage_tf_h5(path: str, tensors: Mapping[str, np.ndarray], config: BartConfig, head: str) -> None:
    """Write the ``tf_model.h5`` layout at ``path`` directly (a staged temporary path: atomicity is the caller's).

    ``tensors`` may be lazy (conversion streams them): each is read, written and released in turn. float16 stays
    float16, everything else is written as float32 (HDF5 has no bfloat16). The file is written through a Python
    file object, so a full disk is an ``OSError`` (HDF5 writing to the path itself crashed the process on ENOSPC).
    """
    import h5py

    groups: dict[str, list[tuple[str, str, bool]]] = {}
    for name, layer, wname, transpose in h5_table(config, head):
        if name not in tensors:
            raise CheckpointError(f"write_tf_h5: no tensor {name!r}")
        groups.setdefault(layer, []).append((wname, name, transpose))
    with open(path, "wb") as raw:
        with h5py.File(raw, "w") as f:
            f.attrs["layer_names"] = np.array(list(groups), dtype=h5py.string_dtype())
            f.attrs["backend"] = "tensorflow"
            f.attrs["keras_version"] = KERAS_VERSION
            for layer, weights in groups.items():
                g = f.create_group(layer)
                g.attrs["weight_names"] = np.array([w for w, _, _ in weights], dtype=h5py.string_dtype())
                for wname, name, transpose in weights:
                    arr = np.asarray(tensors[name])
                    if arr.dtype != np.float16:
                        arr = arr.astype(np.float32)
                    g.create_dataset(wname, data=np.ascontiguousarray(arr.T) if transpose else arr)
                    del arr
            f.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype=np.float64)
        raw.flush()
        os.fsync(raw.fileno())
