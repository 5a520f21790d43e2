"""Transports: what a connection reads from and writes to.

A transport is a connected, non-blocking byte stream with the socket's own calling convention:
``recv(n)`` returns what is there (``b""`` at EOF) or raises ``BlockingIOError``; ``send(data)``
returns how much it took or raises ``BlockingIOError``; ``fileno()`` is what the reactor's epoll
waits on; ``close()`` closes it. Client sessions and backend connections do their I/O only
through ``self.transport``.

A plain connection's transport is the socket itself (``plain``): its ``recv``/``send`` are the
socket's own C methods, so the plain data path pays nothing for this seam. A TLS connection's
(``TlsTransport``: a client of the TLS listener, or a connection to a node of a TLS cluster)
implements the same four methods over an ``ssl.MemoryBIO`` pair, keeping the batch shape (one
``recv`` and one ``send`` of the socket per batch); its handshake (``tls_accept`` /
``tls_connect``) runs in a trio task before the connection is used.

``NodeAccess`` is how rproxy reaches a cluster node: the AUTH it starts with (the cluster's
credentials) and, for a TLS cluster, the client-side TLS settings.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

import trio


class Transport(Protocol):
    def recv(self, bufsize: int, /) -> bytes: ...
    def send(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def plain(sock: socket.socket) -> Transport:
    """A connected non-blocking socket as a transport: the socket itself."""
    return sock


class TlsTransport:
    """TLS over a non-blocking socket, through an ``ssl.MemoryBIO`` pair: the socket is read
    and written as plain bytes (one ``recv`` / one ``send`` per batch, as a plain connection),
    the SSL object turns them into records and back.

    ``send`` keeps the caller's convention (how much of ``data`` it took; the caller sends the
    rest again later) although encryption takes all of ``data`` at once: when the socket does
    not take all of the records, the records left are kept (``_out``) and the last byte of
    ``data`` is reported as not taken; the caller's next ``send`` starts with that byte, which
    is then skipped (it is in the records already) once ``_out`` is flushed."""

    __slots__ = ("sock", "ssl", "incoming", "outgoing", "_out", "_owed")

    def __init__(self, sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.sock = sock
        self.ssl = sslobj
        self.incoming = incoming
        self.outgoing = outgoing
        self._out = b""  # records the socket has not taken yet
        self._owed = 0  # bytes at the start of the caller's next send already in _out

    def recv(self, bufsize: int, /) -> bytes:
        try:
            raw = self.sock.recv(bufsize)
        except BlockingIOError:
            if not self.buffered:  # nothing there, nothing kept
                raise
            raw = None
        if raw == b"":
            return b""
        if raw:
            self.incoming.write(raw)
        out: list[bytes] = []
        while True:
            try:
                chunk = self.ssl.read(bufsize)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                if not out:
                    return b""
                break
            if not chunk:
                break
            out.append(chunk)
        if self.outgoing.pending:  # TLS 1.3 post-handshake messages: best effort, in order
            self._out += self.outgoing.read()
            self._flush()
        if not out:
            raise BlockingIOError("no complete TLS record yet")
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def buffered(self) -> bool:
        """Bytes read from the socket but not returned yet (the client's first command can
        come with the last handshake message): the reader must not wait for the socket."""
        return bool(self.incoming.pending or self.ssl.pending())

    def send(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._out and not self._flush():
            raise BlockingIOError("TLS records still waiting for the socket")
        owed, self._owed = self._owed, 0
        if owed:  # (the byte reported as not taken last time: sent with those records)
            data = memoryview(data)[owed:]
        if not data:
            return owed
        self.ssl.write(data)
        self._out = self.outgoing.read()
        if self._flush():
            return owed + len(data)
        self._owed = 1
        return owed + len(data) - 1

    def _flush(self) -> bool:
        """Send the records kept; True once none is left."""
        try:
            n = self.sock.send(self._out)
        except BlockingIOError:
            return False
        self._out = self._out[n:]
        return not self._out

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


MIN_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(cert_file: str, key_file: str, ca_cert_file: str = "",
                   auth_clients: str = "no", ciphers: str = "",
                   min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """The listener's TLS settings (Redis's tls-* names): its certificate and key, the CA that
    client certificates must chain to, whether clients must show one (``no``, ``optional``,
    ``yes``), the TLS 1.2 cipher list, the lowest version (TLS 1.2 at least)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[min_version]
    ctx.load_cert_chain(cert_file, key_file)
    if ca_cert_file:
        ctx.load_verify_locations(ca_cert_file)
    ctx.verify_mode = {"no": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                       "yes": ssl.CERT_REQUIRED}[auth_clients]
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


@dataclass(frozen=True)
class NodeAccess:
    """How rproxy reaches a node (the same for every node of the cluster): the AUTH a
    connection starts with (cluster.password), and TLS (cluster.tls): the client context, and
    the name the nodes' certificates are checked against ("" = the address connected to)."""

    auth: list[bytes] | None = None
    tls: ssl.SSLContext | None = None
    server_name: str = ""

    def hostname(self, host: str) -> str | None:
        """``server_hostname`` for a node at ``host`` (None: no check)."""
        if self.tls is None or not self.tls.check_hostname:
            return None
        return self.server_name or host


def client_context(ca_cert_file: str = "", cert_file: str = "", key_file: str = "",
                   check_hostname: bool = True, ciphers: str = "",
                   min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """rproxy as a TLS client of the nodes: the CA their certificates chain to (the system's
    if ""), a client certificate and key if the nodes ask for one (tls-auth-clients), whether
    a certificate must name the node."""
    ctx = ssl.create_default_context(cafile=ca_cert_file or None)
    ctx.minimum_version = MIN_VERSIONS[min_version]
    ctx.check_hostname = check_hostname
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


async def send_all(conn: Transport, data: bytes) -> None:
    """All of ``data`` on a non-blocking socket or transport, waiting in trio while it is
    full (the handshakes: outside the reactor)."""
    while data:
        await trio.lowlevel.wait_writable(conn.fileno())
        try:
            data = data[conn.send(data):]
        except BlockingIOError:
            pass


async def recv_some(conn: Transport, bufsize: int) -> bytes:
    """What a non-blocking socket or transport has, waiting in trio until it has something
    (the handshakes); the peer closing is a ConnectionResetError."""
    while True:
        if not getattr(conn, "buffered", False):
            await trio.lowlevel.wait_readable(conn.fileno())
        try:
            data = conn.recv(bufsize)
        except BlockingIOError:
            continue
        if not data:
            raise ConnectionResetError("closed during the handshake")
        return data


async def _handshake(sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                     outgoing: ssl.MemoryBIO) -> TlsTransport:
    while True:
        try:
            sslobj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        await send_all(sock, outgoing.read())
        if done:
            return TlsTransport(sock, sslobj, incoming, outgoing)
        incoming.write(await recv_some(sock, 65536))


async def tls_connect(sock: socket.socket, ctx: ssl.SSLContext,
                      server_hostname: str | None) -> TlsTransport:
    """The client side of a TLS handshake on a connected non-blocking socket (a node of a TLS
    cluster); raises ``ssl.SSLError`` (a certificate that does not verify, among others) or
    ``OSError``. The caller bounds the time."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(incoming, outgoing, server_side=False,
                          server_hostname=server_hostname)
    return await _handshake(sock, sslobj, incoming, outgoing)


async def tls_accept(sock: socket.socket, ctx: ssl.SSLContext, timeout_s: float) -> TlsTransport:
    """The server side of a TLS handshake on an accepted non-blocking socket, within
    ``timeout_s``; raises ``ssl.SSLError``, ``OSError`` or ``trio.TooSlowError``."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(incoming, outgoing, server_side=True)
    with trio.fail_after(timeout_s):
        return await _handshake(sock, sslobj, incoming, outgoing)
