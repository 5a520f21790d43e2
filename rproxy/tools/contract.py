"""The command contract: for every command the backend knows, how rproxy routes it and what
happens when its keys span slots. Generated from the command table itself (the backend's
``COMMAND`` reply plus the proxy's rules), so the README cannot drift from the code.

    python -m rproxy.tools.contract --seed 127.0.0.1:7000            # print the Markdown table
    python -m rproxy.tools.contract --seed 127.0.0.1:7000 --update README.md
"""

from __future__ import annotations

import argparse
import re
import socket
import sys

import hiredis

from rproxy.core import local_commands
from rproxy.core.commands import CommandInfo, CommandTable, Route
from rproxy.core.emulate_reads import EMULATED
from rproxy.core.emulate_writes import EMULATED_WRITES
from rproxy.core.multi_pop import NAMES as POPS_OVER_SLOTS
from rproxy.core.planner import FANOUT_MERGES, SPLIT_NAMES
from rproxy.core.resp import encode_command

START = "<!-- command-contract:start -->"
END = "<!-- command-contract:end -->"

_MERGE_WORDS = {
    "merge_sum": "sum",
    "merge_concat": "concatenation",
    "merge_random_nonnull": "a random non-empty master",
    "merge_all_ok": "OK if all OK",
    "merge_same": "identical replies required",
    "merge_and": "AND per script",
    "merge_any_ok": "OK if any OK",
    "merge_slowlog": "newest first",
}


def _multi_key(info: CommandInfo) -> bool:
    if info.keys_proc is not None:
        return True
    specs = info.key_specs
    return len(specs) > 1 or any(s.fk_keynum or s.lastkey != 0 for s in specs)


_SPECIAL = {
    b"SCAN": ("every master in turn, one integer cursor", "-"),
    b"INFO": ("answered by rproxy; Keyspace summed over every master", "-"),
    b"MULTI": ("a transaction: queued by rproxy, run as one block on its slot's master",
               "CROSSSLOT inside a transaction"),
    b"EXEC": ("a transaction: queued by rproxy, run as one block on its slot's master",
              "CROSSSLOT inside a transaction"),
    b"DISCARD": ("answered by rproxy (the transaction is dropped)", "-"),
    b"WATCH": ("a leased connection to its keys' master, until EXEC", "CROSSSLOT"),
    b"UNWATCH": ("answered by rproxy (gives the leased connection back)", "-"),
    b"XREAD": ("its keys' slot; with BLOCK on a leased connection of its own",
               "split per slot, merged in order (without BLOCK)"),
    b"XREADGROUP": ("its keys' slot; with BLOCK on a leased connection of its own",
                    "CROSSSLOT"),
}


def describe(info: CommandInfo) -> tuple[str, str]:
    """(routing, across slots) for one command or subcommand."""
    r = info.route
    if info.name in _SPECIAL and r != Route.REFUSED:
        return _SPECIAL[info.name]
    if r == Route.LOCAL:
        if local_commands.handled(info.name):
            return "answered by rproxy", "-"
        if info.subcommands:
            return "answered by rproxy (see its subcommands)", "-"
        return f"refused: {local_commands.refusal(info.name)}", "-"
    if r == Route.LEASED:
        where = "its keys' slot, on a leased connection of its own"
        if info.name in POPS_OVER_SLOTS:
            return where, ('CROSSSLOT; served over several slots with '
                           '`cross_slot_transactions = "emulate"`')
        return where, "CROSSSLOT"
    if r == Route.REFUSED:
        return f"refused: {info.why}", "-"
    if r in (Route.ALL_MASTERS, Route.ALL_NODES):
        fn = FANOUT_MERGES.get(info.name)
        how = _MERGE_WORDS.get(getattr(fn, "__name__", ""), "merged")
        where = "every master" if r == Route.ALL_MASTERS else "every node (replicas too)"
        return f"{where}; {how}", "-"
    if r == Route.ANY or not info.key_specs and info.keys_proc is None:
        return "one master", "-"
    if not _multi_key(info):
        return "its key's slot", "-"
    if info.name in SPLIT_NAMES:
        return "its keys' slot", "split per slot, merged in order"
    if info.name in EMULATED:
        return "its keys' slot", "computed by rproxy from per-key reads"
    if info.name in EMULATED_WRITES:
        return "its keys' slot", 'CROSSSLOT; emulated in steps with `cross_slot_writes = "emulate"`'
    return "its keys' slot", "CROSSSLOT"


def rows(table: CommandTable) -> list[tuple[str, str, str]]:
    out = []
    for name in table.names():
        info = table.lookup([name])
        label = name.decode().lower()
        out.append((label, *describe(info)))
        for sub_name, sub in sorted(info.subcommands.items()):
            out.append((f"{label} {sub_name.decode().lower()}", *describe(sub)))
    return out


def markdown(table: CommandTable) -> str:
    lines = [
        START,
        "| command | routing | keys in several slots |",
        "|---|---|---|",
    ]
    lines += [f"| `{c}` | {r} | {x} |" for c, r, x in rows(table)]
    lines.append(END)
    return "\n".join(lines)


def update(text: str, table_md: str) -> str:
    """Replace the generated section of a README with ``table_md``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {START} ... {END} section")
    return pattern.sub(lambda _m: table_md, text)


def fetch_command_reply(host: str, port: int, timeout_s: float = 5.0) -> list[object]:
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(encode_command([b"COMMAND"]))
        reader = hiredis.Reader()
        while True:
            data = s.recv(1 << 20)
            if not data:
                raise ConnectionError("connection closed")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                return reply  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rproxy.tools.contract", description=__doc__)
    p.add_argument("--seed", required=True, metavar="HOST:PORT", help="a Redis 7 node")
    p.add_argument("--update", metavar="FILE", help="rewrite the generated section of FILE")
    args = p.parse_args(argv)
    host, _, port = args.seed.rpartition(":")
    table = CommandTable.from_command_reply(fetch_command_reply(host, int(port)))
    md = markdown(table)
    if args.update:
        with open(args.update, encoding="utf-8") as fh:
            text = fh.read()
        with open(args.update, "w", encoding="utf-8") as fh:
            fh.write(update(text, md))
    else:
        sys.stdout.write(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
