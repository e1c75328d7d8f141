"""Diverse (group) beam search in every backend, token-identical to the reference's algorithm.

transformers 4.57.6 runs group beam search from hub code ("transformers-community/group-beam-search"), out of
reach offline. It still ships the pieces that loop is built on: ``BeamSearchScorer(num_beam_groups=...)`` (one
set of finished hypotheses per input and group, ``process(..., group_index=g)``, ``finalize``) and
``HammingDiversityLogitsProcessor``. ``reference_group_beam_search`` is that loop written on those pieces and run
by the reference's own ``generate`` (``custom_generate=``), which prepares the encoder outputs, the cache, the
logits processors and the stopping criteria as it does for every mode; the diversity processor is appended after
them, as the hub loop appends it. The oracle is checked first: with one group it is the reference's beam search.

Tiny config with random weights, a batch of two rows (the second padded); ``eos_bias`` makes EOS likely so that
hypotheses end at different lengths and groups finish at different steps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.conftest import load_reference, seeded_inputs, tiny_config

pytest.importorskip("transformers")

ATOL = 1e-5

# every case: num_beams=4 in two groups unless it says otherwise
CASES = {
    "g2": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=10),
    "g2_return4_lp2": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=12,
                           num_return_sequences=4, length_penalty=2.0),
    "g2_early_lp05_return2": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.5, max_new_tokens=12,
                                  early_stopping=True, length_penalty=0.5, num_return_sequences=2),
    "g2_never_min_ngram": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=12,
                               early_stopping="never", length_penalty=1.5, min_length=6, no_repeat_ngram_size=2),
    "g3_of_6_rep_bos": dict(num_beams=6, num_beam_groups=3, diversity_penalty=1.0, max_new_tokens=9,
                            num_return_sequences=3, repetition_penalty=1.3, forced_bos_token_id=0),
    "g4_of_4_false": dict(num_beams=4, num_beam_groups=4, diversity_penalty=3.0, max_new_tokens=10,
                          early_stopping=False, num_return_sequences=4),
}


# ------------------------------------------------------------------------------------------------ the oracle


def reference_group_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                synced_gpus=False, closed_log=None, **model_kwargs):
    """Group beam search on transformers 4.57.6's ``BeamSearchScorer`` and ``HammingDiversityLogitsProcessor``:
    per step one network call for all beams; then, group by group, the group's log-softmax, the logits processors
    (diversity penalty last: the tokens earlier groups of the same input chose at this step), plus the group's beam
    scores, top ``2 * group_size`` of ``group_size * vocab``, ``scorer.process(group_index=g)``, the group's rows
    reordered; then the chosen tokens appended and the cache reordered. ``generate(custom_generate=...)`` calls it
    with ``input_ids`` (B * num_beams, prompt) and prepared processors, criteria and model kwargs.

    ``closed_log`` (a list) receives, per step, which (input, group) the scorer had closed before the step: the
    scorer hands a closed group's beams the rows of input 0 (index 0), so their later scores are meaningless."""
    import torch
    from transformers.generation.beam_search import BeamSearchScorer
    from transformers.generation.logits_process import HammingDiversityLogitsProcessor
    from transformers.generation.utils import GenerateBeamEncoderDecoderOutput

    gen = generation_config
    beams, groups = gen.num_beams, gen.num_beam_groups
    size = beams // groups                                              # beams per group
    batch = input_ids.shape[0] // beams
    if groups > 1:
        logits_processor.append(HammingDiversityLogitsProcessor(gen.diversity_penalty, beams, groups))
    scorer = BeamSearchScorer(batch, beams, input_ids.device, length_penalty=gen.length_penalty,
                              do_early_stopping=gen.early_stopping, num_beam_hyps_to_keep=gen.num_return_sequences,
                              num_beam_groups=groups, max_length=gen.max_length)
    pad, eos = gen._pad_token_tensor, gen._eos_token_tensor
    beam_scores = torch.full((batch, beams), -1e9)
    beam_scores[:, ::size] = 0.0                                        # only each group's first beam expands
    beam_scores = beam_scores.view(-1)                                  # (B * num_beams,)
    prompt = input_ids.shape[1]
    model_kwargs = model._get_initial_cache_position(prompt, input_ids.device, model_kwargs)
    step_scores = []
    while True:
        if closed_log is not None:
            closed_log.append(scorer._done.view(batch, groups).clone().numpy())
        outputs = model(**model.prepare_inputs_for_generation(input_ids, **model_kwargs), return_dict=True)
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=True)
        chosen = torch.zeros(batch * beams, dtype=input_ids.dtype)     # tokens picked at this step
        rows = torch.zeros(batch * beams, dtype=torch.long)            # cache row each beam continues
        processed = torch.zeros_like(outputs.logits[:, -1, :])
        for g in range(groups):
            idx = [b * beams + g * size + j for b in range(batch) for j in range(size)]
            group_ids = input_ids[idx]                                 # (B * size, cur_len)
            logp = torch.log_softmax(outputs.logits[idx, -1, :].float(), dim=-1)
            logp = logits_processor(group_ids, logp, current_tokens=chosen, beam_group_idx=g)
            processed[idx] = logp
            vocab = logp.shape[-1]
            total = (logp + beam_scores[idx, None]).view(batch, size * vocab)
            top_scores, top = torch.topk(total, 2 * size, dim=1)
            out = scorer.process(group_ids, top_scores, top % vocab, top // vocab, pad_token_id=pad,
                                 eos_token_id=eos, group_index=g, decoder_prompt_len=prompt)
            parent = out["next_beam_indices"]                          # (B * size,) rows of group_ids
            beam_scores[idx] = out["next_beam_scores"]
            input_ids[idx] = group_ids[parent]
            chosen[idx] = out["next_beam_tokens"]
            rows[idx] = beams * (parent // size) + g * size + parent % size
        step_scores.append(processed)
        input_ids = torch.cat([input_ids, chosen[:, None]], dim=-1)
        model_kwargs["past_key_values"].reorder_cache(rows)
        if scorer.is_done or all(stopping_criteria(input_ids, None)):
            break
    out = scorer.finalize(input_ids, beam_scores, None, None, max_length=stopping_criteria.max_length,
                          pad_token_id=pad, eos_token_id=eos, decoder_prompt_len=prompt)
    if not gen.return_dict_in_generate:
        return out["sequences"]
    return GenerateBeamEncoderDecoderOutput(
        sequences=out["sequences"], sequences_scores=out["sequence_scores"] if gen.output_scores else None,
        scores=tuple(step_scores) if gen.output_scores else None)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """eos_bias -> a reference checkpoint (init_std 0.3: input-dependent outputs)."""
    from tests.conftest import make_reference_checkpoint
    return {bias: make_reference_checkpoint(tmp_path_factory.mktemp(f"diverse-{bias}"), "conditional_generation",
                                            "gelu", seed=3, eos_bias=bias, init_std=0.3) for bias in (0.0, 2.5)}


def _inputs():
    return seeded_inputs(tiny_config(), batch=2, seed=5)  # the second row padded


def _reference(path, x, custom: bool = True, **options):
    """The reference's ``generate`` (sdpa attention, as test_backends), with the oracle loop when ``custom``.
    -> {"sequences", and with output_scores "sequences_scores", "scores"} as numpy."""
    import torch
    model = load_reference("conditional_generation", path, eager=False)
    closed: list = []
    extra = {"custom_generate": reference_group_beam_search, "closed_log": closed} if custom else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = model.generate(torch.from_numpy(x["input_ids"]), attention_mask=torch.from_numpy(x["attention_mask"]),
                             **extra, **options)
    if not options.get("return_dict_in_generate"):
        return {"sequences": out.numpy()}
    res = {"sequences": out.sequences.numpy()}
    if options.get("output_scores"):
        res["sequences_scores"] = out.sequences_scores.numpy()
        res["scores"] = np.stack([s.numpy() for s in out.scores])                # (steps, N, V)
        if custom:  # rows whose scores are meaningful: their group was open at the previous step
            beams, groups = options["num_beams"], options.get("num_beam_groups", 1)
            open_rows = [np.ones(res["scores"].shape[1], bool)] + [
                np.repeat(~c, beams // groups, axis=1).reshape(-1) for c in closed[:len(out.scores) - 1]]
            res["open_rows"] = np.stack(open_rows)                                # (steps, N)
    return res


def _check(ours: dict, ref: dict) -> None:
    seqs = np.asarray(ours["sequences"])
    assert seqs.shape == ref["sequences"].shape and seqs.tolist() == ref["sequences"].tolist(), (seqs, ref)
    if "sequences_scores" in ref:
        np.testing.assert_allclose(np.asarray(ours["sequences_scores"]), ref["sequences_scores"], atol=ATOL, rtol=0)
        scores = np.stack([np.asarray(s) for s in ours["scores"]])
        assert scores.shape == ref["scores"].shape
        np.testing.assert_allclose(scores[ref["open_rows"]], ref["scores"][ref["open_rows"]], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("eos_bias", [0.0, 2.5])
@pytest.mark.parametrize("options", [
    dict(num_beams=4, max_new_tokens=12),
    dict(num_beams=4, max_new_tokens=12, num_return_sequences=3, length_penalty=2.0, early_stopping=True,
         min_length=5, no_repeat_ngram_size=2),
    dict(num_beams=3, max_new_tokens=10, length_penalty=0.5, early_stopping="never", num_return_sequences=2),
], ids=["beam4", "beam4_return3_lp2_early_min_ngram", "beam3_never_lp05"])
def test_oracle_with_one_group_is_the_reference_beam_search(checkpoints, eos_bias, options):
    x = _inputs()
    opts = dict(options, return_dict_in_generate=True, output_scores=True)
    ours = _reference(checkpoints[eos_bias], x, **opts)
    ref = _reference(checkpoints[eos_bias], x, custom=False, **opts)
    assert ours["sequences"].tolist() == ref["sequences"].tolist()
    np.testing.assert_allclose(ours["sequences_scores"], ref["sequences_scores"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours["scores"][ours["open_rows"]], ref["scores"][ours["open_rows"]], atol=ATOL,
                               rtol=0)


def test_oracle_groups_are_diverse(checkpoints):
    """The diversity penalty changes the result (so the comparisons below can fail)."""
    x = _inputs()
    plain = _reference(checkpoints[0.0], x, custom=False, num_beams=4, num_return_sequences=4, max_new_tokens=10)
    diverse = _reference(checkpoints[0.0], x, num_beams=4, num_beam_groups=2, diversity_penalty=5.0,
                         num_return_sequences=4, max_new_tokens=10)
    assert plain["sequences"].tolist() != diverse["sequences"].tolist()


@pytest.mark.parametrize("eos_bias", [pytest.param(0.0, marks=pytest.mark.slow), 2.5])
@pytest.mark.parametrize("case", list(CASES))
def test_group_beam_search_matches_reference(backend, checkpoints, case, eos_bias):
    x = _inputs()
    ref = _reference(checkpoints[eos_bias], x, **CASES[case])
    model = backend.from_pretrained("BartForConditionalGeneration", checkpoints[eos_bias])
    ours = backend.generate(model, x["input_ids"], x["attention_mask"], **CASES[case])
    _check({"sequences": ours}, ref)


@pytest.mark.parametrize("case", ["g2_return4_lp2", "g3_of_6_rep_bos"])
def test_group_beam_search_scores_match_reference(backend, checkpoints, case):
    """``sequences_scores`` (length-normalised hypothesis scores) and the per-step processed scores."""
    x = _inputs()
    opts = dict(CASES[case], return_dict_in_generate=True, output_scores=True)
    ref = _reference(checkpoints[2.5], x, **opts)
    model = backend.from_pretrained("BartForConditionalGeneration", checkpoints[2.5])
    _check(backend.generate(model, x["input_ids"], x["attention_mask"], **opts), ref)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_tf_group_beam_search_compiled(checkpoints, jit_compile):
    """The TF loop as one graph and under XLA (static shapes, groups unrolled) gives the same ids."""
    pytest.importorskip("tensorflow")
    from tests.backends import get_backend
    backend = get_backend("tf")
    x = _inputs()
    options = CASES["g2_never_min_ngram"]
    ref = _reference(checkpoints[2.5], x, **options)
    model = backend.from_pretrained("BartForConditionalGeneration", checkpoints[2.5])
    _check({"sequences": backend.generate(model, x["input_ids"], x["attention_mask"], jit_compile=jit_compile,
                                          **options)}, ref)


@pytest.mark.parametrize("options, match", [
    (dict(num_beams=4, num_beam_groups=3, diversity_penalty=0.5), "divisible"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.0), "diversity_penalty > 0"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, do_sample=True), "do_sample=False"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), "diversity_penalty must be >= 0"),
    (dict(num_beams=4, num_beam_groups=0), "num_beam_groups must be >= 1"),
])
def test_group_options_are_validated(options, match):
    """As the reference's group beam search refuses them (transformers 4.4x ``GenerationConfig.validate``)."""
    from bart_core import GenerationConfig
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**options)


def test_group_options_round_trip_with_reference(tmp_path):
    """``num_beam_groups`` / ``diversity_penalty`` are options now, not reference-only extras: written to and read
    from generation_config.json as the reference does."""
    import transformers

    from bart_core import GenerationConfig
    ours = GenerationConfig(num_beams=6, num_beam_groups=3, diversity_penalty=0.7)
    ours.save_pretrained(tmp_path)
    ref = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (ref.num_beam_groups, ref.diversity_penalty) == (3, 0.7)
    transformers.GenerationConfig(num_beams=4, num_beam_groups=2, diversity_penalty=0.25).save_pretrained(
        tmp_path / "ref")
    back = GenerationConfig.from_pretrained(tmp_path / "ref")
    assert (back.num_beam_groups, back.diversity_penalty, back.extra) == (2, 0.25, {})
