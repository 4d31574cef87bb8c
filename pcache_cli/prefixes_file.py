"""Kept for branches that still import from here: the reader lives in ``pcache.operator``."""

from pcache.operator.prefixes_file import (
    PrefixFileError,
    detect_format,
    parse_prefixes,
    read_prefixes,
    read_text_file,
)

__all__ = ["PrefixFileError", "detect_format", "parse_prefixes", "read_prefixes", "read_text_file"]
