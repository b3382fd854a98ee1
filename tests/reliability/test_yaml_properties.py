"""Property-based tests for the YAML files users write: groups files, device profiles, pipeline configs.

Whatever the text (garbage bytes, valid YAML of the wrong shape, a valid file with one value changed), parsing
ends in a valid object or a one-line UserError; never another exception.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import UserError

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
CLASSES = ["cat", "dog", "owl", "car", "bus", "1", "2", "yes"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.floats(), st.text(max_size=12),
                    st.sampled_from(CLASSES))


def _values(keys: list[str]) -> st.SearchStrategy:
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8), st.integers()), inner, max_size=4)),
        max_leaves=16)


def _dump(obj) -> str:
    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False)


# Fragments that exercise YAML features the dumper never writes: anchors, tags, merge keys, complex keys.
YAML_TRICKS = ["&a [cat, dog]", "*a", "!!python/object/apply:os.system ['echo pwned']", "!!binary aGVsbG8=",
               "? [cat, dog]\n: [owl]", "<<: {a: 1}", "{a: 1, a: 2}", "!!set {cat, dog}", "- - - -", "\t",
               "%YAML 1.1\n---", "---\n...\n---", "x: !!float nan", "'unterminated", "{[}", "\x00", "\ufeffcat: [dog]",
               "2001-12-14: [cat]"]


def _texts(keys: list[str], valid: list[str]) -> st.SearchStrategy[str]:
    mutated = st.tuples(st.sampled_from(valid), st.integers(0, 400), st.sampled_from(YAML_TRICKS + ["", ":", "- "])) \
        .map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:])
    return st.one_of(st.text(max_size=120), _values(keys).map(_dump), mutated,
                     st.lists(st.sampled_from(YAML_TRICKS), min_size=1, max_size=3).map("\n".join))


def _one_line(exc: UserError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(str(exc))


# ---- groups files (toolkit/specialize/groups.py) -------------------------------------------------------------

groups_mod = pytest.importorskip("toolkit.specialize.groups")
GROUP_VALID = ["animals: [cat, dog, owl]\nvehicles: [car, bus]\n", "a: [cat, dog]\nb: ['1', '2']\n",
               "# comment\nx: [cat, 'yes']\n"]


def _check_groups(text: str) -> None:
    try:
        groups = groups_mod.parse_groups(text, CLASSES)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(groups, dict) and groups
    for name, members in groups.items():
        assert isinstance(name, str) and groups_mod.NAME_RE.match(name)
        assert len(members) >= 2 and len(set(members)) == len(members)
        assert all(isinstance(m, str) and m in CLASSES for m in members)


@SETTINGS
@given(_texts(CLASSES + ["animals", "a"], GROUP_VALID))
def test_groups_text_parses_or_is_a_user_error(text):
    _check_groups(text)


@SETTINGS
@given(st.binary(max_size=200))
def test_groups_file_of_any_bytes(tmp_path, data):
    path = tmp_path / "groups.yaml"
    path.write_bytes(data)
    try:
        groups_mod.load_groups(path, CLASSES)
    except UserError as exc:
        _one_line(exc)


def test_groups_yaml_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    text = f"g: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n"
    with pytest.raises(UserError):
        groups_mod.parse_groups(text, CLASSES)
    assert not marker.exists()


# ---- device profiles (toolkit/devices.py) -----------------------------------------------------------------------

devices = pytest.importorskip("toolkit.devices")
PROFILE_DOCS = {name: yaml.safe_load((devices.devices_dir() / f"{name}.yaml").read_text())
                for name in devices.list_profiles()}
PROFILE_KEYS = sorted({*devices.DeviceProfile.model_fields, "schema", "fp32_gflops", "memory_bandwidth_gbs",
                       "source", "latency_p50_ms", "min_accuracy", "host", "cuda", "device_tree_model"})


def _check_profile_data(data, where="t.yaml") -> None:
    try:
        profile = devices.parse_profile(data, where)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(profile, devices.DeviceProfile)
    assert profile.formats and all(b >= 1 for b in profile.batch_sizes)


@st.composite
def _mutated_profile(draw):
    """A shipped profile with one to three keys (possibly nested) replaced, deleted or added."""
    doc = copy.deepcopy(PROFILE_DOCS[draw(st.sampled_from(sorted(PROFILE_DOCS)))])
    for _ in range(draw(st.integers(1, 3))):
        target = doc
        sub = draw(st.sampled_from([None, "peak", "match", "budgets"]))
        if sub and isinstance(doc.get(sub), dict):
            target = doc[sub]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        keys = sorted(map(str, target)) or ["name"]
        new_key = st.sampled_from(PROFILE_KEYS) | st.text(max_size=6)
        key = draw(st.sampled_from(keys)) if action != "add" else draw(new_key)
        if action == "delete":
            target.pop(key, None)
        else:
            target[key] = draw(_values(PROFILE_KEYS))
    return doc


@SETTINGS
@given(_mutated_profile())
def test_mutated_device_profiles_validate_or_name_the_key(doc):
    _check_profile_data(doc)


@SETTINGS
@given(_texts(PROFILE_KEYS, [_dump(d) for d in PROFILE_DOCS.values()]))
def test_device_profile_text_loads_or_is_a_user_error(tmp_path, text):
    path = tmp_path / "profile.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        profile = devices.load_profile(path)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(profile, devices.DeviceProfile)


@SETTINGS
@given(st.binary(max_size=200))
def test_device_profile_of_any_bytes(tmp_path, data):
    path = tmp_path / "profile.yaml"
    path.write_bytes(data)
    try:
        devices.load_profile(path)
    except UserError as exc:
        _one_line(exc)


def test_unknown_key_and_wrong_type_are_named():
    doc = copy.deepcopy(PROFILE_DOCS["host-cpu"])
    doc["budgets"]["latency_p50"] = 3
    with pytest.raises(UserError, match="latency_p50"):
        devices.parse_profile(doc, "x")
    doc = copy.deepcopy(PROFILE_DOCS["host-cpu"])
    doc["batch_sizes"] = "many"
    with pytest.raises(UserError, match="batch_sizes"):
        devices.parse_profile(doc, "x")


# ---- pipeline config (toolkit/pipeline.py) ----------------------------------------------------------------------

PIPELINE_KEYS = ["train", "partition", "specialize", "export", "bench", "epochs", "data", "model", "method",
                 "groups", "group_size", "named", "formats", "devices", "timing", "runs", "options"]


def _pipeline():
    return pytest.importorskip("toolkit.pipeline")


def _check_pipeline(path: Path) -> None:
    pipeline = _pipeline()
    try:
        cfg, _ = pipeline.load_config(path)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(cfg, pipeline.PipelineConfig)
    assert cfg.train.epochs > 0 and cfg.train.batch_size > 0


@SETTINGS
@given(st.one_of(_texts(PIPELINE_KEYS, ["train:\n  epochs: 2\npartition:\n  groups: 2\nexport:\n  formats: [onnx]\n",
                                        "bench:\n  devices: [host-cpu]\n  timing:\n    runs: 10\n"]),
                 st.dictionaries(st.sampled_from(PIPELINE_KEYS[:5]),
                                 st.dictionaries(st.sampled_from(PIPELINE_KEYS), _values(PIPELINE_KEYS), max_size=3),
                                 max_size=4).map(_dump)))
def test_pipeline_config_loads_or_is_a_user_error(tmp_path, text):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    _check_pipeline(path)


@SETTINGS
@given(st.binary(max_size=200))
def test_pipeline_config_of_any_bytes(tmp_path, data):
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(data)
    _check_pipeline(path)


# ---- detection data files and groups (toolkit/detect/dataset.py) ----------------------------------------------

DET_KEYS = ["path", "train", "val", "test", "names", "nc", "groups", "cars", "person"]
DET_VALID = ["path: .\ntrain: .\nval: .\nnames: [car, person, bike]\ngroups:\n  road: [car, bike]\n",
             "train: .\nval: .\nnames: {0: car, 1: person}\nnc: 2\n"]


def _detect():
    return pytest.importorskip("toolkit.detect.dataset")


@SETTINGS
@given(_texts(DET_KEYS, DET_VALID))
def test_detection_data_file_loads_or_is_a_user_error(tmp_path, text):
    dataset = _detect()
    path = tmp_path / "data.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        data = dataset.load_data(path)
    except UserError as exc:
        _one_line(exc)
        return
    assert data.names and all(isinstance(n, str) for n in data.names)
    assert all(set(m) <= set(data.names) for m in data.groups.values())


@SETTINGS
@given(st.one_of(_texts(DET_KEYS, ["road: [car, bike]\n", "groups:\n  people: [person]\n"]), st.binary(max_size=100)))
def test_detection_groups_file_loads_or_is_a_user_error(tmp_path, text):
    dataset = _detect()
    path = tmp_path / "groups.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    try:
        groups = dataset.load_groups(path, ["car", "person", "bike"])
    except UserError as exc:
        _one_line(exc)
        return
    assert all(isinstance(k, str) and v for k, v in groups.items())
