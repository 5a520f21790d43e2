"""Dedicated backend connections: leased to one client while it needs a connection's state.

A client that WATCHes keys needs the node to remember the watch on *its* connection until EXEC,
so it gets a connection of its own to the master of the watched slot: a lease. The lease pool
keeps, per node, the connections leased now and the idle ones ready for the next client, at
most ``cluster.max_leases_per_node`` in use per node (past it the client gets
``LEASES_EXHAUSTED``; it is not made to wait). A lease comes back clean -- its watches dropped by
EXEC, or by an ``UNWATCH`` the pool sends -- and is reused; a lost one is closed.

The pool is the owner (rproxy/net/backend.py) of every leased connection. Ordinary
requests on it are settled as on a shared connection (the shared pool's rules: redirects
followed, idempotent ones resent); a transaction's parts are raw (rproxy/net/transaction.py);
what is lost with the connection is the holder's watch, which it is told (``Holder``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from rproxy.core import errors
from rproxy.core.request import DISCARD, FanOut, Request
from rproxy.core.resp import encode_command
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.net.backend import CLOSED, BackendConnection
from rproxy.net.pool import SharedPool

UNWATCH = encode_command([b"UNWATCH"])
CLIENT_ID = encode_command([b"CLIENT", b"ID"])


class Holder(Protocol):
    def on_lease_lost(self, conn: BackendConnection) -> None:
        """The leased connection ``conn`` is gone, and the watches on it."""
        ...


class Opener(Protocol):
    def open_connection(self, addr: Addr, owner: LeasePool) -> BackendConnection: ...


class LeasePool:
    """Implements ``rproxy.net.backend.Owner`` for the leased connections."""

    def __init__(self, opener: Opener, shared: SharedPool, stats: Stats,
                 max_per_node: int) -> None:
        self.opener = opener
        self.shared = shared
        self.holders: dict[BackendConnection, Holder] = {}
        # Each leased connection's own id on its node (CLIENT ID, asked when it is opened):
        # CLIENT UNBLOCK of a proxy client names the connection it is blocked on.
        self.backend_ids: dict[BackendConnection, int] = {}
        self.stats = stats
        self.max_per_node = max_per_node
        self.in_use: dict[Addr, int] = {}
        self.idle: dict[Addr, list[BackendConnection]] = {}
        self.closing = False

    def acquire(self, addr: Addr, holder: Holder) -> BackendConnection | None:
        """A connection to ``addr`` for ``holder`` alone, or None at the limit."""
        if self.in_use.get(addr, 0) >= self.max_per_node:
            self.stats.leases_refused += 1
            return None
        idle = self.idle.get(addr)
        conn = None
        while idle and conn is None:
            candidate = idle.pop()
            if candidate.state != CLOSED:
                conn = candidate
        if conn is None:
            conn = self.opener.open_connection(addr, self)
            self._ask_id(conn)
        self.in_use[addr] = self.in_use.get(addr, 0) + 1
        self.holders[conn] = holder
        return conn

    def release(self, conn: BackendConnection, unwatch: bool, discard: bool = False) -> None:
        """``conn`` comes back: after ``UNWATCH`` (sent here when ``unwatch``) it is clean and
        waits for the next client; a closed one is dropped, and so is one whose state is not
        known (``discard``: a client left while blocked on it -- closing the connection ends
        the block on the node)."""
        if self.holders.pop(conn, None) is None:
            return  # already lost (and counted out then)
        addr = conn.addr
        self.in_use[addr] -= 1
        conn.blocking = False
        if conn.state == CLOSED or self.closing or discard:
            conn.close()
            return
        if unwatch:
            conn.send(DISCARD, UNWATCH)
        self.idle.setdefault(addr, []).append(conn)

    def _ask_id(self, conn: BackendConnection) -> None:
        def remember(parts: list[bytes]) -> bytes:
            if parts[0][:1] == b":":
                self.backend_ids[conn] = int(parts[0][1:-2])
            return b""

        ask = FanOut(None, 1, remember)
        conn.send(ask.child(0, CLIENT_ID), CLIENT_ID)

    def backend_id(self, conn: BackendConnection) -> int | None:
        return self.backend_ids.get(conn)

    # -- Owner ------------------------------------------------------------------------------------
    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        return self.shared.on_error_reply(conn, req, raw)  # raw parts are delivered as is

    def on_connected(self, conn: BackendConnection) -> None:
        pass

    def on_lost(self, conn: BackendConnection, written: list[Request], queued: list[Request],
                exc: BaseException, connect_failed: bool) -> None:
        self.backend_ids.pop(conn, None)
        holder = self.holders.pop(conn, None)
        if holder is not None:
            self.in_use[conn.addr] -= 1
            holder.on_lease_lost(conn)
        self.shared.requeue(written, queued, exc)

    def connections(self) -> list[BackendConnection]:
        out = [c for c in self.holders if c.state != CLOSED]
        out.extend(c for conns in self.idle.values() for c in conns if c.state != CLOSED)
        return out

    def on_own_connections(self, owner: object, command: bytes, addrs: list[Addr],
                           merge: Callable[[list[bytes]], bytes]) -> FanOut:
        """Send ``command`` to each node of ``addrs``, each on a connection of its own (not
        behind anything queued on the shared ones: SCRIPT KILL reaches a node busy with a
        script at once); ``merge`` builds the reply of the request returned."""
        fan = _LeasedFanOut(owner, len(addrs), merge, self)
        for i, addr in enumerate(addrs):
            conn = self.acquire(addr, fan)
            if conn is None:
                fan.child_done(i, errors.LEASES_EXHAUSTED)
                continue
            fan.conns[i] = conn
            conn.send(fan.child(i, command), command)
        return fan

    @property
    def leased(self) -> int:
        return sum(self.in_use.values())

    def close(self) -> None:
        self.closing = True
        for conn in self.connections():
            conn.close()
        self.idle.clear()


class _LeasedFanOut(FanOut):
    """A fan-out whose parts each ride a lease, given back when its reply is in."""

    __slots__ = ("conns", "pool")

    def __init__(self, owner: object, n: int, merge: Callable[[list[bytes]], bytes],
                 pool: LeasePool) -> None:
        super().__init__(owner, n, merge)
        self.conns: list[BackendConnection | None] = [None] * n
        self.pool = pool

    def child_done(self, index: int, raw: bytes) -> None:
        conn, self.conns[index] = self.conns[index], None
        if conn is not None:
            self.pool.release(conn, unwatch=False)
        super().child_done(index, raw)

    def on_lease_lost(self, conn: BackendConnection) -> None:
        """``Holder``: the part's reply comes by the shared pool's rules (resent or failed)."""
