"""The classification task's exporter: torchvision/smallcnn checkpoints through the builders table (exporters/plugin.py
says what a task exporter provides; exporters/export.py does the rest)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import UserError
from toolkit.io import sha256_file
from toolkit.progress import NULL, Reporter

from .formats import FORMATS, ExportOptions, build_order, check_requirements
from .plugin import ExportModel, shipped

log = logging.getLogger(__name__)

TIMING_CACHE = "tensorrt.cache"


def open_runs(run_dirs: Sequence[str | Path], requested: list[str], out_dir: Path, opts: ExportOptions
              ) -> list[ExportModel]:
    from toolkit.runs import Run

    runs = [Run.open(p) for p in run_dirs]
    if not runs:
        raise UserError("no run directory given; pass one or more directories written by `edgespec train`")
    check_requirements(requested, _trtexec_hint(requested, runs[0], out_dir, opts))
    models = [ExportModel(r.path.resolve().name, r.path.resolve(), r) for r in runs]
    for r in runs:
        if not r.complete:
            raise UserError(f"run {r.path} is not complete (status {r.info.get('status')!r}); finish it first "
                            "(edgespec train --resume)")
    return models


def prepare(models: list[ExportModel], out_dir: Path) -> None:
    """Nothing to set up: the builders need only the runs."""


def _trtexec_hint(requested: list[str], run, out_dir: Path, opts: ExportOptions) -> str:
    trt = [f for f in requested if FORMATS[f].runtime == "tensorrt"]
    if not trt:
        return ""
    from .tensorrt import EngineSpec, trtexec_command

    fmt = FORMATS[trt[0]]
    name = run.path.resolve().name
    pre = run.info["preprocess"]
    spec = EngineSpec(out_dir / f"{name}{FORMATS[fmt.source].suffix}", out_dir / f"{name}{fmt.suffix}",
                      fmt.precision, "input", (pre["channels"], *pre["input_size"]), opts.min_batch, opts.opt_batch,
                      opts.max_batch, opts.workspace_mb, dla_core=opts.dla_core, gpu_fallback=opts.gpu_fallback)
    return f", e.g. {trtexec_command(spec, 10)} (TensorRT 11: the same without --stronglyTyped)"


def export_one(model: ExportModel, requested: list[str], opts: ExportOptions, work: Path, out_dir: Path,
               reporter: Reporter = NULL) -> list[dict[str, Any]]:
    """Every format of one classification run, built in `work` by the builders table, each parity-checked."""
    from . import builders
    from .manifest import host_facts, package_versions
    from .onnx_export import model_metadata
    from .parity import parity_check, parity_data, require_pass

    run, name = model.source, model.name
    role = "specialist" if run.kind in ("specialize", "compress") else "generalist"  # compress: compared like one
    model = run.model()
    ckpt_sha = sha256_file(run.checkpoint_path("best"))
    meta = model_metadata(run, ckpt_sha, role, name)
    pre = run.info["preprocess"]
    chw = (int(pre["channels"]), *(int(s) for s in pre["input_size"]))
    data = parity_data(run, model, opts.parity_images)
    from toolkit.compress.prune import count

    macs, params = count(model, chw)  # per image: sizes of work comparable across models in the report
    ship = shipped(requested)
    order = build_order(requested)
    state = builders.BuildState(run=run, model=model, meta=meta, chw=chw, opts=opts, work=work, out_dir=out_dir,
                                name=name, timing_cache=opts.timing_cache or out_dir / TIMING_CACHE)
    entries = []
    with reporter.task(f"export {name}", total=len(order), unit="format") as task:
        for fmt in order:
            built = builders.build(fmt, state)
            parity = parity_check(built.logits(data.images), data, FORMATS[fmt].tolerance, FORMATS[fmt].precision)
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
                "input_name": built.input_name, "input_shape": [built.fixed_batch or -1, *chw],
                "output_name": built.output_name,
                "opset": built.opset, "classes": run.classes, "class_ids": run.class_ids, "mean": pre["mean"],
                "std": pre["std"], "source_checkpoint_sha256": ckpt_sha, "parity": parity,
                "calibration": built.calibration, "macs": macs, "params": params,
                "files": [{"path": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size, "kind": k}
                          for k, p in built.companions.items()],
                "built": {"host": host_facts(), "packages": package_versions(), "details": built.details},
            }
            if run.info.get("compression"):
                entry["compression"] = run.info["compression"]
            if "delegation" in built.details:  # ExecuTorch: the share of the graph the delegate runs
                entry["delegation"] = built.details["delegation"]
            if "trtexec" in built.details:
                entry["trtexec"] = shlex.join(built.details["trtexec"])
                entry["engine_key"] = built.details["engine_key"]  # where this engine may run (exporters.tensorrt)
            entries.append(entry)
    return entries
