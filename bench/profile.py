"""py-spy on a running gateway: record collapsed stacks, then the functions that take the most samples."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OWN_CODE = ("proxy/", "registry/", "config/")


@contextmanager
def record(py_spy: str, pid: int, out: Path, *, seconds: float, rate: int = 200) -> Iterator[None]:
    """py-spy samples ``pid`` for ``seconds`` while the block runs (``--nonblocking``: the target never pauses)."""
    process = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)),
            *("--format", "raw", "--function", "--output", str(out), "--nonblocking"),
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


def top_frames(collapsed: Path, *, limit: int = 15, own: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` functions with the most samples of their own, then the ``own`` tunegate functions with the
    most samples under them: ``{"frame", "self", "total"}`` in percent of all samples."""
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        samples += count
        self_count[frames[-1]] += count
        for frame in set(frames):
            total_count[frame] += count
    if not samples:
        return []
    chosen = [frame for frame, _ in self_count.most_common(limit)]
    mine = [f for f, _ in total_count.most_common() if any(p in f for p in OWN_CODE) and f not in chosen]
    return [
        {"frame": f, "self": 100 * self_count[f] / samples, "total": 100 * total_count[f] / samples}
        for f in chosen + mine[:own]
    ]


def _short(frame: str) -> str:
    # "handle (litestar/routes/http.py:123)" with the site-packages prefix cut off
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name
