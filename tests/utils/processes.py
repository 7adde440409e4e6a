"""The ``tunegate`` command as a user runs it: one command to its end (``run_tunegate``), or a server such as
``tunegate serve`` started, waited for until /readyz answers, and stopped (``serve_tunegate``, ``serving``).

A command gets the test run's environment without what would change it behind the test's back (the ``TUNEGATE_*``
variables, ``OPENAI_API_KEY``, ``PROMETHEUS_MULTIPROC_DIR``), and then exactly the variables the test passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.utils.waiting import eventually

TUNEGATE = Path(sys.executable).with_name("tunegate")
_NOT_PASSED_ON = ("OPENAI_API_KEY", "PROMETHEUS_MULTIPROC_DIR")


def command_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command starts with: the run's, without TUNEGATE_* and the others above, plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("TUNEGATE_") and k not in _NOT_PASSED_ON}
    return {**kept, **(env or {})}


def run_tunegate(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``tunegate ARGS`` to its end; its exit code, stdout and stderr (text) in the result, never raised."""
    return subprocess.run(
        [str(TUNEGATE), *args],
        env=command_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Served:
    """A server started by ``serving``: its URL, its process, and the file its output goes to."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM, as a process manager stops it, and wait for the exit (``process.returncode``); its output."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return self.output()


def wait_until_ready(url: str, *, timeout: float = 60, served: Served | None = None) -> None:
    """Until GET ``url``/readyz answers 200; fails at once, with its output, if ``served``'s process ends first."""

    def ready() -> bool:
        if served is not None and (code := served.process.poll()) is not None:
            raise RuntimeError(f"{served.process.args!r} exited with {code} before it was ready:\n{served.output()}")
        return httpx.get(url + "/readyz", timeout=1).status_code == 200

    eventually(ready, what=f"{url}/readyz to answer 200", timeout=timeout, ignoring=(httpx.TransportError,))


@contextmanager
def serving(
    argv: Sequence[str],
    *,
    port: int,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[Served]:
    """Start ``argv``, a server that will answer GET /readyz on ``port``, in ``cwd`` with its output in ``log``;
    yield once it is ready; at the end stop it if it still runs (SIGTERM, then SIGKILL)."""
    with log.open("wb") as output:
        process = subprocess.Popen(list(argv), cwd=cwd, env=command_env(env), stdout=output, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", port, process, log)
    try:
        wait_until_ready(served.url, timeout=timeout, served=served)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


@contextmanager
def serve_tunegate(
    args: Sequence[str],
    *,
    port: int,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    port_by_environment: bool = False,
    timeout: float = 60,
) -> Iterator[Served]:
    """``tunegate serve ARGS`` on ``port`` (given as ``--port``, or as TUNEGATE_PORT as a container sets it), its
    output in ``cwd``/tunegate-PORT.log; yielded once /readyz answers, stopped at the end."""
    if port_by_environment:
        argv, env = [str(TUNEGATE), "serve", *args], {**(env or {}), "TUNEGATE_PORT": str(port)}
    else:
        argv = [str(TUNEGATE), "serve", *args, "--port", str(port)]
    with serving(argv, port=port, cwd=cwd, log=cwd / f"tunegate-{port}.log", env=env, timeout=timeout) as served:
        yield served
