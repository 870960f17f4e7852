"""Positions in the three units that meet at the bridge.

Yjs (JavaScript) counts UTF-16 code units (``'a😀b'.length`` is 4), pycrdt counts UTF-8 bytes
(``len(Text('a😀b'))`` is 6: an index inside a character makes pycrdt append at the end) and
collab's OT counts code points (3). These functions convert an index into a text between them;
an index that falls inside a character is refused with ``ValueError`` rather than rounded, since
every caller holds an index that should sit on a character boundary.
"""

from __future__ import annotations


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def utf16_length(text: str) -> int:
    # Each astral code point takes two UTF-16 units, every other code point one.
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def code_points_to_utf8(text: str, index: int) -> int:
    _check_index(text, index)
    return utf8_length(text[:index])


def code_points_to_utf16(text: str, index: int) -> int:
    _check_index(text, index)
    return utf16_length(text[:index])


def utf8_to_code_points(text: str, index: int) -> int:
    data = text.encode("utf-8")
    if not 0 <= index <= len(data):
        raise ValueError(f"UTF-8 index {index} outside a text of {len(data)} bytes")
    if index < len(data) and data[index] & 0xC0 == 0x80:
        raise ValueError(f"UTF-8 index {index} falls inside a character")
    return len(data[:index].decode("utf-8"))


def utf16_to_code_points(text: str, index: int) -> int:
    if index < 0:
        raise ValueError(f"UTF-16 index {index} is negative")
    units = 0
    for position, char in enumerate(text):
        if units == index:
            return position
        units += 2 if ord(char) > 0xFFFF else 1
        if units > index:
            raise ValueError(f"UTF-16 index {index} falls inside a surrogate pair")
    if units == index:
        return len(text)
    raise ValueError(f"UTF-16 index {index} outside a text of {units} units")


def _check_index(text: str, index: int) -> None:
    if not 0 <= index <= len(text):
        raise ValueError(f"index {index} outside a text of {len(text)} code points")
