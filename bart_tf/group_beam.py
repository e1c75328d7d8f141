"""Diverse (group) beam search for the TensorFlow backend, token-identical to the reference's.

A translation of ``bart_torch.group_beam`` (rules in its docstring: the reference's group beam search, groups of
``group_size`` beams that each run a beam search of their own, the later groups of a step penalised for the
tokens the earlier ones picked). Static shapes, as ``generation.beam_search``: state buffers of ``max_length``
columns, the groups a Python loop unrolled in the ``tf.while_loop`` body, so the same code runs eagerly, as a
graph and under XLA. ``SearchResult.beam_indices`` is None (the reference's group beam indices mix up the groups).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from bart_core.generation import (
    BEAM_FILL,
    GenerationConfig,
    SearchResult,
    bound_length,
    length_normalizers,
    num_candidates,
)
from bart_tf.generation import (
    NEG_INF,
    _column,
    _initial_sequences,
    _prompt_length,
    _record,
    _stack,
    _write_column,
    process_scores,
)


def diversity_penalty(picked, vocab: int, penalty: float):
    """picked (B, P): tokens the earlier groups of each input chose at this step -> (B, V) float32 penalty,
    ``penalty`` times each token's count (the reference's Hamming diversity)."""
    return np.float32(penalty) * tf.reduce_sum(tf.one_hot(picked, vocab, dtype=tf.float32), axis=1)


def group_beam_search(step: Callable, reorder: Callable, cache, start, gen: GenerationConfig,
                      step_buffers=None) -> SearchResult:
    """Diverse beam search continuing start (B * num_beams, L0), beams of one input adjacent, groups of one input
    adjacent within them; the cache holds positions 0..L0-2. ``step_buffers`` as ``generation.beam_search``."""
    num_beams, groups, max_length = gen.num_beams, gen.num_beam_groups, gen.total_max_length
    group_size = num_beams // groups
    prompt = _prompt_length(start)
    b = tf.shape(start)[0] // num_beams
    candidates = num_candidates(group_size)
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    fill = gen.pad_token_id if gen.pad_token_id is not None else -1
    normalizers = tf.constant(length_normalizers(max_length - prompt, gen.length_penalty))    # (L - L0 + 1,)

    running = tf.reshape(_initial_sequences(start, max_length, fill), [b, groups, group_size, max_length])
    first_beam = tf.concat([[0.0], tf.fill([group_size - 1], BEAM_FILL)], 0)            # only it may expand
    state = dict(
        running=running, running_scores=tf.tile(first_beam[None, None], [b, groups, 1]),  # (B, G, S)
        sequences=running, beam_scores=tf.fill([b, groups, group_size], BEAM_FILL),      # kept, best first
        finished=tf.zeros([b, groups, group_size], tf.bool),
        finished_len=tf.zeros([b, groups, group_size], tf.int32),                        # generated tokens
        closed=tf.zeros([b, groups], tf.bool), stop=tf.constant(False),                  # the scorer's `_done`
    )
    scores = tf.TensorArray(tf.float32, size=max_length - prompt)
    top_beams = tf.range(candidates) < group_size                                      # (C,) may finish
    in_place = tf.range(group_size)[None, :]                                           # (1, S)
    row_offset = (tf.range(b)[:, None, None] * num_beams
                  + tf.range(groups)[None, :, None] * group_size)                      # (B, G, 1)
    step_buffers = step_buffers or {}

    def body(cur_len, s, cache, scores, step_buffers):
        flat = tf.reshape(s["running"], [b * num_beams, max_length])
        logits, cache, outputs = step(_column(flat, cur_len), cache)                   # (N, V)
        vocab_size = logits.shape[-1]
        log_probs = tf.reshape(tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1),
                               [b, groups, group_size, vocab_size])
        step_buffers = _record(step_buffers, cur_len - prompt, outputs)
        new = {k: [] for k in ("step_scores", "picked", "parents", "running", "running_scores", "sequences",
                               "beam_scores", "finished", "finished_len", "closed")}
        for g in range(groups):
            group_running = s["running"][:, g]                                           # (B, S, L)
            group_scores = process_scores(tf.reshape(log_probs[:, g], [b * group_size, vocab_size]),
                                          tf.reshape(group_running, [b * group_size, max_length]), cur_len, gen,
                                          max_length)
            group_scores = tf.reshape(group_scores, [b, group_size, vocab_size])
            if g > 0:
                picked = tf.reshape(tf.stack(new["picked"], axis=1), [b, g * group_size])
                group_scores -= diversity_penalty(picked, vocab_size, gen.diversity_penalty)[:, None, :]
            new["step_scores"].append(group_scores)
            total = tf.reshape(group_scores + s["running_scores"][:, g, :, None], [b, group_size * vocab_size])
            cand_scores, cand_index = tf.math.top_k(total, candidates)                  # (B, C)
            cand_parent, cand_tokens = cand_index // vocab_size, cand_index % vocab_size
            cand_seqs = _write_column(tf.gather(group_running, cand_parent, batch_dims=1), cur_len, cand_tokens)
            ends = cand_tokens == eos                                                    # (B, C)
            was_closed = s["closed"][:, g, None]                                         # (B, 1)

            # the first group_size candidates that did not end go on, in rank order
            go_on = tf.argsort(tf.cast(ends, tf.int32), axis=1, stable=True)[:, :group_size]  # (B, S)
            parent = tf.where(was_closed, in_place, tf.gather(cand_parent, go_on, batch_dims=1))
            next_tokens = tf.where(was_closed, fill, tf.gather(cand_tokens, go_on, batch_dims=1))
            new["running"].append(_write_column(tf.gather(group_running, parent, batch_dims=1), cur_len,
                                                next_tokens))
            new["running_scores"].append(tf.where(was_closed, 0.0, tf.gather(cand_scores, go_on, batch_dims=1)))
            new["picked"].append(next_tokens)
            new["parents"].append(parent)

            # candidates among the first group_size that ended join the group's hypotheses
            newly_finished = ends & top_beams[None] & ~was_closed
            normed = tf.where(newly_finished, cand_scores / tf.gather(normalizers, cur_len + 1 - prompt), NEG_INF)
            merged_scores = tf.concat([s["beam_scores"][:, g], normed], axis=1)        # (B, S + C)
            best = tf.math.top_k(merged_scores, group_size).indices                     # (B, S)
            beam_scores = tf.gather(merged_scores, best, batch_dims=1)
            finished = tf.gather(tf.concat([s["finished"][:, g], newly_finished], 1), best, batch_dims=1)
            new["sequences"].append(tf.gather(tf.concat([s["sequences"][:, g], cand_seqs], 1), best, batch_dims=1))
            new["beam_scores"].append(beam_scores)
            new["finished"].append(finished)
            new["finished_len"].append(tf.gather(tf.concat(
                [s["finished_len"][:, g], tf.fill([b, candidates], cur_len + 1 - prompt)], 1), best, batch_dims=1))

            # the group closes once full, if its best candidate cannot beat its worst hypothesis
            full = tf.reduce_all(finished, axis=-1)                                     # (B,)
            if gen.early_stopping is not True:
                best_possible = cand_scores[:, 0] / tf.gather(normalizers, bound_length(cur_len + 1, prompt, gen))
                full &= tf.reduce_min(beam_scores, axis=-1) >= best_possible
            new["closed"].append(s["closed"][:, g] | full)
        new = {k: tf.stack(v, axis=1) for k, v in new.items()}                         # (B, G, ...)
        if gen.output_scores:
            scores = scores.write(cur_len - prompt, tf.reshape(new["step_scores"], [b * num_beams, vocab_size]))
        cache = reorder(cache, tf.reshape(new["parents"] + row_offset, [-1]))
        s = {k: new[k] for k in state if k != "stop"}
        s["stop"] = tf.reduce_all(s["closed"])
        return cur_len + 1, s, cache, scores, step_buffers

    def cond(cur_len, s, cache, scores, step_buffers):
        return (cur_len < max_length) & ~s["stop"]

    cur_len, s, _, scores, step_buffers = tf.while_loop(
        cond, body, (tf.constant(prompt), state, cache, scores, step_buffers), maximum_iterations=max_length - prompt)

    # the groups still open add their running beams, scored with the full length; each group keeps group_size
    normed = tf.where(s["closed"][..., None], NEG_INF,
                      s["running_scores"] / tf.gather(normalizers, cur_len - prompt))
    merged_scores = tf.reshape(tf.concat([s["beam_scores"], normed], 2), [b * groups, 2 * group_size])
    best = tf.math.top_k(merged_scores, group_size).indices                            # (B * G, S)
    pool_scores = tf.reshape(tf.gather(merged_scores, best, batch_dims=1), [b, num_beams])
    pool = tf.reshape(tf.gather(tf.reshape(tf.concat([s["sequences"], s["running"]], 2),
                                           [b * groups, 2 * group_size, max_length]), best, batch_dims=1),
                      [b, num_beams, max_length])
    pool_len = tf.reshape(tf.gather(tf.reshape(tf.concat(
        [s["finished_len"], tf.fill([b, groups, group_size], cur_len - prompt)], 2), [b * groups, 2 * group_size]),
        best, batch_dims=1), [b, num_beams])
    r = gen.num_return_sequences
    top = tf.math.top_k(pool_scores, r).indices                                        # (B, r) over all groups
    return SearchResult(tf.reshape(tf.gather(pool, top, batch_dims=1), [b * r, max_length]),
                        prompt + tf.reduce_max(tf.gather(pool_len, top, batch_dims=1)), cur_len - prompt,
                        scores=scores.stack() if gen.output_scores else None,
                        sequences_scores=tf.reshape(tf.gather(pool_scores, top, batch_dims=1), [-1]),
                        step_outputs=_stack(step_buffers))
