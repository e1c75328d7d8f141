"""The padding-free encoder that ``generate`` uses: ``encode_packed(encoder, input_ids, attention_mask)``.

The non-padded tokens of all rows are laid end to end in one ``(1, N, D)`` sequence, so every token-wise product
(projections, feed-forward, layer norms) skips the padded positions; the encoder's own layers run on it with a
``PackedRows`` mask, under which attention runs row by row on each row's own tokens. Non-padded positions get the
padded computation's numbers (to float32 rounding); padded positions come back as zeros, which is right only for
callers that never read them (generate: the decoder's cross-attention masks them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from bart_core.outputs import BaseModelOutput


class PackedRows:
    """The attention mask of a packed sequence: ``lengths`` runs of tokens, each attending only within itself."""

    def __init__(self, lengths: list):
        self.lengths = lengths

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float,
               dropout_p: float) -> torch.Tensor:
        """q/k/v: (1, H, N, hd) -> (1, H, N, hd)."""
        parts = [F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scaling)  # (1, H, n, hd)
                 for qs, ks, vs in zip(q.split(self.lengths, 2), k.split(self.lengths, 2), v.split(self.lengths, 2))]
        return torch.cat(parts, dim=2)


def encode_packed(encoder, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                  output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutput:
    """``encoder(input_ids, attention_mask)`` (a ``BartEncoder``) with padded positions skipped and returned as
    zeros. Falls back to the plain call when there is nothing to skip or packing does not apply: training,
    tracing, attention maps or hidden states requested, a row without any token, or tensors off the CPU (the
    row-by-row attention would launch kernels per row on an accelerator, and ``.tolist()`` of the lengths waits
    for it; not measured on a GPU, so the padded encoder, the reference's, stays there)."""
    plain = dict(input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions,
                 output_hidden_states=output_hidden_states)
    if (attention_mask is None or output_attentions or output_hidden_states or encoder.training
            or input_ids is None or input_ids.device.type != "cpu"
            or torch.jit.is_tracing() or torch.compiler.is_compiling()):
        return encoder(**plain)
    keep = attention_mask.bool()  # (B, S)
    lengths = keep.sum(1).tolist()
    if min(lengths) == 0 or bool(keep.all()):
        return encoder(**plain)
    padded = encoder.embed(input_ids)  # (B, S, D)
    hidden, mask = padded[keep][None], PackedRows(lengths)  # (1, N, D)
    for layer in encoder.layers:
        hidden, _ = layer(hidden, mask)
    hidden = padded.new_zeros(padded.shape).masked_scatter_(keep[..., None], hidden)  # (B, S, D), zeros where padded
    return BaseModelOutput(last_hidden_state=hidden)
