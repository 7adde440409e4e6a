"""Client connections that never finish are bounded (`tunegate serve`, raw sockets on loopback): an idle
connection is closed after the keep-alive timeout, also before its first request; headers over the size limit
are refused with 431 and the connection closed, whether they complete or not; headers, or a body, that stop
arriving get 408; SIGTERM with a half-sent body exits once the shutdown grace period is over."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.gateways import ADMIN_KEY, gateway_yaml
from tests.utils.processes import Served, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle

pytestmark = pytest.mark.slow

BOUNDS = (
    "keep_alive_seconds: 1, header_timeout_seconds: 2, body_timeout_seconds: 5, max_header_bytes: 8192,"
    " shutdown_grace_seconds: 2"
)
ENV = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}


def bounded_yaml(database_url: str, fake_base_url: str) -> str:
    text = gateway_yaml(database_url, fake_base_url)
    assert "read_timeout: 1.5}" in text
    return text.replace("read_timeout: 1.5}", f"read_timeout: 1.5, {BOUNDS}}}")


def start(tmp_path: Path, fake: FakeUpstreamHandle) -> Iterator[Served]:
    config = tmp_path / "tunegate.yaml"
    config.write_text(bounded_yaml(f"sqlite:///{tmp_path / 'gw.db'}", fake.base_url), encoding="utf-8")
    with serve_tunegate(["--config", str(config)], port=free_port(), cwd=tmp_path, env=ENV) as served:
        yield served


@pytest.fixture(scope="module")
def served(fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from start(tmp_path_factory.mktemp("connections"), fake_upstream)


def connect(served: Served, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a socket timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(served: Served) -> None:
    with connect(served) as idle:  # nothing sent at all
        assert read_all(idle) == b""
    with connect(served) as kept:  # idle after an answer
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        answer = read_all(kept)
    assert status_and_body(answer)[0] == 200
    assert b"connection: close" not in answer.lower()  # kept alive, then closed by the server once idle


def test_headers_over_the_limit_are_refused_and_the_connection_closed(served: Served) -> None:
    with connect(served) as fits:
        fits.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n")
        assert status_and_body(read_all(fits))[0] == 200
    with connect(served) as complete:  # 16 KB of headers, sent whole
        complete.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Pad: " + b"a" * 16000 + b"\r\n\r\n")
        status, body = status_and_body(read_all(complete))
    assert status == 431
    assert json.loads(body)["error"]["code"] == "request_headers_too_large"
    with connect(served) as endless:  # one header that never ends: refused once it passes the limit
        endless.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Pad: ")
        sent = 0
        try:
            while sent < 16 * 1024 * 1024:
                endless.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = read_all(endless)
        except ConnectionResetError:  # closed with unread bytes: the kernel resets instead
            answer = b""
    assert sent < 16 * 1024 * 1024  # the gateway stopped reading long before 16 MB
    assert answer == b"" or status_and_body(answer)[0] == 431


def test_headers_that_stop_arriving_get_408(served: Served) -> None:
    with connect(served) as partial:
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")  # no blank line: the headers never end
        status, body = status_and_body(read_all(partial))
    assert status == 408
    assert json.loads(body)["error"]["code"] == "timeout"


def test_a_body_that_stops_arriving_gets_408(served: Served) -> None:
    with connect(served) as partial:
        partial.sendall(half_sent_body())
        status, body = status_and_body(read_all(partial))
    assert status == 408
    assert json.loads(body)["error"]["code"] == "timeout"


def half_sent_body() -> bytes:
    """POST /admin/teams with the admin key: 14 bytes of a 1,000-byte body, so the app waits for the rest."""
    return (
        b"POST /admin/teams HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "
        + ADMIN_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        + b'{"name": "half'
    )


def test_sigterm_with_a_half_sent_body_exits_within_the_grace_period(
    fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    for gateway in start(tmp_path, fake_upstream):
        with connect(gateway, timeout=30) as half:
            half.sendall(half_sent_body())  # its body timeout (5 s) is after the grace period (2 s)
            time.sleep(0.5)  # the request is in the app, waiting for the rest of its body
            began = time.monotonic()
            output = gateway.stop(timeout=30)
            took = time.monotonic() - began
        assert gateway.process.returncode == 0, output
        assert took < 2 + 8, f"exit took {took:.1f} s with a grace period of 2 s"
        assert "timeout graceful shutdown exceeded" in output
