"""Compact specialists: structured pruning (Torch-Pruning) with distillation, methods.md 4."""

from .compress import CompressConfig, compress, compress_run
from .distill import distillation_loss

__all__ = ["CompressConfig", "compress", "compress_run", "distillation_loss"]
