"""Task pipelines, text in and text out, written once for every backend.

``pipeline(task, model=..., tokenizer=..., batch_size=...)`` in ``bart_torch``, ``bart_tf`` and ``bart_flax``
builds one of the classes here around a backend ``Runner``: a small object that runs the model on padded numpy
batches (``forward``) and decodes (``generate``). Everything else (tokenising, batching, scoring, span
extraction, decoding text) is here, with the task names, call conventions and output records of the reference's
pipelines (transformers 4.57.6):

    "summarization"            -> [{"summary_text"}]            generate kwargs pass through
    "text2text-generation"     -> [{"generated_text"}]
    "zero-shot-classification" -> {"sequence", "labels", "scores"}
    "text-classification"      -> [{"label", "score"}]          ("sentiment-analysis" is an alias)
    "question-answering"       -> {"score", "start", "end", "answer"}
    "fill-mask"                -> [{"score", "token", "token_str", "sequence"}]

Inputs: one input, a list, or any other iterable (a generator, a dataset), which is read lazily and answered
lazily, in chunks. Unlike the reference, the model rows of a chunk are sorted by length before they are cut into
batches (less padding), and results come back in input order. A batch has at most ``batch_size`` rows and, with
``max_batch_tokens=N``, at most N padded input tokens (rows x padded length; short rows then go many to a batch,
long rows few). A result does not depend on either. Compiled runners (``length_multiple``) pad lengths to a few
buckets (four per doubling) and short batches to powers of two, so a few programs, compiled once, serve every
later call (``plan_batches``).
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np

from bart_core.generation import GenerationConfig, _apply_options, resolve_generation_config

# task -> model head it needs
TASKS: dict[str, str] = {
    "summarization": "conditional_generation",
    "text2text-generation": "conditional_generation",
    "fill-mask": "conditional_generation",
    "zero-shot-classification": "sequence_classification",
    "text-classification": "sequence_classification",
    "question-answering": "question_answering",
}
ALIASES = {"sentiment-analysis": "text-classification"}
HEAD_CLASSES = {"conditional_generation": "BartForConditionalGeneration",
                "sequence_classification": "BartForSequenceClassification",
                "question_answering": "BartForQuestionAnswering"}
# the reference's generation defaults of its text2text pipelines, below the checkpoint's own
PIPELINE_GENERATION_DEFAULTS = dict(max_new_tokens=256, num_beams=4)
# keywords of a backend's generate that are not decoding options
BACKEND_GENERATE_KEYWORDS = ("generation_config", "use_model_defaults", "jit_compile", "run_eagerly", "generator",
                             "prng_key", "params", "inference_mode")
PROGRESS_MIN_ITEMS = 256   # a tqdm bar (on a terminal) for inputs at least this long, or of unknown length


class Runner(Protocol):
    """What a backend supplies: the model calls, on numpy in and numpy out."""
    config: Any               # bart_core.BartConfig
    generation_config: Any    # the model's GenerationConfig (None for heads that do not generate)
    length_multiple: Optional[int]  # compiled backends: pad lengths and short batches to buckets; None: exact

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """(B, L) int ids and mask -> float32 outputs: ``logits`` (B, L, V) or (B, C), or ``start_logits`` and
        ``end_logits`` (B, L)."""

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, **options) -> np.ndarray:
        """(B, L) -> (B * num_return_sequences, T) token ids."""


def canonical_task(task: str) -> str:
    task = ALIASES.get(task, task)
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; available: {', '.join(sorted(list(TASKS) + list(ALIASES)))}")
    return task


# ============================================================================================ batching
@dataclasses.dataclass
class Row:
    """One model input row: ``ids`` (token ids, unpadded) for the input ``item`` (index within its chunk)."""
    ids: list
    item: int
    meta: Any = None


def _bucket(n: int, multiple: Optional[int]) -> int:
    """Length a batch is padded to: exact, or the next multiple of ``max(multiple, p // 4)`` >= n, ``p`` the
    largest ``multiple * 2**k`` <= n: with 16, 16, 32, 48, 64, 80, ..., 128, 160, 192, 224, 256, 320, ... Padding
    stays under a quarter of the row, or one ``multiple`` (powers of two wasted up to half of the encoder's work
    and of the cross-attention reads), and the compiled shapes stay few: at most four per doubling."""
    if not multiple:
        return n
    size = multiple
    while size * 2 <= n:
        size *= 2
    if size >= n:
        return size
    step = max(multiple, size // 4)
    return -(-n // step) * step


def plan_batches(lengths: Sequence[int], batch_size: Optional[int], max_tokens: Optional[int] = None,
                 multiple: Optional[int] = None) -> list[tuple[list[int], int, int]]:
    """Cut rows of these token ``lengths`` into batches of similar length, longest first: each batch is
    ``(row indices, rows, width)``, padded to ``rows x width``, with at most ``batch_size`` rows (None: no
    limit) and ``rows x width <= max_tokens`` (None: no budget; a row longer than the budget goes alone).
    Eager backends (``multiple`` None) pad to the batch's longest row. Compiled backends pad the width to a
    length bucket (``_bucket``) and the rows of a short batch to a power of two (at most the batch's cap), so
    the shapes, and the programs compiled for them, are few and the same from call to call."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        width = _bucket(lengths[order[start]], multiple)   # the longest row of the batch comes first
        cap = len(order) if batch_size is None else batch_size
        if max_tokens is not None:
            cap = max(1, min(cap, max_tokens // width))
        picked = order[start:start + cap]
        start += len(picked)
        rows = min(cap, _bucket(len(picked), 1)) if multiple else len(picked)
        batches.append((picked, rows, width))
    return batches


def run_batches(rows: Sequence[Row], batch_size: Optional[int], pad_id: int, call: Callable,
                multiple: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None,
                max_tokens: Optional[int] = None) -> list:
    """``call(input_ids (B, L), attention_mask (B, L), lengths)`` on the batches of ``plan_batches``; returns
    its per-row results in the order of ``rows``."""
    results: list = [None] * len(rows)
    for picked, n_rows, width in plan_batches([len(r.ids) for r in rows], batch_size, max_tokens, multiple):
        filled = picked + picked[-1:] * (n_rows - len(picked))  # padding rows: copies of the last row
        ids = np.full((n_rows, width), pad_id, dtype=np.int64)   # (B, L), right padding
        mask = np.zeros((n_rows, width), dtype=np.int64)         # (B, L), 1 = token
        for b, i in enumerate(filled):
            n = len(rows[i].ids)
            ids[b, :n] = rows[i].ids
            mask[b, :n] = 1
        for i, out in zip(picked, call(ids, mask, [len(rows[i].ids) for i in filled])):
            results[i] = out
        if on_batch is not None:
            on_batch(len(picked))
    return results


def _forward_rows(runner: Runner, lengths: Sequence[int], ids, mask) -> list[dict]:
    """Per-row outputs of one forward batch, token axes cut to each row's own length."""
    out = runner.forward(ids, mask)
    rows = []
    for b, n in enumerate(lengths):
        row = {}
        for k, v in out.items():
            v = np.asarray(v[b], dtype=np.float32)
            row[k] = v[:n] if k != "logits" or v.ndim > 1 else v  # (L, ...) token outputs; (C,) class logits
        rows.append(row)
    return rows


def _positive_or_none(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


# ============================================================================================ base
class Pipeline:
    """Base of the task pipelines: input shapes, chunked streaming, batching, progress."""

    task = ""

    def __init__(self, runner: Runner, tokenizer, batch_size: Optional[int] = None, progress: Optional[bool] = None,
                 max_batch_tokens: Optional[int] = None, **defaults: Any):
        self.runner = runner
        self.model = getattr(runner, "model", None)
        self.tokenizer = tokenizer
        # rows per batch: batch_size (default 8, or no limit under a token budget) and rows x padded length
        # <= max_batch_tokens (input tokens; None: no budget)
        self.max_batch_tokens = _positive_or_none(max_batch_tokens, "max_batch_tokens")
        self.batch_size = _positive_or_none(batch_size, "batch_size")
        if self.batch_size is None and self.max_batch_tokens is None:
            self.batch_size = 8
        self.progress = progress
        self._defaults = self._check_params(defaults)

    @property
    def config(self):
        return self.runner.config

    # ---------------------------------------------------------------- hooks of the tasks
    def _check_params(self, params: dict) -> dict:
        """Validate call options (raise TypeError / ValueError naming the bad one); return them."""
        return params

    def _encode(self, items: list, params: dict) -> list[Row]:
        """Input items of one chunk -> model rows."""
        raise NotImplementedError

    def _run(self, rows: list[Row], params: dict, on_batch) -> list:
        """Model outputs of each row (forward by default)."""
        return self._batches(rows, lambda ids, mask, lengths: _forward_rows(self.runner, lengths, ids, mask),
                             on_batch)

    def _batches(self, rows: list[Row], call: Callable, on_batch) -> list:
        """``run_batches`` with this pipeline's batch limits and the runner's length buckets."""
        return run_batches(rows, self.batch_size, self._pad_id(), call, self.runner.length_multiple, on_batch,
                           self.max_batch_tokens)

    def _decode(self, item: Any, rows: list[Row], outputs: list, params: dict) -> Any:
        """One item's result from its rows and their outputs."""
        raise NotImplementedError

    def _split_inputs(self, inputs: Any, args: tuple, kwargs: dict) -> tuple[Any, dict]:
        """(inputs, remaining options) from a call's arguments."""
        if args:
            raise TypeError(f"{self.task} pipeline: unexpected positional arguments {args!r}")
        return inputs, kwargs

    def _is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str)

    def _finish(self, results: list, kind: str, params: dict) -> Any:
        """Shape of the return value for a single input ("single"), a list ("list") or one streamed result
        ("stream")."""
        return results if kind == "list" else results[0]

    # ---------------------------------------------------------------- calling
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.config.pad_token_id if pad is None else pad

    def __call__(self, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        inputs, kwargs = self._split_inputs(inputs, args, kwargs)
        params = {**self._defaults, **self._check_params(kwargs)}
        if self._is_single(inputs):
            return self._finish(list(self._iterate([inputs], params, 1)), "single", params)
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                return []
            return self._finish(list(self._iterate(list(inputs), params, len(inputs))), "list", params)
        if isinstance(inputs, Mapping) or inputs is None or not isinstance(inputs, Iterable):
            raise TypeError(f"{self.task} pipeline: inputs must be a string, a list or an iterable, got "
                            f"{type(inputs).__name__}")
        total = len(inputs) if hasattr(inputs, "__len__") and not isinstance(inputs, types.GeneratorType) else None
        return self._stream(iter(inputs), params, total)

    def _stream(self, items: Iterator, params: dict, total: Optional[int]) -> Iterator:
        for result in self._iterate(items, params, total):
            yield self._finish([result], "stream", params)

    def _chunk_size(self) -> int:
        """Inputs read at a time: enough for several full batches (sorting by length pays off within a chunk)."""
        rows = self.batch_size if self.batch_size is not None else max(1, self.max_batch_tokens // 64)
        return max(64, 8 * rows)

    def _iterate(self, items: Iterable, params: dict, total: Optional[int]) -> Iterator:
        """Results one by one, in input order; items are read ``_chunk_size()`` at a time."""
        bar = self._bar(total)
        it = iter(items)
        try:
            while True:
                chunk = list(itertools.islice(it, self._chunk_size()))
                if not chunk:
                    return
                rows = self._encode(chunk, params)
                by_item: list[list[int]] = [[] for _ in chunk]
                for r, row in enumerate(rows):
                    by_item[row.item].append(r)
                per_row = len(chunk) / max(1, len(rows))
                outputs = self._run(rows, params, (lambda n: bar.update(n * per_row)) if bar is not None else None)
                for i, item in enumerate(chunk):
                    yield self._decode(item, [rows[r] for r in by_item[i]], [outputs[r] for r in by_item[i]],
                                       params)
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, total: Optional[int]):
        show = self.progress
        if show is None:
            show = total is None or total >= PROGRESS_MIN_ITEMS
            if total is not None and total <= 1:
                show = False
        if not show:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=self.task, unit="input", disable=None if self.progress is None else False,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, batch_size={self.batch_size}, "
                f"max_batch_tokens={self.max_batch_tokens})")


# ============================================================================================ generation
def pipeline_generation_config(runner: Runner, tokenizer, task: str) -> GenerationConfig:
    """The options the text2text pipelines decode with before call options, as the reference: the pipeline
    defaults (``max_new_tokens=256, num_beams=4``) where the checkpoint's generation config leaves an option at
    its default; a checkpoint ``max_length`` other than 20 then drops the pipeline's ``max_new_tokens``; the
    config's ``task_specific_params[task]`` on top; the tokenizer's pad id when none is set."""
    config = runner.config
    model_gen = getattr(runner, "generation_config", None)
    base = GenerationConfig(**PIPELINE_GENERATION_DEFAULTS)
    gen = resolve_generation_config(model_gen, base, {"use_model_defaults": True}, config)
    if gen.max_new_tokens == PIPELINE_GENERATION_DEFAULTS["max_new_tokens"] and gen.max_length != 20:
        gen = gen.replace(max_new_tokens=None)
    specific = (getattr(config, "task_specific_params", None) or {}).get(task)
    if specific:
        specific = {k: v for k, v in specific.items() if k != "prefix"}
        gen = resolve_generation_config(None, gen, dict(specific, use_model_defaults=False))
    if tokenizer.pad_token_id is not None and gen.pad_token_id is None:
        gen = gen.replace(pad_token_id=tokenizer.pad_token_id)
    return gen


class Text2TextGenerationPipeline(Pipeline):
    """``pipe(text or texts, truncation=False, return_text=True, return_tensors=False,
    clean_up_tokenization_spaces=False, **generate_kwargs)`` -> ``[{"generated_text": ...}]`` per input (one
    record per returned sequence)."""

    task = "text2text-generation"
    return_name = "generated"
    OWN = ("truncation", "return_text", "return_tensors", "return_type", "clean_up_tokenization_spaces",
           "stop_sequence")

    def __init__(self, runner, tokenizer, batch_size=None, progress=None, max_batch_tokens=None, **defaults):
        super().__init__(runner, tokenizer, batch_size, progress, max_batch_tokens, **defaults)
        self.generation_config = pipeline_generation_config(runner, tokenizer, self.task)
        specific = (getattr(self.config, "task_specific_params", None) or {}).get(self.task) or {}
        self.prefix = specific.get("prefix", getattr(self.config, "prefix", None)) or ""

    def _check_params(self, params):
        options = {k: v for k, v in params.items() if k not in self.OWN and k not in BACKEND_GENERATE_KEYWORDS}
        if options:  # fail before any work, naming an unknown option
            _apply_options(GenerationConfig(), options)
        return params

    def _encode(self, items, params):
        for x in items:
            if not isinstance(x, str):
                raise TypeError(f"{self.task} pipeline: each input must be a string, got {type(x).__name__}")
        truncation = params.get("truncation", False)
        enc = self.tokenizer([self.prefix + x for x in items], truncation=truncation, return_attention_mask=False)
        return [Row(ids, i) for i, ids in enumerate(enc["input_ids"])]

    def _generate_options(self, params) -> dict:
        options = {k: v for k, v in params.items() if k not in self.OWN}
        if "stop_sequence" in params and params["stop_sequence"] is not None:
            options["eos_token_id"] = self.tokenizer.encode(params["stop_sequence"], add_special_tokens=False)[0]
        if options.get("generation_config") is None:
            options["generation_config"] = self.generation_config
            options.setdefault("use_model_defaults", False)  # the model's options are merged in already
        return options

    def _run(self, rows, params, on_batch):
        options = self._generate_options(params)

        def call(ids, mask, lengths):
            out = np.asarray(self.runner.generate(ids, mask, **options))    # (B * n, T)
            n = out.shape[0] // ids.shape[0]
            return [out[b * n:(b + 1) * n] for b in range(ids.shape[0])]

        return self._batches(rows, call, on_batch)

    def _decode(self, item, rows, outputs, params):
        clean = params.get("clean_up_tokenization_spaces", False)
        tensors = params.get("return_tensors", False) or params.get("return_type") == "tensors"
        records = []
        for seq in outputs[0]:
            if tensors:
                records.append({f"{self.return_name}_token_ids": seq})
            else:
                records.append({f"{self.return_name}_text": self.tokenizer.decode(
                    seq.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=clean)})
        return records

    def _split_inputs(self, inputs, args, kwargs):
        if args:  # the reference accepts the texts as several positional arguments
            inputs = [inputs, *args]
        return inputs, kwargs

    def _finish(self, results, kind, params):
        if kind == "list" and all(len(r) == 1 for r in results):
            return [r[0] for r in results]
        return results[0] if kind in ("single", "stream") else results


class SummarizationPipeline(Text2TextGenerationPipeline):
    """``summarizer(document or documents, **generate_kwargs)`` -> ``[{"summary_text": ...}]``."""

    task = "summarization"
    return_name = "summary"


# ============================================================================================ classification
def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class TextClassificationPipeline(Pipeline):
    """``classifier(text or texts, top_k=..., function_to_apply=...)``. Without ``top_k``: ``[{"label",
    "score"}]`` for one text and one record per text for a list (the reference's legacy shape); with ``top_k``
    (an int, or None for every label): a list of records per text, best first. A text pair is a dict
    ``{"text", "text_pair"}``. Other options (``truncation``, ``max_length``) go to the tokenizer."""

    task = "text-classification"
    FUNCTIONS = ("softmax", "sigmoid", "none")

    def _check_params(self, params):
        f = params.get("function_to_apply")
        if f is not None:
            f = str(getattr(f, "value", f)).lower()
            if f not in self.FUNCTIONS + ("default",):
                raise ValueError(f"function_to_apply must be one of {self.FUNCTIONS}, got {params['function_to_apply']!r}")
            params = dict(params, function_to_apply=None if f == "default" else f)
        top_k = params.get("top_k", "")
        if top_k not in ("", None) and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        return params

    def _is_single(self, inputs):
        return isinstance(inputs, (str, Mapping))

    def _tokenizer_kwargs(self, params):
        return {k: v for k, v in params.items() if k not in ("top_k", "function_to_apply", "return_all_scores")}

    def _encode(self, items, params):
        kw = self._tokenizer_kwargs(params)
        texts, pairs = [], []
        for x in items:
            if isinstance(x, Mapping):
                texts.append(x["text"])
                pairs.append(x.get("text_pair"))
            elif isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], (list, tuple)) and len(x[0]) == 2:
                texts.append(x[0][0])
                pairs.append(x[0][1])
            elif isinstance(x, str):
                texts.append(x)
                pairs.append(None)
            else:
                raise ValueError("The pipeline received invalid inputs, if you are trying to send text pairs, you "
                                 'can try to send a dictionary `{"text": "My text", "text_pair": "My pair"}` in '
                                 "order to send a text pair.")
        rows = []
        single = [i for i, p in enumerate(pairs) if p is None]
        paired = [i for i, p in enumerate(pairs) if p is not None]
        if single:
            enc = self.tokenizer([texts[i] for i in single], return_attention_mask=False, **kw)
            rows += [Row(ids, i) for i, ids in zip(single, enc["input_ids"])]
        if paired:
            enc = self.tokenizer([texts[i] for i in paired], [pairs[i] for i in paired], return_attention_mask=False,
                                 **kw)
            rows += [Row(ids, i) for i, ids in zip(paired, enc["input_ids"])]
        return sorted(rows, key=lambda r: r.item)

    def _function(self, params) -> str:
        f = params.get("function_to_apply")
        if f is not None:
            return f
        c = self.config
        if c.problem_type == "regression":
            return "none"
        if c.problem_type == "multi_label_classification" or c.num_labels == 1:
            return "sigmoid"
        if c.problem_type == "single_label_classification" or c.num_labels > 1:
            return "softmax"
        return getattr(c, "function_to_apply", None) or "none"

    def _decode(self, item, rows, outputs, params):
        logits = outputs[0]["logits"]                                   # (C,)
        f = self._function(params)
        scores = sigmoid(logits) if f == "sigmoid" else softmax(logits) if f == "softmax" else logits
        id2label = self.config.id2label
        top_k = params.get("top_k", "")
        if top_k == "":  # the reference's legacy single best label
            return {"label": id2label[int(scores.argmax())], "score": scores.max().item()}
        records = [{"label": id2label[i], "score": s.item()} for i, s in enumerate(scores)]
        records.sort(key=lambda r: r["score"], reverse=True)
        return records if top_k is None else records[:top_k]

    def __call__(self, inputs=None, *args, **kwargs):
        result = super().__call__(inputs, *args, **kwargs)
        legacy = kwargs.get("top_k", self._defaults.get("top_k", "")) == ""
        return [result] if isinstance(inputs, str) and legacy else result  # the reference's shape for one text


class ZeroShotClassificationPipeline(Pipeline):
    """``classifier(text or texts, candidate_labels, hypothesis_template="This example is {}.",
    multi_label=False)`` -> ``{"sequence", "labels", "scores"}`` per text, labels best first. Each (text,
    hypothesis) pair is one NLI row; the entailment logit scores a label (softmax over the labels), or with
    ``multi_label`` (or one label) entailment against contradiction. The entailment id is the first label of
    ``config.label2id`` starting with "entail" (else -1), as the reference."""

    task = "zero-shot-classification"

    def _split_inputs(self, inputs, args, kwargs):
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs = dict(kwargs, candidate_labels=args[0])
        elif args:
            raise ValueError(f"Unable to understand extra arguments {args}")
        return inputs, kwargs

    def _check_params(self, params):
        params = dict(params)
        if params.get("multi_class") is not None:
            params["multi_label"] = params.pop("multi_class")
        labels = params.get("candidate_labels")
        if isinstance(labels, str):
            params["candidate_labels"] = [x.strip() for x in labels.split(",") if x.strip()]
        unknown = set(params) - {"candidate_labels", "hypothesis_template", "multi_label", "multi_class"}
        if unknown:
            raise TypeError(f"zero-shot-classification: unknown options {sorted(unknown)}")
        return params

    @property
    def entailment_id(self) -> int:
        for label, ind in self.config.label2id.items():
            if label.lower().startswith("entail"):
                return ind
        return -1

    def _encode(self, items, params):
        labels = params.get("candidate_labels") or []
        template = params.get("hypothesis_template", "This example is {}.")
        if len(labels) == 0 or len(items) == 0:
            raise ValueError("You must include at least one label and at least one sequence.")
        if template.format(labels[0]) == template:
            raise ValueError(f'The provided hypothesis_template "{template}" was not able to be formatted with the '
                             "target labels. Make sure the passed template includes formatting syntax such as {} "
                             "where the label should go.")
        for x in items:
            if not isinstance(x, str):
                raise TypeError(f"zero-shot-classification: each input must be a string, got {type(x).__name__}")
        hypotheses = [template.format(label) for label in labels]
        firsts = [x for x in items for _ in labels]
        seconds = hypotheses * len(items)
        try:
            enc = self.tokenizer(firsts, seconds, truncation="only_first", return_attention_mask=False)
        except Exception as e:  # the hypothesis alone is longer than the limit: as the reference, do not cut
            if "too short" not in str(e) and "shorter" not in str(e):
                raise
            enc = self.tokenizer(firsts, seconds, truncation=False, return_attention_mask=False)
        return [Row(ids, r // len(labels)) for r, ids in enumerate(enc["input_ids"])]

    def _decode(self, item, rows, outputs, params):
        labels = params["candidate_labels"]
        logits = np.stack([o["logits"] for o in outputs])[None]           # (1, n_labels, C)
        if params.get("multi_label", False) or len(labels) == 1:
            entailment_id = self.entailment_id
            contradiction_id = -1 if entailment_id == 0 else 0
            pair = logits[..., [contradiction_id, entailment_id]]
            scores = (np.exp(pair) / np.exp(pair).sum(-1, keepdims=True))[..., 1]
        else:
            entail = logits[..., self.entailment_id]
            scores = np.exp(entail) / np.exp(entail).sum(-1, keepdims=True)
        top = list(reversed(scores[0].argsort()))
        return {"sequence": item, "labels": [labels[i] for i in top], "scores": scores[0, top].tolist()}


# ============================================================================================ fill-mask
class FillMaskPipeline(Pipeline):
    """``unmasker(text or texts, top_k=5, targets=None)`` -> ``[{"score", "token", "token_str", "sequence"}]``
    per text (a list per mask when a text has several). The conditional-generation model scores the decoder
    positions of the masks, with the text as decoder input shifted right, as the reference."""

    task = "fill-mask"

    def _check_params(self, params):
        unknown = set(params) - {"top_k", "targets", "tokenizer_kwargs"}
        if unknown:
            raise TypeError(f"fill-mask: unknown options {sorted(unknown)}")
        if self.tokenizer.mask_token_id is None:
            raise ValueError("fill-mask: the tokenizer does not define a mask_token")
        if params.get("targets") is not None:
            params = dict(params, target_ids=self._target_ids(params["targets"]))
        return params

    def _target_ids(self, targets) -> np.ndarray:
        if isinstance(targets, str):
            targets = [targets]
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            id_ = vocab.get(target)
            if id_ is None:
                pieces = self.tokenizer(target, add_special_tokens=False, return_attention_mask=False,
                                        max_length=1, truncation=True)["input_ids"]
                if len(pieces) == 0:
                    continue
                id_ = pieces[0]
            ids.append(id_)
        ids = list(set(ids))
        if not ids:
            raise ValueError("At least one target must be provided when passed.")
        return np.array(ids)

    def _encode(self, items, params):
        for x in items:
            if not isinstance(x, str):
                raise TypeError(f"fill-mask: each input must be a string, got {type(x).__name__}")
        enc = self.tokenizer(items, return_attention_mask=False, **(params.get("tokenizer_kwargs") or {}))
        rows = []
        for i, ids in enumerate(enc["input_ids"]):
            if self.tokenizer.mask_token_id not in ids:
                raise ValueError(f"fill-mask: no mask_token ({self.tokenizer.mask_token}) found on the input "
                                 f"{items[i]!r:.80}")
            rows.append(Row(ids, i))
        return rows

    def _decode(self, item, rows, outputs, params):
        ids = np.asarray(rows[0].ids)
        mask_id, pad_id = self.tokenizer.mask_token_id, self.tokenizer.pad_token_id
        masked = np.nonzero(ids == mask_id)[0]
        target_ids = params.get("target_ids")
        top_k = params.get("top_k") or 5
        if target_ids is not None and target_ids.shape[0] < top_k:
            top_k = target_ids.shape[0]
        probs = softmax(outputs[0]["logits"][masked])                   # (M, V) float32
        if target_ids is not None:
            probs = probs[..., target_ids]
        single = len(masked) == 1
        result = []
        for m in range(len(masked)):
            best = np.argsort(-probs[m], kind="stable")[:top_k]
            row = []
            for p in best:
                token = int(target_ids[p]) if target_ids is not None else int(p)
                tokens = ids.copy()
                tokens[masked[m]] = token
                tokens = tokens[tokens != pad_id]
                row.append({"score": probs[m, p].item(), "token": token,
                            "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(tokens.tolist(), skip_special_tokens=single)})
            result.append(row)
        return result[0] if single else result

    def _finish(self, results, kind, params):
        if kind == "list" and len(results) == 1:
            return results[0]
        return results[0] if kind in ("single", "stream") else results


# ============================================================================================ question answering
def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple:
    """The ``topk`` best spans of start (1, L) x end (1, L) probabilities with start <= end < start +
    max_answer_len, both ends on allowed tokens -> (starts, ends, scores). The reference's arithmetic and tie
    order."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))   # (1, L, L)
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    allowed = undesired_tokens.nonzero()
    desired = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[desired], ends[desired]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(start, end, p_mask, attention_mask, min_null_score=1000000, top_k=1,
                       handle_impossible_answer=False, max_answer_len=15):
    """Logits (1, L) -> probabilities over the allowed tokens (context, not padding) -> ``decode_spans``;
    also the running null-answer score."""
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


class QuestionAnsweringPipeline(Pipeline):
    """``qa(question=..., context=...)`` (strings, or lists of equal length, or a list question with one
    context), or ``qa({"question", "context"})`` / a list or iterable of such dicts -> ``{"score", "start",
    "end", "answer"}`` (a list of them with ``top_k`` > 1). Long contexts are split into windows of
    ``max_seq_len`` tokens overlapping by ``doc_stride``; options ``top_k``, ``max_answer_len``,
    ``handle_impossible_answer``, ``max_question_len``, ``align_to_words`` as the reference."""

    task = "question-answering"
    OPTIONS = ("top_k", "topk", "doc_stride", "max_answer_len", "max_seq_len", "max_question_len",
               "handle_impossible_answer", "align_to_words", "padding")

    def __init__(self, runner, tokenizer, batch_size=None, progress=None, max_batch_tokens=None, **defaults):
        super().__init__(runner, tokenizer, batch_size, progress, max_batch_tokens, **defaults)
        from tokenizers import Tokenizer
        self._windows = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # own truncation settings
        self._windows.no_padding()

    def _check_params(self, params):
        params = dict(params)
        unknown = set(params) - set(self.OPTIONS)
        if unknown:
            raise TypeError(f"question-answering: unknown options {sorted(unknown)}")
        if params.get("topk") is not None and params.get("top_k") is None:
            params["top_k"] = params.pop("topk")
        if params.get("top_k") is not None and params["top_k"] < 1:
            raise ValueError(f"top_k parameter should be >= 1 (got {params['top_k']})")
        if params.get("max_answer_len") is not None and params["max_answer_len"] < 1:
            raise ValueError(f"max_answer_len parameter should be >= 1 (got {params['max_answer_len']}")
        return params

    def _split_inputs(self, inputs, args, kwargs):
        kwargs = dict(kwargs)
        if inputs is None and "question" in kwargs and "context" in kwargs:
            q, c = kwargs.pop("question"), kwargs.pop("context")
            if isinstance(q, list) and isinstance(c, str):
                inputs = [{"question": x, "context": c} for x in q]
            elif isinstance(q, list) and isinstance(c, list):
                if len(q) != len(c):
                    raise ValueError("Questions and contexts don't have the same lengths")
                inputs = [{"question": x, "context": y} for x, y in zip(q, c)]
            elif isinstance(q, str) and isinstance(c, str):
                inputs = {"question": q, "context": c}
            else:
                raise ValueError("Arguments can't be understood")
        elif isinstance(inputs, str) and len(args) == 1 and isinstance(args[0], str):
            inputs, args = {"question": inputs, "context": args[0]}, ()
        if args:
            raise TypeError(f"question-answering: unexpected positional arguments {args!r}")
        if isinstance(inputs, list) and len(inputs) == 1:  # the reference answers a one-item list as one item
            inputs = inputs[0]
        return inputs, kwargs

    def _is_single(self, inputs):
        return isinstance(inputs, Mapping)

    @staticmethod
    def _check_item(item) -> None:
        if not isinstance(item, Mapping):
            raise ValueError(f"{item!r:.80} argument needs to be of type dict with question and context")
        for k in ("question", "context"):
            if k not in item:
                raise KeyError("You need to provide a dictionary with keys {question:..., context:...}")
            if item[k] is None:
                raise ValueError(f"`{k}` cannot be None")
            if isinstance(item[k], str) and len(item[k]) == 0:
                raise ValueError(f"`{k}` cannot be empty")

    def _encode(self, items, params):
        max_seq_len = params.get("max_seq_len") or min(self.tokenizer.model_max_length, 384)
        doc_stride = params.get("doc_stride")
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ValueError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})")
        question_first = self.tokenizer.padding_side == "right"
        for item in items:
            self._check_item(item)
        self._windows.enable_truncation(max_seq_len, stride=doc_stride,
                                        strategy="only_second" if question_first else "only_first",
                                        direction=self.tokenizer.truncation_side)
        pairs = [(x["question"], x["context"]) if question_first else (x["context"], x["question"]) for x in items]
        rows = []
        cls = getattr(self.tokenizer, "cls_token_id", None)
        for i, first in enumerate(self._windows.encode_batch(pairs, add_special_tokens=True)):
            for enc in [first] + first.overflowing:
                p_mask = [int(s != 1) if question_first else 0 for s in enc.sequence_ids]
                if cls is not None:
                    for j in np.nonzero(np.array(enc.ids) == cls)[0]:
                        p_mask[j] = 0
                rows.append(Row(list(enc.ids), i, (enc, p_mask)))
        return rows

    def _decode(self, item, rows, outputs, params):
        top_k = params.get("top_k") or 1
        handle_impossible = params.get("handle_impossible_answer") or False
        max_answer_len = params.get("max_answer_len") or 15
        align = params.get("align_to_words", True)
        question_first = self.tokenizer.padding_side == "right"
        context = item["context"]
        min_null_score = 1000000
        answers: list[dict] = []
        for row, out in zip(rows, outputs):
            enc, p_mask = row.meta
            n = len(row.ids)
            starts, ends, scores, min_null_score = select_starts_ends(
                out["start_logits"][None], out["end_logits"][None], np.array([p_mask], dtype=np.int64),
                np.ones((1, n), dtype=np.int64), min_null_score, top_k * 2 + 10 if align else top_k,
                handle_impossible, max_answer_len)
            sequence_index = 1 if question_first else 0
            for s, e, score in zip(starts, ends, scores):
                start_index, end_index = _char_span(enc, int(s), int(e), sequence_index, align)
                target = context[start_index:end_index]
                same = next((a for a in answers if a["answer"].lower() == target.lower()), None)
                if same:
                    same["score"] += score.item()
                else:
                    answers.append({"score": score.item(), "start": start_index, "end": end_index,
                                    "answer": target})
        if handle_impossible:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _char_span(enc, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Token span -> character span in the context, widened to whole words when ``align_to_words``."""
    if align_to_words:
        try:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            return (enc.word_to_chars(start_word, sequence_index=sequence_index)[0],
                    enc.word_to_chars(end_word, sequence_index=sequence_index)[1])
        except Exception:
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


# ============================================================================================ building
PIPELINES = {
    "summarization": SummarizationPipeline,
    "text2text-generation": Text2TextGenerationPipeline,
    "zero-shot-classification": ZeroShotClassificationPipeline,
    "text-classification": TextClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "fill-mask": FillMaskPipeline,
}


def build_pipeline(task: str, model: Any, tokenizer: Any, batch_size: Optional[int], load_model: Callable,
                   make_runner: Callable, device: Any = None, model_kwargs: Optional[dict] = None,
                   progress: Optional[bool] = None, max_batch_tokens: Optional[int] = None,
                   **defaults: Any) -> Pipeline:
    """The shared half of each backend's ``pipeline``: ``load_model(class_name, path, **model_kwargs)`` loads a
    checkpoint; ``make_runner(model, device)`` wraps a model object."""
    from bart_core.tokenizer import BartTokenizer

    task = canonical_task(task)
    head = TASKS[task]
    if model is None:
        raise ValueError(f"pipeline({task!r}): give model= (a checkpoint folder, a hub id or a model object); "
                         "this library has no default checkpoints")
    path = None
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        path = model
        model = load_model(HEAD_CLASSES[head], path, **(model_kwargs or {}))
    got = getattr(model, "head", None)
    if got is not None and got != head:
        raise ValueError(f"pipeline({task!r}) needs a {HEAD_CLASSES[head]}, got a {type(model).__name__}")
    if tokenizer is None:
        path = path or getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None),
                                                                          "_name_or_path", None)
        if not path:
            raise ValueError(f"pipeline({task!r}): the model object has no folder to read a tokenizer from; give "
                             "tokenizer=")
        tokenizer = BartTokenizer.from_pretrained(path)
    elif isinstance(tokenizer, str) or hasattr(tokenizer, "__fspath__"):
        tokenizer = BartTokenizer.from_pretrained(tokenizer)
    return PIPELINES[task](make_runner(model, device), tokenizer, batch_size, progress, max_batch_tokens, **defaults)


__all__ = ["Pipeline", "Runner", "Row", "TASKS", "PIPELINES", "build_pipeline", "canonical_task", "decode_spans",
           "select_starts_ends", "plan_batches", "run_batches", "pipeline_generation_config", "SummarizationPipeline",
           "Text2TextGenerationPipeline", "ZeroShotClassificationPipeline", "TextClassificationPipeline",
           "QuestionAnsweringPipeline", "FillMaskPipeline"]
