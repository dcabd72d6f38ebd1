"""A small run of the fault-injection suite (bench/chaos.py --quick): real processes, its
own Postgres and Redis, every kind of fault; nothing accepted may be lost, duplicated or
stuck."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.settings import Settings

# the fault tests time recovery: one runner takes them all, one after another, so two
# of them never share the cores (pytest-xdist's loadgroup)
pytestmark = pytest.mark.xdist_group("faults")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_a_quick_fault_injection_run_loses_nothing():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=280,
                          check=False)
    assert done.stdout, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["lost"], report["duplicated"], report["stuck"]) == (0, 0, 0), \
        report["problems"]
    assert all(n >= 1 for n in report["faults_injected"].values()), report["faults_injected"]
    assert report["tasks_accepted"] == report["tasks_planned"], report["requests_refused"]
    assert report["idempotency"]["keys_with_more_than_one_task_id"] == 0
    assert report["idempotency"]["refused_422"] == report["idempotency"][
        "reused_with_another_body"]
    assert report["settled_after_last_fault_s"] <= 60
    # recovery ran on the defaults: job timeout, grace, heartbeat, sweeper
    assert report["recovery_settings"]["worker_job_timeout_s"] == 300
    assert report["recovery_settings"] == {
        name: getattr(Settings, name) for name in report["recovery_settings"]}
    assert done.returncode == 0, done.stderr[-3000:]
