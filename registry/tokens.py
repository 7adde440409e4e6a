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
from collections.abc import Callable, Sequence
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


def _encoding_file(name: str) -> Path:
    return _cache_dir() / hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()


def encoding_available(name: str) -> bool:
    """Whether tiktoken's file for encoding ``name`` is here, so that a count would be exact (nothing is loaded)."""
    return _encoding_file(name).is_file()


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any | None:
    cached = _encoding_file(name)
    if not cached.is_file():
        return None
    import tiktoken

    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cached.parent))
    return tiktoken.get_encoding(name)


def estimate_tokens(text: str) -> int:
    """Rough count when no encoding is available: ~4 ASCII characters a token, one token per other char."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def _count_in(text: str, encoding: str) -> TokenCount:
    enc = _encoding(encoding)
    if enc is None:
        return TokenCount(estimate_tokens(text), exact=False)
    return TokenCount(len(enc.encode(text, disallowed_special=())), exact=True)


def count_text(text: str, model: str) -> TokenCount:
    return _count_in(text, encoding_name(model))


def count_messages(messages: list[dict[str, Any]], model: str) -> TokenCount:
    """Prompt tokens of a chat request, by OpenAI's published formula (3 per message, 1 per name, 3 to prime)."""
    total, exact = 3, True
    for message in messages:
        if not isinstance(message, dict):
            continue  # not a message (the upstream refuses it, or a stream ends without its count): nothing to count
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

# Every encoding encoding_name() answers: a stored prompt is counted in each, since a pattern alias forwards
# whatever model a client names.
ENCODINGS = ("cl100k_base", "o200k_base")

PromptCounter = Callable[[Sequence[tuple[str, str]]], list[TokenCount]]
"""Counts ``(prompt, encoding)`` pairs: what a system message with each prompt costs in that encoding."""


def system_message_tokens(prompt: str, encoding: str) -> TokenCount:
    """What a system message with ``prompt`` costs in a chat request: 3 framing tokens, its role and its text."""
    role, text = _count_in("system", encoding), _count_in(prompt, encoding)
    return TokenCount(3 + role.tokens + text.tokens, role.exact and text.exact)


def count_system_prompt(prompt: str, model: str) -> int:
    return system_message_tokens(prompt, encoding_name(model)).tokens


def count_here(pairs: Sequence[tuple[str, str]]) -> list[TokenCount]:
    """The default :data:`PromptCounter`: in this process, loading tiktoken's encodings."""
    return [system_message_tokens(prompt, encoding) for prompt, encoding in pairs]


_counter: PromptCounter = count_here


def set_prompt_counter(counter: PromptCounter) -> PromptCounter:
    """How this process counts system prompts from now on; returns the counter it replaces. A serving process
    installs one that counts in a child process (``tunegate.proxy.serving.lean_serving_process``): the registry starts
    none."""
    global _counter
    previous, _counter = _counter, counter
    return previous


def count_system_prompts(pairs: Sequence[tuple[str, str]]) -> list[TokenCount]:
    """``(prompt, encoding)`` pairs counted by the installed counter, all in one call."""
    return _counter(pairs) if pairs else []


_system_prompts: LRUCache[tuple[str, str], int] = LRUCache(maxsize=4096)
_system_prompts_lock = threading.Lock()


def remembered_system_prompts(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """``(prompt, encoding)`` pairs' tokens, each counted once a process: those not in memory in one counter call."""
    with _system_prompts_lock:
        known = {pair: _system_prompts[pair] for pair in pairs if pair in _system_prompts}
    missing = sorted(set(pairs) - set(known))
    if missing:
        counted = {pair: count.tokens for pair, count in zip(missing, count_system_prompts(missing), strict=True)}
        with _system_prompts_lock:
            _system_prompts.update(counted)
        known.update(counted)
    return [known[pair] for pair in pairs]


def system_prompt_tokens(prompt: str, model: str) -> int:
    """What a system message with ``prompt`` costs in a chat request to ``model``, counted once a process."""
    return remembered_system_prompts([(prompt, encoding_name(model))])[0]


def encodings_loaded() -> bool:
    return bool(_encoding.cache_info().currsize)


def _main() -> None:
    """The child of :class:`tunegate.proxy.token_counting.CountingChild`: a line ``[[prompt, encoding], ...]`` in, a
    line ``[[tokens, exact], ...]`` out, until its input ends."""
    for line in sys.stdin.buffer:
        pairs = [(str(prompt), str(encoding)) for prompt, encoding in json.loads(line)]
        sys.stdout.write(json.dumps([[count.tokens, count.exact] for count in count_here(pairs)]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _main()
