"""Decoding, separated from the network.

The search loops (``greedy_search`` for arg-max and sampling, ``beam_search``) see the model only through a step
function ``step(tokens, cache) -> (logits, cache)``: ``tokens`` is ``(N, t)`` (the whole sequence when there is no
cache, else the last token), ``logits`` ``(N, V)`` float32 for the last position. Beam search also gets
``reorder(cache, rows) -> cache``. Options are ``bart_core.generation.GenerationConfig``; its docstring fixes the
length conventions and the processor order (repetition penalty, no-repeat n-gram, min length, forced BOS, forced
EOS; then temperature, top-k, top-p when sampling).

Beam search follows the reference (transformers 4.57.6) rules, so results are token-identical:

* each step ranks the ``2 * num_beams`` best continuations of all beams by summed log-probability;
* a continuation that ends in EOS, or reaches ``max_length``, is a finished hypothesis only if it is among the
  first ``num_beams`` of those candidates; its score is ``sum_logprobs / generated_len ** length_penalty`` where
  ``generated_len`` counts the tokens after the start token, EOS included; the best ``num_beams`` finished
  hypotheses are kept;
* the ``num_beams`` best unfinished candidates continue;
* a batch item is done when its best running beam cannot beat its worst kept hypothesis (with
  ``early_stopping=False`` the running score is normalised by the current length; with ``"never"`` and a
  positive length penalty by ``max_length``), or, with ``early_stopping=True``, as soon as it has ``num_beams``
  hypotheses; every hypothesis is scored with the length at which it finished;
* outputs are padded with ``pad_token_id`` to the longest returned hypothesis.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bart_core.generation import (
    GenerationConfig,
    bad_word_sequences,
    check_generate_source,
    decoder_prompt,
    resolve_generation_config,
    resolve_lengths,
)
from bart_core.inputs import check_unpadded_prompt, infer_attention_mask
from bart_core.outputs import BaseModelOutput, GenerateOutput

NEG_INF = float("-inf")
BEAM_PENALTY = -1.0e9  # score given to slots that must not be chosen (as the reference)

StepFn = Callable[[torch.Tensor, object], tuple]


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
        if not bool(hit.any()):
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


def greedy_search(step: StepFn, start: torch.Tensor, cache, gen: GenerationConfig, procs: list,
                  generator: Optional[torch.Generator] = None, output_scores: bool = False):
    """Arg-max (or sampling when ``gen.do_sample``). start: (N, L0). Returns (sequences (N, L), scores)."""
    n, cur = start.shape
    max_length = gen.max_length
    seqs = start.new_full((n, max_length), gen.pad_token_id)  # (N, max_length), written in place
    seqs[:, :cur] = start
    unfinished = torch.ones(n, dtype=torch.bool, device=start.device)
    eos, pad = gen.eos_token_id, gen.pad_token_id
    scores_out = []
    tokens = start
    while True:
        logits, cache = step(tokens, cache)  # (N, V)
        scores = _apply(procs, seqs[:, :cur], logits.float())
        if output_scores:
            scores_out.append(scores)
        if gen.do_sample:
            nxt = torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(-1)  # (N,)
        if eos is not None:
            nxt = torch.where(unfinished, nxt, pad)
        seqs[:, cur] = nxt
        cur += 1
        if eos is not None:
            unfinished &= nxt != eos
        if cur >= max_length or not bool(unfinished.any()):
            break
        tokens = seqs[:, cur - 1:cur] if cache is not None else seqs[:, :cur]
    return seqs[:, :cur], tuple(scores_out) if output_scores else None


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather along dim 1: t (B, K, ...), idx (B, J) -> (B, J, ...)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def beam_search(step: StepFn, reorder: Callable, start: torch.Tensor, cache, gen: GenerationConfig,
                procs: list, output_scores: bool = False, generator: Optional[torch.Generator] = None):
    """start: (B * num_beams, L0), beams of one input adjacent. Returns (sequences, scores, sequence scores).
    With ``gen.do_sample`` (beam sampling) the ``2 * num_beams`` candidates are drawn without replacement from
    the softmax of the accumulated scores instead of taken as the best, as the reference."""
    beams, lp, early, max_length = gen.num_beams, gen.length_penalty, gen.early_stopping, gen.max_length
    n, prompt = start.shape
    b = n // beams
    eos = gen.eos_token_id
    device = start.device
    k = 2 * beams  # candidates kept per step: enough for num_beams unfinished ones even if num_beams end in EOS
    fill = (gen.pad_token_id or eos) if eos is not None else -1
    alive = start.new_full((b, beams, max_length), fill)  # (B, beams, max_length) running hypotheses
    alive[:, :, :prompt] = start.view(b, beams, prompt)
    alive_scores = torch.zeros((b, beams), dtype=torch.float32, device=device)
    alive_scores[:, 1:] = BEAM_PENALTY  # all beams start identical: only the first may expand
    done = alive.clone()  # (B, beams, max_length) finished hypotheses, best first
    done_scores = torch.full((b, beams), BEAM_PENALTY, dtype=torch.float32, device=device)
    done_set = torch.zeros((b, beams), dtype=torch.bool, device=device)
    done_len = torch.zeros((b, beams), dtype=torch.long, device=device)  # generated tokens per hypothesis
    improvable = torch.ones((b, 1), dtype=torch.bool, device=device)
    first_beams = torch.arange(k, device=device) < beams  # (K,)
    batch_base = (torch.arange(b, device=device) * beams)[:, None]  # (B, 1)
    scores_out = []
    cur = prompt
    while True:
        flat = alive[:, :, :cur].reshape(n, cur)
        logits, cache = step(flat[:, -1:] if cache is not None and cur > prompt else flat, cache)  # (N, V)
        vocab = logits.shape[-1]
        logp = _apply(procs, flat, F.log_softmax(logits.float(), dim=-1))  # (N, V)
        if output_scores:
            scores_out.append(logp)
        total = (logp.view(b, beams, vocab) + alive_scores[:, :, None]).view(b, beams * vocab)
        if gen.do_sample:  # candidates in the order drawn (the reference's)
            cand_idx = torch.multinomial(F.softmax(total, dim=-1), k, generator=generator)  # (B, K)
            cand_scores = total.gather(1, cand_idx)
        else:
            cand_scores, cand_idx = torch.topk(total, k)  # (B, K)
        cand_beam, cand_tok = cand_idx // vocab, cand_idx % vocab
        cand = _take(alive, cand_beam)  # (B, K, max_length)
        cand[:, :, cur] = cand_tok
        ends = cand_tok == eos if eos is not None else torch.zeros_like(cand_tok, dtype=torch.bool)
        if cur + 1 >= max_length:
            ends = torch.ones_like(ends)
        # the num_beams best candidates that did not end continue
        cont_scores = cand_scores + ends.to(torch.float32) * BEAM_PENALTY
        keep = torch.topk(cont_scores, beams)[1]  # (B, beams)
        alive, alive_scores = _take(cand, keep), _take(cont_scores, keep)
        rows = _take(cand_beam + batch_base, keep).view(-1)  # (N,) source row of each continuing beam
        # candidates among the first num_beams that ended become hypotheses, scored with their length
        newly = ends & first_beams[None, :]
        normed = cand_scores / ((cur + 1 - prompt) ** lp)
        normed += (done_set.all(-1, keepdim=True) & (early is True)).to(torch.float32) * BEAM_PENALTY
        normed += (~improvable).to(torch.float32) * BEAM_PENALTY
        normed += (~newly) * BEAM_PENALTY
        pool_scores = torch.cat((done_scores, normed), dim=1)  # (B, beams + K)
        best = torch.topk(pool_scores, beams)[1]
        done = _take(torch.cat((done, cand), dim=1), best)
        done_scores = _take(pool_scores, best)
        done_set = _take(torch.cat((done_set, newly), dim=1), best)
        done_len = _take(torch.cat((done_len, torch.full_like(cand_tok, cur + 1 - prompt)), dim=1), best)
        if cache is not None:
            cache = reorder(cache, rows)
        cur += 1
        # can a running beam still beat the worst kept hypothesis?
        horizon = (max_length if early == "never" and lp > 0.0 else cur) - prompt
        best_running = alive_scores[:, :1] / (horizon ** lp)
        worst_done = torch.where(done_set, done_scores.min(dim=1, keepdim=True)[0], BEAM_PENALTY)
        improvable = improvable & (best_running > worst_done).any(-1, keepdim=True)
        if not bool(improvable.any()) or (early is True and bool(done_set.all())) or bool(ends.all()):
            break
    ret = gen.num_return_sequences
    length = prompt + int(done_len[:, :ret].max())
    sequences = done[:, :ret, :length].reshape(b * ret, length)
    return sequences, tuple(scores_out) if output_scores else None, done_scores[:, :ret].reshape(-1)


# ============================================================================ model glue


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
    with ctx:
        return _generate(model, input_ids, attention_mask, gen, generator, encoder_outputs,
                         max_length_given=options.get("max_length") is not None, inputs_embeds=inputs_embeds,
                         decoder_input_ids=decoder_input_ids)


def _generate(model, input_ids, attention_mask, gen: GenerationConfig, generator, encoder_outputs,
              max_length_given: bool, inputs_embeds=None, decoder_input_ids=None):
    from bart_torch.modeling import BartForCausalLM, KVCache, check_inputs

    config = model.config
    causal = isinstance(model, BartForCausalLM)
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
    check_inputs(config, causal, input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs)
    if attention_mask is None and input_ids is not None:
        attention_mask = infer_attention_mask(input_ids, gen.pad_token_id, gen.eos_token_id)  # (B, S) or None
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing padded: the encoder's unmasked path
    if gen.seed is not None and generator is None and gen.do_sample:
        generator = torch.Generator(device=device).manual_seed(gen.seed)
    expand = gen.num_beams if gen.num_beams > 1 else gen.num_return_sequences
    dtype = model.get_input_embeddings().weight.dtype

    if causal:
        if decoder_input_ids is not None:
            raise ValueError("BartForCausalLM.generate has no decoder_input_ids: the prompt is input_ids")
        check_unpadded_prompt(input_ids.cpu().numpy(), None if attention_mask is None else
                              attention_mask.cpu().numpy(), gen.pad_token_id, gen.eos_token_id)
        start = input_ids.repeat_interleave(expand, dim=0)  # (N, L0)
        decoder = model.model.decoder
        enc_hidden = enc_mask = None
    else:
        if encoder_outputs is None:
            encoder_outputs = model.model.encoder(  # pads are masked in cross-attention
                input_ids=input_ids, attention_mask=attention_mask, skip_padding=True,
                output_attentions=gen.output_attentions, output_hidden_states=gen.output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0] if isinstance(
                encoder_outputs, (tuple, list)) else encoder_outputs)
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
        decoder = model.model.decoder

    gen = resolve_lengths(gen, start.shape[1], max_length_given, config.max_position_embeddings)
    procs = build_processors(gen)

    record = {"logits": [], "attentions": [], "cross_attentions": [], "hidden_states": []}

    def step(tokens: torch.Tensor, cache):
        """tokens: (N, t) -> logits (N, V) of the last position, cache."""
        out = decoder(input_ids=tokens, encoder_hidden_states=enc_hidden if cache is None or
                      cache.cross_k[0] is None else None, encoder_attention_mask=enc_mask, past_key_values=cache,
                      use_cache=cache is not None, check_inputs=False, output_attentions=gen.output_attentions,
                      output_hidden_states=gen.output_hidden_states)
        logits = model.logits(out.last_hidden_state[:, -1, :])
        if gen.output_logits:
            record["logits"].append(logits.float())
        if gen.output_attentions:
            record["attentions"].append(out.attentions)
            record["cross_attentions"].append(out.cross_attentions)
        if gen.output_hidden_states:
            record["hidden_states"].append(out.hidden_states)
        return logits, out.past_key_values

    cache = KVCache.allocate(config, start.shape[0], gen.max_length - 1, device, dtype) if gen.use_cache else None
    if gen.num_beams > 1:
        cross_fixed: list = []  # decided after the first step, when the cross keys/values exist

        def reorder(c: KVCache, rows: torch.Tensor) -> KVCache:
            if not cross_fixed:
                cross_fixed.append(c.cross_rows_repeat(gen.num_beams))
            return c.reorder(rows, cross=not cross_fixed[0])

        seqs, scores, seq_scores = beam_search(step, reorder, start, cache, gen, procs,
                                               output_scores=gen.output_scores, generator=generator)
    else:
        seqs, scores = greedy_search(step, start, cache, gen, procs, generator,
                                     output_scores=gen.output_scores)
        seq_scores = None
    if not gen.return_dict_in_generate:
        return seqs
    out = GenerateOutput(sequences=seqs, scores=scores, sequences_scores=seq_scores,
                         logits=tuple(record["logits"]) if gen.output_logits else None)
    steps = {"attentions": tuple(record["attentions"]) if gen.output_attentions else None,
             "hidden_states": tuple(record["hidden_states"]) if gen.output_hidden_states else None}
    if causal:
        out.attentions, out.hidden_states = steps["attentions"], steps["hidden_states"]
    else:
        out.decoder_attentions, out.decoder_hidden_states = steps["attentions"], steps["hidden_states"]
        if gen.output_attentions:
            out.cross_attentions = tuple(record["cross_attentions"])
            out.encoder_attentions = encoder_outputs.attentions
        if gen.output_hidden_states:
            out.encoder_hidden_states = encoder_outputs.hidden_states
    return out
