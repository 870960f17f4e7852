"""lib0's binary encoding, the subset y-websocket speaks: varUint, varUint8Array, varString.

``varUint`` is 7 bits per byte, least significant group first, the high bit set on every byte
but the last. lib0 reads numbers up to 2**53 - 1 (JavaScript's safe integers); so does this
decoder, and it refuses what lib0 could never have written: a varUint longer than 8 bytes, a
length that runs past the end of the message, a string that is not UTF-8. Every refusal is a
:class:`DecodeError`, which the Yjs socket answers with close code 4400.
"""

from __future__ import annotations

from collab.errors import CloseCode, CollabError

MAX_SAFE_INTEGER = 2**53 - 1
# 8 groups of 7 bits hold 56 bits, more than any number lib0 writes.
MAX_VAR_UINT_BYTES = 8


class DecodeError(CollabError):
    """Bytes that are not what lib0 would have written."""

    code = "bad_message"
    close_code = CloseCode.BAD_MESSAGE


class Decoder:
    """Reads lib0 values from one message, front to back."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def var_uint(self) -> int:
        data, pos = self._data, self._pos
        value = 0
        shift = 0
        end = min(len(data), pos + MAX_VAR_UINT_BYTES)
        while pos < end:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > MAX_SAFE_INTEGER:
                    raise DecodeError("varUint larger than 2**53 - 1")
                self._pos = pos
                return value
            shift += 7
        if pos - self._pos >= MAX_VAR_UINT_BYTES:
            raise DecodeError(f"varUint longer than {MAX_VAR_UINT_BYTES} bytes")
        raise DecodeError("truncated varUint")

    def var_uint8_array(self) -> bytes:
        length = self.var_uint()
        if length > self.remaining:
            raise DecodeError(f"length {length} runs past the end of the message")
        start = self._pos
        self._pos = start + length
        return self._data[start : self._pos]

    def var_string(self) -> str:
        raw = self.var_uint8_array()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("a string that is not UTF-8") from None


def var_uint(value: int) -> bytes:
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"varUint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_uint8_array(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    return var_uint8_array(text.encode("utf-8"))
