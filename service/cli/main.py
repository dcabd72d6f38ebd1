"""`mailprov`: one entry point for every process type and for operators.

Every command prints a short human line, or one JSON document with `--json` (before or
after the command).
"""

from __future__ import annotations

import argparse
import json
import sys

from service.cli import admin, api, mailstack, ops
from service.cli.common import CommandError
from service.core.logs import configure_logging
from service.core.settings import Settings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mailprov", description=__doc__)
    top.add_argument("--json", action="store_true", help="print JSON, for scripts")
    sub = top.add_subparsers(dest="command", required=True)
    admin.add_commands(sub)  # the process types, accounts and keys
    api.add_commands(sub)  # `create ...`, `task`: the API client
    ops.add_commands(sub)  # `queue`, `tasks`: for operators
    mailstack.add_commands(sub)  # `mailstack config`, `mailstack dkim`
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        configure_logging(settings.log_format, settings.log_level)
    except ValueError as exc:  # a setting named, as a bad number is (Settings.from_env)
        raise SystemExit(f"setting {exc}") from None
    try:
        args.run(args, settings)
    except CommandError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"mailprov: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
