"""ChatApp's messages, tools and tool calls in OpenAI's Chat Completions shapes: what the
OpenAI provider client sends, and what `/v1/chat/completions` answers with.

    ImagePart                  -> {"type": "image_url", "image_url": {"url", "detail"}}
    assistant tool_calls       -> "tool_calls": [{"id", "type": "function", "function"}]
    role "tool" messages       -> {"role": "tool", "tool_call_id", "content"}
    ToolSpec                   -> {"type": "function", "function": {"name", ...}}
    ToolCallDelta              -> a `delta.tool_calls` item of a streamed chunk
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatapp.llm.base import ChatMessage, TextPart, ToolCall, ToolCallDelta, ToolConfig


def _content(m: ChatMessage) -> str | list[dict[str, Any]] | None:
    if not m.parts:
        return None if (m.tool_calls and not m.content) else m.content
    parts: list[dict[str, Any]] = []
    for part in m.parts:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            url: dict[str, Any] = {"url": part.url}
            if part.detail:
                url["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": url})
    return parts


def tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def to_openai(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": _content(m)}
        if m.tool_calls:
            item["tool_calls"] = [tool_call(c) for c in m.tool_calls]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def tools_kwargs(config: ToolConfig) -> dict[str, Any]:
    """`tools`, `tool_choice` (and `parallel_tool_calls` when off) of a request."""
    tools = []
    for spec in config.tools:
        function: dict[str, Any] = {"name": spec.name}
        if spec.description:
            function["description"] = spec.description
        if spec.parameters:
            function["parameters"] = spec.parameters
        if spec.strict is not None:
            function["strict"] = spec.strict
        tools.append({"type": "function", "function": function})
    choice: str | dict[str, Any] = (
        {"type": "function", "function": {"name": config.function}}
        if config.choice == "function"
        else config.choice
    )
    kwargs: dict[str, Any] = {"tools": tools, "tool_choice": choice}
    if not config.parallel:
        kwargs["parallel_tool_calls"] = False
    return kwargs


def tool_call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    """A streamed chunk's `delta.tool_calls` item: id, type and name only on a call's
    first piece, as OpenAI streams them."""
    function: dict[str, Any] = {"arguments": delta.arguments}
    item: dict[str, Any] = {"index": delta.index}
    if delta.id is not None:
        item |= {"id": delta.id, "type": "function"}
    if delta.name is not None:
        function["name"] = delta.name
    item["function"] = function
    return item
