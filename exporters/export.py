"""`export_runs`: every requested format of every run, each checked against PyTorch, committed all or nothing.

Artifacts are built in a hidden work directory inside the output directory; only when every artifact of every
run has passed its parity check are they renamed to their final names and the manifest is merged. A failure
leaves the output directory as it was.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from toolkit.errors import UserError, describe_validation
from toolkit.io import WORK_PREFIX, DirLock, remove_own_temporaries
from toolkit.progress import NULL, Reporter
from toolkit.tasks import Task, task_named, task_of
from toolkit.tasks.base import DEFAULT_TASK

from .formats import FORMATS, ExportOptions, build_order, check_options, parse_formats
from .plugin import ExportModel

log = logging.getLogger(__name__)


def make_options(**values: Any) -> ExportOptions:
    try:
        return ExportOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        detail = describe_validation(exc, key=lambda loc: "-".join(map(str, loc)).replace("_", "-"),
                                     unknown="unknown option", empty="options")
        raise UserError(f"invalid export option: {detail}") from None


def resolve_formats(formats: str | Sequence[str] | None, device_profile: str | None,
                    options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Formats to export and options with the device profile's batch sizes filled in where the user set none."""
    if device_profile is None:
        if not formats:
            raise UserError(f"give --formats (any of: {', '.join(FORMATS)}) or --device PROFILE")
        chosen = parse_formats(formats)
        return chosen, _ort_platform(chosen, None, _int8_recipe(chosen, None, options))
    try:
        from toolkit.devices import load_profile
    except ImportError:
        raise UserError("device profiles are not available in this edgespec; drop --device and give --formats") \
            from None
    profile = load_profile(device_profile)
    deploys = [f for f in profile.formats if f in FORMATS]
    if not deploys:
        raise UserError(f"device profile {profile.name} deploys no exported format ({', '.join(profile.formats)}); "
                        "benchmark it from the checkpoint instead")
    chosen = parse_formats(formats) if formats else parse_formats(deploys)
    foreign = [f for f in chosen if f not in deploys]
    if foreign:
        raise UserError(f"device profile {profile.name} does not deploy {', '.join(foreign)} (it takes "
                        f"{', '.join(deploys)}); drop --device or those formats")
    options = dict(options)
    if any(FORMATS[f].runtime == "tensorrt" for f in chosen):
        options.setdefault("opt_batch", min(profile.batch_sizes))
        options.setdefault("max_batch", max(profile.batch_sizes))
        if getattr(profile, "dla_core", None) is not None:  # the profile's DLA core, GPU fallback as it says
            options.setdefault("dla_core", profile.dla_core)
            options.setdefault("gpu_fallback", profile.dla_gpu_fallback)
    return chosen, _ort_platform(chosen, profile.isa, _int8_recipe(chosen, profile.isa, options))


def _ort_platform(chosen: list[str], isa: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The .ort file's target CPU when the user chose none: the profile's instruction set (x86-* -> amd64, arm-* ->
    arm), else this host's machine. An .ort built with arm's optimisations ran 2-5x slower than the .onnx on an x86
    host (issue 14), and x86 NCHWc layouts are no use on a phone."""
    if "ort" not in chosen or options.get("ort_platform") is not None:
        return options
    from .ort_mobile import host_ort_platform

    target = host_ort_platform() if isa is None else "amd64" if isa.startswith("x86") else "arm"
    return {**options, "ort_platform": target}


def _int8_recipe(chosen: list[str], isa: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The int8 recipe: 'tensorrt' (symmetric QDQ) when an engine is built from the int8 file, else the profile's
    ISA, else unset (the builder then reads this host's CPU flags); a conflicting user choice fails."""
    if "onnx-int8" not in build_order(chosen):
        return options
    given = options.get("int8_recipe")
    if any(FORMATS[f].source == "onnx-int8" for f in chosen):
        if given not in (None, "tensorrt"):
            raise UserError(f"int8-recipe {given} cannot feed a TensorRT engine (it needs symmetric QDQ); drop "
                            "--int8-recipe or use tensorrt")
        return {**options, "int8_recipe": "tensorrt"}
    if given is None and isa is not None:
        return {**options, "int8_recipe": isa}
    return options


def export_runs(run_dirs: Sequence[str | Path], formats: str | Sequence[str] | None, out_dir: str | Path,
                device_profile: str | None = None, reporter: Reporter = NULL, **options: Any) -> list[dict[str, Any]]:
    """Export each run into `out_dir`; returns the new manifest entries (also merged into OUT/manifest.json).

    The one export orchestration for every task: the runs' task picks its exporter (task_exporter), everything
    else (format and option checks, names, the directory's lock, collisions, publishing, the manifest) is here."""
    requested, options = resolve_formats(formats, device_profile,
                                         {k: v for k, v in options.items() if v is not None})
    opts = make_options(**options)
    check_options(requested, opts)
    task = _one_task(run_dirs)
    task.check_formats(requested)
    exporter = task_exporter(task.name)
    out_dir = Path(out_dir).resolve()
    models = exporter.open_runs(run_dirs, requested, out_dir, opts)
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"runs share the directory name {dup[0]!r}, which names their artifacts; rename one run "
                        "directory or export them into different --out directories")
    return _publish(out_dir, models, exporter,
                    lambda model, work: exporter.export_one(model, requested, opts, work, out_dir, reporter))


def task_exporter(task: str) -> Any:
    """The exporter module of a task (exporters/plugin.py says what it provides)."""
    from . import classify, detect

    return {"classify": classify, "detect": detect}[task]


def _publish(out_dir: Path, models: list[ExportModel], exporter: Any,
             export_one: Callable[[ExportModel, Path], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The one place that writes an export directory: under its lock, every artifact of every model is built and
    checked in a hidden work directory, then all are renamed into place and the manifest is merged."""
    from .manifest import write_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(out_dir, "export directory"):
        remove_own_temporaries(out_dir)  # of a killed export; the lock says none is in use
        _check_collisions(out_dir, models)
        exporter.prepare(models, out_dir)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=WORK_PREFIX) as tmp:
            work = Path(tmp)
            entries = [e for model in models for e in export_one(model, work)]
            for entry in entries:  # every check passed: publish
                for rel in [entry["path"]] + [f["path"] for f in entry.get("files", [])]:
                    os.replace(work / rel, out_dir / rel)
            write_manifest(out_dir, entries)
    return entries


def export_run(run_dir: str | Path, formats: str | Sequence[str] | None, out_dir: str | Path,
               device_profile: str | None = None, reporter: Reporter = NULL, **options: Any) -> list[dict[str, Any]]:
    """Export one run; see `export_runs`."""
    return export_runs([run_dir], formats, out_dir, device_profile, reporter, **options)


def _one_task(run_dirs: Sequence[str | Path]) -> Task:
    """The task all runs share; runs of different tasks in one call are refused."""
    tasks = {task_of(p).name: task_of(p) for p in run_dirs}
    if len(tasks) > 1:
        raise UserError(f"runs of different tasks ({', '.join(sorted(tasks))}) cannot be exported in one call; export "
                        "each task's runs with their own `edgespec export` into the same --out (the manifest merges "
                        "them)")
    return next(iter(tasks.values()), task_named(DEFAULT_TASK))


def _check_collisions(out_dir: Path, models: list[ExportModel]) -> None:
    from .manifest import MANIFEST, load_manifest

    if not (out_dir / MANIFEST).is_file():
        return
    owners = {a["model"]: a["run"] for a in load_manifest(out_dir)["artifacts"]}
    for m in models:
        other = owners.get(m.name)
        if other is not None and other != str(m.run):
            raise UserError(f"{out_dir} already holds model {m.name!r} exported from {other}; export "
                            f"{m.run} into another --out or rename its directory")


