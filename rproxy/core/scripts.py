"""The scripts and function libraries the proxy has seen, to load them again where a node lacks
them: sans-IO.

A Redis Cluster node keeps its script cache to itself: a replica promoted after a failover, a
node restarted, or one whose cache was flushed directly answers ``EVALSHA`` with ``NOSCRIPT``
although the application loaded the script (through the proxy) long ago; a node whose
functions were flushed answers ``FCALL`` with ``Function not found``. The proxy remembers every
script body it forwarded (``EVAL``, ``SCRIPT LOAD``) and every library (``FUNCTION LOAD``), and
the shared pool (rproxy/net/pool.py) loads the missing one on that node and sends the command
again, once. ``SCRIPT FLUSH``, ``FUNCTION FLUSH`` and ``FUNCTION DELETE`` through the proxy
forget them, so that the application's own flush means what it means on one Redis.

At most ``limit`` scripts and ``limit`` libraries are kept, the oldest dropped first.
"""

from __future__ import annotations

import hashlib
import re

_LIBRARY_NAME = re.compile(rb"#![^\s]+[ \t]+(?:[^\n]*?[ \t])?name=([^\s]+)")


def library_name(code: bytes) -> bytes | None:
    """The name in a library's shebang line (``#!lua name=mylib``), as FUNCTION LOAD reads it."""
    first = code.split(b"\n", 1)[0]
    match = _LIBRARY_NAME.match(first)
    return match.group(1) if match else None


class ScriptCache:
    __slots__ = ("limit", "scripts", "libraries")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.scripts: dict[bytes, bytes] = {}  # sha1 (hex, lower case) -> body
        self.libraries: dict[bytes, bytes] = {}  # library name -> code

    def learn_script(self, body: bytes) -> None:
        sha = hashlib.sha1(body).hexdigest().encode()
        if sha not in self.scripts:
            self.scripts[sha] = body
            if len(self.scripts) > self.limit:
                del self.scripts[next(iter(self.scripts))]

    def script(self, sha: bytes) -> bytes | None:
        return self.scripts.get(sha.lower())

    def forget_scripts(self) -> None:
        self.scripts.clear()

    def learn_library(self, code: bytes) -> None:
        name = library_name(code)
        if name is None:
            return
        self.libraries.pop(name, None)  # (the newest version, and last in the order)
        self.libraries[name] = code
        if len(self.libraries) > self.limit:
            del self.libraries[next(iter(self.libraries))]

    def forget_library(self, name: bytes) -> None:
        self.libraries.pop(name, None)

    def forget_libraries(self) -> None:
        self.libraries.clear()

    def learn(self, name: bytes, argv: list[bytes]) -> None:
        """What a command (``name`` in the command table's spelling) teaches or unteaches."""
        if name in (b"EVAL", b"EVAL_RO") and len(argv) > 1:
            self.learn_script(argv[1])
        elif name == b"SCRIPT|LOAD" and len(argv) == 3:
            self.learn_script(argv[2])
        elif name == b"SCRIPT|FLUSH":
            self.forget_scripts()
        elif name == b"FUNCTION|LOAD" and len(argv) > 2:
            self.learn_library(argv[-1])
        elif name == b"FUNCTION|DELETE" and len(argv) == 3:
            self.forget_library(argv[2])
        elif name in (b"FUNCTION|FLUSH", b"FUNCTION|RESTORE"):
            self.forget_libraries()


# The commands the cache learns from (``ScriptCache.learn``).
LEARNS = frozenset({b"EVAL", b"EVAL_RO", b"SCRIPT|LOAD", b"SCRIPT|FLUSH", b"FUNCTION|LOAD",
                    b"FUNCTION|DELETE", b"FUNCTION|FLUSH", b"FUNCTION|RESTORE"})
