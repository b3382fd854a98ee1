"""Benchmarks: run exported artifacts per device profile (measured or estimated) and write the reports."""

from .bench import BenchConfig, bench, serve_status
from .report import REPORT_SCHEMA, load_report, validate_report, write_reports
from .timing import TimingConfig

__all__ = ["REPORT_SCHEMA", "BenchConfig", "TimingConfig", "bench", "load_report", "serve_status", "validate_report",
           "write_reports"]
