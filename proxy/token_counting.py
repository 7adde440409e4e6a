"""The token-counting child: a serving process counts the system prompts of an alias write in a child process,
so that it never holds tiktoken's encodings. The child stays for the writes that follow (loading the encodings
is most of a count's cost) and is stopped after a minute without one."""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
import threading
from collections.abc import Sequence

from tunegate.registry.tokens import TokenCount, count_here, encodings_loaded

log = logging.getLogger("tunegate.tokens")

IDLE_SECONDS = 60.0  # a child no write has needed for this long is stopped (it holds the encodings' memory)
ANSWER_SECONDS = 120.0  # a child that has not answered by then is stopped, and the prompts counted here


class CountingChild:
    """One child process at a time (``python -m tunegate.registry.tokens``), started when a count is needed; callable as
    a
    :data:`tunegate.registry.tokens.PromptCounter`. Where the encodings are loaded here already, or the child fails, the
    prompts are counted here."""

    def __init__(self, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._idle: threading.Timer | None = None

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[TokenCount]:
        if not pairs:
            return []
        if not encodings_loaded():
            with self._lock:
                counts = self._ask(pairs)
            if counts is not None:
                return counts
        return count_here(pairs)

    def _ask(self, pairs: Sequence[tuple[str, str]]) -> list[TokenCount] | None:
        if self._idle is not None:
            self._idle.cancel()
        try:
            child = self._running()
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps([list(pair) for pair in pairs]).encode() + b"\n")
            child.stdin.flush()
            answer = _read_line(child, ANSWER_SECONDS)
            counts = [TokenCount(int(tokens), bool(exact)) for tokens, exact in json.loads(answer)]
        except (OSError, ValueError, TypeError, TimeoutError) as exc:
            log.warning("counting system prompts in a child process failed (%s); counting them here", exc)
            self._stop()
            return None
        if len(counts) != len(pairs):
            log.warning("the token-counting child answered %d counts for %d prompts", len(counts), len(pairs))
            self._stop()
            return None
        self._idle = threading.Timer(self._idle_seconds, self.stop)
        self._idle.daemon = True
        self._idle.start()
        return counts

    def _running(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "tunegate.registry.tokens"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._child

    def stop(self) -> None:
        """End the child (its input closes: it exits), if one runs."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        finally:
            if child.stdout is not None:
                child.stdout.close()


def _read_line(child: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The child's next line (it writes each answer as one line), waiting at most ``timeout`` seconds."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        child.kill()
        raise TimeoutError(f"no answer in {timeout:.0f}s")
    line = child.stdout.readline()
    if not line:
        raise OSError(f"the child ended (exit code {child.wait()})")
    return line


count_in_child = (
    CountingChild()
)  # the serving process's counter (tunegate.proxy.serving.lean_serving_process installs it)
