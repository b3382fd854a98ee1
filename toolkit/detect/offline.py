"""Ultralytics, kept offline and tidy: no network, no auto-install, config and outputs inside the run directory.

Ultralytics reads its environment once, when first imported (settings file location, online check, auto-install
flag). Every edgespec entry point into Ultralytics goes through `ultralytics_env()` so that the first import sees
the settings below, and the settings that could reach the network are switched off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment Ultralytics reads at import time.
OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",  # is_online() -> False: no update checks, no hub, no telemetry
    "YOLO_AUTOINSTALL": "0",  # never pip-install a missing requirement
    "YOLO_VERBOSE": "0",  # its own log lines stay out of our output; edgespec logs what matters
}

#: Settings written into Ultralytics' settings file (inside the run directory).
OFFLINE_SETTINGS = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
                    "openvino_msg": False}

#: Training/validation/export arguments that would write plots (and download a font) or download weights.
SAFE_ARGS: dict[str, Any] = {"plots": False, "workers": 0, "exist_ok": True, "verbose": False}


def config_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).resolve() / "ultra" / "config"


def ultralytics_env(run_dir: str | os.PathLike, verbose: bool = False) -> Any:
    """Prepare the environment, import Ultralytics and return the `ultralytics` module.

    The config directory is fixed by the first call in a process (Ultralytics caches it at import); later calls
    with another run directory keep the first one, which is still an edgespec run directory, never the user's home.
    """
    cfg = config_dir(run_dir)
    # onnxruntime (imported by Ultralytics' exporter and validator) writes a device id under ~/.cache on import
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    first = "ultralytics" not in sys.modules
    if first:
        cfg.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
        os.environ.update(OFFLINE_ENV)
        if verbose:
            os.environ["YOLO_VERBOSE"] = "1"
        if "matplotlib" not in sys.modules and "MPLCONFIGDIR" not in os.environ:
            os.environ["MPLCONFIGDIR"] = str(cfg / "matplotlib")  # its font cache, otherwise under ~/.cache
    elif os.environ.get("YOLO_OFFLINE") != "1" or os.environ.get("YOLO_AUTOINSTALL") != "0":
        log.warning("ultralytics was imported before edgespec configured it; network and auto-install settings "
                    "may not apply")
    import ultralytics
    from ultralytics.utils import SETTINGS

    _local_fonts(Path(SETTINGS.file).parent)
    stale = {k: v for k, v in OFFLINE_SETTINGS.items() if SETTINGS.get(k) != v}
    if stale:
        SETTINGS.update(stale)
    return ultralytics


def _local_fonts(directory: Path) -> None:
    """Ultralytics checks for Arial.ttf whenever it reads a data file, and asks the network for it when it is
    missing (even offline). A link to matplotlib's bundled DejaVu Sans under that name answers the check locally."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = directory / name
        if not target.exists() and font.is_file():
            try:
                target.unlink(missing_ok=True)  # a dangling link
                target.symlink_to(font)
            except OSError as exc:  # another process made it first, or a read-only directory
                log.debug("could not link %s: %s", target, exc)


#: Modules whose nn.Module subclasses a checkpoint may name: torch's and Ultralytics' layers, and edgespec's own
#: rewritten YOLO blocks (toolkit/detect/layers.py, in compressed detectors).
LAYER_MODULES = ("torch.nn.", "ultralytics.nn.", "toolkit.detect.layers")

#: Data (not code) that Ultralytics checkpoints may hold besides layers: numpy scalars/arrays, its argument namespace.
PICKLE_DATA_GLOBALS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "ultralytics.utils.IterableSimpleNamespace",
})


def check_pickle(path: str | os.PathLike, resolve: bool = True) -> None:
    """Refuse a YOLO `.pt` that could run code when Ultralytics unpickles it (it loads with weights_only=False).

    Every global the pickle names beyond torch's weights-only set must be a layer class: a torch.nn.Module subclass
    from torch.nn, ultralytics.nn or edgespec's toolkit.detect.layers. A real checkpoint names only those;
    `os.system` and friends are refused.
    Call it after `ultralytics_env()`: resolving the names imports ultralytics. `resolve=False` checks the names only
    (no import): an early refusal before anything is written; the full check still runs before unpickling.
    """
    import importlib

    import torch

    from ..errors import UserError

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the same answer
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}); pass a YOLO .pt "
                        "written by Ultralytics or edgespec") from None
    for name in names:
        if name in PICKLE_DATA_GLOBALS:
            continue
        module, _, attr = name.rpartition(".")
        obj = None
        if module.startswith(LAYER_MODULES) and not resolve:
            continue
        if module.startswith(LAYER_MODULES):
            with contextlib.suppress(ImportError, AttributeError):
                obj = getattr(importlib.import_module(module), attr)
        if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
            raise UserError(f"refusing to load {path}: its pickle references {name}, which is not a model layer and "
                            "could run code; pass weights from Ultralytics or edgespec that you trust")


def yolo(run_dir: str | os.PathLike, model: str | os.PathLike) -> Any:
    """`ultralytics.YOLO(model)` after `ultralytics_env(run_dir)`: a `.yaml` builds from scratch, a `.pt` loads
    (after `check_pickle`: Ultralytics unpickles it in full)."""
    ultralytics_env(run_dir)  # first: check_pickle imports ultralytics modules
    if str(model).endswith(".pt"):
        check_pickle(model)
    from ultralytics import YOLO

    return YOLO(str(model), task="detect")


def load_weights(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Any:
    """An Ultralytics checkpoint's model, fp32, eval mode, on the CPU (Ultralytics configured first).

    `run_dir` defaults to the run that holds `path` (RUN/weights/X.pt)."""
    path = Path(path)
    ultralytics_env(run_dir or path.resolve().parent.parent)
    check_pickle(path)
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(path))
    return model.float().eval().cpu()


@contextlib.contextmanager
def keep_threads() -> Iterator[int]:
    """Ultralytics' device selection sets torch's CPU threads to cores - 1 for the whole process (one thread on a
    two-core machine); put back what the caller had when the Ultralytics call returns."""
    import torch

    n = torch.get_num_threads()
    try:
        yield n
    finally:
        torch.set_num_threads(n)
