"""The data plane's routing tables, in one object.

``Router`` holds what every command is routed by: ``slot_conn`` (a 16384-entry list from slot to
the connection of the slot's master), ``read_conn`` (the same list, unless ``read_from`` sends
reads to replicas), ``masters`` (one connection per master, for fan-outs), ``master_slots``
(each master's lowest slot), ``fast`` (the one-key commands the session routes inline) and the
command table. The cluster manager is the only writer: it updates the tables in place (the
client sessions keep references to the lists) and calls ``changed()``, which tells every
subscribed ``MapListener`` (subscriptions and leases will need to know that the map moved).

Reading is a list index on the hot path; writing happens on a topology change, a MOVED or a
lost connection.
"""

from __future__ import annotations

from typing import Protocol

from rproxy.core import errors
from rproxy.core.commands import CommandInfo, CommandTable
from rproxy.core.request import OWNER, READONLY, SLOT, Request, complete
from rproxy.core.slots import SLOTS
from rproxy.net.backend import CLOSED, BackendConnection


class MapListener(Protocol):
    def on_map_changed(self) -> None: ...


class Router:
    __slots__ = (
        "slot_conn", "read_conn", "masters", "master_slots", "fast", "table", "table_loaded",
        "read_from", "map_epoch", "has_map", "_rr", "_listeners",
    )

    def __init__(self, read_from: str = "master") -> None:
        self.slot_conn: list[BackendConnection | None] = [None] * SLOTS
        self.read_from = read_from
        # Where read-only commands go: the same list as slot_conn unless read_from says replicas.
        self.read_conn: list[BackendConnection | None] = (
            self.slot_conn if read_from == "master" else [None] * SLOTS)
        self.masters: list[BackendConnection] = []
        self.master_slots: list[int] = []
        self.table = CommandTable([])
        self.table_loaded = False
        self.fast: dict[bytes, CommandInfo] = {}  # empty until the command table is loaded
        self.map_epoch = 0  # bumped whenever a slot changes owner (SCAN cursors carry it)
        self.has_map = False
        self._rr = 0
        self._listeners: list[MapListener] = []

    # -- reading (the data path) ------------------------------------------------------------------
    def any_master(self) -> BackendConnection | None:
        """A master for a keyless command, round robin."""
        masters = self.masters
        if not masters:
            return None
        self._rr = (self._rr + 1) % len(masters)
        conn = masters[self._rr]
        return conn if conn.state != CLOSED else None

    def route(self, req: Request) -> None:
        """Send ``req`` where the current map says (used for re-sends and parts). A client's
        own read follows ``read_from``; parts of split and fan-out commands go to masters."""
        slot = req[SLOT]
        if slot >= 0:
            readonly = req[READONLY] and req[OWNER] is not None
            conn = (self.read_conn if readonly else self.slot_conn)[slot]
        else:
            readonly = False
            conn = self.any_master()
        if conn is None:
            complete(req, self.no_conn_error(readonly))
        else:
            conn.send(req, req[2])  # DATA

    def no_conn_error(self, readonly: bool) -> bytes:
        """The reply for a slot with no connection to send to."""
        if not self.has_map:
            return errors.NO_TOPOLOGY
        if readonly and self.read_from == "replica":
            return errors.NO_HEALTHY_REPLICA
        return errors.CLUSTER_DOWN_UNCOVERED

    def name_of(self, data: bytes) -> bytes:
        """The command table's name (``CONTAINER|SUB`` for a subcommand) of an encoded
        command, b"" if it is unknown or ``data`` is not one."""
        return self.table.lookup_encoded(data).name

    def scan_order(self) -> list[int]:
        """The lowest slot of each master, ascending: SCAN visits masters in this order."""
        return sorted(self.master_slots)

    # -- writing (the cluster manager) ------------------------------------------------------------
    def load_table(self, table: CommandTable) -> None:
        self.table = table
        self.fast = table.single_key
        self.table_loaded = True

    def point(self, slot: int, conn: BackendConnection) -> None:
        """A MOVED: ``slot`` is served by ``conn`` from now on."""
        if 0 <= slot < SLOTS and self.slot_conn[slot] is not conn:
            self.slot_conn[slot] = conn
            self.map_epoch += 1
            self.changed()

    def replace(self, old: BackendConnection, new: BackendConnection) -> None:
        """``new`` takes ``old``'s place everywhere (a lost connection's replacement)."""
        self.slot_conn[:] = [new if c is old else c for c in self.slot_conn]
        self.masters = [new if m is old else m for m in self.masters]

    def subscribe(self, listener: MapListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: MapListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def changed(self) -> None:
        """Tell the listeners that a slot changed owner."""
        for listener in list(self._listeners):
            listener.on_map_changed()
