"""Decoding for the PyTorch backend: ``sample_search`` (arg-max and sampling) and ``beam_search`` over a step function.

The loops see the model only through ``step(tokens, cache) -> (logits, cache, outputs)``: ``tokens`` is ``(N, t)``
(the whole sequence when there is no cache, else the last token), ``logits`` ``(N, V)`` float32 for the last
position, ``outputs`` the per-step network outputs asked for (a dict, empty by default); beam search also gets
``reorder(cache, rows) -> cache`` (``bart_torch.cache.reorder_cache``). The three backends' ``generation.py`` are
translations of one another: same loops, same state names, same ``bart_core.generation.SearchResult``; the
numbers that are not framework code (``BEAM_FILL``, ``num_candidates``, ``length_normalizer``,
``bound_length``) live in ``bart_core.generation``, and ``docs/design.md`` ("Decoding") is the vocabulary.
Options are ``bart_core.generation.GenerationConfig``; its docstring fixes the length conventions and the
processor order. This module imports nothing from ``modeling``: the model hands over its decoder, its logits
and its input check (``model._check_generate_inputs``).

Beam search follows the reference (transformers 4.57.6) rules, so results are token-identical:

* each step ranks the ``num_candidates(num_beams) = 2 * num_beams`` best continuations of all beams by summed
  log-probability;
* a candidate that ends in EOS, or reaches ``max_length``, is a finished hypothesis only if it is among the
  first ``num_beams`` candidates; its score is ``sum_logprobs / length_normalizer(generated)``, ``generated``
  counting the tokens after the decoder prompt, EOS included; the best ``num_beams`` finished hypotheses are kept;
* the ``num_beams`` best candidates that did not end go on (``running``);
* an input stops improving when its best running beam, normalised by ``bound_length``, cannot beat its worst kept
  hypothesis, or, with ``early_stopping=True``, as soon as it has ``num_beams`` hypotheses;
* outputs are padded with ``pad_token_id`` to the longest returned hypothesis.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bart_core.generation import (
    BEAM_FILL,
    GenerationConfig,
    SearchResult,
    bad_word_sequences,
    bound_length,
    check_generate_source,
    decoder_prompt,
    length_normalizer,
    num_candidates,
    resolve_generation_config,
    resolve_lengths,
)
from bart_core.inputs import check_unpadded_prompt, infer_attention_mask
from bart_core.outputs import BaseModelOutput, GenerateOutput
from bart_torch import kernels
from bart_torch.cache import KVCache, reorder_cache, select_rows
from bart_torch.packed import encode_packed

NEG_INF = float("-inf")

StepFn = Callable[[torch.Tensor, object], tuple]  # (tokens (N, t), cache) -> (logits (N, V), cache, outputs)


# ============================================================================ logit processors


class LogitsProcessor:
    """``(sequences (N, L), scores (N, V)) -> scores (N, V)``; ``L`` counts the decoder start token."""

    def __call__(self, seqs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RepetitionPenalty(LogitsProcessor):
    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, seqs, scores):
        picked = scores.gather(1, seqs)  # (N, L)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, seqs, picked)


class NoRepeatNGram(LogitsProcessor):
    """Ban any token that would repeat an n-gram already in the sequence (start token included)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, seqs, scores):
        n, length = self.n, seqs.shape[1]
        if length + 1 < n or length < n:
            return scores
        grams = seqs.unfold(1, n, 1)  # (N, L - n + 1, n)
        prefix = seqs[:, length - n + 1:]  # (N, n - 1): the last n - 1 tokens
        hit = (grams[:, :, :n - 1] == prefix[:, None, :]).all(-1)  # (N, L - n + 1)
        if scores.device.type == "cpu" and not bool(hit.any()):  # a shortcut where it costs no device wait
            return scores
        vocab = scores.shape[-1]
        banned = torch.zeros((scores.shape[0], vocab + 1), dtype=torch.bool, device=scores.device)
        banned.scatter_(1, torch.where(hit, grams[:, :, -1], vocab), True)  # misses land in the spare column
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


class BadWords(LogitsProcessor):
    """Ban single tokens always, and the last token of a longer sequence when the sequence ends with the rest
    (``bart_core.generation.bad_word_sequences``)."""

    def __init__(self, single: tuple, longer: tuple):
        self.single, self.longer = list(single), longer

    def __call__(self, seqs, scores):
        banned = torch.zeros_like(scores, dtype=torch.bool)  # (N, V)
        if self.single:
            banned[:, self.single] = True
        for word in self.longer:
            if len(word) > seqs.shape[1]:
                continue
            prefix = torch.tensor(word[:-1], dtype=seqs.dtype, device=seqs.device)
            banned[:, word[-1]] |= (seqs[:, seqs.shape[1] - len(word) + 1:] == prefix).all(-1)
        return scores.masked_fill(banned, NEG_INF)


class RemoveInvalidValues(LogitsProcessor):
    """NaN -> 0, +inf -> finfo.max, -inf -> finfo.min (the reference's InfNanRemoveLogitsProcessor)."""

    def __call__(self, seqs, scores):
        info = torch.finfo(scores.dtype)
        out = torch.where(scores != scores, 0.0, scores)
        out = torch.where(scores == float("inf"), info.max, out)
        return torch.where(scores == float("-inf"), info.min, out)


class MinLength(LogitsProcessor):
    def __init__(self, min_length: int, eos_token_id: int):
        self.min_length, self.eos = min_length, eos_token_id

    def __call__(self, seqs, scores):
        if seqs.shape[1] < self.min_length:
            scores = scores.clone()
            scores[:, self.eos] = NEG_INF
        return scores


class ForcedToken(LogitsProcessor):
    """Force ``token`` when the sequence has length ``at`` (forced BOS: 1; forced EOS: max_length - 1)."""

    def __init__(self, token: int, at: int):
        self.token, self.at = token, at

    def __call__(self, seqs, scores):
        if seqs.shape[1] == self.at:
            scores = torch.full_like(scores, NEG_INF)
            scores[:, self.token] = 0.0
        return scores


class Temperature(LogitsProcessor):
    def __init__(self, t: float):
        self.t = t

    def __call__(self, seqs, scores):
        return scores / self.t


class TopK(LogitsProcessor):
    def __init__(self, k: int, keep: int = 1):
        self.k = max(k, keep)

    def __call__(self, seqs, scores):
        k = min(self.k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1:]  # (N, 1)
        return scores.masked_fill(scores < kth, NEG_INF)


class TopP(LogitsProcessor):
    def __init__(self, p: float, keep: int = 1):
        self.p, self.keep = p, keep

    def __call__(self, seqs, scores):
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(-1).cumsum(-1)  # (N, V) ascending
        drop = cum <= (1 - self.p)
        drop[..., -self.keep:] = False
        return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)


def build_processors(gen: GenerationConfig) -> list[LogitsProcessor]:
    """The processors ``gen`` asks for, in the reference's order; ``gen`` carries resolved lengths."""
    procs: list[LogitsProcessor] = []
    if gen.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(gen.repetition_penalty))
    if gen.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGram(gen.no_repeat_ngram_size))
    single, longer = bad_word_sequences(gen)
    if single or longer:
        procs.append(BadWords(single, longer))
    if gen.min_length > 0 and gen.eos_token_id is not None:
        procs.append(MinLength(gen.min_length, gen.eos_token_id))
    if gen.forced_bos_token_id is not None:
        procs.append(ForcedToken(gen.forced_bos_token_id, 1))
    if gen.forced_eos_token_id is not None:
        procs.append(ForcedToken(gen.forced_eos_token_id, gen.max_length - 1))
    if gen.remove_invalid_values:
        procs.append(RemoveInvalidValues())
    if gen.do_sample:  # beam sampling keeps a non-eos token besides eos, as the reference
        keep = 2 if gen.num_beams > 1 else 1
        if gen.temperature != 1.0:
            procs.append(Temperature(gen.temperature))
        if gen.top_k:
            procs.append(TopK(gen.top_k, keep))
        if gen.top_p < 1.0:
            procs.append(TopP(gen.top_p, keep))
    return procs


def _apply(procs, seqs, scores):
    for p in procs:
        scores = p(seqs, scores)
    return scores


# ============================================================================ search loops


# Dropping finished rows (eager arg-max and beam search): once enough rows of the batch have finished (an input's
# every beam, for beam search), the loop goes on with the others only: ``keep_rows(cache, rows)`` (from
# ``_generate``) keeps those rows of the cache, the encoder states and the encoder mask. The ids and beam indices
# are the same as without dropping. Sampling keeps every row (fewer rows would change the random stream, and seeded ids
# would no longer be the reference's), and so do per-step outputs (the reference returns every row at every step).
DROP_FINISHED = True
DROP_MIN_FRACTION = 0.125  # drop once this share of the batch (and at least one row) has finished: a choice, not
                           # tuned; bench/bench_torch.py ("rows ending at mixed lengths") measures the effect


def drops_finished(gen: GenerationConfig, cache) -> bool:
    """Whether a search loop with these options drops finished rows."""
    per_step = gen.output_scores or gen.output_logits or gen.output_attentions or gen.output_hidden_states
    return DROP_FINISHED and cache is not None and not gen.do_sample and not per_step


def worth_dropping(rows: int, left: int) -> bool:
    """rows in the batch, left of them unfinished: is a copy of the cache worth it?"""
    return rows - left >= max(1.0, rows * DROP_MIN_FRACTION)


def sample_search(step: StepFn, cache, start: torch.Tensor, gen: GenerationConfig,
                  rng: Optional[torch.Generator] = None, keep_rows: Optional[Callable] = None) -> SearchResult:
    """Arg-max, or sampling when ``gen.do_sample``, continuing start (N, L0); ``rng`` drives sampling.
    ``keep_rows(cache, rows) -> cache`` lets the loop drop finished rows (``drops_finished``)."""
    procs = build_processors(gen)
    n, cur_len = start.shape
    prompt, max_length = cur_len, gen.max_length
    eos, pad = gen.eos_token_id, gen.pad_token_id
    sequences = start.new_full((n, max_length), pad)  # (N, max_length), written in place
    sequences[:, :cur_len] = start
    live = None  # (A,) the rows of sequences still in the batch; None: all N
    unfinished = torch.ones(n, dtype=torch.bool, device=start.device)  # (A,)
    drop = keep_rows is not None and drops_finished(gen, cache)
    scores, step_outputs = [], []
    tokens = start
    stop = False
    while not stop:
        logits, cache, outputs = step(tokens, cache)  # (A, V)
        seqs = sequences[:, :cur_len] if live is None else sequences[live, :cur_len]  # (A, cur_len)
        step_scores = _apply(procs, seqs, logits.float())
        if gen.output_scores:
            scores.append(step_scores)
        if outputs:
            step_outputs.append(outputs)
        if gen.do_sample:
            next_tokens = torch.multinomial(F.softmax(step_scores, dim=-1), 1, generator=rng).squeeze(1)
        else:
            next_tokens = step_scores.argmax(-1)  # (A,)
        if eos is not None:
            next_tokens = torch.where(unfinished, next_tokens, pad)
            unfinished &= next_tokens != eos
        if live is None:
            sequences[:, cur_len] = next_tokens
        else:
            sequences[live, cur_len] = next_tokens
        cur_len += 1
        left = int(unfinished.sum())  # one host synchronisation per step
        stop = cur_len >= max_length or left == 0
        if drop and not stop and worth_dropping(unfinished.shape[0], left):
            rows = unfinished.nonzero().squeeze(1)  # (A',) rows of the batch that go on
            live = rows if live is None else live[rows]
            unfinished = unfinished[rows]
            cache = keep_rows(cache, rows)
        if cache is not None:
            tokens = sequences[:, cur_len - 1:cur_len] if live is None else sequences[live, cur_len - 1:cur_len]
        else:
            tokens = sequences[:, :cur_len]
    return SearchResult(sequences[:, :cur_len], cur_len, cur_len - prompt,
                        scores=tuple(scores) if gen.output_scores else None,
                        step_outputs=tuple(step_outputs) if step_outputs else None)


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather along dim 1: t (B, K, ...), idx (B, J) -> (B, J, ...)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def beam_search(step: StepFn, reorder: Callable, cache, start: torch.Tensor, gen: GenerationConfig,
                rng: Optional[torch.Generator] = None, keep_rows: Optional[Callable] = None) -> SearchResult:
    """Beams continuing start (B * num_beams, L0), beams of one input adjacent. With ``gen.do_sample`` (beam
    sampling) the candidates are drawn without replacement from the softmax of the accumulated scores instead of
    taken as the best, in the order drawn, as the reference. ``keep_rows(cache, rows) -> cache`` lets the loop drop
    the rows of inputs that are done (``drops_finished``)."""
    procs = build_processors(gen)
    num_beams, max_length = gen.num_beams, gen.max_length
    n, prompt = start.shape
    b = n // num_beams
    eos = gen.eos_token_id
    device = start.device
    candidates = num_candidates(num_beams)
    fill = (gen.pad_token_id or eos) if eos is not None else -1
    running = start.new_full((b, num_beams, max_length), fill)  # (B, nb, max_length) running hypotheses
    running[:, :, :prompt] = start.view(b, num_beams, prompt)
    running_scores = torch.zeros((b, num_beams), dtype=torch.float32, device=device)
    running_scores[:, 1:] = BEAM_FILL  # all beams start identical: only the first may expand
    running_beam_indices = torch.full((b, num_beams, max_length - prompt), -1, dtype=torch.long, device=device)
    sequences = running.clone()  # (B, nb, max_length) kept (finished) hypotheses, best first
    beam_scores = torch.full((b, num_beams), BEAM_FILL, dtype=torch.float32, device=device)
    beam_indices = running_beam_indices.clone()  # (B, nb, max_length - L0)
    finished = torch.zeros((b, num_beams), dtype=torch.bool, device=device)
    finished_len = torch.zeros((b, num_beams), dtype=torch.long, device=device)  # generated tokens
    improvable = torch.ones((b, 1), dtype=torch.bool, device=device)
    top_beams = torch.arange(candidates, device=device) < num_beams  # (C,) candidates that may finish
    batch_offset = (torch.arange(b, device=device) * num_beams)[:, None]  # (B, 1) first row of each input
    row_offset = batch_offset  # (K, 1) first row of each input in the batch as it is now (after drops)
    drop = keep_rows is not None and drops_finished(gen, cache)
    live = None  # (K,) the inputs still in the batch (state tensors below are (K, ...)); None: all B
    kept = None  # [sequences, beam_scores, beam_indices, finished_len] of all B inputs, written as inputs leave
    scores, step_outputs = [], []
    cur_len = prompt
    stop = False
    while not stop:
        flat = running[:, :, :cur_len].reshape(n, cur_len)
        tokens = flat[:, -1:] if cache is not None and cur_len > prompt else flat
        logits, cache, outputs = step(tokens, cache)  # (N, V)
        vocab = logits.shape[-1]
        log_probs = _apply(procs, flat, F.log_softmax(logits.float(), dim=-1))  # (N, V)
        if gen.output_scores:
            scores.append(log_probs)
        if outputs:
            step_outputs.append(outputs)
        total = (log_probs.view(b, num_beams, vocab) + running_scores[:, :, None]).view(b, num_beams * vocab)

        # the best `candidates` continuations of all beams (drawn, when sampling)
        if gen.do_sample:
            cand_index = torch.multinomial(F.softmax(total, dim=-1), candidates, generator=rng)  # (B, C)
            cand_scores = total.gather(1, cand_index)
        else:
            cand_scores, cand_index = torch.topk(total, candidates)  # (B, C)
        cand_parent, cand_tokens = cand_index // vocab, cand_index % vocab
        cand_seqs = _take(running, cand_parent)  # (B, C, max_length)
        cand_seqs[:, :, cur_len] = cand_tokens
        cand_beam_indices = _take(running_beam_indices, cand_parent)  # (B, C, max_length - L0)
        cand_beam_indices[:, :, cur_len - prompt] = cand_parent + batch_offset
        ends = cand_tokens == eos if eos is not None else torch.zeros_like(cand_tokens, dtype=torch.bool)
        if cur_len + 1 >= max_length:
            ends = torch.ones_like(ends)

        # the num_beams best candidates that did not end go on
        go_on_scores = cand_scores + ends.to(torch.float32) * BEAM_FILL
        go_on = torch.topk(go_on_scores, num_beams)[1]  # (B, nb)
        running, running_scores = _take(cand_seqs, go_on), _take(go_on_scores, go_on)
        running_beam_indices = _take(cand_beam_indices, go_on)

        # candidates among the top num_beams that ended join the kept hypotheses, scored with their length
        newly_finished = ends & top_beams[None, :]
        normed = cand_scores / length_normalizer(cur_len + 1 - prompt, gen.length_penalty)
        normed += (finished.all(-1, keepdim=True) & (gen.early_stopping is True)).to(torch.float32) * BEAM_FILL
        normed += (~improvable).to(torch.float32) * BEAM_FILL
        normed += (~newly_finished).to(torch.float32) * BEAM_FILL
        merged_scores = torch.cat((beam_scores, normed), dim=1)  # (B, nb + C)
        best = torch.topk(merged_scores, num_beams)[1]  # (B, nb)
        sequences = _take(torch.cat((sequences, cand_seqs), dim=1), best)
        beam_scores = _take(merged_scores, best)
        beam_indices = _take(torch.cat((beam_indices, cand_beam_indices), dim=1), best)
        finished = _take(torch.cat((finished, newly_finished), dim=1), best)
        finished_len = _take(torch.cat((finished_len, torch.full_like(cand_tokens, cur_len + 1 - prompt)), dim=1),
                             best)

        if cache is not None:
            cache = reorder(cache, (_take(cand_parent, go_on) + row_offset).view(-1))
        cur_len += 1
        # can the best running beam still beat the worst kept hypothesis?
        best_running = running_scores[:, :1] / length_normalizer(bound_length(cur_len, prompt, gen),
                                                                 gen.length_penalty)
        worst_kept = torch.where(finished, beam_scores.min(dim=1, keepdim=True)[0], BEAM_FILL)
        improvable = improvable & (best_running > worst_kept).any(-1, keepdim=True)
        closed = ~improvable[:, 0]  # (K,) inputs whose kept hypotheses can no longer change
        if gen.early_stopping is True:
            closed = closed | finished.all(-1)
        left, all_end = torch.stack((b - closed.sum(), ends.all().long())).tolist()  # one host sync per step
        stop = cur_len >= max_length or left == 0 or bool(all_end)
        if drop and not stop and worth_dropping(b, left):
            inputs = torch.arange(b, device=device) if live is None else live
            if kept is None:
                kept = [t.clone() for t in (sequences, beam_scores, beam_indices, finished_len)]
            else:
                gone = closed.nonzero().squeeze(1)
                for whole, t in zip(kept, (sequences, beam_scores, beam_indices, finished_len)):
                    whole[inputs[gone]] = t[gone]
            go = (~closed).nonzero().squeeze(1)  # (K',)
            live, b, n = inputs[go], left, left * num_beams
            running, running_scores, running_beam_indices = running[go], running_scores[go], running_beam_indices[go]
            sequences, beam_scores, beam_indices = sequences[go], beam_scores[go], beam_indices[go]
            finished, finished_len, improvable, batch_offset = finished[go], finished_len[go], improvable[go], \
                batch_offset[go]
            row_offset = (torch.arange(b, device=device) * num_beams)[:, None]
            cache = keep_rows(cache, (go[:, None] * num_beams + torch.arange(num_beams, device=device)).view(-1))
    if kept is not None:  # every input back in its place
        for whole, t in zip(kept, (sequences, beam_scores, beam_indices, finished_len)):
            whole[live] = t
        sequences, beam_scores, beam_indices, finished_len = kept
        b = sequences.shape[0]
    r = gen.num_return_sequences
    generated = int(finished_len[:, :r].max())
    return SearchResult(sequences[:, :r, :prompt + generated].reshape(b * r, prompt + generated), prompt + generated,
                        cur_len - prompt, scores=tuple(scores) if gen.output_scores else None,
                        sequences_scores=beam_scores[:, :r].reshape(-1),
                        beam_indices=beam_indices[:, :r, :generated].reshape(b * r, generated),
                        step_outputs=tuple(step_outputs) if step_outputs else None)


# ============================================================================ model glue


# ====================================================================== diverse (group) beam search
# Diverse (group) beam search for the PyTorch backend, token-identical to the reference's.
#
# transformers 4.57.6 runs it from hub code (``transformers-community/group-beam-search``: the ``_group_beam_search``
# of transformers 4.2x-4.4x on ``BeamSearchScorer(num_beam_groups=...)``). ``num_beams`` beams are split into
# ``num_beam_groups`` groups of ``group_size``, beams of one group adjacent (row ``b * num_beams + g * group_size +
# j``). The rules:
#
# * one network step for all beams; then group by group, in order: the group's log-probabilities through the
#   processors of ``generation.build_processors``, then the diversity penalty, ``diversity_penalty`` times the
#   number of times each token was picked at this step by the earlier groups of the same input (the reference's
#   ``HammingDiversityLogitsProcessor``, which it appends after the other processors);
# * each group is a beam search of its own: ``num_candidates(group_size)`` candidates ranked by summed
#   log-probability; those among the first ``group_size`` that end in EOS become finished hypotheses scored
#   ``sum_logprobs / length_normalizer(generated)`` (the best ``group_size`` kept per group); the first
#   ``group_size`` candidates that did not end go on, in rank order;
# * a group closes when it holds ``group_size`` hypotheses and, with ``early_stopping=True``, at once, otherwise
#   when the best candidate of the step, normalised by ``bound_length``, cannot beat its worst hypothesis. A closed
#   group picks ``pad_token_id`` for its beams (which the later groups' diversity penalty counts, as the reference)
#   and its rows stay where they are (the reference points them at input 0's rows; nothing reads them again);
# * the loop stops when every group of every input is closed, or at ``max_length``; the groups still open then add
#   their running beams as hypotheses scored with the full length, and each input returns its
#   ``num_return_sequences`` best hypotheses over all its groups.
#
# The TF and Flax ``group_beam_search`` are translations of this one (same names, same state).
# ``SearchResult.beam_indices`` is None: the reference's beam indices of group beam search mix up the groups.


def diversity_penalty(picked: torch.Tensor, vocab: int, penalty: float) -> torch.Tensor:
    """picked (B, P): tokens the earlier groups of each input chose at this step -> (B, V) float32 penalty,
    ``penalty`` times each token's count (the reference's Hamming diversity)."""
    return penalty * F.one_hot(picked, vocab).sum(1).to(torch.float32)


def group_beam_search(step: StepFn, reorder: Callable, cache, start: torch.Tensor,
                      gen: GenerationConfig) -> SearchResult:
    """Diverse beam search continuing start (B * num_beams, L0), beams of one input adjacent, groups of one input
    adjacent within them (rules in the module docstring)."""
    procs = build_processors(gen)
    num_beams, groups, max_length, lp = gen.num_beams, gen.num_beam_groups, gen.max_length, gen.length_penalty
    group_size = num_beams // groups
    n, prompt = start.shape
    b = n // num_beams
    eos, pad = gen.eos_token_id, gen.pad_token_id
    device = start.device
    candidates = num_candidates(group_size)
    fill = pad if pad is not None else -1
    running = start.new_full((b, groups, group_size, max_length), fill)  # (B, G, S, max_length)
    running[..., :prompt] = start.view(b, groups, group_size, prompt)
    running_scores = torch.zeros((b, groups, group_size), dtype=torch.float32, device=device)
    running_scores[..., 1:] = BEAM_FILL  # the beams of a group start identical: only the first may expand
    sequences = running.clone()  # (B, G, S, max_length) kept (finished) hypotheses of each group, best first
    beam_scores = torch.full((b, groups, group_size), BEAM_FILL, dtype=torch.float32, device=device)
    finished = torch.zeros((b, groups, group_size), dtype=torch.bool, device=device)
    finished_len = torch.zeros((b, groups, group_size), dtype=torch.long, device=device)  # generated tokens
    closed = torch.zeros((b, groups), dtype=torch.bool, device=device)  # the reference scorer's `_done`
    top_beams = torch.arange(candidates, device=device) < group_size  # (C,) candidates that may finish
    in_place = torch.arange(group_size, device=device)[None, :]  # (1, S) a closed group's parents: itself
    row_offset = (torch.arange(b, device=device)[:, None, None] * num_beams
                  + torch.arange(groups, device=device)[None, :, None] * group_size)  # (B, G, 1)
    scores, step_outputs = [], []
    cur_len = prompt
    stop = False
    while not stop:
        flat = running[..., :cur_len].reshape(n, cur_len)
        tokens = flat[:, -1:] if cache is not None and cur_len > prompt else flat
        logits, cache, outputs = step(tokens, cache)  # (N, V)
        vocab = logits.shape[-1]
        log_probs = F.log_softmax(logits.float(), dim=-1).view(b, groups, group_size, vocab)
        if outputs:
            step_outputs.append(outputs)
        step_scores = torch.empty_like(log_probs)  # (B, G, S, V) processed scores
        picked = start.new_empty((b, groups, group_size))  # tokens chosen at this step
        parents = start.new_empty((b, groups, group_size))  # beam of the group each beam continues
        for g in range(groups):
            group_scores = _apply(procs, running[:, g, :, :cur_len].reshape(b * group_size, cur_len),
                                  log_probs[:, g].reshape(b * group_size, vocab)).view(b, group_size, vocab)
            if g > 0:
                group_scores = group_scores - diversity_penalty(picked[:, :g].reshape(b, -1), vocab,
                                                                gen.diversity_penalty)[:, None, :]
            step_scores[:, g] = group_scores
            total = (group_scores + running_scores[:, g, :, None]).view(b, group_size * vocab)
            cand_scores, cand_index = torch.topk(total, candidates)  # (B, C)
            cand_parent, cand_tokens = cand_index // vocab, cand_index % vocab
            cand_seqs = _take(running[:, g], cand_parent)  # (B, C, max_length)
            cand_seqs[:, :, cur_len] = cand_tokens
            ends = cand_tokens == eos if eos is not None else torch.zeros_like(cand_tokens, dtype=torch.bool)
            was_closed = closed[:, g, None]  # (B, 1)

            # the first group_size candidates that did not end go on, in rank order
            go_on = torch.sort(ends.to(torch.uint8), dim=1, stable=True)[1][:, :group_size]  # (B, S)
            parent = torch.where(was_closed, in_place, _take(cand_parent, go_on))
            next_tokens = torch.where(was_closed, fill, _take(cand_tokens, go_on))
            running[:, g] = _take(running[:, g], parent)
            running[:, g, :, cur_len] = next_tokens
            running_scores[:, g] = torch.where(was_closed, 0.0, _take(cand_scores, go_on))
            picked[:, g], parents[:, g] = next_tokens, parent

            # candidates among the first group_size that ended join the group's hypotheses
            newly_finished = ends & top_beams[None, :] & ~was_closed
            normed = torch.where(newly_finished, cand_scores / length_normalizer(cur_len + 1 - prompt, lp), NEG_INF)
            merged_scores = torch.cat((beam_scores[:, g], normed), dim=1)  # (B, S + C)
            best = torch.topk(merged_scores, group_size)[1]  # (B, S)
            sequences[:, g] = _take(torch.cat((sequences[:, g], cand_seqs), dim=1), best)
            beam_scores[:, g] = _take(merged_scores, best)
            finished[:, g] = _take(torch.cat((finished[:, g], newly_finished), dim=1), best)
            cand_len = torch.full_like(cand_tokens, cur_len + 1 - prompt)
            finished_len[:, g] = _take(torch.cat((finished_len[:, g], cand_len), dim=1), best)

            # the group closes once full, if its best candidate cannot beat its worst hypothesis
            full = finished[:, g].all(-1)  # (B,)
            if gen.early_stopping is not True:
                best_possible = cand_scores[:, 0] / length_normalizer(bound_length(cur_len + 1, prompt, gen), lp)
                full &= beam_scores[:, g].min(-1)[0] >= best_possible
            closed[:, g] |= full
        if gen.output_scores:
            scores.append(step_scores.view(n, vocab))
        if cache is not None:
            cache = reorder(cache, (parents + row_offset).view(-1))
        cur_len += 1
        stop = cur_len >= max_length or bool(closed.all())

    # the groups still open add their running beams, scored with the full length; each group keeps group_size
    normed = torch.where(closed[..., None], NEG_INF, running_scores / length_normalizer(cur_len - prompt, lp))
    merged_scores = torch.cat((beam_scores, normed), dim=2).view(b * groups, 2 * group_size)
    best = torch.topk(merged_scores, group_size)[1]  # (B * G, S)
    pool_scores = _take(merged_scores, best).view(b, num_beams)
    pool = _take(torch.cat((sequences, running), dim=2).view(b * groups, 2 * group_size, max_length),
                 best).view(b, num_beams, max_length)
    pool_len = _take(torch.cat((finished_len, torch.full_like(finished_len, cur_len - prompt)), dim=2)
                     .view(b * groups, 2 * group_size), best).view(b, num_beams)
    r = gen.num_return_sequences
    top = torch.topk(pool_scores, r)[1]  # (B, r) the best hypotheses over all groups
    generated = int(_take(pool_len, top).max())
    return SearchResult(_take(pool, top)[:, :, :prompt + generated].reshape(b * r, prompt + generated),
                        prompt + generated, cur_len - prompt, scores=tuple(scores) if gen.output_scores else None,
                        sequences_scores=_take(pool_scores, top).reshape(-1),
                        step_outputs=tuple(step_outputs) if step_outputs else None)


def _to_tensor(x, device, dtype=torch.long):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.to(device)
    x = np.asarray(x)  # non-integer values keep their dtype, so the input check refuses them rather than truncate
    return torch.as_tensor(x, dtype=dtype if x.dtype.kind in "iub" else None, device=device)


def generate(model, input_ids=None, attention_mask=None, generator: Optional[torch.Generator] = None,
             inference_mode: bool = True, encoder_outputs=None, generation_config=None, inputs_embeds=None,
             decoder_input_ids=None, **options):
    """Generate with ``model`` (``BartForConditionalGeneration`` or ``BartForCausalLM``).

    ``options`` are ``GenerationConfig`` fields; they override ``generation_config``, which overrides
    ``model.generation_config`` (``bart_core.generation.resolve_generation_config``). As the reference, a
    ``max_length`` left at 20 (neither ``max_length`` nor ``max_new_tokens`` given) means 20 tokens after the
    prompt (start token), capped at ``max_position_embeddings``. ``generator`` (or ``seed``)
    drives sampling. ``inference_mode`` runs under ``torch.inference_mode()`` (no autograd bookkeeping).
    Returns ids ``(B * num_return_sequences, L)``, or ``GenerateOutput`` with ``return_dict_in_generate=True``.

    As the reference: no ``input_ids`` (nor ``inputs_embeds`` / ``encoder_outputs``) means one input made of
    ``bos_token_id``; ``inputs_embeds`` (B, S, D) feed the encoder instead of ids; ``decoder_input_ids`` (B, T)
    is the decoder sequence to continue (the start token is put in front when no row begins with it) and the
    lengths count it; ``output_attentions`` / ``output_hidden_states`` / ``output_logits`` fill the matching
    ``GenerateOutput`` fields (with ``return_dict_in_generate=True``).
    """
    gen = resolve_generation_config(getattr(model, "generation_config", None), generation_config, options,
                                    model.config)
    ctx = torch.inference_mode() if inference_mode else torch.no_grad()
    with ctx, kernels.threads_for_load(enabled=kernels.kernel_of(model) != "aten"):
        return _generate(model, input_ids, attention_mask, gen, generator, encoder_outputs,
                         max_length_given=options.get("max_length") is not None, inputs_embeds=inputs_embeds,
                         decoder_input_ids=decoder_input_ids)


def _generate(model, input_ids, attention_mask, gen: GenerationConfig, generator, encoder_outputs,
              max_length_given: bool, inputs_embeds=None, decoder_input_ids=None):
    config = model.config
    causal = model.head == "causal_lm"
    device = model.get_input_embeddings().weight.device
    input_ids = _to_tensor(input_ids, device)
    attention_mask = _to_tensor(attention_mask, device)
    bos = check_generate_source(gen, causal, input_ids is not None, inputs_embeds is not None,
                                encoder_outputs is not None)
    if inputs_embeds is not None:
        if encoder_outputs is None:
            inputs_embeds = torch.as_tensor(inputs_embeds, device=device)
            encoder_outputs = model.model.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                                  output_attentions=gen.output_attentions,
                                                  output_hidden_states=gen.output_hidden_states)
    if bos is not None and encoder_outputs is None:  # as the reference: one input of bos_token_id
        input_ids = torch.full((1, 1), bos, dtype=torch.long, device=device)
    if input_ids is not None:
        if input_ids.dim() == 1:  # one unbatched prompt (and its mask)
            input_ids = input_ids[None]
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
    model._check_generate_inputs(input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs)
    if attention_mask is None and input_ids is not None:
        attention_mask = infer_attention_mask(input_ids, gen.pad_token_id, gen.eos_token_id)  # (B, S) or None
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing padded: the encoder's unmasked path
    if gen.seed is not None and generator is None and gen.do_sample:
        generator = torch.Generator(device=device).manual_seed(gen.seed)
    expand = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
    dtype = model.get_input_embeddings().weight.dtype
    decoder = model.get_decoder()

    if causal:
        if decoder_input_ids is not None:
            raise ValueError("BartForCausalLM.generate has no decoder_input_ids: the prompt is input_ids")
        check_unpadded_prompt(input_ids.cpu().numpy(), None if attention_mask is None else
                              attention_mask.cpu().numpy(), gen.pad_token_id, gen.eos_token_id)
        start = input_ids.repeat_interleave(expand, dim=0)  # (N, L0)
        enc_hidden = enc_mask = None
    else:
        if encoder_outputs is None:
            encoder_outputs = encode_packed(  # padded positions skipped: cross-attention masks them
                model.model.encoder, input_ids, attention_mask, gen.output_attentions, gen.output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0] if isinstance(
                encoder_outputs, (tuple, list)) else encoder_outputs)
        # one encoder row per hypothesis (as the reference): each has its own cross keys/values, never reordered
        enc_hidden = encoder_outputs.last_hidden_state.repeat_interleave(expand, dim=0)  # (N, S, D)
        enc_mask = None if attention_mask is None else attention_mask.repeat_interleave(expand, dim=0)
        if enc_mask is not None and bool(enc_mask.bool().all()):
            enc_mask = None  # nothing padded: decided once here rather than at every step
        if decoder_input_ids is None:
            start = torch.full((enc_hidden.shape[0], 1), gen.decoder_start_token_id, dtype=torch.long,
                               device=device)
        else:  # (B, T) prefix to continue -> (N, T')
            prefix = decoder_prompt(_to_tensor(decoder_input_ids, "cpu").numpy(), gen.decoder_start_token_id)
            if prefix.shape[0] * expand != enc_hidden.shape[0]:
                raise ValueError(f"decoder_input_ids has {prefix.shape[0]} rows for "
                                 f"{enc_hidden.shape[0] // expand} inputs")
            start = torch.as_tensor(prefix, dtype=torch.long, device=device).repeat_interleave(expand, dim=0)

    gen = resolve_lengths(gen, start.shape[1], max_length_given, config.max_position_embeddings)

    def step(tokens: torch.Tensor, cache):
        """tokens: (N, t) -> (logits (N, V) of the last position, cache, the per-step outputs asked for)."""
        out = decoder(input_ids=tokens, encoder_hidden_states=enc_hidden if cache is None or
                      cache.cross_k[0] is None else None, encoder_attention_mask=enc_mask, past_key_values=cache,
                      use_cache=cache is not None, check_inputs=False, output_attentions=gen.output_attentions,
                      output_hidden_states=gen.output_hidden_states)
        logits = model.logits(out.last_hidden_state[:, -1, :])
        outputs = {}
        if gen.output_logits:
            outputs["logits"] = logits.float()
        if gen.output_attentions:
            outputs["self_attentions"], outputs["cross_attentions"] = out.attentions, out.cross_attentions
        if gen.output_hidden_states:
            outputs["hidden_states"] = out.hidden_states
        return logits, out.past_key_values, outputs

    def keep_rows(cache, rows: torch.Tensor):
        """Finished rows dropped: only the batch rows ``rows`` (K,) go on, in the cache and the encoder rows."""
        nonlocal enc_hidden, enc_mask
        if enc_hidden is not None:  # read again only while the cross keys/values are not computed
            enc_hidden = None if cache.cross_k[0] is not None else enc_hidden.index_select(0, rows)
        if enc_mask is not None:
            enc_mask = enc_mask.index_select(0, rows)
        return select_rows(cache, rows)

    cache = KVCache.allocate(config, start.shape[0], gen.max_length - 1, device, dtype) if gen.use_cache else None
    if gen.num_beams > 1 and gen.num_beam_groups > 1:
        result = group_beam_search(step, reorder_cache, cache, start, gen)
    elif gen.num_beams > 1:
        result = beam_search(step, reorder_cache, cache, start, gen, generator, keep_rows)
    else:
        result = sample_search(step, cache, start, gen, generator, keep_rows)
    if not gen.return_dict_in_generate:
        return result.sequences
    out = GenerateOutput(sequences=result.sequences, scores=result.scores, beam_indices=result.beam_indices,
                         sequences_scores=result.sequences_scores if gen.output_scores else None)
    steps = result.step_outputs or ()
    if gen.output_logits:
        out.logits = tuple(o["logits"] for o in steps)
    attentions = tuple(o["self_attentions"] for o in steps) if gen.output_attentions else None
    hidden_states = tuple(o["hidden_states"] for o in steps) if gen.output_hidden_states else None
    if causal:
        out.attentions, out.hidden_states = attentions, hidden_states
    else:
        out.decoder_attentions, out.decoder_hidden_states = attentions, hidden_states
        if gen.output_attentions:
            out.cross_attentions = tuple(o["cross_attentions"] for o in steps)
            out.encoder_attentions = encoder_outputs.attentions
        if gen.output_hidden_states:
            out.encoder_hidden_states = encoder_outputs.hidden_states
    return out
