"""Promotion: a succeeded job's model becomes its alias's target (or a canary of it), with the base model and the
prompt that stood in for tuning kept as the fallback; by the poller when a bound job finishes, or by hand.

Every promotion is a new alias version (``tunegate.registry.aliases.set_alias``, its audit entry included) and an event
of the job, in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import Session, col, select

from tunegate.registry.aliases import AliasSpec, Target, WeightedTarget, current_version, set_alias
from tunegate.registry.errors import Conflict, Invalid, NotFound
from tunegate.registry.finetune.events import add_event
from tunegate.registry.models import Alias, FineTuneFile, FineTuneJob, utcnow

ALIAS_KEY = "tunegate_alias"  # metadata key naming the alias a job is for
CANARY_KEY = "tunegate_canary"  # metadata key: promote as a canary at this percent first


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


def promote_finished(*, session: Session, job: FineTuneJob, actor: str) -> int | None:
    """A job that just finished, bound to an alias: promoted as its metadata asked (the version written), or
    left unpromoted with an event saying why (None). A job bound to no alias, or promoted already: None."""
    if job.alias_id is None:
        return None
    if job.status != "succeeded" or not job.fine_tuned_model:
        alias = session.get(Alias, job.alias_id)
        version = alias.current_version if alias else None
        add_event(
            session=session,
            job_id=job.id,
            level="warn",
            message=f"Alias {job.alias} left as it was (version {version}): the job {job.status}"
            + ("" if job.status != "succeeded" else " without naming a fine-tuned model"),
        )
        return None
    if job.promoted_version is not None:
        return None
    try:
        alias, spec = _promotion_plan(session, job, job.canary_weight)
    except (Invalid, NotFound) as exc:
        add_event(session=session, job_id=job.id, level="warn", message=f"Not promoted: {exc.message}")
        return None
    return _promote(session, job, alias, spec, job.canary_weight, actor)


def promote(*, session: Session, job: FineTuneJob, canary: int | None, actor: str) -> FineTuneJob:
    """Promote a succeeded job by hand (``canary``: as a canary at that percent; None: as the target).

    Repeating a promotion changes nothing; two promoters of one job at once apply it once: the first statement
    is a conditional UPDATE on the promotion state of ``job`` as read, which waits for and then loses to the other.
    """
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
