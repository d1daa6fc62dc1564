"""A hook process: runs custom-policy hooks for a mixer worker, one request at a time.

Hooks are the operator's Python code: a hook that blocks (`time.sleep`), exits (`os._exit`,
`sys.exit`) or is interrupted must cost one request, not the worker that serves every check. So
hooks run here, in a child process (`python -m meshpilot.policy.hook_process`) that the worker
kills and replaces when it overruns. The protocol on stdin/stdout: frames of a 4-byte big-endian
length and a JSON object; the worker sends `{"ref", "request", "timeout"}`, the child answers a
Decision as `{"allow", "status", "headers", "body"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
from dataclasses import asdict
from typing import Any, BinaryIO

from meshpilot.policy.decision import Decision, Request
from meshpilot.policy.hooks import HookLoader, run_hook

_LENGTH = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(data)
    return message


def request_message(ref: str, request: Request, timeout: float) -> dict[str, Any]:
    return {"ref": ref, "request": asdict(request), "timeout": timeout}


def decision_of(message: dict[str, Any]) -> Decision:
    return Decision(
        bool(message["allow"]),
        int(message["status"]),
        {str(k): str(v) for k, v in message["headers"].items()},
        str(message["body"]),
    )


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        return None
    return stream.read(length)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answer frames until the worker closes the pipe."""
    loader = HookLoader()
    loop = asyncio.new_event_loop()
    while (frame := _read_frame(source)) is not None:
        message = decode(frame)
        request = Request(**message["request"])
        hook = loader.get(message["ref"])
        decision = loop.run_until_complete(
            run_hook(message["ref"], hook, request, float(message["timeout"]))
        )
        sink.write(encode(asdict(decision)))
        sink.flush()


def main() -> None:
    """The protocol keeps the real stdout; whatever a hook prints goes to stderr instead."""
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s hook: %(message)s")
    serve(sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
