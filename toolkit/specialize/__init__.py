"""Specialists: groups of classes, extraction from a generalist, DAFT batch-norm conversion, the comparison."""

from .bn import convert_batchnorm
from .extract import drop_suppressed, extract, suppress, with_new_head
from .groups import load_groups, parse_groups, write_groups
from .partition import partition
from .specialize import INITS, SpecializeConfig, specialize, specialize_group

__all__ = ["INITS", "SpecializeConfig", "convert_batchnorm", "drop_suppressed", "extract", "load_groups",
           "parse_groups", "partition", "specialize", "specialize_group", "suppress", "with_new_head",
           "write_groups"]
