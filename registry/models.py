"""The tables: teams, their keys, upstreams, versioned aliases and their prompts' token counts, usage records
and the audit log.

Times are aware UTC datetimes (``utcnow()``); SQLModel stores them as UTC on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Numeric, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


metadata = SQLModel.metadata


class TeamBase(SQLModel):
    name: str = Field(max_length=128, unique=True, index=True)


class TeamPublic(TeamBase):
    id: int
    disabled: bool
    created_at: datetime


class Team(TeamBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    key_hash: str = Field(max_length=64, unique=True, index=True)  # sha256 hex of the whole key
    prefix: str = Field(max_length=16)  # the first characters, so a person can tell keys apart
    name: str | None = Field(default=None, max_length=128)
    role: str = Field(default="team", max_length=16)  # team | finance
    allowed_aliases: list[str] | None = Field(default=None, sa_column=Column(JSON))
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Upstream(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    base_url: str = Field(max_length=512)
    api_key_ref: str | None = Field(default=None, max_length=128)  # "$ENV_NAME", never the key itself
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Alias(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "scope", name="uq_alias_name_scope"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    team_id: int | None = Field(default=None, foreign_key="team.id")  # None: a global alias
    scope: str = Field(max_length=32)  # "global" or "team:<id>", so (name, scope) is unique on every database
    current_version: int = 0
    disabled: bool = False
    deleted_at: datetime | None = None  # deleted aliases keep their versions; setting the name again restores it
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AliasVersion(SQLModel, table=True):
    __tablename__ = "alias_version"
    __table_args__ = (UniqueConstraint("alias_id", "version", name="uq_alias_version"),)
    id: int | None = Field(default=None, primary_key=True)
    alias_id: int = Field(foreign_key="alias.id", index=True)
    version: int
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_by: str = Field(max_length=128)
    reason: str = Field(default="", max_length=512)
    based_on: int | None = None  # the version this one was made from (the previous one, or a rollback's source)
    created_at: datetime = Field(default_factory=utcnow)


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage_record"
    __table_args__ = (Index("ix_usage_team_day", "team_id", "day"),)
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    created_at: datetime = Field(default_factory=utcnow)
    day: date
    request_id: str = Field(max_length=64, index=True)
    kind: str = Field(default="inference", max_length=16)  # inference | training
    endpoint: str = Field(max_length=32)
    team_id: int = Field(foreign_key="team.id")
    key_id: int | None = Field(default=None, foreign_key="api_key.id")
    end_user: str | None = Field(default=None, max_length=256)  # the request's `user`
    # the request's `metadata`, only the keys the config's usage.metadata_keys lists (registry.usage.kept_metadata)
    request_metadata: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    alias: str = Field(max_length=128)
    alias_version: int | None = None
    upstream: str = Field(max_length=128)
    model: str = Field(max_length=256)
    served_by: str = Field(max_length=16)  # model | fallback | canary
    canary_weight: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    injected_tokens: int = 0  # tokens of the system prompt the gateway added
    saved_tokens: int = 0  # the fallback prompt's tokens a fine-tuned target did not need
    status_code: int
    latency_ms: float
    ttft_ms: float | None = None
    partial: bool = False  # the client left before the end: tokens as far as known
    cost_usd: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(20, 8), nullable=False))
    priced: bool = True


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str = Field(max_length=256)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SystemPromptCount(SQLModel, table=True):
    """What a system message with one prompt costs in one encoding, counted when an alias version naming the
    prompt is written (migration 0005): the request path reads it instead of counting."""

    __tablename__ = "system_prompt_count"
    prompt_sha256: str = Field(max_length=64, primary_key=True)  # sha256 hex of the prompt's UTF-8
    encoding: str = Field(max_length=32, primary_key=True)  # tiktoken's name: cl100k_base | o200k_base
    tokens: int
    exact: bool = True  # False: tiktoken's file was not there, an estimate (counted again once it is)
    counted_at: datetime = Field(default_factory=utcnow)


# -- finance: budgets, rate limits and the counters that enforce them (migration 0004) ----------------------


class TeamBudget(SQLModel, table=True):
    __tablename__ = "team_budget"
    team_id: int = Field(foreign_key="team.id", primary_key=True)
    monthly_usd: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))  # the hard limit
    soft_pct: int = 80  # the alert threshold, percent of monthly_usd
    alert_webhook: str | None = Field(default=None, max_length=512)  # POSTed once a month per threshold crossed
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TeamSpend(SQLModel, table=True):
    """Month-to-date spend per team, charged as each request ends: what the hard limit is checked against."""

    __tablename__ = "team_spend"
    team_id: int = Field(foreign_key="team.id", primary_key=True)
    month: str = Field(max_length=7, primary_key=True)  # "2026-11", UTC
    # Units of 1e-8 USD (the cost_usd quantum): integer increments are exact and atomic on every database.
    spent_e8: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class BudgetAlert(SQLModel, table=True):
    """A threshold crossed: the primary key makes the alert once per team, month and level across replicas."""

    __tablename__ = "budget_alert"
    team_id: int = Field(foreign_key="team.id", primary_key=True)
    month: str = Field(max_length=7, primary_key=True)
    level: str = Field(max_length=8, primary_key=True)  # soft | hard
    spent_usd: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class RateLimit(SQLModel, table=True):
    __tablename__ = "rate_limit"
    scope: str = Field(max_length=32, primary_key=True)  # "team:<id>" or "key:<id>"
    team_id: int = Field(foreign_key="team.id", index=True)
    key_id: int | None = Field(default=None, foreign_key="api_key.id")
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute
    updated_at: datetime = Field(default_factory=utcnow)


class RateCounter(SQLModel, table=True):
    """Requests and tokens of one scope in one clock minute, shared by every gateway process."""

    __tablename__ = "rate_counter"
    scope: str = Field(max_length=32, primary_key=True)
    minute: int = Field(primary_key=True)  # minutes since the Unix epoch, UTC
    requests: int = 0
    tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


# -- fine-tuning: files, jobs and their events, external models, model retirements (migration 0003) --------


class FineTuneFile(SQLModel, table=True):
    """A training file a team uploaded through the gateway; the content stays with the upstream."""

    __tablename__ = "finetune_file"
    id: str = Field(max_length=128, primary_key=True)  # what clients see: the upstream's id, or our own file-…
    upstream_file_id: str = Field(max_length=256)
    team_id: int = Field(foreign_key="team.id", index=True)
    upstream: str = Field(max_length=128)
    purpose: str = Field(max_length=32)
    filename: str = Field(max_length=512)
    bytes: int
    sha256: str = Field(max_length=64)
    validation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # ValidationReport.to_dict()
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None  # deleted files stay for the lineage of the jobs trained on them


class FineTuneJob(SQLModel, table=True):
    __tablename__ = "finetune_job"
    id: str = Field(max_length=128, primary_key=True)  # what clients see: the upstream's id, or our own ftjob-…
    upstream_job_id: str = Field(max_length=256)
    team_id: int = Field(foreign_key="team.id", index=True)
    key_id: int | None = Field(default=None, foreign_key="api_key.id")
    upstream: str = Field(max_length=128)
    model: str = Field(max_length=256)  # the base model being fine-tuned
    training_file: str = Field(foreign_key="finetune_file.id", max_length=128)
    upstream_training_file: str = Field(max_length=256)  # the file's id at the job's upstream (a copy if need be)
    validation_file: str | None = Field(default=None, foreign_key="finetune_file.id", max_length=128)
    alias_id: int | None = Field(default=None, foreign_key="alias.id")  # metadata.tunegate_alias, resolved
    alias: str | None = Field(default=None, max_length=128)
    client_metadata: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # The fine-tuning method as the client gave it ({"type": "dpo", "dpo": {...}}); None: supervised.
    method: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    status: str = Field(max_length=32, index=True)
    fine_tuned_model: str | None = Field(default=None, max_length=256)
    trained_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    canary_weight: int | None = None  # promote as a canary at this weight (metadata.tunegate_canary)
    promoted_version: int | None = None  # the alias version the promotion made; set in the same transaction
    promoted_weight: int | None = None  # None: promoted as the target; N: as a canary at N percent
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # the upstream's
    lease_owner: str | None = Field(default=None, max_length=128)  # the poller working on it, until lease_until
    lease_until: datetime | None = None
    polled_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class FineTuneJobEvent(SQLModel, table=True):
    __tablename__ = "finetune_job_event"
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="finetune_job.id", max_length=128, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    level: str = Field(default="info", max_length=8)  # info | warn | error
    status: str | None = Field(default=None, max_length=32)  # the status the job moved to, if it moved
    message: str = Field(max_length=2048)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ExternalModel(SQLModel, table=True):
    """A model fine-tuned outside the gateway (an Azure deployment, a vLLM LoRA adapter), usable as a target."""

    __tablename__ = "external_model"
    __table_args__ = (UniqueConstraint("upstream", "name", name="uq_external_model"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=256)
    upstream: str = Field(max_length=128)
    base_model: str | None = Field(default=None, max_length=256)
    note: str = Field(default="", max_length=512)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class UpstreamModel(SQLModel, table=True):
    """A model an upstream announces a shutdown date for, as read from its GET /v1/models."""

    __tablename__ = "upstream_model"
    __table_args__ = (UniqueConstraint("upstream", "model", name="uq_upstream_model"),)
    id: int | None = Field(default=None, primary_key=True)
    upstream: str = Field(max_length=128)
    model: str = Field(max_length=256)
    shutdown_date: date
    checked_at: datetime = Field(default_factory=utcnow)


# -- stored objects: which team owns a stored response or chat completion (migrations 0007, 0009) --------------


class StoredObject(SQLModel, table=True):
    """An object the upstream stored for the team that created it (a response, ``store`` by default; a chat
    completion with ``store: true``): only that team may read, change, delete or continue it; another team's id
    is answered as an unknown one."""

    __tablename__ = "stored_object"
    id: str = Field(max_length=256, primary_key=True)  # the upstream's id (resp_…, chatcmpl-…), which clients see
    kind: str = Field(max_length=32)  # "response" or "chat.completion": each is found at its own endpoints only
    team_id: int = Field(foreign_key="team.id", index=True)
    upstream: str = Field(max_length=128)  # where it is stored: later calls on it go there
    alias: str = Field(max_length=256)  # shown as the object's model
    model: str = Field(max_length=256)  # the target that served it
    meta: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # chat: the list filters
    created_at: datetime = Field(default_factory=utcnow)
