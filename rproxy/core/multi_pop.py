"""Blocking pops over keys in several slots, as one Redis serves them: sans-IO.

``BLPOP a b 0``, BRPOP, BZPOPMIN, BZPOPMAX, BLMPOP and BZMPOP over keys in several slots, and
BLMOVE / BRPOPLPUSH whose source and destination are in two slots. A Redis Cluster node refuses
them (CROSSSLOT). With ``cross_slot_transactions = "emulate"`` rproxy serves them in two steps
(rproxy/net/blocking.py ``MultiSlotPop``): first a plain pop of each key, in the client's
order, until one has an element (one Redis answers with the first key that has data); if none
has, a blocking pop of the keys of each slot on a connection of its own, all at once: the first
element to arrive wins, the other blocks are ended (CLIENT UNBLOCK), and an element one of them
popped meanwhile is pushed back where it was taken from, so nothing is lost or served twice.
BLMOVE pops its source that way (one key: one block) and then pushes the element to its
destination; if that push fails (the destination is not a list) the element is pushed back
to the source's end it came from, and the client gets the push's error.

What cannot be exact: while an element is pushed back, another client may see that list (or
sorted set) one element short; a BLMOVE's element is in neither list between its pop and its
push, and a BLMOVE to a destination of another type pops and pushes back where Redis would
leave the source untouched (the same data afterwards, the same WRONGTYPE reply).
"""

from __future__ import annotations

from dataclasses import dataclass

from rproxy.core import errors
from rproxy.core.emulate_writes import list_end, parse_mpop
from rproxy.core.resp import bulk, encode_command, parse_reply

NIL = b"*-1\r\n"  # a blocking pop that timed out (RESP2)


@dataclass(frozen=True, slots=True)
class PopPlan:
    name: bytes  # the command, upper case
    keys: list[bytes]  # the keys to pop from, in the client's order
    timeout: bytes  # as the client gave it (the node checks it)
    where: bytes = b""  # BLMPOP / BZMPOP: left|right / min|max; BLMOVE: the source's end
    count: bytes = b""  # BLMPOP / BZMPOP: COUNT's argument, if given
    dst: bytes = b""  # BLMOVE: the destination
    to: bytes = b""  # BLMOVE: the destination's end (LEFT or RIGHT)

    def pop(self, key: bytes) -> bytes:
        """The plain pop of one key."""
        name = self.name
        if name in _MPOP:
            return encode_command([_MPOP[name], b"1", key, self.where, *self._count()])
        if name in _MOVE:
            return encode_command([b"LPOP" if self.where == b"left" else b"RPOP", key])
        return encode_command([_POP[name], key])

    def popped(self, key: bytes, raw: bytes) -> bytes | None:
        """What the plain pop's ``raw`` reply gives (an error reply is the answer): the
        client's reply (for BLMOVE, the element, still to be pushed: ``then``), or None if the
        key had nothing."""
        if raw[:1] == b"-":
            return raw
        name = self.name
        if name in _MPOP:
            return None if raw == NIL else raw  # LMPOP's reply is BLMPOP's
        if name in _MOVE:
            return None if raw == b"$-1\r\n" else raw
        value = parse_reply(raw)
        if name in (b"BLPOP", b"BRPOP"):
            return None if value is None else b"*2\r\n" + bulk(key) + raw
        if not value:  # ZPOPMIN of an empty key: an empty array
            return None
        assert isinstance(value, list)
        return b"*3\r\n" + bulk(key) + bulk(value[0]) + bulk(value[1])

    def block(self, keys: list[bytes]) -> bytes:
        """The blocking pop of some of the keys (one slot's)."""
        name = self.name
        if name in _MPOP:
            return encode_command([name, self.timeout, b"%d" % len(keys), *keys, self.where,
                                   *self._count()])
        if name in _MOVE:
            return encode_command([b"BLPOP" if self.where == b"left" else b"BRPOP", *keys,
                                   self.timeout])
        return encode_command([name, *keys, self.timeout])

    def blocked(self, raw: bytes) -> bytes:
        """A block's reply that carries an element, as ``popped`` gives it."""
        if self.name in _MOVE:  # BLPOP's [key, element]: the element
            value = parse_reply(raw)
            assert isinstance(value, list)
            return bulk(value[1])
        return raw

    def then(self, got: bytes) -> bytes | None:
        """The command that completes a pop that got ``got`` (BLMOVE: push the element to the
        destination), or None."""
        if self.name not in _MOVE:
            return None
        element = parse_reply(got)
        assert isinstance(element, bytes)
        return encode_command([b"LPUSH" if self.to == b"left" else b"RPUSH", self.dst, element])

    def undo(self, got: bytes) -> bytes:
        """BLMOVE whose push failed: put the element back at the source's end it came from."""
        element = parse_reply(got)
        assert isinstance(element, bytes)
        return encode_command([b"LPUSH" if self.where == b"left" else b"RPUSH", self.keys[0],
                               element])

    def push_back(self, raw: bytes) -> bytes | None:
        """The command that puts back what a blocking pop's reply ``raw`` carries, where it
        was taken from; None if it carries nothing."""
        value = parse_reply(raw)
        if not isinstance(value, list):
            return None
        name = self.name
        key = value[0]
        if name == b"BLMPOP":  # [key, [e1, e2 ...]] from one end: back in reverse order
            assert isinstance(value[1], list)
            push = b"LPUSH" if self.where == b"left" else b"RPUSH"
            return encode_command([push, key, *reversed(value[1])])
        if name == b"BZMPOP":  # [key, [[member, score] ...]]
            assert isinstance(value[1], list)
            return encode_command([b"ZADD", key, *[x for m, s in value[1] for x in (s, m)]])
        if name == b"BLPOP" or (name in _MOVE and self.where == b"left"):
            return encode_command([b"LPUSH", key, value[1]])
        if name == b"BRPOP" or name in _MOVE:
            return encode_command([b"RPUSH", key, value[1]])
        return encode_command([b"ZADD", key, value[2], value[1]])

    def _count(self) -> list[bytes]:
        return [b"COUNT", self.count] if self.count else []


_POP = {b"BLPOP": b"LPOP", b"BRPOP": b"RPOP", b"BZPOPMIN": b"ZPOPMIN", b"BZPOPMAX": b"ZPOPMAX"}
_MPOP = {b"BLMPOP": b"LMPOP", b"BZMPOP": b"ZMPOP"}
_MOVE = (b"BLMOVE", b"BRPOPLPUSH")
NAMES = frozenset([*_POP, *_MPOP, *_MOVE])

_SIDE = {True: b"left", False: b"right"}
_BAD_TIMEOUT = errors.error_reply(b"ERR timeout is not a float or out of range")


def _timeout_error(timeout: bytes) -> bytes | None:
    """Redis's timeout checks (src/timeout.c getTimeoutFromObjectOrReply)."""
    try:
        seconds = float(timeout)
    except ValueError:
        return _BAD_TIMEOUT
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return _BAD_TIMEOUT
    if seconds < 0:
        return errors.error_reply(b"ERR timeout is negative")
    return None


def plan_pop(argv: list[bytes]) -> PopPlan | bytes:
    """The plan of a blocking pop over several slots, or the error one Redis would give, in
    its order: BLMOVE's ends, then the timeout, then BLMPOP's and BZMPOP's other arguments."""
    name = argv[0].upper()
    if name in _MOVE:
        if name == b"BLMOVE":
            wherefrom, whereto = list_end(argv[3]), list_end(argv[4])
            if wherefrom is None or whereto is None:
                return errors.SYNTAX
        else:
            wherefrom, whereto = False, True  # RPOPLPUSH: from the tail to the head
        timeout = argv[-1]
        error = _timeout_error(timeout)
        if error is not None:
            return error
        return PopPlan(name, [argv[1]], timeout, _SIDE[wherefrom], dst=argv[2],
                       to=_SIDE[whereto])
    if name in _MPOP:
        timeout = argv[1]
        error = _timeout_error(timeout)
        if error is not None:
            return error
        parsed = parse_mpop(_MPOP[name], argv[2:])
        if isinstance(parsed, bytes):
            return parsed
        keys, where, count = parsed
        return PopPlan(name, keys, timeout, where, b"" if count is None else b"%d" % count)
    timeout = argv[-1]
    error = _timeout_error(timeout)
    return error if error is not None else PopPlan(name, argv[1:-1], timeout)
