"""The stored token counts of the system prompts aliases inject: counted when an alias version is written (in
the same transaction), so that the request path only reads them. One row for each prompt and encoding."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from tunegate.registry.models import SystemPromptCount, utcnow
from tunegate.registry.tokens import (
    ENCODINGS,
    count_system_prompts,
    encoding_available,
    encoding_name,
    system_prompt_tokens,
)


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def store_counts(*, session: Session, prompts: Iterable[str]) -> int:
    """Count, with the installed counter and in one call, what the table lacks for ``prompts`` in every encoding
    (and the estimates it holds where tiktoken's file is there now); returns how many counts were stored."""
    by_key = {prompt_sha256(prompt): prompt for prompt in prompts if prompt}
    if not by_key:
        return 0
    held = {
        (row.prompt_sha256, row.encoding): row.exact
        for row in session.exec(select(SystemPromptCount).where(col(SystemPromptCount.prompt_sha256).in_(by_key)))
    }
    keys = [
        (key, encoding)
        for key in sorted(by_key)  # rows written in one order everywhere: concurrent writers do not deadlock
        for encoding in ENCODINGS
        if (key, encoding) not in held or (not held[(key, encoding)] and encoding_available(encoding))
    ]
    if not keys:
        return 0
    counts = count_system_prompts([(by_key[key], encoding) for key, encoding in keys])
    now = utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(SystemPromptCount).values(
        [
            {
                "prompt_sha256": key,
                "encoding": encoding,
                "tokens": count.tokens,
                "exact": count.exact,
                "counted_at": now,
            }
            for (key, encoding), count in zip(keys, counts, strict=True)
        ]
    )
    # Another replica may store the same prompt at the same moment: the later count (the same) wins.
    excluded = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["prompt_sha256", "encoding"],
            set_={"tokens": excluded.tokens, "exact": excluded.exact, "counted_at": excluded.counted_at},
        )
    )
    return len(keys)


def stored_counts(*, session: Session, prompts: Iterable[str]) -> dict[tuple[str, str], int]:
    """``(prompt, encoding)`` → tokens, for every count of ``prompts`` the table holds."""
    by_key = {prompt_sha256(prompt): prompt for prompt in prompts if prompt}
    if not by_key:
        return {}
    rows = session.exec(
        select(SystemPromptCount.prompt_sha256, SystemPromptCount.encoding, SystemPromptCount.tokens).where(
            col(SystemPromptCount.prompt_sha256).in_(by_key)
        )
    )
    return {(by_key[key], encoding): tokens for key, encoding, tokens in rows}


def prompt_tokens(*, session: Session, prompt: str, model: str) -> int:
    """What a system message with ``prompt`` costs in a chat request to ``model``: the stored count, else counted
    (a version written before counts were stored)."""
    stored = stored_counts(session=session, prompts=[prompt]).get((prompt, encoding_name(model)))
    return stored if stored is not None else system_prompt_tokens(prompt, model)
