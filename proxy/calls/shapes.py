"""What differs between the model-call endpoints' answers, for the one relay and the one forwarding: where the
model is named (to show the alias), where the usage is (read in chat's words for the usage record), where the
streamed text is, which events end a stream with an error, and which answer is an object the upstream stored."""

from __future__ import annotations

from typing import Any

import orjson

_CHAT_OBJECTS = ("chat.completion", "chat.completion.chunk")


class Shape:
    """Chat completions and legacy completions: chunks with ``choices``, usage in a last chunk of its own."""

    asks_usage = True  # the gateway asks for ``stream_options.include_usage`` (and removes what it asked for)
    named_events = False  # a stream's events have no ``event:`` line to keep

    def rename(self, obj: dict[str, Any], alias: str) -> None:
        obj["model"] = alias

    def usage(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        usage = obj.get("usage")
        return usage if isinstance(usage, dict) and usage else None

    def prompt(self, payload: dict[str, Any]) -> list[Any] | None:
        """The messages a request sends, to estimate its prompt tokens when the upstream never counted them."""
        messages = payload.get("messages")
        return messages if isinstance(messages, list) else None

    def started(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` carries the first token (the time to first token ends here)."""
        return bool(event.get("choices"))

    def text(self, event: dict[str, Any]) -> str:
        pieces = []
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            piece = delta.get("content") if isinstance(delta, dict) else None
            if piece is None:
                piece = choice.get("text")
            if isinstance(piece, str):
                pieces.append(piece)
        return "".join(pieces)

    def failed(self, event: dict[str, Any]) -> bool:
        return "error" in event

    def stored(self, obj: dict[str, Any]) -> str | None:
        """The id of an object the upstream keeps for later calls: asked only of a ``store: true`` chat call."""
        identifier = obj.get("id")
        return identifier if obj.get("object") in _CHAT_OBJECTS and isinstance(identifier, str) else None

    def error_event(self, error: dict[str, Any]) -> bytes:
        """The gateway's own last event when the upstream's stream broke off."""
        return b"data: " + orjson.dumps(error) + b"\n\n"


class ResponsesShape(Shape):
    """The Responses API: ``model`` inside each ``response`` object, usage in the final one (``input_tokens``,
    ``output_tokens``), text in ``response.output_text.delta`` events, errors as ``error`` events."""

    asks_usage = False  # the final response always carries its usage
    named_events = True  # each event comes with its ``event:`` line, and is sent on with it

    def rename(self, obj: dict[str, Any], alias: str) -> None:
        if obj.get("object") == "response":
            obj["model"] = alias
        inner = obj.get("response")
        if isinstance(inner, dict) and "model" in inner:
            inner["model"] = alias

    def usage(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        inner = obj.get("response")
        usage = obj.get("usage") if obj.get("object") == "response" else None
        if usage is None and isinstance(inner, dict):
            usage = inner.get("usage")
        if not isinstance(usage, dict) or not usage:
            return None
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        return {  # in chat's words, as the usage record reads them
            "prompt_tokens": usage.get("input_tokens") or 0,
            "completion_tokens": usage.get("output_tokens") or 0,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def prompt(self, payload: dict[str, Any]) -> list[Any] | None:
        instructions, given = payload.get("instructions"), payload.get("input")
        messages: list[Any] = [{"role": "developer", "content": instructions}] if isinstance(instructions, str) else []
        if isinstance(given, str):
            return [*messages, {"role": "user", "content": given}]
        for item in given if isinstance(given, list) else ():
            if isinstance(item, dict) and "role" in item:
                messages.append({"role": item["role"], "content": item.get("content")})
        return messages

    def started(self, event: dict[str, Any]) -> bool:
        return str(event.get("type", "")).endswith(".delta")

    def text(self, event: dict[str, Any]) -> str:
        delta = event.get("delta") if event.get("type") == "response.output_text.delta" else None
        return delta if isinstance(delta, str) else ""

    def failed(self, event: dict[str, Any]) -> bool:
        return event.get("type") == "error"

    def stored(self, obj: dict[str, Any]) -> str | None:
        response = obj if obj.get("object") == "response" else obj.get("response")
        if obj.get("type") not in (None, "response.created") or not isinstance(response, dict):
            return None
        identifier = response.get("id")
        return identifier if response.get("store") is not False and isinstance(identifier, str) else None

    def error_event(self, error: dict[str, Any]) -> bytes:
        inner = error.get("error") or {}
        event = {"type": "error", "code": inner.get("code"), "message": inner.get("message"), "param": None}
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"


CHAT = Shape()
RESPONSES = ResponsesShape()


def shape_of(endpoint: str) -> Shape:
    return RESPONSES if endpoint.startswith("responses") else CHAT
