"""Framework-neutral pieces of the library: config, tokenizer, name table, checkpoint IO, decoding options,
the denoising data pipeline. Imports numpy and file-format libraries only."""

from bart_core.checkpoint import (
    CheckpointError,
    LoadReport,
    align_state_dict,
    export_state_dict,
    load_state_dict,
    read_safetensors,
    write_safetensors,
)
from bart_core.collator import DataCollatorForSeq2Seq
from bart_core.config import BartConfig
from bart_core.generation import GenerationConfig
from bart_core.inputs import check_token_ids, shift_tokens_right
from bart_core.names import ParamSpec, param_table

__all__ = [
    "BartConfig", "BartTokenizer", "BartTokenizerFast", "BatchEncoding", "CheckpointError", "DataCollatorForSeq2Seq",
    "TokenizerFileError", "GenerationConfig", "LoadReport",
    "ParamSpec", "align_state_dict", "check_token_ids", "export_state_dict", "load_state_dict", "param_table",
    "read_safetensors", "shift_tokens_right", "write_safetensors",
]


def __getattr__(name):  # the tokenizer imports `tokenizers`; load it on first use
    if name in ("BartTokenizer", "BartTokenizerFast", "BatchEncoding", "TokenizerFileError"):
        from bart_core import tokenizer
        return getattr(tokenizer, name)
    raise AttributeError(name)
