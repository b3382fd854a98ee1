"""Options of `edgespec train --task detect`: a subset of Ultralytics' train arguments, checked up front."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DetectTrainConfig(BaseModel):
    """Options for training a detector (a subset of Ultralytics' train arguments, checked up front)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    data: str = Field(description="YOLO data.yaml")
    model: str = Field("yolo11n.yaml", description="a model .yaml (random init) or a local .pt checkpoint")
    epochs: int = Field(50, ge=1, le=10_000)
    imgsz: int | None = Field(None, ge=32, le=4096, description="default: the data's image size, else 640")
    batch: int = Field(32, ge=1, le=4096)
    device: str = "auto"
    seed: int = Field(0, ge=0)
    workers: int = Field(0, ge=0, le=64)
    optimizer: Literal["auto", "SGD", "Adam", "AdamW", "RMSProp"] = "auto"
    lr0: float | None = Field(None, gt=0, le=1)
    warmup_epochs: float | None = Field(None, ge=0)
    freeze: int | None = Field(None, ge=0, description="freeze the first N layers of the model")
    patience: int = Field(100, ge=1)


class DetectSpecializeConfig(BaseModel):
    """A pipeline's `specialize` section for detection runs (unset: the fine-tuning defaults, the generalist's
    batch, seed and device)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    epochs: int | None = Field(None, ge=1, le=10_000)
    lr: float | None = Field(None, gt=0, le=1, description="AdamW learning rate (default 5e-4)")
    batch_size: int | None = Field(None, ge=1, le=4096)
    seed: int | None = Field(None, ge=0)
    device: str | None = None
    freeze: int | None = Field(None, ge=0, description="freeze the first N model layers while fine-tuning")
