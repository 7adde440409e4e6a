"""The HTTP surface (OpenAI API, admin API, metrics, dashboard) and the command line."""

import sys

# httpx imports its own command-line client (rich, pygments, click: 7 MiB a process) whenever those happen to
# be installed; nothing here runs it. Without this, every gateway worker would carry it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
