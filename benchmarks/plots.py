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


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (faster and at least as accurate), by latency."""
    front, best = [], -float("inf")
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def accuracy_latency_png(rows: list[dict[str, Any]], device: str, recs: list[dict[str, Any]] | None = None
                         ) -> str | None:
    """The task's metric on the group's images against p50 latency, one point per specialist artifact; the
    generalist as a star at its closed-set accuracy on each group's images (not its all-class figure); the
    Pareto front drawn; each group's recommended artifact ringed and named."""
    from toolkit.tasks import task_of

    def p50(r):
        return (r.get("latency_ms") or {}).get("p50")

    spec = [r for r in rows if r["role"] == "specialist" and r.get("accuracy") is not None and p50(r)]
    if not spec:
        return None
    gen_p50 = {(r["model"], r["format"]): p50(r) for r in rows if r["role"] == "generalist" and p50(r)}
    stars = {}  # (group, format) -> (latency, closed-set accuracy)
    for r in spec:
        lat = gen_p50.get((r.get("generalist_model"), r["format"]))
        if lat and r.get("generalist_accuracy_closed") is not None:
            stars[(r.get("group"), r["format"])] = (lat, r["generalist_accuracy_closed"])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    formats = sorted({r["format"] for r in spec})
    colors = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(formats)}
    groups = sorted({str(r.get("group")) for r in spec})
    markers = dict(zip(groups, "osD^vP<>X" * 4, strict=False))
    for r in spec:
        compressed = bool(r.get("compression"))
        ax.scatter(p50(r), r["accuracy"], marker=markers[str(r.get("group"))], s=42, color=colors[r["format"]],
                   edgecolors="black" if compressed else "none", linewidths=0.8, zorder=2, alpha=0.85)
    for (_group, fmt), (lat, acc) in stars.items():
        ax.scatter(lat, acc, marker="*", s=150, color=colors[fmt], edgecolors="black", linewidths=0.6, zorder=3)
    front = pareto_front([(p50(r), r["accuracy"]) for r in spec] + list(stars.values()))
    ax.step([p for p, _ in front], [a for _, a in front], where="post", color="grey", lw=1, ls="--", zorder=1)
    for rec in recs or []:
        hit = next((r for r in spec if r["model"] == rec.get("model") and r["format"] == rec.get("format")), None)
        if hit is not None:
            ax.scatter(p50(hit), hit["accuracy"], s=260, facecolors="none", edgecolors="red", linewidths=1.5, zorder=4)
            ax.annotate(f"{rec['group']}: {hit['model']} {hit['format']}", (p50(hit), hit["accuracy"]), fontsize=7,
                        xytext=(6, -12), textcoords="offset points", color="red")
    handles = [ax.scatter([], [], color=colors[f], label=f) for f in formats]
    handles += [ax.scatter([], [], marker=markers[g], color="grey", label=f"group {g}") for g in groups]
    handles.append(ax.scatter([], [], marker="o", color="white", edgecolors="black", label="compressed (outlined)"))
    handles.append(ax.scatter([], [], marker="*", s=120, color="white", edgecolors="black",
                              label="generalist, closed set on the group"))
    handles.append(ax.plot([], [], color="grey", ls="--", label="Pareto front")[0])
    handles.append(ax.scatter([], [], s=120, facecolors="none", edgecolors="red", label="recommended"))
    label = task_of(spec[0]).metric_label
    ax.set_xlabel(f"p50 latency, ms ({spec[0]['measurement']}, batch {spec[0]['batch_size']})")
    ax.set_ylabel(f"{label} on the group's images")
    ax.set_title(f"{device}: {label} against latency")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
