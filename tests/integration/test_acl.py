"""ACL users of rproxy's own (``auth.aclfile`` / ``auth.users``, rproxy/core/acl.py): the same
ACL file given to a standalone redis-server and to rproxy in front of the cluster, the same
bytes sent to both, the replies compared byte for byte -- AUTH as each user, Redis's NOPERM
texts for a command, a key and a channel, on every path (split and emulated commands,
transactions, scripts' declared keys, pub/sub), ACL WHOAMI / LIST / USERS / GETUSER / CAT /
DRYRUN / LOG; then redis-py as a restricted user over the whole cluster, the PROXY admin
permission, and the configuration's errors."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import redis

from rproxy.core import acl, resp
from rproxy.core.config import Config, ConfigError, load
from tests.support import (
    ProxyThread,
    RawConnection,
    StandaloneRedis,
    argv,
    proxy_config,
    wait_until,
)

RUN = uuid.uuid4().hex[:8]
USERS = [
    # keys app:*, channels chan:*, all but the admin and dangerous commands (no FLUSHALL).
    # (Rules by category: ACL LIST writes rules for single commands in the order of the
    # server's hash table, which differs from one redis-server process to another.)
    "user alice on >apw ~app:* &chan:* +@all -@dangerous -@admin",
    # reads of r:*, writes of w:*; everything but the dangerous commands
    "user bob on >bpw %R~r:* %W~w:* +@all -@dangerous",
    "user carol off >cpw ~* +get",  # disabled
    # a selector: GET anywhere under x:, SET only under app:
    "user dave on >dpw ~app:* +set (~x:* +get)",
    # every key, no string commands: the one-key commands it may run are routed inline
    "user erin on >epw ~* &* +@all -@string",
    "user default on nopass ~* &* +@all",
]


@pytest.fixture(scope="module")
def aclfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("acl") / "users.acl"
    path.write_text("\n".join(USERS) + "\n")
    return path


@pytest.fixture(scope="module")
def proxy(cluster, aclfile):  # type: ignore[no-untyped-def]
    config = proxy_config(cluster.seeds, auth={"aclfile": str(aclfile)},
                          commands={"cross_slot_writes": "emulate"})
    with ProxyThread(config) as p:
        yield p


@pytest.fixture(scope="module")
def single(aclfile):  # type: ignore[no-untyped-def]
    server = StandaloneRedis("--aclfile", str(aclfile)).start()
    try:
        yield server
    finally:
        server.stop()


def _same(proxy_port: int, redis_port: int, script: list[list[bytes]]) -> None:
    p, d = RawConnection(proxy_port), RawConnection(redis_port)
    try:
        for command in script:
            mine, theirs = p(*command), d(*command)
            if command[0] == b"HELLO":  # (the client ids differ)
                mine, theirs = (re.sub(rb"(\$2\r\nid\r\n):\d+", rb"\1:0", r)
                                for r in (mine, theirs))
            assert mine == theirs, command
    finally:
        p.close()
        d.close()


def test_users_and_denials_as_one_redis(proxy, single) -> None:
    k = f"app:{RUN}"
    script = [
        argv("ACL", "WHOAMI"),
        argv("ACL", "USERS"),
        argv("ACL", "LIST"),
        *[argv("ACL", "GETUSER", u) for u in ("alice", "bob", "dave", "nobody")],
        argv("AUTH", "alice", "wrong"),
        argv("AUTH", "carol", "cpw"),  # disabled
        argv("AUTH", "nobody", "x"),
        argv("AUTH", "alice", "apw"),
        argv("ACL", "WHOAMI"),
        argv("ACL", "LIST"),  # -@all +@read ...: not alice's
        argv("SET", f"{k}:1", "v"),
        argv("GET", f"{k}:1"),
        argv("GET", f"other:{RUN}"),  # a key outside app:*
        argv("FLUSHALL"),  # a command she may not run
        argv("CONFIG", "GET", "maxmemory"),  # a subcommand: 'config|get'
        argv("SCRIPT", "KILL"),  # @dangerous? no: answered (no script running)
        argv("NOPE"),  # unknown: Redis's error before the ACL's
        argv("GET"),  # the arity's too
        # split and multi-key commands: every key is checked, before any is touched
        argv("MSET", f"{k}:1", "a", f"{k}:2", "b", f"{k}:3", "c"),
        argv("MSET", f"{k}:4", "a", f"other:{RUN}", "b"),
        argv("MGET", f"{k}:1", f"{k}:2", f"{k}:4"),
        argv("DEL", f"{k}:2", f"other:{RUN}"),
        argv("EXISTS", f"{k}:2"),
        argv("SUNIONSTORE", f"{k}:s", f"{k}:a", f"{k}:b"),
        argv("SUNIONSTORE", f"other:{RUN}", f"{k}:a"),
        # scripts: the keys they declare
        argv("EVAL", "return redis.call('GET', KEYS[1])", 1, f"{k}:1"),
        argv("EVAL", "return 1", 1, f"other:{RUN}"),
        # transactions: a denied command flags the transaction, as any refused one
        argv("MULTI"),
        argv("SET", f"{k}:{{t}}", "1"),
        argv("SET", f"other:{RUN}", "1"),
        argv("EXEC"),
        argv("MULTI"),
        argv("SET", f"{k}:{{t}}", "2"),
        argv("GET", f"{k}:{{t}}"),
        argv("EXEC"),
        # pub/sub: channel patterns
        argv("PUBLISH", f"chan:{RUN}", "m"),
        argv("PUBLISH", f"other:{RUN}", "m"),
        argv("SPUBLISH", f"other:{RUN}", "m"),
        argv("SUBSCRIBE", f"other:{RUN}"),
        argv("PSUBSCRIBE", "chan:*"),  # a pattern must be one of hers, literally
        argv("PSUBSCRIBE", "chan:x*"),
        argv("SUBSCRIBE", f"chan:{RUN}"),
        argv("FLUSHALL"),  # subscribed: the ACL's error first, as Redis
        argv("GET", f"{k}:1"),  # allowed, but not while subscribed
        argv("UNSUBSCRIBE"),
        argv("ACL", "DRYRUN", "bob", "GET", "r:1"),  # +@all -@dangerous: ACL is dangerous
        argv("CLIENT", "KILL", "USER", "nobody"),
        # bob: reads of r:*, writes of w:*
        argv("AUTH", "bob", "bpw"),
        argv("SET", f"w:{{{RUN}}}", "x"),
        argv("GET", f"w:{{{RUN}}}"),
        argv("GET", f"r:{{{RUN}}}"),
        argv("SET", f"r:{{{RUN}}}", "x"),
        argv("RPUSH", f"r:{{{RUN}}}", "x"),
        argv("LMOVE", f"r:{{{RUN}}}", f"w:{{{RUN}}}", "LEFT", "LEFT"),  # read r, write w
        argv("LMOVE", f"w:{{{RUN}}}", f"r:{{{RUN}}}", "LEFT", "LEFT"),
        argv("COPY", f"r:{{{RUN}}}", f"w:{{{RUN}}}:2"),
        argv("FLUSHALL"),
        argv("ACL", "WHOAMI"),
        # dave: the root selector or the other one
        argv("AUTH", "dave", "dpw"),
        argv("SET", f"{k}:d", "1"),
        argv("GET", f"{k}:d"),  # GET only on x:*
        argv("GET", f"x:{RUN}"),
        argv("SET", f"x:{RUN}", "1"),
        argv("DEL", f"{k}:d"),
        # erin: any key, but no string commands (the others take rproxy's inline path)
        argv("AUTH", "erin", "epw"),
        argv("LPUSH", f"{k}:l", "a"),
        argv("GET", f"{k}:1"),
        argv("SET", f"{k}:1", "x"),
        argv("LLEN", f"{k}:l"),
        argv("MGET", f"{k}:1", f"{k}:l"),
        argv("DEL", f"{k}:l"),
        argv("RESET"),  # back to the default user
        argv("ACL", "WHOAMI"),
        argv("DEL", f"{k}:1", f"{k}:3", f"{k}:{{t}}", f"w:{{{RUN}}}", f"w:{{{RUN}}}:2",
             f"r:{{{RUN}}}", f"{k}:d"),
    ]
    _same(proxy.port, single.port, [argv("ACL", "LOG", "RESET")])
    _same(proxy.port, single.port, script)
    # ACL LOG: the same entries (the client's line and the age aside)
    logs = [[dict(zip(e[::2], e[1::2]))
             for e in _ask(port, "ACL", "LOG", "100")]  # type: ignore[attr-defined]
            for port in (proxy.port, single.port)]
    fields = (b"count", b"reason", b"context", b"object", b"username")
    assert [[e[f] for f in fields] for e in logs[0]] == [[e[f] for f in fields] for e in logs[1]]
    assert len(logs[0]) > 10
    assert all(b"user=" in e[b"client-info"] for e in logs[0])
    # INFO's acl_access_denied_* (Redis 7.2's fields; ACL LOG RESET leaves them): the denials
    # the standalone server logged, by reason
    info = redis.Redis(port=proxy.port).info("stats")
    for reason, field in ((b"auth", "auth"), (b"command", "cmd"), (b"key", "key"),
                          (b"channel", "channel")):
        logged = sum(e[b"count"] for e in logs[1] if e[b"reason"] == reason)
        assert info[f"acl_access_denied_{field}"] == logged > 0, reason


def test_resp3_and_hello_auth_as_one_redis(proxy, single) -> None:
    _same(proxy.port, single.port, [
        argv("HELLO", "3", "AUTH", "alice", "wrong"),
        argv("HELLO", "3", "AUTH", "alice", "apw"),
        argv("ACL", "WHOAMI"),
        argv("ACL", "GETUSER", "dave"),
        argv("GET", f"other:{RUN}"),
        argv("ACL", "LOG", "1"),  # alice may not (ACL LOG is @admin)
        argv("AUTH", "default", "anything"),  # nopass
        argv("ACL", "CAT"),
        argv("ACL", "CAT", "nope"),
        argv("ACL", "GENPASS", "0"),
        argv("ACL", "DRYRUN", "alice", "SET", f"app:{RUN}", "v"),
        argv("ACL", "DRYRUN", "alice", "PUBLISH", "x", "m"),
        argv("ACL", "DRYRUN", "nobody", "GET", "x"),
        argv("ACL", "DRYRUN", "alice", "NOPE"),
        argv("ACL", "DRYRUN", "alice", "GET"),
        argv("ACL", "NOPE"),
        argv("ACL", "HELP"),
    ])


def _ask(port: int, *args: object) -> object:
    c = RawConnection(port)
    try:
        return resp.parse_reply(c(*args))
    finally:
        c.close()


def test_acl_cat_lists_the_clusters_commands(proxy, single) -> None:
    """The same commands in each category (in the order of each server's hash table, so
    compared as sets), and the proxy's own PROXY among the admin commands."""
    for category in acl.CATEGORIES:
        p, d = (set(_ask(port, "ACL", "CAT", category))  # type: ignore[call-overload]
                for port in (proxy.port, single.port))
        assert p - {b"proxy"} == d, category
    assert b"proxy" in _ask(proxy.port, "ACL", "CAT", "admin")  # type: ignore[operator]


def test_inline_commands_of_a_user_restricted_by_command(proxy) -> None:
    """A user with every key but not every command: a pipeline of one-key commands, those it
    may run routed inline, the others refused."""
    c = RawConnection(proxy.port)
    try:
        assert c("AUTH", "erin", "epw") == resp.OK
        replies = c.pipeline([argv("LPUSH", f"x:{RUN}:{i % 7}", i) if i % 2 else
                              argv("GET", f"x:{RUN}:{i % 7}") for i in range(200)])
        assert c("DEL", *[f"x:{RUN}:{i}" for i in range(7)]) == b":7\r\n"
    finally:
        c.close()
    noperm = b"-NOPERM this user has no permissions to run the 'get' command\r\n"
    assert replies[0::2] == [noperm] * 100
    assert all(r.startswith(b":") for r in replies[1::2])


def test_a_pipelined_auth_restricts_what_follows_it(proxy) -> None:
    """The default user's commands take the fast path; after AUTH as a restricted user in the
    same read, the rest of that read is checked."""
    c = RawConnection(proxy.port)
    try:
        replies = c.pipeline([argv("SET", f"other:{RUN}:p", "1"), argv("AUTH", "alice", "apw"),
                              argv("SET", f"other:{RUN}:p", "2"), argv("GET", f"app:{RUN}:p"),
                              argv("AUTH", "default", "x"), argv("GET", f"other:{RUN}:p"),
                              argv("DEL", f"other:{RUN}:p")])
    finally:
        c.close()
    assert replies == [resp.OK, resp.OK, b"-NOPERM this user has no permissions to access one "
                       b"of the keys used as arguments\r\n", resp.NULL_BULK, resp.OK,
                       b"$1\r\n1\r\n", b":1\r\n"]


def test_restricted_user_through_redis_py_over_the_cluster(proxy) -> None:
    c = proxy.client(username="alice", password="apw")
    keys = [f"app:{RUN}:{i}" for i in range(40)]  # on every master
    c.mset({k: i for i, k in enumerate(keys)})
    assert c.mget(keys) == [str(i).encode() for i in range(40)]
    pipe = c.pipeline(transaction=False)
    for k in keys:
        pipe.incr(k)
    assert pipe.execute() == list(range(1, 41))
    with c.pipeline() as tx:  # MULTI / EXEC
        tx.set(f"app:{{{RUN}}}:a", "1").incr(f"app:{{{RUN}}}:a")
        assert tx.execute() == [True, 2]
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set(f"other:{RUN}", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.flushall()
    ps = c.pubsub()
    ps.subscribe(f"chan:{RUN}")
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    assert proxy.client().publish(f"chan:{RUN}", "hi") == 1
    message = ps.get_message(timeout=5)
    assert message is not None and message["data"] == b"hi"
    ps.close()
    assert c.client_info()["user"] == "alice"
    assert c.delete(*keys, f"app:{{{RUN}}}:a") == 41


def test_proxy_admin_commands_need_the_admin_permission(cluster, tmp_path) -> None:
    users = ("user default on nopass ~* &* +@all",
             "ops on >ops ~* &* -@all +proxy +ping",
             "app on >app ~* &* +@all -@admin")
    with ProxyThread(proxy_config(cluster.seeds, auth={"users": users})) as p:
        assert p.client().execute_command("PROXY", "INFO")
        assert p.client(username="ops", password="ops").execute_command("PROXY", "INFO")
        with pytest.raises(redis.exceptions.NoPermissionError, match="'proxy' command"):
            p.client(username="app", password="app").execute_command("PROXY", "INFO")
        c = RawConnection(p.port)
        assert c("AUTH", "app", "app") == resp.OK
        assert c("PROXY", "CONFIG", "GET", "auth.users") == (
            b"-NOPERM this user has no permissions to run the 'proxy' command\r\n")
        assert c("AUTH", "default", "") == resp.OK
        config = resp.parse_reply(c("PROXY", "CONFIG", "GET", "auth.users"))
        assert config == [b"auth.users", b"(redacted)"]  # (rules may hold passwords)
        assert c("ACL", "SETUSER", "eve", "on").startswith(b"-ERR rproxy: 'acl setuser' is not")
        c.close()


def test_a_rule_naming_an_unknown_command_makes_its_user_unusable(cluster, capfd) -> None:
    users = ("user typo on >pw ~* +gett",)
    with ProxyThread(proxy_config(cluster.seeds, auth={"users": users})) as p:
        c = RawConnection(p.port)
        assert c("AUTH", "typo", "pw") == (
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        assert c("PING") == b"+PONG\r\n"
        c.close()
        wait_until(lambda: "acl_user_unusable" in "".join(capfd.readouterr()), 5, "logged")


def test_configuration_errors_are_redis_s(tmp_path) -> None:
    def config(**auth: object) -> Config:
        return load(overrides={"auth": auth}, env={})

    with pytest.raises(ConfigError, match="use one of them"):
        config(users=["alice on"], aclfile=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="Unknown command or category"):
        config(users=["alice on +@nope"]).auth.acl_users()
    with pytest.raises(ConfigError, match="Syntax error"):
        config(users=["alice on junk"])
    with pytest.raises(ConfigError, match="64 characters"):
        config(users=["alice on #abc"])
    with pytest.raises(ConfigError, match="Duplicate user"):
        config(users=["alice on", "alice off"])
    with pytest.raises(ConfigError, match="default user's password"):
        load(overrides={"auth": {"users": ["default on >x ~* +@all"], "requirepass": "y"}},
             env={})
    (tmp_path / "bad.acl").write_text("alice on\n")
    with pytest.raises(ConfigError, match="should start with user keyword"):
        config(aclfile=str(tmp_path / "bad.acl"))
    # protected mode: a default user with a password is a password
    exposed = {"proxy": {"listen": "0.0.0.0:7777"}}
    with pytest.raises(ConfigError, match="not a loopback address"):
        load(overrides={**exposed, "auth": {"users": ["alice on >x ~* +@all"]}}, env={})
    load(overrides={**exposed, "auth": {"users": ["default on >x ~* &* +@all"]}}, env={})
