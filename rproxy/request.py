"""Pending requests: the unit the data path moves around.

A ``Request`` sits in its client's in-order reply queue and in one backend connection's FIFO.
When its reply arrives the backend reader sets ``reply`` and marks the client dirty; the client
then sends its completed prefix. A ``FanOut`` is a client-visible request made of child requests
on several backends; its merge function runs once the last child reports back by index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Request:
    # ``since`` (when it first had to wait for a retry) is set only on that rare path. Every
    # attribute set here costs on every command: ``parent`` and ``index`` are class defaults,
    # set only on a fan-out's children (``Child``).
    __slots__ = ("owner", "data", "reply", "slot", "hops", "readonly", "since")
    parent: FanOut | None = None
    index = 0

    def __init__(self, owner: Any, data: bytes, slot: int = -1, readonly: bool = False) -> None:
        self.owner = owner  # the ClientSession (None for a child or an internal request)
        self.data = data  # encoded command, as sent to the backend
        self.reply: bytes | None = None
        self.slot = slot
        self.hops = 0  # redirects and retries so far
        self.readonly = readonly


class Child(Request):
    """One part of a ``FanOut``: its reply goes to the parent, at ``index``."""

    __slots__ = ("parent", "index")

    def __init__(self, parent: FanOut, index: int, data: bytes, slot: int, readonly: bool) -> None:
        # Every attribute set here, not through super().__init__: a split MSET of 10 keys
        # makes 10 of these, and the extra call was a tenth of their cost.
        self.owner = None
        self.data = data
        self.reply = None
        self.slot = slot
        self.hops = 0
        self.readonly = readonly
        self.parent = parent
        self.index = index


class FanOut(Request):
    __slots__ = ("parts", "pending", "merge")

    def __init__(self, owner: Any, n: int, merge: Callable[[list[bytes]], bytes]) -> None:
        super().__init__(owner, b"")
        self.parts: list[bytes] = [b""] * n
        self.pending = n
        self.merge = merge

    def child(self, index: int, data: bytes, slot: int = -1, readonly: bool = False) -> Request:
        return Child(self, index, data, slot, readonly)

    def child_done(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.pending -= 1
        if self.pending == 0:
            try:
                self.reply = self.merge(self.parts)
            except Exception as exc:  # a merge must never take the proxy down
                self.reply = b"-ERR rproxy: could not merge replies: " + type(exc).__name__.encode() + b"\r\n"
            finish(self)


def complete(req: Request, raw: bytes) -> None:
    """Give ``req`` its reply (also for errors made by the proxy)."""
    parent = req.parent
    if parent is not None:
        parent.child_done(req.index, raw)
        return
    req.reply = raw
    finish(req)


def finish(req: Request) -> None:
    owner = req.owner
    if owner is not None and not owner.dirty:
        owner.dirty = True
        owner.reactor.dirty_clients.append(owner)


class _Discard(Request):
    """FIFO placeholder whose reply is dropped (the ``+OK`` of an ``ASKING``)."""


DISCARD = _Discard(None, b"")
