"""Pub/Sub as one Redis gives it (RESP2): a client's subscriptions, the replies that confirm
them, the subscribed-mode rule, and Redis's glob patterns -- sans-IO.

A client's subscriptions live in its ``ClientState`` (``subs``); the commands that change them
(src/pubsub.c: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UN- forms) are pure functions here
that update them and build the reply frames: ``*3 subscribe <channel> <count>`` per name, where
the count is the client's channels plus patterns (shard channels alone for the S- forms), and a
``nil`` channel when a mass unsubscribe had nothing to drop. What changed for the proxy's shared
subscriptions -- the names this client is the first to want, or the last to drop -- is the
session's business (rproxy/net/pubsub.py).

While a client has any subscription it is in the subscribed mode: only (P|S)SUBSCRIBE,
(P|S)UNSUBSCRIBE, PING, QUIT and RESET run, PING answers ``*2 pong <msg>``, anything else gets
Redis's error naming the command (src/server.c processCommand, after the existence and arity
checks).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Protocol

from rproxy.core import errors, resp

CHANNEL, PATTERN, SHARD = 0, 1, 2  # the three kinds of subscription
PUBLISH_SLOT = 0  # the proxy's channels and patterns live on this slot's master, and PUBLISH
# goes there (rproxy/net/pubsub.py says why)

SUBSCRIBE_COMMANDS: dict[bytes, tuple[int, bool]] = {  # name -> (kind, subscribe?)
    b"SUBSCRIBE": (CHANNEL, True), b"UNSUBSCRIBE": (CHANNEL, False),
    b"PSUBSCRIBE": (PATTERN, True), b"PUNSUBSCRIBE": (PATTERN, False),
    b"SSUBSCRIBE": (SHARD, True), b"SUNSUBSCRIBE": (SHARD, False),
}
# What the subscribed mode allows (the proxy's own names for them).
ALLOWED_SUBSCRIBED = frozenset(SUBSCRIBE_COMMANDS) | {b"PING", b"QUIT", b"RESET"}

# The backend's command and confirmation per kind, and the message type it delivers.
SUBSCRIBE_VERB = (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE")
UNSUBSCRIBE_VERB = (b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE")
_SUBSCRIBED = (b"$9\r\nsubscribe\r\n", b"$10\r\npsubscribe\r\n", b"$10\r\nssubscribe\r\n")
_UNSUBSCRIBED = (b"$11\r\nunsubscribe\r\n", b"$12\r\npunsubscribe\r\n",
                 b"$12\r\nsunsubscribe\r\n")


class PubSubView(Protocol):
    """What the proxy's own PUBLISH and PUBSUB read of its shared subscriptions (the hub,
    rproxy/net/pubsub.py): the nodes count the proxy's subscription as one receiver, a single
    Redis would count each of its clients."""

    def count(self, kind: int, name: bytes) -> int: ...  # proxy clients subscribed to it
    def names(self, kind: int) -> list[bytes]: ...  # with at least one proxy client
    def placed(self, kind: int) -> int: ...  # the proxy's subscriptions the nodes hold
    def is_placed(self, kind: int, name: bytes) -> bool: ...
    def receivers(self, channel: bytes, shard: bool = False) -> int: ...  # proxy clients reached
    def carried_at(self, slot: int, channel: bytes, shard: bool = False) -> int:
        """The proxy's own subscriptions that a PUBLISH on ``slot``'s master reaches."""
        ...


class Subscriptions:
    """One client's subscriptions, in the order it made them (the mass unsubscribe answers in
    that order; Redis answers channels in its hash table's order, which no client relies on)."""

    __slots__ = ("by_kind",)

    def __init__(self) -> None:
        self.by_kind: tuple[dict[bytes, None], dict[bytes, None], dict[bytes, None]] = (
            {}, {}, {})

    def count(self, kind: int) -> int:
        """What the confirmation frames count: channels + patterns, or shard channels."""
        if kind == SHARD:
            return len(self.by_kind[SHARD])
        return len(self.by_kind[CHANNEL]) + len(self.by_kind[PATTERN])

    @property
    def total(self) -> int:
        return sum(len(d) for d in self.by_kind)


def subscribe(subs: Subscriptions, kind: int, names: list[bytes],
              protocol: int = 2) -> tuple[bytes, list[bytes]]:
    """(P|S)SUBSCRIBE: the reply frames (RESP3: pushes), and the names that are new for this
    client."""
    have = subs.by_kind[kind]
    added: list[bytes] = []
    out = []
    for name in names:
        if name not in have:
            have[name] = None
            added.append(name)
        out.append(b"%s3\r\n%s$%d\r\n%s\r\n:%d\r\n"
                   % (_HEAD[protocol], _SUBSCRIBED[kind], len(name), name, subs.count(kind)))
    return b"".join(out), added


def unsubscribe(subs: Subscriptions, kind: int, names: list[bytes],
                protocol: int = 2) -> tuple[bytes, list[bytes]]:
    """(P|S)UNSUBSCRIBE: the reply frames, and the names this client dropped. No names: all
    of that kind; none to drop still answers one frame with a nil name."""
    have = subs.by_kind[kind]
    if not names:
        names = list(have)
        if not names:
            return (b"%s3\r\n%s%s:%d\r\n" % (_HEAD[protocol], _UNSUBSCRIBED[kind],
                                                resp.null(protocol), subs.count(kind)), [])
    dropped: list[bytes] = []
    out = []
    for name in names:
        if name in have:
            del have[name]
            dropped.append(name)
        out.append(b"%s3\r\n%s$%d\r\n%s\r\n:%d\r\n"
                   % (_HEAD[protocol], _UNSUBSCRIBED[kind], len(name), name, subs.count(kind)))
    return b"".join(out), dropped


_HEAD = {2: b"*", 3: b">"}  # a pub/sub frame's type: an array in RESP2, a push in RESP3


def as_push(frame: bytes) -> bytes:
    """A node's message frame (RESP2: ``*3 message <channel> <payload>``, ``*4 pmessage``
    ...) as RESP3 sends it: a push (its elements are bulks, never nil)."""
    return b">" + frame[1:]


def subscribed_mode_error(name: bytes) -> bytes:
    """The refusal of a command other than the allowed ones in the subscribed mode; ``name``
    is the command's full name (``GET``, ``CONFIG|GET``), which Redis prints in lower case."""
    return errors.error_reply(
        b"ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
        b"are allowed in this context" % name.lower())


def subscribed_pong(argv: list[bytes]) -> bytes:
    """PING in the subscribed mode (RESP2): ``*2 pong ""`` or ``*2 pong <message>``."""
    msg = argv[1] if len(argv) > 1 else b""
    return b"*2\r\n$4\r\npong\r\n$%d\r\n%s\r\n" % (len(msg), msg)


# -- Redis's glob patterns (src/util.c stringmatchlen): *, ?, [...] with ^ and ranges, \ -------
@lru_cache(maxsize=4096)
def _compile(pattern: bytes) -> re.Pattern[bytes]:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        elif c == b"[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out) + b"\\Z", re.DOTALL)


def _char_class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """``[...]`` from ``i`` (past the bracket): the index after it and a regex class. As in
    Redis, ``^`` negates, ``a-z`` is a range in either order, ``\\`` escapes, and a class
    left open runs to the end of the pattern."""
    n = len(pattern)
    negate = i < n and pattern[i:i + 1] == b"^"
    if negate:
        i += 1
    items: list[bytes] = []
    while i < n and pattern[i:i + 1] != b"]":
        c = pattern[i]
        if c == 0x5C and i + 1 < n:  # backslash
            i += 1
            items.append(re.escape(pattern[i:i + 1]))
        elif i + 2 < n and pattern[i + 1:i + 2] == b"-" and pattern[i + 2:i + 3] != b"]":
            lo, hi = sorted((c, pattern[i + 2]))
            items.append(re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi])))
            i += 2
        else:
            items.append(re.escape(pattern[i:i + 1]))
        i += 1
    body = b"".join(items)
    if not body:
        return i + 1, b"[^\\s\\S]" if not negate else b"[\\s\\S]"
    return i + 1, b"[" + (b"^" if negate else b"") + body + b"]"


def matches(pattern: bytes, name: bytes) -> bool:
    """Does ``name`` match the glob ``pattern`` as Redis matches it?"""
    return _compile(pattern).match(name) is not None
