"""Counts in words (ccdcal.runtime.words): the noun agrees with the number."""

from __future__ import annotations

import pytest

from ccdcal.runtime.words import counted


@pytest.mark.parametrize(
    ("n", "noun", "plural", "text"),
    [
        (0, "light", None, "0 lights"),
        (1, "light", None, "1 light"),
        (2, "light", None, "2 lights"),
        (1, "calibrated file", None, "1 calibrated file"),
        (3, "bias", "biases", "3 biases"),
        (1, "bias", "biases", "1 bias"),
    ],
)
def test_a_count_and_its_noun_agree(n: int, noun: str, plural: str | None, text: str) -> None:
    assert counted(n, noun, plural) == text
