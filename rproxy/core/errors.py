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
# Before AUTH, Redis takes at most 10 arguments of at most 16384 bytes (processMultibulkBuffer).
PROTO_UNAUTH_MBULK = b"-ERR Protocol error: unauthenticated multibulk length\r\n"
PROTO_UNAUTH_BULK = b"-ERR Protocol error: unauthenticated bulk length\r\n"


def proto_expected_dollar(got: int) -> bytes:
    return b"-ERR Protocol error: expected '$', got '" + bytes([got]) + b"'\r\n"


def error_reply(text: bytes) -> bytes:
    """``-<text>\r\n``, with CR and LF in the text turned into spaces (as Redis's
    addReplyErrorLength does), so that a name or argument can never break the framing."""
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


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
    return error_reply(text)


def unknown_subcommand(container: bytes, sub: bytes) -> bytes:
    text = (
        b"ERR unknown subcommand '" + sub[:128] + b"'. Try " + container.upper() + b" HELP."
    )
    return error_reply(text)


def subcommand_syntax(container: bytes, sub: bytes) -> bytes:
    """src/networking.c addReplySubcommandSyntaxError."""
    text = (b"ERR unknown subcommand or wrong number of arguments for '" + sub[:128]
            + b"'. Try " + container.upper() + b" HELP.")
    return error_reply(text)


def wrong_arity(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '" + name.lower() + b"' command\r\n"


SYNTAX = b"-ERR syntax error\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
SELECT_NOT_ALLOWED = b"-ERR SELECT is not allowed in cluster mode\r\n"
NOPROTO = b"-NOPROTO unsupported protocol version\r\n"
MAX_CLIENTS = b"-ERR max number of clients reached\r\n"
CLUSTER_DOWN_UNCOVERED = b"-CLUSTERDOWN Hash slot not served\r\n"

# -- data types and command options (texts of redis-server 7.0: t_*.c, db.c, sort.c, ...) -------
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NUMKEYS_POSITIVE = b"-ERR numkeys should be greater than 0\r\n"
NUMKEYS_TOO_MANY = b"-ERR Number of keys can't be greater than number of args\r\n"
LIMIT_NEGATIVE = b"-ERR LIMIT can't be negative\r\n"
WEIGHT_NOT_FLOAT = b"-ERR weight value is not a float\r\n"
HLL_WRONGTYPE = b"-WRONGTYPE Key is not a valid HyperLogLog string value.\r\n"
HLL_INVALID = b"-INVALIDOBJ Corrupted HLL object detected\r\n"
LCS_NOT_STRINGS = b"-ERR The specified keys must contain string values\r\n"
LCS_LEN_AND_IDX = b"-ERR If you want both the length and indexes, please just use IDX.\r\n"
NO_SUCH_KEY = b"-ERR no such key\r\n"
SAME_OBJECT = b"-ERR source and destination objects are the same\r\n"
DB_OUT_OF_RANGE = b"-ERR DB index is out of range\r\n"
COPY_OTHER_DB = b"-ERR Copying to another database is not allowed in cluster mode\r\n"
BITOP_NOT_ONE_KEY = b"-ERR BITOP NOT must be called with a single source key.\r\n"
SORT_BY_DENIED = b"-ERR BY option of SORT denied in Cluster mode.\r\n"
SORT_GET_DENIED = b"-ERR GET option of SORT denied in Cluster mode.\r\n"
COUNT_POSITIVE = b"-ERR count should be greater than 0\r\n"
INT_OUT_OF_RANGE = (  # getIntFromObjectOrReply / getRangeLongFromObjectOrReply
    b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"
)
XREAD_UNBALANCED = (
    b"-ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be "
    b"specified.\r\n"
)
INVALID_CURSOR = b"-ERR invalid cursor\r\n"
UNBLOCK_REASON = b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n"


def at_least_one_key(name: bytes) -> bytes:
    return b"-ERR at least 1 input key is needed for '" + name.lower() + b"' command\r\n"


# -- transactions (src/multi.c, src/server.c processCommand) -------------------------------------
MULTI_NESTED = b"-ERR MULTI calls can not be nested\r\n"
EXEC_WITHOUT_MULTI = b"-ERR EXEC without MULTI\r\n"
DISCARD_WITHOUT_MULTI = b"-ERR DISCARD without MULTI\r\n"
WATCH_IN_MULTI = b"-ERR WATCH inside MULTI is not allowed\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"
NOT_IN_TRANSACTION = b"-ERR Command not allowed inside a transaction\r\n"
LEASES_EXHAUSTED = (
    b"-ERR rproxy: too many dedicated connections to one node (cluster.max_leases_per_node)\r\n"
)
WATCH_NIL = b"*-1\r\n"  # EXEC after a watched key changed (or could not be watched): nil
CROSSSLOT_TRANSACTION = (
    b"-CROSSSLOT Keys in request don't hash to the same slot (rproxy: put the keys of a "
    b"transaction under one {hash tag}, or run it per slot with commands.cross_slot_transactions"
    b" = \"emulate\", or --cross-slot emulate; with WATCH, keys in one slot)\r\n"
)
CROSSSLOT_IN_EMULATED_TRANSACTION = (
    b"-CROSSSLOT Keys in request don't hash to the same slot (rproxy: inside a transaction run "
    b"per slot, a command over several slots runs only if rproxy splits or emulates it; writes "
    b"such as RENAME or LMOVE with commands.cross_slot_writes = \"emulate\", or "
    b"--cross-slot emulate)\r\n"
)


# -- connection and client commands (src/networking.c, src/acl.c) -------------------------------
AUTH_NO_PASSWORD = (
    b"-ERR AUTH <password> called without any password configured for the default user. "
    b"Are you sure your configuration is correct?\r\n"
)
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
NOAUTH_HELLO = (
    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO "
    b"AUTH <user> <pass> option can be used to authenticate the client and select the RESP "
    b"protocol version at the same time\r\n")
NOPERM_KEY = (b"-NOPERM this user has no permissions to access one of the keys used as "
              b"arguments\r\n")
NOPERM_CHANNEL = (b"-NOPERM this user has no permissions to access one of the channels used "
                  b"as arguments\r\n")


def noperm_command(name: bytes) -> bytes:
    """ACL: the command (``container|sub``, lower case, as Redis's fullname)."""
    return b"-NOPERM this user has no permissions to run the '%s' command\r\n" % name.lower()


PROTOVER_NOT_INT = b"-ERR Protocol version is not an integer or out of range\r\n"
BAD_CLIENT_NAME = (
    b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
)


def hello_syntax(option: bytes) -> bytes:
    return b"-ERR Syntax error in HELLO option '" + option[:128] + b"'\r\n"


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

NODES_DISAGREE = b"-ERR rproxy: the cluster nodes gave different replies\r\n"
NOT_SENT = b"-ERR rproxy: not sent (its connection was lost first)\r\n"
"""The reply a part of a transaction block gets when its connection is lost before it was
written; the block sees it and is sent again (nothing ran). Never reaches a client."""
LCS_MAX_CELLS = 1_000_000
"""The dynamic-programming table of a cross-slot LCS is computed in the proxy's event loop: past
this many cells (len(a) * len(b)) it is refused rather than stall every other client."""
LCS_TOO_BIG = (
    b"-ERR rproxy: LCS over keys in different slots is limited to %d table cells "
    b"(len(a) * len(b)); put both keys in one slot with a {hash tag}\r\n" % LCS_MAX_CELLS
)


def merge_failed(exc: BaseException) -> bytes:
    return b"-ERR rproxy: could not merge replies: " + type(exc).__name__.encode() + b"\r\n"


def not_supported(name: bytes, why: str) -> bytes:
    """A command the proxy refuses by policy; ``why`` says the reason in plain words."""
    text = b"ERR rproxy: '" + name.lower()[:64] + b"' is not supported: " + why.encode()
    return error_reply(text)
