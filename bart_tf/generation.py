"""Decoding for the TensorFlow backend: ``sample_search`` (arg-max and sampling) and ``beam_search`` over a step function.

The loops know nothing of the network beyond ``step(tokens (N, T), cache) -> (logits (N, V) float32, cache,
outputs)`` (logits of the last position; ``cache`` the self-attention part of ``bart_tf.cache.KVCache``;
``outputs`` the per-step network outputs asked for, a dict) and, for beam search, ``reorder(cache, rows) -> cache``
(``bart_tf.cache.reorder_cache``). They continue a ``start`` sequence ``(N, L0)``: the decoder start token for the
encoder-decoder, the prompt for the decoder-only model, whose first ``L0 - 1`` tokens are already in the cache;
``max_length`` and ``min_length`` count the whole sequence, start included. The three backends' ``generation.py``
are translations of one another (same loops, state names and ``bart_core.generation.SearchResult``; the
framework-free numbers in ``bart_core.generation``; the vocabulary in ``docs/design.md``, "Decoding"); this module
imports nothing from ``modeling`` (the model provides its encoder, decoder, ``lm_logits`` and
``_check_generate_inputs``).

Every shape is static (sequences live in a preallocated ``(N, max_length)`` buffer, the KV cache is preallocated,
per-step outputs go to ``tf.TensorArray``s, the loop is a ``tf.while_loop``), so the same code runs eagerly and
inside ``tf.function(jit_compile=True)``. Under ``tf.function`` the result cannot be cropped: ``sequences`` keeps
the full ``max_length`` columns (pad after the end) and ``SearchResult.length`` says how many are used;
``model.generate`` crops when it runs eagerly.
"""

from __future__ import annotations

import weakref
from typing import Callable

import numpy as np
import tensorflow as tf

from bart_core.generation import (
    BEAM_FILL,
    GenerationConfig,
    SearchResult,
    bad_word_sequences,
    bound_length,
    check_generate_source,
    crop_result,
    decoder_prompt,
    generate_output,
    length_normalizers,
    network_step_outputs,
    num_candidates,
    resolve_generation_config,
    resolve_lengths,
)
from bart_core.inputs import check_unpadded_prompt, infer_attention_mask
from bart_tf import kernels
from bart_tf.cache import reorder_cache, split_cache

NEG_INF = float("-inf")


# ============================================================ logits processors
def _scatter_flags(ids, flags, vocab_size: int):
    """(N, L) token ids and (N, L) bool -> (N, V) bool: token v is flagged if some flagged position holds it."""
    n = tf.shape(ids)[0]
    rows = tf.broadcast_to(tf.range(n)[:, None], tf.shape(ids))
    index = tf.stack([rows, ids], axis=-1)                                    # (N, L, 2)
    hit = tf.tensor_scatter_nd_max(tf.zeros([n, vocab_size], tf.int32), index, tf.cast(flags, tf.int32))
    return hit > 0


def banned_ngram_mask(seqs, cur_len, ngram_size: int, vocab_size: int):
    """(N, V) bool: tokens that would repeat an n-gram of ``seqs[:, :cur_len]`` (static shapes, XLA-safe)."""
    length = seqs.shape[1]
    n = ngram_size
    starts = length - n + 1                                                  # candidate n-gram starts j
    if starts <= 0:
        return tf.zeros([tf.shape(seqs)[0], vocab_size], tf.bool)
    match = tf.ones([tf.shape(seqs)[0], starts], tf.bool)
    for k in range(n - 1):  # the n-gram's k-th token equals the k-th token of the current (n-1)-suffix
        suffix_tok = tf.gather(seqs, tf.maximum(cur_len - n + 1 + k, 0)[None], axis=1)   # (N, 1)
        match &= seqs[:, k:k + starts] == suffix_tok
    match &= (tf.range(starts) <= cur_len - n)[None, :]                      # n-gram fully inside the prefix
    return _scatter_flags(seqs[:, n - 1:], match, vocab_size)


def bad_words_mask(seqs, cur_len, single: tuple, longer: tuple, vocab_size: int):
    """(N, V) bool: ``single`` tokens, and the last token of each ``longer`` sequence whose other tokens end
    ``seqs[:, :cur_len]`` (``bart_core.generation.bad_word_sequences``)."""
    vocab = tf.range(vocab_size)[None, :]
    banned = tf.zeros([tf.shape(seqs)[0], vocab_size], tf.bool)
    for token in single:
        banned |= vocab == token
    for word in longer:
        k = len(word) - 1
        hit = tf.fill([tf.shape(seqs)[0]], cur_len >= k + 1)                               # (N,)
        for i, token in enumerate(word[:-1]):  # position cur_len - k + i holds word[i]
            hit &= tf.gather(seqs, tf.maximum(cur_len - k + i, 0), axis=1) == token
        banned |= hit[:, None] & (vocab == word[-1])
    return banned


def remove_invalid_values(scores):
    """NaN -> 0, +inf -> finfo.max, -inf -> finfo.min (the reference's InfNanRemoveLogitsProcessor)."""
    info = np.finfo(np.float32)
    out = tf.where(tf.math.is_nan(scores), 0.0, scores)
    return tf.where(scores == np.inf, info.max, tf.where(scores == -np.inf, info.min, out))


def process_scores(scores, seqs, cur_len, gen: GenerationConfig, max_length: int):
    """The reference's processors, in its order. scores (N, V) float32, seqs (N, L) with cur_len filled."""
    vocab_size = scores.shape[-1]
    vocab = tf.range(vocab_size)[None, :]
    if gen.repetition_penalty != 1.0:
        present = _scatter_flags(seqs, tf.broadcast_to(tf.range(seqs.shape[1])[None] < cur_len, tf.shape(seqs)),
                                 vocab_size)
        p = gen.repetition_penalty
        scores = tf.where(present, tf.where(scores < 0, scores * p, scores / p), scores)
    if gen.no_repeat_ngram_size > 0:
        scores = tf.where(banned_ngram_mask(seqs, cur_len, gen.no_repeat_ngram_size, vocab_size), NEG_INF, scores)
    single, longer = bad_word_sequences(gen)
    if single or longer:
        scores = tf.where(bad_words_mask(seqs, cur_len, single, longer, vocab_size), NEG_INF, scores)
    if gen.eos_token_id is not None and gen.total_min_length > 0:
        scores = tf.where((vocab == gen.eos_token_id) & (cur_len < gen.total_min_length), NEG_INF, scores)
    if gen.forced_bos_token_id is not None:
        forced = tf.where(vocab == gen.forced_bos_token_id, 0.0, NEG_INF)
        scores = tf.where(cur_len == 1, tf.broadcast_to(forced, tf.shape(scores)), scores)
    if gen.forced_eos_token_id is not None:
        forced = tf.where(vocab == gen.forced_eos_token_id, 0.0, NEG_INF)
        scores = tf.where(cur_len == max_length - 1, tf.broadcast_to(forced, tf.shape(scores)), scores)
    if gen.remove_invalid_values:
        scores = remove_invalid_values(scores)
    return scores


def warp_for_sampling(scores, gen: GenerationConfig, min_tokens_to_keep: int = 1):
    """Temperature, top-k, top-p (the reference's warpers) on (N, V) float32 scores."""
    vocab_size = scores.shape[-1]
    if gen.temperature != 1.0:
        scores = scores / gen.temperature
    if gen.top_k:
        k = min(max(gen.top_k, min_tokens_to_keep), vocab_size)
        kth = tf.math.top_k(scores, k).values[:, -1:]
        scores = tf.where(scores < kth, NEG_INF, scores)
    if gen.top_p < 1.0:
        order = tf.argsort(scores, axis=-1, direction="ASCENDING", stable=True)        # (N, V)
        cumulative = tf.cumsum(tf.nn.softmax(tf.gather(scores, order, batch_dims=1)), axis=-1)
        remove = (cumulative <= 1 - gen.top_p) & (tf.range(vocab_size)[None] < vocab_size - min_tokens_to_keep)
        remove = tf.gather(remove, tf.argsort(order, axis=-1, stable=True), batch_dims=1)  # back to vocab order
        scores = tf.where(remove, NEG_INF, scores)
    return scores


# ============================================================ search loops
def _initial_sequences(start, max_length: int, fill: int):
    """(N, L0) -> (N, max_length): the start sequence, then ``fill``."""
    return tf.concat([start, tf.fill([tf.shape(start)[0], max_length - start.shape[1]], fill)], axis=1)


def _prompt_length(start) -> int:
    if start.shape[1] is None:
        raise ValueError("generate needs a start sequence of static length (the sequence buffer and the KV cache "
                         "are preallocated); trace with a fixed prompt length")
    return start.shape[1]


def _column(seqs, cur_len):  # (N, L) -> (N, 1): the token at position cur_len - 1
    return tf.gather(seqs, (cur_len - 1)[None], axis=1)


def _write_column(seqs, cur_len, tokens):  # seqs (..., L), tokens (...) -> seqs with column cur_len set
    at = tf.range(seqs.shape[-1]) == cur_len
    return tf.where(at, tokens[..., None], seqs)


def _record(buffers, i, outputs):
    """Write one step's outputs (a structure of tensors) at step ``i`` of ``buffers`` (the same structure of
    ``tf.TensorArray``)."""
    return tf.nest.map_structure(lambda ta, x: ta.write(i, x), buffers, outputs)


def _stack(buffers):
    return tf.nest.map_structure(lambda ta: ta.stack(), buffers) if buffers else None


def sample_search(step: Callable, cache, start, gen: GenerationConfig, rng=None,
                  step_buffers=None) -> SearchResult:
    """Arg-max, or sampling when ``gen.do_sample``, continuing start (N, L0); the cache holds positions 0..L0-2.
    ``rng``: int32 (2,) seed of the stateless draws. ``step_buffers``: ``tf.TensorArray``s shaped like the step's
    ``outputs`` (a ``tf.while_loop`` needs its state before the first step)."""
    max_length, prompt = gen.total_max_length, _prompt_length(start)
    sequences = _initial_sequences(start, max_length, gen.pad_token_id)                     # (N, L)
    unfinished = tf.ones([tf.shape(start)[0]], tf.bool)                                      # (N,)
    scores = tf.TensorArray(tf.float32, size=max_length - prompt)
    rng = tf.zeros([2], tf.int32) if rng is None else tf.cast(rng, tf.int32)
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    step_buffers = step_buffers or {}

    def body(cur_len, sequences, unfinished, stop, cache, scores, step_buffers):
        logits, cache, outputs = step(_column(sequences, cur_len), cache)                   # (N, V)
        step_scores = process_scores(tf.cast(logits, tf.float32), sequences, cur_len, gen, max_length)
        if gen.output_scores:
            scores = scores.write(cur_len - prompt, step_scores)
        step_buffers = _record(step_buffers, cur_len - prompt, outputs)
        if gen.do_sample:
            next_tokens = tf.random.stateless_categorical(warp_for_sampling(step_scores, gen), 1,
                                                          tf.stack([rng[0], rng[1] + cur_len]), dtype=tf.int32)[:, 0]
        else:
            next_tokens = tf.argmax(step_scores, axis=-1, output_type=tf.int32)                # (N,)
        next_tokens = tf.where(unfinished, next_tokens, gen.pad_token_id)
        unfinished = unfinished & (next_tokens != eos)
        sequences = _write_column(sequences, cur_len, next_tokens)
        cur_len = cur_len + 1
        stop = ~tf.reduce_any(unfinished)
        return cur_len, sequences, unfinished, stop, cache, scores, step_buffers

    def cond(cur_len, sequences, unfinished, stop, cache, scores, step_buffers):
        return (cur_len < max_length) & ~stop

    cur_len, sequences, _, _, _, scores, step_buffers = tf.while_loop(
        cond, body, (tf.constant(prompt), sequences, unfinished, tf.constant(False), cache, scores, step_buffers),
        maximum_iterations=max_length - prompt)
    return SearchResult(sequences, cur_len, cur_len - prompt, scores=scores.stack() if gen.output_scores else None,
                        step_outputs=_stack(step_buffers))


def beam_search(step: Callable, reorder: Callable, cache, start, gen: GenerationConfig, rng=None,
                step_buffers=None) -> SearchResult:
    """Beams continuing start (B * num_beams, L0), beams of one input adjacent. With ``gen.do_sample`` (beam
    sampling) the candidates are drawn without replacement from the softmax of the accumulated scores (Gumbel
    top-k, stateless in ``rng``), in the order drawn, as the reference's."""
    rng = tf.zeros([2], tf.int32) if rng is None else tf.cast(rng, tf.int32)
    num_beams, max_length, prompt = gen.num_beams, gen.total_max_length, _prompt_length(start)
    b = tf.shape(start)[0] // num_beams
    candidates = num_candidates(num_beams)
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    fill = (gen.pad_token_id or gen.eos_token_id) if gen.eos_token_id is not None else -1
    normalizers = tf.constant(length_normalizers(max_length - prompt, gen.length_penalty))    # (L - L0 + 1,)

    running = tf.reshape(_initial_sequences(start, max_length, fill), [b, num_beams, max_length])  # (B, nb, L)
    no_indices = tf.fill([b, num_beams, max_length - prompt], -1)                             # (B, nb, L - L0)
    state = dict(
        running=running, running_scores=tf.tile(tf.concat([[0.0], tf.fill([num_beams - 1], BEAM_FILL)], 0)[None],
                                                [b, 1]),
        running_beam_indices=no_indices,
        sequences=running, beam_scores=tf.fill([b, num_beams], BEAM_FILL), beam_indices=no_indices,
        finished=tf.zeros([b, num_beams], tf.bool), finished_len=tf.zeros([b, num_beams], tf.int32),
        improvable=tf.ones([b, 1], tf.bool), stop=tf.constant(False),
    )
    scores = tf.TensorArray(tf.float32, size=max_length - prompt)
    top_beams = tf.range(candidates) < num_beams                                     # (C,) may finish
    batch_offset = tf.range(b)[:, None] * num_beams                                  # (B, 1)
    step_buffers = step_buffers or {}

    def body(cur_len, s, cache, scores, step_buffers):
        flat = tf.reshape(s["running"], [b * num_beams, max_length])
        logits, cache, outputs = step(_column(flat, cur_len), cache)                  # (B*nb, V)
        vocab_size = logits.shape[-1]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        log_probs = process_scores(log_probs, flat, cur_len, gen, max_length)
        if gen.do_sample:
            log_probs = warp_for_sampling(log_probs, gen, min_tokens_to_keep=2)
        if gen.output_scores:
            scores = scores.write(cur_len - prompt, log_probs)
        step_buffers = _record(step_buffers, cur_len - prompt, outputs)
        total = tf.reshape(log_probs, [b, num_beams, vocab_size]) + s["running_scores"][:, :, None]
        total = tf.reshape(total, [b, num_beams * vocab_size])

        # the best `candidates` continuations of all beams (drawn, when sampling)
        if gen.do_sample:  # sampling without replacement: top-k of the scores plus Gumbel noise
            u = tf.random.stateless_uniform(tf.shape(total), tf.stack([rng[0], rng[1] + cur_len]),
                                            minval=np.finfo(np.float32).tiny, maxval=1.0)
            cand_index = tf.math.top_k(total - tf.math.log(-tf.math.log(u)), candidates).indices
            cand_scores = tf.gather(total, cand_index, batch_dims=1)
        else:
            cand_scores, cand_index = tf.math.top_k(total, candidates)                        # (B, C)
        cand_parent, cand_tokens = cand_index // vocab_size, cand_index % vocab_size
        cand_seqs = _write_column(tf.gather(s["running"], cand_parent, batch_dims=1), cur_len, cand_tokens)
        cand_beam_indices = _write_column(tf.gather(s["running_beam_indices"], cand_parent, batch_dims=1),
                                          cur_len - prompt, cand_parent + batch_offset)    # (B, C, L - L0)
        ends = (cand_tokens == eos) | (cur_len + 1 >= max_length)                          # (B, C)

        # the num_beams best candidates that did not end go on
        go_on_scores = cand_scores + tf.cast(ends, tf.float32) * BEAM_FILL
        go_on = tf.math.top_k(go_on_scores, num_beams).indices                              # (B, nb)
        running = tf.gather(cand_seqs, go_on, batch_dims=1)
        running_scores = tf.gather(go_on_scores, go_on, batch_dims=1)
        running_beam_indices = tf.gather(cand_beam_indices, go_on, batch_dims=1)

        # candidates among the top num_beams that ended join the kept hypotheses, scored with their length
        newly_finished = ends & top_beams[None]
        normed = cand_scores / tf.gather(normalizers, cur_len + 1 - prompt)
        all_finished = tf.reduce_all(s["finished"], axis=-1, keepdims=True) & (gen.early_stopping is True)
        normed += tf.cast(all_finished, tf.float32) * BEAM_FILL
        normed += tf.cast(~s["improvable"], tf.float32) * BEAM_FILL
        normed += tf.cast(~newly_finished, tf.float32) * BEAM_FILL
        merged_scores = tf.concat([s["beam_scores"], normed], axis=1)                      # (B, nb + C)
        best = tf.math.top_k(merged_scores, num_beams).indices                             # (B, nb)
        sequences = tf.gather(tf.concat([s["sequences"], cand_seqs], 1), best, batch_dims=1)
        beam_scores = tf.gather(merged_scores, best, batch_dims=1)
        beam_indices = tf.gather(tf.concat([s["beam_indices"], cand_beam_indices], 1), best, batch_dims=1)
        finished = tf.gather(tf.concat([s["finished"], newly_finished], 1), best, batch_dims=1)
        finished_len = tf.gather(tf.concat([s["finished_len"], tf.fill([b, candidates], cur_len + 1 - prompt)], 1),
                                 best, batch_dims=1)

        cache = reorder(cache, tf.reshape(tf.gather(cand_parent, go_on, batch_dims=1) + batch_offset, [-1]))
        cur_len = cur_len + 1
        # can the best running beam still beat the worst kept hypothesis?
        best_running = running_scores[:, :1] / tf.gather(normalizers, bound_length(cur_len, prompt, gen))
        worst_kept = tf.where(finished, tf.reduce_min(beam_scores, axis=1, keepdims=True), BEAM_FILL)
        improvable = s["improvable"] & tf.reduce_any(best_running > worst_kept, axis=-1, keepdims=True)
        stop = (~tf.reduce_any(improvable) | (tf.reduce_all(finished) & (gen.early_stopping is True))
                | tf.reduce_all(ends))
        s = dict(running=running, running_scores=running_scores, running_beam_indices=running_beam_indices,
                 sequences=sequences, beam_scores=beam_scores, beam_indices=beam_indices, finished=finished,
                 finished_len=finished_len, improvable=improvable, stop=stop)
        return cur_len, s, cache, scores, step_buffers

    def cond(cur_len, s, cache, scores, step_buffers):
        return (cur_len < max_length) & ~s["stop"]

    cur_len, s, _, scores, step_buffers = tf.while_loop(
        cond, body, (tf.constant(prompt), state, cache, scores, step_buffers), maximum_iterations=max_length - prompt)
    r = gen.num_return_sequences
    return SearchResult(tf.reshape(s["sequences"][:, :r], [b * r, max_length]),
                        prompt + tf.reduce_max(s["finished_len"][:, :r]), cur_len - prompt,
                        scores=scores.stack() if gen.output_scores else None,
                        sequences_scores=tf.reshape(s["beam_scores"][:, :r], [-1]),
                        beam_indices=tf.reshape(s["beam_indices"][:, :r], [b * r, max_length - prompt]),
                        step_outputs=_stack(step_buffers))


# ====================================================================== diverse (group) beam search
# Diverse (group) beam search for the TensorFlow backend, token-identical to the reference's.
#
# A translation of torch's ``group_beam_search`` (rules above it in bart_torch.generation: the reference's
# group beam search, groups of ``group_size`` beams that each run a beam search of their own, the later groups
# of a step penalised for the tokens the earlier ones picked). Static shapes, as ``generation.beam_search``:
# state buffers of ``max_length`` columns, the groups a Python loop unrolled in the ``tf.while_loop`` body, so
# the same code runs eagerly, as a graph and under XLA. ``SearchResult.beam_indices`` is None (the reference's
# group beam indices mix up the groups).


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


# ============================================================ model glue
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_STEP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> tf.function of one step


class GenerationMixin:
    """``generate`` for ``BartForConditionalGeneration``: encoder once, then a decoding loop on the cache from the
    decoder start token. ``CausalGenerationMixin`` overrides the two model-specific hooks, ``_prepare_generation``
    (input checks and lengths) and ``_start_decoding`` (start sequence and cache). The model provides
    ``model.encoder`` / ``model.decoder``, ``lm_logits`` and ``_check_generate_inputs``."""

    def _decode_step(self, tokens, cache, encoder_attention_mask, output_attentions=False,
                     output_hidden_states=False):
        """tokens (N, T), cache -> (logits (N, V) float32 of the last position, cache advanced by T positions,
        self-attentions, cross-attentions, hidden states (per layer, None unless asked for))."""
        decoder = self.model.decoder
        out = decoder(inputs_embeds=decoder.embed_tokens(tokens), encoder_attention_mask=encoder_attention_mask,
                      past_key_values=cache, use_cache=True, output_attentions=output_attentions,
                      output_hidden_states=output_hidden_states)
        return (self.lm_logits(out.last_hidden_state[:, -1:])[:, 0], out.past_key_values, out.attentions,
                out.cross_attentions, out.hidden_states)

    def _prepare_generation(self, gen: GenerationConfig, input_ids, attention_mask, options,
                            prefix=None) -> GenerationConfig:
        """Check the inputs; ``gen`` with lengths counted from the decoder start token (and ``prefix``)."""
        return resolve_lengths(gen, 1 if prefix is None else int(prefix.shape[1]),
                               options.get("max_length") is not None, self.config.max_position_embeddings)

    def _start_decoding(self, input_ids, attention_mask, gen: GenerationConfig, expand: int, prefix=None,
                        inputs_embeds=None):
        """-> (start (N, L0): decoder start tokens or the ``prefix`` (B, L0) repeated, cache with the cross
        keys/values, encoder mask (N, S), encoder output (B rows)), N = B * expand."""
        encoder_out = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                         inputs_embeds=inputs_embeds, output_attentions=gen.output_attentions,
                                         output_hidden_states=gen.output_hidden_states)
        encoder_hidden = encoder_out.last_hidden_state
        if expand > 1:  # one encoder row per hypothesis, copies of one input adjacent: (B * expand, S, D)
            encoder_hidden = tf.repeat(encoder_hidden, expand, axis=0)
            attention_mask = tf.repeat(attention_mask, expand, axis=0)
        cache = self.model.decoder.init_cache(encoder_hidden, gen.total_max_length)
        if prefix is None:
            start = tf.fill([tf.shape(encoder_hidden)[0], 1], gen.decoder_start_token_id)        # (N, 1)
        else:
            start = tf.repeat(prefix, expand, axis=0) if expand > 1 else prefix                  # (N, L0)
        return start, cache, attention_mask, encoder_out

    def _step_buffers(self, gen: GenerationConfig, steps: int) -> dict:
        """Empty per-step buffers for the outputs ``step`` returns (see ``_generate_core``)."""
        layers = self.config.decoder_layers

        def buffers(n: int, dtype) -> tuple:
            return tuple(tf.TensorArray(dtype, size=steps) for _ in range(n))
        out = {}
        if gen.output_logits:
            out["logits"] = tf.TensorArray(tf.float32, size=steps)
        if gen.output_attentions:
            out["self_attentions"] = buffers(layers, tf.float32)
            if self.head != "causal_lm":
                out["cross_attentions"] = buffers(layers, tf.float32)
        if gen.output_hidden_states:
            out["hidden_states"] = buffers(layers + 1, self.model.decoder.compute_dtype)
        return out

    def _generate_core(self, input_ids, attention_mask, gen: GenerationConfig, seed=None,
                       run_eagerly: bool = False, prefix=None, inputs_embeds=None):
        """Pure TensorFlow, static shapes: callable eagerly, under tf.function and under XLA. ``gen`` has absolute
        lengths (``_prepare_generation``). Returns (``SearchResult``, the encoder's (attentions, hidden states),
        each None unless asked for)."""
        input_ids = None if input_ids is None else tf.cast(input_ids, tf.int32)
        attention_mask = tf.cast(attention_mask, tf.int32)
        expand = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
        extra = {} if prefix is None and inputs_embeds is None else {"prefix": prefix, "inputs_embeds": inputs_embeds}
        start, cache, encoder_mask, encoder_out = self._start_decoding(input_ids, attention_mask, gen, expand,
                                                                       **extra)

        decode_step = self._decode_step
        if tf.executing_eagerly() and not run_eagerly:  # the network step as a cached graph, the loop in Python
            decode_step = _STEP_GRAPHS.get(self)
            if decode_step is None:
                # no autograph: the step has no tensor-dependent Python control flow
                decode_step = _STEP_GRAPHS[self] = tf.function(self._decode_step, reduce_retracing=True,
                                                               autograph=False)
        loop_cache, join = split_cache(cache)
        def weights():  # the decoder's and the LM head's products, cast once (graphs only)
            head = self.get_output_embeddings()
            return [v for v in self.get_decoder().weights + (head.weights if head is not None else [])
                    if len(v.shape) == 2]
        precast = kernels.precast_weights(weights, self.dtype_policy.compute_dtype)

        def step(tokens, loop_cache):
            """(N, T) -> (logits (N, V) float32, cache advanced by T positions, the per-step outputs asked for)."""
            logits, cache, attentions, cross_attentions, hidden_states = decode_step(
                tokens, join(loop_cache), encoder_mask, gen.output_attentions, gen.output_hidden_states)
            outputs = {}
            if gen.output_logits:
                outputs["logits"] = logits
            if gen.output_attentions:
                outputs["self_attentions"] = attentions
                if cross_attentions is not None:
                    outputs["cross_attentions"] = cross_attentions
            if gen.output_hidden_states:
                outputs["hidden_states"] = hidden_states
            return logits, split_cache(cache)[0], outputs

        prompt = _prompt_length(start)
        prompt_outputs = None
        with precast:
            if prompt > 1:  # prefill all prompt tokens but the last, which the loop's first step feeds
                _, loop_cache, prompt_outputs = step(start[:, :-1], loop_cache)
            buffers = self._step_buffers(gen, gen.total_max_length - prompt)
            if gen.num_beams > 1 and gen.num_beam_groups > 1:
                result = group_beam_search(step, reorder_cache, loop_cache, start, gen, buffers)
            elif gen.num_beams > 1:
                result = beam_search(step, reorder_cache, loop_cache, start, gen, seed, buffers)
            else:
                result = sample_search(step, loop_cache, start, gen, seed, buffers)
        encoder_fields = (None, None) if encoder_out is None else (encoder_out.attentions, encoder_out.hidden_states)
        return result._replace(prompt_outputs=prompt_outputs or None), encoder_fields

    def _compiled_generate(self, gen: GenerationConfig, jit_compile: bool):
        """One tf.function per (model, options, mode); it retraces per input shape."""
        functions = _COMPILED.setdefault(self, {})
        key = (gen, jit_compile)
        if key not in functions:
            functions[key] = tf.function(
                lambda ids, mask, seed, prefix=None, embeds=None: self._generate_core(
                    ids, mask, gen, seed, prefix=prefix, inputs_embeds=embeds), jit_compile=jit_compile)
        return functions[key]

    def generate(self, input_ids=None, attention_mask=None, jit_compile: bool | None = None,
                 run_eagerly: bool = False, generation_config=None, inputs_embeds=None, decoder_input_ids=None,
                 **options):
        """Generate ids ``(B * num_return_sequences, L)``: rows start with the decoder start token
        (``BartForConditionalGeneration``) or with the prompt ``input_ids`` (``BartForCausalLM``).

        Options are ``bart_core.generation.GenerationConfig`` fields; they override ``generation_config``, which
        overrides ``self.generation_config`` (``bart_core.generation.resolve_generation_config``).
        ``jit_compile=True`` compiles the whole loop with XLA (one compilation per option set and input shape);
        ``jit_compile=False`` runs the whole loop as a TensorFlow graph; ``None`` (default) runs the loop eagerly
        in Python with the network step (decoder + LM head) as a graph traced once per model and shape, no XLA;
        add ``run_eagerly=True`` to run every op eagerly (debugging: breakpoints and prints inside the network).
        Called inside a ``tf.function``, it traces into the caller, skips the eager input checks and returns the
        uncropped ``max_length`` columns.

        As the reference: no ``input_ids`` (nor ``inputs_embeds``) means one input of ``bos_token_id``;
        ``inputs_embeds`` (B, S, D) feed the encoder; ``decoder_input_ids`` (B, T), concrete (eager) values, is
        the decoder sequence to continue (start token put in front when no row begins with it).
        ``return_dict_in_generate=True`` gives ``GenerateOutput`` with the reference's fields: ``scores``,
        ``logits``, ``beam_indices``, ``sequences_scores``, encoder attentions / hidden states and the decoder's per
        step (kept in buffers of one shape per step inside the loop; after a longer decoder prompt the prefill's
        values are joined to the first step's, so inside an outer ``tf.function`` that case is refused).
        """
        gen = resolve_generation_config(getattr(self, "generation_config", None), generation_config, options,
                                        self.config)
        eager = tf.executing_eagerly()
        causal = self.head == "causal_lm"
        bos = check_generate_source(gen, causal, input_ids is not None, inputs_embeds is not None)
        if bos is not None:
            input_ids = tf.fill([1, 1], bos)
        self._check_generate_inputs(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        prefix = None
        if decoder_input_ids is not None:
            if causal:
                raise ValueError("BartForCausalLM.generate has no decoder_input_ids: the prompt is input_ids")
            if not eager:
                raise ValueError("generate(decoder_input_ids=...) needs concrete ids (whether the start token is put "
                                 "in front depends on them); call generate eagerly")
            prefix = tf.constant(decoder_prompt(np.asarray(decoder_input_ids), gen.decoder_start_token_id),
                                 tf.int32)
        if inputs_embeds is not None:
            inputs_embeds = tf.convert_to_tensor(inputs_embeds)
            attention_mask = tf.ones(tf.shape(inputs_embeds)[:2], tf.int32) if attention_mask is None else \
                tf.cast(attention_mask, tf.int32)
        else:
            input_ids = tf.cast(tf.convert_to_tensor(input_ids), tf.int32)
        if attention_mask is None:
            attention_mask = infer_attention_mask(input_ids, gen.pad_token_id, gen.eos_token_id)  # (B, S) or None
            attention_mask = tf.ones_like(input_ids) if attention_mask is None else tf.cast(attention_mask, tf.int32)
        gen = self._prepare_generation(gen, input_ids, attention_mask, options, prefix)
        prompt = _prompt_length(input_ids) if causal else (1 if prefix is None else int(prefix.shape[1]))
        network_step_outputs(gen, prompt, "TensorFlow", eager)
        seed = gen.seed if gen.seed is not None else (np.random.randint(0, 2**31 - 1) if gen.do_sample else 0)
        seed = tf.constant([seed, 0], tf.int32)
        extra = {} if prefix is None and inputs_embeds is None else {"prefix": prefix, "embeds": inputs_embeds}
        if eager and jit_compile is not None:
            result, encoder_fields = self._compiled_generate(gen.replace(seed=None), bool(jit_compile))(
                input_ids, attention_mask, seed, **extra)
        else:
            result, encoder_fields = self._generate_core(input_ids, attention_mask, gen, seed,
                                                         run_eagerly=run_eagerly, prefix=prefix,
                                                         inputs_embeds=inputs_embeds)
        if eager:
            result = crop_result(result, prompt, tf.nest.map_structure)
        if not gen.return_dict_in_generate:
            return result.sequences
        return generate_output(result, encoder_fields, gen, prompt, causal, eager, lambda x: tuple(tf.unstack(x)),
                               tf.concat)


class CausalGenerationMixin(GenerationMixin):
    """``generate`` for ``BartForCausalLM``: continue the prompt ``input_ids`` (B, L0), as the reference. Rows
    start with the prompt; ``max_new_tokens`` counts after it, ``max_length`` and ``min_length`` include it, and a
    ``max_length`` left at the reference default of 20 means 20 new tokens (capped at ``max_position_embeddings``).
    The cache is prefilled with the prompt in one decoder pass; padded prompts are refused."""

    def _prepare_generation(self, gen: GenerationConfig, input_ids, attention_mask, options,
                            prefix=None) -> GenerationConfig:
        """Check the prompt (eagerly only); ``gen`` with lengths counted from the prompt's first token."""
        if tf.executing_eagerly():  # the mask here is the caller's or the one inferred from pad_token_id
            check_unpadded_prompt(np.asarray(input_ids), np.asarray(attention_mask), gen.pad_token_id,
                                  gen.eos_token_id)
        return resolve_lengths(gen, _prompt_length(input_ids), options.get("max_length") is not None,
                               self.config.max_position_embeddings)

    def _start_decoding(self, input_ids, attention_mask, gen: GenerationConfig, expand: int):
        """-> (start (N, L0) the prompt, copies of one prompt adjacent; empty self-attention cache; no encoder
        mask; no encoder output), N = B * expand."""
        start = tf.repeat(input_ids, expand, axis=0) if expand > 1 else input_ids                # (N, L0)
        cache = self.model.decoder.init_cache(None, gen.total_max_length, batch_size=tf.shape(start)[0])
        return start, cache, None, None
