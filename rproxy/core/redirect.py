"""What to do with a request that did not get a proper reply: one pure decision, sans-IO.

Two questions, both answered here and acted on by the owner of the backend connection (the
shared pool resends; a dedicated connection will tell its client instead):

* ``decide``: an error reply came back. Deliver it, follow a ``MOVED`` or an ``ASK``, try again
  shortly (``TRYAGAIN``), hold the request until the shard has a master again, read from the
  master instead of a replica that cannot serve, or fail it (too many redirects).
* ``resend_after_loss``: the connection died after the command was written. May it be sent
  again?

The rules (the README's "Failover and resharding" section quotes them):

1. The command was never written to a socket (queued behind a connection that failed or never
   came up): it is always re-routed. Nothing ran.
2. The node answered with an error that proves the command did not run: it is retried
   (``parse_redirect`` names them). ``MOVED``, ``ASK`` and ``TRYAGAIN`` count against
   ``max_redirects``; ``CLUSTERDOWN``, ``READONLY`` (a write reached a master demoted in a
   failover), ``LOADING`` (a restarted node loading its data) and ``MASTERDOWN`` (a replica cut
   off from its master) are retried with a growing pause until ``failover_hold_s``.
3. The command was written and the connection died before its reply: it may or may not have
   run. It is sent again only if running it twice leaves the same data as running it once:
   read-only commands, and the writes in ``IDEMPOTENT`` (``resend_after_loss``). Anything else
   gets ``-ERR rproxy: ... the command may or may not have run`` and a counter records it.

A resent idempotent write can answer differently from the first run (``DEL`` says 0 if the
first run already deleted the key); the data is the same either way. Writes whose reply is a
conditional success (``SET ... NX``, ``HSETNX``, ``ZADD ... INCR``) or that add, append or
count (``INCR``, ``LPUSH``, ``APPEND``, ``XADD``) are never resent.
"""

from __future__ import annotations

from dataclasses import dataclass

from rproxy.core.topology import Addr

# Idempotent writes: name -> option words (upper case) that make a call NOT idempotent.
IDEMPOTENT: dict[bytes, frozenset[bytes]] = {
    b"SET": frozenset({b"NX", b"XX", b"GET"}),
    b"SETEX": frozenset(),
    b"PSETEX": frozenset(),
    b"MSET": frozenset(),
    b"SETRANGE": frozenset(),
    b"DEL": frozenset(),
    b"UNLINK": frozenset(),
    b"EXPIRE": frozenset({b"NX", b"XX", b"GT", b"LT"}),
    b"PEXPIRE": frozenset({b"NX", b"XX", b"GT", b"LT"}),
    b"EXPIREAT": frozenset({b"NX", b"XX", b"GT", b"LT"}),
    b"PEXPIREAT": frozenset({b"NX", b"XX", b"GT", b"LT"}),
    b"PERSIST": frozenset(),
    b"HSET": frozenset(),
    b"HMSET": frozenset(),
    b"HDEL": frozenset(),
    b"SADD": frozenset(),
    b"SREM": frozenset(),
    b"ZADD": frozenset({b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"}),
    b"ZREM": frozenset(),
    b"ZREMRANGEBYSCORE": frozenset(),
    b"ZREMRANGEBYLEX": frozenset(),
    b"PFADD": frozenset(),
    b"GEOADD": frozenset({b"NX", b"XX", b"CH"}),
    b"LSET": frozenset(),
}


def resend_after_loss(argv: list[bytes], readonly: bool) -> bool:
    """Rule 3: may a command that was written, but not answered before its connection died,
    be sent again?"""
    if readonly:
        return True
    if not argv:
        return False
    unsafe = IDEMPOTENT.get(argv[0].upper())
    if unsafe is None:
        return False
    if unsafe and any(arg.upper() in unsafe for arg in argv[1:] if len(arg) <= 4):
        return False
    return True


# -- error replies that redirect (src/cluster.c clusterRedirectClient) ---------------------------
MOVED = 1
ASK = 2
RETRY = 3  # TRYAGAIN: the command did not run; a few more tries (max_redirects)
WAIT = 4  # WAIT_FOR: the command did not run; try again until failover_hold_s

# Error replies that prove the command did not run, besides MOVED/ASK and TRYAGAIN (a
# multi-key command over a slot being migrated: src/cluster.c getNodeByQuery): the cluster is
# down (a master failed and is not replaced yet); a write reached a master demoted in a
# failover; the node is loading its data; a replica lost its master (src/server.c).
WAIT_FOR = (b"-CLUSTERDOWN", b"-READONLY", b"-LOADING", b"-MASTERDOWN")


@dataclass(frozen=True, slots=True)
class Redirect:
    kind: int
    slot: int = -1
    addr: Addr | None = None


def parse_redirect(reply: bytes, from_host: str) -> Redirect | None:
    """Decide what an error reply means for routing. ``None``: a normal error, deliver it.

    ``-MOVED 3999 127.0.0.1:6381`` / ``-ASK ...`` carry the slot and the target; an empty
    host (``:6381``) means the host of the node that answered. ``-TRYAGAIN`` and the
    ``WAIT_FOR`` errors are proof the command did not run, so it may be sent again."""
    if reply.startswith(b"-MOVED ") or reply.startswith(b"-ASK "):
        try:
            kind_b, slot_b, target = reply[1:].split(b"\r\n", 1)[0].split(b" ")[:3]
            host_b, _, port_b = target.rpartition(b":")
            host = host_b.decode() or from_host
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            return Redirect(MOVED if kind_b == b"MOVED" else ASK, int(slot_b), (host, int(port_b)))
        except ValueError:
            return None
    if reply.startswith(b"-TRYAGAIN"):
        return Redirect(RETRY)
    if reply.startswith(WAIT_FOR):
        return Redirect(WAIT)
    return None


def proves_not_run(reply: bytes) -> bool:
    """An error reply that proves the command did not run (a redirect, TRYAGAIN, or a node
    that cannot serve): ``parse_redirect`` names them."""
    return parse_redirect(reply, "") is not None


# -- the decision ---------------------------------------------------------------------------------
DELIVER = 0  # a normal error reply: the client gets it
FOLLOW_MOVED = MOVED  # the slot has a new owner: send there, point the slot at it, refresh the map
FOLLOW_ASK = ASK  # the slot is migrating: ASKING + the command on the target, map unchanged
TRY_AGAIN = RETRY  # shortly, in order with the other retries
HOLD = WAIT  # until the shard has a reachable master again, at most failover_hold_s
TO_MASTER = 5  # a replica that cannot serve (MASTERDOWN, LOADING): the read goes to the master
FAIL = 6  # more than max_redirects hops: the client gets TOO_MANY_REDIRECTS

_DELIVER = Redirect(DELIVER)
_TO_MASTER = Redirect(TO_MASTER)
_FAIL = Redirect(FAIL)


def decide(reply: bytes, from_host: str, hops: int, max_redirects: int,
           from_replica: bool = False, slot: int = -1) -> Redirect:
    """The one decision for an error ``reply`` to a request that has made ``hops`` redirects
    so far, answered by a node on ``from_host`` (a replica when ``from_replica``). The
    decision's ``kind`` is one of the constants above; ``MOVED`` and ``ASK`` carry the target.
    The caller counts a hop for ``FOLLOW_MOVED``, ``FOLLOW_ASK`` and ``TRY_AGAIN``."""
    redirect = parse_redirect(reply, from_host)
    if redirect is None:
        return _DELIVER
    if redirect.kind == WAIT:  # bounded by failover_hold_s, not by max_redirects
        return _TO_MASTER if from_replica and slot >= 0 else redirect
    if hops + 1 > max_redirects:
        return _FAIL
    return redirect
