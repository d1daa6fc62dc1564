"""`meshpilot sidecar --token-file`: the agent (istio-agent's job) and Envoy, in one process.

Before Envoy starts, the agent makes the workload key and gets its certificate from the control
plane (waiting while it is unreachable, as Envoy would, and asking the next replica given;
failing at once when it refuses the token); renewals go to the next replica too while one is
unreachable. Then it serves SDS on a socket in a private run directory, writes the
bootstrap there (0600: it holds the token), runs Envoy, and renews the certificate in the
background until Envoy exits. SIGTERM/SIGINT are passed on to Envoy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

from meshpilot.background import background
from meshpilot.bootstrap import ControlChannel, SidecarIdentity, render_bootstrap, url_host
from meshpilot.errors import EnvoyNotFound
from meshpilot.identity.agent import Credentials
from meshpilot.identity.client import CertificateClient, IdentityAgent
from meshpilot.identity.sds import SOCKET_NAME, SdsServer
from meshpilot.runner.envoy import (
    FORWARDED_SIGNALS,
    envoy_command,
    exit_status,
    parent_death_signal,
)

log = logging.getLogger(__name__)


def run_secure_sidecar(identity: SidecarIdentity, token: str) -> int:
    """Run the agent and Envoy until Envoy exits; Envoy's exit status (`exit_status`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(_sidecar(identity, token))


async def _sidecar(identity: SidecarIdentity, token: str) -> int:
    others = [f"{url_host(host)}:{port}" for host, port in identity.xds_addresses[1:]]
    client = CertificateClient(identity.first_xds, token, fallbacks=others)
    agent = IdentityAgent(client)
    try:
        credentials = await agent.first_credentials()
        with tempfile.TemporaryDirectory(prefix=f"meshpilot-{identity.service}-") as run_dir:
            return await _serve_envoy(identity, token, agent, credentials, Path(run_dir))
    finally:
        await client.close()


async def _serve_envoy(
    identity: SidecarIdentity,
    token: str,
    agent: IdentityAgent,
    credentials: Credentials,
    run_dir: Path,
) -> int:
    sds = SdsServer(run_dir / "agent" / SOCKET_NAME, credentials)
    await sds.start()
    agent.observers.append(sds.update)
    renewing = background(agent.run(), "certificate renewal")
    try:
        channel = ControlChannel(credentials.anchor_pem.decode(), token, str(sds.socket_path))
        config = run_dir / "envoy.yaml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(render_bootstrap(identity, channel))
        return await _run_envoy(envoy_command(identity, config))
    finally:
        renewing.cancel()
        await sds.stop()


async def _run_envoy(command: list[str]) -> int:
    try:
        process = await asyncio.create_subprocess_exec(*command, preexec_fn=parent_death_signal())
    except OSError as err:
        raise EnvoyNotFound(f"cannot run {command[0]}: {err}") from err
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def forward(sig: int) -> None:
        received.append(sig)
        process.send_signal(sig)

    for sig in FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, forward, sig)
    try:
        status = await process.wait()
    finally:
        for sig in FORWARDED_SIGNALS:
            loop.remove_signal_handler(sig)
    return exit_status(status, received)
