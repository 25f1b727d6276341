"""Settings come from the environment, section by section, with clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatapp.config import Settings


def test_well_known_variables_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/chat")
    monkeypatch.setenv("LLM_CONTEXT_WINDOW", "4096")
    settings = Settings.from_overrides({"llm": {"engine": "simulated"}})
    assert settings.database.resolved_url() == "postgresql+asyncpg://u@db/chat"
    assert settings.llm.engine == "simulated"
    assert settings.llm.context_window == 4096  # env still applies inside an overridden section


def test_sqlite_under_var_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = Settings().database.resolved_url()
    assert url.startswith("sqlite+aiosqlite:///") and url.endswith("var/chatapp.db")


def test_production_refuses_placeholder_secret() -> None:
    with pytest.raises(ValidationError, match="CHATAPP_SECRET_KEY"):
        Settings(environment="production")
    Settings(environment="production", secret_key="k" * 40)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown settings section"):
        Settings.from_overrides({"nope": {}})
