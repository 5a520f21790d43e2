"""``BackendConnection`` alone, against a fake backend over a socket pair: requests go out
byte-exact and in order, raw replies come back to the right requests however the stream is
split, error replies go to the owner, a lost connection hands its requests to the owner
(written apart from queued), and a backend that breaks the protocol fails only its own
connection."""

from __future__ import annotations

import pytest

from rproxy.core.request import DATA, REPLY, complete
from rproxy.core.resp import BackendProtocolError
from rproxy.net.backend import CLOSED, READY
from tests.shell.harness import (
    B,
    BackendBench,
    FakeBackend,
    RecordingOwner,
    ReplySink,
    backend_bench,
    wait_until,
)

# One reply of each RESP2 kind, in one stream: status, error, integer, bulks (one with a CRLF
# inside, one empty), nil, a nested array (with an empty array in it), nil array, and an array
# of bulks and nils (the path the framer measures without scanning).
REPLIES = [
    b"+OK\r\n",
    b"-ERR wrong kind of value\r\n",
    b":-42\r\n",
    b"$7\r\nhi\r\nyou\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n*0\r\n",
    b"*-1\r\n",
    b"*2\r\n$3\r\nfoo\r\n$-1\r\n",
]
STREAM = b"".join(REPLIES)
ENDS = [sum(len(r) for r in REPLIES[: i + 1]) for i in range(len(REPLIES))]


def replies_after(n: int) -> list[bytes | None]:
    """What each request holds once the first ``n`` bytes of STREAM are in."""
    done = sum(1 for end in ENDS if end <= n)
    return [*REPLIES[:done], *[None] * (len(REPLIES) - done)]


async def send_batch(bench: BackendBench, fb: FakeBackend, tag: int) -> list[list[object]]:
    """One request per reply of STREAM, sent and received by the fake backend byte-exact."""
    sink = bench.sink()
    reqs = [sink.request("GET", f"key:{tag}:{i}") for i in range(len(REPLIES))]
    bench.send(fb, reqs)
    await fb.expect(b"".join(r[DATA] for r in reqs))
    return reqs


async def two_gets_sent(bench: BackendBench
                        ) -> tuple[RecordingOwner, FakeBackend, ReplySink, list[list[object]]]:
    """A connection with a recording owner, and ``GET a``, ``GET b`` sent and received by its
    fake backend."""
    owner = RecordingOwner()
    fb = bench.backend(owner)
    sink = bench.sink()
    reqs = [sink.request("GET", "a"), sink.request("GET", "b")]
    bench.send(fb, reqs)
    await fb.expect(b"".join(r[DATA] for r in reqs))
    return owner, fb, sink, reqs


async def test_requests_go_out_concatenated_in_order() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        assert owner.connected == [fb.conn] and fb.conn.state == READY
        sink = bench.sink()
        first = [sink.request("SET", "k", "v"), sink.request("GET", "k")]
        bench.send(fb, first)
        second = [sink.request("INCR", "n"), sink.request("PING")]
        bench.send(fb, second)
        await fb.expect(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
            b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$4\r\nPING\r\n")
        assert list(fb.conn.fifo) == first + second
        assert fb.conn.out == []


async def test_replies_split_at_every_offset() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        for cut in range(len(STREAM)):  # 0: the whole stream in one read
            reqs = await send_batch(bench, fb, cut)
            if cut:
                await fb.send(STREAM[:cut])
                assert [r[REPLY] for r in reqs] == replies_after(cut), f"cut at {cut}"
            await fb.send(STREAM[cut:])
            assert [r[REPLY] for r in reqs] == REPLIES, f"cut at {cut}"
            sink = reqs[0][1]
            assert sink.completion_order == list(range(len(REPLIES))), f"cut at {cut}"
            assert not fb.conn.fifo and fb.conn.framer.idle
            # the error reply was shown to the owner (who let it through)
            assert owner.errors[-1] == (fb.conn, reqs[1], REPLIES[1])
        assert len(owner.errors) == len(STREAM)
        assert owner.lost == []
        assert fb.conn.replies == len(REPLIES) * len(STREAM)


async def test_replies_one_byte_per_read() -> None:
    async with backend_bench() as bench:
        fb = bench.backend()
        reqs = await send_batch(bench, fb, 0)

        def check(n: int) -> None:
            assert [r[REPLY] for r in reqs] == replies_after(n), f"after {n} bytes"

        await fb.send_bytewise(STREAM, after_each=check)
        assert reqs[0][1].completion_order == list(range(len(REPLIES)))
        assert reqs[0][1].flushes == len(REPLIES)  # one wake-up per completed reply


async def test_error_reply_delivered_when_the_owner_declines_it() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner(take_errors=False)
        fb = bench.backend(owner)
        sink = bench.sink()
        reqs = [sink.request("GET", "a"), sink.request("INCR", "s"), sink.request("GET", "b")]
        bench.send(fb, reqs)
        await fb.expect(b"".join(r[DATA] for r in reqs))
        await fb.send(b"$1\r\nx\r\n-WRONGTYPE Operation against a key\r\n$1\r\ny\r\n")
        assert sink.replies == [b"$1\r\nx\r\n", b"-WRONGTYPE Operation against a key\r\n",
                                b"$1\r\ny\r\n"]
        assert owner.errors == [(fb.conn, reqs[1], b"-WRONGTYPE Operation against a key\r\n")]


async def test_error_reply_kept_when_the_owner_takes_it() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner(take_errors=lambda raw: raw.startswith(b"-MOVED"))
        fb = bench.backend(owner)
        sink = bench.sink()
        reqs = [sink.request("GET", f"k{i}") for i in range(4)]
        bench.send(fb, reqs)
        await fb.expect(b"".join(r[DATA] for r in reqs))
        moved = b"-MOVED 3999 127.0.0.1:7002\r\n"
        await fb.send(b"+OK\r\n" + moved + b"-ERR plain\r\n:5\r\n")
        # the MOVED is the owner's: its request waits; the FIFO stays in step for the others
        assert sink.replies == [b"+OK\r\n", None, b"-ERR plain\r\n", b":5\r\n"]
        assert owner.errors == [(fb.conn, reqs[1], moved), (fb.conn, reqs[2], b"-ERR plain\r\n")]
        assert not fb.conn.fifo
        complete(reqs[1], b"$3\r\nnew\r\n")  # what a redirect ends in
        bench.reactor.flush()
        assert sink.replies[1] == b"$3\r\nnew\r\n"
        assert owner.lost == []


async def test_lost_connection_reports_written_and_queued_in_order() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        conn, far = fb.conn, fb.far
        sink = bench.sink()
        written = [sink.request("GET", f"w{i}") for i in range(4)]
        bench.send(fb, written)
        await fb.expect(b"".join(r[DATA] for r in written))
        await fb.send(b"$1\r\nA\r\n")  # the first one is answered
        assert written[0][REPLY] == b"$1\r\nA\r\n"
        queued = [sink.request("INCR", f"q{i}") for i in range(3)]
        for req in queued:  # queued, not flushed: the loss is seen first
            conn.send(req, req[DATA])
        fb.close()
        await wait_until(lambda: owner.lost, "on_lost")
        assert len(owner.lost) == 1
        lost = owner.lost[0]
        assert lost.conn is conn
        assert lost.written == written[1:]
        assert lost.queued == queued
        assert lost.connect_failed is False
        assert isinstance(lost.exc, ConnectionResetError)
        # the owner settles them, not the connection
        assert [r[REPLY] for r in written[1:] + queued] == [None] * 6
        assert conn.state == CLOSED
        assert conn.transport is None and far.fileno() == -1
        assert not conn.fifo and not conn.out and not conn.wbuf
        conn.fail(ConnectionResetError("again"))  # settled once only
        assert len(owner.lost) == 1


async def test_lost_connection_with_a_partly_written_request() -> None:
    """A request too big for the socket buffer is partly written (it counts as written); the
    requests behind it never left (queued)."""
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        conn = fb.conn
        sink = bench.sink()
        small = sink.request("GET", "small")
        big = sink.request("SET", "big", "x" * (4 << 20))
        bench.send(fb, [small, big])
        assert conn.wbuf, "the socket took 4 MiB at once: nothing is left to queue behind"
        queued = [sink.request("GET", "q1"), sink.request("DEL", "q2")]
        bench.send(fb, queued)
        assert conn.out == [r[DATA] for r in queued]  # held while the big one is written
        head = await fb.recv_exactly(len(small[DATA]) + 100)
        assert head == small[DATA] + big[DATA][:100]
        fb.close()  # with unread data: the proxy's end sees a reset
        await wait_until(lambda: owner.lost, "on_lost")
        lost = owner.lost[0]
        assert (lost.written, lost.queued, lost.connect_failed) == ([small, big], queued, False)
        assert isinstance(lost.exc, ConnectionResetError)
        assert conn.state == CLOSED and fb.far.fileno() == -1


async def test_closed_while_idle_reports_nothing_pending() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        fb.close()
        await wait_until(lambda: owner.lost, "on_lost")
        lost = owner.lost[0]
        assert (lost.written, lost.queued, lost.connect_failed) == ([], [], False)
        assert fb.conn.state == CLOSED and fb.far.fileno() == -1


async def test_requests_queued_before_attach_go_out_on_attach() -> None:
    """The failover hold: a connection not up yet keeps its requests in order."""
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner, attach=False)
        sink = bench.sink()
        reqs = [sink.request("GET", "a"), sink.request("GET", "b")]
        bench.send(fb, reqs)
        fb.assert_nothing()
        assert owner.connected == []
        fb.attach()
        assert owner.connected == [fb.conn]
        await fb.expect(b"".join(r[DATA] for r in reqs))
        await fb.send(b":1\r\n:2\r\n")
        assert sink.replies == [b":1\r\n", b":2\r\n"]


async def assert_reactor_still_serves(bench: BackendBench) -> None:
    other = bench.backend(RecordingOwner(), addr=B)
    sink = bench.sink()
    req = sink.request("GET", "alive")
    bench.send(other, [req])
    await other.expect(req[DATA])
    await other.send(b"$3\r\nyes\r\n")
    assert req[REPLY] == b"$3\r\nyes\r\n"


async def test_reply_with_no_request_fails_the_connection() -> None:
    async with backend_bench() as bench:
        owner = RecordingOwner()
        fb = bench.backend(owner)
        await fb.send(b"+OK\r\n")
        await wait_until(lambda: owner.lost, "on_lost")
        lost = owner.lost[0]
        assert (lost.written, lost.queued, lost.connect_failed) == ([], [], False)
        assert isinstance(lost.exc, BackendProtocolError)
        assert "reply with no request" in str(lost.exc)
        assert fb.conn.state == CLOSED and fb.far.fileno() == -1
        await fb.expect_eof()
        await assert_reactor_still_serves(bench)


async def test_more_replies_than_requests_fails_the_connection() -> None:
    async with backend_bench() as bench:
        owner, fb, sink, reqs = await two_gets_sent(bench)
        await fb.send(b":1\r\n:2\r\n:3\r\n")
        await wait_until(lambda: owner.lost, "on_lost")
        lost = owner.lost[0]
        assert isinstance(lost.exc, BackendProtocolError)
        # whatever was not answered is the owner's, in order
        assert lost.written == [r for r in reqs if r[REPLY] is None]
        assert lost.queued == []
        assert fb.conn.state == CLOSED
        await assert_reactor_still_serves(bench)


@pytest.mark.parametrize("garbage", [
    b"!garbage\r\n",
    b"hello world\r\n",
    b"\x00\x01\x02\r\n",
    b"$abc\r\n",
    b"*x\r\n",
    b"$3\r\nabcde\r\n",  # a bulk longer than it says
    b"_\r\n",  # RESP3 null, on a RESP2 connection
    b"+OK\r\n!garbage\r\n",  # after a good reply, in the same read
], ids=lambda g: repr(g)[2:-1])
async def test_garbage_fails_the_connection_not_the_reactor(garbage: bytes) -> None:
    async with backend_bench() as bench:
        owner, fb, sink, reqs = await two_gets_sent(bench)
        await fb.send(garbage)
        await wait_until(lambda: owner.lost, "on_lost")
        assert len(owner.lost) == 1
        lost = owner.lost[0]
        assert isinstance(lost.exc, BackendProtocolError)
        assert lost.connect_failed is False
        assert lost.written == [r for r in reqs if r[REPLY] is None] and lost.queued == []
        assert all(r[REPLY] in (None, b"+OK\r\n") for r in reqs)
        assert fb.conn.state == CLOSED and fb.far.fileno() == -1
        await fb.expect_eof()
        await assert_reactor_still_serves(bench)


async def test_backend_busy_past_max_pending() -> None:
    async with backend_bench() as bench:
        fb = bench.backend(max_pending=2)
        sink = bench.sink()
        reqs = [sink.request("GET", f"k{i}") for i in range(3)]
        bench.send(fb, reqs)
        busy = b"-ERR rproxy: too many requests queued for one backend node\r\n"
        assert sink.replies == [None, None, busy]
        await fb.expect(reqs[0][DATA] + reqs[1][DATA])


async def test_reply_then_close_delivers_the_reply_first() -> None:
    async with backend_bench() as bench:
        owner, fb, sink, reqs = await two_gets_sent(bench)
        await fb.send(b"$1\r\n1\r\n", settle=False)
        fb.close()  # the reply and the end, before the proxy reads either
        await wait_until(lambda: owner.lost, "on_lost")
        assert sink.replies == [b"$1\r\n1\r\n", None]
        assert owner.lost[0].written == [reqs[1]] and owner.lost[0].queued == []


# Nesting past hiredis's limit: the framer's Python scanner takes these.
DEEP = b"*1\r\n" * 12 + b":1\r\n"


async def test_deeply_nested_replies_split_at_every_offset() -> None:
    replies = [b"+A\r\n", DEEP, b"$3\r\nabc\r\n", DEEP, b":2\r\n"]
    stream = b"".join(replies)
    async with backend_bench() as bench:
        fb = bench.backend()
        for cut in range(len(stream)):
            sink = bench.sink()
            reqs = [sink.request("GET", f"{cut}:{i}") for i in range(len(replies))]
            bench.send(fb, reqs)
            await fb.expect(b"".join(r[DATA] for r in reqs))
            await fb.send_pieces(stream, [cut])
            assert sink.replies == replies, f"cut at {cut}"
            assert sink.completion_order == list(range(len(replies)))
            assert fb.conn.framer.idle


async def test_a_large_bulk_in_pieces_of_any_size() -> None:
    body = bytes(range(256)) * 1200  # 300 kB: more than one read of the proxy
    reply = b"$%d\r\n%s\r\n" % (len(body), body)
    cuts = [1, 3, 5, 6, 7, 1000, 65536, 65537, 200_000, len(reply) - 2, len(reply) - 1]
    async with backend_bench() as bench:
        fb = bench.backend()
        sink = bench.sink()
        reqs = [sink.request("GET", "big"), sink.request("GET", "small")]
        bench.send(fb, reqs)
        await fb.expect(b"".join(r[DATA] for r in reqs))
        await fb.send_pieces(reply + b"$-1\r\n", cuts)
        assert sink.replies == [reply, b"$-1\r\n"]
