"""What `meshpilot up` chooses for the user: the same loopback addresses every time a mesh runs
alone, and a `meshpilot` command in its banner that works from the user's shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meshpilot.runner.addresses import UP_RANGE, block_count, block_prefix, try_claim, up_allocator
from meshpilot.runner.up import Addresses, meshpilot_command

OWN_SCRIPT = Path(sys.executable).parent / "meshpilot"


def lowest_free_up_block() -> int:
    """The lowest block of `up`'s range that nobody holds right now (probed, then let go)."""
    for index in range(block_count(UP_RANGE)):
        claim = try_claim(index, UP_RANGE)
        if claim is not None:
            claim.close()
            return index
    raise AssertionError("every block of up's range is taken")


def test_up_takes_the_lowest_free_block_from_127_200_0_every_time() -> None:
    expected = f"{block_prefix(lowest_free_up_block(), UP_RANGE)}.1"
    for _ in range(2):  # a second run after the first released its block: the same addresses
        allocator = up_allocator()
        try:
            assert allocator.ips(2) == [expected, expected.removesuffix(".1") + ".2"]
        finally:
            allocator.release()
    assert expected.startswith("127.200.")


def test_the_banner_names_meshpilot_by_its_path_when_path_has_no_meshpilot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert meshpilot_command() == str(OWN_SCRIPT.absolute())


def test_the_banner_names_meshpilot_by_its_path_when_path_has_another_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "meshpilot").write_text("#!/bin/sh\n")
    (tmp_path / "meshpilot").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert meshpilot_command() == str(OWN_SCRIPT.absolute())


def test_the_banner_says_meshpilot_when_path_finds_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(OWN_SCRIPT.parent))
    assert meshpilot_command() == "meshpilot"


def test_with_replicas_every_sidecar_is_given_every_control_plane() -> None:
    addresses = Addresses(
        "127.200.0.1:18000",
        "127.200.0.1:18001",
        None,
        None,
        (("127.200.0.2:18000", "127.200.0.2:18001"),),
        "127.200.0.1",
    )
    assert addresses.sidecar_xds == "127.200.0.1:18000,127.200.0.2:18000"
    assert [admin for _, admin in addresses.planes] == ["127.200.0.1:18001", "127.200.0.2:18001"]
