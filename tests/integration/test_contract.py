"""The README's command contract is generated from the command table; it must be current."""

from __future__ import annotations

from pathlib import Path

from rproxy.core.commands import CommandTable
from rproxy.tools.contract import fetch_command_reply, markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_command_contract_is_current(cluster) -> None:
    host, port = cluster.seeds[0]
    table = CommandTable.from_command_reply(fetch_command_reply(host, port))
    generated = markdown(table)
    assert generated in README.read_text(encoding="utf-8"), (
        "the command contract in README.md is out of date (or was made with another Redis "
        "version): regenerate it with  python -m rproxy.tools.contract --seed HOST:PORT --update README.md"
    )
    assert generated.count("\n") > 300  # every command and subcommand of Redis 7
