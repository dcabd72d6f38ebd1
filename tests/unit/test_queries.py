import inspect
import re

import pytest

from service.core.sql import QUERIES, parse_queries, read
from service.core.store import Store


def test_loader_splits_on_name_headers_and_drops_comments():
    text = "-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT $1\n  -- inline note\nFROM t;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "SELECT $1\nFROM t;"}


@pytest.mark.parametrize("text", ["-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;",
                                  "-- name: Bad-Name\nSELECT 1;", "-- name: empty\n-- only\n"])
def test_loader_refuses_duplicates_bad_names_and_empty_queries(text):
    with pytest.raises(ValueError):
        parse_queries(text)


def test_every_query_in_the_file_is_loaded():
    headers = re.findall(r"^-- name: (\w+)", read("queries.sql"), flags=re.MULTILINE)
    assert sorted(headers) == sorted(QUERIES)
    assert "resolve_key" in QUERIES


def _methods() -> dict[str, str]:
    """Each public method of the store, and its source."""
    return {name: inspect.getsource(member) for name, member in vars(Store).items()
            if inspect.iscoroutinefunction(member) and not name.startswith("_")}


def test_every_query_has_one_typed_method_and_every_method_a_query():
    methods = _methods()
    assert sorted(QUERIES) == sorted(methods), (
        f"queries without a method: {sorted(set(QUERIES) - set(methods))}; "
        f"methods without a query: {sorted(set(methods) - set(QUERIES))}")


def test_each_method_runs_the_query_of_its_own_name():
    for name, source in _methods().items():
        used = re.findall(r'self\._(?:rows|row|value|run|paged)\(\s*"(\w+)"', source)
        assert used == [name], f"Store.{name} runs {used}"


def test_the_checks_fail_on_a_query_without_its_method(monkeypatch):
    monkeypatch.setitem(QUERIES, "orphan", "SELECT 1")
    with pytest.raises(AssertionError):
        test_every_query_has_one_typed_method_and_every_method_a_query()
