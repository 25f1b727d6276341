"""Conversation files without storage: reading ChatGPT's `conversations.json` (the shown
branch only), refusing bad or oversized files with a message that says what is wrong,
and writing ChatApp JSON and Markdown (issue 14)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chatapp.chat.transfer_formats import (
    ConversationRecord,
    ImportLimits,
    MessageRecord,
    json_conversation_open,
    json_head,
    json_messages,
    markdown_document,
    parse_import,
)
from chatapp.errors import InvalidRequest, PayloadTooLarge
from chatapp.rag.schemas import SourcePublic
from tests.fakes.chatgpt_export import T0, branched_sample, conversation, message

LIMITS = ImportLimits(max_bytes=1_000_000, max_conversations=10, max_messages=100)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _parse(document: Any, limits: ImportLimits = LIMITS) -> list[ConversationRecord]:
    return parse_import(json.dumps(document).encode(), limits=limits, now=NOW)


def _source(index: int) -> SourcePublic:
    return SourcePublic(
        index=index,
        title=f"Guide {index}",
        snippet="...",
        url=f"https://docs.example.com/{index}" if index == 1 else None,
        source=f"guide{index}.md",
        section="Install" if index == 1 else "",
        chunk_id=f"c{index}",
        knowledge_base="docs",
        version=3,
        position=index,
        start=0,
        end=10,
        score=0.5,
    )


def _record() -> ConversationRecord:
    return ConversationRecord(
        title="Install help",
        created_at=NOW,
        updated_at=NOW,
        messages=[
            MessageRecord(role="user", content="How do I install it?", created_at=NOW),
            MessageRecord(
                role="assistant",
                content="Run `pip install chatapp` [1][2].",
                model="smollm2-135m",
                completion_tokens=9,
                sources=[_source(1), _source(2)],
                created_at=NOW,
            ),
            MessageRecord(
                role="assistant", content="Half an ans", status="incomplete", created_at=NOW
            ),
        ],
    )


def test_chatgpt_import_follows_the_branch_to_current_node() -> None:
    quokkas, hello = _parse(branched_sample())

    assert quokkas.title == "Quokka facts"
    assert (quokkas.created_at, quokkas.updated_at) == (_at(0), _at(600))
    assert [(m.role, m.content, m.model, m.created_at) for m in quokkas.messages] == [
        ("user", "Where do quokkas live?", None, _at(10)),
        # the regenerated answer and not the abandoned one, its two text parts kept
        ("assistant", "On Rottnest Island\nand Bald Island.", "gpt-4o", _at(40)),
        # the tool output, the image, the empty and the code message are gone
        ("user", "What is in this photo?", None, _at(50)),
        ("assistant", "A quokka, smiling.", "gpt-4o", _at(60)),
    ]
    assert all(m.status == "complete" and m.sources == [] for m in quokkas.messages)
    # no title, a message without a time: the conversation's time stands in
    assert hello.title == ""
    assert [(m.role, m.content, m.created_at) for m in hello.messages] == [
        ("user", "Hello", _at(0)),
        ("assistant", "Hi!", _at(5)),
    ]


def test_a_chatgpt_tree_that_does_not_reach_its_current_node_is_refused() -> None:
    lost = conversation("t", {"r": (None, None)}, current="gone")
    with pytest.raises(InvalidRequest, match=r"node 'gone'.*missing"):
        _parse([branched_sample()[1], lost])
    loop = conversation(
        "t",
        {"a": ("b", message("user", ["x"], at=T0)), "b": ("a", message("user", ["y"], at=T0))},
        current="a",
    )
    with pytest.raises(InvalidRequest, match=r"\[0\].mapping: .*cycle"):
        _parse([loop])
    with pytest.raises(InvalidRequest, match=r"\[0\]\.mapping: Field required"):
        _parse([{"title": "no tree", "current_node": "x"}])


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            b'{"format": "chatapp-conversations", "version": 1, "conversations": [',
            "not JSON: Expecting value at line 1",
        ),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"conversations": []}', "expected ChatApp's conversations JSON"),
        (b'"text"', "expected ChatApp's conversations JSON"),
        (b"[" * 100_000, "nests its JSON too deeply"),
        (
            b'{"format": "chatapp-conversations", "version": 1, "conversations": [{'
            b'"created_at": "9999-12-31T23:59:59-23:59", "updated_at": "2026-01-01T00:00:00Z"}]}',
            "conversations[0].created_at: Value error, the time is out of range in UTC",
        ),
        (
            b'{"format": "chatapp-conversations", "version": 2, "conversations": []}',
            "version: Input should be 1",
        ),
    ],
)
def test_a_file_that_is_not_an_export_is_refused_saying_why(data: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_import(data, limits=LIMITS)
    assert says in caught.value.message


def test_a_bad_chatapp_message_is_named_by_its_place() -> None:
    document = json.loads(_document([_record()]))
    document["conversations"][0]["messages"][1]["role"] = "robot"
    document["conversations"][0]["messages"][2]["content"] = "nul \x00 inside"
    document["conversations"][0]["messages"][2]["model"] = "nul \x00 too"
    with pytest.raises(InvalidRequest) as caught:
        _parse(document)
    message = caught.value.message
    assert "conversations[0].messages[1].role: Input should be" in message
    assert "conversations[0].messages[2].content" in message and "NUL" in message
    assert "conversations[0].messages[2].model" in message


def test_oversized_imports_are_refused_with_the_limit() -> None:
    data = json.dumps(branched_sample()).encode()
    with pytest.raises(PayloadTooLarge, match=f"{len(data)} bytes; .* at most 100 bytes"):
        parse_import(data, limits=ImportLimits(100, 10, 100))
    with pytest.raises(PayloadTooLarge, match=r"2 conversations; .* at most 1 "):
        parse_import(data, limits=ImportLimits(10**6, 1, 100))
    with pytest.raises(PayloadTooLarge, match=r"6 messages; .* at most 5 "):
        parse_import(data, limits=ImportLimits(10**6, 10, 5))
    chatapp = _document([_record(), _record()]).encode()
    with pytest.raises(PayloadTooLarge, match=r"2 conversations; .* at most 1 "):
        parse_import(chatapp, limits=ImportLimits(10**6, 1, 100))
    with pytest.raises(PayloadTooLarge, match=r"6 messages; .* at most 5 "):
        parse_import(chatapp, limits=ImportLimits(10**6, 10, 5))


def _document(conversations: list[ConversationRecord]) -> str:
    """A file as the export streams it, from its pieces."""
    parts = [json_head(NOW)]
    for i, record in enumerate(conversations):
        parts.append(("," if i else "") + json_conversation_open(record))
        parts.append(json_messages(record.messages) + "]}")
    return "".join(parts) + "]}"


def test_chatapp_json_reads_back_exactly() -> None:
    records = [_record(), ConversationRecord(title="", created_at=NOW, updated_at=NOW)]
    text = _document(records)
    document = json.loads(text)
    assert (document["format"], document["version"]) == ("chatapp-conversations", 1)
    assert document["exported_at"] == NOW.isoformat()
    assert document["conversations"][0]["messages"][1]["sources"][0]["title"] == "Guide 1"
    assert _parse(document) == records


def test_markdown_marks_roles_models_and_lists_sources() -> None:
    text = markdown_document([_record(), ConversationRecord(created_at=NOW, updated_at=NOW)])

    assert [line for line in text.splitlines() if line.startswith("# ")] == [
        "# Install help",
        "# Untitled conversation",
    ]
    assert "**User** · 2026-11-26 12:00 UTC\n\nHow do I install it?\n" in text
    assert "**Assistant** (smollm2-135m) · 2026-11-26 12:00 UTC\n\nRun `pip install" in text
    assert (
        "Sources:\n\n"
        "- [1] Guide 1 (guide1.md § Install) <https://docs.example.com/1>\n"
        "- [2] Guide 2 (guide2.md)\n"
    ) in text
    assert "**Assistant** · 2026-11-26 12:00 UTC · _incomplete_\n\nHalf an ans" in text
