"""Checkpoints as plain dicts of tensors and builtins: they load with `torch.load(weights_only=True)`."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .io import sha256_file, torch_save
from .models import create_model

CKPT_FORMAT = "edgespec.checkpoint/1"


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any], **state: Any) -> Path:
    """`meta` says how to rebuild the model (arch, classes, preprocessing); `state` is optimizer, epoch, ..."""
    module = model.module if hasattr(model, "module") else model
    payload = {"format": CKPT_FORMAT, "meta": meta, "model": {k: v.detach().cpu() for k, v in
                                                              module.state_dict().items()}}
    payload.update(state)
    return torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; finish or retrain the run, or choose --checkpoint last")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a loadable edgespec checkpoint ({first}); point at a run's "
                        "checkpoints/best.pt or retrain") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise UserError(f"{path} is not an edgespec checkpoint (no '{CKPT_FORMAT}' marker); "
                        "use --weights only with edgespec checkpoints or plain state_dicts via --weights")
    return ckpt


def build_model(meta: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The registry's model for `meta`; a pruned one (meta "layers", toolkit.compress) takes its recorded layer
    sizes and the tensor shapes of `state`."""
    arch = meta["arch"]
    model = create_model(arch["name"], arch["num_classes"], arch["in_channels"], arch["input_size"][0])
    if meta.get("layers"):
        from .models._shapes import reshape_model

        reshape_model(model, meta["layers"], state or {})
    return model


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    model = build_model(ckpt["meta"], ckpt["model"])
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError:  # a tensor of the wrong shape
        missing, unexpected = ["(shape mismatch)"], []
    if missing or unexpected:
        raise UserError(f"checkpoint weights do not fit model {ckpt['meta']['arch']['name']} "
                        f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); it belongs to another model")
    return model.eval()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights for `--weights`: an edgespec checkpoint or a bare state_dict, both loaded without pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights file not found: {path}; give a state_dict file or a run's checkpoints/best.pt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UserError(f"{path} cannot be loaded safely ({type(exc).__name__}); give a state_dict or an "
                        "edgespec checkpoint saved with torch.save") from None
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        return obj["model"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise UserError(f"{path} holds no state_dict; give a file saved with torch.save(model.state_dict(), PATH)")


def checkpoint_hash(path: str | Path) -> str:
    return sha256_file(path)
