"""py-spy on a running gateway: record collapsed stacks, then the threads and functions that take the samples."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OWN_CODE = ("proxy/", "registry/", "config/")
# A thread blocked in one of these is waiting, not working; py-spy's --nonblocking sampling cannot always tell.
WAITING = ("Condition.wait (threading.py", "Event.wait (threading.py", "Queue.get (queue.py")
_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\)(?:: (.*))?$")


@contextmanager
def record(py_spy: str, pid: int, out: Path, *, seconds: float, rate: int = 200) -> Iterator[None]:
    """py-spy samples ``pid`` for ``seconds`` while the block runs (``--nonblocking``: the target never pauses)."""
    process = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)),
            *("--format", "raw", "--function", "--threads", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        _, err = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


def summarize(collapsed: Path, *, limit: int = 15, own: int = 10) -> dict[str, Any]:
    """Where the working samples went: by thread, then the ``limit`` functions with the most samples of their
    own and the ``own`` tunegate functions with the most samples under them, in percent of working samples."""
    threads: Counter[str] = Counter()
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    working = waiting = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = _thread_name(frames[0])
        if thread is not None:
            frames = frames[1:]
        if not frames:
            continue
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        working += count
        threads[thread or "?"] += count
        short = [_short(f) for f in frames]
        self_count[short[-1]] += count
        for frame in set(short):
            total_count[frame] += count
    if not working:
        return {}
    chosen = [frame for frame, _ in self_count.most_common(limit)]
    mine = [f for f, _ in total_count.most_common() if any(p in f for p in OWN_CODE) and f not in chosen]
    return {
        "samples": working,
        "waiting": waiting,
        "threads": [{"thread": t, "share": 100 * c / working} for t, c in threads.most_common()],
        "frames": [
            {"frame": f, "self": 100 * self_count[f] / working, "total": 100 * total_count[f] / working}
            for f in chosen + mine[:own]
        ],
    }


def _thread_name(frame: str) -> str | None:
    match = _THREAD.match(frame.strip())
    if match is None:
        return None
    name = match.group(1) or "unnamed"
    return "AnyIO worker threads" if name.startswith("AnyIO worker") else name


def _short(frame: str) -> str:
    # "handle (litestar/routes/http.py:123)" with the site-packages prefix cut off
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name
