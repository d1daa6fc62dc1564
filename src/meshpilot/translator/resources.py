"""Serialized xDS resources, the output of the translator and the unit of sharing between proxies.

A Resource is serialized exactly once per change; every proxy that needs it reuses its bytes.
Versions are content hashes, so the same mesh always yields the same versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.protobuf.message import Message

from meshpilot.translator.envoy.wire import any_bytes, length_delimited

_TYPE_PREFIX = "type.googleapis.com/"
LISTENER = _TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

# The order in which a proxy receives updates: clusters before the endpoints that fill them,
# listeners before the routes they load, so nothing refers to a resource the proxy lacks.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}

# `resources` is field 2 of DiscoveryResponse.
_RESPONSE_RESOURCES_FIELD = 2


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class Resource:
    """One named xDS resource as an encoded DiscoveryResponse entry (a serialized Any).

    `refs` names the resources of other types it depends on (a cluster's EDS name, the clusters
    a route table sends to), so snapshots can be checked for consistency and pushed in order.
    """

    type_url: str
    name: str
    entry: bytes
    digest: bytes
    refs: tuple[str, ...] = ()


def _header_size(entry: bytes) -> int:
    """Size of the tag and length prefix in front of an encoded entry."""
    index = 1
    while entry[index] & 0x80:
        index += 1
    return index + 1


def resource(type_url: str, name: str, message: Message, refs: Iterable[str] = ()) -> Resource:
    """Serialize `message` once, deterministically, into a reusable Resource."""
    return resource_from_bytes(type_url, name, message.SerializeToString(deterministic=True), refs)


def resource_from_bytes(
    type_url: str, name: str, value: bytes, refs: Iterable[str] = ()
) -> Resource:
    entry = length_delimited(_RESPONSE_RESOURCES_FIELD, any_bytes(type_url, value))
    return Resource(type_url, name, entry, _digest(entry), tuple(sorted(set(refs))))


@dataclass(frozen=True)
class ResourceSet:
    """The resources of one type that a proxy should have, sorted by name, with their version."""

    type_url: str
    resources: Mapping[str, Resource]
    version: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=8)
        for name in sorted(self.resources):
            digest.update(self.resources[name].digest)
        object.__setattr__(self, "version", digest.hexdigest())

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> ResourceSet:
        return cls(type_url, {r.name: r for r in sorted(resources, key=lambda r: r.name)})

    def only(self, names: Iterable[str]) -> ResourceSet:
        """The subset a proxy asked for by name (EDS and RDS are not wildcard subscriptions)."""
        wanted = set(names)
        return ResourceSet(self.type_url, {n: r for n, r in self.resources.items() if n in wanted})

    def refs(self) -> set[str]:
        return {ref for r in self.resources.values() for ref in r.refs}

    @cached_property
    def entries(self) -> bytes:
        """The encoded `resources` fields of a DiscoveryResponse carrying this set (built once)."""
        return b"".join(r.entry for r in self.resources.values())


def decode(res: Resource) -> Any:
    """The resource as Envoy's proto3 JSON (with `@type`), for render and config_dump."""
    from google.protobuf import json_format
    from google.protobuf.any_pb2 import Any as AnyProto

    holder = AnyProto()
    holder.ParseFromString(res.entry[_header_size(res.entry) :])
    return json_format.MessageToDict(holder)
