"""TLS to the cluster (``[cluster] tls``): a real 6-node cluster whose nodes speak only TLS
(``tls-port``, ``port 0``, ``tls-cluster yes``, client certificates required) and require a
password, with certificates the tests make (trustme). Everything a client does goes over TLS
to the nodes: the data path, the dedicated connections (blocking pops, WATCH), pub/sub, the
control plane (slot map, COMMAND, WAIT's offsets), MOVED to a TLS port; a wrong CA, a wrong
name or a plain proxy gets nowhere. Last, the issue's check as a new user would make it: a
proxy with a password and a restricted ACL user, a TLS listener, in front of this cluster,
used with redis-cli --tls and redis-py ssl=True."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import trustme

from rproxy.core.slots import key_slot
from rproxy.localcluster import LocalCluster, NodeTls
from tests.support import ProxyThread, keys_in_slots, proxy_config, wait_until

RUN = uuid.uuid4().hex[:8]
CLUSTER_PASSWORD = "cluster-" + uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("cluster-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    out = {"ca": d / "ca.pem", "cert": d / "node.pem", "key": d / "node.key",
           "other_ca": d / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    cert.private_key_pem.write_to_path(str(out["key"]))
    cert.cert_chain_pems[0].write_to_path(str(out["cert"]))
    trustme.CA().cert_pem.write_to_path(str(out["other_ca"]))
    return out


@pytest.fixture(scope="module")
def tls_cluster(files):  # type: ignore[no-untyped-def]
    c = LocalCluster(3, 1, password=CLUSTER_PASSWORD,
                     tls=NodeTls(str(files["cert"]), str(files["key"]), str(files["ca"])))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _config(tls_cluster, files, **cluster: object):  # type: ignore[no-untyped-def]
    settings = {"tls": True, "tls_ca_cert_file": str(files["ca"]),
                "tls_cert_file": str(files["cert"]), "tls_key_file": str(files["key"]),
                "password": CLUSTER_PASSWORD, **cluster}
    return proxy_config(tls_cluster.seeds, cluster=settings,
                        commands={"cross_slot_writes": "emulate"})


@pytest.fixture(scope="module")
def proxy(tls_cluster, files):  # type: ignore[no-untyped-def]
    with ProxyThread(_config(tls_cluster, files)) as p:
        yield p


def test_the_nodes_speak_only_tls(tls_cluster) -> None:
    with pytest.raises((ConnectionError, OSError)):
        with socket.create_connection(tls_cluster.seeds[0], timeout=2) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(100):
                raise ConnectionError("closed")


def test_everything_a_client_does_goes_over_tls(proxy) -> None:
    r = proxy.client()
    keys = keys_in_slots(6, f"ctls:{RUN}")
    assert r.mset({k: i for i, k in enumerate(keys)})
    assert r.mget(keys) == [str(i).encode() for i in range(6)]
    with r.pipeline(transaction=False) as pipe:
        for i in range(500):
            pipe.incr(keys[i % 6])
        assert pipe.execute()[-1] > 0
    with r.pipeline() as tx:  # WATCH / MULTI / EXEC on a lease
        tx.watch(keys[0])
        tx.multi()
        tx.set(keys[0], "tx")
        assert tx.execute() == [True]
    assert r.rename(keys[1], keys[2])  # emulated over two slots
    assert r.eval("return redis.call('GET', KEYS[1])", 1, keys[0]) == b"tx"
    assert r.wait(1, 2000) >= 1  # the replicas' offsets: the control plane over TLS

    def push_later() -> None:
        time.sleep(0.3)
        proxy.client().rpush(f"ctls:{RUN}:list", "woke")
    threading.Thread(target=push_later).start()
    assert r.blpop([f"ctls:{RUN}:list"], timeout=5) == (f"ctls:{RUN}:list".encode(), b"woke")
    ps = r.pubsub()
    ps.subscribe(f"ctls:{RUN}:chan")
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    wait_until(lambda: proxy.client().publish(f"ctls:{RUN}:chan", "hi") == 1, 5)
    message = ps.get_message(timeout=5)
    assert message is not None and message["data"] == b"hi"
    ps.close()
    r3 = proxy.client(protocol=3)  # the RESP3 plane's connections
    assert r3.get(keys[0]) == b"tx"
    assert r.delete(*keys, f"ctls:{RUN}:list") >= 5


def test_large_values_both_ways(proxy) -> None:
    """Records the node's socket takes in parts, and replies in many records."""
    r = proxy.client()
    big = b"y" * 5_000_000
    keys = keys_in_slots(3, f"ctls:{RUN}:big")
    with r.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.set(k, big)
        assert pipe.execute() == [True] * 3
    assert r.mget(keys) == [big] * 3
    assert r.delete(*keys) == 3


def test_moved_leads_to_a_tls_port(proxy, tls_cluster) -> None:
    """An empty slot moved to another master behind rproxy's back: the old master answers
    MOVED with the new one's TLS port, which rproxy follows over TLS."""
    key = f"ctls:{RUN}:moved"
    slot = key_slot(key.encode())
    src = tls_cluster.master_of_slot(slot)
    dst = next(m for m in tls_cluster.masters() if m.port != src.port)
    dst_id = tls_cluster._myid(dst)
    for node in tls_cluster.masters():
        tls_cluster._cmd(node, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
    moved = proxy.server.stats.get("moved_redirects")
    assert proxy.client().set(key, "v")
    assert proxy.client().get(key) == b"v"
    assert proxy.server.stats.get("moved_redirects") > moved
    proxy.client().delete(key)


@pytest.mark.parametrize("cluster", [
    {"tls_ca_cert_file": "other_ca"},  # the nodes' certificates do not verify
    {"tls_server_name": "wrong.example"},  # they do not name the expected host
    {"tls": False, "tls_ca_cert_file": "", "tls_cert_file": "", "tls_key_file": ""},
])
def test_a_node_that_does_not_verify_is_not_used(tls_cluster, files, cluster) -> None:
    cluster = {k: str(files[v]) if v in files else v for k, v in cluster.items()}
    with ProxyThread(_config(tls_cluster, files, **cluster)) as p:
        with pytest.raises(redis.exceptions.ResponseError, match="no cluster topology"):
            p.client().get(f"ctls:{RUN}")


def test_the_hostname_check_can_be_turned_off(tls_cluster, files) -> None:
    config = _config(tls_cluster, files, tls_server_name="wrong.example",
                     tls_check_hostname=False)
    with ProxyThread(config) as p:
        wait_until(lambda: p.client().set(f"ctls:{RUN}:h", "1"), 10)
        assert p.client().delete(f"ctls:{RUN}:h") == 1


def test_as_a_new_user_would(tls_cluster, files, tmp_path) -> None:
    """The issue's check: a password and a user restricted to app:*, a TLS listener, a TLS
    cluster with a password of its own; redis-cli --tls and redis-py ssl=True."""
    config = _config(tls_cluster, files).replace(
        "auth", requirepass="proxy-pw", users=("app on >app-pw ~app:* &app:* +@all -@dangerous",))
    config = config.replace("tls", listen="127.0.0.1:0", cert_file=str(files["cert"]),
                            key_file=str(files["key"]))
    with ProxyThread(config) as p:
        tls_port = p.server.tls_port
        app = redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, username="app",
                          password="app-pw", ssl_ca_certs=str(files["ca"]), socket_timeout=10)
        keys = [f"app:{RUN}:{i}" for i in range(20)]
        assert app.mset({k: "v" for k in keys}) and app.mget(keys) == [b"v"] * 20
        with pytest.raises(redis.exceptions.NoPermissionError,
                           match="no permissions to access one of the keys"):
            app.set(f"other:{RUN}", "x")
        with pytest.raises(redis.exceptions.AuthenticationError, match="invalid username"):
            redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, password="wrong",
                        ssl_ca_certs=str(files["ca"]), socket_timeout=10).ping()
        cli = ["redis-cli", "--tls", "--cacert", str(files["ca"]), "-p", str(tls_port),
               "--no-auth-warning"]
        out = subprocess.run([*cli, "--user", "app", "--pass", "app-pw", "GET", keys[0]],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert out.stdout.strip() == "v"
        out = subprocess.run([*cli, "-a", "proxy-pw", "SET", f"other:{RUN}", "x"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert out.stdout.strip() == "OK"  # the default user: the password, every key
        out = subprocess.run([*cli, "--user", "app", "--pass", "app-pw", "FLUSHALL"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert "NOPERM" in out.stdout + out.stderr
        # a client without TLS on the TLS port gets nothing
        with socket.create_connection(("127.0.0.1", tls_port), timeout=3) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            try:
                got = s.recv(100)
            except (ConnectionResetError, TimeoutError):
                got = b""
            assert b"PONG" not in got
        assert app.delete(*keys) == 20
        assert p.client(password="proxy-pw").delete(f"other:{RUN}") == 1
