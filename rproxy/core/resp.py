"""RESP2 codec, sans-IO: request parsing with Redis's own limits and error texts, reply encoding,
and raw framing of backend replies.

Requests (client -> proxy). The fast path feeds hiredis and forwards each parsed command's own
bytes once their layout is proven canonical: an exact ``*<argc>\r\n`` header, then a '$' header
byte at each offset the argument lengths give. Anything else -- inline commands, a non-canonical or
invalid multibulk, a partial command whose headers must be checked against the limits -- goes to
``_Strict``, a line-for-line mirror of Redis's processInlineBuffer / processMultibulkBuffer
(src/networking.c), so errors are Redis's byte for byte. After a protocol error the parser is
sticky: it returns the commands before the bad one, then the error, and nothing more.

Replies (backend -> proxy) are framed, not parsed: the proxy forwards the exact bytes, because
hiredis returns ``+OK`` and ``$2\\r\\nOK`` as the same value and re-encoding would change them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import hiredis

from rproxy.core import errors

PROTO_INLINE_MAX_SIZE = 64 * 1024  # Redis PROTO_INLINE_MAX_SIZE
INT_MAX = 2**31 - 1
_SPACE = b" \t\n\x0b\x0c\r"


class BackendProtocolError(Exception):
    """The backend sent bytes that are not RESP: the connection can no longer be trusted."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_bulk_len: int = 512 * 1024 * 1024  # Redis proto-max-bulk-len
    max_args: int = 1024 * 1024  # multibulk count; Redis 7 allows INT_MAX
    query_buffer_limit: int = 256 * 1024 * 1024  # unparsed bytes held for one client
    # The longest line without a newline: an inline command, or a multibulk or bulk header
    # (Redis's PROTO_INLINE_MAX_SIZE).
    max_inline_len: int = PROTO_INLINE_MAX_SIZE
    # Before AUTH (a password is set): stricter limits, with their own error texts (Redis's
    # 10 arguments of at most 16384 bytes, fixed there, configurable here).
    unauthenticated: bool = False
    unauth_max_args: int = 10
    unauth_max_bulk_len: int = 16384

    def effective(self) -> tuple[int, int]:
        """(max arguments, max bulk length) in force."""
        if self.unauthenticated:
            return (min(self.max_args, self.unauth_max_args),
                    min(self.max_bulk_len, self.unauth_max_bulk_len))
        return self.max_args, self.max_bulk_len


CLOSE_SILENTLY = b""
"""Marker error: close the connection without a reply (Redis does so for an over-long query
buffer: "Closing client that reached max query buffer length")."""


def string2ll(b: bytes) -> int | None:
    """Redis util.c string2ll: strict decimal, optional '-', no '+', no leading zeros."""
    if not b or len(b) > 20:
        return None
    if b == b"0":
        return 0
    digits = b[1:] if b[0] == 45 else b
    if not digits or not (49 <= digits[0] <= 57) or not digits.isdigit():
        return None
    v = int(digits)
    if b[0] == 45:
        v = -v
        return v if v >= -(2**63) else None
    return v if v < 2**63 else None


def split_inline(line: bytes) -> list[bytes] | None:
    """Redis sds.c sdssplitargs: split an inline command line; None on unbalanced quotes.

    The line is a C string there, so it ends at the first NUL byte."""
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    n = len(line)
    i = 0
    out: list[bytes] = []
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return out
        cur = bytearray()
        inq = insq = False
        while True:
            c = line[i] if i < n else 0
            if inq:
                if (
                    c == 92
                    and i + 3 < n + 0
                    and line[i + 1] == 120
                    and _ishex(line[i + 2])
                    and _ishex(line[i + 3])
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    e = line[i]
                    cur.append({110: 10, 114: 13, 116: 9, 98: 8, 97: 7}.get(e, e))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif c == 0 and i >= n:
                    return None
                else:
                    cur.append(c)
            elif insq:
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif c == 0 and i >= n:
                    return None
                else:
                    cur.append(c)
            else:
                if i >= n or c in b" \n\r\t":
                    i += 1
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        out.append(bytes(cur))


def _ishex(c: int) -> bool:
    return 48 <= c <= 57 or 97 <= c <= 102 or 65 <= c <= 70


def _bulk_size(n: int) -> int:
    """Bytes of a canonical bulk string of length ``n``: ``$<n>\\r\\n<data>\\r\\n``."""
    return len(b"%d" % n) + n + 5


_BULK_N = 4096
_BULK = [_bulk_size(i) for i in range(_BULK_N)]


def encode_command(argv: list[bytes]) -> bytes:
    """Canonical multibulk encoding of a command. One ``%`` format for the common short
    commands: 3-4x faster than a per-argument join (this runs for every request)."""
    n = len(argv)
    if n == 2:
        a, b = argv
        return b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)
    if n == 3:
        a, b, c = argv
        return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            len(a), a, len(b), b, len(c), c)
    if n == 1:
        a = argv[0]
        return b"*1\r\n$%d\r\n%b\r\n" % (len(a), a)
    return b"*%d\r\n" % n + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in argv])


class _Strict:
    """Mirror of Redis's request parsing for one command, resumable across feeds.

    ``step(buf, pos)`` returns ``(status, pos)`` with status one of ``"done"`` (``argv`` holds the
    command, which may be empty: nothing to run), ``"more"`` (need more bytes; the state is kept,
    resume with the same buffer grown at the end) or ``"error"`` (``err`` holds the reply)."""

    __slots__ = ("limits", "left", "bulklen", "argv", "err")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.reset()

    def reset(self) -> None:
        self.left = 0  # multibulk elements still to read; 0 = before the '*' line
        self.bulklen = -1
        self.argv: list[bytes] = []
        self.err = b""

    def _fail(self, err: bytes) -> tuple[str, int]:
        self.err = err
        return "error", -1

    def step(self, buf: bytes, pos: int) -> tuple[str, int]:
        n = len(buf)
        if self.left == 0 and self.bulklen == -1:
            if buf[pos] != 42:  # not '*': inline command
                return self._inline(buf, pos)
            nl = _c_find(buf, 13, pos)
            if nl < 0:
                if n - pos > self.limits.max_inline_len:
                    return self._fail(errors.PROTO_TOO_BIG_MBULK)
                return "more", pos
            if nl - pos > n - pos - 2:
                return "more", pos
            ll = string2ll(buf[pos + 1 : nl])
            if ll is None or ll > INT_MAX or ll > self.limits.max_args:
                return self._fail(errors.PROTO_INVALID_MBULK)
            if ll > self.limits.unauth_max_args and self.limits.unauthenticated:
                return self._fail(errors.PROTO_UNAUTH_MBULK)
            pos = nl + 2
            if ll <= 0:
                self.argv = []
                return "done", pos
            self.left = ll
            self.argv = []
        while self.left:
            if self.bulklen == -1:
                nl = _c_find(buf, 13, pos)
                if nl < 0:
                    if n - pos > self.limits.max_inline_len:
                        return self._fail(errors.PROTO_TOO_BIG_BULK)
                    return "more", pos
                if nl - pos > n - pos - 2:
                    return "more", pos
                if buf[pos] != 36:
                    return self._fail(errors.proto_expected_dollar(buf[pos]))
                ll = string2ll(buf[pos + 1 : nl])
                if ll is None or ll < 0 or ll > self.limits.max_bulk_len:
                    return self._fail(errors.PROTO_INVALID_BULK)
                if ll > self.limits.unauth_max_bulk_len and self.limits.unauthenticated:
                    return self._fail(errors.PROTO_UNAUTH_BULK)
                pos = nl + 2
                self.bulklen = ll
            if n - pos < self.bulklen + 2:
                return "more", pos
            self.argv.append(buf[pos : pos + self.bulklen])
            pos += self.bulklen + 2  # Redis skips the two bytes after a bulk unchecked
            self.bulklen = -1
            self.left -= 1
        return "done", pos

    def _inline(self, buf: bytes, pos: int) -> tuple[str, int]:
        nl = _c_find(buf, 10, pos)
        if nl < 0:
            if len(buf) - pos > self.limits.max_inline_len:
                return self._fail(errors.PROTO_TOO_BIG_INLINE)
            return "more", pos
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        argv = split_inline(buf[pos:end])
        if argv is None:
            return self._fail(errors.PROTO_UNBALANCED_QUOTES)
        self.argv = argv
        return "done", nl + 1


def _c_find(buf: bytes, ch: int, pos: int) -> int:
    """strchr(): find ``ch`` from ``pos``, but a NUL byte ends the search as it ends a C
    string (Redis searches its query buffer with strchr)."""
    i = buf.find(ch, pos)
    if i < 0:
        return -1
    z = buf.find(0, pos, i)
    return -1 if z >= 0 else i


class RequestParser:
    """Client request stream -> commands. Feed bytes, get ``(argv, encoded)`` pairs.

    ``encoded`` is the multibulk form of ``argv``, ready to forward: canonical, except that
    the two bytes after each bulk are the client's own (Redis skips them unchecked). After
    ``parse`` returns, ``error`` is ``None`` or the error reply to send once (``CLOSE_SILENTLY``
    means close without one); the parser is then dead.

    Complete commands take the hiredis fast path. A command split across reads is finished by
    the strict parser, which resumes where it stopped (linear in the command's size) and, like
    Redis, rejects a bad header as soon as it arrives. A large bulk argument is collected as a
    list of chunks and joined once."""

    __slots__ = (
        "limits", "_reader", "_buf", "_pos", "_fed", "_strict", "_strict_pos",
        "_need", "_pending", "_pending_len", "_guard", "_bulk_guard", "_slow_until", "_max_bulk",
        "error",
    )

    def __init__(self, limits: RequestLimits | None = None) -> None:
        self._reader = hiredis.Reader()
        self._buf = b""
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._fed = 0  # hiredis has been given _buf[:_fed] (its own position is _pos)
        self._strict: _Strict | None = None  # set while a partial command is being finished
        self._strict_pos = 0
        self._need = 0  # _buf must reach this length before the strict parser can go on
        self._pending: list[bytes] = []
        self._pending_len = 0
        # hiredis allocates a list as soon as it reads an array header, so a 13-byte
        # "*3000000000\r\n" would cost 24 GB. Before hiredis sees new bytes, one regex scan
        # (anchored on the literal '*', ~35 ns per command) looks for any count with as many
        # digits as max_args; such bytes go through the strict parser, which enforces the
        # limits exactly. A bulk over max_bulk_len can only be complete in one feed larger
        # than max_bulk_len; otherwise it arrives partial, and partial commands are strict's.
        # (At most 7 digits: whatever max_args says, hiredis never pre-allocates a million.)
        self._slow_until = 0  # bytes of _buf before this index take the strict path
        self.set_limits(limits or RequestLimits())
        self.error: bytes | None = None

    def set_limits(self, limits: RequestLimits) -> None:
        """The limits from the next command on (AUTH lifts the unauthenticated ones)."""
        self.limits = limits
        max_args, max_bulk = limits.effective()
        self._guard = re.compile(rb"\*\d{%d}" % min(len(str(max_args)), 7))
        self._bulk_guard = re.compile(rb"\$\d{%d}" % len(str(max_bulk)))
        self._max_bulk = max_bulk

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return len(self._buf) - self._pos + self._pending_len

    def parse(self, data: bytes) -> list[tuple[list[bytes], bytes]]:
        if self.error is not None:
            return []
        out: list[tuple[list[bytes], bytes]] = []
        if not self._buf and data[:1] == b"*":
            # The usual read: whole commands, nothing held from earlier reads. Here it costs
            # half of what the general loop below does for it, which matters most when each
            # read carries one command (no pipelining). Anything else falls through to it.
            n = len(data)
            if self._guard.search(data) is None and (
                    n <= self._max_bulk or self._bulk_guard.search(data) is None):
                self._reader.feed(data)
                pos = self._take(data, 0, out)
                if pos == n:
                    return out
                # Partial or not canonical: the strict parser takes it from ``pos``.
                self._reader = hiredis.Reader()
                self._buf, self._pos, self._fed, self._slow_until = data, pos, n, 0
                data = b""
        if self._need:
            self._pending.append(data)
            self._pending_len += len(data)
            if len(self._buf) + self._pending_len < self._need:
                if self.buffered > self.limits.query_buffer_limit:
                    self.error = CLOSE_SILENTLY
                return []
            data = b"".join(self._pending)
            self._pending, self._pending_len, self._need = [], 0, 0
        if self._pos == len(self._buf):
            self._buf, self._pos, self._fed, self._slow_until = data, 0, 0, 0
        elif data:
            self._buf += data
        buf = self._buf
        pos = self._pos
        n = len(buf)
        while pos < n:
            if self._strict is None and buf[pos] == 42 and pos >= self._slow_until:
                if self._fed < n:  # hiredis fast path, for bytes the guard lets through
                    start = self._fed - 24
                    if start < pos:
                        start = pos
                    if self._guard.search(buf, start) or (
                        n - start > self._max_bulk and self._bulk_guard.search(buf, start)
                    ):
                        self._slow_until = n
                        continue
                    self._reader.feed(buf, self._fed)
                    self._fed = n
                pos = self._take(buf, pos, out)
                if pos == n:
                    break
                # Partial or anything unexpected: the strict parser takes this command.
                self._reader = hiredis.Reader()
                self._fed = n
            # Slow path: inline command, anomaly, or a command split across reads.
            st = self._strict or _Strict(self.limits)
            status, newpos = st.step(buf, self._strict_pos if self._strict else pos)
            if status == "more":
                self._strict = st
                self._strict_pos = newpos
                break
            self._strict = None
            if status == "error":
                self.error = st.err
                self._pos = pos
                return out
            if st.argv:
                out.append((st.argv, encode_command(st.argv)))
            pos = newpos
            # hiredis restarts, empty, at the next command.
            self._reader = hiredis.Reader()
            self._fed = pos
        if pos == n and self._strict is None:  # all consumed (the usual case): nothing held
            self._buf = b""
            self._pos = self._fed = self._slow_until = 0
            return out
        self._pos = pos
        if pos > 65536 and pos * 2 > n:
            # Compact: drop the consumed prefix (keeps memory bounded for long pipelines).
            self._buf = buf[pos:]
            self._pos = 0
            self._fed -= pos
            self._strict_pos -= pos
            self._slow_until = max(self._slow_until - pos, 0)
        if self._strict is not None and self._strict.bulklen > 65536:
            self._need = self._strict_pos + self._strict.bulklen + 2
        if self.buffered > self.limits.query_buffer_limit:
            self.error = CLOSE_SILENTLY
        return out

    def _take(self, buf: bytes, pos: int, out: list[tuple[list[bytes], bytes]]) -> int:
        """Append the commands hiredis has complete from ``buf[pos:]`` (already fed) to
        ``out``; returns where the next command starts. At ``len(buf)``, hiredis is empty;
        before it, the command there is partial or not canonical, and hiredis must be reset.

        The bytes of each command are forwarded as the client sent them, once the layout is
        proven canonical: hiredis checks the lengths strictly (no sign, no leading zero), so an
        element whose header byte is '$' spans exactly _bulk_size(len) bytes. Checking the
        header bytes at the computed offsets is cheaper than re-encoding argv and comparing."""
        reader = self._reader
        try:
            while True:
                argv = reader.gets()
                if type(argv) is not list:
                    return pos
                argc = len(argv)
                if argc == 2 or argc == 3:  # most commands: unrolled
                    la = len(argv[0])
                    lb = len(argv[1])
                    h = pos + 4 + (_BULK[la] if la < _BULK_N else _bulk_size(la))
                    if buf[pos + 4] != 36 or buf[h] != 36:
                        return pos
                    end = h + (_BULK[lb] if lb < _BULK_N else _bulk_size(lb))
                    if argc == 3:
                        if buf[end] != 36:
                            return pos
                        lc = len(argv[2])
                        end += _BULK[lc] if lc < _BULK_N else _bulk_size(lc)
                    out.append((argv, buf[pos:end]))
                    pos = end
                    continue
                if not argc:
                    return pos
                # Any other count: the same walk, after a header that is exactly "*<argc>\r\n".
                head = b"*%d\r\n" % argc
                if not buf.startswith(head, pos):
                    return pos
                end = pos + len(head)
                for a in argv:
                    if buf[end] != 36:
                        return pos
                    la = len(a)
                    end += _BULK[la] if la < _BULK_N else _bulk_size(la)
                out.append((argv, buf[pos:end]))
                pos = end
        except (hiredis.ProtocolError, TypeError, IndexError):
            # garbage, or an element that is not a bulk string (an int, None, a list ...)
            return pos


# -- reply encoding (for replies the proxy makes itself) -----------------------------------------
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL_BULK = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
NULL3 = b"_\r\n"  # RESP3's null (for a nil bulk and a nil array alike)


def null(protocol: int) -> bytes:
    """A nil reply in the client's protocol (RESP2: the nil bulk)."""
    return NULL3 if protocol == 3 else NULL_BULK


def verbatim(text: bytes, protocol: int) -> bytes:
    """A text reply (INFO, CLIENT LIST ...): RESP3's verbatim string of format ``txt``, or
    RESP2's bulk."""
    if protocol == 3:
        return b"=%d\r\ntxt:%s\r\n" % (len(text) + 4, text)
    return bulk(text)


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return NULL_BULK
    return b"$%d\r\n%b\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def simple(value: bytes) -> bytes:
    return b"+" + value + b"\r\n"


def array(items: list[bytes]) -> bytes:
    """Array of already-encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def encode_value(value: object) -> bytes:
    """Encode a Python value as RESP2 (bytes/str -> bulk, int -> integer, list -> array,
    None -> null bulk). For replies the proxy composes (HELLO, merged results)."""
    if value is None:
        return NULL_BULK
    if isinstance(value, bytes):
        return bulk(value)
    if isinstance(value, str):
        return bulk(value.encode())
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, (list, tuple)):
        return array([encode_value(v) for v in value])
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_map(pairs: list[tuple[object, object]], protocol: int) -> bytes:
    """A map reply: RESP3's ``%`` map, or RESP2's flat array of keys and values."""
    if protocol == 3:
        return b"%%%d\r\n%s" % (len(pairs), b"".join(
            encode_value(k) + encode_value(v) for k, v in pairs))
    return encode_value([x for pair in pairs for x in pair])


# -- reply framing (backend -> proxy) -----------------------------------------------------------
class ScanFramer:
    """Split a backend byte stream into whole raw replies by scanning the RESP headers in
    Python. ``ReplyFramer``'s fallback for what hiredis refuses, and its reference in tests.

    Linear in the reply size however it is split: the scanned prefix of a reply that is still
    incomplete is kept as parts, and a large bulk is collected as chunks and joined once."""

    __slots__ = ("_buf", "_parts", "_left", "_need", "_pending", "_pending_len", "_resp3")

    def __init__(self, resp3: bool = True) -> None:
        self._resp3 = resp3  # RESP3 types allowed (a connection after HELLO 3)
        self._buf = b""  # unscanned bytes
        self._parts: list[bytes] = []  # scanned bytes of the incomplete reply
        self._left = 1  # elements still to frame in the current reply
        self._need = 0
        self._pending: list[bytes] = []
        self._pending_len = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._need:
            self._pending.append(data)
            self._pending_len += len(data)
            if len(self._buf) + self._pending_len < self._need:
                return []
            data = b"".join(self._pending)
            self._pending, self._pending_len, self._need = [], 0, 0
        buf = self._buf + data if self._buf else data
        n = len(buf)
        start = pos = 0
        left = self._left
        parts = self._parts
        out = []
        need = 0
        try:
            while pos < n:
                pos, left, need = scan_reply(buf, pos, n, left, self._resp3)
                if left:  # the bytes ran out inside a reply
                    break
                if parts:
                    parts.append(buf[start:pos])
                    out.append(b"".join(parts))
                    parts.clear()
                else:
                    out.append(buf[start:pos])
                start = pos
                left = 1
        except ValueError as exc:
            raise BackendProtocolError(str(exc)) from None
        if pos > start:
            parts.append(buf[start:pos])
        self._buf = buf[pos:] if pos < n else b""
        self._left = left
        if need > 65536:
            self._need = need
        return out

    @property
    def idle(self) -> bool:
        """No partial reply is buffered."""
        return not self._buf and not self._parts and not self._pending


# One-line replies: RESP2's status, error, integer and nil ($-1, *-1); RESP3's null, double,
# boolean and big number.
_REPLY_HEADS = b"+-:$*"
_LINE_HEADS = b"+-:$*_,#("


class ReplyFramer:
    """Split a backend byte stream into whole raw replies (bytes exact, not re-encoded).

    hiredis parses the stream (in C); the raw extent of each reply follows from the parsed
    value and one header byte: a bulk string of length n spans ``_bulk_size(n)`` bytes (hiredis
    checks the length strictly), a status ``len + 3``; an error, integer or nil ends at its first
    CRLF; an array of bulks and nils is measured element by element, any other array is
    scanned. That is 2-3x cheaper per reply than scanning every header in Python.
    The bytes of an incomplete reply are kept as a list of chunks, joined once when hiredis
    completes it (linear however the reply is split). Whatever hiredis refuses (nesting past its
    limit, garbage) goes to a ``ScanFramer`` for that reply, which raises on real garbage."""

    __slots__ = ("_reader", "_tail", "_scan", "_resp3", "_heads")

    def __init__(self, resp3: bool = True) -> None:
        # A RESP2 connection (``resp3`` False) refuses RESP3's types: a broken stream.
        self._resp3 = resp3
        self._heads = _LINE_HEADS if resp3 else _REPLY_HEADS
        self._reader = hiredis.Reader()
        self._tail: list[bytes] = []  # bytes of the incomplete reply, as received
        self._scan: ScanFramer | None = None  # set while the fallback finishes a reply

    def feed(self, data: bytes) -> list[bytes]:
        if self._scan is not None:
            return self._feed_scan(data)
        reader = self._reader
        reader.feed(data)
        out: list[bytes] = []
        buf = b""
        pos = -1  # (not yet framing: what hiredis refuses starts with the buffered tail)
        try:
            value = reader.gets()
            if value is False:
                if data:
                    self._tail.append(data)
                return []
            if self._tail:
                self._tail.append(data)
                buf = b"".join(self._tail)
                self._tail = []
            else:
                buf = data
            pos = 0
            while value is not False:
                if type(value) is bytes and buf[pos] == 36:  # '$'
                    n = len(value)
                    end = pos + (_BULK[n] if n < _BULK_N else _bulk_size(n))
                elif type(value) is bytes and buf[pos] == 43:  # '+': "+<value>\r\n"
                    end = pos + len(value) + 3
                elif type(value) is list:
                    if buf[pos] == 124 and self._resp3:  # '|': hiredis returns an attribute
                        # (as a list) apart from the reply it annotates (rare): the scanner
                        # frames them as one, from here on.
                        return out + self._to_scanner(buf[pos:])
                    end = _array_end(buf, pos, value, self._resp3)
                elif buf[pos] in self._heads:  # status, error, integer, nil; RESP3 scalars
                    end = buf.index(b"\r\n", pos) + 2
                elif self._resp3:  # a RESP3 aggregate or blob: scanned
                    end = scan_reply(buf, pos, len(buf), 1)[0]
                else:
                    raise BackendProtocolError(f"unexpected reply type byte {buf[pos]!r}")
                out.append(buf[pos:end])
                pos = end
                value = reader.gets()
        except hiredis.ProtocolError:
            # Too deep for hiredis, a type it does not know (RESP3's blob error), or garbage:
            # the scanner takes it from this reply on.
            if pos < 0:
                rest = b"".join(self._tail) + data if self._tail else data
                self._tail = []
            else:
                rest = buf[pos:]
            return out + self._to_scanner(rest)
        if pos < len(buf):
            self._tail.append(buf[pos:])
        return out

    def _to_scanner(self, rest: bytes) -> list[bytes]:
        self._reader = hiredis.Reader()
        self._scan = ScanFramer(self._resp3)
        return self._feed_scan(rest)

    def _feed_scan(self, data: bytes) -> list[bytes]:
        scan = self._scan
        assert scan is not None
        out = scan.feed(data)
        if scan.idle:  # back at a reply boundary: hiredis again
            self._scan = None
        return out

    @property
    def idle(self) -> bool:
        """No partial reply is buffered."""
        return not self._tail and self._scan is None


def _array_end(buf: bytes, pos: int, value: list[object], resp3: bool = True) -> int:
    """End of the complete array reply at ``pos``, which hiredis parsed into ``value``.

    An array of bulk strings and nils (MGET, HMGET, LRANGE ...) is measured from the values,
    as a top-level bulk is: each element's header byte is checked, its extent computed. Any
    other element (integer, status, nested array) sends the whole array to the header scan."""
    if buf[pos] != 42:  # a RESP3 aggregate (map, set, push, attribute): scanned
        return scan_reply(buf, pos, len(buf), 1, resp3)[0]
    head = b"*%d\r\n" % len(value)
    if buf.startswith(head, pos):
        end = pos + len(head)
        for v in value:
            if type(v) is bytes and buf[end] == 36:  # '$'
                n = len(v)
                end += _BULK[n] if n < _BULK_N else _bulk_size(n)
            elif v is None and buf.startswith(b"$-1\r\n", end):
                end += 5
            else:
                break
        else:
            return end
    return scan_reply(buf, pos, len(buf), 1, resp3)[0]


def scan_reply(buf: bytes, pos: int, n: int, left: int,
               resp3: bool = True) -> tuple[int, int, int]:
    """Walk RESP2 and RESP3 headers from ``pos`` until the reply in progress is complete
    (``left``, the elements it still lacks, reaches 0) or the bytes run out. Returns ``(pos,
    left, need)``: where it stopped, what is still lacking, and for a blob not all there, the
    bytes it needs from its header on. A malformed length raises ValueError.

    RESP3 (a connection after ``HELLO 3``): ``=`` verbatim and ``!`` blob error are blobs like
    ``$``; ``%`` map counts two elements per entry, ``~`` set and ``>`` push one; an ``|``
    attribute (a map) comes before the reply it annotates, which still counts as one; ``_``
    null, ``,`` double, ``#`` boolean and ``(`` big number are one line. Without ``resp3``
    (a RESP2 connection) they are garbage."""
    heads = _LINE_HEADS if resp3 else _REPLY_HEADS
    while left:
        if pos >= n:
            break
        t = buf[pos]
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        if t == 36 or (resp3 and (t == 61 or t == 33)):  # '$'; '=', '!'
            ln = int(buf[pos + 1 : eol])
            end = eol + 4 + ln if ln >= 0 else eol + 2
            if end > n:
                return pos, left, end - pos
            pos = end
            left -= 1
        elif t == 42 or (resp3 and (t == 126 or t == 62)):  # '*'; '~', '>'
            ln = int(buf[pos + 1 : eol])
            pos = eol + 2
            left += ln - 1 if ln > 0 else -1
        elif t == 37 and resp3:  # '%'
            ln = int(buf[pos + 1 : eol])
            pos = eol + 2
            left += 2 * ln - 1
        elif t == 124 and resp3:  # '|': its entries, then the reply it annotates
            ln = int(buf[pos + 1 : eol])
            pos = eol + 2
            left += 2 * ln
        elif t in heads:  # '+', '-', ':'; '_', ',', '#', '('
            pos = eol + 2
            left -= 1
        else:
            raise BackendProtocolError(f"unexpected reply type byte {t!r}")
    return pos, left, 0


def decode_command(data: bytes) -> list[bytes]:
    """The argv of one request as the proxy encoded it (a multibulk of bulk strings); [] if
    ``data`` is not one."""
    argv = parse_reply(data)
    return argv if isinstance(argv, list) else []


def parse_reply(raw: bytes) -> object:
    """Decode one raw reply (for the few places the proxy needs a value). Errors come back
    as ``hiredis.ReplyError`` instances."""
    r = hiredis.Reader()
    r.feed(raw)
    return r.gets()
