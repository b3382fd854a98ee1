"""One YAML reader for every file users write: safe, duplicate keys refused, one-line errors that name the file."""

from __future__ import annotations

import pytest

from toolkit.devices import devices_dir, load_profile
from toolkit.errors import UserError
from toolkit.io import parse_yaml, read_yaml
from toolkit.pipeline import load_config


def test_parse_yaml_reads_plain_values():
    assert parse_yaml("a: [1, 2]\nb: {c: x}\n", "f") == {"a": [1, 2], "b": {"c": "x"}}
    assert parse_yaml("", "f") is None


@pytest.mark.parametrize(("text", "fragment"), [
    ("a: 1\na: 2\n", "f: 'a' is defined twice (line 2); fix it"),
    ("x:\n  k: 1\n  k: 2\n", "'k' is defined twice (line 3)"),  # nested mappings too
    ("? [1, 2]\n: v\n", "the key at line 1 is a list, not a name"),
    ("a: [1, 2\n", "f is not valid YAML: "),
    ("a: !!python/object:os.system x\n", "f is not valid YAML"),  # no arbitrary objects: the safe loader refuses
])
def test_parse_yaml_problems_are_one_line_user_errors(text, fragment):
    with pytest.raises(UserError) as info:
        parse_yaml(text, "f", "fix it")
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg


def test_parse_yaml_reports_the_line_of_a_syntax_error():
    with pytest.raises(UserError, match="at line 3"):
        parse_yaml("a: 1\nb: 2\n\tc: 3\n", "f")


def test_read_yaml_missing_and_binary(tmp_path):
    with pytest.raises(UserError, match=r"^thing not found: .*none.yaml; pass another$"):
        read_yaml(tmp_path / "none.yaml", "thing", "pass another")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_yaml(tmp_path / "bin.yaml", "thing", "pass another")


def test_device_profile_with_a_key_given_twice_is_refused(tmp_path):
    text = tmp_path / "p.yaml"
    body = (devices_dir() / "host-cpu.yaml").read_text(encoding="utf-8")
    text.write_text(body + "\ndescription: again\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"device profile file .*p.yaml: 'description' is defined twice"):
        load_profile(text)
    text.write_text(body, encoding="utf-8")
    assert load_profile(text).name == "host-cpu"


def test_pipeline_config_with_a_section_given_twice_is_refused(tmp_path):
    p = tmp_path / "pipe.yaml"
    p.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"pipeline config .*pipe.yaml: 'train' is defined twice \(line 3\)"):
        load_config(p)
    cfg, where = load_config(None)
    assert where == "the embedded default" and cfg is not None
