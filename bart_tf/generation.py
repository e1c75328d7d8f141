"""Decoding for the TensorFlow backend: greedy, sampling and beam search over a step function.

The loops know nothing of the network beyond ``step_fn(tokens (N, 1), cache) -> (logits (N, V) float32, cache)``.
Every shape is static (sequences live in a preallocated ``(N, max_length)`` buffer, the KV cache is preallocated,
the loop is a ``tf.while_loop``), so the same code runs eagerly and inside ``tf.function(jit_compile=True)``.
Options and their semantics are ``bart_core.generation.GenerationConfig``; the beam search follows the
reference's vectorised beam search (top ``2 * num_beams`` continuations, finished hypotheses kept in a separate
length-normalised pool, the reference's early-stopping heuristics).

Under ``tf.function`` the result cannot be cropped: ``sequences`` keeps the full ``max_length`` columns (pad
after the end) and ``length`` says how many are used; ``model.generate`` crops when it runs eagerly.
"""

from __future__ import annotations

import weakref
from typing import Callable

import numpy as np
import tensorflow as tf

from bart_core.generation import GenerationConfig
from bart_core.outputs import GenerateOutput

NEG_INF = float("-inf")
BEAM_PENALTY = -1.0e9   # the reference's "impossible" score for placeholder / excluded beams


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
    if gen.eos_token_id is not None and gen.total_min_length > 0:
        scores = tf.where((vocab == gen.eos_token_id) & (cur_len < gen.total_min_length), NEG_INF, scores)
    if gen.forced_bos_token_id is not None:
        forced = tf.where(vocab == gen.forced_bos_token_id, 0.0, NEG_INF)
        scores = tf.where(cur_len == 1, tf.broadcast_to(forced, tf.shape(scores)), scores)
    if gen.forced_eos_token_id is not None:
        forced = tf.where(vocab == gen.forced_eos_token_id, 0.0, NEG_INF)
        scores = tf.where(cur_len == max_length - 1, tf.broadcast_to(forced, tf.shape(scores)), scores)
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


# ============================================================ loops
def _initial_sequences(n, max_length: int, gen: GenerationConfig):
    start = tf.fill([n, 1], gen.decoder_start_token_id)
    return tf.concat([start, tf.fill([n, max_length - 1], gen.pad_token_id)], axis=1)       # (N, L)


def _column(seqs, cur_len):  # (N, L) -> (N, 1): the token at position cur_len - 1
    return tf.gather(seqs, (cur_len - 1)[None], axis=1)


def _write_column(seqs, cur_len, tokens):  # seqs (..., L), tokens (...) -> seqs with column cur_len set
    at = tf.range(seqs.shape[-1]) == cur_len
    return tf.where(at, tokens[..., None], seqs)


def sample_search(step_fn: Callable, cache, batch_size, gen: GenerationConfig, seed=None) -> dict:
    """Greedy (``do_sample=False``) or multinomial sampling. batch_size N rows, already expanded."""
    max_length = gen.total_max_length
    seqs = _initial_sequences(batch_size, max_length, gen)
    unfinished = tf.ones([batch_size], tf.bool)
    scores_ta = tf.TensorArray(tf.float32, size=max_length - 1, element_shape=None)
    seed = tf.zeros([2], tf.int32) if seed is None else tf.cast(seed, tf.int32)
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id

    def body(cur_len, seqs, unfinished, cache, scores_ta):
        logits, cache = step_fn(_column(seqs, cur_len), cache)                          # (N, V)
        scores = process_scores(tf.cast(logits, tf.float32), seqs, cur_len, gen, max_length)
        if gen.do_sample:
            warped = warp_for_sampling(scores, gen)
            step_seed = tf.stack([seed[0], seed[1] + cur_len])
            tokens = tf.random.stateless_categorical(warped, 1, step_seed, dtype=tf.int32)[:, 0]
        else:
            tokens = tf.argmax(scores, axis=-1, output_type=tf.int32)                  # (N,)
        tokens = tf.where(unfinished, tokens, gen.pad_token_id)
        seqs = _write_column(seqs, cur_len, tokens)
        unfinished = unfinished & (tokens != eos)
        if gen.output_scores:
            scores_ta = scores_ta.write(cur_len - 1, scores)
        return cur_len + 1, seqs, unfinished, cache, scores_ta

    def cond(cur_len, seqs, unfinished, cache, scores_ta):
        return (cur_len < max_length) & tf.reduce_any(unfinished)

    cur_len, seqs, _, _, scores_ta = tf.while_loop(
        cond, body, (tf.constant(1), seqs, unfinished, cache, scores_ta), maximum_iterations=max_length - 1)
    return {"sequences": seqs, "length": cur_len, "scores": scores_ta.stack() if gen.output_scores else None,
            "sequences_scores": None}


def reorder_cache(cache, beam_index):
    """Gather the self-attention buffers of the selected parents; cross keys/values are equal across the beams
    of one input, so they stay."""
    layers = tuple((tf.gather(k, beam_index), tf.gather(v, beam_index), ck, cv) for k, v, ck, cv in cache.layers)
    return type(cache)(layers, cache.index)


def beam_search(step_fn: Callable, cache, batch_size, gen: GenerationConfig) -> dict:
    """Beam search with the reference's semantics. The cache holds batch_size * num_beams rows."""
    b, k, max_length = batch_size, gen.num_beams, gen.total_max_length
    keep = 2 * k                                    # continuations kept per step: max(2, 1 + n_eos) * beams
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    lp, early = float(gen.length_penalty), gen.early_stopping

    def length_norm(length):  # float64 pow, as the reference's Python scalar, applied in float32
        return tf.cast(tf.pow(tf.cast(length, tf.float64), lp), tf.float32)

    running = tf.reshape(_initial_sequences(b * k, max_length, gen), [b, k, max_length])   # (B, K, L)
    running_scores = tf.tile(tf.concat([[0.0], tf.fill([k - 1], BEAM_PENALTY)], 0)[None], [b, 1])  # (B, K)
    state = dict(
        running=running, running_scores=running_scores,
        seqs=running, beam_scores=tf.fill([b, k], BEAM_PENALTY),      # finished pool (B, K, L), (B, K)
        finished=tf.zeros([b, k], tf.bool), finished_len=tf.zeros([b, k], tf.int32),
        unsatisfied=tf.ones([b, 1], tf.bool), done=tf.constant(False),
    )
    scores_ta = tf.TensorArray(tf.float32, size=max_length - 1)
    top_mask = tf.range(keep) < k                                                     # (2K,)
    batch_offset = tf.range(b)[:, None] * k                                           # (B, 1)

    def body(cur_len, s, cache, scores_ta):
        flat = tf.reshape(s["running"], [b * k, max_length])
        logits, cache = step_fn(_column(flat, cur_len), cache)                         # (B*K, V)
        vocab_size = logits.shape[-1]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        log_probs = process_scores(log_probs, flat, cur_len, gen, max_length)
        if gen.output_scores:
            scores_ta = scores_ta.write(cur_len - 1, log_probs)
        total = tf.reshape(log_probs, [b, k, vocab_size]) + s["running_scores"][:, :, None]
        top_scores, top_index = tf.math.top_k(tf.reshape(total, [b, k * vocab_size]), keep)   # (B, 2K)
        parent, tokens = top_index // vocab_size, top_index % vocab_size
        top_seqs = _write_column(tf.gather(s["running"], parent, batch_dims=1), cur_len, tokens)  # (B, 2K, L)
        hits = (tokens == eos) | (cur_len + 1 >= max_length)                           # (B, 2K)

        # running beams for the next step: the best K continuations that did not stop
        running_candidates = top_scores + tf.cast(hits, tf.float32) * BEAM_PENALTY
        next_index = tf.math.top_k(running_candidates, k).indices                      # (B, K)
        running = tf.gather(top_seqs, next_index, batch_dims=1)
        running_scores = tf.gather(running_candidates, next_index, batch_dims=1)
        next_parent = tf.gather(parent, next_index, batch_dims=1)

        # finished pool: merge the newly stopped top-K continuations, keep the best K
        just_finished = hits & top_mask[None]
        candidate = top_scores / length_norm(cur_len)
        pool_full = tf.reduce_all(s["finished"], axis=-1, keepdims=True) & (early is True)
        candidate += tf.cast(pool_full, tf.float32) * BEAM_PENALTY
        candidate += tf.cast(~s["unsatisfied"], tf.float32) * BEAM_PENALTY
        candidate += tf.cast(~just_finished, tf.float32) * BEAM_PENALTY
        merged_scores = tf.concat([s["beam_scores"], candidate], axis=1)              # (B, 3K)
        pick = tf.math.top_k(merged_scores, k).indices                                 # (B, K)
        seqs = tf.gather(tf.concat([s["seqs"], top_seqs], 1), pick, batch_dims=1)
        beam_scores = tf.gather(merged_scores, pick, batch_dims=1)
        finished = tf.gather(tf.concat([s["finished"], just_finished], 1), pick, batch_dims=1)
        finished_len = tf.gather(tf.concat([s["finished_len"], tf.fill([b, keep], cur_len + 1)], 1), pick,
                                 batch_dims=1)

        cache = reorder_cache(cache, tf.reshape(next_parent + batch_offset, [-1]))
        cur_len = cur_len + 1
        # can a running beam still beat the worst finished one? (the reference's heuristic)
        best_length = max_length - 1 if (early == "never" and lp > 0.0) else cur_len - 1
        best_running = running_scores[:, :1] / length_norm(best_length)
        worst_finished = tf.where(finished, tf.reduce_min(beam_scores, axis=1, keepdims=True), BEAM_PENALTY)
        unsatisfied = s["unsatisfied"] & tf.reduce_any(best_running > worst_finished, axis=-1, keepdims=True)
        keep_going = (tf.reduce_any(unsatisfied) & ~(tf.reduce_all(finished) & (early is True))
                      & ~tf.reduce_all(hits))
        s = dict(running=running, running_scores=running_scores, seqs=seqs, beam_scores=beam_scores,
                 finished=finished, finished_len=finished_len, unsatisfied=unsatisfied, done=~keep_going)
        return cur_len, s, cache, scores_ta

    def cond(cur_len, s, cache, scores_ta):
        return (cur_len < max_length) & ~s["done"]

    cur_len, s, _, scores_ta = tf.while_loop(cond, body, (tf.constant(1), state, cache, scores_ta),
                                             maximum_iterations=max_length - 1)
    r = gen.num_return_sequences
    return {"sequences": tf.reshape(s["seqs"][:, :r], [b * r, max_length]),
            "length": tf.reduce_max(s["finished_len"][:, :r]),
            "scores": scores_ta.stack() if gen.output_scores else None,
            "sequences_scores": tf.reshape(s["beam_scores"][:, :r], [-1]),
            "steps": cur_len}


# ============================================================ model entry point
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_STEP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> tf.function of one step


class GenerationMixin:
    """``generate`` for ``BartForConditionalGeneration``: encoder once, then a decoding loop on the cache."""

    def _decode_step(self, tokens, cache, encoder_attention_mask):
        """tokens (N, 1), cache -> (logits (N, V) float32, cache advanced by one position)."""
        decoder = self.model.decoder
        out = decoder(inputs_embeds=decoder.embed_tokens(tokens), encoder_attention_mask=encoder_attention_mask,
                      past_key_values=cache, use_cache=True)
        return self.lm_logits(out.last_hidden_state)[:, -1], out.past_key_values

    def _generate_core(self, input_ids, attention_mask, gen: GenerationConfig, seed=None,
                       run_eagerly: bool = False) -> dict:
        """Pure TensorFlow, static shapes: callable eagerly, under tf.function and under XLA."""
        input_ids = tf.cast(input_ids, tf.int32)
        attention_mask = tf.cast(attention_mask, tf.int32)
        encoder_hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        expand = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
        if expand > 1:  # (B, S, D) -> (B * expand, S, D), copies of one input adjacent
            encoder_hidden = tf.repeat(encoder_hidden, expand, axis=0)
            attention_mask = tf.repeat(attention_mask, expand, axis=0)
        rows = tf.shape(encoder_hidden)[0]
        decoder = self.model.decoder
        cache = decoder.init_cache(encoder_hidden, gen.total_max_length)

        step = self._decode_step
        if tf.executing_eagerly() and not run_eagerly:  # the network step as a cached graph, the loop in Python
            step = _STEP_GRAPHS.get(self)
            if step is None:
                step = _STEP_GRAPHS[self] = tf.function(self._decode_step, reduce_retracing=True)

        def step_fn(tokens, cache):  # (N, 1) -> logits (N, V) float32
            return step(tokens, cache, attention_mask)

        if gen.num_beams > 1:
            return beam_search(step_fn, cache, tf.shape(input_ids)[0], gen)
        return sample_search(step_fn, cache, rows, gen, seed)

    def _compiled_generate(self, gen: GenerationConfig, jit_compile: bool):
        """One tf.function per (model, options, mode); it retraces per input shape."""
        functions = _COMPILED.setdefault(self, {})
        key = (gen, jit_compile)
        if key not in functions:
            functions[key] = tf.function(lambda ids, mask, seed: self._generate_core(ids, mask, gen, seed),
                                         jit_compile=jit_compile)
        return functions[key]

    def generate(self, input_ids, attention_mask=None, jit_compile: bool | None = None, run_eagerly: bool = False,
                 **options):
        """Generate ids ``(B * num_return_sequences, L)`` starting with the decoder start token.

        Options are ``bart_core.generation.GenerationConfig`` fields (defaults from the model config).
        ``jit_compile=True`` compiles the whole loop with XLA (one compilation per option set and input shape);
        ``jit_compile=False`` runs the whole loop as a TensorFlow graph; ``None`` (default) runs the loop eagerly
        in Python with the network step (decoder + LM head) as a graph traced once per model and shape, no XLA;
        add ``run_eagerly=True`` to run every op eagerly (debugging: breakpoints and prints inside the network).
        Called inside a ``tf.function``, it traces into the caller and returns the uncropped ``max_length``
        columns.
        """
        gen = GenerationConfig.from_model_config(self.config, **options)
        if gen.total_max_length > self.config.max_position_embeddings:
            raise ValueError(f"max_length {gen.total_max_length} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        eager = tf.executing_eagerly()
        if eager:
            from bart_core.inputs import check_token_ids
            check_token_ids(np.asarray(input_ids), self.config, "input_ids")
        input_ids = tf.cast(tf.convert_to_tensor(input_ids), tf.int32)
        if attention_mask is None:  # the reference infers the mask from padding when pad != eos
            if gen.pad_token_id is not None and gen.pad_token_id != gen.eos_token_id:
                attention_mask = tf.cast(input_ids != gen.pad_token_id, tf.int32)
            else:
                attention_mask = tf.ones_like(input_ids)
        seed = gen.seed if gen.seed is not None else (np.random.randint(0, 2**31 - 1) if gen.do_sample else 0)
        seed = tf.constant([seed, 0], tf.int32)
        if eager and jit_compile is not None:
            out = self._compiled_generate(gen.replace(seed=None), bool(jit_compile))(input_ids, attention_mask,
                                                                                     seed)
        else:
            out = self._generate_core(input_ids, attention_mask, gen, seed, run_eagerly=run_eagerly)
        sequences, scores = out["sequences"], out["scores"]
        if eager:
            length = int(out["length"])
            sequences = sequences[:, :length]
            if scores is not None:
                scores = scores[: int(out.get("steps", out["length"])) - 1]
        if not gen.return_dict_in_generate:
            return sequences
        return GenerateOutput(sequences=sequences, scores=None if scores is None else tuple(tf.unstack(scores)),
                              sequences_scores=out["sequences_scores"])
