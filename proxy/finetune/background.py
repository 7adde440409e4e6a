"""The fine-tuning work a gateway process does in the background: the job poller and the retirement watch.

The work itself is plain synchronous code (httpx + the database) run on a worker thread, so a test or a
command can call :meth:`FinetunePoller.poll_once` directly; :class:`FinetuneBackground` drives it from one
task on the gateway's event loop and clears this process's alias cache after a promotion. In a serving
process the poller's requests go through the gateway's own client (``on_loop``), on its event loop: no second
HTTP stack and TLS context in every process (httpx's default transport: 2.9 MiB). Several replicas
run it at once safely: a job is claimed by a conditional UPDATE before it is polled, and its status moves by
compare-and-set, promotion and training usage in the same transaction (``registry/finetune/jobs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio.from_thread
import anyio.to_thread
import httpx
from sqlmodel import Session

from tunegate.config import resolve_secret
from tunegate.proxy.state import Gateway
from tunegate.proxy.upstream.calls import UpstreamEndpoint, auth_headers, redact, redacted
from tunegate.registry.db import session_scope
from tunegate.registry.finetune.jobs import Outcome, apply_upstream_job, claim_job, open_job_ids, release_job
from tunegate.registry.finetune.retirement import load_shutdown_dates, parse_shutdown, record_shutdown_dates
from tunegate.registry.models import FineTuneJob
from tunegate.registry.upstreams import list_upstreams

log = logging.getLogger("tunegate.finetune")

_MODELS_TIMEOUT = httpx.Timeout(10.0, connect=2.0)  # the first read of GET /v1/models runs before serving
_JOB_TIMEOUT = 30.0


class PollError(Exception):
    """An upstream answer the poller cannot use; the job stays as it was and is polled again next time."""


class FinetunePoller:
    """One pass over the open jobs, and one read of every upstream's model list: each safe on any replica."""

    def __init__(self, gateway: Gateway, *, owner: str | None = None, on_loop: bool = False) -> None:
        """``on_loop``: every call of this poller runs on a worker thread of the event loop ``gateway`` serves on
        (``anyio.to_thread``), and its requests go through ``gateway.http`` there; else through a client of its own."""
        self.gateway = gateway
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._on_loop = on_loop
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _get(self, url: str, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.Response:
        if self._on_loop:
            return anyio.from_thread.run(partial(self.gateway.http.get, url, headers=headers, timeout=timeout))
        if self._http is None:
            self._http = httpx.Client()
        return self._http.get(url, headers=headers, timeout=timeout)

    def _endpoints(self) -> dict[str, UpstreamEndpoint]:
        # Read here rather than through Gateway.upstream(): its cache belongs to the event loop's thread.
        with Session(self.gateway.engine) as session:
            return {
                u.name: UpstreamEndpoint(u.name, u.base_url, resolve_secret(u.api_key_ref))
                for u in list_upstreams(session=session)
            }

    # -- jobs ------------------------------------------------------------------------------------------

    def poll_once(self) -> list[Outcome]:
        """Poll every open job this poller can claim; returns what changed (promotions included)."""
        with Session(self.gateway.engine) as session:
            job_ids = open_job_ids(session=session)
        if not job_ids:
            return []
        endpoints = self._endpoints()
        outcomes = [self.poll_job(job_id, endpoints) for job_id in job_ids]
        return [o for o in outcomes if o is not None and o.changed]

    def poll_job(self, job_id: str, endpoints: dict[str, UpstreamEndpoint] | None = None) -> Outcome | None:
        """Claim the job, ask its upstream, apply the answer; None when another poller has it (or had it)."""
        engine = self.gateway.engine
        lease = self.gateway.settings.finetune.lease_seconds
        with session_scope(engine) as session:
            if not claim_job(session=session, job_id=job_id, owner=self.owner, lease_seconds=lease):
                return None
            job = session.get(FineTuneJob, job_id)
            assert job is not None
            upstream, upstream_job_id, seen, detail = job.upstream, job.upstream_job_id, job.status, dict(job.detail)
        try:
            endpoint = (endpoints or self._endpoints()).get(upstream)
            if endpoint is None:
                raise PollError(f"upstream '{upstream}' is not configured")
            answer = self._fetch(endpoint, upstream_job_id, detail)
            with session_scope(engine) as session:
                outcome = apply_upstream_job(
                    session=session,
                    job_id=job_id,
                    seen_status=seen,
                    upstream_job=answer,
                    prices=self.gateway.prices,
                    actor="poller",
                    owner=self.owner,
                )
            if outcome is not None and outcome.training is not None:
                self.gateway.metrics.observe([outcome.training])  # committed: count it as the writer's records are
            return outcome
        except (PollError, httpx.HTTPError) as exc:
            log.warning("polling fine-tuning job %s: %s; trying again next pass", job_id, exc)
        except Exception:
            log.exception("polling fine-tuning job %s failed; trying again next pass", job_id)
        with session_scope(engine) as session:
            release_job(session=session, job_id=job_id, owner=self.owner)
        return None

    def _fetch(self, endpoint: UpstreamEndpoint, upstream_job_id: str, detail: dict[str, Any]) -> dict[str, Any]:
        response = self._get(
            f"{endpoint.base_url}/fine_tuning/jobs/{upstream_job_id}",
            auth_headers(endpoint),
            httpx.Timeout(_JOB_TIMEOUT, connect=self.gateway.settings.server.connect_timeout),
        )
        try:
            body = redacted(response.json())  # what is stored of an upstream's answer holds none of the keys
        except ValueError:
            body = None
        if response.status_code == 404 and isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The upstream's API says it has no such job (not a proxy's 404 page): it will never finish.
            message = (
                f"upstream '{endpoint.name}' no longer knows job {upstream_job_id}: {body['error'].get('message')}"
            )
            return {**detail, "status": "failed", "error": {"code": "job_not_found", "message": message, "param": None}}
        if response.status_code != 200 or not isinstance(body, dict):
            raise PollError(f"upstream '{endpoint.name}' answered {response.status_code}")
        return body

    # -- retirement watch ------------------------------------------------------------------------------

    def check_retirements(self) -> None:
        """Read every upstream's GET /v1/models, store the shutdown dates it announces, refresh this process."""
        for endpoint in self._endpoints().values():
            try:
                response = self._get(endpoint.base_url + "/models", auth_headers(endpoint), _MODELS_TIMEOUT)
                response.raise_for_status()
                models = response.json()["data"]
                dates = {
                    redact(model["id"]): day  # stored: an upstream's ids without any key
                    for model in models
                    if isinstance(model, dict)
                    and isinstance(model.get("id"), str)
                    and (day := parse_shutdown(model.get("shutdown_date"))) is not None
                }
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("retirement watch: cannot read the models of upstream '%s': %s", endpoint.name, exc)
                continue
            with session_scope(self.gateway.engine) as session:
                record_shutdown_dates(session=session, upstream=endpoint.name, dates=dates)
        self.refresh_shutdown_dates()

    def refresh_shutdown_dates(self) -> None:
        with Session(self.gateway.engine) as session:
            self.gateway.shutdown_dates.replace(load_shutdown_dates(session=session))


class FinetuneBackground:
    """Runs the poller every ``finetune.poll_interval`` seconds and the retirement watch every
    ``finetune.retirement_check_interval``, for as long as the gateway serves."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.poller = FinetunePoller(gateway, on_loop=True)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Before the first request: a target past its shutdown date is skipped from the start.
        await self._run_step(self.poller.check_retirements)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tunegate-finetune")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.poller.close()

    async def _run(self) -> None:
        settings = self.gateway.settings.finetune
        next_poll = time.monotonic()
        next_check = next_poll + settings.retirement_check_interval
        while True:
            if time.monotonic() >= next_poll:
                outcomes = await self._run_step(self.poller.poll_once)
                if any(o.promoted_version is not None for o in outcomes or ()):
                    self.gateway.invalidate()  # this process serves the new alias version at once
                next_poll = time.monotonic() + settings.poll_interval
            if time.monotonic() >= next_check:
                await self._run_step(self.poller.check_retirements)
                next_check = time.monotonic() + settings.retirement_check_interval
            await asyncio.sleep(max(0.0, min(next_poll, next_check) - time.monotonic()))

    @staticmethod
    async def _run_step(step: Callable[[], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(step)
        except Exception:
            log.exception("fine-tuning background step %s failed; it runs again next time", step.__name__)
            return None
