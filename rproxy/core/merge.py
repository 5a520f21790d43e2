"""Merge functions for fanned-out commands: raw replies from each master in, one reply out.

Pure. If any part is an error, the first error is the reply: a single Redis would have failed
the whole command, never returned a partial result.
"""

from __future__ import annotations

import hiredis

from rproxy.core import errors, resp


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
    return parse_info_text(bytes(reader.gets()))


def parse_info_text(text: bytes) -> dict[str, dict[str, str]]:
    """INFO's text (the bulk's content) -> {section: {field: value}}."""
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in text.decode(errors="replace").splitlines():
        if line.startswith("# "):
            section = out.setdefault(line[2:].strip().lower(), {})
        elif ":" in line:
            k, _, v = line.partition(":")
            section[k] = v
    return out


def sum_fields(parts: list[bytes], section: str, fields: tuple[str, ...]) -> dict[str, int]:
    """Add up integer fields of one INFO section over several nodes."""
    out: dict[str, int] = {}
    for raw in parts:
        values = parse_info(raw).get(section, {})
        for f in fields:
            if f in values:
                out[f] = out.get(f, 0) + int(values[f])
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
    line between sections; the text (the reply is a bulk, or RESP3's verbatim string)."""
    chunks = []
    for name, fields in sections:
        lines = [f"# {name}"] + [f"{k}:{v}" for k, v in fields]
        chunks.append("\r\n".join(lines) + "\r\n")
    return "\r\n".join(chunks).encode()


def split_array(raw: bytes) -> list[bytes]:
    """The raw elements of an array reply (each still byte-exact); of a RESP3 map, its keys
    and values in turn."""
    eol = raw.index(b"\r\n")
    n = int(raw[1:eol]) * (2 if raw[:1] == b"%" else 1)
    if n <= 0:
        return []
    if n == 1:  # one element (MGET's part for a key in a slot of its own): a header walk,
        # ~5x cheaper than a new ReplyFramer
        end, left, _ = resp.scan_reply(raw, eol + 2, len(raw), 1)
        if left or end != len(raw):
            raise ValueError("truncated array reply" if left else "array reply with extra bytes")
        return [raw[eol + 2 :]]
    elements = resp.ReplyFramer().feed(raw[eol + 2 :])
    if len(elements) != n:
        raise ValueError("truncated array reply")
    return elements


def merge_all_ok(parts: list[bytes]) -> bytes:
    """Every part must be OK (MSET, FLUSHALL, SCRIPT FLUSH, CONFIG SET ...)."""
    err = first_error(parts)
    return err if err is not None else resp.OK


def merge_same(parts: list[bytes]) -> bytes:
    """Every node must give the same reply (SCRIPT LOAD's sha, FUNCTION LOAD's library name);
    a node that differs is reported instead of hidden."""
    err = first_error(parts)
    if err is not None:
        return err
    if any(p != parts[0] for p in parts[1:]):
        return errors.NODES_DISAGREE
    return parts[0]


def merge_and(parts: list[bytes]) -> bytes:
    """Arrays of 0/1 integers combined with AND (SCRIPT EXISTS: a script exists only where
    every master has it, so EVALSHA works whichever master a key leads to)."""
    err = first_error(parts)
    if err is not None:
        return err
    rows = [split_array(p) for p in parts]
    out = [resp.integer(int(all(int(r[i][1:-2]) for r in rows))) for i in range(len(rows[0]))]
    return resp.array(out)


def merge_any_ok(parts: list[bytes]) -> bytes:
    """SCRIPT KILL / FUNCTION KILL: only the node running the script can kill it; the others
    say NOTBUSY. OK if any node says OK; else the busy node's error (e.g. UNKILLABLE), which
    is what one Redis running that script would say; NOTBUSY only if every node says so."""
    for p in parts:
        if p[:1] != b"-":
            return p
    for p in parts:
        if not p.startswith(b"-NOTBUSY"):
            return p
    return parts[0]


def merge_random_nonnull(parts: list[bytes], choice: object = None) -> bytes:
    """RANDOMKEY: a random key from a random master that has one."""
    import random

    err = first_error(parts)
    if err is not None:
        return err
    found = [p for p in parts if p != resp.NULL_BULK and p != resp.NULL3]
    if not found:
        return parts[0] if parts else resp.NULL_BULK  # (a nil in the parts' protocol)
    return (choice or random.choice)(found)  # type: ignore[operator]


def merge_by_position(parts: list[bytes], positions: list[list[int]], total: int) -> bytes:
    """Reassemble per-part array replies into the order of the original request (MGET):
    ``positions[i][j]`` is where element ``j`` of part ``i`` goes."""
    err = first_error(parts)
    if err is not None:
        return err
    out = [b""] * total
    for raw, where in zip(parts, positions):
        elements = split_array(raw)
        if len(elements) != len(where):
            raise ValueError("part reply has the wrong number of elements")
        for j, element in zip(where, elements):
            out[j] = element
    return b"*%d\r\n" % total + b"".join(out)


def merge_slowlog(parts: list[bytes], count: int = 10) -> bytes:
    """SLOWLOG GET [count] from every master: the newest ``count`` entries of all of them
    (``count`` < 0: all), newest first by the timestamp each entry carries; ties keep each
    master's own order (the sort is stable)."""
    err = first_error(parts)
    if err is not None:
        return err
    entries = [e for p in parts for e in split_array(p)]

    def stamp(entry: bytes) -> int:
        fields = split_array(entry)
        return int(fields[1][1:-2]) if len(fields) > 1 else 0

    entries.sort(key=stamp, reverse=True)
    if count >= 0:
        entries = entries[:count]
    return b"*%d\r\n" % len(entries) + b"".join(entries)


def merge_xread(replies: list[bytes], order: dict[bytes, int], nkeys: int) -> bytes:
    """XREAD over streams in several slots, one XREAD per slot: the streams that have entries
    in the order they were asked for (``order``: key -> first position), or a null array when
    none has (as Redis, t_stream.c)."""
    err = first_error(replies)
    if err is not None:
        return err
    found: list[tuple[int, bytes]] = []
    resp3 = False
    for raw in replies:
        if raw.startswith(b"*-1") or raw == resp.NULL3:
            resp3 = resp3 or raw == resp.NULL3
            continue
        if raw[:1] == b"%":  # RESP3: a map of stream name -> entries
            resp3 = True
            items = split_array(raw)
            for i in range(0, len(items), 2):
                name = items[i]
                key = name[name.index(b"\r\n") + 2 : -2]
                found.append((order.get(key, nkeys), items[i] + items[i + 1]))
            continue
        for stream in split_array(raw):
            name = split_array(stream)[0]
            key = name[name.index(b"\r\n") + 2 : -2]
            found.append((order.get(key, nkeys), stream))
    if not found:
        return resp.NULL3 if resp3 else b"*-1\r\n"
    found.sort(key=lambda t: t[0])
    head = b"%%%d\r\n" if resp3 else b"*%d\r\n"
    return head % len(found) + b"".join(s for _, s in found)
