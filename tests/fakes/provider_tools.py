"""Tool calls and images in the fake provider servers (`tests.fakes.providers`), in each
vendor's real wire format.

- Requests are checked as the real APIs check them (a 400 in the vendor's error format
  names the problem): tool definitions, tool choice, assistant tool calls and the tool
  results that must answer each of them, content parts and image blocks.
- `Reply(tool_calls=(Call("get_weather", {"city": "Paris"}),))` answers with those calls:
  OpenAI `tool_calls` (streamed as `delta.tool_calls` pieces, finish reason
  `tool_calls`), Anthropic `tool_use` blocks (streamed as `input_json_delta` events,
  stop reason `tool_use`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


@dataclass(frozen=True)
class Call:
    """A tool call the fake model makes; `id` defaults to a vendor-style one by position."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


def pieces(text: str, n: int = 3) -> list[str]:
    """`text` in about `n` pieces, as providers stream a call's arguments."""
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# -- OpenAI ------------------------------------------------------------------------------


def openai_problem(body: dict[str, Any]) -> str | None:
    """What the real Chat Completions API would refuse in `body` (tools and images)."""
    tools = body.get("tools")
    names: set[str] = set()
    for i, tool in enumerate(tools or ()):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict):
            return f"Invalid value for 'tools[{i}]': expected a function tool."
        if not _NAME.match(str(fn.get("name", ""))):
            return f"Invalid 'tools[{i}].function.name': string does not match pattern."
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            return f"Invalid type for 'tools[{i}].function.parameters': expected an object."
        names.add(fn["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return "Invalid value for 'tool_choice': only allowed when 'tools' are specified."
        if isinstance(choice, dict):
            if (
                choice.get("type") != "function"
                or choice.get("function", {}).get("name") not in names
            ):
                return "Invalid value for 'tool_choice': no function with that name."
        elif choice not in ("auto", "none", "required"):
            return f"Invalid value for 'tool_choice': {choice!r}."
    if "parallel_tool_calls" in body and not tools:
        return "'parallel_tool_calls' is only allowed when 'tools' are specified."
    open_calls: list[str] = []
    for i, m in enumerate(body.get("messages", [])):
        role = m.get("role")
        if open_calls and role != "tool":
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {', '.join(open_calls)}"
            )
        if role == "tool":
            if m.get("tool_call_id") not in open_calls:
                return (
                    f"Invalid parameter: messages[{i}] with role 'tool' must be a response "
                    "to a preceding message with 'tool_calls'."
                )
            open_calls.remove(m["tool_call_id"])
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            if call.get("type") != "function" or not call.get("id") or not fn.get("name"):
                return f"Invalid 'messages[{i}].tool_calls': a function call needs id and name."
            if not isinstance(fn.get("arguments"), str):
                return f"Invalid type for 'messages[{i}].tool_calls.function.arguments'."
            open_calls.append(call["id"])
        content = m.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                if role != "user" or not re.match(r"^(https://|data:image/[a-z]+;base64,)", url):
                    return f"Invalid 'messages[{i}].content[{j}].image_url'."
            elif part.get("type") != "text" or not isinstance(part.get("text"), str):
                return f"Invalid 'messages[{i}].content[{j}]'."
    return None


def _openai_calls(calls: tuple[Call, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id or f"call_{i}",
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for i, c in enumerate(calls)
    ]


def openai_tool_deltas(calls: tuple[Call, ...]) -> Iterator[dict[str, Any]]:
    """The `delta` objects of a streamed answer's calls: id, type and name first, then
    the arguments in pieces."""
    for i, call in enumerate(_openai_calls(calls)):
        first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        yield {"tool_calls": [{"index": i, **first}]}
        for piece in pieces(call["function"]["arguments"]):
            yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}


def openai_message(text: str, calls: tuple[Call, ...]) -> dict[str, Any]:
    if not calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": _openai_calls(calls)}


# -- Anthropic ---------------------------------------------------------------------------


def _anthropic_block_problem(block: Any, role: str, where: str) -> str | None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        return None if isinstance(block.get("text"), str) and block["text"] else f"{where}: text"
    if kind == "image":
        source = block.get("source") or {}
        if role != "user":
            return f"{where}: image blocks are only allowed in user messages"
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES or not source.get("data"):
                return f"{where}.source: media_type and data are required"
            return None
        if source.get("type") == "url" and str(source.get("url", "")).startswith("https://"):
            return None
        return f"{where}.source: Input tag '{source.get('type')}' does not match expected tags"
    if kind == "tool_use":
        if role != "assistant" or not isinstance(block.get("input"), dict):
            return f"{where}: tool_use needs an assistant turn and an object input"
        return None if block.get("id") and block.get("name") else f"{where}: id and name"
    if kind == "tool_result":
        return None if role == "user" and block.get("tool_use_id") else f"{where}: tool_result"
    return f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"


def anthropic_problem(body: dict[str, Any]) -> str | None:
    """What the real Messages API would refuse in `body` (tools, tool blocks, images)."""
    names: set[str] = set()
    for i, tool in enumerate(body.get("tools") or ()):
        schema = tool.get("input_schema")
        if "function" in tool or not _NAME.match(str(tool.get("name", ""))):
            return f"tools.{i}: Extra inputs are not permitted (not an Anthropic tool)"
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema: Field required (a JSON Schema of type object)"
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            return "tool_choice: Input tag does not match any of the expected tags"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    pending: list[str] = []  # tool_use ids the next user turn must answer first
    for i, m in enumerate(body.get("messages", [])):
        role = m.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        for j, block in enumerate(blocks):
            problem = _anthropic_block_problem(block, role, f"messages.{i}.content.{j}")
            if problem:
                return problem
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if pending:
            leading = [b.get("type") for b in blocks[: len(pending)]]
            if role != "user" or set(results) != set(pending) or set(leading) != {"tool_result"}:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(pending)}. Each `tool_use` block must "
                    "have a corresponding `tool_result` block in the next message."
                )
        elif results:
            return f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks"
        pending = [b["id"] for b in blocks if b.get("type") == "tool_use"]
    if pending:
        return "the last assistant turn's tool_use blocks have no tool_result"
    return None


def anthropic_content(text: str, calls: tuple[Call, ...]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, c in enumerate(calls):
        blocks.append(
            {"type": "tool_use", "id": c.id or f"toolu_{i}", "name": c.name, "input": c.arguments}
        )
    return blocks


def anthropic_tool_events(
    event: Callable[[str, dict[str, Any]], str], calls: tuple[Call, ...], first_index: int
) -> Iterator[str]:
    """content_block_start (tool_use, empty input), input_json_delta pieces, stop."""
    for k, block in enumerate(anthropic_content("", calls)):
        index = first_index + k
        start = {**block, "input": {}}
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        for piece in pieces(json.dumps(block["input"])):
            yield event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
