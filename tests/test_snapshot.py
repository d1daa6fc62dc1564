"""A proxy's snapshot is consistent, or it is not served: checked on the serving path.

An inconsistent view (a cluster whose endpoints, or a listener whose route table, the view
lacks) is refused by the cache, logged and counted, and the proxy keeps being served its last
good snapshot; a new mesh that gives any proxy such a view is not applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pytest

from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import proxies
from meshpilot.translator.resources import ResourceSet, resource_from_bytes
from meshpilot.translator.translate import MeshResources, Translator, View
from meshpilot.xds import snapshot as snapshot_module
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.snapshot import Consistency
from meshpilot.xds.types import CLUSTER, ENDPOINT, ROUTE, TYPES, ResourceType
from tests.ads_support import V2, mesh, proxy, serving
from tests.support.wait import wait_for_async

REFUSED = "meshpilot_xds_inconsistent_snapshots_total"
DROPPED = "outbound|9080|v2|reviews"  # the endpoints a broken translator leaves out


class BreakableTranslator(Translator):
    """The real translator, whose views lack the endpoints of one cluster once `broken`."""

    broken = False

    def view(self, shared: MeshResources, proxy: proxies.Proxy) -> View:
        view = super().view(shared, proxy)
        if not self.broken:
            return view
        endpoints = view[ENDPOINT]
        return {**view, ENDPOINT: endpoints.only(frozenset(endpoints.names - {DROPPED}))}


def a_view() -> Mapping[str, ResourceSet]:
    translator = Translator()
    return translator.view(translator.translate(mesh(), []), proxy("a", "127.0.0.2"))


def test_a_consistent_view_becomes_a_snapshot_of_the_same_sets() -> None:
    view = a_view()
    snapshot = Consistency().snapshot(view)
    assert dict(snapshot) == dict(view)
    assert snapshot.version(CLUSTER) == view[CLUSTER].version


def test_a_cluster_whose_endpoints_the_view_lacks_is_refused() -> None:
    view = a_view()
    broken = {**view, ENDPOINT: view[ENDPOINT].only(frozenset(view[ENDPOINT].names - {DROPPED}))}
    with pytest.raises(InconsistentSnapshot, match=re.escape(f"{DROPPED} -> {DROPPED}")):
        Consistency().snapshot(broken)


def test_a_scope_whose_route_table_the_view_lacks_is_refused() -> None:
    view = a_view()
    kept = frozenset(view[ROUTE].names - {"outbound|reviews"})
    with pytest.raises(
        InconsistentSnapshot, match=r"^[^,]*outbound\|reviews -> outbound\|reviews$"
    ):
        Consistency().snapshot({**view, ROUTE: view[ROUTE].only(kept)})


def test_a_new_type_is_checked_through_its_refers_to_row(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    monkeypatch.setattr(
        snapshot_module, "TYPES", (*TYPES, ResourceType(secret, "sds", refers_to=(CLUSTER,)))
    )
    made = resource_from_bytes(secret, "cert", b"cert", refs=["outbound|1||gone"])
    with pytest.raises(InconsistentSnapshot, match=r"cert -> outbound\|1\|\|gone"):
        Consistency().snapshot({**a_view(), secret: ResourceSet.of(secret, [made])})


def test_the_shared_sets_are_checked_once_not_per_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies whose views share sets cost a look at their own few references each."""
    examined: list[int] = []
    absent = snapshot_module._absent

    def counting(refs: Iterable[str], targets: list[ResourceSet]) -> list[str]:
        refs = list(refs)
        examined.append(len(refs))
        return absent(refs, targets)

    monkeypatch.setattr(snapshot_module, "_absent", counting)
    translator, consistency = Translator(), Consistency()
    sidecars = [proxy(f"p{i}", f"127.0.1.{i}") for i in range(1, 41)]
    shared = translator.translate(mesh(), [p.instance for p in sidecars])
    views = [translator.view(shared, p) for p in sidecars]
    consistency.snapshot(views[0])
    first = sum(examined)
    examined.clear()
    for view in views[1:]:
        consistency.snapshot(view)
    own = len(views[1][CLUSTER].split()[1].refs()) + len(
        views[1]["type.googleapis.com/envoy.config.listener.v3.Listener"].refs()
    )
    assert sum(examined) <= len(views[1:]) * own < len(views[1:]) * first


async def test_a_mesh_giving_a_proxy_an_inconsistent_view_is_not_applied() -> None:
    translator = BreakableTranslator()
    cache = SnapshotCache(translator=translator)
    cache.set_mesh(mesh())
    watch = cache.connect(proxy("a", "127.0.0.2"), {})
    cache.set_mesh(mesh(v2_weight=50))  # published now, to the connected proxy
    good = watch.snapshot
    assert good is not None and DROPPED in good[ENDPOINT]
    translator.broken = True
    with pytest.raises(InconsistentSnapshot, match=re.escape(DROPPED)):
        cache.set_mesh(mesh(v2_weight=60))
    assert cache.mesh == mesh(v2_weight=50)
    assert watch.snapshot is good
    assert cache.metrics.value(REFUSED) == 1
    cache.disconnect(watch)


async def test_a_proxy_whose_new_view_is_inconsistent_is_served_its_last_good_one() -> None:
    translator = BreakableTranslator()
    cache = SnapshotCache(translator=translator)
    cache.set_mesh(mesh())
    names = [DROPPED]
    async with serving(cache) as plane, plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(ENDPOINT, names)
        good = await client.receive()
        client.ack(good, names)
        translator.broken = True
        async with plane.client(proxy("b", "127.0.0.3", labels=V2)) as joining:
            joining.send(CLUSTER)  # its joining changes everyone's endpoints: a's view, b's
            await wait_for_async(lambda: plane.metric(REFUSED) >= 2)
            assert plane.metric(REFUSED) == 2  # both refused, once each
            joined = plane.watch("b~127.0.0.3")
            assert joined is not None and joined.snapshot is None  # nothing to serve it yet
            client.ack(good, names)  # nothing in flight: asks again for its endpoints
            again = await client.receive()
    assert again.version_info == good.version_info  # the last good snapshot's, not b's join
