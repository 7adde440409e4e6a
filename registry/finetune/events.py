"""A fine-tuning job's event log (OpenAI's job events): written by the job's changes and by its promotion, so it
sits below both of them."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from tunegate.registry.models import FineTuneJobEvent

_MAX_EVENT = 2048


def add_event(
    *,
    session: Session,
    job_id: str,
    message: str,
    level: str = "info",
    status: str | None = None,
    data: dict[str, Any] | None = None,
) -> FineTuneJobEvent:
    event = FineTuneJobEvent(job_id=job_id, message=message[:_MAX_EVENT], level=level, status=status, data=data)
    session.add(event)
    return event


def job_events(*, session: Session, job_id: str) -> list[FineTuneJobEvent]:
    """Newest first, as OpenAI lists them."""
    return list(
        session.exec(
            select(FineTuneJobEvent).where(FineTuneJobEvent.job_id == job_id).order_by(col(FineTuneJobEvent.id).desc())
        )
    )
