"""`edgespec pipeline`: train -> partition -> specialize -> compress -> export -> bench from one YAML file.

Resumable: each stage records in OUT/pipeline.json a hash of its inputs (its config section plus the hashes of
the upstream outputs it reads) and a hash of its outputs. A stage is skipped when its input hash is unchanged
and its outputs still hash the same; otherwise it reruns (an interrupted training resumes), and because the
downstream input hashes include its output hash, everything that depends on it reruns too.

Layout under OUT (default `runs/` in the working directory):
  generalist/             the trained generalist run
  groups.yaml             the partition
  specialists/<group>/    one specialist run per group
  compressed/<group>-compressed/  each specialist pruned and distilled (section compress, enabled by default)
  export/                 artifacts and manifest.json
  report/                 report.json, report.md, report.html, junit.xml
  pipeline.json           stage hashes, status and wall times
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchmarks.bench import BenchConfig  # a pydantic schema only; the benchmark itself loads lazily
from exporters.formats import DEFAULT_FORMATS

from .compress import CompressConfig
from .errors import UserError, describe_validation
from .io import parse_yaml, read_json, read_yaml, sha256_file, write_json
from .progress import NULL, Reporter
from .specialize import SpecializeConfig
from .tasks import TASKS, task_named
from .tasks.base import DEFAULT_TASK
from .train import TrainConfig

log = logging.getLogger(__name__)
STATE_FILE = "pipeline.json"
STAGES = ("train", "partition", "specialize", "compress", "export", "bench")

DEFAULT_CONFIG = """\
# edgespec pipeline: the embedded default (digits, seconds per stage on a laptop CPU)
train:
  data: digits
  model: smallcnn
  epochs: 15
  image_size: 32         # the 8x8 digits upsampled: at 8x8 ONNX Runtime's per-call overhead hides any pruning
partition:
  method: confusion      # confusion | weights | random
  groups: 3
specialize:
  epochs: 6
compress:
  macs_ratio: 0.33       # each specialist pruned to a third of its MACs, then distilled from it
  epochs: 12
  lr: 0.002
export:
  formats: [onnx, onnx-fp16, onnx-int8, ort]
bench:
  devices: [host-cpu, jetson-orin-nano, jetson-agx-orin]
  timing:
    runs: 1000
    time_limit_s: 1.0
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PartitionStage(_Strict):
    method: Literal["confusion", "weights", "random", "data"] = Field(
        "confusion", description="confusion | weights | random (classifiers), data: the data's own groups")
    groups: int | None = Field(3, ge=2, description="number of groups (or give group_size)")
    group_size: int | None = Field(None, ge=2, description="classes per group instead of a count")
    named: dict[str, list[str]] | None = Field(None, description="explicit groups {name: [class, ...]}")
    seed: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1, description="specialize only the first N groups")

    @model_validator(mode="after")
    def _one_way(self) -> PartitionStage:
        if self.group_size is not None and "groups" in self.model_fields_set:
            raise ValueError("give either groups or group_size, not both")
        if self.group_size is not None:
            self.groups = None
        return self


class ExportStage(_Strict):
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS), min_length=1)
    options: dict[str, Any] = Field(default_factory=dict, description="export options (see `edgespec export`)")


class CompressStage(CompressConfig):
    enabled: bool = Field(True, description="compress every specialist (false: skip the stage)")


class PipelineConfig(_Strict):
    """A pipeline file. Its task is chosen in the train section (`train: {task: detect, ...}`, default classify);
    the train and specialize sections then follow that task's schemas (`config_class`)."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    partition: PartitionStage = Field(default_factory=PartitionStage)
    specialize: SpecializeConfig = Field(default_factory=SpecializeConfig)
    compress: CompressStage = Field(default_factory=CompressStage)
    export: ExportStage = Field(default_factory=ExportStage)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    task: ClassVar[str] = DEFAULT_TASK


_CONFIGS: dict[str, type[PipelineConfig]] = {DEFAULT_TASK: PipelineConfig}


def config_class(task: str) -> type[PipelineConfig]:
    """PipelineConfig with the train and specialize sections of `task`."""
    if task not in _CONFIGS:
        from pydantic import create_model

        train_schema, specialize_schema = task_named(task).pipeline_sections()
        cls = create_model(f"PipelineConfig_{task}", __base__=PipelineConfig,
                           train=(train_schema, ...), specialize=(specialize_schema, Field(
                               default_factory=specialize_schema)))
        cls.task = task
        _CONFIGS[task] = cls
    return _CONFIGS[task]


def load_config(path: str | Path | None) -> tuple[PipelineConfig, str]:
    """The config at `path` (or the embedded default) and where it came from."""
    if path is None:
        data, where = parse_yaml(DEFAULT_CONFIG, "the embedded default pipeline config"), "the embedded default"
    else:
        data, where = read_yaml(path, "pipeline config", "pass a YAML file or nothing for the default"), str(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(f"pipeline config {where} must be a mapping with sections {', '.join(STAGES)}")
    train = data.get("train")
    task = DEFAULT_TASK
    if isinstance(train, dict) and "task" in train:
        task = str(train["task"])
        if task not in TASKS:
            raise UserError(f"invalid pipeline config {where}: train.task {task!r} is not one of {', '.join(TASKS)}")
        data = {**data, "train": {k: v for k, v in train.items() if k != "task"}}
    try:
        cfg = config_class(task).model_validate(data)
    except ValidationError as exc:
        detail = describe_validation(exc, show_input=False,
                                     allowed=lambda parent: "" if parent else f" (sections: {', '.join(STAGES)})")
        raise UserError(f"invalid pipeline config {where}: {detail}; see `edgespec pipeline --show-default` "
                        "for every key") from None
    preflight(cfg, where)
    return cfg, where


#: export_runs' own parameters: an `export.options` key of these names would collide with them.
_EXPORT_ARGS = ("run_dirs", "formats", "out_dir", "device_profile", "reporter")


def preflight(cfg: PipelineConfig, where: str) -> None:
    """Check what the later sections only meet after training (export formats and options, bench devices) before
    the first stage runs: a typo in `export.options` must not cost a training run."""
    from exporters.export import make_options, resolve_formats
    from exporters.formats import check_options

    from .devices import load_profile

    task = task_named(cfg.task)
    try:
        clash = sorted(k for k in cfg.export.options if k in _EXPORT_ARGS)
        if clash:
            raise UserError(f"{clash[0]!r} is not an export option (it is set by the pipeline itself); drop it")
        formats = cfg.export.formats if "formats" in cfg.export.model_fields_set else list(task.default_formats)
        requested, options = resolve_formats(formats, None,
                                             {k: v for k, v in cfg.export.options.items() if v is not None})
        check_options(requested, make_options(**options))
        task.check_formats(requested)
    except UserError as exc:
        fix = "" if "; " in str(exc) else "; see `edgespec export --help` for the options"
        raise UserError(f"invalid pipeline config {where}: export: {exc}{fix}") from None
    for name in cfg.bench.devices:
        try:
            load_profile(name)
        except UserError as exc:
            raise UserError(f"invalid pipeline config {where}: bench.devices: {exc}") from None


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _files_hash(paths: list[Path]) -> str | None:
    if not paths or not all(p.is_file() for p in paths):
        return None
    return _hash([sha256_file(p) for p in paths])


class Pipeline:
    def __init__(self, cfg: PipelineConfig, out: str | Path, reporter: Reporter = NULL,
                 on_stage: Callable[[str, str, float], None] | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.reporter = reporter
        self.on_stage = on_stage or (lambda stage, status, seconds: None)
        self.gen_dir = self.out / "generalist"
        self.groups_file = self.out / "groups.yaml"
        self.spec_root = self.out / "specialists"
        self.comp_root = self.out / "compressed"
        self.export_dir = self.out / "export"
        self.report_dir = self.out / "report"
        self.state: dict[str, Any] = {"stages": {}}

    # -- state ---------------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        path = self.out / STATE_FILE
        if path.is_file():
            data = read_json(path, "pipeline state")
            if isinstance(data, dict) and isinstance(data.get("stages"), dict):
                self.state = data
                if "owned" not in data and data["stages"]:  # written before ownership was recorded: its layout
                    self.state["owned"] = [self._rel(p) for p in self._layout()]

    def _save(self) -> None:
        write_json(self.out / STATE_FILE, self.state)

    def _stage(self, name: str, inputs: str, outputs: Callable[[], list[Path]],
               run: Callable[[bool], None], clear: list[Path]) -> str:
        """Run or skip one stage; returns its output hash."""
        rec = self.state["stages"].get(name, {})
        current = _files_hash(outputs())
        if rec.get("inputs") == inputs and rec.get("status") == "complete" and current and \
                current == rec.get("outputs"):
            self.on_stage(name, "unchanged, skipped", 0.0)
            return current
        resume = rec.get("inputs") == inputs and rec.get("status") == "running"
        self._check_owned(clear)
        if not resume:
            for p in clear:  # outputs of a different configuration: this pipeline wrote them, it replaces them
                self._remove_own(p, rec.get("files"))
        self.state["owned"] = sorted({*self.state.get("owned", []), *(self._rel(p) for p in clear)})
        self.state["stages"][name] = {"inputs": inputs, "status": "running"}
        for later in STAGES[STAGES.index(name) + 1:]:  # stale now; what they wrote stays listed as theirs
            old = self.state["stages"].pop(later, None) or {}
            if old.get("files") is not None:
                self.state["stages"][later] = {"status": "stale", "files": old["files"]}
        self._save()
        t0 = time.perf_counter()
        run(resume)
        seconds = time.perf_counter() - t0
        digest = _files_hash(outputs())
        if digest is None:
            raise UserError(f"pipeline stage {name} finished without its outputs in {self.out}; rerun the pipeline")
        self.state["stages"][name] = {"inputs": inputs, "status": "complete", "outputs": digest,
                                      "seconds": round(seconds, 2), "files": self._files(clear)}
        self._save()
        self.on_stage(name, "resumed and done" if resume else "done", seconds)
        return digest

    # -- what this pipeline owns --------------------------------------------------------------------------------
    def _layout(self) -> list[Path]:
        return [self.gen_dir, self.groups_file, self.spec_root, self.export_dir, self.report_dir]

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.out).as_posix()

    def _check_owned(self, paths: list[Path]) -> None:
        """A stage writes only paths this pipeline created: a user's earlier run in OUT/generalist is refused, never
        replaced."""
        owned = set(self.state.get("owned", []))
        for p in paths:
            if (p.exists() or p.is_symlink()) and self._rel(p) not in owned:
                raise UserError(f"{p} exists and was not written by this pipeline (pipeline.json does not list it); "
                                f"move it elsewhere or choose another --out")

    def _files(self, paths: list[Path]) -> list[str]:
        """Every file a finished stage left in its outputs: what a later rerun may remove again."""
        found = []
        for p in paths:
            items = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
            found += [self._rel(q) for q in items if q.name != ".lock"]
        return found

    def _remove_own(self, p: Path, files: list[str] | None) -> None:
        """Remove a stage's earlier outputs: the files it recorded (anything added since stays); an interrupted
        stage recorded none, and its directory, which this pipeline created moments before, goes whole."""
        if not (p.exists() or p.is_symlink()):
            return
        if files is None:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            return
        mine = {self.out / f for f in files}
        for q in sorted(mine, key=lambda q: len(q.parts), reverse=True):
            if q == p or p in q.parents:
                q.unlink(missing_ok=True)
        if p.is_dir():
            for d in sorted((d for d in p.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()  # empty ones only
            if all(q.name == ".lock" for q in p.iterdir()):
                (p / ".lock").unlink(missing_ok=True)
                p.rmdir()

    # -- stages --------------------------------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[str]]:
        from .specialize import load_groups

        task = task_named(self.cfg.task)
        groups = load_groups(self.groups_file, task.open_run(self.gen_dir)["classes"], task.min_group_size)
        limit = self.cfg.partition.limit
        return dict(list(groups.items())[:limit]) if limit else groups

    def _spec_dirs(self) -> list[Path]:
        if not self.groups_file.is_file():
            return []
        return [self.spec_root / name for name in self._groups()]

    def _comp_dirs(self) -> list[Path]:
        if not self.cfg.compress.enabled or self.cfg.task != DEFAULT_TASK or not self.groups_file.is_file():
            return []
        from .compress.compress import SUFFIX

        return [self.comp_root / f"{name}{SUFFIX}" for name in self._groups()]

    def run(self) -> dict[str, Any]:
        from .io import DirLock

        self.out.mkdir(parents=True, exist_ok=True)
        with DirLock(self.out, "pipeline directory"):
            self._load_state()
            return self._run()

    def _run(self) -> dict[str, Any]:
        from .specialize import write_groups

        cfg = self.cfg
        task = task_named(cfg.task)
        best = task.checkpoint_file
        t_train = self._stage(
            "train", _hash(cfg.train.model_dump()), lambda: [self.gen_dir / best],
            lambda resume: task.pipeline_train(cfg.train, self.gen_dir, self.out, resume, self.reporter),
            [self.gen_dir])

        def do_partition(_resume: bool) -> None:
            p = cfg.partition
            groups = task.partition(self.gen_dir, p)
            write_groups(self.groups_file, groups, header=f"edgespec pipeline partition ({p.method})")

        t_part = self._stage("partition", _hash(cfg.partition.model_dump(), t_train), lambda: [self.groups_file],
                             do_partition, [self.groups_file])

        def do_specialize(resume: bool) -> None:
            task.pipeline_specialize(self.gen_dir, self._groups(), self.groups_file, self.spec_root, cfg.specialize,
                                     resume, self.reporter)

        spec_inputs: list[Any] = [cfg.specialize.model_dump(), t_part, t_train]
        if getattr(cfg.specialize, "target_images", None):  # the images, not just their folder's name
            from .specialize.target import folder_fingerprint

            spec_inputs.append(folder_fingerprint(cfg.specialize.target_images))
        t_spec = self._stage("specialize", _hash(*spec_inputs),
                             lambda: [d / best for d in self._spec_dirs()], do_specialize,
                             [self.spec_root])

        def do_compress(resume: bool) -> None:
            from .compress import compress_run

            comp_cfg = CompressConfig(**cfg.compress.model_dump(exclude={"enabled"}))
            measure = None
            if comp_cfg.target_speedup is not None:  # the pipeline sits above benchmarks/: it may time models
                from benchmarks.speedup import paired_speedup

                measure = paired_speedup(comp_cfg.speedup_device)
            for spec, target in zip(self._spec_dirs(), self._comp_dirs(), strict=True):
                compress_run(spec, target, comp_cfg, resume=resume, reporter=self.reporter, measure=measure)

        t_comp = "disabled"
        if cfg.compress.enabled and cfg.task == DEFAULT_TASK:  # classification only (compress refuses detectors)
            t_comp = self._stage("compress", _hash(cfg.compress.model_dump(), t_spec),
                                 lambda: [d / "checkpoints" / "best.pt" for d in self._comp_dirs()], do_compress,
                                 [self.comp_root])

        def do_export(_resume: bool) -> None:
            from exporters import export_runs

            formats = cfg.export.formats if "formats" in cfg.export.model_fields_set else list(task.default_formats)
            export_runs([self.gen_dir, *self._spec_dirs(), *self._comp_dirs()], formats, self.export_dir,
                        reporter=self.reporter, **cfg.export.options)

        t_exp = self._stage("export", _hash(cfg.export.model_dump(), t_train, t_spec, t_comp),
                            lambda: [self.export_dir / "manifest.json"], do_export, [self.export_dir])
        result: dict[str, Any] = {}

        def do_bench(_resume: bool) -> None:
            from benchmarks import bench

            result["report"] = bench(self.export_dir, self.report_dir, cfg.bench, reporter=self.reporter)

        self._stage("bench", _hash(cfg.bench.model_dump(), t_exp), lambda: [self.report_dir / "report.json"], do_bench,
                    [self.report_dir])
        report = result.get("report") or read_json(self.report_dir / "report.json", "report")
        return {"out": self.out, "report": report, "state": self.state}


def run_pipeline(config: str | Path | None = None, out: str | Path = "runs", reporter: Reporter = NULL,
                 on_stage: Callable[[str, str, float], None] | None = None) -> dict[str, Any]:
    cfg, where = load_config(config)
    log.info("pipeline from %s into %s", where, out)
    return Pipeline(cfg, out, reporter, on_stage).run()

