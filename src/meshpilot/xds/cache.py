"""The snapshot cache: the current mesh, the connected proxies, and each proxy's snapshot.

A change (new mesh, proxy joining or leaving) is translated once; each proxy's view is then
assembled from the shared, already-serialized resources, checked to be consistent, and handed
to its stream as a Snapshot. A view that is not consistent is refused (logged and counted):
the proxy keeps being served its last good snapshot, and a new mesh is not applied at all.

Translating and checking run on a thread of their own (a big mesh takes seconds): the event
loop keeps serving streams meanwhile and only hands the finished snapshots over. One thread,
so translations never overlap and apply in the order they were asked for.

Proxies joining and leaving change endpoints, which every proxy receives; they are applied
after a debounce, so that thousands of proxies (re)connecting together cause a few pushes of
endpoints to everyone, not one per proxy. The debounce waits longer the more proxies there are
(each change costs a push to every one of them); in a big fleet, a joining proxy does not
wait for it: it is served the last translation at once, its own endpoint with the next change.

With replicas (a shared store), each proxy's instance is registered in the store while its
stream lasts (`Members`), and the instances other replicas hold (`set_others`) are served with
the local ones: every replica translates the same set, so sends the same versions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from meshpilot.background import background
from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import ir, proxies
from meshpilot.translator.translate import Translator, View
from meshpilot.wording import counted
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.protocol import SyncStatus, TypeState
from meshpilot.xds.snapshot import Consistency, Snapshot

log = logging.getLogger(__name__)

EMPTY_MESH = ir.MeshIR(name="", services=())
# Membership changes are applied once none came for QUIET seconds, or MAX_WAIT after the first:
# one second, plus one per PROXIES_PER_SECOND proxies connected, up to LONGEST.
MEMBERSHIP_QUIET_S = 0.05
MEMBERSHIP_MAX_WAIT_S = 1.0
MEMBERSHIP_PROXIES_PER_SECOND = 1_000
MEMBERSHIP_LONGEST_WAIT_S = 10.0
# From this many proxies on, a joining proxy is served at once instead of with the next
# membership change (which is then a second or more away).
SERVE_AT_ONCE_FROM = 1_000


class Members(Protocol):
    """Where the instances of the proxies connected here are registered (the store's registry)."""

    def register(self, node_id: str, instance: proxies.Instance) -> None: ...

    def deregister(self, node_id: str) -> None: ...


@dataclass(eq=False)
class Watch:
    """One connected proxy in the registry: who it is, since when, the snapshot it should have,
    the wakeup of its stream, and (read-only here) its stream's per-type protocol state."""

    proxy: proxies.Proxy
    types: Mapping[str, TypeState]
    protocol: str = "sotw"  # the xDS variant of its stream: "sotw" or "delta"
    hold_claims_until: float = 0.0  # time.monotonic(); see SnapshotCache.hold_reconnects
    connected_at: float = field(default_factory=time.time)
    snapshot: Snapshot | None = None  # None until its first consistent view
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    instance: proxies.Instance | None = field(init=False)  # None: a proxyless client
    # The translator's view `snapshot` was made from: an unchanged view is not checked again.
    source: View | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.instance = self.proxy.instance

    def synced(self) -> bool:
        """The proxy ACKed the latest version of every type it subscribed to."""
        return all(
            state.status is SyncStatus.SYNCED for state in self.types.values() if state.subscribed
        )


class SnapshotCache:
    def __init__(
        self,
        metrics: XdsMetrics | None = None,
        translator: Translator | None = None,
        members: Members | None = None,
    ) -> None:
        self._translator = translator if translator is not None else Translator()
        self._members = members
        self._others: frozenset[proxies.Instance] = frozenset()  # held by other replicas
        self.metrics = metrics if metrics is not None else XdsMetrics(lambda: len(self._watches))
        self._mesh = EMPTY_MESH
        self._watches: list[Watch] = []
        self._proxies: Counter[proxies.Proxy] = Counter()  # of the watches (a proxy may reconnect)
        self._membership = _Debounce(MEMBERSHIP_QUIET_S, self._membership_wait, self._rebuild)
        self._scan_from = 0  # see all_synced
        self._hold_until = 0.0
        self._translating = ThreadPoolExecutor(1, thread_name_prefix="translate")
        self._left: list[proxies.Proxy] = []  # to forget at the next translation
        self._rebuilding: asyncio.Task[None] | None = None
        self._consistency = Consistency()  # of the last translation, for joining proxies

    @property
    def watches(self) -> list[Watch]:
        return list(self._watches)

    @property
    def mesh(self) -> ir.MeshIR:
        return self._mesh

    def all_synced(self) -> bool:
        """True when every proxy has ACKed the latest version of every type it subscribed to.

        Polled while a change converges: the scan starts at the proxy that was not synced at the
        last call, so a poll costs a look at the proxies that synced since, not at all of them.
        """
        watches = self._watches
        start = self._scan_from if self._scan_from < len(watches) else 0
        for index in itertools.chain(range(start, len(watches)), range(start)):
            if not watches[index].synced():
                self._scan_from = index
                return False
        return True

    def set_mesh(self, mesh: ir.MeshIR) -> None:
        """Apply a new mesh now, blocking until it is translated; raises InconsistentSnapshot
        (keeping the old mesh, and every proxy's snapshot) if it gives any proxy a view that is
        not consistent."""
        self._install(self._submit(mesh).result())

    async def apply_mesh(self, mesh: ir.MeshIR) -> None:
        """`set_mesh`, translated while the event loop goes on serving."""
        self._install(await asyncio.wrap_future(self._submit(mesh)))

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

    def connect(
        self, proxy: proxies.Proxy, types: Mapping[str, TypeState], protocol: str = "sotw"
    ) -> Watch:
        """Register a proxy whose stream keeps `types`; its snapshot comes with the next
        membership change, or in a fleet of SERVE_AT_ONCE_FROM proxies or more, at once (the
        last translation; its own endpoint with the next membership change)."""
        watch = Watch(proxy, types, protocol, hold_claims_until=self._hold_until)
        self._watches.append(watch)
        self._proxies[proxy] += 1
        if self._members is not None and watch.instance is not None:
            self._members.register(proxy.node_id, watch.instance)
        self._membership.schedule()
        if len(self._watches) < SERVE_AT_ONCE_FROM:
            return watch
        loop = asyncio.get_running_loop()
        made = self._translating.submit(self._first_view, watch)
        made.add_done_callback(lambda done: loop.call_soon_threadsafe(self._serve, watch, done))
        return watch

    def _membership_wait(self) -> float:
        extra = len(self._watches) / MEMBERSHIP_PROXIES_PER_SECOND
        return min(MEMBERSHIP_MAX_WAIT_S + extra, MEMBERSHIP_LONGEST_WAIT_S)

    def _first_view(self, watch: Watch) -> tuple[View, Snapshot] | None:
        """On the translation thread: the joining proxy's view of the last translation."""
        shared = self._translator.last
        if shared is None:
            return None
        view = self._translator.view(shared, watch.proxy)
        return view, self._consistency.snapshot(view)

    def _serve(self, watch: Watch, made: Future[tuple[View, Snapshot] | None]) -> None:
        """On the loop: a joining proxy's first snapshot, unless a newer one came first."""
        try:
            first = made.result()
        except InconsistentSnapshot as err:
            self._refuse([(watch, err)])
            return
        except Exception:
            node = watch.proxy.node_id
            log.exception("could not make %s's first view; it waits for the next change", node)
            return
        if first is not None and watch.snapshot is None:  # one that left meanwhile: harmless
            watch.source, watch.snapshot = first
            watch.wakeup.set()

    def disconnect(self, watch: Watch) -> None:
        self._watches.remove(watch)
        self._proxies[watch.proxy] -= 1
        if not self._proxies[watch.proxy]:
            del self._proxies[watch.proxy]
            self._left.append(watch.proxy)
            if self._members is not None and watch.instance is not None:
                self._members.deregister(watch.proxy.node_id)
        self._membership.schedule()

    def set_others(self, instances: frozenset[proxies.Instance]) -> None:
        """The instances other replicas hold changed: served with the next membership change."""
        if instances != self._others:
            self._others = instances
            self._membership.schedule()

    def _rebuild(self) -> None:
        """Membership changed: every proxy's snapshot of the current mesh, off the loop."""
        self._rebuilding = background(self._rebuild_off_loop(), "rebuild proxy views")

    async def _rebuild_off_loop(self) -> None:
        try:
            self._install(await asyncio.wrap_future(self._submit(None)))
        except Exception:
            log.exception("could not rebuild proxy views; proxies keep their current config")

    def _submit(self, mesh: ir.MeshIR | None) -> Future[_Made]:
        """Translate `mesh` (None: the current one, for a membership change) for the proxies
        connected now and the instances other replicas hold, on the translation thread."""
        return self._translating.submit(self._publish, mesh, list(self._watches), self._others)

    def _install(self, made: _Made) -> None:
        """On the loop: hand the snapshots to their streams (of proxies that left meanwhile
        too, which is harmless; those that joined meanwhile get theirs with the next one)."""
        for watch, view, snapshot in made:
            watch.source, watch.snapshot = view, snapshot
            watch.wakeup.set()

    def _publish(
        self, mesh: ir.MeshIR | None, watches: list[Watch], others: frozenset[proxies.Instance]
    ) -> _Made:
        """On the translation thread: each proxy's snapshot of `mesh`. For a new mesh, all or
        nothing: InconsistentSnapshot if any view is not consistent (the mesh stays as it
        was); for the current one (None) a proxy whose view is not consistent keeps its last
        good one."""
        self._forget_left()
        all_or_nothing = mesh is not None
        target = mesh if mesh is not None else self._mesh
        members = {w.instance for w in watches if w.instance is not None}.union(others)
        shared = self._translator.translate(target, members)
        views = [(w, self._translator.view(shared, w.proxy)) for w in watches]
        made: _Made = []
        refused, consistency = [], Consistency()
        self._consistency = consistency
        for watch, view in views:
            if view is watch.source:
                continue  # checked when it was made
            try:
                made.append((watch, view, consistency.snapshot(view, watch.snapshot)))
            except InconsistentSnapshot as err:
                refused.append((watch, err))
                if all_or_nothing:
                    break
        if refused:
            self._refuse(refused)
            if all_or_nothing:
                raise refused[0][1]
        self._mesh = target
        return made

    def _forget_left(self) -> None:
        """The translator's memory of proxies that left (and did not come back)."""
        while self._left:
            proxy = self._left.pop()
            if proxy not in self._proxies:
                self._translator.forget(proxy)

    def _refuse(self, refused: list[tuple[Watch, InconsistentSnapshot]]) -> None:
        """Count every refused view, and log one line (a bad change can refuse thousands)."""
        self.metrics.inconsistent_snapshots(len(refused))
        watch, err = refused[0]
        log.error(
            "refused inconsistent snapshots for %s (each keeps its last good one), %s first: %s",
            counted(len(refused), "proxy", "proxies"),
            watch.proxy.node_id,
            err,
        )


_Made = list[tuple[Watch, View, Snapshot]]


class _Debounce:
    """Calls `action` once no `schedule()` came for `quiet` seconds, or `max_wait()` seconds
    after the first one not yet acted on."""

    def __init__(
        self, quiet: float, max_wait: Callable[[], float], action: Callable[[], None]
    ) -> None:
        self.quiet = quiet
        self.max_wait = max_wait
        self.action = action
        self._latest: float | None = None  # when the first change not acted on must be
        self._timer: asyncio.TimerHandle | None = None

    def schedule(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._latest is None:
            self._latest = now + self.max_wait()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(min(now + self.quiet, self._latest), self._fire)

    def _fire(self) -> None:
        self._latest = self._timer = None
        self.action()
