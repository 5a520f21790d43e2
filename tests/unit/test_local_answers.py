"""rproxy.core.local_commands: the commands the proxy answers itself, sans-IO. Each is a
function of the client's state, the arguments and a read-only view of the proxy; here the view
is a plain object, so the replies are checked without a socket or a cluster (the same commands
are checked against a real Redis in tests/integration/test_local_commands.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rproxy.core import errors, local_commands, resp
from rproxy.core.acl import Acl, parse_users
from rproxy.core.client import ClientInfo, ClientState
from rproxy.core.commands import CommandTable
from rproxy.core.local_commands import AllMasters, ToSlot


def _cmd(name: str, arity: int, subcommands: tuple[object, ...] = ()) -> list[object]:
    """One entry of a Redis 7 COMMAND reply (RESP2, as hiredis decodes it), keyless."""
    return [name.encode(), arity, [b"fast"], 0, 0, 0, [], [], [], list(subcommands)]


# The arities come from the backend's COMMAND reply (as in Redis 7.0); routes from the proxy.
TABLE = CommandTable.from_command_reply([
    _cmd("echo", 2), _cmd("ping", -1), _cmd("quit", -1), _cmd("select", 2), _cmd("auth", -2),
    _cmd("hello", -1), _cmd("reset", 1), _cmd("info", -1), _cmd("scan", -2),
    _cmd("client", -2, (_cmd("client|setname", 3), _cmd("client|getname", 2),
                        _cmd("client|id", 2), _cmd("client|info", 2), _cmd("client|list", -2))),
    _cmd("cluster", -2, (_cmd("cluster|keyslot", 3),)),
])


@dataclass
class View:
    proxy_version: str = "9.9.9"
    redis_version: str = "7.0.15"
    port: int = 7777
    process_id: int = 42
    run_id: str = "ab" * 20
    arch_bits: int = 64
    os_name: str = "Linux"
    uptime_s: int = 90061
    max_clients: int = 10000
    read_from: str = "master"
    masters: int = 3
    map_epoch: int = 5
    cpu_seconds: tuple[float, float] = (1.5, 2.25)
    cross_slot_transactions: str = "refuse"
    cross_slot_writes: str = "refuse"
    counters: dict[str, int] = field(default_factory=dict)
    rows: list[ClientInfo] = field(default_factory=list)
    order: list[int] = field(default_factory=lambda: [0, 5461, 10923])
    password: bytes = b""  # auth.requirepass
    now_ms: int = 1_000_000
    table_loaded: bool = False

    @property
    def acl(self) -> Acl:
        if self._acl is None:
            self._acl = Acl(parse_users([], "test", self.password.decode()))
        return self._acl

    _acl: Acl | None = None

    def stat(self, name: str) -> int:
        return self.counters.get(name, 0)

    def client(self, client_id: int) -> ClientInfo:
        return next((r for r in self.rows if r.id == client_id),
                    ClientInfo(client_id, "127.0.0.1:1", 9, b"", 0, 0, 0, 0, 0))

    def clients(self) -> list[ClientInfo]:
        return self.rows

    def scan_order(self) -> list[int]:
        return self.order


def run(client: ClientState, *words: bytes | str, view: View | None = None) -> object:
    argv = [w.encode() if isinstance(w, str) else w for w in words]
    return local_commands.run(client, TABLE.lookup(argv), argv, view or View())


@pytest.mark.parametrize("words, reply", [
    (("PING",), b"+PONG\r\n"),
    (("PING", "hi"), b"$2\r\nhi\r\n"),
    (("ECHO", "x y"), b"$3\r\nx y\r\n"),
    (("SELECT", "0"), b"+OK\r\n"),
    (("SELECT", "1"), errors.SELECT_NOT_ALLOWED),
    (("SELECT", "x"), errors.NOT_INTEGER),
    (("SELECT", "9999999999"), errors.INT_OUT_OF_RANGE),
    (("AUTH", "pw"), errors.AUTH_NO_PASSWORD),
    (("AUTH", "default", "pw"), b"+OK\r\n"),
    (("AUTH", "alice", "pw"), errors.WRONGPASS),
    (("HELLO", "4"), errors.NOPROTO),
    (("HELLO", "x"), errors.PROTOVER_NOT_INT),
    (("HELLO", "2", "FOO"), errors.hello_syntax(b"FOO")),
    (("CLUSTER", "KEYSLOT", "{user1000}.following"), b":3443\r\n"),
    (("ECHO",), errors.wrong_arity(b"echo")),
])
def test_replies(words: tuple[str, ...], reply: bytes):
    assert run(ClientState(7), *words) == reply


def test_names_and_quit_change_only_the_client_state():
    c = ClientState(7)
    assert run(c, "CLIENT", "SETNAME", "worker-1") == resp.OK
    assert c.name == b"worker-1"
    assert run(c, "CLIENT", "GETNAME") == b"$8\r\nworker-1\r\n"
    assert run(c, "CLIENT", "SETNAME", "bad name") == errors.BAD_CLIENT_NAME
    assert run(c, "CLIENT", "ID") == b":7\r\n"
    assert run(c, "RESET") == b"+RESET\r\n" and c.name == b""
    hello = run(c, "HELLO", "2", "SETNAME", "svc")
    assert c.name == b"svc"
    assert hello == resp.encode_value(
        [b"server", b"redis", b"version", b"7.0.15", b"proto", 2, b"id", 7, b"mode",
         b"standalone", b"role", b"master", b"modules", []])
    assert not c.quit
    assert run(c, "QUIT") == resp.OK and c.quit


def test_client_list_and_info_come_from_the_view():
    rows = [ClientInfo(1, "127.0.0.1:5000", 9, b"a", 10, 2, 0, 1, 0),
            ClientInfo(2, "127.0.0.1:5001", 10, b"", 3, 3, 5, 0, 7, "127.0.0.1:6379", b"Px",
                       2, 1, 0, 3)]
    view = View(rows=rows)
    line2 = (b"id=2 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=10 name= age=3 idle=3 flags=Px "
             b"db=0 sub=2 psub=1 ssub=0 multi=3 qbuf=5 qbuf-free=65531 argv-mem=0 multi-mem=0 "
             b"rbs=1024 rbp=0 obl=0 oll=0 omem=7 tot-mem=12 events=r cmd=NULL user=default "
             b"redir=-1 resp=2\n")
    assert run(ClientState(2), "CLIENT", "INFO", view=view) == resp.bulk(line2)
    listed = run(ClientState(2), "CLIENT", "LIST", view=view)
    assert isinstance(listed, bytes) and listed.endswith(line2 + b"\r\n")
    assert b"id=1 addr=127.0.0.1:5000 laddr= fd=9 name=a age=10 idle=2 " in listed


def test_info_local_sections_render_from_the_stats_table():
    view = View(counters={"retried_requests": 3, "held_expired": 1, "cluster_reachable": 1})
    raw = run(ClientState(1), "INFO", "server", "proxy", view=view)
    assert isinstance(raw, bytes)
    text = resp.parse_reply(raw).decode()  # type: ignore[union-attr]
    assert "# Server\r\nredis_version:7.0.15\r\n" in text
    assert "uptime_in_days:1\r\n" in text and "rproxy_version:9.9.9\r\n" in text
    assert "# Proxy\r\n" in text and "retried_requests:3\r\n" in text
    assert "held_expired:1\r\n" in text and "read_from:master\r\n" in text


def test_info_with_backend_sections_asks_every_master():
    out = run(ClientState(1), "INFO", "keyspace")
    assert isinstance(out, AllMasters) and out.readonly
    assert out.command == resp.encode_command([b"INFO", b"keyspace"])
    merged = out.merge([resp.bulk(b"# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n")] * 3)
    assert b"db0:keys=6,expires=0,avg_ttl=0" in merged


def test_scan_asks_one_master_and_rewrites_the_cursor():
    view = View()
    out = run(ClientState(1), "SCAN", "0", "COUNT", "10", view=view)
    assert isinstance(out, ToSlot) and out.slot == 0
    assert out.command == resp.encode_command([b"SCAN", b"0", b"COUNT", b"10"])
    # The first master says "more" (cursor 17): the client's cursor names it and its epoch.
    reply = out.merge([b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"])
    cursor = 17 << 22 | 5 << 14 | 0
    assert reply == b"*2\r\n" + resp.bulk(b"%d" % cursor) + b"*1\r\n$1\r\nk\r\n"
    # That master is done: the next cursor starts the second master.
    nxt = run(ClientState(1), "SCAN", str(cursor), view=view)
    assert isinstance(nxt, ToSlot) and nxt.slot == 0
    done = nxt.merge([b"*2\r\n$1\r\n0\r\n*0\r\n"])
    assert done == b"*2\r\n" + resp.bulk(b"%d" % (5 << 14 | 5461)) + b"*0\r\n"
    assert run(ClientState(1), "SCAN", "-1", view=view) == errors.INVALID_CURSOR
    assert run(ClientState(1), "SCAN", "0", view=View(order=[])) == errors.NO_TOPOLOGY


def test_client_kill_parses_as_redis():
    c = ClientState(1)
    assert run(c, "CLIENT", "KILL", "127.0.0.1:5000") == local_commands.Kill(
        addr=b"127.0.0.1:5000", skipme=False, old_form=True)
    assert run(c, "CLIENT", "KILL", "ID", "7", "TYPE", "pubsub", "SKIPME", "no") == \
        local_commands.Kill(client_id=7, kind=b"pubsub", skipme=False)
    assert run(c, "CLIENT", "KILL", "ID", "0") == \
        b"-ERR client-id should be greater than 0\r\n"
    assert run(c, "CLIENT", "KILL", "TYPE", "x") == b"-ERR Unknown client type 'x'\r\n"
    assert run(c, "CLIENT", "KILL", "USER", "bob") == b"-ERR No such user 'bob'\r\n"
    assert run(c, "CLIENT", "KILL", "SKIPME", "maybe") == errors.SYNTAX
    assert run(c, "CLIENT", "KILL", "ID", "1", "TYPE") == errors.SYNTAX
    assert run(c, "CLIENT", "KILL", "NOPE", "1") == errors.SYNTAX


def test_client_reply_sets_the_mode():
    from rproxy.core.client import REPLY_OFF, REPLY_ON, REPLY_SKIP_NEXT
    c = ClientState(1)
    assert run(c, "CLIENT", "REPLY", "SKIP") == b"" and c.reply == REPLY_SKIP_NEXT
    assert run(c, "CLIENT", "REPLY", "OFF") == b"" and c.reply == REPLY_OFF
    assert run(c, "CLIENT", "REPLY", "SKIP") == b"" and c.reply == REPLY_OFF
    assert run(c, "CLIENT", "REPLY", "ON") == resp.OK and c.reply == REPLY_ON
    assert run(c, "CLIENT", "REPLY", "MAYBE") == errors.SYNTAX
    assert run(c, "CLIENT", "NO-EVICT", "on") == resp.OK
    assert run(c, "CLIENT", "NO-TOUCH", "off") == resp.OK
    assert run(c, "CLIENT", "NO-EVICT", "x") == errors.SYNTAX
