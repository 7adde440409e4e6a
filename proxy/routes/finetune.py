"""Files and fine-tuning jobs per team (OpenAI's ``/v1/files`` and ``/v1/fine_tuning/jobs``), and the admin
side under ``/admin/finetune`` and ``/admin/retirements``.

A team sees its own files and jobs only; another team's id answers 404 like an id that never existed. The
handlers read the request and shape the answer; the work at the fine-tuning upstream (any OpenAI-compatible
API: ``finetune.*`` in the configuration) is ``proxy/finetune/service.py``'s. Job reads come from the
database the poller keeps, so a client's polling costs the upstream nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import orjson
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.config import Settings
from tunegate.proxy import auth
from tunegate.proxy.auth import admin_guard
from tunegate.proxy.calls.parsing import metadata_of, read_json, require
from tunegate.proxy.errors import GatewayError, InvalidRequest, MissingParameter, RequestTooLarge, json_response
from tunegate.proxy.finetune.service import TeamFinetuning, refresh_retirements, upstream_names
from tunegate.proxy.state import Gateway, gateway_of, read, transaction
from tunegate.registry.aliases import get_alias
from tunegate.registry.errors import Invalid
from tunegate.registry.finetune.events import job_events
from tunegate.registry.finetune.files import PURPOSES, get_file, list_files
from tunegate.registry.finetune.jobs import get_job, list_jobs, method_object, method_type
from tunegate.registry.finetune.lineage import alias_lineage, job_summary, list_external_models, register_external_model
from tunegate.registry.finetune.promotion import promote
from tunegate.registry.finetune.retirement import retirements, today
from tunegate.registry.finetune.validation import METHODS
from tunegate.registry.models import Alias, ExternalModel, FineTuneFile, FineTuneJob, FineTuneJobEvent
from tunegate.registry.teams import Caller, get_team

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
MAX_WINDOW_DAYS = 1_000_000  # today + this many days is still a date (year 4700); far more overflows: a 400
_MULTIPART_OVERHEAD = 64 * 1024  # the form around the file: field names, boundaries, the purpose


# -- plumbing --------------------------------------------------------------------------------------------


async def team_caller(request: AnyRequest) -> Caller:
    return await auth.team_caller(gateway_of(request).keys, request.headers.get("authorization"), cannot="fine-tune")


async def team_finetuning(request: AnyRequest) -> TeamFinetuning:
    return TeamFinetuning(gateway_of(request), await team_caller(request))


def _timestamp(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


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
        method=_shown_method(job),
    )
    obj.setdefault("created_at", _timestamp(job.created_at))
    if obj.get("finished_at") is None:
        obj["finished_at"] = _timestamp(job.finished_at)
    for key, default in (("organization_id", "tunegate"), ("result_files", []), ("hyperparameters", {}), ("seed", 0)):
        obj.setdefault(key, default)
    return obj


def _shown_method(job: FineTuneJob) -> dict[str, Any]:
    """The upstream's ``method`` when it shows the one asked for (with its defaults filled in), else ours."""
    shown = job.detail.get("method")
    if isinstance(shown, dict) and shown.get("type") == method_type(job):
        return shown
    return method_object(job)


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


def too_large(limit: int, size: int | None) -> GatewayError:
    got = f" ({size} bytes)" if size else ""
    return RequestTooLarge(
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
        finetuning = await team_finetuning(request)
        limit = gateway.settings.finetune.max_file_bytes
        try:
            form = await request.form()
        except HTTPException as exc:
            if exc.status_code == 413:
                raise too_large(limit, request.content_length) from None
            raise
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise MissingParameter("Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"Invalid value for 'purpose': '{purpose}'. This gateway takes files for fine-tuning only: "
                f"{', '.join(repr(p) for p in PURPOSES)}.",
                param="purpose",
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise MissingParameter("Missing required parameter: 'file'.", param="file")
        content = await upload.read()
        if len(content) > limit:
            raise too_large(limit, len(content))
        file = await finetuning.upload_file(
            purpose=purpose, filename=upload.filename or "training.jsonl", content=content
        )
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
        await (await team_finetuning(request)).delete_file(file_id)
        return json_response(200, orjson.dumps({"id": file_id, "object": "file", "deleted": True}))

    @get("/{file_id:str}/content")
    async def file_content(self, request: AnyRequest, file_id: str) -> Response[bytes]:
        content, media_type = await (await team_finetuning(request)).file_content(file_id)
        return Response(content, status_code=200, media_type=media_type)


# -- jobs ------------------------------------------------------------------------------------------------


def _method(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``method`` as OpenAI defines it, checked: ``{"type": T, T: {"hyperparameters": {...}}}``,
    a reinforcement method with its ``grader``. None when the request names none (supervised)."""
    method = body.get("method")
    if method is None:
        return None
    if not isinstance(method, dict):
        raise InvalidRequest("Invalid type for 'method': expected an object.", param="method")
    kind = method.get("type")
    if kind is None:
        raise MissingParameter("Missing required parameter: 'method.type'.", param="method.type")
    if kind not in METHODS:
        raise InvalidRequest(
            f"Invalid value for 'method.type': {kind!r}. Supported values are: 'supervised', 'dpo', "
            "and 'reinforcement'.",
            param="method.type",
        )
    for key in method:
        if key not in ("type", *METHODS):
            raise InvalidRequest(f"Unrecognized parameter: 'method.{key}'.", param=f"method.{key}")
        if key in METHODS and key != kind:
            raise InvalidRequest(
                f"'method.{key}' was given for a method of type '{kind}': its settings go in 'method.{kind}'.",
                param=f"method.{key}",
            )
    settings = method.get(kind)
    if settings is None and kind != "reinforcement":
        return method
    if settings is None:
        settings = {}  # a reinforcement method without its settings: refused below for its missing grader
    if not isinstance(settings, dict):
        raise InvalidRequest(f"Invalid type for 'method.{kind}': expected an object.", param=f"method.{kind}")
    hyperparameters = settings.get("hyperparameters")
    if hyperparameters is not None and not isinstance(hyperparameters, dict):
        raise InvalidRequest(
            f"Invalid type for 'method.{kind}.hyperparameters': expected an object.",
            param=f"method.{kind}.hyperparameters",
        )
    if kind == "reinforcement" and not isinstance(settings.get("grader"), dict):
        raise MissingParameter(
            "Missing required parameter: 'method.reinforcement.grader' (an object: the grader that scores the "
            "model's answers).",
            param="method.reinforcement.grader",
        )
    return method


class FineTuningController(Controller):
    path = "/v1/fine_tuning/jobs"
    tags = ["openai"]  # noqa: RUF012

    @post(status_code=200)
    async def create_job(self, request: AnyRequest) -> Response[bytes]:
        finetuning = await team_finetuning(request)
        body = await read_json(request)
        require(body, "model", str, "the name of the model to fine-tune")
        training_id = require(body, "training_file", str, "the id of an uploaded file")
        validation_id = body.get("validation_file")
        if validation_id is not None and not isinstance(validation_id, str):
            raise InvalidRequest("Invalid value for 'validation_file'.", param="validation_file")
        job = await finetuning.create_job(
            body=body,
            training_id=training_id,
            validation_id=validation_id,
            metadata=metadata_of(body),
            method=_method(body),
        )
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
        job = await (await team_finetuning(request)).cancel_job(job_id)
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
        finetuning = await team_finetuning(request)
        params = {k: v for k, v in request.query_params.items() if k in ("after", "limit")}
        return json_response(200, orjson.dumps(await finetuning.checkpoints(job_id, params)))


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
            job = get_job(session=session, team_id=None, job_id=job_id)
            promote(session=session, job=job, canary=data.canary, actor=actor)
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
            if data.upstream not in upstream_names(session):
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
        self, request: AnyRequest, window_days: int | None = Parameter(default=None, ge=0, le=MAX_WINDOW_DAYS)
    ) -> Response[bytes]:
        return json_response(200, orjson.dumps(await _retirements(gateway_of(request), window_days)))

    @post("/retirements/refresh", status_code=200)
    async def refresh_retirements(
        self, request: AnyRequest, window_days: int | None = Parameter(default=None, ge=0, le=MAX_WINDOW_DAYS)
    ) -> Response[bytes]:
        """Read every upstream's model list now, instead of at the next ``retirement_check_interval``."""
        gateway = gateway_of(request)
        await refresh_retirements(gateway)
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
