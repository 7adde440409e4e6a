"""Fine-tuning jobs in the registry: a team's jobs, the poller's claim on one, what an upstream's answer changes
(the status, its events, the training usage record) and, on a finished job bound to an alias, its promotion.

No HTTP here: ``proxy/finetune/service.py`` and ``proxy/finetune/background.py`` talk to the upstreams and hand
over what they answered. Every change is one transaction; a job's status moves by compare-and-set, so two
pollers (or a poller and a cancel) that saw the same change apply it once, promotion and usage included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from tunegate.registry.costing import to_e8
from tunegate.registry.counters import charge, month_of
from tunegate.registry.errors import Invalid, NotFound
from tunegate.registry.finetune.events import add_event
from tunegate.registry.finetune.files import exposed_id, usable_training_file
from tunegate.registry.finetune.promotion import canary_weight, promote_finished
from tunegate.registry.finetune.validation import Method, unfit_for
from tunegate.registry.models import Alias, FineTuneFile, FineTuneJob, utcnow
from tunegate.registry.pricing import PriceTable
from tunegate.registry.usage import Usage, insert_usage

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Outcome:
    """What applying one upstream answer did to a job."""

    job_id: str
    old_status: str
    status: str
    promoted_version: int | None = None
    training: Usage | None = None  # the training usage record this answer wrote, once committed

    @property
    def changed(self) -> bool:
        return self.status != self.old_status


def create_job(
    *,
    session: Session,
    team_id: int,
    key_id: int | None,
    upstream: str,
    upstream_job: dict[str, Any],
    training_file: FineTuneFile,
    upstream_training_file: str,
    validation_file: FineTuneFile | None,
    alias: Alias | None,
    client_metadata: dict[str, Any] | None,
    actor: str,
    method: dict[str, Any] | None = None,
) -> FineTuneJob:
    upstream_id = str(upstream_job.get("id") or "")
    if not upstream_id:
        raise Invalid(f"upstream '{upstream}' answered without a job id")
    job = FineTuneJob(
        id=exposed_id(session, FineTuneJob, upstream_id, "ftjob-"),
        upstream_job_id=upstream_id,
        team_id=team_id,
        key_id=key_id,
        upstream=upstream,
        model=str(upstream_job.get("model") or ""),
        training_file=training_file.id,
        upstream_training_file=upstream_training_file,
        validation_file=validation_file.id if validation_file else None,
        alias_id=alias.id if alias else None,
        alias=alias.name if alias else None,
        client_metadata=client_metadata,
        method=method,
        status=str(upstream_job.get("status") or "validating_files"),
        canary_weight=canary_weight(client_metadata),
        detail=upstream_job,
    )
    _copy_results(job, upstream_job)
    session.add(job)
    session.flush()
    bound = f" for alias {alias.name}" if alias else ""
    add_event(
        session=session,
        job_id=job.id,
        status=job.status,
        message=f"Created fine-tuning job {job.id}{bound} on upstream '{upstream}' by {actor}: model {job.model}, "
        f"method {method_type(job)}, training file {training_file.id} (sha256 {training_file.sha256[:12]}…)",
    )
    return job


def method_type(job: FineTuneJob) -> Method:
    """The job's method: what the client asked for, supervised when it named none."""
    kind = (job.method or {}).get("type")
    return kind if kind in ("dpo", "reinforcement") else "supervised"


def method_object(job: FineTuneJob) -> dict[str, Any]:
    """The job's ``method`` as OpenAI shows it: the type, and that type's settings (an object, maybe empty)."""
    kind = method_type(job)
    settings = (job.method or {}).get(kind)
    return {"type": kind, kind: settings if isinstance(settings, dict) else {}}


def trainable_file(file: FineTuneFile, *, method: Method, param: str, needs_examples: bool) -> None:
    """A file a job of ``method`` may train on: uploaded for fine-tuning, in that method's format (as its upload
    was checked) and, with ``needs_examples``, holding at least 10 valid examples of it."""
    usable_training_file(file, param=param, needs_examples=False)
    why = unfit_for(file.validation, method, needs_examples=needs_examples)
    if why is not None:
        raise Invalid(f"invalid {param}: {file.id} {why}", param=param)


def get_job(*, session: Session, team_id: int | None, job_id: str) -> FineTuneJob:
    """The team's job (``team_id`` None: any team's); another team's id is as unknown as a made-up one, and
    takes the same path: one query filtered by the team, no row read and then refused."""
    query = select(FineTuneJob).where(FineTuneJob.id == job_id)
    if team_id is not None:
        query = query.where(FineTuneJob.team_id == team_id)
    job = session.exec(query).first()
    if job is None:
        raise NotFound(f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id")
    return job


def list_jobs(*, session: Session, team_id: int | None, status: str | None = None) -> list[FineTuneJob]:
    """Jobs newest first (``team_id`` None: every team's)."""
    query = select(FineTuneJob)
    if team_id is not None:
        query = query.where(FineTuneJob.team_id == team_id)
    if status is not None:
        query = query.where(FineTuneJob.status == status)
    return list(session.exec(query.order_by(col(FineTuneJob.created_at).desc(), col(FineTuneJob.id).desc())))


# -- polling: claim a job, then apply what its upstream said -----------------------------------------------


def open_job_ids(*, session: Session) -> list[str]:
    query = select(FineTuneJob.id).where(col(FineTuneJob.status).not_in(TERMINAL_STATUSES))
    return list(session.exec(query.order_by(col(FineTuneJob.polled_at).asc())))


def claim_job(*, session: Session, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Take the job for ``lease_seconds`` unless another poller holds it: one conditional UPDATE, so exactly
    one of several replicas wins. A poller that dies leaves the lease to expire."""
    now = utcnow()
    result = session.exec(
        update(FineTuneJob)
        .where(
            col(FineTuneJob.id) == job_id,
            col(FineTuneJob.status).not_in(TERMINAL_STATUSES),
            or_(col(FineTuneJob.lease_until).is_(None), col(FineTuneJob.lease_until) < now),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
    )
    return result.rowcount == 1


def release_job(*, session: Session, job_id: str, owner: str) -> None:
    session.exec(
        update(FineTuneJob)
        .where(col(FineTuneJob.id) == job_id, col(FineTuneJob.lease_owner) == owner)
        .values(lease_owner=None, lease_until=None)
    )


def _copy_results(job: FineTuneJob, upstream_job: dict[str, Any]) -> None:
    model = upstream_job.get("fine_tuned_model")
    job.fine_tuned_model = model if isinstance(model, str) and model else job.fine_tuned_model
    tokens = upstream_job.get("trained_tokens")
    job.trained_tokens = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else job.trained_tokens
    error = upstream_job.get("error")
    job.error = error if isinstance(error, dict) and error else job.error


def apply_upstream_job(
    *,
    session: Session,
    job_id: str,
    seen_status: str,
    upstream_job: dict[str, Any],
    prices: PriceTable,
    actor: str,
    owner: str | None = None,
) -> Outcome | None:
    """Record what the upstream answered for a job we saw in ``seen_status``; None when another poller (or a
    cancel) changed the job first. A finished job gets its events, its training usage record and, bound to an
    alias, its promotion: all in the caller's one transaction."""
    now = utcnow()
    status = upstream_job.get("status")
    status = status if isinstance(status, str) and status else seen_status
    # Compare-and-set on the status we saw: the first statement, so it also takes the row's lock.
    result = session.exec(
        update(FineTuneJob)
        .where(col(FineTuneJob.id) == job_id, col(FineTuneJob.status) == seen_status)
        .values(status=status, polled_at=now, updated_at=now)
    )
    if result.rowcount != 1:
        return None
    if owner is not None:
        release_job(session=session, job_id=job_id, owner=owner)
    job = session.exec(
        select(FineTuneJob).where(FineTuneJob.id == job_id).execution_options(populate_existing=True)
    ).one()
    job.detail = upstream_job
    _copy_results(job, upstream_job)
    if status == seen_status:
        session.add(job)
        return Outcome(job_id, seen_status, status)
    job.finished_at = now if status in TERMINAL_STATUSES else None
    session.add(job)
    promoted, training = _on_status_change(session, job, seen_status, prices, actor)
    session.flush()
    return Outcome(job_id, seen_status, status, promoted, training)


def _on_status_change(
    session: Session, job: FineTuneJob, old: str, prices: PriceTable, actor: str
) -> tuple[int | None, Usage | None]:
    """Events for the change; on a finished job its training record and, bound to an alias, its promotion."""
    status = job.status
    if status == "succeeded":
        add_event(
            session=session,
            job_id=job.id,
            status=status,
            message=f"Status {old} → succeeded: fine-tuned model {job.fine_tuned_model}, "
            f"{job.trained_tokens if job.trained_tokens is not None else 'unknown'} trained tokens",
        )
    elif status in ("failed", "cancelled"):
        error = job.error or {}
        why = f": {error.get('message')} ({error.get('code')})" if error.get("message") else ""
        add_event(
            session=session,
            job_id=job.id,
            status=status,
            level="error" if status == "failed" else "warn",
            message=f"Status {old} → {status}{why}",
            data={"error": error} if error else None,
        )
    else:
        add_event(session=session, job_id=job.id, status=status, message=f"Status {old} → {status}")
    if status not in TERMINAL_STATUSES:
        return None, None
    training = _record_training_usage(session, job, prices) if job.trained_tokens else None
    return promote_finished(session=session, job=job, actor=actor), training


def _record_training_usage(session: Session, job: FineTuneJob, prices: PriceTable) -> Usage:
    """The job's trained tokens at its model's training price, against its team, as a ``training`` record,
    charged to the team's month like any request (budgets count training too)."""
    assert job.trained_tokens is not None
    finished = job.detail.get("finished_at")
    when = datetime.fromtimestamp(finished, UTC) if isinstance(finished, int) else utcnow()
    cost = prices.training_cost(model=job.model, day=when.date(), trained_tokens=job.trained_tokens)
    record = Usage(
        created_at=utcnow(),
        day=when.date(),
        request_id=job.id[:64],
        kind="training",
        endpoint="fine_tuning.jobs",
        team_id=job.team_id,
        key_id=job.key_id,
        alias=job.alias or "",
        upstream=job.upstream,
        model=job.model,
        served_by="training",
        prompt_tokens=job.trained_tokens,  # the trained tokens: what the training price applies to
        status_code=200,
        latency_ms=0.0,
        cost_usd=cost.usd,
        priced=cost.priced,
    )
    insert_usage(session, [record])
    charge(db=session, spend={(job.team_id, month_of(when.date())): to_e8(cost.usd)}, tokens={})
    add_event(
        session=session,
        job_id=job.id,
        message=f"Training usage recorded: {job.trained_tokens} tokens of {job.model}, "
        + (f"${cost.usd}" if cost.priced else "unpriced (no training price in the price table)"),
        data={"trained_tokens": job.trained_tokens, "cost_usd": str(cost.usd), "priced": cost.priced},
    )
    return record
