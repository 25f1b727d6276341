"""`/v1/chat/completions` requests in ChatApp's terms: messages (text, images, tool calls,
tool results), tools and tool choice; and the fields that are refused.

Unknown fields are accepted and ignored (logged at debug by the wire models), except
those whose silent ignoring would change the answer: they are refused with 400
(`Unsupported`) and a message saying what to do instead:

- `n` above 1 (validated by the wire model: 422);
- `logprobs` true, `top_logprobs`;
- `response_format` other than `{"type": "text"}` (`json_object`, `json_schema`);
- the legacy `functions` / `function_call` and `role: "function"` messages (use
  `tools` / `tool_choice` and `role: "tool"`);
- `logit_bias` with entries;
- `audio`, `modalities` other than text, `web_search_options`;
- tools other than `{"type": "function"}`, content parts other than `text` and
  `image_url` (`input_audio`, `file`).

Ignored, as they leave the answer as it is: `user`, `metadata`, `store`,
`service_tier`, `prediction`, `stream_options.include_obfuscation`, a message's `name`,
`frequency_penalty` / `presence_penalty` (sampling nuances), and the like.
"""

from __future__ import annotations

from typing import Any, Literal

from chatapp.errors import InvalidRequest, Unsupported
from chatapp.llm.base import (
    ChatMessage,
    ContentPart,
    ImagePart,
    Role,
    TextPart,
    ToolCall,
    ToolConfig,
    ToolSpec,
)
from chatapp.openai_api.protocol import ChatCompletionMessage, ChatCompletionRequest

_ROLES: dict[str, Role] = {
    "developer": "system",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_DETAILS = {"auto", "low", "high"}


def refuse_unserved(body: ChatCompletionRequest) -> None:
    """`Unsupported` for a field ChatApp would otherwise ignore while it changes the answer."""
    extra: dict[str, Any] = body.model_extra or {}
    if extra.get("functions") is not None or extra.get("function_call") is not None:
        raise Unsupported(
            "functions / function_call (the legacy function calling) are not served: "
            "send them as tools / tool_choice"
        )
    if extra.get("logprobs") or extra.get("top_logprobs") is not None:
        raise Unsupported("logprobs / top_logprobs are not served; leave them out")
    response_format = extra.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        raise Unsupported(
            f"response_format {kind or response_format!r} is not served (the answer would "
            "not be held to it); ask for the format in the prompt, or use tools"
        )
    if extra.get("logit_bias"):
        raise Unsupported("logit_bias is not served; leave it out")
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (
        isinstance(modalities, list) and set(modalities) - {"text"}
    ):
        raise Unsupported("audio output is not served: ChatApp answers in text only")
    if extra.get("web_search_options") is not None:
        raise Unsupported("web_search_options is not served: ChatApp does not search the web")


def _parts(content: list[dict[str, Any]], where: str) -> tuple[ContentPart, ...]:
    parts: list[ContentPart] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.content[{i}]: a text part needs `text`")
            parts.append(TextPart(text))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"{where}.content[{i}]: an image_url part needs a url")
            detail = image.get("detail") if isinstance(image, dict) else None
            if detail is not None and detail not in _DETAILS:
                raise InvalidRequest(f"{where}.content[{i}]: detail must be auto, low or high")
            parts.append(ImagePart(url, detail))
        else:
            raise Unsupported(
                f"{where}.content[{i}]: content parts of type {kind!r} are not served; "
                "send text and image_url parts"
            )
    return tuple(parts)


def to_message(m: ChatCompletionMessage, where: str) -> ChatMessage:
    if m.role == "function":
        raise Unsupported(f"{where}: role 'function' (legacy) is not served; use role 'tool'")
    role = _ROLES[m.role]
    parts: tuple[ContentPart, ...] = ()
    if isinstance(m.content, list):
        parts = _parts(m.content, where)
        if (
            parts
            and role in ("system", "tool", "assistant")
            and any(isinstance(p, ImagePart) for p in parts)
        ):
            raise InvalidRequest(f"{where}: only user messages may hold images")
    text = (
        "".join(p.text for p in parts if isinstance(p, TextPart))
        if isinstance(m.content, list)
        else m.content or ""
    )
    if m.tool_calls and role != "assistant":
        raise InvalidRequest(f"{where}: only assistant messages carry tool_calls")
    if role == "tool" and not m.tool_call_id:
        raise InvalidRequest(f"{where}: a tool message needs the tool_call_id it answers")
    return ChatMessage(
        role,
        text,
        parts=parts if any(isinstance(p, ImagePart) for p in parts) else (),
        tool_calls=tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
        ),
        tool_call_id=m.tool_call_id if role == "tool" else None,
    )


def to_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    return [to_message(m, f"messages[{i}]") for i, m in enumerate(body.messages)]


def tool_config(body: ChatCompletionRequest) -> ToolConfig | None:
    """The request's tools and how the model may use them; None without tools."""
    if not body.tools:
        if body.tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice: it asks for a tool call, but tools is empty")
        return None
    specs: list[ToolSpec] = []
    for i, tool in enumerate(body.tools):
        if tool.type != "function":
            raise Unsupported(
                f"tools[{i}]: tools of type {tool.type!r} are not served; send function tools"
            )
        if tool.function is None:
            raise InvalidRequest(f"tools[{i}]: a function tool needs `function`")
        f = tool.function
        specs.append(ToolSpec(f.name, f.description, dict(f.parameters or {}), f.strict))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: two tools have the same name")
    choice: Literal["auto", "none", "required", "function"]
    function = None
    if body.tool_choice is None or isinstance(body.tool_choice, str):
        choice = body.tool_choice or "auto"
    else:
        choice, function = "function", body.tool_choice.function.name
        if function not in names:
            raise InvalidRequest(f"tool_choice: {function!r} is not one of the tools")
    return ToolConfig(
        tools=tuple(specs),
        choice=choice,
        function=function,
        parallel=body.parallel_tool_calls is not False,
    )
