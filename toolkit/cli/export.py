"""`edgespec export`: runs -> deployable files, each checked against PyTorch, listed in OUT/manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exporters.formats import FORMATS

from .common import Out, Quiet, echo, setup


def export(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (a generalist and/or its specialists).",
                                               show_default=False)],
    out: Out,
    formats: Annotated[str | None, typer.Option(help=f"Comma-separated: {', '.join(FORMATS)} (default: the "
                                                "--device profile's).")] = None,
    device: Annotated[str | None, typer.Option(help="Device profile whose formats and batch sizes to use.")] = None,
    calib_count: Annotated[int | None, typer.Option(help="Training images to calibrate int8 with [256].")] = None,
    calib_method: Annotated[str | None, typer.Option(help="int8 calibration: minmax, entropy or percentile.")]
    = None,
    int8_recipe: Annotated[str | None, typer.Option(help="int8 recipe: the target's ISA (x86-avx2, x86-avx512-vnni, "
                                                    "x86-amx, arm-dotprod, ...) or tensorrt [the --device profile's "
                                                    "isa, else this host's].")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset [20].")] = None,
    simplify: Annotated[bool | None, typer.Option("--simplify/--no-simplify", help="Simplify with onnxslim [on].")]
    = None,
    parity_images: Annotated[int | None, typer.Option(help="Test images for the parity check [512; detection runs: "
                                                      "16 validation images].")] = None,
    max_batch: Annotated[int | None, typer.Option(help="TensorRT profile's largest batch [32].")] = None,
    workspace_mb: Annotated[int | None, typer.Option(help="TensorRT workspace limit in MiB [1024].")] = None,
    quiet: Quiet = False,
) -> None:
    """Export runs to ONNX (fp32, fp16, int8), ONNX Runtime mobile and TensorRT, with parity proof and a manifest.

    Detection runs (`train --task detect`) export onnx, onnx-fp16, ort and tensorrt-fp16, and onnx-int8 on request
    (head decode in float; shipped only when its validation mAP50-95 is at most 0.02 below fp32's; tensorrt-int8 is
    refused)."""
    from exporters import export_runs

    reporter = setup(quiet)
    entries = export_runs(runs, formats, out, device_profile=device, reporter=reporter, calib_count=calib_count,
                          calib_method=calib_method, int8_recipe=int8_recipe,
                          opset=opset, simplify=simplify, parity_images=parity_images,
                          max_batch=max_batch, workspace_mb=workspace_mb)
    for e in entries:
        echo(parity_line(e))
    echo(f"manifest: {out / 'manifest.json'}")


def parity_line(e: dict) -> str:
    p = e["parity"]
    head = f"{e['path']:<34} {e['precision']:<5} {e['size_bytes'] / 1024:9.1f} KiB  "
    if "summary" in p:  # detection int8: its mAP gate against the fp32 ONNX file
        return head + p["summary"]
    if "boxes_max_abs_px" in p:  # detection: box and score differences
        return (head + f"box max|diff| {p['boxes_max_abs_px']:.2e} px (<= {p['boxes_bound_px']:.2g})  score "
                f"max|diff| {p['scores_max_abs']:.2e}  ({p['images']} images, against PyTorch)")
    return (head + f"max|diff| {p['max_abs_diff']:.2e}  top-1 agree {p['top1_agreement']:.4f}  acc "
            f"{p['accuracy']:.4f} (PyTorch {p['reference_accuracy']:.4f}, {p['images']} images)")


def register(app: typer.Typer) -> None:
    app.command()(export)
