"""The snapshot cache: the current mesh, the connected proxies, and each proxy's view.

A change (new mesh, proxy joining or leaving) is translated once; each proxy's view is then
assembled from the shared, already-serialized resources and handed to its stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshpilot.translator import ir
from meshpilot.translator.resources import PUSH_ORDER
from meshpilot.translator.translate import Translator, View
from meshpilot.xds.sync import SyncStatus, TypeSync

log = logging.getLogger(__name__)

EMPTY_MESH = ir.MeshIR(name="", services=())
MEMBERSHIP_WINDOW_S = 0.05


@dataclass(eq=False)
class Watch:
    """One connected proxy: the view it should have and the sync state of what it has."""

    proxy: ir.Proxy
    hold_claims_until: float = 0.0  # time.monotonic(); see SnapshotCache.hold_reconnects
    connected_at: float = field(default_factory=time.time)
    view: View | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    sync: dict[str, TypeSync] = field(default_factory=lambda: {t: TypeSync() for t in PUSH_ORDER})


class SnapshotCache:
    def __init__(self) -> None:
        self._translator = Translator()
        self._mesh = EMPTY_MESH
        self._watches: list[Watch] = []
        self._rebuild_pending = False
        self._hold_until = 0.0
        self.on_rebuild: list[Callable[[], None]] = []

    @property
    def watches(self) -> list[Watch]:
        return list(self._watches)

    @property
    def mesh(self) -> ir.MeshIR:
        return self._mesh

    def all_synced(self) -> bool:
        """True when every proxy has ACKed the latest version of every type it subscribed to."""
        return all(
            state.status is SyncStatus.SYNCED
            for watch in self._watches
            for state in watch.sync.values()
            if state.subscribed
        )

    def set_mesh(self, mesh: ir.MeshIR) -> None:
        """Apply a new mesh now; raises InconsistentSnapshot (keeping the old mesh) if it is bad."""
        self._publish(mesh)
        self._mesh = mesh

    def hold_reconnects(self, seconds: float) -> None:
        """After a control-plane restart, let reconnecting proxies keep what they have for a while.

        Proxies reconnect one by one, so the registry of instances starts out incomplete; a proxy
        that claims a version we would change is left alone until the others are back, instead
        of being sent endpoints that lack the instances that have not reconnected yet.
        """
        self._hold_until = time.monotonic() + seconds
        asyncio.get_running_loop().call_later(seconds, self._wake_all)

    def _wake_all(self) -> None:
        for watch in self._watches:
            watch.wakeup.set()

    def connect(self, proxy: ir.Proxy) -> Watch:
        watch = Watch(proxy, hold_claims_until=self._hold_until)
        self._watches.append(watch)
        self._schedule_rebuild()
        return watch

    def disconnect(self, watch: Watch) -> None:
        self._watches.remove(watch)
        if not any(w.proxy == watch.proxy for w in self._watches):
            self._translator.forget(watch.proxy)
        self._schedule_rebuild()

    def _schedule_rebuild(self) -> None:
        """Coalesce membership changes that arrive together (thousands of proxies connecting
        after a restart): one rebuild of every view per window, not one per connection."""
        if not self._rebuild_pending:
            self._rebuild_pending = True
            asyncio.get_running_loop().call_later(MEMBERSHIP_WINDOW_S, self._rebuild)

    def _rebuild(self) -> None:
        self._rebuild_pending = False
        try:
            self._publish(self._mesh)
        except Exception:
            log.exception("could not rebuild proxy views; proxies keep their current config")

    def _publish(self, mesh: ir.MeshIR) -> None:
        shared = self._translator.translate(mesh, self._instances())
        views = [(w, self._translator.view(shared, w.proxy)) for w in self._watches]
        for watch, view in views:
            watch.view = view
            watch.wakeup.set()
        for callback in self.on_rebuild:
            callback()

    def _instances(self) -> list[ir.Instance]:
        return [w.proxy.instance for w in self._watches]
