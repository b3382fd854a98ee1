"""The package's shape: no import cycle between project files, counting function-level imports too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("toolkit", "exporters", "benchmarks")


def module_files() -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            files[".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = f
    return files


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (a `from pkg import x` reads pkg/__init__)."""
    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if r and r != mod and not (f.name == "__init__.py" and r.startswith(mod + ".")):
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_project_files():
    found = cycles(import_graph(module_files()))
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_graph_counts_function_level_imports():
    files = module_files()
    graph = import_graph(files)
    # toolkit.cli.bench imports benchmarks only inside its command function: still an edge
    assert "benchmarks" in graph["toolkit.cli.bench"] or "benchmarks.bench" in graph["toolkit.cli.bench"]


# -- one path for both tasks ------------------------------------------------------------------------------------
#: Where a task's own code lives: the task definitions, the detection implementation, and each layer's per-task
#: plug-in. Everywhere else asks the task (toolkit.tasks.task_of), never whether a run is a detection run.
TASK_HOMES = ("toolkit/tasks/", "toolkit/detect/", "toolkit/cli/detect.py", "exporters/detect.py",
              "exporters/detect_int8.py", "exporters/classify.py", "benchmarks/scoring.py")


def _task_questions(source: str) -> list[str]:
    """Expressions that ask for the detection task by name: `x == "detect"`, `x.get("task") != "detect"`,
    calls of is_detect_run/is_detect."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if isinstance(side, ast.Constant) and side.value == "detect":
                    found.append(ast.unparse(node))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name in ("is_detect_run", "is_detect"):
                found.append(ast.unparse(node))
    return found


def test_the_question_finder_sees_both_spellings():
    assert _task_questions('if e.get("task") == "detect": pass') == ["e.get('task') == 'detect'"]
    assert _task_questions("flag = is_detect_run(p)") == ["is_detect_run(p)"]
    assert _task_questions('if task_of(e).bundled: pass') == []


def test_only_the_task_implementations_ask_whether_a_run_is_a_detection_run():
    offenders = {}
    for f in module_files().values():
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith(TASK_HOMES):
            continue
        found = _task_questions(f.read_text(encoding="utf-8"))
        if found:
            offenders[rel] = found
    assert offenders == {}


def test_every_task_has_an_exporter_and_a_scorer():
    from benchmarks.scoring import SCORERS
    from exporters.export import task_exporter
    from toolkit.tasks import TASKS

    assert set(TASKS) == {"classify", "detect"} == set(SCORERS)
    for name in TASKS:
        module = task_exporter(name)
        assert all(callable(getattr(module, fn)) for fn in ("open_runs", "prepare", "export_one"))


def test_one_place_publishes_exports_and_writes_manifests():
    """write_manifest is called in exporters/export.py alone (the orchestration), and defined in manifest.py."""
    callers = sorted(f.relative_to(ROOT).as_posix() for f in module_files().values()
                     if "write_manifest(" in f.read_text(encoding="utf-8"))
    assert callers == ["exporters/export.py", "exporters/manifest.py"]


# -- one row schema ---------------------------------------------------------------------------------------------
def _runner():
    import importlib.util
    import sys

    path = ROOT / "toolkit" / "bundle" / "runner" / "run.py"
    spec = importlib.util.spec_from_file_location("edgespec_bundle_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.parent))  # run.py imports its package beside it, as in a bundle
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent.parent))
    return module


def test_the_device_runner_row_copy_matches_the_schema():
    from benchmarks.schema import ROW_DEFAULTS, ROW_TYPES, Measurement, empty_row, row_problems

    run = _runner()
    bundle = {"device": "raspberry-pi-5", "runtime": "onnxruntime"}
    item = {"model": "m", "role": "specialist", "group": "g", "format": "onnx", "precision": "fp32",
            "size_bytes": 10, "sha256": "ab"}
    row = run.new_row(bundle, item, 1, 2)
    assert row_problems(row) == []
    assert set(row) == set(empty_row("m", "specialist", "g", "onnx", "fp32", "d", Measurement.DEVICE, 1)) | {
        "threads", "runtime"}
    assert set(ROW_TYPES) <= set(row) and set(ROW_DEFAULTS) <= set(row)
    assert run.MEASUREMENT == Measurement.DEVICE
    assert row_problems({**row, "measurement": "guessed"}) != []


def test_the_schema_document_names_every_row_key():
    from benchmarks.schema import ROW_DEFAULTS, ROW_TYPES

    doc = (ROOT / "benchmarks" / "REPORT_SCHEMA.md").read_text(encoding="utf-8")
    missing = [k for k in {**ROW_TYPES, **ROW_DEFAULTS} if f"`{k}`" not in doc]
    assert missing == []


def test_rows_are_built_in_one_place():
    """Only benchmarks/schema.py spells out a row's keys; rows.py and the runner copy build from it (checked)."""
    spelled = sorted(f.relative_to(ROOT).as_posix() for f in module_files().values()
                     if '"generalist_accuracy_open": None' in f.read_text(encoding="utf-8"))
    assert spelled == ["benchmarks/schema.py", "toolkit/bundle/runner/run.py"]
