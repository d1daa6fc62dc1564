"""`up --netns`: picking the bridge's subnet from what the host already uses."""

from __future__ import annotations

import pytest

from meshpilot.errors import MeshpilotError
from meshpilot.runner.netns import free_subnet

IN_USE = """\
1: lo    inet 127.0.0.1/8 scope host lo
5: mpbr41    inet 10.203.0.1/24 scope global mpbr41
7: eth0    inet 110.203.1.5/24 scope global eth0
10.203.1.0/24 via 192.0.2.1 dev eth0
"""


def test_the_first_subnet_no_address_or_route_mentions_is_taken() -> None:
    assert free_subnet(IN_USE) == "10.203.2"
    assert free_subnet("") == "10.203.0"


def test_a_host_with_every_subnet_in_use_is_a_clean_error() -> None:
    every = "\n".join(f"10.203.{k}.0/24 dev x" for k in range(256))
    with pytest.raises(MeshpilotError, match="every subnet"):
        free_subnet(every)
