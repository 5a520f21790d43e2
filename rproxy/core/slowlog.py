"""The proxy's own slow log, and its latency histograms: sans-IO.

``SlowLog`` keeps the commands that took at least ``slower_than_us`` microseconds **end to
end**: from the read that brought the command to the proxy to the write of its reply to the
client, so redirects followed, retries and requests held during a failover count, as does
waiting for a slow reply before it (replies leave in order). The session decides which command
to blame (rproxy/net/session.py ``flush``); this module keeps the entries as Redis does
(src/slowlog.c): newest first, at most ``max_len``, at most 32 arguments (the 32nd says how many
more there were), each argument at most 128 bytes (then how many more bytes), and answers
``SLOWLOG GET [count] / LEN / RESET / HELP`` with Redis's reply shapes and errors.

``Histogram`` counts observations in fixed buckets (Prometheus's ``le`` semantics: a bucket
counts the values up to its bound), for the sampled latency split into time in the proxy and
time at the backend (rproxy/net/timing.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

from rproxy.core import errors, resp

MAX_ARGC = 32  # SLOWLOG_ENTRY_MAX_ARGC
MAX_STRING = 128  # SLOWLOG_ENTRY_MAX_STRING

HELP = [
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
]


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    time: int  # unix seconds
    duration_us: int
    command: bytes  # as the client sent it, encoded (decoded and trimmed when read)
    peer: bytes  # ip:port
    name: bytes  # the client's name

    @property
    def argv(self) -> list[bytes]:
        return trimmed(resp.decode_command(self.command))


REDACTED = b"(redacted)"
SENSITIVE_CONFIGS = frozenset({b"masteruser", b"masterauth", b"requirepass"})
REDACTS = frozenset({b"AUTH", b"HELLO", b"CONFIG|SET", b"MIGRATE", b"ACL|SETUSER"})


def redact(name: bytes, argv: list[bytes]) -> list[bytes]:
    """``argv`` with its secrets replaced as Redis 7.0 replaces them before its slow log sees
    a command (``redactClientCommandArgument``): AUTH's password (and user), HELLO's AUTH
    pair (once the version is valid), the values of CONFIG SET's sensitive parameters,
    MIGRATE's AUTH / AUTH2 credentials, every argument of ACL SETUSER after the verb."""
    out = list(argv)
    hidden: list[int] = []
    if name == b"AUTH" and len(argv) <= 3:
        hidden = [1] if len(argv) == 2 else [1, 2]
    elif name == b"HELLO" and len(argv) >= 2:
        version = resp.string2ll(argv[1])
        if version is not None and 2 <= version <= 3:
            j = 2
            while j < len(argv):
                if argv[j].upper() == b"AUTH" and len(argv) - 1 - j >= 2:
                    hidden += [j + 1, j + 2]
                    j += 2
                j += 1
    elif name == b"CONFIG|SET":
        hidden = [i + 1 for i in range(2, len(argv) - 1, 2)
                  if argv[i].lower() in SENSITIVE_CONFIGS]
    elif name == b"MIGRATE":
        for j in range(6, len(argv)):
            word = argv[j].upper()
            if word == b"KEYS":
                break
            if word == b"AUTH":
                hidden.append(j + 1)
            elif word == b"AUTH2":
                hidden += [j + 1, j + 2]
    elif name == b"ACL|SETUSER":
        hidden = list(range(2, len(argv)))
    for i in hidden:
        if i < len(out):
            out[i] = REDACTED
    return out


def trimmed(argv: list[bytes]) -> list[bytes]:
    """``argv`` as a slow-log entry keeps it (slowlogCreateEntry)."""
    out = []
    n = min(len(argv), MAX_ARGC)
    for j in range(n):
        if n != len(argv) and j == n - 1:
            out.append(b"... (%d more arguments)" % (len(argv) - n + 1))
        elif len(argv[j]) > MAX_STRING:
            out.append(argv[j][:MAX_STRING] + b"... (%d more bytes)" % (len(argv[j]) - MAX_STRING))
        else:
            out.append(argv[j])
    return out


class SlowLog:
    """``slower_than_us`` < 0 disables it (as Redis's ``slowlog-log-slower-than``); 0 logs
    every command. ``slower_than`` is the same threshold in seconds for the data path's
    comparison (infinite when disabled)."""

    def __init__(self, slower_than_us: int = 10000, max_len: int = 128) -> None:
        self.entries: deque[Entry] = deque()
        self.next_id = 0
        self.slower_than = float("inf")
        self.slower_than_us = 0
        self.max_len = 0
        self.configure(slower_than_us, max_len)

    def configure(self, slower_than_us: int, max_len: int) -> None:
        self.slower_than_us = slower_than_us
        self.slower_than = slower_than_us / 1e6 if slower_than_us >= 0 else float("inf")
        self.max_len = max(max_len, 0)
        while len(self.entries) > self.max_len:
            self.entries.pop()

    def push(self, command: bytes, duration_us: int, unix_time: int, peer: bytes,
             name: bytes) -> None:
        """One entry (``command`` encoded: it is decoded when read -- a proxy past its
        threshold under load logs on every reply, and must stay cheap then)."""
        if self.slower_than_us < 0 or duration_us < self.slower_than_us:
            return
        self.entries.appendleft(Entry(self.next_id, unix_time, duration_us, command, peer,
                                      name))
        self.next_id += 1
        while len(self.entries) > self.max_len:
            self.entries.pop()

    def command(self, argv: list[bytes]) -> bytes:
        """SLOWLOG's reply (``argv[0]`` is SLOWLOG)."""
        sub = argv[1].upper() if len(argv) > 1 else b""
        if len(argv) == 2 and sub == b"HELP":
            return resp.array([b"+" + line.encode() + b"\r\n" for line in HELP])
        if len(argv) == 2 and sub == b"RESET":
            self.entries.clear()
            return resp.OK
        if len(argv) == 2 and sub == b"LEN":
            return resp.integer(len(self.entries))
        if len(argv) in (2, 3) and sub == b"GET":
            count = 10
            if len(argv) == 3:
                n = resp.string2ll(argv[2])
                if n is None or n < -1:
                    return errors.error_reply(
                        b"ERR count should be greater than or equal to -1")
                count = len(self.entries) if n == -1 else n
            rows = []
            for e in list(self.entries)[:count]:
                rows.append(b"*6\r\n" + resp.integer(e.id) + resp.integer(e.time)
                            + resp.integer(e.duration_us)
                            + resp.array([resp.bulk(a) for a in e.argv])
                            + resp.bulk(e.peer) + resp.bulk(e.name))
            return resp.array(rows)
        return errors.error_reply(  # (addReplySubcommandSyntaxError)
            b"ERR unknown subcommand or wrong number of arguments for '%s'. Try SLOWLOG HELP."
            % (argv[1][:128] if len(argv) > 1 else b""))


# Bucket bounds of the latency histograms, seconds: 25 us to 10 s.
BOUNDS: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BOUNDS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of values <= le) pairs, ending with +Inf: Prometheus's buckets."""
        out, total = [], 0
        for bound, c in zip((*(repr(b) for b in BOUNDS), "+Inf"), self.counts, strict=True):
            total += c
            out.append((bound, total))
        return out


class Latency:
    """The sampled commands' latency: end to end, its time at the backend (from the flush that
    handed the request to its node's connection to the arrival of its final reply: redirects,
    retries and holds included), and the rest, the time in the proxy."""

    __slots__ = ("total", "backend", "proxy")

    def __init__(self) -> None:
        self.total = Histogram()
        self.backend = Histogram()
        self.proxy = Histogram()

    def observe(self, total: float, backend: float) -> None:
        self.total.observe(total)
        self.backend.observe(backend)
        self.proxy.observe(max(total - backend, 0.0))
