"""ChatIngress: the FastAPI application inside Ray Serve (`@serve.ingress`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.client import ShardClient
from chatapp.chat import repository
from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from deployments.ingress.deps import IngressState, Principal
from deployments.ingress.errors import install_error_handlers
from deployments.ingress.limits import BodySizeLimit
from deployments.ingress.routes import conversations, openai
from deployments.ingress.turns import ChatTurns

logger = logging.getLogger(__name__)


def create_api(state: IngressState) -> FastAPI:
    """The HTTP API over `state`; usable without Serve (state carries the handles)."""
    api = FastAPI(
        title="ChatApp",
        version="0.1.0",
        description="Self-hostable LLM chat backend on Ray. Errors use the OpenAI envelope "
        '`{"error": {"message", "type", "param", "code"}}`.',
    )
    api.state.chatapp = state
    install_error_handlers(api)
    api.include_router(conversations.router)
    api.include_router(openai.router)

    @api.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    api.add_middleware(BodySizeLimit, max_bytes=state.settings.serve.max_body_bytes)
    return api


@serve.deployment(name="ChatIngress")
@serve.ingress()
class ChatIngress:
    async def __init__(self, settings: Settings, router: DeploymentHandle) -> None:
        engine = make_engine(settings.database)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session:
            user = await repository.get_or_create_user(
                session=session, email=settings.chat.local_user_email
            )
        shards = ShardClient(settings)
        for shard in shards.all_shards():  # create them now, not on the first request
            await shard.ping.remote()
        self._state = IngressState(
            settings=settings,
            sessionmaker=sessionmaker,
            shards=shards,
            router=router,
            turns=ChatTurns(settings=settings, shards=shards, router=router),
            local_user=Principal(id=user.id, email=user.email),
        )
        self._engine = engine

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self._state)
