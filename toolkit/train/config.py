"""Training configuration: validated, serialisable, the same object from the CLI and from pipeline YAML."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    #: inf/NaN refused for every number (learning rate, weight decay, warm-up...): they train to a NaN loss
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    data: str = Field("digits", description="digits | synthetic[:k=v,...] | imagefolder:PATH | torchvision:NAME[:ROOT]")
    model: str = Field("smallcnn", description="model name from `edgespec models`")
    epochs: int = Field(15, gt=0, description="training epochs")
    batch_size: int = Field(64, gt=0, le=65536,
                            description="global batch size (split across processes under torchrun)")
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up before the cosine decay")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA (on the CPU only for the "
                                "models measured faster there, toolkit.train.data.CPU_CHANNELS_LAST)")
    compile: bool = Field(False, description="torch.compile the model for training (pays a compile at the start)")
    image_size: int | None = Field(None, gt=0, le=4096,  # a larger side exhausts memory before the first step
                                   description="input side (default: the data's, at least the model's minimum)")
    pretrained: bool = Field(False, description="start from torchvision's ImageNet weights (downloads once)")
    weights: str | None = Field(None, description="start from a state_dict or edgespec checkpoint at this path")
    workers: int | None = Field(None, ge=0, description="DataLoader worker processes for data read from files "
                                "(default: the usable CPUs less one, at most 8; 0: in the training process); data "
                                "held in memory is augmented in whole batches on the device and needs none")
    cache_images: bool = Field(False, description="decode and resize data read from files once, into a memory-mapped "
                               "uint8 file in the run (cache/), reused by later epochs, --resume and the run's "
                               "specialists; rebuilt when a file changes. A cached training split that fits a "
                               "quarter of the free RAM is then augmented in whole batches on the device")
    download: bool = Field(False, description="allow torchvision datasets to download")
    head_lr_mult: float = Field(1.0, gt=0, description="head learning rate = lr * head_lr_mult")
