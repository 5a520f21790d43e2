"""Cross-slot multi-key WRITE commands, emulated NON-ATOMICALLY as rounds of single-slot commands.

Pure (sans-IO). A Redis Cluster refuses a multi-key command whose keys hash to different slots
(CROSSSLOT). With ``cross_slot_writes = "emulate"`` the proxy runs the commands below as a few
rounds ("batches") of single-key commands instead: read, compute here, write::

    plan = plan_write(argv)
    if plan is None:              -> not a command emulated here
    elif isinstance(plan, bytes): -> the error reply Redis gives for these arguments
    else:                         -> batch = next(plan); then repeatedly
                                     batch = plan.send(raw_replies_of_batch)
                                     until StopIteration: its .value is the client's reply

A batch is a list of ``(routing key, argv)``: the commands run in parallel, each on the master of
its routing key's slot; commands with the same routing key run in the given order on one
connection. The replies are sent back raw (RESP2), in the order of the batch. A plan never
yields an empty batch, and always yields at least one.

Replies are raw RESP2, byte for byte what redis-server 7.0 sends for the original command
(verified differentially against redis-server 7.0.15 in tests/unit/test_emulate_writes.py),
and the data left in the keys is the same (compared type by type, TTLs included).

What is NOT atomic (applies to every command): the rounds run one after the other, on several
masters. Another client can observe (and write) the intermediate states between two rounds; a
concurrent write to a key between the round that reads it and the round that writes can be lost
or overwritten; a failure (connection lost, OOM, failover, proxy timeout) in a later round leaves
the earlier rounds applied. What a plan guarantees: every precondition Redis checks (argument
syntax, WRONGTYPE, missing keys, ...) is checked on the first round, before anything is written,
so a command Redis would refuse writes nothing; any error reply to any round ends the plan and
becomes the client's reply (the first one in batch order). Per command:

============================  =========================================  ======================
command                       rounds                                     not atomic
============================  =========================================  ======================
MSETNX k v [k v ...]          EXISTS k (each) | SET k v (each)           a key created between
                                                                         the rounds is
                                                                         overwritten; a failed
                                                                         SET leaves the others
                                                                         set
RENAME / RENAMENX src dst     DUMP src, PTTL src [, EXISTS dst] |        dst and src both exist
                              RESTORE dst ttl payload [REPLACE] |        between rounds 2 and
                              DEL src                                    3; a write to src
                                                                         after round 1 is lost;
                                                                         the TTL restarts from
                                                                         what PTTL said
                                                                         (longer by the latency
                                                                         of the rounds)
COPY src dst [DB 0] [REPLACE] DUMP src, PTTL src, EXISTS dst |           as RENAME (no DEL)
                              RESTORE dst ttl payload [REPLACE]
SMOVE src dst member          TYPE src, TYPE dst | SREM src member |     the member is in no
                              SADD dst member                            set between rounds 2
                                                                         and 3 (put back into
                                                                         src if SADD fails)
LMOVE src dst wf wt,          TYPE src, TYPE dst | LPOP/RPOP src |       the element is in no
RPOPLPUSH src dst             LPUSH/RPUSH dst element                    list between rounds 2
                                                                         and 3 (pushed back to
                                                                         src's end if the push
                                                                         fails)
SUNIONSTORE / SINTERSTORE /   SMEMBERS k (each) | DEL dst, SADD dst ...  dst is briefly empty
SDIFFSTORE dst key...                                                    or partial (one
                                                                         connection, but
                                                                         several commands)
ZUNIONSTORE / ZINTERSTORE /   ZUNION 1 k WITHSCORES (each; ZDIFFSTORE:   as above
ZDIFFSTORE dst numkeys ...    the keys after the first without scores) |
                              DEL dst, ZADD dst score member ...
                              [, ZADD dst -0 member ...]
BITOP op dst key...           GET k (each) | SET dst result or DEL dst   -
PFMERGE dst key...            GET dst, GET k (each) | SET dst hll KEEPTTL  -
ZRANGESTORE dst src min max   ZRANGE src min max [opts] WITHSCORES       dst briefly empty or
[BYSCORE|BYLEX] [REV]         (BYLEX: without WITHSCORES, then ZMSCORE   partial; BYLEX: a
[LIMIT o c]                   src m... in a 2nd round) | DEL dst,        member removed from
                              ZADD dst score member ...                  src between the two
                                                                         reads is left out
SORT src [BY nosort]          SORT src [opts] (BY nosort: also TYPE src  dst briefly empty or
[LIMIT o c] [ASC|DESC]        and SORT src [opts w/o BY] ALPHA, same     partial
[ALPHA] STORE dst             connection) | DEL dst, RPUSH dst ...
LMPOP numkeys k... LEFT|RIGHT LLEN k / ZCARD k (each) | LPOP/RPOP/       a key emptied by
[COUNT n], ZMPOP numkeys k... ZPOPMIN/ZPOPMAX k n on the first non-empty  someone else between
MIN|MAX [COUNT n]             key (null reply: the next non-empty key,   the rounds is skipped
                              in a further round)                        (the next non-empty
                                                                         key is popped); a key
                                                                         filled in between is
                                                                         not seen
============================  =========================================  ======================

Not emulated (``plan_write`` returns None): GEOSEARCHSTORE and GEORADIUS[BYMEMBER] ... STORE /
STOREDIST. Their options are parsed after the key lookup and interleave with argument checks
(FROMMEMBER/COUNT/STOREDIST positions, argv[0]-dependent messages) that a stripped-down read
would not reproduce exactly, and STOREDIST's distances cannot be read back exactly (WITHDIST
replies ``%.4f``). SORT_RO, BLMPOP, BZMPOP are not writes emulated here either.

(A command whose keys are all the same key, e.g. ``RENAME k k`` or ``LMOVE k k LEFT RIGHT``, is
sent as it is, in one command routed by that key: exact and atomic.)

Redis behaviours mirrored (src/db.c, t_set.c, t_list.c, t_zset.c, t_string.c, bitops.c,
hyperloglog.c, cluster.c of 7.0):

* Static errors, returned by ``plan_write`` itself: the arity (MSETNX also wants key/value
  pairs); COPY's options (``REPLACE``, ``DB n`` with ``n`` an int; an index outside 0..15 is
  ``DB index is out of range``, assuming the default ``databases 16``; any other index is the
  cluster's ``Copying to another database is not allowed in cluster mode``; ``COPY k k`` is
  ``source and destination objects are the same``); LMOVE's LEFT/RIGHT; BITOP's operation and
  NOT's single key; Z*STORE's numkeys. The Z*STORE options (WEIGHTS, AGGREGATE; WITHSCORES is a
  syntax error for a STORE) are parsed after the keys are looked up, as in Redis: the keys are
  read, and a WRONGTYPE key wins over the option error.
* RENAME/RENAMENX: a missing src is ``ERR no such key`` (before RENAMENX looks at dst); dst is
  replaced whatever its type; the TTL of src moves with it (none if src has none, even if dst
  had one). RENAMENX and COPY without REPLACE restore without REPLACE, so a dst created by
  someone else between the rounds is not overwritten (BUSYKEY -> ``:0``).
* COPY: ``:0`` when src is missing or dst exists (without REPLACE); src's TTL is copied.
* SMOVE: a missing src is ``:0`` whatever dst holds; else src, then dst (if it exists) must be
  sets (WRONGTYPE).
* LMOVE/RPOPLPUSH: a missing src is a null bulk whatever dst holds; else src, then dst (if it
  exists) must be lists, checked before popping.
* The set/zset results are computed by ``rproxy.core.emulate_reads`` (reused, not copied: same error
  precedence, same C double arithmetic); an empty result deletes dst, a non-empty one replaces
  it (whatever its type, without TTL). Zset scores are written with ``%.17g`` (``inf``,
  ``-inf``), which parses back to the same double. Long results are written in chunks of
  ``CHUNK`` members (several SADD/ZADD in order on the same connection).
* BITOP: missing keys are empty strings, shorter strings are zero-padded, the result is as long
  as the longest input; an empty result deletes dst, else ``SET`` (removes dst's TTL, as
  BITOP's setKey does). The first non-string key in key order is WRONGTYPE.
* ZRANGESTORE: the option loop is checked here (WITHSCORES is a syntax error with a
  destination; REV, BYSCORE/BYLEX at most once; LIMIT's two integers); the range syntax and
  "LIMIT only with BYSCORE or BYLEX" are checked by the read ZRANGE, like Redis before it looks
  the key up; then WRONGTYPE. A missing src or an empty range deletes dst (``:0``).
* SORT ... STORE: the option loop is checked here, in cluster mode (a BY pattern with ``*``
  and any GET are refused, as cluster nodes do, before the key is looked up); the last STORE
  wins; a SORT without STORE, or storing into its own key, is passed through. A set sorted
  with ``BY nosort`` (no ``*``) and STORE is sorted ALPHA anyway (sortCommandGeneric), lists and
  sorted sets keep their order. Non-numbers without ALPHA: Redis's error, nothing written.
  An empty result deletes dst; the result replaces dst (any type, no TTL).
* LMPOP/ZMPOP: numkeys must be 1.. (its parse error also says ``numkeys should be greater than
  0``), then LEFT|RIGHT (MIN|MAX), then at most one COUNT >= 1. As in mpopGenericCommand the
  keys are looked at in order: missing/empty ones skipped, the first one of another type is
  WRONGTYPE, keys after the first non-empty one are not looked at (neither their type nor a
  failed read of them matters). All empty: a null array. Reply ``[key, [elements]]`` (ZMPOP:
  ``[key, [[member, score], ...]]``, scores as ZPOPMIN replies them, as ZMPOP does).
* PFMERGE: dst is itself an input (as in pfmergeCommand); inputs are validated and merged key
  by key (first bad key decides: WRONGTYPE, the HLL WRONGTYPE text, INVALIDOBJ), with
  ``rproxy.core.emulate_reads``'s register code; dst keeps its TTL (``SET ... KEEPTTL``).

Known differences (none changes what PFCOUNT / SMEMBERS / ZRANGE / LRANGE ... return):

* PFMERGE always writes a DENSE HLL (12304 bytes) with an invalidated cardinality cache, where
  Redis keeps the sparse encoding when every input is sparse. The registers, hence every PFCOUNT
  and every later PFMERGE, are identical; ``GET dst`` shows other bytes and the key uses more
  memory.
* ZRANGESTORE BYSCORE from a skiplist holding -0 scores, with a result over
  zset-max-listpack-entries: Redis builds the BYSCORE result as a listpack first, so the -0
  scores among its first 128 members become 0; the plan keeps -0 (verified: rank and BYLEX
  ranges, and smaller results, match).
* Internal encodings (OBJECT ENCODING: intset/hashtable, listpack/skiplist) of the written keys
  may differ from Redis's; LRU/LFU idle times of RESTOREd keys are not preserved (RESTORE
  without IDLETIME/FREQ).
* Keyspace notifications, MONITOR and the replication stream show the single-key commands, not
  the original command.
* Replies are RESP2 only.
"""

from __future__ import annotations

from collections.abc import Generator

from rproxy.core import errors, resp
from rproxy.core.emulate_reads import (
    HLL_DENSE,
    HLL_REGISTERS,
    ReadPlan,
    _bytewise_add,
    _cstr_lower,
    hll_union,
    parse_double,
    plan_read,
)
from rproxy.core.merge import first_error

Batch = list[tuple[bytes, list[bytes]]]
"""(routing key, argv): run in parallel, each on the master of its routing key's slot; commands
with the same routing key run in the given order on one connection."""

WritePlan = Generator[Batch, list[bytes], bytes]
"""Yields batches; is sent the raw replies of each batch (same order); returns the reply."""

# -- replies and error texts of redis-server 7.0 --------------------------------------------------
ZERO = b":0\r\n"
ONE = b":1\r\n"

CHUNK = 1000
"""Members per SADD/ZADD when writing a computed set or sorted set (several commands, in order,
on the same connection). Must stay above zset-max-listpack-entries (128 by default): ZADD on a
new key picks the encoding from its first command's size, as ZUNIONSTORE picks it from the
result's size, and a listpack stores a -0 score as 0."""

DEFAULT_DATABASES = 16  # the cluster nodes' `databases` (COPY ... DB n range check)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


# -- small helpers --------------------------------------------------------------------------------
def _is_error(reply: bytes) -> bool:
    return reply[:1] == b"-"


def _int(reply: bytes) -> int:
    return int(reply[1:-2])


def _simple(reply: bytes) -> bytes:
    """The text of a simple-string reply (TYPE)."""
    return reply[1:-2]


def _bulk_value(reply: bytes) -> bytes | None:
    value = resp.parse_reply(reply)
    if value is not None and not isinstance(value, bytes):
        raise ValueError("expected a bulk string reply")
    return value


def _passthrough(key: bytes, argv: list[bytes]) -> WritePlan:
    """Every key is the same key: the original command, routed by it (exact and atomic)."""
    (reply,) = yield [(key, argv)]
    return reply


# -- MSETNX ---------------------------------------------------------------------------------------
def _msetnx(pairs: list[tuple[bytes, bytes]]) -> WritePlan:
    replies = yield [(k, [b"EXISTS", k]) for k, _ in pairs]
    err = first_error(replies)
    if err is not None:
        return err
    if any(_int(r) for r in replies):
        return ZERO
    # Same key twice: both SETs go in order on one connection, the last value wins, as in Redis.
    replies = yield [(k, [b"SET", k, v]) for k, v in pairs]
    err = first_error(replies)
    return err if err is not None else ONE


# -- RENAME / RENAMENX / COPY ---------------------------------------------------------------------
def _read_for_restore(replies: list[bytes]) -> tuple[bytes, bytes] | None:
    """(payload, ttl argument for RESTORE) from the DUMP and PTTL replies; None if src is
    missing (also when it expired between the two)."""
    payload = _bulk_value(replies[0])
    ttl = _int(replies[1])
    if payload is None or ttl == -2:
        return None
    if ttl == -1:
        ttl = 0  # no expire
    elif ttl == 0:
        ttl = 1  # expires now; RESTORE's 0 would mean "no expire"
    return payload, b"%d" % ttl


_MISSING = b""  # _restore_copy's and _move_types' answer when src does not exist


def _restore_copy(
    src: bytes, dst: bytes, replace: bool
) -> Generator[Batch, list[bytes], bytes | None]:
    """The rounds RENAME, RENAMENX and COPY share: DUMP + PTTL of src (with EXISTS dst when
    dst must not be replaced), then RESTORE into dst. Returns ``None`` once dst holds the
    copy, else the reply to give: an error, ``_MISSING`` (no src) or ``:0`` (dst exists, or
    appeared since the first round, and must not be replaced)."""
    batch: Batch = [(src, [b"DUMP", src]), (src, [b"PTTL", src])]
    if not replace:
        batch.append((dst, [b"EXISTS", dst]))
    replies = yield batch
    err = first_error(replies)
    if err is not None:
        return err
    found = _read_for_restore(replies)
    if found is None:
        return _MISSING
    if not replace and _int(replies[2]):
        return ZERO
    payload, ttl = found
    restore = [b"RESTORE", dst, ttl, payload]
    if replace:
        restore.append(b"REPLACE")
    (reply,) = yield [(dst, restore)]
    if not replace and reply.startswith(b"-BUSYKEY"):
        return ZERO
    return reply if _is_error(reply) else None


def _rename(src: bytes, dst: bytes, nx: bool) -> WritePlan:
    outcome = yield from _restore_copy(src, dst, replace=not nx)
    if outcome is not None:
        return errors.NO_SUCH_KEY if outcome == _MISSING else outcome
    (reply,) = yield [(src, [b"DEL", src])]
    if _is_error(reply):
        return reply
    return ONE if nx else resp.OK


def _copy_options(argv: list[bytes]) -> bool | bytes:
    """copyCommand's option loop and cluster check: REPLACE, or an error reply."""
    replace = False
    dbid = 0
    j = 3
    argc = len(argv)
    while j < argc:
        opt = _cstr_lower(argv[j])
        if opt == b"replace":
            replace = True
        elif opt == b"db" and argc - j - 1 >= 1:
            value = resp.string2ll(argv[j + 1])
            if value is None:
                return errors.NOT_INTEGER
            if not INT_MIN <= value <= INT_MAX:
                return errors.INT_OUT_OF_RANGE
            if not 0 <= value < DEFAULT_DATABASES:
                return errors.DB_OUT_OF_RANGE
            dbid = value
            j += 1
        else:
            return errors.SYNTAX
        j += 1
    if dbid != 0:
        return errors.COPY_OTHER_DB
    if argv[1] == argv[2]:
        return errors.SAME_OBJECT
    return replace


def _copy(src: bytes, dst: bytes, replace: bool) -> WritePlan:
    outcome = yield from _restore_copy(src, dst, replace)
    if outcome is None:
        return ONE
    return ZERO if outcome == _MISSING else outcome


# -- SMOVE ----------------------------------------------------------------------------------------
def _move_types(src: bytes, dst: bytes, kind: bytes) -> WritePlan:
    """SMOVE's and LMOVE's checks (one TYPE of each key): the reply that ends the command
    (an error, errors.WRONGTYPE), _MISSING when ``src`` does not exist, or b"ok" to go on."""
    replies = yield [(src, [b"TYPE", src]), (dst, [b"TYPE", dst])]
    err = first_error(replies)
    if err is not None:
        return err
    src_type, dst_type = _simple(replies[0]), _simple(replies[1])
    if src_type == b"none":
        return _MISSING
    if src_type != kind or dst_type not in (b"none", kind):
        return errors.WRONGTYPE
    return b"ok"


def _smove(src: bytes, dst: bytes, member: bytes) -> WritePlan:
    verdict = yield from _move_types(src, dst, b"set")
    if verdict != b"ok":
        return ZERO if verdict == _MISSING else verdict
    (reply,) = yield [(src, [b"SREM", src, member])]
    if _is_error(reply) or _int(reply) == 0:
        return reply if _is_error(reply) else ZERO
    (reply,) = yield [(dst, [b"SADD", dst, member])]
    if _is_error(reply):
        yield [(src, [b"SADD", src, member])]  # best effort: put the member back
        return reply
    return ONE


# -- LMOVE / RPOPLPUSH ----------------------------------------------------------------------------
def list_end(arg: bytes) -> bool | None:
    """getListPositionFromObjectOrReply: True for LEFT (head), False for RIGHT, None if bad."""
    word = _cstr_lower(arg)
    if word == b"right":
        return False
    if word == b"left":
        return True
    return None


def _lmove(src: bytes, dst: bytes, from_left: bool, to_left: bool) -> WritePlan:
    verdict = yield from _move_types(src, dst, b"list")
    if verdict != b"ok":
        return resp.NULL_BULK if verdict == _MISSING else verdict
    (popped,) = yield [(src, [b"LPOP" if from_left else b"RPOP", src])]
    if _is_error(popped) or popped == resp.NULL_BULK:
        return popped  # an error, or src emptied since round 1
    element = _bulk_value(popped)
    assert element is not None
    (reply,) = yield [(dst, [b"LPUSH" if to_left else b"RPUSH", dst, element])]
    if _is_error(reply):
        # best effort: put the element back where it came from
        yield [(src, [b"LPUSH" if from_left else b"RPUSH", src, element])]
        return reply
    return popped


# -- SUNIONSTORE / SINTERSTORE / SDIFFSTORE -------------------------------------------------------
def _chunks(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _store(dst: bytes, add: bytes, args: list[bytes], per_item: int,
           then: list[bytes] | None = None) -> WritePlan:
    """DEL dst, then ADD dst args... in chunks, then ADD dst then..., in order on dst's
    connection."""
    batch: Batch = [(dst, [b"DEL", dst])]
    for chunk in _chunks(args, CHUNK * per_item):
        batch.append((dst, [add, dst, *chunk]))
    for chunk in _chunks(then or [], CHUNK * per_item):
        batch.append((dst, [add, dst, *chunk]))
    replies = yield batch
    err = first_error(replies)
    return err if err is not None else resp.integer(len(args) // per_item)


def _read_plan(keys: list[bytes], plan: ReadPlan) -> WritePlan:
    """Run an emulated read (its per-key reads in one batch); returns its reply."""
    replies = yield [(k, read) for k, read in zip(keys, plan.reads)]
    return plan.compute(replies)


def _setstore(read_name: bytes, dst: bytes, keys: list[bytes]) -> WritePlan:
    plan = plan_read([read_name, *keys])
    assert isinstance(plan, ReadPlan)
    raw = yield from _read_plan(keys, plan)
    if _is_error(raw):
        return raw
    members = resp.parse_reply(raw)
    assert isinstance(members, list)
    return (yield from _store(dst, b"SADD", members, 1))


# -- ZUNIONSTORE / ZINTERSTORE / ZDIFFSTORE -------------------------------------------------------
def _zstore_options(op: bytes, setnum: int, options: list[bytes]) -> list[bytes] | bytes:
    """The option loop of zunionInterDiffGenericCommand with a dstkey: canonical options for
    the read command (``WEIGHTS w... AGGREGATE x``), or the error it meets."""
    weights: list[bytes] | None = None
    aggregate: bytes | None = None
    is_diff = op == b"ZDIFF"
    j = 0
    remaining = len(options)
    while remaining:
        opt = _cstr_lower(options[j])
        if not is_diff and remaining >= setnum + 1 and opt == b"weights":
            values = options[j + 1 : j + 1 + setnum]
            if any(parse_double(w) is None for w in values):
                return errors.WEIGHT_NOT_FLOAT
            weights = values
            j += 1 + setnum
            remaining -= 1 + setnum
        elif not is_diff and remaining >= 2 and opt == b"aggregate":
            value = _cstr_lower(options[j + 1])
            if value not in (b"sum", b"min", b"max"):
                return errors.SYNTAX
            aggregate = value
            j += 2
            remaining -= 2
        else:
            return errors.SYNTAX  # WITHSCORES included: not accepted with a destination key
    out: list[bytes] = []
    if weights is not None:
        out += [b"WEIGHTS", *weights]
    if aggregate is not None:
        out += [b"AGGREGATE", aggregate]
    return out


def _plan_zstore(name: bytes, argv: list[bytes]) -> WritePlan | bytes:
    op = name[:-5]  # ZUNION / ZINTER / ZDIFF
    setnum = resp.string2ll(argv[2])
    if setnum is None:
        return errors.NOT_INTEGER
    if setnum < 1:
        return errors.at_least_one_key(name)
    if setnum > len(argv) - 3:
        return errors.SYNTAX
    dst = argv[1]
    keys = argv[3 : 3 + setnum]
    options = _zstore_options(op, setnum, argv[3 + setnum :])
    if isinstance(options, bytes):
        read = plan_read([op, argv[2], *keys, b"WITHSCORES"])
        assert isinstance(read, ReadPlan)
        return _fail_after_lookup(keys, read.reads, options)
    read = plan_read([op, argv[2], *keys, *options, b"WITHSCORES"])
    assert isinstance(read, ReadPlan)
    return _zstore(dst, keys, read)


def _fail_after_lookup(keys: list[bytes], reads: list[list[bytes]], error: bytes) -> WritePlan:
    """Redis looks the keys up before parsing the options: a WRONGTYPE key (or a failed read)
    is reported before the option error. Nothing is written."""
    replies = yield [(k, r) for k, r in zip(keys, reads)]
    err = first_error(replies)
    return err if err is not None else error


def _zstore(dst: bytes, keys: list[bytes], read: ReadPlan) -> WritePlan:
    raw = yield from _read_plan(keys, read)
    if _is_error(raw):
        return raw
    flat = resp.parse_reply(raw)
    assert isinstance(flat, list)
    return (yield from _zadd_store(dst, flat))


def _zadd_store(dst: bytes, flat: list[bytes]) -> WritePlan:
    """DEL dst, ZADD dst the ``[member, score, ...]`` pairs (scores as Redis replies them)."""
    args: list[bytes] = []
    negative_zero: list[bytes] = []
    for i in range(0, len(flat), 2):
        member, score = flat[i], flat[i + 1]  # score already %.17g / inf / -inf
        if score == b"-0":
            # ZADD stores -0 as 0 in a listpack, and a listpack turned into a skiplist keeps
            # that 0, while ZUNIONSTORE's skiplist result keeps -0 (its listpack result does
            # not). So these members are added with a placeholder score, in their place (the
            # encoding evolves as for the others), and set to -0 at the end: a score update
            # keeps -0 in a skiplist and makes it 0 in a listpack, as Redis's result does.
            negative_zero += [b"-0", member]
            score = b"1"
        args += [score, member]
    return (yield from _store(dst, b"ZADD", args, 2, negative_zero))


# -- ZRANGESTORE ----------------------------------------------------------------------------------
def _plan_zrangestore(argv: list[bytes]) -> WritePlan | bytes:
    """zrangeGenericCommand's option loop with a destination (WITHSCORES is a syntax error;
    REV, BYSCORE/BYLEX once each; LIMIT's two longs checked where met). The range and the
    LIMIT-without-BY errors are left to the read ``ZRANGE``, which checks them in the same
    order, before looking the key up."""
    dst, src = argv[1], argv[2]
    rev = False
    by: bytes | None = None
    limit: list[bytes] = []
    opts = argv[5:]
    j = 0
    while j < len(opts):
        opt = _cstr_lower(opts[j])
        leftargs = len(opts) - j - 1
        if opt == b"limit" and leftargs >= 2:
            if resp.string2ll(opts[j + 1]) is None or resp.string2ll(opts[j + 2]) is None:
                return errors.NOT_INTEGER
            limit = [b"LIMIT", opts[j + 1], opts[j + 2]]
            j += 2
        elif not rev and opt == b"rev":
            rev = True
        elif by is None and opt in (b"bylex", b"byscore"):
            by = b"BYLEX" if opt == b"bylex" else b"BYSCORE"
        else:
            return errors.SYNTAX
        j += 1
    read = [b"ZRANGE", src, argv[3], argv[4]]
    if by is not None:
        read.append(by)
    if rev:
        read.append(b"REV")
    read += limit
    if by != b"BYLEX":
        read.append(b"WITHSCORES")
    return _zrangestore(dst, src, read, by == b"BYLEX")


def _zrangestore(dst: bytes, src: bytes, read: list[bytes], bylex: bool) -> WritePlan:
    (reply,) = yield [(src, read)]
    if _is_error(reply):
        return reply
    flat = resp.parse_reply(reply)
    assert isinstance(flat, list)
    if bylex and flat:
        # WITHSCORES is refused with BYLEX: the scores in a second read. A member removed by
        # someone else in between (nil score) is left out.
        (scores,) = yield [(src, [b"ZMSCORE", src, *flat])]
        if _is_error(scores):
            return scores
        parsed = resp.parse_reply(scores)
        assert isinstance(parsed, list)
        flat = [x for m, s in zip(flat, parsed) if s is not None for x in (m, s)]
    return (yield from _zadd_store(dst, flat))


# -- SORT ... STORE -------------------------------------------------------------------------------


def _plan_sort(argv: list[bytes]) -> WritePlan | bytes:
    """sortCommandGeneric's option loop (cluster mode: a BY pattern with ``*`` and any GET are
    refused there, before the key is looked up). The last STORE wins; the read is the same
    SORT without the STORE options (and, for ``BY <no *>`` on a set, see ``_sort_store``)."""
    src = argv[1]
    store: bytes | None = None
    dontsort = False
    read = [b"SORT", src]
    forced = [b"SORT", src]  # the same without any BY, for a set with dontsort (+ ALPHA)
    j = 2
    while j < len(argv):
        opt = _cstr_lower(argv[j])
        leftargs = len(argv) - j - 1
        if opt in (b"asc", b"desc", b"alpha"):
            read.append(argv[j])
            forced.append(argv[j])
        elif opt == b"limit" and leftargs >= 2:
            if resp.string2ll(argv[j + 1]) is None or resp.string2ll(argv[j + 2]) is None:
                return errors.NOT_INTEGER
            read += argv[j : j + 3]
            forced += argv[j : j + 3]
            j += 2
        elif opt == b"store" and leftargs >= 1:
            store = argv[j + 1]
            j += 1
        elif opt == b"by" and leftargs >= 1:
            if b"*" in argv[j + 1].split(b"\0", 1)[0]:
                return errors.SORT_BY_DENIED
            dontsort = True
            read += argv[j : j + 2]
            j += 1
        elif opt == b"get" and leftargs >= 1:
            return errors.SORT_GET_DENIED
        else:
            return errors.SYNTAX
        j += 1
    if store is None or store == src:
        return _passthrough(src, argv)
    return _sort_store(src, store, read, forced + [b"ALPHA"] if dontsort else None)


def _sort_store(src: bytes, dst: bytes, read: list[bytes],
                forced: list[bytes] | None) -> WritePlan:
    """With a STORE, SORT sorts a set even when told not to (``BY nosort``): ALPHA, no BY. So
    with dontsort the type of src is read too, with both forms of the SORT (in this order, on
    src's connection)."""
    batch: Batch = [(src, read)]
    if forced is not None:
        batch += [(src, [b"TYPE", src]), (src, forced)]
    replies = yield batch
    err = first_error(replies)
    if err is not None:
        return err
    reply = replies[0]
    if forced is not None and _simple(replies[1]) == b"set":
        reply = replies[2]
    elements = resp.parse_reply(reply)
    assert isinstance(elements, list)
    values = [b"" if e is None else e for e in elements]  # GET of a missing key stores ""
    return (yield from _store(dst, b"RPUSH", values, 1))


# -- LMPOP / ZMPOP --------------------------------------------------------------------------------


def parse_mpop(name: bytes, argv: list[bytes]) -> tuple[list[bytes], bytes, int | None] | bytes:
    """lmpopGenericCommand / zmpopGenericCommand's arguments (``argv`` from numkeys on):
    numkeys (1..LONG_MAX, also its parse error says "should be greater than 0"), then
    LEFT|RIGHT (MIN|MAX), then at most one COUNT n (1..LONG_MAX). The keys, the end
    (lowercase) and the count (None: not given), or the error reply."""
    numkeys = resp.string2ll(argv[0])
    if numkeys is None or numkeys < 1:
        return errors.NUMKEYS_POSITIVE
    where_idx = 1 + numkeys
    if where_idx >= len(argv):
        return errors.SYNTAX
    where = _cstr_lower(argv[where_idx])
    ends = (b"left", b"right") if name == b"LMPOP" else (b"min", b"max")
    if where not in ends:
        return errors.SYNTAX
    count: int | None = None
    j = where_idx + 1
    while j < len(argv):
        if count is None and _cstr_lower(argv[j]) == b"count" and len(argv) - 1 - j > 0:
            j += 1
            count = resp.string2ll(argv[j])
            if count is None or count < 1:
                return errors.COUNT_POSITIVE
        else:
            return errors.SYNTAX
        j += 1
    return argv[1:where_idx], where, count


def _plan_mpop(name: bytes, argv: list[bytes]) -> WritePlan | bytes:
    parsed = parse_mpop(name, argv[1:])
    if isinstance(parsed, bytes):
        return parsed
    keys, where, count = parsed
    if len(set(keys)) == 1:
        return _passthrough(keys[0], argv)
    if name == b"LMPOP":
        size, pop = b"LLEN", (b"LPOP" if where == b"left" else b"RPOP")
    else:
        size, pop = b"ZCARD", (b"ZPOPMIN" if where == b"min" else b"ZPOPMAX")
    return _mpop(keys, size, pop, count or 1, name == b"ZMPOP")


def _mpop(keys: list[bytes], size: bytes, pop: bytes, count: int, zset: bool) -> WritePlan:
    """Like mpopGenericCommand: the keys in order, missing or empty ones skipped, the first of
    another type is errors.WRONGTYPE; the first non-empty one is popped (keys after it are not
    looked at, whatever their type or read reply). If it was emptied by someone else between
    the rounds (null reply), the next non-empty key is tried."""
    replies = yield [(k, [size, k]) for k in keys]
    for key, reply in zip(keys, replies):
        if _is_error(reply):
            return reply
        if _int(reply) == 0:
            continue
        (popped,) = yield [(key, [pop, key, b"%d" % count])]
        if _is_error(popped):
            return popped
        items = resp.parse_reply(popped)
        if not items:  # null array (key gone) or empty
            continue
        assert isinstance(items, list)
        if zset:
            inner = resp.array([resp.array([resp.bulk(items[i]), resp.bulk(items[i + 1])])
                                for i in range(0, len(items), 2)])
        else:
            inner = resp.array([resp.bulk(e) for e in items])
        return resp.array([resp.bulk(key), inner])
    return resp.NULL_ARRAY


# -- BITOP ----------------------------------------------------------------------------------------
_BITOPS = {b"and": "and", b"or": "or", b"xor": "xor", b"not": "not"}


def bitop(op: str, values: list[bytes]) -> bytes:
    """bitopCommand's result: every input zero-padded to the longest one."""
    maxlen = max((len(v) for v in values), default=0)
    if not maxlen:
        return b""
    ints = [int.from_bytes(v.ljust(maxlen, b"\0"), "big") for v in values]
    if op == "not":
        result = ints[0] ^ ((1 << (8 * maxlen)) - 1)
    else:
        result = ints[0]
        for x in ints[1:]:
            if op == "and":
                result &= x
            elif op == "or":
                result |= x
            else:
                result ^= x
    return result.to_bytes(maxlen, "big")


def _bitop(op: str, dst: bytes, keys: list[bytes]) -> WritePlan:
    replies = yield [(k, [b"GET", k]) for k in keys]
    err = first_error(replies)
    if err is not None:
        return err
    values = [_bulk_value(r) or b"" for r in replies]
    result = bitop(op, values)
    (reply,) = yield [(dst, [b"SET", dst, result] if result else [b"DEL", dst])]
    return reply if _is_error(reply) else resp.integer(len(result))


# -- PFMERGE --------------------------------------------------------------------------------------
_T_SHL6 = bytes((b << 6) & 0xFF for b in range(256))
_T_SHR2 = bytes(b >> 2 for b in range(256))
_T_SHL4 = bytes((b << 4) & 0xFF for b in range(256))
_T_SHR4 = bytes(b >> 4 for b in range(256))
_T_SHL2 = bytes((b << 2) & 0xFF for b in range(256))
_T_LOW6 = bytes(b & 63 for b in range(256))


def dense_hll(registers: bytes) -> bytes:
    """A dense HLL string (header with an invalidated cardinality cache, 16384 6-bit registers)
    from one byte per register: the inverse of ``rproxy.core.emulate_reads._dense_registers``."""
    if len(registers) != HLL_REGISTERS:
        raise ValueError("expected 16384 registers")
    regs = registers.translate(_T_LOW6)
    r0, r1, r2, r3 = regs[0::4], regs[1::4], regs[2::4], regs[3::4]
    # b0 = r0 | r1<<6, b1 = r1>>2 | r2<<4, b2 = r2>>4 | r3<<2: disjoint bits, so a byte-wise add
    b0 = _bytewise_add(r0, r1.translate(_T_SHL6))
    b1 = _bytewise_add(r1.translate(_T_SHR2), r2.translate(_T_SHL4))
    b2 = _bytewise_add(r2.translate(_T_SHR4), r3.translate(_T_SHL2))
    body = bytearray(3 * len(r0))
    body[0::3], body[1::3], body[2::3] = b0, b1, b2
    header = b"HYLL" + bytes([HLL_DENSE, 0, 0, 0]) + bytes(7) + b"\x80"  # cache invalid
    return header + bytes(body)


def _pfmerge(keys: list[bytes]) -> WritePlan:
    replies = yield [(k, [b"GET", k]) for k in keys]
    regs, err = hll_union(replies)
    if err is not None:
        return err
    dst = keys[0]
    (reply,) = yield [(dst, [b"SET", dst, dense_hll(regs), b"KEEPTTL"])]
    return reply if _is_error(reply) else resp.OK


# -- entry point ----------------------------------------------------------------------------------
_ARITY = {  # redis-server 7.0's command table: n exact, -n at least n
    b"MSETNX": -3, b"RENAME": 3, b"RENAMENX": 3, b"COPY": -3, b"SMOVE": 4, b"LMOVE": 5,
    b"RPOPLPUSH": 3, b"SUNIONSTORE": -3, b"SINTERSTORE": -3, b"SDIFFSTORE": -3,
    b"ZUNIONSTORE": -4, b"ZINTERSTORE": -4, b"ZDIFFSTORE": -4, b"BITOP": -4, b"PFMERGE": -2,
    b"ZRANGESTORE": -5, b"SORT": -2, b"LMPOP": -4, b"ZMPOP": -4,
}


def plan_write(argv: list[bytes]) -> WritePlan | bytes | None:
    """A not yet started plan emulating the multi-key write ``argv``, the error reply Redis
    gives for these arguments, or None for a command not emulated here."""
    if not argv:
        return None
    name = argv[0].upper()
    arity = _ARITY.get(name)
    if arity is None:
        return None
    argc = len(argv)
    if (arity > 0 and argc != arity) or argc < -arity:
        return errors.wrong_arity(argv[0])

    if name == b"MSETNX":
        if argc % 2 == 0:
            return errors.wrong_arity(argv[0])
        return _msetnx([(argv[i], argv[i + 1]) for i in range(1, argc, 2)])
    if name in (b"RENAME", b"RENAMENX"):
        if argv[1] == argv[2]:
            return _passthrough(argv[1], argv)
        return _rename(argv[1], argv[2], name == b"RENAMENX")
    if name == b"COPY":
        replace = _copy_options(argv)
        if isinstance(replace, bytes):
            return replace
        return _copy(argv[1], argv[2], replace)
    if name == b"SMOVE":
        if argv[1] == argv[2]:
            return _passthrough(argv[1], argv)
        return _smove(argv[1], argv[2], argv[3])
    if name in (b"LMOVE", b"RPOPLPUSH"):
        if name == b"LMOVE":
            from_left, to_left = list_end(argv[3]), list_end(argv[4])
            if from_left is None or to_left is None:
                return errors.SYNTAX
        else:
            from_left, to_left = False, True
        if argv[1] == argv[2]:
            return _passthrough(argv[1], argv)
        return _lmove(argv[1], argv[2], from_left, to_left)
    if name in (b"SUNIONSTORE", b"SINTERSTORE", b"SDIFFSTORE"):
        return _setstore(name[:-5], argv[1], argv[2:])
    if name in (b"ZUNIONSTORE", b"ZINTERSTORE", b"ZDIFFSTORE"):
        return _plan_zstore(name, argv)
    if name == b"BITOP":
        op = _BITOPS.get(_cstr_lower(argv[1]))
        if op is None:
            return errors.SYNTAX
        if op == "not" and argc != 4:
            return errors.BITOP_NOT_ONE_KEY
        return _bitop(op, argv[2], argv[3:])
    if name == b"ZRANGESTORE":
        return _plan_zrangestore(argv)
    if name == b"SORT":
        return _plan_sort(argv)
    if name in (b"LMPOP", b"ZMPOP"):
        return _plan_mpop(name, argv)
    return _pfmerge(argv[1:])  # PFMERGE


EMULATED_WRITES: frozenset[bytes] = frozenset(_ARITY)
"""Commands whose cross-slot form ``plan_write`` emulates."""


def plan_emulated(argv: list[bytes], keys: list[bytes],
                  writes: bool) -> WritePlan | bytes | None:
    """A command over several slots as rounds (one for a read emulated by
    ``rproxy.core.emulate_reads``, whose per-key reads go to ``keys``, the command's keys in
    order; several for a write emulated here, if ``writes``), the error reply Redis gives for
    these arguments, or None for a command not emulated. (Used inside an emulated
    transaction; the stateless session runs an emulated read's reads as one fan-out.)"""
    plan = plan_read(argv)
    if isinstance(plan, ReadPlan):
        if len(keys) != len(plan.reads):  # the command table and the plan disagree
            return None
        return _read_plan(keys, plan)
    if plan is not None:
        return plan
    return plan_write(argv) if writes else None
