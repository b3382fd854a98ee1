"""The Task interface and its registry (a subclass with a `name` registers itself, as Olive's passes do)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UserError, unknown_name
from ..io import read_json
from ..progress import NULL, Reporter

#: name -> the task; filled by Task subclasses as they are defined.
TASKS: dict[str, Task] = {}
#: What run.json, a manifest entry or a report row without a "task" key is (runs written before detection existed).
DEFAULT_TASK = "classify"


class Task:
    """What one task does differently. Results come back as data or as the lines a command prints."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the key of the task's headline figure in results and report rows' `accuracy`
    metric_label: ClassVar[str]  # how reports and plots name that figure
    label: ClassVar[str]  # how messages name its runs ("a detection run")
    default_formats: ClassVar[tuple[str, ...]]  # what `bench RUN` and the pipeline export when none are named
    refused_formats: ClassVar[Mapping[str, str]] = {}  # format -> why this task does not export it
    exportable_formats: ClassVar[tuple[str, ...] | None] = None  # None: every row of the formats table
    bundled: ClassVar[bool] = True  # whether the on-device runner (numpy + the runtime) can measure its artifacts
    checkpoint_file: ClassVar[str]  # the finished model inside a run directory
    min_group_size: ClassVar[int] = 2  # classes a specialist serves at least
    partition_methods: ClassVar[tuple[str, ...]]  # how `partition` may form groups for this task

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            TASKS[cls.name] = cls()

    def open_run(self, path: str | Path) -> dict[str, Any]:
        """run.json of a finished run of this task (a UserError naming what to do otherwise)."""
        raise NotImplementedError

    def train(self, options: dict[str, Any], out: Path, resume: bool, reporter: Reporter = NULL) -> list[str]:
        """Train a generalist from the `edgespec train` options; returns the summary lines."""
        raise NotImplementedError

    def evaluate(self, run: Path, which: str, split: str | None, device: str) -> list[str]:
        """Score a run on its saved split (written into the run); returns the lines to print."""
        raise NotImplementedError

    def specialize(self, run: Path, out: Path, *, groups_file: Path | None, group: str | None,
                   options: dict[str, Any], from_run: Path | None, resume: bool,
                   reporter: Reporter = NULL) -> list[str]:
        """One specialist per group (or only `group`, into `out` itself); returns the lines to print."""
        raise NotImplementedError

    def compress(self, runs: list[Path], out: Path, options: dict[str, Any], resume: bool,
                 reporter: Reporter = NULL, measure: Any = None) -> list[str]:
        """Pruned copies of `runs` (runs of kind "compress"), into `out` for one run, out/<run>-compressed for
        several; `options` are `edgespec compress`'s (None: not given). `measure(parent, pruned, chw) -> speedup`
        times two models side by side (the CLI injects it; toolkit core does not time). Returns the lines to print."""
        raise UserError(f"compress is not available for {self.label} runs")

    # -- the pipeline's stages (toolkit/pipeline.py) ---------------------------------------------------------
    def pipeline_sections(self) -> tuple[type, type]:
        """The schemas of a pipeline file's `train` and `specialize` sections for this task."""
        raise NotImplementedError

    def pipeline_train(self, cfg: Any, out: Path, root: Path, resume: bool, reporter: Reporter = NULL) -> None:
        """Train the generalist of a pipeline into `out` (`root`: the pipeline's directory, for generated data)."""
        raise NotImplementedError

    def partition(self, run: Path, section: Any) -> dict[str, list[str]]:
        """Groups of the generalist's classes as a pipeline's `partition` section asks (named groups, the data's
        own groups, or a method of partitioning that the task offers)."""
        info = self.open_run(run)
        if section.method not in self.partition_methods:
            raise UserError(f"partition method {section.method!r} is not available for {self.label} runs; choose "
                            f"{' or '.join(self.partition_methods)}, or give named groups")
        from ..specialize.groups import check_groups

        if section.named:
            return check_groups(section.named, info["classes"], "partition.named", self.min_group_size)
        if section.method == "data":
            return check_groups(info.get("groups") or None, info["classes"], f"the groups of {info['data']}",
                                self.min_group_size)
        return self._partition(run, section)

    def _partition(self, run: Path, section: Any) -> dict[str, list[str]]:
        raise NotImplementedError

    def pipeline_specialize(self, run: Path, groups: dict[str, list[str]], groups_file: Path, out: Path, cfg: Any,
                            resume: bool, reporter: Reporter = NULL) -> None:
        """One specialist per group of `groups` (written in `groups_file`) into out/<group>."""
        raise NotImplementedError

    def check_formats(self, formats: list[str]) -> None:
        """Refuse, in one line, a format this task does not export."""
        for f in formats:
            if f in self.refused_formats:
                raise UserError(self.refused_formats[f])
            if self.exportable_formats is not None and f not in self.exportable_formats:
                # a format row added to the table later, without a builder for this task
                raise UserError(f"{f} is not available for {self.label} runs; export "
                                f"{', '.join(self.exportable_formats)}")


    def bench_formats(self, formats: list[str]) -> list[str]:
        """Of the formats device profiles deploy, those `edgespec bench RUN` exports a run of this task as: every
        format where the task exports any, else only its defaults (formats it exports on request stay so)."""
        if self.exportable_formats is None:
            return [f for f in formats if f not in self.refused_formats]
        return [f for f in formats if f in self.default_formats]


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return TASKS[name]


def task_of(source: str | Path | Mapping[str, Any]) -> Task:
    """The task of a run directory, a run.json mapping, a manifest entry or a report row."""
    if isinstance(source, Mapping):
        return task_named(str(source.get("task") or DEFAULT_TASK))
    from ..runs import RUN_FILE  # run.json; imported here: toolkit.runs loads torch, task lookups by name need not

    path = Path(source) / RUN_FILE
    try:
        info = read_json(path, "run file") if path.is_file() else {}
    except UserError:  # unreadable: the default task's opening explains what is wrong with it
        info = {}
    return task_named(str(info.get("task") or DEFAULT_TASK) if isinstance(info, dict) else DEFAULT_TASK)
