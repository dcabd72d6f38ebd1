"""The SQL mailprov runs, shipped as package data: `schema.sql` (all DDL, idempotent),
`queries.sql` (every statement, under `-- name: <name>` headers) and `paging.sql` (the
keyset paging that wraps a listing query, filled in by the store).

Both are read with importlib.resources, so an installed wheel finds them as a checkout
does. `schema.sql` here is a link to the one at the top of the repository, where readers
look for it; building a wheel copies its content in.
"""

from __future__ import annotations

import re
from importlib.resources import files

NAME = re.compile(r"[a-z_][a-z0-9_]*")


def read(name: str) -> str:
    """The text of one of this package's .sql files."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def without_comments(text: str) -> str:
    """SQL without its whole-line `--` comments."""
    return "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("--")
    ).strip()


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file on `-- name: x` headers into {name: statement}."""
    queries: dict[str, str] = {}
    for chunk in re.split(r"^--\s*name:\s*", text, flags=re.MULTILINE)[1:]:
        name, _, body = chunk.partition("\n")
        name = name.strip()
        if not NAME.fullmatch(name):
            raise ValueError(f"bad query name {name!r}")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        statement = without_comments(body)
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = statement
    return queries


QUERIES = parse_queries(read("queries.sql"))
PAGING = without_comments(read("paging.sql"))
SCHEMA = read("schema.sql")
