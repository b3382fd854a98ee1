"""Which file to deploy: per device and group, the fastest artifact of the group's lineage within an accuracy drop.

Candidates are every row of a group on a device (its specialists, their compressed copies, any format the device
deploys) and the generalist itself at its closed-set accuracy on the group's images. A candidate qualifies when its
accuracy is at most `max_drop` below the generalist fp32's closed-set accuracy on those images; the fastest
qualifying one (highest speedup at the device's first batch size, see `_speedup`) is recommended, with its
speedup over the generalist fp32 in the device's runtime (its highest precision where it deploys no fp32).
"""

from __future__ import annotations

from typing import Any

NO_GROUP = "(all classes)"


def _p50(row: dict[str, Any]) -> float | None:
    return (row.get("latency_ms") or {}).get("p50")


def _gen_fp32(rows: list[dict[str, Any]], gen: str, device: str) -> dict[str, Any] | None:
    """The generalist's exported row on `device` every speedup is against: fp32 (onnx first); on a device that
    deploys no fp32 format (TensorRT), its highest precision."""
    mine = [r for r in rows if r["model"] == gen and r["device"] == device and r["format"] != "pytorch" and _p50(r)]
    for precision in ("fp32", "fp16", "int8"):
        found = [r for r in mine if r["precision"] == precision]
        if found:
            return next((r for r in found if r["format"] == "onnx"), found[0])
    return None


def _speedup(row: dict[str, Any], gen_rows: dict[str, dict[str, Any]], base: dict[str, Any]
             ) -> tuple[float, float, float, str] | None:
    """(speedup of `row` over `base`, row p50, base p50, how) with speedup == base p50 / row p50 exactly.

    Where `row` was timed side by side with the generalist of its format: the paired p50s, the generalist's scaled
    to `base` by the generalist's own format-to-base ratio (so a same-size specialist lands near the generalist,
    not on the noise between two rows timed at different moments). Else the two rows' own p50s."""
    same = gen_rows.get(row["format"])
    paired = row.get("speedup_paired") or {}
    if paired.get("speedup") and paired.get("specialist_p50_ms") and same is not None and _p50(same):
        mine, gen = paired["specialist_p50_ms"], paired["generalist_p50_ms"] * _p50(base) / _p50(same)
        return gen / mine, mine, gen, "paired"
    if not _p50(row) or not _p50(base):
        return None
    return _p50(base) / _p50(row), _p50(row), _p50(base), "rows"


def _ranked(row: dict[str, Any], found: tuple[float, float, float, str]) -> float:
    """The speedup a candidate is ranked by: a paired speedup over the generalist of its format that does not clear
    the A/A noise floor counts as none (1x), so a same-size specialist never wins on timing noise; what is left
    is its format's own ratio to the generalist fp32."""
    speedup = found[0]
    paired = row.get("speedup_paired") or {}
    if found[3] == "paired" and paired.get("resolved") is False and paired.get("speedup"):
        return speedup / paired["speedup"]
    return speedup


def recommendations(rows: list[dict[str, Any]], parents: dict[str, str | None], max_drop: float) -> list[dict]:
    out = []
    groups = {}  # (device, generalist, group) -> the group's specialist-role rows on that device
    for r in rows:
        if r["role"] == "specialist" and parents.get(r["model"]):
            groups.setdefault((r["device"], parents[r["model"]], r.get("group")), []).append(r)
    for (device, gen, group), members in groups.items():
        base = _gen_fp32(rows, gen, device)
        gen_rows = {r["format"]: r for r in rows if r["model"] == gen and r["device"] == device}
        ref = _closed_reference(rows, members, base, group)
        rec: dict[str, Any] = {"device": device, "group": group, "generalist": gen, "max_accuracy_drop": max_drop,
                               "generalist_fp32_format": base["format"] if base else None,
                               "generalist_reference_precision": base["precision"] if base else None,
                               "generalist_fp32_p50_ms": _p50(base) if base else None,
                               "generalist_accuracy_closed": ref}
        if base is None or ref is None:
            out.append({**rec, "model": None, "reason": "no generalist row with a closed-set accuracy to compare "
                                                        "with on this device"})
            continue
        cands = [(m, m.get("accuracy")) for m in members]
        cands += [(g, next((m.get("generalist_accuracy_closed") for m in members if m["format"] == g["format"]),
                           None)) for g in gen_rows.values()]
        ok = [(c, acc, _speedup(c, gen_rows, base)) for c, acc in cands if acc is not None and _p50(c)
              and acc >= ref - max_drop - 1e-12 and c["batch_size"] == base["batch_size"]]
        ok = [o for o in ok if o[2] is not None]
        if not ok:
            out.append({**rec, "model": None, "reason": f"no artifact within {max_drop * 100:g} pt of the "
                                                        "generalist's closed-set accuracy"})
            continue
        best, acc, (speedup, p50, gen_p50, how) = max(ok, key=lambda o: _ranked(o[0], o[2]))
        out.append({**rec, "model": best["model"], "role": best["role"], "format": best["format"],
                    "precision": best["precision"], "measurement": best["measurement"], "accuracy": acc,
                    "accuracy_change": acc - ref, "p50_ms": p50, "generalist_fp32_p50_ms": gen_p50,
                    "p50_source": how, "speedup_vs_generalist_fp32": speedup,
                    "speedup_resolved": (best.get("speedup_paired") or {}).get("resolved"),
                    "macs": best.get("macs"), "params": best.get("params"), "compression": best.get("compression"),
                    "batch_size": best["batch_size"]})
    return out


def _closed_reference(rows: list[dict[str, Any]], members: list[dict[str, Any]], base: dict[str, Any] | None,
                      group: str | None) -> float | None:
    """The generalist's closed-set accuracy on the group's images: in `base`'s format on this device, else the
    fp32 onnx figure measured for the same group anywhere (an estimate device's proxy)."""
    if base is None:
        return None
    here = next((m["generalist_accuracy_closed"] for m in members if m["format"] == base["format"]
                 and m.get("generalist_accuracy_closed") is not None), None)
    if here is not None:
        return here
    return next((r["generalist_accuracy_closed"] for r in rows if r["role"] == "specialist" and r.get("group") == group
                 and r["format"] == "onnx" and r.get("generalist_accuracy_closed") is not None), None)


def recommendations_markdown(recs: list[dict[str, Any]]) -> list[str]:
    if not recs:
        return []
    drop = recs[0]["max_accuracy_drop"]
    lines = ["## Recommended artifact per device and group", "",
             f"The fastest artifact of each group's lineage whose accuracy is at most {drop * 100:g} pt below the "
             "generalist fp32's closed-set accuracy on the group's images; speedup over the generalist fp32 "
             "(fp16 on devices without fp32) is the ratio of the two p50 columns beside it. Where the artifact was "
             "timed side by side with the generalist of its format (p50 marked †), both p50s come from that paired "
             "timing, the generalist's scaled to fp32 by its own rows' format-to-fp32 ratio; else they are the two "
             "rows' own p50s. `~`: the paired part is within the A/A noise floor; candidates are ranked with it "
             "counted as 1x, so timing noise never picks the file.", "",
             "| device | group | recommended | format | measurement | accuracy | generalist closed | Δ acc | p50 ms "
             "| generalist fp32 p50 ms | speedup | MACs | params |", "|" + "---|" * 13]
    for r in recs:
        if r["model"] is None:
            lines.append(f"| {r['device']} | {r['group'] or NO_GROUP} | – ({r['reason']}) |" + " – |" * 10)
            continue
        mark = "†" if r.get("p50_source") == "paired" else ""
        lines.append(f"| {r['device']} | {r['group'] or NO_GROUP} | {r['model']} | {r['format']} | {r['measurement']} "
                     f"| {r['accuracy']:.4f} | {r['generalist_accuracy_closed']:.4f} | "
                     f"{r['accuracy_change'] * 100:+.1f} pt | {r['p50_ms']:.4g}{mark} | "
                     f"{r['generalist_fp32_p50_ms']:.4g}{mark} | "
                     f"{r['speedup_vs_generalist_fp32']:.2f}x{'~' if r.get('speedup_resolved') is False else ''} | "
                     f"{_count(r['macs'])} | {_count(r['params'])} |")
    return [*lines, ""]


def _count(v: int | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"
