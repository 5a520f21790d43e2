"""The command table: for every command, where its keys are and how the proxy routes it.

Built from the backend's ``COMMAND`` reply (Redis 7 key specs, src/db.c getKeysUsingKeySpecs)
plus a small table of proxy rules (``PROXY_RULES``), so a command added to Redis routes
correctly without a code change. Pure: no sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rproxy.core.resp import string2ll


class Route(enum.IntEnum):
    KEYED = 0  # by the slot of its keys (all in one slot), or any master if it has none
    ANY = 1  # keyless; any master can answer (TIME, LASTSAVE, PUBLISH, COMMAND, ...)
    LOCAL = 2  # answered by the proxy itself
    ALL_MASTERS = 3  # sent to every master, replies merged
    REFUSED = 4  # not supported behind this proxy; ``why`` says so
    ALL_NODES = 5  # sent to every node, replicas included (CONFIG SET), replies merged
    LEASED = 6  # a blocking command: on a connection of its own (rproxy/net/blocking.py)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One Redis key spec: where to start looking (begin_search) and how to find keys."""

    bs_index: int = 0  # begin_search index (0 = keyword search)
    bs_keyword: bytes = b""
    bs_startfrom: int = 0
    fk_keynum: bool = False  # find_keys: keynum (else range)
    lastkey: int = 0  # range
    keystep: int = 1
    limit: int = 0
    keynumidx: int = 0  # keynum
    firstkey: int = 0
    access: int = 3  # what ACL key patterns must allow: 1 read (access), 2 write (insert,
    # delete, update), as rproxy.core.acl.READ / WRITE (Redis ACLSelectorCheckKey)
    not_key: bool = False  # a shard channel (SPUBLISH): routed by, but not an ACL key


@dataclass(slots=True)
class CommandInfo:
    name: bytes  # upper case; a subcommand is b"CONTAINER|SUB"
    arity: int = -1
    flags: frozenset[bytes] = frozenset()
    key_specs: tuple[KeySpec, ...] = ()
    keys_proc: Callable[[list[bytes]], list[int]] | None = None
    route: Route = Route.KEYED
    why: str = ""  # for REFUSED
    single_key: int = 0  # index of the only key, for the common one-key commands (fast path)
    subcommands: dict[bytes, CommandInfo] = field(default_factory=dict)
    categories: frozenset[bytes] = frozenset()  # ACL categories, lower case without the "@"

    readonly: bool = False  # the "readonly" flag, kept as a field: read on every command
    # Commands of this name clients sent (the session counts them: ``info.calls += 1``).
    calls: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.readonly = b"readonly" in self.flags

    def key_positions(self, argv: list[bytes]) -> list[int]:
        """Argument indexes of the keys in ``argv`` (Redis getKeysUsingKeySpecs); an invalid
        spec (e.g. a non-numeric numkeys) yields no keys, and the backend reports the error."""
        if self.keys_proc is not None:
            return self.keys_proc(argv)
        out: list[int] = []
        for spec in self.key_specs:
            span = _span(spec, argv)
            if span is None:
                continue
            if not span:
                return []
            out.extend(range(span[0], span[1] + 1, spec.keystep or 1))
        return out

    def key_access(self, argv: list[bytes]) -> list[tuple[int, int]]:
        """(index, access) of each key, access as ``KeySpec.access`` (the ACL check). With a
        keys function (SORT), the first key is read and the others written."""
        if self.keys_proc is not None:
            return [(pos, 1 if i == 0 else 2) for i, pos in enumerate(self.keys_proc(argv))]
        out: list[tuple[int, int]] = []
        for spec in self.key_specs:
            span = _span(spec, argv)
            if span is None or spec.not_key:
                continue
            if not span:
                return []
            out.extend((pos, spec.access)
                       for pos in range(span[0], span[1] + 1, spec.keystep or 1))
        return out


def _span(spec: KeySpec, argv: list[bytes]) -> tuple[int, int] | tuple[()] | None:
    """The first and last argument index of one key spec's keys; None if its keyword is not
    there (no keys from it), () if out of bounds (a syntax error the backend reports: no keys
    at all)."""
    argc = len(argv)
    if spec.bs_index:
        first = spec.bs_index
    else:
        first = 0
        sf = spec.bs_startfrom
        start = sf if sf > 0 else argc + sf
        end = argc - 1 if sf > 0 else 1
        i = start
        kw = spec.bs_keyword
        while i != end:
            if i >= argc or i < 1:
                break
            if argv[i].upper() == kw:
                first = i + 1
                break
            i = i + 1 if start <= end else i - 1
        if not first:
            return None
    if spec.fk_keynum:
        if first + spec.keynumidx >= argc:
            return ()
        numkeys = string2ll(argv[first + spec.keynumidx])
        if numkeys is None or numkeys < 0:
            return ()
        first += spec.firstkey
        last = first + numkeys - 1
    elif spec.lastkey >= 0:
        last = first + spec.lastkey
    elif not spec.limit:
        last = argc + spec.lastkey
    else:
        last = first + ((argc - first) // spec.limit + spec.lastkey)
    if last >= argc or last < first or first >= argc:
        return ()
    return first, last


_SORT_SKIP = {b"LIMIT": 2, b"GET": 1, b"BY": 1}


def _sort_keys(argv: list[bytes]) -> list[int]:
    """Redis sortGetKeys (src/db.c): the key, plus the destination of the *last* STORE
    (BY/GET patterns are not keys; LIMIT takes two arguments; the word after STORE is itself
    examined as an option, as Redis does)."""
    if len(argv) < 2:
        return []
    store = 0
    i = 2
    while i < len(argv):
        word = argv[i].upper()
        if word in _SORT_SKIP:
            i += _SORT_SKIP[word]
        elif word == b"STORE" and i + 1 < len(argv):
            store = i + 1
        i += 1
    return [1, store] if store else [1]


def _migrate_keys(argv: list[bytes]) -> list[int]:
    """Redis migrateGetKeys: MIGRATE host port key|"" db timeout [... KEYS k1 k2 ...]."""
    if len(argv) > 6 and argv[3] == b"":
        for i in range(6, len(argv)):
            if argv[i].upper() == b"KEYS":
                return list(range(i + 1, len(argv)))
        return []
    return [3] if len(argv) > 3 else []


def _parse_key_spec(raw: list[object]) -> KeySpec | None:
    d = _kv(raw)
    bs = _kv(d.get(b"begin_search", []))
    fk = _kv(d.get(b"find_keys", []))
    bspec = _kv(bs.get(b"spec", []))
    fspec = _kv(fk.get(b"spec", []))
    kw: dict[str, object] = {}
    if bs.get(b"type") == b"index":
        kw["bs_index"] = int(bspec[b"index"])  # type: ignore[arg-type]
    elif bs.get(b"type") == b"keyword":
        kw["bs_keyword"] = bytes(bspec[b"keyword"]).upper()  # type: ignore[arg-type]
        kw["bs_startfrom"] = int(bspec[b"startfrom"])  # type: ignore[arg-type]
    else:
        return None
    if fk.get(b"type") == b"range":
        kw["lastkey"] = int(fspec[b"lastkey"])  # type: ignore[arg-type]
        kw["keystep"] = int(fspec[b"keystep"])  # type: ignore[arg-type]
        kw["limit"] = int(fspec[b"limit"])  # type: ignore[arg-type]
    elif fk.get(b"type") == b"keynum":
        kw["fk_keynum"] = True
        kw["keynumidx"] = int(fspec[b"keynumidx"])  # type: ignore[arg-type]
        kw["firstkey"] = int(fspec[b"firstkey"])  # type: ignore[arg-type]
        kw["keystep"] = int(fspec[b"keystep"])  # type: ignore[arg-type]
    else:
        return None
    flags = {bytes(f).lower() for f in d.get(b"flags", [])}  # type: ignore[attr-defined]
    kw["access"] = ((1 if b"access" in flags else 0)
                    | (2 if flags & {b"insert", b"delete", b"update"} else 0))
    kw["not_key"] = b"not_key" in flags
    return KeySpec(**kw)  # type: ignore[arg-type]


def _kv(flat: object) -> dict[bytes, object]:
    items = list(flat) if isinstance(flat, list) else []
    return {bytes(k).lower(): v for k, v in zip(items[::2], items[1::2])}  # type: ignore[arg-type]


def _info_from_reply(entry: list[object]) -> CommandInfo:
    name = bytes(entry[0]).upper()  # type: ignore[arg-type]
    specs: list[KeySpec] = []
    incomplete = False
    raw_specs = entry[8] if len(entry) > 8 else []
    for raw in raw_specs:  # type: ignore[union-attr]
        spec = _parse_key_spec(raw)  # type: ignore[arg-type]
        if spec is None:
            incomplete = True
        else:
            specs.append(spec)
    cats: list[bytes] = entry[6] if len(entry) > 6 else []  # type: ignore[assignment]
    info = CommandInfo(
        name=name,
        arity=int(entry[1]),  # type: ignore[call-overload]
        flags=frozenset(bytes(f).lower() for f in entry[2]),  # type: ignore[union-attr]
        key_specs=tuple(specs),
        categories=frozenset(bytes(c).lower().lstrip(b"@") for c in cats),
    )
    if name in (b"SORT", b"SORT_RO"):
        info.keys_proc = _sort_keys
    elif name == b"MIGRATE":
        info.keys_proc = _migrate_keys
    elif incomplete and not specs:
        info.keys_proc = None
    subs = entry[9] if len(entry) > 9 else []
    for sub in subs:  # type: ignore[union-attr]
        sinfo = _info_from_reply(sub)  # type: ignore[arg-type]
        info.subcommands[sinfo.name.split(b"|", 1)[-1]] = sinfo
    return info


# -- proxy rules: what the proxy does instead of (or on top of) plain slot routing ----------------
_MONITOR = "it would need every node's command stream, merged; not implemented by the proxy"
_ADMIN = "it administers one server; run it against the cluster nodes directly"
_TOPOLOGY = "the proxy hides the cluster topology"

PROXY_RULES: dict[bytes, tuple[Route, str]] = {
    # answered locally
    b"PING": (Route.LOCAL, ""),
    b"ECHO": (Route.LOCAL, ""),
    b"QUIT": (Route.LOCAL, ""),
    b"SELECT": (Route.LOCAL, ""),
    b"HELLO": (Route.LOCAL, ""),
    b"INFO": (Route.LOCAL, ""),
    b"PROXY": (Route.LOCAL, ""),  # the proxy's own admin commands: rproxy.core.admin
    b"SLOWLOG": (Route.LOCAL, ""),  # the proxy's own (the nodes': PROXY SLOWLOG)
    b"AUTH": (Route.LOCAL, ""),
    b"RESET": (Route.LOCAL, ""),
    b"READONLY": (Route.LOCAL, ""),
    b"READWRITE": (Route.LOCAL, ""),
    b"ASKING": (Route.LOCAL, ""),
    b"CLIENT": (Route.LOCAL, ""),
    b"CLUSTER": (Route.LOCAL, ""),
    b"SCAN": (Route.LOCAL, ""),  # one master at a time; the cursor says which
    # every master, merged (the merge functions are in planner.FANOUT_MERGES)
    b"DBSIZE": (Route.ALL_MASTERS, ""),
    b"KEYS": (Route.ALL_MASTERS, ""),
    b"RANDOMKEY": (Route.ALL_MASTERS, ""),
    b"FLUSHALL": (Route.ALL_MASTERS, ""),
    b"FLUSHDB": (Route.ALL_MASTERS, ""),
    b"SCRIPT|LOAD": (Route.ALL_MASTERS, ""),
    b"SCRIPT|EXISTS": (Route.ALL_MASTERS, ""),
    b"SCRIPT|FLUSH": (Route.ALL_MASTERS, ""),
    b"SCRIPT|KILL": (Route.ALL_MASTERS, ""),
    b"FUNCTION|LOAD": (Route.ALL_MASTERS, ""),
    b"FUNCTION|DELETE": (Route.ALL_MASTERS, ""),
    b"FUNCTION|FLUSH": (Route.ALL_MASTERS, ""),
    b"FUNCTION|RESTORE": (Route.ALL_MASTERS, ""),
    b"FUNCTION|KILL": (Route.ALL_MASTERS, ""),
    # every node, replicas included
    b"CONFIG|SET": (Route.ALL_NODES, ""),
    b"CONFIG|RESETSTAT": (Route.ALL_NODES, ""),
    b"CONFIG|REWRITE": (Route.ALL_NODES, ""),
    # one node answers for the cluster (documented): CONFIG GET, LATENCY, MEMORY STATS,
    # FUNCTION LIST/DUMP/STATS, SCRIPT HELP ... are keyless and go to one master (Route.ANY).
    b"SCRIPT|DEBUG": (Route.REFUSED, "script debugging needs a dedicated connection"),
    # the stateful commands: transactions (rproxy/core/transaction.py), WATCH on leases
    b"MULTI": (Route.LOCAL, ""),  # a transaction: rproxy.core.transaction
    b"EXEC": (Route.LOCAL, ""),
    b"DISCARD": (Route.LOCAL, ""),
    b"WATCH": (Route.LOCAL, ""),  # on a leased connection: rproxy/net/lease.py
    b"UNWATCH": (Route.LOCAL, ""),
    # pub/sub: the proxy's shared subscriptions (rproxy/net/pubsub.py)
    b"SUBSCRIBE": (Route.LOCAL, ""),
    b"PSUBSCRIBE": (Route.LOCAL, ""),
    b"SSUBSCRIBE": (Route.LOCAL, ""),
    b"UNSUBSCRIBE": (Route.LOCAL, ""),
    b"PUNSUBSCRIBE": (Route.LOCAL, ""),
    b"SUNSUBSCRIBE": (Route.LOCAL, ""),
    b"PUBLISH": (Route.LOCAL, ""),
    b"SPUBLISH": (Route.LOCAL, ""),
    b"PUBSUB|CHANNELS": (Route.LOCAL, ""),
    b"PUBSUB|SHARDCHANNELS": (Route.LOCAL, ""),
    b"PUBSUB|NUMSUB": (Route.LOCAL, ""),
    b"PUBSUB|SHARDNUMSUB": (Route.LOCAL, ""),
    b"PUBSUB|NUMPAT": (Route.LOCAL, ""),
    b"MONITOR": (Route.REFUSED, _MONITOR),
    b"WAIT": (Route.LOCAL, ""),  # off the data path: rproxy/net/wait.py
    # meaningless or dangerous behind a proxy
    b"SWAPDB": (Route.REFUSED, "a Redis Cluster has only database 0"),
    b"MOVE": (Route.REFUSED, "a Redis Cluster has only database 0"),
    b"MIGRATE": (Route.REFUSED, _TOPOLOGY),
    b"REPLICAOF": (Route.REFUSED, _TOPOLOGY),
    b"SLAVEOF": (Route.REFUSED, _TOPOLOGY),
    b"FAILOVER": (Route.REFUSED, _TOPOLOGY),
    b"SYNC": (Route.REFUSED, _TOPOLOGY),
    b"PSYNC": (Route.REFUSED, _TOPOLOGY),
    b"REPLCONF": (Route.REFUSED, _TOPOLOGY),
    b"ROLE": (Route.REFUSED, _TOPOLOGY),
    b"SHUTDOWN": (Route.REFUSED, _ADMIN),
    b"DEBUG": (Route.REFUSED, _ADMIN),
    b"SAVE": (Route.REFUSED, _ADMIN),
    b"BGSAVE": (Route.REFUSED, _ADMIN),
    b"BGREWRITEAOF": (Route.REFUSED, _ADMIN),
    b"ACL": (Route.LOCAL, ""),  # the proxy's own users: rproxy.core.acl
    b"MODULE": (Route.REFUSED, _ADMIN),
}

# The ACL categories of the proxy's own commands (not in Redis's table): PROXY administers
# the proxy, so a user needs +@admin (or +proxy) for it.
PROXY_CATEGORIES = {b"PROXY": frozenset({b"admin", b"slow", b"dangerous"})}

# Commands that block the connection they run on, whatever their flags say for the moment.
_BLOCKING_OPTION = {b"XREAD": b"BLOCK", b"XREADGROUP": b"BLOCK"}


POLICY_DENIED = "disabled by the proxy's command policy (commands.deny)"


# Answered by the proxy as one standalone server would (the topology hidden), unless the
# operator passes them through to one master (commands.allow): CLUSTER NODES, SLOTS, SHARDS,
# INFO, MYID ... then show that node's view of the cluster. (CLUSTER KEYSLOT is the same
# answer either way, and stays the proxy's.)
_HIDDEN_UNLESS_ALLOWED = b"CLUSTER"


def _apply_policy(info: CommandInfo, allowed: set[bytes], denied: set[bytes]) -> None:
    container = info.name.split(b"|", 1)[0]
    if info.name in denied or container in denied:
        info.route, info.why = Route.REFUSED, POLICY_DENIED
    elif (info.name in allowed or container in allowed) and (
            info.route == Route.REFUSED
            or (info.route == Route.LOCAL and container == _HIDDEN_UNLESS_ALLOWED
                and b"|" in info.name and info.name != b"CLUSTER|KEYSLOT")):
        info.route, info.why = (Route.KEYED if info.key_specs else Route.ANY), ""


class CommandTable:
    """Name -> CommandInfo, with the proxy rules applied. Unknown names route as keyless
    commands to any master, so the backend gives Redis's own "unknown command" error."""

    def __init__(
        self,
        infos: Iterable[CommandInfo],
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
    ) -> None:
        """``allow``: commands refused by default that the operator passes through to one
        master; ``deny``: commands the operator refuses (names, or ``CONTAINER|SUB``)."""
        allowed = {a.upper().encode() for a in allow}
        denied = {d.upper().encode() for d in deny}
        self._by_name: dict[bytes, CommandInfo] = {}
        for info in infos:
            rule = PROXY_RULES.get(info.name)
            if rule is not None:
                info.route, info.why = rule
            elif not info.key_specs and info.keys_proc is None:
                info.route = Route.ANY
            if b"blocking" in info.flags and info.name not in _BLOCKING_OPTION and rule is None:
                info.route, info.why = Route.LEASED, ""
            for sub in info.subcommands.values():
                sub_rule = PROXY_RULES.get(sub.name)
                if sub_rule is not None:
                    sub.route, sub.why = sub_rule
                elif rule is not None:
                    sub.route, sub.why = info.route, info.why
                else:
                    sub.route = Route.ANY if not sub.key_specs else Route.KEYED
            for target in [info, *info.subcommands.values()]:
                _apply_policy(target, allowed, denied)
            if (
                len(info.key_specs) == 1
                and info.keys_proc is None
                and info.key_specs[0].bs_index
                and not info.key_specs[0].fk_keynum
                and info.key_specs[0].lastkey == 0
            ):
                info.single_key = info.key_specs[0].bs_index
            self._by_name[info.name] = info
        for name, (route, why) in PROXY_RULES.items():
            if b"|" not in name and name not in self._by_name:
                info = CommandInfo(name=name, route=route, why=why,
                                   categories=PROXY_CATEGORIES.get(name, frozenset()))
                _apply_policy(info, allowed, denied)
                self._by_name[name] = info
        self._unknown = CommandInfo(name=b"", route=Route.ANY)
        # The data path's fast table: commands routed by their one key at a fixed position,
        # with no subcommands and no blocking option, by the name as clients usually send it
        # (upper or lower case). Whatever is not here goes through ``lookup``.
        self.single_key: dict[bytes, CommandInfo] = {}
        for info in self._by_name.values():
            if (info.route is Route.KEYED and info.single_key and not info.subcommands
                    and info.name not in _BLOCKING_OPTION):
                self.single_key[info.name] = self.single_key[info.name.lower()] = info

    @classmethod
    def from_command_reply(
        cls, reply: list[object], allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> CommandTable:
        return cls((_info_from_reply(e) for e in reply), allow, deny)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: bytes) -> bool:
        return name.upper() in self._by_name

    def infos(self) -> list[CommandInfo]:
        """Every command (not the subcommands), in the order of the backend's table."""
        return list(self._by_name.values())

    def names(self) -> list[bytes]:
        return sorted(self._by_name)

    def calls(self) -> list[tuple[bytes, int]]:
        """(name, commands clients sent) for every command sent at least once; subcommands as
        ``CONTAINER|SUB``, a container's own count for its unknown subcommands, b"" for
        unknown commands."""
        out = []
        for info in [*self._by_name.values(), self._unknown]:
            for i in (info, *info.subcommands.values()):
                if i.calls:
                    out.append((i.name, i.calls))
        return out

    def lookup(self, argv: list[bytes]) -> CommandInfo:
        """The info that governs ``argv``: the subcommand's where the command has them."""
        info = self._by_name.get(argv[0]) or self._by_name.get(argv[0].upper()) or self._unknown
        if info.subcommands and len(argv) > 1:
            sub = info.subcommands.get(argv[1].upper())
            if sub is not None:
                return sub
        return info

    def lookup_encoded(self, data: bytes) -> CommandInfo:
        """``lookup`` of a command encoded as a multibulk (only its first two arguments are
        read); the unknown command's info if ``data`` is not one."""
        if data[:1] != b"*":
            return self._unknown
        parts = data.split(b"\r\n", 5)
        return self.lookup(parts[2:5:2] if len(parts) > 5 else parts[2:3])

    def blocks(self, info: CommandInfo, argv: list[bytes]) -> bool:
        """True if this call would block its connection (XREAD/XREADGROUP with BLOCK)."""
        opt = _BLOCKING_OPTION.get(info.name)
        return opt is not None and any(a.upper() == opt for a in argv[1:])
