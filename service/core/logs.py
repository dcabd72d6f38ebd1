"""Structured logs: one JSON object per line, from the web and worker processes alike.

Every line carries what is known of where it comes from (request id, account id, task id,
job): code binds those into a context variable once, at the start of a request or job,
and every line logged within it gets them. A redaction guard runs on every line as it
leaves, so a key, a password or a hash never reaches a log even if some code passes one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import IO, Any

# Never mutated in place: `bind` and `scope` set a new dict, so a request or job sees only
# what it (or its caller) bound, and asyncio tasks started within inherit a snapshot.
_context: ContextVar[Mapping[str, Any]] = ContextVar("mailprov_log_context",
                                                     default=MappingProxyType({}))

REDACTED = "[redacted]"
# a field with such a name never shows its value, whatever it holds: in a log line, or in a
# task's payload on the ops page and in `mailprov tasks show`
SECRET_FIELD = re.compile(r"pass|secret|token|key|hash|authorization|cookie", re.IGNORECASE)
# what a secret looks like when it turns up inside a message or a traceback. Runs of
# letters and digits are bounded by lookarounds, not \b: `_` is a word character, so
# `?key=<KEY>_` has no word boundary after the key. A run may hold %XX escapes (a key
# percent-encoded in a raw request line is still a key).
_ALNUM = r"(?:[A-Za-z0-9]|%[0-9A-Fa-f]{2})"
SECRET_SHAPES = re.compile(
    # a Dovecot hash: {ARGON2ID}$argon2id$..., {SHA512-CRYPT}$6$...
    r"\{[A-Z0-9][A-Z0-9._-]*\}[^\s\"'\\]+"
    r"|\$(?:argon2(?:id|i|d)|2[abxy]|[156]|y|gy|7)\$[^\s\"'\\]+"  # a crypt(3)-style hash
    # an API key (32 letters and digits), wherever it sits and whatever follows it: any
    # run of 32 or more, unless exactly 32 of plain lowercase hex (a request id). This
    # also covers a SHA-256 digest, as API keys are stored.
    rf"|(?<![A-Za-z0-9%])(?![0-9a-f]{{32}}(?![A-Za-z0-9%])){_ALNUM}{{32,}}"
    # a generated password: a run of 20 or more mixing cases and digits (a class name
    # has no digit)
    r"|(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])"
    r"[A-Za-z0-9]{20,}(?![A-Za-z0-9])"
)
# what every match of SECRET_SHAPES contains: a `{` before a capital or digit, a `$`, or a
# run of 20 or more letters, digits and `%` (a key's 32 units, escaped or not, and a
# password's 20). Text without one is passed over at the cost of one quick scan; the full
# pattern, with its lookarounds at every word, costs ten times more.
CANDIDATE = re.compile(r"\{[A-Z0-9]|\$|[A-Za-z0-9%]{20}")
# loggers of libraries that log what clients send (aiohttp quotes a malformed request's
# raw bytes): their records are redacted as they are made, whatever handles them later
LIBRARY_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "aiohttp.internal",
                   "aiohttp.client", "asyncio")


def redact(text: str) -> str:
    """`text` with anything shaped like a key, a generated password or a hash replaced."""
    return SECRET_SHAPES.sub(REDACTED, text) if CANDIDATE.search(text) else text


@lru_cache(maxsize=1024)
def secret_name(name: str) -> bool:
    """Whether a field of this name never shows its value (few names recur: cached)."""
    return SECRET_FIELD.search(name) is not None


class Redacting(logging.Filter):
    """Redacts a record in place: its message with its arguments, and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def bind(**fields: Any) -> None:
    """Add fields to every line logged from here to the end of the current request or job."""
    _context.set({**_context.get(), **fields})


def current() -> dict[str, Any]:
    """The fields bound so far."""
    return dict(_context.get())


@contextmanager
def scope(**fields: Any) -> Iterator[None]:
    """A fresh context for one request or job: nothing bound before leaks in or out."""
    token = _context.set(dict(fields))
    try:
        yield
    finally:
        _context.reset(token)


# what every LogRecord has; the rest of a record's attributes are its `extra`
STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime",
                                                                      "taskName"}
# values that cannot hold a secret as they are
_PLAIN = (int, float, bool, type(None))


class JsonLines(logging.Formatter):
    """`{"time": ..., "level": ..., "logger": ..., "message": ..., <extra>, <context>}`.

    Each text value is redacted on its own, before it is encoded (a secret after an
    escaped newline is still found), and a field with a secret's name shows none. A line
    is written on every request, so this is kept lean: one dict and one json.dumps."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        for name, value in vars(record).items():
            if name not in STANDARD_ATTRIBUTES:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        line["time"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        for name, value in _context.get().items():
            line.setdefault(name, value)
        nested = False
        for name, value in line.items():
            if isinstance(value, str):
                line[name] = REDACTED if secret_name(name) else redact(value)
            elif not isinstance(value, _PLAIN):
                nested = True
                if secret_name(name):
                    line[name] = REDACTED
            elif value is not None and secret_name(name):
                line[name] = REDACTED
        text = json.dumps(line, ensure_ascii=False, default=str)
        # a list or an object given as an extra is redacted as encoded
        return redact(text) if nested else text


class TextLines(logging.Formatter):
    """For a person at a terminal: the usual line, then the context and extras as k=v."""

    STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = {**_context.get(),
                  **{k: v for k, v in vars(record).items() if k not in self.STANDARD}}
        shown = " ".join(f"{k}={REDACTED if secret_name(k) else v}"
                         for k, v in fields.items() if v is not None)
        return redact(super().format(record) + (f" [{shown}]" if shown else ""))


def handler(log_format: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing lines in `log_format` ("json" or "text") to `stream` (stderr)."""
    if log_format not in ("json", "text"):
        raise ValueError(f"MAILPROV_LOG_FORMAT={log_format!r} is not json or text")
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonLines() if log_format == "json" else TextLines())
    return out


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    """Send every logger's lines of `level` and above to stderr in `log_format`; for the
    processes' entry point.

    Like `logging.basicConfig`, it leaves logging alone where something configured it
    already (a test run calling `main()`, a program embedding mailprov), but the
    libraries' loggers are guarded in any case."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, Redacting) for f in library.filters):
            library.addFilter(Redacting())
    if level not in LEVELS:
        raise ValueError(f"MAILPROV_LOG_LEVEL={level!r} is not one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    if root.handlers:
        return
    # neither format shows where a line was logged from, nor its thread or process: the
    # logging module need not look them up on every line (its HOWTO, "Optimization")
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.addHandler(handler(log_format))
    root.setLevel(level)
