"""The detection run directory: its run.json, opening and resume checks (the run model shared with classification
lives in toolkit/runs.py; these are the Ultralytics-specific parts: weights/, ultra/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import UserError
from ..io import read_json
from ..runs import RUN_FILE, RUN_FORMAT, now

if TYPE_CHECKING:
    from .config import DetectTrainConfig
    from .dataset import DetData

TASK = "detect"
#: Detection inputs: RGB, letterboxed to a square of input_size, scaled to [0, 1]; no mean/std beyond that.
PREPROCESS = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channels": 3, "scale": 1 / 255,
              "letterbox": True, "layout": "RGB"}


def device_arg(device: str) -> str:
    """Ultralytics' device string for edgespec's auto|cpu|cuda[:N]."""
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for but no CUDA GPU is visible; use --device cpu")
        return device.partition(":")[2] or "0"
    raise UserError(f"unknown device {device!r}; choose auto, cpu or cuda[:N]")


def run_info(kind: str, data: DetData, cfg: DetectTrainConfig, imgsz: int, classes: list[str], class_ids: list[int],
             source_classes: list[str], groups: dict[str, list[str]], arch_name: str,
             parent: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT, "task": TASK, "kind": kind, "status": "running", "created": now(),
        "edgespec_version": __version__, "data": str(data.path), "config": cfg.model_dump(),
        "arch": {"name": arch_name, "num_classes": len(classes), "in_channels": 3, "input_size": [imgsz, imgsz]},
        "classes": classes, "class_ids": class_ids, "source_classes": source_classes, "groups": groups,
        "preprocess": {**PREPROCESS, "input_size": [imgsz, imgsz]}, "weights": {"best": "weights/best.pt",
                                                                               "last": "weights/last.pt"},
        "parent": parent, **extra,
    }


#: Config fields a resumed run may change: where its data file is given from, and the hardware.
RESUME_MAY_CHANGE = {"data", "device", "workers"}


def existing_run(out: Path, may_hold: tuple[str, ...]) -> dict[str, Any] | None:
    """run.json of the detection run in `out`, or None when `out` is new or holds only `may_hold` (what a run
    killed before its run.json leaves); a file, a foreign directory or another kind of run is refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory; choose another --out")
    if not (out / RUN_FILE).is_file():
        leftovers = [p for p in out.iterdir() if p.name not in may_hold and not p.name.endswith(".tmp")] \
            if out.is_dir() else []
        if leftovers:
            raise UserError(f"output directory {out} is not empty and holds no edgespec run; choose another --out")
        return None
    info = read_json(out / RUN_FILE, "run file")
    if not isinstance(info, dict) or info.get("task") != TASK:
        raise UserError(f"{out} already holds a run that is not a detection run; choose another --out")
    return info


def config_changes(info: dict[str, Any], cfg: DetectTrainConfig) -> list[str]:
    """The options, beyond RESUME_MAY_CHANGE, in which `cfg` differs from what the run in `info` was started with."""
    old = {k: v for k, v in (info.get("config") or {}).items() if k not in RESUME_MAY_CHANGE}
    new = {k: v for k, v in cfg.model_dump().items() if k not in RESUME_MAY_CHANGE}
    return sorted(k for k in new if old.get(k) != new[k])


def resumed_info(prior: dict[str, Any], cfg: DetectTrainConfig) -> dict[str, Any]:
    """run.json of a resumed run: the prior one with this call's data path and hardware, and the time it resumed."""
    return {**prior, "config": {**prior["config"], **{k: getattr(cfg, k) for k in RESUME_MAY_CHANGE}},
            "resumed": [*prior.get("resumed", []), now()]}


def has_checkpoint(run_dir: Path, name: str = "train") -> bool:
    """Whether Ultralytics saved an epoch in run_dir/ultra/<name> (what its resume continues from)."""
    return (run_dir / "ultra" / name / "weights" / "last.pt").is_file()


def open_detect_run(path: str | Path) -> dict[str, Any]:
    """run.json of a detection run (a UserError for anything else)."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise UserError(f"{path} is not an edgespec run (no {RUN_FILE}); pass a directory written by "
                        "`edgespec train --task detect` or `edgespec specialize`")
    info = read_json(path / RUN_FILE, "run file")
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT or info.get("task") != TASK:
        raise UserError(f"{path} is not a detection run; train one with `edgespec train --task detect`")
    if info.get("status") != "complete" or not (path / "weights" / "best.pt").is_file():
        raise UserError(f"{path} did not finish (no weights/best.pt); rerun its training")
    return info


def is_detect_run(path: str | Path) -> bool:
    """True when `path` holds a detection run.json (used by CLI commands to dispatch)."""
    p = Path(path) / RUN_FILE
    if not p.is_file():
        return False
    try:
        info = read_json(p, "run file")
    except UserError:
        return False
    return isinstance(info, dict) and info.get("task") == TASK
