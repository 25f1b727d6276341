"""ChatIngress: the FastAPI application inside Ray Serve (`@serve.ingress`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.client import ShardClient
from chatapp.auth.oidc import OidcClient
from chatapp.auth.service import TokenSigner
from chatapp.chat.service import ChatService
from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_read_sessions, make_sessionmaker
from chatapp.health import readiness_checker
from chatapp.logs import REQUEST_ID_HEADER, configure_logging
from chatapp.observability.metrics import (
    AuthMetrics,
    HttpMetrics,
    Instruments,
    PrometheusInstruments,
    TurnMetrics,
)
from chatapp.overhead import OVERHEAD_HEADER, TimedModelRouter
from chatapp.rag.library import KnowledgeLibrary, LibraryAccess
from chatapp.ratelimit import RateLimiter
from chatapp.usage.meter import build_meter
from deployments.handles import RetrievalHandle, RouterHandle
from deployments.ingress.access import IdentifyingCredentialCache, RequestLog
from deployments.ingress.deps import IngressState
from deployments.ingress.errors import install_error_handlers
from deployments.ingress.headers import SecurityHeaders
from deployments.ingress.limits import BodySizeLimit
from deployments.ingress.measure import MeasureRequests
from deployments.ingress.routes import (
    account,
    auth,
    conversations,
    embeddings,
    health,
    knowledge,
    messages,
    metrics,
    openai,
    responses,
    shares,
    transfer,
    usage,
)
from deployments.ingress.web import mount_web
from deployments.observe import RayInstruments

logger = logging.getLogger(__name__)


def create_api(
    state: IngressState, *, behind_serve: bool = False, instruments: Instruments | None = None
) -> FastAPI:
    """The HTTP API over `state`; usable without Serve (state carries the handles).
    `behind_serve`: Serve's HTTP layer already returns the incoming X-Request-ID;
    `instruments`: where requests are measured (a private registry when None)."""
    docs = state.settings.api_docs_enabled()  # off in production unless SERVE_DOCS_ENABLED
    api = FastAPI(
        title="ChatApp",
        version="0.1.0",
        description="Self-hostable LLM chat backend on Ray. Errors use the OpenAI envelope "
        '`{"error": {"message", "type", "param", "code", "request_id"}}`; every answer '
        "carries `X-Request-ID`.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    api.state.chatapp = state
    api.state.readiness = readiness_checker(
        state.settings, models=state.router.models, retriever=state.retrieval
    )
    install_error_handlers(api)
    api.include_router(health.router)
    api.include_router(auth.router)
    api.include_router(account.router)
    api.include_router(transfer.router)  # before /api/conversations/{id}
    api.include_router(conversations.router)
    api.include_router(shares.router)
    api.include_router(openai.router)
    api.include_router(messages.router)
    api.include_router(responses.router)
    api.include_router(embeddings.router)
    api.include_router(usage.router)
    if state.settings.metrics_access() != "off":
        api.include_router(metrics.router)
    elif state.settings.serve.metrics_enabled:
        logger.warning("/metrics is off: in production it needs SERVE_METRICS_TOKEN")
    api.include_router(knowledge.router)
    api.include_router(knowledge.admin_router)

    mount_web(api)  # last: every API route above takes precedence
    api.add_middleware(
        BodySizeLimit,
        max_bytes=state.settings.serve.max_body_bytes,
        # an import is a whole export file; its own limit is checked on the file itself
        larger={
            transfer.IMPORT_PATH: state.settings.chat.import_max_bytes + 64 * 1024,
            # uploads to a knowledge base: up to a user's whole quota (checked on the files)
            knowledge.UPLOAD_PATH: max(
                state.settings.rag.user_quota_bytes, state.settings.rag.max_file_bytes
            )
            + 1024 * 1024,
        },
    )
    api.add_middleware(SecurityHeaders, hsts_max_age_s=state.settings.hsts_max_age_s())
    if state.settings.auth.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.auth.cors_origins,
            allow_methods=["*"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Cache-Control",
                "X-ChatApp-Refresh",
                "Idempotency-Key",
                REQUEST_ID_HEADER,
                "x-api-key",  # Anthropic's SDKs (in a browser) send these
                "anthropic-version",
                "anthropic-beta",
            ],
            expose_headers=[
                "Retry-After",
                "Idempotent-Replayed",
                REQUEST_ID_HEADER,
                OVERHEAD_HEADER,
            ],
        )
    api.add_middleware(MeasureRequests, metrics=HttpMetrics(instruments or PrometheusInstruments()))
    # Outermost: it times and logs the whole request, and adds its id to every answer.
    api.add_middleware(RequestLog, echoed_upstream=behind_serve)
    return api


def build_state(
    settings: Settings, router: DeploymentHandle, retrieval: DeploymentHandle | None = None
) -> IngressState:
    """The replica's state: database, the chat service over its Ray adapters, token
    signer, rate limiter, OIDC clients."""
    sessionmaker = make_sessionmaker(make_engine(settings.database))
    shards = ShardClient(settings)
    router_handle = RouterHandle(router)
    retrieval_handle = RetrievalHandle(retrieval) if retrieval is not None else None
    instruments = RayInstruments()
    public_url = settings.auth.public_url.rstrip("/")
    limiter = RateLimiter(redis_url=settings.redis.url, key_prefix=settings.redis.key_prefix)
    library = KnowledgeLibrary(rag=settings.rag, retriever=retrieval_handle)
    state = IngressState(
        settings=settings,
        sessionmaker=sessionmaker,
        shards=shards,
        router=router_handle,
        retrieval=retrieval_handle,
        chat=ChatService(
            settings=settings,
            shards=shards,
            router=TimedModelRouter(router_handle),  # the model's share of /v1 overhead
            retriever=retrieval_handle,
            knowledge=LibraryAccess(library, sessionmaker),
            usage=build_meter(settings, sessionmaker),
            metrics=TurnMetrics(instruments),
        ),
        signer=TokenSigner.from_settings(settings.auth, secret=settings.secret_key),
        limiter=limiter,
        oidc={
            p.name: OidcClient(p, redirect_uri=f"{public_url}/api/auth/oidc/{p.name}/callback")
            for p in settings.auth.oidc_providers
        },
        auth_metrics=AuthMetrics(instruments),
        read_sessions=make_read_sessions(settings.database, sessionmaker),
        knowledge=library,
    )
    # Tells each request's log line who its caller is, at authentication.
    state.credentials = IdentifyingCredentialCache.from_settings(settings.redis, settings.auth)
    return state


@serve.deployment(name="ChatIngress")
@serve.ingress()
class ChatIngress:
    async def __init__(
        self,
        settings: Settings,
        router: DeploymentHandle,
        retrieval: DeploymentHandle | None = None,
        indexer: DeploymentHandle | None = None,  # bound so Serve runs it; jobs go by SQL
    ) -> None:
        configure_logging(settings.logs, environment=settings.environment)
        self._state = build_state(settings, router, retrieval)
        for shard in self._state.shards.all_shards():  # create them now, not on first use
            await shard.ping.remote()

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self._state, behind_serve=True, instruments=RayInstruments())

    async def __del__(self) -> None:
        """Shutting down: write the usage rows still waiting in memory."""
        if self._state.chat.usage is not None:
            await self._state.chat.usage.aclose()
