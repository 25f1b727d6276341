"""Local fake OpenAI and Anthropic servers speaking the real wire formats (JSON bodies and
the SSE event sequences the official SDKs parse), with scriptable faults.

    server = FakeOpenAI().start()
    server.enqueue(Status(503), Status(429, retry_after=0.2), Reply("Hello there"))
    ... base_url=server.base_url ...
    server.requests   # the JSON bodies received, in order

With nothing enqueued a server answers `default` (a short reply). Faults: `Status`
(500, 503, 429 with retry-after, 400 context too long, ...), `Hang` (no byte for a while),
`Reply(cut_after=N)` (the connection drops after N tokens), `Malformed` (an event that is
not JSON). Connection refused: `refused_url()`, a port nothing listens on.

Tools and images (`tests.fakes.provider_tools`): requests are checked as the real APIs
check tool definitions, tool calls, tool results and images (400 otherwise), and
`Reply(tool_calls=(Call(name, arguments),))` answers with tool calls in the vendor's shape.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes import provider_tools
from tests.fakes.provider_tools import Call


@dataclass(frozen=True)
class Reply:
    text: str = "Hello from the fake provider."
    cut_after: int | None = None  # drop the connection after this many tokens
    token_delay_s: float = 0.0
    finish_reason: str = "stop"
    tool_calls: tuple[Call, ...] = ()  # the answer calls these tools (after its text)

    def tokens(self) -> list[str]:
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


@dataclass(frozen=True)
class Status:
    status: int
    retry_after: float | None = None
    message: str = "simulated failure"
    code: str | None = None


@dataclass(frozen=True)
class Hang:
    seconds: float = 5.0  # nothing is sent for this long, then a normal reply


@dataclass(frozen=True)
class Malformed:
    pass


Behaviour = Reply | Status | Hang | Malformed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def refused_url(path: str = "") -> str:
    """A URL on which connections are refused (nothing listens on the port)."""
    return f"http://127.0.0.1:{free_port()}{path}"


@dataclass
class _Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeProviderServer:
    """Base: a starlette app on 127.0.0.1 served by uvicorn in a thread."""

    path = ""
    default = Reply()

    def __init__(self) -> None:
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self.requests: list[_Recorded] = []
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> FakeProviderServer:
        with self._lock:
            self._script.extend(behaviours)
        return self

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    # -- serving ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    def start(self) -> FakeProviderServer:
        app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake provider server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(_Recorded(request.url.path, dict(request.headers), body))
        problem = self.problem(body)
        if problem is not None:  # as the real API refuses a malformed tool or image
            return JSONResponse(self.error_body(Status(400, message=problem)), status_code=400)
        behaviour = self._next()
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            behaviour = self.default
        if isinstance(behaviour, Status):
            headers = {}
            if behaviour.retry_after is not None:
                headers["retry-after"] = f"{behaviour.retry_after:g}"
            return JSONResponse(
                self.error_body(behaviour), status_code=behaviour.status, headers=headers
            )
        if isinstance(behaviour, Malformed):
            return StreamingResponse(_once(self.malformed), media_type="text/event-stream")
        if not body.get("stream"):  # answered once the whole reply is generated
            await asyncio.sleep(behaviour.token_delay_s * len(behaviour.tokens()))
            answer = (self.tool_json if behaviour.tool_calls else self.json_reply)(behaviour, body)
            return JSONResponse(answer)
        return StreamingResponse(self._events(behaviour, body), media_type="text/event-stream")

    async def _events(self, reply: Reply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        frames = (self.tool_sse if reply.tool_calls else self.sse)(reply, body)
        for i, frame in enumerate(frames):
            if reply.cut_after is not None and i >= self.frames_before_tokens + reply.cut_after:
                raise ConnectionAbortedError("simulated cut")  # uvicorn drops the connection
            if i > self.frames_before_tokens and reply.token_delay_s:
                await asyncio.sleep(reply.token_delay_s)
            yield frame.encode()

    # -- wire format (per vendor) ----------------------------------------------------

    frames_before_tokens = 0
    malformed = b'data: {"id": "x", "choices": [ not json\n\n'

    def sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        raise NotImplementedError

    def problem(self, body: dict[str, Any]) -> str | None:
        """What the real API would refuse in `body`, or None."""
        return None

    def tool_sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        """The stream of an answer with tool calls."""
        raise NotImplementedError

    def tool_json(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer with tool calls."""
        raise NotImplementedError

    def json_reply(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, status: Status) -> dict[str, Any]:
        raise NotImplementedError


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages", [])) + str(body.get("system", ""))
    return max(1, len(text) // 4)


class FakeOpenAI(FakeProviderServer):
    """POST /v1/chat/completions: chat.completion JSON or chat.completion.chunk SSE + [DONE]."""

    path = "/v1/chat/completions"
    frames_before_tokens = 1  # the role chunk

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _chunk(self, body: dict[str, Any], choices: list[Any], **extra: Any) -> str:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    def problem(self, body: dict[str, Any]) -> str | None:
        return provider_tools.openai_problem(body)

    def sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        tokens = reply.tokens()
        yield self._chunk(
            body,
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        )
        for token in tokens:
            yield self._chunk(
                body, [{"index": 0, "delta": {"content": token}, "finish_reason": None}]
            )
        yield self._chunk(body, [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = _prompt_tokens(body)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
            }
            yield self._chunk(body, [], usage=usage)
        yield "data: [DONE]\n\n"

    def tool_sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        """Text (if any), then each call's pieces, finish reason tool_calls, usage."""
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None}]
        deltas += [{"content": t} for t in reply.tokens() if reply.text]
        deltas += provider_tools.openai_tool_deltas(reply.tool_calls)
        for delta in deltas:
            yield self._chunk(body, [{"index": 0, "delta": delta, "finish_reason": None}])
        yield self._chunk(body, [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt, completion = _prompt_tokens(body), len(deltas)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield self._chunk(body, [], usage=usage)
        yield "data: [DONE]\n\n"

    def tool_json(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.json_reply(reply, body)
        answer["choices"][0]["message"] = provider_tools.openai_message(
            reply.text, reply.tool_calls
        )
        answer["choices"][0]["finish_reason"] = "tool_calls"
        return answer

    def json_reply(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = _prompt_tokens(body), len(reply.tokens())
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def error_body(self, status: Status) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 401: "authentication_error"}.get(
            status.status, "invalid_request_error" if status.status < 500 else "server_error"
        )
        return {
            "error": {"message": status.message, "type": kind, "param": None, "code": status.code}
        }


class FakeAnthropic(FakeProviderServer):
    """POST /v1/messages: message JSON or the message_start ... message_stop SSE sequence."""

    path = "/v1/messages"
    frames_before_tokens = 3  # message_start, content_block_start, ping
    malformed = b'event: message_start\ndata: {"type": "message_start", "message": {oops\n\n'

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    @staticmethod
    def _stopped(reply: Reply, body: dict[str, Any]) -> tuple[Reply, str, str | None]:
        """The reply cut before the first of the request's `stop_sequences` it holds, as
        the real API does: (reply, stop_reason, stop_sequence)."""
        hits = [(reply.text.find(s), s) for s in body.get("stop_sequences") or ()]
        hits = [(at, s) for at, s in hits if at >= 0]
        if hits:
            at, sequence = min(hits)
            return replace(reply, text=reply.text[:at]), "stop_sequence", sequence
        stop = {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish_reason, "end_turn")
        return reply, stop, None

    def sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        reply, stop, sequence = self._stopped(reply, body)
        tokens = reply.tokens()
        yield self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body.get("model", "fake"),
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": 1},
                },
            },
        )
        yield self._event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield self._event("ping", {"type": "ping"})
        for token in tokens:
            yield self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": token},
                },
            )
        yield self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": sequence},
                "usage": {"output_tokens": len(tokens)},
            },
        )
        yield self._event("message_stop", {"type": "message_stop"})

    def json_reply(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        reply, stop, sequence = self._stopped(reply, body)
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": stop,
            "stop_sequence": sequence,
            "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": len(reply.tokens())},
        }

    def error_body(self, status: Status) -> dict[str, Any]:
        kind = {
            429: "rate_limit_error",
            401: "authentication_error",
            529: "overloaded_error",
            500: "api_error",
            503: "api_error",
        }.get(status.status, "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": status.message}}

    # -- tool calls (tests.fakes.provider_tools) -------------------------------------

    def problem(self, body: dict[str, Any]) -> str | None:
        return provider_tools.anthropic_problem(body)

    def tool_sse(self, reply: Reply, body: dict[str, Any]) -> Iterator[str]:
        """message_start, a text block if the reply has text, a tool_use block per call
        (its input as input_json_delta pieces), stop reason tool_use."""
        start = self.json_reply(Reply(""), body) | {"content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": _prompt_tokens(body), "output_tokens": 1}
        yield self._event("message_start", {"type": "message_start", "message": start})
        first = 0
        if reply.text:
            block = {"type": "text", "text": ""}
            yield self._event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            for token in reply.tokens():
                delta = {"type": "text_delta", "text": token}
                yield self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            yield self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
            first = 1
        yield from provider_tools.anthropic_tool_events(self._event, reply.tool_calls, first)
        yield self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": len(reply.tokens()) + len(reply.tool_calls)},
            },
        )
        yield self._event("message_stop", {"type": "message_stop"})

    def tool_json(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        content = provider_tools.anthropic_content(reply.text, reply.tool_calls)
        return self.json_reply(reply, body) | {"content": content, "stop_reason": "tool_use"}
