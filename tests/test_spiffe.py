"""SPIFFE IDs: made and parsed in one form only, trust domains checked and derived from meshes."""

from __future__ import annotations

import pytest

from meshpilot.errors import MeshpilotError
from meshpilot.identity.errors import InvalidSpiffeId
from meshpilot.identity.spiffe import SpiffeId, parse_spiffe_id, trust_domain_for_mesh


def test_uri_form() -> None:
    assert SpiffeId("demo", "reviews").uri == "spiffe://demo/service/reviews"
    assert str(SpiffeId("a.b_c-d", "r-1")) == "spiffe://a.b_c-d/service/r-1"


def test_parse_round_trip() -> None:
    sid = SpiffeId("example.org", "ratings")
    assert parse_spiffe_id(sid.uri) == sid


@pytest.mark.parametrize(
    "uri",
    [
        "http://demo/service/reviews",
        "spiffe://demo/ns/default/sa/reviews",
        "spiffe://demo/service/",
        "spiffe://demo",
        "spiffe:///service/reviews",
        "spiffe://Demo/service/reviews",
        "spiffe://demo/service/reviews/extra",
        "spiffe://demo/service/Reviews",
        "spiffe://de mo/service/reviews",
        "spiffe://demo:8080/service/reviews",
    ],
)
def test_parse_refuses_other_forms(uri: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id(uri)


def test_errors_are_meshpilot_errors() -> None:
    with pytest.raises(MeshpilotError, match="must start with 'spiffe://'"):
        parse_spiffe_id("demo/service/x")


@pytest.mark.parametrize(
    ("mesh", "trust_domain"),
    [
        ("demo", "demo"),
        ("Demo Mesh", "demo-mesh"),
        ("prod.example.com", "prod.example.com"),
        ("team_a/prod!", "team_a-prod"),
        ("  --x--  ", "x"),
    ],
)
def test_trust_domain_from_mesh_name(mesh: str, trust_domain: str) -> None:
    assert trust_domain_for_mesh(mesh) == trust_domain


def test_mesh_name_with_nothing_usable_is_refused() -> None:
    with pytest.raises(InvalidSpiffeId):
        trust_domain_for_mesh("!!!")


def test_trust_domain_length_is_capped() -> None:
    assert len(trust_domain_for_mesh("a" * 300)) == 255
    with pytest.raises(InvalidSpiffeId):
        SpiffeId("a" * 256, "x")
