"""Decoding as one compiled program: greedy, sampling and beam search in ``lax.while_loop``.

Both generating heads use the same loops, which start from a sequence ``start (N, L0)``: the decoder start token
(``BartForConditionalGeneration``, L0 = 1, after one encoder pass) or the prompt (``BartForCausalLM``, repeated
per beam / returned sequence; its first L0 - 1 tokens prefill the cache in one decoder pass, and the loop's
first step feeds the last prompt token). ``max_length`` and ``min_length`` count the prompt, ``max_new_tokens``
and ``min_new_tokens`` do not; as the reference, a ``max_length`` left at its default of 20 means 20 new tokens
(``bart_core.generation.resolve_lengths``).

Decoding knows the network only through ``step(tokens (N, t), cache) -> (logits (N, V) float32, cache)``
(t = 1 in the loops, L0 - 1 for the prefill) and, for beam search, ``reorder(cache, index (N,)) -> cache``.
Options are ``bart_core.GenerationConfig``; length conventions and the processor order are written there. Beam
search follows the vectorised reference algorithm of transformers 4.57.6 (keep 2 * num_beams candidates, the best
non-finished num_beams continue, only the top num_beams may finish, finished hypotheses ranked by sum log-prob /
generated_length ** length_penalty, the early-stopping heuristic), so tokens are identical to the reference.

Static shapes: the sequence buffer is ``(N, max_length)`` filled with ``pad_token_id``; the program returns it
with the final length. ``generate`` called eagerly cuts the buffer to that length; under an outer ``jax.jit``
the full padded buffer is returned.
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
    bad_word_sequences,
    check_generate_source,
    decoder_prompt,
    refuse_step_outputs,
    resolve_generation_config,
    resolve_lengths,
)
from bart_core.inputs import check_unpadded_prompt, infer_attention_mask
from bart_core.outputs import FlaxBeamSearchOutput, FlaxGreedySearchOutput, FlaxSampleOutput, GenerateOutput

NEG_INF = -jnp.inf
BEAM_FILL = -1.0e9   # the reference's "impossible" beam score


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


# ============================================================================ greedy and sampling
def sample_loop(step: Callable, cache, start, gen: GenerationConfig, key, output_scores: bool, vocab: int):
    """Greedy (arg-max) or sampling continuing start (N, L0); the cache holds positions 0..L0-2.
    Returns (seqs (N, L), length, scores (L - L0, N, V) or None)."""
    (num, prompt), length = start.shape, gen.total_max_length
    seqs = jnp.full((num, length), gen.pad_token_id, jnp.int32).at[:, :prompt].set(start)  # (N, L)
    scores_buf = jnp.zeros((length - prompt, num, vocab), jnp.float32) if output_scores else None
    eos = gen.eos_token_id

    def cond(state):
        cur_len, _, unfinished, *_ = state
        return (cur_len < length) & jnp.any(unfinished)

    def body(state):
        cur_len, seqs, unfinished, cache, key, scores_buf = state
        tokens = lax.dynamic_slice(seqs, (0, cur_len - 1), (num, 1))           # (N, 1)
        logits, cache = step(tokens, cache)                                    # (N, V)
        scores = process_scores(logits, seqs, cur_len, gen)
        if gen.do_sample:
            key, sub = jax.random.split(key)
            nxt = jax.random.categorical(sub, warp_for_sampling(scores, gen), axis=-1)
        else:
            nxt = jnp.argmax(scores, axis=-1)
        nxt = jnp.where(unfinished, nxt, gen.pad_token_id).astype(jnp.int32)  # (N,)
        seqs = lax.dynamic_update_slice(seqs, nxt[:, None], (0, cur_len))
        if eos is not None:
            unfinished = unfinished & (nxt != eos)
        if scores_buf is not None:
            scores_buf = lax.dynamic_update_slice(scores_buf, scores[None], (cur_len - prompt, 0, 0))
        return cur_len + 1, seqs, unfinished, cache, key, scores_buf

    state = (jnp.int32(prompt), seqs, jnp.ones((num,), bool), cache, key, scores_buf)
    cur_len, seqs, _, _, _, scores_buf = lax.while_loop(cond, body, state)
    return seqs, cur_len, scores_buf


# ============================================================================ beam search
def _gather(x, idx):
    """x (B, K, ...), idx (B, J) -> (B, J, ...)."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(step: Callable, reorder: Callable, cache, start, gen: GenerationConfig,
                output_scores: bool, vocab: int, key=None):
    """Beams continuing start (B * num_beams, L0), beams of one input adjacent; the cache holds positions
    0..L0-2. With ``gen.do_sample`` (beam sampling) the 2 * num_beams candidates are drawn without replacement
    from the softmax of the accumulated scores (Gumbel top-k), in the order drawn, as the reference's. Returns (seqs (B * num_return_sequences, L), length, scores (steps, B * nb, V) or None,
    sequence scores (B * nrs,), final cur_len)."""
    nb, length, lp, es = gen.num_beams, gen.total_max_length, gen.length_penalty, gen.early_stopping
    keep = 2 * nb                                                              # one eos token id: (1 + 1) * nb
    prompt = start.shape[1]
    batch = start.shape[0] // nb
    eos = -1 if gen.eos_token_id is None else gen.eos_token_id
    fill = gen.pad_token_id if gen.pad_token_id else (gen.eos_token_id if gen.eos_token_id is not None else -1)
    # python float n ** lp rounded to float32, as the reference divides float32 scores by a python scalar
    denom = jnp.asarray(np.array([float(n) ** lp if n > 0 else 1.0 for n in range(length + 2)], np.float32))
    top_mask = jnp.arange(keep) < nb                                           # (2nb,)
    batch_offset = (jnp.arange(batch) * nb)[:, None]                           # (B, 1)

    running = jnp.full((batch, nb, length), fill, jnp.int32).at[:, :, :prompt].set(
        start.reshape(batch, nb, prompt))                                      # (B, nb, L)
    state = dict(
        cur_len=jnp.int32(prompt), running=running,
        running_scores=jnp.zeros((batch, nb), jnp.float32).at[:, 1:].set(BEAM_FILL),
        seqs=running, beam_scores=jnp.full((batch, nb), BEAM_FILL, jnp.float32),
        lengths=jnp.full((batch, nb), prompt, jnp.int32), finished=jnp.zeros((batch, nb), bool),
        heuristic=jnp.ones((batch, 1), bool), hits=jnp.zeros((batch, keep), bool), done=jnp.array(False),
        cache=cache, key=jax.random.PRNGKey(0) if key is None else key,
        scores=jnp.zeros((length - prompt, batch * nb, vocab), jnp.float32) if output_scores else None)

    def cond(s):
        return ~s["done"]

    def body(s):
        cur_len = s["cur_len"]
        flat = s["running"].reshape(batch * nb, length)                         # (B*nb, L)
        tokens = lax.dynamic_slice(flat, (0, cur_len - 1), (batch * nb, 1))
        logits, cache = step(tokens, s["cache"])                               # (B*nb, V)
        log_probs = process_scores(jax.nn.log_softmax(logits, axis=-1), flat, cur_len, gen)
        key = s["key"]
        if gen.do_sample:
            log_probs = warp_for_sampling(log_probs, gen, keep=2)
        scores_buf = s["scores"]
        if scores_buf is not None:
            scores_buf = lax.dynamic_update_slice(scores_buf, log_probs[None], (cur_len - prompt, 0, 0))
        acc = (log_probs.reshape(batch, nb, vocab) + s["running_scores"][:, :, None]).reshape(batch, nb * vocab)

        # c. top 2*nb continuations among all beams
        if gen.do_sample:  # sampling without replacement: top-k of the scores plus Gumbel noise
            key, sub = jax.random.split(key)
            topk_idx = lax.top_k(acc + jax.random.gumbel(sub, acc.shape), keep)[1]
            topk_scores = jnp.take_along_axis(acc, topk_idx, axis=1)
        else:
            topk_scores, topk_idx = lax.top_k(acc, keep)                       # (B, 2nb)
        from_beam, topk_ids = topk_idx // vocab, (topk_idx % vocab).astype(jnp.int32)
        topk_seqs = _gather(s["running"], from_beam)                           # (B, 2nb, L)
        topk_seqs = lax.dynamic_update_slice(topk_seqs, topk_ids[:, :, None], (0, 0, cur_len))
        # d. which of them stop here (eos or max length)
        hits = (topk_ids == eos) | (cur_len + 1 >= length)                     # (B, 2nb)

        # e. the best non-finished nb continue
        cont_scores = topk_scores + hits.astype(jnp.float32) * BEAM_FILL
        nxt = lax.top_k(cont_scores, nb)[1]                                    # (B, nb)
        running = _gather(topk_seqs, nxt)
        running_scores = _gather(cont_scores, nxt)
        cache = reorder(cache, (_gather(from_beam, nxt) + batch_offset).reshape(-1))

        # f. merge newly finished (only the top nb candidates) into the finished set
        just_finished = hits & top_mask[None]
        fin = topk_scores / denom[cur_len + 1 - prompt]
        if es is True:
            fin = fin + jnp.all(s["finished"], axis=-1, keepdims=True).astype(jnp.float32) * BEAM_FILL
        fin = fin + (~s["heuristic"]).astype(jnp.float32) * BEAM_FILL
        fin = fin + (~just_finished).astype(jnp.float32) * BEAM_FILL
        merged_scores = jnp.concatenate([s["beam_scores"], fin], axis=1)       # (B, 3nb)
        best = lax.top_k(merged_scores, nb)[1]
        seqs = _gather(jnp.concatenate([s["seqs"], topk_seqs], axis=1), best)
        beam_scores = _gather(merged_scores, best)
        lengths = _gather(jnp.concatenate([s["lengths"], jnp.full((batch, keep), cur_len + 1)], axis=1), best)
        finished = _gather(jnp.concatenate([s["finished"], just_finished], axis=1), best)

        # g. stopping: can a running beam still beat the worst finished one?
        cur_len = cur_len + 1
        best_len = (length - prompt) if (es == "never" and lp > 0.0) else (cur_len - prompt)
        best_running = running_scores[:, :1] / denom[best_len]
        worst = jnp.where(finished, jnp.min(beam_scores, axis=1, keepdims=True), BEAM_FILL)
        heuristic = s["heuristic"] & jnp.any(best_running > worst, axis=-1, keepdims=True)
        open_beam = ~(jnp.all(finished) & (es is True))
        go_on = jnp.any(heuristic) & open_beam & ~jnp.all(hits)
        return dict(cur_len=cur_len, running=running, running_scores=running_scores, seqs=seqs,
                    beam_scores=beam_scores, lengths=lengths, finished=finished, heuristic=heuristic, hits=hits,
                    done=~go_on, cache=cache, scores=scores_buf, key=key)

    s = lax.while_loop(cond, body, state)
    nrs = gen.num_return_sequences
    seqs = s["seqs"][:, :nrs].reshape(batch * nrs, length)
    out_len = jnp.max(s["lengths"][:, :nrs])
    return seqs, out_len, s["scores"], s["beam_scores"][:, :nrs].reshape(-1), s["cur_len"]


# ============================================================================ the compiled program
def _seq2seq_start(model, gen: GenerationConfig, params, input_ids, attention_mask, group: int, prefix=None,
                   inputs_embeds=None):
    """Encode once, precompute cross-attention keys/values. Returns (start (N, L0), cache, decoder); start is the
    decoder start token, or ``prefix`` (B, L0) repeated per hypothesis."""
    module = model.module
    enc = module.apply({"params": params}, input_ids, attention_mask, inputs_embeds=inputs_embeds,
                       method="encode", deterministic=True)
    num = attention_mask.shape[0] * group                                      # hypotheses; they share enc rows
    start = jnp.full((num, 1), gen.decoder_start_token_id, jnp.int32) if prefix is None else \
        jnp.repeat(prefix, group, axis=0)
    cache = model.init_cache(num, gen.total_max_length - 1, enc.last_hidden_state, params=params)

    def decoder(tokens, cache):
        return module.apply({"params": params}, tokens, None, attention_mask, cache=cache, method="decode",
                            deterministic=True)
    return start, cache, decoder


def _causal_start(model, gen: GenerationConfig, params, input_ids, attention_mask, group: int, prefix=None,
                  inputs_embeds=None):
    """The prompt repeated per hypothesis, no encoder. Returns (start (N, L0), empty cache, decoder)."""
    start = jnp.repeat(input_ids, group, axis=0)                               # (N, L0)
    cache = model.init_cache(start.shape[0], gen.total_max_length - 1)

    def decoder(tokens, cache):
        return model.module.apply({"params": params}, tokens, cache=cache, deterministic=True)
    return start, cache, decoder


def _program(model, gen: GenerationConfig, params, input_ids, attention_mask, key, prefix=None, inputs_embeds=None):
    """Prepare the start sequence and cache, prefill the cache with start[:, :-1], run the decoding loop; all
    inside one jit."""
    group = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
    prepare = _causal_start if model.head == "causal_lm" else _seq2seq_start
    start, cache, decoder = prepare(model, gen, params, input_ids, attention_mask, group, prefix, inputs_embeds)
    vocab = model.config.vocab_size

    def step(tokens, cache):
        dec, logits = decoder(tokens, cache)                                   # logits (N, t, V)
        return logits[:, -1].astype(jnp.float32), dec.past_key_values

    if start.shape[1] > 1:
        cache = step(start[:, :-1], cache)[1]                                  # prompt positions 0..L0-2
    out = {}
    if gen.num_beams > 1:
        from bart_flax.modeling import reorder_cache
        seqs, length, scores, seq_scores, cur_len = beam_search(step, reorder_cache, cache, start, gen,
                                                                gen.output_scores, vocab, key)
        out.update(sequences_scores=seq_scores, steps=cur_len - start.shape[1])
    else:
        seqs, length, scores = sample_loop(step, cache, start, gen, key, gen.output_scores, vocab)
        out["steps"] = length - start.shape[1]
    out.update(sequences=seqs, length=length, scores=scores)
    return out


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
    it). ``output_attentions`` / ``output_hidden_states`` / ``output_logits`` are refused: the compiled loop
    does not keep per-step network outputs (the PyTorch backend returns them)."""
    gen = resolve_generation_config(getattr(model, "generation_config", None), generation_config, options,
                                    model.config)
    refuse_step_outputs(gen, "Flax", "the decoding loop is one compiled jax program that keeps no per-step "
                                     "network outputs")
    causal = model.head == "causal_lm"
    bos = check_generate_source(gen, causal, input_ids is not None, inputs_embeds is not None)
    if bos is not None:
        input_ids = jnp.full((1, 1), bos, jnp.int32)
    source = input_ids if input_ids is not None else inputs_embeds
    eager = not isinstance(source, jax.core.Tracer)
    from bart_flax.modeling import check_inputs
    check_inputs(model.config, causal, input_ids=input_ids, attention_mask=attention_mask,
                 inputs_embeds=inputs_embeds)
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
    out = _compiled(model, static)(model.params if params is None else params, input_ids, attention_mask, prng_key,
                                   prefix, inputs_embeds)
    seqs, scores = out["sequences"], out["scores"]
    if eager:
        length = int(out["length"])
        seqs = seqs[:, :length]
        if scores is not None:
            scores = scores[:int(out["steps"])]
    if not gen.return_dict_in_generate:  # the reference's Flax outputs (which also read as the id array)
        if gen.num_beams > 1:
            return FlaxBeamSearchOutput(sequences=seqs, scores=out["sequences_scores"])
        return (FlaxSampleOutput if gen.do_sample else FlaxGreedySearchOutput)(sequences=seqs)
    return GenerateOutput(sequences=seqs, scores=None if scores is None else tuple(scores),
                          sequences_scores=out.get("sequences_scores") if gen.output_scores else None)
