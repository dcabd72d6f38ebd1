"""mailprov as a container build installs it: `pip install .` (a wheel, not an editable
install) into a fresh virtualenv, run from outside the checkout. Its `migrate`, `serve`
and `worker` must find their SQL in the installed package, and provision for real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.cli.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout, installed into a fresh virtualenv: its bin/."""
    base = tmp_path_factory.mktemp("package")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(base / "dist"), str(ROOT)],
                   check=True, timeout=300)
    wheel = next((base / "dist").glob("mailprov-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        schema = archive.read("service/core/sql/schema.sql").decode()
    assert {"service/core/sql/schema.sql", "service/core/sql/queries.sql"} <= names
    assert schema == (ROOT / "schema.sql").read_text()  # the content, not a link
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=600)
    return venv / "bin"


async def test_an_installed_wheel_migrates_serves_and_works(installed, settings, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"DATABASE_URL": settings.database_url.rsplit("/", 1)[0] + "/"
                + f"pkg_{port}", "REDIS_URL": settings.redis_url,
                "MAILPROV_REDIS_PREFIX": settings.redis_prefix, "PORT": str(port),
                "MAILPROV_HOST": "127.0.0.1", "MAILPROV_ARGON2_TIME_COST": "1",
                "MAILPROV_ARGON2_MEMORY_KIB": "1024", "MAILPROV_HASH_PROCESSES": "1"})
    mailprov = str(installed / "mailprov")

    def run(*argv: str) -> dict:
        done = subprocess.run([mailprov, "--json", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # a database of its own, which `migrate` creates
    assert run("migrate") == {"status": "migrated"}
    account = run("account", "create", "--name", "packaged")
    logs = tmp_path / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as files:
        procs = [await asyncio.create_subprocess_exec(
                     mailprov, command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                     stderr=files.enter_context((logs / f"{command}.log").open("w")))
                 for command in ("serve", "worker")]
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            key = account["key"]
            async with http.post(f"{base}/create/domain",
                                 json={"Domain": "packaged.example", "key": key}) as r:
                assert r.status == 200, await r.text()
                domain_task = (await r.json())["task_id"]
            assert (await _poll(http, f"{base}/get/task", key, domain_task))["status"] == \
                "completed"
            async with http.post(f"{base}/create/mailbox/single", json={
                    "Email_fullname": "john", "single_bulk": "single",
                    "Domain": "packaged.example", "Params": {}, "key": key}) as r:
                assert r.status == 200, await r.text()
                mailbox_task = (await r.json())["task_id"]
            done = await _poll(http, f"{base}/get/mailbox/single", key, mailbox_task)
            assert done["results"]["john@packaged.example"]["status"] == "Created successfully."
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
        admin = await asyncpg.connect(settings.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "pkg_{port}" WITH (FORCE)')
        finally:
            await admin.close()
    for command in ("serve", "worker"):
        assert "Traceback" not in (logs / f"{command}.log").read_text()


async def _poll(http: aiohttp.ClientSession, url: str, key: str, task_id: int) -> dict:
    for _ in range(300):
        async with http.get(url, params={"key": key, "task_id": task_id}) as r:
            body = await r.json()
            if body.get("status") not in ("queued", "processing"):
                assert r.status == 200, body
                return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish: {body}")
