"""The rooms keep their doors: the core and the worker never reach the web or the CLI (nor
aiohttp's server), the SDK imports nothing of the server, and no module imports another
that imports it back, however indirectly. Imports inside functions count too: a lazy
import is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "worker")

# room -> what it may never reach, directly or through other modules
FORBIDDEN = {
    "service.core": ("service.web", "service.cli", "worker", "aiohttp"),
    "worker": ("service.web", "service.cli", "aiohttp.web"),
    "service.client": ("service.core", "service.web", "service.cli", "worker"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(source: str, module: str, known: Iterable[str]) -> set[str]:
    """Every module `source` imports, anywhere in it. `from a import b` names `a.b` when
    that is a module of ours (`from service.web import idempotency`), else `a`; `from
    aiohttp import web` names `aiohttp.web`, so the server is told from the client."""
    known = set(known)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: mailprov imports are absolute"
            base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known or base == "aiohttp" else base)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: imports_of(path.read_text(), name, modules) for name, path in modules.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def boundary_breaches(edges: dict[str, set[str]]) -> list[str]:
    """Each (room module, forbidden module) it reaches, with the path that reaches it."""
    breaches = []
    for start in edges:
        rooms = [r for r in FORBIDDEN if _within(start, r)]
        if not rooms:
            continue
        banned = tuple(b for r in rooms for b in FORBIDDEN[r])
        paths = {start: [start]}
        todo = [start]
        while todo:
            current = todo.pop()
            for target in edges.get(current, ()):
                if target in paths:
                    continue
                paths[target] = [*paths[current], target]
                if any(_within(target, b) for b in banned):
                    breaches.append(" -> ".join(paths[target]))
                elif target in edges:
                    todo.append(target)
    return breaches


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of our modules that import each other (Tarjan's strongly connected
    components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in edges:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                found.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_core_and_the_worker_never_reach_the_web_or_the_cli():
    assert boundary_breaches(graph()) == []


def test_no_module_imports_another_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_checks_see_a_breach_and_a_cycle_made_on_purpose():
    edges = graph()
    # the worker reaching the web through a core module, as worker/jobs.py once did
    edges["service.core.tasks"] = {*edges["service.core.tasks"], "service.web.api.tasks"}
    assert any(b.endswith("service.web.api.tasks") and b.startswith("worker.jobs")
               for b in boundary_breaches(edges))
    edges = graph()
    # cli <-> dev, as the layout once had it
    edges["service.cli.admin"] = {*edges["service.cli.admin"], "service.cli.dev"}
    edges["service.cli.dev"] = {*edges["service.cli.dev"], "service.cli.admin"}
    assert ["service.cli.admin", "service.cli.dev"] in cycles(edges)


def test_imports_are_read_from_every_kind_of_import_statement():
    known = {"service.web", "service.web.idempotency", "service.core.db"}
    source = ("import service.core.db\nfrom aiohttp import web\nfrom service.web import "
              "idempotency\n\ndef later():\n    from service.web.idempotency import run\n")
    assert imports_of(source, "worker.x", known) == {
        "service.core.db", "aiohttp.web", "service.web.idempotency"}
