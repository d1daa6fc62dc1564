"""Simulated sidecars: cheap ADS clients that behave like Envoy, on a state-of-the-world or an
incremental (delta) stream.

A SimulatedSidecar subscribes to clusters and listeners (wildcard), asks for the endpoints of the
EDS clusters it is sent and for the `outbound` route table its listeners load, and ACKs every
response, as Envoy does. It records, per type, the last version and the resource names received,
and counts responses carrying a resource it did not ask for (or of another type). A
DeltaSidecar does the same over DeltaAggregatedResources: it applies each response to what it
holds (tests.support.holdings), subscribes and unsubscribes EDS names as its clusters come and
go, and also counts a response after which what it holds is not the version the control plane
says it should have.

Thousands run in one asyncio loop, so nothing is fully decoded: a response is read as raw bytes
and only each resource's name is taken from it (field 1 of a Cluster, ClusterLoadAssignment,
Listener and RouteConfiguration, the first bytes of each Any's value). Clusters named
`outbound|...` are taken to be the EDS clusters, which is what meshpilot sends. Sidecars share
gRPC channels (several streams per HTTP/2 connection) and a ResponseDecoder, which remembers the
runs of resource bytes that many responses have in common (the shared clusters, the endpoints,
the route table), so each distinct run is read once however many sidecars receive it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import grpc
from envoy.config.core.v3 import base_pb2

from meshpilot.model import ir, proxies
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE
from tests.support.client import sidecar_node
from tests.support.holdings import Holding, Transitions
from tests.support.wait import WaitTimeout, wait_for_async

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
EDS_CLUSTER_PREFIX = "outbound|"
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),  # a connection of its own per channel
)

# --- protobuf wire format ---------------------------------------------------------------------

_LEN = 2
_RESOURCE_TAG = 2 << 3 | _LEN  # DiscoveryResponse.resources; also Any.value
_STRING_1_TAG = 1 << 3 | _LEN  # DiscoveryResponse.version_info, Any.type_url, a resource's name
_TYPE_URL_FIELD, _NONCE_FIELD = 4, 5  # of a DiscoveryResponse and a DeltaDiscoveryResponse
_REMOVED_FIELD = 6  # DeltaDiscoveryResponse.removed_resources
_NAME_3_TAG = 3 << 3 | _LEN  # Resource.name, in a DeltaDiscoveryResponse


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
    """The position after a field's value that starts at `pos`."""
    if wire_type == 0:
        return _varint(buf, pos)[1]
    if wire_type == 1:
        return pos + 8
    if wire_type == _LEN:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire_type == 5:
        return pos + 4
    raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def _str_field(number: int, text: str) -> bytes:
    return _len_field(number, text.encode()) if text else b""


def _field_1(buf: bytes, pos: int, end: int) -> str:
    """Field 1 (a string) of the message in buf[pos:end]: its first bytes, in field order."""
    while pos < end:
        tag, pos = _varint(buf, pos)
        if tag == _STRING_1_TAG:
            length, pos = _varint(buf, pos)
            return buf[pos : pos + length].decode()
        pos = _skip(buf, pos, tag & 7)
    return ""


def _any_name(buf: bytes, pos: int, end: int) -> tuple[bytes, str, str]:
    """(type URL, resource name, "") of the Any in buf[pos:end]: the name is field 1 of its
    value (Cluster.name, ClusterLoadAssignment.cluster_name, Listener.name,
    RouteConfiguration.name)."""
    type_url, name = b"", ""
    while pos < end:
        tag, pos = _varint(buf, pos)
        if tag & 7 != _LEN:
            pos = _skip(buf, pos, tag & 7)
            continue
        length, pos = _varint(buf, pos)
        if tag == _STRING_1_TAG:
            type_url = buf[pos : pos + length]
        elif tag == _RESOURCE_TAG:
            name = _field_1(buf, pos, pos + length)
        pos += length
    return type_url, name, ""


def _delta_resource(buf: bytes, pos: int, end: int) -> tuple[bytes, str, str]:
    """(type URL, name, version) of the delta `Resource` in buf[pos:end]: its fields name (3)
    and version (1), and the type URL of its Any (2)."""
    type_url, name, version = b"", "", ""
    while pos < end:
        tag, pos = _varint(buf, pos)
        if tag & 7 != _LEN:
            pos = _skip(buf, pos, tag & 7)
            continue
        length, pos = _varint(buf, pos)
        if tag == _NAME_3_TAG:
            name = buf[pos : pos + length].decode()
        elif tag == _STRING_1_TAG:
            version = buf[pos : pos + length].decode()
        elif tag == _RESOURCE_TAG and buf[pos] == _STRING_1_TAG:  # Any.type_url comes first
            size, start = _varint(buf, pos + 1)
            type_url = buf[start : start + size]
        pos += length
    return type_url, name, version


# --- decoding responses -----------------------------------------------------------------------


class Decoded(NamedTuple):
    """What a simulated sidecar reads from a DiscoveryResponse or a DeltaDiscoveryResponse."""

    version: str  # version_info; a delta response's system_version_info
    type_url: str
    nonce: str
    names: frozenset[str]  # of the resources it carries
    foreign: int  # resources whose Any type URL is not the response's
    # The resources as a remembered run, then (name, version) of those read for this response
    # alone; and a delta response's removed_resources.
    known: _Run | None = None
    more: tuple[tuple[str, str], ...] = ()
    removed: tuple[str, ...] = ()


class _Run(NamedTuple):
    """Consecutive `resources` fields as they appear in a response, with what they hold."""

    data: bytes
    ends: tuple[int, ...]  # end offset of each resource field in `data`
    names: tuple[str, ...]
    versions: tuple[str, ...]  # of each resource (delta; empty strings on state of the world)
    types: frozenset[bytes]  # the Any type URLs
    name_set: frozenset[str]

    @property
    def key(self) -> tuple[int, bytes]:
        return _run_key(self.data, 0, len(self.data))


def _run_key(buf: bytes, start: int, end: int) -> tuple[int, bytes]:
    """Finds the candidates for an exact match cheaply; a match is then checked byte by byte."""
    return end - start, buf[max(start, end - 32) : end]


def _common_resources(a: _Run, b: _Run) -> int:
    """How many leading resources `a` and `b` have in common (a binary search on bytes)."""
    if a.ends[0] != b.ends[0] or not b.data.startswith(a.data[: a.ends[0]]):
        return 0
    low, high = 1, min(len(a.ends), len(b.ends))
    while low < high:
        mid = (low + high + 1) // 2
        end = a.ends[mid - 1]
        if b.ends[mid - 1] == end and a.data[:end] == b.data[:end]:
            low = mid
        else:
            high = mid - 1
    return low


# Where the fields after the resources start: DiscoveryResponse.type_url (field 4), serialized
# after the resources (field 2) in field order, as meshpilot and other control planes do.
_TAIL_MARKERS = tuple(_str_field(_TYPE_URL_FIELD, t) for t in PUSH_ORDER)
_TAIL_WINDOW = 1024
_BASE_BACKOFF = 0.5  # seconds, as Envoy's
_MAX_CACHED = 64  # name sets, encoded name lists
# A known prefix followed by this many resources read one by one makes a new run to remember.
_LEARN_AFTER_PREFIX = 8


class ResponseDecoder:
    """Reads responses for every sidecar of a process, reading each shared run of resources once.

    Endpoints and routes are the same for every sidecar that asks for the same names, and every
    sidecar's clusters are the shared ones plus its own app cluster. So each run of resource
    bytes read is kept: a response whose resources are a known run costs a memory compare, and
    so does one that starts with a known shared run (only what follows is read). The shared run
    is the longest prefix a new run has in common with one of the last few runs read.
    """

    def __init__(
        self, max_bytes: int = 64 << 20, max_prefixes: int = 8, delta: bool = False
    ) -> None:
        self.delta = delta
        self._read_resource = _delta_resource if delta else _any_name
        self._exact: dict[tuple[int, bytes], list[_Run]] = {}
        self._exact_bytes = 0
        self._max_bytes = max_bytes
        self._recent: list[_Run] = []  # the last runs read, to find shared prefixes in
        self._prefixes: list[_Run] = []  # most recently used first
        self._max_prefixes = max_prefixes
        self._name_sets: dict[tuple[str, ...], frozenset[str]] = {}
        self._joins: dict[tuple[frozenset[str], tuple[str, ...]], frozenset[str]] = {}
        self._eds_names: dict[frozenset[str], frozenset[str]] = {}
        self._names_fields: dict[tuple[frozenset[str], int], bytes] = {}
        self._differences: dict[tuple[frozenset[str], frozenset[str]], Difference] = {}
        # What delta sidecars hold, by type: shared by every sidecar that holds the same.
        self.transitions = {type_url: Transitions() for type_url in PUSH_ORDER}
        self._types: dict[bytes, bytes] = {}
        self.runs_read = 0  # runs read resource by resource (cache misses)

    def decode(self, raw: bytes) -> Decoded:
        end = len(raw)
        version = type_url = nonce = ""
        known: _Run | None = None  # resources found in the cache
        names: list[str] = []  # of the resources read one by one
        versions: list[str] = []
        removed: list[str] = []
        types: set[bytes] = set()
        run_start = -1  # where reading one by one began: the first resource, or after `known`
        run_ends: list[int] = []  # the resources read one by one from there on, contiguous
        run_types: set[bytes] = set()
        pos = 0
        while pos < end:
            field_start = pos
            tag, pos = _varint(raw, pos)
            if tag == _RESOURCE_TAG and run_start < 0:
                known, resume = self._lookup(raw, field_start)
                run_start = resume
                if known is not None:
                    pos = resume
                    continue
            if tag & 7 != _LEN:
                pos = _skip(raw, pos, tag & 7)
                continue
            length, pos = _varint(raw, pos)
            stop = pos + length
            number = tag >> 3
            if number == 2:
                type_bytes, name, resource_version = self._read_resource(raw, pos, stop)
                names.append(name)
                versions.append(resource_version)
                type_bytes = self._types.setdefault(type_bytes, type_bytes)
                types.add(type_bytes)
                if field_start - run_start == (run_ends[-1] if run_ends else 0):
                    run_ends.append(stop - run_start)
                    run_types.add(type_bytes)
            elif number == 1:
                version = raw[pos:stop].decode()
            elif number == _TYPE_URL_FIELD:
                type_url = raw[pos:stop].decode()
            elif number == _NONCE_FIELD:
                nonce = raw[pos:stop].decode()
            elif number == _REMOVED_FIELD and self.delta:
                removed.append(raw[pos:stop].decode())
            pos = stop
        if run_ends and (known is None or len(run_ends) >= _LEARN_AFTER_PREFIX):
            data = raw[run_start : run_start + run_ends[-1]]
            count = len(run_ends)
            known = self._learn(known, data, run_ends, names[:count], versions[:count], run_types)
            del names[:count], versions[:count]
        if known is not None:
            types |= known.types
        expected = type_url.encode()
        foreign = 0 if types <= {expected} else sum(1 for t in types if t != expected)
        if known is None:
            name_set = self._name_set(tuple(names))
        else:
            name_set = self._joined(known, tuple(names)) if names else known.name_set
        more = tuple(zip(names, versions, strict=True))
        return Decoded(version, type_url, nonce, name_set, foreign, known, more, tuple(removed))

    def _lookup(self, raw: bytes, start: int) -> tuple[_Run | None, int]:
        """A known run at `start` (the first resource), and where reading resumes after it."""
        window = max(start, len(raw) - _TAIL_WINDOW)
        for marker in _TAIL_MARKERS:
            tail = raw.rfind(marker, window)
            if tail > start:
                for run in self._exact.get(_run_key(raw, start, tail), ()):
                    if raw.startswith(run.data, start):
                        return run, tail
        for index, run in enumerate(self._prefixes):
            if raw.startswith(run.data, start):
                if index:
                    self._prefixes.insert(0, self._prefixes.pop(index))
                return run, start + len(run.data)
        return None, start

    def _learn(
        self,
        prefix: _Run | None,
        data: bytes,
        ends: list[int],
        names: list[str],
        versions: list[str],
        types: set[bytes],
    ) -> _Run:
        """Remember resources read one by one (`data`), as a run of their own or following a
        known `prefix`; and the longest prefix they share with one of the last runs read."""
        self.runs_read += 1
        if prefix is None:
            parts = (data, tuple(ends), tuple(names), tuple(versions), frozenset(types))
        else:
            offset = len(prefix.data)
            parts = (
                prefix.data + data,
                prefix.ends + tuple(offset + e for e in ends),
                prefix.names + tuple(names),
                prefix.versions + tuple(versions),
                prefix.types | types,
            )
        run = _Run(*parts, name_set=self._name_set(parts[2]))
        self._exact.setdefault(run.key, []).append(run)
        self._exact_bytes += len(run.data)
        while self._exact_bytes > self._max_bytes and len(self._exact) > 1:
            for old in self._exact.pop(next(iter(self._exact))):
                self._exact_bytes -= len(old.data)
        shared = 0
        for recent in self._recent:
            count = _common_resources(run, recent)
            if count < len(run.ends) and count < len(recent.ends):
                shared = max(shared, count)
        if shared:
            shared_names = run.names[:shared]
            shared_run = _Run(
                run.data[: run.ends[shared - 1]],
                run.ends[:shared],
                shared_names,
                run.versions[:shared],
                run.types,
                self._name_set(shared_names),
            )
            if all(p.data != shared_run.data for p in self._prefixes):
                self._prefixes.insert(0, shared_run)
                del self._prefixes[self._max_prefixes :]
        self._recent = [run, *self._recent[:3]]
        return run

    def _name_set(self, names: tuple[str, ...]) -> frozenset[str]:
        """The same frozenset object for the same names: thousands of sidecars hold it."""
        found = self._name_sets.get(names)
        if found is None:
            if len(self._name_sets) >= _MAX_CACHED:
                del self._name_sets[next(iter(self._name_sets))]
            found = self._name_sets[names] = frozenset(names)
        return found

    def _joined(self, known: _Run, more: tuple[str, ...]) -> frozenset[str]:
        """A known run's names and a few more (a sidecar's own cluster), interned."""
        return self.joined(known.name_set, more, known.names)

    def joined(
        self, names: frozenset[str], more: tuple[str, ...], ordered: tuple[str, ...] = ()
    ) -> frozenset[str]:
        """`names` and a few `more`, interned (`ordered`: `names` in their order, if known)."""
        key = (names, more)
        found = self._joins.get(key)
        if found is None:
            if len(self._joins) >= _MAX_CACHED:
                del self._joins[next(iter(self._joins))]
            found = self._joins[key] = self._name_set((ordered or tuple(sorted(names))) + more)
        return found

    def eds_names(self, cluster_names: frozenset[str]) -> frozenset[str]:
        """The EDS clusters among `cluster_names`, whose endpoints a sidecar asks for."""
        found = self._eds_names.get(cluster_names)
        if found is None:
            if len(self._eds_names) >= _MAX_CACHED:
                del self._eds_names[next(iter(self._eds_names))]
            found = frozenset(n for n in cluster_names if n.startswith(EDS_CLUSTER_PREFIX))
            found = self._eds_names[cluster_names] = self._name_set(tuple(sorted(found)))
        return found

    def names_field(self, names: frozenset[str], number: int = 3) -> bytes:
        """A repeated string field `number` holding `names`, encoded: DiscoveryRequest's
        resource_names, DeltaDiscoveryRequest's resource_names_subscribe (both 3) or
        resource_names_unsubscribe (4)."""
        key = (names, number)
        found = self._names_fields.get(key)
        if found is None:
            if len(self._names_fields) >= _MAX_CACHED:
                del self._names_fields[next(iter(self._names_fields))]
            found = b"".join(_str_field(number, n) for n in sorted(names))
            self._names_fields[key] = found
        return found

    def difference(self, had: frozenset[str], wants: frozenset[str]) -> Difference:
        """A delta subscription change from `had` to `wants`, the same for every sidecar."""
        key = (had, wants)
        found = self._differences.get(key)
        if found is None:
            if len(self._differences) >= _MAX_CACHED:
                del self._differences[next(iter(self._differences))]
            added, gone = wants - had, had - wants
            found = self._differences[key] = Difference(
                self.names_field(added, 3) + self.names_field(gone, 4), tuple(sorted(gone))
            )
        return found


class Difference(NamedTuple):
    """A delta subscription change: its request fields, and the names it unsubscribes."""

    fields: bytes
    gone: tuple[str, ...]


# --- one sidecar ------------------------------------------------------------------------------


@dataclass(slots=True)
class TypeState:
    """One type on a simulated sidecar's stream."""

    requested: frozenset[str] | None = None  # names asked for; None: wildcard or not subscribed
    allowed: frozenset[str] = frozenset()  # names a response may carry (see `_check_names`)
    # Of the last response received (and ACKed); on delta, the version of what is held.
    version: str | None = None
    nonce: str = ""
    # Of the last response received; on delta, of the resources held (a Holding).
    names: AbstractSet[str] = frozenset()
    responses: int = 0
    received_at: float = 0.0  # time.monotonic() of the last response
    first_acked_at: float | None = None
    # Delta: subscriptions changed since the last response (see DeltaSidecar._check_version).
    changes: int = 0


@dataclass(frozen=True)
class SidecarSpec:
    node_id: str
    service: str
    ip: str
    labels: ir.Labels
    app_port: int = 8080

    def node(self) -> base_pb2.Node:
        return sidecar_node(
            proxies.Proxy(self.node_id, self.service, self.ip, self.app_port, self.labels)
        )


OnResponse = Callable[["SimulatedSidecar", Decoded], None]
# Subscribed to as a whole, from a stream's start (Envoy asks for scopes once it has the
# listener that uses them; asking at once is served the same).
WILDCARD_TYPES = (CLUSTER, LISTENER, SCOPED_ROUTE)
Protocol = Literal["sotw", "delta"]


class SimulatedSidecar:
    """An ADS stream over a shared channel, answering like Envoy; `run()` until closed.

    Like Envoy, it opens a new stream after a failure, with a jittered exponential backoff
    (Envoy's base is 0.5 s, its cap 30 s; here `max_backoff`), sending the versions it has and
    the names it wants again; `reconnect=False` makes the first failure final.
    """

    method = ADS_METHOD
    node_field = 2  # DiscoveryRequest.node

    def __init__(
        self,
        spec: SidecarSpec,
        channel: Any,  # grpc.aio.Channel
        decoder: ResponseDecoder,
        on_response: OnResponse | None = None,
        reconnect: bool = True,
        max_backoff: float = 5.0,
    ) -> None:
        self.spec = spec
        self._channel = channel
        self._decoder = decoder
        self._on_response = on_response
        self._reconnect = reconnect
        self._max_backoff = max_backoff
        self._node = _len_field(self.node_field, spec.node().SerializeToString())
        self._node_field: bytes | None = None  # until sent on the current stream
        self.state = {type_url: TypeState() for type_url in PUSH_ORDER}
        self.violations = 0
        self.violation_examples: list[str] = []
        self.bytes_received = 0  # of every response (protobuf bytes, without gRPC framing)
        self.error: BaseException | None = None  # what ended the last stream
        self.stream_errors = 0  # streams that ended (each followed by a new one, or the end)
        self.ended = False  # run() returned: no stream and no new one to come
        self.synced_at: float | None = None  # when every type had been ACKed once
        self._call: Any = None
        self._closed = False

    @property
    def node_id(self) -> str:
        return self.spec.node_id

    def version(self, type_url: str) -> str | None:
        return self.state[type_url].version

    async def run(self) -> None:
        """Streams until closed (or a failure, without `reconnect`)."""
        failures = 0
        try:
            while True:
                received = await self._stream()
                if self._closed:
                    self.error = None
                    return
                self.stream_errors += 1
                if not self._reconnect:
                    return
                failures = 1 if received else failures + 1
                cap = min(self._max_backoff, _BASE_BACKOFF * 2 ** min(failures, 10))
                await asyncio.sleep(random.uniform(0, cap))
        finally:
            self.ended = True

    async def _stream(self) -> bool:
        """One stream, until it fails (the error is kept in `self.error`); True if it carried
        any response."""
        responses = sum(s.responses for s in self.state.values())
        self._call = self._channel.stream_stream(self.method)()  # bytes both ways
        self._node_field = self._node
        try:
            for request in self._subscriptions():
                await self._call.write(request)
            while (raw := await self._call.read()) is not grpc.aio.EOF:
                for request in self._handle(raw):
                    await self._call.write(request)
            self.error = ConnectionError("the control plane closed the stream")
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a broken stream, or a response this sidecar cannot read
            self.error = err
        finally:
            self._call.cancel()
        return sum(s.responses for s in self.state.values()) > responses

    def _subscriptions(self) -> list[bytes]:
        """A new stream's first requests: the versions this sidecar has, the names it wants."""
        requests = []
        for type_url, state in self.state.items():
            state.nonce = ""
            state.allowed = state.requested or frozenset()
            if type_url in WILDCARD_TYPES or state.requested is not None:
                requests.append(self._request(type_url, state.requested, state.version or ""))
        return requests

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def _handle(self, raw: bytes) -> list[bytes]:
        now = time.monotonic()
        self.bytes_received += len(raw)
        response = self._decoder.decode(raw)
        state = self.state.get(response.type_url)
        if state is None:
            self._violation(f"a response of unknown type {response.type_url!r}")
            return []
        state.nonce = response.nonce
        state.responses += 1
        state.received_at = now
        if response.foreign:
            self._violation(f"{response.foreign} resources of another type in {response.type_url}")
        if response.type_url in (ENDPOINT, ROUTE):
            self._check_names(response.type_url, state, response.names)
        requests = [self._accept(response, state)]
        if state.first_acked_at is None:
            state.first_acked_at = now
            if all(s.first_acked_at is not None for s in self.state.values()):
                self.synced_at = now
        if response.type_url == CLUSTER:
            wanted = self._eds_names()
            requested = self.state[ENDPOINT].requested
            if wanted != requested and (wanted or requested is not None):
                requests.append(self._subscribe(ENDPOINT, wanted))
        elif response.type_url == SCOPED_ROUTE:
            wanted = self._route_names()
            if wanted != self.state[ROUTE].requested:
                requests.append(self._subscribe(ROUTE, wanted))
        if self._on_response is not None:
            self._on_response(self, response)
        return requests

    def _accept(self, response: Decoded, state: TypeState) -> bytes:
        """Take the response's resources as what this sidecar has; the ACK."""
        state.version, state.names = response.version, response.names
        return self._request(response.type_url, state.requested, state.version, state.nonce)

    def _eds_names(self) -> frozenset[str]:
        """The EDS clusters among those this sidecar has, whose endpoints it asks for."""
        names = self.state[CLUSTER].names
        assert isinstance(names, frozenset)
        return self._decoder.eds_names(names)

    def _route_names(self) -> frozenset[str]:
        """The route tables of the scopes this sidecar has. A scope is named like the table
        it loads when it selects a service by its own name (`names.route_scope`), and the
        simulated meshes have no others: the names stand for the tables."""
        names = self.state[SCOPED_ROUTE].names
        assert isinstance(names, frozenset)
        return names

    def _check_names(self, type_url: str, state: TypeState, names: AbstractSet[str]) -> None:
        """A response may carry the names asked for when the previous response arrived, or in a
        request since (even if a later request drops them again): the server answers a request
        only after the previous response's ACK, which carries the names then current (meshpilot
        keeps one response per type in flight).
        """
        if state.requested is None:
            self._violation(f"a response of {type_url}, never asked for")
        elif not names <= state.allowed:
            extra = sorted(set(names) - state.allowed)
            self._violation(f"{len(extra)} names not asked for in {type_url}: {extra[:3]}")
        if state.requested is not None:
            state.allowed = state.requested

    def _subscribe(self, type_url: str, names: frozenset[str]) -> bytes:
        state = self.state[type_url]
        state.requested = names
        state.allowed = state.allowed if names <= state.allowed else state.allowed | names
        return self._request(type_url, names, state.version or "", state.nonce)

    def _request(
        self, type_url: str, names: frozenset[str] | None, version: str = "", nonce: str = ""
    ) -> bytes:
        """A serialized DiscoveryRequest; the first one on the stream carries the node."""
        return b"".join(
            (
                _str_field(1, version),
                self._node_once(),
                self._decoder.names_field(names) if names else b"",
                _str_field(_TYPE_URL_FIELD, type_url),
                _str_field(_NONCE_FIELD, nonce),
            )
        )

    def _node_once(self) -> bytes:
        """The node field, in the first request of a stream only."""
        node, self._node_field = self._node_field or b"", None
        return node

    def _violation(self, what: str) -> None:
        self.violations += 1
        if len(self.violation_examples) < 5:
            self.violation_examples.append(what)

    def is_synced(self) -> bool:
        return self.synced_at is not None


class DeltaSidecar(SimulatedSidecar):
    """The same sidecar on an incremental stream (DeltaAggregatedResources), as a delta Envoy.

    Clusters, listeners and route scopes are wildcard subscriptions, endpoints and routes named
    ones, changed by subscribing and unsubscribing names (an unsubscribed resource is dropped at
    once, and one a response carries that is no longer subscribed is ignored, as Envoy does). Each
    response is applied to what the sidecar holds of its type and ACKed by its nonce; a new
    stream starts from the versions held (initial_resource_versions).
    """

    method = DELTA_METHOD
    node_field = 1  # DeltaDiscoveryRequest.node

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = {type_url: Holding() for type_url in PUSH_ORDER}
        for type_url, state in self.state.items():
            state.names = self.held[type_url]

    def _subscriptions(self) -> list[bytes]:
        requests = []
        for type_url, state in self.state.items():
            state.nonce = ""
            state.allowed = state.requested or frozenset()
            state.changes = 0
            if type_url in WILDCARD_TYPES:
                requests.append(self._delta_request(type_url, initial=self._initial(type_url)))
            elif state.requested is not None:
                subscribe = self._decoder.names_field(state.requested, 3)
                initial = self._initial(type_url)
                requests.append(self._delta_request(type_url, subscribe, initial=initial))
        return requests

    def _initial(self, type_url: str) -> bytes:
        """initial_resource_versions (5, a map: entries of key 1 and value 2) of what is held."""
        return b"".join(
            _len_field(5, _str_field(1, name) + _str_field(2, version))
            for name, version in self.held[type_url].items()
        )

    def _accept(self, response: Decoded, state: TypeState) -> bytes:
        held = self.held[response.type_url]
        transitions = self._decoder.transitions[response.type_url]
        held.apply(transitions, response.known, response.more, response.removed)
        if state.requested is not None and not response.names <= state.requested:
            held.apply(transitions, None, removed=tuple(response.names - state.requested))
        state.version = held.version
        self._check_version(response, state)
        return self._delta_request(response.type_url, nonce=response.nonce)

    def _check_version(self, response: Decoded, state: TypeState) -> None:
        """What is held must now be what the control plane says the proxy has (the response's
        system version), unless the subscription changed since the previous response: the
        control plane may have computed this one before it saw the change. (It answers only
        after the previous response's ACK, and a type's first request always comes first.)"""
        changes, state.changes = state.changes, 0
        if changes or response.version == state.version:
            return
        self._violation(
            f"{response.type_url}: holds {state.version} after a response for {response.version}"
        )

    def _route_names(self) -> frozenset[str]:
        held = self.held[SCOPED_ROUTE]
        names = held.shared.names
        return self._decoder.joined(names, tuple(sorted(held.own))) if held.own else names

    def _eds_names(self) -> frozenset[str]:
        held = self.held[CLUSTER]
        names = self._decoder.eds_names(held.shared.names)
        own = [n for n in held.own if n.startswith(EDS_CLUSTER_PREFIX)]
        return self._decoder.eds_names(names | frozenset(own)) if own else names

    def _subscribe(self, type_url: str, names: frozenset[str]) -> bytes:
        state = self.state[type_url]
        change = self._decoder.difference(state.requested or frozenset(), names)
        if change.gone:
            self.held[type_url].apply(self._decoder.transitions[type_url], None, (), change.gone)
            state.version = self.held[type_url].version
        if state.requested is not None:  # not the type's first request on this stream
            state.changes += 1
        state.requested = names
        state.allowed = state.allowed if names <= state.allowed else state.allowed | names
        return self._delta_request(type_url, change.fields)

    def _delta_request(
        self, type_url: str, subscriptions: bytes = b"", initial: bytes = b"", nonce: str = ""
    ) -> bytes:
        """A serialized DeltaDiscoveryRequest: `subscriptions` are its encoded
        resource_names_subscribe (3) and _unsubscribe (4) fields, `initial` its
        initial_resource_versions; the first one on the stream carries the node."""
        return b"".join(
            (
                self._node_once(),
                _str_field(2, type_url),
                subscriptions,
                initial,
                _str_field(6, nonce),
            )
        )


# --- many sidecars ----------------------------------------------------------------------------


def fake_ip(index: int) -> str:
    """A distinct address in 10.0.0.0/8 per index (never reachable: nothing sends traffic)."""
    n = index + 1
    if n >= 1 << 24:
        raise ValueError(f"index {index} is beyond 10.0.0.0/8")
    return f"10.{n >> 16}.{n >> 8 & 0xFF}.{n & 0xFF}"


def fleet_specs(count: int, services: Sequence[str], first: int = 0) -> list[SidecarSpec]:
    """Sidecars `first`..`first + count - 1`: round-robin over `services`, alternately labelled
    version v1 and v2, each with its own node id and fake IP."""
    specs = []
    for index in range(first, first + count):
        ip = fake_ip(index)
        version = "v1" if index // len(services) % 2 == 0 else "v2"
        service = services[index % len(services)]
        specs.append(SidecarSpec(f"sim-{index}~{ip}", service, ip, (("version", version),)))
    return specs


@dataclass
class SidecarFleet:
    """Simulated sidecars in this asyncio loop, spread over `channels` gRPC channels.

    `async with SidecarFleet(address, specs) as fleet:` starts every stream at once; leaving
    closes them. `on_response` is called after each response a sidecar handled; `reconnect`
    and `max_backoff` are the sidecars' (see SimulatedSidecar); `protocol` is "sotw" (state
    of the world) or "delta" (DeltaSidecar).
    """

    address: str
    specs: Iterable[SidecarSpec]
    channels: int = 8
    on_response: OnResponse | None = None
    reconnect: bool = True
    max_backoff: float = 5.0
    protocol: Protocol = "sotw"
    decoder: ResponseDecoder = field(init=False)
    sidecars: list[SimulatedSidecar] = field(init=False, default_factory=list)
    _channels: list[Any] = field(init=False, default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.decoder = ResponseDecoder(delta=self.protocol == "delta")

    async def __aenter__(self) -> SidecarFleet:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def start(self) -> None:
        self._channels = [
            grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            for _ in range(max(1, self.channels))
        ]
        for index, spec in enumerate(self.specs):
            channel = self._channels[index % len(self._channels)]
            kind = DeltaSidecar if self.protocol == "delta" else SimulatedSidecar
            sidecar = kind(
                spec, channel, self.decoder, self.on_response, self.reconnect, self.max_backoff
            )
            self.sidecars.append(sidecar)
            self._tasks.append(asyncio.create_task(sidecar.run(), name=spec.node_id))

    async def close(self) -> None:
        for sidecar in self.sidecars:
            sidecar.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._channels), return_exceptions=True)
        self._tasks, self._channels = [], []

    @property
    def violations(self) -> int:
        return sum(s.violations for s in self.sidecars)

    @property
    def stream_errors(self) -> int:
        """Streams that failed (reconnecting sidecars opened new ones)."""
        return sum(s.stream_errors for s in self.sidecars)

    def errors(self) -> list[tuple[str, BaseException]]:
        """The sidecars that stopped streaming because of an error, with the error."""
        return [(s.node_id, s.error) for s in self.sidecars if s.ended and s.error is not None]

    def all_synced(self) -> bool:
        return all(s.is_synced() for s in self.sidecars)

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float, interval: float = 0.01
    ) -> bool:
        """Poll `condition` until it holds (True) or `timeout` seconds passed (False); a sidecar
        that stopped streaming because of an error fails the wait at once."""

        def holds() -> bool:
            if errors := self.errors():
                node, error = errors[0]
                raise ConnectionError(f"{len(errors)} streams ended, {node} first: {error!r}")
            return condition()

        try:
            await wait_for_async(holds, timeout, interval)
        except WaitTimeout:
            return False
        return True
