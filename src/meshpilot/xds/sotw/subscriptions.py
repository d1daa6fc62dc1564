"""The resource names proxies subscribe to, read once per distinct list and shared by streams.

Every proxy of an unscoped mesh asks for the endpoints of every cluster, and repeats the list in
each ACK: thousands of names per request. Turning them into a set per request costs more than the
rest of handling it, and keeping a set per proxy costs hundreds of megabytes at a few thousand
proxies. So a list is recognised by its encoded bytes (made and compared in C), and its set is
built once and shared by every stream that asks for the same names.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.xds.sotw.state import SotwTypeState


def names_key(request: discovery_pb2.DiscoveryRequest) -> bytes:
    """The request's `resource_names` field, encoded: equal bytes, equal lists."""
    names_only = discovery_pb2.DiscoveryRequest()
    names_only.CopyFrom(request)
    for field, _ in names_only.ListFields():
        if field.name != "resource_names":
            names_only.ClearField(field.name)
    encoded: bytes = names_only.SerializeToString()
    return encoded


class _Shared:
    __slots__ = ("key", "names", "users")

    def __init__(self, key: bytes, names: frozenset[str]) -> None:
        self.key = key  # the one copy of the encoded names that every stream using them keeps
        self.names = names
        self.users = 0


class Subscriptions:
    """The distinct name sets of every stream of one server, each kept while a stream uses it."""

    def __init__(self) -> None:
        self._sets: dict[bytes, _Shared] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def subscribe(self, state: SotwTypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        """Set `state.names` to the request's; an unchanged list costs a copy and a compare."""
        key = names_key(request)
        if key == state.names_key:
            return
        self.release(state)
        shared = self._sets.get(key)
        if shared is None:
            shared = self._sets[key] = _Shared(key, frozenset(request.resource_names))
        shared.users += 1
        state.names, state.names_key = shared.names, shared.key

    def release(self, state: SotwTypeState) -> None:
        """The stream no longer uses its names (it changed them, subscribed to all, or ended)."""
        if state.names_key is None:
            return
        shared = self._sets[state.names_key]
        shared.users -= 1
        if not shared.users:
            del self._sets[state.names_key]
        state.names, state.names_key = None, None
