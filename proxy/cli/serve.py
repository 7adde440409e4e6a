"""``tunegate serve``, ``tunegate fake-upstream`` and ``tunegate db upgrade``: the commands that run things; and
``tunegate config check``, serve's start-up validation of the files without a server."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import Any

from tunegate.config import ConfigError, Settings, load_settings
from tunegate.config.settings import METRICS_OPEN_ENV
from tunegate.proxy.serving import (
    DEMO_UPSTREAM_ENV,
    LOG_FORMAT_ENV,
    LOG_FORMATS,
    LOG_LEVEL_ENV,
    LOG_LEVELS,
    PREPARED_ENV,
    WORKER_APP,
    PreparingApart,
    configure_logging,
    demo_upstreams,
    lean_serving_process,
    uvicorn_config,
)
from tunegate.proxy.token_counting import count_in_child

DEMO_KEY = "tg-demo-key"  # demo mode only: a fixed key so the README's snippet works as printed
DEMO_ADMIN_KEY = "tg-demo-admin"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway YAML (default: $TUNEGATE_CONFIG or config/tunegate.yaml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1); the database is migrated and the file applied once, before they start",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object a line, the access log's fields as keys ($TUNEGATE_LOG_FORMAT)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="info (default) includes the access log, a line per request; warning leaves it out ($TUNEGATE_LOG_LEVEL)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="a newcomer's set-up: a demo key, and a built-in fake upstream when OPENAI_API_KEY is not set",
    )
    serve.set_defaults(run=run_serve)

    fake = sub.add_parser("fake-upstream", help="run the fake OpenAI API used by tests, the demo and benchmarks")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8001)
    fake.add_argument("--api-key", help="require this key (default: accept any)")
    fake.set_defaults(run=run_fake_upstream)

    config = sub.add_parser("config", help="the gateway YAML: check")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check", help="validate a gateway YAML and its price table as serve does at start, without a server"
    )
    check.add_argument("file", help="the gateway YAML (tunegate.yaml)")
    check.set_defaults(run=run_config_check)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or upgrade the schema to the latest version")
    upgrade.add_argument("--config")
    upgrade.set_defaults(run=run_db_upgrade)


def load_or_exit(path: str | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"tunegate: configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_demo_upstream() -> str:
    from tunegate.proxy.fake_upstream import FakeUpstream, server

    port = _free_port()
    fake = server(FakeUpstream(), host="127.0.0.1", port=port)
    thread = threading.Thread(target=fake.run, name="tunegate-demo-upstream", daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/v1"


def _demo_settings(settings: Settings) -> Settings:
    if not os.environ.get("TUNEGATE_ADMIN_KEY"):
        os.environ["TUNEGATE_ADMIN_KEY"] = DEMO_ADMIN_KEY
    if settings.metrics.token is None:  # a demo's /metrics is open (a configured token still applies)
        os.environ[METRICS_OPEN_ENV] = "1"  # workers (`--workers N`) read it from here too
        settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"open": True})})
    if os.environ.get("OPENAI_API_KEY"):
        return settings
    os.environ[DEMO_UPSTREAM_ENV] = _start_demo_upstream()  # workers (`--workers N`) read it from here too
    os.environ["TUNEGATE_DEMO_UPSTREAM_KEY"] = "sk-demo"
    return demo_upstreams(settings)


def _ensure_demo_key(engine: Any, settings: Settings) -> str | None:
    from sqlmodel import select

    from tunegate.registry.db import session_scope
    from tunegate.registry.models import ApiKey
    from tunegate.registry.teams import create_key, ensure_team, hash_key

    if not settings.teams:
        return None
    with session_scope(engine) as session:
        team = ensure_team(session=session, name=settings.teams[0].name)
        if session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(DEMO_KEY))).first() is None:
            create_key(session=session, team=team, name="demo", plaintext=DEMO_KEY)
    return settings.teams[0].name


def run_serve(args: argparse.Namespace) -> int:
    try:
        configure_logging(args.log_format, args.log_level)
    except ValueError as exc:  # a bad $TUNEGATE_LOG_FORMAT or $TUNEGATE_LOG_LEVEL (the flags are checked)
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    for name, value in ((LOG_FORMAT_ENV, args.log_format), (LOG_LEVEL_ENV, args.log_level)):
        if value:
            os.environ[name] = value  # the workers of --workers N log as this process does
    lean_serving_process()
    settings = load_or_exit(args.config)
    if args.workers < 1:
        print("tunegate: --workers must be 1 or more", file=sys.stderr)
        return 2
    if args.demo:
        settings = _demo_settings(settings)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if args.workers > 1:
        return _serve_workers(args, settings, host, port)
    preparing = PreparingApart(settings)  # migrates and applies the file while this process imports
    import uvicorn

    from tunegate.proxy.app import create_app
    from tunegate.proxy.state import Gateway

    failed = preparing.wait()
    if failed:
        return failed
    gateway = Gateway(settings, prepared=True)
    if args.demo:
        _print_demo(_ensure_demo_key(gateway.engine, settings), host, port)
    server = uvicorn.Server(uvicorn_config(create_app(settings, gateway=gateway), host, port, server=settings.server))
    _exit_cleanly_after_graceful_shutdown()
    server.run()
    return 0


def _print_demo(team: str | None, host: str, port: int) -> None:
    demo_upstream = "" if os.environ.get("OPENAI_API_KEY") else " (built-in fake upstream: no OPENAI_API_KEY set)"
    print(
        f"\ntunegate demo{demo_upstream}\n"
        f"  base_url  http://{host}:{port}/v1\n"
        f"  api key   {DEMO_KEY}   (team {team})\n"
        f"  admin key {os.environ['TUNEGATE_ADMIN_KEY']}\n"
        + (
            f"  metrics   http://{host}:{port}/metrics   (open to everyone: demo mode)\n"
            if os.environ.get(METRICS_OPEN_ENV) == "1"
            else ""
        ),
        flush=True,
    )


def _serve_workers(args: argparse.Namespace, settings: Settings, host: str, port: int) -> int:
    """N uvicorn workers on one socket. This process migrates the database and applies the file once (N workers
    doing it at the same moment would race), then supervises; each worker builds its app from the environment."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from tunegate.registry.bootstrap import prepare_database
    from tunegate.registry.db import make_engine

    engine = make_engine(settings.database.url)
    try:
        prepare_database(engine, settings)
        team = _ensure_demo_key(engine, settings) if args.demo else None
    finally:
        engine.dispose()
        count_in_child.stop()  # the file's prompts are counted: the supervisor keeps no counting child
    if args.demo:
        _print_demo(team, host, port)
    if args.config:
        os.environ["TUNEGATE_CONFIG"] = os.path.abspath(args.config)
    os.environ[PREPARED_ENV] = "1"
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metric values to files here; /metrics in any worker sums them all.
        metrics_dir = tempfile.mkdtemp(prefix="tunegate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = uvicorn_config(WORKER_APP, host, port, server=settings.server, factory=True, workers=args.workers)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    try:
        supervisor.run()  # until SIGTERM/SIGINT: each worker then shuts down (flushing its usage records)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


def _exit_cleanly_after_graceful_shutdown() -> None:
    # uvicorn shuts down (flushing usage) on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # there before it: make that handler a clean exit, so an orderly stop reports success to Kubernetes.
    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)


def run_fake_upstream(args: argparse.Namespace) -> int:
    from tunegate.proxy.fake_upstream import serve

    serve(host=args.host, port=args.port, api_key=args.api_key)
    return 0


def run_config_check(args: argparse.Namespace) -> int:
    """Exit 0, or 2 with the message ``tunegate serve`` prints for the same file."""
    from tunegate.config.prices import PriceTableError
    from tunegate.registry.pricing import PriceTable

    settings = load_or_exit(args.file)
    try:
        PriceTable.load(settings.prices_path)  # as the gateway loads it at start
    except PriceTableError as exc:
        print(f"tunegate: configuration error:\n{settings.source}: prices.file: {exc}", file=sys.stderr)
        return 2
    counts = [(len(settings.teams), "team", "teams"), (len(settings.upstreams), "upstream", "upstreams")]
    counts.append((len(settings.aliases), "alias", "aliases"))
    named = ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts)
    prices = settings.prices_path or "the packaged price table"
    print(f"{settings.source}: ok ({named}; prices: {prices})")
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    from tunegate.registry.db import make_engine, migrate

    settings = load_or_exit(args.config)
    engine = make_engine(settings.database.url)
    migrate(engine)
    print(f"database schema is up to date ({settings.database.url.split('@')[-1]})")
    return 0
