"""rproxy's own ACL users (Redis's ACL, src/acl.c, 7.0): sans-IO.

Users come from the configuration (``[auth] users``, or the ACL file ``auth.aclfile``), in
Redis's rule syntax, and are fixed while rproxy runs. A rule list is parsed once (``User``);
its command rules (``+get``, ``-@admin``, ``+config|get`` ...) are applied to the command
table the cluster sent (its ACL categories, element 7 of COMMAND's reply), once per table
(``Acl.perms``), as Redis applies them to its own table: so ``+@read`` means what it means
on the nodes, and a rule naming a command the cluster does not know makes the user unusable
(logged), as it makes Redis refuse its configuration.

``Acl.check`` decides one command for one user as Redis's ``ACLCheckAllUserCommandPerm``: the
command (or subcommand), its keys by the key specs' access flags (``%R~`` / ``%W~``), its
channels (PUBLISH, SUBSCRIBE ...). The session calls it only for users that are restricted
(``User.restricted``); the others -- ``~* &* +@all``, the default user -- take the data path
untouched. ``AclLog`` is ACL LOG. ``command`` answers ACL WHOAMI / LIST / USERS / GETUSER /
CAT / LOG / DRYRUN / GENPASS / HELP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rproxy.core import errors, resp
from rproxy.core.glob import matcher

if TYPE_CHECKING:
    from rproxy.core.commands import CommandInfo, CommandTable
    from rproxy.core.stats import Stats

# Redis's categories, in its order (ACL CAT, and the order ACL LIST tries them in).
CATEGORIES = (
    b"keyspace", b"read", b"write", b"set", b"sortedset", b"list", b"hash", b"string",
    b"bitmap", b"hyperloglog", b"geo", b"stream", b"pubsub", b"admin", b"fast", b"slow",
    b"blocking", b"dangerous", b"connection", b"transaction", b"scripting",
)
READ, WRITE = 1, 2  # key pattern permissions (%R~, %W~; ~ is both)
# Check results, Redis's numbers (the higher is the one reported across selectors).
OK, DENIED_CMD, DENIED_KEY, DENIED_AUTH, DENIED_CHANNEL = 0, 1, 2, 3, 4
TOPLEVEL, MULTI = b"toplevel", b"multi"  # ACL LOG contexts
GROUPING_MS = 60000  # ACL LOG: a denial like one of the last 10 within a minute is counted there

# Channel arguments (src/db.c commands_with_channels): the first, the last (-1: to the end),
# pattern; unsubscribing is never denied.
_CHANNELS = {
    b"SUBSCRIBE": (1, -1, False), b"SSUBSCRIBE": (1, -1, False),
    b"PSUBSCRIBE": (1, -1, True), b"PUBLISH": (1, 1, False), b"SPUBLISH": (1, 1, False),
}


class RuleError(ValueError):
    """A rule Redis would refuse; the message is Redis's (ACLSetUserStringError)."""


_UNKNOWN = "Unknown command or category name in ACL"
_SYNTAX = "Syntax error"
_KEYS_AFTER_ALL = ("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid "
                   "and does not have any effect. Try 'resetkeys' to start with an empty list "
                   "of patterns")
_CHANNELS_AFTER_ALL = ("Adding a pattern after the * pattern (or the 'allchannels' flag) is "
                       "not valid and does not have any effect. Try 'resetchannels' to start "
                       "with an empty list of channels")
_NO_SUCH_PASSWORD = "The password you are trying to remove from the user does not exist"
_BAD_HASH = ("The password hash must be exactly 64 characters and contain only lowercase "
             "hexadecimal characters")
_FIRSTARG_OF_SUB = "Allowing first-arg of a subcommand is not supported"


def hash_password(password: bytes) -> bytes:
    return hashlib.sha256(password).hexdigest().encode()


def _valid_hash(h: bytes) -> bool:
    return len(h) == 64 and all(c in b"0123456789abcdef" for c in h)


def _has_spaces(s: bytes) -> bool:
    return any(c in b" \t\r\n\0" or c < 32 for c in s)  # Redis ACLStringHasSpaces: isspace, NUL


class Selector:
    """Key and channel patterns, and command rules kept in order (applied per table)."""

    __slots__ = ("allkeys", "keys", "allchannels", "channels", "ops")

    def __init__(self) -> None:
        self.allkeys = False
        self.keys: list[list] = []  # [pattern, READ|WRITE]
        self.allchannels = False
        self.channels: list[bytes] = []
        self.ops: list[bytes] = [b"-@all"]

    def set(self, op: bytes) -> None:
        """Redis ACLSetSelector; raises RuleError."""
        low = op.lower()
        if low in (b"allkeys", b"~*"):
            self.allkeys, self.keys = True, []
        elif low == b"resetkeys":
            self.allkeys, self.keys = False, []
        elif low in (b"allchannels", b"&*"):
            self.allchannels, self.channels = True, []
        elif low == b"resetchannels":
            self.allchannels, self.channels = False, []
        elif low in (b"allcommands", b"+@all", b"nocommands", b"-@all"):
            self.ops = [b"+@all" if low in (b"allcommands", b"+@all") else b"-@all"]
        elif op[:1] in (b"~", b"%"):
            self._key_pattern(op)
        elif op[:1] == b"&":
            if self.allchannels:
                raise RuleError(_CHANNELS_AFTER_ALL)
            if _has_spaces(op[1:]):
                raise RuleError(_SYNTAX)
            if op[1:] not in self.channels:
                self.channels.append(op[1:])
        elif op[:1] in (b"+", b"-") and op[1:2] == b"@":
            if op[2:].lower() not in CATEGORIES:
                raise RuleError(_UNKNOWN)
            self.ops.append(op)
        elif op[:1] in (b"+", b"-") and len(op) > 1:
            self.ops.append(op)  # a command: checked against the command table (``Perms``)
        else:
            raise RuleError(_SYNTAX)

    def _key_pattern(self, op: bytes) -> None:
        if self.allkeys:
            raise RuleError(_KEYS_AFTER_ALL)
        flags, offset = 0, 1
        if op[:1] == b"%":
            for offset in range(1, len(op) + 1):
                c = op[offset:offset + 1].upper()
                if c == b"R" and not flags & READ:
                    flags |= READ
                elif c == b"W" and not flags & WRITE:
                    flags |= WRITE
                elif c == b"~":
                    offset += 1
                    break
                else:
                    raise RuleError(_SYNTAX)
        else:
            flags = READ | WRITE
        pattern = op[offset:]
        if _has_spaces(pattern):
            raise RuleError(_SYNTAX)
        for entry in self.keys:
            if entry[0] == pattern:
                entry[1] |= flags
                break
        else:
            self.keys.append([pattern, flags])

    @property
    def unrestricted(self) -> bool:
        """Every key, every channel, every command: nothing to check."""
        if not (self.allkeys and self.allchannels) or b"+@all" not in self.ops:
            return False
        last_all = len(self.ops) - 1 - self.ops[::-1].index(b"+@all")
        return all(op[:1] == b"+" for op in self.ops[last_all:])

    def describe_keys(self, sep: bytes = b" ") -> bytes:
        if self.allkeys:
            return b"~*"
        prefix = {READ | WRITE: b"~", READ: b"%R~", WRITE: b"%W~"}
        return sep.join(prefix[f] + p for p, f in self.keys)

    def describe_channels(self) -> bytes:
        return b"&*" if self.allchannels else b" ".join(b"&" + c for c in self.channels)


class User:
    """One ACL user: Redis ACLSetUser's state. A new user is Redis's after ``reset``."""

    __slots__ = ("name", "enabled", "nopass", "passwords", "selectors")

    def __init__(self, name: bytes, rules: Iterable[bytes] = ()) -> None:
        self.name = name
        self.enabled = False
        self.nopass = False
        self.passwords: list[bytes] = []  # SHA-256, hex
        self.selectors = [Selector()]  # the root, then those given in parentheses
        for op in merge_selectors(list(rules)):
            self.set(op)

    @property
    def root(self) -> Selector:
        return self.selectors[0]

    @property
    def restricted(self) -> bool:
        """Commands must be checked: the root selector does not allow everything."""
        return not self.root.unrestricted

    def set(self, op: bytes) -> None:
        """Redis ACLSetUser; raises RuleError."""
        low = op.lower()
        if not op:
            return
        if low == b"on":
            self.enabled = True
        elif low == b"off":
            self.enabled = False
        elif low in (b"skip-sanitize-payload", b"sanitize-payload"):
            pass  # (RESTORE payloads are checked by the nodes)
        elif low == b"nopass":
            self.nopass, self.passwords = True, []
        elif low == b"resetpass":
            self.nopass, self.passwords = False, []
        elif op[:1] in (b">", b"#"):
            if op[:1] == b"#" and not _valid_hash(op[1:]):
                raise RuleError(_BAD_HASH)
            h = hash_password(op[1:]) if op[:1] == b">" else op[1:]
            if h not in self.passwords:
                self.passwords.append(h)
            self.nopass = False
        elif op[:1] in (b"<", b"!"):
            if op[:1] == b"!" and not _valid_hash(op[1:]):
                raise RuleError(_BAD_HASH)
            h = hash_password(op[1:]) if op[:1] == b"<" else op[1:]
            if h not in self.passwords:
                raise RuleError(_NO_SUCH_PASSWORD)
            self.passwords.remove(h)
        elif op[:1] == b"(" and op[-1:] == b")":
            selector = Selector()
            for part in op[1:-1].split():
                selector.set(part)
            self.selectors.append(selector)
        elif low == b"clearselectors":
            del self.selectors[1:]
        elif low == b"reset":
            self.nopass, self.passwords, self.enabled = False, [], False
            self.selectors = [Selector()]
        else:
            self.root.set(op)

    def password_ok(self, password: bytes) -> bool:
        """Redis ACLCheckUserCredentials, each hash compared in constant time."""
        if not self.enabled:
            return False
        if self.nopass:
            return True
        h = hash_password(password)
        return any([hmac.compare_digest(h, p) for p in self.passwords])

    def describe(self, perms: list[Perms] | None) -> bytes:
        """ACL LIST's form (ACLDescribeUser): flags, password hashes, then each selector."""
        parts = [b"on" if self.enabled else b"off"]
        if self.nopass:
            parts.append(b"nopass")
        parts += [b"#" + p for p in self.passwords]
        for i, s in enumerate(self.selectors):
            text = _describe_selector(s, perms[i] if perms else None)
            parts.append(text if i == 0 else b"(" + text + b")")
        return b" ".join(parts)

    def flags(self) -> list[bytes]:
        return [b"on" if self.enabled else b"off"] + ([b"nopass"] if self.nopass else [])


def merge_selectors(ops: list[bytes]) -> list[bytes]:
    """Redis ACLMergeSelectorArguments: the words from one starting with ``(`` to one ending
    with ``)`` are one selector."""
    out: list[bytes] = []
    open_at = -1
    for op in ops:
        if open_at < 0 and op[:1] == b"(" and op[-1:] != b")":
            open_at = len(out)
            out.append(op)
        elif open_at >= 0:
            out[open_at] += b" " + op
            if op[-1:] == b")":
                open_at = -1
        else:
            out.append(op)
    if open_at >= 0:
        raise RuleError(f"Unmatched parenthesis in acl selector starting at "
                        f"'{out[open_at].split()[0].decode(errors='replace')}'.")
    return out


# -- command rules against a command table ----------------------------------------------------
def _walk(infos: Iterable[CommandInfo]) -> Iterator[CommandInfo]:
    """Every command, each container followed by its subcommands (Redis's table walk)."""
    for info in infos:
        yield info
        yield from info.subcommands.values()


@dataclass(slots=True)
class Perms:
    """A selector's command rules applied to one command table: the commands (``info.name``)
    it may run."""

    allowed: set[bytes] = field(default_factory=set)
    allcommands: bool = False  # +@all and nothing taken away since: no check
    future: bool = False  # +@all was the base (ACL LIST starts with +@all, not -@all)
    firstargs: dict[bytes, list[bytes]] = field(default_factory=dict)
    description: bytes = b""  # ACL LIST's command rules for these (``_describe_commands``)

    def copy(self) -> Perms:
        return Perms(set(self.allowed), self.allcommands, self.future,
                     {k: list(v) for k, v in self.firstargs.items()})


class Catalogue:
    """The command table as ACL rules see it: names (lower case, ``container|sub``) to
    infos, in the table's order, and each category's commands."""

    def __init__(self, table: CommandTable) -> None:
        self.table = table
        self.infos = list(_walk(table.infos()))
        self.by_name = {i.name.lower(): i for i in self.infos}

    def apply(self, perms: Perms, op: bytes) -> None:
        """Redis ACLSetSelector's command rules; raises RuleError."""
        if op == b"+@all":
            perms.allowed = {i.name for i in self.infos}
            perms.allcommands = perms.future = True
            perms.firstargs.clear()
        elif op == b"-@all":
            perms.allowed = set()
            perms.allcommands = perms.future = False
            perms.firstargs.clear()
        elif op[1:2] == b"@":
            category = op[2:].lower()
            if category not in CATEGORIES:
                raise RuleError(_UNKNOWN)
            self._category(perms, category, op[:1] == b"+")
        elif op[:1] == b"+" and b"|" in op:
            container, _, sub = op[1:].rpartition(b"|")
            info = self.by_name.get(container.lower())
            if info is None:
                raise RuleError(_UNKNOWN)
            if b"|" in info.name:
                raise RuleError(_FIRSTARG_OF_SUB)
            if not sub:
                raise RuleError(_SYNTAX)
            if info.subcommands:
                target = self.by_name.get(op[1:].lower())
                if target is None:
                    raise RuleError(_UNKNOWN)
                self._change(perms, target, True)
            else:  # (Redis warns this form is deprecated: SELECT|0)
                perms.firstargs.setdefault(info.name, []).append(sub.lower())
        else:
            info = self.by_name.get(op[1:].lower())
            if info is None:
                raise RuleError(_UNKNOWN)
            self._change(perms, info, op[:1] == b"+")

    def _change(self, perms: Perms, info: CommandInfo, allow: bool) -> None:
        """ACLChangeSelectorPerm: the command, and all its subcommands."""
        for i in (info, *info.subcommands.values()):
            if allow:
                perms.allowed.add(i.name)
            else:
                perms.allowed.discard(i.name)
                perms.allcommands = False
        perms.firstargs.pop(info.name, None)

    def _category(self, perms: Perms, category: bytes, allow: bool) -> None:
        for info in self.infos:  # (a container's change reaches its subcommands; then theirs)
            if category in info.categories:
                self._change(perms, info, allow)

    def compile(self, selector: Selector) -> Perms:
        perms = Perms()
        for op in selector.ops:
            self.apply(perms, op)
        return perms

    def in_category(self, category: bytes) -> list[bytes]:
        return [i.name.lower() for i in self.infos if category in i.categories]


def _describe_commands(perms: Perms, catalogue: Catalogue) -> bytes:
    """Redis ACLDescribeSelectorCommandRules: +@all or -@all, then the categories that fit
    best, then single commands until the rules give exactly ``perms``."""
    additive = not perms.future
    rules = [b"-@all" if additive else b"+@all"]
    fake = Perms()
    catalogue.apply(fake, rules[0])
    temp = perms.copy()
    applied: set[bytes] = set()
    while True:
        best, mindiff, maxsame = None, 1 << 62, 0
        for category in CATEGORIES:
            if category in applied:
                continue
            on = off = 0
            for info in catalogue.infos:
                if category in info.categories:
                    if info.name in temp.allowed:
                        on += 1
                    else:
                        off += 1
            diff, same = (off, on) if additive else (on, off)
            if same > diff and (diff < mindiff or (diff == mindiff and same > maxsame)):
                best, mindiff, maxsame = category, diff, same
        if best is None:
            break
        op = (b"+@" if additive else b"-@") + best
        catalogue.apply(fake, op)
        catalogue.apply(temp, (b"-@" if additive else b"+@") + best)
        rules.append(op)
        applied.add(best)
    for info in catalogue.infos:  # (ACLDescribeSelectorCommandRulesSingleCommands)
        mine = info.name in perms.allowed
        if mine != (info.name in fake.allowed):
            rules.append((b"+" if mine else b"-") + info.name.lower())
            catalogue._change(fake, info, mine)
        if not mine:
            rules += [b"+" + info.name.lower() + b"|" + a
                      for a in perms.firstargs.get(info.name, ())]
    return b" ".join(rules)


def _describe_selector(s: Selector, perms: Perms | None) -> bytes:
    parts = []
    keys = s.describe_keys()
    if keys:
        parts.append(keys)
    if s.allchannels:
        parts.append(b"&*")
    else:
        parts += [b"resetchannels"] + [b"&" + c for c in s.channels]
    parts.append(_describe_commands_text(s, perms))
    return b" ".join(parts)


def _describe_commands_text(s: Selector, perms: Perms | None) -> bytes:
    """The command rules as ACL LIST shows them; as written while no table is loaded."""
    return b" ".join(s.ops) if perms is None else perms.description


# -- the users, the log ------------------------------------------------------------------------
@dataclass(slots=True)
class LogEntry:
    count: int
    reason: bytes  # command, key, channel, auth
    context: bytes  # toplevel, multi
    object: bytes
    username: bytes
    ms: int  # when last seen
    client_info: bytes  # CLIENT LIST's line of the client, the last one seen


_DENIED_STATS = {b"auth": "acl_access_denied_auth", b"command": "acl_access_denied_cmd",
                 b"key": "acl_access_denied_key", b"channel": "acl_access_denied_channel"}


class AclLog:
    """ACL LOG (addACLLogEntry): newest first, at most ``max_len`` entries; each denial also
    counted in ``stats`` (INFO's acl_access_denied_*), which ACL LOG RESET does not reset."""

    def __init__(self, max_len: int = 128, stats: Stats | None = None) -> None:
        self.max_len = max_len
        self.stats = stats
        self.entries: deque[LogEntry] = deque()

    def add(self, reason: bytes, context: bytes, obj: bytes, username: bytes,
            client_info: bytes, now_ms: int) -> None:
        if self.stats is not None:
            name = _DENIED_STATS[reason]
            setattr(self.stats, name, getattr(self.stats, name) + 1)
        for i, e in enumerate(self.entries):
            if i >= 10:
                break
            if (e.reason == reason and e.context == context and e.object == obj
                    and e.username == username and abs(now_ms - e.ms) <= GROUPING_MS):
                del self.entries[i]
                e.count += 1
                e.ms, e.client_info = now_ms, client_info
                self.entries.appendleft(e)
                return
        self.entries.appendleft(LogEntry(1, reason, context, obj, username, now_ms,
                                         client_info))
        while len(self.entries) > self.max_len:
            self.entries.pop()

    def reply(self, count: int, now_ms: int, protocol: int) -> bytes:
        out = []
        for e in list(self.entries)[:max(count, 0)]:
            out.append(_map([
                (b"count", resp.integer(e.count)), (b"reason", resp.bulk(e.reason)),
                (b"context", resp.bulk(e.context)), (b"object", resp.bulk(e.object)),
                (b"username", resp.bulk(e.username)),
                (b"age-seconds", _double((now_ms - e.ms) / 1000, protocol)),
                (b"client-info", resp.bulk(e.client_info))], protocol))
        return resp.array(out)


def _map(pairs: list[tuple[bytes, bytes]], protocol: int) -> bytes:
    """A map of names to encoded values: RESP3's map, RESP2's flat array."""
    head = b"%%%d\r\n" % len(pairs) if protocol == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(resp.bulk(k) + v for k, v in pairs)


def _double(value: float, protocol: int) -> bytes:
    """Redis addReplyDouble: %.17g, as a bulk string in RESP2."""
    text = b"%.17g" % value
    return b",%s\r\n" % text if protocol == 3 else resp.bulk(text)


class Acl:
    """The users, by name (``default`` always among them), and the ACL log."""

    def __init__(self, users: dict[bytes, User], log_max_len: int = 128,
                 stats: Stats | None = None) -> None:
        self.users = users
        self.log = AclLog(log_max_len, stats)
        self._catalogue: Catalogue | None = None
        self._perms: dict[bytes, list[Perms] | None] = {}
        self._fast: dict[bytes, dict[bytes, CommandInfo]] = {}  # (``fast_table``)
        self.broken: dict[bytes, str] = {}  # users whose rules the table refused, and why

    @property
    def default(self) -> User:
        return self.users[b"default"]

    @property
    def auth_required(self) -> bool:
        """A new connection is not authenticated (Redis authRequired)."""
        d = self.default
        return not (d.nopass and d.enabled)

    def authenticate(self, name: bytes, password: bytes,
                     table: CommandTable | None) -> User | None:
        """The user, if ``password`` is one of its own (Redis ACLCheckUserCredentials); not
        one whose rules ``table`` (the cluster's, once loaded) refused."""
        if table is not None:
            self.catalogue(table)
        user = self.users.get(name)
        if user is None or name in self.broken or not user.password_ok(password):
            return None
        return user

    def catalogue(self, table: CommandTable) -> Catalogue:
        """The rules applied to ``table`` (again when the table is a new one)."""
        cat = self._catalogue
        if cat is None or cat.table is not table:
            cat = self._catalogue = Catalogue(table)
            self._perms = {}
            self._fast = {}
            self.broken = {}
            for name, user in self.users.items():
                try:
                    perms = [cat.compile(s) for s in user.selectors]
                except RuleError as exc:
                    self.broken[name] = str(exc)
                    self._perms[name] = None
                    continue
                for p in perms:
                    p.description = _describe_commands(p, cat)
                self._perms[name] = perms
        return cat

    def fast_table(self, user: User, table: CommandTable,
                   fast: dict[bytes, CommandInfo]) -> dict[bytes, CommandInfo]:
        """The one-key commands of ``fast`` (the session's inline path) that ``user`` may run
        on any key: its own rules allow the command, and ``~*``. Only those skip the check."""
        self.catalogue(table)
        mine = self._fast.get(user.name)
        if mine is None:
            perms = self._perms.get(user.name)
            mine = {}
            if perms is not None and user.root.allkeys:
                p = perms[0]
                mine = {name: info for name, info in fast.items()
                        if p.allcommands or info.name in p.allowed}
            self._fast[user.name] = mine
        return mine

    def perms(self, user: User, table: CommandTable) -> list[Perms] | None:
        self.catalogue(table)
        return self._perms.get(user.name)

    def check(self, user: User, info: CommandInfo, argv: list[bytes],
              table: CommandTable) -> tuple[int, int]:
        """(OK, 0), or the denial and the argument it is about (Redis's choice among the
        selectors: the command if none may run it, else the last key or channel none may
        touch). A user whose rules the table refused may run nothing."""
        cat = self._catalogue
        if cat is None or cat.table is not table:
            self.catalogue(table)
        perms = self._perms.get(user.name)
        if perms is None:
            return DENIED_CMD, 0
        ki = info.single_key
        if ki and len(argv) > ki and not info.key_specs[0].not_key:  # (the common case)
            keys: list[tuple[int, int]] = [(ki, info.key_specs[0].access)]
        elif (info.key_specs or info.keys_proc is not None) and not all(
                s.allkeys for s in user.selectors):
            keys = info.key_access(argv)
        else:
            keys = []
        relevant, last = DENIED_CMD, 0
        for s, p in zip(user.selectors, perms):
            result, pos = _check_selector(s, p, info, argv, keys)
            if result == OK:
                return OK, 0
            if result > relevant or (result == relevant and pos > last):
                relevant, last = result, pos
        return relevant, last

    def command(self, me: User, argv: list[bytes], table: CommandTable, protocol: int,
                now_ms: int) -> bytes:
        """ACL <subcommand>: the ones that read (SETUSER, DELUSER, LOAD and SAVE are
        refused by the caller: the users are the configuration's)."""
        sub = argv[1].upper()
        n = len(argv)
        if sub == b"WHOAMI" and n == 2:
            return resp.bulk(me.name)
        if sub in (b"LIST", b"USERS") and n == 2:
            names = sorted(self.users)
            if sub == b"USERS":
                return resp.encode_value(names)
            return resp.encode_value(
                [b"user " + u + b" " + self.users[u].describe(self.perms(self.users[u], table))
                 for u in names])
        if sub == b"GETUSER" and n == 3:
            user = self.users.get(argv[2])
            return resp.null(protocol) if user is None else self._getuser(user, table, protocol)
        if sub == b"CAT" and n == 2:
            return resp.encode_value(list(CATEGORIES))
        if sub == b"CAT" and n == 3:
            category = argv[2].lower()
            if category not in CATEGORIES:
                return errors.error_reply(b"ERR Unknown category '%s'" % argv[2][:128])
            return resp.encode_value(self.catalogue(table).in_category(category))
        if sub == b"LOG" and n in (2, 3):
            count = 10
            if n == 3:
                if argv[2].lower() == b"reset":
                    self.log.entries.clear()
                    return resp.OK
                parsed = resp.string2ll(argv[2])
                if parsed is None:
                    return errors.NOT_INTEGER
                count = max(parsed, 0)
            return self.log.reply(count, now_ms, protocol)
        if sub == b"GENPASS" and n in (2, 3):
            bits = 256
            if n == 3:
                parsed = resp.string2ll(argv[2])
                if parsed is None:
                    return errors.NOT_INTEGER
                bits = parsed
            if bits <= 0 or bits > 4096:
                return errors.error_reply(
                    b"ERR ACL GENPASS argument must be the number of bits for the output "
                    b"password, a positive number up to 4096")
            chars = (bits + 3) // 4
            return resp.bulk(secrets.token_hex((chars + 1) // 2)[:chars].encode())
        if sub == b"DRYRUN" and n >= 4:
            return self._dryrun(argv, table)
        if sub == b"HELP" and n == 2:
            return _HELP
        return errors.subcommand_syntax(b"ACL", argv[1])

    def _dryrun(self, argv: list[bytes], table: CommandTable) -> bytes:
        user = self.users.get(argv[2])
        if user is None:
            return errors.error_reply(b"ERR User '%s' not found" % argv[2])
        cmd = argv[3:]
        if cmd[0] not in table:
            return errors.error_reply(b"ERR Command '%s' not found" % argv[3])
        info = table.lookup(cmd)
        if info.subcommands and len(cmd) > 1 and cmd[1].upper() not in info.subcommands:
            return errors.error_reply(b"ERR Command '%s' not found" % argv[3])
        if (info.arity > 0 and info.arity != len(cmd)) or len(cmd) < -info.arity:
            return errors.error_reply(b"ERR wrong number of arguments for '%s' command"
                                      % info.name.lower())
        result, pos = self.check(user, info, cmd, table)
        if result == OK:
            return resp.OK
        if result == DENIED_CMD:
            text = b"This user has no permissions to run the '%s' command" % info.name.lower()
        elif result == DENIED_KEY:
            text = b"This user has no permissions to access the '%s' key" % cmd[pos]
        else:
            text = b"This user has no permissions to access the '%s' channel" % cmd[pos]
        return resp.bulk(text)

    def _getuser(self, user: User, table: CommandTable, protocol: int) -> bytes:
        perms = self.perms(user, table)

        def selector(i: int) -> list[tuple[bytes, bytes]]:
            s = user.selectors[i]
            return [(b"commands", resp.bulk(_describe_commands_text(
                        s, perms[i] if perms else None))),
                    (b"keys", resp.bulk(s.describe_keys())),
                    (b"channels", resp.bulk(s.describe_channels()))]

        flags = resp.encode_value(user.flags())
        if protocol == 3:  # (a set)
            flags = b"~" + flags[1:]
        subs = [_map(selector(i), protocol) for i in range(1, len(user.selectors))]
        return _map([(b"flags", flags), (b"passwords", resp.encode_value(user.passwords)),
                     *selector(0), (b"selectors", resp.array(subs))], protocol)


_HELP_LINES = [
    b"CAT [<category>]",
    b"    List all commands that belong to <category>, or all command categories",
    b"    when no category is specified.",
    b"DELUSER <username> [<username> ...]",
    b"    Delete a list of users.",
    b"DRYRUN <username> <command> [<arg> ...]",
    b"    Returns whether the user can execute the given command without executing the "
    b"command.",
    b"GETUSER <username>",
    b"    Get the user's details.",
    b"GENPASS [<bits>]",
    b"    Generate a secure 256-bit user password. The optional `bits` argument can",
    b"    be used to specify a different size.",
    b"LIST",
    b"    Show users details in config file format.",
    b"LOAD",
    b"    Reload users from the ACL file.",
    b"LOG [<count> | RESET]",
    b"    Show the ACL log entries.",
    b"SAVE",
    b"    Save the current config to the ACL file.",
    b"SETUSER <username> <attribute> [<attribute> ...]",
    b"    Create or modify a user with the specified attributes.",
    b"USERS",
    b"    List all the registered usernames.",
    b"WHOAMI",
    b"    Return the current connection username.",
    b"HELP",
    b"    Prints this help.",
]
_HELP = resp.array([resp.simple(b"ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands "
                                b"are:")] + [resp.simple(line) for line in _HELP_LINES])


def _check_selector(s: Selector, p: Perms, info: CommandInfo, argv: list[bytes],
                    keys: list[tuple[int, int]]) -> tuple[int, int]:
    """Redis ACLSelectorCheckCmd; ``keys``: the command's (position, READ|WRITE)."""
    if not p.allcommands and b"no_auth" not in info.flags and info.name not in p.allowed:
        allowed = p.firstargs.get(info.name)
        at = 2 if b"|" in info.name else 1
        if allowed is None or len(argv) <= at or argv[at].lower() not in allowed:
            return DENIED_CMD, 0
    if not s.allkeys:
        for pos, need in keys:
            key = argv[pos]
            for pattern, flags in s.keys:
                if (flags & need) == need and matcher(pattern)(key):
                    break
            else:
                return DENIED_KEY, pos
    spec = _CHANNELS.get(info.name)
    if spec is not None and not s.allchannels:
        first, last, pattern = spec
        stop = len(argv) if last < 0 else min(len(argv), last + 1)
        for pos in range(first, stop):
            channel = argv[pos]
            if not any((c == channel) if pattern else matcher(c)(channel)
                       for c in s.channels):
                return DENIED_CHANNEL, pos
    return OK, 0


def parse_users(lines: Iterable[str], source: str, requirepass: str = "",
                file: bool = False) -> dict[bytes, User]:
    """Users from ``user <name> <rules...>`` lines (an ACL file's: ``file``) or
    ``[user] <name> <rules...>`` (``[auth] users``), plus the default user
    (``on nopass ~* &* +@all``, or with ``requirepass`` as its password, unless a line
    defines it). Raises RuleError naming the line."""
    users: dict[bytes, User] = {}
    for lineno, line in enumerate(lines, 1):
        words = line.strip(" \t\r\n").encode().split(b" ")
        words = [w for w in words if w]
        if not words:
            continue
        where = f"{source}:{lineno}"
        if words[0] == b"user":
            words = words[1:]
        elif file:
            words = []
        if not words:
            raise RuleError(f"{where} should start with user keyword followed by the username")
        name = words[0]
        if _has_spaces(name):
            raise RuleError(f"{where}: username '{name.decode(errors='replace')}' contains "
                            "invalid characters")
        if name in users:
            raise RuleError(f"{where}: Duplicate user '{name.decode(errors='replace')}'")
        try:
            users[name] = User(name, [w.strip(b"\t\r\n") for w in words[1:]])
        except RuleError as exc:
            raise RuleError(f"{where}: {exc}") from None
    if b"default" in users:
        if requirepass:
            raise RuleError("auth.requirepass and a rule for the default user: set the "
                            "default user's password in its rule ('>...' or '#<sha256>')")
    else:
        default = users[b"default"] = User(b"default", [b"on", b"~*", b"&*", b"+@all"])
        default.set(b">" + requirepass.encode() if requirepass else b"nopass")
    return users
