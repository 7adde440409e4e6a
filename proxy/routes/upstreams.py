"""/admin/upstreams: where aliases send requests, and the $NAME of each one's key (never the key)."""

from __future__ import annotations

from litestar import Controller, delete, get, put
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.proxy.auth import admin_guard
from tunegate.proxy.routes.common import AnyRequest, read, write
from tunegate.registry.models import Upstream
from tunegate.registry.upstreams import delete_upstream, get_upstream, list_upstreams, set_upstream, upstream_users


class UpstreamSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(min_length=1, max_length=512)
    api_key: str | None = Field(default=None, description="a reference, $ENV_NAME, read on each replica")


class UpstreamOut(BaseModel):
    name: str
    base_url: str
    api_key: str | None
    created_at: str
    updated_at: str
    used_by: list[str]  # live aliases whose current version sends traffic here


class UpstreamWriteOut(BaseModel):
    changed: bool
    upstream: UpstreamOut


def upstream_out(session: Session, upstream: Upstream) -> UpstreamOut:
    return UpstreamOut(
        name=upstream.name,
        base_url=upstream.base_url,
        api_key=upstream.api_key_ref,
        created_at=upstream.created_at.isoformat(),
        updated_at=upstream.updated_at.isoformat(),
        used_by=upstream_users(session=session, name=upstream.name),
    )


class UpstreamController(Controller):
    path = "/admin/upstreams"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: upstreams"]  # noqa: RUF012

    @get("/")
    async def list_upstreams(self, request: AnyRequest) -> list[UpstreamOut]:
        return await read(request, lambda s: [upstream_out(s, u) for u in list_upstreams(session=s)])

    @get("/{name:str}")
    async def show_upstream(self, request: AnyRequest, name: str) -> UpstreamOut:
        return await read(request, lambda s: upstream_out(s, get_upstream(session=s, name=name)))

    @put("/{name:str}")
    async def set_upstream(self, request: AnyRequest, name: str, data: UpstreamSet) -> UpstreamWriteOut:
        def work(session: Session, actor: str) -> UpstreamWriteOut:
            changed = set_upstream(
                session=session, name=name, base_url=data.base_url, api_key_ref=data.api_key, actor=actor
            )
            return UpstreamWriteOut(
                changed=changed, upstream=upstream_out(session, get_upstream(session=session, name=name))
            )

        return await write(request, work)

    @delete("/{name:str}", status_code=200)
    async def delete_upstream(self, request: AnyRequest, name: str) -> dict[str, str]:
        """Delete an upstream; refused (409) while a live alias points at it."""

        def work(session: Session, actor: str) -> dict[str, str]:
            delete_upstream(session=session, name=name, actor=actor)
            return {"deleted": name}

        return await write(request, work)
