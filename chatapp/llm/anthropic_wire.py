"""ChatApp's messages and tools in Anthropic's Messages API shapes, and Anthropic's
answers back in ChatApp's (OpenAI's) terms.

    system messages            -> `system`
    ImagePart (data: / https)  -> {"type": "image", "source": base64 | url}
    assistant tool_calls       -> {"type": "tool_use", "id", "name", "input"}
    role "tool" messages       -> a user turn of {"type": "tool_result", "tool_use_id", ...}
    ToolSpec                   -> {"name", "description", "input_schema"}
    tool choice auto / required / function / none -> auto / any / tool / none
    stop_reason tool_use       -> finish reason "tool_calls"

Turns of one role in a row are merged (the API wants them alternating) and the
conversation starts with a user turn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chatapp.errors import InvalidRequest
from chatapp.llm.base import ChatMessage, ImagePart, TextPart, ToolConfig
from chatapp.llm.content import inline

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

Content = str | list[dict[str, Any]]


def image_block(image: ImagePart) -> dict[str, Any]:
    data = inline(image)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": data.media_type, "data": data.data},
    }


def tool_input(arguments: str, name: str) -> dict[str, Any]:
    """A call's arguments (JSON text) as the object Anthropic's `input` is."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError as exc:
        raise InvalidRequest(
            f"messages: the arguments of tool call {name!r} are not valid JSON"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"messages: the arguments of tool call {name!r} are not an object")
    return value


def _content(m: ChatMessage) -> Content:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
    blocks: list[dict[str, Any]] = []
    if m.parts:
        for part in m.parts:
            if isinstance(part, TextPart):
                if part.text:
                    blocks.append({"type": "text", "text": part.text})
            else:
                blocks.append(image_block(part))
    elif m.content and m.tool_calls:
        blocks.append({"type": "text", "text": m.content})
    for call in m.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(call.arguments, call.name),
            }
        )
    return blocks if (m.parts or m.tool_calls) else m.content


def _blocks(content: Content) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def to_anthropic(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """`system` and the alternating turns of `messages` (see the module's docstring)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "user" if m.role == "tool" else m.role
        content = _content(m)
        if turns and turns[-1]["role"] == role:
            last = turns[-1]["content"]
            if isinstance(last, str) and isinstance(content, str):
                turns[-1]["content"] = last + "\n\n" + content
            else:
                turns[-1]["content"] = _blocks(last) + _blocks(content)
        else:
            turns.append({"role": role, "content": content})
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    return system, turns


def tools_kwargs(config: ToolConfig) -> dict[str, Any]:
    """`tools` and `tool_choice` of a Messages API request."""
    tools = [
        {
            "name": spec.name,
            **({"description": spec.description} if spec.description else {}),
            "input_schema": spec.parameters or {"type": "object", "properties": {}},
        }
        for spec in config.tools
    ]
    kind = {"auto": "auto", "required": "any", "none": "none", "function": "tool"}[config.choice]
    choice: dict[str, Any] = {"type": kind}
    if config.choice == "function":
        choice["name"] = config.function
    if not config.parallel and config.choice != "none":
        choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": choice}
