"""Reusable pieces for end-to-end tests with real processes (see e2e/conftest.py for fixtures)."""

import sys
from pathlib import Path

# The repository's root, for what the harness shares with the fast tests (tests/support).
if (ROOT := str(Path(__file__).resolve().parents[2])) not in sys.path:
    sys.path.append(ROOT)

from harness.client import LoadGenerator, MeshClient, Result
from harness.envoy_admin import EnvoyAdmin, Host
from harness.mesh import ControlPlane, Instance, MeshEnv
from harness.processes import Proc, Processes, pid_alive
from harness.wait import (
    HttpReply,
    NotYet,
    WaitTimeout,
    envoy_ready,
    envoy_state,
    http_get,
    http_json,
    wait_envoy_live,
    wait_for,
    wait_http_ok,
)
from meshpilot.runner.addresses import LoopbackAllocator, free_port

__all__ = [
    "ControlPlane",
    "EnvoyAdmin",
    "Host",
    "HttpReply",
    "Instance",
    "LoadGenerator",
    "LoopbackAllocator",
    "MeshClient",
    "MeshEnv",
    "NotYet",
    "Proc",
    "Processes",
    "Result",
    "WaitTimeout",
    "envoy_ready",
    "envoy_state",
    "free_port",
    "http_get",
    "http_json",
    "pid_alive",
    "wait_envoy_live",
    "wait_for",
    "wait_http_ok",
]
