"""CSR signing rate of the mesh CA: signs per second, median of several runs.

The CSRs are made beforehand (each by its own P-256 key, as sidecars would), so only the CA's
work is timed: parse, check the CSR's signature, build and sign the leaf.

    .venv/bin/python bench/ca.py [--csrs 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshpilot.identity.ca import CertificateAuthority


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csrs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    csrs = make_csrs(args.csrs)
    with tempfile.TemporaryDirectory() as state_dir:
        ca = CertificateAuthority.open(Path(state_dir), "bench")
        rates = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for csr in csrs:
                ca.sign_csr(csr, "reviews")
            rates.append(len(csrs) / (time.perf_counter() - start))
    print(
        f"CSRs signed per second (median of {args.runs} runs of {args.csrs}): "
        f"{statistics.median(rates):,.0f}  (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )


if __name__ == "__main__":
    main()
