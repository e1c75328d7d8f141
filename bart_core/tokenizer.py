"""BART's byte-level BPE tokenizer: a thin layer over the `tokenizers` library.

All text work (byte-level pre-tokenization, BPE, special-token matching, truncation, padding, offsets) is done
by one `tokenizers.Tokenizer` per instance, configured the way the reference bart-base tokenizer is:

- pre-tokenizer and decoder: ByteLevel (a leading space is part of a word: "Hello" and " Hello" differ);
- post-processor: RobertaProcessing, which adds ``<s> A </s>`` or ``<s> A </s></s> B </s>``;
- special tokens ``<s> <pad> </s> <unk> <mask>``; ``<mask>`` swallows the whitespace on its left (lstrip),
  so "No <mask> in" gives the same ids as "No<mask> in".

This module imports numpy, `tokenizers` and the standard library only; torch, TensorFlow and JAX are imported
when ``return_tensors`` asks for them. Outputs match transformers 4.57.6 ``BartTokenizerFast`` (and the slow
``BartTokenizer`` wherever the two agree) on the same vocabulary files.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from bart_core.fileio import atomic_write_text

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"

# Role -> default text. bos/cls and eos/sep share a token, as in the reference.
SPECIAL_TOKENS = {
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
    "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>",
}
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
TENSOR_TYPES = ("np", "pt", "tf", "jax")

# Decode-time clean-up of the spaces a word-level tokenizer puts before punctuation and English contractions.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def bundled_tokenizer_dir() -> str:
    """The folder of the bart-base vocabulary (vocab.json, merges.txt) shipped inside the package."""
    return str(pathlib.Path(__file__).resolve().parent / "data" / "bart-base-tokenizer")


def clean_up_tokenization(text: str) -> str:
    for old, new in _CLEANUP:
        text = text.replace(old, new)
    return text


class BatchEncoding(dict):
    """The encoder's output: a dict (``enc["input_ids"]``) that also reads as attributes (``enc.input_ids``).

    ``encodings`` keeps the `tokenizers.Encoding` of each row. Token strings and word ids are tracked only when
    the call asked for offsets or passed pre-split words (tracking them costs speed)."""

    def __init__(self, data: dict, encodings: list | None = None, tracked: bool = False):
        super().__init__(data)
        self.encodings = encodings
        self._tracked = tracked

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it holds {sorted(self)}") from None

    def _encoding(self, batch_index: int):
        if not self._tracked:
            raise ValueError("token strings and word ids are tracked only with return_offsets_mapping=True or "
                             "is_split_into_words=True")
        return self.encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).word_ids


def _read_json(path: pathlib.Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _token_text(value) -> str | None:
    """A special token as written in the config files: a string or an AddedToken-like dict."""
    if isinstance(value, dict):
        return value["content"]
    return value


def _as_id_list(ids) -> list[int]:
    """Accept an int, a list/tuple of ints, or any array (numpy, torch, tf, jax) holding one sequence."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return list(ids)


class BartTokenizer:
    """Byte-level BPE tokenizer with BART's special tokens, from ``vocab.json`` + ``merges.txt`` or
    ``tokenizer.json``.

    ``add_prefix_space``: add a space before the text (and before each word of pre-split input), so the first
    word is encoded like any other; bart-base was trained without it. ``trim_offsets``: offsets leave out the
    leading space of a token. ``model_max_length``: the length ``truncation=True`` cuts to when no
    ``max_length`` is given. ``clean_up_tokenization_spaces``: the default of the same ``decode`` option.
    """

    model_input_names = ("input_ids", "attention_mask")
    is_fast = True

    def __init__(self, vocab_file: str | os.PathLike | None = None, merges_file: str | os.PathLike | None = None,
                 tokenizer_file: str | os.PathLike | None = None, *, add_prefix_space: bool = False,
                 trim_offsets: bool = True, model_max_length: int = 1024, clean_up_tokenization_spaces: bool = False,
                 padding_side: str = "right", truncation_side: str = "right", mask_token_lstrip: bool = True,
                 bos_token: str = "<s>", eos_token: str = "</s>", unk_token: str = "<unk>", sep_token: str = "</s>",
                 pad_token: str = "<pad>", cls_token: str = "<s>", mask_token: str = "<mask>"):
        if tokenizer_file is not None:
            _require_file(tokenizer_file)
            backend = Tokenizer.from_file(os.fspath(tokenizer_file))
            backend.no_padding()
            backend.no_truncation()
        elif vocab_file is not None and merges_file is not None:
            _require_file(vocab_file)
            _require_file(merges_file)
            backend = Tokenizer(models.BPE.from_file(os.fspath(vocab_file), os.fspath(merges_file),
                                                     continuing_subword_prefix="", end_of_word_suffix=""))
        else:
            raise ValueError("BartTokenizer needs vocab_file and merges_file, or tokenizer_file")

        self._special = dict(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, sep_token=sep_token,
                             pad_token=pad_token, cls_token=cls_token, mask_token=mask_token)
        for role, text in self._special.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"{role} must be a non-empty string, got {text!r}")
        # In id order of the reference file so new tokens (custom specials) get ids in a stable order.
        specials = []
        for text in dict.fromkeys((bos_token, pad_token, eos_token, unk_token, sep_token, cls_token, mask_token)):
            lstrip = mask_token_lstrip and text == mask_token
            specials.append(AddedToken(text, lstrip=lstrip, rstrip=False, single_word=False, normalized=True,
                                       special=True))
        backend.add_special_tokens(specials)

        self.add_prefix_space = bool(add_prefix_space)
        self.trim_offsets = bool(trim_offsets)
        self.model_max_length = int(model_max_length)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self._backend = backend
        self._configure(backend, self.add_prefix_space)
        self._split_words_backend: Tokenizer | None = None  # built on first is_split_into_words call
        self._settings: dict[int, tuple] = {}  # id(backend) -> (truncation, padding) last applied
        self._vocab_size = backend.get_vocab_size(with_added_tokens=False)
        self._size = backend.get_vocab_size(with_added_tokens=True)

    def _configure(self, backend: Tokenizer, add_prefix_space: bool) -> Tokenizer:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.RobertaProcessing(
            sep=(self.sep_token, self.sep_token_id), cls=(self.cls_token, self.cls_token_id),
            trim_offsets=self.trim_offsets, add_prefix_space=add_prefix_space)
        return backend

    # ------------------------------------------------------------------ loading and saving

    @staticmethod
    def default_dir() -> str:
        """The bart-base vocabulary shipped with the package (see `bundled_tokenizer_dir`)."""
        return bundled_tokenizer_dir()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> "BartTokenizer":
        """Load from a folder holding ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``.

        Settings come from ``tokenizer_config.json`` / ``special_tokens_map.json`` when present; keyword
        arguments (``add_prefix_space``, ``trim_offsets``, ``model_max_length``, special tokens, ...) override
        them. ``tokenizer.json`` is preferred over the two vocabulary files, as in the reference."""
        folder = pathlib.Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        options: dict[str, Any] = {}
        if (folder / CONFIG_FILE).is_file():
            config = _read_json(folder / CONFIG_FILE)
            for key in ("add_prefix_space", "trim_offsets", "model_max_length", "clean_up_tokenization_spaces",
                        "padding_side", "truncation_side"):
                if key in config:
                    options[key] = config[key]
            for role in SPECIAL_TOKENS:
                if config.get(role) is not None:
                    options[role] = _token_text(config[role])
            mask = options.get("mask_token", SPECIAL_TOKENS["mask_token"])
            for entry in config.get("added_tokens_decoder", {}).values():
                if entry.get("content") == mask:
                    options["mask_token_lstrip"] = bool(entry.get("lstrip", True))
        if (folder / SPECIAL_TOKENS_FILE).is_file():
            for role, value in _read_json(folder / SPECIAL_TOKENS_FILE).items():
                if role in SPECIAL_TOKENS and value is not None:
                    options.setdefault(role, _token_text(value))
        options.update(kwargs)
        if (folder / TOKENIZER_FILE).is_file():
            return cls(tokenizer_file=folder / TOKENIZER_FILE, **options)
        vocab, merges = folder / VOCAB_FILE, folder / MERGES_FILE
        if not vocab.is_file() or not merges.is_file():
            missing = [str(p) for p in (vocab, merges) if not p.is_file()]
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder} and missing {', '.join(missing)}")
        return cls(vocab_file=vocab, merges_file=merges, **options)

    def save_pretrained(self, path: str | os.PathLike) -> tuple[str, ...]:
        """Write vocab.json, merges.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json
        (each atomically) in a layout both reference tokenizer classes read. Returns the written paths."""
        folder = pathlib.Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = json.loads(self._backend.to_str())
        state["truncation"] = None
        state["padding"] = None
        vocab = sorted(state["model"]["vocab"].items(), key=lambda item: item[1])
        merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]

        added = {}
        for index, token in sorted(self._backend.get_added_tokens_decoder().items()):
            added[str(index)] = dict(content=token.content, lstrip=token.lstrip, normalized=token.normalized,
                                     rstrip=token.rstrip, single_word=token.single_word, special=token.special)
        by_text = {entry["content"]: entry for entry in added.values()}
        special_map = {}
        for role in sorted(self._special):
            entry = dict(by_text[self._special[role]])
            entry.pop("special")
            special_map[role] = entry
        config = dict(
            add_prefix_space=self.add_prefix_space, added_tokens_decoder=added,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces, errors="replace",
            model_max_length=self.model_max_length, padding_side=self.padding_side,
            truncation_side=self.truncation_side, tokenizer_class="BartTokenizer", trim_offsets=self.trim_offsets,
            **self._special)

        files = {
            VOCAB_FILE: json.dumps(dict(vocab), ensure_ascii=False) + "\n",
            MERGES_FILE: "#version: 0.2\n" + "\n".join(merges) + "\n",
            TOKENIZER_FILE: json.dumps(state, ensure_ascii=False, indent=2) + "\n",
            CONFIG_FILE: json.dumps(config, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
            SPECIAL_TOKENS_FILE: json.dumps(special_map, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
        }
        written = []
        for name, text in files.items():
            atomic_write_text(folder / name, text)
            written.append(str(folder / name))
        return tuple(written)

    # ------------------------------------------------------------------ vocabulary and special tokens

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (50265 for bart-base); tokens added on top are counted by ``len``."""
        return self._vocab_size

    def __len__(self) -> int:
        return self._size

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def __repr__(self) -> str:
        return (f"BartTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
                f"add_prefix_space={self.add_prefix_space}, trim_offsets={self.trim_offsets}, "
                f"padding_side={self.padding_side!r})")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return dict(self._special)

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self._special.values()))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._backend.token_to_id(t) for t in self.all_special_tokens]

    bos_token = property(lambda self: self._special["bos_token"])
    eos_token = property(lambda self: self._special["eos_token"])
    unk_token = property(lambda self: self._special["unk_token"])
    sep_token = property(lambda self: self._special["sep_token"])
    pad_token = property(lambda self: self._special["pad_token"])
    cls_token = property(lambda self: self._special["cls_token"])
    mask_token = property(lambda self: self._special["mask_token"])
    bos_token_id = property(lambda self: self._backend.token_to_id(self.bos_token))
    eos_token_id = property(lambda self: self._backend.token_to_id(self.eos_token))
    unk_token_id = property(lambda self: self._backend.token_to_id(self.unk_token))
    sep_token_id = property(lambda self: self._backend.token_to_id(self.sep_token))
    pad_token_id = property(lambda self: self._backend.token_to_id(self.pad_token))
    cls_token_id = property(lambda self: self._backend.token_to_id(self.cls_token))
    mask_token_id = property(lambda self: self._backend.token_to_id(self.mask_token))

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Token string(s) -> id(s); a token outside the vocabulary gives ``unk_token_id``."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            return unk if found is None else found
        lookup = self._backend.token_to_id
        return [unk if (found := lookup(t)) is None else found for t in tokens]

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

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The byte-level token strings of ``text`` (no special tokens unless asked)."""
        self._apply_settings(self._backend, None, None)
        return self._backend.encode(text, pair, add_special_tokens=add_special_tokens).tokens

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

    # ------------------------------------------------------------------ encoding

    def __call__(self, text, text_pair=None, add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool | str | None = None, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None, return_tensors: str | None = None,
                 return_attention_mask: bool = True, return_token_type_ids: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False, is_split_into_words: bool = False) -> BatchEncoding:
        """Encode one text (or pair) or a batch of them.

        ``text``: a string, a list of strings, or with ``is_split_into_words=True`` a list of words (or a list
        of such lists); each word then gets a leading space, as the reference does. ``text_pair``: the second
        segment(s), same shape as ``text``.

        ``padding``: False / "do_not_pad"; True / "longest" (to the longest row); "max_length" (to
        ``max_length``, which must be given). ``truncation``: True / "longest_first", "only_first",
        "only_second", False / "do_not_truncate"; it cuts to ``max_length`` or else ``model_max_length``
        (special tokens count). ``truncation=None`` (default) truncates only when ``max_length`` is given and
        padding is off, as the reference does.

        Returns a `BatchEncoding` with ``input_ids`` and ``attention_mask`` (and ``token_type_ids``,
        ``special_tokens_mask``, ``offset_mapping``, ``length`` when asked). A single input gives flat lists;
        a batch gives lists of lists; ``return_tensors`` ("np", "pt", "tf", "jax") gives ``(B, L)`` arrays
        (``(1, L)`` for a single input; ``offset_mapping`` is ``(B, L, 2)``), which needs rows of one length.
        Integer types follow the reference: int64 for "np" and "pt", int32 for "tf" and "jax".
        """
        truncation_setting, padding_setting = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        if return_tensors is not None and return_tensors not in TENSOR_TYPES:
            raise ValueError(f"return_tensors must be one of {TENSOR_TYPES} or None, got {return_tensors!r}")

        batched = _is_batched(text, is_split_into_words)
        if text_pair is not None and _is_batched(text_pair, is_split_into_words) != batched:
            raise ValueError("text and text_pair must both be single inputs or both be batches")
        rows = list(text) if batched else [text]
        if text_pair is not None:
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(rows):
                raise ValueError(f"text has {len(rows)} entries but text_pair has {len(pairs)}")
            rows = list(zip(rows, pairs))
        _check_inputs(rows, text_pair is not None, is_split_into_words)

        backend = self._words_backend() if is_split_into_words else self._backend
        self._apply_settings(backend, truncation_setting, padding_setting)
        tracked = return_offsets_mapping or is_split_into_words
        encode = backend.encode_batch if tracked else backend.encode_batch_fast  # fast: no offsets, word ids
        try:
            encodings = encode(rows, is_pretokenized=is_split_into_words, add_special_tokens=add_special_tokens)
        except Exception as error:  # the Rust side raises plain Exception (e.g. impossible truncation)
            raise ValueError(f"could not encode the input: {error}") from error

        data = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [[0] * len(e.ids) for e in encodings]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:
            data["length"] = [len(e.ids) for e in encodings]

        if return_tensors is not None:
            data = _to_tensors(data, return_tensors)
        elif not batched:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, encodings, tracked)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding: bool | str = False,
               truncation: bool | str | None = None, max_length: int | None = None,
               is_split_into_words: bool = False) -> list[int]:
        """The ids of one text (or pair) as a list."""
        if _is_batched(text, is_split_into_words):
            raise ValueError("encode takes one text (or one pair); call the tokenizer on a batch")
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, return_attention_mask=False,
                    is_split_into_words=is_split_into_words)["input_ids"]

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """Validate the options; return (truncation, padding) settings for the backend (None = off)."""
        if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding is True:
            padding = "longest"
        elif padding is False or padding is None:
            padding = "do_not_pad"
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"unknown padding strategy {padding!r}; use True, False or one of {PADDING_STRATEGIES}")
        if truncation is True:
            truncation = "longest_first"
        elif truncation is False or truncation is None:
            truncation = "do_not_truncate"
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"unknown truncation strategy {truncation!r}; use True, False or one of "
                             f"{TRUNCATION_STRATEGIES}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length (e.g. max_length=tokenizer.model_max_length)")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")

        truncation_setting = None
        if truncation != "do_not_truncate":
            length = int(max_length) if max_length is not None else self.model_max_length
            if pad_to_multiple_of is not None and padding != "do_not_pad" and length % pad_to_multiple_of:
                raise ValueError(f"truncation length ({length}) is not a multiple of pad_to_multiple_of "
                                 f"({pad_to_multiple_of})")
            truncation_setting = (length, truncation, self.truncation_side)
        padding_setting = None
        if padding != "do_not_pad":
            if self.padding_side not in ("right", "left"):
                raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
            length = int(max_length) if padding == "max_length" else None
            padding_setting = (length, pad_to_multiple_of, self.padding_side)
        return truncation_setting, padding_setting

    def _apply_settings(self, backend: Tokenizer, truncation_setting, padding_setting) -> None:
        """Set the backend's truncation and padding, touching it only when they change."""
        if self._settings.get(id(backend)) == (truncation_setting, padding_setting):
            return
        if truncation_setting is None:
            backend.no_truncation()
        else:
            length, strategy, side = truncation_setting
            if side not in ("right", "left"):
                raise ValueError(f"truncation_side must be 'right' or 'left', got {side!r}")
            backend.enable_truncation(length, stride=0, strategy=strategy, direction=side)
        if padding_setting is None:
            backend.no_padding()
        else:
            length, multiple, side = padding_setting
            backend.enable_padding(direction=side, pad_id=self.pad_token_id, pad_token=self.pad_token,
                                   length=length, pad_to_multiple_of=multiple)
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

    # ------------------------------------------------------------------ decoding

    def _check_ids(self, ids: list[int]) -> None:
        if not ids:
            return
        low, high = min(ids), max(ids)
        if low < 0 or high >= self._size:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is outside the vocabulary (size {self._size}: ids 0..{self._size - 1})")

    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids (list, int, or a 1-D array of any framework) -> text. ``clean_up_tokenization_spaces``
        defaults to the tokenizer's setting (False for bart-base, as in the reference)."""
        ids = _as_id_list(token_ids)
        self._check_ids(ids)
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """`decode` on each row of a list of id lists or a 2-D array."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        rows = [_as_id_list(row) for row in sequences]
        for row in rows:
            self._check_ids(row)
        texts = self._backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return [clean_up_tokenization(t) for t in texts] if clean_up_tokenization_spaces else texts


BartTokenizerFast = BartTokenizer


def _require_file(path) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file not found: {os.fspath(path)}")


def _is_batched(text, is_split_into_words: bool) -> bool:
    if isinstance(text, str):
        return False
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
    if is_split_into_words:
        return len(text) > 0 and isinstance(text[0], (list, tuple))
    return True


def _check_inputs(rows: list, is_pair: bool, is_split_into_words: bool) -> None:
    def ok(item) -> bool:
        if is_split_into_words:
            return isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)
        return isinstance(item, str)

    for row in rows:
        if not all(map(ok, row if is_pair else (row,))):
            kind = "a list of words (strings)" if is_split_into_words else "a string"
            raise TypeError(f"every input must be {kind}, got {row!r:.80}")


def _to_tensors(data: dict, return_tensors: str) -> dict:
    out = {}
    for key, rows in data.items():
        if key != "length":
            lengths = {len(r) for r in rows}
            if len(lengths) > 1:
                raise ValueError(f"cannot make {return_tensors!r} tensors from rows of different lengths "
                                 f"{sorted(lengths)}; pass padding=True (or padding='max_length')")
        array = np.asarray(rows, dtype=np.int64)
        if key == "offset_mapping" and array.size == 0:
            array = array.reshape(len(rows), 0, 2)
        out[key] = array
    if return_tensors == "pt":
        import torch
        return {key: torch.from_numpy(array) for key, array in out.items()}
    if return_tensors == "tf":
        import tensorflow as tf
        return {key: tf.constant(array.astype(np.int32)) for key, array in out.items()}
    if return_tensors == "jax":
        import jax.numpy as jnp
        return {key: jnp.asarray(array.astype(np.int32)) for key, array in out.items()}
    return out
