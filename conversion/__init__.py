"""Checkpoint conversion between every format the library reads, with verified numerical equivalence.

``convert(src, dst, to=...)`` streams tensors through numpy (no framework needed); ``verify_conversion`` /
``verify_directory`` prove the result computes the same numbers in every installed backend;
``inspect_checkpoint`` summarises a checkpoint. The ``bart-convert`` command wraps all three (``conversion.cli``).
"""

from conversion.convert import ConversionError, ConversionResult, convert, detect_head, open_source
from conversion.inspect import inspect_checkpoint
from conversion.verify import VerifyReport, verify_conversion, verify_directory

__all__ = ["ConversionError", "ConversionResult", "VerifyReport", "convert", "detect_head", "inspect_checkpoint",
           "open_source", "verify_conversion", "verify_directory"]
