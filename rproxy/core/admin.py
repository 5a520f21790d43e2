"""The ``PROXY`` command family: the proxy's view of itself and of the cluster, sans-IO.

``PROXY HELP``, ``PROXY INFO``, ``PROXY NODES``, ``PROXY SLOTS``, ``PROXY HOTSLOTS [n]`` and
``PROXY HOTKEYS [n]`` (sampled: rproxy/core/hotspots.py), ``PROXY CONFIG GET <pattern>``,
``PROXY CONFIG SET <key> <value>`` (a runtime key: the server applies the ``ConfigChange``),
and ``PROXY EXPLAIN <command ...>``: how rproxy would route a command (its keys' slots and
their masters, split, emulated, refused, answered by rproxy, sent to every master, on a
dedicated connection or not) without running it. ``PROXY CLIENTS`` is answered in
rproxy/core/local_commands.py (CLIENT LIST's lines). Replies are built in the client's protocol
(maps in RESP3, flat arrays in RESP2, as Redis builds ``CONFIG GET``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Protocol

from rproxy.core import errors, resp
from rproxy.core.commands import CommandInfo, CommandTable, Route
from rproxy.core.emulate_reads import plan_read
from rproxy.core.emulate_writes import EMULATED_WRITES
from rproxy.core.hotspots import HotSpots
from rproxy.core.multi_pop import NAMES as POPS_OVER_SLOTS
from rproxy.core.planner import SPLIT_NAMES
from rproxy.core.slots import key_slot
from rproxy.core.topology import Addr, SlotMap


class AdminView(Protocol):
    """What ``PROXY`` reads (the server implements it, with ``ProxyView``)."""

    @property
    def slotmap(self) -> SlotMap | None: ...
    @property
    def table(self) -> CommandTable: ...
    @property
    def cross_slot_writes(self) -> str: ...  # "refuse" or "emulate"
    @property
    def cross_slot_transactions(self) -> str: ...  # "refuse" or "emulate"
    @property
    def proxy_version(self) -> str: ...
    @property
    def redis_version(self) -> str: ...  # the backend's
    @property
    def uptime_s(self) -> int: ...

    @property
    def hot(self) -> HotSpots: ...  # sampled hot slots and keys

    def unreachable(self, addr: Addr) -> bool: ...  # its connection is lost
    def answered(self, name: bytes) -> str | None: ...  # why a local command is refused
    def config_items(self) -> list[tuple[str, str]]: ...  # "section.key", value


HELP = [
    "PROXY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    The proxy's version, uptime, slot map and settings.",
    "NODES",
    "    Every node: address, role, its master (replicas), slot ranges, state.",
    "SLOTS",
    "    Every slot range: first slot, last slot, master, replicas.",
    "HOTSLOTS [<count>]",
    "    The most used slots over the sampling window, hottest first: slot, samples, master.",
    "HOTKEYS [<count>]",
    "    The most used keys over the sampling window, hottest first: key, samples.",
    "CONFIG GET <pattern>",
    "    The configuration keys (section.key) matching the glob pattern, and their values.",
    "CONFIG SET <key> <value>",
    "    Set a key that can change at run time (as SIGHUP applies it).",
    "CLIENTS",
    "    The proxy's client connections, one CLIENT LIST line each.",
    "EXPLAIN <command> [<arg> ...]",
    "    How rproxy would route the command, without running it.",
    "SLOWLOG GET [<count>] | LEN | RESET",
    "    The masters' own slow logs, merged newest first (SLOWLOG is the proxy's).",
    "HELP",
    "    Print this help.",
]


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """PROXY CONFIG SET: the server sets a runtime key (``rproxy.core.config.set_runtime``)."""

    key: str
    value: str


def run(protocol: int, argv: list[bytes], view: AdminView) -> bytes | ConfigChange:
    if len(argv) < 2:
        return errors.wrong_arity(b"proxy")
    sub = argv[1].upper()
    if sub == b"HELP" and len(argv) == 2:
        return resp.array([b"+" + line.encode() + b"\r\n" for line in HELP])
    if sub == b"INFO" and len(argv) == 2:
        return _info(protocol, view)
    if sub == b"NODES" and len(argv) == 2:
        return _nodes(view)
    if sub == b"SLOTS" and len(argv) == 2:
        return _slots(view)
    if sub in (b"HOTSLOTS", b"HOTKEYS") and len(argv) <= 3:
        n = resp.string2ll(argv[2]) if len(argv) == 3 else 10
        if n is None or n < 0:
            return errors.error_reply(b"ERR count should be a non-negative integer")
        if sub == b"HOTKEYS":
            return resp.encode_value([[k, c] for k, c in view.hot.top_keys(n)])
        owner = view.slotmap.owner if view.slotmap is not None else None
        return resp.encode_value([[s, c, _node(owner[s]) if owner is not None else ""]
                                  for s, c in view.hot.top_slots(n)])
    if sub == b"CONFIG" and len(argv) == 5 and argv[2].upper() == b"SET":
        return ConfigChange(argv[3].decode(errors="replace").lower(),
                            argv[4].decode(errors="replace"))
    if sub == b"CONFIG" and len(argv) == 4 and argv[2].upper() == b"GET":
        pattern = argv[3].decode(errors="replace").lower()
        return resp.encode_map([(k, v) for k, v in view.config_items()
                                if fnmatch.fnmatchcase(k, pattern)], protocol)
    if sub == b"EXPLAIN" and len(argv) >= 3:
        return resp.encode_map(explain(argv[2:], view), protocol)
    if sub in (b"HELP", b"INFO", b"NODES", b"SLOTS", b"CONFIG", b"EXPLAIN", b"HOTSLOTS",
               b"HOTKEYS", b"SLOWLOG", b"CLIENTS"):
        return errors.error_reply(
            b"ERR unknown subcommand or wrong number of arguments for '%s'. Try PROXY HELP."
            % argv[1])
    return errors.error_reply(b"ERR unknown subcommand '%s'. Try PROXY HELP." % argv[1])


def _node(addr: Addr | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr is not None else ""


def _state(addr: Addr, view: AdminView) -> str:
    m = view.slotmap
    if m is not None and addr in m.failed:
        return "failed"
    return "unreachable" if view.unreachable(addr) else "ok"


def _info(protocol: int, view: AdminView) -> bytes:
    m = view.slotmap
    lines = [
        f"rproxy_version:{view.proxy_version}",
        f"redis_version:{view.redis_version}",
        f"uptime_in_seconds:{view.uptime_s}",
        f"slots_covered:{0 if m is None else sum(1 for o in m.owner if o is not None)}",
        f"masters:{0 if m is None else len(m.shards)}",
        f"nodes:{0 if m is None else len(m.nodes)}",
        f"failed_masters:{0 if m is None else len(m.failed)}",
        f"cross_slot_writes:{view.cross_slot_writes}",
        f"cross_slot_transactions:{view.cross_slot_transactions}",
    ]
    return resp.verbatim(("\r\n".join(lines) + "\r\n").encode(), protocol)


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return " ".join(f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in ranges)


def _nodes(view: AdminView) -> bytes:
    m = view.slotmap
    rows: list[list[object]] = []
    for shard in m.shards if m is not None else ():
        rows.append([_node(shard.master), "master", "", _ranges(shard.ranges),
                     _state(shard.master, view)])
        for replica in shard.replicas:
            rows.append([_node(replica), "replica", _node(shard.master), "",
                         _state(replica, view)])
    return resp.encode_value(rows)


def _slots(view: AdminView) -> bytes:
    m = view.slotmap
    rows: list[object] = []
    for shard in m.shards if m is not None else ():
        for lo, hi in shard.ranges:
            rows.append([lo, hi, _node(shard.master), [_node(r) for r in shard.replicas]])
    rows.sort(key=lambda r: r[0])  # type: ignore[index]
    return resp.encode_value(rows)


def explain(argv: list[bytes], view: AdminView) -> list[tuple[object, object]]:
    """How rproxy would route ``argv``: (field, value) pairs."""
    table = view.table
    info = table.lookup(argv)
    name = info.name or argv[0].upper()
    out: list[tuple[object, object]] = [("command", name.replace(b"|", b" ").lower())]
    route = info.route
    keys = [argv[p] for p in info.key_positions(argv)] if route in (
        Route.KEYED, Route.LEASED) and info.name else []
    slots = sorted({key_slot(k) for k in keys})
    m = view.slotmap
    masters = sorted({_node(m.owner[s]) for s in slots}) if m is not None else []
    out += [("keys", len(keys)), ("slots", slots), ("nodes", masters)]
    how, connection = _how(info, argv, route, len(slots), view)
    if not info.name:
        how = "unknown to the command table: sent to one master, which answers its error"
    out += [("route", how), ("connection", connection)]
    return out


def _how(info: CommandInfo, argv: list[bytes], route: Route, nslots: int,
         view: AdminView) -> tuple[str, str]:
    name = info.name
    if route is Route.REFUSED:
        return f"refused: {info.why}", "none"
    if route is Route.LOCAL:
        why = view.answered(name)
        return ("answered by rproxy" if why is None else f"refused: {why}"), "none"
    if route is Route.ALL_MASTERS:
        return "sent to every master, the replies merged", "shared"
    if route is Route.ALL_NODES:
        return "sent to every node, replicas included, the replies merged", "shared"
    if route is Route.ANY:
        return "one master (no keys)", "shared"
    if route is Route.LEASED or view.table.blocks(info, argv):
        if nslots > 1:
            if name in POPS_OVER_SLOTS and view.cross_slot_transactions == "emulate":
                return ("emulated over several slots: plain pops in order, then one block per "
                        "slot"), "dedicated (one per slot)"
            return "refused: CROSSSLOT", "none"
        return "the keys' slot's master, blocking", "dedicated (leased)"
    if nslots <= 1:
        return ("the keys' slot's master" if nslots else "one master (no keys)"), "shared"
    if name in SPLIT_NAMES or name == b"XREAD":
        return "split per slot, the replies merged in order", "shared"
    if plan_read(argv) is not None:
        return "emulated: per-key reads, computed by rproxy", "shared"
    if name in EMULATED_WRITES:
        if view.cross_slot_writes == "emulate":
            return "emulated in steps (not atomic)", "shared"
        return "refused: CROSSSLOT (commands.cross_slot_writes = \"emulate\" runs it)", "none"
    return "refused: CROSSSLOT", "none"
