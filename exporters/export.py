"""`export_runs`: every requested format of every run, each checked against PyTorch, committed all or nothing.

Artifacts are built in a hidden work directory inside the output directory; only when every artifact of every
run has passed its parity check are they renamed to their final names and the manifest is merged. A failure
leaves the output directory as it was.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from toolkit.errors import UserError
from toolkit.io import DirLock, sha256_file
from toolkit.progress import NULL, Reporter

from .formats import FORMATS, ExportOptions, build_order, check_options, check_requirements, parse_formats

log = logging.getLogger(__name__)

TIMING_CACHE = "tensorrt.cache"


def make_options(**values: Any) -> ExportOptions:
    try:
        return ExportOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            key = "-".join(str(p) for p in err["loc"]).replace("_", "-")
            parts.append(f"unknown option {key!r}" if err["type"] == "extra_forbidden" else
                         f"{key or 'options'}: {err['msg']}" + (f" (got {err['input']!r})" if key else ""))
        raise UserError(f"invalid export option: {'; '.join(parts)}") from None


def resolve_formats(formats: str | Sequence[str] | None, device_profile: str | None,
                    options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Formats to export and options with the device profile's batch sizes filled in where the user set none."""
    if device_profile is None:
        if not formats:
            raise UserError(f"give --formats (any of: {', '.join(FORMATS)}) or --device PROFILE")
        return parse_formats(formats), options
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
    return chosen, options


def export_runs(run_dirs: Sequence[str | Path], formats: str | Sequence[str] | None, out_dir: str | Path,
                device_profile: str | None = None, reporter: Reporter = NULL, **options: Any) -> list[dict[str, Any]]:
    """Export each run into `out_dir`; returns the new manifest entries (also merged into OUT/manifest.json)."""
    from toolkit.runs import Run

    from .manifest import write_manifest

    requested, options = resolve_formats(formats, device_profile,
                                         {k: v for k, v in options.items() if v is not None})
    opts = make_options(**options)
    check_options(requested, opts)
    detect = _detection_runs(run_dirs)
    if detect:  # Ultralytics detectors: their own builders (toolkit.detect.export), the same manifest
        from toolkit.detect.export import export_detect_runs

        return export_detect_runs(run_dirs, requested, out_dir, opts, reporter)
    runs = [Run.open(p) for p in run_dirs]
    if not runs:
        raise UserError("no run directory given; pass one or more directories written by `edgespec train`")
    out_dir = Path(out_dir)
    check_requirements(requested, _trtexec_hint(requested, runs[0], out_dir, opts))
    names = [_model_name(r) for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"runs share the directory name {dup[0]!r}, which names their artifacts; rename one run "
                        "directory or export them into different --out directories")
    for r in runs:
        if not r.complete:
            raise UserError(f"run {r.path} is not complete (status {r.info.get('status')!r}); finish it first "
                            "(edgespec train --resume)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(out_dir, "export directory"):
        for stale in out_dir.glob(".export-*"):  # work dirs of a killed export; the lock says none is in use
            shutil.rmtree(stale, ignore_errors=True)
        for stale in out_dir.glob(".*.tmp"):  # a killed atomic write (toolkit.io.atomic_path)
            stale.unlink(missing_ok=True)
        _check_collisions(out_dir, runs)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            work = Path(tmp)
            entries = []
            for run in runs:
                entries += _export_one(run, requested, opts, work, out_dir, reporter)
            for entry in entries:  # every check passed: publish
                for rel in [entry["path"]] + [f["path"] for f in entry.get("files", [])]:
                    os.replace(work / rel, out_dir / rel)
            write_manifest(out_dir, entries)
    return entries


def export_run(run_dir: str | Path, formats: str | Sequence[str] | None, out_dir: str | Path,
               device_profile: str | None = None, reporter: Reporter = NULL, **options: Any) -> list[dict[str, Any]]:
    """Export one run; see `export_runs`."""
    return export_runs([run_dir], formats, out_dir, device_profile, reporter, **options)


def _detection_runs(run_dirs: Sequence[str | Path]) -> bool:
    """True when every run is a detection run; mixing them with classification runs in one call is refused."""
    from toolkit.detect.train import is_detect_run

    flags = [is_detect_run(p) for p in run_dirs]
    if any(flags) and not all(flags):
        raise UserError("detection and classification runs cannot be exported in one call; export each kind with "
                        "its own `edgespec export` into the same --out (the manifest merges them)")
    return bool(flags) and all(flags)


def _model_name(run) -> str:
    return run.path.resolve().name


def _check_collisions(out_dir: Path, runs: list) -> None:
    from .manifest import MANIFEST, load_manifest

    if not (out_dir / MANIFEST).is_file():
        return
    owners = {a["model"]: a["run"] for a in load_manifest(out_dir)["artifacts"]}
    for r in runs:
        other = owners.get(_model_name(r))
        if other is not None and other != str(r.path.resolve()):
            raise UserError(f"{out_dir} already holds model {_model_name(r)!r} exported from {other}; export "
                            f"{r.path} into another --out or rename its directory")


def _trtexec_hint(requested: list[str], run, out_dir: Path, opts: ExportOptions) -> str:
    trt = [f for f in requested if FORMATS[f].runtime == "tensorrt"]
    if not trt:
        return ""
    from .tensorrt import EngineSpec, trtexec_command

    fmt = FORMATS[trt[0]]
    name = _model_name(run)
    pre = run.info["preprocess"]
    spec = EngineSpec(out_dir / f"{name}{FORMATS[fmt.source].suffix}", out_dir / f"{name}{fmt.suffix}",
                      fmt.precision, "input", (pre["channels"], *pre["input_size"]), opts.min_batch, opts.opt_batch,
                      opts.max_batch, opts.workspace_mb)
    return f", e.g. {trtexec_command(spec)}"


def _export_one(run, requested: list[str], opts: ExportOptions, work: Path, out_dir: Path,
                reporter: Reporter) -> list[dict[str, Any]]:
    from . import builders
    from .manifest import host_facts, package_versions
    from .onnx_export import model_metadata
    from .parity import compare, parity_data, require_pass

    name = _model_name(run)
    role = "specialist" if run.kind in ("specialize", "compress") else "generalist"  # compress: compared like one
    model = run.model()
    ckpt_sha = sha256_file(run.checkpoint_path("best"))
    meta = model_metadata(run, ckpt_sha, role, name)
    pre = run.info["preprocess"]
    chw = (int(pre["channels"]), *(int(s) for s in pre["input_size"]))
    data = parity_data(run, model, opts.parity_images)
    from toolkit.compress.prune import count

    macs, params = count(model, chw)  # per image: sizes of work comparable across models in the report
    ship = set(requested) | {FORMATS[f].source for f in requested if FORMATS[f].runtime == "tensorrt"}
    order = build_order(requested)
    state = builders.BuildState(run=run, model=model, meta=meta, chw=chw, opts=opts, work=work, out_dir=out_dir,
                                name=name, timing_cache=opts.timing_cache or out_dir / TIMING_CACHE)
    entries = []
    with reporter.task(f"export {name}", total=len(order), unit="format") as task:
        for fmt in order:
            built = builders.build(fmt, state)
            parity = compare(built.logits(data.images), data, FORMATS[fmt].tolerance, FORMATS[fmt].precision)
            require_pass(f"{name}-{fmt}", parity)
            log.info("%s-%s: max |diff| %.3g, top-1 agreement %.4f, accuracy %.4f (PyTorch %.4f)", name, fmt,
                     parity["max_abs_diff"], parity["top1_agreement"], parity["accuracy"],
                     parity["reference_accuracy"])
            task.advance(1, format=fmt)
            if fmt not in ship:
                continue
            entry = {
                "name": f"{name}-{fmt}", "model": name, "role": role, "group": run.info.get("group"),
                "run": str(run.path.resolve()), "format": fmt, "precision": FORMATS[fmt].precision,
                "path": built.path.name, "sha256": sha256_file(built.path), "size_bytes": built.path.stat().st_size,
                "input_name": built.input_name, "input_shape": [-1, *chw], "output_name": built.output_name,
                "opset": built.opset, "classes": run.classes, "class_ids": run.class_ids, "mean": pre["mean"],
                "std": pre["std"], "source_checkpoint_sha256": ckpt_sha, "parity": parity,
                "calibration": built.calibration, "macs": macs, "params": params,
                "files": [{"path": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size, "kind": k}
                          for k, p in built.companions.items()],
                "built": {"host": host_facts(), "packages": package_versions(), "details": built.details},
            }
            if run.info.get("compression"):
                entry["compression"] = run.info["compression"]
            if "trtexec" in built.details:
                entry["trtexec"] = shlex.join(built.details["trtexec"])
            entries.append(entry)
    return entries
