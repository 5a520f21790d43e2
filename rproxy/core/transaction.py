"""A client's transaction (MULTI ... EXEC), sans-IO: queue-time checks and the EXEC outcome.

Between MULTI and EXEC the proxy queues the client's commands itself and answers ``+QUEUED``,
or the error one Redis would give at queue time (src/server.c processCommand, src/multi.c):
an unknown command or subcommand, a wrong number of arguments, a command flagged ``no_multi``.
Those errors flag the transaction, and EXEC then answers ``-EXECABORT``. Behind the proxy two
more reasons flag it: keys in a second slot (``-CROSSSLOT``, as a Redis Cluster node refuses
them) and commands the proxy cannot run inside a transaction (it answers them itself, or sends
them to every master).

At EXEC the queued commands go to the master of their slot as one block, ``MULTI``, the
commands, ``EXEC``, appended in one piece to one connection: no other client's command can
come between them, so a transaction without WATCH needs no connection of its own. The
backend's replies to the block decide what the client gets (``exec_outcome``): the EXEC reply
as the node sent it, or -- when the node refused the block because the slot has moved, is
migrating or the cluster is failing over (nothing ran: ``-EXECABORT`` or a redirect at EXEC)
-- the block is sent again where the slot is now, so MOVED and ASK never reach the client.
"""

from __future__ import annotations

from rproxy.core import errors
from rproxy.core.commands import CommandInfo, Route
from rproxy.core.emulate_writes import WritePlan, plan_emulated
from rproxy.core.merge import split_array
from rproxy.core.planner import Merge, SplitPlan, plan_cross_slot_split
from rproxy.core.redirect import DELIVER, Redirect, decide
from rproxy.core.resp import encode_command
from rproxy.core.slots import SEVERAL_SLOTS, common_slot, key_slot

QUEUED = b"+QUEUED\r\n"
EMPTY_EXEC = b"*0\r\n"
MULTI = encode_command([b"MULTI"])
EXEC = encode_command([b"EXEC"])

# Commands the proxy answers itself that a backend answers the same way inside a transaction:
# they are queued and run by the master with the others.
# (PUBLISH inside MULTI answers the node's count: the proxy's subscription counts as one.)
_SENT_AS_IS = frozenset({b"PING", b"ECHO", b"SELECT", b"UNWATCH", b"PUBLISH", b"SPUBLISH"})
# The queue-time check's answer for a command over several slots in an emulated transaction.
_SEVERAL = b"-several\r\n"
LOCAL = -2  # the slot of a command the proxy runs itself (``Transaction.local``)
Phase = tuple[int, int] | int  # a range of groups, or the index of a command run as rounds
# Redis runs these at once even inside MULTI (processCommand); the session handles them.
NOT_QUEUED = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"})


class Transaction:
    """The commands queued since MULTI, the one slot their keys are in (-1: none yet), and
    whether a queue-time error flagged the transaction (EXEC will answer EXECABORT).

    With ``emulate`` (``commands.cross_slot_transactions = "emulate"``) the commands
    may be in several slots: each command's slot is kept, and at EXEC the commands run as one
    block per slot (``groups``), the replies merged in the client's order (``exec_array``).
    A command over several slots is split into per-slot parts queued in their slots' groups
    (MSET, DEL, MGET ...), or run by the proxy as rounds of single-slot commands (``local``:
    an emulated read such as SUNION, or -- with ``emulate_writes`` -- an emulated write such
    as RENAME or LMOVE, rproxy/core/emulate_writes.py). Such a command runs alone, after the
    commands queued before it and before those after it (``phases``)."""

    __slots__ = ("commands", "slot", "aborted", "emulate", "emulate_writes", "slots", "several",
                 "split", "local", "local_argv", "_groups", "_phases")

    def __init__(self, slot: int = -1, emulate: bool = False,
                 emulate_writes: bool = False) -> None:
        self.commands: list[bytes] = []  # encoded, as the client sent them
        self.slot = slot  # the WATCHed keys' slot, if any: the transaction must stay in it
        self.aborted = False
        self.emulate = emulate
        self.emulate_writes = emulate_writes
        self.slots: list[int] = []  # each queued command's slot (-1: no keys; LOCAL)
        self.several = False  # its commands are in more than one slot
        # A command split into per-slot parts (MSET, DEL ... over several slots, emulated):
        # its first part's index -> (how many parts, the merge of their replies)
        self.split: dict[int, tuple[int, Merge]] = {}
        # A command the proxy runs itself, by index: its plan of rounds, or its reply known at
        # queue time (an argument error, which one Redis gives at EXEC).
        self.local: dict[int, WritePlan | bytes] = {}
        self.local_argv: dict[int, list[bytes]] = {}  # (the command of each plan)
        self._groups: list[tuple[int, list[int]]] | None = None
        self._phases: list[Phase] | None = None

    def queue(self, info: CommandInfo, argv: list[bytes], enc: bytes) -> bytes:
        """Queue one command; the reply to give now (``+QUEUED`` or an error that flags the
        transaction)."""
        error = _queue_error(info, argv)
        if error is None:
            error = self._slot_error(info, argv)
        if error is not None:
            if error is _SEVERAL:
                return self._queue_several(info, argv)
            self.aborted = True
            return error
        self.commands.append(enc)
        return QUEUED

    def _queue_several(self, info: CommandInfo, argv: list[bytes]) -> bytes:
        """A command over several slots in an emulated transaction: split into parts queued in
        their slots' groups and merged into its one element at EXEC, or run by the proxy, or
        (neither) refused as a Redis Cluster node refuses it."""
        split = plan_cross_slot_split(info.name, argv)
        if isinstance(split, SplitPlan):
            self.split[len(self.commands)] = (len(split.parts), split.merge)
            for slot, part in split.parts:
                self._append(encode_command(part), slot)
            return QUEUED
        keys = [argv[pos] for pos in info.key_positions(argv)]
        plan = split if split is not None else plan_emulated(argv, keys, self.emulate_writes)
        if plan is None:
            self.aborted = True
            return errors.CROSSSLOT_IN_EMULATED_TRANSACTION
        self.local[len(self.commands)] = plan
        self.local_argv[len(self.commands)] = argv
        self._append(b"", LOCAL)
        if self.slot < 0:  # (the group keyless commands join)
            self.slot = key_slot(keys[0])
        return QUEUED

    def _append(self, enc: bytes, slot: int) -> None:
        self.commands.append(enc)
        self.slots.append(slot)
        if self.slot < 0 <= slot:
            self.slot = slot
        self.several = True

    def _slot_error(self, info: CommandInfo, argv: list[bytes]) -> bytes | None:
        if info.route not in (Route.KEYED, Route.LEASED, Route.REFUSED) \
                and info.name != b"SPUBLISH":  # (its channel is routed as a key)
            self.slots.append(-1)
            return None
        slot = common_slot([argv[pos] for pos in info.key_positions(argv)])
        if slot == SEVERAL_SLOTS:
            return _SEVERAL if self.emulate else errors.CROSSSLOT_TRANSACTION
        if slot >= 0 and self.slot >= 0 and slot != self.slot:
            if not self.emulate:
                return errors.CROSSSLOT_TRANSACTION
            self.several = True
        if slot >= 0 and self.slot < 0:
            self.slot = slot
        self.slots.append(slot)
        return None

    def phases(self) -> list[Phase]:
        """The order EXEC runs the commands in: a range of ``groups`` (blocks run in
        parallel, one per slot), then a command the proxy runs as rounds (its index) alone,
        then the next range ... (Asked at EXEC, when nothing more is queued: computed
        once.)"""
        if self._phases is None:
            self._group()
        assert self._phases is not None
        return self._phases

    def groups(self) -> list[tuple[int, list[int]]]:
        """The queued commands by slot and phase: (slot, their indexes), the slots in the
        order they first appear in their phase; keyless commands run with the first slot's
        group."""
        if self._groups is None:
            self._group()
        assert self._groups is not None
        return self._groups

    def _group(self) -> None:
        groups: list[tuple[int, list[int]]] = []
        phases: list[Phase] = []
        by_slot: dict[int, list[int]] = {}
        for i, slot in enumerate(self.slots):
            if slot != LOCAL:
                by_slot.setdefault(self.slot if slot < 0 else slot, []).append(i)
            elif not isinstance(self.local[i], bytes):  # a plan: the groups so far run first
                if by_slot:
                    phases.append((len(groups), len(groups) + len(by_slot)))
                    groups.extend(by_slot.items())
                    by_slot = {}
                phases.append(i)
        if by_slot:
            phases.append((len(groups), len(groups) + len(by_slot)))
            groups.extend(by_slot.items())
        self._groups, self._phases = groups, phases

    def group_block(self, indexes: list[int]) -> list[bytes]:
        """``MULTI``, the group's commands, ``EXEC``."""
        return [MULTI, *[self.commands[i] for i in indexes], EXEC]

    def exec_array(self, replies: list[bytes], results: dict[int, bytes]) -> bytes:
        """One EXEC array from the EXEC replies of the groups (``replies[g]`` for
        ``groups()[g]``) and the replies of the commands the proxy ran (``results``), each
        element where the client queued its command (a split command's parts merged into its
        one element). A group that did not answer an array (its node refused the block, or
        its outcome is unknown) gives that error as each of its elements."""
        elements: list[bytes] = [b""] * len(self.commands)
        for (_, indexes), raw in zip(self.groups(), replies):
            parts = split_array(raw) if raw[:1] == b"*" and raw[:3] != b"*-1" else None
            if parts is None or len(parts) != len(indexes):
                error = raw if raw[:1] == b"-" else errors.OUTCOME_UNKNOWN
                parts = [error] * len(indexes)
            for i, part in zip(indexes, parts):
                elements[i] = part
        for i, plan in self.local.items():
            elements[i] = plan if isinstance(plan, bytes) else results[i]
        out = []
        i = 0
        while i < len(elements):
            split = self.split.get(i)
            if split is None:
                out.append(elements[i])
                i += 1
            else:
                n, merge_parts = split
                out.append(merge_parts(elements[i:i + n]))
                i += n
        return b"*%d\r\n%s" % (len(out), b"".join(out))

    def exec_reply(self) -> bytes | None:
        """What EXEC answers without asking a backend (EXECABORT, or an empty transaction);
        None when the block must run."""
        if self.aborted:
            return errors.EXECABORT
        if not self.commands:
            return EMPTY_EXEC
        return None

    def block(self) -> list[bytes]:
        """``MULTI``, the queued commands, ``EXEC``: what runs on the slot's master."""
        return [MULTI, *self.commands, EXEC]


def command_error(info: CommandInfo, argv: list[bytes]) -> bytes | None:
    """Redis's first checks of any command (processCommand: it exists, it has the right
    number of arguments); inside MULTI a failure flags the transaction."""
    if not info.name:  # the table's "unknown" entry
        return errors.unknown_command(argv)
    if info.subcommands and len(argv) > 1:  # a container whose subcommand is unknown
        return errors.unknown_subcommand(info.name, argv[1])
    arity = info.arity
    if (arity > 0 and len(argv) != arity) or (arity < 0 and len(argv) < -arity):
        return errors.wrong_arity(info.name)
    return None


def _queue_error(info: CommandInfo, argv: list[bytes]) -> bytes | None:
    """The error Redis gives when a command is queued (processCommand's order: existence,
    arity, no_multi), or the proxy's own refusal; None if it can be queued."""
    error = command_error(info, argv)
    if error is not None:
        return error
    if b"no_multi" in info.flags:
        return errors.NOT_IN_TRANSACTION
    route = info.route
    if route is Route.KEYED or route is Route.ANY:
        return None
    if b"blocking" in info.flags:  # a blocking command does not block inside MULTI: queue it
        return None
    if route is Route.LOCAL and info.name in _SENT_AS_IS:
        return None
    why = info.why if route is Route.REFUSED else (
        "inside MULTI the proxy cannot answer it itself or send it to every master")
    return errors.not_supported(info.name.replace(b"|", b" "), why)


def exec_aborted_by(error: bytes) -> bytes:
    """EXEC itself refused at queue time (a wrong number of arguments): Redis discards the
    transaction and says why (src/multi.c execCommandAbort), with the reason's text as
    processCommand made it: without the "-ERR " of an error reply."""
    text = error[1:].rstrip(b"\r\n")
    if text.startswith(b"ERR "):
        text = text[4:]
    return b"-EXECABORT Transaction discarded because of: " + text + b"\r\n"


def exec_outcome(replies: list[bytes], from_host: str, hops: int,
                 max_redirects: int) -> Redirect:
    """What to do with the replies to a block (MULTI, the commands, EXEC, in order): deliver
    the EXEC reply, or follow a redirect / retry / hold / fail as ``rproxy.core.redirect``
    decides for the first reply that proves the block did not run on the slot's owner. An
    EXEC that answered an array (or nil) ran; anything else means nothing ran."""
    if replies[-1][:1] == b"*":
        return _DELIVER
    for raw in replies:
        if raw[:1] == b"-":
            decision = decide(raw, from_host, hops, max_redirects)
            if decision.kind != DELIVER:
                return decision
    return _DELIVER


_DELIVER = Redirect(DELIVER)
