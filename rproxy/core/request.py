"""Pending requests: the unit the data path moves around.

A request sits in its client's in-order reply queue and in one backend connection's FIFO.
When its reply arrives the backend reader stores it at ``REPLY`` and marks the client dirty;
the client then sends its completed prefix. A ``FanOut`` is a client-visible request made of
child requests on several backends; its merge function runs once the last child reports back.

A request is a plain list indexed by the constants below, not a class instance: every command
makes one, and a list is ~110 ns cheaper to create and free than an instance with the same
fields (7 % of the proxy's Python time per GET at pipeline 16). The hot paths
(rproxy/net/session.py, rproxy/net/backend.py) index it with the literal numbers, each commented.

    [REPLY, OWNER, DATA, SLOT, READONLY, HOPS, PARENT, INDEX]  (+ SINCE, on a first retry)

Nothing else is allocated per request: a part of a fan-out holds its parent and its index in
two fields rather than one tuple, which was one more object for the garbage collector to
track per part (~8 % slower for a split MSET of 10 keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rproxy.core import errors

REPLY = 0  # the raw reply once it is known, else None
OWNER = 1  # who gets the reply (None: a child, or an internal request): a ReplyOwner
DATA = 2  # the encoded command, as sent to the backend
SLOT = 3  # its hash slot, -1 for a command without keys
READONLY = 4  # may be served by a replica (read_from)
HOPS = 5  # redirects and retries so far
PARENT = 6  # a fan-out part: the FanOut its reply goes to; else None
INDEX = 7  # a fan-out part: its index in the parent's parts
SINCE = 8  # when it first had to wait for a retry: appended then (SharedPool.retry_later)

Request = list  # the type of a request, for annotations (a FanOut is a list subclass)


class ReplyOwner(Protocol):
    """The client a request answers (rproxy/net/session.py). ``wake`` makes it send its
    completed replies at the end of the reactor's batch; ``dirty`` says it is already due to.
    The backend reader inlines ``wake`` on its hot path (rproxy/net/backend.py)."""

    dirty: bool

    def wake(self) -> None: ...


def new_request(owner: Any, data: bytes, slot: int = -1, readonly: bool = False) -> Request:
    return [None, owner, data, slot, readonly, 0, None, 0]


class FanOut(list):  # type: ignore[type-arg]
    """A request whose reply is merged from the replies of its children (``child``)."""

    __slots__ = ("parts", "pending", "merge")
    # Parts of a raw request (a transaction's block, rproxy/net/transaction.py) get their
    # error replies as they are: the shared pool neither redirects nor resends one alone.
    raw = False

    def __init__(self, owner: Any, n: int, merge: Callable[[list[bytes]], bytes]) -> None:
        super().__init__((None, owner, b"", -1, False, 0, None, 0))
        self.parts: list[bytes] = [b""] * n
        self.pending = n
        self.merge = merge

    def child(self, index: int, data: bytes, slot: int = -1, readonly: bool = False) -> Request:
        """Part ``index``: its reply goes to this request, not to a client."""
        return [None, None, data, slot, readonly, 0, self, index]

    def child_done(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.pending -= 1
        if self.pending == 0:
            try:
                self[REPLY] = self.merge(self.parts)
            except Exception as exc:  # a merge must never take the proxy down
                self[REPLY] = errors.merge_failed(exc)
            finish(self)


def settled_elsewhere(parts: list[bytes]) -> bytes:
    """The ``merge`` of a FanOut that settles its reply itself (in ``child_done`` or when a
    request it owns wakes it), never by merging its parts."""
    raise AssertionError("this request settles its reply itself")


def complete(req: Request, raw: bytes) -> None:
    """Give ``req`` its reply (also for errors made by the proxy)."""
    parent = req[PARENT]
    if parent is not None:
        parent.child_done(req[INDEX], raw)
        return
    req[REPLY] = raw
    finish(req)


def finish(req: Request) -> None:
    owner = req[OWNER]
    if owner is not None and not owner.dirty:
        owner.wake()


DISCARD: Request = new_request(None, b"")
"""FIFO placeholder whose reply is dropped (the ``+OK`` of an ``ASKING``); compared by identity."""
