"""The token-counting child: a serving process counts the system prompts of an alias write in a short-lived child
process, so that it never holds tiktoken's encodings."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence

from registry.tokens import TokenCount, count_here, encodings_loaded

log = logging.getLogger("tunegate.tokens")


def count_in_child(pairs: Sequence[tuple[str, str]]) -> list[TokenCount]:
    """The serving process's :data:`registry.tokens.PromptCounter`: one child counts all the ``(prompt, encoding)``
    pairs of one call. Where the encodings are loaded here already, or the child fails, they are counted here."""
    if not pairs:
        return []
    if not encodings_loaded():
        try:
            child = subprocess.run(
                [sys.executable, "-m", "registry.tokens"],
                input=json.dumps([list(pair) for pair in pairs]).encode(),
                capture_output=True,
                timeout=120,
                check=True,
            )
            counts = [TokenCount(int(tokens), bool(exact)) for tokens, exact in json.loads(child.stdout)]
            if len(counts) == len(pairs):
                return counts
            log.warning("the token-counting child answered %d counts for %d prompts", len(counts), len(pairs))
        except (OSError, subprocess.SubprocessError, ValueError, TypeError) as exc:
            log.warning("counting system prompts in a child process failed (%s); counting them here", exc)
    return count_here(pairs)
