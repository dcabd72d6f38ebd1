"""Profiles of the processes under test, taken with py-spy while a scenario runs.

`python -m bench SCENARIO --profile DIR` attaches `py-spy record` to mailprov's web and
worker during the first measured mailprov round of each scenario, and writes, per process,
the collapsed stacks (`DIR/<scenario>-<process>.txt`, for speedscope or flamegraph.pl) and
a summary of where the samples fell (`...top.txt`). py-spy samples from outside the
process (`--nonblocking`), so the process under test runs unchanged, but it needs CPU of
its own: figures of a profiled run are not for the record.

    python -m bench.profile DIR/enqueue-web.txt    # print the summary of a recorded profile
    python -m bench.profile --compare DIR/poll-web.txt DIR/poll-floor.txt
        # CPU per request, by function, of two profiles side by side (from their answers)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

SAMPLE_RATE = 500
# what a process runs its event loop under (the same for any request): not compared
ROOTS = re.compile(r"\((<frozen runpy>|cli/__main__\.py|cli/main\.py|cli/admin\.py|"
                   r"uvloop/__init__\.py|asyncio/runners\.py|bench/baselines\.py|"
                   r"aiohttp/web\.py|asyncio/base_events\.py)\)$")
# py-spy's raw frame: "function (path/to/file.py:123)"
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy's executable: the venv's, else one on the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = "/".join(path.split("/")[-2:])  # our own code: package/module.py
    return f"{match['function']} ({path})"


def _counts(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Samples per function on top of the stack (self) and anywhere on it (total), and
    all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return own, total, samples


def compare(a: Path, b: Path, top: int = 30) -> str:
    """Where `a` spends more CPU per request than `b`: microseconds per answer, by
    function (anywhere on the stack), from each profile's samples and the answers noted
    beside it (bench/scenarios.py `profiled`)."""
    per: list[dict[str, float]] = []
    heads = []
    for raw in (a, b):
        _, total, samples = _counts(raw)
        answers = int(raw.with_suffix(".answers").read_text())
        us = 1e6 / SAMPLE_RATE / answers
        per.append({name: n * us for name, n in total.items() if not ROOTS.search(name)})
        heads.append(f"{raw.stem}: {samples * us:.0f} us sampled a request "
                     f"({answers:,} answers)")
    names = sorted(set(per[0]) | set(per[1]), key=lambda n: per[1].get(n, 0) - per[0].get(n, 0))
    lines = [*heads, "", f"{a.stem:>12} {b.stem:>12}   diff  function (us a request)"]
    lines += [f"{per[0].get(n, 0):12.1f} {per[1].get(n, 0):12.1f} "
              f"{per[0].get(n, 0) - per[1].get(n, 0):6.1f}  {n}" for n in names[:top]]
    return "\n".join(lines) + "\n"


def summarise(raw: Path, top: int = 25) -> str:
    """Where the samples fell: the functions most often on top of the stack (self) and
    anywhere on it (total), as shares of all samples."""
    own, total, samples = _counts(raw)
    if not samples:
        return f"{raw.name}: no samples (the process was idle)\n"
    lines = [f"{raw.name}: {samples} samples at {SAMPLE_RATE}/s "
             f"(~{samples / SAMPLE_RATE:.1f} s of activity)", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total % function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def recording(out_dir: Path | None, name: str, pid: int,
                    subprocesses: bool = False) -> AsyncIterator[None]:
    """Record `pid` with py-spy while the block runs; a no-op without `out_dir`."""
    spy = py_spy() if out_dir is not None else None
    if out_dir is None or spy is None:
        yield
        return
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    raw = out_dir / f"{name}.txt"
    argv = [spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format", "raw",
            "--output", str(raw), "--nonblocking"]
    if subprocesses:
        argv.append("--subprocesses")
    child = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.PIPE)
    try:
        yield
    finally:
        # py-spy writes its output when interrupted
        child.send_signal(signal.SIGINT)
        _, err = await child.communicate()
        if await asyncio.to_thread(raw.exists):
            summary = await asyncio.to_thread(summarise, raw)
            await asyncio.to_thread((out_dir / f"{name}.top.txt").write_text, summary)
        else:
            print(f"bench: py-spy wrote no profile for {name}: {err.decode()[-500:]}",
                  file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"] and len(sys.argv) == 4:
        print(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        for arg in sys.argv[1:]:
            print(summarise(Path(arg)))
