"""Bundles: the benchmark packed for the real device, run there, and its figures merged back into the reports."""

from .pack import BundleInfo, make_bundle
from .safe_extract import UnsafeArchiveError, safe_extract

__all__ = ["BundleInfo", "UnsafeArchiveError", "make_bundle", "safe_extract"]
