"""`edgespec data synth-target`: a deployment site to try `specialize --target-images` on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, RunDir, echo, setup


def synth_target(
    run: RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder: unlabeled/, test/<class>/, target.json.")],
    classes: Annotated[str | None, typer.Option(help="Target classes, comma-separated.")] = None,
    groups: Annotated[str | None, typer.Option("--groups", help="Target groups of the run's data (synthetic: "
                                                               "its textures), comma-separated.")] = None,
    shift: Annotated[str, typer.Option(help="none, brightness, dark, noise, contrast or thick.")] = "noise",
    per_class: Annotated[int | None, typer.Option(help="At most this many images per class.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draws and the shift.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Write a shifted deployment domain of RUN's data: unlabelled images to specialize on, labelled ones to test."""
    from ..data.target import write_target
    from ..errors import UserError, unknown_name
    from ..runs import Run

    setup(quiet)
    r = Run.open(run)
    if (classes is None) == (groups is None):
        raise UserError("pass either --classes a,b,... or --groups g1,g2,...")
    if classes is not None:
        names = [c.strip() for c in classes.split(",") if c.strip()]
    else:
        known = r.info.get("groups") or {}
        names = []
        for g in (g.strip() for g in groups.split(",") if g.strip()):
            if g not in known:
                raise unknown_name("group", g, known)
            names += known[g]
    meta = write_target(r.path, out, names, shift, per_class=per_class, seed=seed)
    counts = meta["counts"]
    echo(f"wrote {sum(c['unlabeled'] for c in counts.values())} unlabelled images to {Path(out) / 'unlabeled'} and "
         f"{sum(c['test'] for c in counts.values())} labelled test images to {Path(out) / 'test'} "
         f"({len(names)} classes, shift {shift})")


def register(root: typer.Typer) -> None:
    from .detect import data_app  # one `edgespec data` group: synth-detect lives there too

    data_app.command("synth-target")(synth_target)
