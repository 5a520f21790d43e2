"""Cross-slot read-only multi-key commands, emulated: per-key reads in, one Redis reply out.

Pure (sans-IO). A Redis Cluster refuses a multi-key command whose keys hash to different slots
(CROSSSLOT). For the read-only set algebra commands and PFCOUNT the proxy can instead read every
key on its own (one single-key command per key, each routed by its own slot, run in parallel)
and compute here the reply one redis-server 7.0 would have given for the original command::

    plan = plan_read(argv)
    if plan is None:            -> not a command emulated here
    elif isinstance(plan, bytes) -> the error reply Redis gives for these arguments
    else:                        -> run plan.reads (in order), reply plan.compute(raw_replies)

Replies are raw RESP2, byte for byte what redis-server 7.0 sends (verified differentially
against redis-server 7.0.15 in tests/unit/test_emulate.py), with one documented exception: the
ORDER of the members returned by SUNION / SINTER / SDIFF. Redis returns them in the iteration
order of a hash table (or intset) it builds on the fly, which depends on its internal sizing and
hash seed and cannot be reproduced; a set is unordered by definition, so the members are
returned sorted bytewise instead. Everything else (the member sets, counts, every score and its
formatting, the order of sorted-set replies, every error) is exact.

Supported commands and the read issued per key:

=============================================  ==============================================
SUNION / SINTER / SDIFF key...                 ``SMEMBERS key``
SINTERCARD numkeys key... [LIMIT n]            ``SMEMBERS key``
ZUNION / ZINTER numkeys key... [WEIGHTS w...]  ``ZUNION 1 key WITHSCORES``
  [AGGREGATE SUM|MIN|MAX] [WITHSCORES]
ZDIFF numkeys key... [WITHSCORES]              ``ZUNION 1 key WITHSCORES`` (first key),
                                               ``ZUNION 1 key`` (the others)
ZINTERCARD numkeys key... [LIMIT n]            ``ZUNION 1 key``
PFCOUNT key...                                 ``GET key``
=============================================  ==============================================

Why ``ZUNION 1 key [WITHSCORES]`` and not ``ZRANGE key 0 -1 WITHSCORES``: the Z* set commands
also accept plain SETs as inputs (every member scoring 1), and ZRANGE answers WRONGTYPE for a
set. ZUNION over a single key accepts both types, gives exactly the stored scores of a zset
(weight 1 leaves them unchanged; a stored score is never NaN), scores 1 for a set, WRONGTYPE
for any other type (the same shared error the original command gives) and an empty array for a
missing key. It costs the backend O(N log N) instead of O(N) per key.

Redis behaviours mirrored (src/t_set.c, src/t_zset.c, src/hyperloglog.c of 7.0):

* Error precedence. SUNION/SINTER/SDIFF/SINTERCARD look every key up and type-check it before
  computing anything, so a WRONGTYPE key anywhere wins, even when SINTER already has a missing
  key (an empty result). SINTERCARD parses numkeys and LIMIT before the lookups (static errors,
  returned by ``plan_read``). The Z* commands parse numkeys, then look the keys up, and only
  then parse WEIGHTS / AGGREGATE / WITHSCORES / LIMIT: with a bad option the plan still reads
  the keys and ``compute`` answers WRONGTYPE if a key has the wrong type, else the option error,
  as Redis does. PFCOUNT validates and merges key by key, so the first bad key in key order
  decides (a missing key counts as an empty HLL).
* Any other error reply to a read (LOADING, CLUSTERDOWN, a proxy timeout...) becomes the reply,
  the first one in key order (``merge.first_error``): a single Redis would have failed the whole
  command, never returned a partial result.
* ZUNION / ZINTER arithmetic is C double arithmetic in Redis's order: the inputs are sorted by
  cardinality with glibc's qsort (a stable merge sort), each score is multiplied by its weight
  (a NaN product becomes 0 for the first input of ZINTER and for every input of ZUNION), then
  aggregated in that order; SUM turns a NaN sum (inf + -inf) into 0; MIN/MAX keep the current
  value unless the new one is strictly smaller/greater (so -0 vs 0 and NaN keep the first).
* Scores are formatted like addReplyDouble: ``inf`` / ``-inf``, otherwise ``%.17g`` (so 0.1 is
  ``0.10000000000000001``, 1e20 is ``1e+20``, -0.0 is ``-0``). Sorted-set replies are ordered by
  score, ties by member (memcmp, then length), like the skiplist Redis builds the result in.
* WEIGHTS values are parsed like getDoubleFromObject (strtod: decimal, hex floats, inf/infinity;
  no NaN, no whitespace, no overflow, no underflow to zero).
* PFCOUNT of several keys merges the registers max-wise (hllMerge: dense 6-bit registers,
  sparse ZERO/XZERO/VAL opcodes, INVALIDOBJ when a sparse form does not cover exactly 16384
  registers, with the CVE-2025-32023 overflow checks of the verified server) and runs
  hllCount's estimator (Ertl's improved estimator, the same constants, the same order of double
  operations, llroundl; even the -9223372036854775808 a forged all-high-registers HLL gets on
  x86-64). PFCOUNT of one key returns the cached
  cardinality when the cache is valid, as Redis does (Redis would also write the recomputed
  cache back into the key; an emulated read cannot, which only costs the next PFCOUNT a
  recomputation).

Not emulated (``plan_read`` returns ``None``): any other command, the *STORE variants (they
write). Replies are RESP2 only (a RESP3 client would get maps/sets/doubles from Redis).

Caveat the caller must accept: the per-key reads run on several masters at slightly different
instants, so the result is not an atomic snapshot as on one Redis; with concurrent writers it
can combine key values that never coexisted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from rproxy.core import errors, resp
from rproxy.core.merge import first_error
from rproxy.core.resp import string2ll

LONG_MAX = 2**63 - 1


@dataclass(frozen=True)
class ReadPlan:
    """How to emulate one command: run ``reads`` (one single-key command per key, in key
    order), then ``compute`` turns their raw replies (same order) into the raw reply."""

    reads: list[list[bytes]]
    compute: Callable[[list[bytes]], bytes]


# -- small helpers --------------------------------------------------------------------------------
def _cstr_lower(arg: bytes) -> bytes:
    """An option name as strcasecmp sees it: a C string (ends at the first NUL), ASCII case."""
    nul = arg.find(b"\0")
    return (arg if nul < 0 else arg[:nul]).lower()


_DEC = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(
    rb"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)")
_INF = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)
_NONZERO_MANTISSA = re.compile(rb"[1-9]")
_NONZERO_HEX_MANTISSA = re.compile(rb"[1-9a-fA-F]")


def parse_double(arg: bytes) -> float | None:
    """Redis getDoubleFromObject (7.0): the whole string must be one strtod() number (C
    locale: decimal, hexadecimal, inf/infinity), with no leading space, no NaN, no overflow
    to +-HUGE_VAL and no underflow to zero (strtod's ERANGE cases). None when invalid."""
    m = _INF.fullmatch(arg)
    if m:
        return -math.inf if m.group(1) == b"-" else math.inf
    if _DEC.fullmatch(arg):
        value = float(arg)  # correctly rounded, like glibc's strtod
        if math.isinf(value):
            return None  # overflow: ERANGE with HUGE_VAL
        mantissa = re.split(rb"[eE]", arg, maxsplit=1)[0]
        if value == 0.0 and _NONZERO_MANTISSA.search(mantissa):
            return None  # underflow to zero: ERANGE with 0
        return value
    m = _HEX.fullmatch(arg)
    if m:
        try:
            value = float.fromhex(m.group(2).decode())
        except OverflowError:
            return None
        mantissa = re.split(rb"[pP]", m.group(2), maxsplit=1)[0]
        if value == 0.0 and _NONZERO_HEX_MANTISSA.search(mantissa):
            return None
        return -value if m.group(1) == b"-" else value
    return None


def format_double(d: float) -> bytes:
    """addReplyDouble (7.0, RESP2) without the bulk framing: inf/-inf, else ``%.17g``."""
    if d == math.inf:
        return b"inf"
    if d == -math.inf:
        return b"-inf"
    return b"%.17g" % d


def _elements(raw: bytes) -> list[bytes]:
    """The bulk strings of an array reply (SMEMBERS, ZUNION)."""
    value = resp.parse_reply(raw)
    if not isinstance(value, list):
        raise ValueError("expected an array reply")
    return value


def _pairs(raw: bytes) -> list[tuple[bytes, float]]:
    """(member, score) pairs of a RESP2 ``... WITHSCORES`` reply."""
    flat = _elements(raw)
    it = iter(flat)
    return [(member, float(score)) for member, score in zip(it, it)]


def _members_reply(members: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(members) + b"".join([resp.bulk(m) for m in members])


# -- SUNION / SINTER / SDIFF / SINTERCARD ---------------------------------------------------------
def _set_inputs(replies: list[bytes]) -> list[list[bytes]] | bytes:
    err = first_error(replies)
    if err is not None:
        return err
    return [_elements(r) for r in replies]


def _sunion(replies: list[bytes]) -> bytes:
    sets = _set_inputs(replies)
    if isinstance(sets, bytes):
        return sets
    out: set[bytes] = set()
    for s in sets:
        out.update(s)
    return _members_reply(sorted(out))


def _sinter_members(sets: list[list[bytes]]) -> list[bytes]:
    if any(not s for s in sets):  # a missing key is an empty set
        return []
    smallest = min(sets, key=len)
    others = [set(s) for s in sets if s is not smallest]
    return [m for m in smallest if all(m in o for o in others)]


def _sinter(replies: list[bytes]) -> bytes:
    sets = _set_inputs(replies)
    if isinstance(sets, bytes):
        return sets
    return _members_reply(sorted(_sinter_members(sets)))


def _sdiff(replies: list[bytes]) -> bytes:
    sets = _set_inputs(replies)
    if isinstance(sets, bytes):
        return sets
    first, rest = sets[0], sets[1:]
    removed: set[bytes] = set()
    for s in rest:
        removed.update(s)
    return _members_reply(sorted(m for m in first if m not in removed))


def _sintercard(limit: int) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        sets = _set_inputs(replies)
        if isinstance(sets, bytes):
            return sets
        n = len(_sinter_members(sets))
        return resp.integer(min(n, limit) if limit else n)

    return compute


def _plan_sintercard(argv: list[bytes]) -> ReadPlan | bytes:
    # sinterCardCommand: numkeys in [1, LONG_MAX] (one message for both failures), then the
    # options, all before any key is looked up.
    numkeys = resp.string2ll(argv[1])
    if numkeys is None or numkeys < 1:
        return errors.NUMKEYS_POSITIVE
    argc = len(argv)
    if numkeys > argc - 2:
        return errors.NUMKEYS_TOO_MANY
    limit = 0
    j = 2 + numkeys
    while j < argc:
        moreargs = argc - 1 - j
        if _cstr_lower(argv[j]) == b"limit" and moreargs:
            j += 1
            value = resp.string2ll(argv[j])
            if value is None or value < 0:
                return errors.LIMIT_NEGATIVE
            limit = value
        else:
            return errors.SYNTAX
        j += 1
    keys = argv[2 : 2 + numkeys]
    return ReadPlan([[b"SMEMBERS", k] for k in keys], _sintercard(limit))


# -- ZUNION / ZINTER / ZDIFF / ZINTERCARD ---------------------------------------------------------
_SUM, _MIN, _MAX = 0, 1, 2


def _aggregate(target: float, value: float, how: int) -> float:
    """zunionInterAggregate."""
    if how == _SUM:
        target = target + value
        return 0.0 if math.isnan(target) else target
    if how == _MIN:
        return value if value < target else target
    return value if value > target else target


def _zreply(scores: dict[bytes, float], withscores: bool) -> bytes:
    ordered = sorted(scores.items(), key=lambda item: (item[1], item[0]))
    if withscores:
        parts = [b"*%d\r\n" % (2 * len(ordered))]
        for member, score in ordered:
            parts.append(resp.bulk(member))
            parts.append(resp.bulk(format_double(score)))
        return b"".join(parts)
    return _members_reply([member for member, _ in ordered])


def _by_cardinality(inputs: list[list[tuple[bytes, float]]]) -> list[int]:
    """zuiCompareByCardinality under glibc's qsort, which is a stable merge sort."""
    return sorted(range(len(inputs)), key=lambda i: len(inputs[i]))


def _zunion(weights: list[float], how: int, withscores: bool) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        err = first_error(replies)
        if err is not None:
            return err
        inputs = [_pairs(r) for r in replies]
        acc: dict[bytes, float] = {}
        for i in _by_cardinality(inputs):
            w = weights[i]
            for member, score in inputs[i]:
                score = w * score
                if math.isnan(score):
                    score = 0.0
                if member in acc:
                    acc[member] = _aggregate(acc[member], score, how)
                else:
                    acc[member] = score
        return _zreply(acc, withscores)

    return compute


def _zinter_scores(inputs: list[list[tuple[bytes, float]]], weights: list[float], how: int,
                   limit: int = 0) -> dict[bytes, float]:
    order = _by_cardinality(inputs)
    first = order[0]
    out: dict[bytes, float] = {}
    if not inputs[first]:
        return out
    rest = [(dict(inputs[j]), weights[j]) for j in order[1:]]
    w0 = weights[first]
    for member, s0 in inputs[first]:
        score = w0 * s0
        if math.isnan(score):
            score = 0.0
        for scores, w in rest:
            value = scores.get(member)
            if value is None:
                break
            score = _aggregate(score, value * w, how)  # no NaN check here, as in Redis
        else:
            out[member] = score
            if limit and len(out) >= limit:
                break
    return out


def _zinter(weights: list[float], how: int, withscores: bool) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        err = first_error(replies)
        if err is not None:
            return err
        return _zreply(_zinter_scores([_pairs(r) for r in replies], weights, how), withscores)

    return compute


def _zintercard(limit: int) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        err = first_error(replies)
        if err is not None:
            return err
        inputs = [[(m, 1.0) for m in _elements(r)] for r in replies]
        return resp.integer(len(_zinter_scores(inputs, [1.0] * len(inputs), _SUM, limit)))

    return compute


def _zdiff(keys: list[bytes], withscores: bool) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        err = first_error(replies)
        if err is not None:
            return err
        first = _pairs(replies[0])
        # zsetChooseDiffAlgorithm: the first key repeated means nothing is left.
        if not first or keys[0] in keys[1:]:
            return b"*0\r\n"
        removed: set[bytes] = set()
        for r in replies[1:]:
            removed.update(_elements(r))
        return _zreply({m: s for m, s in first if m not in removed}, withscores)

    return compute


def _fail_after_lookup(error: bytes) -> Callable[[list[bytes]], bytes]:
    """Redis parses the Z* options after looking the keys up: a key of the wrong type (or a
    failed read) is reported before the option error."""

    def compute(replies: list[bytes]) -> bytes:
        err = first_error(replies)
        return err if err is not None else error

    return compute


def _plan_zset(name: bytes, argv: list[bytes]) -> ReadPlan | bytes:
    """zunionInterDiffGenericCommand, for ZUNION / ZINTER / ZDIFF / ZINTERCARD."""
    is_diff = name == b"ZDIFF"
    card_only = name == b"ZINTERCARD"
    setnum = resp.string2ll(argv[1])
    if setnum is None:
        return errors.NOT_INTEGER
    if setnum < 1:
        return errors.at_least_one_key(name)
    argc = len(argv)
    if setnum > argc - 2:
        return errors.SYNTAX
    keys = argv[2 : 2 + setnum]
    if card_only:
        reads = [[b"ZUNION", b"1", k] for k in keys]
    elif is_diff:
        reads = [[b"ZUNION", b"1", keys[0], b"WITHSCORES"]]
        reads += [[b"ZUNION", b"1", k] for k in keys[1:]]
    else:
        reads = [[b"ZUNION", b"1", k, b"WITHSCORES"] for k in keys]

    weights = [1.0] * setnum
    how = _SUM
    withscores = False
    limit = 0
    j = 2 + setnum
    remaining = argc - j
    while remaining:
        opt = _cstr_lower(argv[j])
        if not is_diff and not card_only and remaining >= setnum + 1 and opt == b"weights":
            j += 1
            remaining -= 1
            for i in range(setnum):
                w = parse_double(argv[j])
                if w is None:
                    return ReadPlan(reads, _fail_after_lookup(errors.WEIGHT_NOT_FLOAT))
                weights[i] = w
                j += 1
                remaining -= 1
        elif not is_diff and not card_only and remaining >= 2 and opt == b"aggregate":
            j += 1
            remaining -= 1
            value = _cstr_lower(argv[j])
            if value == b"sum":
                how = _SUM
            elif value == b"min":
                how = _MIN
            elif value == b"max":
                how = _MAX
            else:
                return ReadPlan(reads, _fail_after_lookup(errors.SYNTAX))
            j += 1
            remaining -= 1
        elif not card_only and opt == b"withscores":
            j += 1
            remaining -= 1
            withscores = True
        elif card_only and remaining >= 2 and opt == b"limit":
            j += 1
            remaining -= 1
            value = resp.string2ll(argv[j])
            if value is None or value < 0:
                return ReadPlan(reads, _fail_after_lookup(errors.LIMIT_NEGATIVE))
            limit = value
            j += 1
            remaining -= 1
        else:
            return ReadPlan(reads, _fail_after_lookup(errors.SYNTAX))

    if card_only:
        return ReadPlan(reads, _zintercard(limit))
    if is_diff:
        return ReadPlan(reads, _zdiff(keys, withscores))
    if name == b"ZUNION":
        return ReadPlan(reads, _zunion(weights, how, withscores))
    return ReadPlan(reads, _zinter(weights, how, withscores))


# -- PFCOUNT (src/hyperloglog.c) ------------------------------------------------------------------
HLL_P = 14
HLL_Q = 64 - HLL_P
HLL_REGISTERS = 1 << HLL_P
HLL_HDR_SIZE = 16
HLL_DENSE_SIZE = HLL_HDR_SIZE + (HLL_REGISTERS * 6 + 7) // 8
HLL_DENSE, HLL_SPARSE = 0, 1
HLL_ALPHA_INF = 0.721347520444481703680  # 0.5/ln(2)

# Four 6-bit registers in three bytes b0 b1 b2: r0 = b0&63, r1 = (b0>>6 | b1<<2)&63,
# r2 = (b1>>4 | b2<<4)&63, r3 = b2>>2. The shifted parts have disjoint bits, so each register
# is a byte-wise sum without carries: done for all 4096 groups at once with translate() and
# one big-integer addition.
_T_AND63 = bytes(b & 63 for b in range(256))
_T_SHR6 = bytes(b >> 6 for b in range(256))
_T_SHL2 = bytes((b << 2) & 63 for b in range(256))
_T_SHR4 = bytes(b >> 4 for b in range(256))
_T_SHL4 = bytes((b << 4) & 63 for b in range(256))
_T_SHR2 = bytes(b >> 2 for b in range(256))
_ZERO_REGISTERS = bytes(HLL_REGISTERS)


def _bytewise_add(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") + int.from_bytes(b, "little")).to_bytes(n, "little")


def _dense_registers(registers: bytes) -> bytes:
    """The 16384 6-bit registers of a dense HLL, one byte each."""
    b0, b1, b2 = registers[0::3], registers[1::3], registers[2::3]
    r0 = b0.translate(_T_AND63)
    r1 = _bytewise_add(b0.translate(_T_SHR6), b1.translate(_T_SHL2))
    r2 = _bytewise_add(b1.translate(_T_SHR4), b2.translate(_T_SHL4))
    r3 = b2.translate(_T_SHR2)
    out = bytearray(HLL_REGISTERS)
    out[0::4], out[1::4], out[2::4], out[3::4] = r0, r1, r2, r3
    return bytes(out)


def _sparse_merge(sparse: bytes, regs: bytearray) -> bool:
    """hllMerge for a sparse HLL: max-merge into ``regs``; False (INVALIDOBJ) if the opcodes
    do not cover exactly HLL_REGISTERS registers.

    This is hllMerge as patched for CVE-2025-32023 (the redis-server 7.0.15 this was verified
    against carries the patch): an opcode of any kind that would run past the last register
    makes the HLL invalid. (Unpatched 7.0.15 only stops at an overflowing VAL opcode and then
    accepts the HLL if exactly 16384 registers were covered: the two differ only for forged
    HLLs with VAL opcodes after the last register.) Redis reads the byte after the end of the
    string, its terminating NUL, for a truncated XZERO opcode."""
    p = HLL_HDR_SIZE
    end = len(sparse)
    i = 0
    while p < end:
        op = sparse[p]
        if op & 0xC0 == 0:  # ZERO 00xxxxxx
            runlen = (op & 0x3F) + 1
            if runlen + i > HLL_REGISTERS:
                return False
            i += runlen
            p += 1
        elif op & 0xC0 == 0x40:  # XZERO 01xxxxxx yyyyyyyy
            nxt = sparse[p + 1] if p + 1 < end else 0
            runlen = (((op & 0x3F) << 8) | nxt) + 1
            if runlen + i > HLL_REGISTERS:
                return False
            i += runlen
            p += 2
        else:  # VAL 1vvvvvxx
            runlen = (op & 0x3) + 1
            regval = ((op >> 2) & 0x1F) + 1
            if runlen + i > HLL_REGISTERS:
                return False
            for k in range(i, i + runlen):
                if regval > regs[k]:
                    regs[k] = regval
            i += runlen
            p += 1
    return i == HLL_REGISTERS


def _sparse_histogram(sparse: bytes) -> list[int] | None:
    """hllSparseRegHisto; None when invalid (the registers do not add up to HLL_REGISTERS)."""
    histo = [0] * 64
    p = HLL_HDR_SIZE
    end = len(sparse)
    idx = 0
    while p < end:
        op = sparse[p]
        if op & 0xC0 == 0:
            runlen = (op & 0x3F) + 1
            histo[0] += runlen
            p += 1
        elif op & 0xC0 == 0x40:
            nxt = sparse[p + 1] if p + 1 < end else 0
            runlen = (((op & 0x3F) << 8) | nxt) + 1
            histo[0] += runlen
            p += 2
        else:
            runlen = (op & 0x3) + 1
            histo[((op >> 2) & 0x1F) + 1] += runlen
            p += 1
        idx += runlen
    return histo if idx == HLL_REGISTERS else None


def _histogram(registers: bytes) -> list[int]:
    return [registers.count(v) for v in range(64)]


def _hll_sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        z_prime = z
        z += x * y
        y += y
        if z_prime == z:
            return z


def _hll_tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1 - x
    while True:
        x = math.sqrt(x)
        z_prime = z
        y *= 0.5
        t = 1 - x
        z -= (t * t) * y  # pow(1 - x, 2): exact squaring, correctly rounded either way
        if z_prime == z:
            return z / 3


def hll_estimate(histo: list[int]) -> int:
    """hllCount's estimator from a register histogram, as the long long Redis replies with.

    E = llroundl(HLL_ALPHA_INF*m*m/z), returned through a double and a uint64_t and replied
    with addReplyLongLong. When z is 0 (every register >= 51, only possible in a forged HLL)
    the quotient is inf, llroundl gives LLONG_MIN on x86-64, and Redis replies
    -9223372036854775808: mirrored."""
    m = float(HLL_REGISTERS)
    z = m * _hll_tau((m - histo[HLL_Q + 1]) / m)
    for j in range(HLL_Q, 0, -1):
        z += histo[j]
        z *= 0.5
    z += m * _hll_sigma(histo[0] / m)
    x = HLL_ALPHA_INF * m * m / z if z else math.inf  # C: x/0.0 is inf, Python raises
    if math.isfinite(x):
        r = math.floor(x)
        if x - r >= 0.5:  # round half away from zero (x > 0)
            r += 1
        if not -(2**63) <= r < 2**63:
            r = -(2**63)
    else:
        r = -(2**63)
    e = int(float(r)) & (2**64 - 1)  # (uint64_t)(double) ...
    return e - 2**64 if e >= 2**63 else e  # ... as long long


def _hll_check(value: bytes) -> bytes | None:
    """isHLLObjectOrReply for a string value: None when valid, else the error reply."""
    if len(value) < HLL_HDR_SIZE or value[:4] != b"HYLL" or value[4] > HLL_SPARSE:
        return errors.HLL_WRONGTYPE
    if value[4] == HLL_DENSE and len(value) != HLL_DENSE_SIZE:
        return errors.HLL_WRONGTYPE
    return None


def _pfcount_one(reply: bytes) -> bytes:
    """PFCOUNT with one key: the cached cardinality when valid, else hllCount."""
    if reply[:1] == b"-":
        return reply
    value = resp.parse_reply(reply)
    if value is None:
        return b":0\r\n"
    err = _hll_check(value)
    if err is not None:
        return err
    card = value[8:16]
    if not card[7] & 0x80:  # HLL_VALID_CACHE
        return resp.integer(int.from_bytes(card, "little"))
    if value[4] == HLL_DENSE:
        histo = _histogram(_dense_registers(value[HLL_HDR_SIZE:]))
    else:
        sparse_histo = _sparse_histogram(value)
        if sparse_histo is None:
            return errors.HLL_INVALID
        histo = sparse_histo
    return resp.integer(hll_estimate(histo))


def hll_union(replies: list[bytes]) -> tuple[bytes, bytes | None]:
    """The registers (one byte each) of the union of the HyperLogLogs in these ``GET``
    replies, key by key as pfcountCommand/pfmergeCommand do, so the first bad key decides:
    ``(registers, None)``, or ``(b"", error reply)``. A missing key is an empty HLL."""
    regs: bytes | bytearray = _ZERO_REGISTERS
    for reply in replies:
        if reply[:1] == b"-":
            return b"", reply
        value = resp.parse_reply(reply)
        if value is None:
            continue
        err = _hll_check(value)
        if err is not None:
            return b"", err
        if value[4] == HLL_DENSE:
            dense = _dense_registers(value[HLL_HDR_SIZE:])
            regs = dense if regs is _ZERO_REGISTERS else bytes(map(max, regs, dense))
        else:
            merged = bytearray(regs)
            if not _sparse_merge(value, merged):
                return b"", errors.HLL_INVALID
            regs = merged
    return bytes(regs), None


def _pfcount(replies: list[bytes]) -> bytes:
    if len(replies) == 1:
        return _pfcount_one(replies[0])
    regs, err = hll_union(replies)
    return err if err is not None else resp.integer(hll_estimate(_histogram(regs)))


# -- entry point ----------------------------------------------------------------------------------
# -- LCS (t_string.c lcsCommand) ------------------------------------------------------------------
def _lcs(options: list[bytes]) -> Callable[[list[bytes]], bytes]:
    def compute(replies: list[bytes]) -> bytes:
        values: list[bytes] = []
        for raw in replies:
            if raw.startswith(b"-WRONGTYPE"):
                return errors.LCS_NOT_STRINGS
            if raw[:1] == b"-":
                return raw
            values.append(b"" if raw == resp.NULL_BULK else raw[raw.index(b"\r\n") + 2 : -2])
        # Options are parsed after the type check, as lcsCommand does.
        getlen = getidx = withmatchlen = False
        minmatchlen = 0
        j = 0
        while j < len(options):
            opt = _cstr_lower(options[j])
            more = len(options) - 1 - j
            if opt == b"idx":
                getidx = True
            elif opt == b"len":
                getlen = True
            elif opt == b"withmatchlen":
                withmatchlen = True
            elif opt == b"minmatchlen" and more:
                n = string2ll(options[j + 1])
                if n is None:
                    return errors.NOT_INTEGER
                minmatchlen = max(n, 0)
                j += 1
            else:
                return errors.SYNTAX
            j += 1
        if getlen and getidx:
            return errors.LCS_LEN_AND_IDX
        a, b = values
        alen, blen = len(a), len(b)
        if (alen + 1) * (blen + 1) > errors.LCS_MAX_CELLS:
            return errors.LCS_TOO_BIG
        table = [[0] * (blen + 1) for _ in range(alen + 1)]
        for i in range(1, alen + 1):
            row, prev, ai = table[i], table[i - 1], a[i - 1]
            for jj in range(1, blen + 1):
                if ai == b[jj - 1]:
                    row[jj] = prev[jj - 1] + 1
                else:
                    up, left = prev[jj], row[jj - 1]
                    row[jj] = up if up > left else left
        total = table[alen][blen]
        if getlen:
            return resp.integer(total)
        result = bytearray(total)
        idx = total
        ranges: list[bytes] = []
        a_start, a_end, b_start, b_end = alen, 0, 0, 0  # a_start == alen: no range yet
        i, jj = alen, blen
        while i > 0 and jj > 0:
            emit = False
            if a[i - 1] == b[jj - 1]:
                result[idx - 1] = a[i - 1]
                if a_start == alen:
                    a_start, a_end, b_start, b_end = i - 1, i - 1, jj - 1, jj - 1
                elif a_start == i and b_start == jj:
                    a_start -= 1
                    b_start -= 1
                else:
                    emit = True  # Redis's rule: this match starts no new range
                if a_start == 0 or b_start == 0:
                    emit = True
                idx -= 1
                i -= 1
                jj -= 1
            else:
                if table[i - 1][jj] > table[i][jj - 1]:
                    i -= 1
                else:
                    jj -= 1
                if a_start != alen:
                    emit = True
            if emit:
                match_len = a_end - a_start + 1
                if minmatchlen == 0 or match_len >= minmatchlen:
                    fields = [resp.array([resp.integer(a_start), resp.integer(a_end)]),
                              resp.array([resp.integer(b_start), resp.integer(b_end)])]
                    if withmatchlen:
                        fields.append(resp.integer(match_len))
                    ranges.append(resp.array(fields))
                a_start = alen
        if getidx:
            return resp.array([resp.bulk(b"matches"), resp.array(ranges),
                               resp.bulk(b"len"), resp.integer(total)])
        return resp.bulk(bytes(result))

    return compute


def _plan_lcs(argv: list[bytes]) -> ReadPlan:
    return ReadPlan([[b"GET", argv[1]], [b"GET", argv[2]]], _lcs(argv[3:]))


_ARITY = {
    b"SUNION": 2, b"SINTER": 2, b"SDIFF": 2, b"SINTERCARD": 3,
    b"ZUNION": 3, b"ZINTER": 3, b"ZDIFF": 3, b"ZINTERCARD": 3, b"PFCOUNT": 2, b"LCS": 3,
}
_SET_OPS = {b"SUNION": _sunion, b"SINTER": _sinter, b"SDIFF": _sdiff}


def plan_read(argv: list[bytes]) -> ReadPlan | bytes | None:
    """The per-key reads and the combining function for a read-only multi-key command, the
    error reply for invalid arguments, or None for a command not emulated here."""
    if not argv:
        return None
    name = argv[0].upper()
    min_args = _ARITY.get(name)
    if min_args is None:
        return None
    if len(argv) < min_args:
        return errors.wrong_arity(argv[0])
    op = _SET_OPS.get(name)
    if op is not None:
        return ReadPlan([[b"SMEMBERS", k] for k in argv[1:]], op)
    if name == b"SINTERCARD":
        return _plan_sintercard(argv)
    if name == b"PFCOUNT":
        return ReadPlan([[b"GET", k] for k in argv[1:]], _pfcount)
    if name == b"LCS":
        return _plan_lcs(argv)
    return _plan_zset(name, argv)


EMULATED: frozenset[bytes] = frozenset(_ARITY)
"""Commands whose cross-slot form ``plan_read`` computes (the command contract reads this)."""
