"""The fake OpenAI upstream of `bench/gateway.py`, run as a process of its own (so its CPU
is apart from the load generator's and the gateway's).

It is the test suite's `FakeOpenAI` (tests/fakes/providers.py: the real wire format,
``chat.completion`` JSON and ``chat.completion.chunk`` SSE ending in ``[DONE]``, with the
usage chunk when ``stream_options.include_usage`` is set) at a fixed speed: a reply of
`reply_tokens` tokens, streamed `1 / tokens_per_s` apart (the first at once, as the
fake sends it), or as JSON after the whole reply's time. It keeps no log of requests.

    python -m bench.upstream --port 8100 --tokens-per-s 200 --reply-tokens 64
    curl -s localhost:8100/v1/chat/completions -d '{"messages": []}'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python bench/upstream.py`: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.providers import FakeOpenAI, Reply


def reply_text(reply_tokens: int) -> str:
    """The upstream's answer: `reply_tokens` words, one token each for the fake."""
    return " ".join(f"tok{i}" for i in range(reply_tokens))


class PacedOpenAI(FakeOpenAI):
    """`FakeOpenAI` answering every request with the same reply at a fixed speed."""

    def __init__(self, *, tokens_per_s: float, reply_tokens: int) -> None:
        super().__init__()
        self.default = Reply(reply_text(reply_tokens), token_delay_s=1 / tokens_per_s)

    async def handle(self, request: Request) -> Response:
        response = await self._handle(request)  # a whole answer: after all its tokens' time
        self.requests.clear()  # a benchmark sends far too many to keep
        return response

    def app(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return PlainTextResponse("ok")

        return Starlette(
            routes=[
                Route(self.path, self.handle, methods=["POST"]),
                Route("/healthz", healthz),
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens-per-s", type=float, default=200.0)
    parser.add_argument("--reply-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    fake = PacedOpenAI(tokens_per_s=args.tokens_per_s, reply_tokens=args.reply_tokens)
    uvicorn.run(fake.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
