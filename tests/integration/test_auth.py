"""A password on the proxy (``auth.requirepass``): before AUTH only AUTH, HELLO, QUIT and RESET
run, everything else gets Redis's ``-NOAUTH``, with Redis's stricter limits on unauthenticated
requests -- compared byte for byte with a standalone redis-server started with the same
``--requirepass``; then the whole cluster through redis-py with ``password=``; the password
never shown (PROXY CONFIG GET, CLIENT LIST, INFO, SLOWLOG, the logs); protected mode."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import pytest
import redis

from tests.support import (
    ProxyThread,
    RawConnection,
    StandaloneRedis,
    argv,
    keys_in_slots,
    proxy_config,
    raw_exchange,
)

PASSWORD = "s3cret-" + uuid.uuid4().hex[:6]
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def guarded(cluster):  # type: ignore[no-untyped-def]
    with ProxyThread(proxy_config(cluster.seeds, auth={"requirepass": PASSWORD})) as p:
        yield p


@pytest.fixture(scope="module")
def guarded_redis():  # type: ignore[no-untyped-def]
    server = StandaloneRedis("--requirepass", PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def test_before_and_after_auth_as_one_redis(guarded, guarded_redis) -> None:
    key = f"auth:{RUN}:k"
    script = [
        argv("GET", key),  # NOAUTH
        argv("NOPE", "x"),  # the unknown command's error first, as Redis checks it first
        argv("GET"),  # and the arity's
        argv("CLIENT", "NOPE"),
        argv("PING"),
        argv("AUTH", "wrong"),
        argv("AUTH", "someone", PASSWORD),
        argv("AUTH", "a", "b", "c"),
        argv("HELLO", "2", "SETNAME", "early"),  # NOAUTH (after SETNAME, as Redis)
        argv("HELLO", "3", "AUTH", "default", "wrong"),
        argv("HELLO", "4"),
        argv("AUTH", PASSWORD),
        argv("SET", key, "v"),
        argv("GET", key),
        argv("AUTH", "wrong"),  # a failed AUTH does not undo the first
        argv("GET", key),
        argv("CLIENT", "GETNAME"),
        argv("RESET"),  # back to the default user: unauthenticated again
        argv("GET", key),
        argv("AUTH", "default", PASSWORD),
        argv("DEL", key),
        argv("QUIT"),
    ]
    p, d = RawConnection(guarded.port), RawConnection(guarded_redis.port)
    try:
        for command in script:
            assert p(*command) == d(*command), command
    finally:
        p.close()
        d.close()


@pytest.mark.parametrize("payload", [
    b"*11\r\n" + b"$1\r\na\r\n" * 11,  # more than 10 arguments before AUTH
    b"*2\r\n$3\r\nSET\r\n$16385\r\n" + b"x" * 16385 + b"\r\n",  # a bulk over 16 KB
    b"*2\r\n$4\r\nAUTH\r\n$20000\r\n",  # refused as soon as the header arrives
])
def test_unauthenticated_limits_as_one_redis(guarded, guarded_redis, payload: bytes) -> None:
    assert raw_exchange(guarded.port, payload) == raw_exchange(guarded_redis.port, payload)


def test_the_limits_lift_after_auth(guarded) -> None:
    r = guarded.client(password=PASSWORD)
    key = f"auth:{RUN}:big"
    assert r.rpush(key, *[str(i) for i in range(20)]) == 20
    assert r.set(key + ":s", "x" * 100_000) and len(r.get(key + ":s")) == 100_000
    r.delete(key, key + ":s")


def test_the_cluster_through_a_password(guarded) -> None:
    r = guarded.client(password=PASSWORD)
    a, b, c = keys_in_slots(3, f"auth:{RUN}:m")
    assert r.mset({a: "1", b: "2", c: "3"}) and r.mget(a, b, c) == [b"1", b"2", b"3"]
    with r.pipeline(transaction=False) as pipe:
        assert pipe.incr(a).get(b).execute() == [2, b"2"]
    assert r.delete(a, b, c) == 3
    r3 = guarded.client(password=PASSWORD, protocol=3)
    assert r3.ping() and r3.get(a) is None
    with pytest.raises(redis.AuthenticationError):
        guarded.client(password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        guarded.client().get(a)  # no password: NOAUTH


def test_the_password_is_never_shown(guarded, capfd) -> None:
    r = guarded.client(password=PASSWORD)
    r.execute_command("PROXY", "CONFIG", "SET", "metrics.slowlog_log_slower_than", 0)
    try:
        config = r.execute_command("PROXY", "CONFIG", "GET", "auth.*")
        assert config[:4] == [b"auth.requirepass", b"(redacted)", b"auth.requirepass_file", b""]
        r.execute_command("AUTH", PASSWORD)
        r.execute_command("HELLO", "2", "AUTH", "default", PASSWORD)
        logged = r.execute_command("SLOWLOG", "GET", 5)
        assert [b"AUTH", b"(redacted)"] in [e[3] for e in logged]
        assert [b"HELLO", b"2", b"AUTH", b"(redacted)", b"(redacted)"] in [e[3] for e in logged]
        shown = [r.execute_command("CLIENT", "LIST"), r.execute_command("INFO", "everything"),
                 r.execute_command("PROXY", "CONFIG", "GET", "*"),
                 r.execute_command("PROXY", "INFO")]
        assert PASSWORD.encode() not in repr(shown).encode()
    finally:
        r.execute_command("PROXY", "CONFIG", "SET", "metrics.slowlog_log_slower_than", 10000)
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err


def test_protected_mode_refuses_an_open_port_without_a_password() -> None:
    """A real process: no listening beyond loopback without a password, unless told."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "rproxy", "--listen", f"0.0.0.0:{port}",
                           "--seed", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "is not a loopback address and no password is set" in done.stderr
    assert "RPROXY_AUTH_REQUIREPASS" in done.stderr and "protected_mode" in done.stderr
