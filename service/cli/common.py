"""What every `mailprov` command shares: how it is declared, how it prints, how it fails."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

# `--json` may come before the command or after it (`mailprov --json tasks list`,
# `mailprov tasks list --json`): the top-level parser declares it with a default, and each
# command again with SUPPRESS, so a command's parser leaves an earlier --json standing
JSON_FLAG = argparse.ArgumentParser(add_help=False)
JSON_FLAG.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print JSON, for scripts")

Run = Callable[[argparse.Namespace, Any], None]


class CommandError(Exception):
    """A command could not do what was asked; the message says why."""


def command(parent: Any, name: str, run: Run, text: str,
            parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Declare the command `name` on `parent` (a subparsers object), run by `run(args,
    settings)`."""
    p: argparse.ArgumentParser = parent.add_parser(name, help=text,
                                                   parents=[JSON_FLAG, *(parents or [])])
    p.set_defaults(run=run, usage_error=p.error)
    return p


def group(parent: Any, name: str, text: str, dest: str = "action") -> Any:
    """A command that only holds subcommands (`mailprov key create|revoke`)."""
    return parent.add_parser(name, help=text).add_subparsers(dest=dest, required=True)


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)
