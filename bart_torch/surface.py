"""The reference's model surface shared by the five torch models, none of it network code: embeddings and
sub-networks by role, parameter counts, vocabulary resizing, device and dtype, IO (``bart_torch.io``) and the int8
copy (``bart_torch.quantize``). ``BartPreTrainedModel`` (modeling.py) inherits it, as in the TF and Flax backends."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from bart_core.generation import GENERATIVE_HEADS
from bart_torch import io, quantize


class ModelSurfaceMixin:
    """Needs ``config``, ``head`` and, on the heads, ``model`` (the base model) from the class it is mixed into."""

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Use ``value`` as the token embedding (encoder and decoder share it); a tied ``lm_head`` follows."""
        self._set_input_embeddings(value)
        self.tie_weights()

    def get_output_embeddings(self) -> Optional[nn.Linear]:
        """The LM head (``None`` for the heads without one, as the reference)."""
        return getattr(self, "lm_head", None)

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_encoder(self) -> Optional[nn.Module]:  # BartEncoder
        base = self.base_model
        return getattr(base, "encoder", None)

    def get_decoder(self) -> nn.Module:  # BartDecoder
        return self.base_model.decoder

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters (shared tensors counted once), as the reference's ``num_parameters``."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    @classmethod
    def can_generate(cls) -> bool:
        """True for the heads with ``generate`` (conditional generation, causal LM)."""
        return cls.head in GENERATIVE_HEADS

    @property
    def dummy_inputs(self) -> dict:
        """A small batch the model accepts, as the reference's ``dummy_inputs``."""
        pad = self.config.pad_token_id
        ids = torch.tensor([[0, 6, 10, 4, 2], [0, 8, 12, 2, pad]], device=self.device)
        ids = ids.clamp(max=self.config.vocab_size - 1)
        return {"attention_mask": ids.ne(pad), "input_ids": ids}

    @property
    def base_model(self) -> nn.Module:  # BartModel
        return self if self.head == "base" else self.model

    def _set_input_embeddings(self, emb: nn.Embedding) -> None:
        base = self.base_model
        base.shared = emb
        base.encoder.embed_tokens = emb
        base.decoder.embed_tokens = emb

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Resize the vocabulary to ``new_num_tokens`` rows: kept rows are copied, new rows are the mean of the
        old embeddings; the untied ``lm_head`` and ``final_logits_bias`` (new entries zero) follow."""
        old = self.get_input_embeddings()
        if new_num_tokens == old.num_embeddings:
            return old
        n_keep = min(new_num_tokens, old.num_embeddings)
        new = type(old)(new_num_tokens, old.embedding_dim, old.padding_idx, old.embed_scale)  # BartScaledWordEmbedding
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[:n_keep] = old.weight[:n_keep]
            new.weight[n_keep:] = old.weight.mean(0)
        self._set_input_embeddings(new)
        lm_head = getattr(self, "lm_head", None)
        if lm_head is not None and not self.config.tie_word_embeddings:
            head = nn.Linear(lm_head.in_features, new_num_tokens, bias=False).to(lm_head.weight.device,
                                                                                lm_head.weight.dtype)
            with torch.no_grad():
                head.weight[:n_keep] = lm_head.weight[:n_keep]
                head.weight[n_keep:] = lm_head.weight.mean(0)
            self.lm_head = head
        elif lm_head is not None:
            lm_head.out_features = new_num_tokens  # its weight is re-tied below
        if hasattr(self, "final_logits_bias"):
            bias = self.final_logits_bias
            new_bias = bias.new_zeros((1, new_num_tokens))
            new_bias[:, :n_keep] = bias[:, :n_keep]
            self.register_buffer("final_logits_bias", new_bias)
        self.config.vocab_size = new_num_tokens
        self.tie_weights()
        return new

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ IO (io.py)
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *model_args, **kwargs):
        """Load a checkpoint folder or hub id; keywords as the reference (see ``bart_torch.io.from_pretrained``)."""
        return io.from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Save atomically in the reference layout (see ``bart_torch.io.save_pretrained``)."""
        return io.save_pretrained(self, save_directory, **kwargs)

    def numpy_state_dict(self) -> dict:
        return io.numpy_state_dict(self)

    def load_numpy_state_dict(self, state) -> None:
        io.load_numpy_state_dict(self, state)

    def quantize_dynamic_int8(self):
        """A copy with int8 dynamically quantized ``nn.Linear`` layers (CPU inference)."""
        return quantize.quantize_dynamic_int8(self)
