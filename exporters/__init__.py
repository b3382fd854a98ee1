"""Exporters: a trained run -> deployable files (ONNX fp32/fp16/int8, ORT mobile, TensorRT), each proven against
PyTorch on the run's test images and listed with its hash in OUT/manifest.json.

Names load lazily (PEP 562): `import exporters.formats` from the CLI must not import torch, or every edgespec
command would spend seconds on it before main() can handle Ctrl-C."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"export_run": "export", "export_runs": "export", "CPU_FORMATS": "formats", "FORMATS": "formats",
          "TOLERANCES": "formats", "ExportOptions": "formats", "Format": "formats", "Tolerance": "formats",
          "parse_formats": "formats", "load_manifest": "manifest", "verify_all": "manifest",
          "verify_artifact": "manifest", "write_manifest": "manifest", "read_metadata": "onnx_export"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'exporters' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
