"""ONNX -> ONNX Runtime's mobile (.ort) format, plus the required_operators config for a reduced ORT build."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from toolkit.errors import EdgespecError

log = logging.getLogger(__name__)


def host_ort_platform() -> str:
    """The ORT converter's target_platform for this machine: amd64 on x86, arm elsewhere."""
    import platform

    return "amd64" if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") else "arm"


def convert_ort(src: str | Path, dst: str | Path, config_dst: str | Path, target_platform: str | None = None,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the .ort model to `dst` and its operator config to `config_dst`.

    Uses onnxruntime.tools.convert_onnx_models_to_ort (fixed optimisations: the file runs on a minimal build
    without runtime graph optimisation). The tool prints; that output is sent to the debug log instead.
    `target_platform` 'arm' allows int8 QDQ fusions suited to ARM and leaves out x86-only NCHWc layouts; 'amd64'
    keeps them (None: this host's, `host_ort_platform`).
    """
    target_platform = target_platform or host_ort_platform()
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    dst, config_dst = Path(dst), Path(config_dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".ort-") as tmp:
        src_dir, out_dir = Path(tmp).resolve() / "in", Path(tmp).resolve() / "out"
        src_dir.mkdir()
        model = src_dir / "model.onnx"
        if metadata:
            import onnx

            from .onnx_export import set_metadata

            proto = onnx.load(str(src))
            set_metadata(proto, metadata)
            onnx.save(proto, str(model))
        else:
            shutil.copyfile(src, model)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                convert_onnx_models_to_ort(model, output_dir=out_dir, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform=target_platform)
        except Exception as exc:  # noqa: BLE001 - the tool raises bare Exceptions from onnxruntime
            raise EdgespecError(f"ORT format conversion failed: {str(exc).splitlines()[0][:200]}") from exc
        finally:
            log.debug("convert_onnx_models_to_ort: %s", printed.getvalue())
        ort_file = out_dir / "model.ort"
        config = out_dir / "model.required_operators.config"
        if not ort_file.is_file() or not config.is_file():
            raise EdgespecError(f"ORT format conversion wrote no model or no operator config in {out_dir}")
        shutil.move(ort_file, dst)
        # the tool names the temporary path it read in a comment; name the shipped file instead
        text = config.read_text().replace(str(ort_file), dst.name)
        config_dst.write_text(text)
    ops = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {"target_platform": target_platform, "optimization_style": "Fixed", "operator_config": ops}
