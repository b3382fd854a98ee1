"""`edgespec bundle EXPORT_DIR --device PROFILE --out FILE.tar.gz`: the benchmark, packed for the real device.

A bundle holds, at its top level: `run.py` (the on-device runner, with `edgespec_runner/`), `bundle.json` (what
to run and the sha256 of every file), `manifest.json` (the export manifest's entries for the shipped artifacts),
`artifacts/` and `samples/` (a seeded sample of each group's test images, preprocessed to float32 NCHW as the
models expect, with their generalist class ids, as .npy files). The device needs Python, numpy and its runtime.

For TensorRT profiles the bundle ships the ONNX file each engine is built from (exporters.FORMATS names it):
engines are specific to the GPU and TensorRT version, so the runner builds them on the device.
The archive is deterministic (sorted members, fixed times and owners): the same export gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_path, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "edgespec.bundle/1"
RUNNER_DIR = Path(__file__).resolve().parent / "runner"
RUNNER_FILES = {"run.py": "run.py", "edgespec_runner/__init__.py": "__init__.py",
                "edgespec_runner/timing.py": "timing.py", "edgespec_runner/runtimes.py": "runtimes.py",
                "edgespec_runner/facts.py": "facts.py"}
FIXED_MTIME = 315532800  # 1980-01-01: fixed so the archive's bytes depend only on its contents
DEFAULT_SAMPLES = 500  # test images per group: all of them for small test sets, so accuracy matches bench
ADB_DRIVER = "adb_driver.py"  # the Android driver (`--adb`): runs on the computer the phone is plugged into


@dataclasses.dataclass
class BundleInfo:
    path: Path
    device: str
    sha256: str
    size_bytes: int
    items: list[dict[str, Any]]
    samples: dict[str, int]  # sample name -> images


def select_artifacts(manifest: dict[str, Any], profile, formats: list[str] | None = None
                     ) -> list[tuple[dict[str, Any], str]]:
    """(manifest entry to ship, format it is measured as) for every artifact this profile deploys."""
    from exporters.formats import FORMATS

    if profile.runtime == "pytorch":
        raise UserError(f"device profile {profile.name} runs PyTorch checkpoints; a bundle runs ONNX Runtime or "
                        "TensorRT (no torch on the device): choose a profile with one of those runtimes")
    from toolkit.tasks import task_of

    detect = [e for e in manifest["artifacts"] if not task_of(e).bundled]
    if detect:  # the device runner (numpy + onnxruntime only) has no letterbox, NMS or mAP
        manifest = {**manifest, "artifacts": [e for e in manifest["artifacts"] if task_of(e).bundled]}
        if not manifest["artifacts"]:
            raise UserError("bundles measure classifiers only: the device runner has no detection decoding or mAP; "
                            "bench detection exports on the host with `edgespec bench EXPORT --devices ...`")
        log.warning("%d detection artifact(s) left out of the bundle: the device runner measures classifiers only",
                    len(detect))
    wanted = list(profile.formats)
    if formats:
        foreign = [f for f in formats if f not in wanted]
        if foreign:
            raise UserError(f"device profile {profile.name} does not deploy {', '.join(foreign)} (it takes "
                            f"{', '.join(wanted)}); drop those --format values")
        wanted = [f for f in wanted if f in formats]
    chosen = []
    for fmt in wanted:
        source = FORMATS[fmt].source if profile.runtime == "tensorrt" else fmt
        chosen += [(e, fmt) for e in manifest["artifacts"] if e["format"] == source]
    if not chosen:
        have = sorted({e["format"] for e in manifest["artifacts"]})
        need = sorted({FORMATS[f].source if profile.runtime == "tensorrt" else f for f in wanted})
        raise UserError(f"the export holds {', '.join(have) or 'no artifacts'}, none of which profile {profile.name} "
                        f"deploys; export {' or '.join(need)} first (edgespec export RUN --format {need[0]})")
    models = {e["model"] for e in manifest["artifacts"]}
    for m in sorted(models - {e["model"] for e, _ in chosen}):
        log.warning("model %s has no artifact for %s (%s); it is left out of the bundle", m, profile.name,
                    ", ".join(wanted))
    return sorted(chosen, key=lambda c: (c[0]["role"] != "generalist", c[0]["model"], wanted.index(c[1])))


def sample_arrays(run_path: str, class_ids: list[int], entry: dict[str, Any], count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of the run's test images of `class_ids`, preprocessed with the artifact's mean/std and size;
    labels are generalist (source) class ids."""
    from ..runs import Run

    try:
        run = Run.open(run_path)
    except UserError:
        raise UserError(f"run {run_path} recorded in the manifest is not readable here; the bundle needs its test "
                        "images: bundle on the machine that exported it, or pass --samples 0 (latency only)") from None
    data = run.data()
    if list(class_ids) != data.class_ids:
        data = data.restrict(list(class_ids))
    data = dataclasses.replace(data, mean=list(entry["mean"]), std=list(entry["std"]),
                               input_size=tuple(entry["input_shape"][2:]))
    ds = data.dataset("test")
    pick = np.sort(np.random.default_rng(0).permutation(len(ds))[:count])
    if not len(pick):
        raise UserError(f"run {run_path} has no test images of classes {class_ids}; check its split")
    x = np.stack([ds[int(i)][0].numpy() for i in pick]).astype(np.float32)
    y = np.asarray(data.source.labels)[ds.indices[pick]].astype(np.int64)
    return np.ascontiguousarray(x), y


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class _Samples:
    """Sample files keyed by group; generalist and specialist share arrays when their preprocessing matches."""

    def __init__(self, count: int):
        self.count = count
        self.specs: dict[str, tuple] = {}
        self.files: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def get(self, group: str | None, entry: dict[str, Any], class_ids: list[int], run_path: str) -> str | None:
        if self.count <= 0:
            return None
        pp = (tuple(entry["mean"]), tuple(entry["std"]), tuple(entry["input_shape"][1:]), tuple(class_ids))
        key = group or "all"
        if key in self.specs and self.specs[key] != pp:
            key = f"{key}.{entry['model']}"
        if key not in self.specs:
            x, y = sample_arrays(run_path, class_ids, entry, self.count)
            self.specs[key] = pp
            self.files[f"samples/{key}.x.npy"] = _npy(x)
            self.files[f"samples/{key}.y.npy"] = _npy(y)
            self.meta[key] = {"x": f"samples/{key}.x.npy", "y": f"samples/{key}.y.npy",
                              "class_ids": list(class_ids), "images": int(len(y))}
        return key


def _generalist_for(entry: dict[str, Any], generalists: dict[str, dict[str, Any]]) -> str | None:
    """The generalist a specialist descends from (first of its lineage, as bench decides), or the only one."""
    from ..runs import Run

    try:
        lineage = (Run.open(entry["run"]).info.get("parent") or {}).get("lineage") or []
    except UserError:
        lineage = []
    for name, g in generalists.items():
        if lineage and Path(g["run"]).resolve() == Path(lineage[0]).resolve():
            return name
    return next(iter(generalists)) if len(generalists) == 1 else None


def _item(entry: dict[str, Any], fmt: str, runtime: str) -> dict[str, Any]:
    from exporters.formats import FORMATS

    keys = ("model", "role", "group", "sha256", "size_bytes", "input_name", "input_shape", "output_name", "classes",
            "class_ids", "mean", "std", "macs", "params")
    item = {k: entry.get(k) for k in keys}
    item.update(name=f"{entry['model']}-{fmt}", artifact=entry["name"], format=fmt, precision=FORMATS[fmt].precision,
                source_format=entry["format"], path=f"artifacts/{entry['path']}", runtime=runtime)
    return item


def build_contents(export_dir: Path, profile, formats: list[str] | None, samples: int,
                   only: set[tuple[str, str]] | None = None, adb: AdbTarget | None = None) -> tuple[dict, dict]:
    """(files: archive name -> bytes, bundle.json as a dict). Verifies every shipped artifact first."""
    from exporters.manifest import MANIFEST, load_manifest, verify_artifact
    from toolkit import __version__

    from ..devices import load_profile

    manifest = load_manifest(export_dir)
    profile = load_profile(profile) if isinstance(profile, str | Path) else profile
    chosen = select_artifacts(manifest, profile, formats)
    if only is not None:
        missing = sorted(only - {(e["model"], fmt) for e, fmt in chosen})
        if missing:
            raise UserError(f"the report recommends {', '.join(f'{m} ({f})' for m, f in missing)}, which "
                            f"{export_dir} does not hold for {profile.name}; bundle the export the report was "
                            "benched from")
        chosen = [(e, fmt) for e, fmt in chosen if (e["model"], fmt) in only]
    files: dict[str, bytes] = {}
    shipped: dict[str, dict[str, Any]] = {}
    for entry, _ in chosen:
        if entry["name"] in shipped:
            continue
        verify_artifact(export_dir, entry)  # refuse to ship a file that no longer matches its export
        for f in [entry, *entry.get("files", [])]:
            files[f"artifacts/{f['path']}"] = (export_dir / f["path"]).read_bytes()
        shipped[entry["name"]] = {**entry, "path": f"artifacts/{entry['path']}",
                                  "files": [{**f, "path": f"artifacts/{f['path']}"} for f in entry.get("files", [])]}
    sample_set = _Samples(samples)
    items = [_item(e, fmt, adb.kind if adb else profile.runtime) for e, fmt in chosen]
    generalists = {e["model"]: e for e, _ in chosen if e["role"] == "generalist"}
    specialists = {e["model"]: e for e, _ in chosen if e["role"] == "specialist"}
    parents = {m: _generalist_for(e, generalists) for m, e in specialists.items()}
    for item, (entry, _) in zip(items, chosen, strict=True):
        if entry["role"] == "specialist":
            item["generalist"] = parents[entry["model"]]
            item["sample"] = sample_set.get(entry["group"], entry, entry["class_ids"], entry["run"])
            continue
        item["generalist"] = entry["model"]
        item["sample"] = sample_set.get(None, entry, entry["class_ids"], entry["run"])
        item["group_samples"] = {}
        for m, spec in specialists.items():
            if parents[m] == entry["model"] and all(c in entry["class_ids"] for c in spec["class_ids"]):
                key = sample_set.get(spec["group"], entry, spec["class_ids"], spec["run"])
                if key:
                    item["group_samples"][m] = key
    files.update(sample_set.files)
    sub_manifest = {k: v for k, v in manifest.items() if k != "artifacts"}
    sub_manifest["artifacts"] = list(shipped.values())
    files["manifest.json"] = (json.dumps(sub_manifest, indent=2, sort_keys=True) + "\n").encode()
    for arc, src in RUNNER_FILES.items():
        files[arc] = (RUNNER_DIR / src).read_bytes()
    if adb is not None:  # the phone runs the runtime's own binary; the driver stays on the computer
        files[ADB_DRIVER] = (RUNNER_DIR / ADB_DRIVER).read_bytes()
        files[f"bin/{adb.binary.name}"] = adb.binary.read_bytes()
    from benchmarks.timing import TimingConfig

    timing = TimingConfig()
    bundle = {
        "schema": BUNDLE_SCHEMA,
        "edgespec_version": __version__,
        "device": profile.name,
        "runtime": profile.runtime,
        "profile": profile.model_dump(mode="json", by_alias=True),
        "export": {"path": str(export_dir.resolve()), "created": manifest.get("created"),
                   "manifest_sha256": sha256_file(export_dir / MANIFEST)},
        "settings": {"warmup": timing.warmup, "warmup_s": timing.warmup_s, "runs": timing.runs,
                     "min_runs": timing.min_runs, "time_limit_s": timing.time_limit_s,
                     "batch_sizes": list(profile.batch_sizes),
                     "threads": profile.threads, "providers": list(profile.execution_providers)},
        "samples": sample_set.meta,
        "items": items,
        "files": {name: sha256_bytes(data) for name, data in sorted(files.items())},
    }
    if adb is not None:
        bundle["adb"] = {"serial": adb.serial, "binary": f"bin/{adb.binary.name}", "kind": adb.kind}
    return files, bundle


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    """A gzip'd tar with sorted members, fixed mtimes and owners, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if name in ("run.py", ADB_DRIVER) or name.startswith("bin/") else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))


def recommended_artifacts(report: str | Path, device: str) -> set[tuple[str, str]]:
    """(model, format) of every group's recommended artifact for `device` in a report (benchmarks/recommend.py
    writes `recommendations` into report.json); a UserError when the report names none."""
    from ..io import read_json

    path = Path(report)
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"report not found: {path}; bench the export first (edgespec bench EXPORT --report DIR) or "
                        "pass --report DIR")
    recs = read_json(path, "report").get("recommendations")
    if not recs:
        raise UserError(f"{path} has no recommendations table (written by an older edgespec, or no specialist was "
                        "benched); bench the export again, or bundle without --recommended")
    mine = [r for r in recs if r.get("device") == device]
    chosen = {(r["model"], r["format"]) for r in mine if r.get("model")}
    if not chosen:
        reasons = "; ".join(f"{r.get('group') or 'all classes'}: {r.get('reason')}" for r in mine)
        raise UserError(f"{path} recommends no artifact for {device} ({reasons or 'the device was not benched'}); "
                        "bench it on that device, or bundle without --recommended")
    return chosen


@dataclasses.dataclass(frozen=True)
class AdbTarget:
    """`--adb SERIAL --runner-binary PATH`: an Android phone driven over adb with the runtime's own binary."""

    serial: str | None  # None or "auto": the only attached device
    binary: Path
    kind: str  # the runtime the binary is (executorch, onnxruntime)

    @classmethod
    def make(cls, serial: str | None, binary: str | Path | None) -> AdbTarget:
        from .runner.adb_driver import DriverError, runner_kind

        if binary is None:
            raise UserError("--adb needs --runner-binary PATH: ExecuTorch's executor_runner or ONNX Runtime's "
                            "onnxruntime_perf_test built for the phone (neither ships in a Python wheel)")
        binary = Path(binary)
        if not binary.is_file():
            raise UserError(f"--runner-binary {binary} not found; build executor_runner or onnxruntime_perf_test for "
                            "the phone (arm64-v8a) and pass its path")
        try:
            kind = runner_kind(str(binary))
        except DriverError as exc:
            raise UserError(str(exc)) from None
        return cls(None if serial in (None, "", "auto") else serial, binary, kind)


def make_bundle(export_dir: str | Path, profile, out: str | Path, formats: list[str] | None = None,
                samples: int = DEFAULT_SAMPLES, only: set[tuple[str, str]] | None = None,
                adb: AdbTarget | None = None) -> BundleInfo:
    """Pack the artifacts `profile` deploys from `export_dir` with the runner and test samples into `out`;
    `only`: just these (model, format) pairs (`--recommended`); `adb`: for an Android phone's own benchmark binary."""
    from ..runs import refuse_run_file

    export_dir, out = Path(export_dir), Path(out)
    refuse_run_file(out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise UserError(f"--out {out} must end in .tar.gz (the bundle is a gzip'd tar)")
    if samples < 0:
        raise UserError(f"--samples must be >= 0, got {samples}")
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}; pass a directory written by `edgespec export`")
    if adb is not None:
        from exporters.formats import FORMATS

        from ..devices import load_profile

        profile = load_profile(profile) if isinstance(profile, str | Path) else profile
        mine = [f for f in (formats or profile.formats) if FORMATS[f].runtime == adb.kind]
        if not mine:
            raise UserError(f"device profile {profile.name} lists no {adb.kind} format for {adb.binary.name} "
                            f"(it takes {', '.join(profile.formats)})")
        formats, samples = mine, 0  # the binaries feed their own inputs: latency only
    else:  # run.py is Python with onnxruntime or TensorRT: ExecuTorch programs go through --adb and its binary
        from exporters.formats import FORMATS

        from ..devices import load_profile

        profile = load_profile(profile) if isinstance(profile, str | Path) else profile
        listed = formats or profile.formats
        python = [f for f in listed if FORMATS[f].runtime in ("onnxruntime", "tensorrt")]
        if python != list(listed):
            log.warning("left out of the bundle: %s (run them with --adb SERIAL --runner-binary executor_runner)",
                        ", ".join(f for f in listed if f not in python))
        formats = python or list(listed)
    files, bundle = build_contents(export_dir, profile, formats, samples, only, adb)
    files["bundle.json"] = (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode()
    write_tar(out, files)
    log.info("wrote %s: %d artifacts, %d files", out, len(bundle["items"]), len(files))
    return BundleInfo(out, bundle["device"], sha256_file(out), out.stat().st_size, bundle["items"],
                      {k: v["images"] for k, v in bundle["samples"].items()})
