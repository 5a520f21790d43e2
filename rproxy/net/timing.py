"""Timing one sampled request: the latency histograms' split into proxy and backend time.

The session samples one request per read (``route_batch``: at every ``KEY_EVERY``-th hot-spot
sample of a slot, the same branch that counts a hot key) and makes it a ``Trace``'s part: the
request's parent is the trace, so the backend reader hands its reply to ``child_done`` -- the
data path pays nothing for requests that are not sampled. The reactor stamps the trace when it
flushes the backends (``sent``) and asks it, after each flush once its reply is in, whether the
reply has left for the client (``written``: the session's count of replies written has passed
the request's place, ``seq``); ``read`` is when the reactor started handling the read that
brought it.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from rproxy.core.request import INDEX, OWNER, PARENT, REPLY, Request
from rproxy.core.slowlog import Latency

if TYPE_CHECKING:
    from rproxy.net.reactor import Reactor


class Trace:
    __slots__ = ("req", "seq", "read", "sent", "back", "reactor", "latency")
    raw = False  # a plain part for the shared pool: redirected and resent as any request

    def __init__(self, req: Request, seq: int, read: float, reactor: Reactor,
                 latency: Latency) -> None:
        self.req = req
        self.seq = seq
        self.read = read
        self.sent = read
        self.back = read
        self.reactor = reactor
        self.latency = latency
        req[PARENT] = self
        req[INDEX] = 0
        reactor.to_send.append(self)

    def child_done(self, index: int, raw: bytes) -> None:
        """Its reply (``BackendConnection.on_data``, or a settled error): the request is a
        plain one again."""
        self.back = perf_counter()
        req = self.req
        req[PARENT] = None
        req[REPLY] = raw
        owner: Any = req[OWNER]
        if owner is not None and not owner.dirty:
            owner.wake()
        self.reactor.to_write.append(self)

    def written(self, now: float) -> bool:
        """False while its reply still waits in the client's queue (behind a slower one)."""
        owner: Any = self.req[OWNER]
        if owner is None or owner.closed:
            return True
        if owner.done < self.seq:
            return False
        self.latency.observe(now - self.read, self.back - self.sent)
        return True
