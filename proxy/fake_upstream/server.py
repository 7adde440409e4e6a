"""A fast, deterministic fake of the OpenAI API (plain ASGI 3 + orjson), for tests, the demo and benchmarks.

Token rule: ``count_tokens(text)`` is the number of matches of ``[A-Za-z0-9]+|[^\\sA-Za-z0-9]`` — each ASCII
alphanumeric run is one token, every other non-space character (punctuation, CJK, ...) is one token.

* chat prompt_tokens = 3 + Σ over messages (3 + count(role) + count(text content) + count(name) if present
  + count(function name) + count(arguments) of each tool call); text content is the string content or the
  concatenated ``text`` of the content parts.
* legacy completion prompt_tokens = count(prompt) (a list of prompts: the sum; token-id arrays: their length).
* embeddings prompt_tokens = Σ count(input string) (token-id arrays: their length).
* the chat reply is ``"Echo: " + <text of the last user message>`` (completions: ``"Echo: " + prompt``),
  completion_tokens = count(reply), cut to ``max_tokens`` tokens (finish_reason "length"); a tool call costs
  count(name) + count("{}").
* cached_tokens = 3 + count(role) + count(content) of a leading system/developer message whose exact content
  an earlier chat request already sent, else 0.
* responses: ``instructions`` count as a leading developer message and ``input`` (a string: one user message) as
  chat messages, so input_tokens is the chat prompt rule over [developer: instructions] + the input's messages (an
  item without a role counts as one of role "user" with its ``output``/``arguments`` text); output_tokens =
  count("Echo: " + the text of the last user input), cut to ``max_output_tokens`` (status "incomplete");
  cached_tokens = 3 + count("developer") + count(instructions) when an earlier request sent the same
  instructions (chat system prompts and instructions share one cache), else 0; reasoning_tokens is always 0.
  Stored responses (``store``, default true) answer GET/DELETE ``/v1/responses/{id}``, ``/cancel`` (only a
  ``background`` one, which stays in_progress until it is read or cancelled) and ``/input_items``;
  ``POST /v1/responses/input_tokens`` answers the input_tokens the same request would count.

Control endpoints (outside ``/v1``): ``POST/DELETE /_faults``, ``GET/DELETE /_stats``, ``GET /_requests``,
``POST /_models``, ``DELETE /_cache`` (forget the prompt cache).

A hostile upstream for the secrets tests: ``POST /_faults {"echo_authorization": true}`` puts the Authorization
header each request carried into its error messages, an ``x-upstream-authorization`` answer header, streamed error
events (the ``error_after_chunks`` fault) and an extra model in ``GET /v1/models`` (its id and ``owned_by``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import importlib.util
import logging
import math
import os
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[..., Awaitable[Any]]

_TOKEN_RE = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
_FINGERPRINT = "fp_fake0001"
_MAX_RECORDED = 200
_MAX_SEEN_PROMPTS = 10_000  # bounds the prompt-cache memory during long benchmarks
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_DEFAULT_MODELS = (
    ("gpt-3.5-turbo", 1677610602, "openai"),
    ("gpt-3.5-turbo-0613", 1686587434, "openai"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4o-mini-2024-07-18", 1721172717, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
)
_NEXT_STATUS = {"validating_files": "queued", "queued": "running", "running": "succeeded"}
_STATUS_EVENTS = {
    "queued": "Files validated, moving job to queued state",
    "running": "Fine-tuning job started",
}
_FILE_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
_RECEIVED_AUTHORIZATION: ContextVar[str] = ContextVar("received_authorization", default="")  # echo_authorization


def count_tokens(text: str) -> int:
    """The documented deterministic token count (see the module docstring)."""
    return _count_short(text) if len(text) <= 2048 else len(_TOKEN_RE.findall(text))


@functools.lru_cache(maxsize=4096)
def _count_short(text: str) -> int:
    # Remembered: the same system prompts, roles and questions come again and again, and a benchmark's upstream
    # should take as little of the machine as it can (bench/RESULTS.md, "Where the cores went").
    return len(_TOKEN_RE.findall(text))


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Drop(Exception):
    """Raised after a response has started so uvicorn aborts the connection (the drop fault)."""


class _QuietDrop(logging.Filter):
    # uvicorn logs every exception escaping the app; a deliberate drop is not an error worth a traceback.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Drop))


@dataclass(slots=True)
class _Raw:
    body: bytes
    content_type: bytes = b"application/octet-stream"


@dataclass(slots=True)
class _Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    bad_json: bool = False

    def obj(self) -> dict[str, Any]:
        if self.bad_json or not isinstance(self.json, dict):
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            )
        return self.json

    def limit(self, default: int) -> int:
        raw = self.query.get("limit")
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise _ApiError(400, f"Invalid 'limit': {raw!r}.", param="limit", code="invalid_value")
        return int(raw)


@dataclass(slots=True)
class _Fault:
    status: int | None = None
    times: int | None = None
    message: str | None = None
    delay_ms: float = 0.0
    drop_after_chunks: int | None = None
    chunk_delay_ms: float = 0.0
    timestamp_chunks: bool = False  # benchmarks: each chunk carries x_sent_ns, the wall clock at sending
    error_after_chunks: int | None = None  # a stream sends this many chunks, then an error event, and ends


@dataclass(slots=True)
class _StoredResponse:
    obj: dict[str, Any]
    input_items: list[dict[str, Any]]
    finish: Callable[[], None] | None = None  # a background response: completes it (output, usage) when read


@dataclass(slots=True)
class _StoredChat:
    obj: dict[str, Any]
    messages: list[dict[str, Any]]  # the request's messages, as /messages lists them


@dataclass(slots=True)
class _Job:
    obj: dict[str, Any]
    fail: bool
    tokens_per_epoch: int
    examples: int
    events: list[dict[str, Any]] = field(default_factory=list)


def _rid(prefix: str, hex_chars: int = 24) -> str:
    return prefix + os.urandom(hex_chars // 2).hex()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _chat_prompt_tokens(messages: list[Any]) -> int:
    total = 3
    for m in messages:
        if not isinstance(m, dict):
            continue
        total += 3 + count_tokens(str(m.get("role", ""))) + count_tokens(_text(m.get("content")))
        if isinstance(m.get("name"), str):
            total += count_tokens(m["name"])
        for call in m.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += count_tokens(str(fn.get("name", ""))) + count_tokens(str(fn.get("arguments", "")))
    return total


def _pieces(text: str, limit: int | None) -> tuple[list[str], bool]:
    """Split ``text`` into per-token pieces (each with the whitespace before it), keeping at most ``limit``."""
    ends = [m.end() for m in _TOKEN_RE.finditer(text)]
    truncated = limit is not None and limit < len(ends)
    if truncated:
        ends = ends[:limit]
    pieces: list[str] = []
    prev = 0
    for end in ends:
        pieces.append(text[prev:end])
        prev = end
    if pieces and not truncated:
        pieces[-1] += text[prev:]  # trailing whitespace, so the pieces always join to the full reply
    return pieces, truncated


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _vector(item: str | list[int], dims: int) -> list[float]:
    # sha256 of the item, chained (digest of the digest) until there are 4 bytes per dimension.
    digest = hashlib.sha256(item.encode() if isinstance(item, str) else orjson.dumps(item)).digest()
    raw = bytearray(digest)
    while len(raw) < 4 * dims:
        digest = hashlib.sha256(digest).digest()
        raw += digest
    values = [round(u / 4294967295 * 2 - 1, 6) for u in struct.unpack_from(f"<{dims}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _int_param(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _ApiError(
            400, f"Invalid '{name}': expected an integer between {lo} and {hi}.", param=name, code="invalid_value"
        )
    return value


def _need(body: dict[str, Any], name: str, kind: type[Any] = str) -> Any:
    value = body.get(name)
    if value is None:
        message = "you must provide a model parameter" if name == "model" else None
        raise _ApiError(
            400,
            message or f"Missing required parameter: '{name}'.",
            param=name,
            code=None if message else "missing_required_parameter",
        )
    if not isinstance(value, kind):
        raise _ApiError(400, f"Invalid type for '{name}'.", param=name, code="invalid_type")
    return value


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    if after:
        idx = next((i for i, x in enumerate(items) if x["id"] == after), len(items))
        items = items[idx + 1 :]
    return items[:limit], len(items) > limit


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """A tiny multipart/form-data splitter: field name → (filename, content)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise _ApiError(400, "Expected a multipart/form-data body with a boundary.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + m.group(1).encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else None, content.removesuffix(b"\r\n"))
    return fields


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _echoed() -> str:
    received = _RECEIVED_AUTHORIZATION.get()
    return f" (Authorization: {received})" if received else ""


def _echoing(send: Send, received: str) -> Send:
    """``send`` with the Authorization received added to the answer's headers (echo_authorization)."""

    async def echo(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], (b"x-upstream-authorization", received.encode())]}
        await send(message)

    return echo


async def _drop(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    raise _Drop("drop_after_chunks fault")


class FakeUpstream:
    """The ASGI app; all state (files, jobs, models, faults, stats) lives in memory."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self._api_key = api_key
        self._models: dict[str, dict[str, Any]] = {
            mid: {"id": mid, "object": "model", "created": created, "owned_by": owner}
            for mid, created, owner in _DEFAULT_MODELS
        }
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._jobs: dict[str, _Job] = {}
        self._responses: dict[str, _StoredResponse] = {}  # store: true responses, with their input items
        self._chats: dict[str, _StoredChat] = {}  # store: true chat completions, oldest first
        self._faults: dict[str, _Fault] = {}
        self._fail_next_job = False
        self._echo_authorization = False  # the hostile mode: the Authorization received is echoed back
        self._seen_prompts: dict[str, None] = {}  # insertion-ordered set, oldest evicted first
        self._requests: deque[dict[str, Any]] = deque(maxlen=_MAX_RECORDED)
        self._stats: dict[str, Any] = {}
        self._reset_stats()
        self._static: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/chat/completions"): self._list_chats,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/responses"): self._create_response,
            ("POST", "/v1/responses/input_tokens"): self._count_input_tokens,
            ("GET", "/v1/models"): self._list_models,
            ("POST", "/v1/files"): self._create_file,
            ("GET", "/v1/files"): self._list_files,
            ("POST", "/v1/fine_tuning/jobs"): self._create_job,
            ("GET", "/v1/fine_tuning/jobs"): self._list_jobs,
            ("POST", "/_faults"): self._add_fault,
            ("DELETE", "/_faults"): self._clear_faults,
            ("GET", "/_stats"): self._get_stats,
            ("DELETE", "/_stats"): self._clear_stats,
            ("GET", "/_requests"): self._get_requests,
            ("POST", "/_models"): self._upsert_model,
            ("DELETE", "/_cache"): self._clear_cache,
        }
        self._dynamic: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/v1/models/(.+)"), self._get_model),
            ("GET", re.compile(r"/v1/files/([^/]+)"), self._get_file),
            ("DELETE", re.compile(r"/v1/files/([^/]+)"), self._delete_file),
            ("GET", re.compile(r"/v1/files/([^/]+)/content"), self._file_content),
            ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)"), self._get_job),
            ("POST", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/cancel"), self._cancel_job),
            ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/events"), self._job_events),
            ("GET", re.compile(r"/v1/fine_tuning/jobs/([^/]+)/checkpoints"), self._job_checkpoints),
            ("GET", re.compile(r"/v1/chat/completions/([^/]+)"), self._get_chat),
            ("POST", re.compile(r"/v1/chat/completions/([^/]+)"), self._update_chat),
            ("DELETE", re.compile(r"/v1/chat/completions/([^/]+)"), self._delete_chat),
            ("GET", re.compile(r"/v1/chat/completions/([^/]+)/messages"), self._chat_messages),
            ("GET", re.compile(r"/v1/responses/([^/]+)"), self._get_response),
            ("DELETE", re.compile(r"/v1/responses/([^/]+)"), self._delete_response),
            ("POST", re.compile(r"/v1/responses/([^/]+)/cancel"), self._cancel_response),
            ("GET", re.compile(r"/v1/responses/([^/]+)/input_items"), self._response_input_items),
        ]
        uvicorn_errors = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietDrop) for f in uvicorn_errors.filters):
            uvicorn_errors.addFilter(_QuietDrop())

    # --- ASGI plumbing -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"))) if scope["query_string"] else {}
        req = _Req(scope["method"], scope["path"], query, headers, body)
        if body and not headers.get("content-type", "").startswith("multipart/"):
            try:
                req.json = orjson.loads(body)
            except orjson.JSONDecodeError:
                req.bad_json = True
        if self._echo_authorization and req.path.startswith("/v1"):
            received = headers.get("authorization", "")
            _RECEIVED_AUTHORIZATION.set(received)
            send = _echoing(send, received)
        try:
            if req.path.startswith("/v1"):
                self._requests.append({"method": req.method, "path": req.path, "headers": headers, "json": req.json})
                self._check_key(headers.get("authorization"))
            result = await self._dispatch(req, send)
        except _ApiError as err:
            if self._echo_authorization:
                err.payload["error"]["message"] = f"{err.payload['error']['message']}{_echoed()}"
            await _send_json(send, err.status, err.payload)
            return
        if isinstance(result, _Raw):
            headers_out = [(b"content-type", result.content_type), (b"content-length", b"%d" % len(result.body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers_out})
            await send({"type": "http.response.body", "body": result.body})
        elif result is not None:
            await _send_json(send, 200, result)

    async def _dispatch(self, req: _Req, send: Send) -> Any:
        handler = self._static.get((req.method, req.path))
        if handler is not None:
            return await handler(req, send)
        for method, pattern, handler in self._dynamic:
            m = pattern.fullmatch(req.path)
            if m and method == req.method:
                return await handler(req, send, *m.groups())
        raise _ApiError(404, f"Invalid URL ({req.method} {req.path})")

    def _check_key(self, authorization: str | None) -> None:
        if self._api_key is None or authorization == f"Bearer {self._api_key}":
            return
        if not authorization:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            key = authorization.removeprefix("Bearer ").strip()
            masked = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        raise _ApiError(401, message, code="invalid_api_key")

    # --- faults and stats ----------------------------------------------------------------------------------

    async def _apply_fault(self, model: str, send: Send, stream: bool) -> _Fault | None:
        fault = self._faults.get(model)
        if fault is None:
            return None
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.status is not None:
            status, message = fault.status, fault.message
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    fault.status = fault.times = fault.message = None
            if status == 404:
                message = message or f"The model `{model}` does not exist or you do not have access to it."
                raise _ApiError(404, message, code="model_not_found")
            if status == 429:
                raise _ApiError(
                    429, message or "Rate limit reached for requests.", kind="requests", code="rate_limit_exceeded"
                )
            if status >= 500:
                message = message or "The server had an error while processing your request. Sorry about that!"
                raise _ApiError(status, message, kind="server_error")
            raise _ApiError(status, message or f"Injected fault: HTTP {status}.")
        if fault.drop_after_chunks is not None and not stream:
            await _drop(send)
        return fault

    def _reset_stats(self) -> None:
        self._stats = {
            "requests": 0,
            "by_endpoint": {},
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "total_tokens": 0,
            "by_model": {},
        }
        self._requests.clear()

    def _record(self, endpoint: str, model: str, usage: dict[str, Any]) -> None:
        s = self._stats
        s["by_endpoint"][endpoint] = s["by_endpoint"].get(endpoint, 0) + 1
        per_model = s["by_model"].setdefault(
            model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "total_tokens": 0}
        )
        cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        for bucket in (s, per_model):
            bucket["requests"] += 1
            bucket["prompt_tokens"] += usage["prompt_tokens"]
            bucket["completion_tokens"] += usage.get("completion_tokens", 0)
            bucket["cached_tokens"] += cached
            bucket["total_tokens"] += usage["total_tokens"]

    async def _sse(
        self, send: Send, events: list[dict[str, Any]], fault: _Fault | None, on_done: Callable[[], None]
    ) -> None:
        """Send each event as its own body message (never batched), honouring drop/delay faults."""
        drop = fault.drop_after_chunks if fault else None
        delay = fault.chunk_delay_ms / 1000 if fault else 0.0
        stamp = fault.timestamp_chunks if fault else False
        error_after = fault.error_after_chunks if fault else None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for i, event in enumerate(events):
            if drop is not None and i >= drop:
                raise _Drop("drop_after_chunks fault")
            if error_after is not None and i >= error_after:
                message = "The server had an error while streaming." + _echoed()
                error = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
                await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(error) + b"\n\n"})
                return
            if delay and i:
                await asyncio.sleep(delay)
            if stamp:
                event = {**event, "x_sent_ns": time.time_ns()}
            await send(
                {"type": "http.response.body", "body": b"data: " + orjson.dumps(event) + b"\n\n", "more_body": True}
            )
        if drop is not None and drop <= len(events):
            raise _Drop("drop_after_chunks fault")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        on_done()

    # --- inference -----------------------------------------------------------------------------------------

    @staticmethod
    def _max_tokens(body: dict[str, Any]) -> int | None:
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        return _int_param(body, name, 1, 1_000_000)

    async def _chat(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        model = _need(body, "model")
        messages = _need(body, "messages", list)
        if not messages:
            raise _ApiError(400, "Invalid 'messages': empty array.", param="messages", code="empty_array")
        stream = body.get("stream") is True
        fault = await self._apply_fault(model, send, stream)
        n = _int_param(body, "n", 1, 128) or 1
        limit = self._max_tokens(body)
        prompt = _chat_prompt_tokens(messages)
        cached, first = 0, messages[0]
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            text = _text(first.get("content"))
            if text in self._seen_prompts:
                cached = 3 + count_tokens(first["role"]) + count_tokens(text)
            else:
                self._seen_prompts[text] = None
                if len(self._seen_prompts) > _MAX_SEEN_PROMPTS:
                    del self._seen_prompts[next(iter(self._seen_prompts))]

        tool_name: Any = None
        call_ids: list[str] = []
        pieces: list[str] = []
        tools = body.get("tools")
        if isinstance(tools, list) and tools and body.get("tool_choice") != "none":
            choice = body.get("tool_choice")
            if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
                tool_name = choice["function"].get("name")
            if not isinstance(tool_name, str) and isinstance(tools[0], dict):
                spec = tools[0].get(tools[0].get("type", "function"))
                tool_name = spec.get("name") if isinstance(spec, dict) else None
            tool_name = tool_name if isinstance(tool_name, str) else "tool"
            call_ids = [_rid("call_") for _ in range(n)]
            finish = "tool_calls"
            per_choice = count_tokens(tool_name) + count_tokens("{}")
        else:
            last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
            pieces, truncated = _pieces("Echo: " + _text(last_user.get("content")), limit)
            finish = "length" if truncated else "stop"
            per_choice = len(pieces)
        usage = _usage(prompt, per_choice * n, cached)
        cid, created = _rid("chatcmpl-"), int(time.time())

        def whole() -> list[dict[str, Any]]:
            choices = []
            for i in range(n):
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": "".join(pieces),
                    "refusal": None,
                    "annotations": [],
                }
                if tool_name is not None:
                    call = {"id": call_ids[i], "type": "function", "function": {"name": tool_name, "arguments": "{}"}}
                    message.update(content=None, tool_calls=[call])
                choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
            return choices

        def completion() -> dict[str, Any]:
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": whole(),
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }

        def done() -> None:  # the answer was sent whole: counted, and stored if asked (as OpenAI keeps it)
            self._record("chat.completions", model, usage)
            if body.get("store") is True:
                kept = {**completion(), "metadata": dict(body.get("metadata") or {}), "request_id": None}
                said = [
                    {
                        "id": f"{cid}-{i}",
                        "role": m.get("role"),
                        "content": _text(m.get("content")),
                        "name": m.get("name"),
                        "content_parts": None,
                    }
                    for i, m in enumerate(messages)
                    if isinstance(m, dict)
                ]
                self._chats[cid] = _StoredChat(kept, said)

        if not stream:
            done()
            return completion()

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if include_usage:
            base["usage"] = None

        def chunk(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

        events: list[dict[str, Any]] = []
        if tool_name is not None:
            for i in range(n):
                head = {
                    "index": 0,
                    "id": call_ids[i],
                    "type": "function",
                    "function": {"name": tool_name, "arguments": ""},
                }
                events.append(chunk(i, {"role": "assistant", "content": None, "tool_calls": [head]}))
                events.append(chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
        else:
            events += [chunk(i, {"role": "assistant", "content": "", "refusal": None}) for i in range(n)]
            events += [chunk(i, {"content": piece}) for piece in pieces for i in range(n)]
        events += [chunk(i, {}, finish) for i in range(n)]
        if include_usage:
            events.append({**base, "choices": [], "usage": usage})
        await self._sse(send, events, fault, done)
        return None

    def _stored_chat(self, completion_id: str) -> _StoredChat:
        stored = self._chats.get(completion_id)
        if stored is None:
            raise _ApiError(404, f"Chat completion with id '{completion_id}' not found.")
        return stored

    @staticmethod
    def _listing(req: _Req, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A page of ``items`` (oldest first) by the query's ``order`` (asc by default), ``after`` and ``limit``."""
        order = req.query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise _ApiError(400, f"Invalid 'order': {order!r}.", param="order", code="invalid_value")
        if order == "desc":
            items = items[::-1]
        data, has_more = _page(items, req.query.get("after"), req.limit(20))
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}

    async def _list_chats(self, req: _Req, send: Send) -> Any:
        wanted = {k[9:-1]: v for k, v in req.query.items() if k.startswith("metadata[") and k.endswith("]")}
        model = req.query.get("model")
        chats = [
            c.obj
            for c in self._chats.values()
            if (model is None or c.obj["model"] == model)
            and all(c.obj["metadata"].get(k) == v for k, v in wanted.items())
        ]
        return self._listing(req, chats)

    async def _get_chat(self, req: _Req, send: Send, completion_id: str) -> Any:
        return self._stored_chat(completion_id).obj

    async def _update_chat(self, req: _Req, send: Send, completion_id: str) -> Any:
        stored = self._stored_chat(completion_id)
        metadata = req.obj().get("metadata")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _ApiError(400, "Invalid 'metadata': expected an object of strings.", param="metadata")
        stored.obj["metadata"] = dict(metadata)
        return stored.obj

    async def _delete_chat(self, req: _Req, send: Send, completion_id: str) -> Any:
        self._stored_chat(completion_id)
        del self._chats[completion_id]
        return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}

    async def _chat_messages(self, req: _Req, send: Send, completion_id: str) -> Any:
        return self._listing(req, self._stored_chat(completion_id).messages)

    async def _completions(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        model = _need(body, "model")
        prompt = body.get("prompt")
        if prompt is None:
            raise _ApiError(
                400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
            )
        items = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
        if not all(isinstance(p, str) or (isinstance(p, list) and all(isinstance(t, int) for t in p)) for p in items):
            raise _ApiError(400, "Invalid 'prompt': expected a string, strings or token arrays.", param="prompt")
        stream = body.get("stream") is True
        fault = await self._apply_fault(model, send, stream)
        n = _int_param(body, "n", 1, 128) or 1
        prompt_tokens = sum(count_tokens(p) if isinstance(p, str) else len(p) for p in items)
        first = items[0] if isinstance(items[0], str) else " ".join(map(str, items[0]))
        pieces, truncated = _pieces("Echo: " + first, self._max_tokens(body))
        finish = "length" if truncated else "stop"
        usage = _usage(prompt_tokens, len(pieces) * n)
        cid, created = _rid("cmpl-"), int(time.time())
        base: dict[str, Any] = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
        }

        def choice(i: int, text: str, finish_reason: str | None) -> dict[str, Any]:
            return {"text": text, "index": i, "logprobs": None, "finish_reason": finish_reason}

        if not stream:
            self._record("completions", model, usage)
            return {**base, "choices": [choice(i, "".join(pieces), finish) for i in range(n)], "usage": usage}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage:
            base["usage"] = None
        events = [{**base, "choices": [choice(i, piece, None)]} for piece in pieces for i in range(n)]
        events += [{**base, "choices": [choice(i, "", finish)]} for i in range(n)]
        if include_usage:
            events.append({**base, "choices": [], "usage": usage})
        await self._sse(send, events, fault, lambda: self._record("completions", model, usage))
        return None

    async def _embeddings(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        model = _need(body, "model")
        raw = _need(body, "input", object)
        items: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        valid = all(
            isinstance(x, str)
            or (isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x))
            for x in items
        )
        if not valid:
            raise _ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
        dims = _int_param(body, "dimensions", 1, 8192) or 8
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _ApiError(400, f"Invalid 'encoding_format': {fmt!r}.", param="encoding_format", code="invalid_value")
        await self._apply_fault(model, send, False)
        data = []
        for i, item in enumerate(items):
            vector: Any = _vector(item, dims)
            if fmt == "base64":
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(count_tokens(x) if isinstance(x, str) else len(x) for x in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        self._record("embeddings", model, usage)
        return {"object": "list", "data": data, "model": model, "usage": usage}

    # --- responses -----------------------------------------------------------------------------------------

    @staticmethod
    def _response_input(value: Any) -> list[dict[str, Any]]:
        """The request's ``input`` as stored input items: a string is one user message."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [{"role": "user", "content": value}]
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise _ApiError(
                400, "Invalid type for 'input': expected a string or an array of input items.", param="input"
            )
        items = []
        for item in value:
            item = {"id": _rid("msg_", 48), **item}
            if "role" in item:
                item.setdefault("type", "message")
                item.setdefault("status", "completed")
                if isinstance(item.get("content"), str):
                    kind = "output_text" if item["role"] == "assistant" else "input_text"
                    item["content"] = [{"type": kind, "text": item["content"]}]
            items.append(item)
        return items

    @staticmethod
    def _response_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chat messages the token rule counts for a response (see the module docstring)."""
        messages: list[dict[str, Any]] = [{"role": "developer", "content": instructions}] if instructions else []
        for item in items:
            if "role" in item:
                messages.append({"role": item["role"], "content": item.get("content")})
            else:
                messages.append({"role": "user", "content": str(item.get("output") or item.get("arguments") or "")})
        return messages

    def _stored_response(self, response_id: str) -> _StoredResponse:
        stored = self._responses.get(response_id)
        if stored is None:
            raise _ApiError(404, f"Response with id '{response_id}' not found.")
        if stored.finish is not None:
            stored.finish()  # a background response is done by the time it is read (and stored anew, finished)
            stored = self._responses[response_id]
        return stored

    async def _create_response(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        model = _need(body, "model")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _ApiError(400, "Invalid type for 'instructions': expected a string.", param="instructions")
        items = self._response_input(body.get("input"))
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self._responses:
            raise _ApiError(
                404,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        stream = body.get("stream") is True
        fault = await self._apply_fault(model, send, stream)
        limit = _int_param(body, "max_output_tokens", 1, 1_000_000)
        input_tokens = _chat_prompt_tokens(self._response_messages(instructions, items))
        cached = 0
        if instructions:
            if instructions in self._seen_prompts:
                cached = 3 + count_tokens("developer") + count_tokens(instructions)
            else:
                self._seen_prompts[instructions] = None
                if len(self._seen_prompts) > _MAX_SEEN_PROMPTS:
                    del self._seen_prompts[next(iter(self._seen_prompts))]
        last_user: dict[str, Any] = next((i for i in reversed(items) if i.get("role") == "user"), {})
        pieces, truncated = _pieces("Echo: " + _text(last_user.get("content")), limit)
        text = "".join(pieces)
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": len(pieces),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + len(pieces),
        }
        created = int(time.time())
        message_id = _rid("msg_", 48)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {"id": message_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        store = body.get("store") is not False
        obj: dict[str, Any] = {
            "id": _rid("resp_", 48),
            "object": "response",
            "created_at": created,
            "status": "in_progress",
            "background": body.get("background") is True,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": instructions,
            "max_output_tokens": limit,
            "model": model,
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": previous,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": store,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        stats = {
            "prompt_tokens": input_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": input_tokens + len(pieces),
            "prompt_tokens_details": {"cached_tokens": cached},
        }

        def complete() -> None:
            obj.update(status="incomplete" if truncated else "completed", output=[message], usage=usage)
            obj["completed_at"] = None if truncated else int(time.time())
            obj["incomplete_details"] = {"reason": "max_output_tokens"} if truncated else None

        def keep() -> None:  # the answer was sent whole: counted, and stored if asked
            self._record("responses", model, stats)
            if store:
                self._responses[obj["id"]] = _StoredResponse(obj, items)

        if obj["background"] and not stream:
            obj["status"] = "queued"

            def finish() -> None:
                complete()
                keep()

            self._responses[obj["id"]] = _StoredResponse(obj, items, finish)
            return obj
        if not stream:
            complete()
            keep()
            return obj

        def event(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, **fields}

        def snapshot() -> dict[str, Any]:
            return orjson.loads(orjson.dumps(obj))  # type: ignore[no-any-return]

        started = snapshot()
        at = {"item_id": message_id, "output_index": 0, "content_index": 0}
        events = [
            event("response.created", response=started),
            event("response.in_progress", response=started),
            event(
                "response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []}
            ),
            event("response.content_part.added", **at, part={**part, "text": ""}),
            *(event("response.output_text.delta", **at, delta=piece, logprobs=[]) for piece in pieces),
            event("response.output_text.done", **at, text=text, logprobs=[]),
            event("response.content_part.done", **at, part=part),
            event("response.output_item.done", output_index=0, item=message),
        ]
        complete()
        events.append(event("response.incomplete" if truncated else "response.completed", response=snapshot()))
        for number, item in enumerate(events):
            item["sequence_number"] = number
        await self._named_sse(send, events, fault, keep)
        return None

    async def _count_input_tokens(self, req: _Req, send: Send) -> Any:
        """``POST /v1/responses/input_tokens``: what ``input_tokens`` a response to this request would count."""
        body = req.obj()
        model = _need(body, "model")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _ApiError(400, "Invalid type for 'instructions': expected a string.", param="instructions")
        await self._apply_fault(model, send, False)
        messages = self._response_messages(instructions, self._response_input(body.get("input")))
        return {"object": "response.input_tokens", "input_tokens": _chat_prompt_tokens(messages)}

    async def _named_sse(
        self, send: Send, events: list[dict[str, Any]], fault: _Fault | None, on_done: Callable[[], None]
    ) -> None:
        """A Responses stream: each event an ``event:`` line and a ``data:`` line, as OpenAI sends them (no
        ``[DONE]``), one body message each; the drop, delay and error faults as for chat (the error is the
        Responses API's ``error`` event)."""
        drop = fault.drop_after_chunks if fault else None
        delay = fault.chunk_delay_ms / 1000 if fault else 0.0
        error_after = fault.error_after_chunks if fault else None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for i, item in enumerate(events):
            if drop is not None and i >= drop:
                raise _Drop("drop_after_chunks fault")
            if error_after is not None and i >= error_after:
                message = "The server had an error while streaming." + _echoed()
                error = {
                    "type": "error",
                    "code": "server_error",
                    "message": message,
                    "param": None,
                    "sequence_number": i,
                }
                body = b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            if delay and i:
                await asyncio.sleep(delay)
            line = b"event: " + item["type"].encode() + b"\ndata: " + orjson.dumps(item) + b"\n\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        on_done()

    async def _get_response(self, req: _Req, send: Send, response_id: str) -> Any:
        return self._stored_response(response_id).obj

    async def _delete_response(self, req: _Req, send: Send, response_id: str) -> Any:
        self._stored_response(response_id)
        del self._responses[response_id]
        return {"id": response_id, "object": "response", "deleted": True}

    async def _cancel_response(self, req: _Req, send: Send, response_id: str) -> Any:
        stored = self._responses.get(response_id)
        if stored is None:
            raise _ApiError(404, f"Response with id '{response_id}' not found.")
        if not stored.obj["background"]:
            raise _ApiError(400, "Only responses created with background=true can be cancelled.")
        if stored.finish is not None:
            stored.obj["status"], stored.finish = "cancelled", None
        elif stored.obj["status"] != "cancelled":
            raise _ApiError(400, f"Cannot cancel a response that is {stored.obj['status']}.")
        return stored.obj

    async def _response_input_items(self, req: _Req, send: Send, response_id: str) -> Any:
        items = list(self._stored_response(response_id).input_items)
        order = req.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _ApiError(400, f"Invalid 'order': {order!r}.", param="order", code="invalid_value")
        if order == "desc":
            items.reverse()
        data, has_more = _page(items, req.query.get("after"), req.limit(20))
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}

    # --- models --------------------------------------------------------------------------------------------

    async def _list_models(self, req: _Req, send: Send) -> Any:
        models = list(self._models.values())
        if self._echo_authorization:
            received = _RECEIVED_AUTHORIZATION.get()
            echoed = {"id": f"ft:gpt-4o-mini:{received}", "object": "model", "created": 0, "owned_by": received}
            models.append({**echoed, "shutdown_date": "2030-01-01"})
        return {"object": "list", "data": models}

    async def _get_model(self, req: _Req, send: Send, model_id: str) -> Any:
        if model_id not in self._models:
            message = f"The model `{model_id}` does not exist or you do not have access to it."
            raise _ApiError(404, message, code="model_not_found")
        return self._models[model_id]

    async def _upsert_model(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        model_id = _need(body, "id")
        model = self._models.setdefault(
            model_id, {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "system"}
        )
        if isinstance(body.get("owned_by"), str):
            model["owned_by"] = body["owned_by"]
        if "shutdown_date" in body:
            shutdown = body["shutdown_date"]
            if shutdown is None:
                model.pop("shutdown_date", None)
            else:
                try:
                    model["shutdown_date"] = date.fromisoformat(shutdown).isoformat()
                except (TypeError, ValueError):
                    raise _ApiError(400, "shutdown_date must be an ISO date or null", param="shutdown_date") from None
        return model

    # --- files ---------------------------------------------------------------------------------------------

    def _file(self, file_id: str) -> tuple[dict[str, Any], bytes]:
        if file_id not in self._files:
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        return self._files[file_id]

    async def _create_file(self, req: _Req, send: Send) -> Any:
        fields = _multipart(req.body, req.headers.get("content-type", ""))
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if not purpose:
            raise _ApiError(
                400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in _FILE_PURPOSES:
            raise _ApiError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose", code="invalid_value")
        if "file" not in fields:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        filename, content = fields["file"]
        obj: dict[str, Any] = {
            "id": _rid("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename or "file",
            "purpose": purpose,
            "status": "processed",
        }
        self._files[obj["id"]] = (obj, content)
        return obj

    async def _list_files(self, req: _Req, send: Send) -> Any:
        files = [obj for obj, _ in self._files.values() if req.query.get("purpose") in (None, obj["purpose"])]
        if req.query.get("order", "desc") == "desc":
            files.reverse()
        data, has_more = _page(files, req.query.get("after"), req.limit(10_000))
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}

    async def _get_file(self, req: _Req, send: Send, file_id: str) -> Any:
        return self._file(file_id)[0]

    async def _delete_file(self, req: _Req, send: Send, file_id: str) -> Any:
        self._file(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    async def _file_content(self, req: _Req, send: Send, file_id: str) -> Any:
        return _Raw(self._file(file_id)[1])

    # --- fine-tuning ---------------------------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        if job_id not in self._jobs:
            raise _ApiError(
                404, f"Could not find fine-tune: {job_id}", param="fine_tune_id", code="fine_tune_not_found"
            )
        return self._jobs[job_id]

    @staticmethod
    def _event(job: _Job, message: str, level: str = "info") -> None:
        job.events.append(
            {
                "object": "fine_tuning.job.event",
                "id": _rid("ftevent-"),
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": "message",
            }
        )

    async def _create_job(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        training_file = _need(body, "training_file")
        model = _need(body, "model")
        for param in ("training_file", "validation_file"):
            if body.get(param) is not None and body[param] not in self._files:
                raise _ApiError(400, f"invalid {param}: {body[param]}", param=param)
        method: dict[str, Any] = body["method"] if isinstance(body.get("method"), dict) else {"type": "supervised"}
        kind = method.get("type", "supervised")
        settings: dict[str, Any] = method.get(kind) or {}  # echoed in the job's method, hyperparameters resolved
        hyper: Any = body.get("hyperparameters") or (method.get(kind) or {}).get("hyperparameters") or {}
        if not isinstance(hyper, dict):
            raise _ApiError(400, "Invalid 'hyperparameters'.", param="hyperparameters", code="invalid_type")
        n_epochs = hyper.get("n_epochs", "auto")
        hyper = {
            "n_epochs": 3 if n_epochs == "auto" else n_epochs,
            "batch_size": hyper.get("batch_size", "auto"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
        }
        examples = tokens = 0
        for line in self._files[training_file][1].decode("utf-8", "replace").splitlines():
            try:
                row = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("messages"), list):
                examples, tokens = examples + 1, tokens + _chat_prompt_tokens(row["messages"])
        job_id = _rid("ftjob-")
        suffix = body.get("suffix")
        obj = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(time.time()),
            "finished_at": None,
            "model": model,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": training_file,
            "hyperparameters": hyper,
            "trained_tokens": None,
            "error": None,
            "user_provided_suffix": suffix,
            "seed": body["seed"] if isinstance(body.get("seed"), int) else zlib.crc32(job_id.encode()) & 0x7FFFFFFF,
            "metadata": body.get("metadata"),
            "estimated_finish": None,
            "integrations": [],
            "method": {
                "type": kind,
                kind: {**settings, "hyperparameters": {**(settings.get("hyperparameters") or {}), **hyper}},
            },
        }
        job = _Job(obj, self._fail_next_job, tokens, examples)
        self._fail_next_job = False
        self._event(job, f"Created fine-tuning job: {job_id}")
        self._jobs[job_id] = job
        return obj

    async def _list_jobs(self, req: _Req, send: Send) -> Any:
        wanted = {k[9:-1]: v for k, v in req.query.items() if k.startswith("metadata[") and k.endswith("]")}
        jobs = [
            j.obj
            for j in reversed(self._jobs.values())
            if all((j.obj["metadata"] or {}).get(k) == v for k, v in wanted.items())
        ]
        data, has_more = _page(jobs, req.query.get("after"), req.limit(20))
        return {"object": "list", "data": data, "has_more": has_more}

    async def _get_job(self, req: _Req, send: Send, job_id: str) -> Any:
        job = self._job(job_id)
        obj = job.obj
        status = _NEXT_STATUS.get(obj["status"])  # each retrieval advances the lifecycle by one step
        if status == "succeeded" and job.fail:
            message = "The job failed due to an invalid training file. Expected file to have JSONL format."
            obj.update(
                status="failed",
                finished_at=int(time.time()),
                error={"code": "invalid_training_file", "message": message, "param": "training_file"},
            )
            self._event(job, message, "error")
        elif status == "succeeded":
            name = f"ft:{obj['model']}:fake-org:{obj['user_provided_suffix'] or ''}:{job_id[-6:]}"
            now = int(time.time())
            obj.update(
                status=status,
                finished_at=now,
                fine_tuned_model=name,
                trained_tokens=obj["hyperparameters"]["n_epochs"] * job.tokens_per_epoch,
            )
            self._models[name] = {"id": name, "object": "model", "created": now, "owned_by": "org-fake"}
            self._event(job, f"The job has successfully completed. New fine-tuned model: {name}")
        elif status is not None:
            obj["status"] = status
            self._event(job, _STATUS_EVENTS[status])
        return obj

    async def _cancel_job(self, req: _Req, send: Send, job_id: str) -> Any:
        job = self._job(job_id)
        if job.obj["status"] not in _NEXT_STATUS:
            raise _ApiError(400, f"Job has already completed: {job_id} is {job.obj['status']}", param="fine_tune_id")
        job.obj["status"] = "cancelled"
        self._event(job, "Fine-tuning job cancelled")
        return job.obj

    async def _job_events(self, req: _Req, send: Send, job_id: str) -> Any:
        events = list(reversed(self._job(job_id).events))
        data, has_more = _page(events, req.query.get("after"), req.limit(20))
        return {"object": "list", "data": data, "has_more": has_more}

    async def _job_checkpoints(self, req: _Req, send: Send, job_id: str) -> Any:
        job = self._job(job_id)
        data = []
        if job.obj["status"] == "succeeded":
            steps = max(job.examples, 1) * job.obj["hyperparameters"]["n_epochs"]
            data.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": f"ftckpt_{job_id[-24:]}",
                    "created_at": job.obj["finished_at"],
                    "fine_tuning_job_id": job_id,
                    "step_number": steps,
                    "fine_tuned_model_checkpoint": f"{job.obj['fine_tuned_model']}:ckpt-step-{steps}",
                    "metrics": {
                        "step": float(steps),
                        "train_loss": 0.25,
                        "train_mean_token_accuracy": 0.9,
                        "full_valid_loss": 0.3,
                        "full_valid_mean_token_accuracy": 0.88,
                    },
                }
            )
        data, has_more = _page(data, req.query.get("after"), req.limit(10))
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}

    # --- control endpoints ---------------------------------------------------------------------------------

    async def _add_fault(self, req: _Req, send: Send) -> Any:
        body = req.obj()
        if body.get("fine_tune") == "fail":
            self._fail_next_job = True
        elif "echo_authorization" in body:
            self._echo_authorization = body["echo_authorization"] is True
        elif isinstance(body.get("model"), str):
            fault = self._faults.setdefault(body["model"], _Fault())
            if "status" in body:
                fault.status, fault.times, fault.message = int(body["status"]), body.get("times"), body.get("message")
            for name in ("delay_ms", "drop_after_chunks", "chunk_delay_ms", "timestamp_chunks", "error_after_chunks"):
                if name in body:
                    setattr(fault, name, body[name])
        else:
            raise _ApiError(400, "Expected {'model': ..., ...} or {'fine_tune': 'fail'}.")
        return self._fault_state()

    def _fault_state(self) -> dict[str, Any]:
        models = {m: {k: v for k, v in asdict(f).items() if v} for m, f in self._faults.items()}
        return {
            "models": models,
            "fine_tune": "fail" if self._fail_next_job else None,
            "echo_authorization": self._echo_authorization,
        }

    async def _clear_faults(self, req: _Req, send: Send) -> Any:
        self._faults.clear()
        self._fail_next_job = False
        self._echo_authorization = False
        return self._fault_state()

    async def _get_stats(self, req: _Req, send: Send) -> Any:
        return self._stats

    async def _clear_stats(self, req: _Req, send: Send) -> Any:
        self._reset_stats()
        return self._stats

    async def _get_requests(self, req: _Req, send: Send) -> Any:
        limit = min(req.limit(20), _MAX_RECORDED)
        return list(self._requests)[-limit:]

    async def _clear_cache(self, req: _Req, send: Send) -> Any:
        self._seen_prompts.clear()
        return {"cleared": True}


def server(app: FakeUpstream, *, host: str, port: int) -> uvicorn.Server:
    """A configured, not yet started uvicorn server for ``app`` (run it in your own thread or loop)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(*, host: str = "127.0.0.1", port: int = 8001, api_key: str | None = None) -> None:
    """Run the fake upstream until interrupted (blocking)."""
    server(FakeUpstream(api_key=api_key), host=host, port=port).run()
