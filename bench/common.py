"""What every benchmark script shares: refusing ports already taken, and exiting cleanly on
SIGTERM (so that `finally:` blocks stop what the benchmark started)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import NoReturn


def check_free(ip: str, ports: Sequence[int], option: str = "--ip-block") -> None:
    """Exit with a message naming `option` when a port of `ip` is taken."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                sock.bind((ip, port))
            except OSError as err:
                sys.exit(f"{ip}:{port} is not free ({err}); choose another {option}")


def raise_exit(signum: int, _frame: object) -> NoReturn:
    """A SIGTERM handler: exit as on Ctrl-C, through every `finally:`."""
    raise SystemExit(128 + signum)
