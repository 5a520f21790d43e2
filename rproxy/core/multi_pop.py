"""Blocking pops over keys in several slots (``BLPOP a b 0``, BRPOP, BZPOPMIN, BZPOPMAX), as one
Redis serves them: sans-IO.

A Redis Cluster node refuses them (CROSSSLOT). With ``cross_slot_transactions = "emulate"``
rproxy serves them in two steps (rproxy/net/blocking.py ``MultiSlotPop``): first a plain pop of
each key, in the client's order, until one has an element (one Redis answers with the first key
that has data); if none has, a blocking pop of the keys of each slot on a connection of its
own, all at once: the first element to arrive wins, the other blocks are ended (CLIENT
UNBLOCK), and an element one of them popped meanwhile is pushed back where it was taken from,
so nothing is lost or served twice. What cannot be exact: while it is pushed back, another
client may see that list (or sorted set) one element short.
"""

from __future__ import annotations

from dataclasses import dataclass

from rproxy.core import errors
from rproxy.core.resp import bulk, encode_command, parse_reply

NIL = b"*-1\r\n"  # a blocking pop that timed out (RESP2)


@dataclass(frozen=True, slots=True)
class PopPlan:
    name: bytes  # BLPOP, BRPOP, BZPOPMIN, BZPOPMAX
    keys: list[bytes]  # in the client's order
    timeout: bytes  # as the client gave it (the node checks it)

    def pop(self, key: bytes) -> bytes:
        """The plain pop of one key."""
        return encode_command([_POP[self.name], key])

    def popped(self, key: bytes, raw: bytes) -> bytes | None:
        """The blocking command's reply for the plain pop's ``raw`` reply, None if the key
        had nothing (or an error reply, which is the answer)."""
        if raw[:1] == b"-":
            return raw
        value = parse_reply(raw)
        if self.name in (b"BLPOP", b"BRPOP"):
            return None if value is None else b"*2\r\n" + bulk(key) + raw
        if not value:  # ZPOPMIN of an empty key: an empty array
            return None
        assert isinstance(value, list)
        return b"*3\r\n" + bulk(key) + bulk(value[0]) + bulk(value[1])

    def block(self, keys: list[bytes]) -> bytes:
        """The blocking pop of some of the keys (one slot's)."""
        return encode_command([self.name, *keys, self.timeout])

    def push_back(self, raw: bytes) -> bytes | None:
        """The command that puts back the element a blocking pop's reply ``raw`` carries,
        where it was taken from; None if it carries none."""
        value = parse_reply(raw)
        if not isinstance(value, list):
            return None
        if self.name == b"BLPOP":
            return encode_command([b"LPUSH", value[0], value[1]])
        if self.name == b"BRPOP":
            return encode_command([b"RPUSH", value[0], value[1]])
        return encode_command([b"ZADD", value[0], value[2], value[1]])


_POP = {b"BLPOP": b"LPOP", b"BRPOP": b"RPOP", b"BZPOPMIN": b"ZPOPMIN", b"BZPOPMAX": b"ZPOPMAX"}
NAMES = frozenset(_POP)


def plan_pop(argv: list[bytes]) -> PopPlan | bytes:
    """The plan of a blocking pop over several slots, or the error one Redis would give (its
    timeout checks: src/timeout.c getTimeoutFromObjectOrReply)."""
    name = argv[0].upper()
    timeout = argv[-1]
    try:
        seconds = float(timeout)
    except ValueError:
        return errors.error_reply(b"ERR timeout is not a float or out of range")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return errors.error_reply(b"ERR timeout is not a float or out of range")
    if seconds < 0:
        return errors.error_reply(b"ERR timeout is negative")
    return PopPlan(name, argv[1:-1], timeout)
