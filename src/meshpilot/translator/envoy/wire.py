"""Protobuf wire-format helpers for assembling messages from bytes that are already serialized.

Concatenating encoded fields is valid protobuf, so a large message (a route table with thousands of
virtual hosts, a discovery response) can be assembled from cached parts without re-serializing them.
"""

from __future__ import annotations

_LEN = 2


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(i) for i in range(1 << 14)]


def varint(value: int) -> bytes:
    """Base-128 varint; the common small values (tags, short lengths) come from a table."""
    return _SMALL_VARINTS[value] if value < 1 << 14 else _encode_varint(value)


def length_delimited(field: int, payload: bytes) -> bytes:
    """One field of wire type LEN (string, bytes or embedded message)."""
    return varint(field << 3 | _LEN) + varint(len(payload)) + payload


def string_field(field: int, text: str) -> bytes:
    return length_delimited(field, text.encode())
