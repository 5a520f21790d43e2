"""What an application sent through redis-py, to say which command a failure came after.

``CommandLog(port)`` is a context manager that, while it is active, wraps what redis-py packs
commands with -- ``send_command`` and ``pack_commands`` of the sync connection, ``pack_command``
of the asyncio one (its ``send_command`` and ``pack_commands`` both go through it) -- and keeps
the last commands sent to ``port``, each shortened (arguments cut to 40 characters, at most 12
of them). Pipelines and transactions show as one entry per command (MULTI ... EXEC included).
Nothing else changes: the wrapped methods still do what they did. Commands sent inside
``quiet()`` (a test's own cleanup) are not kept."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Self

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection

_CLASSES = (sync_connection.AbstractConnection, async_connection.AbstractConnection)
_quiet = threading.local()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """What this thread sends meanwhile is not the application's: no CommandLog keeps it."""
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def _short(arg: Any) -> str:
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch) & 0xFF:02x}" for ch in text[:40])
    return text if len(text) <= 40 else text[:37] + "..."


def describe_command(args: Iterable[Any]) -> str:
    words = [_short(a) for a in args]
    return " ".join(words[:12]) + (f" ... (+{len(words) - 12} args)" if len(words) > 12 else "")


class CommandLog:
    def __init__(self, port: int, size: int = 60) -> None:
        self.port = port
        self.commands: deque[str] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._saved: list[tuple[type, str, Any]] = []

    def _record(self, conn: Any, args: Iterable[Any]) -> None:
        if getattr(conn, "port", None) == self.port and not getattr(_quiet, "on", False):
            with self._lock:
                self.commands.append(describe_command(args))

    def __enter__(self) -> Self:
        log = self
        sync_cls, async_cls = _CLASSES
        send_command, pack_commands = sync_cls.send_command, sync_cls.pack_commands
        async_pack_command = async_cls.pack_command

        def sync_send_command(conn: Any, *args: Any, **kwargs: Any) -> Any:
            log._record(conn, args)
            return send_command(conn, *args, **kwargs)

        def sync_pack_commands(conn: Any, commands: Any) -> Any:
            commands = [tuple(c) for c in commands]
            for c in commands:
                log._record(conn, c)
            return pack_commands(conn, commands)

        def async_pack(conn: Any, *args: Any) -> Any:
            log._record(conn, args)
            return async_pack_command(conn, *args)

        self._saved = [(sync_cls, "send_command", send_command),
                       (sync_cls, "pack_commands", pack_commands),
                       (async_cls, "pack_command", async_pack_command)]
        sync_cls.send_command = sync_send_command  # type: ignore[method-assign,assignment]
        sync_cls.pack_commands = sync_pack_commands  # type: ignore[method-assign,assignment]
        async_cls.pack_command = async_pack  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, orig in self._saved:
            setattr(cls, name, orig)
        self._saved.clear()

    def tail(self, n: int = 25) -> list[str]:
        with self._lock:
            return list(self.commands)[-n:]
