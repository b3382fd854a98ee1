"""Groups files: YAML that maps a group name to the class names a specialist serves.

```yaml
# edgespec groups (hand-written or from `edgespec partition`)
animals: [cat, dog, horse]
vehicles: [car, truck, ship]
```
Overlapping groups are allowed; unknown class names, empty groups, groups under `min_size` classes (a
classifier specialist needs two, a detector one) and duplicates are errors. The one groups schema of both tasks:
a top-level `groups:` key holding the mapping (as a YOLO data file has it) is accepted too.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError, did_you_mean
from ..io import parse_yaml, read_yaml, write_text

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


FIX = "write one 'name: [class, ...]' per group"


def parse_groups(text: str, classes: list[str], where: str = "groups file", min_size: int = 2
                 ) -> dict[str, list[str]]:
    """Parse and validate groups YAML against `classes`; returns {name: [class names]} in file order."""
    return check_groups(parse_yaml(text, where, FIX), classes, where, min_size)


def load_groups(path: str | Path, classes: list[str], min_size: int = 2) -> dict[str, list[str]]:
    data = read_yaml(path, "groups file", "write one with `edgespec partition` or by hand", FIX)
    return check_groups(data, classes, f"groups file {path}", min_size)


def check_groups(data: object, classes: list[str], where: str, min_size: int = 2) -> dict[str, list[str]]:
    """Validate parsed groups YAML against `classes`."""
    if isinstance(data, dict) and set(data) == {"groups"} and isinstance(data["groups"], dict):
        data = data["groups"]  # the wrapper a YOLO data file puts the mapping under
    if data is None:
        raise UserError(f"{where} is empty; write one 'name: [class, ...]' line per group")
    if not isinstance(data, dict):
        raise UserError(f"{where} must map group names to lists of class names, e.g. 'animals: [cat, dog]'")
    known = set(classes)
    groups: dict[str, list[str]] = {}
    seen_sets: dict[frozenset, str] = {}
    for raw_name, members in data.items():
        name = str(raw_name)
        if not NAME_RE.fullmatch(name):
            raise UserError(f"group name {name!r} in {where} cannot be a directory name; use letters, digits, "
                            "'-', '_' or '.'")
        if name in groups:  # keys 1 and "1" are two YAML keys but one group name
            raise UserError(f"group {name!r} is defined twice in {where} (as {raw_name!r} and as another key that "
                            "reads as the same name); rename one")
        if members is None or members == []:
            raise UserError(f"group {name!r} in {where} is empty; list at least two class names")
        if not isinstance(members, list):
            raise UserError(f"group {name!r} in {where} must be a list of class names, e.g. '{name}: [a, b]'")
        names = []
        for item in members:
            if isinstance(item, (dict, list)) or item is None:
                raise UserError(f"group {name!r} in {where} holds {item!r}, not a class name")
            if isinstance(item, bool):
                raise UserError(f"group {name!r} in {where} holds {item!r}: YAML reads yes/no/on/off/true/false "
                                "as booleans; put that class name in quotes")
            cls = str(item)
            if cls not in known:
                raise UserError(f"unknown class {cls!r} in group {name!r}{did_you_mean(cls, classes)}; "
                                f"the run's classes are: {_listing(classes)}")
            if cls in names:
                raise UserError(f"class {cls!r} is listed twice in group {name!r}; list each class once")
            names.append(cls)
        if len(names) < min_size:
            raise UserError(f"group {name!r} in {where} has one class ({names[0]!r}); a specialist needs at "
                            "least two classes")
        key = frozenset(names)
        if key in seen_sets:
            raise UserError(f"groups {seen_sets[key]!r} and {name!r} in {where} hold the same classes; remove one")
        seen_sets[key] = name
        groups[name] = names
    if not groups:
        raise UserError(f"{where} defines no groups; write one 'name: [class, ...]' line per group")
    return groups



def dump_groups(groups: dict[str, list[str]], header: str = "") -> str:
    import yaml

    lines = [f"# {line}" for line in header.splitlines()] if header else []
    body = yaml.safe_dump({k: list(v) for k, v in groups.items()}, sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=100)
    return "\n".join(lines + [body])


def write_groups(path: str | Path, groups: dict[str, list[str]], header: str = "") -> Path:
    return write_text(path, dump_groups(groups, header))


def select_group(groups: dict[str, list[str]], name: str | None) -> dict[str, list[str]]:
    if name is None:
        return groups
    if name not in groups:
        raise UserError(f"no group {name!r} in the groups file{did_you_mean(name, groups)}; "
                        f"groups: {_listing(list(groups))}")
    return {name: groups[name]}


def _listing(names: list[str], limit: int = 15) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
