"""Decoding for the TensorFlow backend: greedy, sampling and beam search over a step function.

The loops know nothing of the network beyond ``step_fn(tokens (N, T), state) -> (logits (N, V) float32, state)``
(logits of the last position; ``state`` the self-attention cache). They continue a ``start`` sequence ``(N, L0)``:
the decoder start token for the encoder-decoder, the prompt for the decoder-only model, whose first ``L0 - 1``
tokens are already in the cache; ``max_length`` and ``min_length`` count the whole sequence, start included.
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

from bart_core.generation import (
    GenerationConfig,
    bad_word_sequences,
    check_generate_source,
    decoder_prompt,
    refuse_step_outputs,
    resolve_generation_config,
    resolve_lengths,
)
from bart_core.inputs import check_unpadded_prompt, infer_attention_mask
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


# ============================================================ loops
def _initial_sequences(start, max_length: int, gen: GenerationConfig):
    """(N, L0) -> (N, max_length): the start sequence, then padding."""
    fill = tf.fill([tf.shape(start)[0], max_length - start.shape[1]], gen.pad_token_id)
    return tf.concat([start, fill], axis=1)                                                  # (N, L)


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


def sample_search(step_fn: Callable, cache, start, gen: GenerationConfig, seed=None) -> dict:
    """Greedy (``do_sample=False``) or multinomial sampling. start (N, L0): N rows, already expanded."""
    max_length, prompt = gen.total_max_length, _prompt_length(start)
    seqs = _initial_sequences(start, max_length, gen)                                       # (N, L)
    unfinished = tf.ones([tf.shape(start)[0]], tf.bool)
    scores_ta = tf.TensorArray(tf.float32, size=max_length - prompt, element_shape=None)
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
            scores_ta = scores_ta.write(cur_len - prompt, scores)
        return cur_len + 1, seqs, unfinished, cache, scores_ta

    def cond(cur_len, seqs, unfinished, cache, scores_ta):
        return (cur_len < max_length) & tf.reduce_any(unfinished)

    cur_len, seqs, _, _, scores_ta = tf.while_loop(
        cond, body, (tf.constant(prompt), seqs, unfinished, cache, scores_ta),
        maximum_iterations=max_length - prompt)
    return {"sequences": seqs, "length": cur_len, "scores": scores_ta.stack() if gen.output_scores else None,
            "sequences_scores": None, "steps": cur_len - prompt}


def split_cache(cache):
    """KVCache -> (loop state, rebuild): the state is the self-attention buffers ``(k, v)`` per layer and the index;
    ``rebuild(state)`` adds back the cross keys/values, which never change while decoding (and are None for the
    decoder-only model: a ``tf.while_loop`` cannot carry None)."""
    cross = tuple(layer[2:] for layer in cache.layers)

    def rebuild(state):
        return type(cache)(tuple(kv + c for kv, c in zip(state[0], cross)), state[1])

    return (tuple(layer[:2] for layer in cache.layers), cache.index), rebuild


def reorder_cache(state, beam_index):
    """Gather the self-attention buffers (N, H, capacity, hd) of the selected parents (loop state of split_cache)."""
    return tuple((tf.gather(k, beam_index), tf.gather(v, beam_index)) for k, v in state[0]), state[1]


def beam_search(step_fn: Callable, cache, start, gen: GenerationConfig, seed=None) -> dict:
    """Beam search with the reference's semantics. start (B * num_beams, L0), beams of one input adjacent. With
    ``gen.do_sample`` (beam sampling) the 2 * num_beams candidates are drawn without replacement from the softmax
    of the accumulated scores (Gumbel top-k, stateless in ``seed``), in the order drawn, as the reference's."""
    seed = tf.zeros([2], tf.int32) if seed is None else tf.cast(seed, tf.int32)
    k, max_length, prompt = gen.num_beams, gen.total_max_length, _prompt_length(start)
    b = tf.shape(start)[0] // k
    keep = 2 * k                                    # continuations kept per step: max(2, 1 + n_eos) * beams
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    lp, early = float(gen.length_penalty), gen.early_stopping

    def length_norm(length):  # float64 pow, as the reference's Python scalar, applied in float32
        return tf.cast(tf.pow(tf.cast(length, tf.float64), lp), tf.float32)

    running = tf.reshape(_initial_sequences(start, max_length, gen), [b, k, max_length])    # (B, K, L)
    running_scores = tf.tile(tf.concat([[0.0], tf.fill([k - 1], BEAM_PENALTY)], 0)[None], [b, 1])  # (B, K)
    state = dict(
        running=running, running_scores=running_scores,
        seqs=running, beam_scores=tf.fill([b, k], BEAM_PENALTY),      # finished pool (B, K, L), (B, K)
        finished=tf.zeros([b, k], tf.bool), finished_len=tf.zeros([b, k], tf.int32),
        unsatisfied=tf.ones([b, 1], tf.bool), done=tf.constant(False),
    )
    scores_ta = tf.TensorArray(tf.float32, size=max_length - prompt)
    top_mask = tf.range(keep) < k                                                     # (2K,)
    batch_offset = tf.range(b)[:, None] * k                                           # (B, 1)

    def body(cur_len, s, cache, scores_ta):
        flat = tf.reshape(s["running"], [b * k, max_length])
        logits, cache = step_fn(_column(flat, cur_len), cache)                         # (B*K, V)
        vocab_size = logits.shape[-1]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        log_probs = process_scores(log_probs, flat, cur_len, gen, max_length)
        if gen.do_sample:
            log_probs = warp_for_sampling(log_probs, gen, min_tokens_to_keep=2)
        if gen.output_scores:
            scores_ta = scores_ta.write(cur_len - prompt, log_probs)
        total = tf.reshape(log_probs, [b, k, vocab_size]) + s["running_scores"][:, :, None]
        total = tf.reshape(total, [b, k * vocab_size])
        if gen.do_sample:  # sampling without replacement: top-k of the scores plus Gumbel noise
            u = tf.random.stateless_uniform(tf.shape(total), tf.stack([seed[0], seed[1] + cur_len]),
                                            minval=np.finfo(np.float32).tiny, maxval=1.0)
            top_index = tf.math.top_k(total - tf.math.log(-tf.math.log(u)), keep).indices
            top_scores = tf.gather(total, top_index, batch_dims=1)
        else:
            top_scores, top_index = tf.math.top_k(total, keep)                                 # (B, 2K)
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
        candidate = top_scores / length_norm(cur_len + 1 - prompt)                     # generated tokens
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
        best_length = (max_length if (early == "never" and lp > 0.0) else cur_len) - prompt
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

    cur_len, s, _, scores_ta = tf.while_loop(cond, body, (tf.constant(prompt), state, cache, scores_ta),
                                             maximum_iterations=max_length - prompt)
    r = gen.num_return_sequences
    return {"sequences": tf.reshape(s["seqs"][:, :r], [b * r, max_length]),
            "length": tf.reduce_max(s["finished_len"][:, :r]),
            "scores": scores_ta.stack() if gen.output_scores else None,
            "sequences_scores": tf.reshape(s["beam_scores"][:, :r], [-1]),
            "steps": cur_len - prompt}


# ============================================================ model entry point
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_STEP_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> tf.function of one step


class GenerationMixin:
    """``generate`` for ``BartForConditionalGeneration``: encoder once, then a decoding loop on the cache from the
    decoder start token. ``CausalGenerationMixin`` overrides the two model-specific hooks, ``_prepare_generation``
    (input checks and lengths) and ``_start_decoding`` (start sequence and cache)."""

    def _decode_step(self, tokens, cache, encoder_attention_mask):
        """tokens (N, T), cache -> (logits (N, V) float32 of the last position, cache advanced by T positions)."""
        decoder = self.model.decoder
        out = decoder(inputs_embeds=decoder.embed_tokens(tokens), encoder_attention_mask=encoder_attention_mask,
                      past_key_values=cache, use_cache=True)
        return self.lm_logits(out.last_hidden_state[:, -1:])[:, 0], out.past_key_values

    def _prepare_generation(self, gen: GenerationConfig, input_ids, attention_mask, options,
                            prefix=None) -> GenerationConfig:
        """Check the inputs; ``gen`` with lengths counted from the decoder start token (and ``prefix``)."""
        return resolve_lengths(gen, 1 if prefix is None else int(prefix.shape[1]),
                               options.get("max_length") is not None, self.config.max_position_embeddings)

    def _start_decoding(self, input_ids, attention_mask, gen: GenerationConfig, expand: int, prefix=None,
                        inputs_embeds=None):
        """-> (start (N, L0): decoder start tokens or the ``prefix`` (B, L0) repeated, cache with the cross
        keys/values, encoder mask (N, S)), N = B * expand."""
        encoder_hidden = self.model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                            inputs_embeds=inputs_embeds).last_hidden_state
        if expand > 1:  # (B, S, D) -> (B * expand, S, D), copies of one input adjacent
            encoder_hidden = tf.repeat(encoder_hidden, expand, axis=0)
            attention_mask = tf.repeat(attention_mask, expand, axis=0)
        cache = self.model.decoder.init_cache(encoder_hidden, gen.total_max_length)
        if prefix is None:
            start = tf.fill([tf.shape(encoder_hidden)[0], 1], gen.decoder_start_token_id)        # (N, 1)
        else:
            start = tf.repeat(prefix, expand, axis=0) if expand > 1 else prefix                  # (N, L0)
        return start, cache, attention_mask

    def _generate_core(self, input_ids, attention_mask, gen: GenerationConfig, seed=None,
                       run_eagerly: bool = False, prefix=None, inputs_embeds=None) -> dict:
        """Pure TensorFlow, static shapes: callable eagerly, under tf.function and under XLA. ``gen`` has absolute
        lengths (``_prepare_generation``)."""
        input_ids = None if input_ids is None else tf.cast(input_ids, tf.int32)
        attention_mask = tf.cast(attention_mask, tf.int32)
        expand = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
        extra = {} if prefix is None and inputs_embeds is None else {"prefix": prefix, "inputs_embeds": inputs_embeds}
        start, cache, encoder_mask = self._start_decoding(input_ids, attention_mask, gen, expand, **extra)

        step = self._decode_step
        if tf.executing_eagerly() and not run_eagerly:  # the network step as a cached graph, the loop in Python
            step = _STEP_GRAPHS.get(self)
            if step is None:
                step = _STEP_GRAPHS[self] = tf.function(self._decode_step, reduce_retracing=True)
        state, rebuild = split_cache(cache)

        def step_fn(tokens, state):  # (N, T) -> logits (N, V) float32, state advanced by T positions
            logits, cache = step(tokens, rebuild(state), encoder_mask)
            return logits, split_cache(cache)[0]

        if _prompt_length(start) > 1:  # prefill all prompt tokens but the last, which the loop's first step feeds
            _, state = step_fn(start[:, :-1], state)
        if gen.num_beams > 1:
            return beam_search(step_fn, state, start, gen, seed)
        return sample_search(step_fn, state, start, gen, seed)

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
        ``output_attentions`` / ``output_hidden_states`` / ``output_logits`` are refused: the loop is one graph
        that keeps no per-step network outputs (the PyTorch backend returns them).
        """
        gen = resolve_generation_config(getattr(self, "generation_config", None), generation_config, options,
                                        self.config)
        refuse_step_outputs(gen, "TensorFlow", "the decoding loop is one graph that keeps no per-step network "
                                               "outputs")
        eager = tf.executing_eagerly()
        causal = self.head == "causal_lm"
        bos = check_generate_source(gen, causal, input_ids is not None, inputs_embeds is not None)
        if bos is not None:
            input_ids = tf.fill([1, 1], bos)
        from bart_tf.modeling import check_inputs
        check_inputs(self.config, causal, input_ids=input_ids, attention_mask=attention_mask,
                     inputs_embeds=inputs_embeds)
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
        seed = gen.seed if gen.seed is not None else (np.random.randint(0, 2**31 - 1) if gen.do_sample else 0)
        seed = tf.constant([seed, 0], tf.int32)
        extra = {} if prefix is None and inputs_embeds is None else {"prefix": prefix, "embeds": inputs_embeds}
        if eager and jit_compile is not None:
            out = self._compiled_generate(gen.replace(seed=None), bool(jit_compile))(input_ids, attention_mask,
                                                                                     seed, **extra)
        else:
            out = self._generate_core(input_ids, attention_mask, gen, seed, run_eagerly=run_eagerly,
                                      prefix=prefix, inputs_embeds=inputs_embeds)
        sequences, scores = out["sequences"], out["scores"]
        if eager:
            sequences = sequences[:, :int(out["length"])]
            if scores is not None:
                scores = scores[:int(out["steps"])]
        if not gen.return_dict_in_generate:
            return sequences
        return GenerateOutput(sequences=sequences, scores=None if scores is None else tuple(tf.unstack(scores)),
                              sequences_scores=out["sequences_scores"])


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
        mask), N = B * expand."""
        start = tf.repeat(input_ids, expand, axis=0) if expand > 1 else input_ids                # (N, L0)
        cache = self.model.decoder.init_cache(None, gen.total_max_length, batch_size=tf.shape(start)[0])
        return start, cache, None
