"""Upstreams: the OpenAI-compatible APIs that serve the targets. Keys are kept as ``$ENV_NAME`` references."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlmodel import Session, select

from tunegate.config import env_ref
from tunegate.config.names import upstream_name_problem
from tunegate.registry.aliases import list_aliases
from tunegate.registry.audit import record as audit
from tunegate.registry.errors import Conflict, Invalid, NotFound
from tunegate.registry.models import Upstream, utcnow


def _check(name: str, base_url: str, api_key_ref: str | None) -> str:
    problem = upstream_name_problem(name)
    if problem is not None:
        raise Invalid(problem, param="name")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid(
            f"'base_url' must be an http(s) URL such as https://api.openai.com/v1, not '{base_url}'", param="base_url"
        )
    if api_key_ref is not None and env_ref(api_key_ref) is None:
        raise Invalid(
            "write 'api_key' as $ENV_NAME and set that environment variable on every gateway replica; "
            "keys are never stored",
            param="api_key",
        )
    return base_url.rstrip("/")


def set_upstream(*, session: Session, name: str, base_url: str, api_key_ref: str | None, actor: str) -> bool:
    """Create or update an upstream; False when it is already as asked (nothing is written)."""
    base_url = _check(name, base_url, api_key_ref)
    upstream = session.exec(select(Upstream).where(Upstream.name == name)).first()
    if upstream is not None and (upstream.base_url, upstream.api_key_ref) == (base_url, api_key_ref):
        return False
    created = upstream is None
    if upstream is None:
        upstream = Upstream(name=name, base_url=base_url, api_key_ref=api_key_ref)
    else:
        upstream.base_url, upstream.api_key_ref, upstream.updated_at = base_url, api_key_ref, utcnow()
    session.add(upstream)
    audit(
        session=session,
        actor=actor,
        action="upstream.set",
        target=name,
        base_url=base_url,
        api_key=api_key_ref,
        created=created,
    )
    session.flush()
    return True


def list_upstreams(*, session: Session) -> list[Upstream]:
    return list(session.exec(select(Upstream).order_by(Upstream.name)).all())


def get_upstream(*, session: Session, name: str) -> Upstream:
    upstream = session.exec(select(Upstream).where(Upstream.name == name)).first()
    if upstream is None:
        raise NotFound(f"no upstream named '{name}'", param="name")
    return upstream


def upstream_users(*, session: Session, name: str) -> list[str]:
    """The live aliases whose current version sends traffic to ``name`` (as target, canary or fallback)."""
    users = []
    for row in list_aliases(session=session):
        if any(upstream == name for _, upstream in row.spec.upstreams()):
            users.append(row.alias.name + (f" (team {row.team})" if row.team else ""))
    return users


def delete_upstream(*, session: Session, name: str, actor: str) -> None:
    """Delete an upstream no live alias points at."""
    upstream = get_upstream(session=session, name=name)
    users = upstream_users(session=session, name=name)
    if users:
        raise Conflict(
            f"upstream '{name}' is used by {', '.join(users)}; point those aliases elsewhere (or delete them) first",
            param="name",
        )
    session.delete(upstream)
    audit(session=session, actor=actor, action="upstream.delete", target=name)
    session.flush()
