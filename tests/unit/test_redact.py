"""The log guard's quick scan (logs.CANDIDATE) never lets a secret through that the full
pattern would have caught, and the JSON lines redact each value before encoding it."""

import json
import logging
import random
import string

from service.core import logs

KEY = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
SAMPLES = [
    f"GET /api/v1/get/task?key={KEY}&task_id=1",
    f"key={KEY}_",
    f"key={KEY[:10]}%41{KEY[10:]}",                      # percent-escaped
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA",
    "$6$salt$hashed",
    "password Xy7abcdefghijklmnopq2",                      # a generated password's shape
    "request 0123456789abcdef0123456789abcdef",          # a request id: not a secret
    "plain words only",
]


def test_the_quick_scan_changes_nothing_the_full_pattern_finds() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "%{}$_-./?=& \n\"'\\"
    texts = SAMPLES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
                       for _ in range(5000)]
    for text in texts:
        assert logs.redact(text) == logs.SECRET_SHAPES.sub(logs.REDACTED, text), text


def test_a_json_line_redacts_each_value_and_secret_names() -> None:
    record = logging.makeLogRecord({
        "name": "mailprov.web", "levelname": "INFO", "msg": "seen %s", "args": (f"\n{KEY}",),
        "client": "127.0.0.1", "api_token": "short", "status": 200,
        "nested": {"k": KEY}})
    line = json.loads(logs.JsonLines().format(record))
    assert KEY not in json.dumps(line)
    assert line["message"] == f"seen \n{logs.REDACTED}"  # after an escaped newline too
    assert line["api_token"] == logs.REDACTED and line["status"] == 200
    assert line["client"] == "127.0.0.1" and line["level"] == "INFO" and line["time"]
