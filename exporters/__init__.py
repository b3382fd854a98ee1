"""Exporters: a trained run -> deployable files (ONNX fp32/fp16/int8, ORT mobile, TensorRT), each proven against
PyTorch on the run's test images and listed with its hash in OUT/manifest.json."""

from .export import export_run, export_runs
from .formats import CPU_FORMATS, FORMATS, TOLERANCES, ExportOptions, Format, Tolerance, parse_formats
from .manifest import load_manifest, verify_all, verify_artifact, write_manifest
from .onnx_export import read_metadata

__all__ = ["CPU_FORMATS", "FORMATS", "TOLERANCES", "ExportOptions", "Format", "Tolerance", "export_run", "export_runs",
           "load_manifest", "parse_formats", "read_metadata", "verify_all", "verify_artifact", "write_manifest"]
