"""ChatGPT's `conversations.json`, as its data export writes it: a list of conversations,
each a tree of message nodes (`mapping`) whose shown branch ends at `current_node`. Made
here because no real export may be shipped with the tests."""

from __future__ import annotations

from typing import Any

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def message(
    role: str,
    parts: list[Any],
    *,
    at: float | None,
    content_type: str = "text",
    hidden: bool = False,
    model: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if hidden:
        metadata["is_visually_hidden_from_conversation"] = True
    if model:
        metadata["model_slug"] = model
    return {
        "id": f"msg-{role}-{at}",
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": at,
        "update_time": None,
        "content": {"content_type": content_type, "parts": parts},
        "status": "finished_successfully",
        "end_turn": True,
        "weight": 1.0,
        "metadata": metadata,
        "recipient": "all",
    }


def conversation(
    title: str, nodes: dict[str, tuple[str | None, dict[str, Any] | None]], current: str
) -> dict[str, Any]:
    """`nodes`: id → (parent id, message); children are derived from the parents."""
    mapping: dict[str, Any] = {
        node_id: {"id": node_id, "message": msg, "parent": parent, "children": []}
        for node_id, (parent, msg) in nodes.items()
    }
    for node_id, (parent, _) in nodes.items():
        if parent is not None:
            mapping[parent]["children"].append(node_id)
    return {
        "title": title,
        "create_time": T0,
        "update_time": T0 + 600,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": current,
        "plugin_ids": None,
        "conversation_id": "c0ffee00-0000-4000-8000-000000000000",
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": "c0ffee00-0000-4000-8000-000000000000",
    }


def branched_sample() -> list[dict[str, Any]]:
    """Two conversations. The first was edited and regenerated: its tree has two answers
    to the first question and two follow-ups; the branch shown ends at `a2`. Along it are a
    hidden system message, a tool call, an image with a caption, an empty message."""
    first = conversation(
        "Quokka facts",
        {
            "root": (None, None),
            "sys": ("root", message("system", [""], at=None, hidden=True)),
            "q1": ("sys", message("user", ["Where do quokkas live?"], at=T0 + 10)),
            "a1-old": ("q1", message("assistant", ["Mostly Rottnest."], at=T0 + 20)),
            "q2-old": ("a1-old", message("user", ["An abandoned follow-up"], at=T0 + 30)),
            "a1": (
                "q1",
                message(
                    "assistant",
                    ["On Rottnest Island", "and Bald Island."],
                    at=T0 + 40,
                    model="gpt-4o",
                ),
            ),
            "tool": ("a1", message("tool", ["search results"], at=T0 + 45)),
            "q2": (
                "tool",
                message(
                    "user",
                    [
                        {"content_type": "image_asset_pointer", "asset_pointer": "file-1"},
                        "What is in this photo?",
                    ],
                    at=T0 + 50,
                    content_type="multimodal_text",
                ),
            ),
            "empty": ("q2", message("assistant", [""], at=T0 + 55)),
            "code": ("empty", message("assistant", ["print(1)"], at=T0 + 56, content_type="code")),
            "a2": (
                "code",
                message("assistant", ["A quokka, smiling."], at=T0 + 60, model="gpt-4o"),
            ),
        },
        current="a2",
    )
    second = conversation(
        "",
        {
            "r": (None, None),
            "u": ("r", message("user", ["Hello"], at=None)),
            "b": ("u", message("assistant", ["Hi!"], at=T0 + 5)),
        },
        current="b",
    )
    return [first, second]
