"""What a task's exporter gives the one export orchestration (exporters/export.py).

A task exporter is a module with `open_runs(run_dirs, formats, out_dir, opts) -> list[ExportModel]` (every check
that needs only the runs, before anything is written), `prepare(models, out_dir)` (set-up inside the directory's
lock) and `export_one(model, formats, opts, work, out_dir, reporter) -> list[entry]` (build every format of one
model in `work`, each parity-checked; the entries are published by the orchestration, never by the exporter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import FORMATS


@dataclass(frozen=True)
class ExportModel:
    name: str  # names its artifacts: <name><suffix>
    run: Path  # the resolved run directory the manifest records
    source: Any  # what the task's exporter needs of the run (a toolkit.runs.Run, a detection run.json)


def shipped(formats: list[str]) -> set[str]:
    """Formats whose files are published: those requested, plus the ONNX file each TensorRT engine is built from
    (for rebuilding it on the device)."""
    return set(formats) | {FORMATS[f].source for f in formats if FORMATS[f].runtime == "tensorrt"}
