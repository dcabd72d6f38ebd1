import re

import pytest

from service.db import QUERIES, QUERIES_FILE, parse_queries


def test_loader_splits_on_name_headers_and_drops_comments():
    text = "-- name: one\n-- why\nSELECT 1;\n\n-- name: two\nSELECT $1\n  -- inline note\nFROM t;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "SELECT $1\nFROM t;"}


@pytest.mark.parametrize("text", ["-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;",
                                  "-- name: Bad-Name\nSELECT 1;", "-- name: empty\n-- only\n"])
def test_loader_refuses_duplicates_bad_names_and_empty_queries(text):
    with pytest.raises(ValueError):
        parse_queries(text)


def test_every_query_in_the_file_is_loaded():
    headers = re.findall(r"^-- name: (\w+)", QUERIES_FILE.read_text(), flags=re.MULTILINE)
    assert sorted(headers) == sorted(QUERIES)
    assert "resolve_key" in QUERIES
