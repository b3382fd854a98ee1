"""`edgespec compare`: each specialist against its generalist on the group's test images of the saved split.

Generalist open-set: argmax over all its classes (a prediction outside the group is an error).
Generalist closed-set: argmax over the group's outputs only; the fair, stronger baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import read_json, write_json, write_text
from ..runs import Run, refuse_run_file

SCHEMA = "edgespec.compare/1"


def group_accuracies(logits: np.ndarray, labels: np.ndarray, class_ids: list[int]) -> tuple[int, float, float]:
    """(images, open-set, closed-set) accuracy of generalist `logits` (columns = generalist ids) on the group."""
    keep = np.isin(labels, class_ids)
    lg, y = logits[keep], labels[keep]
    if len(y) == 0:
        return 0, float("nan"), float("nan")
    ids = np.asarray(class_ids)
    open_acc = float((lg.argmax(1) == y).mean())
    closed_acc = float((ids[lg[:, ids].argmax(1)] == y).mean())
    return int(len(y)), open_acc, closed_acc


def _predict(run: Run, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels as generalist ids, and source indices of `run`'s test images."""
    import torch

    from ..evaluate import eval_loader, predict

    bundle = run.data()
    logits, labels = predict(run.model("best").to(torch.device(device)), eval_loader(bundle, "test"),
                             torch.device(device))
    ids = np.asarray(run.class_ids)
    return logits, ids[labels] if len(labels) else labels, bundle.indices("test")


def _check_same_split(gen: Run, spec: Run) -> None:
    if spec.kind not in ("specialize", "compress"):
        raise UserError(f"{spec.path} is a {spec.kind} run, not a specialist; pass runs written by "
                        "`edgespec specialize`")
    if spec.info["data"] != gen.info["data"]:
        raise UserError(f"{spec.path} was trained on {spec.info['data']!r}, the generalist on {gen.info['data']!r}; "
                        "they cannot be compared")
    a, b = read_json(gen.path / "split.json", "split file"), read_json(spec.path / "split.json", "split file")
    if a.get("fingerprint") != b.get("fingerprint") or a.get("test") != b.get("test"):
        raise UserError(f"{spec.path} uses a different test split from {gen.path}; compare runs from one generalist")
    if not set(spec.class_ids) <= set(gen.class_ids):
        raise UserError(f"{spec.path} serves classes the generalist {gen.path} does not")


def specialists_vs_generalist(generalist: str | Path, specialists: list[str | Path], device: str = "cpu"
                              ) -> dict[str, Any]:
    """Each specialist against its generalist, open- and closed-set, on the group's test images."""
    gen = Run.open(generalist)
    if gen.kind == "specialize":
        raise UserError(f"{gen.path} is a specialist; pass the generalist run first, then its specialists")
    specs = [Run.open(p) for p in specialists]
    if not specs:
        raise UserError("pass at least one specialist run after the generalist")
    for s in specs:
        _check_same_split(gen, s)
    g_logits, g_labels, g_idx = _predict(gen, device)
    full = np.full((g_logits.shape[0], max(gen.class_ids) + 1), -np.inf, dtype=np.float64)
    full[:, gen.class_ids] = g_logits  # columns indexed by generalist class id
    groups: dict[tuple, dict[str, Any]] = {}
    for s in specs:
        key = (s.info.get("group"), tuple(s.class_ids))
        if key not in groups:
            n, open_acc, closed_acc = group_accuracies(full, g_labels, s.class_ids)
            groups[key] = {"group": key[0], "classes": s.classes, "class_ids": s.class_ids, "images": n,
                           "generalist_open": open_acc, "generalist_closed": closed_acc, "specialists": []}
        row = groups[key]
        logits, labels, idx = _predict(s, device)
        if len(labels) != row["images"] or not np.array_equal(idx, g_idx[np.isin(g_labels, s.class_ids)]):
            raise UserError(f"{s.path} sees other test images than its generalist; retrain it from {gen.path}")
        acc = float((np.asarray(s.class_ids)[logits.argmax(1)] == labels).mean()) if len(labels) else float("nan")
        parent = s.info.get("parent") or {}
        row["specialists"].append({
            "run": str(s.path.resolve()), "name": s.path.name, "init": s.info.get("init"),
            "bn_convert": s.info.get("bn_convert"), "from": parent.get("run"),
            "descends_from_generalist": (parent.get("lineage") or [None])[0] == str(gen.path.resolve()),
            "accuracy": acc, "gain_vs_closed": acc - row["generalist_closed"],
            "gain_vs_open": acc - row["generalist_open"],
        })
    return {"schema": SCHEMA, "generalist": str(gen.path.resolve()), "split": "test", "groups": list(groups.values())}


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"Generalist: `{result['generalist']}`, {result['split']} split; accuracy on each group's images.", "",
             "| group | classes | images | generalist open | generalist closed | specialist | init | bn | accuracy "
             "| gain vs closed |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |"]
    for g in result["groups"]:
        for s in g["specialists"]:
            lines.append(f"| {g['group']} | {len(g['classes'])} | {g['images']} | {g['generalist_open']:.4f} | "
                         f"{g['generalist_closed']:.4f} | {s['name']} | {s['init']} | "
                         f"{'on' if s['bn_convert'] else 'off'} | {s['accuracy']:.4f} | {s['gain_vs_closed']:+.4f} |")
    return "\n".join(lines) + "\n"


def write_comparison(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another --out")
    refuse_run_file(out / "compare.json")
    return write_json(out / "compare.json", result), write_text(out / "compare.md", to_markdown(result))
