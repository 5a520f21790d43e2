"""Redis's glob-style patterns (src/util.c stringmatchlen), as compiled regular expressions.

``*`` any run of bytes, ``?`` one byte, ``[abc]`` / ``[^abc]`` / ``[a-z]`` a class (a range
given backwards is swapped; an unterminated class runs to the end of the pattern), ``\\x``
the byte x itself. Used where rproxy decides what Redis decides by pattern: ACL key and
channel patterns (rproxy/core/acl.py). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_SPECIAL = b"*?[\\"  # what makes a pattern more than a literal (or a literal prefix)


def _escape(b: int) -> bytes:
    return re.escape(bytes([b]))


def to_regex(pattern: bytes) -> bytes:
    """The regular expression (for ``re.fullmatch`` with DOTALL) that matches what
    ``pattern`` matches in Redis."""
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            while i + 1 < n and pattern[i + 1] == 0x2A:
                i += 1
            out.append(b".*")
        elif c == 0x3F:  # ?
            out.append(b".")
        elif c == 0x5B:  # [
            i += 1
            negate = i < n and pattern[i] == 0x5E  # ^
            if negate:
                i += 1
            items: list[bytes] = []
            while i < n and pattern[i] != 0x5D:  # ]
                if pattern[i] == 0x5C and i + 1 < n:  # \x
                    i += 1
                    items.append(_escape(pattern[i]))
                elif i + 2 < n and pattern[i + 1] == 0x2D:  # a-z
                    lo, hi = sorted((pattern[i], pattern[i + 2]))
                    items.append(_escape(lo) + b"-" + _escape(hi))
                    i += 2
                else:
                    items.append(_escape(pattern[i]))
                i += 1
            if items:
                out.append(b"[" + (b"^" if negate else b"") + b"".join(items) + b"]")
            else:  # [] matches nothing, [^] any byte
                out.append(b"." if negate else b"(?!)")
        elif c == 0x5C and i + 1 < n:  # \x
            i += 1
            out.append(_escape(pattern[i]))
        else:
            out.append(_escape(c))
        i += 1
    return b"".join(out)


@lru_cache(maxsize=4096)
def matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """A function telling whether a string matches ``pattern`` (case-sensitive)."""
    if pattern == b"*":
        return lambda s: True
    head = pattern[:-1]
    if pattern[-1:] == b"*" and not any(c in _SPECIAL for c in head):  # app:* (the usual)
        return lambda s: s.startswith(head)
    if not any(c in _SPECIAL for c in pattern):
        return lambda s: s == pattern
    full = re.compile(to_regex(pattern), re.DOTALL).fullmatch
    return lambda s: full(s) is not None
