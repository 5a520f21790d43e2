"""Pub/Sub: one subscriber connection per node, shared by every subscribed client.

The hub keeps, per channel, pattern and shard channel, the proxy clients subscribed to it,
and subscribes the proxy itself on a node only while a client wants it: ``SUBSCRIBE x`` goes
to a node when the first client subscribes to ``x``, ``UNSUBSCRIBE x`` a second after the last
one left (``LINGER_S``: the count a PUBLISH answers stays exact, see ``remove``). Every
message the node delivers is forwarded, as the node framed it, to each subscribed client: a
PUBLISH reaches 1000 subscribers with one message from the node.

Where a subscription lives: a shard channel (SSUBSCRIBE) on the master of its slot, as Redis
Cluster requires. Every channel and pattern on one node, the master of slot 0, where the
proxy's PUBLISH goes too: a Redis Cluster delivers every PUBLISH on every node anyway (over the
cluster bus), so this costs the nodes nothing, and one node orders the messages -- a client
subscribed to a channel and a matching pattern gets ``message`` and ``pmessage`` in the order
one Redis gives, and messages published through the proxy arrive in the order they were sent.

A client's subscribe is answered only once the node confirmed the subscription (a message
published after the client saw its confirmation is never missed); an unsubscribe is answered
at once. When a subscriber connection is lost (a failover, a node restart) or a node drops a
shard channel (its slot moved away: the node sends ``sunsubscribe``), the hub subscribes again
where the map says now, retrying with the cluster's backoff until it succeeds; clients see
nothing but a gap: messages published between the loss and the new subscription are not
delivered (README, "Pub/Sub").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import hiredis
import structlog
import trio

from rproxy.core import pubsub as ps
from rproxy.core.resp import BackendProtocolError, encode_command
from rproxy.core.slots import key_slot
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.net.backend import CLOSED, BackendConnection, Owner
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router

if TYPE_CHECKING:
    from rproxy.core.request import Request

log = structlog.get_logger("rproxy.net.pubsub")

Key = tuple[int, bytes]  # (kind, name)
LINGER_S = 1.0  # the proxy unsubscribes a name this long after its last client left
_CONFIRM = {b"subscribe": ps.CHANNEL, b"psubscribe": ps.PATTERN, b"ssubscribe": ps.SHARD}
_DROPPED = {b"unsubscribe": ps.CHANNEL, b"punsubscribe": ps.PATTERN, b"sunsubscribe": ps.SHARD}
_MESSAGE = {b"message": ps.CHANNEL, b"pmessage": ps.PATTERN, b"smessage": ps.SHARD}


class Subscriber(Protocol):
    """A proxy client, as the hub sees it."""

    def push(self, frame: bytes) -> None:
        """Deliver a message frame (after the client's earlier replies)."""
        ...


class Opener(Protocol):
    nursery: trio.Nursery | None

    def open_connection(self, addr: Addr, owner: Owner,
                        cls: type[BackendConnection] = BackendConnection) -> BackendConnection:
        ...

    def request_refresh(self) -> None: ...


class SubscriberConnection(BackendConnection):
    """A backend connection in subscribed mode: frames come unasked (messages) as well as in
    answer to the hub's commands; all go to the hub, none to a request FIFO."""

    __slots__ = ()

    def on_data(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except BackendProtocolError as exc:
            self.fail(exc)
            return
        self.replies += len(frames)
        self.owner.on_frames(self, frames)  # type: ignore[attr-defined]

    def command(self, data: bytes) -> None:
        self.out.append(data)
        if not self.dirty:
            self.dirty = True
            self.reactor.dirty_backends.append(self)


class Link:
    """The hub's connection to one node: what it carries, and its commands awaiting a reply
    (kind, name, subscribe?, the callbacks to run when a subscribe is confirmed)."""

    __slots__ = ("conn", "carried", "ops")

    def __init__(self, conn: SubscriberConnection) -> None:
        self.conn = conn
        self.carried: dict[Key, None] = {}
        self.ops: deque[tuple[int, bytes, bool, list[Callable[[], None]]]] = deque()


class PubSubHub:
    """Implements ``rproxy.net.backend.Owner`` for the subscriber connections."""

    def __init__(self, opener: Opener, router: Router, reactor: Reactor, stats: Stats,
                 backoff_s: float) -> None:
        self.opener = opener
        self.router = router
        self.reactor = reactor
        self.stats = stats
        self.backoff_s = backoff_s
        # kind -> name -> the clients subscribed to it (insertion-ordered)
        self.subscribers: tuple[dict[bytes, dict[Subscriber, None]], ...] = ({}, {}, {})
        self.links: dict[Addr, Link] = {}
        self.home: dict[Key, Link] = {}  # where each wanted subscription is placed
        self.waiting: dict[Key, list[Callable[[], None]]] = {}  # wanted, not placed yet
        self.lingering: dict[Key, float] = {}  # placed, wanted by nobody since: until when
        self.retry_scheduled = False
        self.sweep_scheduled = False
        self.closing = False
        self.reader = hiredis.Reader()
        router.subscribe(self)

    # -- what the sessions ask --------------------------------------------------------------------
    def add(self, client: Subscriber, kind: int, names: list[bytes],
            ready: Callable[[], None]) -> None:
        """``client`` subscribes to ``names`` (new for it); ``ready`` runs once the node
        confirmed each (at once if the proxy is subscribed already)."""
        table = self.subscribers[kind]
        pending = 0
        done = [0]

        def one_done() -> None:
            done[0] += 1
            if done[0] == pending:
                ready()

        fresh = []
        for name in names:
            table.setdefault(name, {})[client] = None
            key = (kind, name)
            self.lingering.pop(key, None)
            link = self.home.get(key)
            if link is not None:
                if any(op[0] == kind and op[1] == name and op[2] for op in link.ops):
                    pending += 1  # subscribed, not yet confirmed: wait with the first
                    self._wait_on(link, key, one_done)
            elif key in self.waiting:
                pending += 1
                self.waiting[key].append(one_done)
            else:
                fresh.append(key)
        pending += len(fresh)
        if pending == 0:
            ready()
            return
        for key in fresh:
            self._place(key, [one_done])

    def remove(self, client: Subscriber, kind: int, names: list[bytes]) -> None:
        """``client`` dropped ``names``. The proxy stays subscribed to those nobody wants now
        for ``LINGER_S`` more (``_sweep``): until it unsubscribed, the node counts the proxy's
        subscription among a PUBLISH's receivers, and the proxy subtracts it exactly only
        while it is known to be there -- and a client that subscribes again meanwhile is
        answered at once."""
        table = self.subscribers[kind]
        for name in names:
            subs = table.get(name)
            if subs is None:
                continue
            subs.pop(client, None)
            if subs:
                continue
            del table[name]
            key = (kind, name)
            waiters = self.waiting.pop(key, None)
            if waiters is not None:  # never placed: nothing to undo, nobody to keep waiting
                for w in waiters:
                    w()
            elif key in self.home:
                self.lingering[key] = trio.current_time() + LINGER_S
                self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if not self.sweep_scheduled:
            self.sweep_scheduled = self._start(self._sweep)

    def _start(self, task: Callable[[], Awaitable[None]]) -> bool:
        """Run ``task`` in the background; False if it cannot start (no nursery yet, or the
        proxy shutting down: its connections go anyway)."""
        nursery = self.opener.nursery
        if nursery is None or self.closing:
            return False
        try:
            nursery.start_soon(task)
        except RuntimeError:  # the nursery is closed to new tasks
            return False
        return True

    async def _sweep(self) -> None:
        """Unsubscribe the proxy from what nobody has wanted for ``LINGER_S``."""
        while self.lingering and not self.closing:
            await trio.sleep(LINGER_S / 2)
            now = trio.current_time()
            for key, deadline in list(self.lingering.items()):
                if deadline <= now:
                    del self.lingering[key]
                    if not self.subscribers[key[0]].get(key[1]):
                        self._unplace(key)
            self.reactor.flush()
        self.sweep_scheduled = False

    def remove_all(self, client: Subscriber, subs: ps.Subscriptions) -> None:
        for kind, names in enumerate(subs.by_kind):
            if names:
                self.remove(client, kind, list(names))

    def count(self, kind: int, name: bytes) -> int:
        subs = self.subscribers[kind].get(name)
        return len(subs) if subs else 0

    def receivers(self, channel: bytes, shard: bool = False) -> int:
        """How many proxy clients a PUBLISH (SPUBLISH) of ``channel`` reaches."""
        if shard:
            return self.count(ps.SHARD, channel)
        n = self.count(ps.CHANNEL, channel)
        for pattern, subs in self.subscribers[ps.PATTERN].items():
            if ps.matches(pattern, channel):
                n += len(subs)
        return n

    def carried_at(self, slot: int, channel: bytes, shard: bool = False) -> int:
        """How many of the proxy's own subscriptions on the master of ``slot`` a PUBLISH
        (SPUBLISH) of ``channel`` there reaches: the node counts them among its receivers."""
        conn = self.router.slot_conn[slot]
        link = self.links.get(conn.addr) if conn is not None else None
        if link is None:
            return 0
        if shard:
            return 1 if (ps.SHARD, channel) in link.carried else 0
        n = 1 if (ps.CHANNEL, channel) in link.carried else 0
        for kind, name in link.carried:
            if kind == ps.PATTERN and ps.matches(name, channel):
                n += 1
        return n

    def names(self, kind: int) -> list[bytes]:
        return list(self.subscribers[kind])

    def placed(self, kind: int) -> int:
        """How many of the proxy's own subscriptions of ``kind`` the nodes hold."""
        return sum(1 for key in self.home if key[0] == kind)

    def is_placed(self, kind: int, name: bytes) -> bool:
        return (kind, name) in self.home

    # -- placing subscriptions on nodes ---------------------------------------------------------
    def _place(self, key: Key, waiters: list[Callable[[], None]]) -> None:
        """Subscribe the proxy to ``key`` on the node the map says; if there is none now,
        later (``_retry``)."""
        kind, name = key
        conn = self.router.slot_conn[key_slot(name) if kind == ps.SHARD else ps.PUBLISH_SLOT]
        if conn is None or self.closing:
            self.waiting.setdefault(key, []).extend(waiters)
            self._schedule_retry()
            return
        link = self._link(conn.addr)
        link.carried[key] = None
        self.home[key] = link
        link.ops.append((kind, name, True, waiters))
        link.conn.command(encode_command([ps.SUBSCRIBE_VERB[kind], name]))

    def _unplace(self, key: Key) -> None:
        """Unsubscribe the proxy from ``key`` (nobody wants it, or its slot moved). The node
        counts the proxy's subscription among a PUBLISH's receivers until it confirmed the
        unsubscribe, so the link carries it until then (``_confirmed``)."""
        link = self.home.pop(key, None)
        if link is None:
            return
        if link.conn.state == CLOSED:
            link.carried.pop(key, None)
        else:
            kind, name = key
            link.ops.append((kind, name, False, []))
            link.conn.command(encode_command([ps.UNSUBSCRIBE_VERB[kind], name]))

    def _wait_on(self, link: Link, key: Key, callback: Callable[[], None]) -> None:
        for op in reversed(link.ops):
            if op[0] == key[0] and op[1] == key[1] and op[2]:
                op[3].append(callback)
                return

    def _link(self, addr: Addr) -> Link:
        link = self.links.get(addr)
        if link is None or link.conn.state == CLOSED:
            conn = self.opener.open_connection(addr, self, SubscriberConnection)
            assert isinstance(conn, SubscriberConnection)
            link = Link(conn)
            self.links[addr] = link
        return link

    def _replace_all(self, keys: list[tuple[Key, list[Callable[[], None]]]]) -> None:
        """Subscribe again, where the map says now, to what is still wanted."""
        for key, waiters in keys:
            if self.subscribers[key[0]].get(key[1]):
                self._place(key, waiters)
            else:
                for w in waiters:
                    w()

    def _schedule_retry(self) -> None:
        if not self.retry_scheduled:
            self.retry_scheduled = self._start(self._retry)

    async def _retry(self) -> None:
        await trio.sleep(max(self.backoff_s, 0.05))
        self.retry_scheduled = False
        waiting, self.waiting = self.waiting, {}
        self._replace_all(list(waiting.items()))
        self.reactor.flush()

    def on_map_changed(self) -> None:
        """``MapListener``: a slot changed owner. Shard channels follow their slot now (the
        old owner drops them too); the others stay where they are while their link lives."""
        moved: list[tuple[Key, list[Callable[[], None]]]] = []
        for key, link in list(self.home.items()):
            if key[0] != ps.SHARD:
                continue
            conn = self.router.slot_conn[key_slot(key[1])]
            if conn is not None and conn.addr != link.conn.addr:
                self._unplace(key)
                moved.append((key, []))
        if moved:
            self._replace_all(moved)
        if self.waiting and not self.retry_scheduled:
            self._schedule_retry()

    # -- frames from the nodes --------------------------------------------------------------------
    def on_frames(self, conn: SubscriberConnection, frames: list[bytes]) -> None:
        link = self.links.get(conn.addr)
        if link is None or link.conn is not conn:
            return
        reader = self.reader
        subscribers = self.subscribers
        for raw in frames:
            if raw[:1] == b"-":
                self._refused(link, raw)
                continue
            reader.feed(raw)
            frame = reader.gets()
            if not isinstance(frame, list) or len(frame) < 3:
                continue
            verb = frame[0]
            kind = _MESSAGE.get(verb)
            if kind is not None:
                subs = subscribers[kind].get(frame[1])
                if subs:
                    self.stats.pubsub_messages += 1
                    for client in list(subs):
                        client.push(raw)
                continue
            kind = _CONFIRM.get(verb)
            if kind is not None:
                self._confirmed(link, kind, frame[1], True)
                continue
            kind = _DROPPED.get(verb)
            if kind is not None:
                self._confirmed(link, kind, frame[1], False)

    def _confirmed(self, link: Link, kind: int, name: bytes, subscribed: bool) -> None:
        ops = link.ops
        if ops and ops[0][0] == kind and ops[0][1] == name and ops[0][2] == subscribed:
            for callback in ops.popleft()[3]:
                callback()
            if not subscribed and self.home.get((kind, name)) is not link:
                link.carried.pop((kind, name), None)  # (unless subscribed again meanwhile)
            return
        if not subscribed and kind == ps.SHARD:
            # Unasked: the node dropped a shard channel (its slot moved away). Follow it.
            key = (kind, name)
            if self.home.get(key) is link:
                del self.home[key]
                link.carried.pop(key, None)
                self.opener.request_refresh()
                self.waiting.setdefault(key, [])
                self._schedule_retry()

    def _refused(self, link: Link, raw: bytes) -> None:
        """An error for the oldest command (a MOVED for a shard channel, a cluster going
        down): subscribe again later, where the map says then."""
        if not link.ops:
            return
        kind, name, subscribed, waiters = link.ops.popleft()
        key = (kind, name)
        if not subscribed:
            if self.home.get(key) is not link:
                link.carried.pop(key, None)
            return
        log.info("subscribe_refused", node=f"{link.conn.addr[0]}:{link.conn.addr[1]}",
                 error=raw[1:].strip().decode(errors="replace"))
        if self.home.get(key) is link:
            del self.home[key]
            link.carried.pop(key, None)
        self.opener.request_refresh()
        self.waiting.setdefault(key, []).extend(waiters)
        self._schedule_retry()

    # -- Owner ------------------------------------------------------------------------------------
    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        return False  # (no requests: frames go to on_frames)

    def on_connected(self, conn: BackendConnection) -> None:
        pass

    def on_lost(self, conn: BackendConnection, written: list[Request], queued: list[Request],
                exc: BaseException, connect_failed: bool) -> None:
        link = self.links.get(conn.addr)
        if link is None or link.conn is not conn:
            return
        del self.links[conn.addr]
        if self.closing:
            return
        # Clients waiting for a confirmation wait on with the subscription placed again; those
        # waiting on a subscription nobody wants any more are answered now.
        pending: dict[Key, list[Callable[[], None]]] = {}
        for kind, name, subscribed, waiters in link.ops:
            if subscribed and waiters:
                pending.setdefault((kind, name), []).extend(waiters)
        lost = []
        for key in link.carried:
            if self.home.get(key) is link:
                del self.home[key]
                lost.append((key, pending.pop(key, [])))
        for waiters in pending.values():
            for w in waiters:
                w()
        if lost:
            log.warning("subscriptions_lost", node=f"{conn.addr[0]}:{conn.addr[1]}",
                        subscriptions=len(lost))
            self.opener.request_refresh()
            for key, waiters in lost:
                self.waiting.setdefault(key, []).extend(waiters)
            self._schedule_retry()

    def connections(self) -> list[BackendConnection]:
        return [link.conn for link in self.links.values() if link.conn.state != CLOSED]

    def close(self) -> None:
        self.closing = True
        for conn in self.connections():
            conn.close()
        self.links.clear()
