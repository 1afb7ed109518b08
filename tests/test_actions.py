"""Verb and noun from a caption, scored on hand-labelled cooking captions in the style of YouCook2: the set the rules
were written against and a held-out set written after them (tests/data/)."""
from __future__ import annotations

from pathlib import Path

import pytest

from videobert.data.actions import verb_and_noun

DATA = Path(__file__).parent / "data"


def labelled(name: str) -> list[tuple[str, str, str | None]]:
    rows = [line.split("\t") for line in (DATA / name).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    return [(caption, verb, None if noun == "-" else noun) for caption, verb, noun in rows]


@pytest.mark.parametrize("name, size, floor", [("cooking_captions.tsv", 127, 125), ("cooking_captions_heldout.tsv", 45, 42)])
def test_both_labels_right_on_hand_labelled_captions(name, size, floor):
    rows = labelled(name)
    assert len(rows) == size
    right = sum(verb_and_noun(caption) == (verb, noun) for caption, verb, noun in rows)
    assert right >= floor, f"{right}/{size} captions with verb and noun right (measured {floor}, BENCHMARKS.md)"


@pytest.mark.parametrize("caption, expected", [
    ("cutting the tomatoes", ("cut", "tomato")),
    ("Then, add two cups of flour and the sugar.", ("add", "flour")),
    ("in a large bowl, whisk the eggs", ("whisk", "egg")),
    ("stir-fry the noodles", ("fry", "noodle")),
    ("let it simmer", ("simmer", None)),
    ("bake in the oven for 20 minutes", ("bake", None)),
    ("the potatoes are boiled in salted water", ("boil", "potato")),
    ("Pastry chef cutting bread into slices", ("cut", "bread")),
    ("rinse the quinoa", ("rinse", "quinoa")),
    ("wash the lettuce leaves", ("wash", "leaf")),
    ("", (None, None)),
    ("delicious!", (None, None)),
])  # fmt: skip
def test_cases(caption, expected):
    assert verb_and_noun(caption) == expected
