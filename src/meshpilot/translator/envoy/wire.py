"""Protobuf wire-format helpers for assembling messages from bytes that are already serialized.

Concatenating encoded fields is valid protobuf, so a large message (a route table with thousands of
virtual hosts, a discovery response) can be assembled from cached parts without re-serializing them.
"""

from __future__ import annotations

_LEN = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """One field of wire type LEN (string, bytes or embedded message)."""
    return varint(field << 3 | _LEN) + varint(len(payload)) + payload


def string_field(field: int, text: str) -> bytes:
    return length_delimited(field, text.encode())


def any_bytes(type_url: str, value: bytes) -> bytes:
    """A serialized google.protobuf.Any (type_url = 1, value = 2)."""
    return string_field(1, type_url) + length_delimited(2, value)
