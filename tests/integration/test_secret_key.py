"""MAILPROV_SECRET_KEY is required: `serve` and `worker` refuse to start without a usable
one, with a line that says how to make one, and no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(("value", "said"), [("", "is not set"),
                                             ("too-short", "is shorter than 32 characters")])
def test_serve_and_worker_refuse_to_start_without_a_secret_key(settings, command, value,
                                                               said):
    env = {**os.environ, "DATABASE_URL": settings.database_url,
           "REDIS_URL": settings.redis_url, "MAILPROV_REDIS_PREFIX": settings.redis_prefix,
           "MAILPROV_SECRET_KEY": value}
    done = subprocess.run([sys.executable, "-m", "service.cli", command], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"mailprov: MAILPROV_SECRET_KEY {said}" in done.stderr
    assert "secrets.token_urlsafe(32)" in done.stderr and "Traceback" not in done.stderr
