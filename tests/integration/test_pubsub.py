"""Pub/sub through the proxy (RESP2): SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE, their UNSUBSCRIBEs,
PUBLISH / SPUBLISH, PUBSUB introspection, the subscribed-mode rules.

1. Differential, byte for byte: the same bytes go on a fresh connection to a standalone
   redis-server and to the proxy in front of the session cluster; the replies (and the pushed
   messages) must be identical. Every scripted case ends with a PING, so a missing or an extra
   frame shows up as a difference too. Reference shapes (Redis 7.0 src/pubsub.c, the
   subscribed-mode check of processCommand in src/server.c) are also asserted literally.
2. What only a proxy in front of a cluster has: channels on every master, PUBLISH sent straight
   to a node (master or replica), CROSSSLOT for SSUBSCRIBE, PUBSUB counting the proxy's
   clients as one Redis would, many subscribers, disconnects, a slow subscriber cut off at
   ``limits.pubsub_output_buffer_limit``, ordinary clients undisturbed, at most one subscribed
   backend connection per node, nothing left subscribed on the nodes afterwards.
3. A private cluster (the session cluster is not disturbed): a shard channel's slot moved to
   another master, and a master killed with SIGKILL (its replica promoted); subscribers keep
   receiving. The number of messages lost during the failover gap is printed (run with -s or
   -rP to see it), only the resumed delivery is asserted.

Channel names carry a per-run id, and every test has its own names, so tests do not see each
other's messages (a PUBLISH in a cluster reaches every node).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import hiredis
import pytest
import redis

from rproxy.core import errors
from rproxy.core.resp import ReplyFramer, encode_command
from rproxy.core.slots import key_slot
from rproxy.localcluster import LocalCluster, Node
from tests.support import ProxyThread, node_client, proxy_config, wait_until
from tests.support import argv as A

RUN = uuid.uuid4().hex[:10]
PAYLOAD = b"payload \r\n\x00\xff " + RUN.encode()  # binary-safe, with CR LF inside


def name(*parts: str) -> bytes:
    """A channel (or key) name unique to this run: ``ps:<run>:<parts>``."""
    return ":".join(("ps", RUN, *parts)).encode()


def shard(*parts: str) -> bytes:
    """A shard channel name; its slot is that of ``{ps:<run>:<parts>}``."""
    return b"{" + name(*parts) + b"}ch"


# ---- reply shapes ---------------------------------------------------------------------------

def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def frame(*items: bytes | int | None) -> bytes:
    """A RESP2 array of bulk strings (bytes), integers (int) and nil bulks (None)."""
    out = [b"*%d\r\n" % len(items)]
    for item in items:
        if item is None:
            out.append(b"$-1\r\n")
        elif isinstance(item, int):
            out.append(b":%d\r\n" % item)
        else:
            out.append(bulk(item))
    return b"".join(out)


def message(channel: bytes, payload: bytes = PAYLOAD) -> bytes:
    return frame(b"message", channel, payload)


def pmessage(pattern: bytes, channel: bytes, payload: bytes = PAYLOAD) -> bytes:
    return frame(b"pmessage", pattern, channel, payload)


def smessage(channel: bytes, payload: bytes = PAYLOAD) -> bytes:
    return frame(b"smessage", channel, payload)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


PONG = b"+PONG\r\n"
PONG_SUBSCRIBED = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
NIL = b"$-1\r\n"


def not_allowed(command: bytes) -> bytes:
    return (b"-ERR Can't execute '" + command + b"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
            b"PING / QUIT / RESET are allowed in this context\r\n")


def parse(raw: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()


# ---- a raw client connection ----------------------------------------------------------------

class Conn:
    """A raw RESP2 client connection; frames are the exact bytes the server sent."""

    def __init__(self, port: int, *, rcvbuf: int | None = None) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so that the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.framer = ReplyFramer()
        self.pending: deque[bytes] = deque()
        self.eof = False

    def send(self, *commands: list[bytes]) -> None:
        self.sock.sendall(b"".join(encode_command(c) for c in commands))

    def _recv(self, deadline: float) -> None:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return
        self.pending.extend(self.framer.feed(data))

    def read(self, n: int = 1, timeout_s: float = 10.0) -> list[bytes]:
        """Exactly the next ``n`` frames; AssertionError (with what came) if they do not."""
        deadline = time.monotonic() + timeout_s
        while len(self.pending) < n:
            if self.eof or time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {n} frame(s) from port {self.port} within {timeout_s}s, got "
                    f"{list(self.pending)}" + (" and the connection closed" if self.eof else ""))
            self._recv(deadline)
        return [self.pending.popleft() for _ in range(n)]

    def poll(self, timeout_s: float) -> list[bytes]:
        """The frames available now, or the first ones to arrive within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.pending and not self.eof and time.monotonic() < deadline:
            self._recv(deadline)
        out = list(self.pending)
        self.pending.clear()
        return out

    def call(self, *words: object) -> bytes:
        self.send(A(*words))
        return self.read(1)[0]

    def read_until_closed(self, timeout_s: float) -> tuple[bool, int]:
        """Read (and count) the raw bytes until the server closes the connection or
        ``timeout_s`` passes. Returns (closed, bytes read)."""
        deadline = time.monotonic() + timeout_s
        total = sum(len(f) for f in self.pending)
        self.pending.clear()
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, min(1.0, deadline - time.monotonic())))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True, total
            if not data:
                return True, total
            total += len(data)
        return False, total

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Any]:
    """``connect(port)``: a new Conn, closed at the end of the test whatever happens."""
    opened: list[Conn] = []

    def factory(port: int, **kw: Any) -> Conn:
        conn = Conn(port, **kw)
        opened.append(conn)
        return conn

    try:
        yield factory
    finally:
        for conn in opened:
            conn.close()


def exchange(port: int, commands: list[list[bytes]], n_replies: int) -> list[bytes]:
    """``commands`` and a final PING pipelined on a fresh connection; ``n_replies`` frames
    plus the PING's reply (so a missing or extra frame changes the result)."""
    conn = Conn(port)
    try:
        conn.send(*commands, A("PING"))
        return conn.read(n_replies + 1)
    finally:
        conn.close()


# ---- 1. differential: one connection, scripted ----------------------------------------------

def _cases() -> dict[str, tuple[list[list[bytes]], int]]:
    def c(case: str, x: str = "a") -> bytes:
        return name("diff", case, x)

    def s(case: str, x: str = "a") -> bytes:  # shard channels of one case: one slot
        return b"{" + name("diff", case) + b"}" + x.encode()

    def k(case: str) -> bytes:
        return name("diff", case, "key")

    return {
        "subscribe_one": ([A("SUBSCRIBE", c("one"))], 1),
        "subscribe_several": ([A("SUBSCRIBE", c("sev", "a"), c("sev", "b"), c("sev", "c"))], 3),
        "subscribe_twice_to_the_same_channel": (
            [A("SUBSCRIBE", c("twice")), A("SUBSCRIBE", c("twice")),
             A("SUBSCRIBE", c("twice", "b"), c("twice"), c("twice", "b"))], 5),
        "subscribe_lowercase": ([A("subscribe", c("lc")), A("ping"), A("unsubscribe", c("lc"))],
                                3),
        "binary_and_empty_channel_names": (
            [A("SUBSCRIBE", c("bin") + b" \r\n\x00\xff", b""), A("UNSUBSCRIBE", b"")], 3),
        "psubscribe": ([A("PSUBSCRIBE", c("pat", "*"), c("pat", "?x"), c("pat", "[ab]")),
                        A("PSUBSCRIBE", c("pat", "*"))], 4),
        "mixed_subscribe_psubscribe_counts": (
            [A("SUBSCRIBE", c("mix")), A("PSUBSCRIBE", c("mix", "*")),
             A("SUBSCRIBE", c("mix", "b"), c("mix")),
             A("PSUBSCRIBE", c("mix", "*"), c("mix", "q*")),
             A("UNSUBSCRIBE", c("mix", "b")), A("PUNSUBSCRIBE", c("mix", "*"))], 8),
        "unsubscribe_one": ([A("SUBSCRIBE", c("u1", "a"), c("u1", "b")),
                             A("UNSUBSCRIBE", c("u1", "a"))], 3),
        "unsubscribe_all_when_subscribed_to_nothing": (
            [A("UNSUBSCRIBE"), A("PUNSUBSCRIBE"), A("SUNSUBSCRIBE")], 3),
        "unsubscribe_never_subscribed": (
            [A("UNSUBSCRIBE", c("never", "a"), c("never", "b")),
             A("PUNSUBSCRIBE", c("never", "*")), A("SUNSUBSCRIBE", s("never")),
             A("GET", k("never"))], 5),
        "unsubscribe_never_subscribed_while_subscribed": (
            [A("SUBSCRIBE", c("nvs")), A("UNSUBSCRIBE", c("nvs", "other")),
             A("PUNSUBSCRIBE", c("nvs", "*")), A("SUNSUBSCRIBE", s("nvs")), A("SUNSUBSCRIBE")],
            5),
        "ping_in_subscribed_mode": ([A("SUBSCRIBE", c("ping")), A("PING"), A("PING", "hello"),
                                     A("ping", "")], 4),
        "ping_wrong_arity_in_subscribed_mode": ([A("SUBSCRIBE", c("pingar")),
                                                 A("PING", "a", "b")], 2),
        "commands_refused_in_subscribed_mode": (
            [A("SUBSCRIBE", c("refused")), A("GET", k("refused")), A("SET", k("refused"), "v"),
             A("PUBLISH", c("refused"), "m"), A("SPUBLISH", s("refused"), "m"), A("ECHO", "hi"),
             A("SELECT", "0"), A("DBSIZE"), A("get", k("refused")), A("EXISTS", k("refused"))],
            10),
        # Redis 7.0 answers EXEC's refusal as an EXECABORT (rejectCommand -> execCommandAbort)
        "transaction_commands_refused_in_subscribed_mode": (
            [A("SUBSCRIBE", c("refusedtx")), A("MULTI"), A("GET", k("refusedtx")), A("EXEC"),
             A("DISCARD")], 5),
        "subcommands_refused_in_subscribed_mode": (
            [A("SUBSCRIBE", c("subcmd")), A("CONFIG", "GET", "maxmemory"), A("CLIENT", "ID"),
             A("PUBSUB", "NUMSUB", c("subcmd")), A("OBJECT", "ENCODING", k("subcmd"))], 5),
        "unknown_command_in_subscribed_mode": (
            [A("SUBSCRIBE", c("unknown")), A("NOSUCHCOMMAND", "a", "b"), A("CONFIG", "NOSUCH"),
             A("PING")], 4),
        "wrong_arity_in_subscribed_mode": (
            [A("PSUBSCRIBE", c("arity", "*")), A("GET"), A("SET", k("arity")), A("SUBSCRIBE"),
             A("PSUBSCRIBE"), A("SSUBSCRIBE")], 6),
        "wrong_arity": ([A("SUBSCRIBE"), A("PSUBSCRIBE"), A("SSUBSCRIBE"), A("PUBLISH", "x"),
                         A("SPUBLISH", "x")], 5),
        "reset_leaves_subscribed_mode": (
            [A("SUBSCRIBE", c("reset")), A("PSUBSCRIBE", c("reset", "*")),
             A("SSUBSCRIBE", s("reset")), A("RESET"), A("GET", k("reset")), A("UNSUBSCRIBE"),
             A("PUNSUBSCRIBE"), A("SUNSUBSCRIBE")], 8),
        "leaving_subscribed_mode_after_unsubscribing_everything": (
            [A("SUBSCRIBE", c("leave")), A("PSUBSCRIBE", c("leave", "*")),
             A("SSUBSCRIBE", s("leave")), A("UNSUBSCRIBE", c("leave")), A("GET", k("leave")),
             A("PUNSUBSCRIBE"), A("GET", k("leave")), A("SUNSUBSCRIBE", s("leave")),
             A("GET", k("leave"))], 9),
        "leaving_with_unsubscribe_all_of_one_channel": (
            [A("SUBSCRIBE", c("leave1")), A("UNSUBSCRIBE"), A("GET", k("leave1"))], 3),
        "ssubscribe_counts_only_shard_channels": (
            [A("SSUBSCRIBE", s("ss", "a")), A("SUBSCRIBE", c("ss")), A("SSUBSCRIBE", s("ss", "a")),
             A("SSUBSCRIBE", s("ss", "b"), s("ss", "c")), A("SUNSUBSCRIBE", s("ss", "a")),
             A("PING"), A("SUNSUBSCRIBE", s("ss", "b"), s("ss", "c")), A("SUNSUBSCRIBE"),
             A("UNSUBSCRIBE", c("ss"))], 11),
        "pubsub_introspection_errors": (
            [A("PUBSUB", "NUMSUB"), A("PUBSUB", "SHARDNUMSUB"), A("PUBSUB", "CHANNELS", "a", "b"),
             A("PUBSUB", "NOSUCH"), A("PUBSUB"), A("PUBSUB", "NUMPAT", "x"),
             A("PUBSUB", "CHANNELS", c("introerr", "*")),
             A("PUBSUB", "SHARDCHANNELS", c("introerr", "*")),
             A("PUBSUB", "NUMSUB", c("introerr"))], 9),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bytes_as_one_redis(case: str, proxy, standalone) -> None:
    commands, n_replies = CASES[case]
    want = exchange(standalone.port, commands, n_replies)
    got = exchange(proxy.port, commands, n_replies)
    assert got == want


@pytest.mark.parametrize("server", ["standalone", "proxy"])
def test_reference_reply_shapes(server: str, request, connect) -> None:
    """The shapes a client library relies on, literally (standalone: checks the reference)."""
    conn = connect(request.getfixturevalue(server).port)
    ch, key = name("shape", server), name("shape", server, "key")
    assert conn.call("UNSUBSCRIBE") == b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
    assert conn.call("PUNSUBSCRIBE") == b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
    assert conn.call("SUNSUBSCRIBE") == b"*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n"
    assert conn.call("SUBSCRIBE", ch) == b"*3\r\n$9\r\nsubscribe\r\n" + bulk(ch) + b":1\r\n"
    assert conn.call("PSUBSCRIBE", ch + b"*") == frame(b"psubscribe", ch + b"*", 2)
    assert conn.call("PING") == PONG_SUBSCRIBED
    assert conn.call("PING", "msg") == b"*2\r\n$4\r\npong\r\n$3\r\nmsg\r\n"
    assert conn.call("GET", key) == not_allowed(b"get")
    assert conn.call("CONFIG", "GET", "maxmemory") == not_allowed(b"config|get")
    assert conn.call("NOSUCHCOMMAND").startswith(b"-ERR unknown command 'NOSUCHCOMMAND'")
    assert conn.call("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert conn.call("UNSUBSCRIBE", ch) == frame(b"unsubscribe", ch, 1)
    assert conn.call("GET", key) == not_allowed(b"get")  # still subscribed to the pattern
    assert conn.call("RESET") == b"+RESET\r\n"
    assert conn.call("GET", key) == NIL
    assert conn.call("PING") == PONG


def _unsubscribe_all(port: int, tag: str) -> list[tuple[Any, ...]]:
    chans = [name("unsuball", tag, x) for x in "abcde"]
    pats = [name("unsuball", tag, x, "*") for x in "xyz"]
    conn = Conn(port)
    try:
        conn.send(A("SUBSCRIBE", *chans), A("PSUBSCRIBE", *pats), A("SSUBSCRIBE", shard("ua", tag)))
        head = conn.read(len(chans) + len(pats) + 1)
        conn.send(A("UNSUBSCRIBE"), A("PUNSUBSCRIBE"), A("SUNSUBSCRIBE"), A("GET", name("ua")))
        unsub = conn.read(len(chans))
        rest = conn.read(len(pats) + 2)
        conn.send(A("PING"))
        rest += conn.read(1)
    finally:
        conn.close()
    parsed = [parse(f) for f in unsub]
    # Redis walks a hash table for the channels: the order of the names is not defined, the
    # counts still go down one by one. Patterns are a list: their order is defined.
    return [tuple(head), (parsed[0][0], sorted(p[1] for p in parsed), [p[2] for p in parsed]),
            tuple(rest)]


def test_unsubscribe_all_of_several_channels(proxy, standalone) -> None:
    want = _unsubscribe_all(standalone.port, "x")
    got = _unsubscribe_all(proxy.port, "x")
    assert want[1] == (b"unsubscribe", sorted(name("unsuball", "x", c) for c in "abcde"),
                       [7, 6, 5, 4, 3])  # 5 channels + 3 patterns (shard channels apart)
    assert got == want


def test_quit_in_subscribed_mode(proxy, standalone) -> None:
    ch = name("quit")
    out = {}
    for server, port in (("standalone", standalone.port), ("proxy", proxy.port)):
        conn = Conn(port)
        try:
            conn.send(A("SUBSCRIBE", ch), A("QUIT"), A("PING"))
            frames = conn.read(2)
            assert conn.poll(10) == [] and conn.eof, f"{server}: the connection stays open"
            out[server] = frames
        finally:
            conn.close()
    assert out["standalone"] == [frame(b"subscribe", ch, 1), b"+OK\r\n"]
    assert out["proxy"] == out["standalone"]


# ---- 1. differential: delivery between connections ------------------------------------------

def _delivery_message(port: int, tag: str) -> list[bytes]:
    ch = name("dlv", tag)
    sub, pub = Conn(port), Conn(port)
    try:
        out = [sub.call("SUBSCRIBE", ch), pub.call("PUBLISH", ch, PAYLOAD)]
        out += sub.read(1)
        out.append(sub.call("PING"))
        return out
    finally:
        sub.close()
        pub.close()


def _delivery_pmessage(port: int, tag: str) -> list[bytes]:
    pat = name("dlvp", tag, "*")
    ch, other = name("dlvp", tag, "x"), name("dlvp-other", tag)
    sub, pub = Conn(port), Conn(port)
    try:
        out = [sub.call("PSUBSCRIBE", pat), pub.call("PUBLISH", other, PAYLOAD),
               pub.call("PUBLISH", ch, PAYLOAD)]
        out += sub.read(1)
        out.append(sub.call("PING"))
        return out
    finally:
        sub.close()
        pub.close()


def _delivery_channel_and_pattern(port: int, tag: str) -> list[bytes]:
    ch, pat = name("dlvb", tag, "ch"), name("dlvb", tag, "*")
    sub, pub = Conn(port), Conn(port)
    try:
        out = [sub.call("SUBSCRIBE", ch), sub.call("PSUBSCRIBE", pat),
               pub.call("PUBLISH", ch, PAYLOAD)]
        out += sorted(sub.read(2))  # Redis sends the message, then the pmessage
        out.append(sub.call("PING"))
        return out
    finally:
        sub.close()
        pub.close()


def _delivery_receivers_count(port: int, tag: str) -> list[bytes]:
    ch, pat = name("dlvn", tag, "ch"), name("dlvn", tag, "*")
    subs = [Conn(port) for _ in range(3)]
    psub, both, pub = Conn(port), Conn(port), Conn(port)
    try:
        out = [s.call("SUBSCRIBE", ch) for s in subs]
        out += [psub.call("PSUBSCRIBE", pat), both.call("SUBSCRIBE", ch),
                both.call("PSUBSCRIBE", pat)]
        out += [pub.call("PUBLISH", ch, PAYLOAD), pub.call("PUBLISH", name("dlvn-none", tag), "x")]
        for s in subs:
            out += s.read(1)
        out += psub.read(1)
        out += sorted(both.read(2))
        out += [c.call("PING") for c in (*subs, psub, both)]
        return out
    finally:
        for c in (*subs, psub, both, pub):
            c.close()


def _delivery_spublish(port: int, tag: str) -> list[bytes]:
    ch = shard("dlvs", tag)
    ssub, psub, pub = Conn(port), Conn(port), Conn(port)
    try:
        pat = b"*" + name("dlvs", tag) + b"*"
        out = [ssub.call("SSUBSCRIBE", ch), psub.call("PSUBSCRIBE", pat),
               pub.call("SPUBLISH", ch, PAYLOAD)]  # shard messages skip the patterns
        out += ssub.read(1)
        out.append(pub.call("PUBLISH", ch, PAYLOAD))  # global: the pattern, not the shard sub
        out += psub.read(1)
        out += [ssub.call("PING"), psub.call("PING")]
        return out
    finally:
        for c in (ssub, psub, pub):
            c.close()


def _delivery_after_unsubscribe(port: int, tag: str) -> list[bytes]:
    ch = name("dlvu", tag)
    sub, pub = Conn(port), Conn(port)
    try:
        out = [sub.call("SUBSCRIBE", ch), sub.call("UNSUBSCRIBE", ch),
               pub.call("PUBLISH", ch, PAYLOAD), sub.call("PING")]
        return out
    finally:
        sub.close()
        pub.close()


DELIVERY = {
    "message": _delivery_message,
    "pmessage": _delivery_pmessage,
    "channel_and_matching_pattern": _delivery_channel_and_pattern,
    "publish_counts_receivers": _delivery_receivers_count,
    "spublish": _delivery_spublish,
    "nothing_after_unsubscribe": _delivery_after_unsubscribe,
}


@pytest.mark.parametrize("case", sorted(DELIVERY))
def test_delivery_same_bytes_as_one_redis(case: str, proxy, standalone) -> None:
    want = DELIVERY[case](standalone.port, case)
    got = DELIVERY[case](proxy.port, case)
    assert got == want


def test_delivery_reference_shapes(standalone) -> None:
    """What the differential cases above compare, checked once against Redis itself."""
    got = _delivery_message(standalone.port, "ref")
    ch = name("dlv", "ref")
    assert got == [frame(b"subscribe", ch, 1), b":1\r\n",
                   b"*3\r\n$7\r\nmessage\r\n" + bulk(ch) + bulk(PAYLOAD), PONG_SUBSCRIBED]
    got = _delivery_receivers_count(standalone.port, "ref")
    assert got[6] == b":6\r\n" and got[7] == b":0\r\n"  # 3 + 1 pattern + 1 with both (2)
    got = _delivery_spublish(standalone.port, "ref")
    assert got[2] == b":1\r\n" and got[3] == smessage(shard("dlvs", "ref"))


def test_publish_right_after_an_unsubscribe_counts_nobody(proxy) -> None:
    """Found by the ioredis application test: the node counts the proxy's own subscription
    until it confirmed the proxy's UNSUBSCRIBE, so a PUBLISH sent just after the client saw its
    unsubscribe confirmation must not count it (one Redis answers 0 every time). A race: many
    clients at once make it show."""
    counts: list[bytes] = []

    def one_client(i: int) -> None:
        with closing(Conn(proxy.port)) as sub, closing(Conn(proxy.port)) as pub:
            for j in range(60):
                ch = name("unsub-race", str(i), str(j))
                sub.call("SUBSCRIBE", ch)
                sub.call("UNSUBSCRIBE", ch)
                counts.append(pub.call("PUBLISH", ch, "x"))

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(counts) == 12 * 60
    assert set(counts) == {b":0\r\n"}


# ---- 2. cluster-only behaviour --------------------------------------------------------------

def on_each_master(cluster: LocalCluster, make: Any) -> list[bytes]:
    """``make(i)`` names, one whose slot each current master owns (in masters() order)."""
    masters = [m.port for m in cluster.masters()]
    found: dict[int, bytes] = {}
    for i in range(2000):
        candidate = make(i)
        found.setdefault(cluster.master_of_slot(key_slot(candidate)).port, candidate)
        if len(found) == len(masters):
            return [found[p] for p in masters]
    raise AssertionError("no name found for every master")


def test_channels_on_every_master_deliver(proxy, cluster, connect) -> None:
    chans = on_each_master(cluster, lambda i: name("every", str(i)))
    shards = on_each_master(cluster, lambda i: shard("every", str(i)))
    pat = name("every", "*")
    sub, psub, ssub, pub = (connect(proxy.port) for _ in range(4))
    sub.send(A("SUBSCRIBE", *chans))
    assert sub.read(len(chans)) == [frame(b"subscribe", c, i + 1) for i, c in enumerate(chans)]
    assert psub.call("PSUBSCRIBE", pat) == frame(b"psubscribe", pat, 1)
    for i, s in enumerate(shards):  # separate commands: one Redis takes them all
        assert ssub.call("SSUBSCRIBE", s) == frame(b"ssubscribe", s, i + 1)
    for ch in chans:
        assert pub.call("PUBLISH", ch, PAYLOAD) == b":2\r\n", ch
        assert sub.read(1) == [message(ch)]
        assert psub.read(1) == [pmessage(pat, ch)]
    for s in shards:
        assert pub.call("SPUBLISH", s, PAYLOAD) == b":1\r\n", s
        assert ssub.read(1) == [smessage(s)]
    assert [c.call("PING") for c in (sub, psub, ssub)] == [PONG_SUBSCRIBED] * 3


def test_publish_straight_to_any_node_reaches_proxy_subscribers(proxy, cluster, connect) -> None:
    """A PUBLISH sent to a node (master or replica) without the proxy reaches the proxy's
    subscribers (the cluster bus carries it to every node); SPUBLISH to the slot's master."""
    ch, pat, sch = name("direct", "ch"), name("direct", "*"), shard("direct")
    sub, psub, ssub = connect(proxy.port), connect(proxy.port), connect(proxy.port)
    assert sub.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
    assert psub.call("PSUBSCRIBE", pat) == frame(b"psubscribe", pat, 1)
    assert ssub.call("SSUBSCRIBE", sch) == frame(b"ssubscribe", sch, 1)
    nodes = cluster.masters() + cluster.replicas()
    assert len(nodes) == 6
    for node in nodes:
        payload = b"from %d" % node.port
        with closing(node_client(node)) as direct:
            direct.publish(ch, payload)
        assert sub.read(1) == [message(ch, payload)], node.port
        assert psub.read(1) == [pmessage(pat, ch, payload)], node.port
    owner = cluster.master_of_slot(key_slot(sch))
    with closing(node_client(owner)) as direct:
        direct.execute_command("SPUBLISH", sch, b"direct")  # the shard's replicas get it too
    assert ssub.read(1) == [smessage(sch, b"direct")]


def test_ssubscribe_across_slots_is_refused(proxy, cluster, connect) -> None:
    a = shard("xslot", "a")
    b = next(shard("xslot", str(i)) for i in range(10) if key_slot(shard("xslot", str(i)))
             != key_slot(a))
    node = connect(cluster.masters()[0].port)  # what a cluster node itself answers
    assert node.call("SSUBSCRIBE", a, b) == errors.CROSSSLOT
    assert errors.CROSSSLOT == b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    conn = connect(proxy.port)
    assert conn.call("SSUBSCRIBE", a, b) == errors.CROSSSLOT
    assert conn.call("PING") == PONG  # not subscribed to anything
    assert conn.call("SSUBSCRIBE", a) == frame(b"ssubscribe", a, 1)
    assert conn.call("SSUBSCRIBE", a, b) == errors.CROSSSLOT  # allowed, still refused
    assert conn.call("SSUBSCRIBE", b) == frame(b"ssubscribe", b, 2)
    assert conn.call("SUNSUBSCRIBE", a) == frame(b"sunsubscribe", a, 1)


def test_pubsub_introspection_counts_proxy_clients(proxy, connect) -> None:
    x, y, z = name("intro", "x"), name("intro", "y"), name("intro", "z")
    p1, p2 = name("intro", "p1*"), name("intro", "p2*")
    s, t = shard("intro", "s"), shard("intro", "t")
    admin = connect(proxy.port)

    def numpat() -> int:
        return int(parse(admin.call("PUBSUB", "NUMPAT")))

    # NUMPAT is global: the earlier tests' clients are closed, their patterns must be gone
    wait_until(lambda: numpat() == 0, 10, "no pattern subscription left by earlier tests")
    subs = [connect(proxy.port) for _ in range(3)]
    for c in subs:
        assert c.call("SUBSCRIBE", x) == frame(b"subscribe", x, 1)
    assert subs[0].call("SUBSCRIBE", y) == frame(b"subscribe", y, 2)
    psubs = [connect(proxy.port) for _ in range(2)]
    for c in psubs:
        assert c.call("PSUBSCRIBE", p1) == frame(b"psubscribe", p1, 1)
    assert psubs[0].call("PSUBSCRIBE", p2) == frame(b"psubscribe", p2, 2)
    ssubs = [connect(proxy.port) for _ in range(2)]
    for c in ssubs:
        assert c.call("SSUBSCRIBE", s) == frame(b"ssubscribe", s, 1)

    assert admin.call("PUBSUB", "NUMSUB", x, y, z) == frame(x, 3, y, 1, z, 0)
    assert admin.call("PUBSUB", "NUMSUB") == b"*0\r\n"
    assert sorted(parse(admin.call("PUBSUB", "CHANNELS", name("intro", "*")))) == [x, y]
    everything = parse(admin.call("PUBSUB", "CHANNELS"))
    assert {x, y} <= set(everything) and len(everything) == len(set(everything)), everything
    assert numpat() == 2  # distinct patterns, as one Redis counts them
    assert parse(admin.call("PUBSUB", "SHARDCHANNELS", b"{" + name("intro") + b"*")) == [s]
    assert admin.call("PUBSUB", "SHARDNUMSUB", s, t) == frame(s, 2, t, 0)
    assert s in parse(admin.call("PUBSUB", "SHARDCHANNELS"))

    assert psubs[1].call("PUNSUBSCRIBE", p1) == frame(b"punsubscribe", p1, 0)
    assert numpat() == 2  # p1 is still held by psubs[0]
    assert psubs[0].call("PUNSUBSCRIBE", p2) == frame(b"punsubscribe", p2, 1)
    assert numpat() == 1
    assert subs[1].call("UNSUBSCRIBE", x) == frame(b"unsubscribe", x, 0)
    assert admin.call("PUBSUB", "NUMSUB", x, y) == frame(x, 2, y, 1)

    for c in (*subs, *psubs, *ssubs):
        c.close()

    def counts() -> list[Any]:
        return [admin.call("PUBSUB", "NUMSUB", x, y), numpat(),
                admin.call("PUBSUB", "SHARDNUMSUB", s),
                parse(admin.call("PUBSUB", "CHANNELS", name("intro", "*"))),
                parse(admin.call("PUBSUB", "SHARDCHANNELS", b"{" + name("intro") + b"*"))]

    gone = [frame(x, 0, y, 0), 0, frame(s, 0), [], []]
    try:
        wait_until(lambda: counts() == gone, 10, "the counts to drop once the clients are gone")
    except TimeoutError:
        assert counts() == gone


def test_many_subscribers_all_receive(proxy, connect) -> None:
    ch = name("many")
    subs = [connect(proxy.port) for _ in range(200)]
    for c in subs:
        c.send(A("SUBSCRIBE", ch))
    for c in subs:
        assert c.read(1) == [frame(b"subscribe", ch, 1)]
    pub = connect(proxy.port)
    assert pub.call("PUBSUB", "NUMSUB", ch) == frame(ch, 200)
    assert pub.call("PUBLISH", ch, PAYLOAD) == b":200\r\n"
    for i, c in enumerate(subs):
        assert c.read(1, timeout_s=20) == [message(ch)], i
    assert pub.call("PUBLISH", ch, b"second") == b":200\r\n"
    for i, c in enumerate(subs):
        assert c.read(1, timeout_s=20) == [message(ch, b"second")], i


def test_a_subscriber_that_disconnects_is_no_longer_counted(proxy, connect) -> None:
    ch = name("gone")
    subs = [connect(proxy.port) for _ in range(3)]
    for c in subs:
        assert c.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
    pub = connect(proxy.port)
    assert pub.call("PUBLISH", ch, PAYLOAD) == b":3\r\n"
    for c in subs:
        assert c.read(1) == [message(ch)]
    subs[0].close()
    wait_until(lambda: pub.call("PUBSUB", "NUMSUB", ch) == frame(ch, 2), 10, "NUMSUB 2")
    assert pub.call("PUBLISH", ch, b"two") == b":2\r\n"
    for c in subs[1:]:
        assert c.read(1) == [message(ch, b"two")]
    subs[1].close()
    subs[2].close()
    wait_until(lambda: pub.call("PUBSUB", "NUMSUB", ch) == frame(ch, 0), 10, "NUMSUB 0")
    assert pub.call("PUBLISH", ch, b"none") == b":0\r\n"


def test_a_slow_subscriber_is_disconnected_past_the_output_limit(cluster, connect) -> None:
    """A subscriber that never reads is closed once its unsent output passes
    limits.pubsub_output_buffer_limit (1 MiB here); 12 MB are published (more than the kernel
    buffers can hold). The fast subscriber and the publisher are not affected."""
    cfg = proxy_config(cluster.seeds, limits={"pubsub_output_buffer_limit": 1 << 20})
    with ProxyThread(cfg) as p:
        ch = name("slow")
        slow = connect(p.port, rcvbuf=4096)
        fast, pub = connect(p.port), connect(p.port)
        assert slow.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
        assert fast.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
        payload = b"x" * 100_000
        n = 120
        received: list[bytes] = []
        failure: list[BaseException] = []

        def read_fast() -> None:
            try:
                received.extend(fast.read(n, timeout_s=60))
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                failure.append(exc)

        reader = threading.Thread(target=read_fast)
        reader.start()
        try:
            replies: list[bytes] = []
            for _ in range(n // 10):
                pub.send(*[A("PUBLISH", ch, payload)] * 10)
                replies += pub.read(10, timeout_s=30)
        finally:
            reader.join(90)
        assert not failure, failure
        assert all(r in (b":1\r\n", b":2\r\n") for r in replies), set(replies)
        assert len(received) == n and set(received) == {message(ch, payload)}
        closed, got = slow.read_until_closed(30)
        assert closed, (f"the subscriber that does not read is still connected after "
                        f"{n * len(payload)} bytes published ({got} bytes were queued for it)")
        assert got < n * len(message(ch, payload))
        # the others go on
        assert pub.call("PING") == PONG
        assert pub.call("PUBSUB", "NUMSUB", ch) == frame(ch, 1)
        assert pub.call("PUBLISH", ch, PAYLOAD) == b":1\r\n"
        assert fast.read(1) == [message(ch)]
        assert fast.call("PING") == PONG_SUBSCRIBED


def test_ordinary_clients_are_not_disturbed(proxy, connect) -> None:
    """While messages stream to subscribers, other clients' replies are exactly theirs, and a
    client leaving subscribed mode mid-stream gets no message after its unsubscribe reply."""
    ch = name("busy")
    sub = connect(proxy.port)
    assert sub.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
    stop = threading.Event()
    published = [0]
    problems: list[str] = []

    def publish() -> None:
        try:
            with closing(proxy.client()) as r:
                while not stop.is_set():
                    r.publish(ch, str(published[0]))
                    published[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            problems.append(repr(exc))

    t = threading.Thread(target=publish)
    t.start()
    try:
        assert sub.read(1)[0].startswith(b"*3\r\n$7\r\nmessage\r\n")
        normal = connect(proxy.port)
        key, hkey = name("busy", "ctr"), name("busy", "hash")
        for i in range(1, 201):
            normal.send(A("INCR", key), A("GET", key), A("PING"), A("HSET", hkey, "f", i),
                        A("HGET", hkey, "f"))
            assert normal.read(5) == [integer(i), bulk(b"%d" % i), PONG,
                                      integer(1 if i == 1 else 0), bulk(b"%d" % i)], i
        leaver = connect(proxy.port)
        assert leaver.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
        assert leaver.read(1)[0].startswith(b"*3\r\n$7\r\nmessage\r\n")
        leaver.send(A("UNSUBSCRIBE", ch), A("GET", key), A("PING"), A("ECHO", "done"))
        while True:
            f = leaver.read(1)[0]
            if not f.startswith(b"*3\r\n$7\r\nmessage\r\n"):
                break
        assert [f, *leaver.read(3)] == [frame(b"unsubscribe", ch, 0), bulk(b"200"), PONG,
                                        bulk(b"done")]
        assert leaver.poll(0.5) == [], "a message after the unsubscribe reply"
    finally:
        stop.set()
        t.join(30)
    assert not problems, problems
    assert published[0] > 0
    # the subscriber gets every message, once (PUBLISH was acknowledged for each)
    frames = sub.read(published[0] - 1, timeout_s=30)
    assert all(f.startswith(b"*3\r\n$7\r\nmessage\r\n") for f in frames)
    assert sub.call("PING") == PONG_SUBSCRIBED


def test_messages_of_one_publisher_arrive_in_order(proxy, cluster, connect) -> None:
    """As from one Redis: the messages one connection publishes arrive in publishing order,
    also across channels on different masters (one subscriber for all of them)."""
    chans = on_each_master(cluster, lambda i: name("order", str(i)))
    sub, pub = connect(proxy.port), connect(proxy.port)
    sub.send(A("SUBSCRIBE", *chans))
    assert len(sub.read(len(chans))) == len(chans)
    expected = []
    for batch in range(10):
        commands = []
        for i in range(30):
            ch = chans[(batch + i) % len(chans)]
            body = b"%d" % (batch * 30 + i)
            commands.append(A("PUBLISH", ch, body))
            expected.append(message(ch, body))
        pub.send(*commands)
        assert pub.read(30) == [b":1\r\n"] * 30
    got = sub.read(len(expected), timeout_s=30)
    assert got == expected


def _subscribed_connections(node: Node) -> list[dict[str, str]]:
    with closing(node_client(node)) as c:
        return [cl for cl in c.client_list()
                if "P" in cl.get("flags", "")
                or cl.get("cmd") in ("subscribe", "psubscribe", "ssubscribe")
                or any(int(cl.get(f, "0")) > 0 for f in ("sub", "psub", "ssub"))]


def test_at_most_one_subscribed_backend_connection_per_node(proxy, cluster, connect) -> None:
    chans = on_each_master(cluster, lambda i: name("conns", str(i)))
    shards = on_each_master(cluster, lambda i: shard("conns", str(i)))
    clients = []
    for i in range(30):
        c = connect(proxy.port)
        kind = i % 3
        if kind == 0:
            c.send(A("SUBSCRIBE", *chans, name("conns", "own", str(i))))
            c.read(len(chans) + 1)
        elif kind == 1:
            c.send(A("PSUBSCRIBE", name("conns", str(i), "*")))
            c.read(1)
        else:
            s = shards[(i // 3) % len(shards)]
            assert c.call("SSUBSCRIBE", s) == frame(b"ssubscribe", s, 1)
        clients.append(c)
    nodes = cluster.masters() + cluster.replicas()
    per_node = {n.port: _subscribed_connections(n) for n in nodes}
    assert sum(len(v) for v in per_node.values()) >= 1, "no subscription on any node"
    too_many = {port: [(c.get("addr"), c.get("cmd"), c.get("sub"), c.get("psub"), c.get("ssub"))
                       for c in conns] for port, conns in per_node.items() if len(conns) > 1}
    assert not too_many, f"more than one subscribed connection on a node: {too_many}"
    # the subscriptions work
    pub = connect(proxy.port)
    assert pub.call("PUBLISH", chans[0], PAYLOAD) == b":10\r\n"
    for j, s in enumerate(shards):
        expected = sum(1 for i in range(2, 30, 3) if (i // 3) % len(shards) == j)
        assert pub.call("SPUBLISH", s, PAYLOAD) == integer(expected), s


def test_nothing_remains_subscribed_on_the_nodes_after_clients_leave(proxy, cluster,
                                                                     connect) -> None:
    chans = on_each_master(cluster, lambda i: name("cleanup", str(i)))
    shards = on_each_master(cluster, lambda i: shard("cleanup", str(i)))
    pat = name("cleanup", "*")
    nodes = cluster.masters() + cluster.replicas()

    def on_nodes() -> tuple[set[bytes], set[bytes], int]:
        chans_seen, shards_seen, numpat = set(), set(), 0
        for n in nodes:
            with closing(node_client(n)) as c:
                chans_seen |= set(c.execute_command("PUBSUB", "CHANNELS", name("cleanup", "*")))
                shards_seen |= set(c.execute_command("PUBSUB", "SHARDCHANNELS",
                                                     b"{" + name("cleanup") + b"*"))
                numpat += c.execute_command("PUBSUB", "NUMPAT")
        return chans_seen, shards_seen, numpat

    # (the earlier tests' clients are closed: no pattern may remain on the nodes)
    wait_until(lambda: on_nodes()[2] == 0, 10, "no pattern subscription left by earlier tests")
    clients = [connect(proxy.port) for _ in range(4)]
    clients[0].send(A("SUBSCRIBE", *chans))
    clients[0].read(len(chans))
    clients[1].send(A("PSUBSCRIBE", pat), A("SUBSCRIBE", chans[0]))
    clients[1].read(2)
    for s in shards:
        clients[2].call("SSUBSCRIBE", s)
    clients[3].call("SSUBSCRIBE", shards[0])
    during = on_nodes()
    assert during[0] == set(chans), during
    assert during[1] == set(shards), during
    assert during[2] >= 1, during
    clients[0].call("UNSUBSCRIBE", chans[1])  # some leave by unsubscribing, some by closing
    clients[2].send(A("SUNSUBSCRIBE"))
    clients[2].read(len(shards))
    for c in clients:
        c.close()
    wait_until(lambda: on_nodes()[:2] == (set(), set()), 10,
               "the nodes to drop the channels nobody listens to")
    wait_until(lambda: on_nodes()[2] == 0, 10, "the nodes to drop the pattern")


# ---- 3. a private cluster: slot move and failover -------------------------------------------

@pytest.fixture(scope="module")
def private() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _myid(node: Node) -> bytes:
    with closing(node_client(node)) as c:
        return c.execute_command("CLUSTER", "MYID")


def _kind_and_channel(raw: bytes) -> tuple[bytes, bytes, bytes]:
    value = parse(raw)
    return value[0], value[-2], value[-1]  # kind, channel, payload


def test_a_shard_subscriber_follows_its_slot_to_another_master(private) -> None:
    """The slot of a shard channel moves (CLUSTER SETSLOT, as the suite's migration tests):
    the old owner unsubscribes its shard subscribers of that slot (Redis 7.0 clusterDelSlot);
    the proxy's client keeps receiving SPUBLISHed messages, and sees nothing else."""
    with ProxyThread(proxy_config(private.seeds)) as p:
        ch = shard("move")
        slot = key_slot(ch)
        source = private.master_of_slot(slot)
        target = next(m for m in private.masters() if m.port != source.port)
        sub = Conn(p.port)
        try:
            assert sub.call("SSUBSCRIBE", ch) == frame(b"ssubscribe", ch, 1)
            with closing(p.client()) as r:
                assert r.execute_command("SPUBLISH", ch, b"before") == 1
                assert sub.read(1) == [smessage(ch, b"before")]

                src, dst = node_client(source), node_client(target)
                with closing(src), closing(dst):
                    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(source))
                    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(target))
                    for node in [target, source] + [m for m in private.masters()
                                                    if m not in (source, target)]:
                        with closing(node_client(node)) as c:
                            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(target))
                wait_until(lambda: private.master_of_slot(slot).port == target.port, 10,
                           "the slot to move")

                frames: list[bytes] = []
                n = [0]

                def delivered() -> bool:
                    n[0] += 1
                    try:
                        r.execute_command("SPUBLISH", ch, b"after %d" % n[0])
                    except redis.RedisError:
                        return False
                    frames.extend(sub.poll(0.5))
                    return any(f.startswith(b"*3\r\n$8\r\nsmessage\r\n") and b"after" in f
                               for f in frames)

                wait_until(delivered, 30, "an SPUBLISHed message after the slot move")
                assert all(_kind_and_channel(f)[:2] == (b"smessage", ch) for f in frames), frames
                wait_until(lambda: r.execute_command("SPUBLISH", ch, b"last") == 1, 10,
                           "SPUBLISH to count the proxy's subscriber at the new owner")
        finally:
            sub.close()


class _Collector(threading.Thread):
    """Reads one subscriber's frames in the background, with their arrival time."""

    def __init__(self, conn: Conn) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.frames: list[tuple[float, bytes]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and not self.conn.eof:
                for f in self.conn.poll(0.1):
                    self.frames.append((time.monotonic(), f))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc


class _Publisher(threading.Thread):
    """Publishes round after round (``seq`` in every channel) through the proxy; records which
    were acknowledged."""

    def __init__(self, port: int, chans: list[bytes], shard_chan: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.chans, self.shard_chan = port, chans, shard_chan
        self.seq = 0
        self.acked: dict[bytes, dict[int, float]] = {c: {} for c in (*chans, shard_chan)}
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, protocol=2, socket_timeout=10)
        try:
            while not self.stop.is_set():
                self.seq += 1
                seq = self.seq
                pipe = client.pipeline(transaction=False)
                for ch in self.chans:
                    pipe.publish(ch, str(seq))
                pipe.execute_command("SPUBLISH", self.shard_chan, str(seq))
                try:
                    results = pipe.execute(raise_on_error=False)
                except (redis.RedisError, OSError):
                    results = [None] * (len(self.chans) + 1)
                    client.close()
                now = time.monotonic()
                for ch, res in zip((*self.chans, self.shard_chan), results):
                    if isinstance(res, int):
                        self.acked[ch][seq] = now
                    else:
                        self.errors += 1
                time.sleep(0.02)  # pacing: about 50 rounds per second
        finally:
            client.close()


def test_subscribers_survive_a_master_failover(private) -> None:
    cfg = proxy_config(private.seeds, cluster={"failover_hold_s": 6.0})
    with ProxyThread(cfg) as p:
        chans = on_each_master(private, lambda i: name("fo", str(i)))
        masters = private.masters()
        victim = masters[0]  # chans[0] hashes to it
        sch = on_each_master(private, lambda i: shard("fo", str(i)))[0]
        assert private.master_of_slot(key_slot(sch)).port == victim.port
        pat = name("fo", "*")

        conns = {ch: Conn(p.port) for ch in chans}
        psub, ssub = Conn(p.port), Conn(p.port)
        collectors: dict[str, _Collector] = {}
        publisher = _Publisher(p.port, chans, sch)
        try:
            for ch, c in conns.items():
                assert c.call("SUBSCRIBE", ch) == frame(b"subscribe", ch, 1)
            assert psub.call("PSUBSCRIBE", pat) == frame(b"psubscribe", pat, 1)
            assert ssub.call("SSUBSCRIBE", sch) == frame(b"ssubscribe", sch, 1)
            expects: dict[str, tuple[Conn, bytes, list[bytes]]] = {
                **{f"subscribe {ch.decode()}": (c, b"message", [ch]) for ch, c in conns.items()},
                f"psubscribe {pat.decode()}": (psub, b"pmessage", chans),
                f"ssubscribe {sch.decode()}": (ssub, b"smessage", [sch]),
            }
            collectors = {who: _Collector(c) for who, (c, _, _) in expects.items()}
            for col in collectors.values():
                col.start()
            publisher.start()

            def seqs(who: str) -> list[tuple[bytes, int, float]]:
                return [(ch, int(body), t) for t, f in list(collectors[who].frames)
                        for _, ch, body in [_kind_and_channel(f)]]

            def all_received_after(seq: int) -> bool:
                return all(any(s > seq for _, s, _ in seqs(who)) for who in collectors)

            wait_until(lambda: all_received_after(3), 20, "delivery before the failover")
            t_kill = time.monotonic()
            seq_kill = publisher.seq
            private.kill(victim)  # SIGKILL
            private.wait_ok(60)  # the replica promoted, every node agrees
            t_settled = time.monotonic()
            seq_settled = publisher.seq
            late = {}
            for who in collectors:
                wait_until(lambda who=who: any(s > seq_settled for _, s, _ in seqs(who)), 60,
                           f"{who}: a message published after the failover settled")
                late[who] = time.monotonic() - t_settled
            # a steady stretch after the recovery, so that the figures cover it too
            wait_until(lambda: publisher.seq >= seq_settled + 50, 30, "50 rounds after")
        finally:
            publisher.stop.set()
            publisher.join(30)
            # what was acknowledged arrives within a few seconds, or not at all
            if collectors:
                try:
                    wait_until(lambda: all(max((s for _, s, _ in seqs(w)), default=0)
                                           >= publisher.seq - 1 for w in collectors), 10)
                except TimeoutError:
                    pass
            for col in collectors.values():
                col.stop.set()
                col.join(10)
            for c in (*conns.values(), psub, ssub):
                c.close()

        lines = [(f"pubsub failover: master {victim.port} killed at seq {seq_kill}, cluster ok "
                  f"after {t_settled - t_kill:.1f}s (seq {seq_settled}), {publisher.seq} rounds, "
                  f"{publisher.errors} publish errors")]
        for who, (_, kind, kind_chans) in expects.items():
            col = collectors[who]
            assert col.error is None, (who, col.error)
            bad = [f for _, f in col.frames
                   if _kind_and_channel(f)[0] != kind or _kind_and_channel(f)[1] not in kind_chans]
            assert not bad, f"{who}: frames other than its messages: {bad[:5]}"
            acked = {(ch, s) for ch in kind_chans for s in publisher.acked[ch]}
            got = [(ch, s) for ch, s, _ in seqs(who)]
            lost = sorted(acked - set(got), key=lambda cs: cs[1])
            times = sorted(t for _, _, t in seqs(who))
            gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
            span = f" (seq {lost[0][1]}..{lost[-1][1]})" if lost else ""
            lost_after = sum(1 for _, s in lost if s > seq_settled)
            lines.append(f"  {who}: {len(got)} received, {len(acked)} acknowledged, "
                         f"{len(lost)} lost{span} ({lost_after} of them published after ok), "
                         f"{len(got) - len(set(got))} duplicates, "
                         f"longest silence {gap:.2f}s, first post-failover message "
                         f"{late[who]:.2f}s after ok")
        print("\n".join(lines))
