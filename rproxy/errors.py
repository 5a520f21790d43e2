"""Canonical error replies, in one place.

Texts mirror Redis 7 byte for byte where Redis has one (src/server.c shared objects,
src/networking.c, src/cluster.c). Proxy-originated errors start with ``rproxy:`` after the
error code so clients and operators can tell them apart; they never name a backend address.
"""

from __future__ import annotations


# -- request parsing (src/networking.c processInlineBuffer / processMultibulkBuffer) --------------
PROTO_TOO_BIG_INLINE = b"-ERR Protocol error: too big inline request\r\n"
PROTO_UNBALANCED_QUOTES = b"-ERR Protocol error: unbalanced quotes in request\r\n"
PROTO_TOO_BIG_MBULK = b"-ERR Protocol error: too big mbulk count string\r\n"
PROTO_INVALID_MBULK = b"-ERR Protocol error: invalid multibulk length\r\n"
PROTO_TOO_BIG_BULK = b"-ERR Protocol error: too big bulk count string\r\n"
PROTO_INVALID_BULK = b"-ERR Protocol error: invalid bulk length\r\n"


def proto_expected_dollar(got: int) -> bytes:
    return b"-ERR Protocol error: expected '$', got '" + bytes([got]) + b"'\r\n"


# -- commands (src/server.c processCommand) ------------------------------------------------------
def unknown_command(argv: list[bytes]) -> bytes:
    """``-ERR unknown command '<name>', with args beginning with: '<a>' '<b>' ``.

    Mirrors processCommand: the name is cut at 128 bytes; args are listed while the list is
    shorter than 128 bytes, each cut to the room left, as ``'%.*s' `` (note the trailing
    space). Like C's ``%s``, each string ends at its first NUL byte."""
    name = argv[0].split(b"\0", 1)[0][:128]
    args = b""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += b"'" + arg.split(b"\0", 1)[0][: 128 - len(args)] + b"' "
    text = b"ERR unknown command '" + name + b"', with args beginning with: " + args
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def unknown_subcommand(container: bytes, sub: bytes) -> bytes:
    text = (
        b"ERR unknown subcommand '" + sub[:128] + b"'. Try " + container.upper() + b" HELP."
    )
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def wrong_arity(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '" + name.lower() + b"' command\r\n"


SYNTAX = b"-ERR syntax error\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
SELECT_NOT_ALLOWED = b"-ERR SELECT is not allowed in cluster mode\r\n"
NOPROTO = b"-NOPROTO unsupported protocol version\r\n"
MAX_CLIENTS = b"-ERR max number of clients reached\r\n"
CLUSTER_DOWN_UNCOVERED = b"-CLUSTERDOWN Hash slot not served\r\n"

# -- proxy-originated ---------------------------------------------------------------------------
REQUEST_TIMED_OUT = b"-ERR rproxy: request timed out\r\n"
TOO_MANY_REDIRECTS = b"-TRYAGAIN rproxy: too many redirects\r\n"
OUTCOME_UNKNOWN = (
    b"-ERR rproxy: connection to the backend was lost; the command may or may not have run\r\n"
)
BACKEND_BUSY = b"-ERR rproxy: too many requests queued for one backend node\r\n"
BACKEND_PROTOCOL = b"-ERR rproxy: backend protocol error\r\n"
SHUTTING_DOWN = b"-ERR rproxy: proxy is shutting down\r\n"
NO_TOPOLOGY = b"-CLUSTERDOWN rproxy: no cluster topology yet (no seed node reachable)\r\n"
HOLD_EXPIRED = (
    b"-CLUSTERDOWN rproxy: no reachable master for the slot within failover_hold_s\r\n"
)
CLUSTER_UNREACHABLE = b"-CLUSTERDOWN rproxy: no cluster node reachable\r\n"
NO_HEALTHY_REPLICA = (
    b"-CLUSTERDOWN rproxy: no healthy replica for the slot (read_from = replica)\r\n"
)


def not_supported(name: bytes, why: str) -> bytes:
    """A command the proxy refuses by policy; ``why`` says the reason in plain words."""
    text = b"ERR rproxy: '" + name.lower()[:64] + b"' is not supported: " + why.encode()
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"
