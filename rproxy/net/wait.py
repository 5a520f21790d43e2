"""WAIT numreplicas timeout: how many replicas acknowledged the client's writes, off the data path.

On one Redis, WAIT blocks its client until ``numreplicas`` replicas acknowledged the replication
offset of the client's last write, or ``timeout`` milliseconds passed, and answers how many did.
Behind rproxy the client's writes went over shared connections, whose own offsets mix every
client's writes, and a WAIT there would stall them all. So rproxy runs it beside the data path:
once every reply before the WAIT is in (the client's writes are on their masters), it reads each
master's replication offset -- at or past the client's writes -- and then, every few
milliseconds until the count is reached or the time is up, how far each replica acknowledged
(``INFO replication``). The answer is the minimum over the masters. Each round also asks every
master to request acknowledgements from its replicas at once, as Redis does for its own WAIT
clients (a ``WAIT`` that cannot be satisfied, with a 1 ms timeout, sent on a connection of the
proxy's own that is closed at once): otherwise replicas acknowledge only once a second.

Which masters: those the client wrote to since its last WAIT. Recording that costs a client
nothing until its first WAIT (the session notes, from then on, the master of each of its
replies that was not to a read: ``ClientSession.note_writes``); at that first WAIT rproxy does
not know, and waits for every master -- the answer is never higher than one Redis would give,
and may be lower while a replica of another master lags. A client that wrote nothing since its
last WAIT gets the number of replicas connected (as one Redis answers a client that never
wrote), the minimum over the masters (README, "WAIT").
"""

from __future__ import annotations

import math

import trio

from rproxy.core.merge import parse_info_text
from rproxy.core.topology import Addr
from rproxy.net.control import ControlError, control_command, control_send
from rproxy.net.transport import NodeAccess

POLL_S = 0.005
_ASK_FOR_ACKS = [b"WAIT", b"1000000", b"1"]


async def _replication(addr: Addr, timeout_s: float,
                       access: NodeAccess | None) -> dict[str, str]:
    raw = await control_command(addr, [b"INFO", b"replication"], timeout_s, access)
    if not isinstance(raw, bytes):
        raise ControlError(f"INFO replication: {raw!r}")
    return parse_info_text(raw).get("replication", {})


def _acked(replication: dict[str, str], offset: int) -> int:
    """Replicas online that acknowledged ``offset``."""
    n = 0
    for field, value in replication.items():
        if not field.startswith("slave") or not field[5:].isdigit():
            continue
        parts = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
        if parts.get("state") == "online" and int(parts.get("offset", "-1")) >= offset:
            n += 1
    return n


async def replicas_acked(masters: list[Addr], numreplicas: int, timeout_ms: int,
                         control_timeout_s: float, wrote: bool = True,
                         access: NodeAccess | None = None) -> int:
    """The WAIT answer for writes already acknowledged by ``masters`` (see the module doc);
    with ``wrote`` false (the client wrote nothing), the replicas connected to them.
    ``access``: the cluster's AUTH and TLS."""
    deadline = trio.current_time() + timeout_ms / 1000 if timeout_ms else math.inf
    targets: dict[Addr, int] = {}
    for addr in masters:
        if not wrote:
            targets[addr] = 0
            continue
        try:
            info = await _replication(addr, control_timeout_s, access)
            targets[addr] = int(info.get("master_repl_offset", "0"))
        except (OSError, ControlError, trio.TooSlowError, ValueError):
            targets[addr] = -1  # unreachable: none of its replicas can be counted
    while True:
        counts = []
        for addr, offset in targets.items():
            try:
                counts.append(_acked(await _replication(addr, control_timeout_s, access), offset)
                              if offset >= 0 else 0)
            except (OSError, ControlError, trio.TooSlowError, trio.BrokenResourceError,
                    ValueError):
                counts.append(0)
        result = min(counts) if counts else 0
        if result >= numreplicas or trio.current_time() >= deadline:
            return result
        for addr in targets:  # (the node asks its replicas when it gets the command; its
            # reply would come only at its next timer tick, up to 100 ms later: not awaited)
            try:
                await control_send(addr, _ASK_FOR_ACKS, control_timeout_s, access)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError):
                pass
        await trio.sleep(min(POLL_S, max(0.0, deadline - trio.current_time())))
