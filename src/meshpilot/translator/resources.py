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
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from functools import cached_property
from typing import Any, NamedTuple

from google.protobuf.message import Message

from meshpilot.translator.envoy.wire import string_field, varint

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
    refs: frozenset[str] = frozenset()


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


def version_of(res: Resource) -> str:
    """A resource's own version (delta xDS): its content hash, the same on every replica and
    every run."""
    return f"{res.digest:016x}"


@functools.lru_cache(maxsize=1 << 16)
def delta_entry(res: Resource) -> bytes:
    """`resources` field of a DeltaDiscoveryResponse: a Resource (name = 3, version = 1, and as
    field 2 the Any that `entry` already encodes), made once per resource, not per proxy."""
    body = b"".join((string_field(3, res.name), string_field(1, version_of(res)), res.entry))
    return b"".join((_RESOURCES_TAG, varint(len(body)), body))


def _as_set(refs: Iterable[str]) -> frozenset[str]:
    """Immutable, so a Resource can be hashed (`delta_entry` keeps one encoding per resource)."""
    return refs if isinstance(refs, frozenset) else frozenset(refs)


@functools.cache
def _type_url_field(type_url: str) -> bytes:
    return string_field(1, type_url)


_by_name = operator.itemgetter(1)  # Resource.name


class Part:
    """Resources that change together, sorted by name and encoded as one block."""

    __slots__ = ("_delta_entries", "_refs", "checksum", "entries", "names", "resources")

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources = tuple(sorted(resources, key=_by_name))
        self.entries = b"".join(r.entry for r in self.resources)
        self.checksum = _checksum(self.resources)
        self.names = frozenset(r.name for r in self.resources)
        self._refs: AbstractSet[str] | None = None
        self._delta_entries: bytes | None = None

    def delta_entries(self) -> bytes:
        """Its resources as the `resources` fields of a DeltaDiscoveryResponse."""
        if self._delta_entries is None:
            self._delta_entries = b"".join(delta_entry(r) for r in self.resources)
        return self._delta_entries

    def refs(self) -> AbstractSet[str]:
        if self._refs is None:
            if len(self.resources) == 1:
                self._refs = self.resources[0].refs
            else:
                self._refs = frozenset().union(*(r.refs for r in self.resources))
        return self._refs

    def get(self, name: str) -> Resource | None:
        if name in self.names:
            return next(r for r in self.resources if r.name == name)
        return None


class _Answers:
    """Answers about one set and each of the last few sets it was compared with, found by that
    set's identity: a proxy's set is compared with the proxy's next one and with the whole
    snapshot's, and every proxy that holds it compares it with the same ones."""

    __slots__ = ("_last",)
    SIZE = 4

    def __init__(self) -> None:
        self._last: tuple[tuple[weakref.ref[ResourceSet], list[Resource]], ...] = ()

    def get(self, other: ResourceSet) -> list[Resource] | None:
        for ref, answer in self._last:
            if ref() is other:
                return answer
        return None

    def put(self, other: ResourceSet, answer: list[Resource]) -> None:
        self._last = ((weakref.ref(other), answer), *self._last[: self.SIZE - 1])


class ResourceSet:
    """The resources of one type that a proxy should have, with their version.

    Order is deterministic: parts in the order given (services by name), resources in a part by
    name. Derived values are computed on first use and kept: a set is shared by every proxy
    that has it, so each is computed once per change.
    """

    def __init__(self, type_url: str, parts: Iterable[Part]) -> None:
        self.type_url = type_url
        self._parts = tuple(parts)
        self._only: dict[frozenset[str], ResourceSet] = {}
        # The last `removed_from` and `changed_from` answers: every proxy compares the same
        # two sets after a change.
        self._removed = _Answers()
        self._changed = _Answers()

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> ResourceSet:
        return cls(type_url, [Part(resources)])

    @property
    def parts(self) -> tuple[Part, ...]:
        return self._parts

    def plus(self, part: Part) -> ResourceSet:
        """This set and one more part (a proxy's own resources added to the shared ones).

        Costs O(1) per proxy, and so does everything derived from it: the result keeps no
        copy of this set's bytes, names or references, it refers to them.
        """
        return _WithPart(self, part)

    def split(self) -> tuple[ResourceSet, Part]:
        """(the set shared with other proxies, the proxy's own part): see `plus`."""
        return self, _NO_PART

    def removed_from(self, other: ResourceSet) -> list[Resource]:
        """Resources of this set that `other` lacks (see `_compared`)."""
        return self._compared(other, self._removed, lambda r: r.name not in other)

    def changed_from(self, other: ResourceSet) -> list[Resource]:
        """Resources of this set that `other` lacks or has with other content: what a delta
        response carries (see `_compared`)."""
        return self._compared(other, self._changed, lambda r: _differs(r, other))

    def _compared(
        self, other: ResourceSet, answers: _Answers, differs: Callable[[Resource], bool]
    ) -> list[Resource]:
        """Resources of this set that `differs` from `other`. Only parts that are not shared
        (by identity) can hold one, so comparing a proxy's last set with its next costs a look
        at the parts that changed, not at every resource; and the answer (the same list) is
        kept for the next proxy that compares the same two sets."""
        if other is self:
            return []
        found = answers.get(other)
        if found is None:
            shared = {id(p) for p in other.parts}
            found = [
                r for p in self.parts if id(p) not in shared for r in p.resources if differs(r)
            ]
            answers.put(other, found)
        return found

    @cached_property
    def checksum(self) -> int:
        return sum(p.checksum for p in self.parts) % _MODULUS

    @cached_property
    def version(self) -> str:
        """A content hash: the same resources give the same version however the set was built."""
        return f"{self.checksum:016x}"

    @cached_property
    def entries(self) -> bytes:
        """The encoded `resources` fields of a DiscoveryResponse carrying this set."""
        return b"".join(p.entries for p in self.parts)

    def chunks(self) -> tuple[bytes, ...]:
        """`entries` in blocks that are joined into a response, never kept joined per proxy."""
        return (self.entries,)

    @cached_property
    def _delta_entries(self) -> bytes:
        return b"".join(p.delta_entries() for p in self.parts)

    def delta_chunks(self) -> tuple[bytes, ...]:
        """Every resource as the `resources` fields of a DeltaDiscoveryResponse, in blocks as
        `chunks`: a proxy's first response, made once for all the proxies that get it."""
        return (self._delta_entries,)

    @cached_property
    def resources(self) -> Mapping[str, Resource]:
        return {r.name: r for p in self.parts for r in p.resources}

    def get(self, name: str) -> Resource | None:
        return self.resources.get(name)

    @cached_property
    def names(self) -> AbstractSet[str]:
        return frozenset().union(*(p.names for p in self.parts))

    @cached_property
    def _refs(self) -> frozenset[str]:
        return frozenset().union(*(p.refs() for p in self.parts))

    def refs(self) -> AbstractSet[str]:
        """The names its resources refer to (in other types)."""
        return self._refs

    def only(self, names: frozenset[str]) -> ResourceSet:
        """The subset a proxy asked for by name (EDS and RDS are not wildcard subscriptions).

        Proxies that ask for the same names share the answer, kept per name set; parts wholly
        asked for stay shared (identical), so the subset's bytes and comparisons reuse them.
        """
        subset = self._only.get(names)
        if subset is None:
            subset = self._subset(names)
            self._only[names] = subset
        return subset

    def _subset(self, names: frozenset[str]) -> ResourceSet:
        parts = []
        for part in self.parts:
            if part.names <= names:
                parts.append(part)
            elif not part.names.isdisjoint(names):
                parts.append(Part(r for r in part.resources if r.name in names))
        if len(parts) == len(self.parts) and all(map(operator.is_, parts, self.parts)):
            return self
        return ResourceSet(self.type_url, parts)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    @cached_property
    def _length(self) -> int:
        return sum(len(p.resources) for p in self.parts)

    def __len__(self) -> int:
        return self._length


class _WithPart(ResourceSet):
    """A shared set plus a proxy's own part, referring to the shared set's derived values.

    Thousands of proxies each have one (their clusters: every service's plus their app's), so
    it holds no per-proxy copy of the shared bytes, names or references.
    """

    def __init__(self, base: ResourceSet, part: Part) -> None:
        super().__init__(base.type_url, ())
        self.base = base
        self.part = part

    @property
    def parts(self) -> tuple[Part, ...]:
        return (*self.base.parts, self.part)

    def split(self) -> tuple[ResourceSet, Part]:
        return self.base, self.part

    def removed_from(self, other: ResourceSet) -> list[Resource]:
        if not isinstance(other, _WithPart):
            return super().removed_from(other)
        from_base = self.base.removed_from(other.base)
        return [
            *(r for r in from_base if r.name not in other.part.names),
            *(r for r in self.part.resources if r.name not in other),
        ]

    def changed_from(self, other: ResourceSet) -> list[Resource]:
        if not isinstance(other, _WithPart):
            return super().changed_from(other)
        from_base = self.base.changed_from(other.base)
        return [r for r in (*from_base, *self.part.resources) if _differs(r, other)]

    @cached_property
    def checksum(self) -> int:
        return (self.base.checksum + self.part.checksum) % _MODULUS

    @property
    def entries(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> tuple[bytes, ...]:
        return (self.base.entries, self.part.entries)

    def delta_chunks(self) -> tuple[bytes, ...]:
        return (*self.base.delta_chunks(), self.part.delta_entries())

    @property
    def resources(self) -> Mapping[str, Resource]:
        return _ChainedResources(self.base, self.part)

    def get(self, name: str) -> Resource | None:
        found = self.part.get(name)
        return found if found is not None else self.base.get(name)

    @property
    def names(self) -> AbstractSet[str]:
        return _Union(self.part.names, self.base.names)

    def refs(self) -> AbstractSet[str]:
        return _Union(self.part.refs(), self.base.refs())

    def __contains__(self, name: str) -> bool:
        """Without the shared set's names when the proxy's own part has it (a listener's check
        of its app cluster, per proxy)."""
        return name in self.part.names or name in self.base

    def __len__(self) -> int:
        return len(self.base) + len(self.part.resources)


_MODULUS = 1 << 64


def _differs(res: Resource, other: ResourceSet) -> bool:
    """`other` lacks `res`, or has it with other content."""
    old = other.get(res.name)
    return old is None or old.digest != res.digest


def _checksum(resources: Iterable[Resource]) -> int:
    """Sum of the resources' digests: independent of order and grouping, and composable."""
    return sum(r.digest for r in resources) % _MODULUS


_NO_PART = Part(())


class _Union(AbstractSet[str]):
    """Two sets seen as one, without building their union (a proxy's few names and the
    thousands it shares with other proxies)."""

    __slots__ = ("first", "second")

    def __init__(self, first: AbstractSet[str], second: AbstractSet[str]) -> None:
        self.first = first
        self.second = second

    def __contains__(self, name: object) -> bool:
        return name in self.first or name in self.second

    def __iter__(self) -> Iterator[str]:
        yield from self.first
        yield from (n for n in self.second if n not in self.first)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _ChainedResources(Mapping[str, Resource]):
    """A proxy set's resources by name: its own part's, then the shared set's."""

    __slots__ = ("base", "part")

    def __init__(self, base: ResourceSet, part: Part) -> None:
        self.base = base
        self.part = part

    def __getitem__(self, name: str) -> Resource:
        found = self.part.get(name)
        return found if found is not None else self.base.resources[name]

    def __iter__(self) -> Iterator[str]:
        """In the order of a dict built part by part: the shared set's, then the proxy's own."""
        yield from self.base.resources
        yield from (r.name for r in self.part.resources if r.name not in self.base)

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
