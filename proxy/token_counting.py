"""The token-counting child: a serving process counts the system prompts it injects in a short-lived child
process, so that it never holds tiktoken's encodings (about 46 MiB a process)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterable

from registry.tokens import count_system_prompt, encodings_loaded, remember_system_prompts, uncounted_system_prompts

log = logging.getLogger("tunegate.tokens")


def count_system_prompts_apart(pairs: Iterable[tuple[str, str]]) -> None:
    """Count the ``(prompt, model)`` pairs not counted yet in a short-lived child process, so that
    :func:`registry.tokens.system_prompt_tokens` answers them from memory and a serving process never holds tiktoken's
    encodings (about 46 MiB a process) for the prompts it injects. Where the encodings are loaded here
    already, or the child fails, they are counted here."""
    missing = uncounted_system_prompts(pairs)
    if not missing:
        return
    counts: list[int] | None = None
    if not encodings_loaded():
        try:
            child = subprocess.run(
                [sys.executable, "-m", "registry.tokens"],
                input=json.dumps(missing).encode(),
                capture_output=True,
                timeout=120,
                check=True,
            )
            counts = [int(n) for n in json.loads(child.stdout)]
        except (OSError, subprocess.SubprocessError, ValueError, TypeError) as exc:
            log.warning("counting system prompts in a child process failed (%s); counting them here", exc)
    if counts is None or len(counts) != len(missing):
        counts = [count_system_prompt(prompt, model) for prompt, model in missing]
    remember_system_prompts(zip(missing, counts, strict=True))
