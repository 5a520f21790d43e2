"""Transactions end to end without a cluster: the block (MULTI, the queued commands, EXEC)
reaches the slot's backend in one piece, and whatever the backend answers -- the EXEC array,
MOVED or ASK to the queued commands, a failing-over cluster, a lost connection -- the client
sees what one Redis would have sent, never a redirect."""

from __future__ import annotations

from rproxy.core import errors
from rproxy.net.backend import CLOSED
from tests.shell.harness import (
    A,
    C,
    Client,
    FakeBackend,
    Shell,
    cmd,
    leased,
    open_shell,
    slot_of,
    wait_until,
)

EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"
BLOCK = [["MULTI"], ["SET", "b", "1"], ["GET", "b"], ["EXEC"]]
QUEUED_REPLIES = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n"
EXEC_ARRAY = b"*2\r\n+OK\r\n$1\r\n1\r\n"


async def block_sent(shell: Shell) -> tuple[FakeBackend, Client]:
    """Backends A and B; a client whose transaction on slot_of("b") has reached A."""
    a, _b = shell.two_shards()
    client = shell.client()
    client.send_commands(*BLOCK)
    await a.expect_commands(*BLOCK)
    return a, client


async def test_the_block_goes_in_one_piece_and_only_exec_is_answered_by_the_backend() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        one, two = shell.client(), shell.client()
        one.send_commands(["MULTI"], ["SET", "b", "1"], ["GET", "b"])
        await one.expect(QUEUED_REPLIES)  # queued by the proxy: nothing reached the backend
        a.assert_nothing()
        two.send_commands(*[["GET", "c"]] * 20)
        one.send_commands(["EXEC"], ["GET", "b"])
        two.send_commands(*[["GET", "c"]] * 20)
        block = b"".join(cmd(*c) for c in BLOCK)
        get_c = cmd("GET", "c")
        received = await a.recv_exactly(len(block) + len(cmd("GET", "b")) + 40 * len(get_c))
        # two's GETs come before or after the block, never inside it
        assert block in received
        before, _, after = received.partition(block)
        assert before == get_c * (len(before) // len(get_c))
        assert after.replace(get_c, b"") == cmd("GET", "b")
        n_before = len(before) // len(get_c)
        await a.send(b"$1\r\nc\r\n" * n_before + QUEUED_REPLIES + EXEC_ARRAY
                     + b"".join(b"$1\r\nc\r\n" if part == get_c else b"$1\r\n1\r\n"
                                for part in _split(after, get_c)))
        await one.expect(EXEC_ARRAY + b"$1\r\n1\r\n")
        await two.expect(b"$1\r\nc\r\n" * 40)


def _split(stream: bytes, get_c: bytes) -> list[bytes]:
    """The commands after the block, in order: GET c or GET b."""
    out = []
    get_b = cmd("GET", "b")
    while stream:
        part = get_c if stream.startswith(get_c) else get_b
        out.append(part)
        stream = stream[len(part):]
    return out


async def test_a_runtime_error_inside_exec_is_delivered_as_is() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(["MULTI"], ["SET", "b", "x"], ["INCR", "b"], ["EXEC"])
        await a.expect_commands(["MULTI"], ["SET", "b", "x"], ["INCR", "b"], ["EXEC"])
        array = b"*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n"
        await a.send(QUEUED_REPLIES + array)
        await client.expect(QUEUED_REPLIES + array)


async def test_moved_sends_the_whole_block_to_the_new_owner() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(*BLOCK)
        await client.expect(QUEUED_REPLIES)
        await a.expect_commands(*BLOCK)
        moved = b"-MOVED %d 127.0.0.1:7003\r\n" % slot
        await a.send(b"+OK\r\n" + moved + moved + EXECABORT)
        c = shell.nodes.by_addr[C]
        await c.expect_commands(*BLOCK)
        assert shell.router.slot_conn[slot] is c.conn and shell.nodes.refreshes == 1
        client.assert_nothing()
        await c.send(QUEUED_REPLIES[:5] + b"+QUEUED\r\n+QUEUED\r\n" + EXEC_ARRAY)
        await client.expect(EXEC_ARRAY)


async def test_ask_sends_asking_then_the_block_to_the_target() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        slot = slot_of("b")
        client.send_commands(*BLOCK)
        await a.expect_commands(*BLOCK)
        ask = b"-ASK %d 127.0.0.1:7003\r\n" % slot
        await a.send_bytewise(b"+OK\r\n" + ask + ask + EXECABORT)
        c = shell.nodes.by_addr[C]
        await c.expect_commands(["ASKING"], *BLOCK)
        assert shell.router.slot_conn[slot] is a.conn  # ASK leaves the map alone
        await c.send(b"+OK\r\n" + QUEUED_REPLIES + EXEC_ARRAY)
        await client.expect(QUEUED_REPLIES + EXEC_ARRAY)


async def test_moved_at_exec_itself_is_followed() -> None:
    """The slot moved after the commands were queued: EXEC gets MOVED (the node discarded
    the transaction)."""
    async with open_shell() as shell:
        a, client = await block_sent(shell)
        await a.send(QUEUED_REPLIES + b"-MOVED %d 127.0.0.1:7003\r\n" % slot_of("b"))
        c = shell.nodes.by_addr[C]
        await c.expect_commands(*BLOCK)
        await c.send(QUEUED_REPLIES + EXEC_ARRAY)
        await client.expect(QUEUED_REPLIES + EXEC_ARRAY)


async def test_a_failing_over_cluster_is_waited_for() -> None:
    async with open_shell() as shell:
        a, client = await block_sent(shell)
        down = b"-CLUSTERDOWN The cluster is down\r\n"
        await a.send(b"+OK\r\n" + down + down + EXECABORT)
        await wait_until(lambda: a.conn.fifo, "the block sent again (after retry_backoff_s)")
        await a.expect_commands(*BLOCK)
        await a.send(QUEUED_REPLIES + EXEC_ARRAY)
        await client.expect(QUEUED_REPLIES + EXEC_ARRAY)


async def test_too_many_redirects() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(*BLOCK)
        await client.expect(QUEUED_REPLIES)
        node = a
        for _ in range(shell.config.cluster.max_redirects + 1):
            await node.expect_commands(*BLOCK)
            await node.send(QUEUED_REPLIES + b"-MOVED %d 127.0.0.1:7001\r\n" % slot_of("b"))
            node = shell.nodes.by_addr[A]
        await client.expect(errors.TOO_MANY_REDIRECTS)


async def test_a_connection_lost_before_exec_left_sends_the_block_again() -> None:
    """Nothing ran: a node drops the MULTI state of a connection that closes."""
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        shell.nodes.attach_replacements = True
        held = shell.backend(A, attach=False)  # A's connection is down: requests wait on it
        shell.router.replace(a.conn, held.conn)
        client = shell.client()
        client.send_commands(*BLOCK)
        await client.expect(QUEUED_REPLIES)
        await wait_until(lambda: len(held.conn.fifo) == 4, "the block queued on the hold")
        held.conn.fail(ConnectionRefusedError("node down"))  # as its connect task does,
        shell.reactor.flush()  # then the reactor sends what was routed meanwhile
        assert held.conn.state == CLOSED
        a2 = shell.nodes.by_addr[A]
        await a2.expect_commands(*BLOCK)
        await a2.send(QUEUED_REPLIES + EXEC_ARRAY)
        await client.expect(EXEC_ARRAY)


async def test_a_connection_lost_after_exec_left_is_an_unknown_outcome() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(*BLOCK, ["GET", "c"])
        await a.expect_commands(*BLOCK, ["GET", "c"])
        a.close()
        await wait_until(lambda: shell.nodes.by_addr[A] is not a, "the replacement")
        a2 = shell.nodes.by_addr[A]
        await a2.expect_commands(["GET", "c"])  # a read after it is resent, as always
        await a2.send(b"$1\r\nc\r\n")
        await client.expect(QUEUED_REPLIES + errors.OUTCOME_UNKNOWN + b"$1\r\nc\r\n")


async def test_exec_answered_by_the_proxy_needs_no_backend() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(["MULTI"], ["EXEC"], ["MULTI"], ["GET"], ["EXEC"], ["EXEC"])
        await client.expect(b"+OK\r\n*0\r\n+OK\r\n"
                            + b"-ERR wrong number of arguments for 'get' command\r\n"
                            + EXECABORT + errors.EXEC_WITHOUT_MULTI)
        a.assert_nothing()
        assert cmd("MULTI") == b"*1\r\n$5\r\nMULTI\r\n"


async def test_watch_runs_on_a_lease_with_the_clients_commands_for_that_node() -> None:
    async with open_shell() as shell:
        a, b = shell.two_shards()
        client = shell.client()
        client.send_commands(["WATCH", "b"], ["SET", "b", "mine"], ["GET", "a"], ["MULTI"],
                             ["INCR", "b"], ["EXEC"], ["GET", "b"])
        lease = await leased(shell)
        assert lease.conn is not a.conn and len(shell.cluster.opened) == 1
        # everything for A's slots goes on the lease, in order; B's read rides B
        await lease.expect_commands(["WATCH", "b"], ["SET", "b", "mine"], ["MULTI"],
                                    ["INCR", "b"], ["EXEC"])
        await b.expect_commands(["GET", "a"])
        a.assert_nothing()
        await b.send(b"$1\r\nA\r\n")
        await lease.send(b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n")
        # the lease is back in the pool; the GET after EXEC waited for the EXEC reply
        await a.expect_commands(["GET", "b"])
        await a.send(b"$4\r\nmine\r\n")
        await client.expect(b"+OK\r\n+OK\r\n$1\r\nA\r\n+OK\r\n+QUEUED\r\n*-1\r\n$4\r\nmine\r\n")
        assert shell.cluster.leases.leased == 0


async def watched(shell: Shell) -> tuple[FakeBackend, Client]:
    """Backends A and B; a client that sent WATCH b, and the leased connection it went on."""
    shell.two_shards()
    client = shell.client()
    client.send_commands(["WATCH", "b"])
    lease = await leased(shell)
    await lease.expect_commands(["WATCH", "b"])
    return lease, client


async def test_a_lost_lease_makes_exec_answer_nil() -> None:
    async with open_shell() as shell:
        lease, client = await watched(shell)
        await lease.send(b"+OK\r\n")
        await client.expect(b"+OK\r\n")
        lease.close()  # the node's connection is gone, and the watch with it
        await wait_until(lambda: lease.conn.state == CLOSED, "the lease seen lost")
        client.send_commands(["MULTI"], ["SET", "b", "1"], ["EXEC"])
        await client.expect(QUEUED_REPLIES[:5] + b"+QUEUED\r\n" + b"*-1\r\n")
        assert shell.cluster.leases.leased == 0


async def test_a_watch_refused_by_a_moved_slot_answers_ok_then_exec_nil() -> None:
    async with open_shell() as shell:
        lease, client = await watched(shell)
        moved = b"-MOVED %d 127.0.0.1:7003\r\n" % slot_of("b")
        await lease.send(moved)
        await client.expect(b"+OK\r\n")  # as if watched: its EXEC answers nil
        client.send_commands(["MULTI"], ["SET", "b", "1"], ["EXEC"])
        await client.expect(b"+OK\r\n+QUEUED\r\n*-1\r\n")
        # the block was never sent (nil without asking); the lease goes back clean
        await lease.expect_commands(["UNWATCH"])
        assert shell.cluster.leases.leased == 0


async def test_a_watched_block_refused_by_the_node_answers_nil() -> None:
    async with open_shell() as shell:
        shell.two_shards()
        client = shell.client()
        client.send_commands(["WATCH", "b"], ["MULTI"], ["SET", "b", "1"], ["EXEC"])
        lease = await leased(shell)
        await lease.expect_commands(["WATCH", "b"], ["MULTI"], ["SET", "b", "1"], ["EXEC"])
        moved = b"-MOVED %d 127.0.0.1:7003\r\n" % slot_of("b")
        await lease.send(b"+OK\r\n+OK\r\n" + moved + EXECABORT)
        await client.expect(b"+OK\r\n+OK\r\n+QUEUED\r\n*-1\r\n")
        assert shell.nodes.by_addr.get(C) is None  # never sent again elsewhere


async def test_unwatch_after_a_lost_lease_starts_afresh() -> None:
    async with open_shell() as shell:
        lease, client = await watched(shell)
        await lease.send(b"+OK\r\n")
        await client.expect(b"+OK\r\n")
        lease.close()
        await wait_until(lambda: lease.conn.state == CLOSED, "the lease seen lost")
        client.send_commands(["UNWATCH"], ["WATCH", "b"])
        await client.expect(b"+OK\r\n")  # UNWATCH
        second = await leased(shell, 1)
        await second.expect_commands(["WATCH", "b"])
        await second.send(b"+OK\r\n")
        await client.expect(b"+OK\r\n")
        client.send_commands(["MULTI"], ["EXEC"])
        await second.expect_commands(["MULTI"], ["EXEC"])
        await second.send(b"+OK\r\n*0\r\n")
        await client.expect(b"+OK\r\n*0\r\n")


# -- blocking commands on a lease ----------------------------------------------------------
async def test_a_blocking_command_on_a_moved_slot_is_sent_to_the_new_owner() -> None:
    async with open_shell() as shell:
        a, _b = shell.two_shards()
        client = shell.client()
        client.send_commands(["BLPOP", "b", "0"], ["GET", "b"])
        first = await leased(shell)
        await first.expect_commands(["BLPOP", "b", "0"])
        await first.send(b"-MOVED %d 127.0.0.1:7003\r\n" % slot_of("b"))
        second = await leased(shell, 1)
        assert second.conn.addr == C
        await second.expect_commands(["BLPOP", "b", "0"])
        a.assert_nothing()  # the GET waits for the blocking command's reply
        await second.send(b"*2\r\n$1\r\nb\r\n$1\r\nx\r\n")
        c = shell.nodes.by_addr[C]
        await c.expect_commands(["GET", "b"])  # the map followed the MOVED
        await c.send(b"$-1\r\n")
        await client.expect(b"*2\r\n$1\r\nb\r\n$1\r\nx\r\n$-1\r\n")
        assert shell.cluster.leases.leased == 0


async def test_a_lease_lost_while_blocked_is_an_unknown_outcome() -> None:
    async with open_shell() as shell:
        shell.two_shards()
        client = shell.client()
        client.send_commands(["BLPOP", "b", "0"])
        lease = await leased(shell)
        await lease.expect_commands(["BLPOP", "b", "0"])
        lease.close()
        await client.expect(errors.OUTCOME_UNKNOWN)
        assert shell.cluster.leases.leased == 0
