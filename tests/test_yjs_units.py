"""Index conversions between code points (OT), UTF-8 bytes (pycrdt) and UTF-16 units (Yjs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab.yjs.units import (
    code_points_to_utf8,
    code_points_to_utf16,
    utf8_length,
    utf8_to_code_points,
    utf16_length,
    utf16_to_code_points,
)

# Astral characters (an emoji, a skin-tone modifier, a musical symbol), combining marks, CJK.
texts = st.text(
    alphabet=st.sampled_from(["a", "é", "e", "\u0301", "中", "😀", "👍", "🏽", "𝄞", "\n"]),
    max_size=30,
)


def test_the_three_lengths_of_one_text() -> None:
    assert (len("a😀b"), utf16_length("a😀b"), utf8_length("a😀b")) == (3, 4, 6)
    assert code_points_to_utf16("a😀b", 2) == 3
    assert code_points_to_utf8("a😀b", 2) == 5
    assert utf16_to_code_points("a😀b", 3) == 2
    assert utf8_to_code_points("a😀b", 5) == 2


@given(texts, st.data())
def test_round_trips(text: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(text)))
    utf16 = code_points_to_utf16(text, index)
    utf8 = code_points_to_utf8(text, index)
    assert utf16 == len(text[:index].encode("utf-16-le")) // 2
    assert utf16_to_code_points(text, utf16) == index
    assert utf8_to_code_points(text, utf8) == index
    assert utf16_length(text) == len(text.encode("utf-16-le")) // 2


def test_indexes_inside_a_character_are_refused() -> None:
    with pytest.raises(ValueError, match="surrogate pair"):
        utf16_to_code_points("a😀b", 2)
    for inside in (2, 3, 4):
        with pytest.raises(ValueError, match="inside a character"):
            utf8_to_code_points("a😀b", inside)
    with pytest.raises(ValueError):
        code_points_to_utf8("ab", 3)
    with pytest.raises(ValueError):
        utf16_to_code_points("ab", 3)
    with pytest.raises(ValueError):
        utf8_to_code_points("ab", -1)
