"""Differential key extraction: rproxy's command table against Redis's own COMMAND GETKEYS.

The table is built exactly as the proxy builds it, from a server's raw ``COMMAND`` reply (read
here with a plain socket and hiredis: redis-py post-processes that reply). For each command
line, the keys the proxy would route by (``info.key_positions(argv)``) must be the keys
``COMMAND GETKEYS <argv...>`` returns on a standalone redis-server of the same version: same
keys, same order. Where Redis answers that the command has no key arguments, the proxy must find
none. A wrong answer here is a wrong route or a false CROSSSLOT.
"""

from __future__ import annotations

import shlex
import socket
from collections.abc import Iterator

import hiredis
import pytest

from rproxy.core.commands import PROXY_RULES, CommandTable, Route
from tests.support import StandaloneRedis


NO_KEYS = b"The command has no key arguments"


class RawConnection:
    """One socket to a server; commands encoded by hand, replies decoded by hiredis as is."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)

    def call(self, argv: list[bytes]) -> object:
        self.sock.sendall(
            b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv))
        reader = hiredis.Reader()
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                return reply

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def raw(standalone: StandaloneRedis) -> Iterator[RawConnection]:
    conn = RawConnection(standalone.port)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="module")
def command_reply(raw: RawConnection) -> list[object]:
    reply = raw.call([b"COMMAND"])
    assert isinstance(reply, list) and len(reply) > 200, reply
    return reply


@pytest.fixture(scope="module")
def table(command_reply: list[object]) -> CommandTable:
    return CommandTable.from_command_reply(command_reply)


def redis_keys(raw: RawConnection, argv: list[bytes]) -> list[bytes]:
    """Redis's answer; ``[]`` when it says the command has no key arguments. Any other error
    means the test line itself is wrong (arity, syntax), which fails the test."""
    reply = raw.call([b"COMMAND", b"GETKEYS", *argv])
    if isinstance(reply, hiredis.ReplyError):
        assert str(reply).encode().endswith(NO_KEYS), f"GETKEYS {argv!r}: {reply}"
        return []
    assert isinstance(reply, list), reply
    return reply


def proxy_keys(table: CommandTable, argv: list[bytes]) -> list[bytes]:
    info = table.lookup(argv)
    return [argv[i] for i in info.key_positions(argv)]


def line(text: str) -> list[bytes]:
    return [a.encode() for a in shlex.split(text)]


SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"

# Real command lines, every data type and every form of movable keys (keynum, keyword,
# keyword from the end, range with a step, getkeys procedures).
LINES = [
    # strings
    "GET k",
    "get k",
    "SET k v EX 10",
    "SET k v NX GET",
    "GETEX k PERSIST",
    "GETDEL k",
    "GETSET k v",
    "MSET a 1 b 2 c 3",
    "MSETNX a 1 b 2",
    "MGET a b c",
    "INCR k",
    "INCRBY k 5",
    "INCRBYFLOAT k 1.5",
    "APPEND k v",
    "SETRANGE k 0 v",
    "GETRANGE k 0 -1",
    "STRLEN k",
    "LCS a b LEN",
    "SETEX k 10 v",
    # bitmaps, bitfields, hyperloglog
    "SETBIT k 7 1",
    "BITCOUNT k 0 -1",
    "BITPOS k 1",
    "BITOP AND d a b",
    "BITOP NOT d a",
    "BITFIELD k GET u8 0 INCRBY u8 0 1",
    "BITFIELD_RO k GET u8 0",
    "PFADD k a b",
    "PFCOUNT a b",
    "PFMERGE d a b",
    # generic
    "DEL a b c",
    "UNLINK a b",
    "EXISTS a b a",
    "TOUCH a b",
    "TYPE k",
    "TTL k",
    "EXPIRE k 10 NX",
    "PEXPIREAT k 100000",
    "PERSIST k",
    "RENAME a b",
    "RENAMENX a b",
    "COPY a b REPLACE",
    "DUMP k",
    "RESTORE k 0 payload REPLACE",
    "OBJECT ENCODING k",
    "OBJECT FREQ k",
    "MEMORY USAGE k SAMPLES 5",
    "SORT k BY w_* GET o_* STORE dst",
    "SORT k LIMIT 0 10 ALPHA DESC",
    "sort k by w_* get # store dst",
    "SORT_RO k BY w_* GET o_*",
    "MIGRATE 127.0.0.1 6379 \"\" 0 5000 KEYS a b",
    "MIGRATE 127.0.0.1 6379 k 0 5000",
    "WATCH a b",
    # lists
    "LPUSH l a b",
    "RPUSHX l a",
    "LRANGE l 0 -1",
    "LINDEX l 0",
    "LPOS l a RANK 1",
    "LMOVE src dst LEFT RIGHT",
    "BLMOVE src dst LEFT RIGHT 0",
    "RPOPLPUSH src dst",
    "BRPOPLPUSH src dst 0",
    "BLPOP a b 0",
    "BRPOP a b c 1.5",
    "LMPOP 2 a b LEFT",
    "LMPOP 1 a RIGHT COUNT 3",
    "BLMPOP 0 2 a b LEFT",
    # sets
    "SADD s a b",
    "SMEMBERS s",
    "SMISMEMBER s a b",
    "SMOVE src dst m",
    "SINTER a b c",
    "SUNIONSTORE d a b",
    "SINTERSTORE d a b",
    "SDIFFSTORE d a b c",
    "SINTERCARD 2 a b LIMIT 1",
    "SINTERCARD 3 a b c",
    # sorted sets
    "ZADD z 1 a",
    "ZRANGE z 0 -1 WITHSCORES",
    "ZRANGESTORE d src 0 -1",
    "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
    "ZINTERSTORE d 2 a b AGGREGATE MAX",
    "ZDIFFSTORE d 2 a b",
    "ZUNION 2 a b WITHSCORES",
    "ZINTER 3 a b c",
    "ZDIFF 2 a b",
    "ZINTERCARD 2 a b LIMIT 1",
    "ZMPOP 2 a b MIN COUNT 2",
    "BZMPOP 0 2 a b MAX",
    "BZPOPMIN a b 0",
    # hashes
    "HSET h f v f2 v2",
    "HGETALL h",
    "HMGET h f f2",
    "HINCRBY h f 1",
    "HRANDFIELD h 2 WITHVALUES",
    # streams
    "XADD s * f v",
    "XRANGE s - +",
    "XLEN s",
    "XDEL s 1-0",
    "XTRIM s MAXLEN 10",
    "XREAD COUNT 2 STREAMS s1 s2 0 0",
    "XREAD STREAMS s1 $",
    "XREAD BLOCK 0 STREAMS s1 s2 s3 0 0 0",
    "xread count 2 streams s1 s2 0 0",
    "XREADGROUP GROUP g c STREAMS s1 >",
    "XREADGROUP GROUP g c COUNT 1 NOACK STREAMS s1 s2 > >",
    "XGROUP CREATE s g $ MKSTREAM",
    "XGROUP DESTROY s g",
    "XACK s g 1-0 2-0",
    "XCLAIM s g c 0 1-0",
    "XAUTOCLAIM s g c 0 0",
    "XPENDING s g - + 10",
    "XINFO STREAM k",
    "XINFO GROUPS s",
    "XINFO CONSUMERS s g",
    # geo
    "GEOADD k 0 0 m",
    "GEODIST k a b km",
    "GEORADIUS k 0 0 1 km STORE dst",
    "GEORADIUS k 0 0 1 km STOREDIST dst",
    "GEORADIUS k 0 0 1 km WITHDIST",
    "GEORADIUSBYMEMBER k m 1 km STOREDIST dst",
    "GEORADIUSBYMEMBER k m 1 km STORE dst",
    "GEORADIUS_RO k 0 0 1 km",
    "GEOSEARCH k FROMMEMBER m BYRADIUS 1 km",
    "GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km",
    # scripting and functions
    'EVAL "return 1" 2 k1 k2 a1',
    'EVAL "return 1" 0 a1',
    'EVAL_RO "return 1" 1 k1',
    f"EVALSHA {SHA} 1 k1 a1",
    f"EVALSHA_RO {SHA} 2 k1 k2",
    "FCALL f 2 k1 k2 a",
    "FCALL_RO f 1 k1",
    "FCALL f 0",
    # keyless: Redis says no key arguments, so the proxy must find none (GETKEYS needs at least
    # one argument after the command name, so TIME, DBSIZE and the like cannot be asked)
    "PING x",
    "ECHO x",
    "PUBLISH ch msg",
    "KEYS pdiff:*",
    "SCAN 0 MATCH pdiff:* COUNT 10",
    "INFO server",
    "SELECT 0",
    "HELLO 2",
    "CONFIG GET maxmemory",
    "SUBSCRIBE ch",
    "WAIT 1 0",
    "SCRIPT EXISTS a",
    "CLIENT SETNAME x",
    "CLUSTER KEYSLOT k",
    "OBJECT HELP",
    "MEMORY STATS",
]


@pytest.mark.parametrize("text", LINES)
def test_key_positions_match_command_getkeys(text: str, raw: RawConnection,
                                             table: CommandTable) -> None:
    argv = line(text)
    assert proxy_keys(table, argv) == redis_keys(raw, argv)


def test_spublish_routes_by_its_shard_channel(raw: RawConnection, table: CommandTable) -> None:
    """SPUBLISH's channel is a NOT_KEY key spec: GETKEYS says the command has no key
    arguments, but in a cluster the channel's slot picks the node (sharded pub/sub), so the
    proxy must route by it: the proxy answers it itself (rproxy/core/local_commands.py
    ``_publish``: on the channel's slot, counting the proxy's subscribers). Not differential
    on purpose."""
    argv = line("SPUBLISH ch msg")
    assert redis_keys(raw, argv) == []
    assert proxy_keys(table, argv) == [b"ch"]
    assert table.lookup(argv).route == Route.LOCAL


# Malformed or unusual lines a client can send: what the proxy routes by must still be what a
# cluster node would extract (its getNodeByQuery uses these same key specs and procedures), or
# the client gets CROSSSLOT instead of the server's own error (or the other way round).
EDGE_LINES = [
    'EVAL "return 1" 5 k1',  # numkeys above the arguments given
    'EVAL "return 1" 3 k1 k2',
    'EVAL "return 1" -1 k1',  # negative numkeys
    'EVAL "return 1" x k1',  # numkeys not a number
    "ZUNIONSTORE d 3 a b",
    "XREAD STREAMS s1 s2 0",  # unbalanced streams/ids
    "SORT k STORE",  # STORE without a destination
    "GEORADIUS k 0 0 1 km STORE",
    "LMPOP 3 a b",
]


@pytest.mark.parametrize("text", EDGE_LINES)
def test_key_positions_of_malformed_lines(text: str, raw: RawConnection,
                                          table: CommandTable) -> None:
    argv = line(text)
    reply = raw.call([b"COMMAND", b"GETKEYS", *argv])
    expected = [] if isinstance(reply, hiredis.ReplyError) else reply
    assert proxy_keys(table, argv) == expected, f"GETKEYS replied {reply!r}"


def test_keyed_commands_are_never_answered_locally(command_reply: list[object],
                                                   table: CommandTable) -> None:
    """Every command (and subcommand) with key specs or a getkeys procedure goes to a backend
    chosen by its keys: never LOCAL, never ANY (a random master), unless PROXY_RULES says so."""
    wrong: list[str] = []
    checked = 0
    for entry in command_reply:
        name = bytes(entry[0]).upper()  # type: ignore[index]
        subs = [bytes(s[0]).upper() for s in entry[9]]  # type: ignore[index]
        for full in [name, *subs]:
            container = full.split(b"|", 1)[0]
            argv = full.split(b"|")
            info = table.lookup(argv)
            assert info.name == full, f"lookup({argv!r}) gave {info.name!r}"
            if not info.key_specs and info.keys_proc is None:
                continue
            checked += 1
            if container in PROXY_RULES:
                if info.route != PROXY_RULES[container][0]:
                    wrong.append(f"{full!r}: {info.route.name}, rule {PROXY_RULES[container]}")
            elif info.route in (Route.LOCAL, Route.ANY):
                wrong.append(f"{full!r}: {info.route.name}")
            elif info.route == Route.REFUSED and b"blocking" not in info.flags:
                wrong.append(f"{full!r}: REFUSED without a rule and not blocking")
    assert checked > 100
    assert not wrong, "\n".join(wrong)


def test_every_command_of_the_server_is_in_the_table(command_reply: list[object],
                                                     table: CommandTable) -> None:
    names = {bytes(e[0]).upper() for e in command_reply}  # type: ignore[index]
    missing = sorted(n for n in names if n not in table)
    assert not missing
