"""Task pipelines of every backend against the transformers 4.57.6 pipelines (the oracle), on tiny random-weight
checkpoints the reference wrote with the real bart-base tokenizer; and the ``bart3`` command line."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import warnings

import pytest

from tests.conftest import make_reference_checkpoint

transformers = pytest.importorskip("transformers")

BACKENDS = ["torch", "tf", "flax"]
ATOL = 1e-5
# bart-base's vocabulary (the real tokenizer), a tiny network; 1024 positions so truncation=True fits
GEOMETRY = dict(vocab_size=50265, max_position_embeddings=1024,
                id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
                label2id={"contradiction": 0, "neutral": 1, "entailment": 2})
TEXTS = [
    "The tower is 324 metres tall, about the same height as an 81-storey building.",
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "Hello world.",
    "Of Man's first disobedience, and the fruit of that forbidden tree, whose mortal taste brought death into "
    "the World, and all our woe, with loss of Eden, till one greater Man restore us.",
]
MASKED = ["The tower is <mask> metres tall.", "Alice was <mask> to get very tired of sitting by her sister.",
          "Hello <mask>."]
CONTEXT = (" ".join(TEXTS) + " ") * 6  # long enough to be split into windows
QUESTIONS = [{"question": "How tall is the tower?", "context": CONTEXT},
             {"question": "Who was tired?", "context": TEXTS[1]},
             {"question": "What was forbidden?", "context": TEXTS[3]}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer_dir):
    """head -> folder with the reference's weights and the bart-base tokenizer files."""
    out = {}
    for head in ("conditional_generation", "sequence_classification", "question_answering"):
        d = tmp_path_factory.mktemp(f"pipe-{head}")
        make_reference_checkpoint(d, head, **GEOMETRY)
        for f in os.listdir(tokenizer_dir):
            if os.path.isfile(os.path.join(tokenizer_dir, f)):
                shutil.copy(os.path.join(tokenizer_dir, f), d)
        if not (d / "tokenizer_config.json").exists():  # bart-base's limit, which truncation=True cuts to
            (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
        out[head] = str(d)
    return out


TASK_HEAD = {"summarization": "conditional_generation", "text2text-generation": "conditional_generation",
             "fill-mask": "conditional_generation", "zero-shot-classification": "sequence_classification",
             "text-classification": "sequence_classification", "question-answering": "question_answering"}


@pytest.fixture(scope="module")
def reference(checkpoints):
    """task -> the transformers pipeline (PyTorch, batch_size 1)."""
    cache = {}

    def get(task):
        if task not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[task] = transformers.pipeline(task, model=checkpoints[TASK_HEAD[task]], framework="pt")
        return cache[task]
    return get


@pytest.fixture(scope="module")
def ours(checkpoints):
    """(backend, task) -> our pipeline; one model per backend and head, shared by the tasks."""
    import importlib
    cache, models = {}, {}

    def get(backend, task, batch_size=1):
        module = importlib.import_module(f"bart_{backend}")
        head = TASK_HEAD[task]
        if (backend, head) not in models:
            name = {"conditional_generation": "BartForConditionalGeneration",
                    "sequence_classification": "BartForSequenceClassification",
                    "question_answering": "BartForQuestionAnswering"}[head]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models[backend, head] = getattr(module, name).from_pretrained(checkpoints[head])
        key = (backend, task, batch_size)
        if key not in cache:
            cache[key] = module.pipeline(task, model=models[backend, head], tokenizer=checkpoints[head],
                                         batch_size=batch_size)
        return cache[key]
    return get


def assert_same(got, want, path="result"):
    """Equal structure, strings and ints; floats within ATOL."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{path}: keys {got!r} vs {want!r}"
        for k in want:
            assert_same(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} vs {want!r}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=0, abs_tol=ATOL), f"{path}: {got} vs {want}"
    else:
        assert type(got) is type(want) and got == want, f"{path}: {got!r} vs {want!r}"


def check(backend, task, ours, reference, inputs, **kwargs):
    """Single, list and generator calls, batch_size 1 and 3, all equal to the reference."""
    ref = reference(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ref(inputs, **kwargs)
        sizes = (1, 3) if isinstance(inputs, list) or task == "question-answering" else (1,)
        for bs in sizes:
            assert_same(ours(backend, task, bs)(inputs, **kwargs), want, f"{task} batch_size={bs}")
        if isinstance(inputs, list) and len(inputs) > 1:
            streamed = list(ref(x for x in inputs) if not kwargs else ref((x for x in inputs), **kwargs))
            got = ours(backend, task, 3)((x for x in inputs), **kwargs)
            assert not isinstance(got, list)  # answered lazily
            assert_same(list(got), streamed, f"{task} generator")
    return want


@pytest.mark.parametrize("backend", BACKENDS)
def test_summarization(backend, ours, reference):
    check(backend, "summarization", ours, reference, TEXTS, max_new_tokens=6, num_beams=2)
    check(backend, "summarization", ours, reference, TEXTS[0], max_new_tokens=5)  # pipeline default beams 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_text2text_generation(backend, ours, reference):
    check(backend, "text2text-generation", ours, reference, TEXTS[:3], max_new_tokens=5, num_beams=1,
          truncation=True)
    long_text = " ".join(TEXTS) * 30  # over 1024 tokens: only truncation=True makes it fit
    check(backend, "text2text-generation", ours, reference, long_text, max_new_tokens=3, num_beams=1,
          truncation=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_shot_classification(backend, ours, reference):
    labels = ["travel", "cooking", "dancing", "exploration", "literature"]
    check(backend, "zero-shot-classification", ours, reference, TEXTS, candidate_labels=labels)
    check(backend, "zero-shot-classification", ours, reference, TEXTS[0], candidate_labels="travel, cooking",
          multi_label=True, hypothesis_template="This text is about {}.")
    check(backend, "zero-shot-classification", ours, reference, TEXTS[1], candidate_labels=["one label"])
    assert ours(backend, "zero-shot-classification").entailment_id == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_classification(backend, ours, reference):
    check(backend, "text-classification", ours, reference, TEXTS)
    check(backend, "text-classification", ours, reference, TEXTS[0])
    check(backend, "text-classification", ours, reference, TEXTS[:2], top_k=None, function_to_apply="sigmoid")
    check(backend, "text-classification", ours, reference, TEXTS[2], top_k=2)
    check(backend, "text-classification", ours, reference, {"text": TEXTS[0], "text_pair": TEXTS[1]})


@pytest.mark.parametrize("backend", BACKENDS)
def test_fill_mask(backend, ours, reference):
    check(backend, "fill-mask", ours, reference, MASKED, top_k=3)
    check(backend, "fill-mask", ours, reference, MASKED[0])
    check(backend, "fill-mask", ours, reference, "Two <mask> in one <mask>.", top_k=2)
    check(backend, "fill-mask", ours, reference, MASKED[2], targets=[" world", " there"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_question_answering(backend, ours, reference):
    # the long context is cut into windows of 64 tokens overlapping by 24
    want = check(backend, "question-answering", ours, reference, QUESTIONS, top_k=3, max_seq_len=64,
                 doc_stride=24, max_answer_len=6)
    assert len(want) == 3 and all(isinstance(w, list) for w in want)
    check(backend, "question-answering", ours, reference, QUESTIONS[1], handle_impossible_answer=True)
    ref = reference("question-answering")
    q = [x["question"] for x in QUESTIONS[:2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(ours(backend, "question-answering", 3)(question=q, context=TEXTS[1]),
                    ref(question=q, context=TEXTS[1]))
        assert_same(ours(backend, "question-answering", 1)(question=q[0], context=CONTEXT, top_k=2),
                    ref(question=q[0], context=CONTEXT, top_k=2))


# ============================================================================================ batching
@pytest.mark.parametrize("multiple", [None, 16])
@pytest.mark.parametrize("batch_size, max_tokens", [(8, None), (None, 256), (3, 100), (None, 10)])
def test_plan_batches_respects_the_limits(batch_size, max_tokens, multiple):
    """Every row once; longest first; at most batch_size rows and rows x padded width <= max_tokens (a row over
    the budget alone); compiled runners: widths padded to buckets (under a quarter of the row, or one multiple,
    at most four per doubling) and short batches to powers of two."""
    import numpy as np

    from bart_core.pipelines import plan_batches

    lengths = list(np.random.default_rng(0).integers(3, 300, size=41))
    if multiple:
        from bart_core.pipelines import _bucket
        widths = sorted({_bucket(n, multiple) for n in range(1, 64 * multiple + 1)})
        for lo in (multiple * 2 ** k for k in range(6)):  # buckets in each doubling [lo, 2 lo)
            assert 1 <= len([w for w in widths if lo <= w < 2 * lo]) <= 4
    batches = plan_batches(lengths, batch_size, max_tokens, multiple)
    seen = [i for picked, _, _ in batches for i in picked]
    assert sorted(seen) == list(range(len(lengths)))
    assert [lengths[i] for i in seen] == sorted(lengths, reverse=True)
    for picked, rows, width in batches:
        longest = max(lengths[i] for i in picked)
        assert width >= longest and rows >= len(picked)
        if batch_size is not None:
            assert rows <= batch_size
        if max_tokens is not None:
            assert rows * width <= max_tokens or len(picked) == rows == 1
        if multiple is None:
            assert (rows, width) == (len(picked), longest)
        else:
            assert width >= multiple and width % multiple == 0 and width - longest < max(multiple, longest / 4)
            assert rows == len(picked) or (rows & (rows - 1) == 0 and rows < 2 * len(picked))


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_budget_gives_the_unbatched_results(backend, ours, checkpoints):
    """max_batch_tokens changes only the batches: results in input order, equal to batch_size=1's."""
    import importlib
    module = importlib.import_module(f"bart_{backend}")
    texts = TEXTS + [t.upper() for t in TEXTS[:2]]  # 5 to 45 tokens: budgets of 64 and 200 cut 1 to 9 rows
    labels = ["travel", "cooking", "literature"]
    for task, kwargs, budgets in (("zero-shot-classification", dict(candidate_labels=labels), (64, 200)),
                                  ("summarization", dict(max_new_tokens=3, num_beams=1), (64,))):
        one = ours(backend, task, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = one(texts, **kwargs)
            for budget in budgets:
                pipe = module.pipeline(task, model=one.model, tokenizer=one.tokenizer, batch_size=None,
                                       max_batch_tokens=budget)
                assert pipe.batch_size is None and pipe.max_batch_tokens == budget
                assert_same(pipe(texts, **kwargs), want, f"{task} max_batch_tokens={budget}")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        module.pipeline("summarization", model=one.model, tokenizer=one.tokenizer, max_batch_tokens=0)


@pytest.fixture
def compile_counter():
    """() -> programs compiled (jax) plus graphs traced (every tf.function made while the fixture is active)."""
    import jax
    import tensorflow as tf

    global _COMPILES
    if _COMPILES is None:  # jax listeners cannot be removed: one per process, counting while armed
        _COMPILES = {"armed": False, "n": 0}

        def listen(name, duration, **kw):
            if _COMPILES["armed"] and name == "/jax/core/compile/backend_compile_duration":
                _COMPILES["n"] += 1
        jax.monitoring.register_event_duration_secs_listener(listen)
    functions, make = [], tf.function

    def counting_function(*args, **kwargs):
        f = make(*args, **kwargs)
        if callable(f) and hasattr(f, "experimental_get_tracing_count"):
            functions.append(f)
        return f
    tf.function = counting_function
    _COMPILES.update(armed=True, n=0)
    try:
        yield lambda: _COMPILES["n"] + sum(f.experimental_get_tracing_count() for f in functions)
    finally:
        tf.function = make
        _COMPILES["armed"] = False


_COMPILES = None


@pytest.mark.parametrize("case", ["tf", pytest.param("tf-xla", marks=pytest.mark.slow), "flax"])
def test_new_texts_in_the_same_buckets_compile_nothing(case, checkpoints, compile_counter):
    """Compiled backends pad lengths and short batches to buckets, so a second call on other texts of lengths
    in the same buckets (and as many) reuses every graph / program of the first: no tracing, no compilation.
    Generation lengths are forced, so the eager crop of the output has one shape too."""
    import importlib
    backend = case.split("-")[0]
    module = importlib.import_module(f"bart_{backend}")
    first = ["A short one.", "A somewhat longer sentence about towers, rivers and bridges.", "Tiny.", "Hello."]
    second = ["Another short.", "Some other longer sentence about cats, the sea and the moon.", "Hi.", "Bye now."]
    extra = {"jit_compile": True} if case == "tf-xla" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for task, head, kwargs in (("summarization", "conditional_generation",
                                    dict(max_new_tokens=3, min_new_tokens=3, num_beams=2, **extra)),
                                   ("zero-shot-classification", "sequence_classification",
                                    dict(candidate_labels=["travel", "cooking"]))):
            if extra and task != "summarization":
                continue
            pipe = module.pipeline(task, model=checkpoints[head], batch_size=3)
            lengths = [len(pipe.tokenizer(t)["input_ids"]) for t in first + second]
            assert max(lengths) <= pipe.runner.length_multiple  # one length bucket
            pipe(first, **kwargs)
            compiled = compile_counter()
            assert compiled > 0, "the counter sees nothing"
            pipe(second, **kwargs)
            assert compile_counter() == compiled, f"{task}: the second call compiled or traced again"


def test_generation_defaults_come_from_the_checkpoint(ours, reference, checkpoints):
    """The pipeline decodes with max_new_tokens=256, num_beams=4 under the checkpoint's own options (here its
    token ids and forced_eos_token_id), as the reference."""
    pipe = ours("torch", "summarization")
    ref = reference("summarization")
    for name in ("num_beams", "max_new_tokens", "forced_eos_token_id", "decoder_start_token_id", "pad_token_id"):
        assert getattr(pipe.generation_config, name) == getattr(ref.generation_config, name), name


def test_errors(ours):
    import bart_torch
    pipe = ours("torch", "fill-mask")
    with pytest.raises(ValueError, match="mask_token"):
        pipe("no mask here")
    with pytest.raises(ValueError, match="at least one label"):
        ours("torch", "zero-shot-classification")("text", candidate_labels=[])
    with pytest.raises(TypeError, match="unknown options"):
        ours("torch", "summarization")("text", num_beamz=2)
    with pytest.raises(KeyError, match="unknown task"):
        bart_torch.pipeline("translation", model="x")
    with pytest.raises(ValueError, match="needs a BartForQuestionAnswering"):
        bart_torch.pipeline("question-answering", model=pipe.model, tokenizer=pipe.tokenizer)


# ============================================================================================ command line
def run_cli(argv, stdin="", monkeypatch=None, capsys=None):
    from bart_core.cli import main
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_stdin_and_files_in_order(checkpoints, reference, tmp_path, monkeypatch, capsys):
    model = checkpoints["sequence_classification"]
    labels = "travel,cooking,dancing"
    rc, out, err = run_cli(["zero-shot-classification", "--model", model, "--labels", labels, "--max-batch-tokens",
                            "64"],
                           "\n".join(TEXTS) + "\n\n", monkeypatch, capsys)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(records, reference("zero-shot-classification")(TEXTS, candidate_labels=labels.split(",")))
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("\n".join(TEXTS[:2]) + "\n")
    b.write_text(json.dumps({"text": TEXTS[2]}) + "\n" + TEXTS[3] + "\n")
    rc, out, err = run_cli(["text-classification", "--model", model, str(a), "--batch-size", "2", str(b)], "",
                           monkeypatch, capsys)
    assert rc == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same([json.loads(line) for line in out.splitlines()], reference("text-classification")(TEXTS))


def test_cli_generation_and_qa(checkpoints, reference, tmp_path, monkeypatch, capsys):
    rc, out, err = run_cli(["summarization", "--model", checkpoints["conditional_generation"], "--max-new-tokens",
                            "4", "--num-beams", "2", "--batch-size", "2"], "\n".join(TEXTS[:3]), monkeypatch, capsys)
    assert rc == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = reference("summarization")(TEXTS[:3], max_new_tokens=4, num_beams=2)
    assert [json.loads(line) for line in out.splitlines()] == want
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in QUESTIONS[1:]))
    rc, out, err = run_cli(["question-answering", "--model", checkpoints["question_answering"], str(q)], "",
                           monkeypatch, capsys)
    assert rc == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same([json.loads(line) for line in out.splitlines()], reference("question-answering")(QUESTIONS[1:]))


@pytest.mark.parametrize("case", ["bad_model", "bad_option", "empty_input", "missing_labels", "bad_json",
                                  "missing_file"])
def test_cli_bad_input_is_one_line_and_exit_2(case, checkpoints, tmp_path, monkeypatch, capsys):
    model = checkpoints["sequence_classification"]
    argv, stdin = {
        "bad_model": (["text-classification", "--model", str(tmp_path / "nowhere")], "text\n"),
        "bad_option": (["text-classification", "--model", model, "--no-such-option"], "text\n"),
        "empty_input": (["text-classification", "--model", model], "\n  \n"),
        "missing_labels": (["zero-shot-classification", "--model", model], "text\n"),
        "bad_json": (["question-answering", "--model", checkpoints["question_answering"]], "{not json\n"),
        "missing_file": (["text-classification", "--model", model, str(tmp_path / "absent.txt")], ""),
    }[case]
    rc, out, err = run_cli(argv, stdin, monkeypatch, capsys)
    assert rc == 2
    assert out == ""
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("bart3: error: "), err
