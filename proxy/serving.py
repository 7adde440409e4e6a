"""Process set-up for ``tunegate serve`` and its workers: logging, the lean-process settings, the child that
prepares the database while the server imports, and the app of one worker.

Nothing here runs on the request path; ``registry`` starts no processes, so the children live here.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from tunegate.config import Settings, UpstreamSettings, load_settings
from tunegate.config.settings import ServerSettings

DEMO_UPSTREAM_ENV = "TUNEGATE_DEMO_UPSTREAM_URL"
PREPARED_ENV = "TUNEGATE_WORKER_DATABASE_PREPARED"  # set by `serve --workers N` for its workers: skip migrating
WORKER_APP = "tunegate.proxy.serving:create_app_from_env"
_M_ARENA_MAX = -8  # glibc mallopt parameter
log = logging.getLogger("tunegate")

PREPARE_FAILED = 3  # exit code of a start whose database could not be prepared (uvicorn's for a failed start)


class PreparingApart:
    """The child, started on construction; :meth:`wait` for its exit code (0: the database is ready)."""

    def __init__(self, settings: Settings) -> None:
        self._child = multiprocessing.get_context("spawn").Process(
            target=_prepare_in_child, args=(settings,), name="tunegate-prepare"
        )
        self._child.start()

    def wait(self) -> int:
        self._child.join()
        return PREPARE_FAILED if self._child.exitcode is None else self._child.exitcode


def _prepare_in_child(settings: Settings) -> None:
    from tunegate.registry.bootstrap import prepare_database
    from tunegate.registry.db import make_engine

    engine = make_engine(settings.database.url)
    try:
        prepare_database(engine, settings)
    except Exception as exc:
        print(f"tunegate: preparing the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(PREPARE_FAILED) from None
    finally:
        engine.dispose()


LOG_FORMAT_ENV = "TUNEGATE_LOG_FORMAT"  # `serve --log-format` sets it for its workers; a container may set it
LOG_LEVEL_ENV = "TUNEGATE_LOG_LEVEL"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, and the message, or an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record.msg, "fields", None)  # an access line (proxy.access_log.Line): its fields as keys
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class BatchedStreamHandler(logging.Handler):
    """A stream handler that formats and writes on a thread of its own, the lines of ``interval`` seconds in one
    write: a request pays for making its record (the access log writes one a request), not for the formatting,
    the lock and the system call of a write each. Closed (at exit, by logging.shutdown) it writes what is left."""

    def __init__(self, stream: Any = None, *, interval: float = 0.1) -> None:
        super().__init__()
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._pending: collections.deque[logging.LogRecord] = collections.deque()
        self._wake = threading.Event()
        self._writing = threading.Lock()  # one writer at a time: the thread, a flush, a write after close
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tunegate-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._pending.append(record)  # deque.append is atomic: no lock on the caller's side
        if self._closed:
            # Closed but still attached: logging.config.dictConfig closes every handler it finds (uvicorn's config
            # of the demo's built-in upstream does), and a closed StreamHandler goes on writing: so does this one.
            self._write()
        elif record.levelno >= logging.WARNING:
            self._wake.set()  # a warning is written at once

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._write()

    def _write(self) -> None:
        with self._writing:
            self._write_pending()

    def _write_pending(self) -> None:
        lines = []
        while self._pending:
            record = self._pending.popleft()
            try:
                lines.append(self.format(record) + "\n")
            except Exception:
                self.handleError(record)
        if lines:
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):  # the stream is gone (the process is ending)
                pass

    def flush(self) -> None:
        self._write()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2)
        self._write()
        super().close()


def configure_logging(log_format: str | None = None, level: str | None = None) -> None:
    """The process's log on stderr: ``text`` or ``json`` lines (else $TUNEGATE_LOG_FORMAT, else text) at ``level``
    (else $TUNEGATE_LOG_LEVEL, else info); the access log (proxy.access_log) is its INFO lines."""
    log_format = log_format or os.environ.get(LOG_FORMAT_ENV) or "text"
    level = level or os.environ.get(LOG_LEVEL_ENV) or "info"
    if log_format not in LOG_FORMATS or level not in LOG_LEVELS:
        raise ValueError(f"log format {log_format!r} / level {level!r}: use one of {LOG_FORMATS} / {LOG_LEVELS}")
    handler = BatchedStreamHandler()
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every upstream request at INFO: a line (and its URL) per request on the hot path.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))


def uvicorn_config(app: Any, host: str, port: int, *, server: ServerSettings | None = None, **extra: Any) -> Any:
    """uvicorn's config for the gateway: its own HTTP protocol (proxy.connections) and the ``server.*`` bounds on
    client connections (keep-alive, header size and deadline, connections a process, the shutdown grace)."""
    from tunegate.proxy.connections import GatewayConfig

    server = server or ServerSettings()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    # ws="none": the gateway serves no WebSocket, and uvicorn would import the websockets package (2.2 MiB).
    return GatewayConfig(
        app,
        max_header_bytes=server.max_header_bytes,
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        timeout_keep_alive=server.keep_alive_seconds,
        limit_concurrency=server.max_connections,
        timeout_graceful_shutdown=server.shutdown_grace_seconds,
        host=host,
        port=port,
        loop=loop,
        ws="none",
        log_config=None,  # uvicorn's records go through configure_logging's handler (JSON too); its access log is off
        log_level=logging.getLevelName(logging.root.level).lower(),
        access_log=False,
        **extra,
    )


def lean_serving_process() -> None:
    """What a serving process does not import: litestar adds its attrs plugin whenever attrs is installed (a
    dependency of other tools; 0.9 MiB), and nothing the gateway serves is an attrs class; nor tiktoken's
    encodings: the system prompts of an alias write are counted in a short-lived child. And at most two malloc
    arenas (glibc gives each thread that allocates one of its own, up to 8 a core, kept at their high-water mark;
    MALLOC_ARENA_MAX=2 as the environment would set it, unless it does)."""
    from tunegate.proxy.token_counting import count_in_child
    from tunegate.registry.tokens import set_prompt_counter

    set_prompt_counter(count_in_child)
    for name in ("attr", "attrs"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    if sys.platform == "linux" and "MALLOC_ARENA_MAX" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


def demo_upstreams(settings: Settings) -> Settings:
    """In demo mode without OPENAI_API_KEY: every upstream is the built-in fake one (its URL in the environment)."""
    base_url = os.environ.get(DEMO_UPSTREAM_ENV)
    if not base_url:
        return settings
    upstreams = {
        name: UpstreamSettings(base_url=base_url, api_key="$TUNEGATE_DEMO_UPSTREAM_KEY") for name in settings.upstreams
    }
    return settings.model_copy(update={"upstreams": upstreams})


def create_app_from_env() -> Any:
    """One worker of ``tunegate serve --workers N`` (uvicorn imports it by name, once per worker process).

    Settings come from $TUNEGATE_CONFIG and the environment, as the parent read them; the parent has migrated
    the database and applied the file already.
    """
    from tunegate.proxy.app import create_app
    from tunegate.proxy.state import Gateway

    configure_logging()
    lean_serving_process()
    settings = demo_upstreams(load_settings())
    prepared = os.environ.get(PREPARED_ENV) == "1"
    return create_app(settings, gateway=Gateway(settings, prepared=prepared))
