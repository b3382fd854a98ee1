"""`edgespec bench`: every artifact of an export directory on every device profile, against the generalist.

A profile this host can serve (its `match:` fits and its runtime is here) is measured; one it cannot serve is
estimated from counted FLOPs and bytes against the profile's published peaks (estimate.py), or marked
unavailable when it has none. Every artifact's sha256 is checked against the manifest before it runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

import benchmarks.accuracy as acc
from toolkit.devices import ALL_FORMATS, DeviceProfile, device_tree_model, host_description, load_profile
from toolkit.errors import UserError
from toolkit.progress import NULL, Reporter
from toolkit.tasks import task_named, task_of

from .estimate import METHOD as ESTIMATE_METHOD
from .runtimes import ort_providers_available, tensorrt_available
from .schema import Measurement
from .scoring import scorer_for
from .timing import PREPROCESSING_NOTE, TimingConfig

log = logging.getLogger(__name__)


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    devices: list[str] = Field(default_factory=lambda: ["host-cpu"], min_length=1,
                               description="device profile names or YAML paths")
    formats: list[str] | None = Field(None, description="only these formats (default: each profile's)")
    timing: TimingConfig = Field(default_factory=TimingConfig)
    max_images: int | None = Field(None, ge=1, description="accuracy on at most this many test images per run")
    budgets: dict[str, float] = Field(default_factory=dict, description="budget overrides for every device")
    baseline: str | None = Field(None, description="an older report.json to mark regressions against")
    regression_threshold: float = Field(0.10, gt=0, description="relative p50/size growth that is a regression")
    accuracy_drop: float = Field(0.01, ge=0, description="absolute accuracy drop that is a regression")
    max_accuracy_drop: float = Field(0.01, ge=0, lt=1, description="recommendations: at most this far below the "
                                                                   "generalist's closed-set accuracy")
    threads: int | None = Field(None, ge=1, le=1024, description="threads for every device instead of each "
                                                                 "profile's")
    batch_sizes: list[int] | None = Field(None, min_length=1, description="batch sizes for every device instead of "
                                                                          "each profile's")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str] | None) -> list[str] | None:
        bad = [f for f in formats or [] if f not in ALL_FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}; choose from {', '.join(ALL_FORMATS)}")
        return formats

    @field_validator("budgets")
    @classmethod
    def _known_budgets(cls, budgets: dict[str, float]) -> dict[str, float]:
        from .budgets import BUDGET_KEYS

        bad = [k for k in budgets if k not in BUDGET_KEYS]
        if bad:
            raise ValueError(f"unknown budget(s) {bad}; choose from {', '.join(BUDGET_KEYS)}")
        return budgets


def serve_status(profile: DeviceProfile) -> tuple[str | None, str]:
    """('measured on host' | 'measured on device' | None, why) for this host and `profile`."""
    m = profile.match
    model = device_tree_model()
    if m.device_tree_model and m.device_tree_model in model:
        where = Measurement.DEVICE
    elif m.host:
        where = Measurement.HOST
    elif m.cuda:
        import torch

        if not torch.cuda.is_available():
            return None, "this host has no CUDA GPU"
        where = Measurement.HOST
    else:
        return None, f"this host is not a {profile.name} ({model or 'no device-tree model'})"
    if profile.runtime == "tensorrt":
        ok, why = tensorrt_available()
    elif profile.runtime == "onnxruntime":
        ok, why = ort_providers_available(profile.execution_providers)
    else:
        ok, why = True, ""
    return (where, "") if ok else (None, why)


def _resolve_source(source: Path, report_dir: Path, formats: list[str], reporter: Reporter) -> Path:
    """An export directory as is; a run directory is exported first (with its generalist, for the comparison)."""
    if (source / "manifest.json").is_file():
        return source
    if not (source / "run.json").is_file():
        raise UserError(f"{source} is neither an export directory (manifest.json) nor a run (run.json); pass the "
                        "output of `edgespec export` or `edgespec train`/`specialize`")
    from exporters import FORMATS, export_runs
    task = task_of(source)
    info = task.open_run(source)
    runs = [source]
    lineage = (info.get("parent") or {}).get("lineage") or []
    if lineage:
        runs.insert(0, Path(lineage[0]))
    formats = task.bench_formats(formats)
    # formats of an optional extra (executorch) are built on request only: `edgespec export --formats ...`
    wanted = [f for f in formats if f in FORMATS and FORMATS[f].extra is None and not FORMATS[f].missing()] or ["onnx"]
    if "onnx" not in wanted:
        wanted.append("onnx")  # estimates count FLOPs from the ONNX graph
    out = report_dir / "export"
    log.info("exporting %s as %s into %s", ", ".join(map(str, runs)), ", ".join(wanted), out)
    export_runs(runs, wanted, out, reporter=reporter)
    return out


def _generalist_for(entry: dict[str, Any], generalists: dict[str, dict[str, Any]]) -> str | None:
    """The generalist model name a specialist descends from (the first of its lineage), or the only one of its task."""
    from toolkit.io import read_json
    from toolkit.runs import RUN_FILE

    if entry["role"] == "generalist":
        return entry["model"]
    try:
        info = read_json(Path(entry["run"]) / RUN_FILE, "run file")
        lineage = (info.get("parent") or {}).get("lineage") or []
    except (UserError, OSError, AttributeError):
        lineage = []
    for name, g in generalists.items():
        if lineage and acc.same_run(g["run"], lineage[0]):
            return name
    same_task = [n for n, g in generalists.items() if g.get("task") == entry.get("task")]
    return same_task[0] if len(same_task) == 1 else None


def with_overrides(profile: DeviceProfile, cfg: BenchConfig) -> DeviceProfile:
    """`profile` with `bench --threads/--batch-sizes` applied, validated by the profile schema like its own values."""
    update = {k: v for k, v in (("threads", cfg.threads), ("batch_sizes", cfg.batch_sizes)) if v is not None}
    if not update:
        return profile
    from toolkit.errors import build_config

    return build_config(DeviceProfile, **{**profile.model_dump(), **update})


def bench(source: str | Path, report_dir: str | Path, cfg: BenchConfig | None = None,
          reporter: Reporter = NULL) -> dict[str, Any]:
    """Benchmark, write the four reports into `report_dir`, return the report (see REPORT_SCHEMA.md)."""
    from toolkit.io import DirLock

    from .report import load_report

    cfg = cfg or BenchConfig()
    source, report_dir = Path(source), Path(report_dir)
    profiles = [with_overrides(load_profile(d), cfg) for d in cfg.devices]
    baseline = load_report(cfg.baseline) if cfg.baseline else None  # fail early on a bad baseline
    wanted = sorted({f for p in profiles for f in p.formats if cfg.formats is None or f in cfg.formats})
    if not ((source / "manifest.json").is_file() or (source / "run.json").is_file()):
        _resolve_source(source, report_dir, wanted, reporter)  # says what SOURCE should be, before anything is made
    with DirLock(report_dir, "report directory"):  # a second bench into the same reports is refused
        return _bench(source, report_dir, cfg, profiles, baseline, wanted, reporter)


def _bench(source: Path, report_dir: Path, cfg: BenchConfig, profiles: list[DeviceProfile], baseline: Any,
           wanted: list[str], reporter: Reporter) -> dict[str, Any]:
    from exporters import load_manifest, verify_artifact

    from .budgets import check_budgets, compare_baseline
    from .report import write_reports
    from .rows import Bencher, fill_comparisons, flag_estimates_below_measured, flag_slower_than_fp32, report_header

    export_dir = _resolve_source(source, report_dir, wanted, reporter)
    manifest = load_manifest(export_dir)
    entries = manifest["artifacts"]
    if not entries:
        raise UserError(f"{export_dir}/manifest.json lists no artifacts; run `edgespec export` into it first")
    for e in entries:  # every file is what the manifest says before anything runs
        verify_artifact(export_dir, e)
    scorers = list({id(s): s for s in map(scorer_for, entries)}.values())  # the tasks in this export
    for scorer in scorers:
        scorer.prepare(report_dir)
    generalists = {e["model"]: e for e in entries if e["role"] == "generalist"}
    parents = {e["model"]: _generalist_for(e, generalists) for e in entries}
    b = Bencher(export_dir, entries, parents, cfg, reporter)
    devices_info = {}
    for profile in profiles:
        where, why = serve_status(profile)
        devices_info[profile.name] = b.device_info(profile, where, why)
        if where is not None:
            b.measure_profile(profile, where)
        else:
            b.estimate_profile(profile, why)
    rows = b.rows
    b.fill_proxies()
    fill_comparisons(rows, parents)
    flag_slower_than_fp32(rows)
    report = report_header(export_dir, manifest, cfg, host_description())
    report["devices"] = devices_info
    flag_estimates_below_measured(rows, devices_info)
    report["rows"] = rows
    report["aa_noise"] = b.aa_noise
    report["budgets"] = check_budgets(rows, {p.name: p.budgets.model_dump() for p in profiles}, cfg.budgets)
    report["baseline"] = None
    if baseline is not None:
        from .budgets import device_spread

        regs = compare_baseline(rows, baseline, cfg.regression_threshold, cfg.accuracy_drop, new=report)
        report["baseline"] = {"path": str(cfg.baseline), "threshold": cfg.regression_threshold,
                              "accuracy_drop": cfg.accuracy_drop, "regressions": regs,
                              "spread": {p.name: device_spread(baseline, p.name) + device_spread(report, p.name)
                                         for p in profiles}}
    from .recommend import recommendations

    report["recommendations"] = recommendations(rows, parents, cfg.max_accuracy_drop)
    report["methods"] = methods(cfg)
    for scorer in scorers:
        if scorer.method:
            report["methods"][f"{task_named(scorer.task).label} accuracy"] = scorer.method
    if any(s.method for s in scorers):
        report["metric"] = {"accuracy": "top-1 (classification rows); mAP50-95 (detection rows, 'task': 'detect', "
                                        "with 'map50')"}
    _check_unchanged(export_dir, entries)  # a re-export while this ran: its rows would name files now gone
    write_reports(report, report_dir)
    return report


def _check_unchanged(export_dir: Path, benched: list[dict[str, Any]]) -> None:
    """The export still holds, byte for byte, the artifacts the rows were measured on (checked again just before
    the reports are published; the old reports stay otherwise)."""
    from exporters import load_manifest
    from toolkit.io import sha256_file

    now = {a["name"]: a["sha256"] for a in load_manifest(export_dir)["artifacts"]}
    for e in benched:
        path = export_dir / e["path"]
        if now.get(e["name"]) != e["sha256"] or not path.is_file() or sha256_file(path) != e["sha256"]:
            raise UserError(f"{export_dir} changed while bench ran ({e['name']} was re-exported or removed); the "
                            "earlier reports are kept: rerun bench once the export has finished")


def methods(cfg: BenchConfig) -> dict[str, str]:
    t = cfg.timing
    return {
        "latency": f"wall time (time.perf_counter) of each runtime call: after the first inference, untimed "
                   f"warm-up runs ({t.warmup} at least, for {t.warmup_s:g} s at least: a fresh session starts slow), "
                   f"then up to {t.runs} timed runs or {t.time_limit_s:g} s per batch size "
                   f"(at least {t.min_runs}); p50/p90/p99/mean/std over those runs. ONNX Runtime sessions run "
                   "without spin-waiting between calls (session.intra_op.allow_spinning=0), so two sessions timed "
                   "side by side do not slow each other; a lone session with spinning can be faster. Preprocessing: "
                   f"{PREPROCESSING_NOTE}",
        "throughput": "batch size x 1000 / p50 latency in ms, images per second",
        "first inference": "wall time to create the session or load the engine plus the first run",
        "accuracy": "top-1 of the artifact through the same runtime and device on the run's saved test split "
                    "(a specialist: its group's images, labels in its output order)"
                    + (f"; at most {cfg.max_images} images per run" if cfg.max_images else ""),
        "generalist accuracy": "the generalist's artifact of the same format on the same device and the same group "
                               "images: closed-set = argmax over the group's classes only; open-set = argmax over "
                               "all classes, a prediction outside the group counts as wrong",
        "speedup": "generalist p50 / specialist p50 on the same device, format and batch size. Measured on this "
                   "host: the two timed side by side, alternating blocks of 10 calls, on the specialist's test images "
                   "(report.json speedup_paired, with the p50s of that same timing); the row's speedup is that paired "
                   "p50 ratio with a 95% interval (speedup_ci, bootstrap over rounds); marked ~ unless the interval "
                   "lies outside the A/A noise floor (report.json aa_noise: the generalist timed against a second "
                   "session of itself, per device and format). Measured on a device: the two rows' p50s, marked ~ "
                   "when their p50-p90 ranges overlap. Estimate rows: the ratio of the estimates",
        "size": "artifact file size in bytes from the manifest, its sha256 verified before benchmarking; size "
                "ratio = specialist size / generalist size, same format",
        "peak memory": "process resident-set high-water mark (Linux VmHWM) over loading, timing and accuracy of one "
                       "artifact, reset before each artifact; it includes the Python interpreter and libraries",
        "estimate": ESTIMATE_METHOD + "; peak figures and their sources are in each device's profile "
                                      "(report.json devices.*.peak)",
        "proxy accuracy": "estimate rows carry the accuracy measured here for the same model at the same precision "
                          "(the row's notes name the measured row); the device's runtime did not run",
        "budgets": "each profile's budgets (or --budget overrides) checked on measured rows only; one JUnit "
                   "test case per check",
        "recommendation": f"per device and group, the fastest artifact of the group's lineage (specialists, compressed "
                          f"specialists, the generalist at its closed-set accuracy; any format) whose accuracy is at "
                          f"most {cfg.max_accuracy_drop * 100:g} pt below the generalist fp32's closed-set accuracy on "
                          "the group's images; speedup = generalist fp32 p50 / its p50 (the two rows)",
    }


__all__ = ["BenchConfig", "bench", "methods", "serve_status"]


def bench_detect(specialists: list[str | Path], out: str | Path, export_dir: str | Path | None = None,
                 devices: tuple[str, ...] | list[str] = ("host-cpu",), reporter: Reporter = NULL) -> dict[str, Any]:
    """Bench specialist runs against their generalist through `edgespec bench`; writes the four reports to `out`."""
    from exporters import export_runs
    from exporters.manifest import load_manifest

    if not specialists:
        raise UserError("no specialist run given; pass the runs written by `edgespec specialize` on a detection run")
    infos = [task_named("detect").open_run(s) for s in specialists]
    for s, info in zip(specialists, infos, strict=True):
        if info["kind"] != "specialize":
            raise UserError(f"{s} is a generalist; bench takes specialist runs (their generalist comes along)")
    out = Path(out).resolve()
    if export_dir is None:
        export_dir = out / "export"
        runs = list(dict.fromkeys([info["parent"]["lineage"][0] for info in infos] +
                                  [str(Path(s).resolve()) for s in specialists]))
        export_runs(runs, ["onnx"], export_dir, reporter=reporter)
    else:
        listed = {a["run"] for a in load_manifest(export_dir)["artifacts"]}
        missing = [str(s) for s in specialists if str(Path(s).resolve()) not in listed]
        if missing:
            raise UserError(f"{export_dir} holds no artifact of {missing[0]}; export it there first "
                            "(`edgespec export RUN --out DIR`) or drop --export")
    return bench(export_dir, out, BenchConfig(devices=list(devices)), reporter=reporter)
