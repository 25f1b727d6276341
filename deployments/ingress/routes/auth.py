"""/api/auth: register, OAuth2 password flow, refresh, logout, OIDC login and linking.

Browsers keep the refresh token in an HttpOnly, SameSite=Strict cookie scoped to
/api/auth/refresh, which page scripts cannot read: they ask for it with the
`X-ChatApp-Refresh: cookie` header on login and refresh (the header also stops other sites'
forms, which cannot send it). API clients send and receive the refresh token in JSON as
before. An OIDC login hands the browser only that cookie (never tokens in the URL), and the
page trades it for an access token with a POST to /api/auth/refresh.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from chatapp.auth import identities, service
from chatapp.auth.oidc import STATE_TTL_S, LoginState, OidcClient, open_state, seal_state
from chatapp.auth.schemas import (
    OidcLink,
    OidcLinkStart,
    OidcProviderPublic,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserPublic,
)
from chatapp.auth.tokens import InvalidToken
from chatapp.db.models import User
from chatapp.errors import Conflict, NotFound, Unauthenticated
from deployments.ingress.deps import (
    BearerDep,
    ClientIp,
    CurrentUser,
    IngressState,
    SessionDep,
    StateDep,
    client_ip,
)
from deployments.ingress.lockout import password_attempt

router = APIRouter(prefix="/api/auth", tags=["auth"])

_STATE_COOKIE = "chatapp_oidc"
_REFRESH_COOKIE = "chatapp_refresh"
_REFRESH_PATH = "/api/auth/refresh"
_COOKIE_MODE = "X-ChatApp-Refresh"


def _wants_cookie(request: Request) -> bool:
    return request.headers.get(_COOKIE_MODE, "").strip().lower() == "cookie"


def _refresh_cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") + _REFRESH_PATH


def _cookie_secure(state: IngressState) -> bool:
    auth = state.settings.auth
    return (
        auth.cookie_secure
        if auth.cookie_secure is not None
        else (auth.public_url.startswith("https://"))
    )


def _hand_over(
    tokens: TokenPair, request: Request, response: Response, state: IngressState, *, cookie: bool
) -> TokenPair:
    """`tokens` for the client: with `cookie`, the refresh token goes into the cookie only."""
    if not cookie or tokens.refresh_token is None:
        return tokens
    response.set_cookie(
        _REFRESH_COOKIE,
        tokens.refresh_token,
        max_age=state.settings.auth.refresh_token_ttl_s,
        path=_refresh_cookie_path(request),
        httponly=True,
        secure=_cookie_secure(state),
        samesite="strict",
    )
    return tokens.model_copy(update={"refresh_token": None})


def _forget_cookie(request: Request, response: Response, state: IngressState) -> None:
    response.delete_cookie(
        _REFRESH_COOKIE,
        path=_refresh_cookie_path(request),
        httponly=True,
        secure=_cookie_secure(state),
        samesite="strict",
    )


@router.post("/register", status_code=201)
async def register(
    body: UserCreate, request: Request, state: StateDep, session: SessionDep
) -> UserPublic:
    await state.limiter.hit(
        state.settings.auth.register_ip_limit,
        "register-ip",
        client_ip(request),
        what="registrations",
    )
    user = await service.register_user(
        session=session,
        settings=state.settings.auth,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
    )
    return UserPublic.model_validate(user)


@router.post("/token")
async def login(
    username: Annotated[str, Form(max_length=320, description="The account's email.")],
    password: Annotated[str, Form(max_length=1024)],
    request: Request,
    response: Response,
    state: StateDep,
    session: SessionDep,
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenPair:
    """OAuth2 password flow: form fields `username` (the email) and `password`. With the
    header `X-ChatApp-Refresh: cookie` the refresh token is set as an HttpOnly cookie
    instead of returned."""
    limits, email = state.settings.auth, service.normalize_email(username)
    await state.limiter.hit(limits.login_ip_limit, "login-ip", client_ip(request), what="logins")
    logins = state.auth_metrics.logins
    async with password_attempt(state, email, client_ip(request)):
        user = await service.authenticate(session=session, email=email, password=password)
        if user is None:
            logins.labels("password", "wrong").inc()
            raise Unauthenticated("wrong email or password")
    tokens = await service.start_session(session=session, signer=state.signer, user=user)
    logins.labels("password", "ok").inc()
    return _hand_over(tokens, request, response, state, cookie=_wants_cookie(request))


@router.post("/refresh")
async def refresh(
    request: Request,
    response: Response,
    state: StateDep,
    session: SessionDep,
    body: RefreshRequest | None = None,
) -> TokenPair:
    """Trade a refresh token for a new pair; each refresh token works once. API clients
    send it in the body; browsers send no body, the header `X-ChatApp-Refresh: cookie` and
    the cookie, and get the rotated token back in the cookie. Two refreshes with the same
    token at once (two tabs) both get an access token: the second within
    AUTH_REFRESH_REUSE_GRACE_S gets no new refresh token (a body client: 409), instead of
    the reuse ending the session."""
    cookie = body is None
    if body is not None:
        presented: str | None = body.refresh_token
    elif _wants_cookie(request):
        presented = request.cookies.get(_REFRESH_COOKIE)
    else:
        presented = None
    if not presented:
        raise InvalidToken(
            "send the refresh token in the body, or (browsers) the login's cookie with the "
            "header `X-ChatApp-Refresh: cookie`; else log in again"
        )
    tokens = await service.refresh_session(
        session=session,
        signer=state.signer,
        revocations=state.credentials.revocations,
        refresh_token=presented,
        grace=timedelta(seconds=state.settings.auth.refresh_reuse_grace_s),
    )
    if tokens.refresh_token is None and not cookie:
        raise Conflict(
            "this refresh token was just used by another refresh; use the refresh token that "
            "one returned (the session goes on)"
        )
    return _hand_over(tokens, request, response, state, cookie=cookie)


@router.post("/logout", status_code=204)
async def logout(
    request: Request,
    state: StateDep,
    session: SessionDep,
    token: BearerDep,
    body: RefreshRequest | None = None,
) -> Response:
    """End the session of the refresh token (or of the bearer access token); a browser's
    refresh cookie is cleared."""
    revocations = state.credentials.revocations
    if body is not None:
        await service.revoke_session_of(
            session=session, revocations=revocations, refresh_token=body.refresh_token
        )
    elif token:
        _, session_id = await service.user_for_access_token(
            session=session, signer=state.signer, token=token
        )
        await service.revoke_session(
            session=session, revocations=revocations, session_id=session_id
        )
    else:
        raise Unauthenticated("send the refresh token in the body or an access token")
    response = Response(status_code=204)
    _forget_cookie(request, response, state)
    return response


@router.get("/providers")
async def providers(state: StateDep) -> list[OidcProviderPublic]:
    """External login providers, for login buttons."""
    return [
        OidcProviderPublic(
            name=client.provider.name,
            display_name=client.provider.display_name,
            login_url=f"/api/auth/oidc/{name}/login",
        )
        for name, client in state.oidc.items()
    ]


def _provider(state: IngressState, name: str) -> OidcClient:
    client = state.oidc.get(name)
    if client is None:
        raise NotFound(f"login provider {name!r} is not configured")
    return client


def _remember(response: Response, login_state: LoginState, state: IngressState) -> None:
    """The login's state, nonce and verifier, for the callback in this browser only."""
    response.set_cookie(
        _STATE_COOKIE,
        seal_state(login_state, secret=state.settings.secret_key),
        max_age=STATE_TTL_S,
        path="/api/auth/oidc",
        httponly=True,
        samesite="lax",
        secure=state.settings.auth.public_url.startswith("https://"),
    )


@router.get("/oidc/{name}/login")
async def oidc_login(name: str, state: StateDep) -> RedirectResponse:
    url, login_state = await _provider(state, name).start()
    response = RedirectResponse(url, status_code=302)
    _remember(response, login_state, state)
    return response


@router.post("/oidc/{name}/link")
async def oidc_link(
    name: str,
    body: OidcLink,
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    response: Response,
    client_address: ClientIp,
) -> OidcLinkStart:
    """Start linking this provider to the logged-in account (the way for an account made
    with a password, whose email nobody verified, to log in with the provider too). Needs
    the password, or for an account without one a login of the last 10 minutes. Send the
    browser to `authorization_url`; the callback then logs it in like a login."""
    client = _provider(state, name)
    account = await session.get(User, user.id)
    if account is None:
        raise NotFound("account not found")
    if account.password_hash is not None:
        async with password_attempt(state, account.email, client_address):
            await service.check_password(
                user=account, password=body.password, what="nothing was linked"
            )
    else:
        await identities.check_fresh_login(session=session, session_id=user.session_id)
    url, login_state = await client.start(link_user=str(user.id))
    _remember(response, login_state, state)
    return OidcLinkStart(authorization_url=url)


@router.get("/oidc/{name}/callback")
async def oidc_callback(
    name: str,
    request: Request,
    state: StateDep,
    session: SessionDep,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state_param: Annotated[str | None, Query(alias="state", max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> RedirectResponse:
    """Finish the login, then send the browser to the chat page holding only the new
    session's refresh cookie, which the page trades for an access token (POST
    /api/auth/refresh). No tokens travel in the URL: a link with planted tokens would log
    the page in as someone else (login CSRF)."""
    client = _provider(state, name)
    if error or not code or not state_param:
        raise Unauthenticated(f"{client.provider.display_name} did not complete the login")
    login_state = open_state(request.cookies.get(_STATE_COOKIE), secret=state.settings.secret_key)
    identity = await client.finish(code=code, state=state_param, login=login_state)
    if login_state.link_user is not None:
        user = await identities.link_identity(
            session=session,
            settings=state.settings.auth,
            user_id=uuid.UUID(login_state.link_user),
            provider=name,
            subject=identity.subject,
            email=identity.email,
            email_verified=identity.email_verified,
        )
    else:
        user = await identities.user_for_oidc_login(
            session=session,
            settings=state.settings.auth,
            provider=name,
            subject=identity.subject,
            email=identity.email,
            email_verified=identity.email_verified,
            display_name=identity.name,
        )
    tokens = await service.start_session(session=session, signer=state.signer, user=user)
    response = RedirectResponse(f"{state.settings.auth.public_url}/", status_code=302)
    response.delete_cookie(_STATE_COOKIE, path="/api/auth/oidc")
    _hand_over(tokens, request, response, state, cookie=True)
    return response
