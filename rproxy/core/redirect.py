"""When may the proxy send a command again? One pure decision, sans-IO.

Three situations, three rules (the README's "Failover and resharding" section quotes them):

1. The command was never written to a socket (queued behind a connection that failed or never
   came up): it is always re-routed. Nothing ran.
2. The node answered with an error that proves the command did not run: it is retried
   (``topology.parse_redirect`` names them). ``MOVED``, ``ASK`` and ``TRYAGAIN`` count against
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
