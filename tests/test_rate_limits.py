"""Rate limits in the mesh file: rates over any interval, keyed limits, global scope; and the
local rate limit filter's config they become."""

from __future__ import annotations

from textwrap import dedent

import pytest
from envoy.type.v3 import token_bucket_pb2

from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy.global_rate_limit import descriptor, global_rate_limit
from meshpilot.translator.envoy.rate_limit import MAX_KEYS, local_rate_limit


def mesh(limit: str, mixer: str = "") -> str:
    return dedent(
        f"""\
        mesh: m
        {mixer}
        services:
          reviews:
            port: 9080
            rate_limit: {limit}
        """
    )


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        parse_mesh(text, "mesh.yaml")
    return [problem.format() for problem in raised.value.problems]


def limit_of(text: str) -> ir.RateLimit:
    built = build_ir(parse_mesh(text, "mesh.yaml"))
    limit = built.services[0].rate_limit
    assert limit is not None
    return limit


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("{rate: 4 per 1m}", ir.RateLimit(4, 60_000, 4)),
        ("{rate: 10 per 1s, burst: 20}", ir.RateLimit(10, 1000, 20)),
        ("{rate: 100 per 1h}", ir.RateLimit(100, 3_600_000, 100)),
        ("{requests_per_second: 5}", ir.RateLimit(5, 1000, 5)),
        ("{rate: 3 per 1m, key: {header: X-User}}", ir.RateLimit(3, 60_000, 3, "x-user")),
    ],
)
def test_rates_over_any_interval(limit: str, expected: ir.RateLimit) -> None:
    assert limit_of(mesh(limit)) == expected


def test_a_global_limit_names_the_mixers_redis() -> None:
    text = mesh("{rate: 5 per 1h, scope: global}", "mixer: {redis: 127.0.0.1:6379}")
    built = build_ir(parse_mesh(text, "mesh.yaml"))
    assert built.mixer is not None and built.mixer.redis == "127.0.0.1:6379"
    hourly = ir.RateLimit(5, 3_600_000, 5, None, "global")
    assert built.services[0].limits("global") == {None: hourly}
    assert built.services[0].limits("local") == {}


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (
            "{rate: ten per 1s}",
            "mesh.yaml:6:24: services.reviews.rate_limit.rate: 'ten per 1s' is not a rate; "
            "write 'N per DURATION', like '4 per 1m', '10 per 1s' or '100 per 1h'",
        ),
        (
            "{rate: 0 per 1s}",
            "mesh.yaml:6:24: services.reviews.rate_limit.rate: rate '0 per 1s' allows no "
            "request; allow at least 1",
        ),
        (
            "{rate: 5 per 10ms}",
            "mesh.yaml:6:24: services.reviews.rate_limit.rate: rate '5 per 10ms' has an "
            "interval under 50ms",
        ),
        (
            "{rate: 5 per 1s, requests_per_second: 5}",
            "mesh.yaml:6:17: services.reviews.rate_limit: give the rate once: "
            "'rate: 4 per 1m' or 'requests_per_second: N'",
        ),
        (
            "{rate: 5 per 1s, key: {header: 'x user'}}",
            "mesh.yaml:6:48: services.reviews.rate_limit.key.header: 'x user' is not a valid "
            "HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        ),
        (
            "{rate: 5 per 1s, scope: global}",
            "mesh.yaml:6:41: services.reviews.rate_limit.scope: a global rate limit is counted "
            "by the mixer in Redis: set 'mixer.redis: HOST:PORT'",
        ),
    ],
)
def test_bad_rate_limits(limit: str, expected: str) -> None:
    assert problems(mesh(limit)) == [expected]


def test_a_global_limit_has_no_burst() -> None:
    text = mesh("{rate: 5 per 1s, burst: 9, scope: global}", "mixer: {redis: 127.0.0.1:6379}")
    assert problems(text) == [
        "mesh.yaml:6:34: services.reviews.rate_limit.burst: a global limit counts requests in "
        "fixed windows and has no burst; 'rate' alone says how many each window allows"
    ]


def test_a_bucket_refills_its_requests_every_interval() -> None:
    config = local_rate_limit(ir.RateLimit(4, 60_000, 6), "p")
    assert config.token_bucket == token_bucket_pb2.TokenBucket(
        max_tokens=6, tokens_per_fill={"value": 4}, fill_interval={"seconds": 60}
    )
    assert not config.descriptors and not config.rate_limits


def test_a_keyed_limit_has_a_bucket_per_header_value() -> None:
    config = local_rate_limit(ir.RateLimit(3, 60_000, 3, "x-user"), "p")
    (action,) = config.rate_limits[0].actions
    assert action.request_headers.header_name == "x-user"
    assert action.request_headers.skip_if_absent  # no header: the default bucket
    (descriptor,) = config.descriptors
    assert [(e.key, e.value) for e in descriptor.entries] == [("x-user", "")]  # any value
    assert descriptor.token_bucket == config.token_bucket
    assert config.always_consume_default_token_bucket.value is False
    assert config.max_dynamic_descriptors.value == MAX_KEYS


def test_a_global_limit_is_named_by_service_route_and_key_header() -> None:
    keyed = ir.RateLimit(10, 3_600_000, 10, "x-user", "global")
    actions = descriptor("reviews", "per-user", keyed).actions
    assert [
        (a.generic_key.descriptor_key, a.generic_key.descriptor_value) for a in actions[:2]
    ] == [
        ("service", "reviews"),
        ("route", "per-user"),
    ]
    assert actions[2].request_headers.header_name == "x-user"
    assert actions[2].request_headers.skip_if_absent  # no header: one shared count


def test_the_service_own_global_limit_is_the_filters_default() -> None:
    own = ir.RateLimit(100, 60_000, 100, scope="global")
    service = ir.Service("reviews", 9080, "http", rate_limit=own)
    config = global_rate_limit(ir.Mixer("127.0.0.1:18081", timeout_ms=250), service, own)
    assert config.rate_limits == [descriptor("reviews", None, own)]
    assert config.timeout.ToMilliseconds() == 250 and not config.failure_mode_deny
