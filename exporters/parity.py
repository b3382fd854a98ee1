"""Proof that an export computes what the PyTorch model computes, on real test images of the run's saved split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from toolkit.errors import EdgespecError, ExportCheckError

from .formats import Tolerance

log = logging.getLogger(__name__)

PARITY_SEED = 0
ORT_BATCH = 64


@dataclass
class ParityData:
    images: np.ndarray  # float32 NCHW, normalised
    labels: np.ndarray  # positions in the run's classes
    reference: np.ndarray  # PyTorch fp32 logits on CPU
    split: str = "test"

    @property
    def reference_accuracy(self) -> float:
        return float((self.reference.argmax(1) == self.labels).mean())


def parity_data(run, model: nn.Module, count: int) -> ParityData:
    """A seeded sample of at most `count` test images of the run, with labels and PyTorch's logits."""
    import torch

    ds = run.data().dataset("test")
    if len(ds) == 0:
        raise EdgespecError(f"run {run.path} has no test images to check exports against")
    rng = np.random.default_rng(PARITY_SEED)
    picks = np.arange(len(ds)) if len(ds) <= count else np.sort(rng.choice(len(ds), size=count, replace=False))
    images = torch.stack([ds[int(i)][0] for i in picks]).float()
    labels = np.asarray([ds.label(int(i)) for i in picks], dtype=np.int64)
    model = model.eval().cpu()
    with torch.no_grad():
        reference = torch.cat([model(images[s:s + ORT_BATCH]) for s in range(0, len(images), ORT_BATCH)])
    return ParityData(images.numpy(), labels, reference.numpy().astype(np.float32))


def run_onnxruntime(path: str | Path, images: np.ndarray, input_name: str, batch: int = ORT_BATCH) -> np.ndarray:
    """Logits of an .onnx or .ort file on the CPU execution provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        outs = [session.run(None, {input_name: images[s:s + batch]})[0] for s in range(0, len(images), batch)]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ExportCheckError(f"{Path(path).name} does not run in ONNX Runtime: "
                               f"{str(exc).splitlines()[0][:200]}") from exc
    return np.concatenate(outs).astype(np.float32)


def parity_check(logits: np.ndarray, data: ParityData, tolerance: Tolerance, precision: str) -> dict[str, Any]:
    """Parity figures and whether they hold `tolerance`; the dict goes into the manifest as is."""
    if logits.shape != data.reference.shape:
        return {"passed": False, "images": int(len(data.labels)), "split": data.split,
                "failures": [f"output shape {list(logits.shape)} != PyTorch's {list(data.reference.shape)}"]}
    diff = np.abs(logits.astype(np.float64) - data.reference.astype(np.float64))
    finite = bool(np.isfinite(logits).all())
    max_diff = float(diff.max()) if finite else float("inf")
    agreement = float((logits.argmax(1) == data.reference.argmax(1)).mean())
    accuracy = float((logits.argmax(1) == data.labels).mean())
    ref_acc = data.reference_accuracy
    scale = float(np.abs(data.reference).max())
    failures = []
    if not finite:
        failures.append("non-finite logits")
    if tolerance.atol is not None:
        bound = tolerance.atol + tolerance.rtol * scale
        if not max_diff <= bound:
            failures.append(f"max abs logit diff {max_diff:.3g} > {bound:.3g}")
    if agreement < tolerance.min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {tolerance.min_agreement}")
    if tolerance.max_accuracy_drop is not None and ref_acc - accuracy > tolerance.max_accuracy_drop + 1e-12:
        failures.append(f"accuracy {accuracy:.4f} is {ref_acc - accuracy:.4f} below fp32's {ref_acc:.4f} "
                        f"(allowed {tolerance.max_accuracy_drop})")
    result: dict[str, Any] = {
        "reference": "pytorch fp32 (cpu)", "split": data.split, "images": int(len(data.labels)),
        "precision": precision, "max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()) if finite else None,
        "max_abs_reference_logit": scale, "top1_agreement": agreement, "accuracy": accuracy,
        "reference_accuracy": ref_acc, "accuracy_change": accuracy - ref_acc, "tolerance": tolerance.as_dict(),
        "passed": not failures,
    }
    if failures:
        result["failures"] = failures
    return result


def require_pass(artifact: str, result: dict[str, Any]) -> None:
    if not result["passed"]:
        raise ExportCheckError(f"{artifact} failed its parity check against PyTorch on {result['images']} "
                               f"{result['split']} images: {'; '.join(result['failures'])}; nothing was written")
