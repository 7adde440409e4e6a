"""Fine-tuning in the registry: a team's training files and jobs, the jobs' events, promotion of a finished job
to the alias it is bound to, the training cost, external models and the lineage of an alias's targets.

No HTTP here: ``proxy/routes/finetune.py`` and ``proxy/finetune/background.py`` talk to the upstreams and hand
over what they answered. Every change is one transaction; a job's status moves by compare-and-set, so two
pollers (or a poller and a cancel) that saw the same change apply it once, promotion and usage included.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from registry.aliases import AliasSpec, Target, WeightedTarget, current_version, set_alias
from registry.budgets import charge, month_of
from registry.costing import to_e8
from registry.errors import Conflict, Invalid, NotFound
from registry.finetune.validation import ValidationReport
from registry.models import (
    Alias,
    ExternalModel,
    FineTuneFile,
    FineTuneJob,
    FineTuneJobEvent,
    Team,
    utcnow,
)
from registry.pricing import PriceTable
from registry.usage import Usage, insert_usage

ALIAS_KEY = "tunegate_alias"  # metadata key naming the alias a job is for
CANARY_KEY = "tunegate_canary"  # metadata key: promote as a canary at this percent first
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
PURPOSES = ("fine-tune",)  # what POST /v1/files accepts: the gateway serves no batch or assistants API
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_MAX_EVENT = 2048


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


def training_price(prices: PriceTable, model: str, on: date) -> Decimal | None:
    """USD per 1M training tokens of ``model`` on ``on``, as the price table has it; None when it has none."""
    cost = prices.training_cost(model=model, day=on, trained_tokens=1_000_000)
    return cost.usd if cost.priced else None


# -- files -----------------------------------------------------------------------------------------------


def _exposed_id(session: Session, table: type[FineTuneFile] | type[FineTuneJob], upstream_id: str, prefix: str) -> str:
    """The upstream's id when it is short, plain and not taken (two upstreams may both say ``file-1``)."""
    if _ID.match(upstream_id) and session.get(table, upstream_id) is None:
        return upstream_id
    return prefix + uuid.uuid4().hex[:24]


def record_file(
    *,
    session: Session,
    team_id: int,
    upstream: str,
    upstream_file_id: str,
    purpose: str,
    filename: str,
    content: bytes,
    report: ValidationReport | None,
) -> FineTuneFile:
    file = FineTuneFile(
        id=_exposed_id(session, FineTuneFile, upstream_file_id, "file-"),
        upstream_file_id=upstream_file_id,
        team_id=team_id,
        upstream=upstream,
        purpose=purpose,
        filename=filename[:512],
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        validation=report.to_dict() if report is not None else None,
    )
    session.add(file)
    session.flush()
    return file


def get_file(*, session: Session, team_id: int | None, file_id: str, param: str = "file_id") -> FineTuneFile:
    """The team's file (``team_id`` None: any team's); another team's id is as unknown as a made-up one."""
    file = session.get(FineTuneFile, file_id)
    if file is None or file.deleted_at is not None or (team_id is not None and file.team_id != team_id):
        raise NotFound(f"No such File object: {file_id}", param=param)
    return file


def list_files(*, session: Session, team_id: int, purpose: str | None = None) -> list[FineTuneFile]:
    """The team's files, newest first."""
    query = select(FineTuneFile).where(FineTuneFile.team_id == team_id, col(FineTuneFile.deleted_at).is_(None))
    if purpose is not None:
        query = query.where(FineTuneFile.purpose == purpose)
    return list(session.exec(query.order_by(col(FineTuneFile.created_at).desc(), col(FineTuneFile.id).desc())))


def delete_file(*, session: Session, file: FineTuneFile) -> None:
    """Kept as a row, so the jobs trained on it still show its sha256 and validation report."""
    file.deleted_at = utcnow()
    session.add(file)
    session.flush()


def usable_training_file(file: FineTuneFile, *, param: str, needs_examples: bool) -> None:
    """A file a job may train on: uploaded for fine-tuning and valid (``needs_examples``: at least 10)."""
    if file.purpose != "fine-tune":
        raise Invalid(f"invalid {param}: {file.id} was uploaded with purpose '{file.purpose}'", param=param)
    report = file.validation or {}
    if report.get("ok") is False:
        raise Invalid(f"invalid {param}: {file.id} has format errors; see `tunegate finetune validate`", param=param)
    if needs_examples and report.get("ok_for_job") is False:
        valid = report.get("valid_examples")
        raise Invalid(
            f"invalid {param}: {file.id} has {valid} valid example(s); a fine-tuning job needs at least 10",
            param=param,
        )


# -- jobs ------------------------------------------------------------------------------------------------


def canary_weight(metadata: dict[str, Any] | None) -> int | None:
    """``metadata.tunegate_canary`` (a string, as metadata values are) → a weight from 1 to 99."""
    raw = (metadata or {}).get(CANARY_KEY)
    if raw is None:
        return None
    text = str(raw).strip().removesuffix("%")
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise Invalid(f"metadata.{CANARY_KEY} must be a whole percent from 1 to 99, got {raw!r}", param="metadata")
    if not (metadata or {}).get(ALIAS_KEY):
        raise Invalid(f"metadata.{CANARY_KEY} needs metadata.{ALIAS_KEY}: the alias to canary", param="metadata")
    return int(text)


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
) -> FineTuneJob:
    upstream_id = str(upstream_job.get("id") or "")
    if not upstream_id:
        raise Invalid(f"upstream '{upstream}' answered without a job id")
    job = FineTuneJob(
        id=_exposed_id(session, FineTuneJob, upstream_id, "ftjob-"),
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
        f"training file {training_file.id} (sha256 {training_file.sha256[:12]}…)",
    )
    return job


def get_job(*, session: Session, team_id: int | None, job_id: str) -> FineTuneJob:
    """The team's job (``team_id`` None: any team's); another team's id is as unknown as a made-up one."""
    job = session.get(FineTuneJob, job_id)
    if job is None or (team_id is not None and job.team_id != team_id):
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
    if job.alias_id is None:
        return None, training
    if status != "succeeded" or not job.fine_tuned_model:
        alias = session.get(Alias, job.alias_id)
        version = alias.current_version if alias else None
        add_event(
            session=session,
            job_id=job.id,
            level="warn",
            message=f"Alias {job.alias} left as it was (version {version}): the job {status}"
            + ("" if status != "succeeded" else " without naming a fine-tuned model"),
        )
        return None, training
    if job.promoted_version is not None:
        return None, training
    try:
        alias, spec = _promotion_plan(session, job, job.canary_weight)
    except (Invalid, NotFound) as exc:
        add_event(session=session, job_id=job.id, level="warn", message=f"Not promoted: {exc.message}")
        return None, training
    return _promote(session, job, alias, spec, job.canary_weight, actor), training


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


# -- promotion -------------------------------------------------------------------------------------------


def fallback_for(old: AliasSpec, new_target: Target, data_prompt: str | None) -> Target | None:
    """The fallback once ``new_target`` serves: the base model with the prompt that stood in for tuning.

    The previous target when it carried a prompt (base + prompt was serving); else the previous fallback when
    it carried one; else that base (the fallback, or the previous target) with the system prompt most of the
    training examples share, so the base behaves as close to the fine-tune as a prompt can make it.
    """
    same = (new_target.upstream, new_target.model)
    if old.target.system_prompt and (old.target.upstream, old.target.model) != same:
        return old.target
    if old.fallback is not None and old.fallback.system_prompt:
        return old.fallback
    base = old.fallback or old.target
    if (base.upstream, base.model) == same:
        return old.fallback
    return base.model_copy(update={"system_prompt": data_prompt}) if data_prompt else base


def promotion_spec(old: AliasSpec, new_target: Target, *, data_prompt: str | None, canary: int | None) -> AliasSpec:
    """The alias version a promotion makes: ``new_target`` as the target, or as a canary at ``canary`` percent."""
    key = (new_target.upstream, new_target.model)
    others = tuple(c for c in old.canary if (c.upstream, c.model) != key)
    if canary is not None and (old.target.upstream, old.target.model) == key:
        raise Invalid(f"{new_target.model} is the alias's target already; a canary of it means nothing", param="canary")
    try:
        if canary is not None:
            added = WeightedTarget(upstream=new_target.upstream, model=new_target.model, weight=canary)
            return AliasSpec.model_validate({**old.model_dump(), "canary": [*others, added]})
        fallback = fallback_for(old, new_target, data_prompt)
        return AliasSpec(target=new_target, fallback=fallback, policy=old.policy, teams=old.teams, canary=others)
    except ValidationError as exc:
        raise Invalid(f"cannot promote: {exc.errors()[0]['msg']}", param="canary") from None


def training_prompt(session: Session, job: FineTuneJob) -> str | None:
    """The system prompt most of the job's training examples share (from the file's validation report)."""
    file = session.get(FineTuneFile, job.training_file)
    prompt = (file.validation or {}).get("most_common_system_prompt") if file else None
    return prompt if isinstance(prompt, str) and prompt else None


def _promotion_plan(session: Session, job: FineTuneJob, canary: int | None) -> tuple[Alias, AliasSpec]:
    if job.alias_id is None:
        raise Invalid(f"job {job.id} is not bound to an alias (metadata.{ALIAS_KEY})", param="job")
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise Invalid(f"job {job.id} has not succeeded (status {job.status}); nothing to promote", param="job")
    alias = session.exec(select(Alias).where(Alias.id == job.alias_id).with_for_update()).one()
    if getattr(alias, "deleted_at", None) is not None:
        raise NotFound(f"alias {alias.name} was deleted after the job started", param="alias")
    version = current_version(session=session, alias=alias)
    if version is None:
        raise NotFound(f"alias {alias.name} has no version", param="alias")
    old = AliasSpec.model_validate(version.spec)
    target = Target(upstream=job.upstream, model=job.fine_tuned_model)
    return alias, promotion_spec(old, target, data_prompt=training_prompt(session, job), canary=canary)


def _promote(session: Session, job: FineTuneJob, alias: Alias, spec: AliasSpec, canary: int | None, actor: str) -> int:
    written = set_alias(
        session=session,
        name=alias.name,
        team_id=alias.team_id,
        spec=spec,
        actor=actor,
        reason=f"promoted from job {job.id}",
    )
    number = written.version if written is not None else alias.current_version
    job.promoted_version, job.promoted_weight, job.updated_at = number, canary, utcnow()
    session.add(job)
    if canary is not None:
        how = f"as a canary taking {canary}% of its traffic"
    else:
        fallback = spec.fallback
        prompt = " with its system prompt" if fallback and fallback.system_prompt else ""
        how = "as its target" + (f"; fallback {fallback.model}{prompt}" if fallback else "; no fallback")
    add_event(
        session=session,
        job_id=job.id,
        message=f"Promoted: alias {alias.name} version {number} serves {job.fine_tuned_model} {how}",
        data={"alias": alias.name, "version": number, "canary": canary},
    )
    return number


def promote(*, session: Session, job_id: str, canary: int | None, actor: str) -> FineTuneJob:
    """Promote a succeeded job by hand (``canary``: as a canary at that percent; None: as the target).

    Repeating a promotion changes nothing; two promoters of one job at once apply it once: the first statement
    is a conditional UPDATE on the promotion state read here, which waits for and then loses to the other.
    """
    job = get_job(session=session, team_id=None, job_id=job_id)
    if canary is not None and not 1 <= canary <= 99:
        raise Invalid(f"canary must be a percent from 1 to 99, got {canary}", param="canary")
    state = (job.promoted_version, job.promoted_weight)
    claimed = session.exec(
        update(FineTuneJob)
        .where(
            col(FineTuneJob.id) == job.id,
            col(FineTuneJob.promoted_version).is_(None)
            if state[0] is None
            else col(FineTuneJob.promoted_version) == state[0],
            col(FineTuneJob.promoted_weight).is_(None)
            if state[1] is None
            else col(FineTuneJob.promoted_weight) == state[1],
        )
        .values(updated_at=utcnow())
    )
    if claimed.rowcount != 1:
        raise Conflict(f"job {job.id} was promoted by someone else just now; look at it again", param="job")
    alias, spec = _promotion_plan(session, job, canary)
    _promote(session, job, alias, spec, canary, actor)
    session.flush()
    return job


# -- external models -------------------------------------------------------------------------------------


def register_external_model(
    *, session: Session, name: str, upstream: str, base_model: str | None, note: str, actor: str
) -> ExternalModel:
    """A model fine-tuned outside the gateway, so the lineage can say where an alias target came from."""
    existing = session.exec(
        select(ExternalModel).where(ExternalModel.upstream == upstream, ExternalModel.name == name)
    ).first()
    if existing is not None:
        raise Conflict(f"model '{name}' on upstream '{upstream}' is registered already", param="name")
    model = ExternalModel(name=name, upstream=upstream, base_model=base_model, note=note, created_by=actor)
    session.add(model)
    session.flush()
    return model


def list_external_models(*, session: Session) -> list[ExternalModel]:
    return list(session.exec(select(ExternalModel).order_by(ExternalModel.upstream, ExternalModel.name)))


# -- lineage ---------------------------------------------------------------------------------------------


def validation_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    keys = (
        "model",
        "examples",
        "valid_examples",
        "tokens_total",
        "epochs",
        "estimated_billed_tokens",
        "estimated_cost_usd",
        "tokens_exact",
        "ok_for_job",
    )
    summary = {key: report.get(key) for key in keys}
    summary.update(errors=len(report.get("errors") or ()), warnings=len(report.get("warnings") or ()))
    return summary


def job_summary(session: Session, job: FineTuneJob) -> dict[str, Any]:
    """The job and the file it trained on: the last two links of a lineage."""
    team = session.get(Team, job.team_id)
    file = session.get(FineTuneFile, job.training_file)
    return {
        "job": job.id,
        "team": team.name if team else None,
        "status": job.status,
        "upstream": job.upstream,
        "base_model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "alias": job.alias,
        "promoted_version": job.promoted_version,
        "promoted_weight": job.promoted_weight,
        "training_file": None
        if file is None
        else {
            "id": file.id,
            "filename": file.filename,
            "bytes": file.bytes,
            "sha256": file.sha256,
            "deleted": file.deleted_at is not None,
            "validation": validation_summary(file.validation),
            "most_common_system_prompt": (file.validation or {}).get("most_common_system_prompt"),
        },
    }


def model_source(session: Session, upstream: str, model: str) -> dict[str, Any]:
    """Where a target model came from: a job of this gateway, a registered external fine-tune, or neither."""
    job = session.exec(
        select(FineTuneJob)
        .where(FineTuneJob.fine_tuned_model == model, FineTuneJob.upstream == upstream)
        .order_by(col(FineTuneJob.created_at).desc())
    ).first()
    if job is not None:
        return {"source": "job", **job_summary(session, job)}
    external = session.exec(
        select(ExternalModel).where(ExternalModel.upstream == upstream, ExternalModel.name == model)
    ).first()
    if external is not None:
        return {
            "source": "external",
            "base_model": external.base_model,
            "note": external.note,
            "registered_by": external.created_by,
            "registered_at": external.created_at.isoformat(),
        }
    return {"source": "upstream"}  # a model the upstream serves as it is (a base model), as far as we know


def alias_lineage(*, session: Session, alias: Alias) -> dict[str, Any]:
    """Alias version → each target's model → the job that made it → its training file (sha256) → validation.

    When the fallback (or a prompt-less base target) has no system prompt and a job's training examples share
    one, it is offered as ``suggested_fallback_prompt``.
    """
    version = current_version(session=session, alias=alias)
    if version is None:
        raise NotFound(f"alias {alias.name} has no version", param="alias")
    spec = AliasSpec.model_validate(version.spec)
    roles: list[tuple[str, Target, int | None]] = [("target", spec.target, spec.target_weight)]
    roles += [("canary", c, c.weight) for c in spec.canary]
    if spec.fallback is not None:
        roles.append(("fallback", spec.fallback, None))
    targets = []
    suggestion: str | None = None
    for role, target, weight in roles:
        source = model_source(session, target.upstream, target.model)
        prompt = ((source.get("training_file") or {}) if source["source"] == "job" else {}).get(
            "most_common_system_prompt"
        )
        suggestion = suggestion or prompt
        targets.append(
            {
                "role": role,
                "upstream": target.upstream,
                "model": target.model,
                "weight": weight,
                "system_prompt": target.system_prompt,
                **source,
            }
        )
    base = spec.fallback or spec.target
    return {
        "alias": alias.name,
        "scope": alias.scope,
        "version": version.version,
        "created_by": version.created_by,
        "reason": version.reason,
        "created_at": version.created_at.isoformat(),
        "targets": targets,
        "suggested_fallback_prompt": suggestion if suggestion and not base.system_prompt else None,
    }
