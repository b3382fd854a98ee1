"""Detection inputs as the exported model sees them (letterboxed RGB in [0, 1], NCHW) and raw ONNX Runtime outputs:
the leaf that export, quantization and scoring share."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def letterbox_geometry(size_wh: tuple[int, int], size: int) -> tuple[float, int, int, int, int]:
    """(scale, new w, new h, left, top) of an image of `size_wh` letterboxed into size x size."""
    r = size / max(size_wh)
    w, h = max(1, round(size_wh[0] * r)), max(1, round(size_wh[1] * r))
    return r, w, h, (size - w) // 2, (size - h) // 2


def letterbox_images(files: list[Path], size: int) -> np.ndarray:
    """Images as the exported model expects them: RGB, letterboxed (grey 114) to size x size, [0, 1], NCHW."""
    from PIL import Image

    out = np.full((len(files), 3, size, size), 114 / 255, dtype=np.float32)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            _, w, h, left, top = letterbox_geometry(im.size, size)
            im = im.resize((w, h), Image.BILINEAR) if (w, h) != im.size else im
            out[i, :, top:top + h, left:left + w] = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255
    return out


def onnx_outputs(path: Path, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, str, str]:
    """Raw outputs of an .onnx/.ort file on ONNX Runtime's CPU provider, and its input and output names."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp, outp = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    out = [sess.run([outp], {inp: images[i:i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32), inp, outp
