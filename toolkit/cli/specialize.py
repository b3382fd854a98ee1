"""`edgespec partition`, `edgespec specialize`, `edgespec compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, Resume, RunDir, echo, setup


def partition(
    run: RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Groups file to write (YAML).")],
    method: Annotated[str, typer.Option(help="confusion, weights or random (the control).")] = "confusion",
    groups: Annotated[int | None, typer.Option("--groups", help="Number of groups.")] = None,
    group_size: Annotated[int | None, typer.Option(help="Classes per group (equal sizes).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for clustering and the random partition.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Split a run's classes into named groups; the YAML can be edited by hand."""
    from ..runs import Run, refuse_run_file
    from ..specialize.groups import write_groups
    from ..specialize.partition import partition as run_partition
    from ..train import resolve_device

    setup(quiet)
    r = Run.open(run)
    result = run_partition(r, method, groups, group_size, seed=seed, device=str(resolve_device(device)))  # type: ignore[arg-type]
    refuse_run_file(out)
    write_groups(out, result, f"edgespec groups for {r.path.resolve()} (method {method}, seed {seed});\n"
                              "edit freely: one 'name: [class, ...]' per group; groups may overlap")
    for name, members in result.items():
        echo(f"{name}: {', '.join(members)}")
    echo(f"wrote {len(result)} groups to {out}")


def specialize(
    run: RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: one run per group in OUT/<group>/ "
                                                          "(OUT itself with --group).")],
    groups: Annotated[Path | None, typer.Option("--groups", help="Groups file (YAML: name: [class, ...]); a "
                                                "detection run defaults to its data file's groups.")] = None,
    group: Annotated[str | None, typer.Option(help="Only this group, written into --out itself.")] = None,
    init: Annotated[str, typer.Option(help="extract, new-head, head-first or suppress.")] = "extract",
    bn_convert: Annotated[bool | None, typer.Option("--bn-convert/--no-bn-convert", show_default=False,
                                                    help="DAFT batch-norm conversion (default: on with BN).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs [5; detection 20].")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak (backbone) learning rate [3e-4; detection 5e-4].")] = None,
    head_lr_mult: Annotated[float | None, typer.Option(help="Head learning rate = lr * this (default: 10 for a "
                                                             "new head, 1 for an extracted one).")] = None,
    head_epochs: Annotated[int, typer.Option(help="head-first: epochs that train the head alone.")] = 1,
    keep_start: Annotated[bool, typer.Option("--keep-start/--no-keep-start", help="Keep the starting model unless "
                                             "a fine-tuned epoch validates better.")] = True,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the loss.")] = 0.0,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size [64; detection: the generalist's].")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and augmentation [0; detection: the "
                                                  "generalist's].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    from_run: Annotated[Path | None, typer.Option("--from", help="Start from this specialist run (gradual).")] = None,
    target_images: Annotated[Path | None, typer.Option(help="Folder of unlabelled images from the deployment site; "
                                                            "without --groups the group is proposed from them.")]
    = None,
    sampling: Annotated[str | None, typer.Option(help="With --target-images: importance (default) or uniform.")]
    = None,
    bn_target: Annotated[str | None, typer.Option(help="With --target-images: adapt (default): group conversion, then "
                                                       "AdaBN on the target (eval outputs move); target: DAFT's "
                                                       "conversion on the target; group.")] = None,
    clusters: Annotated[int | None, typer.Option(help="With --target-images: k-means clusters [8].")] = None,
    min_share: Annotated[float | None, typer.Option(help="With --target-images: a proposed class's least share of "
                                                         "the predictions [0.01].")] = None,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train one specialist per group, starting from RUN (or --from a specialist of RUN)."""
    from ..tasks import task_of

    chosen = task_of(run)
    reporter = setup(quiet)
    given = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,  # None: the task's default
             "target_images": None if target_images is None else str(target_images), "sampling": sampling,
             "bn_target": bn_target, "clusters": clusters, "min_share": min_share}
    options = {"init": init, "bn_convert": bn_convert, "head_lr_mult": head_lr_mult, "head_epochs": head_epochs,
               "keep_start": keep_start, "label_smoothing": label_smoothing, "device": device,
               **{k: v for k, v in given.items() if v is not None}}
    for line in chosen.specialize(run, out, groups_file=groups, group=group, options=options, from_run=from_run,
                                  resume=resume, reporter=reporter):
        echo(line)


def compare_specialists(
    generalist: Annotated[Path, typer.Argument(help="The generalist run.", show_default=False)],
    specialists: Annotated[list[Path], typer.Argument(help="Specialist runs of that generalist.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for compare.json and compare.md.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Generalist open-/closed-set vs each specialist on every group's test images."""
    from ..specialize.compare import specialists_vs_generalist, to_markdown, write_comparison
    from ..train import resolve_device

    setup(quiet)
    result = specialists_vs_generalist(generalist, specialists, device=str(resolve_device(device)))
    json_path, md_path = write_comparison(result, out)
    echo(to_markdown(result).rstrip())
    echo(f"wrote {json_path} and {md_path}")


def register(app: typer.Typer) -> None:
    app.command()(partition)
    app.command()(specialize)
    app.command("compare")(compare_specialists)
