"""The cost floor of an xDS fan-out in Python gRPC on this machine, without meshpilot.

A grpc.aio server holds P DeltaAggregatedResources streams from W client processes (C channels
each, as bench/fanout.py). On each "save" it writes K constant, pre-serialized responses of B
bytes to every stream and waits for K answers from each; the clients read each response as bytes
and answer with a constant, pre-serialized ACK (no parsing, no state). So nothing is left but gRPC
itself on both sides: the time from the save until every stream has answered is the least any
Python control plane and simulator can take on these 2 cores for K messages per sidecar, and is
the baseline to read bench/fanout.py's figures against (a one-service add is 4 messages: a
cluster, its endpoints, a route scope and a route table).

    python bench/xds_floor.py [--proxies 2000] [--messages 4] [--saves 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD = f"/{SERVICE}/DeltaAggregatedResources"
ACK = b"\x12\x04nack"  # a DeltaDiscoveryRequest with a type_url: any constant will do
OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
SERVER_OPTIONS = (  # as meshpilot's: grpc.aio queues streams beyond its default 1,000
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
)


class FloorServer:
    """Every stream waits for a save, writes the messages, then counts the answers."""

    def __init__(self, proxies: int, messages: int, size: int) -> None:
        self.proxies = proxies
        self.messages = messages
        self.response = b"x" * size  # never parsed: its bytes are all that counts
        self.saves: list[asyncio.Event] = []
        self.connected = 0
        self.answered = 0
        self.all_answered = asyncio.Event()
        self.all_connected = asyncio.Event()

    async def stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.connected += 1
        if self.connected == self.proxies:
            self.all_connected.set()
        await requests.__anext__()  # the first request, as a sidecar's subscription
        for save in self.saves:
            await save.wait()
            for _ in range(self.messages):
                await context.write(self.response)
            for _ in range(self.messages):
                await context.read()
            self.answered += 1
            if self.answered == self.proxies:
                self.all_answered.set()

    async def run(self, address: str, saves: int, clients: list[Any]) -> list[float]:
        self.saves = [asyncio.Event() for _ in range(saves)]
        server = grpc.aio.server(options=SERVER_OPTIONS)
        handler = grpc.stream_stream_rpc_method_handler(self._serve)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"DeltaAggregatedResources": handler}),)
        )
        server.add_insecure_port(address)
        await server.start()
        for client in clients:
            client.start()
        await asyncio.wait_for(self.all_connected.wait(), 120)
        await asyncio.sleep(1.0)  # let every first request land
        took = []
        for save in self.saves:
            self.answered, self.all_answered = 0, asyncio.Event()
            started = time.perf_counter()
            save.set()
            await asyncio.wait_for(self.all_answered.wait(), 120)
            took.append(time.perf_counter() - started)
            await asyncio.sleep(0.5)  # quiet between saves, as bench/fanout.py
        await server.stop(0)
        return took

    async def _serve(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self.stream(_requests(context), context)
        await asyncio.Event().wait()  # held open until the server stops


async def _requests(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    while True:
        yield await context.read()


def client_process(address: str, streams: int, channels: int) -> None:
    asyncio.run(_client(address, streams, channels))


async def _client(address: str, streams: int, channels: int) -> None:
    opened = [grpc.aio.insecure_channel(address, options=OPTIONS) for _ in range(channels)]
    calls = [opened[i % channels].stream_stream(METHOD)() for i in range(streams)]
    await asyncio.gather(*(_answer(call) for call in calls), return_exceptions=True)


async def _answer(call: Any) -> None:
    await call.write(ACK)
    async for _ in call:
        await call.write(ACK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=4, help="responses per sidecar per save")
    parser.add_argument("--bytes", type=int, default=450, help="bytes per response")
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--channels", type=int, default=16, help="gRPC channels per worker")
    parser.add_argument("--address", default="127.0.88.2:18100")
    args = parser.parse_args()
    share = args.proxies // args.workers
    context = multiprocessing.get_context("spawn")
    clients = [
        context.Process(
            target=client_process, args=(args.address, share, args.channels), daemon=True
        )
        for _ in range(args.workers)
    ]
    floor = FloorServer(share * args.workers, args.messages, args.bytes)
    try:
        took = asyncio.run(floor.run(args.address, args.saves, clients))
    finally:
        for client in clients:
            client.terminate()
    print(
        f"{floor.proxies} streams x {args.messages} messages of {args.bytes} bytes: "
        f"save -> every stream answered {statistics.median(took):.3f} s median, "
        f"{max(took):.3f} s max ({', '.join(f'{t:.3f}' for t in took)})"
    )


if __name__ == "__main__":
    main()
