"""Tracing in the core, without Ray: the span tree of one turn (retries and fallback
visible), what a failed or abandoned turn looks like, the trace context across a process
boundary, and tracing off costing nothing (no span, the stream handed back untouched).

The SDK's in-memory exporter receives the spans. OpenTelemetry allows one tracer provider
per process, so this module installs one whose sampler is switched on only by the
`spans` fixture: every other test keeps seeing non-recording spans, as with tracing off.
The whole path through Ray is `tests/cluster/test_tracing.py`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from chatapp.chat import repository
from chatapp.chat.hot import ConversationStore
from chatapp.chat.schemas import MessageCreate
from chatapp.chat.service import ChatService, TurnDone
from chatapp.config import DatabaseSettings, Settings, TracingSettings
from chatapp.db.engine import make_engine, make_sessionmaker, migrate
from chatapp.errors import ServiceUnavailable
from chatapp.llm.base import ChatProvider, TextDelta
from chatapp.llm.router import build_router
from chatapp.observability import tracing
from deployments.serve_env import use_tracing
from deployments.tracing import ContinueCurrent, RedactQuery
from tests.fakes.scripted import Answer, ScriptedProvider
from tests.fakes.users import create_user

QUESTION = "How many days of leave do I get?"
SETTINGS = Settings.from_overrides(
    {
        "llm": {"model_name": "local", "context_window": 2048, "default_max_tokens": 32},
        "rag": {"default_kb": "handbook", "mode": "auto"},
        "providers": {
            "openai_api_key": "sk-test",
            "models": [
                {
                    "name": "gpt",
                    "provider": "openai",
                    "provider_model": "gpt-x",
                    "context_window": 8000,
                },
            ],
            "primary": "gpt",
            "retry_attempts": 2,
            "retry_initial_s": 0.001,
        },
    }
)


class _Switch(Sampler):
    on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Any] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        sampled = not parent.is_valid or parent.trace_flags.sampled  # parent-based
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if self.on and sampled else Decision.DROP, attributes
        )

    def get_description(self) -> str:
        return "on while a test of this module runs"


_SWITCH = _Switch()
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    installed = TracerProvider(sampler=_SWITCH)
    installed.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(installed)
    if trace.get_tracer_provider() is not installed:
        pytest.skip("another tracer provider was installed in this process first")
    return installed


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    _SWITCH.on = True
    yield _EXPORTER
    _SWITCH.on = False


class Handbook:
    async def search(self, query: str, knowledge_base: str, **_: Any) -> list[Any]:
        return []  # searched, nothing found

    async def knowledge_bases(self) -> list[Any]:
        return []


class Rig:
    def __init__(self, db: DatabaseSettings) -> None:
        self.engine = make_engine(db)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.openai = ScriptedProvider("openai")
        self.local = ScriptedProvider("self-hosted", Answer("Thirty days a year."))
        providers: dict[str, ChatProvider] = {"openai": self.openai, "self-hosted": self.local}
        self.service = ChatService(
            settings=SETTINGS,
            shards=ConversationStore(
                sessionmaker=self.sessionmaker, hot_turns=20, max_hot=100, idle_timeout_s=600
            ),
            router=build_router(SETTINGS, providers),
            retriever=Handbook(),
        )

    async def conversation(self) -> tuple[uuid.UUID, uuid.UUID]:
        async with self.sessionmaker() as session:
            user = await create_user(session)
            conv = await repository.create_conversation(session=session, user_id=user.id)
        return user.id, conv.id


@pytest.fixture
def db(tmp_path: Path) -> DatabaseSettings:
    """SQLite migrated to head (before the test's event loop runs: Alembic runs its own)."""
    settings = DatabaseSettings(url=None, var_dir=tmp_path / "var")
    migrate(settings)
    return settings


@pytest.fixture
async def rig(db: DatabaseSettings) -> AsyncIterator[Rig]:
    made = Rig(db)
    yield made
    await made.engine.dispose()


class Tree:
    def __init__(self, finished: Sequence[ReadableSpan]) -> None:
        self.spans = sorted(finished, key=lambda s: s.start_time or 0)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [found] = self.named(name)
        return found

    def kids(self, span: ReadableSpan) -> list[ReadableSpan]:
        assert span.context is not None
        return [s for s in self.spans if s.parent and s.parent.span_id == span.context.span_id]


async def test_a_turn_is_one_tree_its_retries_and_fallback_visible(
    rig: Rig, spans: InMemorySpanExporter
) -> None:
    rig.openai.enqueue(ServiceUnavailable("down"), ServiceUnavailable("still down"))
    user, conv = await rig.conversation()
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content=QUESTION)
    )
    received = []
    async for event in events:
        # The turn's spans are current only while it works: never in its reader's hands.
        assert not trace.get_current_span().get_span_context().is_valid
        received.append(event)
    done = received[-1]
    assert isinstance(done, TurnDone) and done.message.provider == "self-hosted"

    tree = Tree(spans.get_finished_spans())
    turn = tree.one("chat.turn")
    assert turn.parent is None and {s.context.trace_id for s in tree.spans} == {
        turn.context.trace_id
    }
    assert [s.name for s in tree.kids(turn)] == [
        "chat.retrieve",
        "chat.begin_turn",
        "chat.generate",
        "chat.finish_turn",
    ]
    [route] = tree.kids(tree.one("chat.generate"))
    assert route.name == "llm.route"
    attempts = [
        (*(a.attributes[k] for k in (tracing.PROVIDER, "chatapp.attempt", tracing.OUTCOME)),
         a.status.status_code)
        for a in tree.kids(route)
        if a.attributes
    ]  # fmt: skip
    assert attempts == [
        ("openai", 1, "error", StatusCode.ERROR),
        ("openai", 2, "error", StatusCode.ERROR),
        ("self-hosted", 1, "ok", StatusCode.UNSET),
    ]
    assert tree.kids(route)[0].attributes["error.type"] == "service_unavailable"
    assert turn.attributes == {
        **turn.attributes,
        "chatapp.outcome": "complete",
        "gen_ai.provider.name": "self-hosted",
        "gen_ai.response.model": "local",
        "chatapp.fallback_from": "gpt",
        "gen_ai.usage.output_tokens": 4,
        "chatapp.conversation_id": str(conv),
    }
    contents = repr([dict(s.attributes or {}) for s in tree.spans])
    assert "leave" not in contents and "Thirty" not in contents


async def test_an_abandoned_turn_is_cancelled_not_failed_and_its_reply_still_stored(
    rig: Rig, spans: InMemorySpanExporter
) -> None:
    user, conv = await rig.conversation()
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content=QUESTION)
    )
    async for event in events:
        if isinstance(event, TextDelta):
            break  # the client went away after the first words
    await events.aclose()

    tree = Tree(spans.get_finished_spans())
    turn = tree.one("chat.turn")
    assert turn.attributes["chatapp.outcome"] == "cancelled"
    assert turn.status.status_code is StatusCode.UNSET
    assert "chat.finish_turn" in [s.name for s in tree.kids(turn)]  # the partial reply


async def test_a_turn_no_model_could_answer_is_an_error_and_is_undone(
    rig: Rig, spans: InMemorySpanExporter
) -> None:
    rig.openai.enqueue(ServiceUnavailable("down"), ServiceUnavailable("down"))
    rig.local.enqueue(ServiceUnavailable("down"), ServiceUnavailable("down"))
    user, conv = await rig.conversation()
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content=QUESTION)
    )
    with pytest.raises(ServiceUnavailable):
        async for _ in events:
            pass

    tree = Tree(spans.get_finished_spans())
    turn = tree.one("chat.turn")
    assert turn.status.status_code is StatusCode.ERROR
    assert turn.attributes["error.type"] == "service_unavailable"
    assert [s.name for s in tree.kids(turn)][-1] == "chat.abort_turn"
    assert len(tree.named("llm.attempt")) == 4  # each model tried twice


async def test_the_trace_context_crosses_a_process_boundary_as_a_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("chat.begin_turn") as caller:
        assert not caller.is_recording()  # no span under nothing: a turn starts a trace
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        headers = tracing.carrier()
    assert headers is not None and set(headers) >= {"traceparent"}
    # ... the other process:
    with tracing.continued("shard.begin_turn", headers, {"chatapp.shard": 0}):
        pass
    shard = Tree(spans.get_finished_spans()).one("shard.begin_turn")
    assert shard.parent is not None and shard.parent.span_id == caller.get_span_context().span_id
    assert shard.kind is SpanKind.SERVER
    with tracing.continued("shard.finish_turn", None):  # the caller traced nothing
        pass
    assert not Tree(spans.get_finished_spans()).named("shard.finish_turn")


async def test_tracing_off_no_span_and_the_stream_handed_back_untouched(
    rig: Rig, provider: TracerProvider
) -> None:
    assert not _SWITCH.on  # as with no SDK at all: every span a non-recording one
    _EXPORTER.clear()
    user, conv = await rig.conversation()
    events = await rig.service.post_message(
        user_id=user, conversation_id=conv, body=MessageCreate(content=QUESTION)
    )
    assert events.__qualname__ == "ChatService._turn_events"  # no wrapper around it
    assert tracing.carrier() is None
    assert [e async for e in events][-1].message.status == "complete"  # type: ignore[union-attr]
    assert _EXPORTER.get_finished_spans() == ()


def test_a_request_is_traced_whole_or_not_at_all_and_its_query_values_never(
    spans: InMemorySpanExporter,
) -> None:
    """How FastAPI's own span of a request (its parent read from the request's headers)
    joins Ray Serve's span of it in the ingress replica (`deployments.tracing`)."""
    propagator = ContinueCurrent(TraceContextTextMapPropagator())
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("replica_handle_request ChatIngress __call__") as serve:
        parent = propagator.extract({})  # no traceparent from the client
    http = tracer.start_span("GET /api/conversations", context=parent)
    assert http.parent is not None and http.parent.span_id == serve.get_span_context().span_id
    # Serve did not sample the request (no span of it current): FastAPI does not either.
    unsampled = tracer.start_span("GET /api/conversations", context=propagator.extract({}))
    assert not unsampled.is_recording()
    # A client's own traceparent is the parent, as without ContinueCurrent.
    client = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    with tracer.start_as_current_span("replica_handle_request ChatIngress __call__"):
        joined = propagator.extract({"traceparent": client})
    assert trace.get_current_span(joined).get_span_context().trace_id == int("ab" * 16, 16)

    searched = tracer.start_span("GET /api/conversations", attributes={"url.query": "q=a&n=5"})
    RedactQuery().on_start(searched)  # type: ignore[arg-type]
    assert dict(searched.attributes or {}) == {"url.query": "q=REDACTED&n=REDACTED"}  # type: ignore[attr-defined]


def test_tracing_is_configured_by_the_standard_variables_and_off_by_default() -> None:
    assert not TracingSettings().enabled
    environ: dict[str, str] = {}
    use_tracing(environ)
    assert environ == {}  # off: Serve's tracing stays off too
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    use_tracing(environ)
    assert environ["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"] == (
        "deployments.tracing:span_processors"
    )
    assert environ["RAY_SERVE_TRACING_SAMPLING_RATIO"] == "0.25"
    assert environ["OTEL_SERVICE_NAME"] == "chatapp"
    on = {"OTEL_TRACES_EXPORTER": "otlp", "RAY_SERVE_TRACING_SAMPLING_RATIO": "0.5"}
    use_tracing(on)  # an explicit Serve setting wins
    assert on["RAY_SERVE_TRACING_SAMPLING_RATIO"] == "0.5"
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER: jaeger"):
        use_tracing({"OTEL_TRACES_EXPORTER": "jaeger"})
