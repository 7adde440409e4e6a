"""The tables: teams, their keys, upstreams, versioned aliases, usage records and the audit log.

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
