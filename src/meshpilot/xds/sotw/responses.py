"""State-of-the-world responses: cached resource bytes plus a nonce, shared where the set is."""

from __future__ import annotations

import itertools
import weakref

from meshpilot.translator.envoy.wire import string_field
from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.types import BY_URL


def discovery_response(resources: ResourceSet, nonce: str) -> bytes:
    """A serialized DiscoveryResponse: cached resource bytes plus this response's nonce."""
    return b"".join(
        (
            string_field(1, resources.version),
            *resources.chunks(),
            string_field(4, resources.type_url),
            string_field(5, nonce),
        )
    )


class Responses:
    """Builds responses; a set that many proxies receive gets one response, nonce included.

    A nonce only has to differ from the previous one on the same stream and type, so one
    response object (hundreds of kilobytes of endpoints or routes) can go to every proxy whose
    set it is. Nonces come from one counter, and a stream whose last response was the same
    object (a re-request) gets a new one.
    """

    def __init__(self) -> None:
        self._nonces = itertools.count(1)
        self._shared: weakref.WeakKeyDictionary[ResourceSet, tuple[str, bytes]] = (
            weakref.WeakKeyDictionary()
        )

    def response(self, resources: ResourceSet, previous_nonce: str) -> tuple[str, bytes]:
        """(nonce, response) for `resources`, never with `previous_nonce`."""
        shared = BY_URL[resources.type_url].shared
        if shared:
            found = self._shared.get(resources)
            if found is not None and found[0] != previous_nonce:
                return found
        nonce = f"n{next(self._nonces)}"
        built = (nonce, discovery_response(resources, nonce))
        if shared:
            self._shared[resources] = built
        return built
