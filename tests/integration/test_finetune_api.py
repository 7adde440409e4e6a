"""Files and fine-tuning jobs through the gateway with the openai SDK, against the fake upstream: from a JSONL
file to a promoted alias, per team, with the failures a user can cause."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from sqlmodel import Session

from tests.utils.finetune import (
    FIXTURES,
    MAX_FILE_BYTES,
    QUESTION,
    RETIRING,
    SECOND_KEY,
    WRONG_KEY,
    FinetuneEnv,
    fake_training_tokens,
    finetune_env,
)
from tests.utils.gateways import ADMIN_KEY, METRICS_TOKEN, PUDONG_PROMPT
from tests.utils.openai_schema import validate
from tests.utils.processes import run_tunegate
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.proxy.calls.budgets import LAZY_CHARGE_SECONDS
from tunegate.proxy.finetune.background import FinetunePoller
from tunegate.registry.costing import to_e8
from tunegate.registry.counters import month_of, spent_e8
from tunegate.registry.db import session_scope
from tunegate.registry.finetune.jobs import claim_job, release_job
from tunegate.registry.finetune.retirement import days_left_by_alias
from tunegate.registry.finetune.validation import validate_path
from tunegate.registry.models import FineTuneFile
from tunegate.registry.teams import get_team


def error_message(exc: openai.APIStatusError) -> str:
    """The message of the error the gateway answered (the SDK prefixes its own text to ``exc.message``)."""
    assert isinstance(exc.body, dict)
    message: str = exc.body["message"]
    return message


LIBRARY_PROMPT = "You are the help desk of the Riverside public library. Answer briefly."


@pytest.fixture(scope="module")
def env(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinetuneEnv]:
    with finetune_env(own_database_url, fake_upstream, tmp_path_factory.mktemp("finetune")) as environment:
        yield environment


# -- the four steps ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_upload_train_promote_and_serve_pudong_support(env: FinetuneEnv) -> None:
    client = env.client()
    version_before, _, _ = env.alias("pudong-support")
    served, how, messages = env.chat("pudong-support")
    assert (served, how) == ("gpt-3.5-turbo", "model")
    assert messages == [{"role": "system", "content": PUDONG_PROMPT}, *QUESTION]  # base model + the long prompt

    # 1-2. prepare and upload the data
    data = (FIXTURES / "valid_12.jsonl").read_bytes()
    raw_file = client.files.with_raw_response.create(file=("valid_12.jsonl", data), purpose="fine-tune")
    uploaded = raw_file.parse()
    validate(raw_file.http_response.json(), "OpenAIFile")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (len(data), "valid_12.jsonl", "fine-tune")
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).read() == data  # the upstream holds it
    listed = client.files.with_raw_response.list()
    validate(listed.http_response.json(), "ListFilesResponse")
    assert uploaded.id in [f.id for f in listed.parse()]

    # 3. create the job for the alias
    raw_job = client.fine_tuning.jobs.with_raw_response.create(
        model="gpt-3.5-turbo-0613", training_file=uploaded.id, metadata={"tunegate_alias": "pudong-support"}
    )
    job = raw_job.parse()
    validate(raw_job.http_response.json(), "FineTuningJob")
    assert (job.status, job.training_file, job.metadata) == (
        "validating_files",
        uploaded.id,
        {"tunegate_alias": "pudong-support"},
    )
    sent = [r for r in env.fake.requests(50) if r["path"] == "/v1/fine_tuning/jobs"][-1]["json"]
    assert "metadata" not in sent  # the gateway's own keys stay with the gateway
    assert sent["training_file"] == env.job(job.id).upstream_training_file

    assert env.drive(job.id) == "succeeded"
    raw_done = client.fine_tuning.jobs.with_raw_response.retrieve(job.id)
    done = raw_done.parse()
    validate(raw_done.http_response.json(), "FineTuningJob")
    assert done.fine_tuned_model == f"ft:gpt-3.5-turbo-0613:fake-org::{job.id[-6:]}"
    assert done.trained_tokens == fake_training_tokens(FIXTURES / "valid_12.jsonl")

    # 4. use the model: the alias moved by itself
    version, spec, row = env.alias("pudong-support")
    assert version == version_before + 1
    assert (row.reason, row.created_by) == (f"promoted from job {job.id}", "poller")
    assert (spec.target.model, spec.target.upstream, spec.target.system_prompt) == (done.fine_tuned_model, "fake", None)
    assert spec.fallback is not None
    assert (spec.fallback.model, spec.fallback.system_prompt) == ("gpt-3.5-turbo", PUDONG_PROMPT)
    served, how, messages = env.chat("pudong-support")
    assert (served, how, messages) == (done.fine_tuned_model, "model", QUESTION)  # no injected prompt

    # the lineage `tunegate alias show` prints: alias version → model → job → training file → validation
    shown = run_tunegate(
        ["alias", "show", "pudong-support"],
        env={"TUNEGATE_URL": env.gateway.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY},
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    sha256 = hashlib.sha256(data).hexdigest()
    assert f"version {version}" in shown.stdout and done.fine_tuned_model in shown.stdout
    assert job.id in shown.stdout and sha256[:12] in shown.stdout

    env.fake.fault(model=done.fine_tuned_model, status=503)
    served, how, messages = env.chat("pudong-support")
    assert (served, how) == ("gpt-3.5-turbo", "fallback")
    assert messages == [{"role": "system", "content": PUDONG_PROMPT}, *QUESTION]

    events = client.fine_tuning.jobs.with_raw_response.list_events(job.id, limit=50)
    validate(events.http_response.json(), "ListFineTuningJobEventsResponse")
    messages_seen = [e.message for e in events.parse()]
    assert messages_seen[-1].startswith(f"Created fine-tuning job {job.id} for alias pudong-support")
    statuses = [m for m in reversed(messages_seen) if m.startswith("Status")]
    assert statuses == [
        "Status validating_files → queued",
        "Status queued → running",
        f"Status running → succeeded: fine-tuned model {done.fine_tuned_model}, {done.trained_tokens} trained tokens",
    ]
    assert any(m.startswith(f"Promoted: alias pudong-support version {version} serves") for m in messages_seen)
    checkpoints = client.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id)
    validate(checkpoints.http_response.json(), "ListFineTuningJobCheckpointsResponse")
    assert [c.fine_tuning_job_id for c in checkpoints.parse()] == [job.id]


def test_training_usage_is_the_trained_tokens_at_the_training_price(env: FinetuneEnv) -> None:
    metric_before = _team_cost_metric(env, "airport-cs")
    job_id = env.start_job(None, model="gpt-3.5-turbo-0613")
    assert env.drive(job_id) == "succeeded"
    metric_after = _team_cost_metric(env, "airport-cs")
    trained = fake_training_tokens(FIXTURES / "valid_12.jsonl")
    [record] = env.training_usage(job_id)
    with Session(env.gw.engine) as session:
        team_id = get_team(session=session, name="airport-cs").id
    assert team_id is not None
    # ft:gpt-3.5-turbo*: $8.00 per 1M training tokens (config/prices.yaml, effective 2023-11-06)
    expected = (Decimal(trained) * Decimal("8.00") / Decimal(1_000_000)).quantize(Decimal("0.00000001"))
    assert (record.team_id, record.kind, record.prompt_tokens, record.model) == (
        team_id,
        "training",
        trained,
        "gpt-3.5-turbo-0613",
    )
    assert (record.cost_usd, record.priced) == (expected, True)
    assert round(record.cost_usd, 2) == round(Decimal(trained) * 8 / 1_000_000, 2)
    spent_before = _settled_spend(env, team_id, month_of(record.day))  # earlier requests' charges included
    assert env.drive(job_id) == "succeeded" and len(env.training_usage(job_id)) == 1  # recorded once
    # charged to the team's month, so budgets count training too
    assert _settled_spend(env, team_id, month_of(record.day)) == spent_before
    assert spent_before >= to_e8(expected)
    assert metric_after - metric_before == pytest.approx(float(expected))  # Prometheus counts it, as reports do
    assert _team_cost_metric(env, "airport-cs") == metric_after  # once


def _settled_spend(env: FinetuneEnv, team_id: int, month: str) -> int:
    """The team's month-to-date spend once the charges still being gathered (a team without a budget's are
    committed within LAZY_CHARGE_SECONDS) have landed: two reads that agree."""
    reads: list[int] = []

    def agreed() -> int | None:
        with Session(env.gw.engine) as session:
            reads.append(spent_e8(db=session, team_id=team_id, month=month))
        return reads[-1] if reads[-2:-1] == reads[-1:] else None

    return eventually(agreed, what="two reads of the spend that agree", interval=LAZY_CHARGE_SECONDS + 0.1)


def _team_cost_metric(env: FinetuneEnv, team: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in httpx.get(
            env.gateway.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        ).text.splitlines()
        if line.startswith("tunegate_cost_usd_total{") and f'team="{team}"' in line
    )


def test_fallback_prompt_comes_from_the_training_data(env: FinetuneEnv) -> None:
    assert validate_path(FIXTURES / "valid_12.jsonl").most_common_system_prompt == LIBRARY_PROMPT
    before, old, _ = env.alias("library-desk")
    job_id = env.start_job("library-desk")
    assert env.drive(job_id) == "succeeded"
    version, spec, _ = env.alias("library-desk")
    assert version > before
    assert spec.target.model == env.job(job_id).fine_tuned_model
    assert spec.fallback is not None  # the old base, now with the prompt the examples share
    assert (spec.fallback.model, spec.fallback.system_prompt) == (old.target.model, LIBRARY_PROMPT)
    lineage = env.gateway.admin("GET", "/admin/finetune/lineage", params={"alias": "library-desk"}).json()
    target = lineage["targets"][0]
    assert (target["role"], target["source"], target["job"]) == ("target", "job", job_id)
    assert target["training_file"]["sha256"] == hashlib.sha256((FIXTURES / "valid_12.jsonl").read_bytes()).hexdigest()
    assert target["training_file"]["validation"]["valid_examples"] == 12


def test_a_failed_job_leaves_the_alias_as_it_was(env: FinetuneEnv) -> None:
    before, spec_before, _ = env.alias("failing-desk")
    env.fake.fault(fine_tune="fail")
    client = env.client()
    job_id = env.start_job("failing-desk")
    assert env.drive(job_id) == "failed"
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job_id)
    validate(raw.http_response.json(), "FineTuningJob")
    failed = raw.parse()
    assert failed.error is not None and failed.error.code == "invalid_training_file"
    assert env.alias("failing-desk")[:2] == (before, spec_before)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]
    assert any("→ failed: The job failed due to an invalid training file" in m for m in events)
    assert f"Alias failing-desk left as it was (version {before}): the job failed" in events
    assert env.training_usage(job_id) == []  # the upstream billed no tokens


def test_cancel_leaves_the_alias_and_says_why(env: FinetuneEnv) -> None:
    before = env.alias("failing-desk")[0]
    client = env.client()
    job_id = env.start_job("failing-desk")
    cancelled = client.fine_tuning.jobs.with_raw_response.cancel(job_id)
    validate(cancelled.http_response.json(), "FineTuningJob")
    assert cancelled.parse().status == "cancelled"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job_id)]
    assert "Cancel requested by team airport-cs" in events
    assert f"Alias failing-desk left as it was (version {before}): the job cancelled" in events
    assert env.alias("failing-desk")[0] == before
    with pytest.raises(openai.BadRequestError, match="already completed"):
        client.fine_tuning.jobs.cancel(job_id)


def test_list_jobs_pages_with_after_and_limit(env: FinetuneEnv) -> None:
    client = env.client("other-team")
    ids = [env.start_job(None, team="other-team") for _ in range(3)]
    raw = client.fine_tuning.jobs.with_raw_response.list(limit=2)
    validate(raw.http_response.json(), "ListPaginatedFineTuningJobsResponse")
    first = raw.parse()
    assert [j.id for j in first.data] == ids[::-1][:2] and first.has_more
    rest = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [j.id for j in rest.data][:1] == [ids[0]]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=2)][:3] == ids[::-1]  # the SDK follows the pages


# -- teams see their own ----------------------------------------------------------------------------------


def test_another_teams_file_and_job_are_not_there(env: FinetuneEnv) -> None:
    file_id = env.upload()
    job_id = env.start_job(None)
    other = env.client("other-team")
    for call in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.fine_tuning.jobs.retrieve(job_id),
        lambda: other.fine_tuning.jobs.cancel(job_id),
        lambda: other.fine_tuning.jobs.list_events(job_id),
        lambda: other.fine_tuning.jobs.checkpoints.list(job_id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert file_id not in [f.id for f in other.files.list()]
    assert job_id not in [j.id for j in other.fine_tuning.jobs.list()]
    with pytest.raises(openai.BadRequestError) as refused:
        other.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert refused.value.body is not None and refused.value.param == "training_file"
    with pytest.raises(openai.NotFoundError):
        env.client().fine_tuning.jobs.retrieve("ftjob-does-not-exist")


def test_deleted_file_is_gone_for_the_team_but_kept_for_lineage(env: FinetuneEnv) -> None:
    client = env.client()
    file_id = env.upload()
    deleted = client.files.with_raw_response.delete(file_id)
    validate(deleted.http_response.json(), "DeleteFileResponse")
    assert deleted.parse().deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    with pytest.raises(openai.BadRequestError, match=f"invalid training_file: {file_id}"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)


# -- bad input ---------------------------------------------------------------------------------------------


def test_upload_refusals(env: FinetuneEnv) -> None:
    client = env.client()
    line = (FIXTURES / "valid_12.jsonl").read_bytes().splitlines(keepends=True)[0]
    big = line * (MAX_FILE_BYTES // len(line) + 1)
    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert too_big.value.status_code == 413 and "20000 bytes" in too_big.value.message
    with pytest.raises(openai.APIStatusError) as way_too_big:  # refused before it is read whole
        client.files.create(file=("huge.jsonl", line * 1000), purpose="fine-tune")
    assert way_too_big.value.status_code == 413

    with pytest.raises(openai.BadRequestError, match="purpose") as purpose:
        client.files.create(file=("train.jsonl", line), purpose="batch")
    assert purpose.value.param == "purpose"

    with pytest.raises(openai.BadRequestError) as broken:
        client.files.create(file=("mixed.jsonl", (FIXTURES / "invalid_mixed.jsonl").read_bytes()), purpose="fine-tune")
    message = error_message(broken.value)
    assert message.startswith("The file is not valid fine-tuning data (7 error(s)): line 1: 'messages' is dict")
    assert [f"line {n}: " in message for n in range(1, 8)] == [True] * 5 + [False] * 2  # the first five
    assert message.endswith("; and 2 more. Check it whole with `tunegate finetune validate FILE`.")
    assert broken.value.param == "file"


def test_job_refusals(env: FinetuneEnv) -> None:
    client = env.client()
    few = env.upload("duplicate.jsonl")  # 4 examples: a file may hold them, a job needs 10
    with pytest.raises(openai.BadRequestError, match="4 valid example"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=few)
    with pytest.raises(openai.BadRequestError, match="invalid training_file: file-nope"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-nope")
    good = env.upload()
    for alias in ("other-only", "no-such-alias"):  # another team's alias and none at all: the same answer
        with pytest.raises(openai.NotFoundError, match=f"alias `{alias}`"):
            client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=good, metadata={"tunegate_alias": alias})
    with pytest.raises(openai.BadRequestError, match="tunegate_canary"):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=good,
            metadata={"tunegate_alias": "canary-desk", "tunegate_canary": "150"},
        )
    with pytest.raises(openai.BadRequestError, match="'model'"):
        client.fine_tuning.jobs.create(model="", training_file=good)


def test_upstream_refusal_is_passed_on_without_its_key(env: FinetuneEnv) -> None:
    client = env.client()
    file_id = env.upload()
    with Session(env.gw.engine) as session:
        row = session.get(FineTuneFile, file_id)
        assert row is not None
        upstream_id = row.upstream_file_id
    httpx.delete(f"{env.fake.base_url}/files/{upstream_id}", headers={"authorization": f"Bearer {UPSTREAM_KEY}"})
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert error_message(refused.value) == (
        f"Upstream 'fake' refused the fine-tuning job: invalid training_file: {upstream_id}"
    )

    with pytest.raises(openai.InternalServerError) as denied:  # the upstream refused the gateway's own key
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=env.upload(), metadata={"tunegate_alias": "wrong-key-desk"}
        )
    assert denied.value.status_code == 502
    assert WRONG_KEY not in denied.value.message and WRONG_KEY[-4:] not in denied.value.message
    assert "did not accept the gateway's credentials" in denied.value.message


# -- providers and replicas --------------------------------------------------------------------------------


def test_a_job_for_an_alias_on_another_provider_runs_there(env: FinetuneEnv) -> None:
    client = env.client()
    file_id = env.upload()  # goes to the team's fine-tuning upstream, "fake"
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id, metadata={"tunegate_alias": "second-desk"}
    )
    paths = [(r["method"], r["path"], r["headers"]["authorization"]) for r in env.second.requests(50)]
    assert ("POST", "/v1/files", f"Bearer {SECOND_KEY}") in paths  # the file copied across
    assert ("POST", "/v1/fine_tuning/jobs", f"Bearer {SECOND_KEY}") in paths
    assert env.job(job.id).upstream == "second"
    assert env.drive(job.id) == "succeeded"
    _, spec, _ = env.alias("second-desk")
    assert (spec.target.upstream, spec.target.model) == ("second", env.job(job.id).fine_tuned_model)
    raw = client.chat.completions.with_raw_response.create(model="second-desk", messages=QUESTION)
    assert (raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"]) == (spec.target.model, "model")


def test_one_poller_wins_each_job_and_promotion_happens_once(env: FinetuneEnv) -> None:
    before = env.alias("canary-desk")[0]
    job_id = env.start_job("canary-desk")
    with session_scope(env.gw.engine) as session:
        assert claim_job(session=session, job_id=job_id, owner="replica-a", lease_seconds=30)
    with session_scope(env.gw.engine) as session:
        assert not claim_job(session=session, job_id=job_id, owner="replica-b", lease_seconds=30)
    assert FinetunePoller(env.gw, owner="replica-b").poll_job(job_id) is None  # a's lease holds
    with session_scope(env.gw.engine) as session:
        release_job(session=session, job_id=job_id, owner="replica-a")

    pollers = [FinetunePoller(env.gw, owner=f"replica-{n}") for n in range(4)]
    barrier = threading.Barrier(len(pollers))
    errors: list[BaseException] = []

    def run(poller: FinetunePoller) -> None:
        try:
            for _ in range(12):
                barrier.wait(timeout=20)
                poller.poll_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for poller in pollers:
        poller.close()
    assert errors == []
    assert env.job(job_id).status == "succeeded"
    assert env.alias("canary-desk")[0] == before + 1
    assert sum(m.startswith("Promoted:") for m in env.events(job_id)) == 1
    assert sum(m.startswith("Status running → succeeded") for m in env.events(job_id)) == 1
    assert len(env.training_usage(job_id)) == 1


def test_canary_first_then_promote_by_hand(env: FinetuneEnv) -> None:
    before, old, _ = env.alias("canary-desk")
    job_id = env.start_job("canary-desk", tunegate_canary="10")
    assert env.drive(job_id) == "succeeded"
    model = env.job(job_id).fine_tuned_model
    version, spec, _ = env.alias("canary-desk")
    assert version == before + 1
    assert spec.target == old.target and spec.fallback == old.fallback
    assert [(c.model, c.weight) for c in spec.canary] == [(model, 10)]

    promoted = env.gateway.admin("POST", f"/admin/finetune/jobs/{job_id}/promote", json={})
    assert promoted.status_code == 200, promoted.text
    version, spec, row = env.alias("canary-desk")
    assert version == before + 2 and row.created_by == "admin" and row.reason == f"promoted from job {job_id}"
    assert (spec.target.model, spec.canary, spec.fallback) == (model, (), old.fallback)
    again = env.gateway.admin("POST", f"/admin/finetune/jobs/{job_id}/promote", json={})
    assert again.status_code == 200 and env.alias("canary-desk")[0] == before + 2  # nothing new

    unfinished = env.start_job("canary-desk")
    refused = env.gateway.admin("POST", f"/admin/finetune/jobs/{unfinished}/promote", json={"canary": 5})
    assert refused.status_code == 400 and "has not succeeded" in refused.json()["error"]["message"]
    missing = env.gateway.admin("POST", "/admin/finetune/jobs/ftjob-nope/promote", json={})
    assert missing.status_code == 404
    env.drive(unfinished)


def test_admin_routes_want_the_admin_key(env: FinetuneEnv) -> None:
    headers = {"authorization": f"Bearer {env.gateway.keys['airport-cs']}"}
    for method, path in (("GET", "/admin/finetune/jobs"), ("GET", "/admin/retirements")):
        response = httpx.request(method, env.gateway.url + path, headers=headers)
        assert response.status_code in (401, 403), response.text


def test_a_poller_that_died_leaves_its_job_to_the_next(env: FinetuneEnv) -> None:
    job_id = env.start_job(None)
    with session_scope(env.gw.engine) as session:  # replica a claims the job, then is killed before answering
        assert claim_job(session=session, job_id=job_id, owner="replica-a", lease_seconds=0.3)
    poller = FinetunePoller(env.gw, owner="replica-b")
    try:
        outcome = eventually(lambda: poller.poll_job(job_id), what=f"replica a's lease on {job_id} to expire")
    finally:
        poller.close()
    assert (outcome.old_status, outcome.status) == ("validating_files", "queued")
    assert env.job(job_id).lease_owner is None


# -- retirement watch --------------------------------------------------------------------------------------


def set_shutdown(fake: FakeUpstreamHandle, model: str, day: date | None) -> None:
    body = {"id": model, "shutdown_date": day.isoformat() if day else None}
    httpx.post(fake.url + "/_models", json=body).raise_for_status()


def test_retired_target_serves_its_fallback_at_once(env: FinetuneEnv) -> None:
    today = datetime.now(UTC).date()
    try:
        set_shutdown(env.fake, RETIRING, today + timedelta(days=12))
        set_shutdown(env.fake, "gpt-4o", today + timedelta(days=400))  # outside the 30-day window
        listed = env.gateway.admin("POST", "/admin/retirements/refresh")
        assert listed.status_code == 200, listed.text
        assert [
            (r["alias"], r["role"], r["model"], r["days_left"], r["retired"], r["fallback"])
            for r in listed.json()["data"]
        ] == [("retiring", "target", RETIRING, 12, False, "gpt-4o-mini")]
        with Session(env.gw.engine) as session:
            assert days_left_by_alias(session=session) == {"retiring": 12, "other-only": 400}
        assert env.chat("retiring")[:2] == (RETIRING, "model")  # not retired yet: the target serves

        set_shutdown(env.fake, RETIRING, today - timedelta(days=1))
        assert env.gateway.admin("POST", "/admin/retirements/refresh").json()["data"][0]["retired"] is True
        served, how, messages = env.chat("retiring")
        assert (served, how) == ("gpt-4o-mini", "fallback")
        assert messages == [{"role": "system", "content": "Answer briefly."}, *QUESTION]
        chats = [r["json"]["model"] for r in env.fake.requests(50) if r["path"] == "/v1/chat/completions"]
        assert chats == ["gpt-4o-mini"]  # the retired model was not even tried
    finally:
        set_shutdown(env.fake, RETIRING, None)
        set_shutdown(env.fake, "gpt-4o", None)
        env.gateway.admin("POST", "/admin/retirements/refresh")
    assert env.gateway.admin("GET", "/admin/retirements").json()["data"] == []
    assert env.chat("retiring")[:2] == (RETIRING, "model")
