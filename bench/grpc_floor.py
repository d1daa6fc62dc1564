"""The cost floor of a Python gRPC server: `Authorization.Check` answered by grpc.aio with a
constant, pre-serialized OK and nothing else (no parsing, no policy). bench/authz.py measures it
next to the mixer, so the mixer's own cost per check is the difference.

    python bench/grpc_floor.py HOST:PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2, status_pb2

OK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK), ok_response=external_auth_pb2.OkHttpResponse()
).SerializeToString()


async def check(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return OK


async def serve(address: str) -> None:
    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(check)  # no (de)serializers: bytes in and out
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.auth.v3.Authorization", {"Check": method}
            ),
        )
    )
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
