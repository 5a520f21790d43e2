"""The control connection: commands on short-lived connections to a cluster node.

The control plane (topology refresh, the command table, the embedded local cluster's set-up)
talks to nodes through here, never through the data plane's shared connections.

Two forms share one reply reader (:func:`_next_reply`): :func:`control_command`, async on
trio, for the proxy; and :class:`ControlConnection` / :func:`control_command_sync`, plain
blocking sockets, for code that runs outside trio (the embedded local cluster). Replies are
hiredis's RESP2 values: bulk strings are ``bytes``, never decoded.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Self

import hiredis
import trio

from rproxy.core.resp import encode_command
from rproxy.net.transport import NodeAccess

Addr = tuple[str, int]


class ControlError(Exception):
    pass


class _OutOfStep(ControlError):
    """The node closed the connection, or sent bytes that are not RESP: the connection is
    of no further use (an error reply, a plain ControlError, leaves it in step)."""


def _next_reply(reader: hiredis.Reader, data: bytes | bytearray) -> Any:
    """Feed what one recv returned (``b""``: the node closed the connection) to ``reader``;
    the reply once complete, False while more bytes are needed. An error reply or bytes that
    are not RESP are a ControlError."""
    if not data:
        raise _OutOfStep("connection closed")
    try:
        reader.feed(data)  # type: ignore[arg-type]  # (any buffer)
    except hiredis.ProtocolError as exc:
        raise _OutOfStep(f"bad reply: {exc!r}") from exc
    return _take_reply(reader)


def _take_reply(reader: hiredis.Reader) -> Any:
    """The next reply ``reader`` holds complete, or False (error replies as for
    ``_next_reply``)."""
    try:
        reply = reader.gets()
    except hiredis.ProtocolError as exc:
        raise _OutOfStep(f"bad reply: {exc!r}") from exc
    if isinstance(reply, hiredis.ReplyError):
        raise ControlError(str(reply))
    return reply


async def _open(addr: Addr, access: NodeAccess | None) -> trio.abc.Stream:
    """A stream to ``addr``: plain, or TLS for a TLS cluster (trio's SSLStream: the control
    plane is off the data path)."""
    infos = await trio.socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    stream: trio.abc.Stream = trio.SocketStream(sock)
    if access is not None and access.tls is not None:
        stream = trio.SSLStream(stream, access.tls, server_hostname=access.hostname(addr[0]))
    return stream


async def control_command(addr: Addr, argv: list[bytes], timeout_s: float,
                          access: NodeAccess | None = None) -> Any:
    """One command on a short-lived connection (control plane only: topology, COMMAND),
    after the cluster's AUTH if it has a password, over TLS for a TLS cluster (``access``).
    Whatever goes wrong on the way is a ControlError (or TooSlowError, or OSError: a TLS
    failure is an ssl.SSLError or trio.BrokenResourceError). A short-lived connection: a
    topology refresh runs several times a second while a shard is failing over, and must cost
    the data path next to nothing."""
    auth = access.auth if access is not None else None
    with trio.fail_after(timeout_s):
        stream = await _open(addr, access)
        try:
            # a few bytes: one send is enough
            await stream.send_all((encode_command(auth) if auth else b"")
                                  + encode_command(argv))
            reader = hiredis.Reader()
            if auth:  # its reply first: an error (WRONGPASS ...) is a ControlError with the
                # node's text, which never holds the password
                while _next_reply(reader, await stream.receive_some(1 << 20)) is False:
                    pass
                reply = _take_reply(reader)  # (the command's may have come in the same read)
                if reply is not False:
                    return reply
            while True:
                reply = _next_reply(reader, await stream.receive_some(1 << 20))
                if reply is not False:
                    return reply
        finally:
            await trio.aclose_forcefully(stream)


async def control_send(addr: Addr, argv: list[bytes], timeout_s: float,
                       access: NodeAccess | None = None) -> None:
    """Send one command on a short-lived connection and close it without waiting for the
    reply (a command whose effect is all that matters)."""
    auth = access.auth if access is not None else None
    with trio.fail_after(timeout_s):
        stream = await _open(addr, access)
        try:
            await stream.send_all((encode_command(auth) if auth else b"")
                                  + encode_command(argv))
        finally:
            await trio.aclose_forcefully(stream)


def _arg(a: bytes | str | float) -> bytes:
    return a if isinstance(a, bytes) else str(a).encode()


class ControlConnection:
    """A blocking control connection to one node, for code outside trio (the embedded local
    cluster's set-up and health checks). ``timeout_s`` bounds the connect and each
    :meth:`execute` as a whole. An error reply is a ControlError and leaves the connection
    usable. Trouble on the network is an OSError (TimeoutError for a timeout); the node
    closing the connection or sending bytes that are not RESP is a ControlError; both close
    the connection, which would be out of step, and later calls raise OSError."""

    def __init__(self, addr: Addr, timeout_s: float, password: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a node of a TLS cluster, checked as the context says."""
        self.addr, self.timeout_s = addr, timeout_s
        sock = socket.create_connection(addr, timeout=timeout_s)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=addr[0])
            except BaseException:
                sock.close()
                raise
        self._sock: socket.socket | None = sock
        self._reader = hiredis.Reader()
        if password:
            self.execute("AUTH", password)

    def execute(self, *argv: bytes | str | float) -> Any:
        """Send one command and return its reply (``str``/``int`` arguments are encoded)."""
        if self._sock is None:
            raise OSError(f"control connection to {self.addr[0]}:{self.addr[1]} is closed")
        sock, deadline = self._sock, time.monotonic() + self.timeout_s
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(encode_command([_arg(a) for a in argv]))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(remaining)
                reply = _next_reply(self._reader, sock.recv(1 << 20))
                if reply is not False:
                    return reply
        except ControlError as exc:
            if isinstance(exc, _OutOfStep):
                self.close()
            raise  # an error reply: the connection stays in step
        except BaseException:  # OSError, a timeout, an interrupt: a late reply would be
            self.close()       # taken for the next command's
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def control_command_sync(addr: Addr, argv: list[bytes], timeout_s: float) -> Any:
    """The blocking form of :func:`control_command`: one command on a short-lived
    connection, ``timeout_s`` for the connect and again for the command."""
    with ControlConnection(addr, timeout_s) as conn:
        return conn.execute(*argv)
