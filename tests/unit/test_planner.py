"""rproxy.core.planner (split plans, fan-out merges) with rproxy.core.merge, sans-IO.

The central property: a random sequence of MGET/MSET/DEL/UNLINK/EXISTS/TOUCH run through
``plan_split`` -> one backend per slot (replying raw RESP, as Redis would) -> ``plan.merge``
gives the reply a single Redis would give, and leaves the same data. The fan-out merges are
table-driven with realistic backend replies, one table row set per ``FANOUT_MERGES`` entry.
"""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rproxy.core import errors, resp
from rproxy.core.merge import merge_random_nonnull, merge_slowlog, split_array
from rproxy.core.planner import FANOUT_MERGES, SPLIT_RULES, plan_split
from rproxy.core.resp import NULL_BULK, OK, array, bulk, encode_value, integer
from rproxy.core.slots import key_slot

PROPS = settings(max_examples=200, deadline=None, database=None)

ERR_A = b"-ERR first\r\n"
ERR_B = b"-LOADING Redis is loading the dataset in memory\r\n"
DIFFERENT = b"-ERR rproxy: the cluster nodes gave different replies\r\n"
NOTBUSY = b"-NOTBUSY No scripts in execution right now.\r\n"
UNKILLABLE = (  # src/script.c scriptKill, for a script (or function) that has written
    b"-UNKILLABLE Sorry the script already executed write commands against the dataset. "
    b"You can either wait the script termination or kill the server in a hard way using "
    b"the SHUTDOWN NOSAVE command.\r\n"
)


def decode_one(raw: bytes) -> object:
    """Exactly one RESP reply in ``raw``, decoded by hiredis (an independent decoder)."""
    reader = hiredis.Reader()
    reader.feed(raw)
    value = reader.gets()
    assert value is not False, f"incomplete reply {raw!r}"
    assert reader.gets() is False, f"bytes after the reply in {raw!r}"
    return value


def assert_one_reply(raw: bytes) -> None:
    """``raw`` frames as exactly one whole reply (what the client is sent)."""
    framer = resp.ReplyFramer()
    assert framer.feed(raw) == [raw]
    assert framer.idle


# == planner + merge versus a single-dict model ===================================================
SPLIT_NAMES = [b"MGET", b"MSET", b"DEL", b"UNLINK", b"EXISTS", b"TOUCH"]

# Hash tags make several keys share a slot; b"" is the empty tag ({} hashes the whole key).
TAGS = [b"a", b"b", b"user:1000", b""]
plain_keys = st.binary(max_size=3)
tagged_keys = st.builds(
    lambda pre, tag, post: pre + b"{" + tag + b"}" + post,
    st.sampled_from([b"", b"x", b"{", b"}"]),
    st.sampled_from(TAGS),
    st.binary(max_size=2),
)
values = st.binary(max_size=3)  # b"" is a value, distinct from a missing key (None)


@st.composite
def command(draw: st.DrawFn, pool: list[bytes]) -> list[bytes]:
    name = draw(st.sampled_from(SPLIT_NAMES))
    spelled = draw(st.sampled_from([name, name.lower(), name.capitalize()]))
    key = st.sampled_from(pool)
    if name == b"MSET":
        pairs = draw(st.lists(st.tuples(key, values), min_size=1, max_size=6))
        return [spelled] + [x for pair in pairs for x in pair]
    return [spelled] + draw(st.lists(key, min_size=1, max_size=8))


@st.composite
def scenarios(draw: st.DrawFn) -> list[list[bytes]]:
    pool = draw(st.lists(st.one_of(plain_keys, tagged_keys), min_size=1, max_size=8, unique=True))
    return draw(st.lists(command(pool), min_size=1, max_size=12))


def run_on_dict(db: dict[bytes, bytes], argv: list[bytes]) -> object:
    """One Redis, as a dict: the decoded reply of ``argv`` (src/db.c delGenericCommand,
    existsCommand; src/server.c touchCommand; src/t_string.c mgetCommand, msetCommand)."""
    name = argv[0].upper()
    args = argv[1:]
    if name == b"MGET":
        return [db.get(k) for k in args]
    if name == b"MSET":
        for i in range(0, len(args), 2):
            db[args[i]] = args[i + 1]
        return b"OK"
    if name in (b"DEL", b"UNLINK"):
        removed = 0
        for k in args:  # a key given twice is found only the first time
            if db.pop(k, None) is not None:
                removed += 1
        return removed
    if name in (b"EXISTS", b"TOUCH"):
        return sum(k in db for k in args)  # every occurrence counts
    raise AssertionError(name)


def encode_reply(name: bytes, value: object) -> bytes:
    """The raw bytes a Redis sends for a decoded reply of ``run_on_dict``."""
    if name.upper() == b"MSET":
        assert value == b"OK"
        return OK
    return encode_value(value)


def keys_of(argv: list[bytes]) -> list[bytes]:
    step = SPLIT_RULES[argv[0].upper()].step
    return argv[1::step]


def units_of(argv: list[bytes]) -> list[list[bytes]]:
    """The argument groups of a command: [key] or [key, value]."""
    step = SPLIT_RULES[argv[0].upper()].step
    return [argv[i : i + step] for i in range(1, len(argv), step)]


@PROPS
@given(scenarios())
def test_split_and_merge_equal_a_single_dict(commands: list[list[bytes]]):
    single: dict[bytes, bytes] = {}
    by_slot: dict[int, dict[bytes, bytes]] = {}
    for argv in commands:
        original = list(argv)
        name = argv[0]
        plan = plan_split(argv, SPLIT_RULES[name.upper()])
        assert argv == original, "plan_split changed its argv"

        # -- the shape of the plan
        units = units_of(argv)
        slots_in_order = [key_slot(u[0]) for u in units]
        part_slots = [slot for slot, _ in plan.parts]
        assert sorted(part_slots) == sorted(set(slots_in_order)), "one part per distinct slot"
        for slot, sub in plan.parts:
            assert sub[0] == name
            assert all(key_slot(k) == slot for k in keys_of(sub)), (slot, sub)
            # every unit of this slot, in the original relative order, values attached
            expected_units = [x for u in units if key_slot(u[0]) == slot for x in u]
            assert sub[1:] == expected_units
        if len(set(slots_in_order)) == 1:
            assert len(plan.parts) == 1
            assert plan.parts[0][1] == argv

        # -- one backend per slot, replying raw RESP
        raw_parts = []
        for slot, sub in plan.parts:
            shard = by_slot.setdefault(slot, {})
            raw_parts.append(encode_reply(name, run_on_dict(shard, sub)))
        merged = plan.merge(raw_parts)

        expected = run_on_dict(single, argv)
        assert decode_one(merged) == expected, (argv, raw_parts, merged)
        # and byte-exact: what one Redis would have sent
        assert merged == encode_reply(name, expected)

        # -- same data, every key in its own slot's shard
        union: dict[bytes, bytes] = {}
        for slot, shard in by_slot.items():
            for k, v in shard.items():
                assert key_slot(k) == slot
                assert k not in union
                union[k] = v
        assert union == single


@PROPS
@given(scenarios(), st.data())
def test_any_error_part_is_the_reply_first_one_wins(
    commands: list[list[bytes]], data: st.DataObject
):
    """A part that fails (MOVED exhausted, OOM, LOADING ...) fails the whole command with the
    first error in part order, whatever the other parts said."""
    for argv in commands:
        plan = plan_split(argv, SPLIT_RULES[argv[0].upper()])
        shard: dict[bytes, bytes] = {}
        raw_parts = [encode_reply(argv[0], run_on_dict(shard, sub)) for _, sub in plan.parts]
        failing = data.draw(
            st.lists(st.integers(0, len(raw_parts) - 1), min_size=1, unique=True), label="failing"
        )
        for i in failing:
            raw_parts[i] = b"-ERR part %d failed\r\n" % i
        assert plan.merge(raw_parts) == b"-ERR part %d failed\r\n" % min(failing)


@pytest.mark.parametrize(
    "argv, parts",
    [
        # same tag, different keys: one slot, the argv untouched
        ([b"MGET", b"{u}a", b"{u}b", b"{u}a"], [[b"MGET", b"{u}a", b"{u}b", b"{u}a"]]),
        ([b"mset", b"{u}a", b"1", b"{u}b", b"2"], [[b"mset", b"{u}a", b"1", b"{u}b", b"2"]]),
        # two slots, interleaved: each part keeps its keys' order, values stay with their keys
        (
            [b"MSET", b"{a}1", b"x", b"{b}1", b"y", b"{a}2", b"z", b"{b}2", b""],
            [[b"MSET", b"{a}1", b"x", b"{a}2", b"z"], [b"MSET", b"{b}1", b"y", b"{b}2", b""]],
        ),
        (
            [b"DEL", b"{b}1", b"{a}1", b"{b}1", b"{a}2"],
            [[b"DEL", b"{b}1", b"{b}1"], [b"DEL", b"{a}1", b"{a}2"]],
        ),
        # a value equal to a key of another slot is not a key
        ([b"MSET", b"{a}1", b"{b}1"], [[b"MSET", b"{a}1", b"{b}1"]]),
        # every key in a slot of its own (plan_split's shortcut)
        ([b"MSET", b"a", b"1", b"b", b"2", b"c", b""], [[b"MSET", b"a", b"1"], [b"MSET", b"b", b"2"], [b"MSET", b"c", b""]]),
        ([b"EXISTS", b"a", b"b", b"{x}c"], [[b"EXISTS", b"a"], [b"EXISTS", b"b"], [b"EXISTS", b"{x}c"]]),
    ],
)
def test_plan_split_examples(argv: list[bytes], parts: list[list[bytes]]):
    plan = plan_split(argv, SPLIT_RULES[argv[0].upper()])
    assert sorted(sub for _, sub in plan.parts) == sorted(parts)
    for slot, sub in plan.parts:
        assert slot == key_slot(sub[1])


def test_mget_merge_puts_values_back_in_request_order():
    argv = [b"MGET", b"{a}1", b"{b}1", b"{a}2", b"{b}1", b"{c}"]
    plan = plan_split(argv, SPLIT_RULES[b"MGET"])
    db = {b"{a}1": b"A1", b"{b}1": b"B1", b"{c}": b""}
    raw = [encode_value([db.get(k) for k in sub[1:]]) for _, sub in plan.parts]
    assert plan.merge(raw) == encode_value([b"A1", b"B1", None, b"B1", b""])


def test_mget_merge_with_every_key_in_its_own_slot():
    argv = [b"MGET", b"c", b"a", b"b"]
    assert len({key_slot(k) for k in argv[1:]}) == 3
    plan = plan_split(argv, SPLIT_RULES[b"MGET"])
    db = {b"a": b"A", b"c": b"C"}
    raw = [encode_value([db.get(k) for k in sub[1:]]) for _, sub in plan.parts]
    assert plan.merge(raw) == encode_value([b"C", b"A", None])


def test_split_rules_have_the_steps_plan_split_knows():
    assert {rule.step for rule in SPLIT_RULES.values()} <= {1, 2}


def test_mget_merge_rejects_a_part_with_the_wrong_length():
    plan = plan_split([b"MGET", b"{a}1", b"{b}1"], SPLIT_RULES[b"MGET"])
    with pytest.raises(ValueError):
        plan.merge([encode_value([b"x", b"y"]), encode_value([b"z"])])


# == FANOUT_MERGES, table-driven ==================================================================
def slowlog_entry(
    entry_id: int, ts: int, args: tuple[bytes, ...] = (b"GET", b"k"), duration: int = 12
) -> bytes:
    """A SLOWLOG GET entry as Redis 7 sends it (src/slowlog.c slowlogCommand)."""
    return array([
        integer(entry_id),
        integer(ts),
        integer(duration),
        array([bulk(a) for a in args]),
        bulk(b"127.0.0.1:52110"),
        bulk(b""),
    ])


SHA = b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
OTHER_SHA = b"a42059b356c875f0717db19a51f6aaca9ae659ea"
SLOW_A = [slowlog_entry(12, 1700000105), slowlog_entry(11, 1700000103)]
SLOW_B = [slowlog_entry(7, 1700000104, (b"KEYS", b"*"))]

# (name, parts, merged)
FANOUT_CASES: list[tuple[bytes, list[bytes], bytes]] = [
    (b"DBSIZE", [b":3\r\n", b":0\r\n", b":5\r\n"], b":8\r\n"),
    (b"DBSIZE", [b":3\r\n", ERR_B, b":5\r\n", ERR_A], ERR_B),
    (
        b"KEYS",
        [array([bulk(b"{a}1"), bulk(b"x\r\ny")]), b"*0\r\n", array([bulk(b"\x00\xff")])],
        b"*3\r\n$4\r\n{a}1\r\n$4\r\nx\r\ny\r\n$2\r\n\x00\xff\r\n",
    ),
    (b"KEYS", [b"*0\r\n", b"*0\r\n", b"*0\r\n"], b"*0\r\n"),
    (b"KEYS", [array([bulk(b"a")]), ERR_A], ERR_A),
    (b"RANDOMKEY", [NULL_BULK, NULL_BULK, NULL_BULK], NULL_BULK),
    (b"RANDOMKEY", [NULL_BULK, bulk(b"k1"), NULL_BULK], bulk(b"k1")),
    (b"RANDOMKEY", [NULL_BULK, ERR_A, bulk(b"k1")], ERR_A),
    (b"FLUSHALL", [OK, OK, OK], OK),
    (b"FLUSHALL", [OK, errors.REQUEST_TIMED_OUT, OK], errors.REQUEST_TIMED_OUT),
    (b"FLUSHDB", [OK, OK], OK),
    (b"FLUSHDB", [ERR_B, OK], ERR_B),
    (b"SCRIPT|LOAD", [bulk(SHA), bulk(SHA), bulk(SHA)], bulk(SHA)),
    (b"SCRIPT|LOAD", [bulk(SHA), bulk(OTHER_SHA), bulk(SHA)], DIFFERENT),
    (b"SCRIPT|LOAD", [bulk(SHA), b"-ERR Error compiling script\r\n"],
     b"-ERR Error compiling script\r\n"),
    (
        b"SCRIPT|EXISTS",
        [b"*4\r\n:1\r\n:0\r\n:1\r\n:1\r\n", b"*4\r\n:1\r\n:1\r\n:0\r\n:1\r\n"],
        b"*4\r\n:1\r\n:0\r\n:0\r\n:1\r\n",
    ),
    (b"SCRIPT|EXISTS", [b"*1\r\n:1\r\n", b"*1\r\n:1\r\n", b"*1\r\n:1\r\n"], b"*1\r\n:1\r\n"),
    (b"SCRIPT|EXISTS", [b"*1\r\n:1\r\n", ERR_A], ERR_A),
    (b"SCRIPT|FLUSH", [OK, OK, OK], OK),
    (b"SCRIPT|FLUSH", [OK, ERR_A], ERR_A),
    (b"SCRIPT|KILL", [NOTBUSY, OK, NOTBUSY], OK),
    (b"SCRIPT|KILL", [NOTBUSY, NOTBUSY], NOTBUSY),
    (b"FUNCTION|LOAD", [bulk(b"mylib"), bulk(b"mylib")], bulk(b"mylib")),
    (b"FUNCTION|LOAD", [bulk(b"mylib"), bulk(b"otherlib")], DIFFERENT),
    (
        b"FUNCTION|LOAD",
        [bulk(b"mylib"), b"-ERR Library 'mylib' already exists\r\n"],
        b"-ERR Library 'mylib' already exists\r\n",
    ),
    (b"FUNCTION|DELETE", [OK, OK, OK], OK),
    (b"FUNCTION|DELETE", [OK, b"-ERR Library not found\r\n"], b"-ERR Library not found\r\n"),
    (b"FUNCTION|FLUSH", [OK, OK], OK),
    (b"FUNCTION|FLUSH", [ERR_A, ERR_B], ERR_A),
    (b"FUNCTION|RESTORE", [OK, OK], OK),
    (b"FUNCTION|RESTORE", [OK, b"-ERR payload version or checksum are wrong\r\n"],
     b"-ERR payload version or checksum are wrong\r\n"),
    (b"FUNCTION|KILL", [NOTBUSY, NOTBUSY, OK], OK),
    (b"FUNCTION|KILL", [NOTBUSY, NOTBUSY], NOTBUSY),
    (
        b"SLOWLOG|GET",
        [array(SLOW_A), array(SLOW_B), b"*0\r\n"],
        array([SLOW_A[0], SLOW_B[0], SLOW_A[1]]),  # all (default count 10), newest first
    ),
    (b"SLOWLOG|GET", [b"*0\r\n", b"*0\r\n"], b"*0\r\n"),
    (b"SLOWLOG|GET", [array(SLOW_A), ERR_A], ERR_A),
    (b"SLOWLOG|LEN", [b":128\r\n", b":3\r\n", b":0\r\n"], b":131\r\n"),
    (b"SLOWLOG|LEN", [b":1\r\n", ERR_A], ERR_A),
    (b"SLOWLOG|RESET", [OK, OK, OK], OK),
    (b"SLOWLOG|RESET", [ERR_B, OK], ERR_B),
    (b"CONFIG|SET", [OK, OK, OK], OK),
    (
        b"CONFIG|SET",
        [OK, b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - "
             b"argument couldn't be parsed into an integer\r\n"],
        b"-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - "
        b"argument couldn't be parsed into an integer\r\n",
    ),
    (b"CONFIG|RESETSTAT", [OK, OK], OK),
    (b"CONFIG|RESETSTAT", [ERR_A, OK], ERR_A),
    (b"CONFIG|REWRITE", [OK, OK], OK),
    (
        b"CONFIG|REWRITE",
        [b"-ERR The server is running without a config file\r\n", OK],
        b"-ERR The server is running without a config file\r\n",
    ),
]


def test_every_fanout_merge_has_cases():
    assert {name for name, _, _ in FANOUT_CASES} == set(FANOUT_MERGES)


@pytest.mark.parametrize(
    "name, parts, merged",
    FANOUT_CASES,
    ids=[f"{n.decode()}-{i}" for i, (n, _, _) in enumerate(FANOUT_CASES)],
)
def test_fanout_merge(name: bytes, parts: list[bytes], merged: bytes):
    before = list(parts)
    assert FANOUT_MERGES[name](parts) == merged
    assert parts == before
    assert_one_reply(merged)


# A realistic success reply for each fan-out command, for the error-position table below.
GOOD: dict[bytes, bytes] = {
    b"DBSIZE": b":4\r\n",
    b"KEYS": array([bulk(b"k")]),
    b"RANDOMKEY": bulk(b"k"),
    b"FLUSHALL": OK,
    b"FLUSHDB": OK,
    b"SCRIPT|LOAD": bulk(SHA),
    b"SCRIPT|EXISTS": b"*2\r\n:1\r\n:0\r\n",
    b"SCRIPT|FLUSH": OK,
    b"SCRIPT|KILL": OK,
    b"FUNCTION|LOAD": bulk(b"mylib"),
    b"FUNCTION|DELETE": OK,
    b"FUNCTION|FLUSH": OK,
    b"FUNCTION|RESTORE": OK,
    b"FUNCTION|KILL": OK,
    b"SLOWLOG|GET": array(SLOW_B),
    b"SLOWLOG|LEN": b":1\r\n",
    b"SLOWLOG|RESET": OK,
    b"CONFIG|SET": OK,
    b"CONFIG|RESETSTAT": OK,
    b"CONFIG|REWRITE": OK,
}
KILLS = {b"SCRIPT|KILL", b"FUNCTION|KILL"}  # OK if any node killed it


def test_good_replies_cover_every_fanout_merge():
    assert set(GOOD) == set(FANOUT_MERGES)


@pytest.mark.parametrize("name", sorted(FANOUT_MERGES))
@pytest.mark.parametrize(
    "layout",
    ["E", "EG", "GE", "GEGE", "GGEE", "EE"],
)
def test_fanout_error_parts(name: bytes, layout: str):
    """An error anywhere fails the command with the first error (part order); only the KILL
    commands succeed when any node succeeded."""
    errs = iter([ERR_A, ERR_B])
    parts = [next(errs) if c == "E" else GOOD[name] for c in layout]
    merged = FANOUT_MERGES[name](parts)
    if name in KILLS and "G" in layout:
        assert merged == OK
    else:
        assert merged == ERR_A


@pytest.mark.parametrize("name", sorted(KILLS))
@pytest.mark.parametrize(
    "parts",
    [[NOTBUSY, UNKILLABLE], [UNKILLABLE, NOTBUSY], [NOTBUSY, NOTBUSY, UNKILLABLE]],
)
def test_kill_reports_the_busy_node_over_notbusy(name: bytes, parts: list[bytes]):
    """One Redis running an unkillable script answers UNKILLABLE. Behind the proxy the idle
    masters answer NOTBUSY ("No scripts in execution right now"), which is false for the
    cluster as a whole; the node that is busy must be the one reported, whatever its order."""
    assert FANOUT_MERGES[name](parts) == UNKILLABLE


def test_randomkey_picks_only_among_non_null_parts():
    parts = [NULL_BULK, bulk(b"a"), NULL_BULK, bulk(b"b"), bulk(b"")]
    offered: list[list[bytes]] = []

    def choice(found: list[bytes]) -> bytes:
        offered.append(list(found))
        return found[-1]

    assert merge_random_nonnull(parts, choice) == bulk(b"")
    assert offered == [[bulk(b"a"), bulk(b"b"), bulk(b"")]]
    seen = {FANOUT_MERGES[b"RANDOMKEY"](parts) for _ in range(200)}
    assert seen <= {bulk(b"a"), bulk(b"b"), bulk(b"")}
    assert len(seen) > 1  # really random: P(one value 200 times) = 3 * 3**-200


@pytest.mark.parametrize("nil", [NULL_BULK, b"_\r\n"])
def test_randomkey_of_empty_masters_is_a_nil_in_their_protocol(nil: bytes):
    assert merge_random_nonnull([nil, nil]) == nil
    assert merge_random_nonnull([nil, bulk(b"k")]) == bulk(b"k")


def test_keys_concat_is_byte_exact_for_large_and_odd_elements():
    big = b"k" * 70000
    parts = [array([bulk(big), bulk(b"")]), array([bulk(b"*1\r\n:1")]), b"*0\r\n"]
    merged = FANOUT_MERGES[b"KEYS"](parts)
    assert merged == b"*3\r\n" + bulk(big) + bulk(b"") + bulk(b"*1\r\n:1")
    assert decode_one(merged) == [big, b"", b"*1\r\n:1"]


# -- SLOWLOG GET --------------------------------------------------------------------------------
def test_slowlog_count_is_the_requested_one():
    from rproxy.core.planner import fanout_merge

    a = [slowlog_entry(3, 1700000003), slowlog_entry(2, 1700000002), slowlog_entry(1, 1700000001)]
    b = [slowlog_entry(9, 1700000009), slowlog_entry(8, 1700000000)]
    parts = [array(a), array(b)]
    assert len(split_array(fanout_merge(b"SLOWLOG|GET", [b"SLOWLOG", b"GET"])(parts))) == 5
    assert len(split_array(fanout_merge(b"SLOWLOG|GET", [b"SLOWLOG", b"GET", b"2"])(parts))) == 2
    assert len(split_array(fanout_merge(b"SLOWLOG|GET", [b"SLOWLOG", b"GET", b"-1"])(parts))) == 5


def test_slowlog_newest_first_across_masters():
    a = [
        slowlog_entry(30, 1700000009),
        slowlog_entry(29, 1700000005),
        slowlog_entry(28, 1700000001),
    ]
    b = [slowlog_entry(4, 1700000008), slowlog_entry(3, 1700000002)]
    c = [slowlog_entry(90, 1700000007, (b"SET", b"x\r\ny", b"v"))]
    merged = merge_slowlog([array(a), array(b), array(c)], count=3)
    assert merged == array([a[0], b[0], c[0]])
    decoded = decode_one(merged)
    assert isinstance(decoded, list)
    assert [e[1] for e in decoded] == [1700000009, 1700000008, 1700000007]
    assert decoded[2][3] == [b"SET", b"x\r\ny", b"v"]


def test_slowlog_ties_keep_each_masters_own_order():
    # Timestamps have one-second resolution: ties are common; within a master the reply is
    # already newest first (by id) and must stay so.
    a = [slowlog_entry(9, 1700000100), slowlog_entry(8, 1700000100)]
    b = [slowlog_entry(5, 1700000100), slowlog_entry(4, 1700000099)]
    merged = split_array(merge_slowlog([array(a), array(b)], count=2))
    assert len(merged) == 2
    assert [e for e in merged if e in a] == a[: sum(e in a for e in merged)]
    assert [e for e in merged if e in b] == b[: sum(e in b for e in merged)]


@st.composite
def slowlog_parts(draw: st.DrawFn) -> list[list[tuple[int, int]]]:
    """Per master, entries (id, timestamp) newest first; ids unique across masters."""
    n = draw(st.integers(1, 4))
    next_id = 0
    parts = []
    for _ in range(n):
        stamps = sorted(draw(st.lists(st.integers(1700000000, 1700000010), max_size=6)),
                        reverse=True)
        entries = []
        for ts in stamps:
            entries.append((next_id, ts))
            next_id += 1
        parts.append(entries)
    return parts


@PROPS
@given(slowlog_parts())
def test_slowlog_merge_property(parts: list[list[tuple[int, int]]]):
    raw = [array([slowlog_entry(i, ts) for i, ts in p]) for p in parts]
    limit = 3
    merged = merge_slowlog(raw, count=limit)
    assert_one_reply(merged)
    got = decode_one(merged)
    assert isinstance(got, list)
    everything = [e for p in parts for e in p]
    assert len(got) == min(limit, len(everything))
    got_pairs = [(e[0], e[1]) for e in got]
    # newest first, and the newest ones of all
    assert [ts for _, ts in got_pairs] == sorted((ts for _, ts in everything), reverse=True)[
        : len(got)
    ]
    # each master contributes a prefix of its own (newest-first) list, in its order
    for p in parts:
        mine = [e for e in got_pairs if e in p]
        assert mine == p[: len(mine)]


# == split_array ==================================================================================
@pytest.mark.parametrize(
    "raw, elements",
    [
        (b"*0\r\n", []),
        (b"*-1\r\n", []),
        (b"*1\r\n$-1\r\n", [b"$-1\r\n"]),
        (b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n", [b"$1\r\na\r\n", b"$-1\r\n", b"$0\r\n\r\n"]),
        (b"*3\r\n*0\r\n*-1\r\n*0\r\n", [b"*0\r\n", b"*-1\r\n", b"*0\r\n"]),
        (b"*2\r\n*2\r\n:1\r\n*0\r\n*-1\r\n", [b"*2\r\n:1\r\n*0\r\n", b"*-1\r\n"]),
        (
            b"*3\r\n+OK\r\n-ERR x\r\n*1\r\n*1\r\n*2\r\n$2\r\n\r\n\r\n$-1\r\n",
            [b"+OK\r\n", b"-ERR x\r\n", b"*1\r\n*1\r\n*2\r\n$2\r\n\r\n\r\n$-1\r\n"],
        ),
        # bulk contents that look like headers are data
        (b"*2\r\n$6\r\n*9\r\n:1\r\n:-3\r\n", [b"$6\r\n*9\r\n:1\r\n", b":-3\r\n"]),
        (
            b"*2\r\n$70000\r\n" + b"x" * 70000 + b"\r\n*1\r\n$-1\r\n",
            [b"$70000\r\n" + b"x" * 70000 + b"\r\n", b"*1\r\n$-1\r\n"],
        ),
    ],
)
def test_split_array(raw: bytes, elements: list[bytes]):
    assert split_array(raw) == elements


@pytest.mark.parametrize(
    "raw",
    [
        b"*2\r\n$1\r\na\r\n",  # one element short
        b"*2\r\n*2\r\n:1\r\n:2\r\n",  # the nested array took both
        b"*1\r\n:1\r\n:2\r\n",  # one too many
        b"*1\r\n$5\r\nab\r\n",  # truncated bulk
    ],
)
def test_split_array_rejects_a_wrong_element_count(raw: bytes):
    with pytest.raises(ValueError):
        split_array(raw)


resp_values: st.SearchStrategy[object] = st.recursive(
    st.one_of(st.none(), st.binary(max_size=5), st.integers(-(2**63), 2**63 - 1)),
    lambda children: st.lists(children, max_size=4),
    max_leaves=20,
)


@PROPS
@given(st.lists(resp_values, max_size=6))
def test_split_array_round_trips_nested_values(items: list[object]):
    encoded = [encode_value(v) for v in items]
    assert split_array(array(encoded)) == encoded

