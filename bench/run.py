"""``make bench``: the fake upstream, the gateway (and LiteLLM with ``--litellm``) on loopback, under load.

One command, bounded in time (about 3 minutes; ``--quick`` about 1), writes ``bench/RESULTS.md``. Every figure
in it comes from this run: the same load straight to the fake upstream gives the gateway's added latency, and
LiteLLM (``--litellm``) runs against the same upstream, so the ratio is measured, not remembered.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import litellm, replay, report
from bench.load import Call, LoadResult, run_load
from bench.procs import Server, Snapshot, free_port
from bench.scenarios import (
    ADMIN_KEY,
    COMPARISON,
    DIRECT_HEADERS,
    MAIN,
    MODEL,
    NON_STREAM_64,
    PROMPT,
    QUESTION,
    REPLAYED,
    REPLAYED_2,
    STREAM_64,
    TEAM,
    THROUGHPUT,
    UNBUDGETED,
    UNBUDGETED_TEAM,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Scenario,
    client_body,
    gateway_yaml,
    upstream_body,
    upstream_faults,
)

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PACKAGES = ("litestar", "uvicorn", "httpx", "uvloop", "httptools", "orjson", "sqlalchemy")


@dataclass
class Options:
    warmup: float
    duration: float
    workers: int
    scaling: bool
    litellm: bool
    litellm_version: str
    database_url: str | None
    profile: bool
    budget: bool
    output: Path
    work: Path
    command: str


@dataclass
class Run:
    """Everything measured in one run, in the order it is written to RESULTS.md."""

    options: Options
    started: str
    machine: dict[str, Any]
    versions: dict[str, str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rows: list[dict[str, Any]] = field(default_factory=list)
    startup: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    usage_check: dict[str, int] = field(default_factory=dict)
    litellm: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    prompt_change: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, server: str, scenario: Scenario) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["server"] == server and r["scenario"] == scenario.key), None)


# -- the machine -------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        found["tunegate (git HEAD, plus any uncommitted changes)"] = head.stdout.strip() or "unknown"
    except OSError:
        pass
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


# -- measuring one scenario --------------------------------------------------------------------------------


def measure(
    run: Run,
    server_label: str,
    scenario: Scenario,
    call: Call,
    watched: Server | None,
    *,
    upstream: Server | None = None,
) -> dict[str, Any]:
    opts = run.options
    snaps: list[tuple[Snapshot | None, Snapshot | None]] = []

    def snapshot() -> None:
        snaps.append((watched.snapshot() if watched else None, upstream.snapshot() if upstream else None))

    result = _run_async(
        run_load(call, connections=scenario.connections, warmup=opts.warmup, duration=opts.duration, snapshot=snapshot)
    )
    row = report.summarize(server_label, scenario, result)
    (server0, upstream0), (server1, upstream1) = snaps
    if server0 and server1 and result.requests:
        row["server_cpu_per_1k"] = (server1.cpu - server0.cpu) / result.requests * 1000
        row["server_cpu_share"] = (server1.cpu - server0.cpu) / result.seconds
    if upstream0 and upstream1 and result.requests:
        row["upstream_cpu_per_1k"] = (upstream1.cpu - upstream0.cpu) / result.requests * 1000
    row["loadavg"] = os.getloadavg()[0]
    run.rows.append(row)
    _progress(report.progress_line(row))
    return row


def _run_async(coro: Any) -> LoadResult:
    try:
        import uvloop

        result: LoadResult = uvloop.run(coro)
        return result
    except ImportError:
        fallback: LoadResult = asyncio.run(coro)
        return fallback


def _progress(message: str) -> None:
    print(message, flush=True)


# -- the servers -------------------------------------------------------------------------------------------


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEGATE_") and k != "OPENAI_API_KEY"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


def start_upstream(work: Path) -> tuple[Server, int]:
    port = free_port()
    server = Server(
        "fake upstream",
        [str(BIN / "tunegate"), "fake-upstream", "--port", str(port)],
        env=_env({}),
        log=work / "fake-upstream.log",
        cwd=work,
    )
    server.start()
    server.wait_ready(port, "/_stats")
    for fault in upstream_faults():
        httpx.post(f"http://127.0.0.1:{port}/_faults", json=fault, timeout=10).raise_for_status()
    return server, port


def start_gateway(run: Run, config: Path, port: int, *, workers: int, name: str) -> Server:
    argv = [str(BIN / "tunegate"), "serve", "--config", str(config)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    server = Server(
        name,
        argv,
        env=_env({"TUNEGATE_ADMIN_KEY": ADMIN_KEY, UPSTREAM_KEY_ENV: UPSTREAM_KEY}),
        log=run.options.work / "gateway.log",
        cwd=run.options.work,
    )
    server.start()
    server.wait_ready(port, "/readyz", workers=workers)
    return server


def create_key(port: int, team: str = TEAM) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/admin/keys",
        json={"team": team, "name": "bench"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


def set_budget(port: int) -> None:
    """A monthly budget the run never reaches: the budget check and the charge before each answer are on."""
    response = httpx.put(
        f"http://127.0.0.1:{port}/admin/budgets/{TEAM}",
        json={"monthly_usd": "1000000", "soft_pct": 99},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    response.raise_for_status()


def usage_rows(database_url: str) -> int:
    from sqlalchemy import text

    from tunegate.registry.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(text("SELECT count(*) FROM usage_record")).scalar_one()
            return count
    finally:
        engine.dispose()


# -- the run -----------------------------------------------------------------------------------------------


def bench(opts: Options) -> Run:
    began = time.perf_counter()
    work = opts.work
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("bench.db*"):
        stale.unlink()
    for log in ("gateway.log", "fake-upstream.log", "litellm.log"):
        (work / log).unlink(missing_ok=True)
    database_url = opts.database_url or f"sqlite:///{work / 'bench.db'}"
    if opts.database_url:
        _reset_database(database_url)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    run = Run(opts, started, machine(), versions(), os.getloadavg())
    _progress(f"load average {run.load_before[0]:.2f} {run.load_before[1]:.2f} {run.load_before[2]:.2f}")

    upstream, upstream_port = start_upstream(work)
    gateway_port = free_port()
    config = work / "gateway.yaml"
    config.write_text(
        gateway_yaml(
            database_url=database_url, upstream_base_url=f"http://127.0.0.1:{upstream_port}/v1", port=gateway_port
        ),
        encoding="utf-8",
    )
    try:
        # Start-up: once on an empty database (migrations, the file applied), once more on the same database.
        cold = start_gateway(run, config, gateway_port, workers=opts.workers, name="tunegate")
        run.startup["empty database"] = cold.ready_s
        key = create_key(gateway_port)
        unbudgeted_key = create_key(gateway_port, UNBUDGETED_TEAM)
        if opts.budget:
            set_budget(gateway_port)
        cold.stop()
        gateway = start_gateway(run, config, gateway_port, workers=opts.workers, name="tunegate")
        run.startup["existing database"] = gateway.ready_s
        label = _label(opts)
        run.memory["at ready"] = gateway.snapshot()
        _progress(f"tunegate ready in {cold.ready_s:.2f} s (empty database), {gateway.ready_s:.2f} s (existing)")

        headers = {"authorization": f"Bearer {key}"}
        for scenario in MAIN:
            call = Call("127.0.0.1", upstream_port, "/v1/chat/completions", upstream_body(scenario), DIRECT_HEADERS)
            measure(run, "fake upstream (direct)", scenario, _stream(call, scenario), upstream)
        passes = []
        for number in (1, 2):
            for scenario in MAIN:
                call = Call("127.0.0.1", gateway_port, "/v1/chat/completions", client_body(scenario), headers)
                measure(run, f"{label} #{number}", scenario, _stream(call, scenario), gateway, upstream=upstream)
            if number == 1 and opts.budget:
                for scenario in UNBUDGETED:
                    body, auth = client_body(scenario), {"authorization": f"Bearer {unbudgeted_key}"}
                    call = Call("127.0.0.1", gateway_port, "/v1/chat/completions", body, auth)
                    measure(run, f"{label} #1, no budget", scenario, call, gateway, upstream=upstream)
            passes.append(gateway.snapshot())
        run.memory["after pass 1"], run.memory["after pass 2"] = passes
        run.memory["workers"] = gateway.workers()
        if opts.workers == 1:  # with more, the write reaches one worker and the call may go to another
            run.prompt_change = first_call_after_prompt_change(gateway_port, headers)
        if opts.profile:
            run.profile = profile(run, gateway, gateway_port, headers)
        code = gateway.stop()
        run.usage_check = {
            "requests": sum(r["completed"] for r in run.rows if r["server"].startswith(label + " ")),
            "usage_rows": usage_rows(database_url),
            "exit_code": -1 if code is None else code,
        }

        if opts.scaling and opts.workers == 1:
            two = start_gateway(run, config, gateway_port, workers=2, name="tunegate (2 workers)")
            run.startup["2 workers"] = two.ready_s
            for scenario in THROUGHPUT:
                call = Call("127.0.0.1", gateway_port, "/v1/chat/completions", client_body(scenario), headers)
                measure(run, "tunegate (2 workers)", scenario, _stream(call, scenario), two, upstream=upstream)
            if opts.budget:
                body, auth = client_body(NON_STREAM_64), {"authorization": f"Bearer {unbudgeted_key}"}
                call = Call("127.0.0.1", gateway_port, "/v1/chat/completions", body, auth)
                measure(run, "tunegate (2 workers), no budget", NON_STREAM_64, call, two, upstream=upstream)
            run.memory["2 workers"] = two.snapshot()
            run.memory["2 workers pids"] = two.workers()
            two.stop()
            scale_on_replay(run, database_url, (upstream_port, gateway_port), headers)

        if opts.litellm:
            run.litellm = bench_litellm(run, upstream, upstream_port)
    finally:
        upstream.stop()
    run.load_after = os.getloadavg()
    run.seconds = time.perf_counter() - began
    return run


PROMPT_ALIAS = "bench-prompt-change"
PROMPT_ROUNDS = 5


def first_call_after_prompt_change(
    port: int, headers: dict[str, str], rounds: int = PROMPT_ROUNDS
) -> dict[str, list[float]]:
    """Milliseconds of each round: the alias's system prompt changed to one never seen (``PUT /admin/aliases``),
    then the first and the second chat completion on one connection, one after the other."""
    url = f"http://127.0.0.1:{port}"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": PROMPT_ALIAS, "messages": [{"role": "user", "content": QUESTION}]}
    found: dict[str, list[float]] = {"write": [], "first call": [], "second call": []}
    with httpx.Client(base_url=url, timeout=60) as client:
        for number in range(1, rounds + 1):
            spec = {"upstream": "fake", "model": MODEL, "system_prompt": f"{PROMPT} ({number}: {os.urandom(4).hex()})"}
            t0 = time.perf_counter()
            client.put(f"/admin/aliases/{PROMPT_ALIAS}", json=spec, headers=admin).raise_for_status()
            t1 = time.perf_counter()
            client.post("/v1/chat/completions", json=body, headers=headers).raise_for_status()
            t2 = time.perf_counter()
            client.post("/v1/chat/completions", json=body, headers=headers).raise_for_status()
            t3 = time.perf_counter()
            for what, seconds in (("write", t1 - t0), ("first call", t2 - t1), ("second call", t3 - t2)):
                found[what].append(seconds * 1000)
    _progress(report.prompt_change_line(found))
    return found


def scale_on_replay(run: Run, database_url: str, ports: tuple[int, int], headers: dict[str, str]) -> None:
    """1 worker, then 2, against ``bench.replay``: the fake upstream's answers replayed at ~30 µs a request, so
    that the 2-worker comparison is not decided by how much of the two cores the fake upstream takes."""
    work = run.options.work
    upstream_port, gateway_port = ports
    url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    completion = httpx.post(url, content=upstream_body(NON_STREAM_64), headers=DIRECT_HEADERS, timeout=30)
    stream = httpx.post(url, content=upstream_body(STREAM_64), headers=DIRECT_HEADERS, timeout=30)
    completion.raise_for_status()
    stream.raise_for_status()
    answers = work / "replay-answers.json"
    replay.save_answers(answers, completion.content, stream.content)
    port = free_port()
    server = Server(
        "replayed upstream",
        [sys.executable, "-m", "bench.replay", "--port", str(port), "--answers", str(answers)],
        env=_env({}),
        log=work / "replay.log",
        cwd=ROOT.parent,
    )
    server.start()
    config = work / "gateway-replay.yaml"
    config.write_text(
        gateway_yaml(database_url=database_url, upstream_base_url=f"http://127.0.0.1:{port}/v1", port=gateway_port),
        encoding="utf-8",
    )
    # Rounds of 1 worker then 2: this machine's speed drifts by a fifth from one minute to the next (other work
    # on the host), and alternating spreads the drift over both sides.
    rounds = 1 if run.options.duration < 5 else 2
    try:
        server.wait_ready(port, "/")
        for number in range(1, rounds + 1):
            for workers in (1, 2):
                name = (REPLAYED if workers == 1 else REPLAYED_2) + (f", round {number}" if rounds > 1 else "")
                gateway = start_gateway(run, config, gateway_port, workers=workers, name=name)
                try:
                    for scenario in THROUGHPUT:
                        body = client_body(scenario)
                        call = Call("127.0.0.1", gateway_port, "/v1/chat/completions", body, headers)
                        measure(run, name, scenario, _stream(call, scenario), gateway, upstream=server)
                finally:
                    gateway.stop()
    finally:
        server.stop()


def _label(opts: Options) -> str:
    return "tunegate" if opts.workers == 1 else f"tunegate ({opts.workers} workers)"


def _stream(call: Call, scenario: Scenario) -> Call:
    return Call(call.host, call.port, call.path, call.body, call.headers, stream=scenario.stream)


def _reset_database(url: str) -> None:
    from sqlmodel import SQLModel

    import tunegate.registry.models  # noqa: F401  (the tables)
    from tunegate.registry.db import make_engine

    engine = make_engine(url)
    with engine.begin() as connection:
        SQLModel.metadata.drop_all(connection)
        from sqlalchemy import text

        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def bench_litellm(run: Run, upstream: Server, upstream_port: int) -> dict[str, Any]:
    from bench.scenarios import ALIAS, FALLBACK_MODEL, MODEL

    opts = run.options
    _progress(f"LiteLLM {opts.litellm_version}: installing into {litellm.venv_dir(opts.work)} if needed ...")
    t0 = time.perf_counter()
    version = litellm.ensure_installed(opts.work, opts.litellm_version, log=opts.work / "litellm-install.log")
    install_s = time.perf_counter() - t0
    config = opts.work / "litellm.yaml"
    litellm.write_config(
        config,
        upstream_base_url=f"http://127.0.0.1:{upstream_port}/v1",
        model=MODEL,
        fallback_model=FALLBACK_MODEL,
        alias=ALIAS,
    )
    port = free_port()
    server = Server(
        f"LiteLLM {version}",
        litellm.command(opts.work, config, port),
        env=litellm.environment(),
        log=opts.work / "litellm.log",
        cwd=opts.work,
    )
    server.start()
    try:
        ready = server.wait_ready(port, "/health/liveliness", timeout=180)
        _progress(f"LiteLLM {version} ready in {ready:.2f} s")
        at_ready = server.snapshot()
        headers = {"authorization": f"Bearer {litellm.MASTER_KEY}"}
        label = f"LiteLLM {version}"
        for scenario in COMPARISON:
            call = Call("127.0.0.1", port, "/v1/chat/completions", client_body(scenario), headers, scenario.stream)
            measure(run, label, scenario, call, server, upstream=upstream)
        after = server.snapshot()
    finally:
        server.stop()
    return {
        "version": version,
        "label": label,
        "install_s": install_s,
        "ready_s": ready,
        "memory": {"at ready": at_ready, "after": after},
    }


def profile(run: Run, gateway: Server, port: int, headers: dict[str, str]) -> dict[str, Any]:
    """py-spy on the gateway during one more 64-connection run of each kind (outside the measured passes)."""
    from bench.profile import record, summarize
    from bench.scenarios import NON_STREAM_64, STREAM_64

    py_spy = shutil.which("py-spy", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if py_spy is None:
        _progress("--profile: py-spy is not installed (pip install py-spy); skipped")
        return {}
    found: dict[str, Any] = {}
    for scenario in (NON_STREAM_64, STREAM_64):
        out = run.options.work / f"profile-{'stream' if scenario.stream else 'non-stream'}.txt"
        call = Call("127.0.0.1", port, "/v1/chat/completions", client_body(scenario), headers, scenario.stream)
        with record(py_spy, gateway.workers()[0], out, seconds=run.options.warmup + run.options.duration):
            measure(run, f"{_label(run.options)} under py-spy", scenario, call, gateway)
        found[scenario.key] = summarize(out)
    return found


def _parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute: shorter scenarios")
    parser.add_argument("--duration", type=float, help="seconds measured per scenario (default 8; --quick 2.5)")
    parser.add_argument("--warmup", type=float, help="seconds of unrecorded load before each (default 1; quick 0.5)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2-worker throughput comparison")
    parser.add_argument("--litellm", action="store_true", help="also install and measure LiteLLM's proxy")
    parser.add_argument("--litellm-version", default=litellm.VERSION)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied first); default SQLite")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway in two extra 64-connection runs")
    parser.add_argument("--no-budget", action="store_true", help="no monthly budget on the benchmark's team")
    parser.add_argument("--output", type=Path, default=ROOT / "RESULTS.md")
    parser.add_argument("--work", type=Path, default=ROOT / ".work", help="logs, databases, the LiteLLM venv")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        duration=args.duration if args.duration is not None else (2.5 if quick else 8.0),
        workers=args.workers,
        scaling=not args.no_scaling,
        litellm=args.litellm,
        litellm_version=args.litellm_version,
        database_url=args.database_url,
        profile=args.profile,
        budget=not args.no_budget,
        output=args.output,
        work=args.work.resolve(),
        command="python -m bench.run" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
    )


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    run = bench(opts)
    text = report.markdown(run)
    opts.output.write_text(text, encoding="utf-8")
    (opts.work / "results.json").write_text(json.dumps(report.as_json(run), indent=2, default=str), encoding="utf-8")
    print()
    print(report.targets_table(run))
    print(f"\nwrote {opts.output} ({run.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
