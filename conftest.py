"""For every test run: meshpilot's state (the mesh CA, token keys) goes to a directory of the
run's own, never to the user's `~/.local/state`; every `serve` a test starts inherits it.

Tests run gRPC servers and clients in the test process and also start children through a
pre-exec hook (`runner/envoy.py`): with gRPC's fork handlers on, a fork while a gRPC thread is
busy can abort the child before it execs (seen as exit 134). Nothing here forks to keep using
gRPC in the child (the mixer's workers are spawned), so the handlers are turned off before
anything imports grpc.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def pytest_configure(config: pytest.Config) -> None:
    state = tempfile.mkdtemp(prefix="meshpilot-test-state-")
    os.environ["XDG_STATE_HOME"] = state
    config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))
