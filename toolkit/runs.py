"""A run directory: what a training or specialization produced, readable by every later step."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import DataBundle, prepare
from .errors import UserError
from .io import read_json, write_json

RUN_FORMAT = "edgespec.run/1"
RUN_FILE = "run.json"
REQUIRED_KEYS = ("kind", "data", "arch", "classes", "class_ids", "preprocess")


#: What a run directory holds of its own (first path component): no other command may write over them.
RUN_OWNED = ("run.json", "split.json", "classes.json", "metrics.csv", "metrics.json", "checkpoints", "weights",
             "ultra", "data", "target", ".lock")
RUN_OWNED_PREFIXES = ("eval-", "confusion-")


def refuse_run_file(path: str | Path, option: str = "--out") -> None:
    """Refuse to write `path` when it is one of a run directory's own files (a groups file written over run.json,
    a report into checkpoints/): edgespec never writes into another run's files."""
    path = Path(path).absolute()
    for parent in path.parents:
        if (parent / RUN_FILE).is_file():
            first = path.relative_to(parent).parts[0]
            if first in RUN_OWNED or first.startswith(RUN_OWNED_PREFIXES):
                raise UserError(f"{option} {path} is inside the run {parent} ({first} is the run's own); write it "
                                "outside the run directory")
            return


def _is_list(value: Any, of: type | tuple[type, ...]) -> bool:
    return isinstance(value, list) and all(isinstance(v, of) and not isinstance(v, bool) for v in value)


def _shape_problem(info: dict[str, Any]) -> str | None:
    """What in a run file has the wrong type for the code that reads it (an edited run.json must be bad input,
    not an internal error later)."""
    pre = info["preprocess"]
    checks = [("kind", isinstance(info["kind"], str)), ("data", isinstance(info["data"], str)),
              ("arch", isinstance(info["arch"], dict)), ("classes", _is_list(info["classes"], str)),
              ("class_ids", _is_list(info["class_ids"], int)),
              ("preprocess", isinstance(pre, dict) and _is_list(pre.get("mean"), int | float)
               and _is_list(pre.get("std"), int | float) and _is_list(pre.get("input_size"), int))]
    bad = [key for key, ok in checks if not ok]
    if bad:
        return f"{bad[0]} has the wrong type or shape"
    if len(info["classes"]) != len(info["class_ids"]):
        return f"classes ({len(info['classes'])}) and class_ids ({len(info['class_ids'])}) differ in length"
    return None


def mark_stopped(path: str | Path, exc: BaseException) -> None:
    """A run that was training when `exc` stopped it says so in run.json ('interrupted' or 'failed', with the one
    line of why): no run is left 'running' after its process has gone. Best effort: never masks `exc`."""
    file = Path(path) / RUN_FILE
    try:
        info = read_json(file, "run file")
        if not isinstance(info, dict) or info.get("status") != "running":
            return
        stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        info.update(status=stopped, stopped=now(), error=None if stopped == "interrupted" else line)
        write_json(file, info)
    except Exception:  # noqa: BLE001 - a full disk or a vanished run: the original error is the one to report
        pass


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def resume_options(path: str | Path, options: dict[str, Any], given: set[str], *, grow: tuple[str, ...] = ("epochs",),
                   free: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The options to resume the run in `path` with: its recorded config, where the flags the user `given` may only
    extend the run (`grow`: a larger value) or change how fast it trains (`free`); anything else is refused naming
    the flag. Without a run there yet, the options as given (a fresh start)."""
    if not (Path(path) / RUN_FILE).is_file():
        return options
    recorded = Run.open(path).info.get("config")
    if not isinstance(recorded, dict):
        raise UserError(f"{Path(path) / RUN_FILE} records no config to resume with; train the run again")
    merged = dict(recorded)
    for key in sorted(given):
        if key not in options:
            continue
        value, was = options[key], recorded.get(key)
        if key in free or value == was:
            merged[key] = value
        elif key in grow and isinstance(value, int) and isinstance(was, int) and value > was:
            merged[key] = value
        elif key in grow:
            raise UserError(f"{_flag(key)} {value} does not extend the run in {path}, which records {was}; with "
                            f"--resume {_flag(key)} may only grow (or drop it to continue as recorded)")
        else:
            extendable = ", ".join(map(_flag, grow))
            raise UserError(f"{_flag(key)} {value!r} differs from {was!r} recorded in {Path(path) / RUN_FILE} (that "
                            f"would be a different run); --resume continues the run as recorded (only {extendable} may "
                            f"be extended): drop {_flag(key)}, or choose another --out for a new run")
    return merged


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    path: Path
    info: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not path.exists():
            raise UserError(f"run directory not found: {path}; pass a directory written by `edgespec train`")
        if not (path / RUN_FILE).is_file():
            raise UserError(f"{path} is not an edgespec run (no {RUN_FILE}); pass a directory written by "
                            "`edgespec train` or `edgespec specialize`")
        info = read_json(path / RUN_FILE, "run file")
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise UserError(f"{path / RUN_FILE} is not an edgespec run file; it may come from another tool")
        missing = [k for k in REQUIRED_KEYS if k not in info]
        if missing:
            raise UserError(f"{path / RUN_FILE} lacks {', '.join(missing)}; it was edited or truncated: restore it "
                            "or train the run again")
        wrong = _shape_problem(info)
        if wrong:
            raise UserError(f"{path / RUN_FILE}: {wrong}; it was edited: restore it or train the run again")
        return cls(path, info)

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def class_ids(self) -> list[int]:
        """Generalist (source) class ids, in this run's output order."""
        return list(self.info["class_ids"])

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"

    def checkpoint_path(self, which: str = "best") -> Path:
        if which not in ("best", "last"):
            raise UserError(f"unknown checkpoint {which!r}; choose best or last")
        return self.path / "checkpoints" / f"{which}.pt"

    def checkpoint(self, which: str = "best") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_path(which))

    def model(self, which: str = "best") -> nn.Module:
        ckpt = self.checkpoint(which)
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
        if meta.get("arch") != self.info["arch"] or list(meta.get("class_ids", self.class_ids)) != self.class_ids:
            raise UserError(f"{self.checkpoint_path(which)} belongs to another model than {self.path / RUN_FILE} "
                            "describes (architecture or classes differ); restore the run's own checkpoint or retrain")
        return model_from_checkpoint(ckpt)

    def data(self, download: bool = False) -> DataBundle:
        """The run's data with its saved split and preprocessing, restricted to the run's classes."""
        split = read_json(self.path / "split.json", "split file")
        pre = self.info["preprocess"]
        bundle = prepare(self.info["data"], split=split, download=download, mean=pre["mean"], std=pre["std"])
        bundle.input_size = tuple(pre["input_size"])
        return bundle.restrict(self.class_ids)

    def update(self, **fields: Any) -> None:
        self.info.update(fields)
        write_json(self.path / RUN_FILE, self.info)


def new_run_info(kind: str, config: dict[str, Any], bundle: DataBundle, arch: dict[str, Any],
                 parent: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "kind": kind,
        "status": "running",
        "created": now(),
        "edgespec_version": __version__,
        "data": bundle.source.spec,
        "config": config,
        "arch": arch,
        "classes": bundle.classes,
        "class_ids": bundle.class_ids,
        "source_classes": bundle.source.classes,
        "groups": bundle.source.groups,
        "preprocess": {"mean": bundle.mean, "std": bundle.std, "input_size": list(bundle.input_size),
                       "channels": bundle.source.channels},
        "parent": parent,
    }
