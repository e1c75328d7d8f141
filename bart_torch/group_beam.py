"""Diverse (group) beam search for the PyTorch backend, token-identical to the reference's.

transformers 4.57.6 runs it from hub code (``transformers-community/group-beam-search``: the ``_group_beam_search``
of transformers 4.2x-4.4x on ``BeamSearchScorer(num_beam_groups=...)``). ``num_beams`` beams are split into
``num_beam_groups`` groups of ``group_size``, beams of one group adjacent (row ``b * num_beams + g * group_size +
j``). The rules:

* one network step for all beams; then group by group, in order: the group's log-probabilities through the
  processors of ``generation.build_processors``, then the diversity penalty, ``diversity_penalty`` times the
  number of times each token was picked at this step by the earlier groups of the same input (the reference's
  ``HammingDiversityLogitsProcessor``, which it appends after the other processors);
* each group is a beam search of its own: ``num_candidates(group_size)`` candidates ranked by summed
  log-probability; those among the first ``group_size`` that end in EOS become finished hypotheses scored
  ``sum_logprobs / length_normalizer(generated)`` (the best ``group_size`` kept per group); the first
  ``group_size`` candidates that did not end go on, in rank order;
* a group closes when it holds ``group_size`` hypotheses and, with ``early_stopping=True``, at once, otherwise
  when the best candidate of the step, normalised by ``bound_length``, cannot beat its worst hypothesis. A closed
  group picks ``pad_token_id`` for its beams (which the later groups' diversity penalty counts, as the reference)
  and its rows stay where they are (the reference points them at input 0's rows; nothing reads them again);
* the loop stops when every group of every input is closed, or at ``max_length``; the groups still open then add
  their running beams as hypotheses scored with the full length, and each input returns its
  ``num_return_sequences`` best hypotheses over all its groups.

``bart_tf.group_beam`` and ``bart_flax.group_beam`` are translations of this module (same names, same state).
``SearchResult.beam_indices`` is None: the reference's beam indices of group beam search mix up the groups.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from bart_core.generation import (
    BEAM_FILL,
    GenerationConfig,
    SearchResult,
    bound_length,
    length_normalizer,
    num_candidates,
)
from bart_torch.generation import NEG_INF, StepFn, _apply, _take, build_processors


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
