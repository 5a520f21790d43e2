"""What the proxy knows about one client, apart from its socket: sans-IO.

``ClientState`` is the part of a client connection that commands read and change: its id, its
name, whether it asked to be closed (QUIT), the protocol version it speaks, its transaction. The commands the
proxy answers itself (rproxy/core/local_commands.py) take it as an argument; the session that
owns the socket (rproxy/net/session.py) acts on what they changed. Its pub/sub subscriptions
are here (rproxy.core.pubsub); the modes to come (authenticated) belong here too, so that they
can be tested with plain values.

``ClientInfo`` is one row of ``CLIENT LIST``: what the session reports about itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from rproxy.core.acl import User
from rproxy.core.pubsub import Subscriptions
from rproxy.core.transaction import Transaction

REPLY_ON, REPLY_OFF, REPLY_SKIP_NEXT = 0, 1, 2  # CLIENT REPLY
_DEFAULT = User(b"default", [b"on", b"nopass", b"~*", b"&*", b"+@all"])  # (without an Acl)


class ClientState:
    __slots__ = ("id", "name", "quit", "protocol", "multi", "watch_slot", "subs", "reply",
                 "authenticated", "user")

    def __init__(self, client_id: int, authenticated: bool = True,
                 user: User | None = None) -> None:
        self.id = client_id
        # False until AUTH / HELLO AUTH succeeds, when the default user needs a password
        self.authenticated = authenticated
        # Its ACL user (rproxy.core.acl): the default one until AUTH / HELLO AUTH
        self.user = user if user is not None else _DEFAULT
        self.name = b""  # CLIENT SETNAME / HELLO SETNAME
        self.quit = False  # QUIT: reply, then close once the replies before it are sent
        self.protocol = 2  # RESP version (HELLO 2 or 3)
        self.multi: Transaction | None = None  # between MULTI and EXEC/DISCARD
        self.watch_slot = -1  # the slot of the keys WATCHed (until EXEC, DISCARD, UNWATCH)
        self.subs: Subscriptions | None = None  # its pub/sub subscriptions, once it has any
        # CLIENT REPLY: ON; OFF; SKIP (the next command's reply is dropped)
        self.reply = REPLY_ON

    @property
    def subscribed(self) -> bool:
        """In the subscribed mode (rproxy.core.pubsub): it has a subscription."""
        return self.subs is not None and self.subs.total > 0

    def reset(self) -> None:
        """RESET (src/networking.c resetCommand): back to a fresh connection's state; the id
        is kept."""
        self.name = b""
        self.protocol = 2
        self.multi = None
        self.watch_slot = -1
        self.subs = None
        self.reply = REPLY_ON


@dataclass(frozen=True, slots=True)
class ClientInfo:
    id: int
    addr: str
    fd: int
    name: bytes
    age_s: int
    idle_s: int
    query_buffer: int  # bytes of an incomplete command held by the parser
    pending: int  # replies not yet sent, in order
    output_buffer: int  # bytes written but not yet taken by the socket
    laddr: str = ""  # the proxy's address the client connected to
    flags: bytes = b"N"  # as Redis's: N (none), P (subscribed), x (in MULTI), b (blocked)
    sub: int = 0
    psub: int = 0
    ssub: int = 0
    multi: int = -1  # commands queued in its MULTI, -1 outside one
    resp: int = 2  # the protocol it speaks (HELLO)
    user: bytes = b"default"  # the ACL user it is authenticated as
