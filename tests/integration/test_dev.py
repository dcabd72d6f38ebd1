"""`mailprov dev` on its embedded path: no URLs set, nothing on the ports it probes.

The machine's own servers are left alone: the command is told to look for local servers on
ports where nothing listens, so it starts its own.
"""

import asyncio
import os
import re
import signal
import sys

import aiohttp

from service.cli.embedded import free_port, port_open


async def _start(data_dir, port):
    # no secret key either: dev makes one for its data directory
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "MAILPROV_SECRET_KEY")}
    env["PORT"] = str(port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "dev", "--data-dir", str(data_dir),
        "--local-pg", str(free_port()), "--local-redis", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    banner = ""
    while "Ctrl-C" not in banner:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if not line:
            raise AssertionError((await proc.stderr.read()).decode()[-3000:])
        banner += line.decode()
    return proc, banner


async def _stop(proc):
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


async def _poll(session, url, key, task_id):
    for _ in range(300):
        async with session.get(f"{url}/api/v1/get/task",
                               params={"key": key, "task_id": task_id}) as r:
            task = await r.json()
        if task["status"] in ("completed", "failed"):
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(task)


async def test_dev_runs_everything_with_embedded_servers(tmp_path):
    port = free_port()
    proc, banner = await _start(tmp_path, port)
    try:
        url = re.search(r"running at (\S+)", banner).group(1)
        key = re.search(r"demo API key: (\w+)", banner).group(1)
        curl = re.search(r"(curl -X POST .*)", banner).group(1)
        assert url == f"http://127.0.0.1:{port}" and key in curl
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/create/domain",
                                    json={"Domain": "example.com", "Params": {},
                                          "key": key}) as r:
                assert r.status == 200, await r.text()
                domain_task = (await r.json())["task_id"]
            assert (await _poll(session, url, key, domain_task))["status"] == "completed"
            async with session.post(f"{url}/api/v1/create/mailbox/single",
                                    json={"Email_fullname": "john", "single_bulk": "single",
                                          "Domain": "example.com",
                                          "Params": {"password": "a supplied secret"},
                                          "key": key}) as r:
                assert r.status == 200, await r.text()
                mailbox_task = (await r.json())["task_id"]
            task = await _poll(session, url, key, mailbox_task)
            assert task["status"] == "completed", task
            assert task["results"]["john@example.com"]["status"] == "Created successfully."
    finally:
        logs = await _stop(proc)
    assert "embedded postgres" in logs
    assert not port_open("127.0.0.1", port)
    pg_port = re.search(r"postgresql://\S+:(\d+)/", logs)
    if pg_port:
        assert not port_open("127.0.0.1", int(pg_port.group(1)))

    # the secret key it made (it sealed john's password) is kept for its owner only
    secret = tmp_path / "secret-key"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text()) >= 32
    made = secret.read_text()

    # a second run reuses the data: same demo key and secret, the domain is still there
    proc, again = await _start(tmp_path, port)
    try:
        assert re.search(r"demo API key: (\w+)", again).group(1) == key
        async with aiohttp.ClientSession() as session, session.get(
                f"{url}/api/v1/list/domain", params={"key": key, "caller_id": 1}) as r:
            assert "example.com" in (await r.json())["results"]
    finally:
        await _stop(proc)
    assert secret.read_text() == made
