"""Transports: what a connection reads from and writes to.

A transport is a connected, non-blocking byte stream with the socket's own calling convention:
``recv(n)`` returns what is there (``b""`` at EOF) or raises ``BlockingIOError``; ``send(data)``
returns how much it took or raises ``BlockingIOError``; ``fileno()`` is what the reactor's epoll
waits on; ``close()`` closes it. Client sessions and backend connections do their I/O only
through ``self.transport``.

A plain connection's transport is the socket itself (``plain``): its ``recv``/``send`` are the
socket's own C methods, so the plain data path pays nothing for this seam. A TLS transport will
implement the same four methods over an ``ssl.MemoryBIO`` pair, keeping the batch shape (one
``recv`` and one ``send`` of the socket per batch).
"""

from __future__ import annotations

import socket
from typing import Protocol


class Transport(Protocol):
    def recv(self, bufsize: int, /) -> bytes: ...
    def send(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def plain(sock: socket.socket) -> Transport:
    """A connected non-blocking socket as a transport: the socket itself."""
    return sock
