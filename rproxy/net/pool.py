"""The shared pool: the owner of the multiplexed backend connections every client shares.

It acts on what ``rproxy.core.redirect`` decides: it follows ``MOVED`` and ``ASK``, sends a
request again after ``TRYAGAIN`` or while a shard has no master (the retry queue), and settles
the requests of a lost connection by the retry rules -- never written: routed again; written
and idempotent: sent again; anything else: ``OUTCOME_UNKNOWN``. Which node is which, and the
connections themselves, belong to the cluster manager (``Nodes``); the tables it routes by
belong to the ``Router``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import structlog
import trio

from rproxy.core import errors
from rproxy.core.config import Config
from rproxy.core.redirect import (
    FAIL,
    FOLLOW_ASK,
    FOLLOW_MOVED,
    HOLD,
    TO_MASTER,
    TRY_AGAIN,
    decide,
    resend_after_loss,
)
from rproxy.core.request import DATA, DISCARD, HOPS, READONLY, SINCE, SLOT, Request, complete
from rproxy.core.resp import decode_command, encode_command
from rproxy.core.scripts import ScriptCache
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.net.backend import BackendConnection
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router

log = structlog.get_logger("rproxy.net.pool")

ASKING = encode_command([b"ASKING"])
_MISSING = (b"-NOSCRIPT", b"-ERR Function not found")


class Nodes(Protocol):
    """What the pool needs from the cluster manager."""

    def conn_for_addr(self, addr: Addr) -> BackendConnection: ...
    def request_refresh(self) -> None: ...
    def connection_up(self, conn: BackendConnection) -> None: ...
    def connection_lost(self, conn: BackendConnection, connect_failed: bool) -> None: ...


def command_of(req: Request) -> bytes:
    """The client's command a request is (or is a part of), encoded; b"" if none."""
    parent = req[6]  # PARENT
    if isinstance(parent, list) and parent[2]:  # a fan-out's DATA: the client's command
        return parent[2]  # type: ignore[no-any-return]
    return req[DATA]  # type: ignore[no-any-return]


def client_of(req: Request) -> int | None:
    """The id of the client a request (or the request it is a part of) answers, for logs."""
    while req[1] is None and isinstance(req[6], list):  # OWNER, PARENT (a fan-out)
        req = req[6]
    return getattr(req[1], "id", None)


class SharedPool:
    """Implements ``rproxy.net.backend.Owner`` for the shared connections."""

    def __init__(self, config: Config, reactor: Reactor, router: Router, stats: Stats,
                 nodes: Nodes) -> None:
        self.reactor = reactor
        self.router = router
        self.stats = stats
        self.nodes = nodes
        self.max_redirects = config.cluster.max_redirects
        self.failover_hold_s = config.cluster.failover_hold_s
        self.retry_backoff_s = config.cluster.retry_backoff_s
        self.scripts = ScriptCache(config.limits.max_remembered_scripts)
        self._retries: deque[Request] = deque()
        self._retry_wakeup = trio.Event()

    # -- Owner ------------------------------------------------------------------------------------
    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        parent = req[6]  # PARENT
        if parent is not None and parent.raw:  # a transaction's part: its block decides
            return False
        decision = decide(raw, conn.addr[0], req[HOPS], self.max_redirects, conn.replica,
                          req[SLOT])
        kind = decision.kind
        if kind == FOLLOW_MOVED:
            req[HOPS] += 1
            assert decision.addr is not None
            target = self.nodes.conn_for_addr(decision.addr)
            self.router.point(decision.slot, target)
            self.nodes.request_refresh()
            self.stats.moved_redirects += 1
            target.send(req, req[DATA])
        elif kind == FOLLOW_ASK:
            req[HOPS] += 1
            assert decision.addr is not None
            target = self.nodes.conn_for_addr(decision.addr)
            self.stats.ask_redirects += 1
            target.send(DISCARD, ASKING)
            target.send(req, req[DATA])
        elif kind == TRY_AGAIN:
            req[HOPS] += 1
            self.stats.tryagain_retries += 1
            self.retry_later(req)
        elif kind == HOLD:
            self.nodes.request_refresh()
            self.retry_later(req)
        elif kind == TO_MASTER:  # a replica that cannot serve (MASTERDOWN, LOADING)
            master = self.router.slot_conn[req[SLOT]]
            if master is not None:
                master.send(req, req[DATA])
            else:
                self.nodes.request_refresh()
                self.retry_later(req)
        elif kind == FAIL:
            log.warning("too_many_redirects", slot=req[SLOT], client_id=client_of(req))
            complete(req, errors.TOO_MANY_REDIRECTS)
        elif raw.startswith(_MISSING) and req[HOPS] < 2:
            return self._load_missing(conn, req, raw)
        else:  # DELIVER: counted by command and code (each part of a split command counts)
            self.stats.errors.add(self.router.name_of(command_of(req)), raw)
            return False
        return True

    def _load_missing(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        """``NOSCRIPT`` for an EVALSHA, ``Function not found`` for an FCALL: the node lacks
        what the proxy saw loaded (rproxy/core/scripts.py). Load it there, then send the
        command again behind it, once; True if that was done."""
        argv = decode_command(req[DATA])
        name = argv[0].upper() if argv else b""
        loads = []
        if name in (b"EVALSHA", b"EVALSHA_RO") and raw.startswith(b"-NOSCRIPT"):
            body = self.scripts.script(argv[1]) if len(argv) > 1 else None
            if body is not None:
                loads.append(encode_command([b"SCRIPT", b"LOAD", body]))
        elif name in (b"FCALL", b"FCALL_RO") and raw.startswith(b"-ERR Function not found"):
            loads = [encode_command([b"FUNCTION", b"LOAD", b"REPLACE", code])
                     for code in self.scripts.libraries.values()]
        if not loads:
            self.stats.errors.add(self.router.name_of(command_of(req)), raw)
            return False
        log.info("script_reloaded", node=f"{conn.addr[0]}:{conn.addr[1]}",
                 client_id=client_of(req),
                 command=name.decode(errors="replace"))
        req[HOPS] += 1
        for load in loads:
            conn.send(DISCARD, load)
        conn.send(req, req[DATA])
        return True

    def on_connected(self, conn: BackendConnection) -> None:
        self.nodes.connection_up(conn)

    def on_lost(self, conn: BackendConnection, written: list[Request], queued: list[Request],
                exc: BaseException, connect_failed: bool) -> None:
        # The connection is replaced in the tables first, so that what is routed again below
        # waits on the replacement (the failover hold) or goes to the new owner.
        self.nodes.connection_lost(conn, connect_failed)
        self.requeue(written, queued, exc)

    # -- settling and retrying ------------------------------------------------------------------
    def requeue(self, written: list[Request], queued: list[Request], exc: BaseException) -> None:
        """Settle the requests of a connection that failed, in their order (the retry rules,
        rproxy/core/redirect.py). ``written`` went out without a reply: read-only and
        idempotent ones are sent again, others get OUTCOME_UNKNOWN (REQUEST_TIMED_OUT after
        op_timeout_s). ``queued`` never left: they go where the current map says, where they
        wait again if that node is not up either (the failover hold)."""
        limit = self.max_redirects
        stats = self.stats
        route = self.router.route
        for req in written:
            if req is DISCARD:
                continue
            parent = req[6]  # PARENT
            if parent is not None and parent.raw:  # never resent alone: its block decides
                complete(req, errors.REQUEST_TIMED_OUT if isinstance(exc, TimeoutError)
                         else errors.OUTCOME_UNKNOWN)
            elif isinstance(exc, TimeoutError):
                complete(req, errors.REQUEST_TIMED_OUT)
            elif req[HOPS] < limit and resend_after_loss(
                    [] if req[READONLY] else decode_command(req[DATA]), req[READONLY]):
                req[HOPS] += 1
                stats.retried_requests += 1
                route(req)
            else:
                stats.outcome_unknown_errors += 1
                complete(req, errors.OUTCOME_UNKNOWN)
        for req in queued:
            if req is DISCARD:  # an ASKING: its command meets the redirect again
                continue
            parent = req[6]  # PARENT
            if parent is not None and parent.raw:  # its block is sent again whole
                complete(req, errors.NOT_SENT)
            else:
                route(req)

    def retry_later(self, req: Request) -> None:
        """Send ``req`` again shortly; past ``failover_hold_s`` of waiting it fails instead.
        Retries wait in one queue, re-sent together and in arrival order: two requests of one
        client for one key never overtake each other on the way back."""
        now = time.monotonic()
        if len(req) > SINCE:
            since = req[SINCE]
        else:
            req.append(now)
            since = now
        if now - since >= self.failover_hold_s:
            self.stats.held_expired += 1
            complete(req, errors.HOLD_EXPIRED)
            return
        self.stats.retried_requests += 1
        self._retries.append(req)
        if len(self._retries) == 1:
            self._retry_wakeup.set()

    @property
    def waiting(self) -> int:
        """Requests in the retry queue."""
        return len(self._retries)

    async def run_retries(self) -> None:
        """Every pause, re-send the whole retry queue in order. The pause grows with how long
        its oldest request has waited (``retry_backoff_s`` up to 0.5 s): a cluster that is
        down for a while is not hammered, a short TRYAGAIN is retried fast."""
        backoff = self.retry_backoff_s
        while True:
            await self._retry_wakeup.wait()
            self._retry_wakeup = trio.Event()
            if not self._retries:
                continue
            oldest = self._retries[0]
            waited = time.monotonic() - oldest[SINCE] if len(oldest) > SINCE else 0.0
            await trio.sleep(min(max(backoff, waited / 4), 0.5))
            batch, self._retries = self._retries, deque()
            for req in batch:
                self.router.route(req)
            self.reactor.flush()
