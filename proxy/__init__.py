"""The HTTP surface (OpenAI API, admin API, metrics, dashboard) and the command line."""

import sys

# httpx imports its own command-line client (rich, pygments, click: 7 MiB a process) whenever those happen to
# be installed; nothing here runs it. Without this, every gateway worker would carry it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# uvicorn imports its file-watching reloader (watchfiles, 2.3 MiB with its Rust library) when it is installed;
# the gateway never reloads, and uvicorn falls back to its stat-based reloader when the import fails.
sys.modules.setdefault("watchfiles", None)  # type: ignore[arg-type]
