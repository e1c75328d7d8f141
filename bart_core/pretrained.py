"""The framework-neutral half of ``from_pretrained`` / ``save_pretrained``, shared by the three backends.

A backend's loader calls ``prepare_load`` (resolve a local folder or a hub id, split the keywords, read the
config, the generation config and the weights, and match the weights to the head's name table) and then only
builds its model and copies the arrays in. Its saver calls ``save_folder`` with its numpy state dict.

Keywords follow the reference: loading keywords are named in ``LOAD_KEYWORDS`` (plus the backend's own, such as
``torch_dtype``); any other keyword must be a field of the config (it overrides it, as in the reference) or it is a
``TypeError`` naming it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from bart_core.checkpoint import (
    SAFE_WEIGHTS_INDEX_NAME,
    WEIGHT_FILES,
    CheckpointError,
    LoadReport,
    align_state_dict,
    export_state_dict,
    find_weight_file,
    load_state_dict,
    save_checkpoint,
)
from bart_core.config import CONFIG_NAME, BartConfig
from bart_core.names import param_table

GENERATION_CONFIG_NAME = "generation_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json")

# where to find a folder or hub id (the reference's names)
HUB_KEYWORDS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder", "proxies",
                "use_auth_token", "resume_download")
# accepted by every backend's from_pretrained
LOAD_KEYWORDS = HUB_KEYWORDS + ("config", "output_loading_info", "ignore_mismatched_sizes", "use_safetensors",
                                "trust_remote_code", "from_pt", "from_tf", "from_flax", "generation_config")
# attributes every reference config has beyond BART's own fields: accepted as config overrides
COMMON_CONFIG_FIELDS = ("output_hidden_states", "output_attentions", "return_dict", "torchscript", "use_bfloat16",
                        "pruned_heads", "chunk_size_feed_forward", "tie_encoder_decoder", "architectures",
                        "finetuning_task", "task_specific_params", "cross_attention_hidden_size", "sep_token_id",
                        "decoder_start_token_id", "prefix", "tokenizer_class", "id2label", "label2id", "num_labels",
                        "problem_type", "dtype", "torch_dtype", "gradient_checkpointing", "transformers_version")


# ----------------------------------------------------------------------------------------- locating
def _is_hub_id(path: str) -> bool:
    parts = path.split("/")
    return (not os.path.isabs(path) and not path.startswith((".", "~")) and 1 <= len(parts) <= 2
            and all(p and p not in (".", "..") for p in parts))


def _offline_hint(repo_id: str) -> str:
    from huggingface_hub import constants
    return (f"{repo_id}: not a local folder, and not found in the Hugging Face cache ({constants.HF_HUB_CACHE}). "
            f"Download it once where there is network access (`hf download {repo_id}`, or any from_pretrained call), "
            f"then work offline with HF_HUB_OFFLINE=1; or pass the path of a local checkpoint folder")


def resolve_folder(path: str | os.PathLike, files: Iterable[str] = (CONFIG_NAME,), optional: Iterable[str] = (),
                   **hub: Any) -> str:
    """A local folder holding the checkpoint: ``path`` itself when it exists, else the snapshot folder of the hub
    id ``path`` in the ``huggingface_hub`` cache, after fetching ``files`` (required) and the first available of
    ``optional`` (network use follows ``huggingface_hub``: ``HF_HUB_OFFLINE``, ``local_files_only``, ...)."""
    path = os.fspath(path)
    subfolder = hub.pop("subfolder", None) or ""
    if os.path.exists(path):
        return os.path.join(path, subfolder) if subfolder else path
    if not _is_hub_id(path):
        raise FileNotFoundError(f"{path}: no such checkpoint folder (and not a hub id like 'facebook/bart-base')")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if hub.get("use_auth_token") is not None and hub.get("token") is None:
        hub["token"] = hub.pop("use_auth_token")
    hub.pop("use_auth_token", None)
    hub.pop("resume_download", None)
    kwargs = {k: v for k, v in hub.items() if v is not None}

    def fetch(name: str) -> str:
        return hf_hub_download(path, name, subfolder=subfolder or None, **kwargs)

    folder = None
    try:
        for name in files:
            folder = os.path.dirname(fetch(name))
        for name in optional:
            try:
                local = fetch(name)
            except (EntryNotFoundError, LocalEntryNotFoundError):
                continue
            folder = os.path.dirname(local)
            if name == SAFE_WEIGHTS_INDEX_NAME:
                with open(local, encoding="utf-8") as f:
                    shards = sorted(set(json.load(f).get("weight_map", {}).values()))
                for shard in shards:
                    fetch(shard)
            if name in WEIGHT_FILES:
                break
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{path}: revision {hub.get('revision')!r} not found") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{path}: no such model repository on the hub (or it needs a token)") from None
    except LocalEntryNotFoundError:
        raise FileNotFoundError(_offline_hint(path)) from None
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"{path}: the repository has no {getattr(e, 'filename', None) or 'such file'}") \
            from None
    except OSError as e:  # network errors that huggingface_hub passes through
        raise FileNotFoundError(f"{_offline_hint(path)} ({type(e).__name__})") from None
    return folder


# ----------------------------------------------------------------------------------------- keywords
def split_keywords(kwargs: dict, accepted: Iterable[str], config: BartConfig | None, where: str) -> tuple[dict, dict]:
    """``(loading keywords, config overrides)``; anything else is a ``TypeError`` naming it."""
    accepted = set(LOAD_KEYWORDS) | set(accepted)
    fields = set(BartConfig().to_dict()) | set(COMMON_CONFIG_FIELDS)
    if config is not None:
        fields |= set(config.to_dict())
    loading = {k: v for k, v in kwargs.items() if k in accepted}
    overrides = {k: v for k, v in kwargs.items() if k not in accepted and k in fields}
    unknown = sorted(k for k in kwargs if k not in accepted and k not in fields)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}: neither a "
                        f"loading option nor a BartConfig field")
    return loading, overrides


# ----------------------------------------------------------------------------------------- loading
@dataclass
class PreparedLoad:
    """Everything ``from_pretrained`` needs before it builds the model."""
    folder: str | None
    config: BartConfig
    generation_config: Any
    report: LoadReport | None            # None when there are no weights (``config=`` without a checkpoint)
    weight_file: str | None
    options: dict = field(default_factory=dict)
    loading_info: dict = field(default_factory=dict)


def _read_generation_config(folder: str | None, config: BartConfig):
    """The checkpoint's ``generation_config.json`` (else the generation fields of its config), as the reference."""
    from bart_core.generation import GenerationConfig
    if folder is not None and os.path.isfile(os.path.join(folder, GENERATION_CONFIG_NAME)):
        return GenerationConfig.from_pretrained(folder)
    return GenerationConfig.from_model_config(config)


def _drop_mismatched(state: Mapping[str, np.ndarray], config: BartConfig, head: str) -> tuple[dict, list]:
    expected = {s.name: s.shape for s in param_table(config, head)}
    kept, mismatched = {}, []
    for name, arr in state.items():
        key = name if name in expected else ("model." + name if "model." + name in expected else name)
        want = expected.get(key)
        if want is not None and tuple(arr.shape) != tuple(want):
            mismatched.append((key, tuple(arr.shape), tuple(want)))
        else:
            kept[name] = arr
    return kept, mismatched


def prepare_load(cls, path, kwargs: dict, accepted: Iterable[str] = (), prefer: Iterable[str] = WEIGHT_FILES,
                 ) -> PreparedLoad:
    """Resolve ``path``, split ``kwargs``, read config, generation config and weights, match them to ``cls.head``.

    ``path`` may be ``None`` when ``config=`` is given (a fresh model, as ``Model(config)``)."""
    where = f"{cls.__name__}.from_pretrained"
    loading, _ = split_keywords(kwargs, accepted, None, where)
    config = loading.get("config")
    if config is not None and not isinstance(config, BartConfig):
        if isinstance(config, (str, os.PathLike)):
            config = BartConfig.from_pretrained(resolve_folder(config, **_hub(loading)))
        else:
            raise TypeError(f"{where}: config must be a BartConfig or a path, got {type(config).__name__}")
    folder = None
    if path is not None:
        prefer = list(prefer)
        if loading.get("use_safetensors") is False:
            prefer = [p for p in prefer if "safetensors" not in p] + [p for p in prefer if "safetensors" in p]
        folder = resolve_folder(path, files=() if config is not None else (CONFIG_NAME,),
                                optional=[GENERATION_CONFIG_NAME] + prefer, **_hub(loading))
        if config is None:
            config = BartConfig.from_pretrained(folder)
    elif config is None:
        raise TypeError(f"{where}: give a checkpoint path or config=")
    _, overrides = split_keywords(kwargs, accepted, config, where)
    if overrides:
        config = config.copy(**overrides)
    generation_config = loading.get("generation_config") or _read_generation_config(folder, config)
    prepared = PreparedLoad(folder, config, generation_config, None, None, loading)
    info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    prepared.loading_info = info
    if folder is None:
        return prepared
    file = find_weight_file(folder, prefer)
    if loading.get("use_safetensors") is True and "safetensors" not in os.path.basename(file):
        raise FileNotFoundError(f"{folder}: use_safetensors=True but the folder has no model.safetensors")
    state = load_state_dict(file, prefer)
    if loading.get("ignore_mismatched_sizes"):
        state, mismatched = _drop_mismatched(state, config, cls.head)
        info["mismatched_keys"] = mismatched
        report = align_state_dict(state, config, cls.head, source=file,
                                  allow_missing={m[0] for m in mismatched})
    else:
        report = align_state_dict(state, config, cls.head, source=file)
    info["missing_keys"] = list(report.missing_head)
    info["unexpected_keys"] = list(report.unexpected)
    prepared.report, prepared.weight_file = report, file
    return prepared


def _hub(loading: dict) -> dict:
    return {k: loading[k] for k in HUB_KEYWORDS if k in loading}


def warn_report(report: LoadReport, model_name: str, source: str) -> None:
    """One warning each for head tensors initialised freshly and for tensors of the file the model does not use."""
    if report.missing_head:
        warnings.warn(f"{source}: tensors missing for {model_name}, freshly initialised: "
                      f"{', '.join(report.missing_head)}", stacklevel=4)
    if report.unexpected:
        warnings.warn(f"{source}: unexpected tensors not used by {model_name}: {', '.join(report.unexpected)}",
                      stacklevel=4)


# ----------------------------------------------------------------------------------------- saving
GENERATIVE_HEADS = ("conditional_generation", "causal_lm")


def generation_config_to_save(model):
    """The generation config a saved folder carries: for the heads that generate, the one the model decodes with
    by default (``model_default_generation_config``), as the reference; None for the others."""
    from bart_core.generation import model_default_generation_config
    if model.head not in GENERATIVE_HEADS:
        return None
    return model_default_generation_config(model.config, getattr(model, "generation_config", None))


def config_to_save(config: BartConfig, head: str) -> BartConfig:
    """The config a checkpoint of ``head`` carries (the causal LM is a decoder-only model, as in the reference)."""
    if head == "causal_lm" and (not config.is_decoder or config.is_encoder_decoder):
        return config.copy(is_decoder=True, is_encoder_decoder=False)
    return config


def save_folder(path, config: BartConfig, head: str, state: Mapping[str, np.ndarray], formats: Iterable[str],
                generation_config=None, max_shard_size=None, where: str = "save_pretrained",
                **kwargs: Any) -> list[str]:
    """Write a checkpoint folder atomically (see ``bart_core.checkpoint.save_checkpoint``)."""
    push = kwargs.pop("push_to_hub", False)
    kwargs.pop("is_main_process", None)
    kwargs.pop("token", None)
    if push:
        raise NotImplementedError(f"{where}(push_to_hub=True): upload the folder with huggingface_hub "
                                  "(HfApi().upload_folder); this library never uploads by itself")
    if kwargs:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
    if os.path.isfile(os.fspath(path)):
        raise FileExistsError(f"{os.fspath(path)}: save_pretrained needs a folder, this is a file")
    tensors = export_state_dict(state, config, head)
    return save_checkpoint(path, config_to_save(config, head), tensors, head, formats=formats,
                           max_shard_size=max_shard_size, generation_config=generation_config)


__all__ = ["GENERATION_CONFIG_NAME", "TOKENIZER_FILES", "LOAD_KEYWORDS", "PreparedLoad", "config_to_save",
           "prepare_load", "resolve_folder", "save_folder", "split_keywords", "CheckpointError"]
