"""The control connection: one command on a short-lived connection to a cluster node.

The control plane (topology refresh, the command table, the embedded local cluster's set-up)
talks to nodes through here, never through the data plane's shared connections.
"""

from __future__ import annotations

import socket
from typing import Any

import hiredis
import trio

from rproxy.core.resp import encode_command

Addr = tuple[str, int]


class ControlError(Exception):
    pass


async def control_command(addr: Addr, argv: list[bytes], timeout_s: float) -> Any:
    """One command on a short-lived connection (control plane only: topology, COMMAND).
    Whatever goes wrong on the way is a ControlError (or TooSlowError, or OSError). A plain
    trio socket: a topology refresh runs several times a second while a shard is failing
    over, and must cost the data path next to nothing."""
    with trio.fail_after(timeout_s):
        infos = await trio.socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        with trio.socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                await sock.connect(sockaddr)
                await sock.send(encode_command(argv))  # a few bytes: one send is enough
                reader = hiredis.Reader()
                while True:
                    data = await sock.recv(1 << 20)
                    if not data:
                        raise ControlError("connection closed")
                    reader.feed(data)
                    reply = reader.gets()
                    if reply is not False:
                        if isinstance(reply, hiredis.ReplyError):
                            raise ControlError(str(reply))
                        return reply
            except hiredis.ProtocolError as exc:
                raise ControlError(f"bad reply: {exc!r}") from exc
