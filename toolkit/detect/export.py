"""Export a detection run to ONNX with Ultralytics' exporter, prove parity with PyTorch, record it in the manifest.

The ONNX model takes float32 NCHW RGB in [0, 1], letterboxed to the run's square input size, and returns
Ultralytics' raw detections `output0` [N, 4 + classes, anchors]: box centre x, y, width, height in input pixels,
then per-class scores (sigmoid), before NMS. Artifacts land in the export directory's manifest.json
(exporters.manifest) with "task": "detect".
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportCheckError, UserError
from ..io import DirLock, sha256_file
from ..progress import NULL, Reporter
from .dataset import load_data
from .offline import keep_threads, load_weights, ultralytics_env, yolo
from .train import open_detect_run

log = logging.getLogger(__name__)

#: fp32 ONNX Runtime against PyTorch on the CPU: scores are in [0, 1], boxes in input pixels.
TOLERANCE = {"scores_atol": 1e-4, "boxes_atol_px": 1e-2}
OUTPUT_LAYOUT = "[N, 4 + classes, anchors]: cx, cy, w, h in input pixels, then class scores (sigmoid); no NMS"


def letterbox_images(files: list[Path], size: int) -> np.ndarray:
    """Images as the exported model expects them: RGB, letterboxed (grey 114) to size x size, [0, 1], NCHW."""
    from PIL import Image

    out = np.full((len(files), 3, size, size), 114 / 255, dtype=np.float32)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            r = size / max(im.size)
            w, h = max(1, round(im.size[0] * r)), max(1, round(im.size[1] * r))
            im = im.resize((w, h), Image.BILINEAR) if (w, h) != im.size else im
            top, left = (size - h) // 2, (size - w) // 2
            out[i, :, top:top + h, left:left + w] = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255
    return out


def parity_images(info: dict[str, Any], count: int, seed: int = 0) -> np.ndarray:
    """`count` validation images of the run's data plus one uniform-noise input."""
    size = int(info["arch"]["input_size"][0])
    files = load_data(info["data"]).image_files("val")[:count]
    noise = np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)
    return np.concatenate([letterbox_images(files, size), noise])


def torch_outputs(weights: Path, images: np.ndarray) -> np.ndarray:
    import torch

    model = load_weights(weights)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + 1]))[0].numpy() for i in range(len(images))])


def onnx_outputs(path: Path, images: np.ndarray) -> tuple[np.ndarray, str, str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp, outp = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    return np.concatenate([sess.run([outp], {inp: images[i:i + 1]})[0] for i in range(len(images))]), inp, outp


def compare(ref: np.ndarray, got: np.ndarray, nc: int) -> dict[str, Any]:
    if ref.shape != got.shape:
        return {"passed": False, "failures": [f"output shape {got.shape} != PyTorch {ref.shape}"]}
    box = float(np.abs(ref[:, :4] - got[:, :4]).max())
    score = float(np.abs(ref[:, 4:4 + nc] - got[:, 4:4 + nc]).max())
    failures = []
    if box > TOLERANCE["boxes_atol_px"]:
        failures.append(f"box max |diff| {box:.3g} px > {TOLERANCE['boxes_atol_px']}")
    if score > TOLERANCE["scores_atol"]:
        failures.append(f"score max |diff| {score:.3g} > {TOLERANCE['scores_atol']}")
    agree = float((ref[:, 4:].argmax(1) == got[:, 4:].argmax(1)).mean())
    return {"passed": not failures, "failures": failures, "boxes_max_abs_px": box, "scores_max_abs": score,
            "class_agreement": agree, "images": int(ref.shape[0]), "tolerance": dict(TOLERANCE)}


def export_detect(run_dir: str | Path, out_dir: str | Path, opset: int | None = None, check_images: int = 8,
                  reporter: Reporter = NULL) -> dict[str, Any]:
    """Export one detection run as ONNX into `out_dir`; returns its manifest entry (merged into manifest.json)."""
    from exporters.manifest import host_facts, load_manifest, package_versions, write_manifest

    run_dir = Path(run_dir).resolve()
    info = open_detect_run(run_dir)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    weights = run_dir / "weights" / "best.pt"
    size = int(info["arch"]["input_size"][0])
    with DirLock(out_dir, "export directory"), reporter.task(f"export {name}", total=2, unit="step") as task:
        if (out_dir / "manifest.json").is_file():
            owner = {a["model"]: a["run"] for a in load_manifest(out_dir)["artifacts"]}.get(name)
            if owner not in (None, str(run_dir)):
                raise UserError(f"{out_dir} already holds model {name!r} exported from {owner}; use another --out")
        ultralytics_env(run_dir)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            model = yolo(run_dir, weights)
            model.model.pt_path = str(Path(tmp) / f"{name}.pt")  # Ultralytics writes the .onnx beside this path
            with keep_threads():
                built = Path(model.export(format="onnx", imgsz=size, batch=1, dynamic=False, simplify=True, half=False,
                                          int8=False, nms=False, device="cpu", opset=opset, verbose=False))
            task.advance(1)
            images = parity_images(info, check_images)
            got, input_name, output_name = onnx_outputs(built, images)
            parity = compare(torch_outputs(weights, images), got, len(info["classes"]))
            if not parity["passed"]:
                raise ExportCheckError(f"{name}-onnx does not match PyTorch: {'; '.join(parity['failures'])}")
            final = out_dir / f"{name}.onnx"
            os.replace(built, final)
        task.advance(1)
        import onnx

        graph = onnx.load(str(final), load_external_data=False)
        entry = {
            "name": f"{name}-onnx", "model": name, "task": "detect",
            "role": "specialist" if info["kind"] == "specialize" else "generalist", "group": info.get("group"),
            "run": str(run_dir), "format": "onnx", "precision": "fp32", "path": final.name,
            "sha256": sha256_file(final), "size_bytes": final.stat().st_size, "input_name": input_name,
            "input_shape": [1, 3, size, size], "output_name": output_name, "output_layout": OUTPUT_LAYOUT,
            "opset": int(next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))),
            "classes": info["classes"], "class_ids": info["class_ids"], "mean": info["preprocess"]["mean"],
            "std": info["preprocess"]["std"], "preprocess": info["preprocess"],
            "source_checkpoint_sha256": sha256_file(weights), "parity": parity, "calibration": None,
            "built": {"host": host_facts(), "packages": {**package_versions(), **_ultra_version()},
                      "details": {"exporter": "ultralytics", "simplify": "onnxslim"}},
        }
        write_manifest(out_dir, [entry])
    log.info("%s: box max |diff| %.3g px, score max |diff| %.3g against PyTorch", final, parity["boxes_max_abs_px"],
             parity["scores_max_abs"])
    return entry


def _ultra_version() -> dict[str, str]:
    import ultralytics

    return {"ultralytics": ultralytics.__version__}
