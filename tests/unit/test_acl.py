"""rproxy/core/acl.py and rproxy/core/glob.py with plain values: rule parsing and Redis's
errors, which users are restricted, the checks against a small command table, the log's
grouping, and Redis's glob patterns. (Byte-for-byte against redis-server:
tests/integration/test_acl.py.)"""

from __future__ import annotations

import pytest

from rproxy.core import acl, resp
from rproxy.core.acl import Acl, RuleError, User, merge_selectors, parse_users
from rproxy.core.commands import CommandInfo, CommandTable, KeySpec
from rproxy.core.glob import matcher, to_regex


def _cmd(name: str, *cats: str, specs: tuple[KeySpec, ...] = (), arity: int = -2,
         subs: tuple[CommandInfo, ...] = (), flags: tuple[str, ...] = ()) -> CommandInfo:
    info = CommandInfo(name=name.upper().encode(), arity=arity, key_specs=specs,
                       categories=frozenset(c.encode() for c in cats),
                       flags=frozenset(f.encode() for f in flags))
    for s in subs:
        info.subcommands[s.name.split(b"|")[1]] = s
    return info


READ_KEY = KeySpec(bs_index=1, access=1)
WRITE_KEY = KeySpec(bs_index=1, access=2)
TABLE = CommandTable([
    _cmd("get", "read", "string", "fast", specs=(READ_KEY,), arity=2),
    _cmd("set", "write", "string", "slow", specs=(WRITE_KEY,), arity=-3),
    _cmd("lmove", "write", "list", "slow", arity=6,
         specs=(KeySpec(bs_index=1, access=3), KeySpec(bs_index=2, access=2))),
    _cmd("flushall", "keyspace", "write", "slow", "dangerous"),
    _cmd("config", "slow", subs=(_cmd("config|get", "admin", "slow", "dangerous"),
                                 _cmd("config|set", "admin", "slow", "dangerous"))),
    _cmd("select", "fast", "connection", arity=2),
    _cmd("publish", "pubsub", "fast", arity=3),
    _cmd("psubscribe", "pubsub", "slow"),
    _cmd("spublish", "pubsub", "fast", arity=3, specs=(KeySpec(bs_index=1, access=0,
                                                                not_key=True),)),
    _cmd("auth", "fast", "connection", flags=("no_auth",)),
])


def _check(user: User, *words: str) -> tuple[int, int]:
    argv = [w.encode() for w in words]
    return Acl({user.name: user, b"default": User(b"default", [b"on", b"nopass"])}).check(
        user, TABLE.lookup(argv), argv, TABLE)


def _user(rules: str, name: bytes = b"u") -> User:
    return User(name, [r.encode() for r in rules.split()])


def test_commands_keys_and_channels_are_checked_as_redis() -> None:
    u = _user("on ~app:* %R~ro:* &news.* +@read +set -@dangerous +config|get +select|0 "
              "+publish +psubscribe +spublish")
    assert _check(u, "GET", "app:1") == (acl.OK, 0)
    assert _check(u, "GET", "ro:1") == (acl.OK, 0)
    assert _check(u, "SET", "ro:1", "v") == (acl.DENIED_KEY, 1)  # %R~: reads only
    assert _check(u, "GET", "other") == (acl.DENIED_KEY, 1)
    assert _check(u, "LMOVE", "app:a", "app:b", "LEFT", "LEFT") == (acl.DENIED_CMD, 0)
    assert _check(u, "FLUSHALL") == (acl.DENIED_CMD, 0)
    assert _check(u, "CONFIG", "GET", "x") == (acl.OK, 0)
    assert _check(u, "CONFIG", "SET", "x", "y") == (acl.DENIED_CMD, 0)
    assert _check(u, "SELECT", "0") == (acl.OK, 0)  # a first argument of its own
    assert _check(u, "SELECT", "1") == (acl.DENIED_CMD, 0)
    assert _check(u, "PUBLISH", "news.x", "m") == (acl.OK, 0)
    assert _check(u, "PUBLISH", "sports", "m") == (acl.DENIED_CHANNEL, 1)
    assert _check(u, "SPUBLISH", "sports", "m") == (acl.DENIED_CHANNEL, 1)  # not a key
    assert _check(u, "PSUBSCRIBE", "news.*") == (acl.OK, 0)  # a pattern: literally hers
    assert _check(u, "PSUBSCRIBE", "news.x*") == (acl.DENIED_CHANNEL, 1)
    assert _check(_user("off"), "AUTH", "x") == (acl.OK, 0)  # no-auth: always


def test_selectors_allow_what_any_of_them_allows() -> None:
    u = _user("on ~app:* +set (~x:* +get) (%W~w:* +lmove)")
    assert _check(u, "SET", "app:1", "v") == (acl.OK, 0)
    assert _check(u, "GET", "x:1") == (acl.OK, 0)
    assert _check(u, "GET", "app:1") == (acl.DENIED_KEY, 1)  # the later selector's key
    assert _check(u, "SET", "x:1", "v") == (acl.DENIED_KEY, 1)
    assert _check(u, "LMOVE", "w:1", "w:2", "LEFT", "LEFT") == (acl.DENIED_KEY, 1)  # reads w:1
    assert _check(u, "FLUSHALL") == (acl.DENIED_CMD, 0)


def test_restricted_is_anything_short_of_every_key_channel_and_command() -> None:
    assert not _user("on nopass ~* &* +@all").restricted
    assert not _user("on allkeys allchannels allcommands +get").restricted
    assert _user("on ~* &* +@all -flushall").restricted
    assert _user("on ~* +@all").restricted  # no channels
    assert _user("on ~* &* -@all +@read").restricted
    assert not _user("on ~* &* -@all +@all").restricted


@pytest.mark.parametrize(("rules", "message"), [
    ("on junk", "Syntax error"),
    ("on +@nope", "Unknown command or category"),
    ("on #abc", "64 characters"),
    ("on ~* ~app:*", "Try 'resetkeys'"),
    ("on &* &x", "Try 'resetchannels'"),
    ("on <never", "does not exist"),
    ("on %X~k", "Syntax error"),
])
def test_rule_errors_are_redis_s(rules: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        _user(rules)


def test_unknown_commands_are_found_against_the_table() -> None:
    users = {b"u": _user("on >pw ~* +gett"), b"default": _user("on nopass ~* &* +@all")}
    a = Acl(users)
    assert a.authenticate(b"u", b"pw", None) is users[b"u"]  # (no table yet: not known)
    assert a.authenticate(b"u", b"pw", TABLE) is None
    assert a.broken == {b"u": "Unknown command or category name in ACL"}
    assert a.check(users[b"u"], TABLE.lookup([b"GET", b"k"]), [b"GET", b"k"], TABLE) == (
        acl.DENIED_CMD, 0)


def test_passwords_users_and_the_default_user() -> None:
    users = parse_users(["alice on >pw #" + "a" * 64 + " ~* +@all", "user bob off >pw"], "t")
    a = Acl(users)
    assert a.authenticate(b"alice", b"pw", TABLE) is users[b"alice"]
    assert a.authenticate(b"alice", b"nope", TABLE) is None
    assert a.authenticate(b"bob", b"pw", TABLE) is None  # off
    assert a.authenticate(b"default", b"anything", TABLE) is users[b"default"]  # nopass
    assert not a.auth_required
    assert Acl(parse_users([], "t", requirepass="s3")).auth_required
    assert users[b"alice"].passwords[0] == acl.hash_password(b"pw")
    assert users[b"alice"].describe(None).startswith(b"on #" + acl.hash_password(b"pw"))


def test_merge_selectors_as_redis() -> None:
    assert merge_selectors([b"on", b"(~a", b"+get)", b"(+set)"]) == [b"on", b"(~a +get)",
                                                                    b"(+set)"]
    with pytest.raises(RuleError, match="Unmatched parenthesis"):
        merge_selectors([b"(~a", b"+get"])


def test_describe_starts_from_all_or_nothing_then_categories_then_commands() -> None:
    a = Acl({b"u": _user("on ~* -@all +@write -flushall"),
             b"v": _user("on ~* +@all -@dangerous", b"v"),
             b"default": _user("on nopass")})
    perms = a.perms(a.users[b"u"], TABLE)
    # (the category with no difference first: @list is LMOVE alone; then SET by itself)
    assert perms is not None and perms[0].description == b"-@all +@list +set"
    perms = a.perms(a.users[b"v"], TABLE)
    assert perms is not None and perms[0].description == b"+@all -@dangerous"


def test_the_log_groups_like_denials_and_keeps_the_newest() -> None:
    log = acl.AclLog(max_len=2)
    log.add(b"key", b"toplevel", b"k", b"u", b"id=1", 1000)
    log.add(b"key", b"toplevel", b"k", b"u", b"id=2", 2000)  # the same: counted
    assert [(e.count, e.client_info) for e in log.entries] == [(2, b"id=2")]
    log.add(b"key", b"toplevel", b"k", b"u", b"id=3", 2000 + acl.GROUPING_MS + 1)  # too late
    log.add(b"command", b"multi", b"get", b"u", b"id=4", 70000)
    assert [e.count for e in log.entries] == [1, 1]  # two kept, the newest first
    reply = resp.parse_reply(log.reply(10, 71500, 2))
    assert reply[0][:10] == [b"count", 1, b"reason", b"command", b"context",  # type: ignore
                             b"multi", b"object", b"get", b"username", b"u"]
    assert reply[0][11] == b"1.5"  # type: ignore[index]


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    (b"app:*", [b"app:", b"app:1:2"], [b"ap", b"xapp:1"]),
    (b"h?llo", [b"hello", b"hallo"], [b"hllo", b"heello"]),
    (b"h[ae]llo", [b"hello", b"hallo"], [b"hillo"]),
    (b"h[^e]llo", [b"hallo"], [b"hello"]),
    (b"h[a-c]llo", [b"hbllo"], [b"hdllo"]),
    (b"h[c-a]llo", [b"hbllo"], [b"hdllo"]),  # a backward range, swapped
    (b"a\\*b", [b"a*b"], [b"axb"]),
    (b"a[\\]]b", [b"a]b"], [b"a\\b"]),
    (b"x.y", [b"x.y"], [b"xzy"]),  # not a regular expression
    (b"*", [b"", b"\n"], []),
    (b"a*", [b"a\nb"], []),
])
def test_glob_patterns_as_redis(pattern: bytes, yes: list[bytes], no: list[bytes]) -> None:
    m = matcher(pattern)
    assert all(m(s) for s in yes), to_regex(pattern)
    assert not any(m(s) for s in no), to_regex(pattern)
