"""Write the sidecar bootstraps docker-compose.yml uses, from `meshpilot bootstrap`'s generator.

    python envoy-bootstrap/generate.py        # (re)write envoy-bootstrap/*.yaml

Each sidecar service in the compose file shares the network namespace of an app service
(`network_mode: service:<app>`); the app's MESH_* environment says which service, version, IP
and port the instance has, and the control plane's address comes from its fixed IP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from meshpilot.bootstrap import render_bootstrap, sidecar_identity

HERE = Path(__file__).parent
COMPOSE = HERE.parent / "docker-compose.yml"
XDS_PORT = 18000


def _bootstrap_file(command: list[str]) -> str:
    return Path(command[command.index("-c") + 1]).name


def bootstraps(compose: dict) -> dict[str, str]:  # type: ignore[type-arg]
    """File name -> bootstrap text, for every sidecar in the compose file."""
    services = compose["services"]
    plane = services["controlplane"]["networks"]["mesh"]["ipv4_address"]
    result = {}
    for service in services.values():
        mode = service.get("network_mode", "")
        if not mode.startswith("service:"):
            continue
        env = services[mode.removeprefix("service:")]["environment"]
        identity = sidecar_identity(
            service=env["MESH_SERVICE"],
            version_=env.get("MESH_VERSION"),
            labels=(),
            ip=env["MESH_IP"],
            app_port=int(env["MESH_APP_PORT"]),
            xds=f"{plane}:{XDS_PORT}",
        )
        result[_bootstrap_file(service["command"])] = render_bootstrap(identity)
    return result


def main() -> int:
    for name, text in bootstraps(yaml.safe_load(COMPOSE.read_text())).items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
