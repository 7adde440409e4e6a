"""Token counting with the model's own encoding (tiktoken), and a marked estimate where it cannot load.

tiktoken downloads its encoding files on first use; a closed network cannot, so we only ask tiktoken for an
encoding whose file is already in ``TIKTOKEN_CACHE_DIR`` (or tiktoken's default cache) and otherwise estimate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cachetools import LRUCache

log = logging.getLogger("tunegate.tokens")

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# Families that use o200k_base; everything else older is cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool  # False: tiktoken's encoding file was not available, so this is an estimate


def base_model(model: str) -> str:
    """``ft:gpt-3.5-turbo-0613:org::id`` → ``gpt-3.5-turbo-0613``; other ids unchanged."""
    if model.startswith("ft:"):
        return model.split(":", 2)[1]
    return model


def encoding_name(model: str) -> str:
    name = base_model(model)
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _cache_dir() -> Path:
    explicit = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "data-gym-cache"


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any | None:
    cached = _cache_dir() / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()
    if not cached.is_file():
        return None
    import tiktoken

    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cached.parent))
    return tiktoken.get_encoding(name)


def estimate_tokens(text: str) -> int:
    """Rough count when no encoding is available: ~4 ASCII characters a token, one token per other char."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def count_text(text: str, model: str) -> TokenCount:
    enc = _encoding(encoding_name(model))
    if enc is None:
        return TokenCount(estimate_tokens(text), exact=False)
    return TokenCount(len(enc.encode(text, disallowed_special=())), exact=True)


def count_messages(messages: list[dict[str, Any]], model: str) -> TokenCount:
    """Prompt tokens of a chat request, by OpenAI's published formula (3 per message, 1 per name, 3 to prime)."""
    total, exact = 3, True
    for message in messages:
        total += 3
        for key in ("role", "content", "name"):
            value = message.get(key)
            if isinstance(value, list):  # content parts: count the text parts
                value = "".join(p.get("text", "") for p in value if isinstance(p, dict))
            if isinstance(value, str) and value:
                counted = count_text(value, model)
                total += counted.tokens + (1 if key == "name" else 0)
                exact = exact and counted.exact
    return TokenCount(total, exact)


# -- the system prompts the gateway injects ----------------------------------------------------------------

_system_prompts: LRUCache[tuple[str, str], int] = LRUCache(maxsize=4096)
_system_prompts_lock = threading.Lock()


def count_system_prompt(prompt: str, model: str) -> int:
    return 3 + count_text("system", model).tokens + count_text(prompt, model).tokens


def system_prompt_tokens(prompt: str, model: str) -> int:
    """What a system message with ``prompt`` costs in a chat request: 3 framing tokens, its role and its text."""
    with _system_prompts_lock:
        counted = _system_prompts.get((prompt, model))
    if counted is None:
        counted = count_system_prompt(prompt, model)
        with _system_prompts_lock:
            _system_prompts[(prompt, model)] = counted
    return counted


def uncounted_system_prompts(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(prompt, model)`` pairs :func:`system_prompt_tokens` would have to count (not in memory yet)."""
    with _system_prompts_lock:
        return sorted({pair for pair in pairs if pair not in _system_prompts})


def remember_system_prompts(counts: Iterable[tuple[tuple[str, str], int]]) -> None:
    """Counts made elsewhere (a child process), answered from memory by :func:`system_prompt_tokens`."""
    with _system_prompts_lock:
        for pair, counted in counts:
            _system_prompts[pair] = counted


def encodings_loaded() -> bool:
    return bool(_encoding.cache_info().currsize)


def _main() -> None:
    """The child of :func:`proxy.token_counting.count_system_prompts_apart`: ``[[prompt, model], ...]`` in,
    ``[tokens, ...]`` out."""
    pairs = json.loads(sys.stdin.buffer.read())
    json.dump([count_system_prompt(prompt, model) for prompt, model in pairs], sys.stdout)


if __name__ == "__main__":
    _main()
