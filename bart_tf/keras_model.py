"""The ``keras.Model`` conventions of the five models: config serialization, ``export`` and ``summary``.

- ``get_config`` / ``from_config``: the ``BartConfig`` as a plain dict (``BartConfig.to_dict``) and the
  ``generation_config`` (``GenerationConfig.to_dict``), so ``model.save("m.keras")``,
  ``keras.models.load_model("m.keras")`` and ``keras.callbacks.ModelCheckpoint("m.keras")`` work (the classes are
  registered under the package ``bart3``; ``import bart_tf`` before loading).
- ``export(path)``: a SavedModel of the forward pass whose ``serving_default`` returns named tensors
  (``bart_tf.export.export_forward``); ``bart_tf.export.export_generate`` exports ``generate``.
- ``summary()``: one row per main sub-layer (shared embedding, encoder, decoder, heads) under its canonical name,
  with its output shape and parameter count (each variable counted once: the tied embedding in its first row).
"""

from __future__ import annotations

import keras
import numpy as np

from bart_core.config import BartConfig
from bart_core.generation import GenerationConfig
from bart_tf.io import _policy_scope


def _output_shapes(config: BartConfig) -> dict:
    """Last canonical name component -> output shape of that sub-layer (None: batch and sequence sizes)."""
    d, v = config.d_model, config.vocab_size
    return {"shared": (None, None, d), "embed_tokens": (None, None, d), "encoder": (None, None, d),
            "decoder": (None, None, d), "lm_head": (None, None, v), "classification_head": (None, config.num_labels),
            "qa_outputs": (None, None, 2), "final_logits_bias": (1, v)}


class KerasModelMixin:
    # ------------------------------------------------------------------ .keras files, load_model, ModelCheckpoint
    """Keras conventions for the five models: ``get_config`` / ``from_config`` (``.keras`` files,
    ``load_model``, ``ModelCheckpoint``), ``export`` with named outputs, and a ``summary`` listing the
    sub-layers."""
    def get_config(self) -> dict:
        gen = getattr(self, "generation_config", None)
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "config": self.config.to_dict(),
                "generation_config": None if gen is None else gen.to_dict()}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        bart = BartConfig.from_dict(config.pop("config"))
        gen = config.pop("generation_config", None)
        policy = config.get("dtype")
        policy = None if policy is None else keras.dtype_policies.get(policy).name
        with _policy_scope(policy):  # the sub-layers read the global policy (a mixed policy reaches them all)
            model = cls(bart, **config)
        if gen is not None:
            model.generation_config = GenerationConfig.from_dict(gen)
        return model

    # ------------------------------------------------------------------ serving
    def export(self, filepath, format: str = "tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """``format="tf_saved_model"`` (default): a SavedModel whose ``serving_default`` runs the forward pass and
        returns a dict of named tensors (``bart_tf.export.export_forward``; inputs ``input_ids``,
        ``attention_mask`` and, for encoder-decoder heads, ``decoder_input_ids`` / ``decoder_attention_mask``, or
        those of ``input_signature``). Works right after construction. Other formats go to ``keras.Model.export``."""
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature,
                                  **kwargs)
        if kwargs:
            raise TypeError(f"{type(self).__name__}.export: unexpected arguments {sorted(kwargs)}")
        from bart_tf.export import export_forward
        return export_forward(self, filepath, input_signature=input_signature, verbose=verbose)

    # ------------------------------------------------------------------ summary
    def _summary_rows(self) -> list:
        """[(canonical name, type, output shape, variables, layer)]: the sub-layers of ``model`` (shared embedding,
        encoder, decoder), the heads, the model's own variables (``final_logits_bias``) and a tied LM head."""
        rows = []
        for name, child in self._named_children():
            if name == "model":
                rows += [(f"model.{sub}", layer) for sub, layer in child._named_children()]
            else:
                rows.append((name, child))
        shapes = _output_shapes(self.config)
        seen, out = set(), []
        for name, layer in rows:
            own = [v for v in layer.weights if id(v) not in seen]
            seen.update(id(v) for v in own)
            out.append((name, type(layer).__name__, shapes.get(name.rsplit(".", 1)[-1]), own, layer))
        for v in self.weights:  # the model's own variables
            if id(v) not in seen:
                seen.add(id(v))
                vname = v.path.rsplit("/", 1)[-1]
                out.append((vname, "Variable", tuple(v.shape), [v], None))
        if hasattr(self, "lm_logits") and getattr(self, "lm_head", None) is None:
            tied = "model.decoder.embed_tokens" if self.head == "causal_lm" else "model.shared"
            out.append(("lm_head", f"tied to {tied}", shapes["lm_head"], [], None))
        return out

    def summary(self, line_length=None, print_fn=None, expand_nested=False, show_trainable=False):
        """Keras' summary table with one row per main sub-layer (see the module docstring); ``expand_nested`` adds
        the layers inside each, down to the dense and norm layers, indented under their parent. ``print_fn`` receives the
        whole text."""
        import rich.console
        import rich.table

        width = line_length or 88
        table = rich.table.Table("Layer (type)", "Output Shape", rich.table.Column("Param #", justify="right"),
                                 *(["Trainable"] if show_trainable else []), width=width, show_lines=True)

        def add_row(label, kind, shape, variables):
            count = sum(int(np.prod(v.shape)) for v in variables)
            shape_text = "?" if shape is None else "(" + ", ".join(str(s) for s in shape) + ")"
            row = [f"{label} ({kind})", shape_text, f"{count:,}"]
            if show_trainable:
                row.append("-" if not variables else "Y" if all(v.trainable for v in variables) else "N")
            table.add_row(*row)

        def add_nested(layer, depth):  # children under their canonical name within the parent
            for child_name, child in getattr(layer, "_named_children", lambda: [])():
                add_row("   " * depth + "└ " + child_name, type(child).__name__, None, child.weights)
                add_nested(child, depth + 1)

        for name, kind, shape, variables, layer in self._summary_rows():
            add_row(name, kind, shape, variables)
            if expand_nested and layer is not None:
                add_nested(layer, 1)

        def total(variables):
            unique = {id(v): v for v in variables}.values()
            return sum(int(np.prod(v.shape)) for v in unique)

        trainable, frozen = total(self.trainable_weights), total(self.non_trainable_weights)
        console = rich.console.Console(highlight=False, force_terminal=False, color_system=None, width=width + 2)
        with console.capture() as capture:
            console.print(f'Model: "{self.name}"')
            console.print(table)
            console.print(f" Total params: {trainable + frozen:,}")
            console.print(f" Trainable params: {trainable:,}")
            console.print(f" Non-trainable params: {frozen:,}")
        (print_fn or print)(capture.get())
