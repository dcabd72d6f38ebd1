"""Fuzzing in CI: schemathesis against the live `/api/v1/openapi.json` of a real
`mailprov serve` and `mailprov worker` (real Postgres and Redis), with a valid key.

Every operation of the document is tried (its examples, the coverage of each schema's
boundaries, random data, and stateful sequences that feed one answer's ids into the next
request), so a route added to the table, which documents itself, is fuzzed from then on.
No answer may be a 5xx, and every answer must match the document: a documented status,
its content type, its required headers, its body schema.

The seed is new each run, so each run tries other cases; a failure prints the seed and a
curl line that reproduces it. MAILPROV_FUZZ_EXAMPLES (default 100) sets the cases per
operation and phase: the default runs ~2,400 cases in about a minute on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from tests.integration.test_recovery import WorkerProcess
from tests.integration.test_served import serving

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
UNLIMITED = str(10**9)
# rate limits would make most answers 429s: documented, but they test nothing else
ENV = {f"MAILPROV_RATE_{bucket}": UNLIMITED
       for bucket in ("CREATE_DOMAIN", "CREATE_MAILBOX_SINGLE", "CREATE_MAILBOX_BULK", "GET")}


@pytest.mark.timeout(900)
async def test_fuzzing_the_live_document_finds_no_5xx_and_no_mismatch(make, settings,
                                                                       tmp_path: Path):
    _, key = await make.account("fuzz")
    # the documented examples name example.com: it exists, with a mailbox and tasks
    await make.domain(key)
    await make.post("create_mailbox_single", {"Email_fullname": "john", "single_bulk": "single",
                                              "Domain": "example.com", "Params": {}}, key)
    await make.run_worker()
    seed = secrets.randbelow(2**31)
    report = tmp_path / "report.json"
    worker = WorkerProcess(settings, tmp_path / "worker.log", **ENV)
    try:
        async with serving(settings, tmp_path / "serve.log", **ENV) as served:
            st = Path(sys.executable).parent / "st"
            proc = await asyncio.create_subprocess_exec(
                str(st), "run", f"http://127.0.0.1:{served.port}/api/v1/openapi.json",
                "--header", f"Authorization: Bearer {key}", "--checks", ",".join(CHECKS),
                "--max-examples", os.environ.get("MAILPROV_FUZZ_EXAMPLES", "100"),
                # one worker: CPython 3.11's ast is not safe across schemathesis' threads
                "--workers", "1", "--seed", str(seed), "--request-timeout", "30",
                "--report", "json", "--report-json-path", str(report),
                "--warnings", "off", "--no-color",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                cwd=tmp_path)
            out, _ = await asyncio.wait_for(proc.communicate(), 840)
            serve_log = served.log()
    finally:
        worker.stop()
    output = out.decode(errors="replace")
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(f"schemathesis (seed {seed}): {cases['generated']} cases over "
          f"{result['operations']['tested']} operations in {result['running_time']:.0f} s")
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10, output
    assert cases["generated"] > 1000, output
    assert result["failures"] == [] and result["errors"] == [], output[-20000:]
    assert proc.returncode == 0, output[-20000:]
    assert "Traceback" not in serve_log and "unhandled error" not in serve_log, serve_log
