"""The proxy's counters and gauges, declared once.

``STATS`` is the one table: each entry names a figure, says whether it only grows (a counter,
kept in ``Stats``) or is read from the live state when asked (a gauge), which ``INFO`` section
shows it, and what it means. ``INFO`` renders from this table today; a metrics endpoint will
read the same table. The data path increments a counter as a plain attribute of one ``Stats``
object (``stats.total_commands_processed += n``): no lookup by name on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER = "counter"
GAUGE = "gauge"


@dataclass(frozen=True, slots=True)
class Stat:
    name: str  # as INFO prints it
    kind: str  # COUNTER or GAUGE
    section: str  # the INFO section (lower case) that shows it
    help: str


STATS: tuple[Stat, ...] = (
    # -- clients (the server) ------------------------------------------------------------------
    Stat("connected_clients", GAUGE, "clients", "client connections open now"),
    Stat("blocked_clients", GAUGE, "clients", "clients waiting in a blocking command"),
    Stat("pubsub_clients", GAUGE, "clients", "clients in the subscribed mode"),
    Stat("total_connections_received", COUNTER, "stats", "client connections accepted"),
    Stat("total_commands_processed", COUNTER, "stats", "commands received from clients"),
    Stat("rejected_connections", COUNTER, "stats",
         "client connections refused because max_clients was reached"),
    Stat("tls_handshake_failures", COUNTER, "stats",
         "client connections to the TLS listener closed before their handshake completed "
         "(not TLS, a certificate refused, tls.handshake_timeout_s passed)"),
    # (Redis 7.0's INFO fields: a denial of a restricted ACL user, or a failed AUTH)
    Stat("acl_access_denied_auth", COUNTER, "stats",
         "AUTH / HELLO AUTH refused (a wrong password, an unknown or disabled user)"),
    Stat("acl_access_denied_cmd", COUNTER, "stats",
         "commands refused because the client's ACL user may not run them"),
    Stat("acl_access_denied_key", COUNTER, "stats",
         "commands refused because the client's ACL user may not touch one of their keys"),
    Stat("acl_access_denied_channel", COUNTER, "stats",
         "commands refused because the client's ACL user may not use one of their channels"),
    Stat("pubsub_channels", GAUGE, "stats", "channels with a subscribed client"),
    Stat("pubsub_patterns", GAUGE, "stats", "patterns with a subscribed client"),
    Stat("pubsubshard_channels", GAUGE, "stats", "shard channels with a subscribed client"),
    # -- backends and failover (the cluster manager and the shared pool) ----------------------
    Stat("backend_connections", GAUGE, "proxy", "backend connections open or opening"),
    Stat("backend_connections_ready", GAUGE, "proxy",
         "backend connections ready to carry requests (the others are connecting)"),
    Stat("held_requests", GAUGE, "proxy",
         "requests waiting for a shard's master to come back, or for a retry"),
    Stat("held_expired", COUNTER, "proxy",
         "held requests failed after failover_hold_s (or while no node answered)"),
    Stat("retried_requests", COUNTER, "proxy",
         "requests sent again after a lost connection or an error proving they did not run"),
    Stat("outcome_unknown_errors", COUNTER, "proxy",
         "written, non-idempotent requests failed because their connection was lost"),
    Stat("slotmap_refreshes", COUNTER, "proxy", "slot maps read from the cluster"),
    Stat("slotmap_age_seconds", GAUGE, "proxy", "seconds since the slot map was last read"),
    Stat("moved_redirects", COUNTER, "proxy",
         "MOVED replies rproxy followed (the slot has a new owner); never seen by a client"),
    Stat("ask_redirects", COUNTER, "proxy",
         "ASK replies rproxy followed (the slot is migrating); never seen by a client"),
    Stat("tryagain_retries", COUNTER, "proxy",
         "TRYAGAIN replies rproxy retried (keys of one command split by a migration)"),
    Stat("cross_slot_splits", COUNTER, "proxy",
         "commands over several slots split per slot, the replies merged (MGET, MSET, DEL ...)"),
    Stat("cross_slot_emulations", COUNTER, "proxy",
         "commands over several slots emulated: reads computed from per-key reads, writes in "
         "steps (cross_slot_writes)"),
    Stat("slotmap_epoch", GAUGE, "proxy", "slot-map version: grows when a slot changes owner"),
    Stat("failed_masters", GAUGE, "proxy", "masters the cluster marked failed, not replaced yet"),
    Stat("unreachable_nodes", GAUGE, "proxy", "nodes whose connection is lost"),
    Stat("cluster_reachable", GAUGE, "proxy", "1 if the last topology read found a node"),
    Stat("leased_connections", GAUGE, "proxy",
         "dedicated backend connections leased to a client now (a WATCH until its EXEC)"),
    Stat("leases_refused", COUNTER, "proxy",
         "leases refused because cluster.max_leases_per_node was reached"),
    Stat("emulated_transactions", COUNTER, "proxy",
         "transactions over several slots run as one block per slot (cross_slot_transactions)"),
    Stat("emulated_transaction_groups", COUNTER, "proxy",
         "the per-slot blocks those transactions ran as"),
    Stat("emulated_watch_aborts", COUNTER, "proxy",
         "emulated transactions answered nil: a watched key changed before the check"),
    Stat("emulated_watched_transactions", COUNTER, "proxy",
         "emulated transactions with WATCH that ran (checked, then written)"),
    Stat("emulated_watch_window_us", COUNTER, "proxy",
         "their total time from the watches' check to the last block's reply, microseconds"),
    Stat("subscriber_connections", GAUGE, "proxy",
         "backend connections carrying the proxy's pub/sub subscriptions (one per node)"),
    Stat("pubsub_messages", COUNTER, "proxy",
         "pub/sub messages received from the nodes for subscribed clients"),
    Stat("client_input_bytes", COUNTER, "proxy", "bytes received from clients"),
    Stat("client_output_bytes", COUNTER, "proxy", "bytes of replies written for clients"),
    Stat("slowlog_len", GAUGE, "proxy", "entries in the proxy's SLOWLOG"),
)

COUNTERS = tuple(s.name for s in STATS if s.kind == COUNTER)


class ErrorCounts:
    """Error replies clients got, by command (its table name, b"" if unknown) and error code
    (the first word: ERR, WRONGTYPE, NOSCRIPT ...). As Redis's error statistics, at most
    ``MAX_CODES`` distinct codes are kept apart (a script may invent any): the rest count as
    ``OTHER``. Counted when the reply leaves for the client (rproxy/net/session.py)."""

    MAX_CODES = 128

    __slots__ = ("counts", "codes")

    def __init__(self) -> None:
        self.counts: dict[tuple[bytes, bytes], int] = {}
        self.codes: set[bytes] = set()

    def add(self, command: bytes, reply: bytes) -> None:
        code = reply[1:33].split(b" ", 1)[0].split(b"\r", 1)[0]
        if code not in self.codes:
            if len(self.codes) >= self.MAX_CODES:
                code = b"OTHER"
            else:
                self.codes.add(code)
        key = (command, code)
        self.counts[key] = self.counts.get(key, 0) + 1


class Stats:
    """The counters of one proxy process (see ``STATS``), and the error counts."""

    __slots__ = (*COUNTERS, "errors")
    # Spelled out for readers and type checkers; a test checks they equal COUNTERS.
    total_connections_received: int
    total_commands_processed: int
    rejected_connections: int
    tls_handshake_failures: int
    acl_access_denied_auth: int
    acl_access_denied_cmd: int
    acl_access_denied_key: int
    acl_access_denied_channel: int
    held_expired: int
    retried_requests: int
    outcome_unknown_errors: int
    slotmap_refreshes: int
    moved_redirects: int
    ask_redirects: int
    tryagain_retries: int
    cross_slot_splits: int
    cross_slot_emulations: int
    leases_refused: int
    emulated_transactions: int
    emulated_transaction_groups: int
    emulated_watch_aborts: int
    emulated_watched_transactions: int
    emulated_watch_window_us: int
    pubsub_messages: int
    client_input_bytes: int
    client_output_bytes: int

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.errors = ErrorCounts()

    def get(self, name: str) -> int:
        value: int = getattr(self, name)
        return value


def section(name: str) -> tuple[Stat, ...]:
    """The figures an INFO section shows, in the table's order."""
    return tuple(s for s in STATS if s.section == name)
