"""The registry and the mesh history behind one interface (`base`): in memory (the default) or
on etcd (`serve --store etcd://HOST:PORT[,HOST:PORT...]`, shared by replicas)."""

from __future__ import annotations

from meshpilot.bootstrap import parse_host_port
from meshpilot.errors import MeshpilotError
from meshpilot.store.base import (
    History,
    MeshVersion,
    Registry,
    SharedKeys,
    Store,
    StoreHealth,
    StoreUnavailable,
    UnknownVersion,
    content_digest,
    who,
)
from meshpilot.store.memory import MemoryStore

__all__ = [
    "History",
    "MemoryStore",
    "MeshVersion",
    "Registry",
    "SharedKeys",
    "Store",
    "StoreHealth",
    "StoreUnavailable",
    "UnknownVersion",
    "content_digest",
    "open_store",
    "parse_store_url",
    "who",
]

ETCD_SCHEME = "etcd://"
ETCD_EXAMPLE = "etcd://127.0.0.1:2379,127.0.0.2:2379"


class BadStoreUrl(MeshpilotError):
    """A `--store` value that names no store meshpilot can use."""


def parse_store_url(url: str) -> list[tuple[str, int]]:
    """`etcd://HOST:PORT[,HOST:PORT...]` to its members' (host, port), in the order given."""
    if not url.startswith(ETCD_SCHEME):
        raise BadStoreUrl(f"--store {url!r}: expected {ETCD_EXAMPLE}")
    members = url.removeprefix(ETCD_SCHEME).split(",")
    try:
        return [parse_host_port(m, option="--store", example=ETCD_EXAMPLE) for m in members]
    except MeshpilotError as err:
        raise BadStoreUrl(f"{err} (in {url!r})") from None


def open_store(url: str | None) -> Store:
    """The store `url` names; None: this process's memory."""
    if url is None:
        return MemoryStore()
    members = parse_store_url(url)
    from meshpilot.store.etcd import EtcdStore  # aetcd is only loaded for an etcd store

    return EtcdStore(url, members)
