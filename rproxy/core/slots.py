"""Key -> hash slot, exactly as Redis Cluster defines it (src/cluster.c keyHashSlot).

CRC16/XMODEM (poly 0x1021, init 0, no reflection) of the key, or of the content of its first
``{...}`` when that content is non-empty, modulo 16384. crcmod's C extension does the CRC; a
pure-Python fallback would make every command several times slower, so it is checked at import.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from typing import Any

import crcmod
import crcmod.crcmod  # noqa: F401  (the submodule carries _usingExtension)

SLOTS = 16384

_crc16_wrapper = crcmod.mkCrcFun(0x11021, initCrc=0, xorOut=0, rev=False)
# mkCrcFun returns a Python closure ``crcfun(data, crc=init, table=..., fun=...)`` around the C
# function; calling the C function directly saves one Python frame per command.
_init, _table, _cfun = _crc16_wrapper.__defaults__ or (None, None, None)
if _init != 0 or not callable(_cfun):  # pragma: no cover - a crcmod that looks different

    def _cfun(data: bytes, crc: int, table: object) -> int:
        return int(_crc16_wrapper(data))

# For the data path's inlined slot computation (rproxy/net/session.py): ``CRC16(key, 0,
# CRC16_TABLE) & 0x3FFF`` is key_slot(key) for a key without '{'.
CRC16 = _cfun
CRC16_TABLE = _table

USING_C_EXTENSION: bool = bool(getattr(sys.modules["crcmod.crcmod"], "_usingExtension", False))
if not USING_C_EXTENSION:  # pragma: no cover - depends on the install
    warnings.warn(
        "crcmod's C extension is not in use: slot hashing runs in pure Python and the proxy "
        "will be slow (reinstall crcmod with a C compiler and Python headers present)",
        RuntimeWarning,
        stacklevel=1,
    )


def key_slot(key: bytes, _crc: Any = _cfun, _table: Any = _table) -> int:
    """Hash slot of ``key`` (Redis keyHashSlot): hash tags ``{tag}`` use the first ``{`` and
    the first ``}`` after it; an empty tag ``{}`` means the whole key is hashed. (The C
    function and its table are bound as defaults: locals, not global lookups, per call.)"""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return _crc(key[start + 1 : end], 0, _table) & 0x3FFF
    return _crc(key, 0, _table) & 0x3FFF


def crc16(data: bytes) -> int:
    """CRC16/XMODEM of ``data`` (exposed for tests: CRC16 of b"123456789" is 0x31C3)."""
    return int(_cfun(data, 0, _table))


NO_KEYS = -1
SEVERAL_SLOTS = -2


def common_slot(keys: Iterable[bytes]) -> int:
    """The one slot all of ``keys`` hash to; ``NO_KEYS`` when there are none,
    ``SEVERAL_SLOTS`` when they span slots."""
    slot = NO_KEYS
    for key in keys:
        s = key_slot(key)
        if slot < 0:
            slot = s
        elif s != slot:
            return SEVERAL_SLOTS
    return slot
