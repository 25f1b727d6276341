"""Rendering a chat template so that message text can never become control tokens.

A self-hosted model's prompt is its chat template rendered over the messages, then
tokenized. Tokenizing that whole string with special-token parsing on (the template's
`<|im_start|>` must become the control token) would also turn a user's or a retrieved
document's `<|im_start|>system ...` into real role markers: a user could write the system
prompt. So the template is rendered over placeholders instead of the contents, the result
is cut at the placeholders, and each engine tokenizes the template's own text with
special tokens and the message contents as plain text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatapp.llm.base import ChatMessage


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the rendered prompt: the template's own text (`control`, tokenized with
    special tokens) or a message's content (tokenized as plain text)."""

    text: str
    control: bool


def render_segments(
    render: Callable[[list[dict[str, str]]], str], messages: Sequence[ChatMessage]
) -> list[Segment]:
    """`render` (the chat template over role/content dicts) applied to `messages`, cut into
    the template's text and the messages' contents.

    Contents are inserted as they are: a template that transforms them (say, trims them)
    gets the untransformed text, which only costs that formatting, never safety.
    """
    nonce = secrets.token_hex(8)
    placeholders = {f"[[chatapp-{nonce}-{i}]]": m.content for i, m in enumerate(messages)}
    rendered = render(
        [{"role": m.role, "content": p} for m, p in zip(messages, placeholders, strict=True)]
    )
    segments: list[Segment] = []
    pos = 0
    for found in re.finditer(r"\[\[chatapp-" + nonce + r"-\d+\]\]", rendered):
        if found.start() > pos:
            segments.append(Segment(rendered[pos : found.start()], control=True))
        content = placeholders[found.group()]
        if content:
            segments.append(Segment(content, control=False))
        pos = found.end()
    if pos < len(rendered):
        segments.append(Segment(rendered[pos:], control=True))
    return segments
