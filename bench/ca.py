"""CSR signing rate of the mesh CA: signs per second, median of several runs.

The CSRs are made beforehand (each by its own P-256 key, as sidecars would), so only the CA's
work is timed: parse, check the CSR's signature, build and sign the leaf.

With `--grpc`, the same CSRs go through the control plane's certificate service instead: a
ControlPlane started in this process with TLS, one join token, `--concurrency` requests in flight
on one TLS channel; each request also verifies the token. Client and server share one process
(and one core), so this is a lower bound of what the service does for separate sidecars.

    .venv/bin/python bench/ca.py [--csrs 2000] [--runs 5] [--grpc [--concurrency 32]]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshpilot.controlplane import ControlPlane
from meshpilot.identity.admission import AUTHORIZATION
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.service import FULL_METHOD, encode_request
from meshpilot.runner.addresses import free_port

MESH = "mesh: bench\nservices: {reviews: {port: 9080}}\n"


def make_csrs(count: int) -> list[bytes]:
    csrs = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.PEM))
    return csrs


def direct_rates(csrs: list[bytes], runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as state_dir:
        ca = CertificateAuthority.open(Path(state_dir), "bench")
        rates = []
        for _ in range(runs):
            start = time.perf_counter()
            for csr in csrs:
                ca.sign_csr(csr, "reviews")
            rates.append(len(csrs) / (time.perf_counter() - start))
        return rates


async def grpc_rates(csrs: list[bytes], runs: int, concurrency: int) -> list[float]:
    with tempfile.TemporaryDirectory() as directory:
        mesh = Path(directory) / "mesh.yaml"
        mesh.write_text(MESH)
        xds, admin = (f"127.0.0.1:{free_port('127.0.0.1')}" for _ in range(2))
        plane = ControlPlane(mesh, xds, admin, state_dir=Path(directory) / "state", tls=True)
        await plane.start()
        try:
            assert plane.identity is not None
            metadata = ((AUTHORIZATION, "Bearer " + plane.identity.tokens.issue("reviews")),)
            anchor = plane.identity.ca.trust_anchor.public_bytes(serialization.Encoding.PEM)
            credentials = grpc.ssl_channel_credentials(root_certificates=anchor)
            async with grpc.aio.secure_channel(xds, credentials) as channel:
                call = channel.unary_unary(FULL_METHOD)
                requests = [encode_request(csr) for csr in csrs]
                return [await _grpc_run(call, requests, metadata, concurrency) for _ in range(runs)]
        finally:
            await plane.stop()


async def _grpc_run(
    call: Callable[..., object],
    requests: list[bytes],
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
) -> float:
    pending = iter(requests)

    async def worker() -> None:
        for request in pending:
            await call(request, metadata=metadata, timeout=30)  # type: ignore[misc]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(requests) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csrs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--grpc", action="store_true", help="through the certificate service")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    csrs = make_csrs(args.csrs)
    if args.grpc:
        rates = asyncio.run(grpc_rates(csrs, args.runs, args.concurrency))
        how = f"through the certificate service over TLS, {args.concurrency} in flight"
    else:
        rates = direct_rates(csrs, args.runs)
        how = "by the CA directly"
    print(
        f"CSRs signed per second {how} (median of {args.runs} runs of {args.csrs}): "
        f"{statistics.median(rates):,.0f}  (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )


if __name__ == "__main__":
    main()
