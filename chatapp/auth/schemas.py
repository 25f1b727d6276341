"""Account and token schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Strict):
    email: EmailStr
    password: str = Field(..., min_length=1, max_length=1024)
    display_name: str = Field("", max_length=200)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    display_name: str
    role: Literal["user", "admin"]
    is_active: bool
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserPublic]
    next_offset: int | None


class PasswordChange(_Strict):
    current_password: str = Field(..., max_length=1024)
    new_password: str = Field(..., min_length=1, max_length=1024)
    revoke_api_keys: bool = Field(
        True,
        description="Revoke every API key of the account too (a changed password often means "
        "a leaked one); false keeps them working.",
    )


class AccountDelete(_Strict):
    password: str | None = Field(
        None, max_length=1024, description="Required for accounts that have a password."
    )


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str | None = Field(
        None,
        description="Null when it travels in the HttpOnly cookie instead (browsers: the "
        "`X-ChatApp-Refresh: cookie` header), or for a refresh that raced another one.",
    )


class RefreshRequest(_Strict):
    refresh_token: str = Field(..., min_length=1, max_length=200)


class ApiKeyCreate(_Strict):
    name: str = Field(..., min_length=1, max_length=100)
    expires_in_days: int | None = Field(
        None, ge=1, le=3650, description="The key stops working after this many days; unset: never."
    )


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When the key was last used (to the minute: it is written at most once a "
        "minute)."
    )
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="When the key stops working; null: never.")


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The whole key. Shown once: store it now.")


class OidcProviderPublic(BaseModel):
    name: str
    display_name: str
    login_url: str


class OidcLink(_Strict):
    password: str | None = Field(
        None, max_length=1024, description="Required for accounts that have a password."
    )


class OidcLinkStart(BaseModel):
    authorization_url: str = Field(description="Send the browser there to finish the link.")
