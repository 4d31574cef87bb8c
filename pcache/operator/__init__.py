"""Helpers both operator interfaces use (the CLI and the console), kept in the engine so neither UI
package imports the other: the prewarm prefixes-file reader and the KV-usage levels."""

from pcache.operator.kv_levels import KV_CRITICAL, KV_WARN, KvLevel, kv_level
from pcache.operator.prefixes_file import PrefixFileError, read_prefixes, read_text_file

__all__ = [
    "KV_CRITICAL",
    "KV_WARN",
    "KvLevel",
    "PrefixFileError",
    "kv_level",
    "read_prefixes",
    "read_text_file",
]
