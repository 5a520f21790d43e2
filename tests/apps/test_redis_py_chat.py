"""A chat on redis-py pub/sub, run against the standalone redis-server and through the proxy.

Two rooms, two publishers (threads, one room each, 60 messages each, at the same time) and
three subscribers, each reading its own way and each getting every message:
- alice: subscribe(general, random), reads with listen() in a thread;
- bob: psubscribe(room pattern), polls get_message(timeout=...);
- carol: subscribe(general) + psubscribe(r* rooms) with handlers (called by get_message).
Observed: the subscribe confirmations (with their counts), every subscriber's messages in order
per publisher, each PUBLISH's receiver count (3), PUBSUB NUMSUB / NUMPAT / CHANNELS as a "who
is online" view, PING while subscribed, the unsubscribe confirmations, and PUBLISH counting 0
once everyone left. redis-py with protocol=2, as the README's example (the push messages of
RESP3 would be read the same way by redis-py).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import redis

from tests.apps.compare import assert_same
from tests.support import wait_until

RUN = uuid.uuid4().hex[:8]
MESSAGES = 60


def chat_app(port: int) -> dict[str, Any]:
    prefix = f"chat:{RUN}:"
    general, random_ = f"{prefix}room:general", f"{prefix}room:random"

    def rel(value: Any) -> Any:
        if isinstance(value, bytes):
            value = value.decode()
        return value.replace(prefix, "") if isinstance(value, str) else value

    def msg(m: dict[str, Any]) -> list[Any]:
        return [m["type"], rel(m["pattern"]), rel(m["channel"]), rel(m["data"])]

    def client() -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=10)

    obs: dict[str, Any] = {"meta": {}}
    clients = [client() for _ in range(6)]
    admin, pub_general, pub_random, c_alice, c_bob, c_carol = clients
    alice, bob, carol = c_alice.pubsub(), c_bob.pubsub(), c_carol.pubsub()
    got: dict[str, list[list[Any]]] = {"alice": [], "bob": [], "carol": []}
    threads: list[threading.Thread] = []
    stop_carol = threading.Event()
    try:
        def confirmations(ps: redis.client.PubSub, n: int) -> list[list[Any]]:
            out = []
            while len(out) < n:
                m = ps.get_message(timeout=5)
                assert m is not None, f"no confirmation after {out}"
                out.append(msg(m))
            return out

        alice.subscribe(general, random_)
        bob.psubscribe(f"{prefix}room:*")
        carol.subscribe(**{general: lambda m: got["carol"].append(msg(m))})
        carol.psubscribe(**{f"{prefix}room:r*": lambda m: got["carol"].append(msg(m))})
        obs["confirmations"] = {"alice": confirmations(alice, 2), "bob": confirmations(bob, 1),
                                "carol": confirmations(carol, 2)}
        obs["ping_while_subscribed"] = None
        alice.ping("hello")
        obs["ping_while_subscribed"] = msg(alice.get_message(timeout=5))

        def listen_alice() -> None:
            for m in alice.listen():
                if m["type"] == "message":
                    got["alice"].append(msg(m))
                    if len(got["alice"]) == 2 * MESSAGES:
                        return

        def poll_bob() -> None:
            deadline = time.monotonic() + 20
            while len(got["bob"]) < 2 * MESSAGES and time.monotonic() < deadline:
                m = bob.get_message(timeout=0.5)
                if m is not None:
                    got["bob"].append(msg(m))

        def handle_carol() -> None:  # get_message() calls the handlers, returns None
            while not stop_carol.is_set():
                carol.get_message(timeout=0.2)

        threads = [threading.Thread(target=listen_alice, daemon=True),
                   threading.Thread(target=poll_bob, daemon=True)]
        carol_thread = threading.Thread(target=handle_carol, daemon=True)
        for t in [*threads, carol_thread]:
            t.start()

        online = admin.pubsub_numsub(general, random_, f"{prefix}room:empty")
        obs["numsub"] = [[rel(ch), n] for ch, n in online]
        obs["numpat_at_least"] = admin.pubsub_numpat() >= 2  # other tests may hold patterns
        obs["channels"] = sorted(rel(ch) for ch in admin.pubsub_channels(f"{prefix}*"))

        counts: dict[str, list[int]] = {"general": [], "random": []}

        def publisher(conn: redis.Redis, channel: str, who: str) -> None:
            for i in range(MESSAGES):
                counts[who].append(conn.publish(channel, f"{who}-{i}"))

        pubs = [threading.Thread(target=publisher, args=(pub_general, general, "general")),
                threading.Thread(target=publisher, args=(pub_random, random_, "random"))]
        for t in pubs:
            t.start()
        for t in pubs:
            t.join(20)
        obs["publish_counts"] = {who: sorted(set(c)) for who, c in counts.items()}
        obs["published"] = {who: len(c) for who, c in counts.items()}
        wait_until(lambda: all(len(m) >= 2 * MESSAGES for m in got.values()), 10,
                   f"every message to every subscriber ({ {k: len(v) for k, v in got.items()} })")
        stop_carol.set()
        for t in [*threads, carol_thread]:
            t.join(5)
        # per subscriber and per room (= per publisher): the order the publisher sent
        obs["received"] = {
            name: {room: [m[3] for m in msgs if m[2] == f"room:{room}"]
                   for room in ("general", "random")}
            for name, msgs in got.items()}
        obs["received_kinds"] = {name: sorted({(m[0], m[1] or "", m[2]) for m in msgs})
                                 for name, msgs in got.items()}

        alice.unsubscribe(random_)
        bob.punsubscribe()
        carol.unsubscribe()
        carol.punsubscribe()
        obs["unsubscribe_confirmations"] = {
            "alice": confirmations(alice, 1), "bob": confirmations(bob, 1),
            "carol": confirmations(carol, 2)}
        obs["publish_after_leaving"] = [admin.publish(general, "alice only"),
                                        admin.publish(random_, "nobody")]
        obs["alice_last"] = msg(alice.get_message(timeout=5))
        alice.unsubscribe()
        obs["alice_unsubscribed"] = confirmations(alice, 1)
        obs["publish_after_all_left"] = [admin.publish(general, "x"),
                                         admin.publish(random_, "y")]
        obs["numsub_after"] = [[rel(ch), n] for ch, n in admin.pubsub_numsub(general, random_)]
    finally:
        stop_carol.set()
        for ps in (alice, bob, carol):
            ps.close()
        for c in clients:
            c.close()
    return obs


def test_redis_py_chat(standalone, proxy) -> None:
    want = chat_app(standalone.port)
    sent = {room: [f"{room}-{i}" for i in range(MESSAGES)] for room in ("general", "random")}
    assert want["received"] == {"alice": sent, "bob": sent, "carol": sent}
    assert want["publish_counts"] == {"general": [3], "random": [3]}
    assert want["confirmations"] == {
        "alice": [["subscribe", None, "room:general", 1], ["subscribe", None, "room:random", 2]],
        "bob": [["psubscribe", None, "room:*", 1]],
        "carol": [["subscribe", None, "room:general", 1], ["psubscribe", None, "room:r*", 2]]}
    assert want["ping_while_subscribed"] == ["pong", None, None, "hello"]
    assert want["numsub"] == [["room:general", 2], ["room:random", 1], ["room:empty", 0]]
    assert want["channels"] == ["room:general", "room:random"]
    assert want["publish_after_leaving"] == [1, 0] and want["publish_after_all_left"] == [0, 0]
    assert want["alice_last"] == ["message", None, "room:general", "alice only"]
    try:
        got = chat_app(proxy.port)
    except Exception as exc:
        raise AssertionError(
            f"through the proxy the chat failed: {type(exc).__name__}: {exc}") from exc
    got["ok"] = want["ok"] = True
    assert_same(want, got)
