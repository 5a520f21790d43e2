"""Merge functions for fanned-out commands: raw replies from each master in, one reply out.

Pure. If any part is an error, the first error is the reply: a single Redis would have failed
the whole command, never returned a partial result.
"""

from __future__ import annotations

import hiredis

from rproxy import resp


def first_error(parts: list[bytes]) -> bytes | None:
    for p in parts:
        if p[:1] == b"-":
            return p
    return None


def merge_sum(parts: list[bytes]) -> bytes:
    """Integer replies summed (DBSIZE, and later DEL/EXISTS/UNLINK/TOUCH)."""
    err = first_error(parts)
    if err is not None:
        return err
    return resp.integer(sum(int(p[1:-2]) for p in parts))


def merge_concat(parts: list[bytes]) -> bytes:
    """Array replies concatenated (KEYS). Elements are passed through byte-exact."""
    err = first_error(parts)
    if err is not None:
        return err
    total = 0
    bodies = []
    for p in parts:
        eol = p.index(b"\r\n")
        n = int(p[1:eol])
        if n > 0:
            total += n
            bodies.append(p[eol + 2 :])
    return b"*%d\r\n" % total + b"".join(bodies)


def parse_info(raw: bytes) -> dict[str, dict[str, str]]:
    """An INFO bulk reply -> {section: {field: value}} (section names lower-cased)."""
    reader = hiredis.Reader()
    reader.feed(raw)
    text = reader.gets()
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in bytes(text).decode(errors="replace").splitlines():
        if line.startswith("# "):
            section = out.setdefault(line[2:].strip().lower(), {})
        elif ":" in line:
            k, _, v = line.partition(":")
            section[k] = v
    return out


def sum_keyspace(parts: list[bytes]) -> dict[str, dict[str, int]]:
    """Add up the ``# Keyspace`` sections of several masters: {db: {keys, expires, avg_ttl}};
    avg_ttl is weighted by each master's number of keys with an expiry."""
    dbs: dict[str, dict[str, int]] = {}
    weighted: dict[str, int] = {}
    for raw in parts:
        for db, value in parse_info(raw).get("keyspace", {}).items():
            fields = dict(kv.split("=", 1) for kv in value.split(","))
            acc = dbs.setdefault(db, {"keys": 0, "expires": 0, "avg_ttl": 0})
            expires = int(fields.get("expires", 0))
            acc["keys"] += int(fields.get("keys", 0))
            acc["expires"] += expires
            weighted[db] = weighted.get(db, 0) + int(fields.get("avg_ttl", 0)) * expires
    for db, acc in dbs.items():
        acc["avg_ttl"] = weighted[db] // acc["expires"] if acc["expires"] else 0
    return dbs


def format_info(sections: list[tuple[str, list[tuple[str, object]]]]) -> bytes:
    """Render INFO text as Redis does: ``# Name`` headers, ``key:value`` lines, CRLF, a blank
    line between sections; returned as a bulk string reply."""
    chunks = []
    for name, fields in sections:
        lines = [f"# {name}"] + [f"{k}:{v}" for k, v in fields]
        chunks.append("\r\n".join(lines) + "\r\n")
    return resp.bulk("\r\n".join(chunks).encode())
