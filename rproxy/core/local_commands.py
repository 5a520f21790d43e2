"""Commands the proxy answers itself, as one plain Redis server would: sans-IO.

Each handler is a function of the client's state (``ClientState``, which it may change: a name,
QUIT), the command's ``argv`` and a read-only ``ProxyView`` of the proxy and the cluster. It
returns the encoded reply, or an instruction for the session when the answer needs the
backends: ``AllMasters`` (send one command to every master, merge the replies) or ``ToSlot``
(send one command to the master of a slot, rewrite its reply). Handlers reach into no other
object. Texts follow Redis 7 (src/server.c, src/networking.c, src/db.c); where the proxy
differs it says so in the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rproxy.core import admin, errors, merge, pubsub, resp, stats
from rproxy.core.acl import Acl
from rproxy.core.client import REPLY_OFF, REPLY_ON, REPLY_SKIP_NEXT, ClientInfo, ClientState
from rproxy.core.commands import CommandInfo
from rproxy.core.planner import fanout_merge
from rproxy.core.slots import SEVERAL_SLOTS, common_slot, key_slot
from rproxy.core.slowlog import SlowLog
from rproxy.core.transaction import Transaction

Merge = Callable[[list[bytes]], bytes]


@dataclass(frozen=True, slots=True)
class AllMasters:
    """Send ``command`` (encoded) to every master (or every node, replicas included);
    ``merge`` builds the reply."""

    command: bytes
    merge: Merge
    readonly: bool
    every_node: bool = False


@dataclass(frozen=True, slots=True)
class ToSlot:
    """Send ``command`` (encoded) to the master of ``slot``; ``merge`` rewrites its reply."""

    slot: int
    command: bytes
    merge: Merge


@dataclass(frozen=True, slots=True)
class ToLease:
    """WATCH: send each (slot, command) on the client's own connection to the master of that
    slot (leased for it if it has none); +OK once each is placed."""

    parts: list[tuple[int, bytes]]
    keys: list[bytes]  # the keys watched


@dataclass(frozen=True, slots=True)
class Unblock:
    """CLIENT UNBLOCK: end the block of the proxy's client ``client_id`` (with an error, or
    as a timeout); the session knows where it is blocked."""

    client_id: int
    error: bool


@dataclass(frozen=True, slots=True)
class Subscribe:
    """(P|S)(UN)SUBSCRIBE changed the client's subscriptions: ``names`` of ``kind`` are new
    for it (``subscribe``) or dropped. The session tells the proxy's shared subscriptions
    (rproxy/net/pubsub.py); ``reply`` answers the client -- after a new subscription is
    confirmed by the node."""

    kind: int
    subscribe: bool
    names: list[bytes]
    reply: bytes


@dataclass(frozen=True, slots=True)
class Wait:
    """WAIT: answer how many replicas acknowledged the client's writes (rproxy/net/wait.py)."""

    numreplicas: int
    timeout_ms: int  # 0: for ever


@dataclass(frozen=True, slots=True)
class Kill:
    """CLIENT KILL: close the proxy's clients that match every filter given (None: any);
    ``old_form`` (CLIENT KILL ip:port) answers +OK or an error instead of a count."""

    addr: bytes | None = None
    laddr: bytes | None = None
    kind: bytes | None = None  # normal, pubsub (the others match no proxy client)
    client_id: int = 0
    user: bytes | None = None  # the ACL user it is authenticated as
    skipme: bool = True
    old_form: bool = False


Reply = (bytes | AllMasters | ToSlot | ToLease | Unblock | Subscribe | Wait | Kill
         | admin.ConfigChange)


class ProxyView(admin.AdminView, Protocol):
    """What the proxy's own commands may read of the proxy and the cluster (the server
    implements it), beyond what ``PROXY`` reads (``admin.AdminView``: the versions, uptime,
    the cross-slot settings, the slot map ...). Read-only: a handler changes nothing but the
    client's own state."""

    @property
    def port(self) -> int: ...
    @property
    def process_id(self) -> int: ...
    @property
    def run_id(self) -> str: ...  # 40 hex digits, new at every start (as Redis's)
    @property
    def arch_bits(self) -> int: ...
    @property
    def os_name(self) -> str: ...
    @property
    def max_clients(self) -> int: ...
    @property
    def read_from(self) -> str: ...
    @property
    def masters(self) -> int: ...  # how many masters serve slots
    @property
    def map_epoch(self) -> int: ...  # the slot map's version (SCAN cursors carry it)
    @property
    def pubsub(self) -> pubsub.PubSubView: ...  # the proxy's shared subscriptions
    @property
    def cpu_seconds(self) -> tuple[float, float]: ...  # the proxy process's (system, user)
    @property
    def slowlog(self) -> SlowLog: ...  # the proxy's own (SLOWLOG)
    @property
    def acl(self) -> Acl: ...  # the users (auth.requirepass, auth.users), and ACL LOG
    @property
    def now_ms(self) -> int: ...  # Unix time in milliseconds (ACL LOG's ages)
    @property
    def table_loaded(self) -> bool: ...  # ``table`` is the cluster's (not yet: before COMMAND)

    def stat(self, name: str) -> int:
        """A counter or gauge of ``rproxy.core.stats.STATS``, by name."""
        ...

    def client(self, client_id: int) -> ClientInfo: ...
    def clients(self) -> Sequence[ClientInfo]: ...

    def scan_order(self) -> list[int]:
        """Each master's lowest slot, ascending."""
        ...

def run(client: ClientState, info: CommandInfo, argv: list[bytes], view: ProxyView) -> Reply:
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
            return errors.not_supported(container + b" " + sub, _why(container, sub))
        return errors.not_supported(argv[0], "not implemented by the proxy")
    return handler(client, argv, view)


def handled(name: bytes) -> bool:
    """True if the proxy answers this command (or ``CONTAINER|SUB``) itself."""
    return name in _HANDLERS


def refusal(name: bytes) -> str:
    """Why a locally-routed command the proxy does not implement is refused."""
    container, _, sub = name.partition(b"|")
    return _why(container, sub) if sub else "not implemented by the proxy"


# Client-side caching (README, "RESP3"): a node tracks the keys each of its connections read
# and invalidates them once; behind rproxy the reads of many clients share one connection.
_TRACKING = {b"TRACKING", b"CACHING", b"GETREDIR", b"TRACKINGINFO"}


def _why(container: bytes, sub: bytes = b"") -> str:
    if container == b"ACL":
        return ("the proxy's users come from its configuration (auth.users or auth.aclfile), "
                "read at start")
    if container == b"CLUSTER":
        return "the proxy hides the cluster topology (the proxy is one standalone server)"
    if container == b"CLIENT" and sub.upper() in _TRACKING:
        return ("client-side caching: a node tracks the keys read on each of its connections, "
                "and behind the proxy many clients' reads share one connection, so the "
                "invalidations could not be told apart")
    return "it acts on one backend connection, which clients share behind the proxy"


def _ping(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    if len(argv) > 2:
        return errors.wrong_arity(b"ping")
    if c.subscribed and c.protocol == 2:  # (RESP3 clients run any command subscribed)
        return pubsub.subscribed_pong(argv)
    return resp.PONG if len(argv) == 1 else resp.bulk(argv[1])


def _echo(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.bulk(argv[1])


def _quit(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    c.quit = True
    return resp.OK


def _select(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    db = resp.string2ll(argv[1])
    if db is None:
        return errors.NOT_INTEGER
    if not -(2**31) <= db < 2**31:  # Redis getIntFromObjectOrReply
        return errors.INT_OUT_OF_RANGE
    return resp.OK if db == 0 else errors.SELECT_NOT_ALLOWED


def _auth_check(c: ClientState, user: bytes | None, password: bytes, argv0: bytes,
                view: ProxyView) -> bytes:
    """Redis authCommand / ACLAuthenticateUser. ``user`` None: AUTH <password>, the default
    user's, an error while it needs none (Redis's "nopass"). A failed AUTH leaves the client
    as it was (authenticated or not), and is in ACL LOG."""
    acl = view.acl
    if user is None and acl.default.nopass:
        return errors.AUTH_NO_PASSWORD
    name = b"default" if user is None else user
    found = acl.authenticate(name, password, view.table if view.table_loaded else None)
    if found is None:
        acl.log.add(b"auth", b"multi" if c.multi is not None else b"toplevel", argv0, name,
                    client_line(view.client(c.id)), view.now_ms)
        return errors.WRONGPASS
    c.user = found
    c.authenticated = True
    return resp.OK


def _auth(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    if len(argv) == 2:
        return _auth_check(c, None, argv[1], argv[0], view)
    if len(argv) == 3:
        return _auth_check(c, argv[1], argv[2], argv[0], view)
    return errors.SYNTAX


def _hello(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """HELLO [protover [AUTH user pass] [SETNAME name]] (src/networking.c helloCommand):
    RESP2 or RESP3, the switch taking effect with this reply (a map in RESP3); the session
    then routes the client's commands on connections of its protocol."""
    ver = 0
    if len(argv) >= 2:
        parsed = resp.string2ll(argv[1])
        if parsed is None:
            return errors.PROTOVER_NOT_INT
        if parsed not in (2, 3):
            return errors.NOPROTO
        ver = parsed
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        more = len(argv) - i - 1
        if opt == b"AUTH" and more >= 2:
            r = _auth_check(c, argv[i + 1], argv[i + 2], argv[0], view)
            if r != resp.OK:
                return r
            i += 3
        elif opt == b"SETNAME" and more >= 1:
            name = argv[i + 1]
            if not _valid_name(name):
                return errors.BAD_CLIENT_NAME
            c.name = name  # (at once, as Redis: a later bad option does not undo it)
            i += 2
        else:
            return errors.hello_syntax(argv[i])
    if not c.authenticated:  # (after the options: a SETNAME is applied)
        return errors.NOAUTH_HELLO
    if ver:
        c.protocol = ver
    return resp.encode_map(
        [(b"server", b"redis"), (b"version", view.redis_version.encode()),
         (b"proto", c.protocol), (b"id", c.id), (b"mode", b"standalone"),
         (b"role", b"master"), (b"modules", [])], c.protocol)


def _valid_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


def _reset(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    c.reset()
    c.user = view.acl.default  # back to the default user (Redis clientSetDefaultAuth)
    c.authenticated = not view.acl.auth_required
    return b"+RESET\r\n"


def _ok(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.OK


def _multi(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """MULTI (src/multi.c multiCommand). Inside a transaction the session handles MULTI,
    EXEC and DISCARD itself (rproxy.core.transaction); here the client is not in one. After
    WATCH the transaction must stay in the watched slot."""
    c.multi = Transaction(c.watch_slot, view.cross_slot_transactions == "emulate",
                          view.cross_slot_writes == "emulate")
    return resp.OK


def _watch(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """WATCH key [key ...]: the session sends it on a leased connection to the master of the
    keys' slot (``ToLease``). The keys must be in one slot, the slot of any keys watched
    before (the transaction will run there) -- unless transactions over several slots are
    emulated: then one WATCH per slot goes to that slot's master, and EXEC checks them all
    before it writes anything (rproxy/net/transaction.py ``WatchedExec``)."""
    if view.cross_slot_transactions == "emulate":
        by_slot: dict[int, list[bytes]] = {}
        for key in argv[1:]:
            by_slot.setdefault(key_slot(key), []).append(key)
        if c.watch_slot < 0:
            c.watch_slot = next(iter(by_slot))
        return ToLease([(slot, resp.encode_command([argv[0], *keys]))
                        for slot, keys in by_slot.items()], argv[1:])
    slot = common_slot(argv[1:])  # WATCH key [key ...]
    if slot == SEVERAL_SLOTS or (c.watch_slot >= 0 and slot != c.watch_slot):
        return errors.CROSSSLOT_TRANSACTION
    c.watch_slot = slot
    return ToLease([(slot, resp.encode_command(argv))], argv[1:])


def _unwatch(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """UNWATCH: the session gives back the client's lease, if it has one."""
    c.watch_slot = -1
    return resp.OK


def _exec(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return errors.EXEC_WITHOUT_MULTI


def _discard(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return errors.DISCARD_WITHOUT_MULTI


def _client_setname(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    if not _valid_name(argv[2]):
        return errors.BAD_CLIENT_NAME
    c.name = argv[2]
    return resp.OK


def _client_getname(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.bulk(c.name) if c.name else resp.null(c.protocol)


def _client_id(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.integer(c.id)


def client_line(c: ClientInfo) -> bytes:
    """Redis 7.0's fields, in its order (src/networking.c catClientInfoString); client
    libraries parse some of them as integers (redis-py before 6 all it knows)."""
    return (
        b"id=%d addr=%s laddr=%s fd=%d name=%s age=%d idle=%d flags=%s db=0 sub=%d psub=%d "
        b"ssub=%d multi=%d qbuf=%d qbuf-free=%d argv-mem=0 multi-mem=0 rbs=%d rbp=0 obl=0 "
        b"oll=%d omem=%d tot-mem=%d events=r cmd=NULL user=%s redir=-1 resp=%d"
        % (c.id, c.addr.encode(), c.laddr.encode(), c.fd, c.name, c.age_s, c.idle_s, c.flags,
           c.sub, c.psub, c.ssub, c.multi, c.query_buffer, max(0, 65536 - c.query_buffer),
           max(c.query_buffer, 1024), c.pending, c.output_buffer,
           c.query_buffer + c.output_buffer, c.user, c.resp)
    )


_CLIENT_TYPES = {b"normal": b"normal", b"pubsub": b"pubsub", b"master": b"master",
                 b"slave": b"replica", b"replica": b"replica"}


def _client_kill(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """CLIENT KILL ip:port | CLIENT KILL [ID id] [TYPE type] [ADDR ip:port] [LADDR ip:port]
    [USER name] [SKIPME yes|no] (src/networking.c clientCommand)."""
    if len(argv) == 3:
        return Kill(addr=argv[2], skipme=False, old_form=True)
    if len(argv) < 3:
        return errors.SYNTAX
    fields: dict[str, object] = {}
    for i in range(2, len(argv), 2):
        opt = argv[i].lower()
        if i + 1 >= len(argv):
            return errors.SYNTAX
        value = argv[i + 1]
        if opt == b"id":
            n = resp.string2ll(value)
            if n is None or n < 1:
                return errors.error_reply(b"ERR client-id should be greater than 0")
            fields["client_id"] = n
        elif opt == b"type":
            kind = _CLIENT_TYPES.get(value.lower())
            if kind is None:
                return errors.error_reply(b"ERR Unknown client type '%s'" % value)
            fields["kind"] = kind
        elif opt == b"addr":
            fields["addr"] = value
        elif opt == b"laddr":
            fields["laddr"] = value
        elif opt == b"user":
            if value not in view.acl.users:
                return errors.error_reply(b"ERR No such user '%s'" % value)
            fields["user"] = value
        elif opt == b"skipme":
            if value.lower() not in (b"yes", b"no"):
                return errors.SYNTAX
            fields["skipme"] = value.lower() == b"yes"
        else:
            return errors.SYNTAX
    return Kill(**fields)  # type: ignore[arg-type]


def _client_reply(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """CLIENT REPLY ON|OFF|SKIP: OFF and SKIP answer nothing (the session drops the replies)."""
    mode = argv[2].lower() if len(argv) == 3 else b""
    if mode == b"on":
        c.reply = REPLY_ON
        return resp.OK
    if mode == b"off":
        c.reply = REPLY_OFF
        return b""
    if mode == b"skip":
        if c.reply != REPLY_OFF:
            c.reply = REPLY_SKIP_NEXT
        return b""
    return errors.SYNTAX


def _client_on_off(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """CLIENT NO-EVICT / NO-TOUCH ON|OFF: accepted. They concern a node's own connection;
    behind rproxy the connections are shared, and neither applies (README)."""
    if len(argv) != 3 or argv[2].lower() not in (b"on", b"off"):
        return errors.SYNTAX
    return resp.OK


def _client_info(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.verbatim(client_line(view.client(c.id)) + b"\n", c.protocol)


def _client_list(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    if len(argv) > 2:
        return errors.not_supported(b"CLIENT LIST", "filters are not implemented by the proxy")
    return resp.verbatim(b"".join(client_line(row) + b"\n" for row in view.clients()),
                         c.protocol)


def _client_setinfo(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    # CLIENT SETINFO LIB-NAME/LIB-VER (Redis 7.2; sent by current client libraries): accepted.
    if len(argv) != 4:
        return errors.wrong_arity(b"client|setinfo")
    return resp.OK


def _client_unblock(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """CLIENT UNBLOCK id [TIMEOUT|ERROR] (src/networking.c clientCommand: the reason is
    checked before the id)."""
    if len(argv) not in (3, 4):
        return errors.subcommand_syntax(argv[0], argv[1])
    error = False
    if len(argv) == 4:
        reason = argv[3].lower()
        if reason not in (b"timeout", b"error"):
            return errors.UNBLOCK_REASON
        error = reason == b"error"
    client_id = resp.string2ll(argv[2])
    if client_id is None:
        return errors.NOT_INTEGER
    return Unblock(client_id, error)


def _cluster_keyslot(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    return resp.integer(key_slot(argv[2]))


def _info(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """INFO [section ...], in Redis 7's sections and order: the proxy's own Server, Clients,
    CPU and Proxy (failover counters); Memory, Persistence, Stats, Errorstats and Keyspace
    with the data figures summed (or combined) over every master -- one ``INFO`` each."""
    wanted = {a.decode(errors="replace").lower() for a in argv[1:]}
    every = not wanted or wanted & {"default", "all", "everything"}
    chosen = [n for n in _INFO_SECTIONS if every or n in wanted]
    if wanted & {"hotslots", "all", "everything"}:  # (not a default section)
        chosen.append("hotslots")

    def figures(section: str) -> list[tuple[str, object]]:
        return [(st.name, view.stat(st.name)) for st in stats.section(section)]

    def render(parts: list[bytes] | None) -> bytes:
        infos = [merge.parse_info(raw) for raw in parts or []]
        sections: list[tuple[str, list[tuple[str, object]]]] = []
        for name in chosen:
            if name == "server":
                sections.append(("Server", [
                    ("redis_version", view.redis_version),
                    ("redis_mode", "standalone"),
                    ("cluster_enabled", 0),
                    ("rproxy_version", view.proxy_version),
                    ("os", view.os_name),
                    ("arch_bits", view.arch_bits),
                    ("multiplexing_api", "epoll"),
                    ("process_id", view.process_id),
                    ("run_id", view.run_id),
                    ("tcp_port", view.port),
                    ("uptime_in_seconds", view.uptime_s),
                    ("uptime_in_days", view.uptime_s // 86400),
                    ("cluster_masters", view.masters),
                ]))
            elif name == "clients":
                sections.append(("Clients", [
                    *figures("clients"),
                    ("maxclients", view.max_clients),
                ]))
            elif name == "memory":
                sections.append(("Memory", _memory(infos)))
            elif name == "persistence":
                sections.append(("Persistence", _persistence(infos)))
            elif name == "stats":
                sections.append(("Stats", [
                    *figures("stats"),
                    *[(k, _total(infos, "stats", k)) for k in CLUSTER_STATS],
                    ("slotmap_refreshes", view.stat("slotmap_refreshes")),
                    ("outcome_unknown_errors", view.stat("outcome_unknown_errors")),
                ]))
            elif name == "replication":  # one standalone master, as the client sees it
                sections.append(("Replication", [("role", "master"), ("connected_slaves", 0)]))
            elif name == "cpu":  # the proxy's own process
                sys_s, user_s = view.cpu_seconds
                sections.append(("CPU", [("used_cpu_sys", f"{sys_s:.6f}"),
                                         ("used_cpu_user", f"{user_s:.6f}")]))
            elif name == "errorstats":
                sections.append(("Errorstats", _errorstats(infos)))
            elif name == "cluster":
                sections.append(("Cluster", [("cluster_enabled", 0)]))
            elif name == "keyspace":
                rows = merge.sum_keyspace(parts or [])
                sections.append(("Keyspace", [
                    (db, f"keys={v['keys']},expires={v['expires']},avg_ttl={v['avg_ttl']}")
                    for db, v in sorted(rows.items()) if v["keys"]
                ]))
            elif name == "proxy":
                sections.append(("Proxy", [*figures("proxy"), ("read_from", view.read_from)]))
            elif name == "hotslots":  # sampled: rproxy/core/hotspots.py, PROXY HOTSLOTS
                slotmap = view.slotmap
                hot: list[tuple[str, object]] = []
                for i, (slot, count) in enumerate(view.hot.top_slots(10)):
                    addr = slotmap.owner[slot] if slotmap is not None else None
                    node = f"{addr[0]}:{addr[1]}" if addr is not None else ""
                    hot.append((f"hot_slot_{i}", f"slot={slot},samples={count},node={node}"))
                sections.append(("Hotslots", hot))
        return resp.verbatim(merge.format_info(sections), c.protocol)

    remote = [n for n in chosen if n in _FROM_MASTERS]
    if not remote:
        return render(None)

    def merge_info(parts: list[bytes]) -> bytes:
        err = merge.first_error(parts)
        return err if err is not None else render(parts)

    return AllMasters(resp.encode_command([b"INFO", *[n.encode() for n in remote]]), merge_info,
                      readonly=True)


# INFO's sections, in Redis 7's order, then the proxy's own; those the masters' figures make.
_INFO_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cpu",
                  "errorstats", "cluster", "keyspace", "proxy")
_FROM_MASTERS = frozenset({"memory", "persistence", "stats", "errorstats", "keyspace"})
# Errors the proxy acts on itself: never a client's (the redirections it follows).
_HIDDEN_ERRORS = frozenset({"MOVED", "ASK", "TRYAGAIN"})


def _total(infos: list[dict[str, dict[str, str]]], section: str, field: str) -> int:
    total = 0
    for info in infos:
        value = info.get(section, {}).get(field)
        if value is not None and value.lstrip("-").isdigit():
            total += int(value)
    return total


def _first(infos: list[dict[str, dict[str, str]]], section: str, field: str,
           default: str = "") -> str:
    for info in infos:
        value = info.get(section, {}).get(field)
        if value is not None:
            return value
    return default


def _human(n: int) -> str:
    """Bytes as Redis prints them (src/object.c bytesToHuman)."""
    for unit, size in (("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20),
                       ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n}B"


def _memory(infos: list[dict[str, dict[str, str]]]) -> list[tuple[str, object]]:
    """The data's memory: summed over the masters (maxmemory too: what the cluster can hold);
    the policy of the first master (the nodes are expected to agree)."""
    used = _total(infos, "memory", "used_memory")
    peak = _total(infos, "memory", "used_memory_peak")
    maxmemory = _total(infos, "memory", "maxmemory")
    return [
        ("used_memory", used), ("used_memory_human", _human(used)),
        ("used_memory_rss", _total(infos, "memory", "used_memory_rss")),
        ("used_memory_peak", peak), ("used_memory_peak_human", _human(peak)),
        ("used_memory_dataset", _total(infos, "memory", "used_memory_dataset")),
        ("maxmemory", maxmemory), ("maxmemory_human", _human(maxmemory)),
        ("maxmemory_policy", _first(infos, "memory", "maxmemory_policy", "noeviction")),
        ("mem_allocator", _first(infos, "memory", "mem_allocator")),
    ]


def _persistence(infos: list[dict[str, dict[str, str]]]) -> list[tuple[str, object]]:
    """Loading if any master loads; changes summed; the oldest save; AOF on if on anywhere."""
    def any_of(field: str) -> int:
        return 1 if any(i.get("persistence", {}).get(field) == "1" for i in infos) else 0

    saves = [int(v) for i in infos
             if (v := i.get("persistence", {}).get("rdb_last_save_time", "")).isdigit()]
    statuses = {i.get("persistence", {}).get("rdb_last_bgsave_status", "ok") for i in infos}
    return [
        ("loading", any_of("loading")),
        ("async_loading", any_of("async_loading")),
        ("rdb_changes_since_last_save", _total(infos, "persistence",
                                               "rdb_changes_since_last_save")),
        ("rdb_bgsave_in_progress", any_of("rdb_bgsave_in_progress")),
        ("rdb_last_save_time", min(saves) if saves else 0),
        ("rdb_last_bgsave_status", "ok" if statuses <= {"ok"} else "err"),
        ("aof_enabled", any_of("aof_enabled")),
        ("aof_rewrite_in_progress", any_of("aof_rewrite_in_progress")),
    ]


def _errorstats(infos: list[dict[str, dict[str, str]]]) -> list[tuple[str, object]]:
    """The error replies the masters gave, by prefix, summed; the redirections rproxy follows
    itself are not counted."""
    counts: dict[str, int] = {}
    for info in infos:
        for field, value in info.get("errorstats", {}).items():
            prefix = field.removeprefix("errorstat_")
            if prefix in _HIDDEN_ERRORS or not value.startswith("count="):
                continue
            counts[prefix] = counts.get(prefix, 0) + int(value[6:])
    return [(f"errorstat_{prefix}", f"count={n}") for prefix, n in sorted(counts.items())]


# Data statistics only the masters know, summed over all of them in INFO's Stats section.
CLUSTER_STATS = (
    "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys",
    "total_net_input_bytes", "total_net_output_bytes",
)



def _scan(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
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
    order = view.scan_order()
    if not order:
        return errors.NO_TOPOLOGY
    epoch = view.map_epoch & 0xFF
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
    return ToSlot(anchor, resp.encode_command(argv2), rewrite)


def _wait(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """WAIT numreplicas timeout: Redis's argument checks (src/replication.c waitCommand)."""
    numreplicas = resp.string2ll(argv[1])
    if numreplicas is None:
        return errors.NOT_INTEGER
    timeout = resp.string2ll(argv[2])
    if timeout is None:
        return errors.error_reply(b"ERR timeout is not an integer or out of range")
    if timeout < 0:
        return errors.error_reply(b"ERR timeout is negative")
    return Wait(numreplicas, timeout)


# -- Pub/Sub (rproxy.core.pubsub; the shared subscriptions: rproxy/net/pubsub.py) ----------------
def _subscription(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UN- forms. Shard channels must share a
    slot, as on a Redis Cluster node."""
    kind, sub = pubsub.SUBSCRIBE_COMMANDS[argv[0].upper()]
    names = argv[1:]
    if kind == pubsub.SHARD and names and common_slot(names) == SEVERAL_SLOTS:
        return errors.CROSSSLOT
    if c.subs is None:
        c.subs = pubsub.Subscriptions()
    if sub:
        reply, changed = pubsub.subscribe(c.subs, kind, names, c.protocol)
    else:
        reply, changed = pubsub.unsubscribe(c.subs, kind, names, c.protocol)
    return Subscribe(kind, sub, changed, reply)


def _publish(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """PUBLISH on the master of slot 0 (where the proxy's subscriptions to channels and
    patterns are), SPUBLISH on the master of the channel's slot: the node counts each of the
    proxy's own subscriptions there as one receiver; the reply counts the proxy's clients
    instead, as one Redis would (plus whoever subscribed on that node directly)."""
    channel = argv[1]
    shard = argv[0].upper() == b"SPUBLISH"
    slot = key_slot(channel) if shard else pubsub.PUBLISH_SLOT

    def count(parts: list[bytes]) -> bytes:
        raw = parts[0]
        n = resp.string2ll(raw[1:-2]) if raw[:1] == b":" else None
        if n is None:
            return raw
        ps = view.pubsub
        n += ps.receivers(channel, shard) - ps.carried_at(slot, channel, shard)
        return resp.integer(max(n, 0))

    return ToSlot(slot, resp.encode_command(argv), count)


def _pubsub_channels(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """PUBSUB CHANNELS / SHARDCHANNELS [pattern]: what every node knows, with the proxy's
    own clients' channels."""
    kind = pubsub.SHARD if argv[1].upper() == b"SHARDCHANNELS" else pubsub.CHANNEL
    pattern = argv[2] if len(argv) > 2 else None

    def union(parts: list[bytes]) -> bytes:
        error = merge.first_error(parts)
        if error is not None:
            return error
        seen: dict[bytes, None] = {}
        for raw in parts:
            for name in resp.parse_reply(raw):  # type: ignore[attr-defined]
                seen[name] = None
        for name in view.pubsub.names(kind):
            if pattern is None or pubsub.matches(pattern, name):
                seen[name] = None
        ps = view.pubsub
        out = [n for n in seen if ps.count(kind, n) or not ps.is_placed(kind, n)]
        return resp.array([resp.bulk(n) for n in out])

    return AllMasters(resp.encode_command(argv), union, True, every_node=True)


def _pubsub_numsub(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """PUBSUB NUMSUB / SHARDNUMSUB [channel ...]: summed over the nodes, each proxy client
    counted instead of the proxy's one subscription."""
    kind = pubsub.SHARD if argv[1].upper() == b"SHARDNUMSUB" else pubsub.CHANNEL
    channels = argv[2:]

    def total(parts: list[bytes]) -> bytes:
        error = merge.first_error(parts)
        if error is not None:
            return error
        sums = [0] * len(channels)
        for raw in parts:
            flat = resp.parse_reply(raw)
            for i in range(len(channels)):
                sums[i] += flat[2 * i + 1]  # type: ignore[index]
        ps = view.pubsub
        out = []
        for name, n in zip(channels, sums):
            n += ps.count(kind, name) - (1 if ps.is_placed(kind, name) else 0)
            out += [resp.bulk(name), resp.integer(max(n, 0))]
        return resp.array(out)

    return AllMasters(resp.encode_command(argv), total, True, every_node=True)


def _pubsub_numpat(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """PUBSUB NUMPAT: the nodes' patterns, the proxy's counted once each (as one Redis
    counts a pattern however many clients use it)."""

    def total(parts: list[bytes]) -> bytes:
        error = merge.first_error(parts)
        if error is not None:
            return error
        n = sum(resp.parse_reply(raw) for raw in parts)  # type: ignore[misc]
        ps = view.pubsub
        return resp.integer(max(n - ps.placed(pubsub.PATTERN) + len(ps.names(pubsub.PATTERN)),
                                0))

    return AllMasters(resp.encode_command(argv), total, True, every_node=True)


def _slowlog(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """SLOWLOG GET / LEN / RESET / HELP: the proxy's own slow log (rproxy/core/slowlog.py),
    the one thing here a handler may change beside the client's state (RESET)."""
    return view.slowlog.command(argv)


def _acl(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """ACL WHOAMI / LIST / USERS / GETUSER / CAT / LOG / DRYRUN / GENPASS / HELP: the proxy's
    own users (rproxy/core/acl.py); ACL LOG RESET is the one change."""
    return view.acl.command(c.user, argv, view.table, c.protocol, view.now_ms)


_NODE_SLOWLOG = {b"GET": 4, b"LEN": 3, b"RESET": 3}  # PROXY SLOWLOG <sub>: most arguments


def _proxy(c: ClientState, argv: list[bytes], view: ProxyView) -> Reply:
    """PROXY CLIENTS here (CLIENT LIST's lines) and PROXY SLOWLOG GET [n] / LEN / RESET (the
    masters' own slow logs, merged newest first); the rest of the family in
    rproxy/core/admin.py."""
    sub = argv[1].upper() if len(argv) > 1 else b""
    if len(argv) == 2 and sub == b"CLIENTS":
        return resp.verbatim(b"".join(client_line(row) + b"\n" for row in view.clients()),
                             c.protocol)
    if sub == b"SLOWLOG" and len(argv) > 2:
        what = argv[2].upper()
        if len(argv) <= _NODE_SLOWLOG.get(what, 0):
            command = [b"SLOWLOG", *argv[2:]]
            return AllMasters(resp.encode_command(command),
                              fanout_merge(b"SLOWLOG|" + what, command), what != b"RESET")
    return admin.run(c.protocol, argv, view)


_HANDLERS: dict[bytes, Callable[[ClientState, list[bytes], ProxyView], Reply]] = {
    b"PROXY": _proxy,
    b"SLOWLOG|GET": _slowlog,
    b"SLOWLOG|LEN": _slowlog,
    b"SLOWLOG|RESET": _slowlog,
    b"SLOWLOG|HELP": _slowlog,
    **{b"ACL|" + sub: _acl for sub in (b"WHOAMI", b"LIST", b"USERS", b"GETUSER", b"CAT", b"LOG",
                                       b"DRYRUN", b"GENPASS", b"HELP")},
    b"SUBSCRIBE": _subscription,
    b"UNSUBSCRIBE": _subscription,
    b"PSUBSCRIBE": _subscription,
    b"PUNSUBSCRIBE": _subscription,
    b"SSUBSCRIBE": _subscription,
    b"SUNSUBSCRIBE": _subscription,
    b"WAIT": _wait,
    b"PUBLISH": _publish,
    b"SPUBLISH": _publish,
    b"PUBSUB|CHANNELS": _pubsub_channels,
    b"PUBSUB|SHARDCHANNELS": _pubsub_channels,
    b"PUBSUB|NUMSUB": _pubsub_numsub,
    b"PUBSUB|SHARDNUMSUB": _pubsub_numsub,
    b"PUBSUB|NUMPAT": _pubsub_numpat,
    b"SCAN": _scan,
    b"PING": _ping,
    b"ECHO": _echo,
    b"QUIT": _quit,
    b"SELECT": _select,
    b"AUTH": _auth,
    b"HELLO": _hello,
    b"RESET": _reset,
    b"MULTI": _multi,
    b"EXEC": _exec,
    b"DISCARD": _discard,
    b"UNWATCH": _unwatch,
    b"WATCH": _watch,
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
    b"CLIENT|UNBLOCK": _client_unblock,
    b"CLIENT|KILL": _client_kill,
    b"CLIENT|REPLY": _client_reply,
    b"CLIENT|NO-EVICT": _client_on_off,
    b"CLIENT|NO-TOUCH": _client_on_off,
    b"CLUSTER|KEYSLOT": _cluster_keyslot,
}
