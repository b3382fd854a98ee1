"""Tasks: what differs between classification and detection, and nothing else (after Ultralytics' task_map).

Every command reaches the task of a run through `task_of(run)` and asks it; no module outside toolkit/tasks/ (and
the task implementations under toolkit/detect/) asks whether a run is a detection run. A task registers itself by
subclassing `Task` with a `name`; `TASKS` maps names to the one instance of each. Exporters and benchmarks keep
their per-task parts in registries keyed by the same names (exporters/export.py, benchmarks/scoring.py).
"""

from __future__ import annotations

from .base import TASKS, Task, task_named, task_of
from .classify import ClassifyTask
from .detect import DetectTask

__all__ = ["TASKS", "ClassifyTask", "DetectTask", "Task", "task_named", "task_of"]
