"""Telling IP addresses from DNS names, the same way everywhere (validation, translation)."""

from __future__ import annotations

import socket

_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def is_ip(address: str) -> bool:
    """An IPv4 or IPv6 address as Envoy parses one (inet_pton); anything else is a DNS name."""
    for family in _FAMILIES:
        try:
            socket.inet_pton(family, address)
        except OSError:
            continue
        return True
    return False
