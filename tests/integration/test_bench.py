"""The benchmark harness runs end to end: `python -m bench all --quick`.

A smoke test of the bench code, not of speed: it checks that every scenario ran against
real processes and has its row, never what the figures are.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.scenarios import Row

ROOT = Path(__file__).resolve().parents[2]
OTHER_SECTION = "## Fault injection\n\nWritten by someone else; kept as it is.\n"
SCENARIOS = ("enqueue:", "enqueue, floor", "poll:", "poll, floor", "latency", "worker",
             "bulk, hashed", "bulk, pre-hashed",
             "growth: list/mailbox", "growth: one bulk task", "lifecycle, pages",
             "lifecycle, updates", "lifecycle, bulk", "front, stall", "front, accept",
             "front, fairness", "scaling, many domains", "scaling, one domain",
             "longpoll, held", "longpoll, heard")


def table(text: str) -> dict[str, list[str]]:
    """The perf section's results table: scenario -> its cells."""
    section = text[text.index(report.START):text.index(report.END)]
    after_header = section[section.index("| scenario | mailprov |"):].splitlines()[2:]
    lines = after_header[:after_header.index("")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {c[0]: c for c in cells}


@pytest.mark.timeout(300)
def test_quick_bench_writes_a_row_per_scenario(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# results\n\n{OTHER_SECTION}")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    text = out.read_text()
    assert OTHER_SECTION in text
    rows = table(text)
    for name in SCENARIOS:
        found = [cells for scenario, cells in rows.items() if scenario.startswith(name)]
        assert len(found) == 1, (name, list(rows))
        # columns: scenario, mailprov, baseline, ratio, target, met, date, machine
        assert found[0][5] in ("yes", "**no**"), found[0]
        assert found[0][1] and found[0][3] != "—" and "cores" in found[0][7], found[0]


def test_a_partial_run_keeps_the_other_scenarios_rows(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# results\n\n{OTHER_SECTION}")
    run = {"command": "python -m bench all", "date": "2026-01-02 03:04 UTC", "seconds": 1.0,
           "machine": {"cores": "2", "memory": "1 GiB", "cpu": "x", "os": "y", "python": "3",
                       "postgres": "18", "redis": "6"},
           "settings": "", "sizes": ""}
    report.write(out, [Row("enqueue", "enqueue: old", figure="1 req/s", ratio=0.1,
                           misses=["ratio 0.10 is 80 % under 0.5"]),
                       Row("poll", "poll: old", figure="2 req/s", ratio=0.9)], run)
    report.write(out, [Row("poll", "poll: new", figure="3 req/s", ratio=0.8)],
                 {**run, "command": "python -m bench poll"})
    text = out.read_text()
    assert OTHER_SECTION in text and text.count(report.START) == 1
    rows = table(text)
    assert list(rows) == ["enqueue: old", "poll: new"]
    assert rows["enqueue: old"][5] == "**no**" and rows["poll: new"][5] == "yes"
    assert "ratio 0.10 is 80 % under 0.5" in text
