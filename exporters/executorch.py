"""PyTorch -> ExecuTorch `.pte` with the XNNPACK delegate: fp32, and int8 through PT2E quantization.

torch.export captures the model; `to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])` hands every
subgraph XNNPACK supports to the delegate and leaves the rest to ExecuTorch's portable kernels, which are far slower
on a phone: the share of graph nodes the delegate took and the operators it did not take are recorded in the
manifest, because an undelegated op is the usual reason a `.pte` is slower than expected.

int8: PT2E (torchao's prepare_pt2e / convert_pt2e) with ExecuTorch's XNNPACKQuantizer, symmetric per-channel
weights and int8 activations, calibrated on the same seeded sample of the run's training images as `onnx-int8`
(exporters.quantize.calibration_set), then lowered to XNNPACK like fp32.

The program has a fixed batch of 1 (what a phone runs): torch.export with a dynamic batch left a non-delegated
view and a second delegate subgraph in resnet18, and ExecuTorch 1.5.1 refused inputs above 15 images for a batch
bounded at 32 (measured here). The runtime side is `executorch.runtime`, the Python binding of the C++ runtime.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import EdgespecError, ExportCheckError, UserError

log = logging.getLogger(__name__)

BATCH = 1  # the program's fixed batch
INSTALL = "pip install 'edgespec[mobile]'"
#: nodes get_delegation_info counts that compute nothing: the delegate's outputs unpacked, shape queries
BOOKKEEPING = ("getitem", "sym_size")


def require_executorch() -> None:
    """One clear line when the optional extra is missing (exporters.formats' check says the same before any work)."""
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        raise UserError(f"the executorch formats need ExecuTorch, which is not installed; {INSTALL}")


def _lower(exported, path: Path) -> dict[str, Any]:
    """Lower an exported program to XNNPACK, write the .pte, return the delegation facts."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        delegation = delegation_facts(lowered.exported_program().graph_module)
        program = lowered.to_executorch()
    except Exception as exc:  # noqa: BLE001 - exir raises many untyped errors from its passes
        raise EdgespecError(f"ExecuTorch lowering failed: {str(exc).strip().splitlines()[0][:200]}") from exc
    path.write_bytes(program.buffer)
    return delegation


def delegation_facts(graph_module) -> dict[str, Any]:
    """How much of the lowered graph XNNPACK took: node counts, the share, and each op type it left out."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op = {k: {"delegated": v.delegated, "non_delegated": v.non_delegated}
             for k, v in sorted(info.delegation_by_operator.items())}
    return summarize(by_op, info.num_delegated_subgraphs)


def summarize(by_op: dict[str, dict[str, int]], subgraphs: int) -> dict[str, Any]:
    """The manifest's delegation record from per-op counts; bookkeeping nodes are kept out of the share."""
    compute = {k: v for k, v in by_op.items() if not k.startswith(BOOKKEEPING)}
    delegated = sum(v["delegated"] for v in compute.values())
    left = sum(v["non_delegated"] for v in compute.values())
    return {"backend": "XnnpackBackend", "delegated_subgraphs": subgraphs, "delegated_nodes": delegated,
            "non_delegated_nodes": left, "delegated_share": delegated / (delegated + left) if delegated + left else 0.0,
            "ops_not_delegated": {k: v["non_delegated"] for k, v in compute.items() if v["non_delegated"]},
            "by_operator": by_op,
            "counted": "graph nodes of the lowered program (executorch.devtools get_delegation_info), without "
                       f"bookkeeping nodes ({', '.join(BOOKKEEPING)})"}


def _example(chw: tuple[int, int, int]):
    import torch

    return (torch.zeros(BATCH, *chw),)


def export_fp32(model, path: str | Path, chw: tuple[int, int, int]) -> dict[str, Any]:
    """`model` (eval, CPU) as an XNNPACK-delegated fp32 .pte at `path`."""
    import torch

    require_executorch()
    path = Path(path)
    model = model.eval().cpu()
    with _quiet():
        exported = torch.export.export(model, _example(chw))
        delegation = _lower(exported, path)
    return {"batch": BATCH, "precision": "fp32", "delegation": delegation, **_versions()}


def export_int8(model, path: str | Path, chw: tuple[int, int, int], calib_images: np.ndarray) -> dict[str, Any]:
    """`model` quantized with PT2E and the XNNPACK quantizer (calibrated on `calib_images`), lowered to XNNPACK."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    require_executorch()
    path = Path(path)
    model = model.eval().cpu()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with _quiet():
        captured = torch.export.export(model, _example(chw)).module()
        prepared = prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for image in calib_images:  # the program's batch: observers see what the phone will see
                prepared(torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)))
        converted = convert_pt2e(prepared)
        exported = torch.export.export(converted, _example(chw))
        delegation = _lower(exported, path)
    return {"batch": BATCH, "precision": "int8", "quantization": "PT2E, XNNPACKQuantizer: symmetric per-channel int8 "
            "weights, int8 activations (static, calibrated)", "delegation": delegation, **_versions()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"executorch": version("executorch")}


@contextlib.contextmanager
def _quiet():
    """exir prints progress and warnings from its passes; keep them in the debug log."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue():
            log.debug("executorch: %s", printed.getvalue())


class PteProgram:
    """A .pte loaded in `executorch.runtime`; run() takes float32 NCHW at the program's batch."""

    def __init__(self, source: str | Path | bytes, threads: int | None = None):
        require_executorch()
        from executorch.runtime import Runtime

        if threads is not None:
            set_threads(threads)
        runtime = Runtime.get()
        if not runtime.backend_registry.is_available("XnnpackBackend"):
            raise EdgespecError("this ExecuTorch build has no XNNPACK backend; install the executorch wheel from PyPI")
        try:
            program = runtime.load_program(source if isinstance(source, bytes) else Path(source))
            self.method = program.load_method("forward")
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError with the C++ error code
            raise ExportCheckError(f"ExecuTorch cannot load the program: {str(exc).splitlines()[0][:200]}") from exc
        import torch

        self.torch = torch
        self.fixed_batch = BATCH

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return out[0].numpy()


def set_threads(threads: int) -> None:
    """XNNPACK's thread pool is process-wide in ExecuTorch: size it before loading (the pybindings' own call)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if _threadpool_get_thread_count() != threads:
        _unsafe_reset_threadpool(int(threads))


def runner_for(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Logits of a .pte over any number of images, one program call per image (the parity check's runner)."""
    def run(images: np.ndarray) -> np.ndarray:
        program = PteProgram(path)
        return np.concatenate([program.run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]) \
            .astype(np.float32)

    return run
