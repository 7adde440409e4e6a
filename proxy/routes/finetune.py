"""Files and fine-tuning jobs per team (OpenAI's ``/v1/files`` and ``/v1/fine_tuning/jobs``), and the admin
side under ``/admin/finetune`` and ``/admin/retirements``.

A team sees its own files and jobs only; another team's id answers 404 like an id that never existed. Files
are validated here before anything is uploaded; jobs are created at the fine-tuning upstream (any
OpenAI-compatible API: ``finetune.*`` in the configuration) and then tracked by the poller. Job reads come
from the database the poller keeps, so a client's polling costs the upstream nothing.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
import httpx
import orjson
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from config import Settings
from proxy.errors import GatewayError, json_response
from proxy.finetune.background import FinetunePoller
from proxy.routes.admin import admin_guard
from proxy.routes.openai import read_json, require
from proxy.state import Gateway, gateway_of, read, transaction
from proxy.upstream.calls import UpstreamEndpoint, auth_headers, unreachable
from registry.aliases import get_alias, resolve
from registry.errors import Invalid, NotFound
from registry.finetune.jobs import (
    ALIAS_KEY,
    PURPOSES,
    TERMINAL_STATUSES,
    Outcome,
    add_event,
    alias_lineage,
    apply_upstream_job,
    canary_weight,
    create_job,
    delete_file,
    get_file,
    get_job,
    job_events,
    job_summary,
    list_external_models,
    list_files,
    list_jobs,
    promote,
    record_file,
    register_external_model,
    training_price,
    usable_training_file,
)
from registry.finetune.retirement import retirements, today
from registry.finetune.validation import ValidationReport, validate_jsonl
from registry.models import Alias, ExternalModel, FineTuneFile, FineTuneJob, FineTuneJobEvent
from registry.teams import Caller, get_team
from registry.upstreams import list_upstreams

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
UPLOAD_MODEL = "gpt-3.5-turbo-0613"  # an upload names no model: its tokens are counted for this one
_MULTIPART_OVERHEAD = 64 * 1024  # the form around the file: field names, boundaries, the purpose
_SHOWN_ERRORS = 5
_KEY_LIKE = re.compile(r"\bsk-[^\s'\"]+")


# -- plumbing --------------------------------------------------------------------------------------------


async def team_caller(request: AnyRequest) -> Caller:
    caller = await gateway_of(request).authenticate(request.headers.get("authorization"))
    if caller.role != "team":
        raise GatewayError(403, "This key may read usage only; it cannot fine-tune.", code="permission_denied")
    return caller


def _timestamp(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _upstream_names(session: Session) -> list[str]:
    return [u.name for u in list_upstreams(session=session)]


def team_upstream(gateway: Gateway, team: str, known: list[str]) -> str:
    """Where ``team``'s files go: finetune.team_upstreams[team], else finetune.upstream, else the only one."""
    settings = gateway.settings.finetune
    name = settings.team_upstreams.get(team) or settings.upstream
    if name is None and len(known) == 1:
        name = known[0]
    if name is None:
        raise GatewayError(
            400,
            "This gateway has no fine-tuning upstream for your team: an administrator sets finetune.upstream "
            "(or finetune.team_upstreams) in its configuration.",
            code="fine_tuning_not_configured",
        )
    if name not in known:
        raise GatewayError(
            400,
            f"The fine-tuning upstream '{name}' is not configured on this gateway.",
            code="fine_tuning_not_configured",
        )
    return name


async def call_upstream(
    gateway: Gateway, endpoint: UpstreamEndpoint, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await gateway.http.request(method, endpoint.base_url + path, headers=auth_headers(endpoint), **kwargs)
    except httpx.TransportError as exc:
        raise unreachable(endpoint, exc) from None


def refusal(endpoint: UpstreamEndpoint, response: httpx.Response, what: str) -> GatewayError:
    """The upstream's 4xx passed on with its message (never its key); its 401/403 concern the gateway's own
    key, so they and a 5xx become a 502."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    if endpoint.api_key:
        message = message.replace(endpoint.api_key, "***")
    message = _KEY_LIKE.sub("sk-***", message)
    status = response.status_code
    if status in (401, 403):
        return GatewayError(
            502,
            f"Upstream '{endpoint.name}' did not accept the gateway's credentials for {what}.",
            code="upstream_error",
        )
    if status < 400 or status >= 500:
        detail = f": {message}" if message else ""
        return GatewayError(
            502, f"Upstream '{endpoint.name}' answered {status} to {what}{detail}", code="upstream_error"
        )
    param = error.get("param") if isinstance(error.get("param"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    return GatewayError(status, f"Upstream '{endpoint.name}' refused {what}: {message}", param=param, code=code)


def _json(response: httpx.Response, endpoint: UpstreamEndpoint, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise refusal(endpoint, response, what)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GatewayError(502, f"Upstream '{endpoint.name}' answered {what} with something not JSON.")
    return body


# -- the OpenAI shapes -----------------------------------------------------------------------------------


def file_object(file: FineTuneFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": _timestamp(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
    }


def job_object(job: FineTuneJob) -> dict[str, Any]:
    """The upstream's last answer, with our ids, the client's metadata and the status the poller recorded."""
    obj = dict(job.detail)
    error = job.error
    if error is not None:
        error = {
            **error,
            "code": str(error.get("code") or "error"),
            "message": str(error.get("message") or ""),
            "param": error.get("param"),
        }
    obj.update(
        id=job.id,
        object="fine_tuning.job",
        model=job.model,
        status=job.status,
        training_file=job.training_file,
        validation_file=job.validation_file,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        error=error,
        metadata=job.client_metadata or None,
    )
    obj.setdefault("created_at", _timestamp(job.created_at))
    if obj.get("finished_at") is None:
        obj["finished_at"] = _timestamp(job.finished_at)
    for key, default in (("organization_id", "tunegate"), ("result_files", []), ("hyperparameters", {}), ("seed", 0)):
        obj.setdefault(key, default)
    return obj


def event_object(event: FineTuneJobEvent) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": f"ftevent-{event.id}",
        "created_at": _timestamp(event.created_at),
        "level": event.level,
        "message": event.message,
        "type": "message",
        "data": event.data or {},
    }


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Items after the one with id ``after``, in the order given (OpenAI's cursor pagination)."""
    if after:
        index = next((i for i, item in enumerate(items) if item["id"] == after), None)
        items = items[index + 1 :] if index is not None else []
    return items[:limit], len(items) > limit


def _list(data: list[dict[str, Any]], has_more: bool, *, ids: bool = False) -> Response[bytes]:
    body: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if ids:
        body.update(first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None)
    return json_response(200, orjson.dumps(body))


# -- files -----------------------------------------------------------------------------------------------


def validate_upload(content: bytes, gateway: Gateway) -> ValidationReport:
    price = training_price(gateway.prices, UPLOAD_MODEL, today())
    return validate_jsonl(content, model=UPLOAD_MODEL, training_price_per_1m=price)


def broken_file(report: ValidationReport) -> GatewayError:
    shown = "; ".join(
        f"{'file' if f.line is None else f'line {f.line}'}: {f.message}" for f in report.errors[:_SHOWN_ERRORS]
    )
    more = len(report.errors) - _SHOWN_ERRORS
    return GatewayError(
        400,
        f"The file is not valid fine-tuning data ({len(report.errors)} error(s)): {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + ". Check it whole with `tunegate finetune validate FILE`.",
        param="file",
        code="invalid_file_format",
    )


def too_large(limit: int, size: int | None) -> GatewayError:
    got = f" ({size} bytes)" if size else ""
    return GatewayError(
        413,
        f"The file is larger than this gateway accepts for fine-tuning{got}: the limit is {limit} bytes "
        "(finetune.max_file_bytes).",
        param="file",
        code="file_too_large",
    )


class FilesController(Controller):
    path = "/v1/files"
    tags = ["openai"]  # noqa: RUF012

    @post(status_code=200)
    async def create_file(self, request: AnyRequest) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        limit = gateway.settings.finetune.max_file_bytes
        try:
            form = await request.form()
        except HTTPException as exc:
            if exc.status_code == 413:
                raise too_large(limit, request.content_length) from None
            raise
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise GatewayError(
                400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in PURPOSES:
            raise GatewayError(
                400,
                f"Invalid value for 'purpose': '{purpose}'. This gateway takes files for fine-tuning only: "
                f"{', '.join(repr(p) for p in PURPOSES)}.",
                param="purpose",
                code="invalid_value",
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise GatewayError(
                400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        content = await upload.read()
        if len(content) > limit:
            raise too_large(limit, len(content))
        report = await anyio.to_thread.run_sync(validate_upload, content, gateway)
        if report.errors:
            raise broken_file(report)
        known = await transaction(gateway, _upstream_names)
        endpoint = gateway.upstream(team_upstream(gateway, caller.team, known))
        filename = upload.filename or "training.jsonl"
        answer = _json(
            await call_upstream(
                gateway,
                endpoint,
                "POST",
                "/files",
                data={"purpose": purpose},
                files={"file": (filename, content, "application/jsonl")},
            ),
            endpoint,
            "the file",
        )
        upstream_id = str(answer.get("id") or "")
        if not upstream_id:
            raise GatewayError(502, f"Upstream '{endpoint.name}' answered the upload without a file id.")

        def record(session: Session) -> FineTuneFile:
            return record_file(
                session=session,
                team_id=caller.team_id,
                upstream=endpoint.name,
                upstream_file_id=upstream_id,
                purpose=purpose,
                filename=filename,
                content=content,
                report=report,
            )

        file = await transaction(gateway, record)
        return json_response(200, orjson.dumps(file_object(file)))

    @get()
    async def list_files(
        self,
        request: AnyRequest,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = Parameter(default=10_000, ge=1, le=10_000),
        order: str = Parameter(default="desc", pattern="^(asc|desc)$"),
    ) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        files = await read(gateway, lambda s: list_files(session=s, team_id=caller.team_id, purpose=purpose or None))
        data = [file_object(f) for f in (files if order == "desc" else reversed(files))]
        page, has_more = _page(data, after, limit)
        return _list(page, has_more, ids=True)

    @get("/{file_id:str}")
    async def retrieve_file(self, request: AnyRequest, file_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        file = await read(gateway, lambda s: get_file(session=s, team_id=caller.team_id, file_id=file_id))
        return json_response(200, orjson.dumps(file_object(file)))

    @delete("/{file_id:str}", status_code=200)
    async def delete_file(self, request: AnyRequest, file_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        file = await read(gateway, lambda s: get_file(session=s, team_id=caller.team_id, file_id=file_id))
        endpoint = gateway.upstream(file.upstream)
        response = await call_upstream(gateway, endpoint, "DELETE", f"/files/{file.upstream_file_id}")
        if response.status_code not in (200, 404):  # 404: gone at the upstream already
            raise refusal(endpoint, response, "deleting the file")

        def forget(session: Session) -> None:
            delete_file(session=session, file=get_file(session=session, team_id=caller.team_id, file_id=file_id))

        await transaction(gateway, forget)
        return json_response(200, orjson.dumps({"id": file_id, "object": "file", "deleted": True}))

    @get("/{file_id:str}/content")
    async def file_content(self, request: AnyRequest, file_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        file = await read(gateway, lambda s: get_file(session=s, team_id=caller.team_id, file_id=file_id))
        endpoint = gateway.upstream(file.upstream)
        response = await call_upstream(gateway, endpoint, "GET", f"/files/{file.upstream_file_id}/content")
        if response.status_code != 200:
            raise refusal(endpoint, response, "reading the file")
        media_type = response.headers.get("content-type", "application/octet-stream")
        return Response(response.content, status_code=200, media_type=media_type)


# -- jobs ------------------------------------------------------------------------------------------------


def _metadata(body: dict[str, Any]) -> dict[str, str] | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise GatewayError(
            400, "Invalid value for 'metadata': expected an object of strings.", param="metadata", code="invalid_value"
        )
    return metadata


def _training_file(session: Session, team_id: int, file_id: str, param: str, *, needs_examples: bool) -> FineTuneFile:
    try:
        file = get_file(session=session, team_id=team_id, file_id=file_id, param=param)
    except NotFound:
        # OpenAI's answer for a file that is not there; another team's file is not there for this team.
        raise Invalid(f"invalid {param}: {file_id}", param=param) from None
    usable_training_file(file, param=param, needs_examples=needs_examples)
    return file


def _bound_alias(session: Session, caller: Caller, name: str) -> tuple[Alias, str]:
    """The alias ``name`` as ``caller`` may use it, and the upstream of its target."""
    resolved = resolve(session=session, name=name, team_id=caller.team_id, team=caller.team)
    allowed = caller.allowed_aliases is None or name in caller.allowed_aliases
    if resolved is None or not allowed or resolved.pattern is not None:
        raise GatewayError(
            404,
            f"The alias `{name}` in metadata.{ALIAS_KEY} does not exist or you do not have access to it.",
            param="metadata",
            code="model_not_found",
        )
    alias = session.get(Alias, resolved.alias_id)
    assert alias is not None
    return alias, resolved.spec.target.upstream


async def copy_file(gateway: Gateway, file: FineTuneFile, to: UpstreamEndpoint) -> str:
    """The file's id at upstream ``to``, uploading a copy from the upstream that has it."""
    source = gateway.upstream(file.upstream)
    response = await call_upstream(gateway, source, "GET", f"/files/{file.upstream_file_id}/content")
    if response.status_code != 200:
        raise refusal(source, response, f"reading file {file.id} to copy it to '{to.name}'")
    files = {"file": (file.filename, response.content, "application/jsonl")}
    answer = _json(
        await call_upstream(gateway, to, "POST", "/files", data={"purpose": file.purpose}, files=files),
        to,
        f"a copy of file {file.id}",
    )
    return str(answer.get("id") or "")


def _upstream_body(body: dict[str, Any], training: str, validation: str | None) -> dict[str, Any]:
    """The client's request with the upstream's file ids, and without the gateway's own metadata keys."""
    payload = {**body, "training_file": training}
    if validation is not None:
        payload["validation_file"] = validation
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if not k.startswith("tunegate_")}
    if metadata:
        payload["metadata"] = metadata
    else:
        payload.pop("metadata", None)
    return payload


class FineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["openai"]  # noqa: RUF012

    @post(status_code=200)
    async def create_job(self, request: AnyRequest) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        body = await read_json(request)
        require(body, "model", str, "the name of the model to fine-tune")
        training_id = require(body, "training_file", str, "the id of an uploaded file")
        validation_id = body.get("validation_file")
        if validation_id is not None and not isinstance(validation_id, str):
            raise GatewayError(
                400, "Invalid value for 'validation_file'.", param="validation_file", code="invalid_value"
            )
        metadata = _metadata(body)
        canary_weight(metadata)  # a bad tunegate_canary is refused before anything is spent
        alias_name = (metadata or {}).get(ALIAS_KEY)

        def prepare(session: Session) -> tuple[FineTuneFile, FineTuneFile | None, Alias | None, str | None]:
            training = _training_file(session, caller.team_id, training_id, "training_file", needs_examples=True)
            validation = (
                _training_file(session, caller.team_id, validation_id, "validation_file", needs_examples=False)
                if validation_id
                else None
            )
            if not alias_name:
                return training, validation, None, None
            alias, target_upstream = _bound_alias(session, caller, alias_name)
            return training, validation, alias, target_upstream

        training, validation, alias, target_upstream = await transaction(gateway, prepare)
        # A job for an alias runs where the alias will serve its result (finetune.alias_upstreams overrides).
        upstream = (
            gateway.settings.finetune.alias_upstreams.get(alias.name) or target_upstream if alias is not None else None
        ) or training.upstream
        endpoint = gateway.upstream(upstream)
        training_at = (
            training.upstream_file_id if training.upstream == upstream else await copy_file(gateway, training, endpoint)
        )
        validation_at = None
        if validation is not None:
            validation_at = (
                validation.upstream_file_id
                if validation.upstream == upstream
                else await copy_file(gateway, validation, endpoint)
            )
        answer = _json(
            await call_upstream(
                gateway,
                endpoint,
                "POST",
                "/fine_tuning/jobs",
                json=_upstream_body(body, training_at, validation_at),
            ),
            endpoint,
            "the fine-tuning job",
        )

        def record(session: Session) -> FineTuneJob:
            return create_job(
                session=session,
                team_id=caller.team_id,
                key_id=caller.key_id,
                upstream=endpoint.name,
                upstream_job=answer,
                training_file=training,
                upstream_training_file=training_at,
                validation_file=validation,
                alias=alias,
                client_metadata=metadata,
                actor=f"team {caller.team}",
            )

        job = await transaction(gateway, record)
        return json_response(200, orjson.dumps(job_object(job)))

    @get()
    async def list_jobs(
        self, request: AnyRequest, after: str | None = None, limit: int = Parameter(default=20, ge=1, le=100)
    ) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        jobs = await read(gateway, lambda s: list_jobs(session=s, team_id=caller.team_id))
        page, has_more = _page([job_object(j) for j in jobs], after, limit)
        return _list(page, has_more)

    @get("/{job_id:str}")
    async def retrieve_job(self, request: AnyRequest, job_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        job = await read(gateway, lambda s: get_job(session=s, team_id=caller.team_id, job_id=job_id))
        return json_response(200, orjson.dumps(job_object(job)))

    @post("/{job_id:str}/cancel", status_code=200)
    async def cancel_job(self, request: AnyRequest, job_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        job = await read(gateway, lambda s: get_job(session=s, team_id=caller.team_id, job_id=job_id))
        if job.status in TERMINAL_STATUSES:
            raise GatewayError(400, f"Job has already completed: {job.id} is {job.status}.", param="fine_tuning_job_id")
        endpoint = gateway.upstream(job.upstream)
        answer = _json(
            await call_upstream(gateway, endpoint, "POST", f"/fine_tuning/jobs/{job.upstream_job_id}/cancel"),
            endpoint,
            "cancelling the job",
        )

        def record(session: Session) -> tuple[FineTuneJob, Outcome | None]:
            current = get_job(session=session, team_id=caller.team_id, job_id=job_id)
            add_event(session=session, job_id=job_id, level="warn", message=f"Cancel requested by team {caller.team}")
            outcome = apply_upstream_job(
                session=session,
                job_id=job_id,
                seen_status=current.status,
                upstream_job=answer,
                prices=gateway.prices,
                actor=f"team {caller.team}",
            )
            return get_job(session=session, team_id=caller.team_id, job_id=job_id), outcome

        job, outcome = await transaction(gateway, record)
        if outcome is not None and outcome.training is not None:
            gateway.metrics.observe([outcome.training])
        return json_response(200, orjson.dumps(job_object(job)))

    @get("/{job_id:str}/events")
    async def list_events(
        self, request: AnyRequest, job_id: str, after: str | None = None, limit: int = Parameter(default=20, ge=1)
    ) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)

        def events(session: Session) -> list[FineTuneJobEvent]:
            get_job(session=session, team_id=caller.team_id, job_id=job_id)
            return job_events(session=session, job_id=job_id)

        data = [event_object(e) for e in await transaction(gateway, events)]
        page, has_more = _page(data, after, limit)
        return _list(page, has_more)

    @get("/{job_id:str}/checkpoints")
    async def list_checkpoints(self, request: AnyRequest, job_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        caller = await team_caller(request)
        job = await read(gateway, lambda s: get_job(session=s, team_id=caller.team_id, job_id=job_id))
        endpoint = gateway.upstream(job.upstream)
        params = {k: v for k, v in request.query_params.items() if k in ("after", "limit")}
        answer = _json(
            await call_upstream(
                gateway, endpoint, "GET", f"/fine_tuning/jobs/{job.upstream_job_id}/checkpoints", params=params
            ),
            endpoint,
            "listing the checkpoints",
        )
        for checkpoint in answer.get("data") or ():
            if isinstance(checkpoint, dict):
                checkpoint["fine_tuning_job_id"] = job.id
        return json_response(200, orjson.dumps(answer))


# -- admin -----------------------------------------------------------------------------------------------


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    canary: int | None = Field(default=None, ge=1, le=99, description="percent; omit to make it the target")


class ExternalModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=256, description="the model id the upstream serves it under")
    upstream: str = Field(min_length=1, max_length=128)
    base_model: str | None = Field(default=None, max_length=256)
    note: str = Field(default="", max_length=512)


def external_object(model: ExternalModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "upstream": model.upstream,
        "base_model": model.base_model,
        "note": model.note,
        "source": "external",
        "created_by": model.created_by,
        "created_at": model.created_at.isoformat(),
    }


def job_detail(session: Session, job: FineTuneJob) -> dict[str, Any]:
    """Everything ``tunegate finetune status`` shows: the job, its lineage and its events."""
    alias = session.get(Alias, job.alias_id) if job.alias_id is not None else None
    return {
        "job": job_object(job),
        "lineage": job_summary(session, job),
        "alias": alias_lineage(session=session, alias=alias) if alias is not None else None,
        "events": [event_object(e) for e in job_events(session=session, job_id=job.id)],
    }


class FinetuneAdminController(Controller):
    path = "/admin"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012

    @get("/finetune/jobs")
    async def list_all_jobs(
        self, request: AnyRequest, team: str | None = None, status: str | None = None
    ) -> Response[bytes]:
        gateway = gateway_of(request)

        def work(session: Session) -> list[dict[str, Any]]:
            team_id = get_team(session=session, name=team).id if team else None
            return [job_summary(session, job) for job in list_jobs(session=session, team_id=team_id, status=status)]

        return json_response(200, orjson.dumps({"data": await transaction(gateway, work)}))

    @get("/finetune/jobs/{job_id:str}")
    async def job_status(self, request: AnyRequest, job_id: str) -> Response[bytes]:
        gateway = gateway_of(request)
        data = await read(gateway, lambda s: job_detail(s, get_job(session=s, team_id=None, job_id=job_id)))
        return json_response(200, orjson.dumps(data))

    @post("/finetune/jobs/{job_id:str}/promote", status_code=200)
    async def promote_job(self, request: AnyRequest, job_id: str, data: PromoteRequest) -> Response[bytes]:
        gateway = gateway_of(request)
        actor: str = request.state.actor

        def work(session: Session) -> dict[str, Any]:
            job = promote(session=session, job_id=job_id, canary=data.canary, actor=actor)
            return job_detail(session, job)

        try:
            detail = await transaction(gateway, work)
        finally:
            gateway.invalidate()
        return json_response(200, orjson.dumps(detail))

    @get("/finetune/models")
    async def list_models(self, request: AnyRequest) -> Response[bytes]:
        gateway = gateway_of(request)
        models = await read(gateway, lambda s: [external_object(m) for m in list_external_models(session=s)])
        return json_response(200, orjson.dumps({"data": models}))

    @post("/finetune/models", status_code=201)
    async def register_model(self, request: AnyRequest, data: ExternalModelCreate) -> Response[bytes]:
        gateway = gateway_of(request)
        actor: str = request.state.actor

        def work(session: Session) -> dict[str, Any]:
            if data.upstream not in _upstream_names(session):
                raise Invalid(f"unknown upstream '{data.upstream}'; create it first", param="upstream")
            model = register_external_model(
                session=session,
                name=data.name,
                upstream=data.upstream,
                base_model=data.base_model,
                note=data.note,
                actor=actor,
            )
            return external_object(model)

        return json_response(201, orjson.dumps(await transaction(gateway, work)))

    @get("/finetune/lineage")
    async def lineage(self, request: AnyRequest, alias: str, team: str | None = None) -> Response[bytes]:
        gateway = gateway_of(request)

        def work(session: Session) -> dict[str, Any]:
            team_id = get_team(session=session, name=team).id if team else None
            return alias_lineage(session=session, alias=get_alias(session=session, name=alias, team_id=team_id))

        return json_response(200, orjson.dumps(await transaction(gateway, work)))

    @get("/retirements")
    async def list_retirements(
        self, request: AnyRequest, window_days: int | None = Parameter(default=None, ge=0)
    ) -> Response[bytes]:
        return json_response(200, orjson.dumps(await _retirements(gateway_of(request), window_days)))

    @post("/retirements/refresh", status_code=200)
    async def refresh_retirements(
        self, request: AnyRequest, window_days: int | None = Parameter(default=None, ge=0)
    ) -> Response[bytes]:
        """Read every upstream's model list now, instead of at the next ``retirement_check_interval``."""
        gateway = gateway_of(request)
        poller = FinetunePoller(gateway, on_loop=True)
        try:
            await anyio.to_thread.run_sync(poller.check_retirements)
        finally:
            poller.close()
        return json_response(200, orjson.dumps(await _retirements(gateway, window_days)))


async def _retirements(gateway: Gateway, window_days: int | None) -> dict[str, Any]:
    window = gateway.settings.finetune.retirement_window_days if window_days is None else window_days
    found = await transaction(gateway, lambda s: retirements(session=s, window_days=window))
    return {"today": today().isoformat(), "window_days": window, "data": [r.as_json() for r in found]}


def finetune_route_handlers(settings: Settings) -> list[type[Controller]]:
    """The controllers, the upload's body limit set from ``finetune.max_file_bytes`` (not server.max_body_bytes)."""

    class SizedFilesController(FilesController):
        request_max_body_size = settings.finetune.max_file_bytes + _MULTIPART_OVERHEAD

    return [SizedFilesController, FineTuningController, FinetuneAdminController]
