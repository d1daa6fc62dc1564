"""`make demo`: a control plane and two instances of `hello` (v1, v2), each with a real Envoy.

Every instance has its own loopback IP, so all sidecars use the same ports (15000/15001/15006).
Ctrl-C stops everything this script started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
CONTROL_PLANE_IP = "127.0.10.1"
INSTANCES = {"v1": "127.0.10.2", "v2": "127.0.10.3"}
XDS = f"{CONTROL_PLANE_IP}:18000"
ADMIN = f"{CONTROL_PLANE_IP}:18001"


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, start_new_session=True)


def wait_until_ready(url: str, expected: bytes, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if expected in reply.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {url}")


def main() -> None:
    meshpilot = str(BIN / "meshpilot")
    processes = [
        start([meshpilot, "serve", str(HERE / "mesh.yaml"), "--xds", XDS, "--admin", ADMIN])
    ]
    for version, ip in INSTANCES.items():
        app_env = {
            "MESH_SERVICE": "hello",
            "MESH_VERSION": version,
            "MESH_IP": ip,
            "MESH_APP_PORT": "8080",
        }
        processes.append(start([sys.executable, str(HERE / "app.py")], app_env))
        processes.append(
            start(
                [
                    meshpilot,
                    "sidecar",
                    "--service",
                    "hello",
                    "--version",
                    version,
                    "--ip",
                    ip,
                    "--xds",
                    XDS,
                ]
            )
        )
    try:
        deadline = time.monotonic() + 30
        for ip in INSTANCES.values():
            wait_until_ready(f"http://{ip}:15000/ready", b"LIVE", deadline)
        caller = INSTANCES["v1"]
        print(
            f"""
meshpilot quickstart is running: control plane admin http://{ADMIN}
hello v1 on {INSTANCES["v1"]}, hello v2 on {INSTANCES["v2"]}, each with a real Envoy sidecar

Try:
  curl -H 'Host: hello' http://{caller}:15001/                      # 80% v1, 20% v2
  curl -H 'Host: hello' -H 'x-user: tester' http://{caller}:15001/  # always v2
  edit {HERE / "mesh.yaml"} (the weights) and curl again  # applied live
  {meshpilot} status --admin {ADMIN}

Ctrl-C stops everything.""",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
