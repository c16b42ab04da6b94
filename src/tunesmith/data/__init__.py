"""Data: readers (files, directories, built-ins, Hub), the format registry, tokenization with loss masks."""

from tunesmith.data.formats import FORMATS, Format, detect_format, register_format
from tunesmith.data.readers import BUILTIN_DATASETS, read_rows
from tunesmith.data.tokenize import DataReport, PreparedData, prepare_dataset, tokenize_example

__all__ = [
    "BUILTIN_DATASETS",
    "FORMATS",
    "DataReport",
    "Format",
    "PreparedData",
    "detect_format",
    "prepare_dataset",
    "read_rows",
    "register_format",
    "tokenize_example",
]
