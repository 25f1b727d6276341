"""FastAPI dependencies, declared once as `Annotated` aliases and reused on every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors.client import ShardClient
from chatapp.auth import credentials
from chatapp.auth.credentials import CredentialCache, Principal
from chatapp.auth.oidc import OidcClient
from chatapp.auth.service import TokenSigner
from chatapp.auth.tokens import API_KEY_PREFIX, InvalidToken
from chatapp.cache.responses import CacheMode
from chatapp.chat.service import ChatService
from chatapp.config import Settings
from chatapp.db.engine import ReadSessions
from chatapp.errors import PermissionDenied
from chatapp.observability.metrics import AuthMetrics, PrometheusInstruments
from chatapp.rag.library import KnowledgeLibrary
from chatapp.ratelimit import RateLimiter, TrustedProxies
from deployments.handles import RetrievalHandle, RouterHandle


@dataclass(slots=True)
class IngressState:
    """Everything routes need, built once per replica."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    shards: ShardClient
    router: RouterHandle
    retrieval: RetrievalHandle | None  # None when RAG is disabled
    chat: ChatService
    signer: TokenSigner
    limiter: RateLimiter
    oidc: dict[str, OidcClient] = field(default_factory=dict)
    # reads that tolerate replication lag (DATABASE_READ_URL); None: `sessionmaker`'s
    read_sessions: ReadSessions | None = None
    # logins and 429s (Ray's metrics in Serve; a private registry otherwise)
    auth_metrics: AuthMetrics = field(default_factory=lambda: AuthMetrics(PrometheusInstruments()))
    # knowledge bases users own; built from `settings` and `retrieval` when not given
    knowledge: KnowledgeLibrary | None = None
    credentials: CredentialCache = field(init=False)  # built from `settings`
    proxies: TrustedProxies = field(init=False)

    def __post_init__(self) -> None:
        self.credentials = CredentialCache.from_settings(self.settings.redis, self.settings.auth)
        self.proxies = TrustedProxies(self.settings.auth.trusted_proxies)
        if self.knowledge is None:
            self.knowledge = KnowledgeLibrary(rag=self.settings.rag, retriever=self.retrieval)

    @property
    def library(self) -> KnowledgeLibrary:
        assert self.knowledge is not None  # __post_init__
        return self.knowledge


# Dependencies are `async def` even where they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a hop that cost ~4% of the ingress's CPU per request.


async def get_state(request: Request) -> IngressState:
    state: IngressState = request.app.state.chatapp
    return state


StateDep = Annotated[IngressState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_read_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session on the read replica when one is configured and answers, else the primary:
    only for read-only routes whose answer may lag the writes a little (never the turn)."""
    if state.read_sessions is None:
        async with state.sessionmaker() as session:
            yield session
        return
    async with state.read_sessions.session() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]

bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)
BearerDep = Annotated[str | None, Depends(bearer)]


# Authentication uses a session of its own, closed as soon as the caller is known: the
# request's `SessionDep` lives until the response ends, which for a streamed reply held a
# pooled connection (idle in transaction) for the whole stream and capped concurrent
# streams at the pool's size. Most requests need no session at all: the replica's
# credential cache knows the caller (chatapp/auth/credentials.py).


async def get_current_user(state: StateDep, token: BearerDep) -> Principal:
    """A logged-in user (JWT access token)."""
    if not token:
        raise InvalidToken("log in first: send `Authorization: Bearer <access token>`")
    if token.startswith(API_KEY_PREFIX):
        raise InvalidToken("API keys work on the /v1 API; log in to use /api")
    return await credentials.principal_for_access_token(
        sessionmaker=state.sessionmaker, signer=state.signer, cache=state.credentials, token=token
    )


ApiKeyHeader = Annotated[
    str | None,
    Header(
        alias="x-api-key",
        description="An API key (`cak_…`) as Anthropic's SDKs send it; the same as "
        "`Authorization: Bearer cak_…`, which wins when both are sent.",
    ),
]


async def get_api_user(
    state: StateDep, token: BearerDep, x_api_key: ApiKeyHeader = None
) -> Principal:
    """A logged-in user or an API key (`Authorization: Bearer cak_…`, or `x-api-key:
    cak_…` as Anthropic's SDKs send it), for /v1."""
    token = token or x_api_key
    if token and token.startswith(API_KEY_PREFIX):
        return await credentials.principal_for_api_key(
            sessionmaker=state.sessionmaker, cache=state.credentials, key=token
        )
    return await get_current_user(state, token)


CurrentUser = Annotated[Principal, Depends(get_current_user)]
ApiUser = Annotated[Principal, Depends(get_api_user)]


async def get_current_admin(user: CurrentUser) -> Principal:
    if user.role != "admin":
        raise PermissionDenied("only admins can do this")
    return user


CurrentAdmin = Annotated[Principal, Depends(get_current_admin)]


async def _limit_chat(state: IngressState, user: Principal) -> Principal:
    """Per-user chat requests per minute (tokens per minute, the monthly budget and
    concurrent replies are held by the chat service's usage meter)."""
    await state.limiter.hit(state.settings.auth.chat_request_limit, "chat-requests", str(user.id))
    return user


async def chat_rate_limit(state: StateDep, user: CurrentUser) -> Principal:
    return await _limit_chat(state, user)


async def api_chat_rate_limit(state: StateDep, user: ApiUser) -> Principal:
    return await _limit_chat(state, user)


ChatUser = Annotated[Principal, Depends(chat_rate_limit)]
ApiChatUser = Annotated[Principal, Depends(api_chat_rate_limit)]


async def cache_mode(
    x_chatapp_cache: Annotated[
        str | None,
        Header(
            alias="X-ChatApp-Cache",
            description="`no` skips the response cache; `yes` uses it at any temperature; "
            "absent: answers are cached at temperature 0 only.",
        ),
    ] = None,
) -> CacheMode:
    value = (x_chatapp_cache or "").strip().lower()
    if value in ("no", "off", "false", "0", "no-store", "bypass"):
        return "off"
    if value in ("yes", "on", "true", "1"):
        return "on"
    return "auto"


CacheModeDep = Annotated[CacheMode, Depends(cache_mode)]


def client_ip(request: Request) -> str:
    """The client's address; behind AUTH_TRUSTED_PROXIES, from their X-Forwarded-For."""
    state: IngressState = request.app.state.chatapp
    peer = request.client.host if request.client else None
    return state.proxies.client(peer, request.headers.getlist("x-forwarded-for"))


async def get_client_ip(request: Request) -> str:
    return client_ip(request)


ClientIp = Annotated[str, Depends(get_client_ip)]
