"""Small input and exposure rules (issue 9, item 18): knowledge-base names refuse a
trailing newline or control characters, and the dev server binds to this machine only
unless told otherwise."""

from __future__ import annotations

import pytest

from chatapp.config import ServeSettings
from chatapp.errors import InvalidRequest
from chatapp.rag.store import check_kb_name


@pytest.mark.parametrize("name", ["docs\n", "docs\r\n", "do\x00cs", "docs\t", "\ndocs", "Docs"])
def test_knowledge_base_names_refuse_newlines_and_control_characters(name: str) -> None:
    with pytest.raises(InvalidRequest, match="knowledge base name"):
        check_kb_name(name)


def test_a_plain_knowledge_base_name_passes() -> None:
    assert check_kb_name("team-docs_2") == "team-docs_2"


def test_the_dev_server_binds_to_localhost_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVE_HOST", raising=False)
    assert ServeSettings(_env_file=None).host == "127.0.0.1"  # type: ignore[call-arg]
    monkeypatch.setenv("SERVE_HOST", "0.0.0.0")
    assert ServeSettings(_env_file=None).host == "0.0.0.0"  # type: ignore[call-arg]
