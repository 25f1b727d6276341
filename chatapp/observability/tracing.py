"""Tracing: ChatApp's spans, through the OpenTelemetry API only.

Nothing here sets up an SDK. Without one (the default: tracing off) every call is
OpenTelemetry's no-op, and `stepped` hands a stream back untouched. The Ray side sets the
SDK up in each process that records spans (`deployments/tracing.py`); Ray Serve's own
tracing carries the context across deployment handles, and the shard calls carry theirs
as a W3C `traceparent` (`carrier` on the caller's side, `continued` on the shard's).

One chat turn as a trace (Ray Serve's spans in brackets):

    [replica_handle_request ChatIngress __call__]   the HTTP request, in the ingress
      chat.turn                                     model, provider, tokens, outcome
        chat.retrieve                               knowledge base, hits
          [route_to_replica Retrieval search]
            [replica_handle_request Retrieval search]
        chat.begin_turn
          shard.begin_turn                          in the conversation's shard actor
        chat.generate                               the model's stream, as the turn reads it
          [route_to_replica ChatRouter stream]
            [replica_handle_request ChatRouter stream]
              llm.route                             the requested model, cache, who answered
                llm.attempt                         one per try: provider, model, outcome
                  [route_to_replica SelfHostedLLM stream]      the self-hosted model only
                    [replica_handle_request SelfHostedLLM stream]
                      llm.engine                    the engine's generation
        chat.finish_turn
          shard.finish_turn

A `/v1` completion is `chat.completion` with the same children, less the shard's.
Attributes name models, providers, token counts, outcomes and error codes; never a
prompt, a message or an error's text (which may quote them).

A span held open across a `yield` must never be made current there: the reader would see
it as its own. Streams go through `stepped`, which makes their span current only while
each item is made.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from chatapp.llm.base import Finish, close_stream

T = TypeVar("T")
Attributes = Mapping[str, AttributeValue]

_tracer = trace.get_tracer("chatapp")

# Attribute names: OpenTelemetry's GenAI conventions where they have one.
MODEL = "gen_ai.request.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
PROVIDER = "gen_ai.provider.name"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASON = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
OUTCOME = "chatapp.outcome"


def start_span(name: str, attributes: Attributes | None = None) -> Span:
    """A span under the current one, not made current: for work that outlives a block
    (a stream: see `stepped`). The caller ends it."""
    return _tracer.start_span(name, attributes=attributes)


@contextmanager
def span(name: str, attributes: Attributes | None = None) -> Iterator[Span]:
    """A span under the current one, current inside the block, which must not `yield`
    from a generator. An error leaving the block marks it failed. Nothing at all when the
    current span records nothing (tracing off, or this trace not sampled)."""
    if not trace.get_current_span().is_recording():
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as opened:
        try:
            yield opened
        except Exception as exc:
            fail(opened, exc)
            raise


@contextmanager
def current(opened: Span) -> Iterator[None]:
    """`opened` current inside the block (which must not `yield` from a generator)."""
    if not opened.is_recording():
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(opened))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def opening(opened: Span) -> Iterator[None]:
    """`opened` current inside the block; an error leaving it marks it failed and ends
    it (the stream it was opening never started)."""
    try:
        with current(opened):
            yield
    except BaseException as exc:
        end(opened, exc)
        raise


@overload
def stepped(opened: Span, items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]: ...
@overload
def stepped(opened: Span, items: AsyncIterator[T]) -> AsyncIterator[T]: ...
def stepped(opened: Span, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items`, with `opened` current while each item is made and while they are closed
    (never across a `yield`, so it does not leak to the reader), and ended after them; an
    error raised from them marks it failed. When `opened` records nothing: `items`."""
    if not opened.is_recording():
        return items
    return _stepped(opened, items)


async def _stepped(opened: Span, items: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    ctx = trace.set_span_in_context(opened)
    failure: BaseException | None = None
    try:
        while True:
            token = otel_context.attach(ctx)
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except BaseException as exc:
                failure = exc
                raise
            finally:
                otel_context.detach(token)
            yield item
    finally:
        token = otel_context.attach(ctx)
        try:
            await close_stream(items)
        finally:
            otel_context.detach(token)
            end(opened, failure)


def fail(opened: Span, exc: BaseException) -> None:
    """Mark `opened` failed by the error's code (ChatApp's) or class, never its text."""
    kind = getattr(exc, "code", None) or type(exc).__name__
    opened.set_attribute(ERROR_TYPE, kind)
    opened.set_attribute(OUTCOME, "error")
    opened.set_status(Status(StatusCode.ERROR, kind))


def mark(opened: Span, failure: BaseException) -> None:
    """`opened` failed by `failure` when it is an error, cancelled when the work was (a
    client that went away is not an error)."""
    if isinstance(failure, Exception):
        fail(opened, failure)
    else:
        opened.set_attribute(OUTCOME, "cancelled")


def end(opened: Span, failure: BaseException | None = None) -> None:
    """End `opened`, marked by `failure` if any."""
    if failure is not None:
        mark(opened, failure)
    opened.end()


def finished(opened: Span, finish: Finish) -> None:
    """Who answered and what it cost, on `opened`."""
    if not opened.is_recording():
        return
    attributes: dict[str, AttributeValue] = {
        FINISH_REASON: [finish.finish_reason],
        INPUT_TOKENS: finish.prompt_tokens,
        OUTPUT_TOKENS: finish.completion_tokens,
        "chatapp.cached": finish.cached,
    }
    if finish.model:
        attributes[RESPONSE_MODEL] = finish.model
    if finish.provider:
        attributes[PROVIDER] = finish.provider
    if finish.fallback_from:
        attributes["chatapp.fallback_from"] = finish.fallback_from
    opened.set_attributes(attributes)


def current_span() -> Span:
    return trace.get_current_span()


# -- across a Ray actor call -----------------------------------------------------------


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (`traceparent`), to send along with a call
    to another process; None when nothing is being recorded (tracing off or not sampled),
    and the callee records nothing either."""
    if not trace.get_current_span().get_span_context().trace_flags.sampled:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def continued(
    name: str, headers: Mapping[str, str] | None, attributes: Attributes | None = None
) -> Iterator[Span]:
    """The callee's side of `carrier`: a span continuing the caller's trace, current inside
    the block, failed by an error leaving it; nothing when the caller sent no context."""
    if not headers:
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        name,
        context=propagate.extract(headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as opened:
        try:
            yield opened
        except Exception as exc:
            fail(opened, exc)
            raise
