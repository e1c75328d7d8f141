"""BART's byte-level BPE tokenizer: a thin layer over the `tokenizers` library, with the calling surface of
transformers 4.57.6 ``BartTokenizer`` / ``BartTokenizerFast``.

All text work (byte-level pre-tokenization, BPE, special-token matching, truncation, padding, offsets) is done
by one `tokenizers.Tokenizer` per instance, configured the way the reference bart-base tokenizer is:

- pre-tokenizer and decoder: ByteLevel (a leading space is part of a word: "Hello" and " Hello" differ);
- post-processor: RobertaProcessing, which adds ``<s> A </s>`` or ``<s> A </s></s> B </s>``;
- special tokens ``<s> <pad> </s> <unk> <mask>``; ``<mask>`` swallows the whitespace on its left (lstrip),
  so "No <mask> in" gives the same ids as "No<mask> in".

Two classes, as in the reference: `BartTokenizerFast` (``is_fast=True``) and `BartTokenizer` (``is_fast=False``).
Both encode with the same backend and give the fast reference's ids, offsets and decoded text; they differ in
``is_fast`` and in the files ``save_pretrained`` writes (each writes what its reference class writes). Methods
that work on id lists (`pad`, `prepare_for_model`, `truncate_sequences`) follow the reference's Python code,
which both reference classes share.

This module imports numpy, `tokenizers` and the standard library only; torch, TensorFlow and JAX are imported
when ``return_tensors`` asks for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bart_core.fileio import atomic_write_text
from bart_core.inputs import TENSOR_TYPES, to_framework

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

# Role -> default text, in the reference's attribute order. bos/cls and eos/sep share a token.
SPECIAL_TOKENS = {
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
    "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>",
}
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
SIDES = ("right", "left")
# The reference's "no limit" model_max_length is int(1e30); above LARGE_INTEGER there is no default length.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)
_BACKEND_MAX_LENGTH = 2**63 - 1  # the Rust side takes a usize
# from_pretrained keywords that only concern downloading (nothing is downloaded here): accepted, dropped.
_HUB_KEYWORDS = ("cache_dir", "force_download", "resume_download", "proxies", "token", "use_auth_token",
                 "revision", "local_files_only", "subfolder", "trust_remote_code", "_from_auto", "_commit_hash")
# Config keys that describe files or the loader, not the tokenizer: never passed on or written back.
_FILE_KEYS = ("vocab_file", "merges_file", "tokenizer_file", "name_or_path", "special_tokens_map_file",
              "tokenizer_object", "added_tokens_decoder", "tokenizer_class", "auto_map", "processor_class",
              "init_inputs")

# Decode-time clean-up of the spaces a word-level tokenizer puts before punctuation and English contractions.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be read; the message names the file and what is wrong with it."""


def bundled_tokenizer_dir() -> str:
    """The folder of the bart-base vocabulary (vocab.json, merges.txt) shipped inside the package."""
    return str(pathlib.Path(__file__).resolve().parent / "data" / "bart-base-tokenizer")


def clean_up_tokenization(text: str) -> str:
    for old, new in _CLEANUP:
        text = text.replace(old, new)
    return text


# ==================================================================== BatchEncoding

class BatchEncoding(dict):
    """The encoder's output: a dict (``enc["input_ids"]``) that also reads as attributes (``enc.input_ids``).

    ``encodings`` keeps the `tokenizers.Encoding` of each row (None for outputs of `pad` / `prepare_for_model`).
    Token strings and word ids are tracked only when the call asked for offsets or passed pre-split words
    (tracking them costs speed); ``sequence_ids`` is always available when ``encodings`` is."""

    def __init__(self, data: Mapping | None = None, encodings: list | None = None, tracked: bool = False):
        super().__init__(data or {})
        self.encodings = encodings
        self._tracked = tracked

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it holds {sorted(self)}") from None

    @property
    def data(self) -> dict:
        return dict(self)

    @property
    def is_fast(self) -> bool:
        return self.encodings is not None

    @property
    def n_sequences(self) -> int | None:
        return None if not self.encodings else self.encodings[0].n_sequences

    def _encoding(self, batch_index: int, tracked: bool = True):
        if self.encodings is None:
            raise ValueError("this BatchEncoding was not produced by encoding text (pad / prepare_for_model "
                             "outputs keep no token alignment)")
        if tracked and not self._tracked:
            raise ValueError("token strings and word ids are tracked only with return_offsets_mapping=True or "
                             "is_split_into_words=True")
        return self.encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Per token: 0 for the first text, 1 for the second of a pair, None for special and padding tokens."""
        return self._encoding(batch_index, tracked=False).sequence_ids

    def to(self, device, *, non_blocking: bool = False) -> "BatchEncoding":
        """Move every torch tensor to ``device`` (a string, int or ``torch.device``); returns self."""
        for key, value in self.items():
            if hasattr(value, "to") and callable(value.to) and type(value).__module__.startswith("torch"):
                self[key] = value.to(device=device, non_blocking=non_blocking)
        return self

    def convert_to_tensors(self, tensor_type: str | None = None, prepend_batch_axis: bool = False
                           ) -> "BatchEncoding":
        """Turn the list fields into ``tensor_type`` ("np", "pt", "tf", "jax") arrays, in place."""
        if tensor_type is not None:
            self.update(_to_tensors(dict(self), tensor_type, prepend_batch_axis))
        return self


# ==================================================================== files

def _read_json(path: pathlib.Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TokenizerFileError(f"{path} is not valid JSON ({error}); the file is damaged or truncated, "
                                 "replace it with a good copy") from None


def _require_file(path) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {os.fspath(path)}")


def _load_tokenizer_json(path) -> Tokenizer:
    _require_file(path)
    try:
        return Tokenizer.from_file(os.fspath(path))
    except Exception as error:  # the Rust side raises plain Exception ("EOF while parsing ...")
        raise TokenizerFileError(f"{os.fspath(path)} is not a readable tokenizer.json ({error}); the file is "
                                 "damaged or truncated, replace it with a good copy") from None


def _load_bpe(vocab_file, merges_file) -> Tokenizer:
    _require_file(vocab_file)
    _require_file(merges_file)
    try:
        model = models.BPE.from_file(os.fspath(vocab_file), os.fspath(merges_file),
                                     continuing_subword_prefix="", end_of_word_suffix="")
    except Exception as error:  # find which file is at fault and say so
        _diagnose_bpe_files(pathlib.Path(vocab_file), pathlib.Path(merges_file), error)
        raise  # pragma: no cover - _diagnose_bpe_files always raises
    return Tokenizer(model)


def _diagnose_bpe_files(vocab_file: pathlib.Path, merges_file: pathlib.Path, error: Exception) -> None:
    vocab = _read_json(vocab_file)
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              for k, v in vocab.items()):
        raise TokenizerFileError(f"{vocab_file} must hold one JSON object mapping token strings to integer ids")
    try:
        lines = merges_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as decode_error:
        raise TokenizerFileError(f"{merges_file} is not UTF-8 text ({decode_error})") from None
    for number, line in enumerate(lines, 1):
        if (number == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerFileError(f"{merges_file} line {number}: a merge is two tokens separated by one space, "
                                     f"got {line!r}")
        missing = [p for p in parts if p not in vocab]
        if missing:
            raise TokenizerFileError(f"{merges_file} line {number}: token {missing[0]!r} is not in {vocab_file}")
    raise TokenizerFileError(f"could not build BPE from {vocab_file} and {merges_file}: {error}")


def _as_added_token(value, special: bool = True, lstrip: bool = False) -> AddedToken | None:
    """A special token given as a string, an AddedToken or a config-file dict -> AddedToken (None stays None).
    Strings get the reference BartTokenizer's flags: normalized, no rstrip, lstrip as given."""
    if value is None or isinstance(value, AddedToken):
        return value
    if isinstance(value, dict):
        fields = {k: v for k, v in value.items() if k != "__type"}
        fields.setdefault("special", special)
        return AddedToken(**fields)
    if isinstance(value, str):
        if not value:
            raise ValueError("a special token must be a non-empty string")
        return AddedToken(value, lstrip=lstrip, rstrip=False, single_word=False, normalized=True, special=special)
    raise TypeError(f"a special token must be a string, an AddedToken or None, got {type(value).__name__}")


def _token_state(token, keep_special: bool = True) -> Any:
    """An AddedToken as the reference writes it in JSON (strings stay strings)."""
    if isinstance(token, AddedToken):
        state = token.__getstate__()
        if not keep_special:
            state.pop("special", None)
        return state
    return token


def _json_ready(value):
    if isinstance(value, AddedToken):
        return dict(_token_state(value), __type="AddedToken")
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _as_id_list(ids) -> list[int]:
    """Accept an int, a list/tuple of ints, or any array (numpy, torch, tf, jax) holding one sequence."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    elif hasattr(ids, "numpy"):  # tf tensors
        ids = ids.numpy().tolist()
    if isinstance(ids, int):
        return [ids]
    return list(ids)


# ==================================================================== the tokenizer

def _role_property(role: str) -> property:
    def get(self):
        value = self._special_tokens[role]
        return None if value is None else str(value)

    def set_(self, value):
        self._set_special(role, value)

    return property(get, set_, doc=f"The {role.replace('_', ' ')} (a string; settable, None unsets it).")


def _role_id_property(role: str) -> property:
    def get(self):
        token = getattr(self, role)
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_(self, value):
        self._set_special(role, None if value is None else self.convert_ids_to_tokens(int(value)))

    return property(get, set_, doc=f"The id of the {role.replace('_', ' ')} (settable: picks the token of that id).")


class _BartTokenizerBase:
    """Byte-level BPE tokenizer with BART's special tokens, from ``vocab.json`` + ``merges.txt`` or
    ``tokenizer.json`` (or a `tokenizers.Tokenizer` given as ``tokenizer_object``).

    ``add_prefix_space``: add a space before the text (and before each word of pre-split input), so the first
    word is encoded like any other; bart-base was trained without it. ``trim_offsets``: offsets leave out the
    leading space of a token. ``model_max_length``: the length ``truncation=True`` (and ``padding="max_length"``)
    use when no ``max_length`` is given; 1024 (BART's position table) unless a config says otherwise; above
    1e20 (the reference's "no limit", 1e30) they do not truncate. ``clean_up_tokenization_spaces``: the default
    of the same ``decode`` option. ``padding_side`` / ``truncation_side``: "right" or "left".
    Special tokens are strings or `tokenizers.AddedToken` (whose flags are kept); ``additional_special_tokens``
    adds more. ``errors``, ``use_fast``, ``do_lower_case``, ``verbose`` and other reference keywords are
    accepted and kept in ``init_kwargs`` (BART's vocabulary is cased: ``do_lower_case=True`` changes nothing,
    as in the reference, and warns).
    """

    model_input_names = ("input_ids", "attention_mask")
    is_fast: bool
    _config_keys: tuple[str, ...] = ("errors", "add_prefix_space")  # always written to tokenizer_config.json
    padding_side = property(lambda self: self._padding_side, lambda self, v: self._set_side("padding_side", v))
    truncation_side = property(lambda self: self._truncation_side,
                               lambda self, v: self._set_side("truncation_side", v))

    def __init__(self, vocab_file: str | os.PathLike | None = None, merges_file: str | os.PathLike | None = None,
                 tokenizer_file: str | os.PathLike | None = None, *, errors: str = "replace",
                 bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                 pad_token="<pad>", mask_token="<mask>", add_prefix_space: bool = False,
                 trim_offsets: bool | None = None,
                 model_max_length: int | None = None, clean_up_tokenization_spaces: bool = False,
                 padding_side: str = "right", truncation_side: str = "right",
                 additional_special_tokens: Sequence | None = None, tokenizer_object: Tokenizer | None = None,
                 added_tokens_decoder: Mapping | None = None, **kwargs):
        self.init_kwargs = dict(errors=errors, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token,
                                cls_token=cls_token, unk_token=unk_token, pad_token=pad_token,
                                mask_token=mask_token, add_prefix_space=add_prefix_space, **kwargs)
        if type(self).is_fast or trim_offsets is not None:
            self.init_kwargs["trim_offsets"] = True if trim_offsets is None else trim_offsets
        for key, value in (("model_max_length", model_max_length), ("padding_side", padding_side),
                           ("truncation_side", truncation_side), ("vocab_file", vocab_file),
                           ("merges_file", merges_file), ("tokenizer_file", tokenizer_file),
                           ("additional_special_tokens", additional_special_tokens)):
            if value is not None and (key not in ("padding_side", "truncation_side") or value != "right"):
                self.init_kwargs[key] = value
        if kwargs.get("do_lower_case"):
            warnings.warn("BART's vocabulary is cased: do_lower_case=True is kept in init_kwargs but changes "
                          "nothing (as in the reference tokenizer)", UserWarning, stacklevel=2)

        if tokenizer_object is not None:
            backend = Tokenizer.from_str(tokenizer_object.to_str())
        elif tokenizer_file is not None:
            backend = _load_tokenizer_json(tokenizer_file)
        elif vocab_file is not None and merges_file is not None:
            backend = _load_bpe(vocab_file, merges_file)
        else:
            raise ValueError(f"{type(self).__name__} needs vocab_file and merges_file, or tokenizer_file, "
                             "or tokenizer_object")
        backend.no_padding()
        backend.no_truncation()
        self._backend = backend
        self._settings: dict[int, tuple] = {}  # id(backend) -> (truncation, padding) last applied
        self._split_words_backend: Tokenizer | None = None  # built on first is_split_into_words call

        self.name_or_path = str(kwargs.get("name_or_path", ""))
        self.errors = errors
        self.verbose = bool(kwargs.get("verbose", True))
        self.add_prefix_space = bool(add_prefix_space)
        self.trim_offsets = True if trim_offsets is None else bool(trim_offsets)
        self.model_max_length = int(model_max_length) if model_max_length is not None else 1024
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self._in_target_context_manager = False

        # Flags of tokens written in the config files (added_tokens_decoder) win over the defaults.
        decoder = {int(i): _as_added_token(t) for i, t in (added_tokens_decoder or {}).items()}
        by_content = {t.content: t for t in decoder.values()}
        roles = dict(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, sep_token=sep_token,
                     pad_token=pad_token, cls_token=cls_token, mask_token=mask_token)
        self._special_tokens: dict[str, AddedToken | str | None] = {}
        for role in SPECIAL_TOKENS:
            value = roles[role]
            if isinstance(value, str) and value in by_content:
                value = by_content[value]
            self._special_tokens[role] = _as_added_token(value, special=False, lstrip=role == "mask_token")
        self._additional: list[AddedToken | str] = []

        # Tokens of the config's added_tokens_decoder first: those past the BPE vocabulary in id order (they
        # take the next ids), then the others (they keep theirs). Then the role tokens, in the reference file's
        # id order, so new ones (custom specials) get ids in a stable order.
        base = backend.get_vocab_size(with_added_tokens=False)
        for index, token in sorted(decoder.items(), key=lambda item: (item[0] < base, item[0])):
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
        order = ("bos_token", "pad_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token")
        specials = {}
        for role in order:
            token = self._special_tokens[role]
            if token is not None and token.content not in specials:
                specials[token.content] = _special_copy(token)
        backend.add_special_tokens(list(specials.values()))
        for index, token in decoder.items():
            if backend.token_to_id(token.content) != index:
                raise TokenizerFileError(f"added token {token.content!r} should have id {index} (added_tokens_decoder"
                                         f") but the vocabulary gives it {backend.token_to_id(token.content)}")
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": list(additional_special_tokens)})
        self._vocab_size = backend.get_vocab_size(with_added_tokens=False)
        self._configure(backend, self.add_prefix_space)

    def _configure(self, backend: Tokenizer, add_prefix_space: bool) -> Tokenizer:
        for role in ("cls_token", "sep_token"):
            token = getattr(self, role)
            if token is None or backend.token_to_id(token) is None:
                raise ValueError(f"{role} {token!r} is not in the vocabulary; BART's inputs need it")
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=True,
                                                         use_regex=True)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.RobertaProcessing(
            sep=(self.sep_token, backend.token_to_id(self.sep_token)),
            cls=(self.cls_token, backend.token_to_id(self.cls_token)),
            trim_offsets=self.trim_offsets, add_prefix_space=add_prefix_space)
        return backend

    def _changed(self) -> None:
        """The vocabulary or a special token changed: rebuild what depends on them."""
        self._configure(self._backend, self.add_prefix_space)
        self._split_words_backend = None
        self._settings.clear()

    def _set_side(self, name: str, value: str) -> None:
        if value not in SIDES:
            raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
        setattr(self, "_" + name, value)

    def _set_special(self, role: str, value) -> None:
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise ValueError(f"{role} must be a string, an AddedToken or None, got {type(value).__name__}")
        if role in ("cls_token", "sep_token") and value is None:
            raise ValueError(f"{role} cannot be None: BART's inputs need it")
        self._special_tokens[role] = value
        if "_backend" in self.__dict__:
            self._changed()

    # ------------------------------------------------------------------ loading and saving

    @staticmethod
    def default_dir() -> str:
        """The bart-base vocabulary shipped with the package (see `bundled_tokenizer_dir`)."""
        return bundled_tokenizer_dir()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs, use_fast=None,
                        **kwargs):
        """Load from a folder holding ``tokenizer.json`` and/or ``vocab.json`` + ``merges.txt``.

        Settings come from ``tokenizer_config.json``, ``special_tokens_map.json`` and ``added_tokens.json``
        when present; keyword arguments (``add_prefix_space``, ``model_max_length``, special tokens, ...)
        override them. ``tokenizer.json`` is preferred over the two vocabulary files, as in the reference fast
        class. ``use_fast`` picks the class as ``AutoTokenizer`` does (True: `BartTokenizerFast`, False:
        `BartTokenizer`). Download keywords (``cache_dir``, ``revision``, ...) are accepted and ignored: nothing
        is downloaded. A damaged file raises `TokenizerFileError` (a ``ValueError``) naming it."""
        if init_inputs:
            raise TypeError("from_pretrained takes the folder and keyword arguments only")
        folder = pathlib.Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder} (only local folders are supported)")
        for key in _HUB_KEYWORDS:
            kwargs.pop(key, None)
        target = cls
        if use_fast is not None:
            target = BartTokenizerFast if use_fast else BartTokenizer
        options: dict[str, Any] = {}
        if (folder / CONFIG_FILE).is_file():
            config = _read_json(folder / CONFIG_FILE)
            if not isinstance(config, dict):
                raise TokenizerFileError(f"{folder / CONFIG_FILE} must hold a JSON object")
            options = {k: v for k, v in config.items() if k not in _FILE_KEYS or k == "added_tokens_decoder"}
            if options.get("extra_special_tokens") == {}:
                options.pop("extra_special_tokens")
        if (folder / SPECIAL_TOKENS_FILE).is_file():
            special_map = _read_json(folder / SPECIAL_TOKENS_FILE)
            if not isinstance(special_map, dict):
                raise TokenizerFileError(f"{folder / SPECIAL_TOKENS_FILE} must hold a JSON object")
            for role, value in special_map.items():
                if role in SPECIAL_TOKENS and value is not None:
                    options[role] = _as_added_token(value, special=True)
                elif role == "additional_special_tokens" and value:
                    options[role] = [_as_added_token(v, special=True) for v in value]
        if (folder / ADDED_TOKENS_FILE).is_file() and "added_tokens_decoder" not in options:
            added = _read_json(folder / ADDED_TOKENS_FILE)
            if not isinstance(added, dict):
                raise TokenizerFileError(f"{folder / ADDED_TOKENS_FILE} must map token strings to ids")
            options["added_tokens_decoder"] = {i: AddedToken(t, normalized=True, special=False)
                                               for t, i in added.items()}
        options.update(kwargs)
        if use_fast is not None:
            options["use_fast"] = use_fast
        options["name_or_path"] = str(pretrained_model_name_or_path)
        if (folder / TOKENIZER_FILE).is_file():
            return target(tokenizer_file=folder / TOKENIZER_FILE, **options)
        vocab, merges = folder / VOCAB_FILE, folder / MERGES_FILE
        if not vocab.is_file() or not merges.is_file():
            missing = [str(p) for p in (vocab, merges) if not p.is_file()]
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder} and missing {', '.join(missing)}")
        return target(vocab_file=vocab, merges_file=merges, **options)

    def _config_for_saving(self) -> dict:
        config = {k: v for k, v in self.init_kwargs.items() if k not in _FILE_KEYS}
        for key in set(config) | {"model_max_length", "clean_up_tokenization_spaces", *self._config_keys}:
            if hasattr(type(self), key) or key in self.__dict__ or key in ("padding_side", "truncation_side"):
                config[key] = getattr(self, key)
        config.update(self.special_tokens_map)
        config.setdefault("extra_special_tokens", {})
        config["added_tokens_decoder"] = {str(i): _token_state(t) for i, t in self.added_tokens_decoder.items()}
        config["tokenizer_class"] = "BartTokenizer"
        return _json_ready(config)

    def save_pretrained(self, save_directory: str | os.PathLike, legacy_format: bool | None = None,
                        filename_prefix: str | None = None, **kwargs) -> tuple[str, ...]:
        """Write the files the reference class of the same name writes, laid out as it lays them out (JSON
        indented by 2, keys sorted): ``tokenizer_config.json``, ``special_tokens_map.json``, ``vocab.json``,
        ``merges.txt``, ``added_tokens.json`` (only when tokens were added past the BPE vocabulary) and, for
        `BartTokenizerFast`, ``tokenizer.json`` (``legacy_format=True`` leaves it out; ``False`` writes it and
        no vocab/merges). Each file is written atomically. Returns the written paths."""
        folder = pathlib.Path(save_directory)
        if folder.is_file():
            raise ValueError(f"{folder} is a file; save_pretrained needs a folder")
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        special_map = {role: [_token_state(t, keep_special=False) for t in token] if isinstance(token, list)
                       else _token_state(token, keep_special=False)
                       for role, token in self.special_tokens_map_extended.items()}
        files = {
            CONFIG_FILE: json.dumps(self._config_for_saving(), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            SPECIAL_TOKENS_FILE: json.dumps(special_map, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        }
        self._apply_settings(self._backend, None, None)  # the saved tokenizer.json holds no padding/truncation
        state = json.loads(self._backend.to_str())
        vocab = state["model"]["vocab"]
        merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]
        write_vocab = not (self.is_fast and legacy_format is False)
        if write_vocab:
            if self.is_fast:  # the Rust BPE writer: compact, in id order
                ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
                files[VOCAB_FILE] = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))
            else:
                files[VOCAB_FILE] = json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            files[MERGES_FILE] = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
            added = {t.content: i for i, t in self.added_tokens_decoder.items() if i >= self._vocab_size}
            if added:
                files[ADDED_TOKENS_FILE] = json.dumps(added, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if self.is_fast and legacy_format is not True:
            files[TOKENIZER_FILE] = self._backend.to_str(pretty=True)
        written = []
        for name, text in files.items():
            atomic_write_text(folder / (prefix + name), text)
            written.append(str(folder / (prefix + name)))
        return tuple(written)

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None
                        ) -> tuple[str, str]:
        """Write only ``vocab.json`` and ``merges.txt``; returns their paths."""
        folder = pathlib.Path(save_directory)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        paths = self.save_pretrained(folder / ".vocabulary-tmp", legacy_format=True)
        out = []
        for name in (VOCAB_FILE, MERGES_FILE):
            os.replace(folder / ".vocabulary-tmp" / name, folder / (prefix + name))
            out.append(str(folder / (prefix + name)))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        os.rmdir(folder / ".vocabulary-tmp")
        return tuple(out)

    # ------------------------------------------------------------------ vocabulary and special tokens

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (50265 for bart-base); tokens added on top are counted by ``len``."""
        return self._vocab_size

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._backend.get_added_tokens_decoder().items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t.content: i for i, t in self.added_tokens_decoder.items()}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    @property
    def pad_token_type_id(self) -> int:
        return 0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, is_fast={self.is_fast}, "
                f"padding_side={self.padding_side!r}, truncation_side={self.truncation_side!r}, "
                f"special_tokens={self.special_tokens_map}, add_prefix_space={self.add_prefix_space})")

    @property
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """Role -> token string (roles set to None left out), plus ``additional_special_tokens`` if any."""
        out: dict[str, Any] = {role: str(t) for role, t in self._special_tokens.items() if t is not None}
        if self._additional:
            out["additional_special_tokens"] = [str(t) for t in self._additional]
        return out

    @property
    def special_tokens_map_extended(self) -> dict[str, Any]:
        """As `special_tokens_map`, with the AddedToken objects (and their flags) where there are some."""
        out: dict[str, Any] = {role: t for role, t in self._special_tokens.items() if t is not None}
        if self._additional:
            out["additional_special_tokens"] = list(self._additional)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [str(t) for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(tokens + [str(t) for t in self._additional]))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def additional_special_tokens(self) -> list[str]:
        return [str(t) for t in self._additional]

    @additional_special_tokens.setter
    def additional_special_tokens(self, value) -> None:
        """Sets the list (tokens must already be in the vocabulary; `add_special_tokens` adds them)."""
        value = list(value or [])
        if not all(isinstance(t, (str, AddedToken)) for t in value):
            raise ValueError("additional_special_tokens must be a list of strings or AddedToken")
        self._additional = value

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.additional_special_tokens)

    bos_token = _role_property("bos_token")
    eos_token = _role_property("eos_token")
    unk_token = _role_property("unk_token")
    sep_token = _role_property("sep_token")
    pad_token = _role_property("pad_token")
    cls_token = _role_property("cls_token")
    mask_token = _role_property("mask_token")
    bos_token_id = _role_id_property("bos_token")
    eos_token_id = _role_id_property("eos_token")
    unk_token_id = _role_id_property("unk_token")
    sep_token_id = _role_id_property("sep_token")
    pad_token_id = _role_id_property("pad_token")
    cls_token_id = _role_id_property("cls_token")
    mask_token_id = _role_id_property("mask_token")

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens (strings or AddedToken) to the vocabulary; returns how many were new. ``len(tok)``
        grows by that number; resize the model's embeddings to ``len(tok)``."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        for token in new_tokens:
            if not isinstance(token, (str, AddedToken)):
                raise TypeError(f"tokens must be strings or AddedToken, got {type(token).__name__}")
        add = self._backend.add_special_tokens if special_tokens else self._backend.add_tokens
        added = add(list(new_tokens))
        self._changed()
        return added

    def add_special_tokens(self, special_tokens_dict: Mapping, replace_additional_special_tokens: bool = True
                           ) -> int:
        """Set special-token roles (``{"pad_token": "[PAD]", "additional_special_tokens": [...]}``) and add
        the tokens to the vocabulary as special tokens; returns how many were new. With
        ``replace_additional_special_tokens=False`` the additional tokens are appended to the existing list."""
        if not special_tokens_dict:
            return 0
        to_add = []
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                if not isinstance(value, (list, tuple)) or not all(isinstance(t, (str, AddedToken)) for t in value):
                    raise ValueError("additional_special_tokens must be a list of strings or AddedToken")
                new = [_special_copy(t) for t in value]
                if not replace_additional_special_tokens:
                    known = set(self.additional_special_tokens)
                    new = [t for t in new if t.content not in known]
                    self._additional = self._additional + new
                elif new:
                    self._additional = new
                to_add += new
            elif key in SPECIAL_TOKENS:
                if not isinstance(value, (str, AddedToken)):
                    raise ValueError(f"{key} must be a string or an AddedToken, got {type(value).__name__}")
                token = _special_copy(value)
                to_add.append(token)
                self._special_tokens[key] = token
            else:
                raise ValueError(f"{key!r} is not a special-token role; use one of {list(SPECIAL_TOKENS)} or "
                                 "'additional_special_tokens'")
        added = self._backend.add_special_tokens(to_add)
        self._changed()
        return added

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Token string(s) -> id(s); a token outside the vocabulary gives ``unk_token_id``."""
        unk = self._backend.token_to_id(self.unk_token) if self.unk_token is not None else None
        if tokens is None:
            return None
        if isinstance(tokens, (str, AddedToken)):
            found = self._backend.token_to_id(str(tokens))
            return unk if found is None else found
        lookup = self._backend.token_to_id
        return [unk if (found := lookup(str(t))) is None else found for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) -> byte-level token string(s) such as ``"ĠHello"``."""
        if isinstance(ids, (int, np.integer)):
            self._check_ids([int(ids)])
            return self._backend.id_to_token(int(ids))
        ids = _as_id_list(ids)
        self._check_ids(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._backend.id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self._backend.decoder.decode(list(tokens))

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs
                 ) -> list[str]:
        """The byte-level token strings of ``text`` (no special tokens unless asked)."""
        self._apply_settings(self._backend, None, None)
        try:
            return self._backend.encode(text, pair, add_special_tokens=add_special_tokens).tokens
        except Exception as error:
            _diagnose_text({"text": text, "pair": pair}, error)
            raise

    # ------------------------------------------------------------------ special-token layout

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        """``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + list(token_ids_0) + sep
        return cls + list(token_ids_0) + sep + sep + list(token_ids_1) + sep

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 where `build_inputs_with_special_tokens` puts a special token, 0 on sequence tokens; with
        ``already_has_special_tokens`` the ids are read as they are (1 on every special id)."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when the ids already hold their special tokens")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        return [1] + [0] * len(token_ids_0) + [1, 1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                             ) -> list[int]:
        """BART has no token types: zeros over the length of the built input."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 4 if pair else 2

    # ------------------------------------------------------------------ encoding text

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False, verbose: bool = True) -> BatchEncoding:
        """Encode one text (or pair) or a batch of them, and/or target texts for a seq2seq model.

        ``text``: a string, a list of strings, or with ``is_split_into_words=True`` a list of words (or a list
        of such lists); each word then gets a leading space, as the reference slow class does. ``text_pair``:
        the second segment(s), same shape as ``text``. ``text_target`` / ``text_pair_target``: the targets,
        encoded with the same options; with ``text`` their ids come back as ``labels``, alone they come back as
        the whole output.

        ``padding``: False / "do_not_pad"; True / "longest" (to the longest row); "max_length" (to
        ``max_length``, else ``model_max_length``). ``truncation``: True / "longest_first", "only_first",
        "only_second", False / "do_not_truncate"; it cuts to ``max_length`` or else ``model_max_length``
        (special tokens count). ``truncation=None`` (default) truncates only when ``max_length`` is given and
        padding is off, as the reference does. ``padding_side`` overrides the tokenizer's for this call.

        Returns a `BatchEncoding` with ``input_ids`` and ``attention_mask`` (and ``token_type_ids``,
        ``special_tokens_mask``, ``offset_mapping``, ``length``, ``labels`` when asked). A single input gives
        flat lists; a batch gives lists of lists; ``return_tensors`` ("np", "pt", "tf", "jax") gives ``(B, L)``
        arrays (``(1, L)`` for a single input; ``offset_mapping`` is ``(B, L, 2)``), which needs rows of one
        length. Integer types follow the reference: int64 for "np" and "pt", int32 for "tf" and "jax".
        """
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                       max_length=max_length, stride=stride, is_split_into_words=is_split_into_words,
                       pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                       return_tensors=return_tensors, return_token_type_ids=return_token_type_ids,
                       return_attention_mask=return_attention_mask,
                       return_overflowing_tokens=return_overflowing_tokens,
                       return_special_tokens_mask=return_special_tokens_mask,
                       return_offsets_mapping=return_offsets_mapping, return_length=return_length)
        if text is None and text_target is None:
            raise ValueError("give text (the inputs) or text_target (the labels), or both")
        if text is None and text_pair is not None:
            raise ValueError("text_pair needs text")
        if text_target is None and text_pair_target is not None:
            raise ValueError("text_pair_target needs text_target")
        encodings = self._encode(text, text_pair, ("text", "text_pair"), **options) if text is not None else None
        if text_target is None:
            return encodings
        targets = self._encode(text_target, text_pair_target, ("text_target", "text_pair_target"), **options)
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def _encode(self, text, text_pair, names: tuple[str, str], *, add_special_tokens, padding, truncation,
                max_length, stride, is_split_into_words, pad_to_multiple_of, padding_side, return_tensors,
                return_token_type_ids, return_attention_mask, return_overflowing_tokens, return_special_tokens_mask,
                return_offsets_mapping, return_length) -> BatchEncoding:
        if stride or return_overflowing_tokens:
            raise NotImplementedError("stride / return_overflowing_tokens are not supported by this tokenizer")
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        truncation_setting, padding_setting = self._backend_settings(padding, truncation, max_length,
                                                                     pad_to_multiple_of, padding_side)
        _check_tensor_type(return_tensors)

        batched = _is_batched(text, is_split_into_words, names[0])
        if text_pair is not None and _is_batched(text_pair, is_split_into_words, names[1]) != batched:
            raise ValueError(f"{names[0]} and {names[1]} must both be single inputs or both be batches")
        rows = list(text) if batched else [text]
        if text_pair is not None:
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(rows):
                raise ValueError(f"{names[0]} has {len(rows)} entries but {names[1]} has {len(pairs)}")
            rows = list(zip(rows, pairs))
        _check_inputs(rows, text_pair is not None, is_split_into_words, names)

        backend = self._words_backend() if is_split_into_words else self._backend
        self._apply_settings(backend, truncation_setting, padding_setting)
        tracked = return_offsets_mapping or is_split_into_words
        encode = backend.encode_batch if tracked else backend.encode_batch_fast  # fast: no offsets, word ids
        try:
            encodings = encode(rows, is_pretokenized=is_split_into_words, add_special_tokens=add_special_tokens)
        except Exception as error:  # the Rust side raises plain Exception / TypeError
            _diagnose_text({names[0]: text, names[1]: text_pair}, error)
            raise ValueError(f"could not encode the input: {error}") from error

        data = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [[0] * len(e.ids) for e in encodings]
        if return_attention_mask is None or return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:  # the slow reference counts a batch's rows before padding them
            unpadded = batched and not self.is_fast
            data["length"] = [sum(e.attention_mask) if unpadded else len(e.ids) for e in encodings]

        if return_tensors is not None:
            data = _to_tensors(data, return_tensors)
        elif not batched:  # the fast reference keeps "length" a one-element list, the slow one does not
            data = {key: value if key == "length" and self.is_fast else value[0] for key, value in data.items()}
        return BatchEncoding(data, encodings, tracked)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding: bool | str = False,
               truncation: bool | str | None = None, max_length: int | None = None, stride: int = 0,
               padding_side: str | None = None, return_tensors: str | None = None, **kwargs):
        """The ids of one text (or pair): a list, or a ``(1, L)`` tensor with ``return_tensors``."""
        if _is_batched(text, kwargs.get("is_split_into_words", False), "text"):
            raise ValueError("encode takes one text (or one pair); call the tokenizer on a batch")
        kwargs.setdefault("return_attention_mask", False)
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                    **kwargs)["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """`__call__` on one text or one pair."""
        if _is_batched(text, kwargs.get("is_split_into_words", False), "text"):
            raise ValueError("encode_plus takes one text (or one pair); use batch_encode_plus for a batch")
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence, **kwargs) -> BatchEncoding:
        """`__call__` on a batch given as a list of texts or of ``(text, text_pair)`` tuples."""
        if isinstance(batch_text_or_text_pairs, str) or not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError("batch_text_or_text_pairs must be a list of texts or of (text, text_pair) tuples")
        rows = list(batch_text_or_text_pairs)
        split = kwargs.get("is_split_into_words", False)

        def is_pair(row) -> bool:
            if not isinstance(row, (list, tuple)):
                return False
            return not split or (len(row) == 2 and all(isinstance(r, (list, tuple)) for r in row))

        if rows and all(is_pair(r) for r in rows):
            for r in rows:
                if len(r) != 2:
                    raise ValueError(f"a text pair has two parts, got {len(r)}: {r!r:.80}")
            return self([r[0] for r in rows], [r[1] for r in rows], **kwargs)
        if split:
            return self([list(r) for r in rows], **kwargs)
        return self(rows, **kwargs)

    @contextlib.contextmanager
    def as_target_tokenizer(self) -> Iterator[None]:
        """Encode targets inside the block. BART encodes targets as inputs, so this changes nothing; it exists
        for scripts written for transformers < 4.22 (newer ones pass ``text_target=``)."""
        self._in_target_context_manager = True
        try:
            yield
        finally:
            self._in_target_context_manager = False

    def prepare_seq2seq_batch(self, src_texts: list[str], tgt_texts: list[str] | None = None,
                              max_length: int | None = None, max_target_length: int | None = None,
                              padding: bool | str = "longest", return_tensors: str | None = None,
                              truncation: bool | str = True, **kwargs) -> BatchEncoding:
        """Sources (truncated to ``max_length``, else ``model_max_length``) and, with ``tgt_texts``, ``labels``
        (truncated to ``max_target_length``, else ``max_length``), both padded with ``padding``."""
        kwargs.pop("src_lang", None)
        kwargs.pop("tgt_lang", None)
        if max_length is None:
            max_length = self.model_max_length
        inputs = self(src_texts, add_special_tokens=True, return_tensors=return_tensors, max_length=max_length,
                      padding=padding, truncation=truncation, **kwargs)
        if tgt_texts is None:
            return inputs
        if max_target_length is None:
            max_target_length = max_length
        labels = self(text_target=tgt_texts, add_special_tokens=True, return_tensors=return_tensors,
                      padding=padding, max_length=max_target_length, truncation=truncation, **kwargs)
        inputs["labels"] = labels["input_ids"]
        return inputs

    # ------------------------------------------------------------------ options

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """Validate the options as the reference does; return (padding, truncation, max_length) with the
        strategies as strings and max_length resolved (None = no length)."""
        if max_length is not None and (not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool)
                                       or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding is True:
            padding = "longest"
        elif padding is False or padding is None:
            padding = "do_not_pad"
        padding = getattr(padding, "value", padding)  # enum-like values
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"unknown padding strategy {padding!r}; use True, False or one of {PADDING_STRATEGIES}")
        if truncation is True:
            truncation = "longest_first"
        elif truncation is False or truncation is None:
            truncation = "do_not_truncate"
        truncation = getattr(truncation, "value", truncation)
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"unknown truncation strategy {truncation!r}; use True, False or one of "
                             f"{TRUNCATION_STRATEGIES}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, (int, np.integer))
                                               or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        if max_length is None:
            unlimited = self.model_max_length > LARGE_INTEGER  # the reference's "no limit": nothing to cut to
            if padding == "max_length":
                if unlimited:
                    padding = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if truncation != "do_not_truncate":
                if unlimited:
                    truncation = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if padding != "do_not_pad" and self.pad_token_id is None:
            raise ValueError("asked to pad but the tokenizer has no pad_token; set one (tok.pad_token = ...)")
        if (truncation != "do_not_truncate" and padding != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of):
            raise ValueError(f"truncation length ({max_length}) is not a multiple of pad_to_multiple_of "
                             f"({pad_to_multiple_of})")
        return padding, truncation, max_length

    def _backend_settings(self, padding, truncation, max_length, pad_to_multiple_of, padding_side):
        """(truncation, padding) settings for the `tokenizers` backend (None = off)."""
        truncation_setting = None
        if truncation != "do_not_truncate":
            truncation_setting = (min(int(max_length), _BACKEND_MAX_LENGTH), truncation, self.truncation_side)
        padding_setting = None
        if padding != "do_not_pad":
            side = self.padding_side if padding_side is None else padding_side
            if side not in SIDES:
                raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
            length = int(max_length) if padding == "max_length" else None
            padding_setting = (length, pad_to_multiple_of and int(pad_to_multiple_of), side, self.pad_token_id,
                               self.pad_token)
        return truncation_setting, padding_setting

    def _apply_settings(self, backend: Tokenizer, truncation_setting, padding_setting) -> None:
        """Set the backend's truncation and padding, touching it only when they change."""
        if self._settings.get(id(backend)) == (truncation_setting, padding_setting):
            return
        if truncation_setting is None:
            backend.no_truncation()
        else:
            length, strategy, side = truncation_setting
            backend.enable_truncation(length, stride=0, strategy=strategy, direction=side)
        if padding_setting is None:
            backend.no_padding()
        else:
            length, multiple, side, pad_id, pad_token = padding_setting
            backend.enable_padding(direction=side, pad_id=pad_id, pad_token=pad_token, length=length,
                                   pad_to_multiple_of=multiple)
        self._settings[id(backend)] = (truncation_setting, padding_setting)

    def _words_backend(self) -> Tokenizer:
        """Pre-split words always get a leading space (the reference slow tokenizer's rule); the fast
        reference gives the same ids once built with add_prefix_space=True, which this copy is."""
        if self.add_prefix_space:
            return self._backend
        if self._split_words_backend is None:
            copy = Tokenizer.from_str(self._backend.to_str())
            self._split_words_backend = self._configure(copy, add_prefix_space=True)
        return self._split_words_backend

    # ------------------------------------------------------------------ working on ids

    def pad(self, encoded_inputs, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None,
            verbose: bool = True) -> BatchEncoding:
        """Pad encoded inputs (a `BatchEncoding` / dict of one example or of a batch, or a list of such dicts,
        lists or arrays of any framework) to the longest row or to ``max_length``, as the reference does:
        ``input_ids`` with ``pad_token_id``, ``attention_mask`` with 0 (made when missing), ``token_type_ids``
        with 0, ``special_tokens_mask`` with 1; other fields are left as they are. With array inputs and no
        ``return_tensors`` the output uses the input's framework."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            keys = list(encoded_inputs[0].keys())
            encoded_inputs = {k: [example[k] for example in encoded_inputs] for k in keys}
        if not isinstance(encoded_inputs, Mapping):
            raise TypeError("pad takes a dict / BatchEncoding or a list of dicts, got "
                            f"{type(encoded_inputs).__name__}")
        if "input_ids" not in encoded_inputs:
            raise ValueError("pad needs the field 'input_ids'; the inputs hold "
                             f"{sorted(encoded_inputs)}")
        encoded = dict(encoded_inputs)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        required = encoded["input_ids"]
        if required is None or (hasattr(required, "__len__") and len(required) == 0):
            if return_attention_mask:
                encoded["attention_mask"] = []
            return BatchEncoding(encoded)
        inferred = _tensor_type_of(required)
        if inferred is not None:
            return_tensors = return_tensors or inferred
        encoded = {k: _to_python(v) for k, v in encoded.items()}
        _check_tensor_type(return_tensors)
        padding, _, max_length = self._strategies(padding, False, max_length, pad_to_multiple_of)
        side = self.padding_side if padding_side is None else padding_side
        if side not in SIDES:
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")

        required = encoded["input_ids"]
        if not isinstance(required[0], (list, tuple)):  # one example
            row = self._pad_row(encoded, padding, max_length, pad_to_multiple_of, side, return_attention_mask)
            return BatchEncoding(_to_tensors(row, return_tensors) if return_tensors else row)
        for key, value in encoded.items():
            if len(value) != len(required):
                raise ValueError(f"field {key!r} has {len(value)} rows but input_ids has {len(required)}")
        if padding == "longest":
            max_length, padding = max(len(r) for r in required), "max_length"
        out: dict[str, list] = {}
        for i in range(len(required)):
            row = self._pad_row({k: v[i] for k, v in encoded.items()}, padding, max_length, pad_to_multiple_of,
                                side, return_attention_mask)
            for key, value in row.items():
                out.setdefault(key, []).append(value)
        return BatchEncoding(_to_tensors(out, return_tensors) if return_tensors else out)

    def _pad_row(self, row: dict, padding: str, max_length, pad_to_multiple_of, side: str,
                 return_attention_mask: bool) -> dict:
        """The reference's ``_pad`` on one example (lists)."""
        ids = list(row["input_ids"])
        row = dict(row)
        if padding == "longest":
            max_length = len(ids)
        if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of:
            max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
        if return_attention_mask and "attention_mask" not in row:
            row["attention_mask"] = [1] * len(ids)
        difference = (max_length - len(ids)) if padding != "do_not_pad" and max_length is not None else 0
        if difference > 0:
            fills = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id,
                     "special_tokens_mask": 1}
            if return_attention_mask:
                fills["attention_mask"] = 0
            for key, fill in fills.items():
                if key in row:
                    pad = [fill] * difference
                    row[key] = list(row[key]) + pad if side == "right" else pad + list(row[key])
        return row

    def truncate_sequences(self, ids: list[int], pair_ids: list[int] | None = None, num_tokens_to_remove: int = 0,
                           truncation_strategy: str | bool = "longest_first", stride: int = 0
                           ) -> tuple[list[int], list[int] | None, list[int]]:
        """Remove ``num_tokens_to_remove`` ids following the strategy, as the reference's Python code does
        (which differs from the fast encoder's on ties); returns ``(ids, pair_ids, overflowing_tokens)``.
        Raises ``ValueError`` where the reference would log an error and leave the ids uncut."""
        if num_tokens_to_remove <= 0:
            return ids, pair_ids, []
        strategy = "longest_first" if truncation_strategy is True else getattr(truncation_strategy, "value",
                                                                               truncation_strategy)
        if strategy not in TRUNCATION_STRATEGIES:
            raise ValueError(f"unknown truncation strategy {strategy!r}")
        right = self.truncation_side == "right"
        overflowing: list[int] = []
        if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
            ids, overflowing = _cut_one(ids, num_tokens_to_remove, stride, right, "first")
        elif strategy == "longest_first":
            first_remove = min(abs(len(pair_ids) - len(ids)), num_tokens_to_remove)
            second_remove = num_tokens_to_remove - first_remove
            if len(ids) > len(pair_ids):
                ids_to_move = first_remove + second_remove // 2
                pair_to_move = second_remove - second_remove // 2
            else:
                ids_to_move = second_remove // 2
                pair_to_move = first_remove + second_remove - second_remove // 2
            if right:
                ids = ids[:-ids_to_move] if ids_to_move > 0 else ids
                pair_ids = pair_ids[:-pair_to_move] if pair_to_move > 0 else pair_ids
            else:
                ids, pair_ids = ids[ids_to_move:], pair_ids[pair_to_move:]
        elif strategy == "only_second" and pair_ids is not None:
            pair_ids, overflowing = _cut_one(pair_ids, num_tokens_to_remove, stride, right, "second")
        return ids, pair_ids, overflowing

    def prepare_for_model(self, ids: list[int], pair_ids: list[int] | None = None, add_special_tokens: bool = True,
                          padding: bool | str = False, truncation: bool | str | None = None,
                          max_length: int | None = None, stride: int = 0, pad_to_multiple_of: int | None = None,
                          padding_side: str | None = None, return_tensors: str | None = None,
                          return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                          return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                          return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                          prepend_batch_axis: bool = False, **kwargs) -> BatchEncoding:
        """Ids without special tokens (one sequence or a pair) -> model inputs: truncated (`truncate_sequences`),
        with special tokens added, padded, as the reference builds them."""
        if return_offsets_mapping:
            raise NotImplementedError("prepare_for_model works on ids and has no offsets; encode the text instead")
        ids, pair_ids = _as_id_list(ids), None if pair_ids is None else _as_id_list(pair_ids)
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        pair = pair_ids is not None
        if return_token_type_ids and not add_special_tokens:
            raise ValueError("return_token_type_ids=True needs add_special_tokens=True (as in the reference)")
        if return_overflowing_tokens and truncation == "longest_first" and pair:
            raise ValueError("overflowing tokens cannot be returned for a pair with truncation 'longest_first'; "
                             "use 'only_first' or 'only_second'")
        if return_attention_mask is None:
            return_attention_mask = True
        total = len(ids) + (len(pair_ids) if pair else 0) + (self.num_special_tokens_to_add(pair)
                                                              if add_special_tokens else 0)
        encoded: dict[str, Any] = {}
        overflowing: list[int] = []
        if truncation != "do_not_truncate" and max_length and total > max_length:
            ids, pair_ids, overflowing = self.truncate_sequences(ids, pair_ids, total - max_length, truncation,
                                                                 stride)
        if return_overflowing_tokens:
            encoded["overflowing_tokens"] = overflowing
            encoded["num_truncated_tokens"] = total - max_length if max_length else 0
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            sequence = ids + pair_ids if pair else ids
        encoded["input_ids"] = sequence
        if return_token_type_ids:
            encoded["token_type_ids"] = [0] * len(sequence)
        if return_special_tokens_mask:
            encoded["special_tokens_mask"] = (self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens
                                              else [0] * len(sequence))
        if padding != "do_not_pad" or return_attention_mask:
            side = self.padding_side if padding_side is None else padding_side
            if side not in SIDES:
                raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
            encoded = self._pad_row(encoded, padding, max_length, pad_to_multiple_of, side, return_attention_mask)
        if return_length:
            encoded["length"] = len(encoded["input_ids"])
        _check_tensor_type(return_tensors)
        if return_tensors is not None:
            encoded = _to_tensors(encoded, return_tensors, prepend_batch_axis)
        return BatchEncoding(encoded)

    # ------------------------------------------------------------------ decoding

    def _check_ids(self, ids: list[int]) -> None:
        if not ids:
            return
        low, high, size = min(ids), max(ids), len(self)
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is outside the vocabulary (size {size}: ids 0..{size - 1})")

    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs) -> str:
        """Ids (list, int, or a 1-D array of any framework) -> text. ``clean_up_tokenization_spaces``
        defaults to the tokenizer's setting (False for bart-base, as in the reference)."""
        ids = _as_id_list(token_ids)
        self._check_ids(ids)
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs) -> list[str]:
        """`decode` on each row of a list of id lists or a 2-D array."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        elif hasattr(sequences, "numpy"):
            sequences = sequences.numpy().tolist()
        rows = [_as_id_list(row) for row in sequences]
        for row in rows:
            self._check_ids(row)
        texts = self._backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return [clean_up_tokenization(t) for t in texts] if clean_up_tokenization_spaces else texts

    # ------------------------------------------------------------------ training

    def train_new_from_iterator(self, text_iterator: Iterable, vocab_size: int, length: int | None = None,
                                new_special_tokens: Sequence | None = None,
                                special_tokens_map: Mapping[str, str] | None = None, **kwargs):
        """A new tokenizer of this class with the same pipeline (byte-level BPE, special tokens, options),
        its BPE trained on ``text_iterator`` (texts, or batches of texts) to ``vocab_size`` entries, as the
        reference does. ``special_tokens_map`` renames special tokens (``{"<s>": "<bos>"}``);
        ``new_special_tokens`` adds more. Other keywords go to `tokenizers.trainers.BpeTrainer`."""
        state = json.loads(self._backend.to_str())
        added = state.pop("added_tokens")
        state["post_processor"] = None
        state["truncation"] = state["padding"] = None
        state["model"]["vocab"], state["model"]["merges"] = {}, []
        backend = Tokenizer.from_str(json.dumps(state))
        rename = dict(special_tokens_map or {})
        specials = []
        for entry in added:
            if not entry.pop("special", False):
                continue
            entry.pop("id", None)
            entry["content"] = rename.get(entry["content"], entry["content"])
            specials.append(AddedToken(**entry))
        specials += list(new_special_tokens or [])
        kwargs.setdefault("show_progress", False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **kwargs)
        backend.train_from_iterator(text_iterator, trainer=trainer, length=length)

        options = {k: v for k, v in self.init_kwargs.items() if k not in _FILE_KEYS}
        options.update(model_max_length=self.model_max_length, padding_side=self.padding_side,
                       truncation_side=self.truncation_side, trim_offsets=self.trim_offsets,
                       clean_up_tokenization_spaces=self.clean_up_tokenization_spaces)
        for role, token in self._special_tokens.items():
            if token is None:
                options[role] = None
                continue
            content = rename.get(str(token), str(token))
            if isinstance(token, AddedToken):
                options[role] = AddedToken(content, lstrip=token.lstrip, rstrip=token.rstrip,
                                           single_word=token.single_word, normalized=token.normalized,
                                           special=token.special)
            else:
                options[role] = content
        additional = list(self._additional) + list(new_special_tokens or [])
        if additional:
            options["additional_special_tokens"] = additional
        else:
            options.pop("additional_special_tokens", None)
        return type(self)(tokenizer_object=backend, **options)


class BartTokenizerFast(_BartTokenizerBase):
    """`BartTokenizer` under the reference's fast class name: the same tokenizer, ids and files.

    Both classes run on the Rust ``tokenizers`` library and give the ids, offsets and decoded text of the
    reference's fast and slow BART tokenizers; they differ only in ``is_fast`` and in which settings
    ``save_pretrained`` writes to ``tokenizer_config.json`` (this one adds ``trim_offsets``). The constructor
    arguments are described under `BartTokenizer`.
    """
    is_fast = True
    _config_keys = ("errors", "add_prefix_space", "trim_offsets")


class BartTokenizer(_BartTokenizerBase):
    """BART's byte-level BPE tokenizer; the bart-base vocabulary ships in ``bart_core/data/bart-base-tokenizer``.

    Load it with ``BartTokenizer.from_pretrained(folder_or_hub_id)``, or build it from ``vocab.json`` +
    ``merges.txt`` or ``tokenizer.json`` (or a `tokenizers.Tokenizer` given as ``tokenizer_object``). Calling it
    on a text or a list of texts gives a `BatchEncoding` with ``input_ids`` and ``attention_mask``: lists, or
    tensors with ``return_tensors="pt"``, ``"tf"``, ``"np"`` or ``"jax"``; ``text_target=`` adds ``labels``.
    ``decode`` / ``batch_decode`` turn ids back into text. Ids, offsets and decoded text are those of the
    reference's fast and slow BART tokenizers; `BartTokenizerFast` is the same tokenizer under the other name.

    ``add_prefix_space``: add a space before the text (and before each word of pre-split input), so the first
    word is encoded like any other; bart-base was trained without it. ``trim_offsets``: offsets leave out the
    leading space of a token. ``model_max_length``: the length ``truncation=True`` (and ``padding="max_length"``)
    use when no ``max_length`` is given; 1024 (BART's position table) unless a config says otherwise.
    ``clean_up_tokenization_spaces``: the default of the same ``decode`` option. ``padding_side`` /
    ``truncation_side``: "right" or "left". Special tokens are strings or `tokenizers.AddedToken`;
    ``additional_special_tokens`` adds more. Other reference keywords are accepted and kept in ``init_kwargs``.
    """
    is_fast = False


# ==================================================================== helpers

def _special_copy(token) -> AddedToken:
    """A token to add as special: strings get the reference's flags for added special tokens."""
    if isinstance(token, str):
        return AddedToken(token, rstrip=False, lstrip=False, normalized=False, special=True)
    return AddedToken(token.content, lstrip=token.lstrip, rstrip=token.rstrip, single_word=token.single_word,
                      normalized=token.normalized, special=True)


def _is_batched(text, is_split_into_words: bool, name: str = "text") -> bool:
    if isinstance(text, str):
        return False
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(text).__name__}")
    if is_split_into_words:
        return len(text) > 0 and isinstance(text[0], (list, tuple))
    return True


def _check_inputs(rows: list, is_pair: bool, is_split_into_words: bool, names: tuple[str, str]) -> None:
    def ok(item) -> bool:
        if is_split_into_words:
            return isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)
        return isinstance(item, str)

    for row in rows:
        if not all(map(ok, row if is_pair else (row,))):
            kind = "a list of words (strings)" if is_split_into_words else "a string"
            raise TypeError(f"every input of {names[0]} must be {kind}, got {row!r:.80}")


def _diagnose_text(arguments: dict, error: Exception) -> None:
    """After the backend refused the input: raise a ValueError naming the argument that holds text Python
    cannot encode as UTF-8 (a lone surrogate, e.g. from ``bytes.decode(errors="surrogateescape")``)."""
    def walk(value, label):
        if isinstance(value, str):
            yield label, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                yield from walk(item, f"{label}[{i}]")

    for name, value in arguments.items():
        for label, string in walk(value, name):
            try:
                string.encode("utf-8")
            except UnicodeEncodeError as bad:
                raise ValueError(
                    f"{label} holds a lone surrogate {string[bad.start]!r} at character {bad.start}, which is not "
                    "valid Unicode text; decode bytes with errors='replace' (or clean the string with "
                    "s.encode('utf-8', 'replace').decode('utf-8'))") from error


def _check_tensor_type(return_tensors) -> None:
    if return_tensors is not None and return_tensors not in TENSOR_TYPES:
        raise ValueError(f"return_tensors must be one of {TENSOR_TYPES} or None, got {return_tensors!r}")


def _tensor_type_of(rows) -> str | None:
    """The framework of an array field (or of the first non-empty row of a list field); None for lists."""
    first = rows
    if isinstance(rows, (list, tuple)):
        first = rows[0]
        if isinstance(first, (list, tuple)):
            first = next((r[0] for r in rows if len(r)), first)
    if isinstance(first, (int, list, tuple, np.integer)):
        return None
    module = type(first).__module__
    if isinstance(first, np.ndarray):
        return "np"
    if module.startswith("torch"):
        return "pt"
    if module.startswith("tensorflow"):
        return "tf"
    if module.startswith("jax"):
        return "jax"
    raise ValueError(f"cannot pad values of type {type(first).__name__}; give lists or numpy, torch, "
                     "TensorFlow or JAX arrays")


def _to_python(value):
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "numpy"):
        return value.numpy().tolist()
    return value


def _to_tensors(data: dict, return_tensors: str, prepend_batch_axis: bool = False) -> dict:
    """Lists of rows -> arrays of one framework. Integers: int64 for "np"/"pt", int32 for "tf"/"jax"
    (the reference's types); floats: float64 for "np", float32 otherwise."""
    _check_tensor_type(return_tensors)
    out = {}
    for key, rows in data.items():
        if rows is None:
            out[key] = None
            continue
        if prepend_batch_axis:
            rows = [rows]
        if isinstance(rows, (list, tuple)) and key not in ("length", "num_truncated_tokens"):
            lengths = {len(r) for r in rows if isinstance(r, (list, tuple))}
            if len(lengths) > 1:
                raise ValueError(f"cannot make {return_tensors!r} tensors of {key!r} from rows of different "
                                 f"lengths {sorted(lengths)}; pass padding=True (or padding='max_length')")
        array = np.asarray(_to_python(rows))
        if array.dtype.kind in "iub" or (array.dtype.kind == "f" and array.size == 0):
            array = array.astype(np.int64)
        if key == "offset_mapping" and array.size == 0:
            array = array.reshape(len(rows), 0, 2)
        out[key] = array
    return to_framework(out, return_tensors)


def _cut_one(seq: list[int], n: int, stride: int, right: bool, which: str) -> tuple[list[int], list[int]]:
    """``(seq without n tokens on the truncation side, the overflowing window of n + stride tokens)``."""
    if len(seq) <= n:
        raise ValueError(f"cannot remove {n} tokens: the {which} sequence has {len(seq)}; use another truncation "
                         "strategy or a larger max_length")
    window = min(len(seq), stride + n)
    overflowing = seq[-window:] if right else seq[:window]
    return (seq[:-n] if right else seq[n:]), overflowing
