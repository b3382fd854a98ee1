"""Groups files (validation, round trip) and partitioning a run's classes."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import UserError
from toolkit.runs import Run
from toolkit.specialize.groups import dump_groups, load_groups, parse_groups, select_group
from toolkit.specialize.partition import (
    group_sizes,
    merge_singletons,
    name_groups,
    partition,
    random_labels,
)

CLASSES = ["cat", "dog", "horse", "car", "truck", "ship"]


def test_groups_parse_in_file_order_and_may_overlap():
    g = parse_groups("animals: [cat, dog, horse]\nroad: [truck, car]\npets:\n  - dog\n  - cat\n", CLASSES)
    assert list(g) == ["animals", "road", "pets"]
    assert g["road"] == ["truck", "car"]  # order kept: it is the specialist's output order
    assert set(g["pets"]) <= set(g["animals"])


def test_numeric_class_names_and_group_names_are_read_as_text():
    g = parse_groups("1: [0, 1, 7]\nround: ['0', 6, 8]\n", [str(i) for i in range(10)])
    assert g == {"1": ["0", "1", "7"], "round": ["0", "6", "8"]}


@pytest.mark.parametrize("text, fragment", [
    ("animals: [cat, dgo]", "did you mean 'dog'"),
    ("animals: []", "is empty"),
    ("animals:", "is empty"),
    ("animals: [cat]", "one class"),
    ("animals: [cat, dog, cat]", "listed twice"),
    ("animals: [cat, dog]\nanimals: [car, ship]", "defined twice"),
    ("a: [cat, dog]\nb: [dog, cat]", "hold the same classes"),
    ("[cat, dog]", "must map group names"),
    ("animals: cat", "must be a list"),
    ("animals: [cat, [dog]]", "not a class name"),
    ("animals: [cat, yes]", "quotes"),
    ("animals: [cat, dog", "not valid YAML"),
    ("../up: [cat, dog]", "directory name"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
])
def test_bad_groups_are_one_line_user_errors(text, fragment):
    with pytest.raises(UserError) as info:
        parse_groups(text, CLASSES)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_groups_file_round_trip_and_selection(tmp_path):
    groups = {"animals": ["horse", "cat"], "group-2": ["car", "ship", "truck"]}
    path = tmp_path / "g.yaml"
    path.write_text(dump_groups(groups, "made by a test\nsecond line"))
    assert path.read_text().startswith("# made by a test\n# second line\n")
    assert load_groups(path, CLASSES) == groups
    assert select_group(groups, "animals") == {"animals": ["horse", "cat"]}
    with pytest.raises(UserError, match="did you mean 'animals'"):
        select_group(groups, "animal")
    with pytest.raises(UserError, match="not found"):
        load_groups(tmp_path / "missing.yaml", CLASSES)


def test_group_sizes_and_random_partition_cover_every_class_once():
    assert group_sizes(10, None, 3) == (3, [4, 3, 3])
    assert group_sizes(12, 4, None) == (4, None)
    for bad in ((10, None, 1), (10, None, 6), (10, 1, None), (10, 6, None), (10, 2, 3), (10, None, None)):
        with pytest.raises(UserError):
            group_sizes(*bad)
    labels = random_labels(10, 3, [4, 3, 3], seed=1)
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 4]
    assert not np.array_equal(labels, random_labels(10, 3, [4, 3, 3], seed=2))


def test_singletons_join_their_closest_group():
    aff = np.array([[0, .9, .1, .1], [.9, 0, .1, .2], [.1, .1, 0, .8], [.1, .2, .8, 0]]) + 0.01
    two = merge_singletons(np.array([0, 0, 1, 2]), aff)
    assert two[2] == two[3] != two[0]  # the two lone classes are alike: they pair up
    assert merge_singletons(np.array([0, 1, 1, 1]), aff)[0] == 1


def test_group_names_use_a_common_prefix_when_there_is_one():
    names = name_groups(np.array([0, 0, 1, 1, 2, 2]), ["rings-a", "rings-b", "x1", "y1", "sp-a", "sp-b"])
    assert names == {"rings": ["rings-a", "rings-b"], "group-2": ["x1", "y1"], "sp": ["sp-a", "sp-b"]}


@pytest.mark.parametrize("method", ["confusion", "weights", "random"])
def test_partition_of_a_trained_run_is_a_valid_groups_file(synthetic_run, method):
    run = Run.open(synthetic_run)
    groups = partition(run, method, group_size=3, seed=0)
    members = [c for g in groups.values() for c in g]
    assert sorted(members) == sorted(run.classes)  # every class exactly once
    assert [len(g) for g in groups.values()] == [3, 3, 3]
    assert parse_groups(dump_groups(groups), run.classes) == groups
    free = partition(run, method, n_groups=3, seed=0)
    assert sorted(c for g in free.values() for c in g) == sorted(run.classes)
    assert all(len(g) >= 2 for g in free.values())


def test_confusion_partition_finds_the_synthetic_semantic_groups(synthetic_run):
    run = Run.open(synthetic_run)
    truth = {frozenset(v) for v in run.info["groups"].values()}
    found = {frozenset(v) for v in partition(run, "confusion", n_groups=3).values()}
    assert found == truth
