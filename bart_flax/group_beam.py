"""Diverse (group) beam search for the Flax backend, token-identical to the reference's.

A translation of ``bart_torch.group_beam`` (rules in its docstring: the reference's group beam search, groups of
``group_size`` beams that each run a beam search of their own, the later groups of a step penalised for the
tokens the earlier ones picked). One ``lax.while_loop`` with static shapes, as ``generation.beam_search``; the
groups are a Python loop unrolled in its body. ``SearchResult.beam_indices`` is None (the reference's group beam
indices mix up the groups).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bart_core.generation import (
    BEAM_FILL,
    GenerationConfig,
    SearchResult,
    bound_length,
    length_normalizers,
    num_candidates,
)
from bart_flax.generation import NEG_INF, _gather, _record, _step_buffers, _write_column, process_scores


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
