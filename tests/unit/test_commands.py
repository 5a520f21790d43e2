"""rproxy.core.commands: the command table built from a Redis 7 ``COMMAND`` reply (RESP2, as hiredis
decodes it), key positions from key specs (src/db.c getKeysUsingKeySpecs / sortGetKeys), and
the proxy's routing rules.

The fixtures copy the shape of ``COMMAND INFO`` from Redis 7.0 exactly; the expected key
positions were checked against ``COMMAND GETKEYS`` on a Redis 7.0.15 server."""

from __future__ import annotations

import pytest

from rproxy.core.commands import PROXY_RULES, CommandTable, Route


# -- key spec builders (exact Redis 7 RESP2 shape: flat key/value lists) --------------------------
def spec(flags: list[bytes], begin_search: list[object], find_keys: list[object]) -> list[object]:
    return [b"flags", flags, b"begin_search", begin_search, b"find_keys", find_keys]


def bs_index(i: int) -> list[object]:
    return [b"type", b"index", b"spec", [b"index", i]]


def bs_keyword(kw: bytes, startfrom: int) -> list[object]:
    return [b"type", b"keyword", b"spec", [b"keyword", kw, b"startfrom", startfrom]]


def fk_range(lastkey: int, keystep: int, limit: int) -> list[object]:
    return [b"type", b"range", b"spec", [b"lastkey", lastkey, b"keystep", keystep, b"limit", limit]]


def fk_keynum(keynumidx: int, firstkey: int, keystep: int) -> list[object]:
    return [
        b"type", b"keynum", b"spec",
        [b"keynumidx", keynumidx, b"firstkey", firstkey, b"keystep", keystep],
    ]


UNKNOWN = [b"type", b"unknown", b"spec", []]

# Verbatim from a Redis 7.0.15 server (COMMAND INFO get sort), RESP2 via hiredis.
GET = [
    b"get", 2, [b"readonly", b"fast"], 1, 1, 1, [b"@read", b"@string", b"@fast"], [],
    [[b"flags", [b"RO", b"access"], b"begin_search", [b"type", b"index", b"spec", [b"index", 1]],
      b"find_keys", [b"type", b"range", b"spec", [b"lastkey", 0, b"keystep", 1, b"limit", 0]]]],
    [],
]
SORT = [
    b"sort", -2, [b"write", b"denyoom", b"movablekeys"], 1, 1, 1,
    [b"@write", b"@set", b"@sortedset", b"@list", b"@slow", b"@dangerous"], [],
    [
        [b"flags", [b"RO", b"access"], b"begin_search", [b"type", b"index", b"spec", [b"index", 1]],
         b"find_keys", [b"type", b"range", b"spec", [b"lastkey", 0, b"keystep", 1, b"limit", 0]]],
        [b"notes", b"For the optional BY/GET keyword. It is marked 'unknown' because the key names "
         b"derive from the content of the key we sort", b"flags", [b"RO", b"access"],
         b"begin_search", [b"type", b"unknown", b"spec", []],
         b"find_keys", [b"type", b"unknown", b"spec", []]],
        [b"notes", b"For the optional STORE keyword. It is marked 'unknown' because the keyword "
         b"can appear anywhere in the argument array", b"flags", [b"OW", b"update"],
         b"begin_search", [b"type", b"unknown", b"spec", []],
         b"find_keys", [b"type", b"unknown", b"spec", []]],
    ],
    [],
]
SET = [
    b"set", -3, [b"write", b"denyoom"], 1, 1, 1, [b"@write", b"@string", b"@slow"], [],
    [[b"notes", b"RW and ACCESS due to the optional `GET` argument",
      b"flags", [b"RW", b"access", b"update", b"variable_flags"],
      b"begin_search", bs_index(1), b"find_keys", fk_range(0, 1, 0)]],
    [],
]
MSET = [
    b"mset", -3, [b"write", b"denyoom"], 1, -1, 2, [b"@write", b"@string", b"@slow"],
    [b"request_policy:multi_shard", b"response_policy:all_succeeded"],
    [spec([b"OW", b"update"], bs_index(1), fk_range(-1, 2, 0))],
    [],
]
EVAL = [
    b"eval", -3, [b"noscript", b"stale", b"skip_monitor", b"no_mandatory_keys", b"movablekeys"],
    0, 0, 0, [b"@slow", b"@scripting"], [],
    [[b"notes", b"We cannot tell how the keys will be used so we assume the worst, RW and UPDATE",
      b"flags", [b"RW", b"access", b"update"],
      b"begin_search", bs_index(2), b"find_keys", fk_keynum(0, 1, 1)]],
    [],
]
XREAD = [
    b"xread", -4, [b"readonly", b"blocking", b"movablekeys"], 0, 0, 0,
    [b"@read", b"@stream", b"@slow", b"@blocking"], [],
    [spec([b"RO", b"access"], bs_keyword(b"STREAMS", 1), fk_range(-1, 1, 2))],
    [],
]
XREADGROUP = [
    b"xreadgroup", -7, [b"write", b"blocking", b"movablekeys"], 0, 0, 0,
    [b"@write", b"@stream", b"@slow", b"@blocking"], [],
    [spec([b"RO", b"access"], bs_keyword(b"STREAMS", 4), fk_range(-1, 1, 2))],
    [],
]
ZUNIONSTORE = [
    b"zunionstore", -4, [b"write", b"denyoom", b"movablekeys"], 1, 1, 1,
    [b"@write", b"@sortedset", b"@slow"], [],
    [
        spec([b"OW", b"update"], bs_index(1), fk_range(0, 1, 0)),
        spec([b"RO", b"access"], bs_index(2), fk_keynum(0, 1, 1)),
    ],
    [],
]
GEORADIUS = [
    b"georadius", -6, [b"write", b"denyoom", b"movablekeys"], 1, 1, 1,
    [b"@write", b"@geo", b"@slow"], [],
    [
        spec([b"RO", b"access"], bs_index(1), fk_range(0, 1, 0)),
        spec([b"OW", b"update"], bs_keyword(b"STORE", 6), fk_range(0, 1, 0)),
        spec([b"OW", b"update"], bs_keyword(b"STOREDIST", 6), fk_range(0, 1, 0)),
    ],
    [],
]
LMPOP = [
    b"lmpop", -4, [b"write", b"movablekeys"], 0, 0, 0, [b"@write", b"@list", b"@slow"], [],
    [spec([b"RW", b"access", b"delete"], bs_index(1), fk_keynum(0, 1, 1))],
    [],
]
SINTERCARD = [
    b"sintercard", -3, [b"readonly", b"movablekeys"], 0, 0, 0, [b"@read", b"@set", b"@slow"], [],
    [spec([b"RO", b"access"], bs_index(1), fk_keynum(0, 1, 1))],
    [],
]
BLPOP = [
    b"blpop", -3, [b"write", b"noscript", b"blocking"], 1, -2, 1,
    [b"@write", b"@list", b"@slow", b"@blocking"], [],
    [spec([b"RW", b"access", b"delete"], bs_index(1), fk_range(-2, 1, 0))],
    [],
]
CONFIG = [
    b"config", -2, [], 0, 0, 0, [b"@slow"], [], [],
    [
        [b"config|help", 2, [b"loading", b"stale"], 0, 0, 0, [b"@slow"], [], [], []],
        [b"config|get", -3, [b"admin", b"noscript", b"loading", b"stale"], 0, 0, 0,
         [b"@admin", b"@slow", b"@dangerous"], [], [], []],
        [b"config|set", -4, [b"admin", b"noscript", b"loading", b"stale"], 0, 0, 0,
         [b"@admin", b"@slow", b"@dangerous"],
         [b"request_policy:all_nodes", b"response_policy:all_succeeded"], [], []],
    ],
]
OBJECT = [
    b"object", -2, [], 0, 0, 0, [b"@slow"], [], [],
    [
        [b"object|encoding", 3, [b"readonly"], 2, 2, 1, [b"@keyspace", b"@read", b"@slow"],
         [b"nondeterministic_output"], [spec([b"RO"], bs_index(2), fk_range(0, 1, 0))], []],
        [b"object|help", 2, [b"loading", b"stale"], 0, 0, 0, [b"@keyspace", b"@slow"], [], [], []],
    ],
]
PING = [
    b"ping", -1, [b"fast"], 0, 0, 0, [b"@fast", b"@connection"],
    [b"request_policy:all_shards", b"response_policy:all_succeeded"], [], [],
]
MULTI = [
    b"multi", 1, [b"noscript", b"loading", b"stale", b"fast", b"allow_busy"], 0, 0, 0,
    [b"@fast", b"@transaction"], [], [], [],
]
DBSIZE = [
    b"dbsize", 1, [b"readonly", b"fast"], 0, 0, 0, [b"@keyspace", b"@read", b"@fast"],
    [b"request_policy:all_shards", b"response_policy:agg_sum"], [], [],
]
TIME = [
    b"time", 1, [b"loading", b"stale", b"fast"], 0, 0, 0, [b"@fast"],
    [b"nondeterministic_output"], [], [],
]

REPLY = [
    GET, SET, SORT, MSET, EVAL, XREAD, XREADGROUP, ZUNIONSTORE, GEORADIUS, LMPOP, SINTERCARD,
    BLPOP, CONFIG, OBJECT, PING, MULTI, DBSIZE, TIME,
]


@pytest.fixture
def table() -> CommandTable:
    # Built per test: CommandTable sets routes on the CommandInfo objects it is given.
    return CommandTable.from_command_reply(REPLY)


def argv(line: str) -> list[bytes]:
    return [a.encode() for a in line.split()]


# -- key positions --------------------------------------------------------------------------------
KEY_CASES = [
    ("GET k", [1]),
    ("get k", [1]),
    ("SET k v EX 10", [1]),
    ("MSET a 1 b 2", [1, 3]),
    ("MSET a 1 b 2 c 3", [1, 3, 5]),
    ("MSET a 1 b", [1, 3]),
    ("EVAL s 2 k1 k2 a1", [3, 4]),
    ("EVAL s 0", []),
    ("EVAL s 0 a1 a2", []),
    ("EVAL s abc k", []),  # non-numeric numkeys: no keys, the backend reports the error
    ("EVAL s -1 k", []),
    ("EVAL s 01 k", []),  # string2ll is strict
    ("XREAD COUNT 2 STREAMS a b 0 0", [4, 5]),
    ("XREAD STREAMS a b 0 0", [2, 3]),
    ("XREAD BLOCK 0 streams a 0", [4]),
    ("XREAD STREAMS a b 0", [2]),
    ("XREAD COUNT 1 STREAMS a", []),
    ("XREADGROUP GROUP g c STREAMS a b 0 0", [5, 6]),
    ("XREADGROUP GROUP g c COUNT 1 STREAMS a >", [7]),
    ("ZUNIONSTORE dst 2 a b WEIGHTS 1 2", [1, 3, 4]),
    ("ZUNIONSTORE dst 1 a", [1, 3]),
    ("ZUNIONSTORE dst x a", []),
    ("GEORADIUS k 0 0 10 km", [1]),
    ("GEORADIUS k 0 0 10 km STORE dst", [1, 7]),
    ("GEORADIUS k 0 0 10 km store dst", [1, 7]),
    ("GEORADIUS k 0 0 10 km storedist dst", [1, 7]),
    ("GEORADIUS k 0 0 10 km WITHDIST STORE", [1]),  # keyword in last place: no key after it
    ("LMPOP 2 a b LEFT", [2, 3]),
    ("LMPOP 1 a RIGHT COUNT 3", [2]),
    ("LMPOP 3 a b LEFT", [2, 3, 4]),  # as Redis: numkeys counts LEFT as a key
    ("LMPOP x a LEFT", []),
    ("SINTERCARD 2 a b LIMIT 5", [2, 3]),
    ("SORT k", [1]),
    ("SORT k BY w_* GET # STORE dst", [1, 7]),
    ("SORT k LIMIT 0 10 STORE dst", [1, 6]),
    ("SORT k GET store STORE d", [1, 5]),
    ("SORT k STORE", [1]),
    ("sort k store dst", [1, 3]),
    # Redis sortGetKeys keeps only the *last* STORE ("This is same behavior as SORT"), and does
    # not skip the argument after STORE: it is scanned as an option too.
    ("SORT k STORE a STORE b", [1, 5]),
    ("SORT k STORE store x", [1, 4]),
    ("BLPOP a b 0", [1, 2]),
    ("OBJECT ENCODING k", [2]),
    ("PING", []),
    ("DBSIZE", []),
    # numkeys larger than the arguments that follow: Redis's "first or last is out of bounds,
    # which indicates a syntax error" -> the spec is invalid -> no keys at all.
    ("EVAL s 3 k1 k2", []),
    ("EVAL s 5 k1", []),
    ("ZUNIONSTORE dst 3 a b", []),
    ("LMPOP 3 a b", []),
    ("SINTERCARD 3 a b", []),
]


@pytest.mark.parametrize("line, positions", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_key_positions(table: CommandTable, line: str, positions: list[int]):
    a = argv(line)
    assert table.lookup(a).key_positions(a) == positions


@pytest.mark.parametrize(
    "name, single_key",
    [
        (b"GET", 1),
        (b"SET", 1),
        (b"MSET", 0),
        (b"EVAL", 0),
        (b"XREAD", 0),
        (b"ZUNIONSTORE", 0),
        (b"GEORADIUS", 0),
        (b"LMPOP", 0),
        (b"SORT", 0),
        (b"BLPOP", 0),
        (b"PING", 0),
    ],
)
def test_single_key(table: CommandTable, name: bytes, single_key: int):
    assert table.lookup([name]).single_key == single_key


def test_single_key_agrees_with_key_positions(table: CommandTable):
    for line in ("GET k", "SET k v", "SET k v NX GET"):
        a = argv(line)
        info = table.lookup(a)
        assert info.key_positions(a) == [info.single_key]


@pytest.mark.parametrize(
    "name, arity, readonly",
    [(b"GET", 2, True), (b"SET", -3, False), (b"XREAD", -4, True), (b"DBSIZE", 1, True)],
)
def test_info_fields(table: CommandTable, name: bytes, arity: int, readonly: bool):
    info = table.lookup([name])
    assert info.name == name
    assert info.arity == arity
    assert info.readonly is readonly


def test_flags_are_parsed(table: CommandTable):
    assert table.lookup([b"XREAD"]).flags == frozenset({b"readonly", b"blocking", b"movablekeys"})


# -- subcommands ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, name, route",
    [
        ("CONFIG GET maxmemory", b"CONFIG|GET", Route.ANY),  # one master answers
        ("config get maxmemory", b"CONFIG|GET", Route.ANY),
        ("CONFIG SET a b", b"CONFIG|SET", Route.ALL_NODES),  # every node, replicas too
        ("CONFIG NOSUCH", b"CONFIG", Route.ANY),  # the backend's own error
        ("CONFIG", b"CONFIG", Route.ANY),
        ("OBJECT ENCODING k", b"OBJECT|ENCODING", Route.KEYED),
        ("object encoding k", b"OBJECT|ENCODING", Route.KEYED),
        ("OBJECT HELP", b"OBJECT|HELP", Route.ANY),
        ("OBJECT", b"OBJECT", Route.ANY),
    ],
)
def test_subcommand_lookup(table: CommandTable, line: str, name: bytes, route: Route):
    info = table.lookup(argv(line))
    assert info.name == name
    assert info.route == route


def test_subcommand_info(table: CommandTable):
    info = table.lookup(argv("CONFIG GET maxmemory"))
    assert info.arity == -3
    assert b"admin" in info.flags
    assert info.why == ""


def test_command_policy_allow_and_deny():
    t = CommandTable.from_command_reply(REPLY, allow=["debug"], deny=["config|set", "KEYS"])
    assert t.lookup(argv("CONFIG SET a b")).route == Route.REFUSED
    assert "policy" in t.lookup(argv("CONFIG SET a b")).why
    assert t.lookup(argv("CONFIG GET a")).route == Route.ANY  # only the denied subcommand
    assert t.lookup([b"KEYS"]).route == Route.REFUSED
    assert t.lookup([b"DEBUG"]).route == Route.ANY  # refused by default, allowed here
    assert t.lookup([b"SHUTDOWN"]).route == Route.REFUSED


# -- routing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, route",
    [
        (b"PING", Route.LOCAL),
        (b"ping", Route.LOCAL),
        (b"MULTI", Route.LOCAL),
        (b"DBSIZE", Route.ALL_MASTERS),
        (b"BLPOP", Route.LEASED),  # flagged "blocking": on a connection of its own
        (b"XREAD", Route.KEYED),  # blocking only with BLOCK, decided per call
        (b"XREADGROUP", Route.KEYED),
        (b"GET", Route.KEYED),
        (b"EVAL", Route.KEYED),
        (b"SORT", Route.KEYED),
        (b"TIME", Route.ANY),  # keyless, no rule
        (b"CONFIG", Route.ANY),  # its subcommands carry the rules
        # in PROXY_RULES but absent from the COMMAND reply: still routed by the rule
        (b"HELLO", Route.LOCAL),
        (b"CLUSTER", Route.LOCAL),
        (b"KEYS", Route.ALL_MASTERS),
        (b"EXEC", Route.LOCAL),
        (b"SUBSCRIBE", Route.LOCAL),
    ],
)
def test_routes(table: CommandTable, name: bytes, route: Route):
    info = table.lookup([name])
    assert info.route == route
    if route == Route.REFUSED:
        assert info.why
    else:
        assert info.why == ""


def test_blocking_commands_are_leased_unless_a_rule_says_otherwise(table: CommandTable):
    assert table.lookup([b"BLPOP"]).route == Route.LEASED
    assert table.lookup([b"BLPOP"]).why == ""


def test_unknown_command_routes_to_any(table: CommandTable):
    info = table.lookup([b"NOSUCHCOMMAND", b"x"])
    assert info.route == Route.ANY
    assert info.key_positions([b"NOSUCHCOMMAND", b"x"]) == []
    assert b"NOSUCHCOMMAND" not in table


@pytest.mark.parametrize(
    "line, blocks",
    [
        ("XREAD BLOCK 0 STREAMS a 0", True),
        ("xread block 100 streams a 0", True),
        ("XREAD COUNT 1 STREAMS a 0", False),
        ("XREAD STREAMS a 0", False),
        ("XREADGROUP GROUP g c BLOCK 0 STREAMS a >", True),
        ("XREADGROUP GROUP g c STREAMS a >", False),
        ("GET BLOCK", False),
    ],
)
def test_blocks(table: CommandTable, line: str, blocks: bool):
    a = argv(line)
    assert table.blocks(table.lookup(a), a) is blocks


def test_every_proxy_rule_is_in_the_table(table: CommandTable):
    for name, (route, why) in PROXY_RULES.items():
        container, _, sub = name.partition(b"|")
        if sub and container not in table:
            continue  # a subcommand rule for a container the fixture does not list
        assert container in table
        info = table.lookup([container, sub] if sub else [name])
        if sub and info.name != name:
            continue  # a subcommand the fixture's COMMAND reply does not list
        assert (info.route, info.why) == (route, why)


def test_table_membership_and_names(table: CommandTable):
    assert b"get" in table and b"GET" in table
    names = table.names()
    assert names == sorted(names)
    assert {b"GET", b"SORT", b"XREAD", b"PING", b"MULTI"} <= set(names)
    assert len(table) == len(set(names))
