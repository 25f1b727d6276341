"""FastAPI dependencies, declared once as `Annotated` aliases and reused on every route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors.client import ShardClient
from chatapp.config import Settings
from deployments.ingress.turns import ChatTurns


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling."""

    id: uuid.UUID
    email: str


@dataclass(slots=True)
class IngressState:
    """Everything routes need, built once per replica."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    shards: ShardClient
    router: Any
    turns: ChatTurns
    local_user: Principal


def get_state(request: Request) -> IngressState:
    state: IngressState = request.app.state.chatapp
    return state


StateDep = Annotated[IngressState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_current_user(state: StateDep) -> Principal:
    """The one identity dependency. Until accounts exist, every request is the local user."""
    return state.local_user


CurrentUser = Annotated[Principal, Depends(get_current_user)]
