"""/admin/teams: the teams, each one's keys counted; renaming a team renames it in the aliases that list it."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.config.names import TEAM_NAME
from tunegate.proxy.auth import admin_guard
from tunegate.proxy.routes.common import AnyRequest, read, write
from tunegate.proxy.routes.keys import KeyOut, key_out
from tunegate.registry.aliases import (
    list_aliases,
    rename_team,
)
from tunegate.registry.models import Team
from tunegate.registry.teams import (
    create_team,
    get_team,
    key_status,
    list_keys,
    list_teams,
    set_team_disabled,
)


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=TEAM_NAME.pattern)


class TeamChange(BaseModel):
    """Rename a team, or disable it (its keys stop working at once) or enable it again."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=TEAM_NAME.pattern)
    disabled: bool | None = None


class TeamOut(BaseModel):
    id: int
    name: str
    disabled: bool
    created_at: str
    active_keys: int | None = None


class TeamDetail(TeamOut):
    keys: list[KeyOut]
    aliases: list[str]  # the team's own aliases


def team_out(team: Team, active_keys: int | None = None) -> TeamOut:
    assert team.id is not None
    return TeamOut(
        id=team.id,
        name=team.name,
        disabled=team.disabled,
        created_at=team.created_at.isoformat(),
        active_keys=active_keys,
    )


class TeamController(Controller):
    path = "/admin/teams"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: teams"]  # noqa: RUF012

    @get("/")
    async def list_teams(self, request: AnyRequest) -> list[TeamOut]:
        def work(session: Session) -> list[TeamOut]:
            active: dict[int, int] = {}
            for record, team in list_keys(session=session):
                if key_status(record, team) == "active":
                    active[record.team_id] = active.get(record.team_id, 0) + 1
            return [team_out(t, active.get(t.id or 0, 0)) for t in list_teams(session=session)]

        return await read(request, work)

    @post("/", status_code=201)
    async def create_team(self, request: AnyRequest, data: TeamCreate) -> TeamOut:
        return await write(request, lambda s, actor: team_out(create_team(session=s, name=data.name, actor=actor)))

    @get("/{name:str}")
    async def show_team(self, request: AnyRequest, name: str) -> TeamDetail:
        def work(session: Session) -> TeamDetail:
            team = get_team(session=session, name=name, param="name")
            keys = [key_out(k, t) for k, t in list_keys(session=session, team=name)]
            aliases = [row.alias.name for row in list_aliases(session=session, team=name)]
            active = sum(k.status == "active" for k in keys)
            return TeamDetail(**team_out(team, active).model_dump(), keys=keys, aliases=aliases)

        return await read(request, work)

    @patch("/{name:str}")
    async def change_team(self, request: AnyRequest, name: str, data: TeamChange) -> TeamOut:
        def work(session: Session, actor: str) -> TeamOut:
            team = get_team(session=session, name=name, param="name")
            if data.name is not None:
                team = rename_team(session=session, name=name, new_name=data.name, actor=actor)
            if data.disabled is not None:
                team = set_team_disabled(session=session, name=team.name, disabled=data.disabled, actor=actor)
            return team_out(team)

        return await write(request, work)
