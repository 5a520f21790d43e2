"""End to end without a cluster: a client pipelines through a real ``ClientSession``,
``Router`` and ``SharedPool`` to fake backends. Replies come back in request order whatever
order the backends answer in and however their streams are split; MOVED and ASK are followed
out of the client's sight; a lost connection re-sends what is safe and fails the rest with
OUTCOME_UNKNOWN."""

from __future__ import annotations

import pytest

from rproxy.core import errors
from rproxy.core.slots import SLOTS
from tests.shell.harness import (
    A,
    C,
    FakeBackend,
    cmd,
    open_shell,
    slot_of,
    wait_until,
)

HALF = SLOTS // 2
A_KEYS = (b"b", b"c", b"bar", b"k2")  # slots below HALF: backend A
B_KEYS = (b"a", b"foo", b"x", b"y")  # slots from HALF on: backend B


def test_key_layout() -> None:
    assert all(slot_of(k) < HALF for k in A_KEYS)
    assert all(slot_of(k) >= HALF for k in B_KEYS)


async def test_replies_in_request_order_when_backends_answer_in_reverse() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        client.send_commands(["SET", "b", "1"], ["GET", "a"], ["GET", "b"],
                             ["SET", "a", "xyz"], ["INCR", "c"], ["GET", "foo"])
        await a.expect_commands(["SET", "b", "1"], ["GET", "b"], ["INCR", "c"])
        await b.expect_commands(["GET", "a"], ["SET", "a", "xyz"], ["GET", "foo"])
        # B answers first: its replies wait behind A's first one
        await b.send(b"$-1\r\n+OK\r\n$3\r\nbar\r\n")
        assert not b.conn.fifo
        client.assert_nothing()
        await a.send(b"+OK\r\n$1\r\n1\r\n:1\r\n")
        await client.expect(b"+OK\r\n$-1\r\n$1\r\n1\r\n+OK\r\n:1\r\n$3\r\nbar\r\n")
        assert shell.stats.total_commands_processed == 6
        # and the session goes on: a second pipeline on the same connections
        client.send_commands(["GET", "k2"], ["GET", "x"])
        await a.expect_commands(["GET", "k2"])
        await b.expect_commands(["GET", "x"])
        await b.send(b"$2\r\nxx\r\n")
        client.assert_nothing()
        await a.send(b"$2\r\nk2\r\n")
        await client.expect(b"$2\r\nk2\r\n$2\r\nxx\r\n")


def expected_so_far(order: list[tuple[str, int]], replies: dict[str, list[bytes]],
                    received: dict[str, int]) -> bytes:
    """What the client has once each backend's first ``received`` bytes are in: the replies
    in request order, up to the first one not complete."""
    out = b""
    for backend, i in order:
        rs = replies[backend]
        if sum(len(r) for r in rs[: i + 1]) > received[backend]:
            break
        out += rs[i]
    return out


async def test_reply_streams_split_at_every_offset() -> None:
    a_replies = [b"$2\r\nv1\r\n", b"$-1\r\n"]  # GET b, GET c
    b_replies = [b"$5\r\nhello\r\n"]  # GET a
    a_stream, b_stream = b"".join(a_replies), b"".join(b_replies)
    order = [("a", 0), ("b", 0), ("a", 1)]
    everything = b"$2\r\nv1\r\n$5\r\nhello\r\n$-1\r\n"
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        replies = {"a": a_replies, "b": b_replies}
        # B whole first, then A in two pieces cut at every offset
        for cut in range(1, len(a_stream)):
            client.send_commands(["GET", "b"], ["GET", "a"], ["GET", "c"])
            await a.expect_commands(["GET", "b"], ["GET", "c"])
            await b.expect_commands(["GET", "a"])
            await b.send(b_stream)
            await a.send(a_stream[:cut])
            got = client.drain()
            assert got == expected_so_far(order, replies, {"a": cut, "b": len(b_stream)}), cut
            await a.send(a_stream[cut:])
            got += client.drain()
            assert got == everything, f"cut at {cut}"
        # B cut at every offset, A answering first in one piece
        for cut in range(1, len(b_stream)):
            client.send_commands(["GET", "b"], ["GET", "a"], ["GET", "c"])
            await a.expect_commands(["GET", "b"], ["GET", "c"])
            await b.expect_commands(["GET", "a"])
            await a.send(a_stream)
            got = client.drain()
            assert got == a_replies[0], cut
            await b.send_pieces(b_stream, [cut])
            got += client.drain()
            assert got == everything, f"cut at {cut}"
        # both one byte per read, interleaved, B first
        client.send_commands(["GET", "b"], ["GET", "a"], ["GET", "c"])
        await a.expect_commands(["GET", "b"], ["GET", "c"])
        await b.expect_commands(["GET", "a"])
        got = b""
        received = {"a": 0, "b": 0}
        for i in range(max(len(a_stream), len(b_stream))):
            for name, fb, stream in (("b", b, b_stream), ("a", a, a_stream)):
                if i < len(stream):
                    await fb.send(stream[i:i + 1])
                    received[name] += 1
                    got += client.drain()
                    assert got == expected_so_far(order, replies, received), received
        assert got == everything
        client.assert_nothing()


async def test_requests_split_at_every_byte_reach_the_backends_intact() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        pipeline = cmd("SET", "b", "v a l") + cmd("GET", "foo") + cmd("MGET", "a", "b")
        await client.send_bytewise(pipeline)
        await a.expect_commands(["SET", "b", "v a l"], ["MGET", "b"])
        await b.expect_commands(["GET", "foo"], ["MGET", "a"])
        await b.send(b"$1\r\nF\r\n*1\r\n$1\r\nA\r\n")
        await a.send(b"+OK\r\n*1\r\n$-1\r\n")
        await client.expect(b"+OK\r\n$1\r\nF\r\n*2\r\n$1\r\nA\r\n$-1\r\n")


async def test_fan_outs_merge_in_request_order() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        client.send_commands(["DBSIZE"], ["GET", "b"], ["MGET", "a", "b", "foo"])
        await a.expect_commands(["DBSIZE"], ["GET", "b"], ["MGET", "b"])
        await b.expect_commands(["DBSIZE"], ["MGET", "a"], ["MGET", "foo"])
        await b.send(b":4\r\n*1\r\n$2\r\nva\r\n*1\r\n$-1\r\n")
        client.assert_nothing()
        await a.send(b":3\r\n$2\r\nvb\r\n*1\r\n$2\r\nvb\r\n")
        await client.expect(b":7\r\n$2\r\nvb\r\n*3\r\n$2\r\nva\r\n$2\r\nvb\r\n$-1\r\n")


async def test_moved_is_followed_to_the_new_owner() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(["GET", "b"], ["SET", "c", "1"])
        await a.expect_commands(["GET", "b"], ["SET", "c", "1"])
        # the slot moved to a node the proxy has no connection to yet
        await a.send(b"-MOVED %d 127.0.0.1:7003\r\n+OK\r\n" % slot)
        c = shell.nodes.by_addr[C]
        await c.expect_commands(["GET", "b"])
        assert shell.router.slot_conn[slot] is c.conn  # the map follows the MOVED
        assert shell.router.slot_conn[slot_of("c")] is a.conn
        assert shell.nodes.refreshes == 1
        client.assert_nothing()  # the SET's +OK waits behind the GET
        await c.send(b"$3\r\nnew\r\n")
        await client.expect(b"$3\r\nnew\r\n+OK\r\n")
        # the next GET of that slot goes straight to the new owner
        client.send_commands(["GET", "b"])
        await c.expect_commands(["GET", "b"])
        a.assert_nothing()
        await c.send(b"$-1\r\n")
        await client.expect(b"$-1\r\n")


async def test_moved_to_a_known_node_split_at_every_byte() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(["GET", "b"])
        await a.expect_commands(["GET", "b"])
        await a.send_bytewise(b"-MOVED %d 127.0.0.1:7002\r\n" % slot)
        await b.expect_commands(["GET", "b"])
        await b.send_bytewise(b"$2\r\nbb\r\n")
        await client.expect(b"$2\r\nbb\r\n")
        assert shell.router.slot_conn[slot] is b.conn


async def test_ask_sends_asking_and_hides_its_reply() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(["GET", "b"], ["GET", "c"])
        await a.expect_commands(["GET", "b"], ["GET", "c"])
        await a.send(b"-ASK %d 127.0.0.1:7003\r\n$1\r\nC\r\n" % slot)
        c = shell.nodes.by_addr[C]
        await c.expect_commands(["ASKING"], ["GET", "b"])
        assert shell.router.slot_conn[slot] is a.conn  # ASK leaves the map alone
        assert shell.nodes.refreshes == 0
        client.assert_nothing()
        await c.send_bytewise(b"+OK\r\n$3\r\nask\r\n")
        await client.expect(b"$3\r\nask\r\n$1\r\nC\r\n")
        # the next GET of the slot still goes to A
        client.send_commands(["GET", "b"])
        await a.expect_commands(["GET", "b"])
        c.assert_nothing()
        await a.send(b"$1\r\nA\r\n")
        await client.expect(b"$1\r\nA\r\n")


async def test_too_many_redirects() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(["GET", "b"])
        limit = shell.config.cluster.max_redirects
        for _ in range(limit):  # A keeps sending it to itself
            await a.expect_commands(["GET", "b"])
            await a.send(b"-MOVED %d 127.0.0.1:7001\r\n" % slot)
        await a.expect_commands(["GET", "b"])
        await a.send(b"-MOVED %d 127.0.0.1:7001\r\n" % slot)
        await client.expect(errors.TOO_MANY_REDIRECTS)


async def test_tryagain_is_retried() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(["GET", "b"])
        await a.expect_commands(["GET", "b"])
        await a.send(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n")
        assert shell.pool.waiting == 1
        await wait_until(lambda: a.conn.fifo, "the retry (after retry_backoff_s)")
        await a.expect_commands(["GET", "b"])
        await a.send(b"$2\r\nok\r\n")
        await client.expect(b"$2\r\nok\r\n")
        assert shell.stats.retried_requests == 1


@pytest.mark.parametrize("replacement_up", [True, False], ids=["replaced", "held"])
async def test_lost_connection_resends_reads_and_fails_written_incr(replacement_up: bool) -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        shell.nodes.attach_replacements = replacement_up
        client = shell.client()
        client.send_commands(["GET", "b"], ["INCR", "c"], ["GET", "bar"], ["GET", "a"])
        await a.expect_commands(["GET", "b"], ["INCR", "c"], ["GET", "bar"])
        await b.expect_commands(["GET", "a"])
        await b.send(b"$1\r\nB\r\n")
        a.close()
        await wait_until(lambda: shell.nodes.lost, "the loss reported to the nodes")
        assert shell.nodes.lost == [(a.conn, False)]
        a2: FakeBackend = shell.nodes.by_addr[A]
        assert a2 is not a
        assert shell.router.slot_conn[slot_of("b")] is a2.conn
        assert shell.router.masters == [a2.conn, b.conn]
        if not replacement_up:  # the failover hold: queued on the replacement until it is up
            a2.assert_nothing()
            assert len(a2.conn.fifo) == 2
            a2.attach()
        await a2.expect_commands(["GET", "b"], ["GET", "bar"])
        client.assert_nothing()
        await a2.send(b"$1\r\n1\r\n$1\r\n2\r\n")
        await client.expect(b"$1\r\n1\r\n" + errors.OUTCOME_UNKNOWN + b"$1\r\n2\r\n$1\r\nB\r\n")
        assert errors.OUTCOME_UNKNOWN == (b"-ERR rproxy: connection to the backend was lost; "
                                          b"the command may or may not have run\r\n")
        assert shell.stats.retried_requests == 2
        assert shell.stats.outcome_unknown_errors == 1


async def test_lost_connection_resends_idempotent_written_and_every_queued() -> None:
    """A SET too big for the socket buffer is partly written when the node goes: it is
    idempotent, so it is sent again; the INCR behind it never left, so it is sent again too."""
    value = b"v" * (2 << 20)
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        await client.send(cmd("SET", "b", value), settle=False)
        await wait_until(lambda: a.conn.fifo, "the SET routed to A")
        assert a.conn.wbuf  # partly written: the socket buffer is full
        await client.send(cmd("INCR", "c"))
        assert len(a.conn.fifo) == 2 and len(a.conn.out) == 1  # the INCR queued behind it
        a.close()
        await wait_until(lambda: shell.nodes.lost, "the loss")
        a2 = shell.nodes.by_addr[A]
        expected = cmd("SET", "b", value) + cmd("INCR", "c")
        got = await a2.recv_exactly(len(expected))
        assert got == expected
        await a2.send(b"+OK\r\n:1\r\n")
        await client.expect(b"+OK\r\n:1\r\n")
        assert shell.stats.outcome_unknown_errors == 0


async def test_op_timeout_fails_written_requests_even_reads() -> None:
    """The watchdog fails a hung connection with TimeoutError: everything written gets
    REQUEST_TIMED_OUT, a read or an idempotent write too (the node may be stuck on it);
    the connection is replaced and the next request goes to the replacement."""
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        client.send_commands(["GET", "b"], ["SET", "bar", "1"], ["GET", "a"])
        await a.expect_commands(["GET", "b"], ["SET", "bar", "1"])
        await b.expect_commands(["GET", "a"])
        await b.send(b"$1\r\nB\r\n")
        a.conn.fail(TimeoutError("no reply within op_timeout_s"))  # as the watchdog does
        shell.reactor.flush()
        await client.expect(errors.REQUEST_TIMED_OUT * 2 + b"$1\r\nB\r\n")
        assert shell.stats.retried_requests == 0
        a2 = shell.nodes.by_addr[A]
        assert a2 is not a and shell.router.slot_conn[slot_of("b")] is a2.conn
        client.send_commands(["GET", "b"])
        await a2.expect_commands(["GET", "b"])
        await a2.send(b"$1\r\nA\r\n")
        await client.expect(b"$1\r\nA\r\n")
