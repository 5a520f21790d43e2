"""RESP3 forms of the replies rproxy computes itself: sans-IO.

A RESP3 client's commands run on backend connections that said ``HELLO 3``, so what a node
answers reaches it unchanged. The replies rproxy *computes* -- the cross-slot reads and writes
it emulates (rproxy/core/emulate_reads.py, emulate_writes.py) and the blocking pops it serves
over several slots (multi_pop.py) -- are worked out from RESP2 replies and come out in RESP2.
``to_resp3`` gives the bytes Redis 7 sends a RESP3 client for the same command, following its
``c->resp > 2`` branches:

* a nil (``$-1``, ``*-1``) is RESP3's null ``_``, at any depth;
* SUNION / SINTER / SDIFF answer a set (``~``);
* a score is a double (``,1.5``, ``,inf``: the same ``%.17g`` text as RESP2's bulk):
  ZUNION / ZINTER / ZDIFF ... WITHSCORES answer ``[member, score]`` pairs, ZMPOP / BZMPOP
  ``[key, [[member, score] ...]]``, BZPOPMIN / BZPOPMAX ``[key, member, score]``;
* LCS ... IDX answers a map (``matches``, ``len``).

Everything else (integers, bulks, arrays of them, errors) is the same in both protocols.
"""

from __future__ import annotations

from rproxy.core.resp import NULL3, bulk, integer, parse_reply

_SETS = frozenset({b"SUNION", b"SINTER", b"SDIFF"})
_ZSETS = frozenset({b"ZUNION", b"ZINTER", b"ZDIFF"})


def to_resp3(argv: list[bytes], raw: bytes) -> bytes:
    """``raw``, the RESP2 reply rproxy computed for ``argv``, as Redis 7 answers a RESP3
    client."""
    if raw[:1] in (b"-", b"+", b":"):  # errors, statuses, integers: the same
        return raw
    value = parse_reply(raw)
    name = argv[0].upper()
    if value is None:
        return NULL3
    if name in _SETS:
        assert isinstance(value, list)
        return b"~%d\r\n%s" % (len(value), b"".join(bulk(m) for m in value))  # type: ignore[arg-type]
    if name in _ZSETS and any(a.upper() == b"WITHSCORES" for a in argv):
        assert isinstance(value, list)
        pairs = [b"*2\r\n" + bulk(value[i]) + _double(value[i + 1])  # type: ignore[arg-type]
                 for i in range(0, len(value), 2)]
        return b"*%d\r\n%s" % (len(pairs), b"".join(pairs))
    if name in (b"ZMPOP", b"BZMPOP"):
        assert isinstance(value, list)
        key, members = value
        inner = [b"*2\r\n" + bulk(m) + _double(s) for m, s in members]  # type: ignore[union-attr]
        return b"*2\r\n" + bulk(key) + b"*%d\r\n%s" % (len(inner), b"".join(inner))  # type: ignore[arg-type]
    if name in (b"BZPOPMIN", b"BZPOPMAX"):
        assert isinstance(value, list)
        return b"*3\r\n" + bulk(value[0]) + bulk(value[1]) + _double(value[2])  # type: ignore[arg-type]
    if name == b"LCS" and isinstance(value, list) and len(value) == 4 \
            and value[0] == b"matches":
        return b"%2\r\n" + b"".join(_encode(v) for v in value)
    return _encode(value)


def _double(score: object) -> bytes:
    assert isinstance(score, bytes)
    return b",%s\r\n" % score


def _encode(value: object) -> bytes:
    """A RESP2 value re-encoded, nils as RESP3's null."""
    if value is None:
        return NULL3
    if isinstance(value, bytes):
        return bulk(value)
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, list):
        return b"*%d\r\n%s" % (len(value), b"".join(_encode(v) for v in value))
    raise TypeError(f"cannot encode {type(value).__name__}")
