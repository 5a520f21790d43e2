"""TLS for clients (``[tls]``, ``--tls-listen``): a TLS listener beside the plain one, against
the real cluster, with certificates the tests make (trustme): redis-py ``ssl=True`` and
``redis-cli --tls``; large values both ways (records the socket takes in parts); a client
without TLS gets nothing; the handshake timeout; client certificates (``auth_clients``); the
lowest version; the certificate read again on SIGHUP."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import trustme

from tests.support import ProxyThread, keys_in_slots, proxy_config, wait_until

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(ca, tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tls")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@rproxy.test")
    out = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key",
           "client_cert": d / "client.pem", "client_key": d / "client.key"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    server.private_key_pem.write_to_path(str(out["key"]))
    server.cert_chain_pems[0].write_to_path(str(out["cert"]))
    client.private_key_pem.write_to_path(str(out["client_key"]))
    client.cert_chain_pems[0].write_to_path(str(out["client_cert"]))
    return out


def tls_config(cluster, files, **tls):  # type: ignore[no-untyped-def]
    return proxy_config(cluster.seeds, tls={"listen": "127.0.0.1:0", "cert_file": str(
        files["cert"]), "key_file": str(files["key"]), "handshake_timeout_s": 1.0, **tls})


@pytest.fixture(scope="module")
def secure(cluster, files):  # type: ignore[no-untyped-def]
    with ProxyThread(tls_config(cluster, files)) as p:
        yield p


def tls_client(p: ProxyThread, files: dict[str, Path], **kw: object) -> redis.Redis:
    kw.setdefault("protocol", 2)
    return redis.Redis(host="127.0.0.1", port=p.server.tls_port, ssl=True,
                       ssl_ca_certs=str(files["ca"]), socket_timeout=10, **kw)


def test_redis_py_over_tls_beside_plain_clients(secure, files) -> None:
    r = tls_client(secure, files)
    a, b, c = keys_in_slots(3, f"tls:{RUN}")
    big = b"x" * 5_000_000  # records the socket takes in parts, both ways
    assert r.set(a, big) and r.get(a) == big
    assert r.mset({b: "1", c: "2"}) and r.mget(a, b, c) == [big, b"1", b"2"]
    with r.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.incr(b)
        assert pipe.execute()[-1] == 2001
    plain = secure.client()  # the plain listener, side by side
    assert plain.get(b) == b"2001" and plain.get(a) == big
    r3 = tls_client(secure, files, protocol=3)
    assert r3.get(c) == b"2"
    assert r.delete(a, b, c) == 3


def test_redis_cli_over_tls(secure, files) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None
    key = f"tls:{RUN}:cli"
    base = [cli, "--tls", "--cacert", str(files["ca"]), "-h", "127.0.0.1", "-p",
            str(secure.server.tls_port)]
    assert subprocess.run([*base, "SET", key, "v"], capture_output=True, text=True,
                          timeout=30).stdout.strip() == "OK"
    assert subprocess.run([*base, "GET", key], capture_output=True, text=True,
                          timeout=30).stdout.strip() == "v"
    secure.client().delete(key)


def test_a_client_without_tls_gets_nothing(secure) -> None:
    before = secure.server.stats.tls_handshake_failures
    with socket.create_connection(("127.0.0.1", secure.server.tls_port), timeout=5) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"PONG" not in got and not got.startswith((b"+", b"-"))
    wait_until(lambda: secure.server.stats.tls_handshake_failures > before, 5, "counted")


def test_a_silent_client_is_closed_after_the_handshake_timeout(secure) -> None:
    with socket.create_connection(("127.0.0.1", secure.server.tls_port), timeout=5) as s:
        started = time.monotonic()
        assert s.recv(4096) == b""  # closed, not answered
        assert 0.8 < time.monotonic() - started < 4.5


def test_client_certificates(cluster, files) -> None:
    cfg = tls_config(cluster, files, ca_cert_file=str(files["ca"]), auth_clients="yes")
    with ProxyThread(cfg) as p:
        with_cert = tls_client(p, files, ssl_certfile=str(files["client_cert"]),
                               ssl_keyfile=str(files["client_key"]))
        assert with_cert.ping()
        with pytest.raises((redis.ConnectionError, ssl.SSLError, OSError)):
            tls_client(p, files).ping()  # no certificate: refused in the handshake


def test_the_lowest_version(cluster, files) -> None:
    with ProxyThread(tls_config(cluster, files, min_version="TLSv1.3")) as p:
        assert tls_client(p, files).ping()
        ctx = ssl.create_default_context(cafile=str(files["ca"]))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", p.server.tls_port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_the_certificate_is_read_again_on_reload(cluster, files, tmp_path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(files["cert"], cert)
    shutil.copy(files["key"], key)
    with ProxyThread(tls_config(cluster, files, cert_file=str(cert),
                                key_file=str(key))) as p:
        assert tls_client(p, files).ping()
        other = trustme.CA()  # the certificate rotated in place, by another CA
        issued = other.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        p.call(p.server.reload_tls)  # what SIGHUP does
        other_ca = tmp_path / "other-ca.pem"
        other.cert_pem.write_to_path(str(other_ca))
        assert redis.Redis(host="127.0.0.1", port=p.server.tls_port, ssl=True,
                           ssl_ca_certs=str(other_ca), socket_timeout=10).ping()
        with pytest.raises(redis.ConnectionError):
            tls_client(p, files).ping()  # the old CA no longer vouches for it


def test_client_list_names_the_listener_a_client_came_in_on(secure, files) -> None:
    """CLIENT LIST's laddr is the connection's local address: the TLS port for a TLS client
    (CLIENT KILL LADDR follows it)."""
    r = tls_client(secure, files)
    assert r.client_info()["laddr"] == f"127.0.0.1:{secure.server.tls_port}"
    assert secure.client().client_info()["laddr"] == f"127.0.0.1:{secure.port}"
    assert secure.client().client_kill_filter(laddr=f"127.0.0.1:{secure.server.tls_port}") >= 1
