"""Commands the proxy answers itself, as one plain Redis server would.

Each handler takes the session and ``argv`` and returns the encoded reply, or a ``Request``
(a fan-out) that takes the command's place in the reply queue. Texts follow Redis 7
(src/server.c, src/networking.c, src/db.c); where the proxy differs it says so in the error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rproxy import __version__
from rproxy.core import errors, merge, resp
from rproxy.core.commands import CommandInfo
from rproxy.core.request import FanOut, Request
from rproxy.core.slots import key_slot

if TYPE_CHECKING:
    from rproxy.net.session import ClientSession

Merge = Callable[[list[bytes]], bytes]
Reply = bytes | Request

def run(session: ClientSession, info: CommandInfo, argv: list[bytes]) -> Reply:
    arity = info.arity
    if (arity > 0 and len(argv) != arity) or (arity < 0 and len(argv) < -arity):
        return errors.wrong_arity(info.name)
    handler = _HANDLERS.get(info.name)
    if handler is None and info.subcommands and len(argv) > 1:
        # A subcommand the backend's table does not know (e.g. CLIENT SETINFO on Redis 7.0).
        handler = _HANDLERS.get(info.name + b"|" + argv[1].upper())
        if handler is None:
            return errors.unknown_subcommand(info.name, argv[1])
    if handler is None:
        if b"|" in info.name:  # a subcommand the proxy does not implement
            container, _, sub = info.name.partition(b"|")
            return errors.not_supported(container + b" " + sub, _why(container))
        return errors.not_supported(argv[0], "not implemented by the proxy")
    return handler(session, argv)


def handled(name: bytes) -> bool:
    """True if the proxy answers this command (or ``CONTAINER|SUB``) itself."""
    return name in _HANDLERS


def refusal(name: bytes) -> str:
    """Why a locally-routed command the proxy does not implement is refused."""
    container = name.split(b"|", 1)[0]
    return _why(container) if b"|" in name else "not implemented by the proxy"


def _why(container: bytes) -> str:
    if container == b"CLUSTER":
        return "the proxy hides the cluster topology (the proxy is one standalone server)"
    return "it acts on one backend connection, which clients share behind the proxy"


def _ping(s: ClientSession, argv: list[bytes]) -> Reply:
    if len(argv) > 2:
        return errors.wrong_arity(b"ping")
    return resp.PONG if len(argv) == 1 else resp.bulk(argv[1])


def _echo(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.bulk(argv[1])


def _quit(s: ClientSession, argv: list[bytes]) -> Reply:
    s.closing = True
    return resp.OK


def _select(s: ClientSession, argv: list[bytes]) -> Reply:
    db = resp.string2ll(argv[1])
    if db is None:
        return errors.NOT_INTEGER
    if not -(2**31) <= db < 2**31:  # Redis getIntFromObjectOrReply
        return errors.INT_OUT_OF_RANGE
    return resp.OK if db == 0 else errors.SELECT_NOT_ALLOWED


def _auth_check(user: bytes | None, password: bytes) -> bytes:
    """No password is configured on the proxy yet: like a Redis whose default user is
    ``nopass``, AUTH <password> is an error and AUTH default <anything> succeeds."""
    if user is None:
        return errors.AUTH_NO_PASSWORD
    return resp.OK if user == b"default" else errors.WRONGPASS


def _auth(s: ClientSession, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        return _auth_check(None, argv[1])
    if len(argv) == 3:
        return _auth_check(argv[1], argv[2])
    return errors.SYNTAX


def _hello(s: ClientSession, argv: list[bytes]) -> Reply:
    """HELLO [protover [AUTH user pass] [SETNAME name]] (src/networking.c helloCommand).
    Only RESP2 is spoken: HELLO 3 gets -NOPROTO, as from a server without RESP3."""
    if len(argv) >= 2:
        ver = resp.string2ll(argv[1])
        if ver is None:
            return errors.PROTOVER_NOT_INT
        if ver != 2:
            return errors.NOPROTO
    i = 2
    name = None
    while i < len(argv):
        opt = argv[i].upper()
        more = len(argv) - i - 1
        if opt == b"AUTH" and more >= 2:
            r = _auth_check(argv[i + 1], argv[i + 2])
            if r != resp.OK:
                return r
            i += 3
        elif opt == b"SETNAME" and more >= 1:
            name = argv[i + 1]
            if not _valid_name(name):
                return errors.BAD_CLIENT_NAME
            i += 2
        else:
            return errors.hello_syntax(argv[i])
    if name is not None:
        s.name = name
    return resp.encode_value(
        [b"server", b"redis", b"version", s.cluster.redis_version.encode(), b"proto", 2,
         b"id", s.id, b"mode", b"standalone", b"role", b"master", b"modules", []]
    )


def _valid_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


def _reset(s: ClientSession, argv: list[bytes]) -> Reply:
    s.name = b""
    return b"+RESET\r\n"


def _ok(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.OK


def _client_setname(s: ClientSession, argv: list[bytes]) -> Reply:
    if not _valid_name(argv[2]):
        return errors.BAD_CLIENT_NAME
    s.name = argv[2]
    return resp.OK


def _client_getname(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.bulk(s.name or None)


def _client_id(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.integer(s.id)


def _client_line(c: ClientSession, now: float) -> bytes:
    age = int(now - c.server.session_started.get(c.id, now))
    idle = int(now - c.last_active) if c.last_active else age
    return (
        b"id=%d addr=%s fd=%d name=%s age=%d idle=%d flags=N db=0 sub=0 psub=0 multi=-1 "
        b"qbuf=%d obl=0 oll=%d omem=%d cmd=NULL user=default"
        % (c.id, c.peer.encode(), c.fd, c.name, age, idle, c.parser.buffered,
           len(c.queue), len(c.wbuf))
    )


def _client_info(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.bulk(_client_line(s, s.server.now) + b"\n")


def _client_list(s: ClientSession, argv: list[bytes]) -> Reply:
    if len(argv) > 2:
        return errors.not_supported(b"CLIENT LIST", "filters are not implemented by the proxy")
    now = s.server.now
    return resp.bulk(b"".join(_client_line(c, now) + b"\n" for c in s.server.sessions.values()))


def _client_setinfo(s: ClientSession, argv: list[bytes]) -> Reply:
    # CLIENT SETINFO LIB-NAME/LIB-VER (Redis 7.2; sent by current client libraries): accepted.
    if len(argv) != 4:
        return errors.wrong_arity(b"client|setinfo")
    return resp.OK


def _cluster_keyslot(s: ClientSession, argv: list[bytes]) -> Reply:
    return resp.integer(key_slot(argv[2]))


def _info(s: ClientSession, argv: list[bytes]) -> Reply:
    """INFO [section ...]: the proxy's own Server, Clients and Proxy (failover counters)
    sections; Stats with the proxy's counters plus the data statistics summed over every
    master; Keyspace with the totals over every master (one ``INFO stats keyspace`` each)."""
    wanted = {a.decode(errors="replace").lower() for a in argv[1:]}
    every = not wanted or wanted & {"default", "all", "everything"}
    names = ["server", "clients", "proxy", "stats", "keyspace"]
    chosen = [n for n in names if every or n in wanted]
    server = s.server
    cluster = s.cluster

    def render(parts: list[bytes] | None) -> bytes:
        sections: list[tuple[str, list[tuple[str, object]]]] = []
        now = time.time()
        for name in chosen:
            if name == "server":
                sections.append(("Server", [
                    ("redis_version", cluster.redis_version),
                    ("redis_mode", "standalone"),
                    ("cluster_enabled", 0),
                    ("rproxy_version", __version__),
                    ("os", os.uname().sysname),
                    ("process_id", os.getpid()),
                    ("tcp_port", server.port),
                    ("uptime_in_seconds", int(now - server.started_at)),
                    ("uptime_in_days", int(now - server.started_at) // 86400),
                    ("cluster_masters", len(cluster.masters)),
                ]))
            elif name == "clients":
                sections.append(("Clients", [
                    ("connected_clients", len(server.sessions)),
                    ("maxclients", server.config.limits.max_clients),
                ]))
            elif name == "proxy":
                sections.append(("Proxy", [
                    ("backend_connections", len(cluster.connections())),
                    ("held_requests", cluster.held()),
                    ("held_expired", cluster.held_expired),
                    ("retried_requests", cluster.retried),
                    ("outcome_unknown_errors", cluster.outcome_unknown),
                    ("slotmap_refreshes", cluster.refreshes),
                    ("slotmap_epoch", cluster.map_epoch),
                    ("failed_masters", len(cluster.slotmap.failed) if cluster.slotmap else 0),
                    ("unreachable_nodes", len(cluster.down_since)),
                    ("cluster_reachable", 0 if cluster.unreachable else 1),
                    ("read_from", cluster.read_from),
                ]))
            elif name == "stats":
                backend = merge.sum_fields(parts or [], "stats", CLUSTER_STATS)
                sections.append(("Stats", [
                    ("total_connections_received", server.connections_received),
                    ("total_commands_processed", server.commands_processed),
                    ("rejected_connections", server.rejected_connections),
                    *[(k, backend.get(k, 0)) for k in CLUSTER_STATS],
                    ("slotmap_refreshes", cluster.refreshes),
                    ("outcome_unknown_errors", cluster.outcome_unknown),
                ]))
            elif name == "keyspace":
                rows = merge.sum_keyspace(parts or [])
                sections.append(("Keyspace", [
                    (db, f"keys={v['keys']},expires={v['expires']},avg_ttl={v['avg_ttl']}")
                    for db, v in sorted(rows.items()) if v["keys"]
                ]))
        return merge.format_info(sections)

    remote = [n for n in ("stats", "keyspace") if n in chosen]
    if not remote:
        return render(None)

    def merge_info(parts: list[bytes]) -> bytes:
        err = merge.first_error(parts)
        return err if err is not None else render(parts)

    return s.fan_out(resp.encode_command([b"INFO", *[n.encode() for n in remote]]), merge_info,
                     readonly=True)


# Data statistics only the masters know, summed over all of them in INFO's Stats section.
CLUSTER_STATS = (
    "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys",
    "total_net_input_bytes", "total_net_output_bytes",
)



def _scan(s: ClientSession, argv: list[bytes]) -> Reply:
    """SCAN over the whole cluster: one master after another, in the order of the lowest slot
    each owns. The client's cursor is ``node_cursor << 22 | epoch << 14 | anchor``: ``anchor``
    is the lowest slot of the master being scanned (a plain integer that names the master by
    what it serves), ``epoch`` the low 8 bits of the proxy's slot-map version when the cursor
    was made. If the slot map has changed since (resharding, failover), the cursor's picture of
    what was already scanned may be wrong, so the scan starts again from the first master:
    keys may be returned twice, none that is present for the whole scan is missed, and a scan
    completes once the map is stable for one pass."""
    cursor = resp.string2ll(argv[1])
    if cursor is None or cursor < 0:
        return errors.INVALID_CURSOR
    cluster = s.cluster
    order = cluster.scan_order()
    if not order:
        return errors.NO_TOPOLOGY
    epoch = cluster.map_epoch & 0xFF
    anchor, cursor_epoch, backend = cursor & 0x3FFF, (cursor >> 14) & 0xFF, cursor >> 22
    if cursor == 0 or cursor_epoch != epoch or anchor not in order:
        anchor, backend = order[0], 0
    following = [a for a in order if a > anchor]
    next_anchor = following[0] if following else -1

    def rewrite(parts: list[bytes]) -> bytes:
        raw = parts[0]
        if raw[:1] == b"-":
            return raw
        cursor_b, keys = merge.split_array(raw)
        node_cursor = int(cursor_b.split(b"\r\n")[1])
        if node_cursor:
            new = node_cursor << 22 | epoch << 14 | anchor
        elif next_anchor >= 0:
            new = epoch << 14 | next_anchor  # the next master, from its start
        else:
            new = 0  # done
        return b"*2\r\n" + resp.bulk(b"%d" % new) + keys

    argv2 = [argv[0], b"%d" % backend, *argv[2:]]
    parent = FanOut(s, 1, rewrite)
    cluster.route(parent.child(0, resp.encode_command(argv2), anchor, readonly=True))
    return parent


_HANDLERS: dict[bytes, Callable[[ClientSession, list[bytes]], Reply]] = {
    b"SCAN": _scan,
    b"PING": _ping,
    b"ECHO": _echo,
    b"QUIT": _quit,
    b"SELECT": _select,
    b"AUTH": _auth,
    b"HELLO": _hello,
    b"RESET": _reset,
    b"READONLY": _ok,
    b"READWRITE": _ok,
    b"ASKING": _ok,
    b"INFO": _info,
    b"CLIENT|SETNAME": _client_setname,
    b"CLIENT|GETNAME": _client_getname,
    b"CLIENT|ID": _client_id,
    b"CLIENT|INFO": _client_info,
    b"CLIENT|LIST": _client_list,
    b"CLIENT|SETINFO": _client_setinfo,
    b"CLUSTER|KEYSLOT": _cluster_keyslot,
}
