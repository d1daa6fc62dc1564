"""Serialized xDS resources, the output of the translator and the unit of sharing between proxies.

A Resource is serialized exactly once per change; every proxy that needs it reuses its bytes.
Resources that change together (one service's clusters) form a Part, encoded as one block, so a
set of tens of thousands of resources is a short tuple of parts: its version, its response bytes
and a one-part edit cost time in proportion to the number of parts, not of resources.
Versions are content hashes, so the same mesh always yields the same versions.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from functools import cached_property
from typing import Any, NamedTuple

from google.protobuf.message import Message

from meshpilot.translator.envoy.wire import string_field, varint

_TYPE_PREFIX = "type.googleapis.com/"
LISTENER = _TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

# The order in which a proxy receives updates: clusters before the endpoints that fill them,
# listeners before the routes they load, so nothing refers to a resource the proxy lacks.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}

# Tags of length-delimited fields: `resources` (2) of DiscoveryResponse, `value` (2) of Any.
_RESOURCES_TAG = varint(2 << 3 | 2)
_VALUE_TAG = varint(2 << 3 | 2)


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest())


class Resource(NamedTuple):
    """One named xDS resource as an encoded DiscoveryResponse entry (a serialized Any).

    `refs` names the resources of other types it depends on (a cluster's EDS name, the clusters
    a route table sends to), so snapshots can be checked for consistency and pushed in order.
    A NamedTuple because tens of thousands are made per full translation.
    """

    type_url: str
    name: str
    entry: bytes
    digest: int  # 64-bit content hash of the serialized resource
    refs: AbstractSet[str] = frozenset()


def resource(type_url: str, name: str, message: Message, refs: Iterable[str] = ()) -> Resource:
    """Serialize `message` once, deterministically, into a reusable Resource."""
    return resource_from_bytes(type_url, name, message.SerializeToString(deterministic=True), refs)


def resource_from_bytes(
    type_url: str, name: str, value: bytes, refs: Iterable[str] = ()
) -> Resource:
    return Resource(type_url, name, _entry(type_url, value), _digest(value), _as_set(refs))


def _entry(type_url: str, value: bytes) -> bytes:
    """`resources` field of a DiscoveryResponse: an Any (type_url = 1, value = 2), in one join."""
    head = _type_url_field(type_url)
    value_len = varint(len(value))
    any_len = len(head) + 1 + len(value_len) + len(value)
    return b"".join((_RESOURCES_TAG, varint(any_len), head, _VALUE_TAG, value_len, value))


def _as_set(refs: Iterable[str]) -> AbstractSet[str]:
    return refs if isinstance(refs, AbstractSet) else frozenset(refs)


class LazyUnion(AbstractSet[str]):
    """The union of many small sets, computed on first use.

    The route table refers to every routed cluster of every service; that union is only needed
    when a push is gated on it, not on every edit.
    """

    def __init__(self, parts: Iterable[AbstractSet[str]]) -> None:
        self._parts = list(parts)

    @functools.cached_property
    def _union(self) -> frozenset[str]:
        return frozenset().union(*self._parts)

    def __contains__(self, name: object) -> bool:
        return name in self._union

    def __iter__(self) -> Iterator[str]:
        return iter(self._union)

    def __len__(self) -> int:
        return len(self._union)


@functools.cache
def _type_url_field(type_url: str) -> bytes:
    return string_field(1, type_url)


_by_name = operator.itemgetter(1)  # Resource.name


class Part:
    """Resources that change together, sorted by name and encoded as one block."""

    __slots__ = ("checksum", "entries", "names", "resources")

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources = tuple(sorted(resources, key=_by_name))
        self.entries = b"".join(r.entry for r in self.resources)
        self.checksum = _checksum(self.resources)
        self.names = frozenset(r.name for r in self.resources)

    def refs(self) -> AbstractSet[str]:
        if len(self.resources) == 1:
            return self.resources[0].refs
        return frozenset().union(*(r.refs for r in self.resources))


class ResourceSet:
    """The resources of one type that a proxy should have, with their version.

    Order is deterministic: parts in the order given (services by name), resources in a part by
    name. Derived values are computed on first use and kept.
    """

    def __init__(self, type_url: str, parts: Iterable[Part]) -> None:
        self.type_url = type_url
        self.parts = tuple(parts)
        self._only: dict[frozenset[str], ResourceSet] = {}
        self._base: ResourceSet | None = None  # set by `plus`

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> ResourceSet:
        return cls(type_url, [Part(resources)])

    def plus(self, part: Part) -> ResourceSet:
        """This set and one more part (a proxy's own resources added to the shared ones).

        Costs O(1) per proxy: the version and names derive from this set's, computed once.
        """
        combined = ResourceSet(self.type_url, (*self.parts, part))
        combined.__dict__["names"] = _NameUnion(self, part.names)
        combined.__dict__["checksum"] = (self.checksum + part.checksum) % _MODULUS
        combined._base = self
        return combined

    def removed_from(self, other: ResourceSet) -> list[Resource]:
        """Resources of this set that `other` lacks. Only parts that are not shared (by
        identity) can hold one, so comparing a proxy's last set with its next costs a look at
        the parts that changed, not at every resource."""
        shared = {id(p) for p in other.parts}
        changed = [p for p in self.parts if id(p) not in shared]
        return [r for p in changed for r in p.resources if r.name not in other.names]

    @cached_property
    def checksum(self) -> int:
        return sum(p.checksum for p in self.parts) % _MODULUS

    @property
    def version(self) -> str:
        """A content hash: the same resources give the same version however the set was built."""
        return f"{self.checksum:016x}"

    @cached_property
    def entries(self) -> bytes:
        """The encoded `resources` fields of a DiscoveryResponse carrying this set. A proxy's
        set (shared + its own part) reuses the shared set's bytes: one concatenation."""
        if self._base is not None:
            return self._base.entries + self.parts[-1].entries
        return b"".join(p.entries for p in self.parts)

    @cached_property
    def resources(self) -> Mapping[str, Resource]:
        return {r.name: r for p in self.parts for r in p.resources}

    @cached_property
    def names(self) -> frozenset[str] | _NameUnion:
        return frozenset().union(*(p.names for p in self.parts))

    def refs(self) -> set[str]:
        return set().union(*(p.refs() for p in self.parts))

    def only(self, names: frozenset[str]) -> ResourceSet:
        """The subset a proxy asked for by name (EDS and RDS are not wildcard subscriptions).

        Proxies of one service ask for the same names, so the answer is kept per name set.
        """
        subset = self._only.get(names)
        if subset is None:
            wanted = [r for p in self.parts for r in p.resources if r.name in names]
            subset = self if len(wanted) == len(self) else ResourceSet.of(self.type_url, wanted)
            self._only[names] = subset
        return subset

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return sum(len(p.resources) for p in self.parts)


_MODULUS = 1 << 64


def _checksum(resources: Iterable[Resource]) -> int:
    """Sum of the resources' digests: independent of order and grouping, and composable."""
    return sum(r.digest for r in resources) % _MODULUS


class _NameUnion:
    """Membership in a set's names plus a few more, without building their union."""

    __slots__ = ("base", "extra")

    def __init__(self, base: ResourceSet, extra: frozenset[str]) -> None:
        self.base = base
        self.extra = extra

    def __contains__(self, name: object) -> bool:
        return name in self.extra or name in self.base.names


def decode(res: Resource) -> Any:
    """The resource as Envoy's proto3 JSON (with `@type`), for render and config_dump."""
    from google.protobuf import json_format
    from google.protobuf.any_pb2 import Any as AnyProto

    holder = AnyProto()
    holder.ParseFromString(res.entry[_header_size(res.entry) :])
    return json_format.MessageToDict(holder)


def _header_size(entry: bytes) -> int:
    """Size of the tag and length prefix in front of an encoded entry."""
    index = 1
    while entry[index] & 0x80:
        index += 1
    return index + 1
