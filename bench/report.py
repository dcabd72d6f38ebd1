"""bench/RESULTS.md: the table of the last run, between `<!-- perf:start -->` and
`<!-- perf:end -->`; whatever else the file holds (other sections) is kept as it is.

A run of some scenarios only replaces their rows and keeps the others' (each row carries
its own date and machine). The rows are also kept as JSON in an HTML comment inside the
section, which is what the next run reads back.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scenarios import Row

START = "<!-- perf:start -->"
END = "<!-- perf:end -->"
DATA = re.compile(r"<!-- perf:data (.*?) -->", re.DOTALL)
HEADING = "# mailprov benchmark results\n"


def machine() -> dict[str, str]:
    """What this machine is, as far as it changes the figures."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "cpu": cpu or platform.processor() or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(row: dict[str, Any]) -> str:
    """The scenario's name without its description."""
    return str(row.get("label") or row["scenario"].split(":")[0])


def _stored(row: Row, when: str, where: str) -> dict[str, Any]:
    data = asdict(row)
    data["passed"] = row.passed
    data["date"], data["machine"] = when, where
    return data


def _peak_text(peak: dict[str, Any]) -> str:
    own = mib(peak["process"])
    kids = [k for k in peak["children"] if k]
    if not kids:
        return own
    if len(kids) == 1:
        return f"{own} (+ 1 child process: {mib(kids[0])})"
    return (f"{own} (+ {len(kids)} child processes: up to {mib(max(kids))} each, "
            f"{mib(sum(kids))} together)")


def render(rows: list[dict[str, Any]], run: dict[str, Any]) -> str:
    """The section between the markers (markers included)."""
    out = [START, "## Performance", "",
           f"Written by `{run['command']}` (bench/report.py): do not edit between the perf "
           "markers. Every figure is measured side by side with its baseline in the same "
           "run, alternating rounds; the ratio is what the target is about.", "",
           "| scenario | mailprov | baseline | ratio | target | met | date | machine |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "error" if r["error"] else ("yes" if r["passed"] else "**no**")
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        figure = r["figure"] or (f"error: {r['error']}" if r["error"] else "")
        out.append("| " + " | ".join(_cell(c) for c in (
            r["scenario"], figure, r["baseline"], ratio, r["target"], met, r["date"],
            r["machine"])) + " |")
    missed = [r for r in rows if not r["passed"]]
    out += ["", "### Targets missed", ""]
    out += [f"- {_short(r)}: " + "; ".join(r["misses"] or [r["error"]])
            for r in missed] or ["None."]
    with_memory = [r for r in rows if r["memory"]]
    if with_memory:
        out += ["", "### Peak memory (VmHWM) during the bulk scenarios", "",
                "| scenario | web | worker |", "|---|---|---|"]
        for r in with_memory:
            mem = r["memory"]
            out.append(f"| {_cell(_short(r))} | "
                       f"{_peak_text(mem['web']) if 'web' in mem else '—'} | "
                       f"{_peak_text(mem['worker']) if 'worker' in mem else '—'} |")
    with_cpu = [r for r in rows if r.get("cpu")]
    if with_cpu:
        cores = int(run["machine"]["cores"])
        out += ["", "### CPU per request (ms, in the best round of each side)", "",
                "Every process on the machine shares its cores, so their sum bounds the "
                f"throughput: {cores} cores allow at most {cores} x 1000 / total requests "
                "per second. `app` is mailprov's web process or the baseline app.", "",
                "| scenario | side | app | Postgres | Redis | load client | total | "
                f"{cores} cores allow |", "|---|---|---|---|---|---|---|---|"]
        for r in with_cpu:
            for side, cpu in r["cpu"].items():
                total = sum(cpu.values())
                out.append(f"| {_cell(_short(r))} | {side} | "
                           + " | ".join(f"{cpu.get(k, 0):.3f}" for k in
                                        ("app", "postgres", "redis", "load client"))
                           + f" | {total:.3f} | {cores * 1000 / total:,.0f} req/s |")
    out += ["", "### Rounds", ""]
    out += [f"- {_short(r)}: {r['rounds']}" for r in rows if r["rounds"]]
    m = run["machine"]
    out += ["", "### This run", "",
            f"- date: {run['date']}; `{run['command']}` took {run['seconds']:.0f} s",
            f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, {m['os']}; "
            f"Python {m['python']}; Postgres {m['postgres']}, Redis {m['redis']} "
            "(embedded, on loopback, started by the bench)",
            f"- mailprov settings (environment of web and worker): {run['settings']}",
            f"- sizes: {run['sizes']}",
            "- load: `bench/load.py`, an aiohttp client in its own process on loopback "
            "(closed loop; open loop at a fixed rate for latency); it shares the 2 cores "
            "with the processes under test, the same for mailprov and its baseline",
            ]
    if run.get("profiled"):
        out.append("- **profiled run**: py-spy was attached; the figures are perturbed")
    payload = json.dumps({"rows": rows}, ensure_ascii=False).replace("--", "-\\u002d")
    out += ["", f"<!-- perf:data {payload} -->", END]
    return "\n".join(out)


def write(path: Path, rows: list[Row], run: dict[str, Any]) -> None:
    """Put this run's rows (and the kept rows of scenarios it did not run) into `path`."""
    text = path.read_text() if path.exists() else HEADING
    when = run["date"][:10]
    where = f"{run['machine']['cores']} cores, {run['machine']['memory']}"
    fresh = [_stored(r, when, where) for r in rows]
    ran = {r.group for r in rows}
    kept: list[dict[str, Any]] = []
    begin, end = text.find(START), text.find(END)
    if begin != -1 and end > begin:
        found = DATA.search(text, begin, end)
        if found:
            kept = [r for r in json.loads(found.group(1))["rows"] if r["group"] not in ran]
        section = render(_ordered(kept + fresh), run)
        text = text[:begin] + section + text[end + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + render(fresh, run) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bench.scenarios import SCENARIOS

    order = list(SCENARIOS)
    return sorted(rows, key=lambda r: order.index(r["group"]) if r["group"] in order else 99)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
