"""Upstreams: the OpenAI-compatible APIs that serve the targets. Keys are kept as ``$ENV_NAME`` references."""

from __future__ import annotations

from sqlmodel import Session, select

from registry.models import AuditEntry, Upstream, utcnow


def set_upstream(*, session: Session, name: str, base_url: str, api_key_ref: str | None, actor: str) -> bool:
    """Create or update an upstream; False when it is already as asked (nothing is written)."""
    upstream = session.exec(select(Upstream).where(Upstream.name == name)).first()
    base_url = base_url.rstrip("/")
    if upstream is not None and (upstream.base_url, upstream.api_key_ref) == (base_url, api_key_ref):
        return False
    if upstream is None:
        upstream = Upstream(name=name, base_url=base_url, api_key_ref=api_key_ref)
    else:
        upstream.base_url, upstream.api_key_ref, upstream.updated_at = base_url, api_key_ref, utcnow()
    session.add(upstream)
    session.add(AuditEntry(actor=actor, action="upstream.set", target=name, detail={"base_url": base_url}))
    session.flush()
    return True


def list_upstreams(*, session: Session) -> list[Upstream]:
    return list(session.exec(select(Upstream).order_by(Upstream.name)).all())
