"""Where an alias's targets came from: a job of this gateway (and the file it trained on), a model registered as
fine-tuned elsewhere, or the upstream's own model; ``tunegate finetune lineage`` and an alias's ``sources`` show it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from tunegate.registry.aliases import AliasSpec, Target, current_version
from tunegate.registry.errors import Conflict, NotFound
from tunegate.registry.models import Alias, ExternalModel, FineTuneFile, FineTuneJob, Team


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
