"""Plots for report.html, returned as base64 PNG so the report is one self-contained file."""

from __future__ import annotations

import base64
import io
from typing import Any


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_latency_png(rows: list[dict[str, Any]], device: str) -> str | None:
    """Accuracy against p50 latency, one point per (model, format); generalists drawn as stars."""
    pts = [r for r in rows if r.get("accuracy") is not None and (r.get("latency_ms") or {}).get("p50") is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    formats = sorted({r["format"] for r in pts})
    colors = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(formats)}
    for r in pts:
        gen = r["role"] == "generalist"
        ax.scatter(r["latency_ms"]["p50"], r["accuracy"], marker="*" if gen else "o", s=160 if gen else 40,
                   color=colors[r["format"]], edgecolors="black" if gen else "none", zorder=3 if gen else 2)
        ax.annotate(r["group"] or "generalist", (r["latency_ms"]["p50"], r["accuracy"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    for f in formats:
        ax.scatter([], [], color=colors[f], label=f)
    ax.scatter([], [], marker="*", color="white", edgecolors="black", s=120, label="generalist")
    kind = pts[0]["measurement"]
    ax.set_xlabel(f"p50 latency, ms ({kind}, batch {pts[0]['batch_size']})")
    ax.set_ylabel("top-1 accuracy on the group's test images")
    ax.set_title(f"{device}: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def sizes_png(rows: list[dict[str, Any]]) -> str | None:
    """Artifact size per model and format (each artifact once, whatever devices it ran on)."""
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.get("size_bytes") is not None:
            seen[(r["model"], r["format"])] = r["size_bytes"]
    if not seen:
        return None
    plt = _plt()
    models = sorted({m for m, _ in seen})
    formats = sorted({f for _, f in seen})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(models) + 2), 3.5))
    width = 0.8 / len(formats)
    for j, f in enumerate(formats):
        xs = [i + j * width for i, m in enumerate(models) if (m, f) in seen]
        ys = [seen[(m, f)] / 1024 for m in models if (m, f) in seen]
        ax.bar(xs, ys, width, label=f)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("artifact size, KiB (file on disk)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
