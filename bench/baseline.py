"""The baseline the chat benchmarks compare ChatApp with: a FastAPI passthrough on uvicorn
with the same request/response shapes as ChatApp's conversation endpoints, streaming the
same `SimulatedEngine`, in one process: no Ray, no database, no login.

    python bench/baseline.py --port 8001 [--tokens-per-s 200] [--reply-tokens 64]

`bench.systems.start_baseline` starts it so, under the supervisor (it imports nothing from
`bench`; run by its path, its process is labelled ``bench/baseline.py`` in the CPU table).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

# FastAPI resolves the routes' (string) annotations in this module's globals.
from chatapp.chat.schemas import ConversationCreate, MessageCreate
from chatapp.config import LLMSettings
from chatapp.llm.base import ChatMessage, Finish, SamplingParams, TextDelta
from chatapp.llm.engines import build_chat_engine


def build_baseline(tokens_per_s: float, reply_tokens: int) -> FastAPI:
    engine = build_chat_engine(
        LLMSettings(
            engine="simulated",
            simulated_tokens_per_s=tokens_per_s,
            simulated_reply_tokens=reply_tokens,
        )
    )
    api = FastAPI()
    busy: set[uuid.UUID] = set()
    seqs: dict[uuid.UUID, int] = {}

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/api/conversations", status_code=201)
    async def create(body: ConversationCreate) -> dict[str, Any]:
        cid = uuid.uuid4()
        seqs[cid] = 0
        return {"id": str(cid), "title": body.title}

    @api.post("/api/conversations/{cid}/messages", response_model=None)
    async def post_message(cid: uuid.UUID, body: MessageCreate) -> Any:
        if cid not in seqs:
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        if cid in busy:
            return JSONResponse({"error": {"message": "turn in progress"}}, status_code=409)
        busy.add(cid)
        seqs[cid] += 2
        seq = seqs[cid]
        messages = [ChatMessage("system", "You are a bench."), ChatMessage("user", body.content)]
        params = SamplingParams(max_tokens=body.max_tokens or 256)
        if not body.stream:
            try:
                parts: list[str] = []
                finish: Finish | None = None
                async for chunk in engine.stream(messages, params):
                    if isinstance(chunk, TextDelta):
                        parts.append(chunk.text)
                    elif isinstance(chunk, Finish):
                        finish = chunk
            finally:
                busy.discard(cid)
            assert finish is not None
            return JSONResponse(
                {
                    "user_message": {"id": str(uuid.uuid4()), "seq": seq - 1},
                    "message": {
                        "id": str(uuid.uuid4()),
                        "seq": seq,
                        "role": "assistant",
                        "content": "".join(parts),
                        "status": "complete",
                        "finish_reason": finish.finish_reason,
                        "model": finish.model,
                        "prompt_tokens": finish.prompt_tokens,
                        "completion_tokens": finish.completion_tokens,
                    },
                }
            )

        async def events() -> Any:
            try:
                yield ServerSentEvent(
                    json.dumps({"user_message_id": str(uuid.uuid4()), "seq": seq - 1}),
                    event="start",
                )
                async for chunk in engine.stream(messages, params):
                    if isinstance(chunk, TextDelta):
                        yield ServerSentEvent(json.dumps({"text": chunk.text}), event="token")
                    elif isinstance(chunk, Finish):
                        usage = {
                            "prompt_tokens": chunk.prompt_tokens,
                            "completion_tokens": chunk.completion_tokens,
                            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
                        }
                        done = {
                            "message_id": str(uuid.uuid4()),
                            "seq": seq,
                            "finish_reason": chunk.finish_reason,
                            "model": chunk.model,
                            "usage": usage,
                        }
                        yield ServerSentEvent(json.dumps(done), event="done")
            finally:
                busy.discard(cid)

        return EventSourceResponse(events(), ping=15)

    return api


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    parser.add_argument("--reply-tokens", type=int, default=64)
    args = parser.parse_args()
    api = build_baseline(args.tokens_per_s, args.reply_tokens)
    uvicorn.run(api, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
