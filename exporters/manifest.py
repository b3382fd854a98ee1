"""DIR/manifest.json: every artifact of an export directory with its hash, parity proof and build facts.

Several runs (a generalist and its specialists) exported into one directory share one manifest: writing merges
by artifact name. The caller holds the directory lock (toolkit.io.DirLock) around read-merge-write.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
from pathlib import Path, PurePosixPath
from typing import Any

from toolkit.errors import IntegrityError, UserError
from toolkit.io import read_json, sha256_file, write_json

from .formats import FORMATS

SCHEMA = "edgespec.manifest/1"
MANIFEST = "manifest.json"
PACKAGES = ("edgespec", "torch", "torchvision", "onnx", "onnxscript", "onnxslim", "onnxruntime",
            "onnxconverter-common", "numpy", "tensorrt", "executorch")


def host_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"hostname": platform.node(), "platform": platform.platform(),
                             "machine": platform.machine(), "python": platform.python_version(),
                             "cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
            facts["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001 - host facts are best effort, never a reason to fail an export
        pass
    return facts


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def load_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise UserError(f"no {MANIFEST} in {directory}; pass a directory written by `edgespec export`")
    data = read_json(path, "manifest")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("artifacts"), list):
        raise UserError(f"{path} is not an edgespec manifest ({SCHEMA}); re-export into a fresh directory")
    names: set[str] = set()
    for i, entry in enumerate(data["artifacts"]):
        problem = entry_problem(Path(directory), entry)
        if problem is None and entry["name"] in names:
            problem = f"repeats the name {entry['name'][:60]!r}"
        if problem:
            raise IntegrityError(f"{path}: artifact {i} {problem}; it was edited or forged: re-run `edgespec export` "
                                 "into a fresh directory")
        names.add(entry["name"])
    return data


_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Keys every manifest entry has, and their types: an entry of another shape never reaches a reader.
ENTRY_TYPES: dict[str, type] = {"name": str, "model": str, "run": str, "role": str, "format": str, "path": str,
                                "sha256": str}


def inside(directory: Path, rel: str) -> bool:
    """`rel` names a file inside `directory`: relative, no `..`, and resolving (symlinks followed) below it."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or Path(rel).is_absolute() or ".." in pure.parts or "\\" in rel or "\0" in rel:
        return False
    root = directory.resolve()
    try:
        target = (directory / rel).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return target != root and target.is_relative_to(root)


def entry_problem(directory: Path, entry: Any) -> str | None:
    """What makes one manifest entry unusable (wrong shape, a path outside the directory), or None."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    for key, typ in ENTRY_TYPES.items():
        if not isinstance(entry.get(key), typ):
            return f"lacks {key!r}" if key not in entry else f"has {key!r} of type {type(entry[key]).__name__}"
    if entry["format"] not in FORMATS:
        return f"has the unknown format {entry['format'][:40]!r}"
    if entry["role"] not in ("generalist", "specialist"):
        return f"has the role {entry['role'][:40]!r}, not generalist or specialist"
    if not isinstance(entry.get("files", []), list):
        return "has 'files' that is not a list"
    for f in [entry, *entry.get("files", [])]:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("sha256"), str):
            return "lists a companion file that is not {path, sha256}"
        if not _SHA256.fullmatch(f["sha256"]):
            return f"has a sha256 for {f['path']!r} that is not 64 hex digits"
        if not inside(directory, f["path"]):
            return f"names the path {f['path']!r}, which is not inside the export directory"
    return None


def write_manifest(directory: str | Path, entries: list[dict[str, Any]]) -> Path:
    """Merge `entries` into the directory's manifest (replacing artifacts of the same name) and write it atomically."""
    from toolkit import __version__
    from toolkit.runs import now

    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        current = load_manifest(directory)
    else:
        current = {"schema": SCHEMA, "created": now(), "artifacts": []}
    names = {e["name"] for e in entries}
    artifacts = [a for a in current["artifacts"] if a.get("name") not in names] + list(entries)
    manifest = {"schema": SCHEMA, "created": current.get("created", now()), "updated": now(),
                "edgespec_version": __version__, "host": host_facts(), "packages": package_versions(),
                "artifacts": sorted(artifacts, key=lambda a: (a["role"] != "generalist", a["model"], a["name"]))}
    return write_json(directory / MANIFEST, manifest)


def find_artifact(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in manifest["artifacts"]:
        if entry["name"] == name:
            return entry
    from toolkit.errors import unknown_name

    raise unknown_name("artifact", name, [a["name"] for a in manifest["artifacts"]])


def verify_artifact(directory: str | Path, entry: dict[str, Any]) -> Path:
    """The artifact's path if it and its companion files match the manifest; IntegrityError otherwise."""
    directory = Path(directory)
    files = [(entry["path"], entry["sha256"])] + [(f["path"], f["sha256"]) for f in entry.get("files", [])]
    for rel, expected in files:
        path = directory / rel
        if not path.is_file():
            raise IntegrityError(f"{path} listed in {directory / MANIFEST} is missing; re-run `edgespec export`")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(f"{path} does not match its manifest hash (sha256 {actual[:12]}..., expected "
                                 f"{expected[:12]}...); it was changed or corrupted: re-run `edgespec export`")
    check_identity(directory / entry["path"], entry)
    return directory / entry["path"]


def check_identity(path: Path, entry: dict[str, Any]) -> None:
    """An ONNX/ORT file must be the model its entry describes: a file swapped for another model's (or a corrupt one)
    whose hash was written into the manifest is refused here, before anything runs or ships it."""
    fmt = FORMATS.get(entry.get("format"))
    if fmt is None or fmt.runtime != "onnxruntime":
        return  # TensorRT engines: the hash is the check (they only deserialize on their GPU)
    import json

    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for every kind of bad file
        raise IntegrityError(f"{path} is not a loadable model ({type(exc).__name__}); it was replaced or corrupted: "
                             "re-run `edgespec export`") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    want = list(entry.get("input_shape") or [])
    same_shape = len(inp.shape) == len(want) and all(
        w == -1 or not isinstance(g, int) or g == w for g, w in zip(inp.shape, want, strict=True))
    meta = session.get_modelmeta().custom_metadata_map
    sha = meta.get("source_checkpoint_sha256")
    with contextlib.suppress(ValueError):
        sha = json.loads(sha) if sha is not None else None
    if sha is None or sha != entry.get("source_checkpoint_sha256"):  # stripped metadata: not edgespec's file of it
        raise IntegrityError(f"{path} does not carry the checkpoint hash {MANIFEST} lists for {entry.get('name')!r} "
                             f"({'none in its metadata' if sha is None else 'another checkpoint'}); it is another "
                             "model or was altered: re-run `edgespec export`")
    if not same_shape or inp.name != entry.get("input_name") or out.name != entry.get("output_name"):
        raise IntegrityError(f"{path} is another model than {MANIFEST} lists as {entry.get('name')!r} (input "
                             f"{inp.name} {list(inp.shape)}, expected {entry.get('input_name')} {want}); re-run "
                             "`edgespec export`")


def verify_all(directory: str | Path) -> list[Path]:
    manifest = load_manifest(directory)
    return [verify_artifact(directory, e) for e in manifest["artifacts"]]
