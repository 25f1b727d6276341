"""Accounts for storage-level tests, created the way the service creates them."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.auth.service import register_user
from chatapp.config import AuthSettings
from chatapp.db.models import User


async def create_user(session: AsyncSession) -> User:
    return await register_user(
        session=session,
        settings=AuthSettings(),
        email=f"{uuid.uuid4().hex[:10]}@example.com",
        password="correct horse battery staple",
        display_name="",
    )
