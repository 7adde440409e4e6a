"""LiteLLM's proxy in its own virtual environment (bench/.work/litellm-venv), pointed at the same fake upstream.

Installed on first use with pip from the package registry; later runs reuse the environment when its LiteLLM
version is the one asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from bench.scenarios import UPSTREAM_KEY

VERSION = "1.108.7"
MASTER_KEY = "sk-bench-litellm-master"


def venv_dir(work: Path) -> Path:
    return work / "litellm-venv"


def installed_version(work: Path) -> str | None:
    python = venv_dir(work) / "bin" / "python"
    if not python.exists():
        return None
    result = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_installed(work: Path, version: str = VERSION, log: Path | None = None) -> str:
    """The LiteLLM version installed in the venv, installing ``version`` (with the proxy extra) if needed."""
    found = installed_version(work)
    if found == version:
        return found
    venv = venv_dir(work)
    # The base interpreter, not this venv's: the LiteLLM venv must not see tunegate's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    out = log.open("ab") if log else subprocess.DEVNULL
    env = environment()
    try:
        run = {"check": True, "stdout": out, "stderr": out, "env": env, "cwd": work}
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], **run)  # type: ignore[call-overload]
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], **run)  # type: ignore[call-overload]
        subprocess.run([*pip, f"litellm[proxy]=={version}"], **run)  # type: ignore[call-overload]
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    found = installed_version(work)
    if found is None:
        raise RuntimeError(f"LiteLLM did not install into {venv}")
    return found


def write_config(path: Path, *, upstream_base_url: str, model: str, fallback_model: str, alias: str) -> None:
    """The nearest LiteLLM equivalent of the gateway's alias: a model name with a fallback deployment.

    LiteLLM has no per-model injected system prompt; its master key stands in for tunegate's team keys, and
    without a database it keeps no spend records.
    """
    config = {
        "model_list": [
            {
                "model_name": alias,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream_base_url,
                    "api_key": UPSTREAM_KEY,
                },
            },
            {
                "model_name": alias + "-fallback",
                "litellm_params": {
                    "model": f"openai/{fallback_model}",
                    "api_base": upstream_base_url,
                    "api_key": UPSTREAM_KEY,
                },
            },
        ],
        "router_settings": {"fallbacks": [{alias: [alias + "-fallback"]}]},
        "litellm_settings": {"set_verbose": False, "json_logs": False},
        "general_settings": {"master_key": MASTER_KEY},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def command(work: Path, config: Path, port: int) -> list[str]:
    return [
        str(venv_dir(work) / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def environment() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "TUNEGATE_", "VIRTUAL_ENV", "PYTHON", "PROMETHEUS_"))
    }
    env.update(LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", NO_DOCS="True")
    return env
