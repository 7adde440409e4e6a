"""A team's training files: the row kept for each upload (its sha256 and validation report), which files a job
may train on, and the training price an upload's cost estimate uses.

The file itself lives at its upstream; a deleted file stays as a row, so the jobs trained on it keep their lineage.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import date
from decimal import Decimal

from sqlmodel import Session, col, select

from tunegate.registry.errors import Invalid, NotFound
from tunegate.registry.finetune.validation import ValidationReport
from tunegate.registry.models import FineTuneFile, FineTuneJob, utcnow
from tunegate.registry.pricing import PriceTable

PURPOSES = ("fine-tune",)  # what POST /v1/files accepts: the gateway serves no batch or assistants API
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def training_price(prices: PriceTable, model: str, on: date) -> Decimal | None:
    """USD per 1M training tokens of ``model`` on ``on``, as the price table has it; None when it has none."""
    cost = prices.training_cost(model=model, day=on, trained_tokens=1_000_000)
    return cost.usd if cost.priced else None


def exposed_id(session: Session, table: type[FineTuneFile] | type[FineTuneJob], upstream_id: str, prefix: str) -> str:
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
        id=exposed_id(session, FineTuneFile, upstream_file_id, "file-"),
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
    """The team's file (``team_id`` None: any team's); another team's id is as unknown as a made-up one, and
    takes the same path: one query filtered by the team, no row read and then refused."""
    query = select(FineTuneFile).where(FineTuneFile.id == file_id, col(FineTuneFile.deleted_at).is_(None))
    if team_id is not None:
        query = query.where(FineTuneFile.team_id == team_id)
    file = session.exec(query).first()
    if file is None:
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
