"""Fine-tuning methods through the gateway with the openai SDK, against the fake upstream: a DPO and a
reinforcement job with their files, the method read back as OpenAI shows it and passed on unchanged, and a file
refused for a job of another method, naming its lines and the format expected."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.fine_tuning.job_create_params import Method
from openai.types.graders.string_check_grader_param import StringCheckGraderParam

from tests.utils.finetune import FIXTURES, FinetuneEnv, finetune_env
from tests.utils.openai_schema import validate
from tests.utils.upstreams import FakeUpstreamHandle

DPO: Method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}
GRADER: StringCheckGraderParam = {
    "type": "string_check",
    "name": "exact answer",
    "input": "{{sample.output_text}}",
    "reference": "{{item.reference_answer}}",
    "operation": "eq",
}
REINFORCEMENT: Method = {"type": "reinforcement", "reinforcement": {"grader": GRADER}}
DPO_AS_CHAT = (
    "no 'messages' list; found keys: 'input', 'preferred_output', 'non_preferred_output' (the DPO format: a job "
    "with method.type 'dpo' takes it)"
)
CHAT_AS_DPO = (
    "no 'input' object; found keys: 'messages' (the chat format: a job with method.type 'supervised' or "
    "'reinforcement' takes it)"
)


@pytest.fixture(scope="module")
def env(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinetuneEnv]:
    with finetune_env(own_database_url, fake_upstream, tmp_path_factory.mktemp("methods")) as environment:
        yield environment


def _error(exc: openai.APIStatusError) -> tuple[str, str | None]:
    """The gateway's message (the SDK prefixes its own text to ``exc.message``) and param."""
    assert isinstance(exc.body, dict)
    return exc.body["message"], exc.body["param"]


def _job_requests(env: FinetuneEnv) -> list[dict[str, Any]]:
    """The job creations the fake upstream received, oldest first."""
    return [r["json"] for r in env.fake.requests(200) if r["method"] == "POST" and r["path"] == "/v1/fine_tuning/jobs"]


def test_a_dpo_job_keeps_its_method_from_request_to_upstream_and_back(env: FinetuneEnv) -> None:
    client = env.client()
    data = (FIXTURES / "dpo_12.jsonl").read_bytes()
    training = client.files.create(file=("dpo_12.jsonl", data), purpose="fine-tune")
    created = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=training.id, method=DPO)

    assert created.method is not None and created.method.type == "dpo"
    assert created.method.dpo is not None and created.method.dpo.hyperparameters is not None
    assert (created.method.dpo.hyperparameters.beta, created.method.dpo.hyperparameters.n_epochs) == (0.2, 2)
    sent = _job_requests(env)[-1]
    assert sent["method"] == DPO  # passed on unchanged
    assert sent["training_file"] == env.job(created.id).upstream_training_file
    assert env.job(created.id).method == DPO  # and kept with the job
    assert f"method dpo, training file {training.id}" in env.events(created.id)[0]

    assert env.drive(created.id) == "succeeded"
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(created.id)
    validate(raw.http_response.json(), "FineTuningJob")
    job = raw.parse()
    assert job.method is not None and job.method.type == "dpo" and job.method.dpo is not None
    assert job.method.dpo.hyperparameters is not None and job.method.dpo.hyperparameters.beta == 0.2
    listed = [j for j in client.fine_tuning.jobs.list() if j.id == created.id]
    assert [j.method.type if j.method else None for j in listed] == ["dpo"]


def test_a_reinforcement_job_takes_its_prompts_and_grader(env: FinetuneEnv) -> None:
    client = env.client()
    training = env.upload("reinforcement_12.jsonl")
    job = client.fine_tuning.jobs.create(model="o4-mini-2025-04-16", training_file=training, method=REINFORCEMENT)
    assert job.method is not None and job.method.reinforcement is not None
    assert job.method.reinforcement.grader.type == "string_check"
    assert _job_requests(env)[-1]["method"] == REINFORCEMENT


def test_a_job_without_a_method_is_supervised(env: FinetuneEnv) -> None:
    job = env.client().fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=env.upload())
    assert job.method is not None and job.method.type == "supervised"
    assert "method" not in _job_requests(env)[-1]  # nothing added to what the client sent
    assert env.job(job.id).method is None


def test_a_dpo_file_is_refused_for_a_supervised_job_and_the_reverse(env: FinetuneEnv) -> None:
    client = env.client()
    dpo_file, chat_file = env.upload("dpo_12.jsonl"), env.upload("valid_12.jsonl")
    sent_before = len(_job_requests(env))

    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=dpo_file)
    assert refused.value.status_code == 400
    lines = "; ".join(f"line {n}: {DPO_AS_CHAT}" for n in range(1, 6))
    assert _error(refused.value) == (
        f"invalid training_file: {dpo_file} is not supervised (chat) fine-tuning data, the format of method.type "
        f"'supervised': {lines}; and 7 more. It is DPO data: method.type 'dpo' takes it.",
        "training_file",
    )

    with pytest.raises(openai.BadRequestError) as reverse:
        client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=chat_file, method=DPO)
    lines = "; ".join(f"line {n}: {CHAT_AS_DPO}" for n in range(1, 6))
    assert _error(reverse.value) == (
        f"invalid training_file: {chat_file} is not DPO fine-tuning data, the format of method.type 'dpo': {lines}; "
        "and 7 more. It is supervised (chat) data: method.type 'supervised' takes it.",
        "training_file",
    )

    with pytest.raises(openai.BadRequestError) as validation:
        client.fine_tuning.jobs.create(
            model="gpt-4.1-mini-2025-04-14", training_file=dpo_file, validation_file=chat_file, method=DPO
        )
    message, param = _error(validation.value)
    assert (message.split(" is not ")[0], param) == (f"invalid validation_file: {chat_file}", "validation_file")
    assert len(_job_requests(env)) == sent_before  # nothing reached the upstream


@pytest.mark.parametrize(
    ("method", "message", "param"),
    [
        ("dpo", "Invalid type for 'method': expected an object.", "method"),
        ({"dpo": {}}, "Missing required parameter: 'method.type'.", "method.type"),
        (
            {"type": "ppo"},
            "Invalid value for 'method.type': 'ppo'. Supported values are: 'supervised', 'dpo', and 'reinforcement'.",
            "method.type",
        ),
        (
            {"type": "dpo", "supervised": {}},
            "'method.supervised' was given for a method of type 'dpo': its settings go in 'method.dpo'.",
            "method.supervised",
        ),
        ({"type": "dpo", "beta": 0.1}, "Unrecognized parameter: 'method.beta'.", "method.beta"),
        (
            {"type": "dpo", "dpo": {"hyperparameters": [0.1]}},
            "Invalid type for 'method.dpo.hyperparameters': expected an object.",
            "method.dpo.hyperparameters",
        ),
        (
            {"type": "reinforcement"},
            "Missing required parameter: 'method.reinforcement.grader' (an object: the grader that scores the "
            "model's answers).",
            "method.reinforcement.grader",
        ),
    ],
)
def test_a_malformed_method_is_refused_naming_its_field(
    env: FinetuneEnv, method: object, message: str, param: str
) -> None:
    training = env.upload("dpo_12.jsonl")
    answer = httpx.post(
        env.gateway.base_url + "/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {env.gateway.keys['airport-cs']}"},
        json={"model": "gpt-4.1-mini-2025-04-14", "training_file": training, "method": method},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "missing_required_parameter" if message.startswith("Missing") else "invalid_value",
    }
