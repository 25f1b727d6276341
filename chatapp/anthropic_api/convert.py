"""The pure conversion between Anthropic's Messages API and ChatApp's chat types.

    system (string or text blocks)      -> a first `system` message
    text blocks of a message            -> its text (joined by blank lines)
    image block (base64 / url source)   -> ImagePart (data: URL / https URL)
    assistant tool_use block            -> ToolCall (input as JSON text)
    user tool_result block              -> a `tool` message answering that call
    tools / tool_choice                 -> ToolConfig (auto / any / tool / none ->
                                           auto / required / function / none)
    Finish + text + calls               -> Anthropic's message, stop reason and usage

What ChatApp cannot serve as asked is refused here with an error that says what and where
(`Unsupported`, 400), never dropped silently."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from chatapp.anthropic_api.protocol import (
    ContentBlock,
    InputMessage,
    MessageObject,
    MessagesRequest,
    StopReason,
    TextContent,
    ToolUseContent,
    Usage,
)
from chatapp.errors import InvalidRequest, ProviderError, Unsupported
from chatapp.llm.base import (
    ChatMessage,
    ContentPart,
    Finish,
    ImagePart,
    TextPart,
    ToolCall,
    ToolConfig,
    ToolSpec,
)


def _off(value: Any) -> bool:
    """A feature field set to its "off" value (`{"type": "disabled"}`)."""
    return isinstance(value, dict) and value.get("type") == "disabled"


# Request fields that change what the model answers: ignoring them would answer a
# different question, so they are refused until ChatApp serves them (unless empty or off).
REFUSED_FIELDS: dict[str, Callable[[Any], bool]] = {
    "thinking": lambda v: v is None or _off(v),
    "mcp_servers": lambda v: not v,
    "container": lambda v: v is None,
    "output_format": lambda v: v is None,
    "output_config": lambda v: not (isinstance(v, dict) and v.get("format")),  # effort: a hint
}

# Finish reasons (chatapp.llm.base.Finish) -> Anthropic's stop reasons. ChatApp's
# providers report a stop sequence as a plain "stop" (OpenAI-compatible APIs and
# llama.cpp never say which sequence matched), so it reads as `end_turn`.
_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

_CHOICES: dict[str, Literal["auto", "none", "required", "function"]] = {
    "auto": "auto",
    "any": "required",
    "tool": "function",
    "none": "none",
}


def refuse_unserved(request: MessagesRequest) -> None:
    """`Unsupported` for a field ChatApp would otherwise ignore at the answer's cost."""
    extra = request.model_extra or {}
    for name, harmless in REFUSED_FIELDS.items():
        if name in extra and not harmless(extra[name]):
            raise Unsupported(
                f"{name}: not supported on /v1/messages yet (send the request without it)"
            )


def tool_config(request: MessagesRequest) -> ToolConfig | None:
    """The request's tools and tool choice; None without tools."""
    if not request.tools:
        if request.tool_choice is not None and request.tool_choice.type != "none":
            raise InvalidRequest("tool_choice: there are no tools to choose from")
        return None
    specs: list[ToolSpec] = []
    for i, tool in enumerate(request.tools):
        if tool.type not in (None, "custom") or tool.input_schema is None:
            raise Unsupported(
                f"tools.{i}: {tool.type or 'a tool without input_schema'} is not supported; "
                "ChatApp serves client tools (name, description, input_schema)"
            )
        specs.append(ToolSpec(tool.name, tool.description, tool.input_schema, tool.strict))
    choice = request.tool_choice
    if choice is not None and choice.type == "tool" and choice.name not in {s.name for s in specs}:
        raise InvalidRequest(f"tool_choice.name: no tool is named {choice.name!r}")
    return ToolConfig(
        tools=tuple(specs),
        choice=_CHOICES[choice.type] if choice else "auto",
        function=choice.name if choice and choice.type == "tool" else None,
        parallel=not (choice and choice.disable_parallel_tool_use),
    )


def _image(block: ContentBlock, where: str) -> ImagePart:
    source = block.source
    if source is not None and source.type == "base64" and source.media_type and source.data:
        return ImagePart(f"data:{source.media_type};base64,{source.data}")
    if source is not None and source.type == "url" and source.url:
        return ImagePart(source.url)
    raise InvalidRequest(
        f"{where}.source: an image needs a base64 source (media_type, data) or a url source"
    )


def _texts(blocks: str | Sequence[ContentBlock], where: str) -> str:
    """The text of text-only content (the system prompt, a tool's result)."""
    if isinstance(blocks, str):
        return blocks
    texts: list[str] = []
    for i, block in enumerate(blocks):
        if block.type != "text":
            raise Unsupported(f"{where}.{i}: {block.type} blocks are not supported here")
        if block.text is None:
            raise InvalidRequest(f"{where}.{i}.text: a text block needs its text")
        texts.append(block.text)
    return "\n\n".join(texts)


def _message(message: InputMessage, where: str) -> list[ChatMessage]:
    """One Anthropic message as ChatApp's: a user message's tool results first (as `tool`
    messages), then its text and images; an assistant's text with its tool calls."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    results: list[ChatMessage] = []
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(message.content):
        at = f"{where}.{i}"
        if block.type == "text":
            parts.append(TextPart(_texts([block], where)))
        elif block.type == "image" and message.role == "user":
            parts.append(_image(block, at))
        elif block.type == "tool_use" and message.role == "assistant":
            if not block.id or not block.name:
                raise InvalidRequest(f"{at}: a tool_use block needs its id and name")
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input or {})))
        elif block.type == "tool_result" and message.role == "user":
            if not block.tool_use_id:
                raise InvalidRequest(f"{at}.tool_use_id: a tool_result names its tool_use")
            text = _texts(block.content or "", f"{at}.content")
            results.append(
                ChatMessage(
                    "tool",
                    f"Error: {text}" if block.is_error else text,
                    tool_call_id=block.tool_use_id,
                )
            )
        else:
            raise Unsupported(
                f"{at}: {block.type} blocks are not supported in {message.role} messages on "
                "/v1/messages (text, image, tool_use and tool_result are)"
            )
    text = "\n\n".join(p.text for p in parts if isinstance(p, TextPart))
    images = any(isinstance(p, ImagePart) for p in parts)
    if parts or calls or not results:
        results.append(
            ChatMessage(
                message.role, text, parts=tuple(parts) if images else (), tool_calls=tuple(calls)
            )
        )
    return results


def to_chat_messages(request: MessagesRequest) -> list[ChatMessage]:
    """The conversation as ChatApp's messages, the system prompt first."""
    refuse_unserved(request)
    if request.messages[-1].role != "user":
        raise Unsupported(
            "messages: the last message must be the user's; ChatApp does not continue a "
            "prefilled assistant message"
        )
    messages: list[ChatMessage] = []
    if request.system is not None:
        system = _texts(request.system, "system")
        if system.strip():
            messages.append(ChatMessage("system", system))
    for i, message in enumerate(request.messages):
        messages.extend(_message(message, f"messages.{i}.content"))
    return messages


def stop_reason(finish: Finish) -> StopReason:
    if finish.stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS.get(finish.finish_reason, "end_turn")


def usage(finish: Finish) -> Usage:
    return Usage(
        input_tokens=finish.prompt_tokens,
        output_tokens=finish.completion_tokens,
        provider=finish.provider or None,
        cost_usd=finish.cost_usd,
        cached=finish.cached,
        fallback_from=finish.fallback_from,
    )


def tool_use(call: ToolCall) -> ToolUseContent:
    """A call the model made as a `tool_use` block (its arguments must be a JSON object)."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ProviderError(f"the model called {call.name!r} with arguments that are not an object")
    return ToolUseContent(id=call.id, name=call.name, input=arguments)


def to_message(
    ident: str,
    text: str,
    finish: Finish,
    *,
    requested_model: str,
    tool_calls: Sequence[ToolCall] = (),
) -> MessageObject:
    """A whole answer as Anthropic's `message` object (the model that answered, which a
    fallback may have changed; `requested_model` when it is not known)."""
    content: list[TextContent | ToolUseContent] = [TextContent(text=text)] if text else []
    content += [tool_use(call) for call in tool_calls]
    return MessageObject(
        id=ident,
        content=content,
        model=finish.model or requested_model,
        stop_reason=stop_reason(finish),
        stop_sequence=finish.stop_sequence,
        usage=usage(finish),
    )
