"""Plans for commands whose keys span several slots, sans-IO.

A split command is cut into one part per slot (Redis Cluster refuses multi-key commands across
slots, even on one node), the parts run in parallel on their masters, and a merge function
builds the reply a single Redis would have given. Each part is redirected (MOVED/ASK) on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from rproxy.core import errors, merge
from rproxy.core.resp import string2ll
from rproxy.core.slots import CRC16 as _crc16
from rproxy.core.slots import CRC16_TABLE as _crc16_table
from rproxy.core.slots import key_slot

Merge = Callable[[list[bytes]], bytes]


@dataclass(frozen=True, slots=True)
class SplitRule:
    step: int  # arguments per key: 1 (keys) or 2 (key value pairs); plan_split knows no other
    kind: str  # "values" (MGET: reassemble by position), "sum", "ok"


SPLIT_RULES: dict[bytes, SplitRule] = {
    b"MGET": SplitRule(1, "values"),
    b"MSET": SplitRule(2, "ok"),
    b"DEL": SplitRule(1, "sum"),
    b"UNLINK": SplitRule(1, "sum"),
    b"EXISTS": SplitRule(1, "sum"),
    b"TOUCH": SplitRule(1, "sum"),
}


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 2x, per command
class SplitPlan:
    parts: list[tuple[int, list[bytes]]]  # (slot, argv of the part)
    merge: Merge


def plan_split(argv: list[bytes], rule: SplitRule) -> SplitPlan:
    """One part per slot, keys in their original order within each part. The caller has
    checked the arity (``(len(argv) - 1) % rule.step == 0`` and at least one key)."""
    name = argv[0]
    step = rule.step
    keys = argv[1::step]
    # key_slot, inlined for keys without '{': this runs for every key of every split command
    slots = [key_slot(k) if 123 in k else _crc16(k, 0, _crc16_table) & 0x3FFF for k in keys]
    positions: list[list[int]]
    if len(set(slots)) == len(slots):  # every key in a slot of its own (keys without tags)
        if step == 1:
            parts = [(slot, [name, key]) for slot, key in zip(slots, keys)]
        else:  # step 2: key value
            parts = [(slot, [name, key, value]) for slot, key, value in zip(slots, keys, argv[2::2])]
        positions = [[unit] for unit in range(len(keys))]
    else:
        subs: dict[int, list[bytes]] = {}  # slot -> argv of its part
        units: dict[int, list[int]] = {}  # slot -> positions of its keys
        for unit, slot in enumerate(slots):
            sub = subs.get(slot)
            i = 1 + unit * step
            if sub is None:
                subs[slot] = [name, *argv[i : i + step]]
                units[slot] = [unit]
            else:
                sub += argv[i : i + step]
                units[slot].append(unit)
        parts = list(subs.items())
        positions = list(units.values())
    if rule.kind == "values":
        fn: Merge = functools.partial(merge.merge_by_position, positions=positions, total=len(keys))
    elif rule.kind == "sum":
        fn = merge.merge_sum
    else:
        fn = merge.merge_all_ok
    return SplitPlan(parts, fn)


def fanout_merge(name: bytes, argv: list[bytes]) -> Merge:
    """The merge for a fanned-out command; a few need the command's arguments."""
    if name == b"SLOWLOG|GET" and len(argv) > 2:
        count = string2ll(argv[2])
        if count is not None:  # an invalid count is each node's own error
            return functools.partial(merge.merge_slowlog, count=count)
    return FANOUT_MERGES[name]


FANOUT_MERGES: dict[bytes, Merge] = {
    b"DBSIZE": merge.merge_sum,
    b"KEYS": merge.merge_concat,
    b"RANDOMKEY": merge.merge_random_nonnull,
    b"FLUSHALL": merge.merge_all_ok,
    b"FLUSHDB": merge.merge_all_ok,
    b"SCRIPT|LOAD": merge.merge_same,
    b"SCRIPT|EXISTS": merge.merge_and,
    b"SCRIPT|FLUSH": merge.merge_all_ok,
    b"SCRIPT|KILL": merge.merge_any_ok,
    b"FUNCTION|LOAD": merge.merge_same,
    b"FUNCTION|DELETE": merge.merge_same,
    b"FUNCTION|FLUSH": merge.merge_all_ok,
    b"FUNCTION|RESTORE": merge.merge_same,
    b"FUNCTION|KILL": merge.merge_any_ok,
    b"SLOWLOG|GET": merge.merge_slowlog,
    b"SLOWLOG|LEN": merge.merge_sum,
    b"SLOWLOG|RESET": merge.merge_all_ok,
    b"CONFIG|SET": merge.merge_all_ok,
    b"CONFIG|RESETSTAT": merge.merge_all_ok,
    b"CONFIG|REWRITE": merge.merge_all_ok,
}
"""Merge of every command routed to all masters (or all nodes): one place, checked by a test
against the command table so a new fan-out command cannot lack one."""


def plan_xread(argv: list[bytes]) -> SplitPlan | bytes | None:
    """XREAD [COUNT n] STREAMS k1 k2 ... id1 id2 ... over streams in several slots: one XREAD
    per slot with its streams and ids; the merged reply lists the streams that have entries in
    the order they were asked for, or a null array when none has (as Redis, t_stream.c)."""
    upper = [a.upper() for a in argv]
    if b"STREAMS" not in upper or b"BLOCK" in upper:
        return None
    s = upper.index(b"STREAMS")
    rest = argv[s + 1 :]
    if not rest or len(rest) % 2:
        return errors.XREAD_UNBALANCED
    half = len(rest) // 2
    keys, ids = rest[:half], rest[half:]
    head = argv[:s + 1]
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(key_slot(k), []).append(i)
    parts = [(slot, [*head, *[keys[i] for i in idx], *[ids[i] for i in idx]])
             for slot, idx in groups.items()]
    order: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, i)
    return SplitPlan(parts, functools.partial(merge.merge_xread, order=order, nkeys=len(keys)))


SPLIT_NAMES = frozenset(SPLIT_RULES) | {b"XREAD"}
"""Commands a cross-slot call of which ``plan_cross_slot_split`` cuts into per-slot parts."""


def plan_cross_slot_split(name: bytes, argv: list[bytes]) -> SplitPlan | bytes | None:
    """The per-slot plan for a command whose keys span slots, an error reply (arity, an
    unbalanced XREAD), or None when the command is not split (emulated or CROSSSLOT)."""
    rule = SPLIT_RULES.get(name)
    if rule is not None:
        if len(argv) < 2 or (len(argv) - 1) % rule.step:
            return errors.wrong_arity(name)
        return plan_split(argv, rule)
    if name == b"XREAD":
        return plan_xread(argv)
    return None
