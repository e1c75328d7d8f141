"""Decoding for the Flax backend, as one compiled program: ``sample_search`` (arg-max and sampling) and
``beam_search`` in ``lax.while_loop``.

Both generating heads use the same loops, which start from a sequence ``start (N, L0)``: the decoder start token
(``BartForConditionalGeneration``, L0 = 1, after one encoder pass) or the prompt (``BartForCausalLM``, repeated
per beam / returned sequence; its first L0 - 1 tokens prefill the cache in one decoder pass, and the loop's
first step feeds the last prompt token). ``max_length`` and ``min_length`` count the prompt, ``max_new_tokens``
and ``min_new_tokens`` do not; as the reference, a ``max_length`` left at its default of 20 means 20 new tokens
(``bart_core.generation.resolve_lengths``).

Decoding knows the network only through ``step(tokens (N, t), cache) -> (logits (N, V) float32, cache, outputs)``
(t = 1 in the loops, L0 - 1 for the prefill; ``outputs`` the per-step network outputs asked for, a dict) and, for
beam search, ``reorder(cache, rows (N,)) -> cache`` (``bart_flax.cache.reorder_cache``). The three backends'
``generation.py`` are translations of one another (same loops, state names and
``bart_core.generation.SearchResult``; the framework-free numbers in ``bart_core.generation``; the vocabulary in
``docs/design.md``, "Decoding"); this module imports nothing from ``modeling`` (the model provides its linen module,
``init_cache`` and ``_check_generate_inputs``). Beam search follows the vectorised reference algorithm of
transformers 4.57.6, so tokens are identical to the reference.

Static shapes: the sequence buffer is ``(N, max_length)`` filled with ``pad_token_id``, per-step outputs go to
``(max_length - L0, ...)`` buffers; the program returns them with the final length. ``generate`` called eagerly
cuts them to that length; under an outer ``jax.jit`` the full padded buffers are returned.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bart_core import GenerationConfig
from bart_core.generation import (
    BEAM_FILL,
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
from bart_core.outputs import FlaxBeamSearchOutput, FlaxGreedySearchOutput, FlaxSampleOutput
from bart_flax.cache import reorder_cache

NEG_INF = -jnp.inf


# ============================================================================ logits processors
def repetition_penalty(scores, seqs, cur_len, penalty):
    """Tokens present in seqs[:, :cur_len]: negative scores * penalty, positive / penalty. (N, V)."""
    n, length = seqs.shape
    filled = (jnp.arange(length) < cur_len).astype(jnp.int32)                 # (L,)
    present = jnp.zeros(scores.shape, jnp.int32).at[jnp.arange(n)[:, None], seqs].max(
        jnp.broadcast_to(filled, seqs.shape)) > 0                              # (N, V)
    return jnp.where(present, jnp.where(scores < 0, scores * penalty, scores / penalty), scores)


def no_repeat_ngram(scores, seqs, cur_len, size):
    """Ban every token that would complete an n-gram already present in seqs[:, :cur_len]. (N, V)."""
    n, length = seqs.shape
    windows_n = length - size + 1
    if windows_n <= 0:
        return scores
    idx = jnp.arange(windows_n)[:, None] + jnp.arange(size)[None]            # (W, n)
    windows = seqs[:, idx]                                                     # (N, W, n)
    prefix = lax.dynamic_slice(seqs, (0, jnp.maximum(cur_len - (size - 1), 0)), (n, size - 1))  # (N, n-1)
    match = jnp.all(windows[:, :, :-1] == prefix[:, None, :], axis=-1)        # (N, W)
    match = match & (jnp.arange(windows_n) + size <= cur_len)[None]
    banned = jnp.zeros(scores.shape, jnp.int32).at[jnp.arange(n)[:, None], windows[:, :, -1]].max(
        match.astype(jnp.int32)) > 0
    return jnp.where(banned, NEG_INF, scores)


def bad_words(scores, seqs, cur_len, single: tuple, longer: tuple):
    """Ban ``single`` tokens, and the last token of each ``longer`` sequence whose other tokens end
    seqs[:, :cur_len] (``bart_core.generation.bad_word_sequences``). (N, V)."""
    if single:
        scores = scores.at[:, jnp.asarray(single)].set(NEG_INF)
    n = seqs.shape[0]
    for word in longer:
        k = len(word) - 1
        tail = lax.dynamic_slice(seqs, (0, jnp.maximum(cur_len - k, 0)), (n, k))                # (N, k)
        hit = jnp.all(tail == jnp.asarray(word[:-1], seqs.dtype), axis=-1) & (cur_len >= k + 1)  # (N,)
        scores = scores.at[:, word[-1]].set(jnp.where(hit, NEG_INF, scores[:, word[-1]]))
    return scores


def remove_invalid_values(scores):
    """NaN -> 0, +inf -> finfo.max, -inf -> finfo.min (the reference's InfNanRemoveLogitsProcessor)."""
    info = jnp.finfo(scores.dtype)
    out = jnp.where(jnp.isnan(scores), 0.0, scores)
    return jnp.where(scores == jnp.inf, info.max, jnp.where(scores == -jnp.inf, info.min, out))


def force_token(scores, token):
    return jnp.full_like(scores, NEG_INF).at[:, token].set(0.0)


def process_scores(scores, seqs, cur_len, gen: GenerationConfig):
    """The processors in the order of bart_core.generation: scores (N, V) float32, seqs (N, L) int32."""
    max_length, min_length = gen.total_max_length, gen.total_min_length
    if gen.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, seqs, cur_len, gen.repetition_penalty)
    if gen.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(scores, seqs, cur_len, gen.no_repeat_ngram_size)
    single, longer = bad_word_sequences(gen)
    if single or longer:
        scores = bad_words(scores, seqs, cur_len, single, longer)
    if gen.eos_token_id is not None and min_length > 0:
        scores = jnp.where(cur_len < min_length, scores.at[:, gen.eos_token_id].set(NEG_INF), scores)
    if gen.forced_bos_token_id is not None:
        scores = jnp.where(cur_len == 1, force_token(scores, gen.forced_bos_token_id), scores)
    if gen.forced_eos_token_id is not None:
        scores = jnp.where(cur_len == max_length - 1, force_token(scores, gen.forced_eos_token_id), scores)
    if gen.remove_invalid_values:
        scores = remove_invalid_values(scores)
    return scores


def warp_for_sampling(scores, gen: GenerationConfig, keep: int = 1):
    """Temperature, top-k, top-p (reference order); removed tokens get -inf; at least ``keep`` tokens stay
    (2 in beam sampling, as the reference). (N, V)."""
    if gen.temperature != 1.0:
        scores = scores / gen.temperature
    vocab = scores.shape[-1]
    if gen.top_k:
        kth = lax.top_k(scores, min(max(gen.top_k, keep), vocab))[0][:, -1:]    # (N, 1)
        scores = jnp.where(scores < kth, NEG_INF, scores)
    if gen.top_p < 1.0:
        order = jnp.argsort(scores, axis=-1)                                   # ascending
        sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_scores, axis=-1), axis=-1)
        remove = (cum <= 1 - gen.top_p).at[:, vocab - keep:].set(False)       # keep at least `keep` tokens
        rows = jnp.arange(scores.shape[0])[:, None]
        remove = jnp.zeros_like(remove).at[rows, order].set(remove)
        scores = jnp.where(remove, NEG_INF, scores)
    return scores


# ============================================================================ search loops
def _step_buffers(step: Callable, tokens, cache, steps: int):
    """Zero buffers (steps, ...) for the per-step ``outputs`` of ``step`` (shapes from an abstract evaluation) and
    the vocabulary size: a ``lax.while_loop`` needs its state before the first step."""
    logits, _, outputs = jax.eval_shape(step, tokens, cache)
    return jax.tree_util.tree_map(lambda x: jnp.zeros((steps,) + x.shape, x.dtype), outputs), logits.shape[-1]


def _record(buffers, i, outputs):
    """Write one step's outputs at step ``i`` of ``buffers`` (the same structure, with a leading step axis)."""
    return jax.tree_util.tree_map(lambda buf, x: lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), i, 0),
                                  buffers, outputs)


def sample_search(step: Callable, cache, start, gen: GenerationConfig, rng=None) -> SearchResult:
    """Arg-max, or sampling when ``gen.do_sample``, continuing start (N, L0); the cache holds positions 0..L0-2.
    ``rng``: the jax key of the draws."""
    (num, prompt), max_length = start.shape, gen.total_max_length
    sequences = jnp.full((num, max_length), gen.pad_token_id, jnp.int32).at[:, :prompt].set(start)  # (N, L)
    step_buffers, vocab = _step_buffers(step, start[:, -1:], cache, max_length - prompt)
    scores = jnp.zeros((max_length - prompt, num, vocab), jnp.float32) if gen.output_scores else None
    eos = gen.eos_token_id

    def cond(state):
        cur_len, _, _, stop, *_ = state
        return (cur_len < max_length) & ~stop

    def body(state):
        cur_len, sequences, unfinished, stop, cache, rng, scores, step_buffers = state
        tokens = lax.dynamic_slice(sequences, (0, cur_len - 1), (num, 1))                # (N, 1)
        logits, cache, outputs = step(tokens, cache)                                       # (N, V)
        step_scores = process_scores(logits, sequences, cur_len, gen)
        if scores is not None:
            scores = lax.dynamic_update_index_in_dim(scores, step_scores, cur_len - prompt, 0)
        step_buffers = _record(step_buffers, cur_len - prompt, outputs)
        if gen.do_sample:
            rng, draw = jax.random.split(rng)
            next_tokens = jax.random.categorical(draw, warp_for_sampling(step_scores, gen), axis=-1)
        else:
            next_tokens = jnp.argmax(step_scores, axis=-1)
        next_tokens = jnp.where(unfinished, next_tokens, gen.pad_token_id).astype(jnp.int32)  # (N,)
        if eos is not None:
            unfinished = unfinished & (next_tokens != eos)
        sequences = lax.dynamic_update_slice(sequences, next_tokens[:, None], (0, cur_len))
        cur_len = cur_len + 1
        stop = ~jnp.any(unfinished)
        return cur_len, sequences, unfinished, stop, cache, rng, scores, step_buffers

    state = (jnp.int32(prompt), sequences, jnp.ones((num,), bool), jnp.array(False), cache,
             jax.random.PRNGKey(0) if rng is None else rng, scores, step_buffers)
    cur_len, sequences, _, _, _, _, scores, step_buffers = lax.while_loop(cond, body, state)
    return SearchResult(sequences, cur_len, cur_len - prompt, scores=scores, step_outputs=step_buffers or None)


def _gather(x, idx):
    """x (B, K, ...), idx (B, J) -> (B, J, ...)."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _write_column(x, i, values):
    """x (B, K, L), values (B, K) -> x with column i set."""
    return lax.dynamic_update_slice(x, values[:, :, None].astype(x.dtype), (0, 0, i))


def beam_search(step: Callable, reorder: Callable, cache, start, gen: GenerationConfig, rng=None) -> SearchResult:
    """Beams continuing start (B * num_beams, L0), beams of one input adjacent; the cache holds positions
    0..L0-2. With ``gen.do_sample`` (beam sampling) the candidates are drawn without replacement from the softmax
    of the accumulated scores (Gumbel top-k), in the order drawn, as the reference's."""
    num_beams, max_length = gen.num_beams, gen.total_max_length
    candidates = num_candidates(num_beams)
    prompt = start.shape[1]
    b = start.shape[0] // num_beams
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    fill = (gen.pad_token_id or gen.eos_token_id) if gen.eos_token_id is not None else -1
    normalizers = jnp.asarray(length_normalizers(max_length - prompt, gen.length_penalty))  # (L - L0 + 1,)
    top_beams = jnp.arange(candidates) < num_beams                                  # (C,) may finish
    batch_offset = (jnp.arange(b) * num_beams)[:, None]                              # (B, 1)
    step_buffers, vocab = _step_buffers(step, start[:, -1:], cache, max_length - prompt)

    running = jnp.full((b, num_beams, max_length), fill, jnp.int32).at[:, :, :prompt].set(
        start.reshape(b, num_beams, prompt))                                          # (B, nb, L)
    no_indices = jnp.full((b, num_beams, max_length - prompt), -1, jnp.int32)        # (B, nb, L - L0)
    state = dict(
        cur_len=jnp.int32(prompt), running=running,
        running_scores=jnp.zeros((b, num_beams), jnp.float32).at[:, 1:].set(BEAM_FILL),
        running_beam_indices=no_indices,
        sequences=running, beam_scores=jnp.full((b, num_beams), BEAM_FILL, jnp.float32), beam_indices=no_indices,
        finished=jnp.zeros((b, num_beams), bool), finished_len=jnp.zeros((b, num_beams), jnp.int32),
        improvable=jnp.ones((b, 1), bool), stop=jnp.array(False),
        cache=cache, rng=jax.random.PRNGKey(0) if rng is None else rng,
        scores=jnp.zeros((max_length - prompt, b * num_beams, vocab), jnp.float32) if gen.output_scores else None,
        step_buffers=step_buffers)

    def cond(s):
        return (s["cur_len"] < max_length) & ~s["stop"]

    def body(s):
        cur_len, rng = s["cur_len"], s["rng"]
        flat = s["running"].reshape(b * num_beams, max_length)                       # (B*nb, L)
        tokens = lax.dynamic_slice(flat, (0, cur_len - 1), (b * num_beams, 1))
        logits, cache, outputs = step(tokens, s["cache"])                            # (B*nb, V)
        log_probs = process_scores(jax.nn.log_softmax(logits, axis=-1), flat, cur_len, gen)
        if gen.do_sample:
            log_probs = warp_for_sampling(log_probs, gen, keep=2)
        scores = s["scores"]
        if scores is not None:
            scores = lax.dynamic_update_index_in_dim(scores, log_probs, cur_len - prompt, 0)
        step_buffers = _record(s["step_buffers"], cur_len - prompt, outputs)
        total = (log_probs.reshape(b, num_beams, vocab) + s["running_scores"][:, :, None]).reshape(
            b, num_beams * vocab)

        # the best `candidates` continuations of all beams (drawn, when sampling)
        if gen.do_sample:  # sampling without replacement: top-k of the scores plus Gumbel noise
            rng, draw = jax.random.split(rng)
            cand_index = lax.top_k(total + jax.random.gumbel(draw, total.shape), candidates)[1]
            cand_scores = jnp.take_along_axis(total, cand_index, axis=1)
        else:
            cand_scores, cand_index = lax.top_k(total, candidates)                    # (B, C)
        cand_parent, cand_tokens = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
        cand_seqs = _write_column(_gather(s["running"], cand_parent), cur_len, cand_tokens)  # (B, C, L)
        cand_beam_indices = _write_column(_gather(s["running_beam_indices"], cand_parent), cur_len - prompt,
                                          cand_parent + batch_offset)                  # (B, C, L - L0)
        ends = (cand_tokens == eos) | (cur_len + 1 >= max_length)                     # (B, C)

        # the num_beams best candidates that did not end go on
        go_on_scores = cand_scores + ends.astype(jnp.float32) * BEAM_FILL
        go_on = lax.top_k(go_on_scores, num_beams)[1]                                 # (B, nb)
        running = _gather(cand_seqs, go_on)
        running_scores = _gather(go_on_scores, go_on)
        running_beam_indices = _gather(cand_beam_indices, go_on)

        # candidates among the top num_beams that ended join the kept hypotheses, scored with their length
        newly_finished = ends & top_beams[None]
        normed = cand_scores / normalizers[cur_len + 1 - prompt]
        all_finished = jnp.all(s["finished"], axis=-1, keepdims=True) & (gen.early_stopping is True)
        normed = normed + all_finished.astype(jnp.float32) * BEAM_FILL
        normed = normed + (~s["improvable"]).astype(jnp.float32) * BEAM_FILL
        normed = normed + (~newly_finished).astype(jnp.float32) * BEAM_FILL
        merged_scores = jnp.concatenate([s["beam_scores"], normed], axis=1)          # (B, nb + C)
        best = lax.top_k(merged_scores, num_beams)[1]                                 # (B, nb)
        sequences = _gather(jnp.concatenate([s["sequences"], cand_seqs], axis=1), best)
        beam_scores = _gather(merged_scores, best)
        beam_indices = _gather(jnp.concatenate([s["beam_indices"], cand_beam_indices], axis=1), best)
        finished = _gather(jnp.concatenate([s["finished"], newly_finished], axis=1), best)
        finished_len = _gather(jnp.concatenate([s["finished_len"], jnp.full((b, candidates),
                                                                            cur_len + 1 - prompt)], axis=1), best)

        cache = reorder(cache, (_gather(cand_parent, go_on) + batch_offset).reshape(-1))
        cur_len = cur_len + 1
        # can the best running beam still beat the worst kept hypothesis?
        best_running = running_scores[:, :1] / normalizers[bound_length(cur_len, prompt, gen)]
        worst_kept = jnp.where(finished, jnp.min(beam_scores, axis=1, keepdims=True), BEAM_FILL)
        improvable = s["improvable"] & jnp.any(best_running > worst_kept, axis=-1, keepdims=True)
        stop = (~jnp.any(improvable) | (jnp.all(finished) & (gen.early_stopping is True)) | jnp.all(ends))
        return dict(cur_len=cur_len, running=running, running_scores=running_scores,
                    running_beam_indices=running_beam_indices, sequences=sequences, beam_scores=beam_scores,
                    beam_indices=beam_indices, finished=finished, finished_len=finished_len, improvable=improvable,
                    stop=stop, cache=cache, rng=rng, scores=scores, step_buffers=step_buffers)

    s = lax.while_loop(cond, body, state)
    r = gen.num_return_sequences
    return SearchResult(s["sequences"][:, :r].reshape(b * r, max_length),
                        prompt + jnp.max(s["finished_len"][:, :r]), s["cur_len"] - prompt, scores=s["scores"],
                        sequences_scores=s["beam_scores"][:, :r].reshape(-1),
                        beam_indices=s["beam_indices"][:, :r].reshape(b * r, max_length - prompt),
                        step_outputs=s["step_buffers"] or None)


# ====================================================================== diverse (group) beam search
# Diverse (group) beam search for the Flax backend, token-identical to the reference's.
#
# A translation of torch's ``group_beam_search`` (rules above it in bart_torch.generation: the reference's
# group beam search, groups of ``group_size`` beams that each run a beam search of their own, the later groups
# of a step penalised for the tokens the earlier ones picked). One ``lax.while_loop`` with static shapes, as
# ``generation.beam_search``; the groups are a Python loop unrolled in its body. ``SearchResult.beam_indices``
# is None (the reference's group beam indices mix up the groups).


def diversity_penalty(picked, vocab: int, penalty: float):
    """picked (B, P): tokens the earlier groups of each input chose at this step -> (B, V) float32 penalty,
    ``penalty`` times each token's count (the reference's Hamming diversity)."""
    return np.float32(penalty) * jax.nn.one_hot(picked, vocab, dtype=jnp.float32).sum(1)


def group_beam_search(step: Callable, reorder: Callable, cache, start, gen: GenerationConfig) -> SearchResult:
    """Diverse beam search continuing start (B * num_beams, L0), beams of one input adjacent, groups of one input
    adjacent within them; the cache holds positions 0..L0-2."""
    num_beams, groups, max_length = gen.num_beams, gen.num_beam_groups, gen.total_max_length
    group_size = num_beams // groups
    candidates = num_candidates(group_size)
    prompt = start.shape[1]
    b = start.shape[0] // num_beams
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    fill = gen.pad_token_id if gen.pad_token_id is not None else -1
    normalizers = jnp.asarray(length_normalizers(max_length - prompt, gen.length_penalty))  # (L - L0 + 1,)
    top_beams = jnp.arange(candidates) < group_size                                 # (C,) may finish
    in_place = jnp.arange(group_size)[None, :]                                       # (1, S)
    row_offset = (jnp.arange(b)[:, None, None] * num_beams
                  + jnp.arange(groups)[None, :, None] * group_size)                  # (B, G, 1)
    step_buffers, vocab = _step_buffers(step, start[:, -1:], cache, max_length - prompt)

    running = jnp.full((b, groups, group_size, max_length), fill, jnp.int32).at[..., :prompt].set(
        start.reshape(b, groups, group_size, prompt))                                # (B, G, S, L)
    state = dict(
        cur_len=jnp.int32(prompt), running=running,
        running_scores=jnp.zeros((b, groups, group_size), jnp.float32).at[..., 1:].set(BEAM_FILL),
        sequences=running, beam_scores=jnp.full((b, groups, group_size), BEAM_FILL, jnp.float32),  # kept
        finished=jnp.zeros((b, groups, group_size), bool),
        finished_len=jnp.zeros((b, groups, group_size), jnp.int32),                 # generated tokens
        closed=jnp.zeros((b, groups), bool), stop=jnp.array(False),                 # the scorer's `_done`
        cache=cache,
        scores=jnp.zeros((max_length - prompt, b * num_beams, vocab), jnp.float32) if gen.output_scores else None,
        step_buffers=step_buffers)

    def cond(s):
        return (s["cur_len"] < max_length) & ~s["stop"]

    def body(s):
        cur_len = s["cur_len"]
        flat = s["running"].reshape(b * num_beams, max_length)                      # (N, L)
        tokens = lax.dynamic_slice(flat, (0, cur_len - 1), (b * num_beams, 1))
        logits, cache, outputs = step(tokens, s["cache"])                           # (N, V)
        log_probs = jax.nn.log_softmax(logits, axis=-1).reshape(b, groups, group_size, vocab)
        step_buffers = _record(s["step_buffers"], cur_len - prompt, outputs)
        new = {k: [] for k in ("step_scores", "picked", "parents", "running", "running_scores", "sequences",
                               "beam_scores", "finished", "finished_len", "closed")}
        for g in range(groups):
            group_running = s["running"][:, g]                                       # (B, S, L)
            group_scores = process_scores(log_probs[:, g].reshape(b * group_size, vocab),
                                          group_running.reshape(b * group_size, max_length), cur_len,
                                          gen).reshape(b, group_size, vocab)
            if g > 0:
                picked = jnp.stack(new["picked"], axis=1).reshape(b, g * group_size)
                group_scores = group_scores - diversity_penalty(picked, vocab, gen.diversity_penalty)[:, None, :]
            new["step_scores"].append(group_scores)
            total = (group_scores + s["running_scores"][:, g, :, None]).reshape(b, group_size * vocab)
            cand_scores, cand_index = lax.top_k(total, candidates)                  # (B, C)
            cand_parent, cand_tokens = cand_index // vocab, (cand_index % vocab).astype(jnp.int32)
            cand_seqs = _write_column(_gather(group_running, cand_parent), cur_len, cand_tokens)  # (B, C, L)
            ends = cand_tokens == eos                                                # (B, C)
            was_closed = s["closed"][:, g, None]                                     # (B, 1)

            # the first group_size candidates that did not end go on, in rank order
            go_on = jnp.argsort(ends.astype(jnp.int32), axis=1, stable=True)[:, :group_size]  # (B, S)
            parent = jnp.where(was_closed, in_place, _gather(cand_parent, go_on))
            next_tokens = jnp.where(was_closed, fill, _gather(cand_tokens, go_on))
            new["running"].append(_write_column(_gather(group_running, parent), cur_len, next_tokens))
            new["running_scores"].append(jnp.where(was_closed, 0.0, _gather(cand_scores, go_on)))
            new["picked"].append(next_tokens)
            new["parents"].append(parent)

            # candidates among the first group_size that ended join the group's hypotheses
            newly_finished = ends & top_beams[None] & ~was_closed
            normed = jnp.where(newly_finished, cand_scores / normalizers[cur_len + 1 - prompt], NEG_INF)
            merged_scores = jnp.concatenate([s["beam_scores"][:, g], normed], axis=1)  # (B, S + C)
            best = lax.top_k(merged_scores, group_size)[1]                           # (B, S)
            beam_scores = _gather(merged_scores, best)
            finished = _gather(jnp.concatenate([s["finished"][:, g], newly_finished], axis=1), best)
            new["sequences"].append(_gather(jnp.concatenate([s["sequences"][:, g], cand_seqs], axis=1), best))
            new["beam_scores"].append(beam_scores)
            new["finished"].append(finished)
            new["finished_len"].append(_gather(jnp.concatenate(
                [s["finished_len"][:, g], jnp.full((b, candidates), cur_len + 1 - prompt)], axis=1), best))

            # the group closes once full, if its best candidate cannot beat its worst hypothesis
            full = jnp.all(finished, axis=-1)                                        # (B,)
            if gen.early_stopping is not True:
                best_possible = cand_scores[:, 0] / normalizers[bound_length(cur_len + 1, prompt, gen)]
                full &= jnp.min(beam_scores, axis=-1) >= best_possible
            new["closed"].append(s["closed"][:, g] | full)
        new = {k: jnp.stack(v, axis=1) for k, v in new.items()}                     # (B, G, ...)
        scores = s["scores"]
        if scores is not None:
            scores = lax.dynamic_update_index_in_dim(scores, new["step_scores"].reshape(b * num_beams, vocab),
                                                     cur_len - prompt, 0)
        cache = reorder(cache, (new["parents"] + row_offset).reshape(-1))
        return dict(cur_len=cur_len + 1, running=new["running"], running_scores=new["running_scores"],
                    sequences=new["sequences"], beam_scores=new["beam_scores"], finished=new["finished"],
                    finished_len=new["finished_len"], closed=new["closed"], stop=jnp.all(new["closed"]),
                    cache=cache, scores=scores, step_buffers=step_buffers)

    s = lax.while_loop(cond, body, state)
    cur_len = s["cur_len"]

    # the groups still open add their running beams, scored with the full length; each group keeps group_size
    normed = jnp.where(s["closed"][..., None], NEG_INF, s["running_scores"] / normalizers[cur_len - prompt])
    merged_scores = jnp.concatenate([s["beam_scores"], normed], axis=2).reshape(b * groups, 2 * group_size)
    best = lax.top_k(merged_scores, group_size)[1]                                   # (B * G, S)
    pool_scores = _gather(merged_scores, best).reshape(b, num_beams)
    pool = _gather(jnp.concatenate([s["sequences"], s["running"]], axis=2).reshape(
        b * groups, 2 * group_size, max_length), best).reshape(b, num_beams, max_length)
    pool_len = _gather(jnp.concatenate([s["finished_len"], jnp.full((b, groups, group_size), cur_len - prompt)],
                                       axis=2).reshape(b * groups, 2 * group_size), best).reshape(b, num_beams)
    r = gen.num_return_sequences
    top = lax.top_k(pool_scores, r)[1]                                               # (B, r) over all groups
    return SearchResult(_gather(pool, top).reshape(b * r, max_length), prompt + jnp.max(_gather(pool_len, top)),
                        cur_len - prompt, scores=s["scores"], sequences_scores=_gather(pool_scores, top).reshape(-1),
                        step_outputs=s["step_buffers"] or None)


# ============================================================================ model glue (one compiled program)
def _seq2seq_start(model, gen: GenerationConfig, params, input_ids, attention_mask, group: int, prefix=None,
                   inputs_embeds=None):
    """Encode once and precompute the cross-attention keys/values, one encoder row per input, which the ``group``
    hypotheses of the input share (``attend``). Returns (start (N, L0), cache, decoder, encoder output); start is
    the decoder start token, or ``prefix`` (B, L0) repeated per hypothesis."""
    module = model.module
    enc = module.apply({"params": params}, input_ids, attention_mask, inputs_embeds=inputs_embeds,
                       output_attentions=gen.output_attentions, output_hidden_states=gen.output_hidden_states,
                       method="encode", deterministic=True)
    hidden = enc.last_hidden_state                                               # (B, S, D)
    n = hidden.shape[0] * group
    start = jnp.full((n, 1), gen.decoder_start_token_id, jnp.int32) if prefix is None else \
        jnp.repeat(prefix, group, axis=0)
    mask = attention_mask                                                        # (B, S)
    cache = model.init_cache(n, gen.total_max_length - 1, hidden, params=params)

    def decoder(tokens, cache):
        return module.apply({"params": params}, tokens, None, mask, cache=cache, method="decode",
                            output_attentions=gen.output_attentions, output_hidden_states=gen.output_hidden_states,
                            deterministic=True)
    return start, cache, decoder, enc


def _causal_start(model, gen: GenerationConfig, params, input_ids, attention_mask, group: int, prefix=None,
                  inputs_embeds=None):
    """The prompt repeated per hypothesis, no encoder. Returns (start (N, L0), empty cache, decoder, None)."""
    start = jnp.repeat(input_ids, group, axis=0)                               # (N, L0)
    cache = model.init_cache(start.shape[0], gen.total_max_length - 1)

    def decoder(tokens, cache):
        return model.module.apply({"params": params}, tokens, cache=cache, output_attentions=gen.output_attentions,
                                  output_hidden_states=gen.output_hidden_states, deterministic=True)
    return start, cache, decoder, None


def _program(model, gen: GenerationConfig, params, input_ids, attention_mask, rng, prefix=None, inputs_embeds=None):
    """Prepare the start sequence and cache, prefill the cache with start[:, :-1], run the decoding loop; all
    inside one jit. Returns (``SearchResult``, the encoder output or None)."""
    group = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
    prepare = _causal_start if model.head == "causal_lm" else _seq2seq_start
    start, cache, decoder, encoder_out = prepare(model, gen, params, input_ids, attention_mask, group, prefix,
                                                 inputs_embeds)

    def step(tokens, cache):
        """(N, t) -> (logits (N, V) float32 of the last position, cache, the per-step outputs asked for)."""
        dec, logits = decoder(tokens, cache)                                   # logits (N, t, V)
        logits = logits[:, -1].astype(jnp.float32)
        outputs = {}
        if gen.output_logits:
            outputs["logits"] = logits
        if gen.output_attentions:
            outputs["self_attentions"] = dec.attentions
            if dec.cross_attentions is not None:
                outputs["cross_attentions"] = dec.cross_attentions
        if gen.output_hidden_states:
            outputs["hidden_states"] = dec.hidden_states
        return logits, dec.past_key_values, outputs

    prompt_outputs = None
    if start.shape[1] > 1:
        _, cache, prompt_outputs = step(start[:, :-1], cache)                  # prompt positions 0..L0-2
    if gen.num_beams > 1 and gen.num_beam_groups > 1:
        result = group_beam_search(step, reorder_cache, cache, start, gen)
    elif gen.num_beams > 1:
        result = beam_search(step, reorder_cache, cache, start, gen, rng)
    else:
        result = sample_search(step, cache, start, gen, rng)
    return result._replace(prompt_outputs=prompt_outputs or None), encoder_out


def _compiled(model, gen: GenerationConfig):
    cache = model._generate_cache
    fn = cache.get(gen)
    if fn is None:
        fn = cache[gen] = jax.jit(functools.partial(_program, model, gen))
    return fn


def generate(model, input_ids=None, attention_mask=None, params=None, prng_key=None, generation_config=None,
             inputs_embeds=None, decoder_input_ids=None, **options):
    """See ``BartForConditionalGeneration.generate`` and ``BartForCausalLM.generate``. ``options`` override
    ``generation_config``, which overrides ``model.generation_config`` (``resolve_generation_config``).

    As the reference: no ``input_ids`` (nor ``inputs_embeds``) means one input of ``bos_token_id``;
    ``inputs_embeds`` (B, S, D) feed the encoder; ``decoder_input_ids`` (B, T), concrete values (not under an
    outer ``jax.jit``), is the decoder sequence to continue (start token put in front when no row begins with
    it). ``return_dict_in_generate=True`` gives ``GenerateOutput`` with the reference's fields (``scores``,
    ``logits``, ``beam_indices``, ``sequences_scores``, encoder attentions / hidden states and the decoder's per
    step; the compiled loop keeps them in buffers of one shape per step, and after a longer decoder prompt joins
    the prefill's values to the first step's, so inside an outer ``jax.jit`` that case is refused)."""
    gen = resolve_generation_config(getattr(model, "generation_config", None), generation_config, options,
                                    model.config)
    causal = model.head == "causal_lm"
    bos = check_generate_source(gen, causal, input_ids is not None, inputs_embeds is not None)
    if bos is not None:
        input_ids = jnp.full((1, 1), bos, jnp.int32)
    source = input_ids if input_ids is not None else inputs_embeds
    eager = not isinstance(source, jax.core.Tracer)
    model._check_generate_inputs(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
    if eager:
        if causal and not isinstance(attention_mask, jax.core.Tracer):
            check_unpadded_prompt(np.asarray(input_ids), None if attention_mask is None else
                                  np.asarray(attention_mask), gen.pad_token_id, gen.eos_token_id)
    prefix = None
    if decoder_input_ids is not None:
        if causal:
            raise ValueError("BartForCausalLM.generate has no decoder_input_ids: the prompt is input_ids")
        if isinstance(decoder_input_ids, jax.core.Tracer):
            raise ValueError("generate(decoder_input_ids=...) needs concrete ids (the prefix length and whether the "
                             "start token is put in front are fixed before compiling); call it outside jax.jit")
        prefix = jnp.asarray(decoder_prompt(np.asarray(decoder_input_ids), gen.decoder_start_token_id), jnp.int32)
    prompt = jnp.shape(input_ids)[1] if causal else (1 if prefix is None else prefix.shape[1])
    gen = resolve_lengths(gen, prompt, options.get("max_length") is not None,
                          model.config.max_position_embeddings)
    network_step_outputs(gen, prompt, "Flax", eager)
    batch_shape = jnp.shape(source)[:2]
    if input_ids is not None:
        input_ids = jnp.asarray(input_ids, jnp.int32)
    if attention_mask is None and input_ids is not None:
        attention_mask = infer_attention_mask(input_ids, gen.pad_token_id, gen.eos_token_id)  # (B, S) or None
    attention_mask = jnp.ones(batch_shape, jnp.int32) if attention_mask is None else \
        jnp.asarray(attention_mask, jnp.int32)
    if prng_key is None:  # unseeded sampling differs per call, as in torch and TF (the reference uses key 0)
        seed = gen.seed if gen.seed is not None else (np.random.randint(0, 2**31 - 1) if gen.do_sample else 0)
        prng_key = jax.random.PRNGKey(seed)
    static = gen.replace(seed=None, use_cache=True)
    result, encoder_out = _compiled(model, static)(model.params if params is None else params, input_ids,
                                                   attention_mask, prng_key, prefix, inputs_embeds)
    if eager:
        result = crop_result(result, prompt, jax.tree_util.tree_map)
    if not gen.return_dict_in_generate:  # the reference's Flax outputs (which also read as the id array)
        if gen.num_beams > 1:
            return FlaxBeamSearchOutput(sequences=result.sequences, scores=result.sequences_scores)
        return (FlaxSampleOutput if gen.do_sample else FlaxGreedySearchOutput)(sequences=result.sequences)
    encoder_fields = (encoder_out.attentions if gen.output_attentions and not causal else None,
                      encoder_out.hidden_states if gen.output_hidden_states and not causal else None)
    return generate_output(result, encoder_fields, gen, prompt, causal, eager, tuple, jnp.concatenate)
