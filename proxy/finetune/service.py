"""What fine-tuning does for a team apart from HTTP: which upstream runs its files and jobs, the calls to that
upstream and what its refusals mean, copying a file to the upstream a job runs on, starting and cancelling a
job, and reading the upstreams' model lists again.

The routes (``proxy/routes/finetune.py``) read the request, call these and shape the answer; the registry
(``registry/finetune/``) keeps the rows. Errors are the gateway's own (``GatewayError``) or the registry's.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import httpx
from sqlmodel import Session

from tunegate.proxy.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamFailed
from tunegate.proxy.finetune.background import FinetunePoller
from tunegate.proxy.state import Gateway, read, transaction
from tunegate.proxy.upstream.calls import (
    UpstreamEndpoint,
    auth_headers,
    redact,
    redacted,
    refused,
    unreachable,
    upstream_error,
)
from tunegate.registry.aliases import resolve
from tunegate.registry.errors import Invalid, NotFound
from tunegate.registry.finetune.events import add_event
from tunegate.registry.finetune.files import delete_file, get_file, record_file, training_price
from tunegate.registry.finetune.jobs import (
    TERMINAL_STATUSES,
    Outcome,
    apply_upstream_job,
    create_job,
    get_job,
    trainable_file,
)
from tunegate.registry.finetune.promotion import ALIAS_KEY, canary_weight
from tunegate.registry.finetune.retirement import today
from tunegate.registry.finetune.validation import Method, ValidationReport, validate_any_method
from tunegate.registry.models import Alias, FineTuneFile, FineTuneJob
from tunegate.registry.teams import Caller
from tunegate.registry.upstreams import list_upstreams

UPLOAD_MODEL = "gpt-3.5-turbo-0613"  # an upload names no model: its tokens are counted for this one
_SHOWN_ERRORS = 5


# -- the upstream ----------------------------------------------------------------------------------------


def upstream_names(session: Session) -> list[str]:
    return [u.name for u in list_upstreams(session=session)]


def team_upstream(gateway: Gateway, team: str, known: list[str]) -> str:
    """Where ``team``'s files go: finetune.team_upstreams[team], else finetune.upstream, else the only one."""
    settings = gateway.settings.finetune
    name = settings.team_upstreams.get(team) or settings.upstream
    if name is None and len(known) == 1:
        name = known[0]
    if name is None:
        raise InvalidRequest(
            "This gateway has no fine-tuning upstream for your team: an administrator sets finetune.upstream "
            "(or finetune.team_upstreams) in its configuration.",
            code="fine_tuning_not_configured",
        )
    if name not in known:
        raise InvalidRequest(
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
    """The upstream's 4xx passed on with its message (never a key: :func:`refused`); its 401/403 concern the
    gateway's own key, so they and a 5xx become a 502."""
    status = response.status_code
    if status < 400 or status >= 500:
        message = upstream_error(response.content).message
        detail = f": {message}" if message else ""
        return UpstreamFailed(f"Upstream '{endpoint.name}' answered {status} to {what}{detail}")
    return refused(endpoint, status, response.content, what)


def answer_json(response: httpx.Response, endpoint: UpstreamEndpoint, what: str) -> dict[str, Any]:
    """The upstream's 200 answer as a JSON object; anything else is its refusal, or a 502."""
    if response.status_code != 200:
        raise refusal(endpoint, response, what)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamFailed(f"Upstream '{endpoint.name}' answered {what} with something not JSON.", code=None)
    answer: dict[str, Any] = redacted(body)  # stored and shown: an upstream's words without any key
    return answer


async def copy_file(gateway: Gateway, file: FineTuneFile, to: UpstreamEndpoint) -> str:
    """The file's id at upstream ``to``, uploading a copy from the upstream that has it."""
    source = await gateway.upstream(file.upstream)
    response = await call_upstream(gateway, source, "GET", f"/files/{file.upstream_file_id}/content")
    if response.status_code != 200:
        raise refusal(source, response, f"reading file {file.id} to copy it to '{to.name}'")
    files = {"file": (file.filename, response.content, "application/jsonl")}
    answer = answer_json(
        await call_upstream(gateway, to, "POST", "/files", data={"purpose": file.purpose}, files=files),
        to,
        f"a copy of file {file.id}",
    )
    return str(answer.get("id") or "")


# -- files -----------------------------------------------------------------------------------------------


def validate_upload(content: bytes, gateway: Gateway) -> ValidationReport:
    price = training_price(gateway.prices, UPLOAD_MODEL, today())
    return validate_any_method(content, model=UPLOAD_MODEL, training_price_per_1m=price)  # a job names the method


def broken_file(report: ValidationReport) -> GatewayError:
    shown = "; ".join(
        f"{'file' if f.line is None else f'line {f.line}'}: {f.message}" for f in report.errors[:_SHOWN_ERRORS]
    )
    more = len(report.errors) - _SHOWN_ERRORS
    return InvalidRequest(
        f"The file is not valid fine-tuning data ({len(report.errors)} error(s)): {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + ". Check it whole with `tunegate finetune validate FILE`.",
        param="file",
        code="invalid_file_format",
    )


# -- jobs ------------------------------------------------------------------------------------------------


def _training_file(
    session: Session, team_id: int, file_id: str, param: str, *, method: Method, needs_examples: bool
) -> FineTuneFile:
    try:
        file = get_file(session=session, team_id=team_id, file_id=file_id, param=param)
    except NotFound:
        # OpenAI's answer for a file that is not there; another team's file is not there for this team.
        raise Invalid(f"invalid {param}: {file_id}", param=param) from None
    trainable_file(file, method=method, param=param, needs_examples=needs_examples)
    return file


def _bound_alias(session: Session, caller: Caller, name: str) -> tuple[Alias, str]:
    """The alias ``name`` as ``caller`` may use it, and the upstream of its target."""
    resolved = resolve(session=session, name=name, team_id=caller.team_id, team=caller.team)
    allowed = caller.allowed_aliases is None or name in caller.allowed_aliases
    if resolved is None or not allowed or resolved.pattern is not None:
        raise ModelNotFound(
            f"The alias `{name}` in metadata.{ALIAS_KEY} does not exist or you do not have access to it.",
            param="metadata",
        )
    alias = session.get(Alias, resolved.alias_id)
    assert alias is not None
    return alias, resolved.spec.target.upstream


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


# -- a team's fine-tuning --------------------------------------------------------------------------------


class TeamFinetuning:
    """The fine-tuning one team's caller asks for: the work at the upstream and its record in the registry."""

    def __init__(self, gateway: Gateway, caller: Caller) -> None:
        self.gateway = gateway
        self.caller = caller

    @property
    def actor(self) -> str:
        return f"team {self.caller.team}"

    async def upload_file(self, *, purpose: str, filename: str, content: bytes) -> FineTuneFile:
        """Validate ``content``, upload it to the team's fine-tuning upstream and record it."""
        gateway, caller = self.gateway, self.caller
        report = await anyio.to_thread.run_sync(validate_upload, content, gateway)
        if report.errors:
            raise broken_file(report)
        known = await transaction(gateway, upstream_names)
        endpoint = await gateway.upstream(team_upstream(gateway, caller.team, known))
        answer = answer_json(
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
            raise UpstreamFailed(f"Upstream '{endpoint.name}' answered the upload without a file id.", code=None)

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

        return await transaction(gateway, record)

    async def delete_file(self, file_id: str) -> None:
        """Delete the file at its upstream (gone there already is fine), then mark it deleted here."""
        gateway, team_id = self.gateway, self.caller.team_id
        file = await read(gateway, lambda s: get_file(session=s, team_id=team_id, file_id=file_id))
        endpoint = await gateway.upstream(file.upstream)
        response = await call_upstream(gateway, endpoint, "DELETE", f"/files/{file.upstream_file_id}")
        if response.status_code not in (200, 404):  # 404: gone at the upstream already
            raise refusal(endpoint, response, "deleting the file")

        def forget(session: Session) -> None:
            delete_file(session=session, file=get_file(session=session, team_id=team_id, file_id=file_id))

        await transaction(gateway, forget)

    async def file_content(self, file_id: str) -> tuple[bytes, str]:
        """The file's bytes as its upstream has them, and their media type."""
        gateway, team_id = self.gateway, self.caller.team_id
        file = await read(gateway, lambda s: get_file(session=s, team_id=team_id, file_id=file_id))
        endpoint = await gateway.upstream(file.upstream)
        response = await call_upstream(gateway, endpoint, "GET", f"/files/{file.upstream_file_id}/content")
        if response.status_code != 200:
            raise refusal(endpoint, response, "reading the file")
        return response.content, redact(response.headers.get("content-type", "application/octet-stream"))

    async def create_job(
        self,
        *,
        body: dict[str, Any],
        training_id: str,
        validation_id: str | None,
        metadata: dict[str, str] | None,
        method: dict[str, Any] | None = None,
    ) -> FineTuneJob:
        """Start the job ``body`` asks for at the upstream it runs on (copying its files there if they are
        elsewhere), and record it. ``body`` is the client's request, passed on without the gateway's metadata;
        ``method`` its checked ``method`` (None: supervised), whose format the files must have."""
        gateway, caller = self.gateway, self.caller
        canary_weight(metadata)  # a bad tunegate_canary is refused before anything is spent
        alias_name = (metadata or {}).get(ALIAS_KEY)
        kind: Method = (method or {}).get("type") or "supervised"

        def prepare(session: Session) -> tuple[FineTuneFile, FineTuneFile | None, Alias | None, str | None]:
            training = _training_file(
                session, caller.team_id, training_id, "training_file", method=kind, needs_examples=True
            )
            validation = (
                _training_file(
                    session, caller.team_id, validation_id, "validation_file", method=kind, needs_examples=False
                )
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
        endpoint = await gateway.upstream(upstream)
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
        answer = answer_json(
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
                actor=self.actor,
                method=method,
            )

        return await transaction(gateway, record)

    async def cancel_job(self, job_id: str) -> FineTuneJob:
        """Cancel the job at its upstream and apply the upstream's answer (a training record counted, if any)."""
        gateway, caller = self.gateway, self.caller
        job = await read(gateway, lambda s: get_job(session=s, team_id=caller.team_id, job_id=job_id))
        if job.status in TERMINAL_STATUSES:
            raise InvalidRequest(
                f"Job has already completed: {job.id} is {job.status}.", param="fine_tuning_job_id", code=None
            )
        endpoint = await gateway.upstream(job.upstream)
        answer = answer_json(
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
                actor=self.actor,
            )
            return get_job(session=session, team_id=caller.team_id, job_id=job_id), outcome

        cancelled, outcome = await transaction(gateway, record)
        if outcome is not None and outcome.training is not None:
            gateway.metrics.observe([outcome.training])
        return cancelled

    async def checkpoints(self, job_id: str, params: dict[str, str]) -> dict[str, Any]:
        """The upstream's list of the job's checkpoints, naming the job by the gateway's id."""
        gateway, team_id = self.gateway, self.caller.team_id
        job = await read(gateway, lambda s: get_job(session=s, team_id=team_id, job_id=job_id))
        endpoint = await gateway.upstream(job.upstream)
        answer = answer_json(
            await call_upstream(
                gateway, endpoint, "GET", f"/fine_tuning/jobs/{job.upstream_job_id}/checkpoints", params=params
            ),
            endpoint,
            "listing the checkpoints",
        )
        for checkpoint in answer.get("data") or ():
            if isinstance(checkpoint, dict):
                checkpoint["fine_tuning_job_id"] = job.id
        return answer


# -- retirements -----------------------------------------------------------------------------------------


async def refresh_retirements(gateway: Gateway) -> None:
    """Read every upstream's model list now, instead of at the next ``retirement_check_interval``."""
    poller = FinetunePoller(gateway, on_loop=True)
    try:
        await anyio.to_thread.run_sync(poller.check_retirements)
    finally:
        poller.close()
