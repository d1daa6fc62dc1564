"""A TCP echo server for e2e tests that says who answered: each line `DATA` gets `VERSION:DATA`.

    python e2e/tcp_echo.py --ip 127.100.3.2 --port 8080 --version v1

One connection may carry many lines; every reply is one line. Exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def serve(ip: str, port: int, version: str) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(f"{version}:".encode() + line)
                await writer.drain()
        except ConnectionError:
            pass  # clients hanging up are normal in these tests
        finally:
            writer.close()

    server = await asyncio.start_server(echo, ip, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--version", default="")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.ip, args.port, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
