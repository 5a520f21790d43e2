"""``ClientSession`` against a client played by the test: the mode seam (``enter_mode`` /
``leave_mode``), protocol errors answered with Redis's text before the connection closes,
QUIT, a client that shuts down its side or goes away, and back-pressure."""

from __future__ import annotations

import socket

import pytest

from rproxy.core import errors
from rproxy.core.config import Config
from rproxy.net.session import Batch, ClientSession
from tests.shell.harness import cmd, open_shell, wait_until


class ModalSession(ClientSession):
    """A session whose MULTI enters a test mode, a stand-in for the modes to come: the mode
    answers +QUEUED to every command until EXEC, which answers, leaves the mode and hands the
    rest of its batch back to the stateless loop."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.mode_batches: list[list[list[bytes]]] = []
        self.queued: list[list[bytes]] = []

    def dispatch(self, argv: list[bytes], enc: bytes) -> None:
        if argv[0].upper() == b"MULTI":
            self.enter_mode(self.queueing)
            self.reply_local(b"+OK\r\n")
            return
        super().dispatch(argv, enc)

    def queueing(self, batch: Batch) -> None:
        self.mode_batches.append([argv for argv, _ in batch])
        for i, (argv, _enc) in enumerate(batch):
            if argv[0].upper() == b"EXEC":
                self.reply_local(b"+RAN %d\r\n" % len(self.queued))
                self.queued = []
                self.leave_mode()
                rest = batch[i + 1:]
                if rest:
                    self.on_commands(rest)
                return
            self.queued.append(argv)
            self.reply_local(b"+QUEUED\r\n")


async def test_a_mode_takes_the_rest_of_the_same_read() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client(ModalSession)
        session = client.session
        assert isinstance(session, ModalSession)
        assert session.on_commands == session.route_batch
        # in one read: GET b (stateless, to A), MULTI, then two commands for the mode, EXEC,
        # and GET foo back in the stateless loop (to B)
        client.send_commands(["GET", "b"], ["MULTI"], ["GET", "a"], ["SET", "x", "1"],
                             ["EXEC"], ["GET", "foo"])
        await a.expect_commands(["GET", "b"])
        await b.expect_commands(["GET", "foo"])  # not GET a, not SET x: the mode had them
        assert session.mode_batches == [
            [[b"GET", b"a"], [b"SET", b"x", b"1"], [b"EXEC"], [b"GET", b"foo"]]]
        assert session.on_commands == session.route_batch  # leave_mode restored it
        client.assert_nothing()
        await b.send(b"$1\r\nF\r\n")
        client.assert_nothing()
        await a.send(b"$1\r\nB\r\n")
        await client.expect(b"$1\r\nB\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n+RAN 2\r\n$1\r\nF\r\n")


async def test_a_mode_keeps_later_reads_until_it_is_left() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client(ModalSession)
        session = client.session
        assert isinstance(session, ModalSession)
        client.send_commands(["MULTI"])
        await client.expect(b"+OK\r\n")
        assert session.on_commands == session.queueing
        assert session.mode_batches == []  # nothing was left in that read
        client.send_commands(["GET", "a"], ["INCR", "c"])
        await client.expect(b"+QUEUED\r\n+QUEUED\r\n")
        a.assert_nothing()
        b.assert_nothing()
        client.send_commands(["EXEC"], ["GET", "a"])
        await b.expect_commands(["GET", "a"])
        await client.expect(b"+RAN 2\r\n")
        await b.send(b"$1\r\nA\r\n")
        await client.expect(b"$1\r\nA\r\n")
        assert session.mode_batches == [[[b"GET", b"a"], [b"INCR", b"c"]],
                                        [[b"EXEC"], [b"GET", b"a"]]]
        assert session.on_commands == session.route_batch


INVALID_BULK = b"-ERR Protocol error: invalid bulk length\r\n"


def test_the_invalid_bulk_text_is_redis_s() -> None:
    assert errors.PROTO_INVALID_BULK == INVALID_BULK


PROTOCOL_ERRORS = [
    pytest.param(b"*1\r\n$x\r\n", INVALID_BULK, id="invalid-bulk-length"),
    pytest.param(b"*1\r\nfoo\r\n", b"-ERR Protocol error: expected '$', got 'f'\r\n",
                 id="expected-dollar"),
    pytest.param(b"*-0\r\n", b"-ERR Protocol error: invalid multibulk length\r\n",
                 id="invalid-multibulk-length"),
    pytest.param(b'set """test-key""" test-value\r\n',
                 b"-ERR Protocol error: unbalanced quotes in request\r\n", id="unbalanced-quotes"),
]


@pytest.mark.parametrize(("bad", "error"), PROTOCOL_ERRORS)
async def test_protocol_error_after_earlier_replies_then_close(bad: bytes, error: bytes) -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        session = client.session
        client.send_now(cmd("GET", "b") + bad + cmd("GET", "c"))
        await a.expect_commands(["GET", "b"])  # GET c, after the error, is never run
        client.assert_nothing()  # the error waits for the reply before it
        assert not session.closed
        await a.send(b"$2\r\nvv\r\n")
        await client.expect(b"$2\r\nvv\r\n" + error, eof=True)
        assert session.closed and shell.closed_sessions == [session]
        assert client.far.fileno() == -1
        a.assert_nothing()


async def test_protocol_error_split_across_reads() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_now(cmd("GET", "b") + b"*1\r\n")  # the strict parser holds the header
        await a.expect_commands(["GET", "b"])
        await client.send(b"$x")
        await client.send(b"\r\n")
        client.assert_nothing()
        await a.send(b"$-1\r\n")
        await client.expect(b"$-1\r\n" + INVALID_BULK, eof=True)
        assert client.session.closed


async def test_protocol_error_alone_is_answered_then_closed() -> None:
    async with open_shell() as shell:
        shell.two_shards()
        client = shell.client()
        client.send_now(b"*1\r\n$x\r\n")
        await client.expect(INVALID_BULK, eof=True)
        assert client.session.closed and client.far.fileno() == -1


async def test_quit_answers_what_came_before_and_runs_nothing_after() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(["GET", "b"], ["QUIT"], ["GET", "c"])
        await a.expect_commands(["GET", "b"])
        client.assert_nothing()
        await a.send(b"$1\r\nq\r\n")
        await client.expect(b"$1\r\nq\r\n+OK\r\n", eof=True)
        assert client.session.closed
        a.assert_nothing()


async def test_client_shutting_down_its_side_gets_its_replies() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        client.send_commands(["GET", "b"], ["GET", "a"])
        client.sock.shutdown(socket.SHUT_WR)
        await a.expect_commands(["GET", "b"])
        await b.expect_commands(["GET", "a"])
        await wait_until(lambda: client.session.eof, "the session to see EOF")
        assert not client.session.closed
        await b.send(b"$1\r\n2\r\n")
        await a.send(b"$1\r\n1\r\n")
        await client.expect(b"$1\r\n1\r\n$1\r\n2\r\n", eof=True)
        assert client.session.closed


async def test_a_client_that_goes_away_leaves_the_connection_in_step() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        gone, stays = shell.client(), shell.client()
        gone.send_commands(["GET", "b"])
        await a.expect_commands(["GET", "b"])
        stays.send_commands(["GET", "c"])
        await a.expect_commands(["GET", "c"])
        gone.close()
        await wait_until(lambda: gone.session.closed, "the session to close")
        await a.send(b"$4\r\ngone\r\n$5\r\nstays\r\n")
        await stays.expect(b"$5\r\nstays\r\n")
        assert not a.conn.fifo
        assert shell.closed_sessions == [gone.session]


async def test_reading_pauses_past_max_pending_and_resumes() -> None:
    config = Config().replace("limits", max_pending_per_client=2)
    async with open_shell(config) as shell:
        a, _b = shell.two_shards()
        client, other = shell.client(), shell.client()
        client.send_commands(["GET", "b"], ["GET", "c"])
        await a.expect_commands(["GET", "b"], ["GET", "c"])
        assert not client.session.reading
        client.send_commands(["GET", "bar"])
        # another client's round trip: the reactor polled again, and did not read the first
        other.send_commands(["PING"])
        await other.expect(b"+PONG\r\n")
        a.assert_nothing()
        await a.send(b"$1\r\n1\r\n$1\r\n2\r\n")
        await client.expect(b"$1\r\n1\r\n$1\r\n2\r\n")
        await a.expect_commands(["GET", "bar"])  # read once the replies went out
        await a.send(b"$1\r\n3\r\n")
        await client.expect(b"$1\r\n3\r\n")
        assert client.session.reading


async def test_nothing_after_quit_runs_even_from_a_later_read() -> None:
    """Redis stops processing a client's input once QUIT set CLIENT_CLOSE_AFTER_REPLY
    (src/networking.c processInputBuffer: "don't process more commands"): a command the
    client sends after QUIT, in a later read that arrives before QUIT's reply went out, must
    not run -- here an INCR that would change data."""
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client, other = shell.client(), shell.client()
        client.send_commands(["GET", "b"], ["QUIT"])
        await a.expect_commands(["GET", "b"])  # QUIT's +OK waits behind the GET's reply
        client.send_now(cmd("INCR", "c"))
        # another client's round trip: the reactor has polled with the INCR there to read
        other.send_commands(["PING"])
        await other.expect(b"+PONG\r\n")
        a.assert_nothing()
        await a.send(b"$1\r\nq\r\n")
        assert await client.recv_exactly(len(b"$1\r\nq\r\n+OK\r\n")) == b"$1\r\nq\r\n+OK\r\n"
        await client.expect_eof(reset_ok=True)


async def test_quit_then_protocol_error_in_one_read_answers_only_quit() -> None:
    """Redis parses nothing after QUIT (processInputBuffer breaks once
    CLIENT_CLOSE_AFTER_REPLY is set), so a malformed command after it gets no error reply."""
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_now(cmd("GET", "b") + cmd("QUIT") + b"*1\r\n$x\r\n")
        await a.expect_commands(["GET", "b"])
        await a.send(b"$1\r\nq\r\n")
        await client.expect(b"$1\r\nq\r\n+OK\r\n", eof=True)
