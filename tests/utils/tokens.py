"""Whether token counts are exact in this run: with tiktoken's encoding files (``../shared/tiktoken_cache``,
TIKTOKEN_CACHE_DIR) they are; without them they are estimates, and the tests whose figures are hand-counted skip."""

from __future__ import annotations

from tunegate.registry.tokens import count_text

TIKTOKEN_EXACT = count_text("x", "gpt-4o-mini").exact
NEEDS_ENCODINGS = (
    "needs tiktoken's encoding files (TIKTOKEN_CACHE_DIR, ../shared/tiktoken_cache): its figures are hand-counted"
)
