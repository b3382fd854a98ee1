"""`edgespec train`: build the data and model a config names, then run the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_state_dict_file
from ..data import prepare
from ..errors import UserError
from ..evaluate import predict
from ..models import create_model, input_size_for
from ..progress import NULL, Reporter
from ..runs import new_run_info
from .config import TrainConfig
from .loop import fit, resolve_device

__all__ = ["TrainConfig", "fit", "predict", "resolve_device", "train"]


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train a generalist on `cfg.data`; everything is checked before anything is written."""
    if cfg.pretrained and cfg.weights:
        raise UserError("--pretrained and --weights both give starting weights; pass only one")
    resolve_device(cfg.device)
    bundle = prepare(cfg.data, cfg.seed, download=cfg.download, pretrained=cfg.pretrained)
    size = input_size_for(cfg.model, bundle.source.size, cfg.image_size)
    torch.manual_seed(cfg.seed)  # the initial weights are part of what a seed fixes
    bundle.input_size = size
    model = create_model(cfg.model, len(bundle.classes), bundle.source.channels, size[0], cfg.pretrained)
    init = None
    if cfg.weights:
        init = load_state_dict_file(cfg.weights)
        try:
            missing, unexpected = model.load_state_dict(init, strict=False)
        except RuntimeError:  # same names, other shapes: another architecture or class count
            missing, unexpected = ["(shape mismatch)"], []
        if missing or unexpected:
            raise UserError(f"--weights {cfg.weights} does not fit {cfg.model} with {len(bundle.classes)} classes "
                            f"({len(missing)} missing, {len(unexpected)} unexpected tensors); give weights of the same "
                            "architecture and class count, or --pretrained")
    arch = {"name": cfg.model, "num_classes": len(bundle.classes), "in_channels": bundle.source.channels,
            "input_size": list(size)}
    info = new_run_info("train", cfg.model_dump(), bundle, arch)
    return fit(model, bundle, cfg, Path(out), info, resume=resume, reporter=reporter, init_ckpt=init)
