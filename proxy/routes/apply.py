"""/admin/apply: a gateway YAML applied to the registry (or only compared with it: dry_run), as at start."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Controller, post
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from tunegate.config import ConfigError, parse_settings
from tunegate.proxy.auth import admin_guard
from tunegate.proxy.errors import InvalidRequest
from tunegate.proxy.routes.common import AnyRequest
from tunegate.proxy.state import gateway_of
from tunegate.registry.bootstrap import apply_settings
from tunegate.registry.errors import Conflict


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(description="the parsed gateway YAML; its teams, upstreams and aliases are applied")
    source: str = Field(default="<apply>", max_length=256, description="the file's name, for messages")
    dry_run: bool = False
    prune: bool = Field(default=False, description="also delete aliases and upstreams the file does not name")


class ChangeOut(BaseModel):
    kind: str  # team | upstream | alias
    name: str
    action: str  # create | update | delete
    team: str | None
    fields: dict[str, dict[str, Any]]  # field → {"before", "after"}
    version: int | None


class ApplyOut(BaseModel):
    dry_run: bool
    changes: list[ChangeOut]


class ApplyController(Controller):
    path = "/admin/apply"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: apply"]  # noqa: RUF012

    @post("/", status_code=200)
    async def apply(self, request: AnyRequest, data: ApplyIn) -> ApplyOut:
        """Bring teams, upstreams and aliases to what the configuration says; the answer is the diff."""
        try:
            settings = parse_settings(data.config, data.source)
        except ConfigError as exc:
            raise InvalidRequest(str(exc), param="config", code="invalid_config") from None
        gateway = gateway_of(request)
        actor: str = request.state.actor

        def run() -> ApplyOut:
            try:
                changes = apply_settings(gateway.engine, settings, actor=actor, dry_run=data.dry_run, prune=data.prune)
            except IntegrityError:
                raise Conflict("another change was made at the same moment; apply again") from None
            return ApplyOut(dry_run=data.dry_run, changes=[ChangeOut(**c.as_dict()) for c in changes])

        try:
            return await anyio.to_thread.run_sync(run)
        finally:
            if not data.dry_run:
                gateway.invalidate()
